package idp

import (
	"slices"
	"testing"
)

// Tests that find an address's domain in its text are warned of; those that
// read it after the one @ are not (GHSA-c5c4-8r6x-56w3's class, in
// conditions rather than allowed_email_domains).
func TestEmailDomainWarnings(t *testing.T) {
	const twoAt = "an address with two @ that mail software may deliver to evil.example (allowed_email_domains refuses it)"
	for _, tc := range []struct {
		name, expr string
		want       []string
	}{
		{"endsWith an @domain takes an address with two @", `email_verified && email endsWith "@company.com"`,
			[]string{`email endsWith "@company.com": also true of eve@evil.example@company.com, ` + twoAt + `; write email matches "^[^@]+@company[.]com$"`}},
		{"endsWith a bare domain takes another domain", `email endsWith "company.com"`,
			[]string{`email endsWith "company.com": also true of eve@evilcompany.com, an address at another domain; write email matches "^[^@]+@company[.]com$"`}},
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
			[]string{`split(email, "@")[1]: the text after the first @, not the domain of an address with two (company.com of eve@company.com@evil.example, which mail software may deliver to evil.example); write email matches "^[^@]+@company[.]com$" with your domain`}},
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
			[]string{`split(claims.mail, "@")[1]: the text after the first @, not the domain of an address with two (company.com of eve@company.com@evil.example, which mail software may deliver to evil.example); write claims.mail matches "^[^@]+@company[.]com$" with your domain`}},
		{"an @ alone is no domain test", `email contains "@" ? email : sub + "@users.invalid"`, nil},
		{"matches a local part without @ is no warning", `email matches "^[a-z.]+@company[.]com$" || email matches "(?i)^[^@]+@company[.]com$"`, nil},
		{"matches a pattern naming no one domain is not judged", `email matches "@(a|b)[.]example$"`, nil},
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
