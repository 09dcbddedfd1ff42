package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/process"
)

const testKey = "dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE="

// testConfig is the CVAT profile with an IdP that is never reached: these
// tests make sessions directly, so they can exercise the pipeline alone.
const testConfig = `
server:
  public_url: https://cvat.example.com
  trusted_proxies: [10.0.0.0/8]
upstream:
  url: UPSTREAM
  logout_cookies: [sessionid, csrftoken]
session:
  keys: [` + testKey + `]
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: http://127.0.0.1:1/
      client_id: portcullis
role_mapping:
  roles: [admin, business, user, worker]
  default: user
  rules:
    - role: admin
      when: '"cvat-admins" in groups'
attribute_pass:
  headers:
    X-Email: email
    X-Groups: 'join(roles, ",")'
  strip_headers: [X-Forwarded-User]
rules:
  - name: cvat-api-credentials
    path_prefix: /api/
    headers: {Authorization: '^(Basic|Token|Bearer) '}
    action: bypass
  - name: public
    path_prefix: /public/
    action: bypass
  - name: admin-only
    path_prefix: /admin
    action: authenticate
    allow_if: '"admin" in roles'
  - name: blocked
    path: /blocked
    action: deny
`

type fixture struct {
	h        *Handler
	upstream *echo.Server
	store    session.Store // h's own: cookies, or Redis with session.store redis
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	return newFixtureWith(t, "")
}

// newFixtureWith is newFixture with rules placed before testConfig's.
func newFixtureWith(t testing.TB, rules string) *fixture {
	t.Helper()
	return newFixtureOf(t, strings.Replace(testConfig, "rules:\n  - name: cvat-api-credentials", "rules:\n"+rules+"  - name: cvat-api-credentials", 1))
}

// newFixtureOf is the fixture of y, testConfig changed, whose UPSTREAM it
// fills in with the echo upstream's URL.
func newFixtureOf(t testing.TB, y string) *fixture {
	t.Helper()
	up := echo.New()
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	h := newTestHandler(t, strings.Replace(y, "UPSTREAM", srv.URL, 1))
	return &fixture{h: h, upstream: up, store: h.sessions}
}

// newTestHandler builds the Handler of config y, stopped when the test ends.
func newTestHandler(t testing.TB, y string) *Handler {
	t.Helper()
	return newTestHandlerVia(t, y, nil)
}

// newTestHandlerVia is newTestHandler whose requests to the IdPs go through
// idpTransport (nil: http.DefaultTransport).
func newTestHandlerVia(t testing.TB, y string, idpTransport http.RoundTripper) *Handler {
	t.Helper()
	cfg, err := ParseConfig([]byte(y), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h, err := build(ctx, cfg, slog.New(slog.DiscardHandler), nil, idpTransport)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// login makes a session for a user as a login would, and returns its cookies.
func (f *fixture) login(t testing.TB, email string, groups ...string) []*http.Cookie {
	t.Helper()
	return f.loginAs(t, idp.Profile{IdP: "company", Sub: email, Email: email, Groups: groups})
}

// loginAs makes a session for the profile an IdP gave, as a login would:
// roles mapped, then saved; it returns its cookies.
func (f *fixture) loginAs(t testing.TB, p idp.Profile) []*http.Cookie {
	t.Helper()
	roles, err := f.h.roles.Map(&p)
	if err != nil {
		t.Fatal(err)
	}
	p.Roles = roles
	rec := httptest.NewRecorder()
	if err := f.store.Save(rec, httptest.NewRequest("GET", "/", nil), session.New(p, idp.Tokens{}, f.h.cookies)); err != nil {
		t.Fatal(err)
	}
	return rec.Result().Cookies()
}

// do sends a request through the proxy and returns the response and what
// reached the upstream (ok false when nothing did).
func (f *fixture) do(t *testing.T, r *http.Request) (*http.Response, echo.Request, bool) {
	t.Helper()
	f.upstream.Reset()
	if r.RemoteAddr == "" || r.RemoteAddr == "192.0.2.1:1234" {
		r.RemoteAddr = "203.0.113.7:40000"
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, r)
	got, ok := f.upstream.Last()
	return rec.Result(), got, ok
}

func request(method, target string, cookies []*http.Cookie, headers ...string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	for _, c := range cookies {
		r.AddCookie(c)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header[headers[i]] = append(r.Header[headers[i]], headers[i+1]) // raw keys: no canonicalization
	}
	return r
}

func identityHeaders(h http.Header) map[string][]string {
	out := map[string][]string{}
	for name, v := range h {
		n := strings.ToLower(strings.NewReplacer("_", "-", ".", "-").Replace(name))
		if n == "x-email" || n == "x-groups" || n == "x-forwarded-user" {
			out[name] = v
		}
	}
	return out
}

// Invariant 1: every header named in attribute_pass or strip_headers is
// removed from every client request, in every spelling.
func TestSpoofedIdentityHeadersNeverReachTheUpstream(t *testing.T) {
	f := newFixture(t)
	alice := f.login(t, "alice@example.com", "cvat-admins")
	spoofs := [][]string{
		{"X-Email", "evil@example.com"},
		{"x-email", "evil@example.com"},
		{"X-EMAIL", "evil@example.com"},
		{"X_Email", "evil@example.com"},
		{"x_email", "evil@example.com"},
		{"X.Email", "evil@example.com"},
		{"X-Groups", "admin"},
		{"X_Groups", "admin"},
		{"x.groups", "admin"},
		{"X-Forwarded-User", "root"},
		{"X_Forwarded_User", "root"},
	}
	for _, s := range spoofs {
		for _, tc := range []struct {
			name    string
			target  string
			cookies []*http.Cookie
			extra   []string
			want    map[string]string // what the upstream must see, if it sees the request
		}{
			{"bypassed", "/api/tasks", nil, []string{"Authorization", "Token abc"}, nil},
			{"public bypass", "/public/app.js", nil, nil, nil},
			{"authenticated", "/tasks", alice, nil, map[string]string{"X-Email": "alice@example.com", "X-Groups": "admin"}},
			{"unauthenticated", "/tasks", nil, nil, nil},
		} {
			t.Run(tc.name+" "+s[0], func(t *testing.T) {
				r := request("GET", tc.target, tc.cookies, append([]string{s[0], s[1], s[0], s[1]}, tc.extra...)...)
				_, got, reached := f.do(t, r)
				if !reached {
					if tc.name != "unauthenticated" {
						t.Fatal("request did not reach the upstream")
					}
					return
				}
				seen := identityHeaders(got.Header)
				if len(seen) != len(tc.want) {
					t.Fatalf("upstream saw identity headers %v, want exactly %v", seen, tc.want)
				}
				for name, value := range tc.want {
					if v := seen[name]; len(v) != 1 || v[0] != value {
						t.Errorf("upstream %s = %q, want exactly [%q]", name, v, value)
					}
				}
			})
		}
	}
}

// A client's Connection header cannot delete the identity the proxy injects,
// nor smuggle a spoofed one past the strip.
func TestConnectionHeaderCannotRemoveInjectedIdentity(t *testing.T) {
	f := newFixture(t)
	alice := f.login(t, "alice@example.com", "cvat-admins")
	r := request("GET", "/tasks", alice, "Connection", "X-Email, X-Groups, X-Forwarded-For", "X-Email", "evil@example.com")
	_, got, ok := f.do(t, r)
	if !ok {
		t.Fatal("did not reach the upstream")
	}
	if got.Header.Get("X-Email") != "alice@example.com" || got.Header.Get("X-Groups") != "admin" {
		t.Fatalf("upstream identity = %q / %q, want alice@example.com / admin", got.Header.Get("X-Email"), got.Header.Get("X-Groups"))
	}
	if got.Header.Get("X-Forwarded-For") == "" {
		t.Error("X-Forwarded-For was removed by the client's Connection header")
	}
}

// A header that the client's Connection header names is gone before the
// rules look, however the list is spaced: the reverse proxy drops it on the
// way upstream, so a credentials bypass rule that saw it would send the
// request on anonymous.
func TestConnectionListedHeadersAreGoneBeforeTheRules(t *testing.T) {
	f := newFixture(t)
	for _, lines := range [][]string{
		{"Authorization"}, {"keep-alive, Authorization"}, {"keep-alive,Authorization"}, {"keep-alive ,\tauthorization "},
		{"keep-alive", "Authorization"}, // one line each
	} {
		t.Run(strings.Join(lines, " | "), func(t *testing.T) {
			r := request("GET", "/api/tasks", nil, "Authorization", "Token abc", "Accept", "application/json")
			r.Header["Connection"] = lines
			resp, got, reached := f.do(t, r)
			if resp.StatusCode != http.StatusUnauthorized || reached {
				t.Errorf("status %d, upstream reached with Authorization %q; want 401 before the upstream", resp.StatusCode, got.Header.Get("Authorization"))
			}
		})
	}
}

// Invariant 2: a bypassed request carries no identity set by the proxy, even
// with a valid session cookie.
func TestBypassWithSessionCarriesNoIdentity(t *testing.T) {
	f := newFixture(t)
	alice := f.login(t, "alice@example.com", "cvat-admins")
	_, got, ok := f.do(t, request("GET", "/api/tasks", alice, "Authorization", "Basic YTpi"))
	if !ok {
		t.Fatal("did not reach the upstream")
	}
	if seen := identityHeaders(got.Header); len(seen) != 0 {
		t.Fatalf("bypassed request reached the upstream with %v", seen)
	}
	if got.Header.Get("Authorization") != "Basic YTpi" {
		t.Errorf("the caller's own credentials were not passed: %q", got.Header.Get("Authorization"))
	}
}

// Invariant 3: the proxy's own cookies never reach the upstream; the app's
// do, but for its session cookies on bypassed requests (below).
func TestOwnCookiesNeverReachTheUpstream(t *testing.T) {
	f := newFixture(t)
	alice := f.login(t, "alice@example.com")
	cookies := append(alice,
		&http.Cookie{Name: "csrftoken", Value: "app1"},
		&http.Cookie{Name: "__Host-portcullis_1", Value: "chunk"},
		&http.Cookie{Name: "__Host-portcullis_login_abcdefgh", Value: "flow"},
		&http.Cookie{Name: "__Host-portcullis_signed_in", Value: "1733000000.company"},
		&http.Cookie{Name: "__Secure-portcullis_device", Value: "device"},
		&http.Cookie{Name: "portcullis_device", Value: "device"},
		&http.Cookie{Name: "portcullis", Value: "plain"},
		&http.Cookie{Name: "sessionid", Value: "app2"},
		&http.Cookie{Name: "theme", Value: "dark"},
	)
	for _, target := range []string{"/tasks", "/public/x"} {
		_, got, ok := f.do(t, request("GET", target, cookies))
		if !ok {
			t.Fatalf("%s did not reach the upstream", target)
		}
		c := strings.Join(got.Header.Values("Cookie"), "; ")
		if strings.Contains(c, "portcullis") {
			t.Errorf("%s: upstream Cookie = %q, has the proxy's cookies", target, c)
		}
		if !strings.Contains(c, "theme=dark") {
			t.Errorf("%s: upstream Cookie = %q, lost the application's cookies", target, c)
		}
		if target == "/tasks" && (!strings.Contains(c, "csrftoken=app1") || !strings.Contains(c, "sessionid=app2")) {
			t.Errorf("%s: upstream Cookie = %q, lost the application's session", target, c)
		}
	}
	// A request with the proxy's cookies alone goes on without a Cookie
	// header, not with an empty one.
	_, got, ok := f.do(t, request("GET", "/tasks", alice))
	if v, sent := got.Header["Cookie"]; !ok || sent {
		t.Errorf("upstream Cookie %q (reached %v), want none", v, ok)
	}
}

// A bypassed request never carries the application's session cookies
// (upstream.logout_cookies): CVAT would log it in from a stale sessionid
// that outlives the proxy session. An authenticated request keeps them.
func TestBypassDropsTheApplicationsSessionCookies(t *testing.T) {
	f := newFixture(t)
	alice := f.login(t, "alice@example.com")
	for _, tc := range []struct {
		name    string
		cookies []string // Cookie lines, as sent
	}{
		{"plain", []string{"sessionid=stale; csrftoken=t; theme=dark"}},
		{"on separate lines", []string{"theme=dark", "sessionid=stale", "csrftoken=t"}},
		{"no space after ;", []string{"theme=dark;sessionid=stale;csrftoken=t"}},
		{"space and tab around the name", []string{"theme=dark; sessionid =stale;\tcsrftoken\t=t"}},
		{"Latin-1 spaces Django strips", []string{"theme=dark; \xa0sessionid\xa0=stale; \x85csrftoken=t"}},
		{"empty value", []string{"sessionid=; theme=dark; csrftoken"}},
	} {
		for _, path := range []string{"/api/users/self", "/public/x"} {
			t.Run(tc.name+" "+path, func(t *testing.T) {
				r := request("GET", path, nil, "Authorization", "Bearer junk")
				r.Header["Cookie"] = tc.cookies
				_, got, ok := f.do(t, r)
				if !ok {
					t.Fatal("did not reach the upstream")
				}
				c := strings.Join(got.Header.Values("Cookie"), "; ")
				if strings.Contains(c, "sessionid") || strings.Contains(c, "csrftoken") {
					t.Errorf("bypassed request reached the upstream with Cookie %q", c)
				}
				if !strings.Contains(c, "theme=dark") {
					t.Errorf("upstream Cookie %q lost the other cookies", c)
				}
			})
		}
	}
	t.Run("authenticated keeps them", func(t *testing.T) {
		r := request("GET", "/tasks", alice)
		r.Header["Cookie"] = append(r.Header["Cookie"], "sessionid=app; csrftoken=t")
		_, got, ok := f.do(t, r)
		if c := strings.Join(got.Header.Values("Cookie"), "; "); !ok || c != "sessionid=app; csrftoken=t" {
			t.Errorf("upstream Cookie %q (reached %v), want the application's session alone", c, ok)
		}
	})
}

// The application's cookies reach it as the browser sent them: the parts
// of a Cookie line the proxy takes its own out of are trimmed of spaces
// and tabs (RFC 6265, net/http), not of every Unicode space. A cookie that
// the browser keeps as "\u00a0__Host-sessionid" (a sibling subdomain can
// set that name, not the prefixed one) was sent on as __Host-sessionid,
// past the prefix that keeps the application's session its own. A proxy
// cookie under such a name is still taken out.
func TestApplicationCookiesReachTheUpstreamAsSent(t *testing.T) {
	f := newFixture(t)
	alice := f.login(t, "alice@example.com")
	for _, tc := range []struct{ name, line, want string }{
		{"a no-break space before a name", "\u00a0__Host-sessionid=planted; csrftoken=t", "\u00a0__Host-sessionid=planted; csrftoken=t"},
		{"an ideographic space after a value", "csrftoken=t\u3000; theme=dark", "csrftoken=t\u3000; theme=dark"},
		{"a proxy cookie behind a no-break space", "theme=dark; \u00a0__Host-portcullis=x", "theme=dark"},
		{"spaces and tabs around the parts", "theme=dark ;\t csrftoken=t", "theme=dark; csrftoken=t"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := request("GET", "/tasks", alice)
			r.Header["Cookie"] = append(r.Header["Cookie"], tc.line)
			_, got, ok := f.do(t, r)
			if c := strings.Join(got.Header.Values("Cookie"), "; "); !ok || c != tc.want {
				t.Errorf("upstream Cookie %q (reached %v), want %q", c, ok, tc.want)
			}
		})
	}
}

// Invariant 4: the path a rule sees is the path the upstream gets, or the
// request is refused.
func TestPathTricksAgainstABypassRule(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		target string
		status int    // without a session
		path   string // what the upstream gets, if it gets it
	}{
		{"/public/../secret", http.StatusUnauthorized, ""},
		{"/public/%2e%2e/secret", http.StatusUnauthorized, ""},
		{"/public/./%2E%2E/admin", http.StatusUnauthorized, ""},
		{"/public%2F..%2Fsecret", http.StatusBadRequest, ""},
		{"/public/..%2Fsecret", http.StatusBadRequest, ""},
		{"/public/..;/secret", http.StatusBadRequest, ""},
		{"/public/..%5Csecret", http.StatusBadRequest, ""},
		{"/public/%00/x", http.StatusBadRequest, ""},
		{"//public/../secret", http.StatusUnauthorized, ""},
		{"/public//app.js", http.StatusOK, "/public/app.js"},
		{"/public/a/../app.js", http.StatusOK, "/public/app.js"},
		{"/public/%61pp.js", http.StatusOK, "/public/app.js"},
		{"/public/a%3Fb", http.StatusOK, "/public/a?b"},
		// net/url re-escapes these bytes and drops the client's encoding,
		// %2F included; the path the client sent is the one checked.
		{"/public%2F..%2Fsecret{", http.StatusBadRequest, ""},
		{"/public/..%2Fsecret|", http.StatusBadRequest, ""},
		{"/public/..%2fsecret^", http.StatusBadRequest, ""},
		{"/public/caf\xc3\xa9/..%2F..%2Fsecret", http.StatusBadRequest, ""},
		{"/public/..%5Csecret{", http.StatusBadRequest, ""},
		{"/public/{a}|b^", http.StatusOK, "/public/{a}|b^"},
		{"/public/caf\xc3\xa9", http.StatusOK, "/public/caf\u00e9"},
		{"/public/caf%C3%A9{", http.StatusOK, "/public/caf\u00e9{"},
	} {
		t.Run(tc.target, func(t *testing.T) {
			r := request("GET", "/", nil)
			r.URL.RawPath, r.URL.Path = tc.target, mustUnescape(tc.target)
			r.RequestURI = tc.target
			resp, got, ok := f.do(t, r)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.path == "" {
				if ok {
					t.Fatalf("upstream got %q; want nothing", got.RequestURI)
				}
				return
			}
			if !ok || got.Path != tc.path {
				t.Fatalf("upstream path %q (reached %v), want %q", got.Path, ok, tc.path)
			}
			// In one encoding, net/url's of the cleaned path, never the
			// client's: an upstream that routes on the raw bytes would
			// read /public/%61pp.js as another path than the rule did.
			if want := (&url.URL{Path: tc.path}).EscapedPath(); got.RequestURI != want {
				t.Errorf("upstream request-target %q, want %q", got.RequestURI, want)
			}
		})
	}
}

// The proxy's endpoints are auth_prefix and the paths under it, not every
// path that starts with its letters: /.portcullis-assets/ is the
// application's, and its rules decide on it.
func TestPathsThatOnlyBeginLikeTheAuthPrefixAreTheApplications(t *testing.T) {
	f := newFixtureWith(t, `  - name: assets
    path_prefix: /.portcullis-assets/
    action: bypass
`)
	for _, tc := range []struct {
		target  string
		status  int
		reached bool
	}{
		{"/.portcullis-assets/app.js", http.StatusOK, true},
		{"/.portcullisx", http.StatusUnauthorized, false},     // no rule: authenticate
		{"/.portcullis", http.StatusTemporaryRedirect, false}, // ServeMux: to /.portcullis/
		{"/.portcullis/", http.StatusNotFound, false},
	} {
		t.Run(tc.target, func(t *testing.T) {
			resp, _, reached := f.do(t, request("GET", tc.target, nil, "Accept", "application/json"))
			if resp.StatusCode != tc.status || reached != tc.reached {
				t.Errorf("status %d reached %v, want %d %v", resp.StatusCode, reached, tc.status, tc.reached)
			}
		})
	}
}

// Invariant 4 for an absolute-form target without // after its scheme
// (GET http:admin/x): net/url reads what follows the scheme as opaque, not
// as a path. The rules took it for the root, and the reverse proxy sent
// the opaque part on as the upstream's request-target (admin/x), which an
// upstream that adds the missing / would serve as /admin/x. It is refused,
// as every path that does not start with / is.
func TestOpaqueTargetsAreRefused(t *testing.T) {
	f := newFixtureWith(t, "  - {name: home, path: /, action: bypass}\n")
	var sent []string
	f.h.upstream.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sent = append(sent, r.URL.RequestURI())
		return memUpstream{}.RoundTrip(r)
	})
	for _, target := range []string{"http:admin/x", "https:cvat.example.com/admin/x", "http:%2e%2e/admin"} {
		t.Run(target, func(t *testing.T) {
			sent = nil
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: cvat.example.com\r\n\r\n")))
			if err != nil {
				t.Fatal(err)
			}
			resp, _, _ := f.do(t, r)
			if resp.StatusCode != http.StatusBadRequest || len(sent) > 0 {
				t.Errorf("status %d, the upstream was sent %q; want 400 and nothing", resp.StatusCode, sent)
			}
		})
	}
}

func mustUnescape(s string) string {
	r, err := http.NewRequest("GET", "http://x"+s, nil)
	if err != nil {
		return s
	}
	return r.URL.Path
}

// Invariant 5: a session cookie that fails to open is no session.
func TestTamperedSessionIsNoSession(t *testing.T) {
	f := newFixture(t)
	alice := f.login(t, "alice@example.com", "cvat-admins")
	v := alice[0].Value
	for name, value := range map[string]string{
		"bit flip":  v[:len(v)/2] + string(v[len(v)/2]^1) + v[len(v)/2+1:],
		"truncated": v[:len(v)-5],
		"empty":     "",
		"garbage":   "not-a-cookie",
	} {
		t.Run(name, func(t *testing.T) {
			c := *alice[0]
			c.Value = value
			resp, _, ok := f.do(t, request("GET", "/tasks", []*http.Cookie{&c}))
			if ok || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, reached upstream %v; want 401 and nothing upstream", resp.StatusCode, ok)
			}
		})
	}
}

func TestDecisions(t *testing.T) {
	f := newFixture(t)
	alice := f.login(t, "alice@example.com", "cvat-admins")
	bob := f.login(t, "bob@example.com")
	for _, tc := range []struct {
		name     string
		r        *http.Request
		status   int
		location string
		reached  bool
	}{
		{"browser without session is sent to log in", request("GET", "/tasks?x=1", nil, "Accept", "text/html"), http.StatusFound, "/.portcullis/login?rd=%2Ftasks%3Fx%3D1", false},
		{"XHR without session gets 401", request("GET", "/tasks", nil, "Accept", "text/html", "Sec-Fetch-Mode", "cors"), http.StatusUnauthorized, "", false},
		{"POST without session gets 401", request("POST", "/tasks", nil, "Accept", "text/html"), http.StatusUnauthorized, "", false},
		{"API client's GET without session gets 401", request("GET", "/tasks", nil, "Accept", "application/json"), http.StatusUnauthorized, "", false},
		{"jQuery's XHR without session gets 401", request("GET", "/tasks", nil, "Accept", "text/html, */*", "X-Requested-With", "XMLHttpRequest"), http.StatusUnauthorized, "", false},
		{"browser's HEAD without session is sent to log in", request("HEAD", "/tasks", nil, "Accept", "text/html"), http.StatusFound, "/.portcullis/login?rd=%2Ftasks", false},
		{"admin reaches admin route", request("GET", "/admin/x", alice), http.StatusOK, "", true},
		{"non-admin is forbidden on admin route", request("GET", "/admin/x", bob), http.StatusForbidden, "", false},
		{"deny rule refuses everyone", request("GET", "/blocked", alice), http.StatusForbidden, "", false},
		{"unknown auth endpoint is not forwarded", request("GET", "/.portcullis/nope", nil), http.StatusNotFound, "", false},
		{"auth prefix with dot segments is not forwarded", request("GET", "/x/../.portcullis/nope", nil), http.StatusNotFound, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _, reached := f.do(t, tc.r)
			if resp.StatusCode != tc.status || reached != tc.reached {
				t.Fatalf("status %d reached %v, want %d %v", resp.StatusCode, reached, tc.status, tc.reached)
			}
			if tc.location != "" && resp.Header.Get("Location") != tc.location {
				t.Errorf("Location %q, want %q", resp.Header.Get("Location"), tc.location)
			}
			// A script's 401 says where its user can log in.
			if tc.status == http.StatusUnauthorized {
				var body struct {
					LoginURL string `json:"login_url"`
				}
				if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.LoginURL != "/.portcullis/login" {
					t.Errorf("401 body login_url %q (%v), want /.portcullis/login", body.LoginURL, err)
				}
			}
			// The proxy's own answers, JSON ones too, are never sniffed.
			if !tc.reached && tc.location == "" && resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("X-Content-Type-Options %q on the proxy's %d, want nosniff", resp.Header.Get("X-Content-Type-Options"), resp.StatusCode)
			}
		})
	}
}

func TestMethodOverrideAndUpgradeHeadersAreStripped(t *testing.T) {
	f := newFixture(t)
	alice := f.login(t, "alice@example.com")
	_, got, ok := f.do(t, request("POST", "/tasks", alice,
		"X-HTTP-Method-Override", "DELETE", "X-Http-Method", "DELETE", "X-Method-Override", "DELETE",
		"X-Original-URL", "/admin", "X-Rewrite-URL", "/admin", "Upgrade", "h2c", "Connection", "Upgrade"))
	if !ok {
		t.Fatal("did not reach the upstream")
	}
	for _, name := range []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override", "X-Original-Url", "X-Rewrite-Url", "Upgrade"} {
		if v := got.Header.Values(name); len(v) > 0 {
			t.Errorf("upstream got %s: %q", name, v)
		}
	}
}

// Headers that name the client's address are the proxy's word, as
// X-Forwarded-For is: upstream middleware believes them from its trusted
// proxy (chi's RealIP takes True-Client-IP first, django-ipware reads
// X-Client-IP and CF-Connecting-IP, Rails Client-IP), so a client's would
// move an IP allowlist, a rate limit or an audit log to any address it names.
func TestClientAddressHeadersAreStripped(t *testing.T) {
	var headers []string
	for _, n := range []string{"True-Client-Ip", "X-Client-Ip", "Client-Ip", "Cf-Connecting-Ip", "Fastly-Client-Ip",
		"X-Cluster-Client-Ip", "X-Originating-Ip", "X-Forwarded", "Forwarded-For", "X-Real-Ip"} {
		headers = append(headers, n, "10.0.0.1")
	}
	noneReachesTheUpstream(t, "GET", headers)
}

// Headers in which a proxy tells what follows it the request's method,
// scheme or host are the proxy's word too, and it sends its own in
// X-Forwarded-Proto and X-Forwarded-Host only. A client's X-Forwarded-Method
// or X-Original-Method reached the upstream: a forward-auth check behind it
// (Traefik's ForwardAuth trusting portcullis's forwarded headers, in front
// of Authelia; nginx auth_request) would judge a DELETE as the GET it names,
// as oauth2-proxy's skip rules judged the path a client's X-Forwarded-Uri
// named (GHSA-7x63-xv5r-3p2x). Rack reads X-Forwarded-Ssl, -Scheme and
// X-Url-Scheme as the scheme, whoever sent them; some frameworks take
// X-Original-Host or X-Host as the host links are built on.
func TestMethodSchemeAndHostClaimsAreStripped(t *testing.T) {
	noneReachesTheUpstream(t, "DELETE", []string{
		"X-Forwarded-Method", "GET", "X-Original-Method", "GET", "x_forwarded_method", "GET",
		"X-Forwarded-Scheme", "https", "X-Forwarded-Ssl", "on", "X-Url-Scheme", "https",
		"Front-End-Https", "on", "X-Forwarded-Protocol", "https", "X-Scheme", "https",
		"X-Original-Host", "evil.example", "X-Host", "evil.example", "X-Original-Forwarded-For", "10.0.0.1",
	})
}

// Traefik's passTLSClientCert middleware tells the application the
// client's certificate in X-Forwarded-Tls-Client-Cert and -Info, and
// removes neither when the request has no certificate: it relies on the
// entry point's forwardedHeaders, which drops both from untrusted clients
// alone. Behind portcullis, a traefik that trusts portcullis's forwarded
// headers (docs/cvat.md) kept a client's, so any client could name the
// certificate (Subject CN=admin) an application authenticates by.
func TestClientCertificateHeadersAreStripped(t *testing.T) {
	noneReachesTheUpstream(t, "GET", []string{
		"X-Forwarded-Tls-Client-Cert", "MIIBforged", "X-Forwarded-Tls-Client-Cert-Info", `Subject%3D%22CN%3Dadmin%22`,
		"x_forwarded_tls_client_cert", "MIIBforged",
	})
}

// Other front proxies, load balancers and meshes tell the application the
// client's certificate in headers of their own, which applications believe
// as they believe traefik's; a client never gets to set them, and a trusted
// proxy in front that does not set one passes a client's on (ingress-nginx
// without auth-tls, an ALB without mTLS), so each is stripped from every
// request, a trusted proxy's too.
func TestOtherProxiesClientCertificateHeadersAreStripped(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers []string
	}{
		{"RFC 9440 (CloudFront, Cloudflare rules)", []string{"Client-Cert", ":MIIBforged:", "Client-Cert-Chain", ":MIIBca:"}},
		{"Envoy and Istio XFCC", []string{"X-Forwarded-Client-Cert", `Hash=00;Subject="CN=admin";URI=spiffe://cluster.local/ns/a/sa/admin`}},
		{"nginx and HAProxy conventions", []string{
			"X-Ssl-Client-Cert", "MIIBforged", "X-Ssl-Client-Verify", "SUCCESS", "X-Ssl-Client-S-Dn", "CN=admin",
			"X-Ssl-Client-I-Dn", "CN=ca", "X-Ssl-Client-Subject-Dn", "CN=admin", "X-Ssl-Client-Issuer-Dn", "CN=ca",
			"X-Ssl-Client-Dn", "CN=admin", "X-Client-Cert", "MIIBforged", "X-Client-Verify", "SUCCESS", "X-Client-Dn", "CN=admin",
		}},
		{"ingress-nginx auth-tls and Tomcat's SSLValve", []string{
			"Ssl-Client-Cert", "MIIBforged", "ssl_client_cert", "MIIBforged", "Ssl-Client-Verify", "SUCCESS",
			"Ssl-Client-Subject-Dn", "CN=admin", "Ssl-Client-Issuer-Dn", "CN=ca",
		}},
		{"AWS ALB mTLS", []string{
			"X-Amzn-Mtls-Clientcert", "MIIBforged", "X-Amzn-Mtls-Clientcert-Leaf", "MIIBforged",
			"X-Amzn-Mtls-Clientcert-Serial-Number", "01", "X-Amzn-Mtls-Clientcert-Issuer", "CN=ca",
			"X-Amzn-Mtls-Clientcert-Subject", "CN=admin", "X-Amzn-Mtls-Clientcert-Validity", "NotBefore=2020-01-01T00:00:00Z;NotAfter=2099-01-01T00:00:00Z",
		}},
		{"CloudFront viewer mTLS", []string{
			"Cloudfront-Viewer-Cert-Pem", "MIIBforged", "Cloudfront-Viewer-Cert-Serial-Number", "01", "Cloudfront-Viewer-Cert-Issuer", "CN=ca",
			"Cloudfront-Viewer-Cert-Subject", "CN=admin", "Cloudfront-Viewer-Cert-Present", "1", "Cloudfront-Viewer-Cert-Sha256", "00",
			"Cloudfront-Viewer-Cert-Validity", "NotBefore=2020-01-01T00:00:00Z;NotAfter=2099-01-01T00:00:00Z",
		}},
		{"Cloudflare's TLS client auth headers", []string{
			"Cf-Cert-Verified", "true", "Cf-Cert-Presented", "true", "Cf-Cert-Revoked", "false", "Cf-Cert-Subject-Dn", "CN=admin",
			"Cf-Cert-Issuer-Dn", "CN=ca", "Cf-Cert-Subject-Dn-Rfc2253", "CN=admin", "Cf-Cert-Issuer-Dn-Rfc2253", "CN=ca",
			"Cf-Cert-Subject-Dn-Legacy", "/CN=admin", "Cf-Cert-Issuer-Dn-Legacy", "/CN=ca", "Cf-Cert-Serial", "01", "Cf-Cert-Issuer-Serial", "02",
		}},
		{"Google Cloud load balancer mTLS, as its examples name them", []string{
			"X-Client-Cert-Present", "true", "X-Client-Cert-Chain-Verified", "true", "X-Client-Cert-Error", "",
			"X-Client-Cert-Hash", "00", "X-Client-Cert-Serial-Number", "01", "X-Client-Cert-Spiffe", "spiffe://x/admin",
			"X-Client-Cert-Uri-Sans", "spiffe://x/admin", "X-Client-Cert-Dnsname-Sans", "admin.example",
			"X-Client-Cert-Valid-Not-Before", "2020-01-01T00:00:00Z", "X-Client-Cert-Valid-Not-After", "2099-01-01T00:00:00Z",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { noneReachesTheUpstream(t, "GET", tc.headers) })
	}
}

// A load balancer in front that checks client certificates (an ALB with
// mTLS) and sets its headers on every request, a client's removed, may
// have the application get them: server.trusted_proxy_certificate_headers
// names those kept, from trusted_proxies alone and as spelt canonically. A
// client's, or any other spelling, is stripped as before.
func TestTrustedProxyCertificateHeadersAreKeptWhenNamed(t *testing.T) {
	f := newFixtureOf(t, strings.Replace(testConfig, "trusted_proxies: [10.0.0.0/8]",
		"trusted_proxies: [10.0.0.0/8]\n  trusted_proxy_certificate_headers: [x-amzn-mtls-clientcert-leaf, X-Forwarded-Client-Cert]", 1))
	alice := f.login(t, "alice@example.com")
	sent := []string{
		"X-Amzn-Mtls-Clientcert-Leaf", "MIIBalb", "X-Forwarded-Client-Cert", "Hash=00",
		"x_amzn_mtls_clientcert_leaf", "MIIBforged", "X-Amzn-Mtls-Clientcert-Subject", "CN=admin", "Client-Cert", ":MIIBforged:",
	}
	for _, tc := range []struct {
		name, target, peer string
		cookies            []*http.Cookie
		kept               bool
	}{
		{"a trusted proxy's, bypassed", "/public/x", "10.1.2.3:5555", nil, true},
		{"a trusted proxy's, signed in", "/tasks", "10.1.2.3:5555", alice, true},
		{"a client's, bypassed", "/public/x", "203.0.113.7:40000", nil, false},
		{"a client's, signed in", "/tasks", "203.0.113.7:40000", alice, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := request("GET", tc.target, tc.cookies, sent...)
			r.RemoteAddr = tc.peer
			_, got, ok := f.do(t, r)
			if !ok {
				t.Fatal("did not reach the upstream")
			}
			want := map[string][]string{}
			if tc.kept {
				want = map[string][]string{"X-Amzn-Mtls-Clientcert-Leaf": {"MIIBalb"}, "X-Forwarded-Client-Cert": {"Hash=00"}}
			}
			gotCert := map[string][]string{}
			for name, v := range got.Header {
				if strings.Contains(strings.ToLower(name), "cert") {
					gotCert[name] = v
				}
			}
			if !maps.EqualFunc(gotCert, want, slices.Equal) {
				t.Errorf("upstream's certificate headers: %q, want %q", gotCert, want)
			}
		})
	}
}

// noneReachesTheUpstream sends headers (name, value pairs) with a request
// of method on a bypassed path, a signed-in one and one through a trusted
// proxy, and fails if the upstream gets any of them, in any spelling.
func noneReachesTheUpstream(t *testing.T, method string, headers []string) {
	t.Helper()
	f := newFixture(t)
	alice := f.login(t, "alice@example.com")
	for _, tc := range []struct {
		name, target string
		peer         string
		cookies      []*http.Cookie
	}{
		{"bypass", "/public/x", "203.0.113.7:40000", nil},
		{"authenticated", "/tasks", "203.0.113.7:40000", alice},
		{"through a trusted proxy", "/tasks", "10.1.2.3:5555", alice},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := request(method, tc.target, tc.cookies, headers...)
			r.RemoteAddr = tc.peer
			_, got, ok := f.do(t, r)
			if !ok {
				t.Fatal("did not reach the upstream")
			}
			for name, v := range got.Header {
				for i := 0; i < len(headers); i += 2 {
					if strings.EqualFold(strings.NewReplacer("_", "-").Replace(name), strings.NewReplacer("_", "-").Replace(headers[i])) {
						t.Errorf("upstream got %s: %q", name, v)
					}
				}
			}
		})
	}
}

func TestForwardedHeadersFromUntrustedPeersAreReplaced(t *testing.T) {
	f := newFixture(t)
	alice := f.login(t, "alice@example.com")
	r := request("GET", "/tasks", alice, "X-Forwarded-For", "1.2.3.4", "X-Forwarded-Host", "evil.com", "X-Forwarded-Proto", "http")
	_, got, _ := f.do(t, r)
	if xff := got.Header.Get("X-Forwarded-For"); xff != "203.0.113.7" {
		t.Errorf("X-Forwarded-For = %q, want only the peer 203.0.113.7", xff)
	}
	if got.Header.Get("X-Forwarded-Host") != "cvat.example.com" || got.Header.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("X-Forwarded-Host/Proto = %q/%q, want the public origin's", got.Header.Get("X-Forwarded-Host"), got.Header.Get("X-Forwarded-Proto"))
	}
	// A trusted proxy's chain is kept and extended.
	r = request("GET", "/tasks", alice, "X-Forwarded-For", "198.51.100.9")
	r.RemoteAddr = "10.1.2.3:5555"
	_, got, _ = f.do(t, r)
	if xff := got.Header.Get("X-Forwarded-For"); xff != "198.51.100.9, 10.1.2.3" {
		t.Errorf("through a trusted proxy X-Forwarded-For = %q, want \"198.51.100.9, 10.1.2.3\"", xff)
	}
	// Every line of it, in order, as the client address is read from
	// them all (clientAddr): a chain cut to its first line would hide the
	// hops the upstream's own trusted-proxy logic reads from the right.
	r = request("GET", "/tasks", alice)
	r.Header["X-Forwarded-For"] = []string{"198.51.100.9", "192.0.2.1, 10.4.4.4"}
	r.RemoteAddr = "10.1.2.3:5555"
	_, got, _ = f.do(t, r)
	if xff := got.Header.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != "198.51.100.9, 192.0.2.1, 10.4.4.4, 10.1.2.3" {
		t.Errorf("through a trusted proxy sending two X-Forwarded-For lines, X-Forwarded-For = %q, want [\"198.51.100.9, 192.0.2.1, 10.4.4.4, 10.1.2.3\"]", xff)
	}
}

// The forwarding headers are the proxy's word in every spelling, as identity
// headers are: an upstream that reads _ and . as - (CGI, WSGI and ASGI
// servers put X_Forwarded_Host and X-Forwarded-Host both in
// HTTP_X_FORWARDED_HOST) would otherwise get the client's next to the
// proxy's. Found by FuzzServeHTTP.
func TestForwardedHeaderSpellingsNeverReachTheUpstream(t *testing.T) {
	f := newFixture(t)
	alice := f.login(t, "alice@example.com")
	spellings := []string{
		"X_Forwarded_Host", "x_forwarded_host", "X.Forwarded.Host", "X-Forwarded_Host",
		"X_Forwarded_Proto", "x.forwarded.proto", "X_Forwarded_For", "x_forwarded_for", "FORWARDED", "forwarded",
	}
	for _, tc := range []struct {
		name, target, peer string
		cookies            []*http.Cookie
	}{
		{"bypass", "/public/x", "203.0.113.7:40000", nil},
		{"authenticated", "/tasks", "203.0.113.7:40000", alice},
		{"through a trusted proxy", "/tasks", "10.1.2.3:5555", alice},
	} {
		for _, name := range spellings {
			t.Run(tc.name+" "+name, func(t *testing.T) {
				r := request("GET", tc.target, tc.cookies, name, "evil.example")
				r.RemoteAddr = tc.peer
				_, got, ok := f.do(t, r)
				if !ok {
					t.Fatal("did not reach the upstream")
				}
				for key, v := range got.Header {
					for _, canonical := range []string{"X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-For", "Forwarded"} {
						if strings.EqualFold(strings.NewReplacer("_", "-", ".", "-").Replace(key), canonical) && (key != canonical || slices.Contains(v, "evil.example")) {
							t.Errorf("upstream got %s: %q", key, v)
						}
					}
				}
			})
		}
	}
}

// A Trailer header declaring what is no field name is the client's
// mistake: net/http's server takes the declaration, its transport refuses
// to send it on, and the answer was a 502 counted as the upstream's
// failure. Found by FuzzServeHTTP (testdata/fuzz/FuzzServeHTTP/fc821770186bd555).
func TestInvalidTrailerNameIsABadRequest(t *testing.T) {
	f := newFixture(t)
	alice := f.login(t, "alice@example.com")
	for _, name := range []string{`"`, "", "a b", "X-Email:", "\xe9"} {
		for _, target := range []string{"/public/x", "/tasks"} {
			t.Run(target+" "+name, func(t *testing.T) {
				r := request("POST", target, alice)
				r.TransferEncoding, r.ContentLength = []string{"chunked"}, -1
				r.Trailer = http.Header{name: nil, "X-Checksum": nil}
				resp, _, ok := f.do(t, r)
				if resp.StatusCode != http.StatusBadRequest || ok {
					t.Errorf("status %d, reached the upstream %v; want 400 and not reached", resp.StatusCode, ok)
				}
			})
		}
	}
	// A declaration of a valid name goes on as before.
	r := request("POST", "/public/x", nil)
	r.TransferEncoding, r.ContentLength = []string{"chunked"}, -1
	r.Trailer = http.Header{"X-Checksum": nil}
	if resp, _, ok := f.do(t, r); resp.StatusCode != http.StatusOK || !ok {
		t.Errorf("valid trailer name: status %d, reached %v; want 200 and reached", resp.StatusCode, ok)
	}
}

func TestUserinfo(t *testing.T) {
	f := newFixture(t)
	resp, _, _ := f.do(t, request("GET", "/.portcullis/userinfo", nil))
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without session: %d, want 401", resp.StatusCode)
	}
	resp, _, _ = f.do(t, request("GET", "/.portcullis/userinfo", f.login(t, "alice@example.com", "cvat-admins")))
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"roles":["admin"]`) {
		t.Fatalf("userinfo: %d %s", resp.StatusCode, body)
	}
}

// The proxy's JSON answers (userinfo, a script's 401, an error for a
// client that does not want HTML) are kept out of other sites' frames, as
// its pages are: a sibling subdomain's frame gets the session cookie
// (SameSite=Lax lets same-site requests carry it) and would show the
// user's profile inside a page of its own. And no other origin may read
// them: no answer, a preflight's included, grants CORS.
func TestJSONAnswersAreNotFramedNorSharedWithOtherOrigins(t *testing.T) {
	f := newFixture(t)
	cookies := f.login(t, "alice@example.com", "cvat-admins")
	const origin = "https://evil.example.com"
	for _, tc := range []struct {
		name string
		r    *http.Request
		want int
	}{
		{"userinfo", request("GET", "/.portcullis/userinfo", cookies, "Origin", origin, "Sec-Fetch-Site", "same-site"), http.StatusOK},
		{"userinfo without a session", request("GET", "/.portcullis/userinfo", nil, "Origin", origin), http.StatusUnauthorized},
		{"a script's request without a session", request("GET", "/tasks", nil, "Origin", origin), http.StatusUnauthorized},
		{"an unknown endpoint, for a script", request("GET", "/.portcullis/nothing", cookies), http.StatusNotFound},
		// No OPTIONS route: the catch-all's 404.
		{"a preflight of userinfo", request("OPTIONS", "/.portcullis/userinfo", nil, "Origin", origin,
			"Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "authorization"), http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _, _ := f.do(t, tc.r)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			for name := range resp.Header {
				if strings.HasPrefix(name, "Access-Control-") {
					t.Errorf("%s: %q; no other origin may read the proxy's answers", name, resp.Header.Values(name))
				}
			}
			if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
				t.Errorf("X-Frame-Options %q, want DENY", got)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("Content-Security-Policy %q, want frame-ancestors 'none'", csp)
			}
		})
	}
}

func TestUpstreamDownAnswers502WithoutInternals(t *testing.T) {
	f := newFixture(t)
	f.h.upstreamURL.Host = "127.0.0.1:1"
	resp, _, _ := f.do(t, request("GET", "/tasks", f.login(t, "alice@example.com"), "Accept", "application/json"))
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadGateway || strings.Contains(string(body), "127.0.0.1") || strings.Contains(string(body), "connect") {
		t.Fatalf("upstream down: %d %s", resp.StatusCode, body)
	}
}

// Only the proxy's X-Request-Id reaches the upstream: other spellings, which
// the upstream may read as the same header, are dropped.
func TestRequestIDSpellingsAreDropped(t *testing.T) {
	f := newFixture(t)
	_, got, ok := f.do(t, request("GET", "/public/x", nil, "X_Request_Id", "forged", "x.request.id", "forged", "X-Original-Uri", "/admin", "X-Envoy-Original-Path", "/admin"))
	if !ok {
		t.Fatal("did not reach the upstream")
	}
	for name, v := range got.Header {
		if n := strings.ToLower(name); strings.Contains(n, "request") && name != "X-Request-Id" || strings.Contains(n, "original") {
			t.Errorf("upstream got %s: %q", name, v)
		}
	}
	if v := got.Header.Values("X-Request-Id"); len(v) != 1 || v[0] == "forged" {
		t.Errorf("upstream X-Request-Id = %q, want exactly the proxy's", v)
	}
}

// Logout expires the application's own session cookies too, so the next
// person signing in in this browser does not reach the app as the last one.
func TestLogoutExpiresTheApplicationsCookies(t *testing.T) {
	f := newFixture(t)
	resp, _, _ := f.do(t, request("GET", "/.portcullis/logout", f.login(t, "alice@example.com")))
	expired := map[string]bool{}
	for _, c := range resp.Cookies() {
		if c.MaxAge < 0 {
			expired[c.Name] = true
		}
	}
	for _, name := range []string{"sessionid", "csrftoken"} {
		if !expired[name] {
			t.Errorf("logout did not expire the application's %s cookie; Set-Cookie: %q", name, resp.Header.Values("Set-Cookie"))
		}
	}
}

// appSessions is an upstream that keeps sessions of its own, as CVAT's
// Django does: it knows the user by its sessionid cookie first, and only
// without one by X-Email, for whom it then sets one. It answers with the
// user it took the request for.
type appSessions struct{ users map[string]string }

func (a *appSessions) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie("sessionid"); err == nil && a.users[c.Value] != "" {
		io.WriteString(w, a.users[c.Value])
		return
	}
	id := fmt.Sprintf("app-session-%d", len(a.users))
	a.users[id] = r.Header.Get("X-Email")
	http.SetCookie(w, &http.Cookie{Name: "sessionid", Value: id, Path: "/"})
	io.WriteString(w, a.users[id])
}

// A login expires the application's own session cookies, as /logout does:
// a session of the proxy's that ended otherwise (its lifetime or idle
// timeout, a back-channel logout, a refresh the IdP refused) leaves the
// application's in the browser, and the next user to sign in there reached
// the application as the last one, who may have had another role.
func TestLoginExpiresTheApplicationsCookies(t *testing.T) {
	f := newFixture(t)
	app := &appSessions{users: map[string]string{}}
	f.useUpstream(t, app)
	fake := &signingIn{} // signs alice in
	f.h.providers["company"].impl = fake
	site, _ := url.Parse("https://cvat.example.com/")
	browser, _ := cookiejar.New(nil)
	visit := func(method, target string) *http.Response {
		t.Helper()
		resp, _, _ := f.do(t, request(method, target, browser.Cookies(site)))
		browser.SetCookies(site, resp.Cookies())
		return resp
	}

	// Bob works in the application, which gives him its own session; then
	// his session at the proxy ends (here its cookie's Max-Age) without a
	// visit to /logout.
	browser.SetCookies(site, f.login(t, "bob@example.com", "cvat-admins"))
	if body, _ := io.ReadAll(visit("GET", "/tasks").Body); string(body) != "bob@example.com" {
		t.Fatalf("bob's first request reached the application as %q", body)
	}
	browser.SetCookies(site, []*http.Cookie{{Name: f.h.cookies.Name(), Value: "", MaxAge: -1}})

	// Alice signs in with the same browser.
	if resp := visit("GET", "/.portcullis/login/company"); resp.StatusCode != http.StatusFound || fake.state == "" {
		t.Fatalf("login start: %d", resp.StatusCode)
	}
	if resp := visit("GET", "/.portcullis/oidc/company/callback?code=c&state="+fake.state); resp.StatusCode != http.StatusFound {
		t.Fatalf("callback: %d", resp.StatusCode)
	}
	if body, _ := io.ReadAll(visit("GET", "/tasks").Body); string(body) != "alice@example.com" {
		t.Errorf("after alice signed in, the application took her request for %q's", body)
	}
}

// A session whose IdP has left the configuration is no session: the proxy
// no longer trusts what that IdP said.
func TestSessionOfARemovedIdPIsNoSession(t *testing.T) {
	f := newFixture(t)
	p := idp.Profile{IdP: "retired", Sub: "alice", Email: "alice@example.com", Roles: []string{"admin"}}
	rec := httptest.NewRecorder()
	if err := f.store.Save(rec, httptest.NewRequest("GET", "/", nil), session.New(p, idp.Tokens{}, f.h.cookies)); err != nil {
		t.Fatal(err)
	}
	cookies := rec.Result().Cookies()
	resp, _, reached := f.do(t, request("GET", "/tasks", cookies, "Accept", "application/json"))
	if reached || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /tasks with a session of a removed IdP: %d, reached upstream %v; want 401, not reached", resp.StatusCode, reached)
	}
	// Not deleted: in a rolling update the IdP may be one only newer
	// replicas have, and their users keep their sessions there.
	if set := resp.Header.Values("Set-Cookie"); len(set) > 0 {
		t.Errorf("the session of an IdP this replica does not know was cleared: %q", set)
	}
	resp, _, _ = f.do(t, request("GET", "/.portcullis/userinfo", cookies))
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("userinfo with a session of a removed IdP: %d, want 401", resp.StatusCode)
	}
	// The same session from a configured IdP passes: the test can fail.
	if resp, _, reached := f.do(t, request("GET", "/tasks", f.login(t, "alice@example.com"))); !reached {
		t.Fatalf("GET /tasks with a session of a configured IdP: %d, not reached", resp.StatusCode)
	}
}

// A session whose user the entry's admission keys no longer admit (they
// were tightened, and the proxy reloaded or restarted, since the login) is
// no session, as in oauth2-proxy, which checks its email domains and groups
// at every request: taking a group off allowed_groups after an incident
// must lock its members out now, not when their sessions end.
func TestSessionOfAUserNoLongerAdmittedIsNoSession(t *testing.T) {
	f := newFixtureOf(t, strings.Replace(testConfig, "      client_id: portcullis\n",
		"      client_id: portcullis\n      allowed_email_domains: [example.com]\n      allowed_groups: [cvat-users]\n", 1))
	for _, c := range []struct {
		name    string
		p       idp.Profile
		reached bool
	}{
		{"in an allowed group at an allowed domain", idp.Profile{Email: "bob@example.com", EmailVerified: true, Groups: []string{"cvat-users"}}, true},
		{"in no allowed group", idp.Profile{Email: "alice@example.com", EmailVerified: true, Groups: []string{"cvat-admins"}}, false},
		{"at a domain no longer allowed", idp.Profile{Email: "carol@example.org", EmailVerified: true, Groups: []string{"cvat-users"}}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.p.IdP, c.p.Sub = "company", c.p.Email
			c.p.Claims = map[string]any{"email_verified": true} // as the IdP said it
			cookies := f.loginAs(t, c.p)
			resp, got, reached := f.do(t, request("GET", "/tasks", cookies, "Accept", "application/json"))
			if reached != c.reached {
				t.Fatalf("GET /tasks: %d, reached upstream %v as %q; want reached %v", resp.StatusCode, reached, got.Header.Get("X-Email"), c.reached)
			}
			if !c.reached && resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET /tasks: %d, want 401", resp.StatusCode)
			}
			resp, _, _ = f.do(t, request("GET", "/.portcullis/userinfo", cookies))
			if want := map[bool]int{true: http.StatusOK, false: http.StatusUnauthorized}[c.reached]; resp.StatusCode != want {
				t.Errorf("userinfo: %d, want %d", resp.StatusCode, want)
			}
		})
	}
}

// Two deployments given the same session keys (sidecars sharing one
// Secret) do not take each other's sessions: each carries the roles its own
// deployment mapped, and admin at one application is not admin at the other.
func TestSessionOfAnotherDeploymentWithTheSameKeysIsNoSession(t *testing.T) {
	f := newFixture(t)
	y := strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1)
	other := newTestHandler(t, strings.Replace(y, "https://cvat.example.com", "https://grafana.example.com", 1))
	store, err := session.NewCookieStore(other.cookies)
	if err != nil {
		t.Fatal(err)
	}
	p := idp.Profile{IdP: "company", Sub: "mallory", Email: "mallory@example.com", Roles: []string{"admin"}}
	rec := httptest.NewRecorder()
	if err := store.Save(rec, httptest.NewRequest("GET", "/", nil), session.New(p, idp.Tokens{}, other.cookies)); err != nil {
		t.Fatal(err)
	}
	resp, got, reached := f.do(t, request("GET", "/admin", rec.Result().Cookies(), "Accept", "application/json"))
	if reached || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /admin with a session of another deployment: %d, reached upstream as %q; want 401, not reached",
			resp.StatusCode, got.Header.Get("X-Email"))
	}
	// The same session made by this deployment passes: the test can fail.
	if resp, _, reached := f.do(t, request("GET", "/admin", f.login(t, "alice@example.com", "cvat-admins"))); !reached {
		t.Fatalf("GET /admin with this deployment's session: %d, not reached", resp.StatusCode)
	}
}

// A method with a lower-case letter is refused before the rules and the
// auth endpoints: Django upper-cases it, so `delete` would run as the DELETE
// a rule refuses.
func TestLowerCaseMethodsAreRefused(t *testing.T) {
	f := newFixtureWith(t, `  - name: no-delete
    path_prefix: /tasks
    methods: [DELETE]
    action: deny
`)
	alice := f.login(t, "alice@example.com", "cvat-admins")
	for _, tc := range []struct {
		name, method, target string
		status               int
		reached              bool
	}{
		{"DELETE meets the deny rule", "DELETE", "/tasks/1", http.StatusForbidden, false},
		{"delete does not slip past the deny rule", "delete", "/tasks/1", http.StatusBadRequest, false},
		{"Delete does not slip past the deny rule", "Delete", "/tasks/1", http.StatusBadRequest, false},
		{"lower-case method on a bypassed path is refused", "get", "/public/x", http.StatusBadRequest, false},
		{"lower-case method on an auth endpoint is refused", "get", "/.portcullis/userinfo", http.StatusBadRequest, false},
		{"upper-case methods pass", "PATCH", "/tasks/1", http.StatusOK, true},
		{"upper-case extension methods pass", "PROPFIND", "/public/x", http.StatusOK, true},
		{"CONNECT is not passed on", "CONNECT", "/public/x", http.StatusMethodNotAllowed, false},
		{"TRACE is not passed on", "TRACE", "/public/x", http.StatusMethodNotAllowed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, got, reached := f.do(t, request(tc.method, tc.target, alice))
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || reached != tc.reached {
				t.Fatalf("status %d reached %v (upstream method %q), want %d %v", resp.StatusCode, reached, got.Method, tc.status, tc.reached)
			}
			if tc.status == http.StatusBadRequest && !strings.Contains(string(body), "lower-case") {
				t.Errorf("the refusal does not say why: %s", body)
			}
		})
	}
}

// The upstream's Host is public_url's (preserve_host, the default) or
// upstream.url's, never the client's: a host-routing upstream (traefik)
// would otherwise send a client to another virtual host.
func TestUpstreamHostIsNeverTheClients(t *testing.T) {
	f := newFixture(t)
	alice := f.login(t, "alice@example.com")
	requests := map[string]func() *http.Request{
		"Host header, bypassed": func() *http.Request {
			r := request("GET", "/api/x", nil, "Authorization", "Bearer x")
			r.Host = "grafana.internal"
			return r
		},
		"absolute-form target, bypassed": func() *http.Request {
			return request("GET", "http://grafana.internal/public/x", nil)
		},
		"Host header with a port, authenticated": func() *http.Request {
			r := request("GET", "/tasks", alice)
			r.Host = "cvat.example.com:8443"
			return r
		},
	}
	upstreamHost := strings.TrimPrefix(f.h.cfg.Upstream.URL, "http://")
	for _, tc := range []struct {
		preserve bool
		want     string
	}{{true, "cvat.example.com"}, {false, upstreamHost}} {
		for name, r := range requests {
			t.Run(fmt.Sprintf("preserve_host %v/%s", tc.preserve, name), func(t *testing.T) {
				*f.h.cfg.Upstream.PreserveHost = tc.preserve
				_, got, ok := f.do(t, r())
				if !ok {
					t.Fatal("did not reach the upstream")
				}
				if got.Host != tc.want {
					t.Errorf("upstream Host %q, want %q", got.Host, tc.want)
				}
			})
		}
	}
}

// A public_url with its scheme's default port sends the Host browsers send:
// without the port (Django compares Host with Origin for CSRF).
func TestUpstreamHostLeavesOutTheDefaultPort(t *testing.T) {
	up := echo.New()
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	for public, want := range map[string]string{
		"https://cvat.example.com:443": "cvat.example.com",
		"http://cvat.example.com:80":   "cvat.example.com",
		"https://cvat.example.com:80":  "cvat.example.com:80",
		"https://[2001:db8::1]:443":    "[2001:db8::1]",
	} {
		y := strings.Replace(testConfig, "UPSTREAM", srv.URL, 1)
		y = strings.Replace(y, "public_url: https://cvat.example.com", "public_url: "+public, 1)
		h := newTestHandler(t, y)
		up.Reset()
		r := request("GET", "/public/x", nil)
		r.RemoteAddr = "203.0.113.7:40000"
		h.ServeHTTP(httptest.NewRecorder(), r)
		got, ok := up.Last()
		if !ok || got.Host != want {
			t.Errorf("public_url %s: upstream Host %q (reached %v), want %q", public, got.Host, ok, want)
		}
	}
}

// A trusted proxy range written in IPv4-mapped form (::ffff:10.0.0.0/104)
// trusts the IPv4 peers it names, as the same form does in a rule's sources:
// peers are compared unmapped, and the range trusted nobody.
func TestTrustedProxiesInMappedFormTrustTheirPeers(t *testing.T) {
	f, _, _ := newLoggedFixture(t, strings.Replace(testConfig, "trusted_proxies: [10.0.0.0/8]", `trusted_proxies: ["::ffff:10.0.0.0/104"]`, 1))
	r := request("GET", "/", nil, "X-Forwarded-For", "203.0.113.9")
	r.RemoteAddr = "10.1.2.3:4444"
	if got := f.h.clientAddr(r); got != netip.MustParseAddr("203.0.113.9") {
		t.Errorf("client %v from the trusted peer 10.1.2.3, want 203.0.113.9 from its X-Forwarded-For", got)
	}
}

// A peer address in IPv4-mapped form (`portcullis explain --source
// ::ffff:10.1.2.3`) is the IPv4 peer it names: trusted as 10.1.2.3 is, so
// the client is the one its X-Forwarded-For names, and explain answers as
// serve does for the same peer.
func TestTrustedPeerInMappedFormIsTrusted(t *testing.T) {
	internal := "rules:\n  - name: internal\n    path_prefix: /internal/\n    sources: [10.0.0.0/8]\n    action: bypass\n  - name: cvat-api-credentials"
	f, _, _ := newLoggedFixture(t, strings.Replace(testConfig, "rules:\n  - name: cvat-api-credentials", internal, 1))
	for _, tc := range []struct {
		name, xff string
		bypass    bool
	}{
		{"forwarding an outside client: not the internal rule", "203.0.113.9", false},
		{"forwarding an internal client: the internal rule", "10.9.9.9", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, peer := range []string{"10.1.2.3", "::ffff:10.1.2.3"} {
				r := request("GET", "/internal/x", nil, "X-Forwarded-For", tc.xff, "Accept", "application/json")
				e, err := Explain(f.h.cfg, r, netip.MustParseAddr(peer), nil, "")
				if err != nil {
					t.Fatal(err)
				}
				if bypassed := e.Decision == decisionBypass; bypassed != tc.bypass {
					t.Errorf("from %s: decision %s (%s), want bypass %v", peer, e.Decision, e.Reason, tc.bypass)
				}
			}
		})
	}
}

// A trusted proxy's X-Forwarded-For entry may carry a port or brackets; one
// that does not parse makes the client unknown, which no sources rule
// matches, never the trusted proxy itself (10.1.2.3, whose 10.0.0.0/8 a
// sources rule covers).
func TestForwardedForEntries(t *testing.T) {
	internal := "rules:\n  - name: internal\n    path_prefix: /internal/\n    sources: [10.0.0.0/8]\n    action: bypass\n  - name: cvat-api-credentials"
	f, logs, _ := newLoggedFixture(t, strings.Replace(testConfig, "rules:\n  - name: cvat-api-credentials", internal, 1))
	for _, tc := range []struct {
		xff  []string // X-Forwarded-For lines; nil for none
		want string   // the client address, "" for unknown
	}{
		{nil, "10.1.2.3"},
		{[]string{"203.0.113.9"}, "203.0.113.9"},
		{[]string{"203.0.113.9:5555"}, "203.0.113.9"},
		{[]string{"[2001:db8::1]"}, "2001:db8::1"},
		{[]string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{[]string{"[::ffff:203.0.113.9]:443"}, "203.0.113.9"},
		{[]string{" 198.51.100.1 , 203.0.113.9:5555 "}, "203.0.113.9"},
		{[]string{"garbage, 203.0.113.9"}, "203.0.113.9"},
		{[]string{"203.0.113.9", "10.9.9.9:80"}, "203.0.113.9"},
		{[]string{"10.9.9.9"}, "10.1.2.3"},
		{[]string{"unknown"}, ""},
		{[]string{"203.0.113.9, garbage"}, ""},
		{[]string{"10.9.9.9, garbage, 10.8.8.8"}, ""},
		{[]string{"[203.0.113.9]"}, ""},
		{[]string{"203.0.113.9:"}, ""},
		{[]string{"203.0.113.9,"}, ""},
		{[]string{""}, ""},
		{[]string{"_hidden"}, ""},
		// Optional white space is spaces and tabs (RFC 9110), not every
		// Unicode space: the proxy took these for 203.0.113.9.
		{[]string{"203.0.113.9\u00a0"}, ""},
		{[]string{"\u0085203.0.113.9"}, ""},
	} {
		t.Run(fmt.Sprintf("%q", tc.xff), func(t *testing.T) {
			r := request("GET", "/internal/x", nil, "Accept", "application/json")
			r.RemoteAddr = "10.1.2.3:4444"
			if tc.xff != nil {
				r.Header["X-Forwarded-For"] = tc.xff
			}
			got := f.h.clientAddr(r)
			if tc.want == "" && got.IsValid() || tc.want != "" && got != netip.MustParseAddr(tc.want) {
				t.Fatalf("client %v, want %q", got, tc.want)
			}
			resp, _, reached := f.do(t, r)
			id := resp.Header.Get("X-Request-Id")
			internal := tc.want == "10.1.2.3"
			if reached != internal {
				t.Errorf("sources: [10.0.0.0/8] bypassed %v, want %v (status %d)", reached, internal, resp.StatusCode)
			}
			logged := tc.want
			if logged == "" {
				logged = "unknown"
			}
			if lines := logs.find(t, map[string]any{"log": "access", "request_id": id}); len(lines) != 1 || lines[0]["client"] != logged {
				t.Errorf("access lines %v, want one with client %q", lines, logged)
			}
		})
	}
	if addrKey(netip.Addr{}) != "unknown" {
		t.Errorf("unknown clients are limited under %q, want one shared key", addrKey(netip.Addr{}))
	}
}

// Invariant 1 for trailers: a client's request trailer named like an
// identity or stripped header is never sent upstream, whatever net/http
// does with the values it reads after the body (test/security sends them
// over the wire).
func TestClientTrailersNamedLikeIdentityHeadersAreStripped(t *testing.T) {
	f := newFixture(t)
	alice := f.login(t, "alice@example.com")
	for _, target := range []string{"/public/upload", "/tasks"} {
		t.Run(target, func(t *testing.T) {
			in := request("POST", target, alice)
			out := in.Clone(in.Context())
			out.Trailer = http.Header{
				"X-Email": {"evil@example.com"}, "X_groups": {"admin"}, "X-Forwarded-User": {"root"},
				"X-Http-Method-Override": {"DELETE"}, "X-Checksum": {"abc"},
			}
			f.h.rewrite(&httputil.ProxyRequest{In: in, Out: out})
			if len(out.Trailer) != 1 || out.Trailer.Get("X-Checksum") != "abc" {
				t.Errorf("trailers sent upstream: %v, want only X-Checksum", out.Trailer)
			}
		})
	}
}

// refusingIdP is an IdP that vouches for the user but sends something the
// proxy cannot use (Entra ID's group overage): Complete returns an
// *idp.AdmissionError.
type refusingIdP struct {
	state     string
	completes int
}

func (*refusingIdP) Ready() error { return nil }

func (i *refusingIdP) LoginURL(f *idp.Flow) (string, error) {
	i.state = f.State
	return "https://idp.example.com/authorize", nil
}

func (i *refusingIdP) Complete(*http.Request, *idp.Flow) (*idp.Profile, *idp.Tokens, error) {
	i.completes++
	return nil, nil, fmt.Errorf("oidc company: %w", &idp.AdmissionError{Rule: "groups", Reason: "Ask your administrator to send only the groups assigned to this application."})
}

// An IdP's refusal that says what to do reaches the user on the 403 page,
// not as "the sign-in could not be completed".
func TestIdPRefusalReasonReachesTheUser(t *testing.T) {
	f := newFixture(t)
	fake := &refusingIdP{}
	f.h.providers["company"].impl = fake
	resp, _, _ := f.do(t, request("GET", "/.portcullis/login/company", nil))
	if resp.StatusCode != http.StatusFound || fake.state == "" {
		t.Fatalf("login start: %d, state %q", resp.StatusCode, fake.state)
	}
	resp, _, reached := f.do(t, request("GET", "/.portcullis/oidc/company/callback?code=c&state="+fake.state, resp.Cookies(), "Accept", "text/html"))
	body, _ := io.ReadAll(resp.Body)
	if reached || resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "only the groups assigned") {
		t.Fatalf("callback: %d, reached upstream %v, body %s; want 403 with the IdP's reason", resp.StatusCode, reached, body)
	}
}

// A callback whose answer fails gives its login state back, so that junk
// callbacks cannot fill the set of used states (session.Flows.Release): the
// same flow may be answered again, and is checked again.
func TestFailedCallbackReleasesItsState(t *testing.T) {
	f := newFixture(t)
	fake := &refusingIdP{}
	f.h.providers["company"].impl = fake
	resp, _, _ := f.do(t, request("GET", "/.portcullis/login/company", nil))
	flow := resp.Cookies()
	for range 2 {
		f.do(t, request("GET", "/.portcullis/oidc/company/callback?code=c&state="+fake.state, flow))
	}
	if fake.completes != 2 {
		t.Fatalf("the IdP's answer was checked %d times, want 2: a failed login keeps its state used", fake.completes)
	}
}

// While the upstream or the session store is down, every request is
// answered 502 or 503 and has its access line, but the diagnostic line is
// written once a second, with how many were held back since the last.
func TestDependencyDownIsLoggedOnceASecond(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		status    int
		breakIt   func(*Handler)
	}{
		{"upstream", "upstream request failed", http.StatusBadGateway, func(h *Handler) { h.upstreamURL.Host = "127.0.0.1:1" }},
		{"session store", "session store unavailable", http.StatusServiceUnavailable, func(h *Handler) { h.sessions = unavailableStore{h.sessions} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			cookies := f.login(t, "alice@example.com")
			tc.breakIt(f.h)
			logs := &process.Output{}
			f.h.log = slog.New(slog.NewJSONHandler(logs, nil))
			now := time.Now()
			f.h.now = func() time.Time { return now }
			send := func(n int) {
				for range n {
					resp, _, _ := f.do(t, request("GET", "/tasks", cookies, "Accept", "application/json"))
					if resp.StatusCode != tc.status {
						t.Fatalf("%s down: %d, want %d", tc.name, resp.StatusCode, tc.status)
					}
				}
			}
			lines := func() []map[string]any {
				var out []map[string]any
				for line := range strings.Lines(logs.String()) {
					var m map[string]any
					if err := json.Unmarshal([]byte(line), &m); err != nil {
						t.Fatalf("log line %q: %v", line, err)
					}
					if m["msg"] == tc.msg {
						out = append(out, m)
					}
				}
				return out
			}
			send(20)
			if got := lines(); len(got) != 1 || got[0]["held_back"] != nil {
				t.Fatalf("20 failures within a second logged %d lines (%v), want 1 with nothing held back", len(got), got)
			}
			now = now.Add(time.Second)
			send(1)
			got := lines()
			if len(got) != 2 || got[1]["held_back"] != float64(19) {
				t.Fatalf("a second later: %d lines (%v), want a second one saying 19 were held back", len(got), got)
			}
		})
	}
}

// unavailableStore is a session store that cannot answer, as Redis away.
type unavailableStore struct{ session.Store }

func (unavailableStore) Load(*http.Request) (*session.Session, error) {
	return nil, fmt.Errorf("load session: %w", session.ErrUnavailable)
}

// growingRefresher confirms every refresh with a profile of n groups.
type growingRefresher struct{ n int }

func (growingRefresher) Ready() error { return nil }

func (g growingRefresher) Refresh(_ context.Context, t *idp.Tokens) (*idp.Profile, *idp.Tokens, error) {
	next := *t
	next.RefreshToken = "rotated"
	return &idp.Profile{IdP: "company", Sub: "alice@example.com", Email: "alice@example.com", Groups: randomGroups(g.n)}, &next, nil
}

// A refresh whose profile no longer fits the cookies ends the session at
// once, with a log line that says why; carried on, the old cookie would
// spend the rotated-away refresh token again a minute later and read as the
// IdP's refusal.
func TestRefreshTooLargeForTheCookiesEndsTheSession(t *testing.T) {
	f := newFixture(t)
	f.h.refresher = newRefresher(time.Minute)
	f.h.providers["company"].impl = growingRefresher{n: 3000}
	logs := &process.Output{}
	f.h.log = slog.New(slog.NewJSONHandler(logs, nil))
	s := session.New(idp.Profile{IdP: "company", Sub: "alice@example.com", Email: "alice@example.com"}, idp.Tokens{RefreshToken: "first"}, f.h.cookies)
	s.Refreshed = time.Now().Add(-2 * time.Minute)
	rec := httptest.NewRecorder()
	if err := f.store.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
		t.Fatal(err)
	}
	resp, _, reached := f.do(t, request("GET", "/tasks", rec.Result().Cookies(), "Accept", "application/json"))
	if resp.StatusCode != http.StatusUnauthorized || reached {
		t.Fatalf("request at the refresh: %d (upstream reached: %v), want 401 and a new login", resp.StatusCode, reached)
	}
	if !strings.Contains(logs.String(), "does not fit its cookies; session ended") {
		t.Errorf("no log line saying why the session ended:\n%s", logs)
	}
	resp, _, reached = f.do(t, request("GET", "/tasks", rec.Result().Cookies(), "Accept", "application/json"))
	if resp.StatusCode != http.StatusUnauthorized || reached {
		t.Errorf("the old cookie again: %d (upstream reached: %v), want 401: the session is revoked", resp.StatusCode, reached)
	}
}

// The page that asks whether to sign out, loaded again by the browser that
// shows it: the back button onto it (after "Back to the application"), a
// reload. Browsers send such a history load as their own: WebKit with
// Sec-Fetch-Site none (as a typed address), Chromium same-origin (from the
// page it left), never cross-site. The page's address in the history must
// ask again, not sign the user out at once.
// logoutForm is a browser's POST of a form with rd to the proxy's logout,
// from a page of site (its Sec-Fetch-Site).
func logoutForm(cookies []*http.Cookie, rd, site string) *http.Request {
	r := request("POST", "/.portcullis/logout", cookies, "Accept", "text/html", "Sec-Fetch-Site", site)
	r.Body = io.NopCloser(strings.NewReader(url.Values{"rd": {rd}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

func TestLogoutQuestionLoadedAgainAsksAgain(t *testing.T) {
	f := newFixture(t)
	cookies := f.login(t, "alice@example.com")
	for _, tc := range []struct {
		name string
		r    *http.Request
	}{
		{"a link on another site", request("GET", "/.portcullis/logout?rd=/tasks", cookies, "Accept", "text/html", "Sec-Fetch-Site", "cross-site")},
		{"a form on another site", logoutForm(cookies, "/tasks", "cross-site")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Where the browser ends up showing the question: the answer's
			// address, or the one it redirects to.
			resp, _, _ := f.do(t, tc.r)
			shown, method := tc.r.URL.RequestURI(), tc.r.Method
			if loc := resp.Header.Get("Location"); resp.StatusCode == http.StatusSeeOther {
				shown, method = loc, "GET"
				resp, _, _ = f.do(t, request("GET", shown, cookies, "Accept", "text/html", "Sec-Fetch-Site", "cross-site"))
			}
			if body, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `<input type="hidden" name="rd" value="/tasks">`) {
				t.Fatalf("the question: status %d, want 200 with a form that keeps rd:\n%s", resp.StatusCode, body)
			}
			for _, site := range []string{"none", "same-origin"} {
				again := request(method, shown, cookies, "Accept", "text/html", "Sec-Fetch-Site", site)
				if method == "POST" {
					again = logoutForm(cookies, "/tasks", site)
				}
				resp, _, _ := f.do(t, again)
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `<button type="submit">Sign out</button>`) {
					t.Errorf("%s %s loaded again (Sec-Fetch-Site %s): status %d to %q, want the question again", method, shown, site, resp.StatusCode, resp.Header.Get("Location"))
				}
				if resp, got, ok := f.do(t, request("GET", "/tasks", cookies)); resp.StatusCode != http.StatusOK || !ok || got.Header.Get("X-Email") != "alice@example.com" {
					t.Fatalf("after %s loaded again (Sec-Fetch-Site %s), /tasks: %d; want alice still signed in", shown, site, resp.StatusCode)
				}
			}
		})
	}
}

// A logout that another site's page sent (a link, a redirect, a form) is
// asked, not done: another site must not be able to sign the user out
// (logout CSRF). The page asks with a form that posts the same logout, rd
// kept, from the proxy's own origin. The logouts the user or the
// application asks for, and those of clients that do not say where they come
// from, are done at once, as before.
func TestLogoutFromAnotherSiteIsAsked(t *testing.T) {
	f := newFixture(t)
	cookies := f.login(t, "alice@example.com")
	stillSignedIn := func(t *testing.T) {
		t.Helper()
		if resp, got, ok := f.do(t, request("GET", "/tasks", cookies)); resp.StatusCode != http.StatusOK || !ok || got.Header.Get("X-Email") != "alice@example.com" {
			t.Fatalf("after the logout another site asked for, /tasks: %d (upstream reached: %v, X-Email %q); want alice still signed in",
				resp.StatusCode, ok, got.Header.Get("X-Email"))
		}
	}
	for _, tc := range []struct {
		name string
		r    *http.Request
	}{
		{"a link on another site", request("GET", "/.portcullis/logout?rd=/tasks", cookies, "Accept", "text/html", "Sec-Fetch-Site", "cross-site")},
		{"a link on a sibling subdomain", request("GET", "/.portcullis/logout?rd=/tasks", cookies, "Accept", "text/html", "Sec-Fetch-Site", "same-site")},
		{"a form on another site", logoutForm(cookies, "/tasks", "cross-site")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The page is at an address of its own, which only asks
			// (TestLogoutQuestionLoadedAgainAsksAgain).
			resp, _, reached := f.do(t, tc.r)
			if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/.portcullis/logout/confirm?rd=%2Ftasks" || reached {
				t.Fatalf("status %d to %q (upstream reached: %v), want 303 to the proxy's page that asks", resp.StatusCode, loc, reached)
			}
			if sc := resp.Header.Values("Set-Cookie"); len(sc) != 0 {
				t.Errorf("the redirect sets cookies %q, want none: nothing is signed out yet", sc)
			}
			resp, _, reached = f.do(t, request("GET", resp.Header.Get("Location"), cookies, "Accept", "text/html", "Sec-Fetch-Site", tc.r.Header.Get("Sec-Fetch-Site")))
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || reached {
				t.Fatalf("status %d (upstream reached: %v), want 200 from the proxy's page", resp.StatusCode, reached)
			}
			for _, want := range []string{`<form method="post" action="/.portcullis/logout">`, `<input type="hidden" name="rd" value="/tasks">`, `<button type="submit">Sign out</button>`} {
				if !strings.Contains(string(body), want) {
					t.Errorf("the page lacks %s:\n%s", want, body)
				}
			}
			if sc := resp.Header.Values("Set-Cookie"); len(sc) != 0 {
				t.Errorf("the page sets cookies %q, want none: nothing is signed out yet", sc)
			}
			stillSignedIn(t)
		})
	}
	t.Run("a script on another site", func(t *testing.T) {
		resp, _, _ := f.do(t, request("GET", "/.portcullis/logout", cookies, "Sec-Fetch-Site", "cross-site"))
		if body, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), `"error":"sign_out_not_done"`) {
			t.Errorf("status %d, body %s; want 403 sign_out_not_done", resp.StatusCode, body)
		}
		stillSignedIn(t)
	})

	for _, tc := range []struct {
		name string
		r    func() *http.Request
	}{
		{"the page's own form", func() *http.Request { return logoutForm(cookies, "/tasks", "same-origin") }},
		{"a typed address or a bookmark", func() *http.Request {
			return request("GET", "/.portcullis/logout?rd=/tasks", cookies, "Accept", "text/html", "Sec-Fetch-Site", "none")
		}},
		{"a client that does not say", func() *http.Request { return request("GET", "/.portcullis/logout?rd=/tasks", cookies) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cookies = f.login(t, "alice@example.com")
			resp, _, _ := f.do(t, tc.r())
			if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://cvat.example.com/tasks" {
				t.Fatalf("status %d to %q, want 302 to /tasks", resp.StatusCode, resp.Header.Get("Location"))
			}
			if resp, _, reached := f.do(t, request("GET", "/tasks", cookies)); reached || resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("after the logout, /tasks: %d (upstream reached: %v), want 401", resp.StatusCode, reached)
			}
		})
	}
}

// Another site's sign-out form may post an rd as long as the form allows
// (16 KB). Past the 4 KB that safeRedirect ever follows it is dropped from
// the 303 to the question, whose Location would otherwise be up to three
// times its size: more than a front proxy takes in a header (nginx's
// proxy_buffer_size, 4 or 8 KB), which answers 502 instead of the question.
func TestLogoutQuestionCarriesNoOverlongRD(t *testing.T) {
	f := newFixture(t)
	cookies := f.login(t, "alice@example.com")
	r := request("POST", "/.portcullis/logout", cookies, "Accept", "text/html", "Sec-Fetch-Site", "cross-site")
	r.Body = io.NopCloser(strings.NewReader(url.Values{"rd": {"/tasks?q=" + strings.Repeat("ä", 2500)}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, _, _ := f.do(t, r)
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/.portcullis/logout/confirm" {
		t.Errorf("a 5 KB rd (15 KB escaped) from another site: %d to a Location of %d bytes, want 303 to the question without rd", resp.StatusCode, len(loc))
	}
}
