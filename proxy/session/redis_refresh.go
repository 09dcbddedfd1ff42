package session

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/securecookie"
	"github.com/redis/go-redis/v9"
)

// RefreshOutcome is how a refresh of a session at its IdP ended.
type RefreshOutcome struct {
	// Session is the session to carry on with; nil when it ended.
	Session *Session
	// Kept says the IdP could not be asked: every request keeps its own.
	Kept bool
	// Abandoned, from RefreshOnce's refresh, says it was given up on
	// unanswered while the IdP may still run it (the process stops):
	// RefreshOnce stores no outcome and leaves the lock to lapse, as a
	// replica that died mid-refresh does, so that no replica spends the
	// same refresh token again before the IdP's answer would have come.
	Abandoned bool
}

const (
	// refreshLockTTL bounds how long a replica that died mid-refresh holds
	// the others back. Longer than the proxy's bound on one refresh at the
	// IdP (a minute): a lock that lapsed while the IdP still held the
	// refresh would let another replica spend the refresh token again.
	refreshLockTTL = 75 * time.Second
	// refreshPoll is how soon a replica that waits for another's refresh
	// first looks again for its outcome: an IdP answers a refresh in a
	// few hundred ms. Each look is two commands (the outcome, the lock).
	refreshPoll = 25 * time.Millisecond
	// refreshPollMax bounds the wait between looks, which grows from
	// refreshPoll (refreshPollGrowth): an IdP that stalls holds the
	// waiters of every replica but one, one per session, for as long as
	// it stalls (refreshLockTTL at most), and looking every refreshPoll
	// they sent Redis 80 commands a second per session, 117 counting
	// those of the lock's script. From about 2 s on, near the end of the
	// proxy's refreshWait (3 s), past which no request waits for the
	// outcome, a waiter looks about twice a second and finds it at most
	// refreshPollMax late.
	refreshPollMax = 500 * time.Millisecond
)

// refreshPollGrowth is the wait between a waiter's looks after d: a quarter
// longer, up to refreshPollMax. With refreshPollJitter, a waiter finds the
// outcome of a refresh that takes 300 ms some 30 to 40 ms late in the
// middle, about 110 ms at most, in 8 looks where refreshPoll alone took
// 12; it looks 18 times in 3 s (120) and some 180 times in 75 s (3,000).
func refreshPollGrowth(d time.Duration) time.Duration {
	return min(d+d/4, refreshPollMax)
}

// refreshPollJitter is the wait of a look due d after the last: between
// 3d/4 and d, at random, so that replicas that began waiting together (a
// page's parallel requests, spread over them) do not look together.
func refreshPollJitter(d time.Duration) time.Duration {
	return d - mrand.N(d/4+1)
}

// releaseScript deletes KEYS[1] only when it still holds ARGV[1], the token
// this caller set there (setOnce): a refresh lock, a Mark (Unmark).
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// RefreshOnce makes sure a refresh of s (from its Refreshed time) runs on one
// replica only, so that a rotating refresh token is spent once: the replica
// that takes the lock in Redis runs refresh and stores its outcome there for
// remember (kept outcomes for keptRemember); the others wait for it and
// return it. ran reports whether refresh ran here. An error means Redis could
// not be asked; refresh did not run. An outcome that says Abandoned is
// returned as it is, neither stored nor unlocked.
func (st *RedisStore) RefreshOnce(ctx context.Context, s *Session, remember, keptRemember time.Duration, refresh func() RefreshOutcome) (out RefreshOutcome, ran bool, err error) {
	from := strconv.FormatInt(s.Refreshed.Unix(), 10)
	lock, result := st.redis.key("refresh", "lock", s.ID, from), st.redis.key("refresh", "result", s.ID, from)
	token := rand.Text()
	ctx, cancel := context.WithTimeout(ctx, refreshLockTTL+redisOpTimeout)
	defer cancel()
	poll := refreshPoll
	for {
		if out, ok, err := st.refreshResult(ctx, s.ID, result); err != nil || ok {
			return out, false, err
		}
		took, err := st.redis.setOnce(ctx, lock, token, refreshLockTTL)
		if err != nil {
			return RefreshOutcome{}, false, st.redis.unavailable("take refresh lock", err)
		}
		if took {
			break
		}
		// Not a blocking command (BLPOP on a list the holder pushes to):
		// each waiter would hold one of the pool's connections (10 per
		// CPU) for as long as the IdP stalls, as many stalled sessions
		// would drain it, and every signed-in request needs it. Nor
		// Pub/Sub, which the documented ACL (resetchannels) refuses and
		// older replicas do not publish to.
		select {
		case <-ctx.Done():
			return RefreshOutcome{}, false, st.redis.unavailable("wait for refresh", ctx.Err())
		case <-time.After(refreshPollJitter(poll)):
		}
		poll = refreshPollGrowth(poll)
	}
	release := true
	defer func() {
		if release {
			releaseScript.Run(context.WithoutCancel(ctx), st.redis.client, []string{lock}, token)
		}
	}()
	// The winner before this one may have finished between the look and the lock.
	if out, ok, err := st.refreshResult(ctx, s.ID, result); err != nil || ok {
		return out, false, err
	}
	out = refresh()
	if out.Abandoned {
		release = false
		return out, true, nil
	}
	value, keep := "e", remember
	switch {
	case out.Kept:
		value, keep = "k", keptRemember
	case out.Session != nil:
		sealed, err := st.values[0].Encode(redisValueCodecName, toWire(out.Session, st.aud))
		if err != nil {
			return out, true, fmt.Errorf("refresh session %s: seal: %w", s.ID, err)
		}
		value = "s" + sealed
	}
	if keep > 0 {
		if err := st.redis.client.Set(context.WithoutCancel(ctx), result, value, keep).Err(); err != nil {
			return out, true, st.redis.unavailable("store refresh outcome", err)
		}
	}
	return out, true, nil
}

// refreshResult reads the stored outcome of a refresh; ok is false when
// there is none yet.
func (st *RedisStore) refreshResult(ctx context.Context, id, key string) (RefreshOutcome, bool, error) {
	v, err := st.redis.client.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return RefreshOutcome{}, false, nil
	}
	if err != nil {
		return RefreshOutcome{}, false, st.redis.unavailable("read refresh outcome", err)
	}
	switch {
	case v == "e":
		return RefreshOutcome{}, true, nil
	case v == "k":
		return RefreshOutcome{Kept: true}, true, nil
	case strings.HasPrefix(v, "s"):
		var w wireSession
		if err := securecookie.DecodeMulti(redisValueCodecName, v[1:], &w, st.values...); err == nil && w.opens(st.aud) && w.ID == id {
			s := w.session()
			s.stored = true
			return RefreshOutcome{Session: s}, true, nil
		}
	}
	// Unreadable (keys rotated away meanwhile): as if the IdP could not be asked.
	return RefreshOutcome{Kept: true}, true, nil
}
