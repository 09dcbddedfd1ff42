package proxy

import (
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/test/echo"
)

// explainRuleSets are the rules FuzzExplainAgreesWithServe sends requests
// to, each in testConfig in place of its own, behind trusted_proxies that
// take in 127.0.0.2 (explainPeers): every kind of condition (path,
// path_prefix, path_regex, methods, headers, sources, when over the
// request and now), every action, allow_if over the profile, the request
// and now, and each default_action.
var explainRuleSets = []struct{ name, rules string }{
	{"paths", `rules:
  - name: api-credentials
    path_prefix: /api/
    headers: {Authorization: '^(Basic|Token|Bearer) '}
    action: bypass
  - name: health
    path: /health
    methods: [GET, HEAD]
    action: bypass
  - name: git
    path_regex: '/repo/[^/]+\.git/(info/refs|git-upload-pack)'
    action: bypass
  - name: admin-only
    path_prefix: /admin
    action: authenticate
    allow_if: '"admin" in roles'
  - name: blocked
    path: /blocked/
    action: deny
  - name: doc-writes
    path_prefix: /docs/
    methods: [POST, PUT, delete]
    action: deny
  - name: docs
    path_prefix: /docs/
    action: bypass
default_action: authenticate
`},
	{"requests", `rules:
  - name: office
    path_prefix: /internal/
    sources: [10.1.0.0/16, "::ffff:192.0.2.0/120", 127.0.0.3, "2001:db8::/32"]
    action: bypass
  - name: internal
    path_prefix: /internal/
    action: deny
  - name: by-host
    when: 'request.host == "admin.example.com"'
    action: deny
  - name: debug
    path_prefix: /debug/
    headers: {X-Debug: '^on$'}
    action: bypass
  - name: api-key
    when: '"X-Api-Key" in request.headers && request.method in ["GET", "HEAD"]'
    action: bypass
  - name: reports
    path_prefix: /reports/
    when: 'request.source startsWith "10." || request.source == ""'
    action: authenticate
    allow_if: '"admin" in roles || request.source == "10.1.2.3"'
  - name: levels
    path_prefix: /levels/
    when: 'int(request.headers["X-Level"]) > 2'
    action: deny
  - name: request-ids
    path_prefix: /ids/
    headers: {X-Request-Id: '^forged'}
    action: deny
default_action: bypass
`},
	{"profiles", `rules:
  - name: staff
    path_prefix: /staff/
    action: authenticate
    allow_if: '"staff" in groups && now.Year() > 2000 && request.method != "DELETE"'
  - name: own
    path_regex: '/users/[^/]+/.*'
    action: authenticate
    allow_if: 'request.path startsWith "/users/" + email + "/"'
  - name: host
    path_prefix: /host/
    action: authenticate
    allow_if: 'request.host == "cvat.example.com"'
  - name: team
    path_prefix: /team/
    action: authenticate
    allow_if: 'request.headers["X-Team"] == "blue"'
  - name: anyone
    path_prefix: /open/
    action: authenticate
default_action: deny
`},
}

// explainUsers are the claims an IdP sends for each user
// FuzzExplainAgreesWithServe may be signed in as (by the input's who): bob,
// in staff, alice, an admin with a username, and carol, in staff, whose
// claims have no sub, so that her login is refused and she has no session.
var explainUsers = []map[string]any{
	{"sub": "bob@example.com", "email": "bob@example.com", "groups": []any{"staff"}},
	{"sub": "alice@example.com", "email": "alice@example.com", "groups": []any{"cvat-admins"}, "preferred_username": "alice"},
	{"email": "carol@example.com", "groups": []any{"staff"}},
}

// explainPeers are the addresses FuzzExplainAgreesWithServe connects from,
// all loopback: a client, a trusted proxy (its X-Forwarded-For is
// believed) and an address a sources rule names.
var explainPeers = []netip.Addr{
	netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"),
}

// explainHeaderNames and explainHeaderValues are FuzzServeHTTP's picks and
// what the rule sets above read.
var (
	explainHeaderNames = slices.Concat(fuzzHeaderNames, []string{
		"X-Debug", "x_debug", "X-Api-Key", "X.Api.Key", "X-Level", "X-Team", "x-team", "Host",
		"X-Forwarded-For", "Connection",
	})
	explainHeaderValues = slices.Concat(fuzzHeaderValues, []string{
		"on", " on", "blue", "3", "7", "10.1.2.3", "::ffff:10.1.2.3", "192.0.2.7, 10.0.0.1", "10.1.2.3:5555",
		"[2001:db8::1]", "unknown", "admin.example.com", "ADMIN.example.com:443", "127.0.0.3", "forged-1", "X-Debug",
	})
)

// explainSeeds are the requests operators ask explain about and the tricks
// that make a path or a header mean something else to one reader than to
// another: method, request-target, header lines (separated by \n), the
// user signed in (0 none, 1 bob, 2 alice, 3 carol, refused) and the peer
// (explainPeers).
var explainSeeds = []struct {
	method, target, headers string
	who, peer               uint8
}{
	{"GET", "/api/tasks", "Authorization: Token abc", 0, 0},
	{"GET", "/api/tasks", "authorization: Bearer x\nAuthorization: Bearer y", 0, 0},
	{"GET", "/api/tasks", "Authorization: Token abc\nConnection: Authorization", 1, 0},
	{"GET", "/health", "", 0, 0},
	{"HEAD", "/health", "", 0, 0},
	{"head", "/health", "", 0, 0},
	{"POST", "/health", "", 1, 0},
	{"GET", "/health/", "", 1, 0},
	{"GET", "/repo/x.git/info/refs?service=git-upload-pack", "", 0, 0},
	{"GET", "/repo/x.git/info/refs/", "", 0, 0},
	{"GET", "/repo/a%2Fb.git/info/refs", "", 0, 0},
	{"GET", "/admin", "Accept: text/html", 0, 0},
	{"GET", "/admin/users", "", 1, 0},
	{"GET", "/admin/users", "", 2, 0},
	{"GET", "/ADMIN/users", "", 1, 0},
	{"GET", "/public/..%2Fadmin", "", 1, 0},
	{"GET", "/docs/../admin/x", "", 1, 0},
	{"GET", "/docs/%2e%2e/admin/x", "", 1, 0},
	{"GET", "//admin", "", 1, 0},
	{"GET", "/blocked", "", 0, 0},
	{"GET", "/blocked/", "", 0, 0},
	{"GET", "/blocked//", "", 0, 0},
	{"GET", "/blocked/.", "", 0, 0},
	{"DELETE", "/docs/a", "", 0, 0},
	{"delete", "/docs/a", "", 0, 0},
	{"PATCH", "/docs/a", "", 0, 0},
	{"GET", "/docs/a;x=1", "", 0, 0},
	{"GET", "/docs/a#frag", "", 0, 0},
	{"GET", "http://evil.example/docs/a", "", 0, 0},
	{"GET", "https://cvat.example.com/admin/x", "", 1, 0},
	{"OPTIONS", "*", "", 0, 0},
	{"GET", "/.portcullis/userinfo", "", 1, 0},
	{"GET", "/.portcullis/../admin", "", 1, 0},
	{"TRACE", "/docs/a", "", 0, 0},
	// Sources: the peer, or a trusted proxy's X-Forwarded-For, in every form.
	{"GET", "/internal/x", "", 0, 2},
	{"GET", "/internal/x", "X-Forwarded-For: 10.1.2.3", 0, 0},
	{"GET", "/internal/x", "X-Forwarded-For: 10.1.2.3", 0, 1},
	{"GET", "/internal/x", "X-Forwarded-For: ::ffff:192.0.2.7", 0, 1},
	{"GET", "/internal/x", "X-Forwarded-For: 10.1.2.3, 10.0.0.1", 0, 1},
	{"GET", "/internal/x", "X-Forwarded-For: 10.1.2.3\nX-Forwarded-For: 127.0.0.2", 0, 1},
	{"GET", "/internal/x", "X-Forwarded-For: [2001:db8::1]:443", 0, 1},
	{"GET", "/internal/x", "X_Forwarded_For: 10.1.2.3", 0, 1},
	{"GET", "/internal/x", "X-Forwarded-For: unknown, 10.1.2.3", 0, 1},
	{"GET", "/reports/q1", "X-Forwarded-For: 10.1.2.3", 1, 1},
	{"GET", "/reports/q1", "X-Forwarded-For: 10.9.9.9", 1, 1},
	{"GET", "/reports/q1", "X-Forwarded-For: garbage", 2, 1},
	// Headers: spellings, repeats, Host, and what the proxy sets itself.
	{"GET", "/debug/x", "X-Debug: on", 0, 0},
	{"GET", "/debug/x", "x_debug: on", 0, 0},
	{"GET", "/debug/x", "X-Debug: on\nX-Debug: on", 0, 0},
	{"GET", "/debug/x", "X-Debug:   on  ", 0, 0},
	{"GET", "/debug/x", "X-Debug: on\nConnection: X-Debug", 0, 0},
	{"GET", "/x", "X-Api-Key: k", 0, 0},
	{"GET", "/x", "X.Api.Key: k", 0, 0},
	{"POST", "/x", "X-Api-Key: k", 0, 0},
	{"GET", "/x", "Host: admin.example.com", 0, 0},
	{"GET", "/x", "Host: ADMIN.example.com", 0, 0},
	{"GET", "http://admin.example.com/x", "", 0, 0},
	{"GET", "/levels/x", "X-Level: 3", 0, 0},
	{"GET", "/levels/x", "X-Level: high", 0, 0},
	{"GET", "/ids/x", "X-Request-Id: forged-1", 0, 0},
	{"GET", "/ids/x", "X-Request-Id: forged-1", 0, 1},
	{"GET", "/x", "X-Forwarded-Host: admin.example.com", 0, 1},
	{"GET", "/x", "X-Original-URL: /internal/x\nX-HTTP-Method-Override: DELETE", 0, 0},
	// Profiles: roles, groups, allow_if over the request.
	{"GET", "/staff/x", "", 1, 0},
	{"GET", "/staff/x", "", 2, 0},
	{"DELETE", "/staff/x", "", 1, 0},
	{"GET", "/users/bob@example.com/x", "", 1, 0},
	{"GET", "/users/bob@example.com/../alice@example.com/x", "", 1, 0},
	{"GET", "/users/bob%40example.com/x", "", 1, 0},
	{"GET", "/host/x", "", 1, 0},
	{"GET", "/host/x", "Host: cvat.example.com:443", 1, 0},
	{"GET", "/team/x", "X-Team: blue", 1, 0},
	{"GET", "/team/x", "x_team: blue", 1, 0},
	{"GET", "/team/x", "X-Team: blue\nX-Team: red", 1, 0},
	{"GET", "/open/x", "X-Email: evil@example.com\nx.groups: admin", 2, 0},
	{"GET", "/open/x", "Accept: text/html", 0, 0},
	{"GET", "/open/x", "Accept: text/html\nSec-Fetch-Mode: cors", 0, 0},
	{"HEAD", "/open/x", "Accept: text/html", 0, 0},
	{"GET", "/open/x", "Connection: Cookie", 1, 0},
	// A login refused for want of a subject: the request goes on without
	// a session.
	{"GET", "/open/x", "", 3, 0},
	{"GET", "/open/x", "Accept: text/html", 3, 0},
	{"GET", "/staff/x", "", 3, 0},
	{"GET", "/admin/users", "", 3, 0},
	{"GET", "/docs/a", "", 3, 0},
}

// FuzzExplainAgreesWithServe asks `portcullis explain` and a running proxy
// about the same request and checks that explain says what serve did. The
// request (method, request-target, header lines and those the picks add,
// by FuzzServeHTTP's lists and explainHeaderNames') goes to the proxy as
// raw bytes from one of explainPeers, with the session of one of
// explainUsers or none, and to explain as the same lines, with --source the
// peer and --claims that user's claims. Explain's rule must be the one
// serve counted in rule_matches_total, and its decision what serve did:
// forwarded without identity (bypass) or with exactly the headers explain
// lists (authenticated), or not forwarded with the status explain names
// (denied, forbidden, unauthorized, redirect to the login page).
func FuzzExplainAgreesWithServe(f *testing.F) {
	configs := startExplainConfigs(f)
	for c := range configs {
		for _, s := range explainSeeds {
			f.Add(s.method, s.target, s.headers, []byte(nil), s.who, s.peer, uint8(c))
		}
	}
	iteration := 0
	f.Fuzz(func(t *testing.T, method, target, headers string, picks []byte, who, peer, config uint8) {
		iteration++
		probe := strconv.Itoa(iteration)
		for i := 0; i+1 < len(picks); i += 2 {
			headers += "\n" + explainHeaderNames[int(picks[i])%len(explainHeaderNames)] + ": " + explainHeaderValues[int(picks[i+1])%len(explainHeaderValues)]
		}
		fx := configs[int(config)%len(configs)]
		user := int(who) % (len(explainUsers) + 1) // 0: nobody
		var flags uint8
		if slices.ContainsFunc(strings.Split(headers, "\n"), isHostLine) {
			flags |= fuzzNoHost // the request's Host is the fuzzer's
		}
		var claims map[string]any
		if user > 0 {
			claims = explainUsers[user-1]
		}
		refusedLogin := user > 0 && fx.sessions[user-1] == ""
		if user > 0 && !refusedLogin {
			flags |= fuzzSession
		}
		raw := fuzzRequestBytes(method, target, "HTTP/1.1", headers, "", flags, fx.sessions[max(user-1, 0)], probe)
		if len(raw) > 16<<10 {
			return
		}
		sent, finished := preParse(raw)
		if !finished {
			return // the proxy would wait for a body: explain has none to describe
		}
		from := explainPeers[int(peer)%len(explainPeers)]
		fx.upstream.Reset()
		before := ruleMatches(t, fx.h)
		answers := exchangeRawFrom(t, from, fx.addr, raw, sent, finished)
		served := servedRule(before, ruleMatches(t, fx.h))
		var reached []echo.Request
		for _, got := range fx.upstream.Requests() {
			if slices.Contains(got.Header.Values(fuzzProbeHeader), probe) {
				reached = append(reached, got)
			}
		}

		// Explain gets the same lines but the session's: --claims stands
		// for it.
		lines := strings.Split(strings.TrimSuffix(string(raw), "\r\n\r\n"), "\r\n")[1:]
		if user > 0 && !refusedLogin {
			lines = slices.DeleteFunc(lines, func(l string) bool { return l == "Cookie: "+fx.sessions[user-1] })
		}
		refused := len(answers) == 0 || !answers[0].handler
		r, err := readRequest(method, target, lines)
		if err != nil {
			if !refused {
				t.Errorf("explain refuses the request (%v); serve's server passed it on, answer %d", err, answers[0].status)
			}
			return
		}
		if refused {
			t.Fatalf("serve's server refused the request (answers %v), yet explain describes it", answers)
		}
		e, err := Explain(fx.cfg, r, from, claims, "")
		if err != nil {
			t.Fatalf("explain: %v", err)
		}
		if said := strings.HasPrefix(e.Reason, loginRefused); said || refusedLogin {
			// The login's own mapping refused the user (no session), or
			// explain says it would: both or neither, once explain gets
			// that far. Serve then saw a request without a session, which
			// is what explain must describe without claims.
			if said != refusedLogin && (said || e.Roles != nil) {
				t.Errorf("explain says %s (%s) with roles %v; the login's mapping refused the user: %v", e.Decision, e.Reason, e.Roles, refusedLogin)
			}
			if r, err = readRequest(method, target, lines); err != nil {
				t.Fatal(err)
			}
			if e, err = Explain(fx.cfg, r, from, nil, ""); err != nil {
				t.Fatalf("explain without claims: %v", err)
			}
		}
		fx.compare(t, e, answers, served, reached)
		if t.Failed() {
			t.Logf("request to the %s rules from %s, signed in as %v:\n%q\nexplain: %+v", fx.name, from, claims["email"], raw, *e)
		}
	})
}

// explainConfig is one rule set FuzzExplainAgreesWithServe asks about,
// served on a listener of its own.
type explainConfig struct {
	*fixture
	name     string
	cfg      *Config // what explain reads
	addr     string
	sessions []string // the Cookie header of each of explainUsers' sessions
}

// startExplainConfigs serves each of explainRuleSets, once a process, and
// signs explainUsers in to each as their claims would at its OIDC IdP,
// through the login's own mapping (idp.OIDCProfile): a user it refuses
// gets no session ("").
func startExplainConfigs(f *testing.F) []*explainConfig {
	var configs []*explainConfig
	for _, set := range explainRuleSets {
		y := strings.Replace(testConfig, "trusted_proxies: [10.0.0.0/8]", "trusted_proxies: [10.0.0.0/8, 127.0.0.2]", 1)
		start := strings.Index(y, "rules:\n  - name: cvat-api-credentials")
		fx := newFixtureOf(f, y[:start]+set.rules)
		c := &explainConfig{fixture: fx, name: set.name, cfg: fx.h.cfg, addr: fx.serve(f)}
		ic, err := c.cfg.identityProvider("company")
		if err != nil {
			f.Fatal(err)
		}
		for _, claims := range explainUsers {
			p, err := idp.OIDCProfile(ic, maps.Clone(claims))
			if err != nil {
				c.sessions = append(c.sessions, "")
				continue
			}
			c.sessions = append(c.sessions, cookieHeader(fx.loginAs(f, *p)))
		}
		configs = append(configs, c)
	}
	return configs
}

// ruleMatches is rule_matches_total of h, by rule.
func ruleMatches(t *testing.T, h *Handler) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, m := range gather(t, h)["portcullis_rule_matches_total"].GetMetric() {
		out[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
	}
	return out
}

// servedRule is the rule whose count went up between before and after, ""
// for none.
func servedRule(before, after map[string]float64) string {
	for name, n := range after {
		if n > before[name] {
			return name
		}
	}
	return ""
}

// compare checks explain's e against what serve did with the request: its
// answers, the rule it counted and the requests the upstream got.
func (fx *explainConfig) compare(t *testing.T, e *Explanation, answers []answer, served string, reached []echo.Request) {
	t.Helper()
	if e.Decision == "endpoint" {
		if served != "" || len(reached) > 0 {
			t.Errorf("explain says a portcullis endpoint; serve matched rule %q and forwarded %d", served, len(reached))
		}
		return
	}
	if e.Rule != served {
		t.Errorf("explain says rule %q; serve matched %q", e.Rule, served)
	}
	status := answers[0].status
	switch e.Decision {
	case decisionBypass, decisionAuthenticated:
		if len(reached) != 1 {
			t.Errorf("explain says %s; the upstream got %d requests (answer %d)", e.Decision, len(reached), status)
			return
		}
		got := map[string]string{}
		for _, name := range fx.h.pass.Names() {
			if v := reached[0].Header.Values(name); len(v) > 0 && name != requestIDHeader {
				got[name] = strings.Join(v, ", ")
			}
		}
		want := e.Headers
		if want == nil {
			want = map[string]string{}
		}
		if !maps.Equal(got, want) {
			t.Errorf("explain says %s with headers %v; the upstream got %v", e.Decision, want, got)
		}
	default:
		if len(reached) > 0 {
			t.Errorf("explain says %s (%s); the upstream got the request, answer %d", e.Decision, e.Reason, status)
			return
		}
		if want := explainedStatus(e); status != want {
			t.Errorf("explain says %s (%s); serve answered %d", e.Decision, e.Reason, status)
		}
	}
}

// explainedStatus is the status explain's decision means: the one its
// reason starts with for denied, forbidden and internal ("403: allow_if is
// false"), 403 for a login it says would be refused.
func explainedStatus(e *Explanation) int {
	switch e.Decision {
	case decisionRedirect:
		return http.StatusFound
	case decisionUnauthorized:
		return http.StatusUnauthorized
	}
	if n, err := strconv.Atoi(e.Reason[:min(3, len(e.Reason))]); err == nil {
		return n
	}
	return http.StatusForbidden
}
