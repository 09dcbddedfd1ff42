package idp

import "sync"

// Remembered keeps a value per session that was worked out from its
// profile (the attribute pass's identity headers, the roles a configuration
// maps it to), so that the work is done once per session rather than on
// every request. It is bounded in number and in the memory the values hold
// (their footprint, of which the profile is most): the sessions behind them
// may be long gone, and nothing else forgets them. The zero value is not
// usable; NewRemembered makes one.
type Remembered[V any] struct {
	maxEntries, maxBytes int

	mu    sync.RWMutex
	m     map[string]remembered[V]
	bytes int // the footprints of those in m
}

type remembered[V any] struct {
	v         V
	footprint int
}

// NewRemembered keeps at most entries values, of at most bytes in all.
func NewRemembered[V any](entries, bytes int) *Remembered[V] {
	return &Remembered[V]{maxEntries: entries, maxBytes: bytes, m: map[string]remembered[V]{}}
}

// Get is the value remembered under key.
func (c *Remembered[V]) Get(key string) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[key]
	c.mu.RUnlock()
	return e.v, ok
}

// Put remembers v under key in place of what was, footprint being the bytes
// it holds. A value of more than a sixteenth of the bound is not kept
// (worked out on every request instead, rather than pushing out the values
// of many sessions); to make room, a few others are forgotten at random
// (map order), and worked out again at their next request.
func (c *Remembered[V]) Put(key string, v V, footprint int) {
	if footprint > c.maxBytes/16 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[key]; ok {
		c.bytes -= old.footprint
		delete(c.m, key)
	}
	for len(c.m) >= c.maxEntries || (len(c.m) > 0 && c.bytes+footprint > c.maxBytes) {
		n := 0
		for k, old := range c.m {
			c.bytes -= old.footprint
			delete(c.m, k)
			if n++; n >= 16 {
				break
			}
		}
	}
	c.m[key] = remembered[V]{v, footprint}
	c.bytes += footprint
}

// Len is how many values are remembered, and Bytes their footprints.
func (c *Remembered[V]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// Bytes is the sum of the footprints of the values remembered.
func (c *Remembered[V]) Bytes() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bytes
}
