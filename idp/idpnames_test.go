package idp

import (
	"slices"
	"testing"
)

func TestUnknownIdPWarnings(t *testing.T) {
	providers := []Config{{ID: "company", Protocol: OIDC}, {ID: "github", Preset: PresetGitHub}}
	const ids = `(the ids are company, github)`
	for _, tc := range []struct {
		name, expr string
		want       []string
	}{
		{"a known id is no warning", `idp == "company" && "cvat-admins" in groups`, nil},
		{"a misspelt id never matches", `idp == "compnay" && "cvat-admins" in groups`,
			[]string{`idp == "compnay": no identity provider has the id "compnay" ` + ids + `, so this is never true`}},
		{"written the other way round", `"compnay" == idp`,
			[]string{`idp == "compnay": no identity provider has the id "compnay" ` + ids + `, so this is never true`}},
		{"through $env", `$env.idp == "compnay"`,
			[]string{`idp == "compnay": no identity provider has the id "compnay" ` + ids + `, so this is never true`}},
		{"ids are case-sensitive", `idp == "Company"`,
			[]string{`idp == "Company": no identity provider has the id "Company" ` + ids + `, so this is never true`}},
		{"a misspelt id after != always holds", `idp != "githbu" && "ops" in groups`,
			[]string{`idp != "githbu": no identity provider has the id "githbu" ` + ids + `, so this is always true`}},
		{"one unknown id in a list", `idp in ["company", "gthub"]`,
			[]string{`idp in ["company", "gthub"]: no identity provider has the id "gthub" ` + ids + `, so this is never true of it`}},
		{"under a negation, inside a loop, in a header's ternary: still never that IdP", `not (idp == "a") || any(groups, idp == "b" && # == "x") ? "y" : idp == "c"`,
			[]string{
				`idp == "a": no identity provider has the id "a" ` + ids + `, so this is never true`,
				`idp == "b": no identity provider has the id "b" ` + ids + `, so this is never true`,
				`idp == "c": no identity provider has the id "c" ` + ids + `, so this is never true`,
			}},
		{"a misspelt id in a not-in list is always true of it", `idp not in ["githb"] && "ops" in groups`,
			[]string{`idp not in ["githb"]: no identity provider has the id "githb" ` + ids + `, so this is always true of it`}},
		{"the same unknown id twice is one warning", `idp == "compnay" || idp == "compnay"`,
			[]string{`idp == "compnay": no identity provider has the id "compnay" ` + ids + `, so this is never true`}},
		{"idp compared with something other than a name is not judged", `idp == email || idp in groups || idp startsWith "comp"`, nil},
		{"a string that is not compared with idp is not an id", `"compnay" in groups && username == "github"`, nil},
		{"an expression that does not parse", `idp == "compnay" && (`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := UnknownIdPWarnings(tc.expr, providers)
			if !slices.Equal(got, tc.want) {
				t.Errorf("UnknownIdPWarnings(%s)\n got: %q\nwant: %q", tc.expr, got, tc.want)
			}
		})
	}
	if got := UnknownIdPWarnings(`idp == "compnay"`, nil); got != nil {
		t.Errorf("with no IdP configured (a problem of its own): %q, want none", got)
	}
}
