package proxy

import (
	"crypto/rand"
	"crypto/rsa"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// The IdP (oidc-provider) logs alice out while it stalls; its logout token
// reaches the entry registered for the client (company), which holds the
// IdP's keys. Beside it: company-groups, an entry for the same client that
// has yet to fetch the keys; company-other, an entry for another client
// of the IdP, likewise; partner, an entry whose IdP has never answered
// (its discovery has not succeeded). The token ends alice's session at
// company at once, and is answered 503 for company-groups alone, which
// could not check it: another client's entry, and another issuer's, are
// not waited for (the token says it is not for them), or every logout
// would wait as long as they fail. The IdP's retry, once it answers, ends
// her session at company-groups; once more, it is a replay.
func TestBackchannelLogoutWaitsOnlyForTheEntriesOfItsClient(t *testing.T) {
	up := httptest.NewServer(echo.New())
	t.Cleanup(up.Close)
	tokens, catcher := logoutCatcher(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	op := oidcserver.Start(t, oidcserver.Options{
		RedirectURIs: []string{base + "/.portcullis/oidc/company/callback", base + "/.portcullis/oidc/company-groups/callback"},
		// kept, to be posted to the proxy while the IdP stalls
		BackchannelLogoutURI: catcher,
		// a token by sub, for alice's sessions in both browsers
		BackchannelLogoutWithoutSID: true,
	})
	y := strings.NewReplacer("UPSTREAM_URL", up.URL, "ISSUER", op.Issuer, "NAME", "", "SCOPES", "openid, email, profile",
		"SECRET", "portcullis-secret", "MORE", "").Replace(stalledOIDCConfig)
	y = strings.Replace(y, "rules:\n", `    - id: company-groups
      protocol: OIDC
      server_url: `+op.Issuer+`
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups]
    - id: company-other
      protocol: OIDC
      server_url: `+op.Issuer+`
      client_id: someone-else
      client_secret: someone-elses-secret
    - id: partner
      protocol: OIDC
      server_url: http://127.0.0.1:1/
      client_id: portcullis
      client_secret: portcullis-secret
rules:
`, 1)
	s := startStallReloadStack(t, ln, y, &http.Transport{ResponseHeaderTimeout: 2 * time.Second})
	waitFor(t, "every entry but partner to be ready", func() bool {
		problems := s.live.cur.Load().Ready()
		_, partner := problems["idp partner"]
		return len(problems) == 1 && partner
	})

	post := func(token string) logoutAnswer { return postLogoutToken(t, s.base, "company", token) }
	login := func(id string) (*http.Client, []*http.Cookie) {
		jar, _ := cookiejar.New(nil)
		browser := &http.Client{Jar: jar, Timeout: time.Minute}
		resp := oidcserver.Login(t, browser, s.base+"/.portcullis/login/"+id+"?rd=/tasks", oidcserver.Alice, oidcserver.AlicePassword)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("login at %s: %d", id, resp.StatusCode)
		}
		return browser, jar.Cookies(resp.Request.URL)
	}
	signedIn := func(session []*http.Cookie) bool { return sessionAnswers(t, s.base, session) == http.StatusOK }
	browser, atCompany := login("company")
	_, atGroups := login("company-groups")

	// company fetches the IdP's keys, for a forged token naming a kid
	// never published (refused once they are fetched).
	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: forger},
		(&jose.SignerOptions{}).WithType("logout+jwt").WithHeader("kid", "never-published"))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := jwt.Signed(signer).Claims(map[string]any{"iss": op.Issuer, "aud": "portcullis", "iat": time.Now().Unix(),
		"jti": rand.Text(), "sub": oidcserver.Alice, "events": map[string]any{idp.BackchannelLogoutEvent: map[string]any{}}}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	if a := post(forged); a.code != http.StatusBadRequest {
		t.Fatalf("a forged logout token, company's first: %d %s, want 400 (the keys fetched for it)", a.code, a.body)
	}

	token := signsOutAtIdP(t, op, browser, tokens)
	op.Pause()
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			op.Resume()
		}
	})
	first := post(token)
	if first.code != http.StatusServiceUnavailable || first.retryAfter < 1 || !strings.Contains(first.body, "temporarily_unavailable") {
		t.Fatalf("the IdP's logout token while it stalls, company-groups without its keys: %d (Retry-After %d) %s; want 503 temporarily_unavailable with Retry-After",
			first.code, first.retryAfter, first.body)
	}
	if signedIn(atCompany) || !signedIn(atGroups) {
		t.Errorf("alice signed in at company %v, at company-groups %v after the 503; want at company-groups only", signedIn(atCompany), signedIn(atGroups))
	}
	lines := s.logs.find(t, map[string]any{"msg": "back-channel logout: the token could not be checked at another entry of its client; sessions there not ended"})
	if len(lines) != 1 || lines[0]["not_checked_at"] != "company-groups" || lines[0]["request_id"] == "" || lines[0]["client"] != "127.0.0.1" {
		t.Errorf("the lines naming the entries that could not check the token: %v; want one, naming company-groups, its request_id and client", lines)
	}

	// The IdP's retries, once it answers, after Retry-After each.
	op.Resume()
	resumed = true
	sendAgainUntilTaken(t, post, token, first)
	if signedIn(atGroups) {
		t.Error("alice signed in at company-groups after the logout token was taken")
	}
	if a := post(token); a.code != http.StatusBadRequest || !strings.Contains(a.body, "already used") {
		t.Errorf("the logout token once more: %d %s, want 400, already used", a.code, a.body)
	}
	for _, id := range []string{"company-other", "partner"} {
		if lines := s.logs.find(t, map[string]any{"not_checked_at": id}); len(lines) != 0 {
			t.Errorf("lines saying %s could not check the token: %v; want none (it is not for %s)", id, lines, id)
		}
	}
}
