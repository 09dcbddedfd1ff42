package proxy

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// redisCommands is how many commands Redis has run, by INFO commandstats
// (those a script runs included), but for the INFO commands that asked.
func redisCommands(t *testing.T, c *redis.Client) (n int64, by map[string]int64) {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	by = map[string]int64{}
	for line := range strings.Lines(info) {
		name, stats, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd || name == "info" {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(stats, "calls="), ",")
		v, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			t.Fatalf("INFO commandstats: %q: %v", line, err)
		}
		by[name] = v
		n += v
	}
	return n, by
}

// A replica whose refresh of a session waits for another replica's, held
// at an IdP that stalls, looks for its outcome less and less often: the
// commands Redis runs for it, per second of the wait, are a fraction of
// those of a look every 25 ms (117 a second, each look an outcome read
// and a lock try by script: 156 looks in 4 s), which, with an IdP down,
// every session whose refresh fell due cost Redis on every replica but
// one for up to 75 s. The outcome still reaches the waiter once the IdP
// answers, and it does not ask the IdP itself.
func TestRefreshWaitingForAnotherReplicaSparesRedis(t *testing.T) {
	s := startShutdownStack(t, "redis", time.Minute, oidcserver.Options{})
	c := redis.NewClient(&redis.Options{Addr: s.redis.Addr})
	defer c.Close()
	before := s.stored(t)
	s.refreshAtAStalled(t) // a holds the session's refresh lock, the IdP stalls

	s.b.refresher.wait = 0 // b's request is served as it was at once; b's refresh waits
	s.bAt.Store(s.aAt.Load())
	start, startAt := redisCommands(t, c)
	began := time.Now()
	if code := s.getB(t); code != http.StatusOK {
		t.Fatalf("b's request while a's refresh is at the IdP: %d, want 200 with the session as it was", code)
	}
	// The IdP stalls on: what is measured is b's wait, not a condition to
	// wait for.
	time.Sleep(4 * time.Second)
	end, endAt := redisCommands(t, c)
	waited := time.Since(began)
	s.b.refresher.mu.Lock()
	waiting := len(s.b.refresher.inFlight)
	s.b.refresher.mu.Unlock()
	if waiting != 1 {
		t.Fatalf("b's refreshes in flight at the end of the measure: %d, want its wait for a's", waiting)
	}
	var by []string
	for k, v := range endAt {
		if d := v - startAt[k]; d != 0 {
			by = append(by, fmt.Sprintf("%s %d", k, d))
		}
	}
	slices.Sort(by)
	perSecond := float64(end-start) / waited.Seconds()
	t.Logf("b waiting for a's refresh: %d commands in %v, %.1f a second (%s)", end-start, waited.Round(time.Millisecond), perSecond, strings.Join(by, ", "))
	// Looks at most every 375 ms (refreshPollMax, its jitter at worst)
	// after a quicker start: 3 commands each, 8 a second, 15 over these
	// 4 s. A look every 25 ms is 120, 60 on a machine twice as slow.
	if perSecond > 30 {
		t.Errorf("b sent Redis %.1f commands a second while it waited for a's refresh, want at most 30", perSecond)
	}

	s.op.Resume()
	waitFor(t, "b's wait to end", func() bool {
		s.b.refresher.mu.Lock()
		defer s.b.refresher.mu.Unlock()
		return len(s.b.refresher.inFlight) == 0
	})
	if code := s.getB(t); code != http.StatusOK {
		t.Errorf("b after a's refresh: %d, want 200", code)
	}
	if n := s.bIdP.refreshes.Load(); n != 0 {
		t.Errorf("b sent %d refreshes to the IdP, want 0: a's outcome is b's", n)
	}
	// a saves the renewed session once it has shared its outcome.
	waitFor(t, "the renewed session in Redis", func() bool {
		return s.stored(t).Tokens.RefreshToken != before.Tokens.RefreshToken
	})
	if got := refreshResults(t, s.a, refreshSuccess); got != 1 {
		t.Errorf("a counted %v successful refreshes, want 1", got)
	}
}
