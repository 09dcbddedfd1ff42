package security

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// Method-override headers make some frameworks run another method than the
// one the proxy's rules saw; they never reach the upstream.
func TestMethodOverride(t *testing.T) {
	bob := sessionFor(t, "bob")
	names := []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "x_http_method_override", "X.HTTP.Method", "X-HTTP-METHOD-OVERRIDE",
		"X-Forwarded-Method", "x_forwarded_method", "X-Original-Method"} // what forward-auth checks behind the upstream judge
	for _, ctx := range []struct{ name, target, cookie string }{
		{"bypass", "/public/x", ""}, {"authenticated", "/app/x", bob},
	} {
		for _, n := range names {
			for _, method := range []string{"GET", "POST"} {
				t.Run(fmt.Sprintf("%s/%s %s: DELETE is removed", ctx.name, method, n), func(t *testing.T) {
					h := []string{n + ": DELETE"}
					if ctx.cookie != "" {
						h = append(h, "Cookie: "+ctx.cookie)
					}
					body := ""
					if method == "POST" {
						body = "_method=DELETE"
						h = append(h, "Content-Type: application/x-www-form-urlencoded")
					}
					r := do(t, rq{method: method, target: ctx.target, headers: h, body: body})
					if r.Status != 200 || len(r.Upstream) != 1 {
						t.Fatalf("got %s", fmtReply(r))
					}
					s := r.Upstream[0]
					if s.Method != method {
						t.Errorf("upstream method %q, want %q", s.Method, method)
					}
					for _, o := range names {
						if got := s.Values(o); len(got) > 0 {
							t.Errorf("upstream got %s = %q", o, got)
						}
					}
				})
			}
		}
	}
}

// A method with a lower-case letter is refused before the rules and the
// proxy's endpoints: an upstream that upper-cases methods (Django) would run
// it as a method the rules never saw.
func TestLowerCaseMethod(t *testing.T) {
	bob := sessionFor(t, "bob")
	for _, method := range []string{"get", "delete", "Post", "pUT"} {
		for _, target := range []string{"/public/x", "/app/x", "/blocked/x", "/.portcullis/userinfo"} {
			t.Run(method+" "+target, func(t *testing.T) {
				r := do(t, rq{method: method, target: target, headers: []string{"Cookie: " + bob, "Accept: application/json"}})
				refusedCleanly(t, r, method)
				if r.Status != 400 {
					t.Errorf("status %d, want 400", r.Status)
				}
			})
		}
	}
}

// CONNECT would ask the upstream for a tunnel and TRACE would echo cookies
// back to a script: both are refused with 405 on every path, bypassed ones
// included, in origin form and (CONNECT) authority form.
func TestConnectAndTraceAreRefused(t *testing.T) {
	bob := sessionFor(t, "bob")
	for _, tc := range []struct{ method, target string }{
		{"CONNECT", "/public/x"}, {"CONNECT", "/app/x"}, {"CONNECT", "upstream.internal:443"},
		{"TRACE", "/public/x"}, {"TRACE", "/app/x"},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			r := do(t, rq{method: tc.method, target: tc.target, headers: []string{"Cookie: " + bob, "Accept: application/json"}})
			refusedCleanly(t, r, tc.method)
			if r.Status != 405 || r.Header.Get("Allow") == "" {
				t.Errorf("status %d with Allow %q, want 405 with an Allow header", r.Status, r.Header.Get("Allow"))
			}
		})
	}
}

// smuggled is a request hidden in another's body; it must never reach the
// upstream as a request of its own (it asks for admin without a session).
func smuggled(probe string) string {
	return "GET /admin/secret HTTP/1.1\r\nHost: x\r\nX-Probe: " + probe + "\r\nAccept: application/json\r\n\r\n"
}

// Framing that two HTTP parsers can read differently: the proxy must either
// refuse it or re-frame it so that the upstream sees one request.
func TestSmuggling(t *testing.T) {
	// Each case's probe, looked for again at the end: a smuggled request
	// that a loaded machine delivered after its case's short wait.
	probes := map[string]string{}
	t.Cleanup(func() {
		time.Sleep(500 * time.Millisecond)
		for name, smug := range probes {
			if got := suite.upstream.withProbe(smug); len(got) > 0 {
				t.Errorf("%s: the smuggled request reached the upstream late:\n%s", name, got[0].Raw)
			}
		}
	})
	for _, tc := range []struct {
		name    string
		headers []string
		body    func(smug string) string
	}{
		{"CL.TE: Content-Length then chunked", []string{"Content-Length: 5", "Transfer-Encoding: chunked"}, chunkedThen},
		{"TE.CL: chunked then Content-Length", []string{"Transfer-Encoding: chunked", "Content-Length: 3"}, chunkedThen},
		{"TE.CL: smuggled inside the chunk", []string{"Transfer-Encoding: chunked", "Content-Length: 4"}, chunkHolding},
		{"obfuscated TE: xchunked", []string{"Content-Length: 5", "Transfer-Encoding: xchunked"}, chunkedThen},
		{"obfuscated TE: leading space", []string{"Content-Length: 5", "Transfer-Encoding:  chunked"}, chunkedThen},
		{"obfuscated TE: tab", []string{"Content-Length: 5", "Transfer-Encoding:\tchunked"}, chunkedThen},
		{"obfuscated TE: trailing tab", []string{"Content-Length: 5", "Transfer-Encoding: chunked\t"}, chunkedThen},
		{"obfuscated TE: chunked, identity", []string{"Content-Length: 5", "Transfer-Encoding: chunked, identity"}, chunkedThen},
		{"obfuscated TE: identity, chunked", []string{"Content-Length: 5", "Transfer-Encoding: identity, chunked"}, chunkedThen},
		{"obfuscated TE: upper case", []string{"Content-Length: 5", "Transfer-Encoding: CHUNKED"}, chunkedThen},
		{"obfuscated TE: quoted", []string{"Content-Length: 5", `Transfer-Encoding: "chunked"`}, chunkedThen},
		{"obfuscated TE: two headers", []string{"Transfer-Encoding: chunked", "Transfer-Encoding: identity"}, chunkedThen},
		{"obfuscated TE: underscore name", []string{"Content-Length: 5", "Transfer_Encoding: chunked"}, chunkedThen},
		{"obfuscated TE: space before colon", []string{"Content-Length: 5", "Transfer-Encoding : chunked"}, chunkedThen},
		{"obfuscated TE: vertical tab", []string{"Content-Length: 5", "Transfer-Encoding:\vchunked"}, chunkedThen},
		{"obfuscated TE: folded", []string{"Content-Length: 5", "Transfer-Encoding:", " chunked"}, chunkedThen},
		{"two different Content-Lengths", []string{"Content-Length: 5", "Content-Length: 0"}, chunkedThen},
		{"Content-Length list", []string{"Content-Length: 5, 0"}, chunkedThen},
		{"signed Content-Length", []string{"Content-Length: +5"}, chunkedThen},
		{"hex Content-Length", []string{"Content-Length: 0x5"}, chunkedThen},
		{"negative Content-Length", []string{"Content-Length: -1"}, chunkedThen},
		{"chunk size overflow", []string{"Transfer-Encoding: chunked"}, func(s string) string { return "fffffffffffffffff1\r\nabc\r\n0\r\n\r\n" + s }},
		{"chunk extension hiding the size", []string{"Transfer-Encoding: chunked"}, func(s string) string { return "0;ext=\"\r\n\"\r\n\r\n" + s }},
		{"bare LF chunk framing", []string{"Transfer-Encoding: chunked"}, func(s string) string { return "3\nabc\n0\n\n" + s }},
		{"body on a GET", []string{"Content-Length: 0"}, func(s string) string { return s }},
	} {
		for _, target := range []string{"/public/upload", "/.portcullis/logout"} {
			t.Run(tc.name+"/"+target, func(t *testing.T) {
				smug := newProbe()
				probes[t.Name()] = smug
				r := do(t, rq{method: "POST", target: target, headers: append([]string{"Connection: keep-alive"}, tc.headers...), body: tc.body(smuggled(smug))})
				time.Sleep(20 * time.Millisecond)
				if got := suite.upstream.withProbe(smug); len(got) > 0 {
					t.Fatalf("the smuggled request reached the upstream:\n%s", got[0].Raw)
				}
				for _, s := range r.Upstream {
					if !strings.HasPrefix(s.Target, "/public/") {
						t.Errorf("upstream got %s %s", s.Method, s.Target)
					}
				}
			})
		}
	}
}

func chunkedThen(smug string) string  { return "0\r\n\r\n" + smug }
func chunkHolding(smug string) string { return fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smug), smug) }

// Requests pipelined on one connection are each checked on their own: the
// first one's decision never carries over to the next.
func TestSmugglingPipelined(t *testing.T) {
	bob := sessionFor(t, "bob")
	for _, tc := range []struct {
		name        string
		first       string
		secondOK    bool
		firstHeader string
	}{
		{"bypassed request then admin", "/public/x", false, ""},
		{"credentials bypass then admin", "/api/x", false, "Authorization: Bearer t"},
		{"user's request then admin without a cookie", "/app/x", false, "Cookie: " + bob},
		{"login endpoint then admin", "/.portcullis/login?rd=/admin", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, "")
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			p1, p2 := newProbe(), newProbe()
			first := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nX-Probe: %s\r\n", tc.first, suite.proxy, p1)
			if tc.firstHeader != "" {
				first += tc.firstHeader + "\r\n"
			}
			first += "\r\n"
			second := fmt.Sprintf("GET /admin/secret HTTP/1.1\r\nHost: %s\r\nX-Probe: %s\r\nAccept: application/json\r\nConnection: close\r\n\r\n", suite.proxy, p2)
			io.WriteString(c, first+second)
			br := bufio.NewReader(c)
			r1 := readReply(br, "GET")
			r2 := readReply(br, "GET")
			if r1.Err != nil {
				t.Fatalf("first answer: %v", r1.Err)
			}
			if r2.Err == nil && r2.Status != 401 {
				t.Errorf("second (admin, no session) answered %d, want 401", r2.Status)
			}
			if got := suite.upstream.withProbe(p2); len(got) > 0 {
				t.Errorf("the pipelined admin request reached the upstream:\n%s", got[0].Raw)
			}
		})
	}
}

// An h2c upgrade would let the client speak HTTP/2 straight to the upstream,
// past the proxy's per-request checks: it never gets a 101. (The suite's
// upstream answers 101 to any Upgrade header it sees.)
func TestSmugglingUpgrade(t *testing.T) {
	bob := sessionFor(t, "bob")
	for _, target := range []struct{ name, path, cookie string }{
		{"bypass", "/public/x", ""}, {"credentials bypass", "/api/x", ""}, {"authenticated", "/app/x", bob},
	} {
		for _, hs := range [][]string{
			{"Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"},
			{"Upgrade: h2c", "Connection: Upgrade"},
			{"Upgrade: H2C", "Connection: upgrade"},
			{"Upgrade: h2c, websocket", "Connection: Upgrade"},
			{"Upgrade: websocket, h2c", "Connection: Upgrade"},
			{"Upgrade: h2", "Connection: Upgrade"},
			{"Upgrade: TLS/1.2", "Connection: Upgrade"},
			{"upgrade: h2c", "connection: HTTP2-Settings, upgrade", "http2-settings: AAMAAABkAAQAAP__"},
		} {
			t.Run(target.name+"/"+strings.Join(hs, " + "), func(t *testing.T) {
				h := append([]string{}, hs...)
				if target.path == "/api/x" {
					h = append(h, "Authorization: Bearer t")
				}
				if target.cookie != "" {
					h = append(h, "Cookie: "+target.cookie)
				}
				r := do(t, rq{target: target.path, headers: h})
				if r.Status == 101 {
					t.Fatalf("101 Switching Protocols: the upgrade reached the upstream")
				}
				for _, s := range r.Upstream {
					if got := s.Values("Upgrade"); len(got) > 0 {
						t.Errorf("upstream got Upgrade %q", got)
					}
					if got := s.Values("HTTP2-Settings"); len(got) > 0 {
						t.Errorf("upstream got HTTP2-Settings %q", got)
					}
				}
			})
		}
	}
	t.Run("unauthenticated WebSocket upgrade is refused before the upstream", func(t *testing.T) {
		r := do(t, rq{target: "/app/socket", headers: []string{"Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="}})
		refusedCleanly(t, r, "WebSocket without a session")
		if r.Status == 101 {
			t.Error("101 without a session")
		}
	})
	t.Run("HTTP/2 prior-knowledge preface is not served", func(t *testing.T) {
		r := do(t, rq{raw: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"})
		if r.Err == nil && r.Status < 400 {
			t.Errorf("preface answered %d", r.Status)
		}
	})
}
