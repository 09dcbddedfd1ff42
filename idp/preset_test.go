package idp

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// TestPresetsFillInWhatTheProvidersDocument checks each preset's filled-in
// entry against the provider's documentation: issuer (discovery base) or
// endpoints, scopes and the claims that carry username and groups.
func TestPresetsFillInWhatTheProvidersDocument(t *testing.T) {
	const tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	tests := []struct {
		name string
		in   Config
		want Config
	}{
		{
			name: "google is accounts.google.com with the email as username",
			in:   Config{Preset: PresetGoogle},
			want: Config{Protocol: OIDC, ServerURL: "https://accounts.google.com", Scopes: []string{"openid", "email", "profile"},
				Claims: map[string]string{"username": "email"}},
		},
		{
			name: "github is OAuth2 at github.com and api.github.com",
			in:   Config{Preset: PresetGitHub},
			want: Config{Protocol: OAuth2, AuthURL: "https://github.com/login/oauth/authorize", TokenURL: "https://github.com/login/oauth/access_token",
				UserinfoURL: "https://api.github.com/user", Scopes: []string{"read:user", "user:email", "read:org"},
				TokenAuthMethod: ClientSecretPost, Claims: map[string]string{"username": "login"}},
		},
		{
			name: "github enterprise serves the web flow at base_url and the API under /api/v3",
			in:   Config{Preset: PresetGitHub, BaseURL: "https://github.example.com/"},
			want: Config{Protocol: OAuth2, AuthURL: "https://github.example.com/login/oauth/authorize", TokenURL: "https://github.example.com/login/oauth/access_token",
				UserinfoURL: "https://github.example.com/api/v3/user", Scopes: []string{"read:user", "user:email", "read:org"},
				TokenAuthMethod: ClientSecretPost, Claims: map[string]string{"username": "login"}},
		},
		{
			name: "github enterprise cloud with data residency serves the web flow at SUBDOMAIN.ghe.com and the API at api.SUBDOMAIN.ghe.com",
			in:   Config{Preset: PresetGitHub, BaseURL: "https://acme.ghe.com"},
			want: Config{Protocol: OAuth2, AuthURL: "https://acme.ghe.com/login/oauth/authorize", TokenURL: "https://acme.ghe.com/login/oauth/access_token",
				UserinfoURL: "https://api.acme.ghe.com/user", Scopes: []string{"read:user", "user:email", "read:org"},
				TokenAuthMethod: ClientSecretPost, Claims: map[string]string{"username": "login"}},
		},
		{
			name: "gitlab is gitlab.com with the groups claim",
			in:   Config{Preset: PresetGitLab},
			want: Config{Protocol: OIDC, ServerURL: "https://gitlab.com", Scopes: []string{"openid", "profile", "email"},
				Claims: map[string]string{"groups": "groups", "username": "preferred_username"}},
		},
		{
			name: "self-hosted gitlab is base_url",
			in:   Config{Preset: PresetGitLab, BaseURL: "gitlab.example.com"},
			want: Config{Protocol: OIDC, ServerURL: "https://gitlab.example.com", Scopes: []string{"openid", "profile", "email"},
				Claims: map[string]string{"groups": "groups", "username": "preferred_username"}},
		},
		{
			name: "self-hosted gitlab under a path keeps the path, without its trailing slash",
			in:   Config{Preset: PresetGitLab, BaseURL: "https://example.com/gitlab/"},
			want: Config{Protocol: OIDC, ServerURL: "https://example.com/gitlab", Scopes: []string{"openid", "profile", "email"},
				Claims: map[string]string{"groups": "groups", "username": "preferred_username"}},
		},
		{
			name: "cognito with a user pool is OIDC at the pool's issuer, region read from the pool id",
			in:   Config{Preset: PresetCognito, UserPoolID: "eu-west-1_AbC123xyz"},
			want: Config{Protocol: OIDC, ServerURL: "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123xyz",
				Scopes: []string{"openid", "email", "profile"},
				Claims: map[string]string{"groups": "cognito:groups", "username": "cognito:username"}},
		},
		{
			name: "cognito with the hosted UI domain alone is OAuth2 at its /oauth2 endpoints",
			in:   Config{Preset: PresetCognito, Domain: "https://cvat.auth.us-east-1.amazoncognito.com"},
			want: Config{Protocol: OAuth2, AuthURL: "https://cvat.auth.us-east-1.amazoncognito.com/oauth2/authorize",
				TokenURL: "https://cvat.auth.us-east-1.amazoncognito.com/oauth2/token", UserinfoURL: "https://cvat.auth.us-east-1.amazoncognito.com/oauth2/userInfo",
				Scopes: []string{"openid", "email", "profile"}, Claims: map[string]string{"username": "username"}},
		},
		{
			name: "a cognito domain given with its /oauth2 path has it once",
			in:   Config{Preset: PresetCognito, Domain: "https://cvat.auth.us-east-1.amazoncognito.com/oauth2/"},
			want: Config{Protocol: OAuth2, AuthURL: "https://cvat.auth.us-east-1.amazoncognito.com/oauth2/authorize",
				TokenURL: "https://cvat.auth.us-east-1.amazoncognito.com/oauth2/token", UserinfoURL: "https://cvat.auth.us-east-1.amazoncognito.com/oauth2/userInfo",
				Scopes: []string{"openid", "email", "profile"}, Claims: map[string]string{"username": "username"}},
		},
		{
			name: "azure is the tenant's v2.0 issuer with groups and xms_edov",
			in:   Config{Preset: PresetAzure, Tenant: tenant},
			want: Config{Protocol: OIDC, ServerURL: "https://login.microsoftonline.com/" + tenant + "/v2.0", Scopes: []string{"openid", "profile", "email"},
				Claims: map[string]string{"groups": "groups", "username": "preferred_username", "email_verified": "xms_edov"}},
		},
		{
			name: "okta without authorization_server is the org server with the groups scope",
			in:   Config{Preset: PresetOkta, Domain: "dev-123456.okta.com"},
			want: Config{Protocol: OIDC, ServerURL: "https://dev-123456.okta.com", Scopes: []string{"openid", "email", "profile", "groups"},
				Claims: map[string]string{"groups": "groups", "username": "preferred_username"}},
		},
		{
			name: "okta with authorization_server is that custom server",
			in:   Config{Preset: PresetOkta, Domain: "dev-123456.okta.com", AuthorizationServer: "default"},
			want: Config{Protocol: OIDC, ServerURL: "https://dev-123456.okta.com/oauth2/default", Scopes: []string{"openid", "email", "profile"},
				Claims: map[string]string{"groups": "groups", "username": "preferred_username"}},
		},
		{
			name: "auth0 is the tenant domain with the issuer's trailing slash",
			in:   Config{Preset: PresetAuth0, Domain: "cvat.eu.auth0.com"},
			want: Config{Protocol: OIDC, ServerURL: "https://cvat.eu.auth0.com/", Scopes: []string{"openid", "profile", "email"},
				Claims: map[string]string{"username": "nickname"}},
		},
		{
			name: "keycloak keeps the realm URL and reads realm roles as groups",
			in:   Config{Preset: PresetKeycloak, ServerURL: "https://kc.example.com/realms/cvat"},
			want: Config{Protocol: OIDC, ServerURL: "https://kc.example.com/realms/cvat", Scopes: []string{"openid", "email", "profile"},
				Claims: map[string]string{"groups": "realm_access.roles", "username": "preferred_username"}},
		},
		{
			name: "huggingface is huggingface.co with openid profile email",
			in:   Config{Preset: PresetHuggingFace},
			want: Config{Protocol: OIDC, ServerURL: "https://huggingface.co", Scopes: []string{"openid", "profile", "email"},
				Claims: map[string]string{"groups": "groups", "username": "preferred_username"}},
		},
		{
			name: "user-given keys win over the preset, claim by claim",
			in: Config{Preset: PresetKeycloak, ServerURL: "https://kc.example.com/realms/cvat", Scopes: []string{"openid", "roles"},
				TokenAuthMethod: ClientSecretBasic, Claims: map[string]string{"groups": "groups"}},
			want: Config{Protocol: OIDC, ServerURL: "https://kc.example.com/realms/cvat", Scopes: []string{"openid", "roles"},
				TokenAuthMethod: ClientSecretBasic, Claims: map[string]string{"groups": "groups", "username": "preferred_username"}},
		},
		{
			name: "a user-given server_url overrides a preset's",
			in:   Config{Preset: PresetGoogle, ServerURL: "http://127.0.0.1:8080"},
			want: Config{Protocol: OIDC, ServerURL: "http://127.0.0.1:8080", Scopes: []string{"openid", "email", "profile"},
				Claims: map[string]string{"username": "email"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			in.ID, in.ClientID = "x", "cid"
			userClaims := maps.Clone(in.Claims)
			got, err := in.WithPreset()
			if err != nil {
				t.Fatalf("WithPreset: %v", err)
			}
			if got.Protocol != tt.want.Protocol || got.ServerURL != tt.want.ServerURL || got.AuthURL != tt.want.AuthURL ||
				got.TokenURL != tt.want.TokenURL || got.UserinfoURL != tt.want.UserinfoURL || got.TokenAuthMethod != tt.want.TokenAuthMethod ||
				!slices.Equal(got.Scopes, tt.want.Scopes) || !maps.Equal(got.Claims, tt.want.Claims) {
				t.Errorf("got  protocol=%s server=%s auth=%s token=%s userinfo=%s method=%s scopes=%q claims=%v\nwant protocol=%s server=%s auth=%s token=%s userinfo=%s method=%s scopes=%q claims=%v",
					got.Protocol, got.ServerURL, got.AuthURL, got.TokenURL, got.UserinfoURL, got.TokenAuthMethod, got.Scopes, got.Claims,
					tt.want.Protocol, tt.want.ServerURL, tt.want.AuthURL, tt.want.TokenURL, tt.want.UserinfoURL, tt.want.TokenAuthMethod, tt.want.Scopes, tt.want.Claims)
			}
			if !maps.Equal(in.Claims, userClaims) {
				t.Errorf("WithPreset changed the caller's claims map: %v", in.Claims)
			}
			if err := in.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestPresetValidation(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		want []string
	}{
		{name: "an unknown preset is refused", c: Config{Preset: "facebook"},
			want: []string{`preset: unknown preset "facebook" (want google, github, gitlab, cognito, azure, okta, auth0, keycloak or huggingface)`}},
		{name: "azure needs tenant", c: Config{Preset: PresetAzure}, want: []string{"preset: azure needs tenant"}},
		{name: "azure refuses the multi-tenant common endpoint", c: Config{Preset: PresetAzure, Tenant: "common"},
			want: []string{`tenant: must be the directory (tenant) id, a GUID like 72f988bf-86f1-41af-91ab-2d7cd011db47 (got "common"): other values discover an issuer that cannot be verified`}},
		{name: "azure refuses a tenant GUID with a path after it", c: Config{Preset: PresetAzure, Tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47/../common"},
			want: []string{`tenant: must be the directory (tenant) id, a GUID like 72f988bf-86f1-41af-91ab-2d7cd011db47 (got "72f988bf-86f1-41af-91ab-2d7cd011db47/../common"): other values discover an issuer that cannot be verified`}},
		{name: "okta needs domain", c: Config{Preset: PresetOkta}, want: []string{"preset: okta needs domain"}},
		{name: "okta's authorization_server is its id, not the issuer URL", c: Config{Preset: PresetOkta, Domain: "acme.okta.com", AuthorizationServer: "https://acme.okta.com/oauth2/default"},
			want: []string{`authorization_server: must be the id of an Okta authorization server, like default or aus8x2l1r1SLCHP7e4x6 (got "https://acme.okta.com/oauth2/default")`}},
		{name: "okta's authorization_server default is accepted", c: Config{Preset: PresetOkta, Domain: "acme.okta.com", AuthorizationServer: "default"}},
		{name: "auth0 needs domain", c: Config{Preset: PresetAuth0}, want: []string{"preset: auth0 needs domain"}},
		{name: "keycloak needs the realm URL", c: Config{Preset: PresetKeycloak},
			want: []string{"preset: keycloak needs server_url (the realm URL, https://keycloak.example.com/realms/NAME)"}},
		{name: "cognito needs a domain or a user pool", c: Config{Preset: PresetCognito}, want: []string{"preset: cognito needs domain"}},
		{name: "cognito over OIDC needs region and user_pool_id", c: Config{Preset: PresetCognito, Protocol: OIDC},
			want: []string{"preset: cognito needs region", "preset: cognito needs user_pool_id"}},
		{name: "a cognito pool id of another region is refused", c: Config{Preset: PresetCognito, Region: "us-east-1", UserPoolID: "eu-west-1_AbC"},
			want: []string{`user_pool_id: not a user pool id of region us-east-1 like us-east-1_AbC123xyz: "eu-west-1_AbC"`}},
		{name: "a region that is not an AWS region is refused as region", c: Config{Preset: PresetCognito, Region: "evil", UserPoolID: "us-east-1_AbC"},
			want: []string{`region: not an AWS region like us-east-1: "evil"`}},
		{name: "github cannot speak OIDC", c: Config{Preset: PresetGitHub, Protocol: OIDC},
			want: []string{"protocol: preset github uses OAUTH2, not OIDC"}},
		{name: "a base_url that is not a URL is refused", c: Config{Preset: PresetGitHub, BaseURL: "ftp://ghe.example.com"},
			want: []string{`base_url: not a host name or http(s) URL: "ftp://ghe.example.com"`}},
		{name: "a base_url with a user and password is refused, the password not repeated", c: Config{Preset: PresetGitHub, BaseURL: "https://octocat:hunter2@ghe.example.com"},
			want: []string{`base_url: not a host name or http(s) URL: "https://xxxxx@ghe.example.com"`}},
		{name: "a plain http base_url is refused as base_url", c: Config{Preset: PresetGitHub, BaseURL: "http://ghe.example.com"},
			want: []string{`base_url: plain http refused outside development: the host "ghe.example.com" is not loopback, and the preset's login, token and user endpoints are under it; use https`}},
		{name: "a plain http domain is refused as domain", c: Config{Preset: PresetOkta, Domain: "http://acme.okta.com"},
			want: []string{`domain: plain http refused outside development: the host "acme.okta.com" is not loopback, and the preset's login, token and user endpoints are under it; use https`}},
		{name: "a base_url on loopback may be plain http", c: Config{Preset: PresetGitLab, BaseURL: "http://127.0.0.1:8929"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.c
			c.ID, c.ClientID = "x", "cid"
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

// TestPresetErrorHidesNoClientProblem: a preset that cannot fill in its
// endpoints hides none of the entry's other problems; the client's keys,
// which no preset fills in, are checked all the same.
func TestPresetErrorHidesNoClientProblem(t *testing.T) {
	c := Config{ID: "x", Preset: PresetOkta, TokenAuthMethod: "private_key_jwt"}
	want := []string{
		"preset: okta needs domain",
		"client_id: required",
		`token_auth_method: unknown method "private_key_jwt" (want client_secret_basic or client_secret_post)`,
	}
	var got []string
	if err := c.Validate(); err != nil {
		got = strings.Split(err.Error(), "\n")
	}
	if !slices.Equal(got, want) {
		t.Errorf("Validate() =\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestPresetDisplayName(t *testing.T) {
	for c, want := range map[*Config]string{
		{ID: "gh", Preset: PresetGitHub}:                  "GitHub",
		{ID: "gh", Preset: PresetGitHub, Name: "Our Git"}: "Our Git",
		{ID: "corp"}: "corp",
	} {
		if got := c.DisplayName(); got != want {
			t.Errorf("DisplayName(%+v) = %q, want %q", *c, got, want)
		}
	}
}

func TestPresetClaims(t *testing.T) {
	azure, _ := Config{Preset: PresetAzure, Tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47"}.WithPreset()
	t.Run("azure refuses a token announcing group overage in _claim_names", func(t *testing.T) {
		claims := map[string]any{"sub": "u", "_claim_names": map[string]any{"groups": "src1"}}
		err := azure.checkPresetClaims(claims)
		if ae, ok := err.(*AdmissionError); !ok || ae.Rule != "groups" || !strings.Contains(ae.Reason, "more groups") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("azure refuses hasgroups", func(t *testing.T) {
		if err := azure.checkPresetClaims(map[string]any{"hasgroups": true}); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("azure with groups mapped to app roles ignores overage", func(t *testing.T) {
		roles := azure
		roles.Claims = map[string]string{"groups": "roles"}
		if err := roles.checkPresetClaims(map[string]any{"hasgroups": true}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("huggingface orgs become groups by their preferred_username", func(t *testing.T) {
		hf := Config{Preset: PresetHuggingFace}
		claims := map[string]any{"orgs": []any{
			map[string]any{"sub": "1", "preferred_username": "cvat-ai", "name": "CVAT"},
			map[string]any{"sub": "2", "preferred_username": "argilla"},
		}}
		if err := hf.checkPresetClaims(claims); err != nil {
			t.Fatal(err)
		}
		if got := claimList(claims["groups"]); !slices.Equal(got, []string{"cvat-ai", "argilla"}) {
			t.Errorf("groups = %q", got)
		}
	})
	t.Run("huggingface keeps a groups claim the IdP sent rather than reading orgs", func(t *testing.T) {
		hf := Config{Preset: PresetHuggingFace}
		claims := map[string]any{"groups": []any{"staff"}, "orgs": []any{map[string]any{"preferred_username": "cvat-ai"}}}
		if err := hf.checkPresetClaims(claims); err != nil {
			t.Fatal(err)
		}
		if got := claimList(claims["groups"]); !slices.Equal(got, []string{"staff"}) {
			t.Errorf("groups = %q, want the IdP's own [staff]", got)
		}
	})
}
