package proxy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/process"
)

// withLDAP is minimal with an LDAP IdP next to the OIDC one.
const withLDAP = minimal + `    - id: corp-ldap
      protocol: LDAP
      url: ldaps://ad.example.com
      bind_dn: "CN=cvat_bind,CN=Users,DC=ad,DC=example,DC=com"
      bind_password: secret
      user_search: {base_dn: "CN=Users,DC=ad,DC=example,DC=com", filter: "(sAMAccountName={username})"}
`

func TestCheckBasicAuth(t *testing.T) {
	tests := []struct {
		name, rules, env, want string
	}{
		{"basic_auth naming the LDAP IdP is valid", "basic_auth: corp-ldap", "", ""},
		{"basic_auth naming an unknown IdP is refused", "basic_auth: nope", "",
			`rules[0].basic_auth: no identity provider "nope" in sso.identity_providers`},
		{"basic_auth naming an OIDC IdP is refused", "basic_auth: company", "",
			`rules[0].basic_auth: "company" uses protocol OIDC; basic_auth needs an LDAP identity provider`},
		{"the LDAP IdP's keys are checked under its entry", "basic_auth: corp-ldap", "insecure_skip_verify",
			"sso.identity_providers[1].insecure_skip_verify: refused outside development"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			yaml := withLDAP
			if tc.env != "" {
				yaml += "      " + tc.env + ": true\n"
			}
			yaml += "rules:\n  - name: legacy\n    path_prefix: /legacy/\n    action: authenticate\n    " + tc.rules + "\n"
			err := checkYAML(t, yaml, nil)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCheckLDAPBindPasswordFromEnv(t *testing.T) {
	yaml := strings.Replace(withLDAP, "      bind_password: secret\n", "", 1)
	if err := checkYAML(t, yaml, nil); err == nil || !strings.Contains(err.Error(), "PORTCULLIS_IDP_CORP_LDAP_BIND_PASSWORD") {
		t.Errorf("without a bind password: %v, want an error naming the env override", err)
	}
	if err := checkYAML(t, yaml, map[string]string{"PORTCULLIS_IDP_CORP_LDAP_BIND_PASSWORD": "x"}); err != nil {
		t.Errorf("with the env override: %v", err)
	}
}

// A Basic auth check is forgotten once it is stale, not only once the
// cache is full: each entry holds the user's profile, groups included, and
// a proxy that ran for days held every set of credentials that had signed
// in since it started, up to maxBasicAuthEntries.
func TestBasicCacheForgetsStaleEntries(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	c := newBasicCache(basicAuthTTL, maxBasicAuthEntries)
	const perHour = 500
	for hour := range 10 {
		now := t0.Add(time.Duration(hour) * time.Hour)
		for i := range perHour {
			c.put(c.key("corp", fmt.Sprintf("user%d-%d", hour, i), "pw"), &idp.Profile{Groups: []string{"staff"}}, now)
		}
	}
	if n := len(c.entries); n > 2*perHour {
		t.Errorf("after 10 hours of %d new credentials an hour, %d entries, want at most %d (two hours')", perHour, n, 2*perHour)
	}
}

// The Basic auth cache is bounded in the memory its profiles hold, not only
// in number: a user whose password is right can sign in under as many
// spellings of the username as the directory accepts (case, spaces), each
// an entry of its own with its own copy of the groups, and 10,000 of a user
// with 300 groups named by their DN would hold about 200 MiB.
func TestBasicCacheBoundsTheMemoryItHolds(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	c := newBasicCache(basicAuthTTL, maxBasicAuthEntries)
	before := liveHeap()
	for i := range 4000 {
		groups := make([]string, 300)
		for g := range groups {
			groups[g] = fmt.Sprintf("cn=group-%d,ou=groups,dc=example,dc=com", g)
		}
		c.put(c.key("corp", fmt.Sprintf("alice%d", i), "alice-pw"), &idp.Profile{Sub: "alice", Groups: groups}, t0)
	}
	held := int64(liveHeap()) - int64(before)
	runtime.KeepAlive(c)
	t.Logf("%d entries, %d KiB live", len(c.entries), held>>10)
	if held > 2*maxBasicAuthBytes {
		t.Errorf("4000 entries of 300 groups hold %d KiB, want at most about %d", held>>10, maxBasicAuthBytes>>10)
	}
}

func TestBasicCache(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	c := newBasicCache(time.Minute, 3)
	k := c.key("corp", "alice", "alice-pw")
	c.put(k, &idp.Profile{Sub: "alice", Roles: []string{"admin"}}, t0)

	if p, _, ok := c.get(k, t0.Add(59*time.Second)); !ok || p.Sub != "alice" {
		t.Errorf("fresh entry not found: %v %v", p, ok)
	}
	if _, _, ok := c.get(k, t0.Add(time.Minute)); ok {
		t.Errorf("entry found after its TTL")
	}
	for _, other := range [][3]string{
		{"corp", "alice", "alice-pwx"}, {"corp", "alicealice-pw", ""}, {"corp2", "alice", "alice-pw"}, {"labs", "alice", "alice-pw"}, {"corpalice", "", "alice-pw"},
	} {
		if c.key(other[0], other[1], other[2]) == k {
			t.Errorf("%q has the same key as corp/alice/alice-pw", other)
		}
	}
	if newBasicCache(time.Minute, 3).key("corp", "alice", "alice-pw") == k {
		t.Errorf("two caches key alike: the key is not salted")
	}
	if bytes.Contains(k[:], []byte("alice-pw")) {
		t.Errorf("the key carries the password")
	}
	for i := range 10 {
		c.put(c.key("corp", "u", string(rune('a'+i))), &idp.Profile{}, t0)
	}
	if n := len(c.entries); n > 3 {
		t.Errorf("%d entries, want at most 3", n)
	}
}

// accountRefusingChecker is a directory that knows the password but refuses
// the account as it is (AD's password expired, data 532).
type accountRefusingChecker struct{}

func (accountRefusingChecker) Ready() error { return nil }

func (accountRefusingChecker) Authenticate(*http.Request, string, string, func(string) error) (*idp.Profile, error) {
	return nil, fmt.Errorf("ldap corp-ldap: %w", &idp.AccountError{Code: "532", Reason: "Your password has expired."})
}

// A user whose password is right but whose account the directory refuses
// as it is gets the directory's reason on the form, not "Wrong username or
// password", which would have them try again and again.
func TestLDAPAccountRefusalReachesTheUser(t *testing.T) {
	h := newTestHandler(t, withLDAP)
	h.providers["corp-ldap"].impl = accountRefusingChecker{}
	rec := postLDAPForm(t, h, openLDAPForm(t, h), "alice", "old-pw")
	body := rec.Body.String()
	if rec.Code != http.StatusUnauthorized || !strings.Contains(body, "Your password has expired.") || strings.Contains(body, "Wrong username") {
		t.Fatalf("login: %d %s; want 401 with the directory's reason", rec.Code, body)
	}
}

// panickingChecker is a password check with a bug.
type panickingChecker struct{}

func (panickingChecker) Ready() error { return nil }

func (panickingChecker) Authenticate(*http.Request, string, string, func(string) error) (*idp.Profile, error) {
	panic("a bug in the password check")
}

// A panic in a Basic auth check, which runs in a goroutine of its own for
// the requests that share it, is a 503 and a log line, not the end of the
// process: net/http recovers the panics of a request's goroutine only.
func TestLDAPBasicAuthCheckThatPanicsIs503(t *testing.T) {
	h := newTestHandler(t, withLDAP+"rules:\n  - name: legacy\n    path_prefix: /legacy/\n    action: authenticate\n    basic_auth: corp-ldap\n")
	h.providers["corp-ldap"].impl = panickingChecker{}
	logs := &process.Output{}
	h.log = slog.New(slog.NewJSONHandler(logs, nil))
	r := httptest.NewRequest("GET", "/legacy/api", nil)
	r.SetBasicAuth("alice", "alice-pw")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("%d, want 503: %s", rec.Code, rec.Body)
	}
	if !strings.Contains(logs.String(), "a bug in the password check") {
		t.Errorf("the panic is not in the log:\n%s", logs)
	}
}

// ldapForm is the LDAP login form as served: its state and flow cookies.
type ldapForm struct {
	state   string
	cookies []*http.Cookie
}

// openLDAPForm gets corp-ldap's login form from h.
func openLDAPForm(t testing.TB, h *Handler) ldapForm {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/.portcullis/ldap/corp-ldap", nil))
	m := regexp.MustCompile(`name="state" value="([^"]+)"`).FindStringSubmatch(rec.Body.String())
	if rec.Code != http.StatusOK || m == nil {
		t.Fatalf("form: %d %s", rec.Code, rec.Body)
	}
	return ldapForm{m[1], rec.Result().Cookies()}
}

// postLDAPForm posts f to h as a browser would, signed in as username.
func postLDAPForm(t testing.TB, h *Handler, f ldapForm, username, password string) *httptest.ResponseRecorder {
	t.Helper()
	return postLDAPFormFrom(t, h, f, "", username, password)
}

// postLDAPFormFrom is postLDAPForm from a browser at addr ("": httptest's
// one address).
func postLDAPFormFrom(t testing.TB, h *Handler, f ldapForm, addr, username, password string) *httptest.ResponseRecorder {
	t.Helper()
	form := url.Values{"username": {username}, "password": {password}, "state": {f.state}}
	r := httptest.NewRequest("POST", "/.portcullis/ldap/corp-ldap", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if addr != "" {
		r.RemoteAddr = addr + ":40000"
	}
	for _, c := range f.cookies {
		r.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// manyGroupsChecker signs everyone in with n groups of random names, which
// compress no better than a real directory's DNs.
type manyGroupsChecker struct{ n int }

func (manyGroupsChecker) Ready() error { return nil }

func (c manyGroupsChecker) Authenticate(_ *http.Request, username, _ string, _ func(string) error) (*idp.Profile, error) {
	return &idp.Profile{IdP: "corp-ldap", Sub: username, Email: username + "@example.com", Groups: randomGroups(c.n)}, nil
}

// randomGroups is n group names of 22 random characters each.
func randomGroups(n int) []string {
	groups := make([]string, n)
	for i := range groups {
		groups[i] = session.NewState()
	}
	return groups
}

// A profile too large for the cookie store's cookies is refused at login
// with a page that says so, and audited as session_too_large, rather than
// "Your session could not be saved".
func TestLoginTooLargeForTheCookies(t *testing.T) {
	h := newTestHandler(t, withLDAP)
	h.providers["corp-ldap"].impl = manyGroupsChecker{n: 3000}
	logs := &process.Output{}
	h.log = slog.New(slog.NewJSONHandler(logs, nil))
	rec := postLDAPForm(t, h, openLDAPForm(t, h), "alice", "alice-pw")
	body := rec.Body.String()
	if rec.Code != http.StatusInternalServerError || !strings.Contains(body, "more groups or details than a sign-in here can hold") {
		t.Fatalf("login: %d %s; want 500 saying the account is too large", rec.Code, body)
	}
	for _, c := range rec.Result().Cookies() {
		if strings.HasPrefix(c.Name, h.cookies.Name()) && !strings.Contains(c.Name, "_login_") && c.MaxAge >= 0 {
			t.Errorf("a session cookie was set: %s", c.Name)
		}
	}
	if !strings.Contains(logs.String(), `"reason":"session_too_large"`) {
		t.Errorf("no login_failed line with reason session_too_large:\n%s", logs)
	}
}

// On a basic_auth rule, Basic credentials are checked at the directory or
// refused, even beside a session: a request that carried them past the
// check would hand the user's directory password to the upstream, which
// reads them as leniently as Django REST framework does (the scheme is the
// value's first word, after any white space) and whichever of several
// Authorization lines it likes.
func TestBasicAuthRuleNeverForwardsBasicCredentials(t *testing.T) {
	f := newFixtureOf(t, withLegacyRule("ldap://127.0.0.1:1"))
	f.h.providers["corp-ldap"].impl = directoryDown{}
	bob := f.login(t, "bob@example.com")
	for _, tc := range []struct {
		name           string
		authorizations []string
	}{
		{"Basic credentials after another scheme's", []string{"Bearer x", bobBasic}},
		{"Basic credentials before another scheme's", []string{bobBasic, "Bearer x"}},
		{"Basic credentials after a tab", []string{"Basic\t" + bobBasic[len("Basic "):]}},
		{"Basic credentials after several spaces", []string{"basic   " + bobBasic[len("Basic "):]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := request("GET", "/legacy/x", bob)
			r.Header["Authorization"] = tc.authorizations
			resp, got, reached := f.do(t, r)
			if reached {
				t.Errorf("upstream got Authorization %q", got.Header["Authorization"])
			}
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%d, want 401", resp.StatusCode)
			}
		})
	}
}

// On a basic_auth rule the right password is not the whole check: the
// entry's admission rules apply as at a login, so an account they refuse
// gets 403 and nothing reaches the upstream (in a real directory: bob is
// not in cvat-admins).
func TestBasicAuthRuleAppliesTheAdmissionRules(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	y := strings.Replace(withLegacyRule(dir.URL), "(uid={username}))\"}\n", "(uid={username}))\"}\n"+
		"      group_search: {base_dn: \""+ldapserver.GroupsDN+"\", filter: \"(&(objectClass=groupOfNames)(member={dn}))\"}\n"+
		"      allowed_groups: [cvat-admins]\n", 1)
	f := newFixtureOf(t, y)
	for _, tc := range []struct {
		user, password string
		want           int
	}{
		{ldapserver.Alice, ldapserver.AlicePassword, http.StatusOK},
		{ldapserver.Bob, ldapserver.BobPassword, http.StatusForbidden},
	} {
		t.Run(tc.user, func(t *testing.T) {
			r := request("GET", "/legacy/x", nil, "Accept", "application/json")
			r.SetBasicAuth(tc.user, tc.password)
			resp, _, reached := f.do(t, r)
			if resp.StatusCode != tc.want || reached != (tc.want == http.StatusOK) {
				t.Errorf("%d (upstream reached: %v), want %d", resp.StatusCode, reached, tc.want)
			}
		})
	}
}

// markupChecker is a directory where every password is wrong, and whose
// one account, markup, has an address at a domain that is markup too.
type markupChecker struct{}

func (markupChecker) Ready() error { return nil }

func (markupChecker) Authenticate(_ *http.Request, username, _ string, _ func(string) error) (*idp.Profile, error) {
	if username != "markup" {
		return nil, fmt.Errorf("ldap corp-ldap: %w", idp.ErrInvalidCredentials)
	}
	return &idp.Profile{IdP: "corp-ldap", Sub: "markup", Email: `m@"><script>alert(1)</script>.example`, EmailVerified: true}, nil
}

// What a client types and what a directory says reach the login pages as
// text, never as markup: the username the form shows again after a wrong
// password, and the email domain an admission refusal names. Trail of Bits'
// 2023 audit of caddy-security found request text reflected into its portal
// as script ("client-side code execution"); the pages' html/template
// escapes, and their Content-Security-Policy allows no script besides.
func TestLoginPagesEscapeWhatTheyShow(t *testing.T) {
	const markup = `"><script>alert(1)</script>`
	h := newTestHandler(t, withLDAP+"      allowed_email_domains: [example.com]\n")
	h.providers["corp-ldap"].impl = markupChecker{}
	h.pause = func(context.Context, time.Time) {}
	for _, tc := range []struct{ name, username string }{
		{"the username after a wrong password", markup},
		{"the domain an admission refusal names", "markup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := postLDAPForm(t, h, openLDAPForm(t, h), tc.username, "pw")
			body := rec.Body.String()
			if rec.Code < 400 || strings.Contains(body, "<script>") {
				t.Fatalf("status %d, body with the markup unescaped:\n%s", rec.Code, body)
			}
			// The form is HTML; a refusal is JSON to a client that asks
			// for no HTML, and escaped there too.
			if !strings.Contains(body, "&lt;script&gt;") && !strings.Contains(body, `\u003cscript\u003e`) {
				t.Errorf("the page does not show the text it was given:\n%s", body)
			}
		})
	}
}

// A form post held back by the failure limits links back to the form with
// the rd the login began with: the user who waits and signs in then lands
// where they were going, not at the root.
func TestLDAPTooManyAttemptsLinksBackWithTheRedirect(t *testing.T) {
	h := newTestHandler(t, withLDAP)
	h.providers["corp-ldap"].impl = markupChecker{} // every password wrong
	h.pause = func(context.Context, time.Time) {}
	for i := 0; ; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/.portcullis/ldap/corp-ldap?rd=%2Ftasks%2F7", nil))
		m := regexp.MustCompile(`name="state" value="([^"]+)"`).FindStringSubmatch(rec.Body.String())
		if rec.Code != http.StatusOK || m == nil {
			t.Fatalf("form: %d %s", rec.Code, rec.Body)
		}
		form := url.Values{"username": {"alice"}, "password": {"guess"}, "state": {m[1]}}
		r := httptest.NewRequest("POST", "/.portcullis/ldap/corp-ldap", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Accept", "text/html")
		for _, c := range rec.Result().Cookies() {
			r.AddCookie(c)
		}
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code == http.StatusUnauthorized && i < 10 {
			continue
		}
		if rec.Code != http.StatusTooManyRequests {
			t.Fatalf("attempt %d: %d, want 429 after a few wrong passwords", i+1, rec.Code)
		}
		if link := regexp.MustCompile(`href="/\.portcullis/ldap/corp-ldap\?rd=[^"]*%2Ftasks%2F7"`); !link.MatchString(rec.Body.String()) {
			t.Errorf("429 page without a link back to the form with its rd (%s):\n%s", link, rec.Body)
		}
		return
	}
}

// The form links to the other ways to sign in only when there are others:
// with the directory alone, /login would lead straight back to the form.
func TestLDAPFormLinksToOtherWaysOnlyWhenThereAreOthers(t *testing.T) {
	alone := strings.Replace(withLDAP, "    - id: company\n      protocol: OIDC\n      server_url: https://login.example.com/\n      client_id: portcullis\n", "", 1)
	for _, tc := range []struct {
		name, yaml string
		link       bool
	}{{"beside an OIDC IdP", withLDAP, true}, {"alone", alone, false}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, tc.yaml)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/.portcullis/ldap/corp-ldap", nil))
			if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), "Other ways to sign in") != tc.link {
				t.Errorf("form: %d, link to other ways %v, want 200 and %v", rec.Code, !tc.link, tc.link)
			}
		})
	}
}

// A basic_auth rule asks the directory once for an API client's
// credentials and reuses the answer for basicAuthTTL: without it, each of
// the client's requests costs a search and a bind. Other credentials, and
// the same ones once the answer is stale, are checked again.
func TestBasicAuthRuleReusesACheckForItsTTL(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	f := newFixtureOf(t, withLegacyRule(dir.URL))
	now := time.Now()
	f.h.now = func() time.Time { return now }
	for _, step := range []struct {
		name           string
		after          time.Duration // the clock moves on this much first
		user, password string
		status         int
		binds          int64 // binds this request costs the directory
	}{
		{"first request: checked at the directory", 0, ldapserver.Alice, ldapserver.AlicePassword, http.StatusOK, 1},
		{"same credentials: reused", time.Second, ldapserver.Alice, ldapserver.AlicePassword, http.StatusOK, 0},
		{"same username, a wrong password: checked", 0, ldapserver.Alice, "wrong", http.StatusUnauthorized, 1},
		{"same credentials just before the TTL ends: reused", basicAuthTTL - 2*time.Second, ldapserver.Alice, ldapserver.AlicePassword, http.StatusOK, 0},
		{"same credentials once the TTL ended: checked again", time.Second, ldapserver.Alice, ldapserver.AlicePassword, http.StatusOK, 1},
	} {
		now = now.Add(step.after)
		before := binds(f.h)
		r := request("GET", "/legacy/x", nil, "Accept", "application/json")
		r.SetBasicAuth(step.user, step.password)
		resp, got, reached := f.do(t, r)
		if resp.StatusCode != step.status {
			t.Errorf("%s: %d, want %d", step.name, resp.StatusCode, step.status)
		}
		// Checked or reused, the directory password stays here: the
		// upstream gets the identity headers instead.
		if reached && got.Header.Get("Authorization") != "" {
			t.Errorf("%s: the upstream got Authorization %q", step.name, got.Header.Get("Authorization"))
		}
		if n := binds(f.h) - before; n != step.binds {
			t.Errorf("%s: %d binds, want %d", step.name, n, step.binds)
		}
	}
}

// An API client's Basic credentials taken from the cache pass the identity
// worked out when they were checked: the assertion is signed once, not at
// every request (an ECDSA signature and 260 allocations a request, which a
// session pays once per quarter of the assertion's lifetime).
func TestBasicAuthPassesTheIdentityOfItsCheck(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	f := newFixtureOf(t, strings.Replace(withLegacyRule(dir.URL), "  strip_headers:", "  jwt: {header: X-Portcullis-Assertion}\n  strip_headers:", 1))
	var assertions []string
	for range 3 {
		r := request("GET", "/legacy/x", nil, "Accept", "application/json")
		r.SetBasicAuth(ldapserver.Alice, ldapserver.AlicePassword)
		resp, got, reached := f.do(t, r)
		if resp.StatusCode != http.StatusOK || !reached {
			t.Fatalf("%d, reached the upstream %v; want 200", resp.StatusCode, reached)
		}
		assertions = append(assertions, got.Header.Get("X-Portcullis-Assertion"))
	}
	if assertions[0] == "" {
		t.Fatal("no assertion reached the upstream")
	}
	for i, a := range assertions[1:] {
		if a != assertions[0] {
			t.Errorf("request %d: the assertion was signed again for the same credentials", i+2)
		}
	}
}

// slowChecker signs everyone in, taking took on the handler's clock.
type slowChecker struct {
	clock *atomic.Int64 // the handler's time, in Unix nanoseconds
	took  time.Duration
}

func (slowChecker) Ready() error { return nil }

func (c slowChecker) Authenticate(_ *http.Request, username, _ string, _ func(string) error) (*idp.Profile, error) {
	c.clock.Add(int64(c.took))
	return &idp.Profile{IdP: "corp-ldap", Sub: username, Email: username + "@example.com"}, nil
}

// A Basic auth check that signs a client in is a login of the LDAP IdP:
// login_duration_seconds gets the time the check took, as a form login's
// does, not 0, which pulled the IdP's quantiles towards nothing (in the
// lab, p90 4.5 ms whatever the directory took).
func TestBasicAuthLoginDurationIsTheCheck(t *testing.T) {
	h := newTestHandler(t, withLDAP+"rules:\n  - name: legacy\n    path_prefix: /legacy/\n    action: authenticate\n    basic_auth: corp-ldap\n")
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	h.now = func() time.Time { return time.Unix(0, clock.Load()) }
	h.providers["corp-ldap"].impl = slowChecker{clock: &clock, took: 300 * time.Millisecond}
	r := httptest.NewRequest("GET", "/legacy/api", nil)
	r.SetBasicAuth("alice", "alice-pw")
	h.ServeHTTP(httptest.NewRecorder(), r)
	if n, sum := corpLDAPLoginDurations(t, h); n != 1 || sum != 0.3 {
		t.Errorf("login_duration_seconds{idp=corp-ldap}: %d logins, %v s in all; want 1 of 0.3 s", n, sum)
	}
}

// corpLDAPLoginDurations is how many logins at corp-ldap h's
// login_duration_seconds observed, and their seconds in all.
func corpLDAPLoginDurations(t *testing.T, h *Handler) (uint64, float64) {
	t.Helper()
	for _, m := range gather(t, h)["portcullis_login_duration_seconds"].GetMetric() {
		if m.GetLabel()[0].GetValue() == "corp-ldap" {
			return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
		}
	}
	t.Fatal("login_duration_seconds has no corp-ldap series")
	return 0, 0
}

// gateChecker signs everyone in once the test lets it: entered says a check
// began, and the handler's clock moves on by took when it ends.
type gateChecker struct {
	clock   *atomic.Int64
	took    time.Duration
	entered chan struct{}
	release chan struct{}
}

func (gateChecker) Ready() error { return nil }

func (c gateChecker) Authenticate(_ *http.Request, username, _ string, _ func(string) error) (*idp.Profile, error) {
	c.entered <- struct{}{}
	<-c.release
	c.clock.Add(int64(c.took))
	return &idp.Profile{IdP: "corp-ldap", Sub: username, Email: username + "@example.com"}, nil
}

// waitingForCheck counts the requests waiting for a shared Basic auth
// check's outcome (blocked in basicIdentity's select).
func waitingForCheck() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	waiting := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "[select") && strings.Contains(g, "proxy.(*Handler).basicIdentity(") {
			waiting++
		}
	}
	return waiting
}

// Requests that share one Basic auth check (the same credentials at once)
// are one login: login_duration_seconds gets the check's time once, not
// once per request, each from when it joined (a late one's share of the
// wait pulled the quantiles down, and the count up).
func TestBasicAuthSharedCheckIsOneLogin(t *testing.T) {
	h := newTestHandler(t, withLDAP+"rules:\n  - name: legacy\n    path_prefix: /legacy/\n    action: authenticate\n    basic_auth: corp-ldap\n")
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	h.now = func() time.Time { return time.Unix(0, clock.Load()) }
	checker := gateChecker{clock: &clock, took: 300 * time.Millisecond, entered: make(chan struct{}, 2), release: make(chan struct{})}
	h.providers["corp-ldap"].impl = checker
	codes := make(chan int, 2)
	call := func() {
		r := httptest.NewRequest("GET", "/legacy/api", nil)
		r.SetBasicAuth("alice", "alice-pw")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		codes <- w.Code
	}
	go call()
	<-checker.entered
	// The second request comes 100 ms into the check, and waits for it.
	clock.Add(int64(100 * time.Millisecond))
	go call()
	for waitingForCheck() < 2 {
		runtime.Gosched()
	}
	close(checker.release)
	for range 2 {
		// Signed in, on to the upstream (none here: 502).
		if code := <-codes; code != http.StatusBadGateway {
			t.Fatalf("status %d, want the upstream's 502", code)
		}
	}
	if len(checker.entered) != 0 {
		t.Fatal("the second request checked the password again; want it to share the first's check")
	}
	if n, sum := corpLDAPLoginDurations(t, h); n != 1 || sum != 0.4 {
		t.Errorf("login_duration_seconds{idp=corp-ldap}: %d logins, %v s in all; want 1 of 0.4 s (the check, from its start)", n, sum)
	}
}
