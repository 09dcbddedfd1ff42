package idp

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
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
		return p.replay.use(id, expiry, time.Now())
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
// go first, then the one closest to expiry. It lives in memory, per process.
type replayCache struct {
	mu      sync.Mutex
	max     int
	expires map[string]time.Time
	order   expiryHeap
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, expires: map[string]time.Time{}}
}

// use records id until expiry, or returns errReplay if it is already there.
func (c *replayCache) use(id string, expiry, now time.Time) error {
	if id == "" {
		return errors.New("assertion has no ID")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropExpired(now)
	if _, seen := c.expires[id]; seen {
		return errReplay
	}
	for len(c.expires) >= c.max {
		e := heap.Pop(&c.order).(expiryEntry)
		delete(c.expires, e.id)
	}
	c.expires[id] = expiry
	heap.Push(&c.order, expiryEntry{id: id, at: expiry})
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
