package idp

import (
	"strings"
	"testing"
)

func TestValidateOIDC(t *testing.T) {
	valid := Config{ID: "corp", Protocol: OIDC, ServerURL: "https://login.example.com/", ClientID: "cid"}
	oauth := Config{
		ID: "gh", Protocol: OAuth2, ClientID: "cid", ClientSecret: "s",
		AuthURL: "https://github.com/login/oauth/authorize", TokenURL: "https://github.com/login/oauth/access_token",
		UserinfoURL: "https://api.github.com/user",
	}
	tests := []struct {
		name string
		edit func(c *Config)
		base Config
		// want lists every expected error line; none means valid.
		want []string
	}{
		{name: "a complete OIDC entry is valid", base: valid},
		{name: "a public client needs no secret", base: valid, edit: func(c *Config) { c.ClientSecret = "" }},
		{name: "a complete OAUTH2 entry is valid", base: oauth},
		{
			name: "OIDC needs server_url and client_id",
			base: valid, edit: func(c *Config) { c.ServerURL, c.ClientID = "", "" },
			want: []string{"server_url: required", "client_id: required"},
		},
		{
			name: "a preset stands in for server_url",
			base: valid, edit: func(c *Config) { c.ServerURL, c.Preset = "", "google" },
		},
		{
			name: "server_url must be an absolute http(s) URL",
			base: valid, edit: func(c *Config) { c.ServerURL = "ldap://login.example.com" },
			want: []string{`server_url: not an absolute http(s) URL: "ldap://login.example.com"`},
		},
		{
			name: "a relative server_url is refused",
			base: valid, edit: func(c *Config) { c.ServerURL = "/realms/x" },
			want: []string{`server_url: not an absolute http(s) URL: "/realms/x"`},
		},
		{
			name: "OIDC scopes without openid are refused",
			base: valid, edit: func(c *Config) { c.Scopes = []string{"email"} },
			want: []string{"scopes: must include openid for protocol OIDC"},
		},
		{
			name: "an unknown token_auth_method is refused",
			base: valid, edit: func(c *Config) { c.TokenAuthMethod = "private_key_jwt" },
			want: []string{`token_auth_method: unknown method "private_key_jwt" (want client_secret_basic or client_secret_post)`},
		},
		{
			name: "client_secret_post is accepted",
			base: valid, edit: func(c *Config) { c.TokenAuthMethod = ClientSecretPost },
		},
		{
			name: "claims keys must be profile fields and values non-empty",
			base: valid, edit: func(c *Config) {
				c.Claims = map[string]string{"roles": "groups", "groups": "", "email": "mail"}
			},
			want: []string{
				"claims.groups: empty claim name",
				"claims.roles: unknown profile field (want one of email, email_verified, first_name, groups, last_name, name, sub, username)",
			},
		},
		{
			name: "OAUTH2 needs its three endpoints",
			base: oauth, edit: func(c *Config) { c.AuthURL, c.TokenURL, c.UserinfoURL = "", "github.com/token", "" },
			want: []string{"auth_url: required", `token_url: not an absolute http(s) URL: "github.com/token"`, "userinfo_url: required"},
		},
		{
			name: "OAUTH2 scopes need not include openid",
			base: oauth, edit: func(c *Config) { c.Scopes = []string{"read:user", "user:email"} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.base
			if tt.edit != nil {
				tt.edit(&c)
			}
			var got []string
			if err := c.Validate(); err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Validate() =\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
		})
	}
}
