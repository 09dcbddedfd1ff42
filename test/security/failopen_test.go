package security

import (
	"net/http"
	"strings"
	"testing"
)

// Requests the proxy cannot make sense of are refused; they never reach the
// upstream without the checks a well-formed request would get.
func TestFailOpenMalformed(t *testing.T) {
	for _, tc := range []struct{ name, raw string }{
		{"bad escape in the path", "GET /app/%zz HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"broken IPv6 authority", "GET http://[::1/app HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"two ports", "GET http://{H}:1:2/app HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"query only", "GET ?x=1 HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"empty target", "GET  HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"double space before the target", "GET  /app HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"extra word in the request line", "GET /app HTTP/1.1 x\r\nHost: {H}\r\n\r\n"},
		{"unknown protocol version", "GET /app HTTP/1.7\r\nHost: {H}\r\n\r\n"},
		{"HTTP/0.9 request line", "GET /app\r\n\r\n"},
		{"lower-case protocol", "GET /app http/1.1\r\nHost: {H}\r\n\r\n"},
		{"NUL in the method", "G\x00ET /app HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"tab as separator", "GET\t/app\tHTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"no Host in HTTP/1.1", "GET /app HTTP/1.1\r\n\r\n"},
		{"two Host headers", "GET /app HTTP/1.1\r\nHost: {H}\r\nHost: evil.example\r\n\r\n"},
		{"NUL in Host", "GET /app HTTP/1.1\r\nHost: {H}\x00evil\r\n\r\n"},
		{"invalid UTF-8 in Host", "GET /app HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n"},
		{"invalid UTF-8 in the path", "GET /app/\xff\xfe HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"invalid UTF-8 in the query", "GET /app?x=\xff HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"invalid UTF-8 in a header", "GET /app HTTP/1.1\r\nHost: {H}\r\nAccept: \xff\xfe\r\n\r\n"},
		{"invalid UTF-8 in the cookie", "GET /app HTTP/1.1\r\nHost: {H}\r\nCookie: portcullis=\xff\xfe\r\n\r\n"},
		{"CONNECT to another port", "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n"},
		{"CONNECT with a path", "CONNECT /app HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"header without colon", "GET /app HTTP/1.1\r\nHost: {H}\r\nX-Broken\r\n\r\n"},
		{"header name with a space", "GET /app HTTP/1.1\r\nHost: {H}\r\nX Email: a\r\n\r\n"},
		{"absolute form with userinfo", "GET http://user:pw@{H}/app HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"absolute form with an unknown scheme", "GET gopher://{H}/app HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"lone CR in the request line", "GET /app\rX HTTP/1.1\r\nHost: {H}\r\n\r\n"},
	} {
		t.Run(tc.name+" never reaches the upstream unchecked", func(t *testing.T) {
			before := suite.upstream.count()
			r := do(t, rq{raw: strings.ReplaceAll(tc.raw, "{H}", suite.proxy)})
			if r.Err == nil && r.Status < 300 {
				t.Errorf("status %d, want a refusal", r.Status)
			}
			for _, s := range suite.upstream.since(before) {
				if p, _ := s.Path(); strings.HasPrefix(p, "/app") {
					t.Errorf("reached the upstream: %q", s.Raw)
				}
			}
		})
	}
}

// An upstream that dies mid-answer, a failing identity pass and an IdP that
// is away never end in an answer that looks complete, or in a request at the
// upstream without identity checks.
func TestFailOpenFailures(t *testing.T) {
	bob := sessionFor(t, "bob")
	for _, tc := range []struct{ name, target, cookie string }{
		{"authenticated", "/app/abort", bob}, {"bypass", "/public/abort", ""},
	} {
		t.Run("upstream aborting mid-answer gives a truncated answer/"+tc.name, func(t *testing.T) {
			h := []string{}
			if tc.cookie != "" {
				h = append(h, "Cookie: "+tc.cookie)
			}
			r := do(t, rq{target: tc.target, headers: h})
			if len(r.Upstream) != 1 {
				t.Fatalf("did not reach the upstream: %s", fmtReply(r))
			}
			if r.Err == nil {
				t.Errorf("answer %d with %d bytes looks complete; want it cut off", r.Status, len(r.Body))
			}
			healthy(t)
		})
	}
	t.Run("abort path without a session is refused before the upstream", func(t *testing.T) {
		r := do(t, rq{target: "/app/abort", headers: []string{"Accept: application/json"}})
		refusedCleanly(t, r, "unauthenticated abort path")
		if r.Status != http.StatusUnauthorized {
			t.Errorf("status %d, want 401", r.Status)
		}
	})
	t.Run("identity with a header break is never forwarded", func(t *testing.T) {
		b := newBrowser(t)
		s := b.get(b.authorize(b.start("alpha", "/"), "mallory", "").String())
		if s.Status != http.StatusFound {
			// Refusing the login is fine too.
			refusedLogin(t, b, s)
			return
		}
		r := do(t, rq{target: "/app/x", headers: []string{"Cookie: " + sessionOf(b.cookieHeader()), "Accept: application/json"}})
		refusedCleanly(t, r, "mallory's request")
		if r.Status < 500 {
			t.Errorf("status %d, want 5xx", r.Status)
		}
		// A bypassed path is still served: it carries no identity.
		p := do(t, rq{target: "/public/x", headers: []string{"Cookie: " + sessionOf(b.cookieHeader())}})
		checkIdentity(t, p, nil)
	})
	t.Run("unreachable IdP: login answers 503 and sets no cookie", func(t *testing.T) {
		r := do(t, rq{target: "/.portcullis/login/down?rd=/x", headers: []string{"Accept: text/html"}})
		if r.Status != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503", r.Status)
		}
		if len(r.Header.Values("Set-Cookie")) > 0 {
			t.Errorf("set cookies %q", r.Header.Values("Set-Cookie"))
		}
	})
	t.Run("unreachable IdP: callback is refused", func(t *testing.T) {
		r := do(t, rq{target: "/.portcullis/oidc/down/callback?state=AAAAAAAAAAAAAAAAAAAAAA&code=x"})
		if r.Status < 400 || r.Status == 500 {
			t.Errorf("status %d, want a 4xx or 503", r.Status)
		}
	})
	t.Run("unreachable IdP does not affect existing sessions", func(t *testing.T) {
		r := do(t, rq{target: "/app/x", headers: []string{"Cookie: " + bob}})
		checkIdentity(t, r, map[string]string{"X-Email": "bob@example.com", "X-Groups": "user", "X-Portcullis-Assertion": "jwt"})
	})
}

// A request that looks like a load balancer's health check is an anonymous
// request like any other: neither a checker's User-Agent nor a health or
// metrics path lets it past the rules on the public listener (health and
// metrics are the admin listener's). oauth2-proxy answered any path as a
// passed health check when the User-Agent was --ping-user-agent's, which
// nginx auth_request took for a signed-in user (GHSA-5hvv-m4w4-gf6v,
// CVE-2026-34457).
func TestHealthCheckRequestsAreNotExempt(t *testing.T) {
	agents := []string{"kube-probe/1.31", "GoogleHC/1.0", "ELB-HealthChecker/2.0", "Consul Health Check", "Go-http-client/1.1"}
	targets := []string{"/app/x", "/admin/x", "/ping", "/healthz", "/readyz", "/metrics", "/app/x?healthz", "/.portcullis/healthz", "/.portcullis/ping"}
	for _, agent := range agents {
		for _, target := range targets {
			t.Run(agent+" "+target, func(t *testing.T) {
				r := do(t, rq{target: target, headers: []string{"User-Agent: " + agent, "Accept: application/json"}})
				refusedCleanly(t, r, agent+" "+target)
				if r.Status != http.StatusUnauthorized && r.Status != http.StatusNotFound {
					t.Errorf("status %d, want 401 (or 404 under the auth prefix)", r.Status)
				}
			})
		}
	}
}
