package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// shutdownStack is two replicas of the proxy with one session store, in
// front of a real oidc-provider that rotates refresh tokens: a, served as
// serve serves it (serveOn, reloaded from its file) until the test ends its
// context as a SIGTERM does, and b, the replica that goes on serving. alice
// signed in at a. Each replica's clock stands still unless the test moves
// it on.
type shutdownStack struct {
	op    *oidcserver.Server
	redis *redisserver.Server // nil with the cookie store
	live  *live               // a's
	a, b  *Handler
	// aIdP and bIdP are each replica's way to the IdP; they count the
	// refreshes each sent.
	aIdP, bIdP *userinfoFailsOnce
	aAt, bAt   atomic.Int64 // the replicas' clocks, in Unix nanoseconds
	aLog       *process.Output
	url        string // a's public URL, which b has too
	cookie     string // alice's session cookie
	// stop ends a's context (SIGTERM); returned is closed once its serve
	// has returned.
	stop     context.CancelFunc
	returned chan struct{}
}

// startShutdownStack starts it with store ("cookie" or "redis"), a's
// grace period, and op's options (its redirect URIs are set here).
func startShutdownStack(t *testing.T, store string, grace time.Duration, op oidcserver.Options) *shutdownStack {
	t.Helper()
	s := &shutdownStack{aLog: &process.Output{}, returned: make(chan struct{})}
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.url = "http://" + proxyLn.Addr().String()
	up := httptest.NewServer(echo.New())
	t.Cleanup(up.Close)
	op.RedirectURIs = []string{s.url + "/.portcullis/oidc/company/callback"}
	s.op = oidcserver.Start(t, op)
	s.aIdP, s.bIdP = countRefreshes(t, s.op), countRefreshes(t, s.op)
	y := strings.NewReplacer("PUBLIC_URL", s.url, "UPSTREAM_URL", up.URL, "ISSUER", s.op.Issuer).Replace(refreshRedisConfig)
	if store == "redis" {
		s.redis = redisserver.Start(t)
		y = strings.Replace(y, "REDIS_URL", s.redis.URL, 1)
	} else {
		y = strings.Replace(y, "  store: redis\n  redis: {url: REDIS_URL}\n", "", 1)
	}
	path := filepath.Join(t.TempDir(), "portcullis.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig([]byte(y), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replica a's log:\n%s", s.aLog)
		}
	})

	// a, as Run builds and serves it: one context for both.
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	a, err := build(ctx, cfg, slog.New(slog.NewTextHandler(s.aLog, nil)), nil, s.aIdP)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	s.a = a
	a.now = func() time.Time { return time.Unix(0, s.aAt.Load()) }
	s.aAt.Store(time.Now().UnixNano())
	s.live = newLive(ctx, a, a.log)
	s.live.src = &configSource{path: path, getenv: os.Getenv}
	_, s.live.src.stamp, _ = s.live.src.read()
	go func() {
		defer close(s.returned)
		if err := s.live.serveOn(ctx, proxyLn, adminLn, grace); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		stop()
		<-s.returned
	})

	s.b = newTestHandlerVia(t, y, s.bIdP)
	s.b.now = func() time.Time { return time.Unix(0, s.bAt.Load()) }
	for deadline := time.Now().Add(20 * time.Second); len(a.Ready()) > 0 || len(s.b.Ready()) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("replicas not ready: a %v, b %v", a.Ready(), s.b.Ready())
		}
	}

	s.cookie = aliceSessionCookie(t, s.url)
	// The session's times are the store's clock's, the real one, at the
	// callback: the replicas' clocks stand from now on at the end of the
	// login (refreshAfterRedisCameBack says why).
	s.aAt.Store(time.Now().UnixNano())
	s.bAt.Store(s.aAt.Load())
	return s
}

// getA is a script's request to a with alice's cookie: 200, or 401
// without a session.
func (s *shutdownStack) getA(t *testing.T) int {
	t.Helper()
	req, _ := http.NewRequest("GET", s.url+"/data", nil)
	req.Header.Set("Cookie", s.cookie)
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// getB is that request at b.
func (s *shutdownStack) getB(t *testing.T) int {
	t.Helper()
	req := httptest.NewRequest("GET", s.url+"/data", nil)
	req.Header.Set("Cookie", s.cookie)
	req.Header.Set("Accept", "application/json")
	rec := httptest.NewRecorder()
	s.b.ServeHTTP(rec, req)
	return rec.Code
}

// stored is alice's session as the store holds it, read by b.
func (s *shutdownStack) stored(t *testing.T) *session.Session {
	t.Helper()
	req := httptest.NewRequest("GET", s.url+"/data", nil)
	req.Header.Set("Cookie", s.cookie)
	got, err := s.b.sessions.Load(req)
	if err != nil || got == nil {
		t.Fatalf("alice's session in Redis: %v, %v", got, err)
	}
	return got
}

// refreshAtAStalled has a's next request start a refresh of alice's
// session at an IdP that stalls (SIGSTOP), and returns once it has been
// sent there; a request has not waited for it.
func (s *shutdownStack) refreshAtAStalled(t *testing.T) {
	t.Helper()
	s.a.refresher.wait = 0 // served as it was at once, as after refreshWait
	s.op.Pause()
	s.aAt.Add(int64(2 * time.Second)) // past session.refresh
	if code := s.getA(t); code != http.StatusOK {
		t.Fatalf("the request that starts the refresh: %d, want 200 with the session as it was", code)
	}
	waitFor(t, "the refresh sent to the IdP", func() bool { return s.aIdP.refreshes.Load() == 1 })
}

// awaitReturned waits for a's serve to return, failing the test if it
// has not within limit: a bound on a failure, not a measure.
func (s *shutdownStack) awaitReturned(t *testing.T, limit time.Duration, what string) {
	t.Helper()
	select {
	case <-s.returned:
	case <-time.After(limit):
		t.Fatalf("serve has not returned %s %v after its context ended", what, limit)
	}
}

// A replica that shuts down while a refresh it runs with the Redis store
// is still at the IdP waits for it, within the grace period, before it
// closes Redis: the IdP that answers then has rotated the session's
// refresh token, and the renewed session, its new token with it, reaches
// Redis, where the other replicas find it and do not refresh again. Before,
// shutdown closed Redis under the refresh: its save failed, its lock stayed
// until it lapsed (75 s), and the next refresh, at another replica,
// spent the rotated-away token, which the IdP refused as reused: the user
// was signed out. A refresh started before a reload is waited for too.
func TestShutdownWaitsForARefreshStillAtTheIdP(t *testing.T) {
	for _, reload := range []bool{false, true} {
		name := "refresh started by the configuration serving"
		if reload {
			name = "refresh started by the configuration before a reload"
		}
		t.Run(name, func(t *testing.T) {
			s := startShutdownStack(t, "redis", time.Minute, oidcserver.Options{})
			before := s.stored(t)
			s.refreshAtAStalled(t)
			if reload {
				if err := s.live.reload("signal"); err != nil {
					t.Fatal(err)
				}
				if s.live.cur.Load() == s.a {
					t.Fatal("the reload did not swap in a new Handler")
				}
			}

			s.stop() // SIGTERM
			if !s.aLog.Awaits("shutting down", 30*time.Second) {
				t.Fatal("a did not start shutting down")
			}
			s.op.Resume() // within the grace
			s.awaitReturned(t, 2*time.Minute, "with the IdP answering")

			after := s.stored(t)
			if after.Tokens.RefreshToken == before.Tokens.RefreshToken {
				t.Fatalf("after a's shutdown, Redis holds the refresh token from before the refresh, which the IdP rotated away: the renewed session was lost")
			}
			if got := refreshResults(t, s.a, refreshSuccess); got != 1 {
				t.Errorf("a counted %v successful refreshes, want 1", got)
			}
			// b, its clock where a's was, serves the renewed session as it is.
			s.bAt.Store(s.aAt.Load())
			if code := s.getB(t); code != http.StatusOK {
				t.Fatalf("b, after a's shutdown: %d, want 200", code)
			}
			if n := s.bIdP.refreshes.Load(); n != 0 {
				t.Fatalf("b sent %d refreshes for a session a had just refreshed, want 0", n)
			}
			// And b's own refresh, when due, spends the token the IdP rotated to.
			s.bAt.Add(int64(2 * time.Second))
			s.b.refresher.wait = refreshTimeout // b's answer is to carry its outcome
			if code := s.getB(t); code != http.StatusOK {
				t.Fatalf("b's refresh after a's shutdown: %d, want 200", code)
			}
			if s.bIdP.refreshes.Load() != 1 || refreshResults(t, s.b, refreshSuccess) != 1 {
				t.Errorf("b: %d refreshes sent, %v succeeded; want 1 and 1", s.bIdP.refreshes.Load(), refreshResults(t, s.b, refreshSuccess))
			}
			if log := s.aLog.String(); strings.Contains(log, "level=WARN") || strings.Contains(log, "level=ERROR") {
				t.Errorf("a logged a warning or an error:\n%s", log)
			}
		})
	}
}

// A refresh still at the IdP when the grace period ends is given up on:
// the shutdown returns about the grace, not the minute a refresh may take,
// says how many it abandoned, and the refresh ends with it. Its refresh
// lock stays in Redis until it lapses: the IdP may still run the refresh,
// and another replica that took the lock at once would spend the same
// refresh token again.
func TestShutdownAbandonsARefreshPastTheGrace(t *testing.T) {
	s := startShutdownStack(t, "redis", time.Second, oidcserver.Options{})
	s.refreshAtAStalled(t)

	s.stop() // SIGTERM; the IdP stalls on
	// A bound well under refreshTimeout (a minute), generous for a grace
	// of a second on a loaded machine.
	s.awaitReturned(t, 40*time.Second, "with the IdP stalled past the grace")
	if log := s.aLog.String(); !strings.Contains(log, `level=WARN msg="grace period over; abandoning session refreshes not finished`) ||
		!strings.Contains(log, "refreshes=1") {
		t.Errorf("a's log does not warn that it abandoned 1 refresh:\n%s", log)
	}
	// Abandoned, the refresh ends, the IdP still stalling: nothing of a's
	// runs on once its serve has returned.
	waitFor(t, "the abandoned refresh to end", func() bool { return refreshResults(t, s.a, refreshError) == 1 })
	if !s.aLog.Awaits(`msg="refresh abandoned at shutdown`, 10*time.Second) {
		t.Errorf("a's log does not name the session whose refresh it abandoned:\n%s", s.aLog)
	}
	c := redis.NewClient(&redis.Options{Addr: s.redis.Addr})
	defer c.Close()
	locks, err := c.Keys(context.Background(), session.DefaultRedisKeyPrefix+"refresh:lock:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(locks) != 1 {
		t.Errorf("refresh locks in Redis after the shutdown that abandoned a refresh: %q, want the abandoned one's", locks)
	}
	results, err := c.Keys(context.Background(), session.DefaultRedisKeyPrefix+"refresh:result:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 0 {
		t.Errorf("refresh outcomes in Redis after the shutdown that abandoned a refresh: %q, want none", results)
	}
}

// A refresh abandoned at the end of the grace after the IdP's token
// endpoint answered (the IdP stalls at userinfo, which oidc-provider's
// default ID tokens need) holds the session's new refresh token, the one
// it was sent spent: the renewed session reaches Redis before the shutdown
// closes it, as when userinfo fails at any other time, and the next
// refresh, at another replica, spends the new token. Before, the
// abandonment cancelled the renewed session's write too: Redis kept the
// rotated-away token, found by the other replicas once the refresh's
// outcome was forgotten (a minute), and the IdP refused it as reused.
func TestShutdownSavesTheTokensOfARefreshAbandonedAtUserinfo(t *testing.T) {
	// A grace long enough that its end is not reached before the refresh
	// is at userinfo, on a loaded machine.
	s := startShutdownStack(t, "redis", 10*time.Second, oidcserver.Options{ConformIDTokenClaims: true})
	before := s.stored(t)
	s.aIdP.stall.Store(true)
	s.a.refresher.wait = 0 // served as it was at once, as after refreshWait
	s.aAt.Add(int64(2 * time.Second))
	if code := s.getA(t); code != http.StatusOK {
		t.Fatalf("the request that starts the refresh: %d, want 200 with the session as it was", code)
	}
	waitFor(t, "the refresh at userinfo", func() bool { return s.aIdP.stalled.Load() == 1 })
	if n := s.aIdP.refreshes.Load(); n != 1 {
		t.Fatalf("%d refreshes sent to the token endpoint, want 1", n)
	}

	s.stop() // SIGTERM; userinfo stalls on
	s.awaitReturned(t, 2*time.Minute, "with userinfo stalled past the grace")
	waitFor(t, "the abandoned refresh to end", func() bool { return refreshResults(t, s.a, refreshError) == 1 })
	after := s.stored(t)
	if after.Tokens.RefreshToken == before.Tokens.RefreshToken {
		t.Fatalf("after a's shutdown, Redis holds the refresh token the IdP rotated away at the abandoned refresh: the new one was lost")
	}

	// b refreshes the session when due with the token Redis holds, and the
	// IdP renews it.
	s.aIdP.stall.Store(false)
	s.bAt.Store(s.aAt.Load() + int64(2*time.Second))
	s.b.refresher.wait = refreshTimeout // b's answer is to carry its outcome
	if code := s.getB(t); code != http.StatusOK {
		t.Fatalf("b's refresh after a's shutdown: %d, want 200", code)
	}
	if s.bIdP.refreshes.Load() != 1 || refreshResults(t, s.b, refreshSuccess) != 1 || refreshResults(t, s.b, refreshRefused) != 0 {
		t.Errorf("b: %d refreshes sent, %v succeeded, %v refused; want 1, 1 and 0", s.bIdP.refreshes.Load(),
			refreshResults(t, s.b, refreshSuccess), refreshResults(t, s.b, refreshRefused))
	}
}

// With the cookie store a renewed session can only ride on a response,
// and a shutdown has none left to give: a refresh still at the IdP is
// not waited for, however long the grace period, and is abandoned at once.
func TestShutdownDoesNotWaitForACookieStoreRefresh(t *testing.T) {
	s := startShutdownStack(t, "cookie", 10*time.Minute, oidcserver.Options{})
	s.refreshAtAStalled(t)

	s.stop() // SIGTERM; the IdP stalls on
	// A bound well under the grace and refreshTimeout alike.
	s.awaitReturned(t, 40*time.Second, "with the IdP stalled")
	waitFor(t, "the abandoned refresh to end", func() bool { return refreshResults(t, s.a, refreshError) == 1 })
	if !s.aLog.Awaits(`msg="refresh abandoned at shutdown`, 10*time.Second) {
		t.Errorf("a's log does not name the session whose refresh it abandoned:\n%s", s.aLog)
	}
	if log := s.aLog.String(); strings.Contains(log, "grace period over") {
		t.Errorf("a waited out its grace for a refresh whose outcome it could not save:\n%s", log)
	}
}
