package ops

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// browser keeps cookies, asks for HTML and remembers every URL it visited,
// so the test knows the authorization codes that went by.
type browser struct {
	*http.Client
	mu      sync.Mutex
	visited []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	b := &browser{}
	b.Client = &http.Client{Jar: jar, Timeout: 20 * time.Second, Transport: b}
	return b
}

func (b *browser) RoundTrip(r *http.Request) (*http.Response, error) {
	b.mu.Lock()
	b.visited = append(b.visited, r.URL.String())
	b.mu.Unlock()
	if r.Header.Get("Accept") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Accept", "text/html")
	}
	return http.DefaultTransport.RoundTrip(r)
}

// codes are the authorization codes the browser carried to the callback.
func (b *browser) codes() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, v := range b.visited {
		if u, err := url.Parse(v); err == nil && u.Query().Get("code") != "" {
			out = append(out, u.Query().Get("code"))
		}
	}
	return out
}

func (b *browser) login(t *testing.T, p *proc) {
	t.Helper()
	resp := oidcserver.Login(t, b.Client, p.URL+"/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Echo") != "1" {
		t.Fatalf("login: %d, want the upstream's page:\n%s", resp.StatusCode, body)
	}
}

// The IdP is down when the proxy starts: the proxy starts anyway, says
// which IdP is not ready, keeps existing sessions working and answers a
// login there with 503; once the IdP is back, discovery (retried with
// backoff) makes it ready and logins work, also after the IdP rotated its
// signing key. No log line, from start to shutdown, holds a secret.
func TestIdPDownAtStartThenBackThenRotatingKeys(t *testing.T) {
	upSrv := httptest.NewServer(echo.New())
	t.Cleanup(upSrv.Close)
	listen := freeAddr(t)
	idpSrv := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{"http://" + listen + "/.portcullis/oidc/company/callback"}})
	idpSrv.Stop()

	p := newProc(t, map[string]string{"LISTEN": listen, "UPSTREAM": upSrv.URL, "ISSUER": idpSrv.Issuer})
	// single_sign_out: sessions keep the ID token, whose key the test reads
	// (and which the logout then sends to the IdP, a secret the log must
	// not show either).
	p.writeRaw(t, strings.Replace(p.text(), "groups]\n", "groups]\n      single_sign_out: true\n", 1))
	p.start(t, "--log-level", "debug", "--log-format", "json")

	if code, body := p.ready(t); code != 503 || !strings.Contains(body, "idp company") {
		t.Fatalf("readyz with the IdP down: %d %s, want 503 naming idp company", code, body)
	}
	b := newBrowser(t)
	resp, err := b.Get(p.URL + "/.portcullis/login/company")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "Temporarily unavailable") {
		t.Fatalf("login at the IdP that is down: %d, want 503 'Temporarily unavailable':\n%s", resp.StatusCode, body)
	}
	existing := mintCookie(t, sessionKey, "carol@example.com")
	req, _ := http.NewRequest("GET", p.URL+"/tasks", nil)
	req.AddCookie(existing)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("existing session with the IdP down: %v %v, want 200", err, resp)
	}

	idpSrv.Restart()
	eventually(t, 15*time.Second, "ready once the IdP is back", func() bool { code, _ := p.ready(t); return code == 200 })
	b.login(t, p)
	first := openSession(t, p, b.Jar.Cookies(mustURL(t, p.URL)))

	// The IdP rotates its signing key; the next login's ID token has a kid
	// the proxy has not seen, and must still verify.
	b.Get(p.URL + "/.portcullis/logout")
	idpSrv.RotateKeys()
	b2 := newBrowser(t)
	b2.login(t, p)
	sessionCookies := b2.Jar.Cookies(mustURL(t, p.URL))
	second := openSession(t, p, sessionCookies)
	if kidA, kidB := strings.Split(first.Tokens.IDToken, ".")[0], strings.Split(second.Tokens.IDToken, ".")[0]; kidA == kidB {
		t.Fatalf("the IdP signed with the same key (JWT header) after RotateKeys")
	}
	if got := p.metric(t, `portcullis_logins_total{idp="company",result="success"}`); got != 2 {
		t.Errorf(`logins_total{idp="company",result="success"} = %v, want 2`, got)
	}
	if got := p.metric(t, `portcullis_login_duration_seconds_count{idp="company"}`); got != 2 {
		t.Errorf(`login_duration_seconds_count{idp="company"} = %v, want 2`, got)
	}
	b2.Get(p.URL + "/.portcullis/logout")
	p.signal(t, sigterm)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}

	log := p.Log.String()
	for _, want := range []string{`"event":"login"`, `"event":"logout"`, `"log":"access"`, `"path":"/.portcullis/oidc/company/callback"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log has no %s", want)
		}
	}
	secrets := map[string]string{
		"client secret":         idpSrv.ClientSecret,
		"session key":           sessionKey,
		"minted session cookie": existing.Value,
		"first ID token":        first.Tokens.IDToken,
		"second ID token":       second.Tokens.IDToken,
	}
	for _, c := range sessionCookies {
		secrets["cookie "+c.Name] = c.Value
	}
	for i, code := range append(b.codes(), b2.codes()...) {
		secrets["authorization code "+string(rune('0'+i))] = code
	}
	if len(b.codes())+len(b2.codes()) < 2 || first.Tokens.IDToken == "" {
		t.Fatalf("the test did not see the codes and tokens it looks for")
	}
	if first.Tokens.RefreshToken != "" {
		secrets["refresh token"] = first.Tokens.RefreshToken
	}
	for what, secret := range secrets {
		if len(secret) < 8 {
			t.Fatalf("%s %q is too short to look for", what, secret)
		}
		if strings.Contains(log, secret) {
			t.Errorf("the log holds the %s", what)
		}
	}
	if m := jwtPattern.FindString(log); m != "" {
		t.Errorf("the log holds something shaped like a JWT: %s…", m[:20])
	}
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
