package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
)

// TestFailurePace feeds the floor the durations of failed checks that
// bound as the user, as a directory would give them.
func TestFailurePace(t *testing.T) {
	ms := time.Millisecond
	repeat := func(n int, d ...time.Duration) []time.Duration {
		var out []time.Duration
		for range n {
			out = append(out, d...)
		}
		return out
	}
	tests := []struct {
		name    string
		samples []time.Duration
		want    func(floor time.Duration) bool
		says    string
	}{
		{"before any bind, the floor is the minimum", nil,
			func(f time.Duration) bool { return f == minFailureFloor }, "250ms"},
		{"a quick directory (1 ms binds) keeps the minimum", repeat(50, ms),
			func(f time.Duration) bool { return f == minFailureFloor }, "250ms"},
		{"a slow directory's steady 600 ms binds raise the floor to them", repeat(100, 600*ms),
			func(f time.Duration) bool { return f >= 600*ms && f < 610*ms }, "600ms, within 10ms"},
		{"binds of 500 to 700 ms put the floor above the slowest", repeat(50, 500*ms, 700*ms),
			func(f time.Duration) bool { return f > 700*ms && f < maxFailureFloor }, "over 700ms"},
		{"binds made to take an hour hold the floor at the maximum", repeat(100, time.Hour),
			func(f time.Duration) bool { return f == maxFailureFloor }, "2s"},
		{"once binds are quick again, the floor comes back down", append(repeat(100, time.Hour), repeat(40, ms)...),
			func(f time.Duration) bool { return f == minFailureFloor }, "250ms"},
		{"one stuck bind among quick ones lifts the floor to the maximum", append(repeat(50, ms), time.Hour),
			func(f time.Duration) bool { return f == maxFailureFloor }, "2s"},
		{"twenty quick binds after it bring the floor back down", append(append(repeat(50, ms), time.Hour), repeat(20, ms)...),
			func(f time.Duration) bool { return f == minFailureFloor }, "250ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newFailurePace()
			for _, d := range tc.samples {
				p.observe(d)
			}
			if f := p.floor(); !tc.want(f) {
				t.Errorf("floor %s, want %s", f, tc.says)
			}
		})
	}
}

// TestFailurePaceJitter checks that the answer comes at the floor plus a
// jitter below failureJitter, drawn afresh each time.
func TestFailurePaceJitter(t *testing.T) {
	p := newFailurePace()
	start := time.Unix(1_700_000_000, 0)
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := p.answerAt(start).Sub(start)
		if d < minFailureFloor || d >= minFailureFloor+failureJitter {
			t.Fatalf("answer %s after the start, want in [%s, %s)", d, minFailureFloor, minFailureFloor+failureJitter)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Errorf("%d different answer times in 1000, want a random jitter", len(seen))
	}
}

// The wait ends when the client goes away, not at the floor.
func TestSleepUntilEndsWhenTheClientGoes(t *testing.T) {
	h := &Handler{now: time.Now}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		h.sleepUntil(ctx, time.Now().Add(time.Hour))
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("still waiting a minute after the client went away")
	}
}

// ldapProxyConfig checks passwords at dir: the login form, and Basic auth
// on /legacy/.
func ldapProxyConfig(dir, upstream string) string {
	return `
server:
  public_url: https://cvat.example.com
upstream:
  url: ` + upstream + `
session:
  keys: [` + testKey + `]
sso:
  identity_providers:
    - id: corp-ldap
      protocol: LDAP
      url: ` + dir + `
      bind_dn: ` + ldapserver.ServiceDN + `
      bind_password: ` + ldapserver.ServicePassword + `
      user_search: {base_dn: "` + ldapserver.Suffix + `", filter: "(&(objectClass=inetOrgPerson)(uid={username}))"}
      group_search: {base_dn: "` + ldapserver.GroupsDN + `", filter: "(&(objectClass=groupOfNames)(member={dn}))"}
rules:
  - name: legacy
    path_prefix: /legacy/
    basic_auth: corp-ldap
    action: authenticate
`
}

// An unknown username costs the directory a search, a known one with a
// wrong password a search and a bind: every refusal that reads "wrong
// username or password", on the form and for Basic auth, is answered no
// sooner than the floor after the check began, and only the failures that
// bound feed the floor. Successes, the failure limits' 429 and an
// unavailable directory are not held back. The clock stands still, so the
// floor asked for is exactly the minimum plus the jitter.
func TestLDAPFailuresAnsweredAtTheFloor(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	h := newTestHandler(t, ldapProxyConfig(dir.URL, upstream.URL))
	t0 := time.Now() // login forms expire on the session package's own clock
	h.now = func() time.Time { return t0 }
	pace := h.providers["corp-ldap"].pace
	pace.jitter = func(n int64) int64 {
		if n != int64(failureJitter) {
			t.Errorf("jitter drawn below %s, want below %s", time.Duration(n), failureJitter)
		}
		return n / 2
	}
	want := minFailureFloor + failureJitter/2

	addr := 0
	basic := func(username, password string) *http.Request {
		r := httptest.NewRequest("GET", "/legacy/api", nil)
		r.SetBasicAuth(username, password)
		return r
	}
	form := func(username, password string) *http.Request {
		f := openLDAPForm(t, h)
		body := url.Values{"username": {username}, "password": {password}, "state": {f.state}}
		r := httptest.NewRequest("POST", "/.portcullis/ldap/corp-ldap", strings.NewReader(body.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for _, c := range f.cookies {
			r.AddCookie(c)
		}
		return r
	}
	var paused []time.Duration
	h.pause = func(ctx context.Context, until time.Time) {
		paused = append(paused, until.Sub(t0))
		if len(paused) == 1 {
			// Nothing is held while a failure waits: another client's
			// login goes through meanwhile (a lock still held would
			// deadlock it, in this goroutine).
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, basic(ldapserver.Alice, ldapserver.AlicePassword))
			if rec.Code != http.StatusOK {
				t.Errorf("a login while a failure waits: %d %s", rec.Code, rec.Body)
			}
		}
	}
	tests := []struct {
		name      string
		req       *http.Request
		status    int
		held      bool // answered at the floor
		feedsPace bool // bound as the user
	}{
		{"form: unknown user", form("mallory", "guess"), http.StatusUnauthorized, true, false},
		{"form: known user, wrong password", form(ldapserver.Alice, "guess"), http.StatusUnauthorized, true, true},
		{"form: a username with two entries", form(ldapserver.Dup, ldapserver.DupPassword), http.StatusUnauthorized, true, false},
		{"form: empty password, refused before the directory", form(ldapserver.Alice, ""), http.StatusUnauthorized, true, false},
		{"form: a username no entry can have", form("mallory\x00", "guess"), http.StatusUnauthorized, true, false},
		{"form: right password", form(ldapserver.Alice, ldapserver.AlicePassword), http.StatusFound, false, false},
		{"basic: unknown user", basic("mallory", "guess"), http.StatusUnauthorized, true, false},
		{"basic: known user, wrong password", basic(ldapserver.Bob, "guess"), http.StatusUnauthorized, true, true},
		{"basic: right password", basic(ldapserver.Bob, ldapserver.BobPassword), http.StatusOK, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			paused = nil
			observed := pace.observed
			addr++
			tc.req.RemoteAddr = "203.0.113." + string(rune('0'+addr%10)) + ":40000"
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, tc.req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			switch {
			case tc.held && (len(paused) != 1 || paused[0] != want):
				t.Errorf("answered after pauses until %v from the start, want one until %s", paused, want)
			case !tc.held && len(paused) != 0:
				t.Errorf("held back until %v from the start, want no pause", paused)
			}
			if fed := pace.observed > observed; fed != tc.feedsPace {
				t.Errorf("fed the floor: %v, want %v", fed, tc.feedsPace)
			}
		})
	}

	t.Run("a failure counts before its wait: meanwhile the limits refuse the next, without a pause", func(t *testing.T) {
		for range userFailureBurst - 1 {
			h.ServeHTTP(httptest.NewRecorder(), basic("carol", "guess"))
		}
		var during *httptest.ResponseRecorder
		pauses := 0
		h.pause = func(ctx context.Context, until time.Time) {
			pauses++
			if during == nil {
				during = httptest.NewRecorder()
				h.ServeHTTP(during, basic("carol", "guess"))
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, basic("carol", "guess")) // carol's last attempt
		if rec.Code != http.StatusUnauthorized || during == nil {
			t.Fatalf("carol's last attempt: %d, paused %v; want 401 after a pause", rec.Code, during != nil)
		}
		if during.Code != http.StatusTooManyRequests || pauses != 1 {
			t.Errorf("an attempt while it waits: %d after %d pauses; want 429 and no pause of its own", during.Code, pauses-1)
		}
	})
	t.Run("an unavailable directory is not held back", func(t *testing.T) {
		dir.Stop()
		paused = nil
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, basic("dave", "guess"))
		if rec.Code != http.StatusServiceUnavailable || len(paused) != 0 {
			t.Errorf("status %d, pauses %v; want 503 without a pause", rec.Code, paused)
		}
	})
}

// Failures of one spelling of an account (its uid) hold back its other
// spellings (its mail) once the directory finds them, before the password
// is tried. An unknown username never gets that far, so such an attempt is
// answered as a wrong password, at the floor: a 429 at once would tell that
// the spelling names an existing account, and which.
func TestLDAPLimitedAccountAnsweredAsAWrongPassword(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	cfg := strings.Replace(ldapProxyConfig(dir.URL, upstream.URL), "(uid={username})", "(|(uid={username})(mail={username}))", 1)
	h := newTestHandler(t, cfg)
	t0 := time.Now()
	h.now = func() time.Time { return t0 } // the limits do not refill
	h.providers["corp-ldap"].pace.jitter = func(n int64) int64 { return 0 }
	var paused []time.Duration
	h.pause = func(ctx context.Context, until time.Time) { paused = append(paused, until.Sub(t0)) }
	addr := 0
	try := func(username, password string) (int, []time.Duration) {
		addr++
		r := httptest.NewRequest("GET", "/legacy/api", nil)
		r.SetBasicAuth(username, password)
		r.RemoteAddr = fmt.Sprintf("203.0.113.%d:40000", addr)
		paused = nil
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code, paused
	}
	for _, name := range []string{ldapserver.Alice, "mallory"} {
		for range userFailureBurst {
			if code, _ := try(name, "guess"); code != http.StatusUnauthorized {
				t.Fatalf("%s's failure: %d, want 401", name, code)
			}
		}
		if code, _ := try(name, "guess"); code != http.StatusTooManyRequests {
			t.Fatalf("%s after %d failures: %d, want 429", name, userFailureBurst, code)
		}
	}
	binds := h.providers["corp-ldap"].impl.(interface{ Binds() int64 }).Binds()
	for _, tc := range []struct{ name, username, password string }{
		{"an unknown username's other spelling", "mallory@example.com", "guess"},
		{"a limited account's other spelling", "alice@example.com", "guess"},
		{"a limited account's other spelling with the right password", "alice@example.com", ldapserver.AlicePassword},
	} {
		code, pauses := try(tc.username, tc.password)
		if code != http.StatusUnauthorized || len(pauses) != 1 || pauses[0] != minFailureFloor {
			t.Errorf("%s: %d after pauses %v, want 401 after one until the floor, as a wrong password", tc.name, code, pauses)
		}
	}
	if n := h.providers["corp-ldap"].impl.(interface{ Binds() int64 }).Binds(); n != binds {
		t.Errorf("%d binds as a limited account, want none", n-binds)
	}
	// They count as failures of their spelling, as the unknown one's do:
	// both run out of attempts together.
	for username, failed := range map[string]int{"mallory@example.com": 1, "alice@example.com": 2} {
		for range userFailureBurst - failed {
			try(username, "guess")
		}
	}
	for _, username := range []string{"mallory@example.com", "alice@example.com"} {
		if code, pauses := try(username, "guess"); code != http.StatusTooManyRequests || len(pauses) != 0 {
			t.Errorf("%s after %d failures: %d after pauses %v, want 429 at once", username, userFailureBurst, code, pauses)
		}
	}
}

// Two identity provider entries that reach one directory (one per domain
// controller, ldaps:// beside StartTLS) share each account's failures:
// five wrong passwords at one hold the account back at the other, before
// the password is tried, where each entry used to give every account five
// guesses of its own.
func TestLDAPAccountFailuresAreSharedByEntriesOfOneDirectory(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	cfg := ldapProxyConfig(dir.URL, upstream.URL)
	entry := cfg[strings.Index(cfg, "    - id: corp-ldap\n"):strings.Index(cfg, "rules:\n")]
	cfg = strings.Replace(cfg, "rules:\n", strings.Replace(entry, "id: corp-ldap\n", "id: corp-ldap-2\n", 1)+"rules:\n", 1) +
		"  - name: legacy-2\n    path_prefix: /legacy-2/\n    basic_auth: corp-ldap-2\n    action: authenticate\n"
	h := newTestHandler(t, cfg)
	t0 := time.Now()
	h.now = func() time.Time { return t0 } // the limits do not refill
	h.pause = func(context.Context, time.Time) {}
	addr := 0
	try := func(path, password string) int {
		addr++
		r := httptest.NewRequest("GET", path, nil)
		r.SetBasicAuth(ldapserver.Alice, password)
		r.RemoteAddr = fmt.Sprintf("203.0.113.%d:40000", addr)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	for i := range userFailureBurst {
		if code := try("/legacy/api", "guess"); code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d at corp-ldap: %d, want 401", i+1, code)
		}
	}
	second := h.providers["corp-ldap-2"].impl.(interface{ Binds() int64 })
	binds := second.Binds()
	if code := try("/legacy-2/api", ldapserver.AlicePassword); code != http.StatusUnauthorized {
		t.Errorf("the right password at corp-ldap-2 after %d failures at corp-ldap: %d, want 401", userFailureBurst, code)
	}
	if n := second.Binds() - binds; n != 0 {
		t.Errorf("%d binds at corp-ldap-2 as an account corp-ldap holds back, want none", n)
	}
}

// A password that one entry checked is no answer for another entry of the
// same directory whose user_search finds other accounts: the Basic auth
// cache is each entry's own. corp-ldap-2 admits bob alone, so alice's
// password, just accepted at corp-ldap, is refused there.
func TestLDAPBasicAuthCacheIsEachEntrysOwn(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	cfg := ldapProxyConfig(dir.URL, upstream.URL)
	entry := cfg[strings.Index(cfg, "    - id: corp-ldap\n"):strings.Index(cfg, "rules:\n")]
	entry = strings.NewReplacer("id: corp-ldap\n", "id: corp-ldap-2\n", "(uid={username})", "(uid={username})(uid=bob)").Replace(entry)
	cfg = strings.Replace(cfg, "rules:\n", entry+"rules:\n", 1) +
		"  - name: legacy-2\n    path_prefix: /legacy-2/\n    basic_auth: corp-ldap-2\n    action: authenticate\n"
	h := newTestHandler(t, cfg)
	h.pause = func(context.Context, time.Time) {}
	try := func(path string) int {
		r := httptest.NewRequest("GET", path, nil)
		r.SetBasicAuth(ldapserver.Alice, ldapserver.AlicePassword)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	if code := try("/legacy/api"); code != http.StatusOK {
		t.Fatalf("alice's password at corp-ldap: %d, want 200", code)
	}
	if code := try("/legacy-2/api"); code != http.StatusUnauthorized {
		t.Errorf("alice's password at corp-ldap-2, which finds bob alone, after corp-ldap accepted it: %d, want 401", code)
	}
}
