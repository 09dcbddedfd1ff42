package rules

import (
	"bufio"
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
)

func mustCompile(t testing.TB, list []Config, def Action) *Set {
	t.Helper()
	s, err := Compile(list, def, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

// newRequest builds a rules.Request the way the proxy does: from a request
// as net/http parses it, its normalized path and the client address.
func newRequest(t testing.TB, method, target, source string, header http.Header) *Request {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	for k, vs := range header {
		r.Header[k] = vs // as given: tests control canonical form themselves
	}
	p, err := CleanPath(r.URL.EscapedPath())
	if err != nil {
		t.Fatalf("CleanPath(%q): %v", r.URL.EscapedPath(), err)
	}
	addr := netip.Addr{}
	if source != "" {
		addr = netip.MustParseAddr(source)
	}
	return NewRequest(r, p, addr)
}

// cvatRules is the rule set of SPEC.md's example configuration.
var cvatRules = []Config{
	{
		Name:       "cvat-api-credentials",
		PathPrefix: "/api/",
		Headers:    map[string]string{"Authorization": "^(Basic|Token|Bearer) "},
		Action:     Bypass,
	},
	{
		Name:       "admin-only",
		PathPrefix: "/admin",
		Action:     Authenticate,
		AllowIf:    `"admin" in roles`,
	},
}

func TestMatchHeaders(t *testing.T) {
	set := mustCompile(t, cvatRules, Authenticate)
	tests := []struct {
		name   string
		path   string
		header http.Header
		want   string
	}{
		{"basic credentials bypass", "/api/tasks", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, "cvat-api-credentials"},
		{"token credentials bypass", "/api/tasks", http.Header{"Authorization": {"Token abc"}}, "cvat-api-credentials"},
		{"bearer credentials bypass", "/api/tasks", http.Header{"Authorization": {"Bearer eyJ"}}, "cvat-api-credentials"},
		{"no authorization header authenticates", "/api/tasks", nil, "default"},
		{"unknown scheme authenticates", "/api/tasks", http.Header{"Authorization": {"Digest x"}}, "default"},
		{"scheme without a space authenticates", "/api/tasks", http.Header{"Authorization": {"Bearer"}}, "default"},
		{"lower-case scheme authenticates", "/api/tasks", http.Header{"Authorization": {"bearer x"}}, "default"},
		{"two authorization headers never bypass", "/api/tasks", http.Header{"Authorization": {"Bearer a", "Bearer b"}}, "default"},
		{"second header invalid never bypasses", "/api/tasks", http.Header{"Authorization": {"Bearer a", ""}}, "default"},
		{"underscore variant never bypasses", "/api/tasks", http.Header{"Authorization_": {"Bearer a"}}, "default"},
		{"authorization_ suffix name never bypasses", "/api/tasks", http.Header{"Authorization_token": {"Bearer a"}}, "default"},
		{"non-canonical key never bypasses", "/api/tasks", http.Header{"authorization": {"Bearer a"}}, "default"},
		{"credentials outside /api/ authenticate", "/tasks", http.Header{"Authorization": {"Bearer a"}}, "default"},
		{"prefix needs its slash", "/api", http.Header{"Authorization": {"Bearer a"}}, "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := set.Match(newRequest(t, "GET", tt.path, "192.0.2.1", tt.header))
			if got.Name != tt.want {
				t.Fatalf("matched %q, want %q", got.Name, tt.want)
			}
		})
	}
}

func TestMatchHeaderOnTheWire(t *testing.T) {
	// Headers as net/http reads them from a connection, not as a test sets
	// them: a repeated Authorization line lands under one canonical key.
	set := mustCompile(t, cvatRules, Authenticate)
	tests := []struct {
		name, headers string
		want          Action
	}{
		{"one authorization line bypasses", "Authorization: Bearer x\r\n", Bypass},
		{"lower-case header name bypasses", "authorization: Bearer x\r\n", Bypass},
		{"two authorization lines authenticate", "Authorization: Bearer x\r\nauthorization: Basic y\r\n", Authenticate},
		{"underscore header name authenticates", "Authorization_: Bearer x\r\n", Authenticate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := "GET /api/tasks HTTP/1.1\r\nHost: cvat\r\n" + tt.headers + "\r\n"
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
			if err != nil {
				t.Fatal(err)
			}
			p, err := CleanPath(r.URL.EscapedPath())
			if err != nil {
				t.Fatal(err)
			}
			if got := set.Match(NewRequest(r, p, netip.MustParseAddr("192.0.2.1"))); got.Action != tt.want {
				t.Fatalf("action %q (rule %q), want %q", got.Action, got.Name, tt.want)
			}
		})
	}
}

func TestMatchPathsAndMethods(t *testing.T) {
	set := mustCompile(t, []Config{
		{Name: "health", Path: "/healthz", Methods: []string{"get", "head"}, Action: Bypass},
		{Name: "static", PathRegex: `/static/.*\.(js|css)`, Action: Bypass},
		{Name: "no-delete", Methods: []string{"DELETE"}, Action: Deny},
		{Name: "reports", PathPrefix: "/reports/", Methods: []string{"GET"}, Action: Deny},
		{Name: "probe", Path: "/probe", Methods: []string{"HEAD"}, Action: Bypass},
		{Name: "spaced", Path: "/spaced", Methods: []string{" post "}, Action: Deny},
	}, Authenticate)
	tests := []struct {
		name, method, path, want string
	}{
		{"exact path with a listed method matches", "GET", "/healthz", "health"},
		{"methods are compared upper-cased", "HEAD", "/healthz", "health"},
		{"exact path with another method falls through", "POST", "/healthz", "default"},
		{"exact path does not match a longer path", "GET", "/healthz/x", "default"},
		{"exact path matches after normalization", "GET", "/a/../healthz", "health"},
		{"regex matches the whole path", "GET", "/static/app.js", "static"},
		{"regex is anchored at the end", "GET", "/static/app.js.map", "default"},
		{"regex is anchored at the start", "GET", "/x/static/app.js", "default"},
		{"method-only rule matches any path", "DELETE", "/anything", "no-delete"},
		{"first match wins", "DELETE", "/static/app.js", "static"},
		// HEAD is GET without the body, and applications answer it with
		// their GET handler (Go's ServeMux, Django, Rails, Express): a
		// rule for GET that let HEAD fall through would give it another
		// decision for the same handler.
		{"a GET rule matches HEAD too", "HEAD", "/reports/2026", "reports"},
		{"a HEAD rule does not match GET", "GET", "/probe", "default"},
		{"a method written with spaces around it is the method", "POST", "/spaced", "spaced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := set.Match(newRequest(t, tt.method, tt.path, "192.0.2.1", nil)); got.Name != tt.want {
				t.Fatalf("matched %q, want %q", got.Name, tt.want)
			}
		})
	}
}

func TestMatchSources(t *testing.T) {
	set := mustCompile(t, []Config{
		{Name: "office", Sources: []string{"10.0.0.0/8", "2001:db8::/32", "192.0.2.7"}, Action: Bypass},
		{Name: "mapped", Sources: []string{"::ffff:172.16.0.0/108"}, Action: Deny},
	}, Authenticate)
	tests := []struct {
		name, source, want string
	}{
		{"address inside an IPv4 CIDR matches", "10.1.2.3", "office"},
		{"address outside every CIDR falls through", "11.1.2.3", "default"},
		{"bare IP matches itself", "192.0.2.7", "office"},
		{"bare IP does not match its neighbour", "192.0.2.8", "default"},
		{"IPv6 address inside a CIDR matches", "2001:db8::1", "office"},
		{"IPv4-mapped IPv6 client matches the IPv4 CIDR", "::ffff:10.9.9.9", "office"},
		{"IPv4 client matches a CIDR written IPv4-mapped", "172.16.3.4", "mapped"},
		{"zoned address matches without its zone", "2001:db8::1%eth0", "office"},
		{"unknown client address never matches a source rule", "", "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := set.Match(newRequest(t, "GET", "/", tt.source, nil)); got.Name != tt.want {
				t.Fatalf("matched %q, want %q", got.Name, tt.want)
			}
		})
	}
	// The proxy resolves the client address through trusted_proxies before
	// calling NewRequest: the rule sees that address, never RemoteAddr.
	t.Run("address given to NewRequest wins over RemoteAddr", func(t *testing.T) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = "10.0.0.1:1234" // a trusted proxy inside the office range
		r.Header.Set("X-Forwarded-For", "10.0.0.2")
		if got := set.Match(NewRequest(r, "/", netip.MustParseAddr("203.0.113.9"))); got.Name != "default" {
			t.Fatalf("matched %q, want default", got.Name)
		}
	})
}

func TestMatchWhen(t *testing.T) {
	set := mustCompile(t, []Config{
		{Name: "read-only", When: `request.method in ["GET", "HEAD"] && request.path startsWith "/docs"`, Action: Bypass},
		{Name: "office-hours", When: `now.Hour() < 8 || now.Hour() >= 18`, Action: Deny},
		{Name: "beta-host", When: `request.host == "beta.example.com" && request.source startsWith "10."`, Action: Deny},
		{Name: "debug-header", When: `request.headers["X-Debug"] == "1"`, Action: Deny},
	}, Authenticate)
	noon := time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC)
	night := time.Date(2025, 3, 4, 23, 0, 0, 0, time.UTC)
	tests := []struct {
		name, method, path, host, source string
		header                           http.Header
		now                              time.Time
		want                             string
	}{
		{"GET on docs matches the method expression", "GET", "/docs/x", "a", "192.0.2.1", nil, noon, "read-only"},
		{"POST on docs does not", "POST", "/docs/x", "a", "192.0.2.1", nil, noon, "default"},
		{"time expression matches at night", "POST", "/x", "a", "192.0.2.1", nil, night, "office-hours"},
		{"time expression does not match at noon", "POST", "/x", "a", "192.0.2.1", nil, noon, "default"},
		{"host and source are visible", "GET", "/x", "beta.example.com", "10.0.0.1", nil, noon, "beta-host"},
		{"headers are visible by canonical name", "GET", "/x", "a", "192.0.2.1", http.Header{"X-Debug": {"1"}}, noon, "debug-header"},
		{"repeated headers are joined", "GET", "/x", "a", "192.0.2.1", http.Header{"X-Debug": {"1", "1"}}, noon, "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newRequest(t, tt.method, tt.path, tt.source, tt.header)
			req.Host = tt.host
			got, err := set.Evaluate(req, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tt.want {
				t.Fatalf("matched %q, want %q", got.Name, tt.want)
			}
		})
	}
}

func TestMatchUsesTheClock(t *testing.T) {
	set := mustCompile(t, []Config{{Name: "y2k", When: `now.Year() == 2000`, Action: Deny}}, Bypass)
	set.now = func() time.Time { return time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) }
	if got := set.Match(newRequest(t, "GET", "/", "192.0.2.1", nil)); got.Name != "y2k" {
		t.Fatalf("matched %q, want y2k", got.Name)
	}
}

func TestMatchFailingWhenDenies(t *testing.T) {
	var logged bytes.Buffer
	set, err := Compile([]Config{
		{Name: "broken", When: `int(request.headers["Authorization"]) > 0`, Action: Deny},
		{Name: "open", Action: Bypass},
	}, Authenticate, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	req := newRequest(t, "GET", "/", "192.0.2.1", http.Header{"Authorization": {"Basic c2VjcmV0"}})
	if _, err := set.Evaluate(req, time.Now()); err == nil || !strings.Contains(err.Error(), "c2VjcmV0") {
		t.Fatalf("Evaluate: %v, want the failing expression's whole error (for explain)", err)
	}
	if got := set.Match(req); got.Name != "error" || got.Action != Deny {
		t.Fatalf("matched %q (%s), want the deny rule \"error\"", got.Name, got.Action)
	}
	// The log line names the rule and the failure, never the header's value.
	if line := logged.String(); !strings.Contains(line, "rule=broken") || strings.Contains(line, "c2VjcmV0") {
		t.Errorf("log line %q: want rule=broken and not the credentials", line)
	}
}

func TestMatchDefault(t *testing.T) {
	tests := []struct {
		name string
		def  Action
		want Action
	}{
		{"empty default action authenticates", "", Authenticate},
		{"deny default applies", Deny, Deny},
		{"bypass default applies", Bypass, Bypass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set := mustCompile(t, nil, tt.def)
			got := set.Match(newRequest(t, "GET", "/", "192.0.2.1", nil))
			if got == nil || got.Name != "default" || got.Action != tt.want {
				t.Fatalf("got %+v, want default rule with %s", got, tt.want)
			}
		})
	}
}

func TestAllow(t *testing.T) {
	set := mustCompile(t, []Config{
		{Name: "admin-only", PathPrefix: "/admin", Action: Authenticate, AllowIf: `"admin" in roles`},
		{Name: "annotators", PathPrefix: "/tasks", Action: Authenticate, AllowIf: `"annotators" in groups && request.method == "GET"`},
		{Name: "staff", PathPrefix: "/staff", Action: Authenticate, AllowIf: `email endsWith "@example.com" && claims.level >= 3`},
		{Name: "office", PathPrefix: "/office", Action: Authenticate, AllowIf: `request.headers["X-Office"] == "yes"`},
		{Name: "anyone", Action: Authenticate},
	}, Authenticate)
	tests := []struct {
		name, method, path string
		header             http.Header
		profile            idp.Profile
		want               bool
	}{
		{"admin role is allowed", "GET", "/admin", nil, idp.Profile{Roles: []string{"admin"}}, true},
		{"user role is refused", "GET", "/admin", nil, idp.Profile{Roles: []string{"user"}}, false},
		{"no roles are refused", "GET", "/admin", nil, idp.Profile{}, false},
		{"group and method are allowed", "GET", "/tasks", nil, idp.Profile{Groups: []string{"annotators"}}, true},
		{"group with another method is refused", "POST", "/tasks", nil, idp.Profile{Groups: []string{"annotators"}}, false},
		{"other group is refused", "GET", "/tasks", nil, idp.Profile{Groups: []string{"viewers"}}, false},
		{"email and claim are allowed", "GET", "/staff", nil, idp.Profile{Email: "a@example.com", Claims: map[string]any{"level": 3}}, true},
		{"low claim is refused", "GET", "/staff", nil, idp.Profile{Email: "a@example.com", Claims: map[string]any{"level": 1}}, false},
		{"request headers are visible after login", "GET", "/office", http.Header{"X-Office": {"yes"}}, idp.Profile{}, true},
		{"rule without allow_if allows", "GET", "/x", nil, idp.Profile{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newRequest(t, tt.method, tt.path, "192.0.2.1", tt.header)
			rule := set.Match(req)
			got, err := rule.Allow(&tt.profile, req, time.Now())
			if err != nil {
				t.Fatalf("Allow (rule %s): %v", rule.Name, err)
			}
			if got != tt.want {
				t.Fatalf("Allow (rule %s) = %v, want %v", rule.Name, got, tt.want)
			}
		})
	}
}

func TestAllowFailingExpressionIsAnError(t *testing.T) {
	set := mustCompile(t, []Config{{Name: "c", Action: Authenticate, AllowIf: `claims.level > 2`}}, Authenticate)
	req := newRequest(t, "GET", "/", "192.0.2.1", nil)
	ok, err := set.Match(req).Allow(&idp.Profile{Claims: map[string]any{"level": "high"}}, req, time.Time{})
	if err == nil || ok {
		t.Fatalf("Allow = %v, %v; want false and an error", ok, err)
	}
}

func TestCompileErrors(t *testing.T) {
	valid := func(c Config) Config {
		if c.Name == "" {
			c.Name = "r"
		}
		if c.Action == "" {
			c.Action = Authenticate
		}
		return c
	}
	tests := []struct {
		name string
		list []Config
		def  Action
		want string // the key and a piece of the reason
	}{
		{"unknown default action", nil, "allow", `default_action: unknown action "allow"`},
		{"unknown action", []Config{valid(Config{Action: "allow"})}, "", `rules[0].action: unknown action "allow"`},
		{"missing action", []Config{{Name: "r"}}, "", `rules[0].action: required`},
		{"missing name", []Config{{Action: Bypass}}, "", `rules[0].name: required`},
		{"name unfit for a metric label", []Config{valid(Config{Name: "my rule"})}, "", `rules[0].name: "my rule" may contain only`},
		{"duplicate name", []Config{valid(Config{}), valid(Config{})}, "", `rules[1].name: "r" is already the name of rules[0]`},
		{"reserved name default", []Config{valid(Config{Name: "default"})}, "", `rules[0].name: "default" is reserved`},
		{"reserved name error", []Config{valid(Config{Name: "error"})}, "", `rules[0].name: "error" is reserved`},
		{"bad CIDR", []Config{valid(Config{Sources: []string{"10.0.0.0/33"}})}, "", `rules[0].sources[0]: `},
		{"bad bare IP", []Config{valid(Config{Sources: []string{"10.0.0.300"}})}, "", `rules[0].sources[0]: `},
		{"bad path regex", []Config{valid(Config{PathRegex: "/api/("})}, "", `rules[0].path_regex: error parsing regexp`},
		{"bad header regex", []Config{valid(Config{Headers: map[string]string{"Authorization": "^(Basic"}})}, "", `rules[0].headers.Authorization: error parsing regexp`},
		{"empty header name", []Config{valid(Config{Headers: map[string]string{"": "x"}})}, "", `rules[0].headers: empty header name`},
		{"header name with a space", []Config{valid(Config{Headers: map[string]string{"X Y": "x"}})}, "", `rules[0].headers.X Y: "X Y" is not a valid header name`},
		{"bad method", []Config{valid(Config{Methods: []string{"GET", "PO ST"}})}, "", `rules[0].methods[1]: "PO ST" is not an HTTP method`},
		{"relative path", []Config{valid(Config{Path: "api"})}, "", `rules[0].path: must start with /`},
		{"path that normalization changes", []Config{valid(Config{PathPrefix: "/api//v1"})}, "", `rules[0].path_prefix: can never match: requests are normalized first; write "/api/v1"`},
		{"path with a semicolon", []Config{valid(Config{Path: "/a;b"})}, "", `rules[0].path: can never match: semicolon`},
		{"two path kinds", []Config{valid(Config{Path: "/a", PathPrefix: "/a/"})}, "", `rules[0]: set only one of path, path_prefix and path_regex`},
		{"typo in when", []Config{valid(Config{When: `request.methd == "GET"`})}, "", `rules[0].when: `},
		{"typo in allow_if", []Config{valid(Config{AllowIf: `'admin' in rolez`})}, "", `rules[0].allow_if: unknown name rolez (at 1:12)`},
		{"non-boolean allow_if", []Config{valid(Config{AllowIf: `email`})}, "", `rules[0].allow_if: `},
		{"allow_if on a bypass rule", []Config{valid(Config{Action: Bypass, AllowIf: `true`})}, "", `rules[0].allow_if: only an authenticate rule`},
		{"allow_if on a deny rule", []Config{valid(Config{Action: Deny, AllowIf: `true`})}, "", `rules[0].allow_if: only an authenticate rule`},
		{"basic_auth on a bypass rule", []Config{valid(Config{Action: Bypass, BasicAuth: "corp-ldap"})}, "", `rules[0].basic_auth: only an authenticate rule`},
		{"problem in a later rule names its index", []Config{valid(Config{Name: "a"}), valid(Config{Name: "b", Sources: []string{"x"}})}, "", `rules[1].sources[0]: `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.list, tt.def, slog.New(slog.DiscardHandler))
			if err == nil {
				t.Fatalf("Compile succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "rules[") && !strings.HasPrefix(line, "default_action: ") {
					t.Errorf("error line %q does not start with a key", line)
				}
			}
		})
	}
}

func TestCompileReportsEveryProblem(t *testing.T) {
	_, err := Compile([]Config{
		{Name: "", Action: "nope", PathRegex: "("},
		{Name: "ok", Action: Bypass, Sources: []string{"bad"}},
	}, "maybe", slog.New(slog.DiscardHandler))
	for _, key := range []string{"default_action:", "rules[0].name:", "rules[0].action:", "rules[0].path_regex:", "rules[1].sources[0]:"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error %v does not report %s", err, key)
		}
	}
}

func TestHeadersMapBuiltOnlyWhenNeeded(t *testing.T) {
	tests := []struct {
		name, when string
		want       bool
	}{
		{"method-only expression does not build headers", `request.method == "GET"`, false},
		{"header index builds headers", `request.headers["X-A"] == "1"`, true},
		{"header in-check builds headers", `"X-A" in request.headers`, true},
		{"whole request passed on builds headers", `toJSON(request) != ""`, true},
		{"request bound to a variable builds headers", `let r = request; r.method == "GET"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set := mustCompile(t, []Config{{Name: "w", When: tt.when, Action: Deny}}, Authenticate)
			req := newRequest(t, "GET", "/", "192.0.2.1", http.Header{"X-A": {"1"}})
			set.Match(req)
			if got := req.Headers != nil; got != tt.want {
				t.Fatalf("headers built = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	set := mustCompile(t, cvatRules, Authenticate)
	reqs := map[string]*Request{
		"API call with credentials": newRequest(t, "GET", "/api/tasks", "192.0.2.1", http.Header{"Authorization": {"Token abc"}}),
		"browser on the admin page": newRequest(t, "GET", "/admin/users", "192.0.2.1", nil),
		"browser elsewhere":         newRequest(t, "GET", "/tasks/1", "192.0.2.1", nil),
	}
	for name, req := range reqs {
		if n := testing.AllocsPerRun(100, func() { set.Match(req) }); n != 0 {
			t.Errorf("%s: Match allocates %v times per request", name, n)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	set := mustCompile(b, cvatRules, Authenticate)
	reqs := []*Request{
		newRequest(b, "GET", "/api/tasks?page=2", "192.0.2.1", http.Header{"Authorization": {"Token abc"}}),
		newRequest(b, "GET", "/admin/users", "192.0.2.1", nil),
		newRequest(b, "GET", "/tasks/1/jobs", "192.0.2.1", http.Header{"Accept": {"text/html"}}),
		newRequest(b, "POST", "/api/auth/login", "192.0.2.1", nil),
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		set.Match(reqs[i%len(reqs)])
	}
}
