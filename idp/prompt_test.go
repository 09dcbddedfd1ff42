package idp

import (
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/process"
)

// TestPromptValidation: which prompt values an entry may give, and the one
// problem each refused one is, whole.
func TestPromptValidation(t *testing.T) {
	_, _, cert := writeSPKeyPair(t)
	oidc := Config{ID: "corp", Protocol: OIDC, ServerURL: "https://login.example.com/", ClientID: "cid"}
	oauth2 := Config{ID: "corp", Protocol: OAuth2, ClientID: "cid", AuthURL: "https://as.example.com/authorize",
		TokenURL: "https://as.example.com/token", UserinfoURL: "https://as.example.com/user"}
	google := Config{ID: "google", Preset: PresetGoogle, ClientID: "cid"}
	saml := Config{ID: "corp", Protocol: SAML, EntityID: "https://idp.example.com", X509Cert: base64.StdEncoding.EncodeToString(cert.Raw),
		SSOURL: "https://idp.example.com/sso", TrustEmail: true}
	ldap := ldapTestConfig("ldaps://ad.example.com")
	const want = "(want auto, omit, or a space-separated list of login, consent and select_account)"
	tests := []struct {
		name   string
		base   Config
		prompt string
		want   []string // nil: valid
	}{
		{"absent is auto", oidc, "", nil},
		{"auto is accepted", oidc, "auto", nil},
		{"omit is accepted", oidc, "omit", nil},
		{"one value is accepted", oidc, "consent", nil},
		{"a list is accepted, spaced as written", oidc, "  select_account   consent ", nil},
		{"every value at once is accepted", oidc, "login consent select_account", nil},
		{"an OAUTH2 entry takes a list", oauth2, "select_account", nil},
		{"a preset entry over OIDC takes a list", google, "select_account consent", nil},

		{"none is refused with why and what to write instead", oidc, "none",
			[]string{"prompt: none is refused: the IdP then shows no page and fails the login of every user who has no session there (login_required), which no sign-in here can get past; to send no prompt parameter, write omit"}},
		{"none in a list is refused as none", oidc, "login none",
			[]string{"prompt: none is refused: the IdP then shows no page and fails the login of every user who has no session there (login_required), which no sign-in here can get past; to send no prompt parameter, write omit"}},
		{"an unknown value is refused naming it", oidc, "force", []string{`prompt: unknown value "force" ` + want}},
		{"a value in capitals is unknown: the IdP compares them as written", oidc, "Consent", []string{`prompt: unknown value "Consent" ` + want}},
		{"a comma-separated list is refused", oidc, "login,consent", []string{`prompt: unknown value "login,consent" ` + want}},
		{"spaces alone are no value", oidc, "  ", []string{`prompt: empty ` + want}},
		{"omit in a list is refused", oidc, "omit consent", []string{`prompt: omit stands alone, not in a list`}},
		{"auto in a list is refused", oidc, "login auto", []string{`prompt: auto stands alone, not in a list`}},
		{"a value listed twice is refused", oidc, "consent login consent", []string{`prompt: consent listed twice`}},

		{"a SAML entry refuses it", saml, "login",
			[]string{"prompt: OIDC and OAUTH2 only (protocol is SAML); SAML's ForceAuthn is not this key"}},
		{"an LDAP entry refuses it", ldap, "omit", []string{"prompt: OIDC and OAUTH2 only (protocol is LDAP)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.base
			c.Prompt = tt.prompt
			var got []string
			if err := c.Validate(); err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Validate() = %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestPromptWarnings: check warns of a prompt that keeps an IdP known to
// need consent from issuing the refresh token that offline_access asks
// for, and only then: whether an entry without a preset's IdP does (as
// oidc-provider) or not (as Dex) is not in the configuration, and its
// login says so (TestPromptWithoutConsentAtAStrictIdPIsLoggedAtLogin).
func TestPromptWarnings(t *testing.T) {
	offline := []string{"openid", "email", ScopeOfflineAccess}
	generic := Config{ID: "corp", Protocol: OIDC, ServerURL: "https://login.example.com/", ClientID: "cid", Scopes: offline}
	const googleFirst = "with offline_access in scopes and no consent in prompt, Google issues a refresh token only at a user's first consent to this client: " +
		"sessions of later sign-ins last session.lifetime unrefreshed"
	google := Config{ID: "google", Preset: PresetGoogle, ClientID: "cid", Scopes: offline}
	with := func(c Config, edit func(c *Config)) Config { edit(&c); return c }
	tests := []struct {
		name string
		c    Config
		want []Warning
	}{
		{"google with a list without consent: a refresh token at the first consent only",
			with(google, func(c *Config) { c.Prompt = "select_account" }), []Warning{{"prompt", googleFirst}}},
		{"google with omit: the same", with(google, func(c *Config) { c.Prompt = "omit" }), []Warning{{"prompt", googleFirst}}},
		{"google with consent listed: nothing", with(google, func(c *Config) { c.Prompt = "select_account consent" }), nil},
		{"google with auto: nothing", with(google, func(c *Config) { c.Prompt = "auto" }), nil},
		{"google without offline_access: nothing", with(google, func(c *Config) { c.Prompt, c.Scopes = "select_account", nil }), nil},
		{"an entry without a preset with omit: nothing, Dex's set-up", with(generic, func(c *Config) { c.Prompt = "omit" }), nil},
		{"an entry without a preset with a list without consent: nothing", with(generic, func(c *Config) { c.Prompt = "login select_account" }), nil},
		{"entra ID needs no consent for a refresh token",
			Config{ID: "azure", Preset: PresetAzure, Tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47", ClientID: "cid", Scopes: []string{"openid", ScopeOfflineAccess}, Prompt: "omit"}, nil},
		{"keycloak needs no consent for a refresh token",
			Config{ID: "kc", Preset: PresetKeycloak, ServerURL: "https://kc.example.com/realms/x", ClientID: "cid", Scopes: offline, Prompt: "omit"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.c.Validate(); err != nil {
				t.Fatalf("config does not validate: %v", err)
			}
			if got := tt.c.Warnings(); !slices.Equal(got, tt.want) {
				t.Errorf("Warnings() = %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestPromptInLoginURL: the authorization request carries exactly the
// prompt the entry gives, in place of the one offline_access would bring,
// and no prompt with omit; a preset's other offline parameters stay (the
// IdPs stood in for by oidc-provider at server_url: only the request is
// checked).
func TestPromptInLoginURL(t *testing.T) {
	public := callbackCatcher(t)
	o := testOptions(public.URL, false)
	idpServer := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{o.CallbackURL("oidc", testIdP, "callback")}})
	offline := []string{"openid", "email", ScopeOfflineAccess}
	tests := []struct {
		name string
		c    Config
		want map[string][]string // nil: the parameter is absent
	}{
		{"auto with offline_access asks for consent", Config{Protocol: OIDC, Scopes: offline},
			map[string][]string{"prompt": {"consent"}}},
		{"omit sends no prompt, even with offline_access", Config{Protocol: OIDC, Scopes: offline, Prompt: "omit"},
			map[string][]string{"prompt": nil, "scope": {"openid email offline_access"}}},
		{"a list replaces the automatic consent", Config{Protocol: OIDC, Scopes: offline, Prompt: "login"},
			map[string][]string{"prompt": {"login"}}},
		{"a list is sent as written, one space apart", Config{Protocol: OIDC, Scopes: offline, Prompt: " select_account  consent"},
			map[string][]string{"prompt": {"select_account consent"}}},
		{"a list is sent without offline_access too", Config{Protocol: OIDC, Prompt: "select_account"},
			map[string][]string{"prompt": {"select_account"}}},
		{"an OAUTH2 entry sends its list", Config{Protocol: OAuth2, AuthURL: "{issuer}/auth", TokenURL: "{issuer}/token", UserinfoURL: "{issuer}/me", Prompt: "login"},
			map[string][]string{"prompt": {"login"}}},
		{"google keeps access_type=offline under the entry's prompt", Config{Preset: PresetGoogle, Scopes: offline, Prompt: "select_account consent"},
			map[string][]string{"prompt": {"select_account consent"}, "access_type": {"offline"}, "scope": {"openid email"}}},
		{"google with omit keeps access_type=offline and sends no prompt", Config{Preset: PresetGoogle, Scopes: offline, Prompt: "omit"},
			map[string][]string{"prompt": nil, "access_type": {"offline"}}},
		{"azure sends the entry's prompt", Config{Preset: PresetAzure, Tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47", Scopes: offline, Prompt: "select_account"},
			map[string][]string{"prompt": {"select_account"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.c
			c.ID, c.ClientID, c.ClientSecret = testIdP, idpServer.ClientID, idpServer.ClientSecret
			if c.Protocol == OIDC || c.Preset != "" {
				c.ServerURL = idpServer.Issuer
			}
			for _, u := range []*string{&c.AuthURL, &c.TokenURL, &c.UserinfoURL} {
				*u = strings.ReplaceAll(*u, "{issuer}", idpServer.Issuer)
			}
			checkLoginParams(t, startOIDC(t, c, o), tt.want)
		})
	}
}

// TestPromptAtAStrictIdP: at oidc-provider, which follows OpenID Connect
// Core 11, with omit and offline_access the user signs in, and no refresh
// token is issued; a list with consent brings one.
func TestPromptAtAStrictIdP(t *testing.T) {
	tests := []struct {
		prompt      string
		wantRefresh bool
	}{
		{"omit", false},
		{"login", false},
		{"login consent", true},
	}
	for _, tt := range tests {
		t.Run("prompt "+tt.prompt, func(t *testing.T) {
			h := newOIDCHarness(t, oidcserver.Options{}, Config{Scopes: offlineScopes, Prompt: tt.prompt}, true)
			f, cb := h.login(t, oidcserver.Alice, oidcserver.AlicePassword)
			profile, tokens, err := h.provider.Complete(cb, f)
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			wantAlice(t, profile)
			if got := tokens.RefreshToken != ""; got != tt.wantRefresh {
				t.Errorf("refresh token issued: %v, want %v", got, tt.wantRefresh)
			}
		})
	}
}

// TestPromptWithoutConsentAtAStrictIdPIsLoggedAtLogin: a login that asked
// for a refresh token and got none is logged at WARN, once for the entry,
// naming the prompt without consent where it is the cause; at an IdP that
// issues one without consent (Dex, stood in for by a client that gets one
// at every code exchange) nothing is logged. Only the lines of that
// warning are counted, either wording: a WARN of something else (a
// discovery retried on a loaded machine) is not this test's.
func TestPromptWithoutConsentAtAStrictIdPIsLoggedAtLogin(t *testing.T) {
	const noRefreshToken = "oidc: a login asked for a refresh token (offline_access in scopes) and the IdP issued none"
	tests := []struct {
		name, prompt string
		dexLike      bool
		want         []string // WARN messages, in order
	}{
		{"omit at a strict IdP is logged once", "omit", false, []string{
			noRefreshToken + ": such sessions last session.lifetime unrefreshed; " +
				"prompt asks no consent, without which an IdP that follows OpenID Connect Core 11 (oidc-provider, and those built on it) issues none: leave prompt out (auto), or list consent in it"}},
		{"omit at an IdP that needs no consent is not", "omit", true, nil},
		{"auto at a strict IdP is not: it asks for consent", "auto", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			public := callbackCatcher(t)
			o := testOptions(public.URL, true)
			logs := &process.Output{}
			o.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			callback := o.CallbackURL("oidc", testIdP, "callback")
			idpServer := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{callback},
				Clients: []oidcserver.Client{{ID: "dex-like", RedirectURIs: []string{callback}, RefreshTokens: "always"}}})
			c := Config{ID: testIdP, Protocol: OIDC, ServerURL: idpServer.Issuer, ClientID: idpServer.ClientID, ClientSecret: idpServer.ClientSecret,
				Scopes: offlineScopes, Prompt: tt.prompt}
			if tt.dexLike {
				c.ClientID = "dex-like"
			}
			h := &oidcHarness{idp: idpServer, public: public, provider: startOIDC(t, c, o)}
			waitReady(t, h.provider, 10*time.Second)
			for range 2 {
				f, cb := h.login(t, oidcserver.Alice, oidcserver.AlicePassword)
				if _, _, err := h.provider.Complete(cb, f); err != nil {
					t.Fatalf("Complete: %v", err)
				}
			}
			var got []string
			for line := range strings.Lines(logs.String()) {
				var rec struct{ Msg string }
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				if strings.HasPrefix(rec.Msg, noRefreshToken) {
					got = append(got, rec.Msg)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("WARN lines after two logins:\n  %q\nwant\n  %q", got, tt.want)
			}
		})
	}
}
