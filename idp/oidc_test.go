package idp

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

const testIdP = "test-oidc"

// oidcHarness is a real OIDC provider, a stand-in for the proxy's public
// origin that catches the callback, and an oidcProvider configured for both.
type oidcHarness struct {
	idp      *oidcserver.Server
	provider *oidcProvider
	public   *httptest.Server
}

// callbackCatcher listens where the proxy would, so that the browser's last
// redirect lands somewhere; the test then replays that URL into Complete.
func callbackCatcher(t *testing.T) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "callback caught")
	}))
	t.Cleanup(s.Close)
	return s
}

func testOptions(public string, pkce bool) Options {
	u, _ := url.Parse(public)
	return Options{
		PublicURL:  u,
		AuthPrefix: "/.portcullis",
		HTTPClient: &http.Client{Timeout: 10 * time.Second},
		PKCE:       pkce,
		// Discovery retries may log after the test ended, when t.Log panics.
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// newOIDCHarness starts a provider with so (redirect URI filled in), builds
// the portcullis side from c and waits until it is ready. "{issuer}" in c's
// URLs is replaced by the provider's issuer; server_url defaults to it for
// OIDC, and client credentials are filled in when empty.
func newOIDCHarness(t *testing.T, so oidcserver.Options, c Config, pkce bool) *oidcHarness {
	t.Helper()
	public := callbackCatcher(t)
	o := testOptions(public.URL, pkce)
	so.RedirectURIs = []string{o.CallbackURL("oidc", testIdP, "callback")}
	idpServer := oidcserver.Start(t, so)
	t.Logf("oidc provider started in %s", idpServer.StartupTime)

	c.ID = testIdP
	if c.Protocol == "" {
		c.Protocol = OIDC
	}
	if c.Scopes == nil {
		// The IdP releases groups only with its groups scope, like Keycloak.
		c.Scopes = []string{"openid", "email", "profile", "groups"}
	}
	if c.ServerURL == "" && c.Protocol == OIDC {
		c.ServerURL = "{issuer}"
	}
	for _, u := range []*string{&c.ServerURL, &c.AuthURL, &c.TokenURL, &c.UserinfoURL} {
		*u = strings.ReplaceAll(*u, "{issuer}", idpServer.Issuer)
	}
	if c.ClientID == "" {
		c.ClientID, c.ClientSecret = idpServer.ClientID, idpServer.ClientSecret
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("config does not validate: %v", err)
	}
	h := &oidcHarness{idp: idpServer, public: public, provider: startOIDC(t, c, o)}
	waitReady(t, h.provider, 10*time.Second)
	return h
}

func startOIDC(t *testing.T, c Config, o Options) *oidcProvider {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p, err := New(ctx, c, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p.(*oidcProvider)
}

func waitReady(t *testing.T, p Provider, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := p.Ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("provider not ready after %s: %v", within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func newBrowser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second}
}

// login runs a browser through the IdP and returns the flow and the callback
// request as the proxy would receive it.
func (h *oidcHarness) login(t *testing.T, user, password string) (*Flow, *http.Request) {
	t.Helper()
	f := &Flow{State: rand.Text(), IdP: testIdP, Created: time.Now().Unix()}
	start, err := h.provider.LoginURL(f)
	if err != nil {
		t.Fatalf("LoginURL: %v", err)
	}
	resp := oidcserver.Login(t, newBrowser(t), start, user, password)
	return f, h.caught(t, resp)
}

// caught checks that resp is the callback page and rebuilds its request.
func (h *oidcHarness) caught(t *testing.T, resp *http.Response) *http.Request {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(resp.Request.URL.String(), h.public.URL+"/.portcullis/oidc/"+testIdP+"/callback?") {
		t.Fatalf("browser ended at %s (status %d), not the callback:\n%s", resp.Request.URL, resp.StatusCode, body)
	}
	return httptest.NewRequest(http.MethodGet, resp.Request.URL.String(), nil)
}

// jwtClaims reads a JWT's payload without verifying it, to check what the
// IdP put where.
func jwtClaims(t *testing.T, raw string) map[string]any {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", raw)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func wantAlice(t *testing.T, p *Profile) {
	t.Helper()
	if p.IdP != testIdP || p.Sub != "alice" || p.Email != "alice@example.com" || !p.EmailVerified ||
		p.Username != "alice" || p.FirstName != "Alice" || p.LastName != "Admin" || p.Name != "Alice Admin" {
		t.Errorf("profile = %+v, want alice's", p)
	}
	if !slices.Equal(p.Groups, []string{"cvat-admins", "annotators"}) {
		t.Errorf("groups = %q, want [cvat-admins annotators]", p.Groups)
	}
	if p.Claims["email"] != "alice@example.com" {
		t.Errorf("claims = %v, want the merged claims including email", p.Claims)
	}
}

func TestOIDCLoginMapsProfile(t *testing.T) {
	tests := []struct {
		name string
		so   oidcserver.Options
		c    Config
		pkce bool
		// emailInIDToken is where the IdP is expected to release email.
		emailInIDToken bool
	}{
		{
			name: "claims only at userinfo (conformIdTokenClaims) are merged from userinfo",
			so:   oidcserver.Options{ConformIDTokenClaims: true},
		},
		{
			name:           "claims in the ID token are read from it",
			so:             oidcserver.Options{ConformIDTokenClaims: false},
			emailInIDToken: true,
		},
		{
			name:           "client_secret_post sends the secret in the body",
			so:             oidcserver.Options{AuthMethod: ClientSecretPost},
			c:              Config{TokenAuthMethod: ClientSecretPost},
			emailInIDToken: true,
		},
		{
			name:           "PKCE S256 is sent and verified when the IdP requires it",
			so:             oidcserver.Options{PKCERequired: true},
			pkce:           true,
			emailInIDToken: true,
		},
		{
			name:           "public client without secret logs in with PKCE",
			so:             oidcserver.Options{PublicClient: true},
			pkce:           true,
			emailInIDToken: true,
		},
		{
			name:           "server_url with a trailing slash finds the issuer without one",
			so:             oidcserver.Options{},
			c:              Config{ServerURL: "{issuer}/"},
			emailInIDToken: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// single_sign_out: the tokens keep the ID token, which tells
			// whether the IdP is set up as the row needs.
			tt.c.SingleSignOut = true
			h := newOIDCHarness(t, tt.so, tt.c, tt.pkce)
			f, cb := h.login(t, "alice", "alice-pw")
			if tt.pkce != (f.Verifier != "") {
				t.Errorf("flow verifier = %q with PKCE %v", f.Verifier, tt.pkce)
			}
			if f.Nonce == "" {
				t.Errorf("flow has no nonce")
			}
			p, tokens, err := h.provider.Complete(cb, f)
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			wantAlice(t, p)
			if tokens.IDToken == "" || tokens.Expiry <= time.Now().Unix() {
				t.Errorf("tokens = %+v, want an ID token and a future expiry", tokens)
			}
			_, hasEmail := jwtClaims(t, tokens.IDToken)["email"]
			if hasEmail != tt.emailInIDToken {
				t.Errorf("email in ID token = %v, want %v: the IdP is not set up as this case needs", hasEmail, tt.emailInIDToken)
			}
		})
	}
}

func TestOIDCClaimMappingAtRealIdP(t *testing.T) {
	so := oidcserver.Options{
		ConformIDTokenClaims: true,
		ExtraUsers: map[string]oidcserver.User{
			"carol": {
				Password:      "carol-pw",
				Email:         "carol@example.com",
				EmailVerified: "true",
				Groups:        "solo group",
				Extra: map[string]any{
					"realm_access": map[string]any{"roles": []string{"admin", "viewer"}},
					"login":        "carol-the-login",
				},
			},
		},
	}
	tests := []struct {
		name   string
		claims map[string]string
		want   func(*Profile) bool
	}{
		{
			name: "a single string of groups is one group, and email_verified \"true\" is true",
			want: func(p *Profile) bool {
				return slices.Equal(p.Groups, []string{"solo group"}) && p.EmailVerified && p.Email == "carol@example.com"
			},
		},
		{
			name:   "groups from a nested claim by dotted path and username from a custom claim",
			claims: map[string]string{"groups": "realm_access.roles", "username": "login"},
			want: func(p *Profile) bool {
				return slices.Equal(p.Groups, []string{"admin", "viewer"}) && p.Username == "carol-the-login"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newOIDCHarness(t, so, Config{Claims: tt.claims}, false)
			f, cb := h.login(t, "carol", "carol-pw")
			p, _, err := h.provider.Complete(cb, f)
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			if !tt.want(p) {
				t.Errorf("profile = %+v", p)
			}
		})
	}
}

func TestOIDCCompleteRefuses(t *testing.T) {
	h := newOIDCHarness(t, oidcserver.Options{ConformIDTokenClaims: true}, Config{}, true)

	tests := []struct {
		name string
		// tamper changes the flow or the callback before Complete.
		tamper  func(f *Flow, r *http.Request) *http.Request
		wantErr string
	}{
		{
			name:    "a callback whose state is not the flow's",
			tamper:  func(f *Flow, r *http.Request) *http.Request { f.State = rand.Text(); return r },
			wantErr: "state does not match",
		},
		{
			name: "a callback without state",
			tamper: func(f *Flow, r *http.Request) *http.Request {
				return withQuery(r, func(q url.Values) { q.Del("state") })
			},
			wantErr: "state does not match",
		},
		{
			// The proxy never finishes a flow without a state; the provider
			// must not take one for a match with an answer that has none.
			name: "a callback without state for a flow without one",
			tamper: func(f *Flow, r *http.Request) *http.Request {
				f.State = ""
				return withQuery(r, func(q url.Values) { q.Del("state") })
			},
			wantErr: "state does not match",
		},
		{
			name:    "an ID token whose nonce is not the flow's",
			tamper:  func(f *Flow, r *http.Request) *http.Request { f.Nonce = rand.Text(); return r },
			wantErr: "nonce does not match",
		},
		{
			name:    "a flow started at another IdP",
			tamper:  func(f *Flow, r *http.Request) *http.Request { f.IdP = "other"; return r },
			wantErr: `started at "other"`,
		},
		{
			name:    "a code redeemed with another PKCE verifier",
			tamper:  func(f *Flow, r *http.Request) *http.Request { f.Verifier = rand.Text() + rand.Text(); return r },
			wantErr: "exchange code",
		},
		{
			name: "a callback without code",
			tamper: func(f *Flow, r *http.Request) *http.Request {
				return withQuery(r, func(q url.Values) { q.Del("code") })
			},
			wantErr: "no code",
		},
		{
			name: "an answer naming another issuer (mix-up)",
			tamper: func(f *Flow, r *http.Request) *http.Request {
				return withQuery(r, func(q url.Values) { q.Set("iss", "https://evil.example") })
			},
			wantErr: "answer from issuer",
		},
		{
			// oidc-provider's discovery has authorization_response_iss_parameter_supported:
			// an answer without iss did not come from it the way it answers (RFC 9207 2.4).
			name: "an answer without iss from an IdP that says it sends one (mix-up)",
			tamper: func(f *Flow, r *http.Request) *http.Request {
				return withQuery(r, func(q url.Values) { q.Del("iss") })
			},
			wantErr: "has no iss",
		},
		{
			name: "an answer naming an issuer under this one's URL (another tenant of the IdP)",
			tamper: func(f *Flow, r *http.Request) *http.Request {
				return withQuery(r, func(q url.Values) { q.Set("iss", h.idp.Issuer+"/tenant-b") })
			},
			wantErr: "answer from issuer",
		},
		{
			// RFC 9207 2.4: simple string comparison; paths, tenants among
			// them, are case-sensitive.
			name: "an answer naming this issuer in other letter case",
			tamper: func(f *Flow, r *http.Request) *http.Request {
				return withQuery(r, func(q url.Values) { q.Set("iss", strings.ToUpper(h.idp.Issuer)) })
			},
			wantErr: "answer from issuer",
		},
		{
			name: "an answer with an empty iss",
			tamper: func(f *Flow, r *http.Request) *http.Request {
				return withQuery(r, func(q url.Values) { q.Set("iss", "") })
			},
			wantErr: "answer from issuer",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, cb := h.login(t, "alice", "alice-pw")
			cb = tt.tamper(f, cb)
			p, _, err := h.provider.Complete(cb, f)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Complete = %+v, %v; want an error containing %q", p, err, tt.wantErr)
			}
		})
	}

	t.Run("a code used twice", func(t *testing.T) {
		f, cb := h.login(t, "alice", "alice-pw")
		if _, _, err := h.provider.Complete(cb, f); err != nil {
			t.Fatalf("first Complete: %v", err)
		}
		replay := httptest.NewRequest(http.MethodGet, cb.URL.String(), nil)
		_, _, err := h.provider.Complete(replay, f)
		if err == nil || !strings.Contains(err.Error(), "exchange code") || !strings.Contains(err.Error(), "invalid_grant") {
			t.Fatalf("second Complete err = %v, want exchange code: invalid_grant", err)
		}
	})

	t.Run("the user cancelling at the IdP (error=access_denied)", func(t *testing.T) {
		f := &Flow{State: rand.Text(), IdP: testIdP}
		start, err := h.provider.LoginURL(f)
		if err != nil {
			t.Fatal(err)
		}
		cb := h.caught(t, oidcserver.Cancel(t, newBrowser(t), start))
		_, _, err = h.provider.Complete(cb, f)
		var ce *CallbackError
		if !errors.As(err, &ce) || ce.Code != "access_denied" {
			t.Fatalf("Complete err = %v, want a CallbackError with code access_denied", err)
		}
	})

	t.Run("a wrong password at the IdP shows its form again", func(t *testing.T) {
		f := &Flow{State: rand.Text(), IdP: testIdP}
		start, err := h.provider.LoginURL(f)
		if err != nil {
			t.Fatal(err)
		}
		resp := oidcserver.Login(t, newBrowser(t), start, "alice", "wrong")
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Invalid username or password") ||
			!strings.HasPrefix(resp.Request.URL.String(), h.idp.Issuer+"/interaction/") {
			t.Fatalf("got %d at %s:\n%s", resp.StatusCode, resp.Request.URL, body)
		}
	})

	t.Run("a forged error callback without the flow's state", func(t *testing.T) {
		f := &Flow{State: rand.Text(), IdP: testIdP}
		r := httptest.NewRequest(http.MethodGet, "/cb?error=access_denied&state=forged", nil)
		_, _, err := h.provider.Complete(r, f)
		var ce *CallbackError
		if err == nil || errors.As(err, &ce) {
			t.Fatalf("Complete err = %v, want a state error", err)
		}
	})
}

func withQuery(r *http.Request, edit func(url.Values)) *http.Request {
	u := *r.URL
	q := u.Query()
	edit(q)
	u.RawQuery = q.Encode()
	return httptest.NewRequest(http.MethodGet, u.String(), nil)
}

func TestOIDCWrongTokenAuthMethodFailsTheExchange(t *testing.T) {
	// The IdP registered the client for client_secret_post; sending Basic must
	// fail, which shows token_auth_method really changes what is sent.
	h := newOIDCHarness(t, oidcserver.Options{AuthMethod: ClientSecretPost}, Config{TokenAuthMethod: ClientSecretBasic}, false)
	f, cb := h.login(t, "alice", "alice-pw")
	if _, _, err := h.provider.Complete(cb, f); err == nil || !strings.Contains(err.Error(), "exchange code") {
		t.Fatalf("Complete err = %v, want exchange code failure", err)
	}
}

func TestOIDCBecomesReadyWhenTheIdPComesUp(t *testing.T) {
	public := callbackCatcher(t)
	o := testOptions(public.URL, false)
	port := oidcserver.FreePort(t)
	c := Config{
		ID: testIdP, Protocol: OIDC,
		ServerURL: "http://127.0.0.1:" + strconv.Itoa(port),
		ClientID:  "portcullis", ClientSecret: "portcullis-secret",
		Scopes: []string{"openid", "email", "profile", "groups"},
	}
	began := time.Now()
	p := startOIDC(t, c, o)
	if d := time.Since(began); d > time.Second {
		t.Errorf("New took %s; it must not wait for discovery", d)
	}

	// Give the first attempt time to fail, so the error says why.
	time.Sleep(200 * time.Millisecond)
	err := p.Ready()
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "discover") {
		t.Fatalf("Ready before the IdP is up = %v, want ErrNotReady naming discovery", err)
	}
	if _, err := p.LoginURL(&Flow{State: "s"}); !errors.Is(err, ErrNotReady) {
		t.Fatalf("LoginURL before the IdP is up = %v, want ErrNotReady", err)
	}

	idpServer := oidcserver.Start(t, oidcserver.Options{
		Port:         port,
		RedirectURIs: []string{o.CallbackURL("oidc", testIdP, "callback")},
	})
	waitReady(t, p, 15*time.Second)

	h := &oidcHarness{idp: idpServer, provider: p, public: public}
	f, cb := h.login(t, "bob", "bob-pw")
	prof, _, err := p.Complete(cb, f)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if prof.Sub != "bob" || !slices.Equal(prof.Groups, []string{"annotators"}) {
		t.Errorf("profile = %+v, want bob in annotators", prof)
	}
}

func TestOAuth2LoginReadsUserinfo(t *testing.T) {
	h := newOIDCHarness(t, oidcserver.Options{ConformIDTokenClaims: true}, Config{
		Protocol:    OAuth2,
		AuthURL:     "{issuer}/auth",
		TokenURL:    "{issuer}/token",
		UserinfoURL: "{issuer}/me",
		// This IdP serves userinfo only to tokens with openid; the ID token
		// that comes with them is ignored in OAUTH2 mode.
		Scopes: []string{"openid", "email", "profile", "groups"},
	}, true)
	if err := h.provider.Ready(); err != nil {
		t.Fatalf("Ready = %v; OAUTH2 has nothing to discover", err)
	}
	f, cb := h.login(t, "alice", "alice-pw")
	if f.Nonce != "" {
		t.Errorf("flow nonce = %q; OAUTH2 has no ID token to bind it to", f.Nonce)
	}
	p, tokens, err := h.provider.Complete(cb, f)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	wantAlice(t, p)
	if tokens.IDToken != "" {
		t.Errorf("tokens.IDToken = %q, want none in OAUTH2 mode", tokens.IDToken)
	}
}
