package idp

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

var errReplay = errors.New("assertion already used (replay)")

// ReplayStore records values that may be used once, where every replica sees
// them (Redis): given to the SAML provider in Options.Replay, it makes an
// assertion acceptable once across replicas, not once per process.
type ReplayStore interface {
	// MarkOnce records key until the given time and reports whether it was
	// new; an error means it could not be recorded.
	MarkOnce(ctx context.Context, key string, until time.Time) (bool, error)
}

// useAssertion accepts the assertion id once: in the shared store when there
// is one, else in this process's cache. An assertion that cannot be recorded
// is refused.
func (p *SAMLProvider) useAssertion(ctx context.Context, id string, expiry time.Time) error {
	if p.shared == nil {
		return p.replay.use(id, expiry, time.Now(), p.log)
	}
	if id == "" {
		return errors.New("assertion has no ID")
	}
	first, err := p.shared.MarkOnce(ctx, "saml:"+p.cfg.ID+":"+id, expiry)
	if err != nil {
		return fmt.Errorf("record assertion: %w", err)
	}
	if !first {
		return errReplay
	}
	return nil
}

// replayCache remembers the IDs of accepted assertions until they expire, so
// each is accepted once. It holds at most max entries: when full, expired ones
// go first, then the one closest to expiry. It never forgets an ID silently:
// it keeps the latest expiry of the entries it had to drop before their time
// and refuses every assertion expiring at or before it (fail closed), so a
// flood of logins costs older assertions a new login, never a replay. It is
// proxy/session's expiringSet idea, rewritten here because session imports
// idp. It lives in memory, per process.
type replayCache struct {
	mu      sync.Mutex
	max     int
	expires map[string]time.Time
	order   expiryHeap
	// forgotten is the latest expiry of an entry dropped before it expired.
	forgotten time.Time

	evicted int       // entries dropped before their time since the last warning
	warned  time.Time // when that warning was logged
}

// replayWarnEvery spaces the warnings about entries dropped before their
// time: a flood is reported once a minute with a count.
const replayWarnEvery = time.Minute

// errReplayForgotten refuses an assertion the full cache may have dropped.
var errReplayForgotten = fmt.Errorf("%w: the replay cache was full and forgot assertions expiring as late as this one; log in again", errReplay)

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, expires: map[string]time.Time{}}
}

// use records id until expiry, or returns errReplay if it is already there or
// may have been dropped; log receives the warning when entries are dropped
// before their time.
func (c *replayCache) use(id string, expiry, now time.Time, log *slog.Logger) error {
	if id == "" {
		return errors.New("assertion has no ID")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropExpired(now)
	if _, seen := c.expires[id]; seen {
		return errReplay
	}
	if !c.forgotten.IsZero() && !expiry.After(c.forgotten) {
		return errReplayForgotten
	}
	for len(c.expires) >= c.max {
		e := heap.Pop(&c.order).(expiryEntry)
		delete(c.expires, e.id)
		if e.at.After(c.forgotten) {
			c.forgotten = e.at
		}
		c.evicted++ // dropExpired left only unexpired entries
	}
	c.expires[id] = expiry
	heap.Push(&c.order, expiryEntry{id: id, at: expiry})
	if c.evicted > 0 && (c.warned.IsZero() || now.Sub(c.warned) >= replayWarnEvery) {
		log.Warn("saml: replay cache full, unexpired assertions forgotten; older ones are refused until then",
			"bound", c.max, "forgotten", c.evicted, "refused_until", c.forgotten)
		c.evicted, c.warned = 0, now
	}
	return nil
}

func (c *replayCache) dropExpired(now time.Time) {
	for len(c.order) > 0 && !c.order[0].at.After(now) {
		e := heap.Pop(&c.order).(expiryEntry)
		delete(c.expires, e.id)
	}
}

func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.expires)
}

type expiryEntry struct {
	id string
	at time.Time
}

// expiryHeap is a min-heap of entries by expiry.
type expiryHeap []expiryEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
