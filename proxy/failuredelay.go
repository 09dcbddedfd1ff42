package proxy

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// A password check refused as "wrong username or password" (an unknown
// username, one that matches several entries, a wrong password, an account
// the directory refuses whatever the password) is answered no sooner than a
// floor after the check began, plus a random jitter, as Linux-PAM's
// pam_fail_delay, PostgreSQL's auth_delay and Authelia's first factor do:
// a username that matches no entry costs the directory one search, a known
// one a search and a bind, and without the floor the time of the answer
// tells which usernames exist. Successes are not delayed.
//
// The floor follows the directory: it is the smoothed duration of the
// recent failed checks that bound as the user, plus four times their
// smoothed deviation (RFC 6298's SRTT + 4·RTTVAR), so that nearly every
// wrong password, not only the average one, is answered at the floor
// rather than after it, like an unknown user. It never goes below
// minFailureFloor (also its value before any bind was seen) nor above
// maxFailureFloor, whatever the directory (or someone who loads it to make
// binds slow) does.
const (
	minFailureFloor = 250 * time.Millisecond
	maxFailureFloor = 2 * time.Second
	// failureJitter bounds the random time added to the floor.
	failureJitter = 100 * time.Millisecond
)

// failurePace learns how long failed password checks at one IdP take, and
// says when such a failure may be answered.
type failurePace struct {
	// jitter returns a random number in [0, n): rand.Int64N; tests fix it.
	jitter func(n int64) int64

	mu       sync.Mutex
	observed int           // failed checks that bound as the user, seen so far
	avg, dev time.Duration // their smoothed duration and deviation
}

func newFailurePace() *failurePace {
	return &failurePace{jitter: rand.Int64N}
}

// observe records d, how long a failed check that bound as the user took
// from its start. d counts at most maxFailureFloor, so that one stuck bind
// does not hold the floor at its maximum long after the directory is quick
// again.
func (p *failurePace) observe(d time.Duration) {
	d = min(max(d, 0), maxFailureFloor)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.observed == 0 {
		p.avg, p.dev = d, d/2
	} else {
		diff := p.avg - d
		if diff < 0 {
			diff = -diff
		}
		p.dev += (diff - p.dev) / 4
		p.avg += (d - p.avg) / 8
	}
	p.observed++
}

// floor is how long a failed check takes at least, before the jitter.
func (p *failurePace) floor() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.observed == 0 {
		return minFailureFloor
	}
	return min(max(p.avg+4*p.dev, minFailureFloor), maxFailureFloor)
}

// answerAt is when a failed check that began at start may be answered.
func (p *failurePace) answerAt(start time.Time) time.Time {
	return start.Add(p.floor() + time.Duration(p.jitter(int64(failureJitter))))
}

// sleepUntil waits until t on h's clock, or until ctx ends (the client went
// away: nobody is left to learn anything from the answer's time).
func (h *Handler) sleepUntil(ctx context.Context, t time.Time) {
	d := t.Sub(h.now())
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}
