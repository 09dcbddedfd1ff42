package security

import (
	"strings"
	"testing"
)

// pathCases are request-targets written the ways that make two HTTP parsers
// disagree about the path, each with the normalized path the proxy must both
// match its rules on and forward ("" when it must refuse the request).
// HOST stands for the proxy's own host:port.
var pathCases = []struct{ name, target, want string }{
	{"plain dot-dot out of the bypass prefix", "/public/../admin", "/admin"},
	{"dot then dot-dot", "/public/./../admin", "/admin"},
	{"encoded dot-dot", "/public/%2e%2e/admin", "/admin"},
	{"encoded dot-dot, upper case", "/public/%2E%2E/admin", "/admin"},
	{"half-encoded dot-dot", "/public/.%2e/admin", "/admin"},
	{"other half-encoded dot-dot", "/public/%2e./admin", "/admin"},
	{"dot-dot at the root", "/.%2e/admin", "/admin"},
	{"dot-dot beyond the root", "/../../admin", "/admin"},
	{"dot-dot then encoded slash", "/public/..%2fadmin", ""},
	{"encoded slashes around dot-dot", "/public%2f..%2fadmin", ""},
	{"encoded dot-dot-slash", "/public/%2e%2e%2fadmin", ""},
	{"encoded slash, lower case", "/%2fadmin", ""},
	{"encoded slash inside the bypass prefix", "/public/%2Fadmin", ""},
	{"encoded backslash dot-dot", "/public/..%5cadmin", ""},
	{"encoded backslash", "/public/%5Cadmin", ""},
	{"raw backslash dot-dot", "/public/..\\admin", ""},
	{"raw backslashes", "/public\\..\\admin", ""},
	{"double slash before admin", "//admin", "/admin"},
	{"triple slash", "///admin", "/admin"},
	{"empty segment before dot-dot", "/public//../admin", "/admin"},
	{"double slash then bypass prefix", "//public/x", "/public/x"},
	{"Tomcat path parameter dot-dot", "/public/..;/admin", ""},
	{"path parameter on admin", "/admin;/public/", ""},
	{"path parameter in the bypass prefix", "/public;x=1/../admin", ""},
	{"jsessionid parameter", "/public/x;jsessionid=1", ""},
	{"raw ? starts the query", "/admin?/public/", "/admin"},
	{"raw ? after the bypass prefix", "/public/x?/../../admin", "/public/x"},
	{"encoded ? is part of the path", "/admin%3F/public/", "/admin?/public/"},
	{"encoded ? segment then dot-dot", "/public/%3F/../admin", "/public/admin"},
	{"raw # in the request line is part of the path", "/admin#/public/", "/admin#/public/"},
	{"raw # after the bypass prefix then dot-dots", "/public/#/../../admin", "/admin"},
	{"encoded # is part of the path", "/admin%23/public/", "/admin#/public/"},
	{"encoded # then dot-dots", "/public/%23/../../admin", "/admin"},
	{"encoded slashes with a byte net/url re-escapes", "/public%2f..%2fadmin{", ""},
	{"encoded dot-dot-slash with a pipe", "/public/..%2Fadmin|", ""},
	{"encoded slash with raw UTF-8", "/public/caf\xc3\xa9/..%2F..%2Fadmin", ""},
	{"raw braces and pipe are part of a name", "/public/{a}|b", "/public/{a}|b"},
	{"upper-case ADMIN is another path", "/ADMIN", "/ADMIN"},
	{"mixed-case Public is not the bypass prefix", "/Public/x", "/Public/x"},
	{"encoded letter in admin", "/%61dmin", "/admin"},
	{"encoded upper-case letter", "/%41dmin", "/Admin"},
	{"encoded letter in the bypass prefix then dot-dot", "/publi%63/../admin", "/admin"},
	{"encoded letter in the bypass prefix", "/publ%69c/x", "/public/x"},
	{"bypass prefix without its slash", "/public", "/public"},
	{"bypass prefix alone", "/public/", "/public/"},
	{"admin with a trailing slash", "/admin/", "/admin/"},
	{"admin with a trailing dot segment", "/admin/.", "/admin/"},
	{"back to the root", "/public/..", "/"},
	{"back to the root with a slash", "/public/../", "/"},
	{"three dots are a name", "/public/.../admin", "/public/.../admin"},
	{"out of admin into the bypass prefix", "/admin/../public/x", "/public/x"},
	{"absolute form with dot-dot", "http://HOST/public/../admin", "/admin"},
	{"absolute form at another host", "http://evil.example/public/x", "/public/x"},
	{"absolute form with no path", "http://HOST", "/"},
	{"absolute form https", "https://HOST/admin", "/admin"},
	{"absolute form with encoded dot-dot", "http://HOST/public/%2e%2e/admin", "/admin"},
	{"overlong UTF-8 dots", "/public/%c0%ae%c0%ae/admin", ""},
	{"three-byte overlong dots", "/public/%e0%80%ae%e0%80%ae/admin", ""},
	{"overlong UTF-8 slash", "/public/%c0%af../admin", ""},
	{"invalid UTF-8 byte", "/public/%ff", ""},
	{"raw high byte", "/public/\x80/../admin", ""},
	{"NUL then dot-dot", "/public/%00/../admin", ""},
	{"NUL at the end", "/admin%00", ""},
	{"NUL in the bypass prefix", "/public/%00", ""},
	{"encoded tab", "/public/%09/../admin", ""},
	{"raw tab", "/public/\t../admin", ""},
	{"encoded CR LF", "/public/%0d%0aX-Email:%20x/../admin", ""},
	{"double-encoded dot-dot", "/public/%252e%252e/admin", ""},
	{"double-encoded in pieces", "/public/%25%32%65%25%32%65/admin", ""},
	{"double-encoded slash", "/public/..%252fadmin", ""},
	{"broken escape", "/public/%zz", ""},
	{"truncated escape", "/public/%", ""},
	{"%-escape of a %-escape", "/public/%%32%65", ""},
	{"IIS %u escape", "/public/%u002e%u002e/admin", ""},
	{"asterisk target", "*", ""},
	{"relative target", "admin", ""},
	{"UTF-8 is decoded", "/public/caf%C3%A9", "/public/café"},
	{"encoded space", "/public/a%20b", "/public/a b"},
	{"auth prefix then dot-dot", "/.portcullis/../admin", "/admin"},
}

// Invariant 4: the path a rule sees is the path the upstream gets. Each case
// is sent unauthenticated, as a user and as an admin; whenever the upstream
// gets the request, its request-target must decode to the path the rules
// were matched on, written canonically, and the decision must be that
// path's.
func TestRuleBypassByPathEncoding(t *testing.T) {
	bob, alice := sessionFor(t, "bob"), sessionFor(t, "alice")
	for _, tc := range pathCases {
		target := strings.ReplaceAll(tc.target, "HOST", suite.proxy)
		for _, who := range []struct{ name, cookie string }{{"anonymous", ""}, {"user", bob}, {"admin", alice}} {
			t.Run(tc.name+"/"+who.name, func(t *testing.T) {
				h := []string{"Accept: application/json"}
				if who.cookie != "" {
					h = append(h, "Cookie: "+who.cookie)
				}
				r := do(t, rq{target: target, headers: h})
				if tc.want == "" {
					refusedCleanly(t, r, target)
					if r.Err == nil && (r.Status < 400 || r.Status >= 500) {
						t.Errorf("%q: status %d, want 4xx", target, r.Status)
					}
					return
				}
				bypass := strings.HasPrefix(tc.want, "/public/")
				admin := strings.HasPrefix(tc.want, "/admin")
				reach := bypass || who.name == "admin" || (who.name == "user" && !admin)
				if !reach {
					refusedCleanly(t, r, target)
					return
				}
				if r.Err != nil || r.Status != 200 || len(r.Upstream) != 1 {
					t.Fatalf("%q: want it at the upstream as %q; got %s", target, tc.want, fmtReply(r))
				}
				s := r.Upstream[0]
				got, ok := s.Path()
				if !ok || got != tc.want {
					t.Errorf("%q: upstream request-target %q decodes to %q, want %q", target, s.Target, got, tc.want)
				}
				raw, _, _ := strings.Cut(s.Target, "?")
				if strings.Contains(raw, "//") {
					t.Errorf("%q: upstream request-target %q has an empty segment", target, s.Target)
				}
				for _, bad := range []string{"/../", "/./", ";", "%2F", "%2f", "%5C", "%5c", "\\", "%25"} {
					if strings.Contains(raw+"/", bad) { // with a / added, a final /.. counts too
						t.Errorf("%q: upstream request-target %q is not canonical (has %q)", target, s.Target, bad)
					}
				}
				if bypass && len(s.Values("X-Email")) > 0 && who.name == "anonymous" {
					t.Errorf("%q: bypassed request carries identity", target)
				}
			})
		}
	}
}
