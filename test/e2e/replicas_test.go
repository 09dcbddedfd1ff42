package e2e

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy"
	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// replicasConfig is one OIDC IdP, sessions in Redis.
const replicasConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [SESSION_KEY]
  store: redis
  redis:
    url: REDIS_URL
  refresh: REFRESH
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups, offline_access]
role_mapping:
  roles: [user]
  default: user
attribute_pass:
  headers:
    X-Email: email
`

// replicaSet is three portcullis replicas sharing one public URL (a front
// that the test steers, like a load balancer), one Redis, one IdP and one
// upstream.
type replicaSet struct {
	PublicURL string
	URLs      [3]string // each replica's own address
	Handlers  [3]*proxy.Handler
	Upstream  *echo.Server
	IdP       *oidcserver.Server
	Redis     *redisserver.Server

	route  atomic.Pointer[func(*http.Request) int] // which replica the front sends a request to
	mu     sync.Mutex
	served []string // "replica path" of every request through the front
}

func startReplicas(t *testing.T, refresh string) *replicaSet {
	t.Helper()
	return startReplicasWithKeys(t, refresh, [3]string{sessionKey, sessionKey, sessionKey})
}

// startReplicasWithKeys is startReplicas with each replica's session.keys
// (comma-separated), as during the rollout of a key rotation.
func startReplicasWithKeys(t *testing.T, refresh string, keys [3]string) *replicaSet {
	t.Helper()
	rs := &replicaSet{Redis: redisserver.Start(t), Upstream: echo.New()}
	upSrv := httptest.NewServer(rs.Upstream)
	t.Cleanup(upSrv.Close)
	var lns [3]net.Listener
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		lns[i], rs.URLs[i] = ln, "http://"+ln.Addr().String()
	}
	front := httptest.NewServer(rs.front())
	t.Cleanup(front.Close)
	rs.PublicURL = front.URL
	rs.steer(func(*http.Request) int { return 0 })

	rs.IdP = oidcserver.Start(t, oidcserver.Options{
		RedirectURIs:           []string{rs.PublicURL + "/.portcullis/oidc/company/callback"},
		PostLogoutRedirectURIs: []string{rs.PublicURL + "/.portcullis/logout/done"},
		// The IdP calls one replica directly, as it would a pod behind a Service.
		BackchannelLogoutURI: rs.URLs[2] + "/.portcullis/oidc/company/backchannel-logout",
	})
	yaml := strings.NewReplacer("PUBLIC_URL", rs.PublicURL, "UPSTREAM_URL", upSrv.URL,
		"REDIS_URL", rs.Redis.URL, "ISSUER", rs.IdP.Issuer, "REFRESH", refresh).Replace(replicasConfig)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for i := range rs.Handlers {
		cfg, err := proxy.ParseConfig([]byte(strings.Replace(yaml, "SESSION_KEY", keys[i], 1)), os.Getenv)
		if err != nil {
			t.Fatalf("config: %v", err)
		}
		log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("replica", i)
		h, err := proxy.New(ctx, cfg, log)
		if err != nil {
			t.Fatalf("replica %d: proxy.New: %v", i, err)
		}
		rs.Handlers[i] = h
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(lns[i])
		t.Cleanup(func() { srv.Close() })
	}
	for i, h := range rs.Handlers {
		deadline := time.Now().Add(20 * time.Second)
		for len(h.Ready()) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("replica %d not ready: %v", i, h.Ready())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return rs
}

// front forwards each request to the replica the route picks, keeping the
// public Host, and records who served what.
func (rs *replicaSet) front() http.Handler {
	return &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		i := (*rs.route.Load())(pr.In)
		target, _ := url.Parse(rs.URLs[i]) // made by startReplicas, valid
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host
		rs.mu.Lock()
		rs.served = append(rs.served, strconv.Itoa(i)+" "+pr.In.URL.Path)
		rs.mu.Unlock()
	}}
}

func (rs *replicaSet) steer(route func(*http.Request) int) { rs.route.Store(&route) }

// servedBy is the replica that served the last request through the front
// whose path starts with prefix; -1 when none did.
func (rs *replicaSet) servedBy(prefix string) int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for i := len(rs.served) - 1; i >= 0; i-- {
		replica, path, _ := strings.Cut(rs.served[i], " ")
		if strings.HasPrefix(path, prefix) {
			n, _ := strconv.Atoi(replica)
			return n
		}
	}
	return -1
}

// call is a script's request to replica i with the browser's session cookie.
func (rs *replicaSet) call(t *testing.T, i int, cookie string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", rs.URLs[i]+"/data", nil)
	req.Header.Set("Cookie", cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("replica %d: %v", i, err)
	}
	readBody(t, resp)
	return resp.StatusCode
}

// everywhere is the status each replica answers cookie with.
func (rs *replicaSet) everywhere(t *testing.T, cookie string) [3]int {
	t.Helper()
	var got [3]int
	for i := range got {
		got[i] = rs.call(t, i, cookie)
	}
	return got
}

// waitEverywhere polls until every replica answers want, for at most 10 s.
func (rs *replicaSet) waitEverywhere(t *testing.T, cookie string, want int) [3]int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := rs.everywhere(t, cookie)
		if got == [3]int{want, want, want} || time.Now().After(deadline) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sessionCookie is the Cookie header the browser sends for the public URL.
func (rs *replicaSet) sessionCookie(t *testing.T, b *http.Client) string {
	t.Helper()
	var parts []string
	for _, c := range b.Jar.Cookies(mustURL(t, rs.PublicURL)) {
		if c.Name == "portcullis" {
			parts = append(parts, c.Name+"="+c.Value)
		}
	}
	return strings.Join(parts, "; ")
}

// login logs alice in through the front, the callback landing on replica
// callbackOn, and returns her session cookie.
func (rs *replicaSet) login(t *testing.T, b *http.Client, startOn, callbackOn int) string {
	t.Helper()
	rs.steer(func(r *http.Request) int {
		if strings.HasSuffix(r.URL.Path, "/callback") {
			return callbackOn
		}
		return startOn
	})
	resp := oidcserver.Login(t, b, rs.PublicURL+"/", oidcserver.Alice, oidcserver.AlicePassword)
	readBody(t, resp)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.String() != rs.PublicURL+"/" {
		t.Fatalf("login ended at %s with %d, want %s/ with 200", resp.Request.URL, resp.StatusCode, rs.PublicURL)
	}
	cookie := rs.sessionCookie(t, b)
	if cookie == "" {
		t.Fatal("no session cookie after login")
	}
	return cookie
}

func ready(h *proxy.Handler) (int, string) {
	rec := httptest.NewRecorder()
	h.Admin().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	return rec.Code, rec.Body.String()
}

func TestReplicasShareSessionsThroughRedis(t *testing.T) {
	rs := startReplicas(t, "0s")
	b := browser(t)

	// A login started on replica 0 completes on replica 1.
	cookie := rs.login(t, b, 0, 1)
	if on := rs.servedBy("/.portcullis/login/company"); on != 0 {
		t.Errorf("the login started on replica %d, want 0", on)
	}
	if on := rs.servedBy("/.portcullis/oidc/company/callback"); on != 1 {
		t.Errorf("the callback landed on replica %d, want 1", on)
	}
	if len(cookie) > 200 {
		t.Errorf("session cookie is %d bytes; with Redis it holds only the sealed ID", len(cookie))
	}

	// The session works on all three.
	for i := range 3 {
		if status := rs.call(t, i, cookie); status != http.StatusOK {
			t.Errorf("replica %d: status %d, want 200", i, status)
		} else if got, _ := rs.Upstream.Last(); got.Header.Get("X-Email") != "alice@example.com" {
			t.Errorf("replica %d: X-Email %q", i, got.Header.Get("X-Email"))
		}
	}

	// Logout on replica 2 is logout on all.
	req, _ := http.NewRequest("POST", rs.URLs[2]+"/.portcullis/logout", nil)
	req.Header.Set("Cookie", cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("logout: status %d", resp.StatusCode)
	}
	if got := rs.everywhere(t, cookie); got != [3]int{401, 401, 401} {
		t.Errorf("after logout on replica 2 the replicas answer %v, want 401 everywhere", got)
	}
}

// TestBackchannelLogoutEndsTheSessionEverywhere: the user signs out at the
// IdP itself, which tells replica 2 over the back channel. With a key
// rotation, replica 2 has a new session key first and the old one second:
// the session was made before, on a replica with the old key alone, and
// indexed under that key's names. It must end everywhere all the same.
func TestBackchannelLogoutEndsTheSessionEverywhere(t *testing.T) {
	const newKey = "bmV3LXNlc3Npb24ta2V5LTMyLWJ5dGVzLWxvbmchISE="
	for _, tc := range []struct {
		name string
		keys [3]string
	}{
		{"the same keys everywhere", [3]string{sessionKey, sessionKey, sessionKey}},
		{"a new key first on the replica the IdP calls", [3]string{sessionKey, sessionKey, newKey + ", " + sessionKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := startReplicasWithKeys(t, "0s", tc.keys)
			b := browser(t)
			cookie := rs.login(t, b, 0, 0)
			if got := rs.everywhere(t, cookie); got != [3]int{200, 200, 200} {
				t.Fatalf("after login the replicas answer %v, want 200 everywhere", got)
			}
			readBody(t, oidcserver.Logout(t, b, rs.IdP.Issuer+"/session/end"))
			if got := rs.waitEverywhere(t, cookie, 401); got != [3]int{401, 401, 401} {
				t.Errorf("after the IdP's back-channel logout the replicas answer %v, want 401 everywhere", got)
			}
			signsInAgainAfterItsSessionEnded(t, b, rs.PublicURL+"/", rs.IdP.Issuer)

			// A logout token that does not verify is refused with 400.
			resp, err := http.PostForm(rs.URLs[0]+"/.portcullis/oidc/company/backchannel-logout", map[string][]string{"logout_token": {"e30.e30.e30"}})
			if err != nil {
				t.Fatal(err)
			}
			if body := readBody(t, resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "invalid_request") {
				t.Errorf("forged logout token: %d %s, want 400 invalid_request", resp.StatusCode, body)
			}
		})
	}
}

func TestReplicasWithRedisDownAndBack(t *testing.T) {
	rs := startReplicas(t, "0s")
	cookie := rs.login(t, browser(t), 0, 1)

	rs.Redis.Stop()
	if got := rs.everywhere(t, cookie); got != [3]int{503, 503, 503} {
		t.Errorf("Redis stopped: the replicas answer %v, want 503 everywhere (never let in)", got)
	}
	for i, h := range rs.Handlers {
		if code, body := ready(h); code != http.StatusServiceUnavailable || !strings.Contains(body, "session store") {
			t.Errorf("replica %d /readyz with Redis stopped: %d %s, want 503 naming the session store", i, code, body)
		}
	}
	// userinfo must not claim "no session" (which sends the UI to log in)
	// when the store cannot say.
	req, _ := http.NewRequest("GET", rs.URLs[0]+"/.portcullis/userinfo", nil)
	req.Header.Set("Cookie", cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("userinfo with Redis stopped: %d, want 503", resp.StatusCode)
	}

	// Redis comes back empty: every replica is ready again by itself, the
	// old session is gone, and a new login works everywhere.
	rs.Redis.Start()
	for i, h := range rs.Handlers {
		deadline := time.Now().Add(10 * time.Second)
		for code, body := ready(h); code != http.StatusOK; code, body = ready(h) {
			if time.Now().After(deadline) {
				t.Fatalf("replica %d /readyz after Redis came back: %d %s", i, code, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if got := rs.everywhere(t, cookie); got != [3]int{401, 401, 401} {
		t.Errorf("the session Redis lost: the replicas answer %v, want 401 (log in again)", got)
	}
	fresh := rs.login(t, browser(t), 1, 2)
	if got := rs.everywhere(t, fresh); got != [3]int{200, 200, 200} {
		t.Errorf("a login after Redis came back: the replicas answer %v, want 200 everywhere", got)
	}
}

func TestReplicasSpendARotatingRefreshTokenOnce(t *testing.T) {
	rs := startReplicas(t, "1s")
	cookie := rs.login(t, browser(t), 0, 0)
	// The token endpoint's requests and the refreshes counted so far: the
	// code exchange, and a refresh when the login crossed a second
	// (sessions keep their refresh times to the second: the login's last
	// request may already be due).
	loginCalls, loginRefreshes := rs.IdP.TokenRequests(t), rs.successes(t)

	time.Sleep(1100 * time.Millisecond) // past session.refresh
	const concurrent = 30
	var wg sync.WaitGroup
	var ok atomic.Int64
	start := make(chan struct{})
	for i := range concurrent {
		wg.Go(func() {
			<-start
			if rs.call(t, i%3, cookie) == http.StatusOK {
				ok.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	eventually(t, "the refresh to succeed", func() bool { return rs.successes(t)-loginRefreshes >= 1 })

	calls, successes := rs.IdP.TokenRequests(t)-loginCalls, rs.successes(t)-loginRefreshes
	t.Logf("%d requests over 3 replicas after the refresh interval: %d succeeded, %d refresh(es) at the IdP", concurrent, ok.Load(), calls)
	if ok.Load() != concurrent {
		t.Errorf("%d of %d requests succeeded, want all", ok.Load(), concurrent)
	}
	if calls != 1 || successes != 1 {
		t.Errorf("token endpoint called %d times, %d successful refreshes counted over the replicas; want 1 and 1", calls, successes)
	}
	if got := rs.everywhere(t, cookie); got != [3]int{200, 200, 200} {
		t.Errorf("after the refresh the replicas answer %v, want 200 everywhere", got)
	}
}

// successes is session_refreshes_total{result="success"} summed over the
// replicas.
func (rs *replicaSet) successes(t *testing.T) int {
	t.Helper()
	n := 0
	for _, h := range rs.Handlers {
		n += metric(t, h, `portcullis_session_refreshes_total{idp="company",result="success"}`)
	}
	return n
}

// metric reads one series from a replica's /metrics.
func metric(t *testing.T, h *proxy.Handler, series string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	h.Admin().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return 0
}

func TestBackchannelLogoutWithTheCookieStore(t *testing.T) {
	s := listen(t)
	idp := oidcserver.Start(t, oidcserver.Options{
		RedirectURIs:         []string{s.URL + "/.portcullis/oidc/company/callback"},
		BackchannelLogoutURI: s.URL + "/.portcullis/oidc/company/backchannel-logout",
	})
	s.start(t, strings.NewReplacer("ISSUER", idp.Issuer, "store: redis", "store: cookie", "REDIS_URL", "redis://unused:6379", "REFRESH", "0s").Replace(replicasConfig))
	b := browser(t)
	readBody(t, oidcserver.Login(t, b, s.URL+"/", oidcserver.Alice, oidcserver.AlicePassword))
	cookie := cookieHeader(t, b, s)
	if status, _ := apiGet(t, s, cookie); status != http.StatusOK {
		t.Fatalf("after login: status %d", status)
	}
	// The sealed cookie itself stays valid; the replica the IdP called
	// remembers that this user's IdP session ended.
	readBody(t, oidcserver.Logout(t, b, idp.Issuer+"/session/end"))
	deadline := time.Now().Add(10 * time.Second)
	status, _ := apiGet(t, s, cookie)
	for status != http.StatusUnauthorized && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		status, _ = apiGet(t, s, cookie)
	}
	if status != http.StatusUnauthorized {
		t.Errorf("after the IdP's back-channel logout: status %d, want 401", status)
	}
	signsInAgainAfterItsSessionEnded(t, b, s.URL+"/tasks", idp.Issuer)
}

// signsInAgainAfterItsSessionEnded is a browser whose session ended, within
// two minutes of its login, by a back-channel logout: back at the
// application it is sent to the IdP to sign in again, as any browser
// without a session, and signs in. Its session cookie still opens, to a
// session that has ended: no login loop, which the page "Sign-in did not
// hold" is for.
func signsInAgainAfterItsSessionEnded(t *testing.T, b *http.Client, page, issuer string) {
	t.Helper()
	resp, err := b.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if !strings.HasPrefix(resp.Request.URL.String(), issuer+"/") || strings.Contains(body, "Sign-in did not hold") {
		t.Errorf("back at %s after the back-channel logout: %d at %s, want the IdP's sign-in:\n%s", page, resp.StatusCode, resp.Request.URL, body)
	}
	resp = oidcserver.Login(t, b, page, oidcserver.Alice, oidcserver.AlicePassword)
	readBody(t, resp)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.String() != page {
		t.Errorf("signing in again: %d at %s, want %s", resp.StatusCode, resp.Request.URL, page)
	}
}
