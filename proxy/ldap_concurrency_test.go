package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// concurrentGuesses is how many wrong passwords the tests below send at
// once.
const concurrentGuesses = 50

// guessAtOnce sends each request of reqs to its Handler at the same moment
// and returns how many were answered with each status.
func guessAtOnce(t *testing.T, reqs []*http.Request, hs []*Handler) map[int]int {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		codes = map[int]int{}
		start = make(chan struct{})
	)
	for i, r := range reqs {
		wg.Go(func() {
			<-start
			rec := httptest.NewRecorder()
			hs[i%len(hs)].ServeHTTP(rec, r)
			mu.Lock()
			codes[rec.Code]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return codes
}

func basicGuess(username, addr string) *http.Request {
	r := httptest.NewRequest("GET", "/legacy/api", nil)
	r.SetBasicAuth(username, "guess")
	r.RemoteAddr = addr + ":40000"
	return r
}

// binds counts the password checks that reached the directory through hs.
func binds(hs ...*Handler) int64 {
	var n int64
	for _, h := range hs {
		n += h.providers["corp-ldap"].impl.(interface{ Binds() int64 }).Binds()
	}
	return n
}

// quickFailures makes h answer failures at once, on a standing clock.
func quickFailures(h *Handler) {
	t0 := time.Now()
	h.now = func() time.Time { return t0 }
	h.pause = func(context.Context, time.Time) {}
}

// Wrong passwords sent at once get no more binds than sent one after the
// other: an attempt is counted against the username, the client and the
// account before the password is tried, not after the directory answered,
// so that simultaneous requests cannot all pass the limits first.
func TestLDAPConcurrentGuessesAreLimited(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	uidOrMail := func(cfg string) string {
		return strings.Replace(cfg, "(uid={username})", "(|(uid={username})(mail={username}))", 1)
	}
	tests := []struct {
		name     string
		redis    bool
		replicas int
		guess    func(i int) *http.Request
		binds    int
		refused  int // 401, the rest 429
	}{
		{"one username from one address", false, 1,
			func(i int) *http.Request { return basicGuess(ldapserver.Alice, "203.0.113.1") }, userFailureBurst, userFailureBurst},
		{"one address, many usernames", false, 1,
			func(i int) *http.Request { return basicGuess(fmt.Sprintf("user%d", i), "203.0.113.2") }, 0, addrFailureBurst},
		{"one account by two spellings from many addresses", false, 1,
			func(i int) *http.Request {
				return basicGuess([]string{ldapserver.Alice, "alice@example.com"}[i%2], fmt.Sprintf("198.51.100.%d", i))
			}, userFailureBurst, 2 * userFailureBurst},
		{"one username from one address, at two replicas sharing Redis", true, 2,
			func(i int) *http.Request { return basicGuess(ldapserver.Bob, "203.0.113.3") }, userFailureBurst, userFailureBurst},
		{"one account by two spellings from many addresses, at two replicas sharing Redis", true, 2,
			func(i int) *http.Request {
				return basicGuess([]string{ldapserver.Bob, "bob@example.com"}[i%2], fmt.Sprintf("198.51.100.%d", i))
			}, userFailureBurst, 2 * userFailureBurst},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := uidOrMail(ldapProxyConfig(dir.URL, upstream.URL))
			if tc.redis {
				srv := redisserver.Start(t)
				cfg = strings.Replace(cfg, "session:\n", "session:\n  store: redis\n  redis: {url: "+srv.URL+"}\n", 1)
			}
			var hs []*Handler
			for range tc.replicas {
				h := newTestHandler(t, cfg)
				quickFailures(h)
				hs = append(hs, h)
			}
			var reqs []*http.Request
			for i := range concurrentGuesses {
				reqs = append(reqs, tc.guess(i))
			}
			before := binds(hs...)
			codes := guessAtOnce(t, reqs, hs)
			n := binds(hs...) - before
			t.Logf("%d guesses at once: %d binds, answers %v", concurrentGuesses, n, codes)
			if n != int64(tc.binds) || codes[http.StatusUnauthorized] != tc.refused ||
				codes[http.StatusTooManyRequests] != concurrentGuesses-tc.refused {
				t.Errorf("%d binds, answers %v; want %d binds, %d × 401 and the rest 429", n, codes, tc.binds, tc.refused)
			}
		})
	}
}

// An attempt is counted before it is made, but only a failure stays
// counted: a success gives the client its attempt back (and clears the
// username's and the account's), and an attempt the directory could not
// answer is given back whole. Otherwise a busy office behind one address
// would be refused after twenty good logins, and an outage would lock out
// everyone who tried during it.
func TestLDAPAttemptsThatAreNotFailuresAreGivenBack(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			dir := ldapserver.Start(t, ldapserver.Options{})
			cfg := ldapProxyConfig(dir.URL, upstream.URL)
			if store == "redis" {
				srv := redisserver.Start(t)
				cfg = strings.Replace(cfg, "session:\n", "session:\n  store: redis\n  redis: {url: "+srv.URL+"}\n", 1)
			}
			h := newTestHandler(t, cfg)
			quickFailures(h)
			// Every request comes from httptest's one address.
			for i := range 2 * addrFailureBurst {
				if rec := postLDAPForm(t, h, openLDAPForm(t, h), ldapserver.Alice, ldapserver.AlicePassword); rec.Code != http.StatusFound {
					t.Fatalf("good login %d from one address: %d, want 302", i+1, rec.Code)
				}
			}
			dir.Stop()
			for i := range 2 * addrFailureBurst {
				if rec := postLDAPForm(t, h, openLDAPForm(t, h), ldapserver.Bob, "guess"); rec.Code != http.StatusServiceUnavailable {
					t.Fatalf("attempt %d while the directory is down: %d, want 503", i+1, rec.Code)
				}
			}
		})
	}
}
