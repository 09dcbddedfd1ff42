package e2e

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// internal503s reads portcullis_requests_total{decision="internal",code="503"}.
var internal503s = regexp.MustCompile(`(?m)^portcullis_requests_total\{code="503",decision="internal"\} (\d+)$`)

// TestSentinelFailover logs alice in with the sessions in Redis behind
// Sentinel (a master, a replica, three sentinels), kills the master with
// SIGKILL once her session is on the replica, and keeps loading a page as
// her browser would until the sentinels have promoted the replica. Until
// then every answer is a 503, never the login page (her session is not
// lost, only unreadable for now) and never the page without her session
// checked; /readyz says the store is away, and so do the metrics. After the
// promotion her cookie works again without a new login, and new logins
// work.
func TestSentinelFailover(t *testing.T) {
	rdb := redisserver.StartFailover(t)
	sentinel := "  store: redis\n  redis:\n    sentinel: {master_name: " + rdb.MasterName +
		", addrs: [" + strings.Join(rdb.Sentinels, ", ") + "]}\n"
	s, _ := ldapStackWith(t, strings.Replace(ldapConfig, "  keys: [SESSION_KEY]\n", "  keys: [SESSION_KEY]\n"+sentinel, 1))
	login := func(c *http.Client) (int, string) {
		t.Helper()
		resp, body := openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap").submit(t, c, ldapserver.Alice, ldapserver.AlicePassword)
		return resp.StatusCode, body
	}
	page := func(c *http.Client) int {
		t.Helper()
		resp, err := noRedirect(c).Get(s.URL + "/tasks")
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		return resp.StatusCode
	}

	alice := fromAddr(browser(t), "10.6.0.1")
	if code, _ := login(alice); code != http.StatusFound {
		t.Fatalf("login: %d, want 302", code)
	}
	if code := page(alice); code != http.StatusOK {
		t.Fatalf("page after login: %d, want 200", code)
	}
	rdb.WaitReplicated(t)
	s.Upstream.Reset()

	rdb.Master.Stop()
	killed := time.Now()
	failed := 0 // answers that were 503, as the metrics should count them

	// A login while the master is gone: 503 to try again, unless the
	// replica is master already.
	code, body := login(fromAddr(browser(t), "10.6.0.2"))
	switch {
	case code == http.StatusServiceUnavailable && strings.Contains(body, "Try again in a moment"):
		failed++
	case code != http.StatusFound || !rdb.Promoted():
		t.Errorf("login with the master killed: %d, want 503 saying to try again (or 302 once the replica is promoted):\n%s", code, body)
	}

	var promotedAt, backAt, slowest time.Duration
	notReady := 0
	for {
		// A sentinel whose timer stalled for 2 s (a loaded machine) sits
		// out 30 s in TILT mode: a generous bound.
		if time.Since(killed) > time.Minute {
			t.Fatalf("no 200 for a minute after the master was killed (%d 503s); promoted: %v", failed, rdb.Promoted())
		}
		asked := time.Now()
		code := page(alice)
		took := time.Since(asked)
		if promotedAt == 0 && rdb.Promoted() {
			promotedAt = time.Since(killed)
		}
		if code == http.StatusOK {
			backAt = time.Since(killed)
			if !rdb.Promoted() {
				t.Error("200 before the replica was promoted: the session was not checked")
			}
			break
		}
		if code != http.StatusServiceUnavailable {
			t.Fatalf("page during the failover: %d, want 503 (never the login page, never 401)", code)
		}
		failed++
		slowest = max(slowest, took)
		if code, body := ready(s.Handler); code == http.StatusServiceUnavailable && strings.Contains(body, "session store") {
			notReady++
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("master killed: replica promoted within %s, first 200 after %s; %d requests answered 503, the slowest in %s",
		promotedAt.Round(10*time.Millisecond), backAt.Round(10*time.Millisecond), failed, slowest.Round(time.Millisecond))
	if notReady == 0 {
		t.Error("/readyz never said the session store was away while pages got 503")
	}

	// Back for good, on the same cookie.
	for i := range 10 {
		if code := page(alice); code != http.StatusOK {
			t.Fatalf("page %d after the promotion: %d, want 200", i, code)
		}
	}
	for _, got := range s.Upstream.Requests() {
		if got.Header.Get("X-Email") != "alice@example.com" {
			t.Errorf("the upstream got %s without alice's identity (X-Email %q)", got.Path, got.Header.Get("X-Email"))
		}
	}
	if code, body := ready(s.Handler); code != http.StatusOK {
		t.Errorf("/readyz after the promotion: %d %s", code, body)
	}
	m := internal503s.FindStringSubmatch(scrape(t, s))
	if m == nil || m[1] != strconv.Itoa(failed) {
		t.Errorf("portcullis_requests_total{decision=internal,code=503} = %v, want the %d 503s answered", m, failed)
	}

	// A new login lands on the new master.
	again := fromAddr(browser(t), "10.6.0.3")
	if code, _ := login(again); code != http.StatusFound {
		t.Fatalf("login after the promotion: %d, want 302", code)
	}
	if code := page(again); code != http.StatusOK {
		t.Errorf("page after a login after the promotion: %d, want 200", code)
	}
}
