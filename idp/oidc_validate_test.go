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
		{name: "an id of 63 bytes is valid", base: valid, edit: func(c *Config) { c.ID = strings.Repeat("a", 63) }},
		{
			name: "an id of 64 bytes is refused",
			base: valid, edit: func(c *Config) { c.ID = strings.Repeat("a", 64) },
			want: []string{`id: must be 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit (got "` + strings.Repeat("a", 64) + `")`},
		},
		{
			name: "an id with a slash is refused: it is a path segment of the callback URLs",
			base: valid, edit: func(c *Config) { c.ID = "corp/sso" },
			want: []string{`id: must be 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit (got "corp/sso")`},
		},
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
			name: "plain http to a host that is not loopback is refused: discovery and the JWKS come from it",
			base: valid, edit: func(c *Config) { c.ServerURL = "http://login.example.com/" },
			want: []string{`server_url: plain http refused outside development: the host "login.example.com" is not loopback, and discovery and the keys that sign ID tokens come from it; use https`},
		},
		{
			name: "plain http to loopback is development, and accepted",
			base: valid, edit: func(c *Config) { c.ServerURL = "http://127.0.0.1:8080/" },
		},
		{
			name: "so is http to localhost and to [::1]",
			base: valid, edit: func(c *Config) { c.ServerURL = "http://localhost:8080/realms/x" },
		},
		{
			name: "a preset's http base_url is refused as base_url, the key the file has",
			base: valid, edit: func(c *Config) { c.ServerURL, c.Preset, c.BaseURL = "", "gitlab", "http://gitlab.corp.example" },
			want: []string{`base_url: plain http refused outside development: the host "gitlab.corp.example" is not loopback, and the preset's login, token and user endpoints are under it; use https`},
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
			name: "a claim name of only spaces is refused, as attribute_mapping's attribute names are",
			base: valid, edit: func(c *Config) { c.Claims = map[string]string{"groups": "  ", "email": "\t"} },
			want: []string{"claims.email: empty claim name", "claims.groups: empty claim name"},
		},
		{
			name: "OAUTH2 needs its three endpoints",
			base: oauth, edit: func(c *Config) { c.AuthURL, c.TokenURL, c.UserinfoURL = "", "github.com/token", "" },
			want: []string{"auth_url: required", `token_url: not an absolute http(s) URL: "github.com/token"`, "userinfo_url: required"},
		},
		{
			name: "OAUTH2 endpoints over plain http are refused unless on loopback",
			base: oauth, edit: func(c *Config) {
				c.AuthURL, c.TokenURL, c.UserinfoURL = "http://idp.example/auth", "http://idp.example/token", "http://[::1]:9/user"
			},
			want: []string{
				`auth_url: plain http refused outside development: the host "idp.example" is not loopback, and the browser would log in at a page anyone on the path can replace; use https`,
				`token_url: plain http refused outside development: the host "idp.example" is not loopback, and the client secret and the tokens travel over it; use https`,
			},
		},
		{
			name: "a server_url with credentials is refused, and they are not quoted",
			base: valid, edit: func(c *Config) { c.ServerURL = "https://svc:s3cret@login.example.com/" },
			want: []string{"server_url: must not carry credentials (user:password@); the IdP is reached with client_id and client_secret"},
		},
		{
			name: "so are OAUTH2 endpoints with credentials",
			base: oauth, edit: func(c *Config) {
				c.AuthURL, c.TokenURL = "https://svc:s3cret@idp.example/auth", "https://svc@idp.example/token"
			},
			want: []string{
				"auth_url: must not carry credentials (user:password@); the IdP is reached with client_id and client_secret",
				"token_url: must not carry credentials (user:password@); the IdP is reached with client_id and client_secret",
			},
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

// Secrets come from PORTCULLIS_IDP_<ID>_*, the id in upper case with '-'
// read as '_'; a variable that is set but empty overrides nothing, so that
// an empty line in an env file does not blank the configured secret.
func TestApplyEnv(t *testing.T) {
	env := map[string]string{
		"PORTCULLIS_IDP_CORP_SSO_CLIENT_ID":     "from-env",
		"PORTCULLIS_IDP_CORP_SSO_CLIENT_SECRET": "",
		"PORTCULLIS_IDP_CORP_SSO_BIND_PASSWORD": "b1nd",
	}
	c := Config{ID: "corp-sso", ClientID: "from-file", ClientSecret: "file-secret"}
	c.ApplyEnv(func(k string) string { return env[k] })
	if c.ClientID != "from-env" || c.ClientSecret != "file-secret" || c.BindPassword != "b1nd" {
		t.Errorf("client_id %q, client_secret %q, bind_password %q; want from-env, file-secret, b1nd", c.ClientID, c.ClientSecret, c.BindPassword)
	}
}

// A URL a problem quotes has its password masked, whether or not net/url
// reads it as a URL with one.
func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"https://admin:s3cret@login.example.com/realms/x", "https://xxxxx@login.example.com/realms/x"},
		{"login.example.com:s3cret@host", "xxxxx@host"},
		{"https://admin:s3 cret@login.example.com", "xxxxx@login.example.com"},
		{"https://login.example.com/", "https://login.example.com/"},
	} {
		if got := RedactURL(tc.raw); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}
