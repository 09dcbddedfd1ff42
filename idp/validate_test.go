package idp

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
)

// TestValidateListsEachMistakeAlone: each mistake in an entry is refused by
// Validate, the whole entry's check, with the key the file has, and is the
// one problem listed: the whole output is compared, so that a check
// dropped, a key misnamed or a problem that hides behind another all show.
func TestValidateListsEachMistakeAlone(t *testing.T) {
	_, _, cert := writeSPKeyPair(t)
	oidc := Config{ID: "corp", Protocol: OIDC, ServerURL: "https://login.example.com/", ClientID: "cid"}
	github := Config{ID: "gh", Preset: PresetGitHub, ClientID: "cid"}
	saml := Config{ID: "corp", Protocol: SAML, EntityID: "https://idp.example.com", X509Cert: base64.StdEncoding.EncodeToString(cert.Raw), SSOURL: "https://idp.example.com/sso"}
	ldap := ldapTestConfig("ldaps://ad.example.com")
	tests := []struct {
		name string
		base Config
		edit func(c *Config)
		want []string
	}{
		{"an entry without a protocol", Config{ID: "corp"}, func(c *Config) {},
			[]string{"protocol: required (OIDC, OAUTH2, SAML or LDAP)"}},
		{"who may sign in is checked with the rest of the entry", oidc, func(c *Config) { c.AllowedGroups = []string{""} },
			[]string{"allowed_groups[0]: empty group name"}},
		{"allowed_teams without preset github is named as allowed_teams", oidc, func(c *Config) { c.AllowedTeams = []string{"cvat-ai/annotation"} },
			[]string{"allowed_teams: only for preset github (use allowed_groups with other providers)"}},
		{"a domain with a leading dot is a wildcard", oidc, func(c *Config) { c.AllowedEmailDomains = []string{".example.com"} },
			[]string{`allowed_email_domains[0]: wildcards are not supported; list each domain, subdomains included (got ".example.com")`}},

		{"a preset's domain of spaces is missing", Config{ID: "okta", Preset: PresetOkta, ClientID: "cid"}, func(c *Config) { c.Domain = "  " },
			[]string{"preset: okta needs domain"}},
		{"a base_url with a query", github, func(c *Config) { c.BaseURL = "https://ghe.example.com?org=cvat" },
			[]string{`base_url: not a host name or http(s) URL: "https://ghe.example.com?org=cvat"`}},
		{"a base_url with a fragment", github, func(c *Config) { c.BaseURL = "https://ghe.example.com#top" },
			[]string{`base_url: not a host name or http(s) URL: "https://ghe.example.com#top"`}},
		{"a base_url without a host", github, func(c *Config) { c.BaseURL = "https://" },
			[]string{`base_url: not a host name or http(s) URL: "https://"`}},

		{"an sso_url of another scheme", saml, func(c *Config) { c.SSOURL = "ftp://idp.example.com/sso" },
			[]string{`sso_url: not an absolute URL: "ftp://idp.example.com/sso"`}},
		{"an sso_url of LDAP", saml, func(c *Config) { c.SSOURL = "ldap://idp.example.com/sso" },
			[]string{`sso_url: must be an http or https URL: "ldap://idp.example.com/sso"`}},

		{"an LDAP url without a host", ldap, func(c *Config) { c.URL = "ldap://" },
			[]string{`url: must be ldap://host[:port] or ldaps://host[:port], got "ldap://"`}},
		{"an LDAP url with a query", ldap, func(c *Config) { c.URL = "ldaps://ad.example.com?base" },
			[]string{`url: must be only scheme://host[:port] (put the base DN in user_search.base_dn, the service account in bind_dn and bind_password), got "ldaps://ad.example.com?base"`}},
		{"an LDAP url with a fragment", ldap, func(c *Config) { c.URL = "ldaps://ad.example.com#x" },
			[]string{`url: must be only scheme://host[:port] (put the base DN in user_search.base_dn, the service account in bind_dn and bind_password), got "ldaps://ad.example.com#x"`}},
		{"insecure_skip_verify without TLS is named as insecure_skip_verify", ldap, func(c *Config) { c.URL, c.InsecureSkipVerify = "ldap://127.0.0.1:389", true },
			[]string{"insecure_skip_verify: only used with ldaps:// or start_tls: true"}},
		{"an empty group_name", ldap, func(c *Config) { c.AttributeMapping = map[string]string{"group_name": ""} },
			[]string{`attribute_mapping.group_name: must be cn (the group's name) or dn (its whole DN), got ""`}},
		{"a user_search.base_dn that is no DN", ldap, func(c *Config) { c.UserSearch.BaseDN = "example.com" },
			[]string{"user_search.base_dn: not a DN: DN ended with incomplete type, value pair"}},
		{"a group_search.base_dn that is no DN", ldap, func(c *Config) { c.GroupSearch.BaseDN = "groups" },
			[]string{"group_search.base_dn: not a DN: DN ended with incomplete type, value pair"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.base
			tt.edit(&c)
			var got []string
			if err := c.Validate(); err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Validate() =\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
		})
	}
}
