package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// refreshRedisConfig is one OIDC IdP that rotates refresh tokens, sessions
// in Redis, confirmed at the IdP every second.
const refreshRedisConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [` + testKey + `]
  store: redis
  redis: {url: REDIS_URL}
  refresh: 1s
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups, offline_access]
`

// redisDiesAfterRefresh passes the proxy's calls to the IdP on and, once
// armed, stops Redis as the answer to the next refresh comes back: the
// IdP has rotated the refresh token, and the proxy cannot save it.
type redisDiesAfterRefresh struct {
	next   http.RoundTripper
	issuer string
	redis  *redisserver.Server
	armed  atomic.Bool
	calls  atomic.Int64 // token endpoint calls
}

func (d *redisDiesAfterRefresh) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := d.next.RoundTrip(r)
	if r.Method == http.MethodPost && strings.HasPrefix(r.URL.String(), d.issuer+"/token") {
		d.calls.Add(1)
		if d.armed.CompareAndSwap(true, false) {
			d.redis.Stop()
		}
	}
	return resp, err
}

// refreshAfterRedisCameBack is a user signed in through the real
// oidc-provider, with her session in a Redis that keeps its data across a
// crash (appendonly), and the proxy's clock, which stands still unless the
// test moves it on: sessions keep their refresh times to the second, and a
// clock that ran would make the login's own last request refresh the
// session it had just made whenever the login crossed a second.
type refreshAfterRedisCameBack struct {
	h      *Handler
	url    string
	redis  *redisserver.Server
	idp    *redisDiesAfterRefresh
	at     atomic.Int64 // the proxy's clock, in Unix nanoseconds
	cookie string
}

func newRefreshAfterRedisCameBack(t *testing.T) *refreshAfterRedisCameBack {
	t.Helper()
	e := &refreshAfterRedisCameBack{redis: redisserver.StartPersistent(t)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.url = "http://" + ln.Addr().String()
	up := httptest.NewServer(echo.New())
	t.Cleanup(up.Close)
	op := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{e.url + "/.portcullis/oidc/company/callback"}})
	e.idp = &redisDiesAfterRefresh{next: http.DefaultTransport, issuer: op.Issuer, redis: e.redis}

	y := strings.NewReplacer("PUBLIC_URL", e.url, "UPSTREAM_URL", up.URL, "REDIS_URL", e.redis.URL, "ISSUER", op.Issuer).Replace(refreshRedisConfig)
	e.h = newTestHandlerVia(t, y, e.idp)
	// A request waits for the refresh it finds due as long as the refresh
	// may take (refreshTimeout), not refreshWait: these tests ask what its
	// answer carries, which on a loaded machine must not depend on how
	// soon the IdP answers.
	e.h.refresher.wait = refreshTimeout
	e.at.Store(time.Now().UnixNano())
	e.h.now = func() time.Time { return time.Unix(0, e.at.Load()) }
	srv := &http.Server{Handler: e.h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	for deadline := time.Now().Add(20 * time.Second); len(e.h.Ready()) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("proxy not ready: %v", e.h.Ready())
		}
	}

	e.cookie = aliceSessionCookie(t, e.url)
	// The session's times come from the store's clock, the real one, at
	// the callback: the proxy's clock, which stood before that during the
	// login, stands from now on at the end of the login, or, on a loaded
	// machine, a test's advance past session.refresh might not reach past
	// the session's refresh time.
	e.at.Store(time.Now().UnixNano())
	return e
}

// get is a script's request with the session cookie from the login, which
// a Redis session keeps across refreshes.
func (e *refreshAfterRedisCameBack) get(t *testing.T) int {
	t.Helper()
	req, _ := http.NewRequest("GET", e.url+"/data", nil)
	req.Header.Set("Cookie", e.cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (e *refreshAfterRedisCameBack) advance(d time.Duration) { e.at.Add(int64(d)) }

// When Redis dies between the IdP's answer to a refresh and the save of
// the renewed session, the IdP has rotated the refresh token and Redis
// still holds the old one. Once Redis is back, however long it was away,
// the user carries on signed in: the replica that refreshed saves the
// session it kept, where it spent the old token again after a minute and
// the IdP refused it as reused, which signed the user out.
func TestRefreshThatRedisFailedToSaveIsSavedWhenRedisIsBack(t *testing.T) {
	for _, away := range []time.Duration{10 * time.Second, 5 * time.Minute} {
		t.Run("Redis away for "+away.String(), func(t *testing.T) {
			e := newRefreshAfterRedisCameBack(t)
			login := e.idp.calls.Load() // the code exchange

			e.advance(2 * time.Second) // past session.refresh
			e.idp.armed.Store(true)
			status := e.get(t)
			if e.redis.Running() || e.idp.calls.Load() != login+1 {
				t.Fatalf("the refresh did not run into Redis dying: Redis running %v, %d refreshes", e.redis.Running(), e.idp.calls.Load()-login)
			}
			t.Logf("the request whose refresh Redis failed to save: %d", status)
			if status != http.StatusOK {
				t.Errorf("the request whose refresh Redis failed to save: %d, want 200 (the IdP confirmed the user)", status)
			}
			if got := e.get(t); got != http.StatusServiceUnavailable {
				t.Errorf("with Redis away: %d, want 503", got)
			}

			e.advance(away)
			e.redis.Start() // with the session as it was before the refresh
			if got := e.get(t); got != http.StatusOK {
				t.Errorf("Redis back after %s: %d, want 200", away, got)
			}
			if n := e.idp.calls.Load() - login; n != 1 {
				t.Errorf("%d refreshes at the IdP, want 1: the rotated-away token was spent again", n)
			}
			// The renewed session is in Redis: the next refresh spends the
			// rotated token, which the IdP accepts.
			e.advance(2 * time.Second)
			if got := e.get(t); got != http.StatusOK {
				t.Errorf("the next refresh: %d, want 200", got)
			}
			if n := e.idp.calls.Load() - login; n != 2 {
				t.Errorf("%d refreshes at the IdP, want 2", n)
			}
			mfs := gather(t, e.h)
			checkCounter(t, mfs, "portcullis_session_refreshes_total", map[string]string{"idp": "company", "result": refreshSuccess}, 2)
			checkCounter(t, mfs, "portcullis_session_refreshes_total", map[string]string{"idp": "company", "result": refreshRefused}, 0)
		})
	}
}

// The renewed session kept in memory answers only for a session Redis
// still has: signed out once Redis is back, the cookie from before the
// refresh opens nothing, however long the kept session has to live.
func TestRefreshThatRedisFailedToSaveDoesNotOutliveLogout(t *testing.T) {
	e := newRefreshAfterRedisCameBack(t)
	e.advance(2 * time.Second)
	e.idp.armed.Store(true)
	if got := e.get(t); got != http.StatusOK || e.redis.Running() {
		t.Fatalf("the refresh did not run into Redis dying: %d, Redis running %v", got, e.redis.Running())
	}
	e.redis.Start()
	req, _ := http.NewRequest("GET", e.url+"/.portcullis/logout", nil)
	req.Header.Set("Cookie", e.cookie)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if got := e.get(t); got != http.StatusUnauthorized {
		t.Errorf("the signed-out cookie after logout: %d, want 401", got)
	}
}

// aliceSessionCookie logs alice in at entry company of the proxy at base,
// through the real oidc-provider, and returns her session cookie as a
// Cookie line ("portcullis=...").
func aliceSessionCookie(t *testing.T, base string) string {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	resp := oidcserver.Login(t, browser, base+"/.portcullis/login/company?rd=/", oidcserver.Alice, oidcserver.AlicePassword)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	cookie := ""
	for _, c := range jar.Cookies(resp.Request.URL) {
		if c.Name == "portcullis" {
			cookie = c.Name + "=" + c.Value
		}
	}
	if resp.StatusCode != http.StatusOK || cookie == "" {
		t.Fatalf("login: %d at %s, session cookie %q", resp.StatusCode, resp.Request.URL, cookie)
	}
	return cookie
}
