package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// A long-running `portcullis serve` must not accumulate anything: these
// tests run the proxy as serve runs it (serveOn on loopback listeners,
// reloaded from its file) against a real oidc-provider, samlidp, slapd and
// redis-server, repeat a mixed workload, and compare what the process holds
// once the workload has settled after one round with what it holds after
// many: goroutines, descriptors, and the sockets to each server.

// leakConfig is the proxy with an IdP of each kind; VARIANT changes the
// names of all three and session.cookie_name, so that a reload to the other
// variant replaces every provider.
const leakConfig = `
server:
  public_url: PUBLIC_URL
  trusted_proxies: [127.0.0.1/32]
upstream:
  url: UPSTREAM_URL
session:
  cookie_name: portcullisVARIANT
  keys: [` + testKey + `]
STORE
sso:
  identity_providers:
    - id: company
      name: Company SSO VARIANT
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups]
    - id: corp
      name: Corporate SAML VARIANT
      protocol: SAML
      entity_id: SAML_ENTITY
      metadata_url: SAML_METADATA
    - id: corp-ldap
      name: Directory VARIANT
      protocol: LDAP
      url: LDAP_URL
      bind_dn: ` + ldapserver.ServiceDN + `
      bind_password: ` + ldapserver.ServicePassword + `
      user_search: {base_dn: "` + ldapserver.Suffix + `", filter: "(&(objectClass=inetOrgPerson)(uid={username}))"}
      group_search: {base_dn: "` + ldapserver.GroupsDN + `", filter: "(&(objectClass=groupOfNames)(member={dn}))"}
attribute_pass:
  headers:
    X-Email: email
rules:
  - name: api
    path_prefix: /api/
    headers: {Authorization: '^(Token|Bearer) '}
    action: bypass
  - name: legacy
    path_prefix: /legacy/
    basic_auth: corp-ldap
    action: authenticate
`

// leakStack is the proxy and the servers it uses.
type leakStack struct {
	base    string // the proxy's public URL
	addr    string // its listener
	live    *live
	path    string // the configuration file
	configs [2]string
	oidc    *oidcserver.Server
	saml    *samlserver.Server
	dir     *ldapserver.Server
	redis   *redisserver.Server // nil with the cookie store

	// peers names the servers by port, for the sockets count.
	peers map[int]string
	// shutdown ends serve, as a SIGTERM does, and waits until it returned.
	shutdown func()
}

func startLeakStack(t *testing.T, redis bool) *leakStack {
	t.Helper()
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &leakStack{base: "http://" + proxyLn.Addr().String(), addr: proxyLn.Addr().String(), peers: map[int]string{}}
	up := newServer(t, http.HandlerFunc(leakUpstream))
	s.oidc = oidcserver.Start(t, oidcserver.Options{
		RedirectURIs:         []string{s.base + "/.portcullis/oidc/company/callback"},
		BackchannelLogoutURI: s.base + "/.portcullis/oidc/company/backchannel-logout",
	})
	s.saml = samlserver.Start(t, samlserver.Options{Users: []samlserver.User{{
		Name: "alice", Password: "alice-pw", Email: "alice@example.com", Groups: []string{"cvat-admins"},
	}}})
	s.dir = ldapserver.Start(t, ldapserver.Options{})
	store := ""
	if redis {
		s.redis = redisserver.Start(t)
		store = "  store: redis\n  redis: {url: " + s.redis.URL + "}"
		s.peers[portOf(t, s.redis.URL)] = "redis"
	}
	s.peers[portOf(t, up)] = "upstream"
	s.peers[s.oidc.Port] = "oidc"
	s.peers[portOf(t, s.saml.URL)] = "saml"
	s.peers[portOf(t, s.dir.URL)] = "ldap"
	s.peers[portOf(t, s.base)] = "proxy"
	for i, variant := range []string{"", "-b"} {
		s.configs[i] = strings.NewReplacer("PUBLIC_URL", s.base, "UPSTREAM_URL", up, "STORE", store,
			"ISSUER", s.oidc.Issuer, "SAML_ENTITY", s.saml.EntityID(), "SAML_METADATA", s.saml.MetadataURL(),
			"LDAP_URL", s.dir.URL, "VARIANT", variant).Replace(leakConfig)
	}
	s.path = filepath.Join(t.TempDir(), "portcullis.yaml")
	if err := os.WriteFile(s.path, []byte(s.configs[0]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig([]byte(s.configs[0]), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &process.Output{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxy's warnings:\n%s", logs)
		}
	})
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// The IdPs are reached through a transport of the proxy's own, as
	// serve's http.DefaultTransport is: not one the test's clients share.
	h, err := build(ctx, cfg, log, nil, http.DefaultTransport.(*http.Transport).Clone())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s.live = newLive(ctx, h, h.log)
	s.live.src = &configSource{path: s.path, getenv: os.Getenv}
	_, s.live.src.stamp, _ = s.live.src.read()
	done := make(chan error, 1)
	go func() { done <- s.live.serveOn(ctx, proxyLn, adminLn, time.Second) }()
	s.shutdown = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	t.Cleanup(s.shutdown)
	s.awaitReady(t)
	s.registerSP(t)
	return s
}

func portOf(t *testing.T, raw string) int {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newServer runs h on loopback until the test ends and returns its URL.
func newServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// leakUpstream answers every request, and switches a WebSocket upgrade to
// echo its bytes (switcher, without remembering the requests).
func leakUpstream(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	if r.Header.Get("Upgrade") == "" {
		w.Header().Set("X-Upstream", "1")
		io.WriteString(w, "upstream page\n")
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n%s", greeting)
	if brw.Flush() != nil {
		return
	}
	io.Copy(conn, brw.Reader)
}

func (s *leakStack) handler() *Handler { return s.live.cur.Load() }

func (s *leakStack) awaitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(s.handler().Ready()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("proxy not ready: %v", s.handler().Ready())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// registerSP registers the SAML provider's metadata at the IdP: a provider
// that a reload started anew has a key of its own.
func (s *leakStack) registerSP(t *testing.T) {
	t.Helper()
	md, ok := s.handler().providers["corp"].implAsMetadata()
	if !ok {
		t.Fatal("the SAML provider publishes no metadata")
	}
	raw, err := md.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.saml.AddServiceProviderXML(raw); err != nil {
		t.Fatal(err)
	}
}

// reload rewrites the file with variant and reloads, as a SIGHUP does.
func (s *leakStack) reload(t *testing.T, variant int) {
	t.Helper()
	if err := os.WriteFile(s.path, []byte(s.configs[variant]), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.live.reload("signal"); err != nil {
		t.Fatal(err)
	}
	s.awaitReady(t)
	s.registerSP(t)
}

// leakClient is a browser of its own (cookies, connections), which the
// workload closes when done with it, as a user closes a tab.
type leakClient struct {
	*http.Client
	transport *http.Transport
	from      string // X-Forwarded-For
}

func (s *leakStack) client(from string) *leakClient {
	jar, _ := cookiejar.New(nil)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	c := &leakClient{transport: tr, from: from}
	c.Client = &http.Client{Jar: jar, Timeout: 20 * time.Second, Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		if r.Header.Get("Accept") == "" {
			r.Header.Set("Accept", "text/html")
		}
		if c.from != "" && strings.HasPrefix(r.URL.String(), s.base) {
			r.Header.Set("X-Forwarded-For", c.from)
		}
		return tr.RoundTrip(r)
	})}
	return c
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (c *leakClient) close() { c.transport.CloseIdleConnections() }

// stop is c not following redirects.
func (c *leakClient) stop() *http.Client {
	cc := *c.Client
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cc
}

// status sends r with c and returns its status, the body read and closed.
func status(t *testing.T, c *http.Client, r *http.Request) (int, string) {
	t.Helper()
	resp, err := c.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, r.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func mustRequest(t *testing.T, method, u string, body io.Reader) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return r
}

var stateField = regexp.MustCompile(`name="state" value="([^"]+)"`)

// round is one pass of the workload. Each step checks its answer, so that a
// workload that silently stopped working cannot pass for one that leaks
// nothing.
func (s *leakStack) round(t *testing.T, i int) {
	t.Helper()
	var clients []*leakClient
	newClient := func(from string) *leakClient {
		c := s.client(from)
		clients = append(clients, c)
		return c
	}
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	want := func(what string, got, want int, body string) {
		t.Helper()
		if got != want {
			t.Fatalf("round %d: %s: %d, want %d\n%.400s", i, what, got, want, body)
		}
	}

	// OIDC: login, requests, a WebSocket, logout.
	b := newClient("")
	resp := oidcserver.Login(t, b.Client, s.base+"/.portcullis/login/company?rd=/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want("OIDC login", resp.StatusCode, 200, string(body))
	if resp.Header.Get("X-Upstream") != "1" {
		t.Fatalf("round %d: OIDC login did not reach the upstream: %s", i, body)
	}
	code, body2 := status(t, b.Client, mustRequest(t, "GET", s.base+"/.portcullis/userinfo", nil))
	want("userinfo", code, 200, body2)
	s.webSocket(t, i, b)
	code, body2 = status(t, b.Client, mustRequest(t, "GET", s.base+"/.portcullis/logout", nil))
	want("logout", code, 200, body2)
	code, body2 = status(t, b.Client, mustRequest(t, "GET", s.base+"/.portcullis/userinfo", nil))
	want("userinfo after logout", code, 401, body2)

	// OIDC: a login that the IdP ends, by back-channel logout.
	b = newClient("")
	resp = oidcserver.Login(t, b.Client, s.base+"/.portcullis/login/company?rd=/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	resp.Body.Close()
	want("OIDC login", resp.StatusCode, 200, "")
	resp = oidcserver.Logout(t, b.Client, s.oidc.Issuer+"/session/end")
	resp.Body.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		code, body2 = status(t, b.Client, mustRequest(t, "GET", s.base+"/.portcullis/userinfo", nil))
		if code == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("round %d: userinfo after the IdP's back-channel logout: %d, want 401\n%.400s", i, code, body2)
		}
	}

	// Callbacks that fail: junk states, and junk answers to logins started.
	junk := newClient("")
	// IdPs and paths a client made up: no metric series may take them.
	for _, tc := range []struct{ method, path string }{
		{"GET", "/login/%s"}, {"GET", "/oidc/%s/callback?state=x"}, {"GET", "/ldap/%s"},
		{"POST", "/saml/%s/acs"}, {"GET", "/saml/%s/slo"}, {"POST", "/oidc/%s/backchannel-logout"},
	} {
		u := s.base + "/.portcullis" + fmt.Sprintf(tc.path, "nosuch"+strconv.Itoa(i))
		code, body2 = status(t, junk.Client, mustRequest(t, tc.method, u, strings.NewReader("")))
		want(tc.method+" "+u, code, 404, body2)
	}
	code, body2 = status(t, junk.stop(), mustRequest(t, "GET", s.base+"/nosuch"+strconv.Itoa(i)+"/tasks", nil))
	want("a path the client made up, without a session", code, 302, body2)
	for range 3 {
		code, body2 = status(t, junk.Client, mustRequest(t, "GET", s.base+"/.portcullis/oidc/company/callback?code=x&state=junk"+strconv.Itoa(i)+"aaaaaaaaaaaaaaaaaaaaaa", nil))
		want("callback with a junk state", code, 400, body2)
	}
	for range 2 {
		resp, err := junk.stop().Get(s.base + "/.portcullis/login/company")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		state := loc.Query().Get("state")
		code, body2 = status(t, junk.Client, mustRequest(t, "GET", s.base+"/.portcullis/oidc/company/callback?code=junk&state="+state, nil))
		want("callback with a junk code", code, 403, body2)

		resp, err = junk.stop().Get(s.base + "/.portcullis/login/corp")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ = url.Parse(resp.Header.Get("Location"))
		form := url.Values{"RelayState": {loc.Query().Get("RelayState")}, "SAMLResponse": {base64.StdEncoding.EncodeToString([]byte("<junk/>"))}}
		code, body2 = status(t, junk.Client, mustRequest(t, "POST", s.base+"/.portcullis/saml/corp/acs", strings.NewReader(form.Encode())))
		want("ACS with a junk response", code, 403, body2)
	}

	// SAML: login and a request.
	b = newClient("")
	resp, err := b.stop().Get(s.base + "/.portcullis/login/corp?rd=/tasks")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	acs := signInAtSAMLIdP(t, resp.Header.Get("Location"), "alice", "alice-pw")
	code, body2 = status(t, b.Client, mustRequest(t, "POST", s.base+"/.portcullis/saml/corp/acs", strings.NewReader(acs.Encode())))
	want("SAML login", code, 200, body2)
	code, body2 = status(t, b.Client, mustRequest(t, "GET", s.base+"/tasks", nil))
	want("request after the SAML login", code, 200, body2)

	// LDAP: the form and Basic auth, with alice's password and with wrong
	// ones for bob, which soon use up bob's attempts (429). The first round
	// goes on until they have, so that it has seen every answer the later
	// ones give.
	ldapForm := func(c *leakClient, username, password string) int {
		t.Helper()
		code, page := status(t, c.Client, mustRequest(t, "GET", s.base+"/.portcullis/ldap/corp-ldap?rd=/tasks", nil))
		m := stateField.FindStringSubmatch(page)
		if code != 200 || m == nil {
			t.Fatalf("round %d: LDAP form: %d %.400s", i, code, page)
		}
		form := url.Values{"username": {username}, "password": {password}, "state": {m[1]}}
		code, _ = status(t, c.Client, mustRequest(t, "POST", s.base+"/.portcullis/ldap/corp-ldap", strings.NewReader(form.Encode())))
		return code
	}
	basic := func(c *leakClient, username, password string) int {
		t.Helper()
		r := mustRequest(t, "GET", s.base+"/legacy/x", nil)
		r.SetBasicAuth(username, password)
		r.Header.Set("Accept", "application/json")
		code, _ := status(t, c.Client, r)
		return code
	}
	right, wrong := newClient("198.51.100.1"), newClient("198.51.100.2")
	want("LDAP form with the right password", ldapForm(right, ldapserver.Alice, ldapserver.AlicePassword), 200, "")
	want("Basic auth with the right password", basic(right, ldapserver.Alice, ldapserver.AlicePassword), 200, "")
	for attempt := 0; ; attempt++ {
		code := ldapForm(wrong, ldapserver.Bob, "wrong")
		if code == 429 {
			break
		}
		if code != 401 || i > 0 || attempt > userFailureBurst {
			t.Fatalf("round %d: LDAP form with a wrong password, attempt %d: %d, want 401 then 429", i, attempt+1, code)
		}
	}
	want("Basic auth with a wrong password once the limit is reached", basic(wrong, ldapserver.Bob, "wrong"), 429, "")

	// The directory goes away and comes back. The form is a new
	// browser's each time: one signed in with the directory is sent on to
	// rd, and checks no password.
	s.dir.Stop()
	want("LDAP form while the directory is down", ldapForm(newClient("198.51.100.1"), ldapserver.Alice, ldapserver.AlicePassword), 503, "")
	want("Basic auth while the directory is down", basic(right, "carol", ldapserver.AlicePassword), 503, "")
	s.dir.Restart()
	want("LDAP form once the directory is back", ldapForm(newClient("198.51.100.1"), ldapserver.Alice, ldapserver.AlicePassword), 200, "")

	// Bypassed and refused requests.
	anon := newClient("")
	r := mustRequest(t, "GET", s.base+"/api/tasks", nil)
	r.Header.Set("Authorization", "Token abc")
	code, body2 = status(t, anon.Client, r)
	want("bypassed request", code, 200, body2)
	r = mustRequest(t, "GET", s.base+"/tasks", nil)
	r.Header.Set("Accept", "application/json")
	code, body2 = status(t, anon.Client, r)
	want("request without a session", code, 401, body2)

	// Redis goes away and comes back, empty.
	if s.redis != nil {
		b = newClient("")
		resp := oidcserver.Login(t, b.Client, s.base+"/.portcullis/login/company?rd=/tasks", oidcserver.Alice, oidcserver.AlicePassword)
		resp.Body.Close()
		want("OIDC login before Redis stops", resp.StatusCode, 200, "")
		s.redis.Stop()
		code, body2 = status(t, b.Client, mustRequest(t, "GET", s.base+"/tasks", nil))
		want("request while Redis is stopped", code, 503, body2)
		s.redis.Start()
		s.awaitReady(t)
		r := mustRequest(t, "GET", s.base+"/tasks", nil)
		r.Header.Set("Accept", "application/json")
		code, body2 = status(t, b.Client, r)
		want("request after Redis came back empty", code, 401, body2)
	}

	// A reload to the other variant: every IdP and the cookie name change.
	s.reload(t, (i+1)%2)
}

// webSocket opens a WebSocket through the proxy as c's user, sees the
// upstream's greeting and closes it.
func (s *leakStack) webSocket(t *testing.T, i int, c *leakClient) {
	t.Helper()
	u, _ := url.Parse(s.base)
	var cookies []string
	for _, ck := range c.Jar.Cookies(u) {
		cookies = append(cookies, ck.Name+"="+ck.Value)
	}
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\n%s\r\nCookie: %s\r\n\r\n", u.Host, strings.Join(webSocketHeaders, "\r\n"), strings.Join(cookies, "; "))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("round %d: WebSocket: %v", i, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("round %d: WebSocket: %d, want 101", i, resp.StatusCode)
	}
	if line, err := br.ReadString('\n'); err != nil || line != greeting {
		t.Fatalf("round %d: WebSocket greeting: %q %v", i, line, err)
	}
	io.WriteString(conn, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("round %d: WebSocket echo: %q %v", i, line, err)
	}
}

// holdings are what the process holds: goroutines, open descriptors, its
// established TCP connections by the server they reach (the proxy's own
// listener counts the connections clients made to it), and the series of
// the proxy's metrics.
type holdings struct {
	goroutines int
	fds        int
	conns      map[string]int
	heap       uint64          // bytes of live heap objects after a collection
	series     map[string]bool // of the proxy's metrics, by name and labels
}

func (h holdings) String() string {
	var peers []string
	for p, n := range h.conns {
		peers = append(peers, fmt.Sprintf("%s=%d", p, n))
	}
	slices.Sort(peers)
	return fmt.Sprintf("goroutines=%d fds=%d heap=%dKiB series=%d conns[%s]", h.goroutines, h.fds, h.heap>>10, len(h.series), strings.Join(peers, " "))
}

func (s *leakStack) holdings(t *testing.T) holdings {
	t.Helper()
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := holdings{goroutines: runtime.NumGoroutine(), heap: ms.HeapAlloc, conns: map[string]int{}}
	h.series = map[string]bool{}
	for name, mf := range gather(t, s.handler()) {
		if !strings.HasPrefix(name, "portcullis_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			series := name
			for _, lp := range m.GetLabel() {
				series += fmt.Sprintf(" %s=%q", lp.GetName(), lp.GetValue())
			}
			h.series[series] = true
		}
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	sockets := map[string]bool{}
	for _, e := range entries {
		h.fds++
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "socket:[") {
			sockets[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		}
	}
	for _, file := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		raw, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "01" || !sockets[f[9]] { // 01: ESTABLISHED
				continue
			}
			name, ok := s.peers[hexPort(f[2])]
			if !ok {
				name = "other"
			}
			h.conns[name]++
		}
	}
	return h
}

// hexPort is the port of an address of /proc/net/tcp (0100007F:1F90).
func hexPort(addr string) int {
	_, p, _ := strings.Cut(addr, ":")
	n, _ := strconv.ParseInt(p, 16, 32)
	return int(n)
}

// settle waits until what the process holds is no more than base, or has
// stopped changing, or a while has passed, and returns what it holds then:
// the connections and goroutines of a finished workload take a moment to
// go.
func (s *leakStack) settle(t *testing.T, base *holdings) holdings {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last, same := s.holdings(t), 0
	for {
		time.Sleep(50 * time.Millisecond)
		h := s.holdings(t)
		if base != nil && h.goroutines <= base.goroutines && h.fds <= base.fds {
			return h
		}
		if h.goroutines == last.goroutines && h.fds == last.fds {
			same++
		} else {
			same = 0
		}
		// Half a second unchanged is settled, unless base says better.
		if (base == nil && same >= 10) || time.Now().After(deadline) {
			return h
		}
		last = h
	}
}

// goroutineDump is every goroutine's stack, grouped, for a failure message.
func goroutineDump() string {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 1)
	return b.String()
}

// leakRounds is how many rounds the tests run after the first;
// PORTCULLIS_LEAK_ROUNDS asks for more when hunting.
func leakRounds() int {
	if n, err := strconv.Atoi(os.Getenv("PORTCULLIS_LEAK_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 6
}

// The workload of many rounds leaves the process holding no more goroutines,
// descriptors and metric series than one round did, with either session
// store, and no series is named by an IdP or a path that a client made up. To hunt,
// PORTCULLIS_LEAK_ROUNDS=20 runs more rounds, and PORTCULLIS_LEAK_PROFILE=DIR
// writes heap profiles of every allocation after the first round and the
// last, for go tool pprof -base.
func TestLongRunningServeHoldsNoMore(t *testing.T) {
	if os.Getenv("PORTCULLIS_LEAK_PROFILE") != "" {
		runtime.MemProfileRate = 1 // every allocation, for a profile of small growth
	}
	for _, tc := range []struct {
		name  string
		redis bool
	}{{"cookie store", false}, {"redis store", true}} {
		t.Run(tc.name, func(t *testing.T) {
			s := startLeakStack(t, tc.redis)
			s.round(t, 0)
			base := s.settle(t, nil)
			t.Logf("after 1 round:   %s", base)
			if os.Getenv("PORTCULLIS_LEAK_PROFILE") != "" {
				writeHeapProfile(t, tc.name+"-1")
			}
			rounds := leakRounds()
			for i := 1; i <= rounds; i++ {
				s.round(t, i)
				if testing.Verbose() {
					t.Logf("after %d rounds: %s", i+1, s.holdings(t))
				}
			}
			got := s.settle(t, &base)
			t.Logf("after %d rounds: %s (settled)", rounds+1, got)
			if os.Getenv("PORTCULLIS_LEAK_PROFILE") != "" {
				writeHeapProfile(t, tc.name+"-"+strconv.Itoa(rounds+1))
			}
			if got.goroutines > base.goroutines || got.fds > base.fds {
				t.Errorf("after %d rounds the process holds more than after 1:\n  %s\n  %s\n%s", rounds+1, base, got, goroutineDump())
			}
			for series := range got.series {
				if !base.series[series] {
					t.Errorf("after %d rounds a series that 1 did not have: %s", rounds+1, series)
				}
			}
			for name, mf := range gather(t, s.handler()) {
				for _, m := range mf.GetMetric() {
					for _, lp := range m.GetLabel() {
						if strings.Contains(lp.GetValue(), "nosuch") {
							t.Errorf("%s{%s=%q}: a series named by what a client made up", name, lp.GetName(), lp.GetValue())
						}
					}
				}
			}

			// Once serve has returned, nothing of the proxy's runs or
			// stays connected: a process that embeds it (the tests, for
			// one) would keep it all after every Run.
			s.shutdown()
			after := s.settle(t, nil)
			t.Logf("after shutdown: %s", after)
			for _, peer := range []string{"upstream", "ldap", "redis", "proxy"} {
				if after.conns[peer] > 0 {
					t.Errorf("after shutdown, %d connections to %s are open", after.conns[peer], peer)
				}
			}
			if left := proxyGoroutines(); len(left) > 0 {
				t.Errorf("after shutdown, the proxy's goroutines run on:\n%s", strings.Join(left, "\n\n"))
			}
		})
	}
}

// proxyGoroutines are the stacks of the goroutines that run the proxy's
// code or the clients it uses, those the tests started aside.
func proxyGoroutines() []string {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	var found []string
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "_test.go:") {
			continue
		}
		if strings.Contains(g, "portcullis/proxy.") || strings.Contains(g, "portcullis/idp.") ||
			strings.Contains(g, "go-ldap") || strings.Contains(g, "go-redis") {
			found = append(found, g)
		}
	}
	return found
}

// writeHeapProfile writes the heap profile as NAME.pprof into the directory
// PORTCULLIS_LEAK_PROFILE names.
func writeHeapProfile(t *testing.T, name string) {
	t.Helper()
	runtime.GC()
	file := filepath.Join(os.Getenv("PORTCULLIS_LEAK_PROFILE"), strings.ReplaceAll(name, " ", "-")+".pprof")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
	t.Logf("heap profile: %s", file)
}

// liveHeap is the bytes of live heap objects, after two collections (the
// second frees what sync.Pools held until the first).
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// A login's state is remembered as used for the flow's lifetime (ten
// minutes), and the state a form or a query carries is a piece of the
// request it came in: remembered as it was cut, it kept the whole request
// alive with it. Junk answers at the SAML ACS, posted by anyone who started
// a login, each kept up to its form (512 KiB, a MiB before) for ten
// minutes.
func TestUsedLoginStatesKeepNoRequest(t *testing.T) {
	idpSrv := samlserver.Start(t, samlserver.Options{})
	h := newTestHandler(t, minimal+"    - id: corp\n      protocol: SAML\n      entity_id: "+idpSrv.EntityID()+
		"\n      x509_cert: "+base64.StdEncoding.EncodeToString(idpSrv.Certificate.Raw)+
		"\n      sso_url: "+idpSrv.SSOURL()+"\n")
	const posts, size = 16, 400 << 10 // within the ACS's form limit once encoded
	junk := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("<junk/>"), size/10))
	before := liveHeap()
	for range posts {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/.portcullis/login/corp", nil))
		loc, err := url.Parse(rec.Header().Get("Location"))
		if rec.Code != http.StatusFound || err != nil {
			t.Fatalf("start login: %d %v", rec.Code, err)
		}
		form := url.Values{"RelayState": {loc.Query().Get("RelayState")}, "SAMLResponse": {junk}}
		r := httptest.NewRequest("POST", "/.portcullis/saml/corp/acs", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for _, c := range rec.Result().Cookies() {
			r.AddCookie(c)
		}
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusForbidden {
			t.Fatalf("junk answer: %d, want 403", rec.Code)
		}
	}
	kept := int64(liveHeap()) - int64(before)
	runtime.KeepAlive(h) // what it remembers is what is measured
	t.Logf("%d junk answers of %d KiB: %d KiB more live heap", posts, size>>10, kept>>10)
	if kept > posts*size/4 {
		t.Errorf("%d junk answers of %d KiB left %d KiB more live heap, want the requests gone", posts, size>>10, kept>>10)
	}
}
