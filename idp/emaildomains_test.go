package idp

import (
	"slices"
	"strings"
	"testing"

	"github.com/expr-lang/expr"
)

// Tests that find an address's domain in its text are warned of; those that
// read it after the one @ are not (GHSA-c5c4-8r6x-56w3's class, in
// conditions rather than allowed_email_domains).
func TestEmailDomainWarnings(t *testing.T) {
	const twoAt = "a string with two unquoted @, no address under RFC 5322 (an @ in a local part must be quoted) " +
		"but one that some IdPs pass on, so their verification vouches for nothing at the domain (allowed_email_domains refuses it)"
	for _, tc := range []struct {
		name, expr string
		want       []string
	}{
		{"endsWith an @domain takes an address with two @", `email_verified && email endsWith "@company.com"`,
			[]string{`email endsWith "@company.com": also true of eve@evil.example@company.com, ` + twoAt + `; write email matches "^[^@]+@company[.]com$"`}},
		{"endsWith a bare domain takes another domain", `email endsWith "company.com"`,
			[]string{`email endsWith "company.com": also true of eve@evilcompany.com, an address at another domain; write email matches "^[^@]+@([^@]+[.])?company[.]com$"`}},
		{"endsWith .domain, for subdomains, takes an address with two @", `email endsWith ".company.com"`,
			[]string{`email endsWith ".company.com": also true of eve@evil.example@x.company.com, ` + twoAt + `; write email matches "^[^@]+@[^@]+[.]company[.]com$"`}},
		{"contains an @domain takes a domain under another", `email contains "@company.com"`,
			[]string{`email contains "@company.com": also true of eve@company.com.evil.example, an address at another domain; write email matches "^[^@]+@company[.]com$"`}},
		{"through lower, upper, trim and $env", `upper(trim($env.email)) endsWith "@CO.EXAMPLE"`,
			[]string{`upper(trim($env.email)) endsWith "@CO.EXAMPLE": also true of eve@evil.example@CO.EXAMPLE, ` + twoAt + `; write upper(trim($env.email)) matches "^[^@]+@CO[.]EXAMPLE$"`}},
		{"a claim named for mail", `claims["email"] endsWith "@company.com" || claims.userMail endsWith "@company.com"`,
			[]string{
				`claims.email endsWith "@company.com": also true of eve@evil.example@company.com, ` + twoAt + `; write claims.email matches "^[^@]+@company[.]com$"`,
				`claims.userMail endsWith "@company.com": also true of eve@evil.example@company.com, ` + twoAt + `; write claims.userMail matches "^[^@]+@company[.]com$"`,
			}},
		{"a domain no [.] pattern spells is left to the reader", `email endsWith "@bücher.example"`,
			[]string{`email endsWith "@bücher.example": also true of eve@evil.example@bücher.example, ` + twoAt + `; write email matches "^[^@]+@company[.]com$" with your domain`}},
		{"split at @, second part", `split(email, "@")[1] in ["company.com"]`,
			[]string{`split(email, "@")[1]: the text after the first @, not the domain: company.com of eve@company.com@evil.example, ` + twoAt + `; write email matches "^[^@]+@company[.]com$" with your domain`}},
		{"the last part of a split at @", `last(split(email, "@")) == "company.com" || split(lower(email), "@")[-1] in ["company.com"]`,
			[]string{
				`last(split(email, "@")): the text after the last @, not the domain: company.com of eve@evil.example@company.com, ` + twoAt + `; write email matches "^[^@]+@company[.]com$" with your domain`,
				`split(lower(email), "@")[-1]: the text after the last @, not the domain: company.com of eve@evil.example@company.com, ` + twoAt + `; write lower(email) matches "^[^@]+@company[.]com$" with your domain`,
			}},
		{"a slice after indexOf or lastIndexOf of @", `email[indexOf(email, "@")+1:] == "company.com" || email[lastIndexOf(email, "@"):] == "@company.com"`,
			[]string{
				`email[indexOf(email, "@") + 1:]: the text after the first @, not the domain: company.com of eve@company.com@evil.example, ` + twoAt + `; write email matches "^[^@]+@company[.]com$" with your domain`,
				`email[lastIndexOf(email, "@"):]: the text after the last @, not the domain: company.com of eve@evil.example@company.com, ` + twoAt + `; write email matches "^[^@]+@company[.]com$" with your domain`,
			}},
		{"the last characters, sliced, are endsWith", `email[-12:] == "@company.com" || "company.com" == claims.mail[-11:]`,
			[]string{
				`email[-12:] == "@company.com": also true of eve@evil.example@company.com, ` + twoAt + `; write email matches "^[^@]+@company[.]com$"`,
				`"company.com" == claims.mail[-11:]: also true of eve@evilcompany.com, an address at another domain; write claims.mail matches "^[^@]+@([^@]+[.])?company[.]com$"`,
			}},
		{"indexOf or lastIndexOf of an @domain finds it anywhere", `indexOf(email, "@company.com") > 0 || lastIndexOf(email, "@company.com") == len(email) - 12`,
			[]string{
				`indexOf(email, "@company.com"): finds @company.com anywhere in the text, also in eve@company.com.evil.example, an address at another domain, and in eve@evil.example@company.com, ` + twoAt + `; write email matches "^[^@]+@company[.]com$"`,
				`lastIndexOf(email, "@company.com"): finds @company.com anywhere in the text, also in eve@company.com.evil.example, an address at another domain, and in eve@evil.example@company.com, ` + twoAt + `; write email matches "^[^@]+@company[.]com$"`,
			}},
		{"matches with alternation whose local part may hold an @", `email matches "@(a|b)[.]example$" || email matches "(?i)^.+@(?:co|corp)\\.example$"`,
			[]string{
				`email matches "@(a|b)[.]example$": also true of eve@evil.example@a.example, ` + twoAt + `; write email matches "^[^@]+@(a|b)[.]example$"`,
				`email matches "(?i)^.+@(?:co|corp)\\.example$": also true of eve@evil.example@co.example, ` + twoAt + `; write email matches "(?i)^[^@]+@(?:co|corp)[.]example$"`,
			}},
		{"matches subdomains with alternation keeps them", `email matches "[.](a|b)[.]example$"`, nil},
		{"matches with alternation and no @ in the local part is no warning", `email matches "^[^@]+@(a|b)[.]example$" || email matches "(?i)^[a-z0-9._%+-]+@(?:[a-z0-9-]+[.])*company[.]com$"`, nil},
		{"indexOf of @ alone, to check for one @, is no warning", `indexOf(email, "@") == lastIndexOf(email, "@") && indexOf(email, "@") > 0`, nil},
		{"the first characters, sliced, are no domain test", `email[:4] == "ana@"`, nil},
		{"in a loop and a ternary, the same test twice is one warning", `any(groups, email endsWith "@a.example") ? email endsWith "@a.example" : false`,
			[]string{`email endsWith "@a.example": also true of eve@evil.example@a.example, ` + twoAt + `; write email matches "^[^@]+@a[.]example$"`}},
		{"hasSuffix is endsWith", `hasSuffix(email, "@company.com")`,
			[]string{`hasSuffix(email, "@company.com"): also true of eve@evil.example@company.com, ` + twoAt + `; write email matches "^[^@]+@company[.]com$"`}},
		{"a claim that may be absent, read with ?? or ?.", `(claims.mail ?? "") endsWith "@company.com" || claims?.email contains "@company.com"`,
			[]string{
				`(claims.mail ?? "") endsWith "@company.com": also true of eve@evil.example@company.com, ` + twoAt + `; write (claims.mail ?? "") matches "^[^@]+@company[.]com$"`,
				`claims?.email contains "@company.com": also true of eve@company.com.evil.example, an address at another domain; write claims?.email matches "^[^@]+@company[.]com$"`,
			}},
		{"matches a pattern that lets the local part hold an @", `email matches "^.+@company[.]com$" || lower(email) matches "@partner\\.example$"`,
			[]string{
				`email matches "^.+@company[.]com$": also true of eve@evil.example@company.com, ` + twoAt + `; write email matches "^[^@]+@company[.]com$"`,
				`lower(email) matches "@partner\\.example$": also true of eve@evil.example@partner.example, ` + twoAt + `; write lower(email) matches "^[^@]+@partner[.]example$"`,
			}},
		{"matches that folds case is told to write one that does", `email matches "(?i)^.*@company[.]com$"`,
			[]string{`email matches "(?i)^.*@company[.]com$": also true of eve@evil.example@company.com, ` + twoAt + `; write email matches "(?i)^[^@]+@company[.]com$"`}},
		{"split of a claim names that claim", `split(claims.mail, "@")[1] == "company.com"`,
			[]string{`split(claims.mail, "@")[1]: the text after the first @, not the domain: company.com of eve@company.com@evil.example, ` + twoAt + `; write claims.mail matches "^[^@]+@company[.]com$" with your domain`}},
		{"an @ alone is no domain test", `email contains "@" ? email : sub + "@users.invalid"`, nil},
		{"matches a local part without @ is no warning", `email matches "^[a-z.]+@company[.]com$" || email matches "(?i)^[^@]+@company[.]com$"`, nil},
		{"the whole address after one @ is no warning", `email matches "^[^@]+@contractor[.]example$"`, nil},
		{"one address is no domain test", `email == "ana@company.com" || email in ["bo@company.com"]`, nil},
		{"endsWith a whole address is not judged", `email endsWith "ana@company.com"`, nil},
		{"contains with no @ is not judged", `email contains "+"`, nil},
		{"split's first part is the local part", `split(email, "@")[0] != ""`, nil},
		{"not an address", `username endsWith "@company.com" || sub endsWith "@uni-a.edu" || claims.hd endsWith "company.com"`, nil},
		{"a suffix built at run time is not judged", `email endsWith ("@" + "company.com")`, nil},
		{"an expression that does not parse", `email endsWith "@company.com" && (`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := EmailDomainWarnings(tc.expr); !slices.Equal(got, tc.want) {
				t.Errorf("EmailDomainWarnings(%s)\n got: %q\nwant: %q", tc.expr, got, tc.want)
			}
		})
	}
}

// What each warning says to write, followed literally, takes every address
// with one @ at the domain that the test it replaces took (in any case it
// took, at the subdomains when it took them) and none with two: it locks
// out no one who was let in rightly.
func TestEmailDomainSuggestionsLockOutNoOne(t *testing.T) {
	addresses := []string{
		"eve@company.com", "Eve@Company.COM", "eve@sub.company.com", "eve@evilcompany.com",
		"eve@company.com.evil.example", "eve@a.example", "eve@b.example", "eve@x.a.example",
		"eve@co.example", "eve@CORP.example", "eve@x.co.example", "eve@evil.example",
	}
	for _, src := range []string{
		`email endsWith "@company.com"`, `email endsWith "company.com"`, `lower(email) endsWith "company.com"`,
		`email endsWith ".company.com"`, `email contains "@company.com"`, `hasSuffix(email, "@company.com")`,
		`email[-12:] == "@company.com"`, `email[-11:] == "company.com"`, `indexOf(email, "@company.com") >= 0`,
		`email matches "^.+@company[.]com$"`, `email matches "(?i)^.*@company[.]com$"`, `email matches "@company\\.com$"`,
		`email matches "@(a|b)[.]example$"`, `email matches "(?i)^.+@(?:co|corp)\\.example$"`,
	} {
		warnings := EmailDomainWarnings(src)
		if len(warnings) != 1 {
			t.Errorf("%s: %d warnings, want 1: %q", src, len(warnings), warnings)
			continue
		}
		_, better, ok := strings.Cut(warnings[0], "; write ")
		if !ok || strings.HasSuffix(better, "with your domain") {
			t.Errorf("%s: no suggestion to follow literally: %s", src, warnings[0])
			continue
		}
		eval := func(src, addr string) bool {
			out, err := expr.Eval(src, map[string]any{"email": addr})
			if err != nil {
				t.Fatalf("%s: %v", src, err)
			}
			return out.(bool)
		}
		for _, addr := range addresses {
			// The address at another domain that the warning names is
			// the one to leave out.
			if eval(src, addr) && !eval(better, addr) && !strings.Contains(warnings[0], addr) {
				t.Errorf("%s took %s; what the warning says to write, %s, does not", src, addr, better)
			}
			local, domain, _ := strings.Cut(addr, "@")
			if twoAt := local + "@evil.example@" + domain; eval(better, twoAt) {
				t.Errorf("%s, what the warning says to write instead of %s, takes %s", better, src, twoAt)
			}
		}
	}
}
