package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
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

// basicGuess is guess number i of username's password, from addr: each a
// different password, so that none shares another's check.
func basicGuess(username string, i int, addr string) *http.Request {
	r := httptest.NewRequest("GET", "/legacy/api", nil)
	r.SetBasicAuth(username, fmt.Sprintf("guess-%d", i))
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

// quickReplicas are n handlers of cfg (replicas, when its sessions are in
// Redis) that answer failures at once (quickFailures).
func quickReplicas(t *testing.T, cfg string, n int) []*Handler {
	t.Helper()
	hs := make([]*Handler, n)
	for i := range hs {
		hs[i] = newTestHandler(t, cfg)
		quickFailures(hs[i])
	}
	return hs
}

// quickFailures makes h answer failures at once, on a standing clock.
func quickFailures(h *Handler) {
	t0 := time.Now()
	h.now = func() time.Time { return t0 }
	h.pause = func(context.Context, time.Time) {}
}

// Different wrong passwords sent at once get no more binds than sent one after the
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
			func(i int) *http.Request { return basicGuess(ldapserver.Alice, i, "203.0.113.1") }, userFailureBurst, userFailureBurst},
		{"one address, many usernames", false, 1,
			func(i int) *http.Request { return basicGuess(fmt.Sprintf("user%d", i), i, "203.0.113.2") }, 0, addrFailureBurst},
		{"one account by two spellings from many addresses", false, 1,
			func(i int) *http.Request {
				return basicGuess([]string{ldapserver.Alice, "alice@example.com"}[i%2], i, fmt.Sprintf("198.51.100.%d", i))
			}, userFailureBurst, 2 * userFailureBurst},
		{"one username from one address, at two replicas sharing Redis", true, 2,
			func(i int) *http.Request { return basicGuess(ldapserver.Bob, i, "203.0.113.3") }, userFailureBurst, userFailureBurst},
		{"one account by two spellings from many addresses, at two replicas sharing Redis", true, 2,
			func(i int) *http.Request {
				return basicGuess([]string{ldapserver.Bob, "bob@example.com"}[i%2], i, fmt.Sprintf("198.51.100.%d", i))
			}, userFailureBurst, 2 * userFailureBurst},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := uidOrMail(ldapProxyConfig(dir.URL, upstream.URL))
			if tc.redis {
				srv := redisserver.Start(t)
				cfg = storeInRedis(cfg, srv.URL)
			}
			hs := quickReplicas(t, cfg, tc.replicas)
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
				cfg = storeInRedis(cfg, srv.URL)
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

// gatedLimits holds each password check at the failure limits, before the
// directory is asked, until open is closed; entered tells that the first
// one got there. The tests below use it to send requests while a check is
// under way.
type gatedLimits struct {
	failureLimits
	entered chan struct{} // buffered: one
	open    chan struct{}
}

func gateLimits(h *Handler) *gatedLimits {
	g := &gatedLimits{failureLimits: h.passwords.limits, entered: make(chan struct{}, 1), open: make(chan struct{})}
	h.passwords.limits = g
	return g
}

func (g *gatedLimits) take(k loginKeys, now time.Time) (loginKeys, time.Duration) {
	if k.user != "" { // the username and the client: a check begins
		select {
		case g.entered <- struct{}{}:
		default:
		}
		<-g.open
	}
	return g.failureLimits.take(k, now)
}

// waitForSharers waits until n requests wait for the outcome of a shared
// check. Nothing else tells from outside that a request has joined a
// check; without sharing, it gives up after a while and the test goes on
// to fail on what it sees.
func waitForSharers(t *testing.T, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for range 2000 {
		waiting := 0
		for _, g := range bytes.Split(buf[:runtime.Stack(buf, true)], []byte("\n\n")) {
			// The check's own goroutine runs basicIdentity.func1.
			if bytes.Contains(g, []byte(" [select")) && bytes.Contains(g, []byte("proxy.(*Handler).basicIdentity(")) {
				waiting++
			}
		}
		if waiting >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("%d requests never shared one check", n)
}

// sameCredentialsAtOnce sends n requests with the same Basic credentials
// from addr: the first alone, on h's clock at t0, and once its check has
// begun the others, with the clock at t0+1s, so that they arrive while it
// is under way. With firstGoesAway, the first request's context ends then,
// as when its client disconnects, and it must be answered before the
// others are sent, its check still held. It returns the answers, first
// one first.
func sameCredentialsAtOnce(t *testing.T, h *Handler, clock *atomic.Pointer[time.Time],
	username, password, addr string, n int, firstGoesAway bool) []*httptest.ResponseRecorder {
	t.Helper()
	g := gateLimits(h)
	defer func() { h.passwords.limits = g.failureLimits }()
	t0 := *clock.Load()
	recs := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	send := func(i int, ctx context.Context) <-chan struct{} {
		r := httptest.NewRequestWithContext(ctx, "GET", "/legacy/api", nil)
		r.SetBasicAuth(username, password)
		r.RemoteAddr = addr + ":40000"
		recs[i] = httptest.NewRecorder()
		done := make(chan struct{})
		wg.Go(func() { h.ServeHTTP(recs[i], r); close(done) })
		return done
	}
	first, goAway := context.WithCancel(context.Background())
	defer goAway()
	defer wg.Wait()
	defer close(g.open)
	firstDone := send(0, first)
	<-g.entered
	sharers := n
	if firstGoesAway {
		goAway()
		select {
		case <-firstDone:
		case <-time.After(10 * time.Second): // without its own end, it waits for the directory, held until the test ends
			t.Fatalf("the first request, its client gone, still waits for its check after 10s")
		}
		sharers--
	}
	t1 := t0.Add(time.Second)
	clock.Store(&t1)
	for i := 1; i < n; i++ {
		send(i, context.Background())
	}
	waitForSharers(t, sharers)
	return recs
}

// guessesLeft is how many wrong passwords the failure limits still let
// through for username, each from an address of its own, before the 429.
func guessesLeft(t *testing.T, h *Handler, username string) int {
	t.Helper()
	for i := range userFailureBurst + 1 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, basicGuess(username, i, fmt.Sprintf("198.51.100.%d", i)))
		switch rec.Code {
		case http.StatusTooManyRequests:
			return i
		case http.StatusUnauthorized:
		default:
			t.Fatalf("%s's guess %d: %d, want 401 or 429", username, i+1, rec.Code)
		}
	}
	t.Fatalf("%s: more than %d guesses let through", username, userFailureBurst)
	return 0
}

// A Basic auth client that opens many connections at once with a cold
// cache (CVAT's SDK uploads with ten) sends the same credentials in each:
// the requests share one check, as one attempt, instead of each making its
// own, of which the failure limits let five through and answer the rest
// 429, the right password too. A shared refusal is still answered no
// sooner than the floor after each request's own start, and different
// passwords are not shared (TestLDAPConcurrentGuessesAreLimited).
func TestLDAPBasicAuthSameCredentialsShareOneCheck(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	const n = 20
	newHandler := func(t *testing.T) (*Handler, *atomic.Pointer[time.Time], *[]time.Duration) {
		h := newTestHandler(t, ldapProxyConfig(dir.URL, upstream.URL))
		var clock atomic.Pointer[time.Time]
		t0 := time.Now()
		clock.Store(&t0)
		h.now = func() time.Time { return *clock.Load() }
		h.providers["corp-ldap"].pace.jitter = func(n int64) int64 { return 0 }
		var mu sync.Mutex
		paused := new([]time.Duration)
		h.pause = func(ctx context.Context, until time.Time) {
			mu.Lock()
			defer mu.Unlock()
			*paused = append(*paused, until.Sub(t0))
		}
		return h, &clock, paused
	}

	t.Run("the right password: all let in, one bind", func(t *testing.T) {
		h, clock, paused := newHandler(t)
		before := binds(h)
		recs := sameCredentialsAtOnce(t, h, clock, ldapserver.Alice, ldapserver.AlicePassword, "203.0.113.1", n, false)
		codes := map[int]int{}
		for _, rec := range recs {
			codes[rec.Code]++
		}
		if b := binds(h) - before; b != 1 || codes[http.StatusOK] != n || len(*paused) != 0 {
			t.Errorf("%d binds, answers %v, pauses %v; want 1 bind, %d × 200, no pause", b, codes, *paused, n)
		}
	})

	t.Run("the same wrong password: all refused at their own floor, one bind, one failure counted", func(t *testing.T) {
		h, clock, paused := newHandler(t)
		before := binds(h)
		recs := sameCredentialsAtOnce(t, h, clock, ldapserver.Alice, "guess", "203.0.113.2", n, false)
		codes := map[int]int{}
		for _, rec := range recs {
			codes[rec.Code]++
		}
		if b := binds(h) - before; b != 1 || codes[http.StatusUnauthorized] != n {
			t.Errorf("%d binds, answers %v; want 1 bind, %d × 401", b, codes, n)
		}
		if rec := recs[n-1]; rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("a request that took the shared refusal: no WWW-Authenticate; headers %v", rec.Header())
		}
		// The first began at t0, the others a second later (which the
		// floor learnt as the time the refusal took).
		floor := h.providers["corp-ldap"].pace.floor()
		atFloor := map[time.Duration]int{}
		for _, d := range *paused {
			atFloor[d]++
		}
		if len(*paused) != n || atFloor[floor] != 1 || atFloor[time.Second+floor] != n-1 {
			t.Errorf("pauses until %v from t0; want one until %s and %d until %s", *paused, floor, n-1, time.Second+floor)
		}
		if left := guessesLeft(t, h, ldapserver.Alice); left != userFailureBurst-1 {
			t.Errorf("alice has %d guesses left after the shared one, want %d", left, userFailureBurst-1)
		}
	})

	t.Run("the first client going away does not end the check the others wait for", func(t *testing.T) {
		// The directory's connection pool gives up on a request whose
		// context ended, when it gets to choose: ten tries.
		h, clock, _ := newHandler(t)
		for i := range 10 {
			h.passwords.cache = newBasicCache(basicAuthTTL, maxBasicAuthEntries)
			before := binds(h)
			recs := sameCredentialsAtOnce(t, h, clock, ldapserver.Bob, ldapserver.BobPassword, "203.0.113.3", 2, true)
			if recs[0].Code != statusClientClosed || recs[1].Code != http.StatusOK || binds(h)-before != 1 {
				t.Fatalf("try %d: the first got %d, the request that waited %d (%s), %d binds; want %d, 200 and 1 bind",
					i+1, recs[0].Code, recs[1].Code, recs[1].Body, binds(h)-before, statusClientClosed)
			}
		}
	})
}

// relayUserBinds relays LDAP between the proxy and dir (an ldap:// URL)
// and returns the relay's URL. A bind as anyone but the service account
// reaches dir, which checks its password, and its answer is passed on
// when answer returns true; when false, the relay closes the connection
// instead.
func relayUserBinds(t *testing.T, dir string, answer func() bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	target := strings.TrimPrefix(dir, "ldap://")
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			var userBind atomic.Bool
			relay := func(from, to net.Conn, up bool) {
				defer from.Close()
				defer to.Close()
				for {
					p, err := ber.ReadPacket(from)
					if err != nil || len(p.Children) < 2 {
						return
					}
					switch op := p.Children[1]; {
					case up && op.Tag == ldap.ApplicationBindRequest && len(op.Children) > 1:
						userBind.Store(op.Children[1].Data.String() != ldapserver.ServiceDN)
					case !up && op.Tag == ldap.ApplicationBindResponse && userBind.Load():
						if !answer() {
							return
						}
					}
					if _, err := to.Write(p.Bytes()); err != nil {
						return
					}
				}
			}
			go relay(client, server, true)
			go relay(server, client, false)
		}
	}()
	return "ldap://" + ln.Addr().String()
}

// dropUserBindAnswers is dir behind a relay that loses the answers to
// users' binds: the password was checked, but the connection is cut before
// its answer comes back, as by the network, a load balancer or an
// overloaded domain controller after the bind was sent.
func dropUserBindAnswers(t *testing.T, dir string) string {
	return relayUserBinds(t, dir, func() bool { return false })
}

// holdUserBindAnswers is dir behind a relay that holds the answers to
// users' binds until release is called, as a slow directory would; held
// tells when one is being held.
func holdUserBindAnswers(t *testing.T, dir string) (url string, held <-chan struct{}, release func()) {
	holding, open := make(chan struct{}, 1), make(chan struct{})
	release = sync.OnceFunc(func() { close(open) })
	t.Cleanup(release)
	url = relayUserBinds(t, dir, func() bool {
		select {
		case holding <- struct{}{}:
		default:
		}
		<-open
		return true
	})
	return url, holding, release
}

// A request that shares another's Basic auth check stops waiting for it
// when its own client goes away, as does the request that began it,
// instead of holding its goroutine and connection until the directory
// answers (up to its timeouts); the check goes on for those still there,
// counted once as before: the request that left neither takes an attempt
// nor gives one back.
func TestLDAPBasicAuthClientThatGoesAwayStopsWaiting(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	tests := []struct {
		name     string
		leaver   int // which of the requests goes away: the first began the check
		password string
		want     int // the others' answer
		left     int // alice's guesses left after it
	}{
		{"a request waiting for another's check, the right password", 1, ldapserver.AlicePassword, http.StatusOK, userFailureBurst},
		{"a request waiting for another's check, a wrong password", 1, "guess", http.StatusUnauthorized, userFailureBurst - 1},
		{"the request that began the check, the right password", 0, ldapserver.AlicePassword, http.StatusOK, userFailureBurst},
		{"the request that began the check, a wrong password", 0, "guess", http.StatusUnauthorized, userFailureBurst - 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url, held, release := holdUserBindAnswers(t, dir.URL)
			h := newTestHandler(t, ldapProxyConfig(url, upstream.URL))
			quickFailures(h)
			const n = 3
			recs := make([]*httptest.ResponseRecorder, n)
			done := make([]chan struct{}, n)
			leaving, goAway := context.WithCancel(context.Background())
			defer goAway()
			var wg sync.WaitGroup
			defer wg.Wait()
			defer release()
			send := func(i int) {
				ctx := context.Background()
				if i == tc.leaver {
					ctx = leaving
				}
				r := httptest.NewRequestWithContext(ctx, "GET", "/legacy/api", nil)
				r.SetBasicAuth(ldapserver.Alice, tc.password)
				r.RemoteAddr = "203.0.113.5:40000"
				recs[i], done[i] = httptest.NewRecorder(), make(chan struct{})
				wg.Go(func() { h.ServeHTTP(recs[i], r); close(done[i]) })
			}
			send(0)
			select {
			case <-held: // the check's bind is at the directory, its answer held
			case <-time.After(5 * time.Second):
				t.Fatal("the first request's bind never reached the directory")
			}
			for i := 1; i < n; i++ {
				send(i)
			}
			waitForSharers(t, n)
			goAway()
			left := time.Now()
			select {
			case <-done[tc.leaver]:
				t.Logf("request %d answered %v after its client went away", tc.leaver, time.Since(left))
			case <-time.After(10 * time.Second): // the directory is held until release
				t.Fatalf("request %d, its client gone, still waits for the directory's answer after 10s", tc.leaver)
			}
			release()
			wg.Wait()
			for i, rec := range recs {
				want := tc.want
				if i == tc.leaver {
					want = statusClientClosed
				}
				if rec.Code != want {
					t.Errorf("request %d: %d, want %d: %s", i, rec.Code, want, rec.Body)
				}
			}
			if b := binds(h); b != 1 {
				t.Errorf("%d binds, want 1", b)
			}
			if left := guessesLeft(t, h, ldapserver.Alice); left != tc.left {
				t.Errorf("alice has %d guesses left, want %d", left, tc.left)
			}
		})
	}
}

// An attempt whose password reached the directory stays counted whatever
// comes back, even nothing: the directory may have checked it (and counted
// it towards its own lockout). Given back as "directory unavailable", each
// guess whose answer an attacker can make the directory lose (an Active
// Directory that forwards wrong passwords to a loaded PDC, and so times
// out on those and not on the right one) would cost nothing.
func TestLDAPAttemptWhoseAnswerIsLostStaysCounted(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			cfg := ldapProxyConfig(dropUserBindAnswers(t, dir.URL), upstream.URL)
			if store == "redis" {
				srv := redisserver.Start(t)
				cfg = storeInRedis(cfg, srv.URL)
			}
			h := newTestHandler(t, cfg)
			quickFailures(h)
			for i := range userFailureBurst + 1 {
				want := http.StatusServiceUnavailable
				if i == userFailureBurst {
					want = http.StatusTooManyRequests
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, basicGuess(ldapserver.Alice, i, "203.0.113.4"))
				if rec.Code != want {
					t.Fatalf("guess %d, its bind's answer lost: %d, want %d (%d binds sent)", i+1, rec.Code, want, binds(h))
				}
			}
		})
	}
}

// Requests that share one Basic auth check are one login, whatever its
// outcome: logins_total counts a wrong password once (as the failure
// limits do: one guess), and an account the admission rules refuse once,
// as it counts the right password once (TestBasicAuthSharedCheckIsOneLogin),
// not once per request that waited for the check.
func TestLDAPBasicAuthSharedCheckCountsOneLogin(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	// Only cvat-admins may sign in: alice is one, bob is not.
	cfg := strings.Replace(ldapProxyConfig(dir.URL, upstream.URL), "(member={dn}))\"}\n",
		"(member={dn}))\"}\n      allowed_groups: [cvat-admins]\n", 1)
	const n = 10
	for _, tc := range []struct {
		name, username, password string
		code                     int
		result                   string // the one logins_total result counted
		left                     int    // the username's guesses left after it
	}{
		{"the right password", ldapserver.Alice, ldapserver.AlicePassword, http.StatusOK, "success", userFailureBurst},
		{"a wrong password", ldapserver.Alice, "guess", http.StatusUnauthorized, "failure", userFailureBurst - 1},
		{"the right password of an account the admission rules refuse", ldapserver.Bob, ldapserver.BobPassword, http.StatusForbidden, "denied", userFailureBurst},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, cfg)
			var clock atomic.Pointer[time.Time]
			t0 := time.Now()
			clock.Store(&t0)
			h.now = func() time.Time { return *clock.Load() }
			h.pause = func(context.Context, time.Time) {}
			recs := sameCredentialsAtOnce(t, h, &clock, tc.username, tc.password, "203.0.113.7", n, false)
			for i, rec := range recs {
				if rec.Code != tc.code {
					t.Fatalf("request %d: %d, want %d: %s", i, rec.Code, tc.code, rec.Body)
				}
			}
			if b := binds(h); b != 1 {
				t.Errorf("%d binds, want 1", b)
			}
			mfs := gather(t, h)
			for _, result := range []string{"success", "failure", "denied", "rate_limited"} {
				want := 0.0
				if result == tc.result {
					want = 1
				}
				checkCounter(t, mfs, "portcullis_logins_total", map[string]string{"idp": "corp-ldap", "result": result}, want)
			}
			if left := guessesLeft(t, h, tc.username); left != tc.left {
				t.Errorf("%s has %d guesses left, want %d", tc.username, left, tc.left)
			}
		})
	}
}

// Credentials from the Basic auth cache whose role the mapping takes away
// at a date (now() in role_mapping) count one denied login, as their check
// counted one success: not one per request of the client until the cache
// forgets them. A cached success is no login.
func TestLDAPBasicAuthCachedRefusalCountsOneLogin(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	until := time.Now().Add(time.Second)
	cfg := ldapProxyConfig(dir.URL, upstream.URL) + `role_mapping:
  roles: [admin]
  default: ""
  rules:
    - role: admin
      when: 'now() < date("` + until.Format(time.RFC3339Nano) + `") && "cvat-admins" in groups'
`
	h := newTestHandler(t, cfg)
	get := func() int {
		r := httptest.NewRequest("GET", "/legacy/x", nil)
		r.SetBasicAuth(ldapserver.Alice, ldapserver.AlicePassword)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	for i := range 3 {
		if code := get(); code != http.StatusOK {
			t.Fatalf("request %d before the role's end: %d, want 200", i, code)
		}
	}
	waitFor(t, "the role's end", func() bool { return time.Now().After(until) })
	for i := range 5 {
		if code := get(); code != http.StatusForbidden {
			t.Fatalf("request %d after the role's end: %d, want 403", i, code)
		}
	}
	if b := binds(h); b != 1 {
		t.Errorf("%d binds, want 1: the cache was not used", b)
	}
	mfs := gather(t, h)
	checkCounter(t, mfs, "portcullis_logins_total", map[string]string{"idp": "corp-ldap", "result": "success"}, 1)
	checkCounter(t, mfs, "portcullis_logins_total", map[string]string{"idp": "corp-ldap", "result": "denied"}, 1)
}
