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
	cfg, err := ParseConfig([]byte(strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1)), os.Getenv)
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

	// As an OIDC login leaves it: the claims of the ID token and userinfo.
	p := idp.Profile{IdP: "company", Sub: "alice@example.com", Email: "alice@example.com", EmailVerified: true, Groups: []string{"cvat-admins", "annotators"},
		Claims: map[string]any{
			"iss": "https://idp.example.com", "sub": "alice@example.com", "aud": "portcullis", "azp": "portcullis",
			"exp": 1.7649e+09, "iat": 1.7649e+09, "auth_time": 1.7649e+09, "at_hash": "mQ2hPzH0Jv1uVqO4Gq8nYg", "sid": "0c3e6b7d-5a14-4f0e-9d5e-1d3c2a7b9f10",
			"email": "alice@example.com", "email_verified": true, "name": "Alice Example", "given_name": "Alice", "family_name": "Example",
			"preferred_username": "alice", "groups": []any{"cvat-admins", "annotators"},
		}}
	if p.Roles, err = h.roles.Map(&p); err != nil {
		b.Fatal(err)
	}
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
