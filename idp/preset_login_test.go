package idp

import (
	"errors"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// TestPresetLoginsAtARealIdP logs in through presets whose IdP cannot run
// here, against the npm oidc-provider pointed at by server_url (a user-given
// key, which wins over the preset's) and releasing the claims that IdP
// would: the preset's scopes and claim mapping do the rest.
func TestPresetLoginsAtARealIdP(t *testing.T) {
	dana := oidcserver.User{
		Password: "dana-pw", Email: "dana@example.com", EmailVerified: true, Name: "Dana",
		Extra: map[string]any{
			"realm_access":     map[string]any{"roles": []string{"cvat-admin", "offline_access"}},
			"cognito:groups":   []string{"annotators"},
			"cognito:username": "dana-cognito",
			"orgs": []map[string]any{
				{"sub": "6123", "name": "CVAT", "preferred_username": "cvat-ai", "isEnterprise": true},
			},
		},
	}
	erin := oidcserver.User{
		Password: "erin-pw", Email: "erin@example.com", EmailVerified: true,
		// Entra ID's overage marker in an implicit-flow token.
		Extra: map[string]any{"hasgroups": true},
	}
	so := oidcserver.Options{ConformIDTokenClaims: true, ExtraUsers: map[string]oidcserver.User{"dana": dana, "erin": erin}}
	tests := []struct {
		name       string
		c          Config
		user, pass string
		want       func(p *Profile) bool
		wantRule   string
	}{
		{
			name: "keycloak: realm roles are the groups",
			c:    Config{Preset: PresetKeycloak}, user: "dana", pass: "dana-pw",
			want: func(p *Profile) bool {
				return slices.Equal(p.Groups, []string{"cvat-admin", "offline_access"}) && p.Username == "dana"
			},
		},
		{
			name: "cognito: cognito:groups and cognito:username",
			c:    Config{Preset: PresetCognito, UserPoolID: "us-east-1_AbC123xyz"}, user: "dana", pass: "dana-pw",
			want: func(p *Profile) bool {
				return slices.Equal(p.Groups, []string{"annotators"}) && p.Username == "dana-cognito"
			},
		},
		{
			name: "huggingface: the shared orgs are the groups",
			c:    Config{Preset: PresetHuggingFace}, user: "dana", pass: "dana-pw",
			want: func(p *Profile) bool {
				return slices.Equal(p.Groups, []string{"cvat-ai"}) && p.Email == "dana@example.com"
			},
		},
		{
			name: "azure: a token announcing group overage is refused with a reason for the user",
			c:    Config{Preset: PresetAzure, Tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47"}, user: "erin", pass: "erin-pw",
			wantRule: "groups",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.c
			c.ServerURL = "{issuer}"
			resolved, err := c.WithPreset()
			if err != nil {
				t.Fatal(err)
			}
			// The harness would add its groups scope; the preset's are the point.
			c.Scopes = resolved.Scopes
			h := newOIDCHarness(t, so, c, true)
			f, cb := h.login(t, tt.user, tt.pass)
			p, _, err := h.provider.Complete(cb, f)
			if tt.wantRule != "" {
				var ae *AdmissionError
				if !errors.As(err, &ae) || ae.Rule != tt.wantRule {
					t.Fatalf("Complete = %+v, %v; want an AdmissionError by %s", p, err, tt.wantRule)
				}
				return
			}
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			if !tt.want(p) {
				t.Errorf("profile = %+v", p)
			}
		})
	}
}

// TestCognitoSingleSignOutSendsLogoutURI: Cognito's /logout takes client_id
// and logout_uri, not RP-Initiated Logout's post_logout_redirect_uri, so a
// cognito entry with single_sign_out must send those two.
func TestCognitoSingleSignOutSendsLogoutURI(t *testing.T) {
	public := callbackCatcher(t)
	o := testOptions(public.URL, false)
	done := o.CallbackURL("logout", "done")
	idpServer := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{o.CallbackURL("oidc", testIdP, "callback")}})
	p := startOIDC(t, Config{ID: testIdP, Preset: PresetCognito, UserPoolID: "us-east-1_AbC123xyz", ServerURL: idpServer.Issuer,
		ClientID: idpServer.ClientID, ClientSecret: idpServer.ClientSecret}, o)
	waitReady(t, p, 10*time.Second)

	tests := []struct {
		name  string
		build func() (string, error)
		want  string
	}{
		{
			name: "the discovery document's end_session_endpoint with client_id and logout_uri only",
			build: func() (string, error) {
				return p.LogoutURL(&Tokens{IDToken: fakeJWT(`{"sub":"u"}`)}, done, &Flow{State: "state-1"})
			},
			want: idpServer.Issuer + "/session/end?" + url.Values{"client_id": {idpServer.ClientID}, "logout_uri": {done}}.Encode(),
		},
		{
			name: "a pool that publishes no end_session_endpoint signs out at /logout of its login domain",
			build: func() (string, error) {
				return p.cognitoLogoutURL("", "https://cvat.auth.us-east-1.amazoncognito.com/oauth2/authorize", done)
			},
			want: "https://cvat.auth.us-east-1.amazoncognito.com/logout?" + url.Values{"client_id": {idpServer.ClientID}, "logout_uri": {done}}.Encode(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.build()
			if err != nil || got != tt.want {
				t.Errorf("logout URL = %q, %v\nwant %q", got, err, tt.want)
			}
		})
	}
}

// TestPresetOfflineAccess: how a preset entry whose scopes list
// offline_access asks its IdP for a refresh token, in the authorization
// request the IdP documents (the IdP itself stood in for by oidc-provider
// at server_url: only the request is checked).
func TestPresetOfflineAccess(t *testing.T) {
	public := callbackCatcher(t)
	o := testOptions(public.URL, false)
	idpServer := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{o.CallbackURL("oidc", testIdP, "callback")}})
	tests := []struct {
		name string
		c    Config
		// want are the authorization request's parameters that matter.
		want url.Values
	}{
		{
			// Google refuses the scope: "Error 400: invalid_scope. Some
			// requested scopes were invalid. {invalid=[offline_access]}".
			// It issues a refresh token for access_type=offline, and only
			// at the first exchange unless consent is asked again
			// (https://developers.google.com/identity/openid-connect/openid-connect,
			// https://developers.google.com/identity/protocols/oauth2/web-server#offline).
			name: "google: offline_access becomes access_type=offline with prompt=consent, out of the scope",
			c:    Config{Preset: PresetGoogle, Scopes: []string{"openid", "email", "profile", ScopeOfflineAccess}},
			want: url.Values{"scope": {"openid email profile"}, "access_type": {"offline"}, "prompt": {"consent"}},
		},
		{
			name: "google without offline_access asks for no refresh token",
			c:    Config{Preset: PresetGoogle},
			want: url.Values{"scope": {"openid email profile"}, "access_type": nil, "prompt": nil},
		},
		{
			// Microsoft issues a refresh token for the offline_access scope
			// alone, and prompt=consent "triggers the OAuth consent dialog
			// after the user signs in" at every login
			// (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow).
			name: "azure: offline_access is sent without prompt=consent",
			c: Config{Preset: PresetAzure, Tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47",
				Scopes: []string{"openid", "profile", "email", ScopeOfflineAccess}},
			want: url.Values{"scope": {"openid profile email offline_access"}, "access_type": nil, "prompt": nil},
		},
		{
			name: "another IdP gets offline_access with prompt=consent (OpenID Connect Core 11)",
			c:    Config{Preset: PresetKeycloak, Scopes: []string{"openid", "email", ScopeOfflineAccess}},
			want: url.Values{"scope": {"openid email offline_access"}, "access_type": nil, "prompt": {"consent"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.c
			c.ID, c.ServerURL, c.ClientID, c.ClientSecret = testIdP, idpServer.Issuer, idpServer.ClientID, idpServer.ClientSecret
			checkLoginParams(t, startOIDC(t, c, o), tt.want)
		})
	}
}

// checkLoginParams checks that p's login URL, once p is ready, carries each
// parameter of want with exactly its values (nil: absent).
func checkLoginParams(t *testing.T, p *oidcProvider, want url.Values) {
	t.Helper()
	waitReady(t, p, 10*time.Second)
	u, err := p.LoginURL(&Flow{State: "state-1"})
	if err != nil {
		t.Fatal(err)
	}
	q := mustParse(t, u).Query()
	for name, values := range want {
		if got := q[name]; !slices.Equal(got, values) {
			t.Errorf("%s = %q, want %q (login URL %s)", name, got, values, u)
		}
	}
}
