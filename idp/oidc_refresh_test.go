package idp

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"golang.org/x/oauth2"
)

// offlineScopes ask the test IdP for a refresh token.
var offlineScopes = []string{"openid", "email", "profile", "groups", ScopeOfflineAccess}

// loginWithRefreshToken logs alice in and returns the tokens Complete kept.
func loginWithRefreshToken(t *testing.T, h *oidcHarness) *Tokens {
	t.Helper()
	f, cb := h.login(t, oidcserver.Alice, oidcserver.AlicePassword)
	_, tokens, err := h.provider.Complete(cb, f)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if tokens.RefreshToken == "" || tokens.Subject() != oidcserver.Alice {
		t.Fatalf("tokens = %+v, want a refresh token (offline_access with prompt=consent) and alice's sub", tokens)
	}
	return tokens
}

func TestOIDCRefresh(t *testing.T) {
	// Claims only at userinfo: a refreshed ID token carries just sub, so the
	// profile must be merged from userinfo as at login.
	h := newOIDCHarness(t, oidcserver.Options{ConformIDTokenClaims: true}, Config{Scopes: offlineScopes}, true)
	ctx := context.Background()

	t.Run("a login with offline_access asks for consent", func(t *testing.T) {
		u, err := h.provider.LoginURL(&Flow{State: rand.Text()})
		if err != nil {
			t.Fatal(err)
		}
		if q := mustParse(t, u).Query(); q.Get("prompt") != "consent" || !strings.Contains(q.Get("scope"), ScopeOfflineAccess) {
			t.Errorf("login URL %s: want prompt=consent with scope offline_access", u)
		}
		if opts, prompt := h.provider.offlineAccess([]string{"openid", "email"}); len(opts) != 0 || prompt != "" {
			t.Errorf("without offline_access: %d extra parameters and prompt %q, want none", len(opts), prompt)
		}
	})

	t.Run("a refresh rotates the token and maps the user anew", func(t *testing.T) {
		old := loginWithRefreshToken(t, h)
		profile, next, err := h.provider.Refresh(ctx, old)
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		wantAlice(t, profile)
		if next.RefreshToken == "" || next.RefreshToken == old.RefreshToken {
			t.Errorf("refresh token not rotated: old %q new %q", old.RefreshToken, next.RefreshToken)
		}
		if next.IDToken != "" || next.Sub != "alice" {
			t.Errorf("tokens after the refresh: ID token %q, sub %q; want only alice's sub (no single_sign_out)", next.IDToken, next.Sub)
		}
		if next.Expiry <= time.Now().Unix() {
			t.Errorf("expiry %d is not in the future", next.Expiry)
		}

		// The rotated-away token, spent again, is refused.
		_, _, err = h.provider.Refresh(ctx, old)
		if !errors.Is(err, ErrRefreshRefused) {
			t.Errorf("spending the old refresh token again: %v, want ErrRefreshRefused", err)
		}
	})

	t.Run("a refresh token the IdP never issued is refused", func(t *testing.T) {
		_, _, err := h.provider.Refresh(ctx, &Tokens{RefreshToken: rand.Text()})
		if !errors.Is(err, ErrRefreshRefused) {
			t.Errorf("Refresh = %v, want ErrRefreshRefused", err)
		}
	})

	t.Run("a refreshed ID token for another subject is refused", func(t *testing.T) {
		tokens := loginWithRefreshToken(t, h)
		// The session says bob; the IdP answers for alice.
		tokens.Sub = "bob"
		_, _, err := h.provider.Refresh(ctx, tokens)
		if !errors.Is(err, ErrRefreshRefused) || !strings.Contains(err.Error(), "subject") {
			t.Errorf("Refresh = %v, want ErrRefreshRefused naming the subject", err)
		}
	})

	t.Run("an IdP that cannot be reached is no refusal", func(t *testing.T) {
		tokens := loginWithRefreshToken(t, h)
		h.idp.Stop()
		_, _, err := h.provider.Refresh(ctx, tokens)
		if err == nil || errors.Is(err, ErrRefreshRefused) {
			t.Errorf("Refresh with the IdP down = %v, want an error that is not ErrRefreshRefused", err)
		}
	})
}

func TestOIDCLogoutURLEndsTheIdPSession(t *testing.T) {
	public := callbackCatcher(t)
	o := testOptions(public.URL, false)
	done := o.CallbackURL("logout", "done")
	idpServer := oidcserver.Start(t, oidcserver.Options{
		RedirectURIs:           []string{o.CallbackURL("oidc", testIdP, "callback")},
		PostLogoutRedirectURIs: []string{done},
	})
	p := startOIDC(t, Config{ID: testIdP, Protocol: OIDC, ServerURL: idpServer.Issuer,
		ClientID: idpServer.ClientID, ClientSecret: idpServer.ClientSecret}, o)
	waitReady(t, p, 10*time.Second)
	h := &oidcHarness{idp: idpServer, provider: p, public: public}
	b := newBrowser(t)

	f := &Flow{State: rand.Text(), IdP: testIdP}
	start, _ := h.provider.LoginURL(f)
	_, tokens, err := h.provider.Complete(h.caught(t, oidcserver.Login(t, b, start, oidcserver.Alice, oidcserver.AlicePassword)), f)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}

	state := rand.Text()
	target, err := h.provider.LogoutURL(tokens, done, &Flow{State: state})
	if err != nil {
		t.Fatalf("LogoutURL: %v", err)
	}
	q := mustParse(t, target).Query()
	if !strings.HasPrefix(target, h.idp.Issuer+"/") || q.Get("id_token_hint") != tokens.IDToken ||
		q.Get("post_logout_redirect_uri") != done || q.Get("state") != state || q.Get("client_id") != h.idp.ClientID {
		t.Fatalf("logout URL %s: want the IdP's end_session_endpoint with id_token_hint, post_logout_redirect_uri, state and client_id", target)
	}

	resp := oidcserver.Logout(t, b, target)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got := resp.Request.URL; got.Path != "/.portcullis/logout/done" || got.Query().Get("state") != state {
		t.Fatalf("after the IdP's logout the browser is at %s, want %s?state=%s", got, done, state)
	}

	// The IdP forgot the browser: a new login asks for the password again.
	f2 := &Flow{State: rand.Text(), IdP: testIdP}
	start, _ = h.provider.LoginURL(f2)
	resp, err = b.Get(start)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `name="password"`) {
		t.Errorf("a login after single sign-out ended at %s without the login form:\n%s", resp.Request.URL, body)
	}
}

// An end_session_endpoint that is no absolute http(s) URL is refused, not
// made the browser's next stop: a relative one would land on the proxy's
// own host, a javascript: one is no logout.
func TestOIDCLogoutURLRefusesAnEndSessionEndpointThatIsNotAbsolute(t *testing.T) {
	for _, endSession := range []string{"/logout", "javascript:alert(document.domain)", "https:///logout"} {
		ti := newTestIssuer(t)
		ti.endSession = endSession
		p := ti.provider(t)
		u, err := p.LogoutURL(&Tokens{}, "https://proxy.example/done", &Flow{State: "s"})
		if err == nil || !strings.Contains(err.Error(), "is not an absolute URL") {
			t.Errorf("end_session_endpoint %q: LogoutURL = %q, %v; want it refused as not an absolute URL", endSession, u, err)
		}
	}
}

// An end_session_endpoint with a query of its own (a tenant or policy some
// IdPs put there) keeps it beside the parameters the proxy adds.
func TestOIDCLogoutURLKeepsTheEndSessionEndpointsQuery(t *testing.T) {
	ti := newTestIssuer(t)
	ti.endSession = ti.url + "/logout?p=b2c_1_signin&client_id=not-ours"
	p := ti.provider(t)
	target, err := p.LogoutURL(&Tokens{IDToken: "idt"}, "https://proxy.example/done", &Flow{State: "s"})
	if err != nil {
		t.Fatalf("LogoutURL: %v", err)
	}
	q := mustParse(t, target).Query()
	if q.Get("p") != "b2c_1_signin" || len(q["client_id"]) != 1 || q.Get("client_id") != p.cfg.ClientID ||
		q.Get("id_token_hint") != "idt" || q.Get("state") != "s" {
		t.Errorf("logout URL %s: want p=b2c_1_signin kept and one client_id, ours (%s)", target, p.cfg.ClientID)
	}
}

// Cognito's logout, which is not RP-Initiated Logout, refuses an
// end_session_endpoint that is no absolute http(s) URL all the same.
func TestCognitoLogoutURLRefusesAnEndSessionEndpointThatIsNotAbsolute(t *testing.T) {
	for _, endSession := range []string{"/logout", "javascript:alert(document.domain)", "https:///logout"} {
		ti := newTestIssuer(t)
		ti.endSession = endSession
		p := ti.provider(t)
		p.cfg.Preset = PresetCognito
		u, err := p.LogoutURL(&Tokens{}, "https://proxy.example/done", &Flow{State: "s"})
		if err == nil || !strings.Contains(err.Error(), "cognito logout endpoint") || !strings.Contains(err.Error(), "is not an absolute URL") {
			t.Errorf("end_session_endpoint %q: LogoutURL = %q, %v; want it refused as not an absolute URL", endSession, u, err)
		}
	}
}

func TestOIDCLogoutURLWithoutEndSessionEndpoint(t *testing.T) {
	// Plain OAuth2 has no discovery document and so no logout endpoint.
	p := startOIDC(t, Config{ID: testIdP, Protocol: OAuth2, ClientID: "c", AuthURL: "https://idp.example/a",
		TokenURL: "https://idp.example/t", UserinfoURL: "https://idp.example/u"}, testOptions("https://proxy.example", false))
	if u, err := p.LogoutURL(&Tokens{}, "https://proxy.example/done", &Flow{State: "s"}); u != "" || err != nil {
		t.Errorf("LogoutURL = %q, %v; want no URL and no error", u, err)
	}
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// fakeJWT is an unsigned token with payload, as a session could hold one.
func fakeJWT(payload string) string {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	return enc(`{"alg":"none"}`) + "." + enc(payload) + ".sig"
}

// A refreshed ID token that lacks mapped claims is merged with userinfo as
// at login: the signed ID token's claims win, and userinfo about another
// subject than the token's ends the session.
func TestOIDCRefreshMergesUserinfoOfTheSameSubject(t *testing.T) {
	t.Run("the ID token's claims win over userinfo's, which fills in the rest", func(t *testing.T) {
		ti := newTestIssuer(t)
		ti.userinfo = map[string]any{"sub": "alice", "email": "not-the-id-token@example.com", "groups": []string{"staff"}}
		p := ti.provider(t)
		prof, _, err := p.Refresh(t.Context(), &Tokens{RefreshToken: "rt", IDToken: fakeJWT(`{"sub":"alice"}`)})
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		if prof.Email != "alice@example.com" || !slices.Equal(prof.Groups, []string{"staff"}) {
			t.Errorf("email %q groups %q; want the ID token's alice@example.com and userinfo's [staff]", prof.Email, prof.Groups)
		}
	})
	t.Run("userinfo about another subject is refused", func(t *testing.T) {
		ti := newTestIssuer(t)
		ti.userinfo = map[string]any{"sub": "mallory", "groups": []string{"admins"}}
		p := ti.provider(t)
		prof, _, err := p.Refresh(t.Context(), &Tokens{RefreshToken: "rt", IDToken: fakeJWT(`{"sub":"alice"}`)})
		if !errors.Is(err, ErrRefreshRefused) || !strings.Contains(err.Error(), `userinfo names subject "mallory"`) {
			t.Errorf("Refresh = %+v, %v; want ErrRefreshRefused naming userinfo's subject", prof, err)
		}
	})
}

// A refresh's claims pass the preset's checks as a login's do: an Azure
// group overage announced by the refreshed ID token ends the session rather
// than leaving the user in the groups of before.
func TestOIDCRefreshChecksPresetClaims(t *testing.T) {
	ti := newTestIssuer(t)
	ti.edit = func(claims map[string]any) { claims["hasgroups"] = true }
	// server_url, a key the user gave, wins over the preset's Microsoft URL.
	c := Config{ID: "company", Preset: PresetAzure, Tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47", ServerURL: ti.url, ClientID: "portcullis", ClientSecret: "s"}
	p := startOIDC(t, c, testOptions("http://127.0.0.1:1", false))
	waitReady(t, p, 10*time.Second)
	prof, _, err := p.Refresh(t.Context(), &Tokens{RefreshToken: "rt", IDToken: fakeJWT(`{"sub":"alice"}`)})
	if ae, ok := errors.AsType[*AdmissionError](err); !ok || ae.Rule != "groups" {
		t.Errorf("Refresh = %+v, %v; want the group overage refused", prof, err)
	}
}

// An entry whose sub is another claim (claims.sub) needs it at refresh as at
// login: a refreshed ID token without it maps to no user and is refused.
func TestOIDCRefreshWithoutTheMappedSubjectIsRefused(t *testing.T) {
	ti := newTestIssuer(t)
	c := Config{ID: "company", Protocol: OIDC, ServerURL: ti.url, ClientID: "portcullis", ClientSecret: "s", Claims: map[string]string{"sub": "employee_id"}}
	p := startOIDC(t, c, testOptions("http://127.0.0.1:1", false))
	waitReady(t, p, 10*time.Second)
	prof, _, err := p.Refresh(t.Context(), &Tokens{RefreshToken: "rt", IDToken: fakeJWT(`{"sub":"alice"}`)})
	if err == nil || !strings.Contains(err.Error(), `no subject in claim "employee_id"`) {
		t.Errorf("Refresh = %+v, %v; want it refused for no subject in employee_id", prof, err)
	}
}

// Dex answers a refresh token it does not take (spent, expired, or lost
// with its in-memory storage at a restart) with 400 invalid_request, not
// RFC 6749's invalid_grant: the session ends all the same, rather than
// being kept, and its refresh tried again every minute, until its lifetime.
func TestOIDCRefreshRefusedAsInvalidRequestIsARefusal(t *testing.T) {
	h := newOIDCHarness(t, oidcserver.Options{RefreshRefusedAsInvalidRequest: true}, Config{Scopes: offlineScopes}, true)
	ctx := context.Background()
	old := loginWithRefreshToken(t, h)
	if _, _, err := h.provider.Refresh(ctx, old); err != nil {
		t.Fatalf("first refresh: %v", err)
	}
	for name, tokens := range map[string]*Tokens{
		"the spent refresh token":              old,
		"a refresh token the IdP never issued": {RefreshToken: rand.Text()},
	} {
		_, _, err := h.provider.Refresh(ctx, tokens)
		if !errors.Is(err, ErrRefreshRefused) || !strings.Contains(err.Error(), "invalid_request") {
			t.Errorf("%s: Refresh = %v, want ErrRefreshRefused naming invalid_request", name, err)
		}
	}
}

func TestRefusal(t *testing.T) {
	answer := func(status int, code string) *oauth2.RetrieveError {
		return &oauth2.RetrieveError{Response: &http.Response{StatusCode: status}, ErrorCode: code}
	}
	for _, tt := range []struct {
		name string
		re   *oauth2.RetrieveError
		want bool
	}{
		{"invalid_grant", answer(http.StatusBadRequest, "invalid_grant"), true},
		{"400 invalid_request (Dex: a refresh token spent, expired or unknown)", answer(http.StatusBadRequest, "invalid_request"), true},
		{"500 invalid_request (Dex: its storage or the connector failed, an LDAP server down)", answer(http.StatusInternalServerError, "invalid_request"), false},
		{"400 without an error code", answer(http.StatusBadRequest, ""), true},
		{"503 without an error code", answer(http.StatusServiceUnavailable, ""), false},
		{"temporarily_unavailable", answer(http.StatusServiceUnavailable, "temporarily_unavailable"), false},
	} {
		if got := refusal(tt.re); got != tt.want {
			t.Errorf("%s: refusal = %v, want %v", tt.name, got, tt.want)
		}
	}
}
