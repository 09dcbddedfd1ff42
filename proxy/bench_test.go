package proxy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/jsonlog"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/rules"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// The benchmarks of the per-request pipeline (issue 6): each step on its own,
// then the whole ServeHTTP against an in-memory upstream, next to a bare
// httputil.ReverseProxy against the same upstream, so that
//
//	go test -run '^$' -bench . -benchmem ./proxy/
//
// gives ns/op and allocs/op of each step and the ratio of portcullis to bare.
// The whole-request benchmarks log their access lines as `portcullis serve`
// does by default (JSON at info, through jsonlog), to io.Discard: the cost
// of formatting a line is counted, the cost of the write(2) is not.

// benchBody is the upstream's answer in the load run: 512 bytes.
var benchBody = bytes.Repeat([]byte("x"), 512)

// memUpstream answers every request at once with benchBody, without a
// network, so the benchmarks time the proxies and not the loopback.
type memUpstream struct{}

func (memUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return &http.Response{
		StatusCode:    http.StatusOK,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"text/plain"}, "Content-Length": {"512"}},
		Body:          io.NopCloser(bytes.NewReader(benchBody)),
		ContentLength: int64(len(benchBody)),
		Request:       r,
	}, nil
}

// discardWriter is a ResponseWriter that keeps nothing but its header map,
// reused between iterations as net/http reuses a connection's.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) reset()                      { clear(w.h) }

// benchProxy is a Handler for the test config in front of memUpstream,
// logging as `portcullis serve` does by default, and the Cookie header of a
// session made as a login makes it.
func benchProxy(b *testing.B) (*Handler, string) {
	b.Helper()
	h := benchHandler(b, strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1))

	// As an OIDC login leaves it: the claims of the ID token and userinfo.
	p := idp.Profile{IdP: "company", Sub: "alice@example.com", Email: "alice@example.com", EmailVerified: true, Groups: []string{"cvat-admins", "annotators"},
		Claims: map[string]any{
			"iss": "https://idp.example.com", "sub": "alice@example.com", "aud": "portcullis", "azp": "portcullis",
			"exp": 1.7649e+09, "iat": 1.7649e+09, "auth_time": 1.7649e+09, "at_hash": "mQ2hPzH0Jv1uVqO4Gq8nYg", "sid": "0c3e6b7d-5a14-4f0e-9d5e-1d3c2a7b9f10",
			"email": "alice@example.com", "email_verified": true, "name": "Alice Example", "given_name": "Alice", "family_name": "Example",
			"preferred_username": "alice", "groups": []any{"cvat-admins", "annotators"},
		}}
	roles, err := h.roles.Map(&p)
	if err != nil {
		b.Fatal(err)
	}
	p.Roles = roles
	s := session.New(p, idp.Tokens{}, h.cookies)
	// The login works out the session's identity from the IdP's profile
	// (establish); its requests bring the copy their cookie decodes to.
	if refused := h.unpassable(s.ID, &p); refused != nil {
		b.Fatal(refused)
	}
	rec := httptest.NewRecorder()
	if err := h.sessions.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
		b.Fatal(err)
	}
	var parts []string
	for _, c := range rec.Result().Cookies() {
		parts = append(parts, c.Name+"="+c.Value)
	}
	// A browser sends the application's own cookies too.
	parts = append(parts, "csrftoken=abcdef0123456789", "sessionid=0123456789abcdef")
	return h, strings.Join(parts, "; ")
}

// benchRequest is a request as net/http hands it to a handler: a browser's
// usual headers plus the given ones.
type benchRequest struct {
	method, target string
	header         http.Header
}

func newBenchRequest(method, target string, extra ...string) *benchRequest {
	h := http.Header{
		"User-Agent":      {"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"},
		"Accept":          {"application/json, text/plain, */*"},
		"Accept-Encoding": {"gzip, deflate, br"},
		"Accept-Language": {"en-US,en;q=0.9"},
		"Referer":         {"https://cvat.example.com/tasks"},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		h.Set(extra[i], extra[i+1])
	}
	return &benchRequest{method: method, target: target, header: h}
}

// make builds a fresh request each iteration, since the pipeline changes its
// headers; both proxies pay for it alike.
func (br *benchRequest) make() *http.Request {
	u, _ := url.ParseRequestURI(br.target)
	r := &http.Request{
		Method:     br.method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     br.header.Clone(),
		Body:       http.NoBody,
		Host:       "cvat.example.com",
		RemoteAddr: "203.0.113.7:40000",
		RequestURI: br.target,
	}
	return r.WithContext(context.Background())
}

// BenchmarkPipeline times each step of the pipeline on its own.
func BenchmarkPipeline(b *testing.B) {
	h, cookie := benchProxy(b)
	br := newBenchRequest("GET", "/tasks?page=2", "Cookie", cookie, "X-Email", "mallory@example.com")

	b.Run("strip", func(b *testing.B) {
		r := br.make()
		b.ReportAllocs()
		for b.Loop() {
			h.pass.Strip(r.Header)
			stripUpgrade(r.Header)
			dropConnectionListed(r.Header)
		}
	})
	b.Run("clean_path", func(b *testing.B) {
		r := br.make()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := rules.CleanPath(r.URL.EscapedPath()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("match", func(b *testing.B) {
		r := br.make()
		b.ReportAllocs()
		for b.Loop() {
			req := rules.NewRequest(r, "/tasks", h.clientAddr(r))
			if rule := h.rules.Match(req); rule.Action != rules.Authenticate {
				b.Fatalf("matched %s (%v), want the default authenticate", rule.Name, rule.Action)
			}
		}
	})
	b.Run("open_session_cached", func(b *testing.B) {
		r := br.make()
		b.ReportAllocs()
		for b.Loop() {
			s, err := h.sessions.Load(r)
			if err != nil || s == nil {
				b.Fatalf("session did not open: %v", err)
			}
		}
	})
	b.Run("authorize_session", func(b *testing.B) {
		// Per request: the roles this configuration mapped the session to,
		// remembered (authz.go).
		s, err := h.sessions.Load(br.make())
		if err != nil || s == nil {
			b.Fatalf("session did not open: %v", err)
		}
		b.ReportAllocs()
		for b.Loop() {
			c := *s // as each request's own copy
			if h.authorize(&c) == nil {
				b.Fatal("session refused")
			}
		}
	})
	b.Run("map_roles_at_login", func(b *testing.B) {
		// Not per request: roles are mapped once per session under each
		// configuration (authorize_session).
		p := idp.Profile{IdP: "company", Sub: "alice@example.com", Email: "alice@example.com", EmailVerified: true, Groups: []string{"cvat-admins", "annotators"}}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := h.roles.Map(&p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("inject", func(b *testing.B) {
		s, err := h.sessions.Load(br.make())
		if err != nil || s == nil {
			b.Fatalf("session did not open: %v", err)
		}
		out := http.Header{}
		b.ReportAllocs()
		for b.Loop() {
			identity, err := h.pass.For(s.ID, &s.Profile)
			if err != nil {
				b.Fatal(err)
			}
			identity.Set(out)
		}
	})
	b.Run("access_line", func(b *testing.B) {
		r := br.make()
		rec := &statusRecorder{ResponseWriter: &discardWriter{h: http.Header{}}, code: http.StatusOK, bytes: 512}
		o := outcome{rule: h.rules.Default(), idp: "company", user: "alice@example.com", client: "203.0.113.7"}
		b.ReportAllocs()
		for b.Loop() {
			h.logRequest(r, "0123456789abcdef0123456789abcdef", decisionAuthenticated, rec, &o, time.Now(), 1234567*time.Nanosecond)
		}
	})
	b.Run("client_addr", func(b *testing.B) {
		r := br.make()
		b.ReportAllocs()
		for b.Loop() {
			if a := h.clientAddr(r); a != netip.MustParseAddr("203.0.113.7") {
				b.Fatal(a)
			}
		}
	})
}

// BenchmarkServeHTTP times whole requests through portcullis, and through a
// bare ReverseProxy against the same in-memory upstream: the ratio of their
// ns/op is the pipeline's cost.
func BenchmarkServeHTTP(b *testing.B) {
	h, cookie := benchProxy(b)
	bare := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(h.upstreamURL)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport:  memUpstream{},
		BufferPool: bufferPool{},
	}
	cases := []struct {
		name    string
		handler http.Handler
		req     *benchRequest
		want    string // the decision counted, for portcullis
	}{
		{"authenticated", h, newBenchRequest("GET", "/tasks?page=2", "Cookie", cookie), decisionAuthenticated},
		{"bypass", h, newBenchRequest("GET", "/api/tasks?page=2", "Authorization", "Basic YWxpY2U6c2VjcmV0"), decisionBypass},
		{"bare", bare, newBenchRequest("GET", "/tasks?page=2", "Cookie", cookie), ""},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			w := &discardWriter{h: http.Header{}}
			before := requestsCounted(h, c.want)
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				w.reset()
				c.handler.ServeHTTP(w, c.req.make())
				n++
			}
			if c.want != "" {
				if got := requestsCounted(h, c.want) - before; got != float64(n) {
					w.reset()
					rr := httptest.NewRecorder()
					c.handler.ServeHTTP(rr, c.req.make())
					b.Log(rr.Code, rr.Header(), rr.Body.String())
					b.Fatalf("%v requests counted as %s, want %d", got, c.want, n)
				}
			}
		})
	}
}

// requestsCounted is portcullis_requests_total{decision, code="200"}.
func requestsCounted(h *Handler, decision string) float64 {
	if decision == "" {
		return 0
	}
	mfs, _ := h.metrics.registry.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "portcullis_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["decision"] == decision && labels["code"] == strconv.Itoa(http.StatusOK) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// sessionBenchConfig is testConfig with an IdP of each protocol a session
// comes from (OIDC's company, SAML's corp, LDAP's directory, none of them
// reached here) and a rule that takes LDAP Basic credentials instead of a
// session.
var sessionBenchConfig = strings.NewReplacer(
	"UPSTREAM", "http://127.0.0.1:1",
	"      client_id: portcullis\n", `      client_id: portcullis
    - id: corp
      protocol: SAML
      entity_id: https://sso.example.com/metadata
      metadata_url: http://127.0.0.1:1/metadata
      attribute_mapping: {groups: groups}
    - id: directory
      protocol: LDAP
      url: ldap://127.0.0.1:1
      bind_dn: cn=svc,dc=example,dc=com
      bind_password: x
      user_search: {base_dn: "ou=people,dc=example,dc=com", filter: "(uid={username})"}
`,
	"rules:\n  - name: cvat-api-credentials", `rules:
  - name: legacy-basic
    path_prefix: /basic/
    action: authenticate
    basic_auth: directory
  - name: cvat-api-credentials`,
).Replace(testConfig)

// benchGroups are n groups named by their DN, as a directory or Entra ID
// (through its display names) gives a user with many.
func benchGroups(n int) []string {
	groups := []string{"cvat-admins", "annotators"}
	for i := len(groups); i < n; i++ {
		groups = append(groups, "cn=project-"+strconv.Itoa(i)+"-annotators,ou=groups,dc=example,dc=com")
	}
	return groups[:n]
}

// benchLogins are the profiles of one user as each kind of login makes
// them, through the provider's own code (idp.OIDCProfile, SAMLProfile,
// LDAPProfile): OIDC claims as JSON decodes them, SAML's and LDAP's
// multi-valued attributes as []string, which a session's cookie decodes to
// []any.
func benchLogins(b *testing.B, h *Handler, groups int) map[string]*idp.Profile {
	b.Helper()
	gs := benchGroups(groups)
	anyGroups := make([]any, len(gs))
	for i, g := range gs {
		anyGroups[i] = g
	}
	oidc, err := idp.OIDCProfile(h.providers["company"].cfg, map[string]any{
		"iss": "https://idp.example.com", "sub": "alice@example.com", "aud": "portcullis", "azp": "portcullis",
		"exp": 1.7649e+09, "iat": 1.7649e+09, "auth_time": 1.7649e+09, "at_hash": "mQ2hPzH0Jv1uVqO4Gq8nYg", "sid": "0c3e6b7d-5a14-4f0e-9d5e-1d3c2a7b9f10",
		"email": "alice@example.com", "email_verified": true, "name": "Alice Example", "given_name": "Alice", "family_name": "Example",
		"preferred_username": "alice", "groups": anyGroups,
	})
	if err != nil {
		b.Fatal(err)
	}
	saml, err := idp.SAMLProfile(h.providers["corp"].cfg, map[string][]string{
		"uid": {"alice"}, "email": {"alice@example.com"}, "cn": {"Alice Example"}, "givenName": {"Alice"}, "sn": {"Example"},
		"eduPersonAffiliation": {"member", "staff"}, "groups": gs,
	}, "alice")
	if err != nil {
		b.Fatal(err)
	}
	ldap := idp.LDAPProfile(h.providers["directory"].cfg, "uid=alice,ou=people,dc=example,dc=com", map[string][]string{
		"uid": {"alice"}, "mail": {"alice@example.com"}, "cn": {"Alice Example"}, "givenName": {"Alice"}, "sn": {"Example"},
		"objectClass": {"top", "person", "organizationalPerson", "inetOrgPerson"}, "memberOf": gs,
	})
	return map[string]*idp.Profile{"oidc": oidc, "saml": saml, "ldap": ldap}
}

// benchHandler is a Handler for y in front of memUpstream, logging as
// `portcullis serve` does by default.
func benchHandler(b *testing.B, y string) *Handler {
	b.Helper()
	cfg, err := ParseConfig([]byte(y), os.Getenv)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	h, err := New(ctx, cfg, slog.New(jsonlog.New(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		b.Fatal(err)
	}
	h.upstream.Transport = memUpstream{}
	return h
}

// benchLogin logs p in at h as a login's callback does (establish: roles,
// identity headers, the session saved) and returns the Cookie header the
// browser then sends, the application's own cookies with it.
func benchLogin(b *testing.B, h *Handler, p *idp.Profile) string {
	b.Helper()
	rec := httptest.NewRecorder()
	h.establish(rec, httptest.NewRequest("GET", "https://cvat.example.com/.portcullis/oidc/company/callback", nil), new(*p), &idp.Tokens{}, "/tasks", h.now())
	if rec.Code != http.StatusFound {
		b.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	return browserCookies(rec.Result().Cookies())
}

// browserCookies is the Cookie header of a browser that was given set.
func browserCookies(set []*http.Cookie) string {
	parts := []string{"csrftoken=abcdef0123456789", "sessionid=0123456789abcdef"}
	for _, c := range set {
		if c.MaxAge >= 0 && c.Value != "" {
			parts = append(parts, c.Name+"="+c.Value)
		}
	}
	return strings.Join(parts, "; ")
}

// serveBench times requests of br through h, all of which must be counted
// as decision with a 200.
func serveBench(b *testing.B, h *Handler, br *benchRequest, decision string) {
	w := &discardWriter{h: http.Header{}}
	w.reset()
	h.ServeHTTP(w, br.make()) // the first request after the login, not timed
	before := requestsCounted(h, decision)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		w.reset()
		h.ServeHTTP(w, br.make())
		n++
	}
	if got := requestsCounted(h, decision) - before; got != float64(n) {
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, br.make())
		b.Fatalf("%v requests counted as %s, want %d: %d %s", got, decision, n, rr.Code, rr.Body)
	}
}

// BenchmarkSessions times the authenticated requests of sessions made the
// ways real ones are, which BenchmarkServeHTTP's one OIDC login does not
// cover: a login at each kind of IdP, then the requests its cookie brings;
// the Redis store, on the replica that saw the login and on one that did
// not; a cookie re-sealed (Touch); a Handler rebuilt by a reload; profiles
// of 300 and 1,000 groups; the signed assertion; and LDAP Basic
// credentials, which have no session. Each times the requests after the
// first.
func BenchmarkSessions(b *testing.B) {
	withJWT := strings.Replace(sessionBenchConfig, "  strip_headers:", "  jwt: {header: X-Portcullis-Assertion}\n  strip_headers:", 1)
	for _, kind := range []string{"oidc", "saml", "ldap"} {
		for _, tc := range []struct {
			name   string
			y      string
			groups int
		}{{"", sessionBenchConfig, 2}, {"_jwt", withJWT, 2}, {"_300_groups", sessionBenchConfig, 300}} {
			b.Run("cookie/"+kind+tc.name, func(b *testing.B) {
				h := benchHandler(b, tc.y)
				cookie := benchLogin(b, h, benchLogins(b, h, tc.groups)[kind])
				serveBench(b, h, newBenchRequest("GET", "/tasks?page=2", "Cookie", cookie), decisionAuthenticated)
			})
		}
	}
	b.Run("cookie/oidc_resealed", func(b *testing.B) {
		// The session's cookie sealed again for its idle timeout: the
		// requests after it bring a copy decoded afresh.
		h := benchHandler(b, strings.Replace(sessionBenchConfig, "session:\n", "session:\n  idle_timeout: 1h\n", 1))
		login := time.Now()
		h.cookies.Now = func() time.Time { return login }
		h.sessions = mustCookieStore(b, h.cookies)
		cookie := benchLogin(b, h, benchLogins(b, h, 2)["oidc"])
		later := login.Add(10 * time.Minute)
		h.cookies.Now = func() time.Time { return later }
		h.sessions = mustCookieStore(b, h.cookies)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, newBenchRequest("GET", "/tasks", "Cookie", cookie).make())
		if len(rec.Result().Cookies()) == 0 {
			b.Fatal("the session was not sealed again")
		}
		serveBench(b, h, newBenchRequest("GET", "/tasks?page=2", "Cookie", browserCookies(rec.Result().Cookies())), decisionAuthenticated)
	})
	b.Run("cookie/oidc_reloaded", func(b *testing.B) {
		// A reload builds a new Handler, whose remembered roles and
		// identities start empty.
		cookie := benchLogin(b, benchHandler(b, sessionBenchConfig), benchLogins(b, benchHandler(b, sessionBenchConfig), 2)["oidc"])
		serveBench(b, benchHandler(b, sessionBenchConfig), newBenchRequest("GET", "/tasks?page=2", "Cookie", cookie), decisionAuthenticated)
	})
	redis := redisserver.Start(b).URL
	for _, tc := range []struct {
		name    string
		groups  int
		replica bool
	}{{"oidc", 2, false}, {"oidc_replica", 2, true}, {"ldap_1000_groups", 1000, false}} {
		b.Run("redis/"+tc.name, func(b *testing.B) {
			y := strings.Replace(sessionBenchConfig, "session:\n", "session:\n  store: redis\n  redis: {url: \""+redis+"\"}\n", 1)
			h := benchHandler(b, y)
			kind := "oidc"
			if strings.HasPrefix(tc.name, "ldap") {
				kind = "ldap"
			}
			cookie := benchLogin(b, h, benchLogins(b, h, tc.groups)[kind])
			if tc.replica {
				h = benchHandler(b, y) // another replica, which never saw the login
			}
			serveBench(b, h, newBenchRequest("GET", "/tasks?page=2", "Cookie", cookie), decisionAuthenticated)
		})
	}
	for _, tc := range []struct{ name, y string }{{"ldap_basic", sessionBenchConfig}, {"ldap_basic_jwt", withJWT}} {
		b.Run(tc.name, func(b *testing.B) {
			// An API client's Basic credentials, checked at the directory
			// once (basicIdentity's miss: roles, identity, cached), then
			// taken from the cache for a minute.
			h := benchHandler(b, tc.y)
			prof := new(*benchLogins(b, h, 2)["ldap"])
			k := h.passwords.cache.key("directory", "alice", "secret")
			if decision := h.basicRoles(httptest.NewRecorder(), "directory", basicIdentityKey(k), prof, nil); decision != "" {
				b.Fatal(decision)
			}
			h.passwords.cache.put(k, prof, h.now())
			serveBench(b, h, newBenchRequest("GET", "/basic/tasks", "Authorization", "Basic YWxpY2U6c2VjcmV0"), decisionAuthenticated)
		})
	}
}

func mustCookieStore(b *testing.B, o session.Options) *session.CookieStore {
	st, err := session.NewCookieStore(o)
	if err != nil {
		b.Fatal(err)
	}
	return st
}
