package security

import (
	"fmt"
	"strings"
	"testing"
)

// identityNames are the headers the upstream trusts: the attribute pass's
// headers, its assertion header, and strip_headers.
var identityNames = []string{"X-Email", "X-Groups", "X-Portcullis-Assertion", "X-Forwarded-User", "X-Remote-User"}

const spoofed = "spoofed-admin@evil.example"

// spellings are the ways a client can write a header name that some server
// behind the proxy reads as the same header.
func spellings(name string) map[string][]string {
	under := strings.ReplaceAll(name, "-", "_")
	dot := strings.ReplaceAll(name, "-", ".")
	return map[string][]string{
		"canonical":             {name},
		"lower case":            {strings.ToLower(name)},
		"upper case":            {strings.ToUpper(name)},
		"underscores":           {under},
		"lower underscores":     {strings.ToLower(under)},
		"dots":                  {dot},
		"mixed _ and .":         {strings.Replace(under, "_", ".", 1)},
		"duplicated":            {name, name},
		"duplicated, two forms": {strings.ToLower(name), under},
	}
}

// identityContext is who sends the spoofed header, where.
type identityContext struct {
	name   string
	target string
	cookie string // "" for no session
	extra  []string
	want   func() map[string]string // the proxy's own values; others must be absent
}

func identityContexts(t *testing.T) []identityContext {
	bob, alice := sessionFor(t, "bob"), sessionFor(t, "alice")
	none := func() map[string]string { return nil }
	return []identityContext{
		{name: "unauthenticated bypass rule", target: "/public/page", want: none},
		{name: "credentials bypass rule", target: "/api/tasks", extra: []string{"Authorization: Bearer api-token"}, want: none},
		{name: "bypass rule with a session cookie", target: "/public/page", cookie: bob, want: none},
		{name: "authenticated user", target: "/app/page", cookie: bob, want: func() map[string]string {
			return map[string]string{"X-Email": "bob@example.com", "X-Groups": "user", "X-Portcullis-Assertion": "jwt"}
		}},
		{name: "authenticated admin on allow_if rule", target: "/admin/panel", cookie: alice, want: func() map[string]string {
			return map[string]string{"X-Email": "alice@example.com", "X-Groups": "admin", "X-Portcullis-Assertion": "jwt"}
		}},
	}
}

// checkIdentity asserts that the upstream got exactly the proxy's value of
// every identity header, in any spelling, or none at all.
func checkIdentity(t *testing.T, r reply, want map[string]string) {
	t.Helper()
	if r.Err != nil || r.Status != 200 || len(r.Upstream) != 1 {
		t.Fatalf("want one request at the upstream and 200; got %s, %d upstream requests", fmtReply(r), len(r.Upstream))
	}
	s := r.Upstream[0]
	for _, name := range identityNames {
		got := s.Values(name)
		w := want[name]
		switch {
		case w == "" && len(got) > 0:
			t.Errorf("upstream got %s = %q; want none", name, got)
		case w == "jwt" && (len(got) != 1 || strings.Count(got[0], ".") != 2 || strings.Contains(got[0], "spoofed")):
			t.Errorf("upstream got %s = %q; want exactly the proxy's assertion", name, got)
		case w != "" && w != "jwt" && (len(got) != 1 || got[0] != w):
			t.Errorf("upstream got %s = %q; want exactly [%q]", name, got, w)
		}
		for _, f := range s.Trailer {
			if normName(f.Name) == normName(name) {
				t.Errorf("upstream got %s in the trailer: %q", name, f.Value)
			}
		}
	}
}

// Invariant 1 and 2: every identity header, in every spelling, is removed
// from every client request; bypassed requests carry none.
func TestIdentityHeaderSpoofing(t *testing.T) {
	for _, ctx := range identityContexts(t) {
		for _, name := range identityNames {
			for variant, names := range spellings(name) {
				t.Run(fmt.Sprintf("%s/%s %s is replaced or removed", ctx.name, name, variant), func(t *testing.T) {
					h := append([]string{}, ctx.extra...)
					if ctx.cookie != "" {
						h = append(h, "Cookie: "+ctx.cookie)
					}
					for _, n := range names {
						h = append(h, n+": "+spoofed)
					}
					checkIdentity(t, do(t, rq{target: ctx.target, headers: h}), ctx.want())
				})
			}
		}
	}
}

// Spellings and framings that are not header names as such but that a lax
// upstream could still read as identity.
func TestIdentityHeaderSpoofingFraming(t *testing.T) {
	bob := sessionFor(t, "bob")
	bobWant := map[string]string{"X-Email": "bob@example.com", "X-Groups": "user", "X-Portcullis-Assertion": "jwt"}
	for _, tc := range []struct {
		name string
		r    rq
		want map[string]string
	}{
		{"every identity header at once, authenticated", rq{target: "/app", headers: append([]string{"Cookie: " + bob},
			"X-Email: "+spoofed, "X_Groups: admin", "x.portcullis.assertion: "+spoofed, "X-FORWARDED-USER: "+spoofed, "x_remote_user: "+spoofed)}, bobWant},
		{"identity in a chunked request trailer, bypass", rq{method: "POST", target: "/public/upload", headers: []string{
			"Transfer-Encoding: chunked", "Trailer: X-Email"}, body: "3\r\nabc\r\n0\r\nX-Email: " + spoofed + "\r\nX-Groups: admin\r\n\r\n"}, nil},
		{"identity in a chunked request trailer, authenticated", rq{method: "POST", target: "/app/upload", headers: []string{
			"Cookie: " + bob, "Transfer-Encoding: chunked", "Trailer: X-Email, X-Groups"}, body: "3\r\nabc\r\n0\r\nX-Email: " + spoofed + "\r\nX-Groups: admin\r\n\r\n"}, bobWant},
		{"undeclared identity trailer, bypass", rq{method: "POST", target: "/public/upload", headers: []string{
			"Transfer-Encoding: chunked"}, body: "3\r\nabc\r\n0\r\nX-Forwarded-User: " + spoofed + "\r\n\r\n"}, nil},
		{"identity header after a folded line", rq{target: "/public/x", headers: []string{"X-Note: a", " X-Email: " + spoofed}}, nil},
		{"Cookie header smuggling a header line", rq{target: "/public/x", headers: []string{"Cookie: a=b%0d%0aX-Email: " + spoofed}}, nil},
		{"comma-joined duplicate values", rq{target: "/app", headers: []string{"Cookie: " + bob, "X-Email: bob@example.com, " + spoofed}}, bobWant},
		{"empty identity header, bypass", rq{target: "/public/x", headers: []string{"X-Email:", "X-Groups: "}}, nil},
		{"identity header in HTTP/1.0, bypass", rq{target: "/public/x", proto: "HTTP/1.0", headers: []string{"X-Email: " + spoofed}}, nil},
		{"identity header with an absolute-form target", rq{target: "http://" + "127.0.0.1/public/x", headers: []string{"X-Email: " + spoofed}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.r)
			if strings.Contains(tc.name, "folded") && r.Status == 400 {
				refusedCleanly(t, r, "folded header")
				return
			}
			checkIdentity(t, r, tc.want)
		})
	}
}

// Names Go's server refuses to parse must be refused, never passed on.
func TestIdentityHeaderMalformedNames(t *testing.T) {
	for _, tc := range []struct{ name, line string }{
		{"space before the colon", "X-Email : " + spoofed},
		{"tab before the colon", "X-Email\t: " + spoofed},
		{"leading space on the first header", " X-Email: " + spoofed},
		{"NUL in the name", "X-Email\x00: " + spoofed},
		{"CR in the value", "X-Note: a\rX-Email: " + spoofed},
		{"bare LF line ending", "X-Note: a\nX-Email: " + spoofed},
	} {
		t.Run(tc.name+" is refused or stripped", func(t *testing.T) {
			r := do(t, rq{raw: "GET /public/x HTTP/1.1\r\n" + tc.line + "\r\nHost: " + suite.proxy + "\r\nX-Probe: MALFORMED\r\nConnection: close\r\n\r\n"})
			// raw requests carry a fixed probe; look at everything that
			// reached the upstream with it.
			for _, s := range suite.upstream.withProbe("MALFORMED") {
				if strings.Contains(s.Raw, spoofed) {
					t.Errorf("the spoofed value reached the upstream:\n%s", s.Raw)
				}
			}
			if r.Err == nil && r.Status != 400 && r.Status != 200 {
				t.Errorf("status %d, want 400 (or 200 with the header stripped)", r.Status)
			}
		})
	}
}
