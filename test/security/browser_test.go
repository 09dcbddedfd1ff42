package security

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// browser walks the login flow step by step with a cookie jar, stopping at
// every redirect so a test can tamper with any step.
type browser struct {
	t      *testing.T
	client *http.Client
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, client: &http.Client{
		Jar:           jar,
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// step is one request of a flow and its answer.
type step struct {
	Status     int
	Location   string
	SetCookies []*http.Cookie
	Body       string
}

func (b *browser) get(rawURL string) step {
	b.t.Helper()
	req, err := http.NewRequest("GET", rawURL, nil)
	if err != nil {
		b.t.Fatalf("request %q: %v", rawURL, err)
	}
	req.Header.Set("Accept", "text/html")
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return step{Status: resp.StatusCode, Location: resp.Header.Get("Location"), SetCookies: resp.Cookies(), Body: string(body)}
}

// resolve makes a Location absolute against the proxy's public URL.
func resolve(t *testing.T, loc string) string {
	t.Helper()
	base, _ := url.Parse(suite.public + "/")
	u, err := base.Parse(loc)
	if err != nil {
		t.Fatalf("Location %q does not parse: %v", loc, err)
	}
	return u.String()
}

// start begins a login at idpID (via /login/{idp}) and returns the IdP's
// authorize URL the proxy sent the browser to.
func (b *browser) start(idpID, rd string) *url.URL {
	b.t.Helper()
	target := suite.public + "/.portcullis/login/" + idpID
	if rd != "" {
		target += "?rd=" + url.QueryEscape(rd)
	}
	s := b.get(target)
	if s.Status != http.StatusFound {
		b.t.Fatalf("start login at %s: status %d, want 302; body %q", idpID, s.Status, s.Body)
	}
	u, err := url.Parse(s.Location)
	if err != nil {
		b.t.Fatal(err)
	}
	return u
}

// authorize visits the IdP as user, asking it to forge the token as forge
// says, and returns the callback URL the IdP sent the browser back to.
func (b *browser) authorize(auth *url.URL, user, forge string) *url.URL {
	b.t.Helper()
	u := *auth
	q := u.Query()
	q.Set("user", user)
	if forge != "" {
		q.Set("forge", forge)
	}
	u.RawQuery = q.Encode()
	s := b.get(u.String())
	if s.Status != http.StatusFound {
		b.t.Fatalf("IdP authorize: status %d; body %q", s.Status, s.Body)
	}
	cb, err := url.Parse(s.Location)
	if err != nil {
		b.t.Fatal(err)
	}
	return cb
}

// login logs user in at alpha with the honest IdP and returns the Cookie
// header value that carries the session.
func (b *browser) login(user string) string {
	b.t.Helper()
	cb := b.authorize(b.start("alpha", "/"), user, "")
	s := b.get(cb.String())
	if s.Status != http.StatusFound || sessionCookie(s.SetCookies) == "" {
		b.t.Fatalf("login as %s: status %d, cookies %v, body %q", user, s.Status, s.SetCookies, s.Body)
	}
	return b.cookieHeader()
}

// cookieHeader is the Cookie header the jar would send to the proxy.
func (b *browser) cookieHeader() string {
	u, _ := url.Parse(suite.public + "/")
	var parts []string
	for _, c := range b.client.Jar.Cookies(u) {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return strings.Join(parts, "; ")
}

// sessionCookie is the value of the session cookie among cookies ("" when
// none is set, or it is being cleared).
func sessionCookie(cookies []*http.Cookie) string {
	for _, c := range cookies {
		if (c.Name == "portcullis" || strings.HasPrefix(c.Name, "portcullis_")) &&
			!strings.HasPrefix(c.Name, "portcullis_login_") && c.Value != "" && c.MaxAge >= 0 {
			return c.Value
		}
	}
	return ""
}

// sessionOf returns the "portcullis=..." part of a Cookie header value.
func sessionOf(cookieHeader string) string {
	for _, part := range strings.Split(cookieHeader, "; ") {
		if strings.HasPrefix(part, "portcullis=") {
			return part
		}
	}
	return ""
}

// Sessions of the suite's users, logged in once through alpha.
var (
	sessionsMu sync.Mutex
	sessions   = map[string]string{}
)

// sessionFor is a Cookie header with a session of user, made once.
func sessionFor(t *testing.T, user string) string {
	t.Helper()
	sessionsMu.Lock()
	defer sessionsMu.Unlock()
	if c, ok := sessions[user]; ok {
		return c
	}
	c := sessionOf(newBrowser(t).login(user))
	sessions[user] = c
	return c
}
