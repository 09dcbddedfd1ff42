package idp

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestAdmit(t *testing.T) {
	alice := Profile{Email: "alice@Example.org", EmailVerified: true, Groups: []string{"annotators", "cvat-admins"},
		Claims: map[string]any{"email_verified": true}}
	tests := []struct {
		name    string
		c       Config
		p       Profile
		rule    string   // empty: admitted
		reasons string   // part of the user-facing reason
		hints   []string // parts of the operator's hint; none: no hint
	}{
		{name: "no rules admit everyone", p: Profile{}},
		{name: "an email the OIDC IdP says is unverified is refused, with no rule configured",
			c: Config{Protocol: OIDC}, p: Profile{Email: "ceo@example.com", Claims: map[string]any{"email_verified": false}},
			rule: "email_verified", reasons: "not verified"},
		{name: "so is one whose claim reads as anything but true",
			c: Config{Protocol: OIDC}, p: Profile{Email: "ceo@example.com", Claims: map[string]any{"email_verified": "no"}},
			rule: "email_verified"},
		{name: "a remapped verification claim is the one read",
			c: Config{Protocol: OIDC, Claims: map[string]string{"email_verified": "mail_ok"}},
			p: Profile{Email: "ceo@example.com", Claims: map[string]any{"mail_ok": false, "email_verified": true}}, rule: "email_verified"},
		{name: "an email the SAML IdP says is unverified is refused",
			c: Config{Protocol: SAML, AttributeMapping: map[string]string{"email_verified": "verified"}},
			p: Profile{Email: "ceo@example.com", Claims: map[string]any{"verified": "false"}}, rule: "email_verified"},
		{name: "an IdP that says nothing about the email is believed",
			c: Config{Protocol: OIDC}, p: Profile{Email: "ceo@example.com", Claims: map[string]any{}}},
		{name: "trust_email overrides what the IdP says",
			c: Config{Protocol: OIDC, TrustEmail: true}, p: Profile{Email: "ceo@example.com", Claims: map[string]any{"email_verified": false}}},
		{name: "a profile that trust_email marked verified at its login is refused without it, as its IdP said otherwise",
			c: Config{Protocol: OIDC}, p: Profile{Email: "ceo@example.com", EmailVerified: true, Claims: map[string]any{"email_verified": false}},
			rule: "email_verified"},
		{name: "one whose IdP said it is verified is not",
			c: Config{Protocol: OIDC}, p: Profile{Email: "ceo@example.com", EmailVerified: true, Claims: map[string]any{"email_verified": "true"}}},
		{name: "one whose SAML IdP said so as the login reads it is not",
			c: Config{Protocol: SAML, AttributeMapping: map[string]string{"email_verified": "verified"}},
			p: Profile{Email: "ceo@example.com", EmailVerified: true, Claims: map[string]any{"verified": []any{"1"}}}},
		{name: "one whose SAML IdP said otherwise is refused",
			c: Config{Protocol: SAML, AttributeMapping: map[string]string{"email_verified": "verified"}},
			p: Profile{Email: "ceo@example.com", EmailVerified: true, Claims: map[string]any{"verified": "False"}}, rule: "email_verified"},
		{name: "no email, nothing to refuse",
			c: Config{Protocol: OIDC}, p: Profile{Claims: map[string]any{"email_verified": false}}},
		{name: "LDAP never says an email is unverified",
			c: Config{Protocol: LDAP}, p: Profile{Email: "ceo@example.com", Claims: map[string]any{"email_verified": false}}},
		{name: "an allowed domain admits, case-insensitively", c: Config{AllowedEmailDomains: []string{"example.ORG"}}, p: alice},
		{name: "any listed domain admits", c: Config{AllowedEmailDomains: []string{"example.com", "example.org"}}, p: alice},
		{name: "another domain is refused and named", c: Config{AllowedEmailDomains: []string{"example.com"}}, p: alice,
			rule: "allowed_email_domains", reasons: "Email addresses at example.org are not allowed to sign in here."},
		{name: "a subdomain does not count as its parent", c: Config{AllowedEmailDomains: []string{"example.org"}},
			p: Profile{Email: "bob@eu.example.org"}, rule: "allowed_email_domains", reasons: "eu.example.org"},
		{name: "a parent does not count as its subdomain", c: Config{AllowedEmailDomains: []string{"eu.example.org"}},
			p: alice, rule: "allowed_email_domains"},
		{name: "the domain is after the last @", c: Config{AllowedEmailDomains: []string{"example.org"}},
			p: Profile{Email: `"a@example.org"@evil.example`}, rule: "allowed_email_domains", reasons: "evil.example"},
		// vouch-proxy#198: its domain check was strings.Contains, which
		// admitted each of these for the domain in them.
		{name: "an allowed domain in the local part does not count", c: Config{AllowedEmailDomains: []string{"example.org"}},
			p: Profile{Email: "example.org@evil.example", EmailVerified: true}, rule: "allowed_email_domains", reasons: "evil.example"},
		{name: "a domain that ends with an allowed one is another domain", c: Config{AllowedEmailDomains: []string{"example.org"}},
			p: Profile{Email: "eve@evilexample.org", EmailVerified: true}, rule: "allowed_email_domains", reasons: "evilexample.org"},
		{name: "an allowed domain with labels after it is another domain", c: Config{AllowedEmailDomains: []string{"example.org"}},
			p: Profile{Email: "eve@example.org.evil.example", EmailVerified: true}, rule: "allowed_email_domains", reasons: "example.org.evil.example"},
		// GHSA-c5c4-8r6x-56w3 (oauth2-proxy, CVE-2026-40574): the part after
		// the last @ of an address with two was taken for its domain. Mail
		// software reads such an address in more than one way (source routes,
		// the % hack), so the verification mail may have gone elsewhere.
		{name: "an address with two @ is not at the domain after the last one", c: Config{AllowedEmailDomains: []string{"example.org"}},
			p: Profile{Email: "attacker@evil.example@example.org", EmailVerified: true}, rule: "allowed_email_domains", reasons: "not one email address"},
		{name: "an address with no local part is refused", c: Config{AllowedEmailDomains: []string{"example.org"}},
			p: Profile{Email: "@example.org", EmailVerified: true}, rule: "allowed_email_domains", reasons: "not one email address"},
		{name: "a Kelvin sign does not fold to k: only ASCII letters ignore case", c: Config{AllowedEmailDomains: []string{"kompany.com"}},
			p: Profile{Email: "eve@\u212Aompany.com", EmailVerified: true}, rule: "allowed_email_domains", reasons: "at \u212Aompany.com are not"},
		{name: "a long s does not fold to s", c: Config{AllowedEmailDomains: []string{"sso.com"}},
			p: Profile{Email: "eve@\u017F\u017Fo.com", EmailVerified: true}, rule: "allowed_email_domains"},
		{name: "a non-ASCII domain is refused even when listed in the same spelling", c: Config{AllowedEmailDomains: []string{"b\u00FCcher.example"}},
			p: Profile{Email: "eve@b\u00FCcher.example", EmailVerified: true}, rule: "allowed_email_domains"},
		{name: "an organization whose name only Unicode-folds to an allowed one is refused",
			c: Config{Preset: PresetGitHub, AllowedOrganizations: []string{"kvat-ai"}}, p: Profile{Groups: []string{"\u212Avat-ai"}},
			rule: "allowed_organizations"},
		{name: "an organization differing in ASCII case is admitted",
			c: Config{Preset: PresetGitHub, AllowedOrganizations: []string{"CVAT-ai"}}, p: Profile{Groups: []string{"cvat-AI"}}},
		{name: "no email is refused when domains are listed", c: Config{AllowedEmailDomains: []string{"example.org"}},
			p: Profile{}, rule: "allowed_email_domains", reasons: "no email address"},
		{name: "an unverified address at an allowed domain is refused", c: Config{ID: "corp", Name: "Company SSO", AllowedEmailDomains: []string{"example.org"}},
			p: Profile{Email: "a@example.org", Claims: map[string]any{"email_verified": false}}, rule: "email_verified", reasons: "not verified at Company SSO. Verify it there"},
		{name: "an address at an allowed domain that the IdP says nothing of is refused, saying so",
			c: Config{ID: "corp", Name: "Company SSO", Protocol: OIDC, AllowedEmailDomains: []string{"example.org"}},
			p: Profile{Email: "a@example.org", Claims: map[string]any{}}, rule: "allowed_email_domains", reasons: "Company SSO did not say whether your email address is verified",
			hints: []string{`no "email_verified" claim`, "trust_email"}},
		{name: "the hint names the claim email_verified is mapped from",
			c: Config{ID: "corp", Name: "Company SSO", Protocol: OIDC, Claims: map[string]string{"email_verified": "mail_ok"}, AllowedEmailDomains: []string{"example.org"}},
			p: Profile{Email: "a@example.org", Claims: map[string]any{"email_verified": true}}, rule: "allowed_email_domains", reasons: "did not say",
			hints: []string{`no "mail_ok" claim`}},
		{name: "a SAML IdP that sends no verification attribute is named as such",
			c: Config{ID: "corp", Name: "Company SSO", Protocol: SAML, AttributeMapping: map[string]string{"email_verified": "verified"}, RequireVerifiedEmail: true},
			p: Profile{Email: "a@example.org", Claims: map[string]any{}}, rule: "require_verified_email", reasons: "did not say",
			hints: []string{`no "verified" attribute`, "trust_email"}},
		{name: "LDAP, which has no such claim, is not told to send one",
			c: Config{ID: "corp", Name: "Company SSO", Protocol: LDAP, RequireVerifiedEmail: true},
			p: Profile{Email: "a@example.org"}, rule: "require_verified_email", reasons: "not verified at Company SSO"},
		{name: "trust_email makes an address at an allowed domain verified", c: Config{AllowedEmailDomains: []string{"example.org"}, TrustEmail: true},
			p: Profile{Email: "a@example.org"}},
		{name: "trust_email makes no address up", c: Config{RequireVerifiedEmail: true, TrustEmail: true},
			p: Profile{}, rule: "require_verified_email"},
		{name: "azure without xms_edov asks for the optional claim", c: Config{Preset: PresetAzure, AllowedEmailDomains: []string{"example.com"}},
			p:    Profile{Email: "ceo@example.com", Claims: map[string]any{"email": "ceo@example.com"}},
			rule: "allowed_email_domains", reasons: "add the optional claim xms_edov"},
		{name: "azure with xms_edov false is not verified at Microsoft", c: Config{Preset: PresetAzure, Tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47", RequireVerifiedEmail: true},
			p:    Profile{Email: "ceo@example.com", Claims: map[string]any{"xms_edov": false}},
			rule: "email_verified", reasons: "not verified at Microsoft"},
		{name: "azure with xms_edov false is refused with no admission key, as the IdP said the address is not verified",
			c:    Config{Preset: PresetAzure, Tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47"},
			p:    Profile{Email: "ceo@example.com", Claims: map[string]any{"xms_edov": false}},
			rule: "email_verified", reasons: "not verified at Microsoft"},
		{name: "azure whose email_verified is mapped to a claim it did not send is said not to have said, naming that claim",
			c: Config{Preset: PresetAzure, Tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47", Claims: map[string]string{"email_verified": "mail_checked"}, RequireVerifiedEmail: true},
			p: Profile{Email: "ceo@example.com", Claims: map[string]any{"xms_edov": true}}, rule: "require_verified_email", reasons: "Microsoft did not say whether",
			hints: []string{`no "mail_checked" claim`, "trust_email"}},
		{name: "azure without an email is not told to ask for xms_edov", c: Config{Preset: PresetAzure, RequireVerifiedEmail: true},
			p: Profile{Claims: map[string]any{}}, rule: "require_verified_email", reasons: "not verified at Microsoft"},
		{name: "azure with xms_edov true admits the domain", c: Config{Preset: PresetAzure, Tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47", AllowedEmailDomains: []string{"example.com"}},
			p: Profile{Email: "ceo@example.com", EmailVerified: true, Claims: map[string]any{"xms_edov": true}}},
		{name: "a verified email passes require_verified_email", c: Config{RequireVerifiedEmail: true}, p: alice},
		{name: "an unverified email is refused by require_verified_email", c: Config{ID: "corp", Name: "Company SSO", RequireVerifiedEmail: true},
			p: Profile{Email: "a@example.org", Claims: map[string]any{"email_verified": "false"}}, rule: "email_verified", reasons: "not verified at Company SSO"},
		{name: "an email the IdP says nothing of is refused by require_verified_email, saying so", c: Config{ID: "corp", Name: "Company SSO", RequireVerifiedEmail: true},
			p: Profile{Email: "a@example.org"}, rule: "require_verified_email", reasons: "Company SSO did not say whether", hints: []string{"trust_email"}},
		{name: "no email is refused by require_verified_email", c: Config{RequireVerifiedEmail: true},
			p: Profile{EmailVerified: true}, rule: "require_verified_email"},
		{name: "one allowed group is enough", c: Config{AllowedGroups: []string{"cvat-admins", "other"}}, p: alice},
		{name: "no allowed group is refused without naming the groups", c: Config{AllowedGroups: []string{"secret-ops"}}, p: alice,
			rule: "allowed_groups", reasons: "not a member of a group"},
		{name: "group names are case-sensitive", c: Config{AllowedGroups: []string{"Annotators"}}, p: alice, rule: "allowed_groups"},
		{name: "every configured rule must pass", c: Config{AllowedEmailDomains: []string{"example.org"}, AllowedGroups: []string{"nope"}},
			p: alice, rule: "allowed_groups"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Admit(&tt.p)
			var ae *AdmissionError
			if tt.rule == "" {
				if err != nil {
					t.Fatalf("Admit = %v, want admitted", err)
				}
				return
			}
			if !errors.As(err, &ae) || ae.Rule != tt.rule || !strings.Contains(ae.Reason, tt.reasons) {
				t.Fatalf("Admit = %v, want refusal by %s saying %q", err, tt.rule, tt.reasons)
			}
			for _, h := range tt.hints {
				if !strings.Contains(ae.Hint, h) {
					t.Errorf("hint %q does not say %q", ae.Hint, h)
				}
			}
			if tt.hints == nil && ae.Hint != "" {
				t.Errorf("hint %q, want none", ae.Hint)
			}
			if strings.Contains(ae.Reason, "trust_email") {
				t.Errorf("reason %q names a configuration key to the user", ae.Reason)
			}
			if strings.Contains(ae.Reason, "secret-ops") {
				t.Errorf("reason %q names a configured group", ae.Reason)
			}
		})
	}
}

func TestValidateAdmission(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		want []string
	}{
		{name: "domains, groups and github lists that are well formed pass",
			c: Config{Preset: PresetGitHub, AllowedEmailDomains: []string{"example.com", "eu.example.com"}, AllowedGroups: []string{"g"},
				AllowedOrganizations: []string{"cvat-ai"}, AllowedTeams: []string{"cvat-ai/annotation-team"}}},
		{name: "wildcards, addresses and junk are not domains",
			c: Config{AllowedEmailDomains: []string{"*.example.com", "a@example.com", "example"}},
			want: []string{
				`allowed_email_domains[0]: wildcards are not supported; list each domain, subdomains included (got "*.example.com")`,
				`allowed_email_domains[1]: a domain, not an email address (got "a@example.com")`,
				`allowed_email_domains[2]: not a domain name like example.com (got "example")`,
			}},
		{name: "an empty group name is refused", c: Config{AllowedGroups: []string{""}}, want: []string{"allowed_groups[0]: empty group name"}},
		{name: "organisations need preset github", c: Config{AllowedOrganizations: []string{"cvat-ai"}},
			want: []string{"allowed_organizations: only for preset github (use allowed_groups with other providers)"}},
		{name: "teams must be org/slug", c: Config{Preset: PresetGitHub, AllowedTeams: []string{"annotation-team"}},
			want: []string{`allowed_teams[0]: must be "org/team-slug" (got "annotation-team")`}},
		{name: "names too long are refused: a domain label over 63 bytes, a GitHub login over 39",
			c: Config{Preset: PresetGitHub, AllowedEmailDomains: []string{strings.Repeat("a", 64) + ".example.com", strings.Repeat("a", 63) + ".example.com"},
				AllowedOrganizations: []string{strings.Repeat("o", 40), strings.Repeat("o", 39)},
				AllowedTeams:         []string{strings.Repeat("o", 40) + "/team", strings.Repeat("o", 39) + "/team"}},
			want: []string{
				`allowed_email_domains[0]: not a domain name like example.com (got "` + strings.Repeat("a", 64) + `.example.com")`,
				`allowed_organizations[0]: not a GitHub organization login (got "` + strings.Repeat("o", 40) + `")`,
				`allowed_teams[0]: must be "org/team-slug" (got "` + strings.Repeat("o", 40) + `/team")`,
			}},
		{name: "SAML without a verification signal admits no one by domain or by verified email",
			c: Config{Protocol: SAML, RequireVerifiedEmail: true, AllowedEmailDomains: []string{"example.com"}},
			want: []string{
				"allowed_email_domains: admits no one: a SAML user's email counts as verified only with attribute_mapping.email_verified (an attribute the IdP sends) or trust_email: true",
				"require_verified_email: admits no one: a SAML user's email counts as verified only with attribute_mapping.email_verified (an attribute the IdP sends) or trust_email: true",
			}},
		{name: "SAML with email_verified mapped may check domains",
			c: Config{Protocol: SAML, AllowedEmailDomains: []string{"example.com"}, AttributeMapping: map[string]string{"email_verified": "emailVerified"}}},
		{name: "SAML with trust_email may check domains",
			c: Config{Protocol: SAML, RequireVerifiedEmail: true, AllowedEmailDomains: []string{"example.com"}, TrustEmail: true}},
		{name: "OIDC without a preset may trust its IdP's addresses", c: Config{Protocol: OIDC, TrustEmail: true}},
		{name: "trust_email is refused for LDAP",
			c: Config{Protocol: LDAP, TrustEmail: true}, want: []string{"trust_email: not for LDAP: an address from the directory always counts as verified"}},
		{name: "trust_email goes with a preset (admin-made Keycloak users are unverified)",
			c: Config{Preset: PresetKeycloak, TrustEmail: true}},
		{name: "trust_email goes with SAML's email_verified mapped",
			c: Config{Protocol: SAML, TrustEmail: true, AttributeMapping: map[string]string{"email_verified": "v"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, err := range tt.c.validateAdmission() {
				got = append(got, err.Error())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
		})
	}
}

func TestTrustEmailMarksTheAdmittedProfile(t *testing.T) {
	c := Config{Protocol: SAML, TrustEmail: true, AllowedEmailDomains: []string{"example.org"}}
	p := Profile{Email: "a@example.org"}
	if err := c.Admit(&p); err != nil {
		t.Fatalf("Admit = %v", err)
	}
	if !p.EmailVerified {
		t.Error("email_verified is still false: expressions and headers would not see what admission decided")
	}

	// No address, nothing to trust: email_verified true beside an empty
	// email would tell the upstream and expressions of an address vouched for.
	c = Config{Protocol: SAML, TrustEmail: true}
	p = Profile{}
	if err := c.Admit(&p); err != nil {
		t.Fatalf("Admit = %v", err)
	}
	if p.EmailVerified {
		t.Error("a profile without email is marked email_verified")
	}
}

// A session's profile that trust_email marked verified at its login, of an
// IdP that says nothing about the email, is verified no longer once a
// reload takes trust_email away: a login now would not be (nothing else
// makes an OIDC or SAML email verified), and the admission keys that need
// a verified email (allowed_email_domains, require_verified_email) refuse
// it as they would refuse that login. LDAP's addresses stay verified.
func TestAdmitHoldsASessionToTheIdPsWordWithoutTrustEmail(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		p    Profile
		rule string
	}{
		{"OIDC, allowed_email_domains", Config{Protocol: OIDC, AllowedEmailDomains: []string{"example.com"}},
			Profile{Email: "eve@example.com", EmailVerified: true, Claims: map[string]any{"sub": "eve"}}, "allowed_email_domains"},
		{"SAML, require_verified_email", Config{Protocol: SAML, RequireVerifiedEmail: true, AttributeMapping: map[string]string{"email_verified": "verified"}},
			Profile{Email: "eve@example.com", EmailVerified: true, Claims: map[string]any{"mail": "eve@example.com"}}, "require_verified_email"},
		{"OIDC, the IdP said verified", Config{Protocol: OIDC, AllowedEmailDomains: []string{"example.com"}},
			Profile{Email: "eve@example.com", EmailVerified: true, Claims: map[string]any{"email_verified": true}}, ""},
		{"SAML, the IdP said verified under a name with spaces around it in the config", Config{Protocol: SAML, RequireVerifiedEmail: true,
			AttributeMapping: map[string]string{"email_verified": " verified "}},
			Profile{Email: "eve@example.com", EmailVerified: true, Claims: map[string]any{"verified": []any{"true"}}}, ""},
		{"LDAP", Config{Protocol: LDAP, AllowedEmailDomains: []string{"example.com"}},
			Profile{Email: "eve@example.com", EmailVerified: true, Claims: map[string]any{"dn": "uid=eve"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Admit(&tc.p)
			var refused *AdmissionError
			switch {
			case tc.rule == "" && err != nil:
				t.Errorf("Admit = %v, want admitted", err)
			case tc.rule != "" && (!errors.As(err, &refused) || refused.Rule != tc.rule):
				t.Errorf("Admit = %v, want refused by %s", err, tc.rule)
			}
		})
	}
}
