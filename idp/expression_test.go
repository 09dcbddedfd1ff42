package idp

import (
	"strings"
	"testing"
	"time"

	"github.com/expr-lang/expr"
)

// requestEnv stands in for rules.Env: the profile beside client input.
type requestEnv struct {
	Profile
	Request struct {
		Method  string            `expr:"method"`
		Path    string            `expr:"path"`
		Headers map[string]string `expr:"headers"`
	} `expr:"request"`
	Now time.Time `expr:"now"`
}

func TestCompileExprRefusesCostlyConstructs(t *testing.T) {
	for _, tc := range []struct {
		name, src, want, at string
	}{
		{"repeat of a header (19 s and 6 GB for a 60 KB one)", `repeat(request.headers["X-A"], 100000) != ""`, "repeat is not available: ", "(at 1:1)"},
		{"repeat through a pipe", `request.path | repeat(2) | len() > 0`, "repeat is not available: ", "(at 1:16)"},
		{"reduce", `reduce(groups, #acc + #, "") != ""`, "reduce is not available: ", "(at 1:1)"},
		{"uniq", `len(uniq(split(request.headers["X-A"], ","))) > 1`, "uniq is not available: ", "(at 1:5)"},
		{"matches with a pattern from the request", `request.path matches request.headers["X-Pattern"]`, "matches needs a constant pattern", "(at 1:14)"},
		{"matches with a pattern built from the profile", `request.path matches "^/users/" + username`, "matches needs a constant pattern", ""},
		{"range with a bound from the request", `any(1..int(request.headers["X-N"]), {# > 0})`, "a range needs integers written out as its bounds", "(at 1:6)"},
		{"range of a billion numbers", `len(1..1000000000) > 0`, "a range of more than 1000 numbers", "(at 1:6)"},
		{"range from the least integer to the greatest", `len(-9223372036854775807-1..9223372036854775807) > 0`, "a range of more than 1000 numbers", ""},
		{"range that no comparison replaces", `claims.uid in 1000..60000`, "a range of more than 1000 numbers is built at every evaluation; compare with >= and <= instead", ""},
		{"range of 1001 numbers", `claims.uid in 0..1000`, "a range of more than 1000 numbers", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CompileExpr(tc.src, requestEnv{}, expr.AsBool())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasSuffix(err.Error(), tc.at) {
				t.Fatalf("CompileExpr(%s) = %v, want an error containing %q and ending %q", tc.src, err, tc.want, tc.at)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is more than one line", err)
			}
		})
	}
}

// TestCompileExprKeepsDocumentedExpressions: the expressions README.md,
// docs/ and the tests show, and the usual shapes of a condition, compile.
func TestCompileExprKeepsDocumentedExpressions(t *testing.T) {
	for _, src := range []string{
		`"cvat-admins" in groups`,
		`claims.hd == "example.com" and email in ["alice@example.com"]`,
		`email endsWith "@contractor.example"`,
		`claims.org?.name == "root"`,
		`username != "" ? username : split(email, "@")[0] != ""`,
		`len(join(filter(groups, {# in ["cvat-admins", "staff"]}), ",")) > 0`,
		`request.method in ["GET", "HEAD"] && request.path startsWith "/docs"`,
		`now.Hour() < 8 || now.Hour() >= 18`,
		`request.headers["X-Debug"] == "1" && request.path contains "dbg"`,
		`int(request.headers["X-Level"]) > 2`,
		`request.path matches "^/static/" + "v[0-9]+/"`,
		`now.Hour() in 8..17 && now.Year() in 2000..1000000`,
		`claims.level in 1..5`,
		`sum(1..1000000) > 0`,
		`claims.uid in 1..1000`,
	} {
		if _, err := CompileExpr(src, requestEnv{}, expr.AsBool()); err != nil {
			t.Errorf("CompileExpr(%s): %v", src, err)
		}
	}
}
