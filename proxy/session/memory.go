package session

import (
	"container/heap"
	"crypto/sha256"
	"sync"
	"time"
)

// expiringSet remembers keys until a time (revoked session IDs, used login
// states). It holds at most max keys: when full it first forgets expired ones
// and then the ones closest to expiring, so memory stays bounded even under a
// flood of logouts or logins.
type expiringSet struct {
	mu    sync.Mutex
	max   int
	until map[string]time.Time
	order expiryHeap // every key in until has an entry here with the same time
}

func newExpiringSet(max int) *expiringSet {
	return &expiringSet{max: max, until: make(map[string]time.Time)}
}

// Add remembers key until the given time. It reports false when key was
// already remembered and not yet expired, which makes it a check-and-set for
// single use.
func (s *expiringSet) Add(key string, until, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now)
	if old, ok := s.until[key]; ok && now.Before(old) {
		if until.After(old) {
			s.until[key] = until
			s.push(key, until)
		}
		return false
	}
	s.until[key] = until
	s.push(key, until)
	return true
}

// Has reports whether key is remembered and not yet expired.
func (s *expiringSet) Has(key string, now time.Time) bool {
	s.mu.Lock()
	until, ok := s.until[key]
	s.mu.Unlock()
	return ok && now.Before(until)
}

func (s *expiringSet) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.until)
}

func (s *expiringSet) push(key string, until time.Time) {
	for len(s.order) >= s.max {
		s.pop()
	}
	heap.Push(&s.order, expiryEntry{key, until})
}

// sweep forgets the keys that have expired.
func (s *expiringSet) sweep(now time.Time) {
	for len(s.order) > 0 && !now.Before(s.order[0].until) {
		s.pop()
	}
}

func (s *expiringSet) pop() {
	e := heap.Pop(&s.order).(expiryEntry)
	// An entry is stale when the key was re-added later with a later time.
	if s.until[e.key].Equal(e.until) {
		delete(s.until, e.key)
	}
}

type expiryEntry struct {
	key   string
	until time.Time
}

type expiryHeap []expiryEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// openedCache maps the SHA-256 of a sealed session value to the session it
// opened to, so that the HMAC check, decryption and decoding happen once per
// cookie value rather than on every request. It holds only sessions that
// opened; expiry, idle timeout and revocation are checked by the caller on
// every hit, so a cached entry never outlives its session's validity. It is
// bounded both in entries and in the total length of the sealed values (a
// rough measure of the memory their sessions take).
type openedCache struct {
	mu       sync.RWMutex
	max      int
	maxBytes int
	bytes    int
	entries  map[[sha256.Size]byte]cached
}

type cached struct {
	session *Session
	size    int // length of the sealed value
}

func newOpenedCache(max, maxBytes int) *openedCache {
	return &openedCache{max: max, maxBytes: maxBytes, entries: make(map[[sha256.Size]byte]cached)}
}

// get returns the cached session; callers must not modify it.
func (c *openedCache) get(key [sha256.Size]byte) *Session {
	if c == nil {
		return nil
	}
	c.mu.RLock()
	e := c.entries[key]
	c.mu.RUnlock()
	return e.session
}

// put caches s, opened from a sealed value of the given length.
func (c *openedCache) put(key [sha256.Size]byte, s *Session, size int, now time.Time) {
	if c == nil || size > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; ok {
		return
	}
	for len(c.entries) > 0 && (len(c.entries) >= c.max || c.bytes+size > c.maxBytes) {
		// Forget expired sessions among a few entries, and at least one
		// entry; map iteration order is random, so this is random eviction.
		n := 0
		for k, e := range c.entries {
			if n == 0 || !now.Before(e.session.Expires) {
				c.bytes -= e.size
				delete(c.entries, k)
			}
			if n++; n >= 16 {
				break
			}
		}
	}
	c.entries[key] = cached{s, size}
	c.bytes += size
}

// drop forgets every entry of the session with this ID (a logout is rare, so
// a scan is fine).
func (c *openedCache) drop(id string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		if e.session.ID == id {
			c.bytes -= e.size
			delete(c.entries, k)
		}
	}
}

// hashBuffers lend a byte buffer for hashing a cookie value that is held as a
// string, so that computing a cache key does not allocate.
var hashBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// valueKey is the cache key of a sealed value given in one or more pieces.
func valueKey(pieces ...string) [sha256.Size]byte {
	bp := hashBuffers.Get().(*[]byte)
	b := (*bp)[:0]
	for _, p := range pieces {
		b = append(b, p...)
	}
	key := sha256.Sum256(b)
	if cap(b) <= 64<<10 {
		*bp = b
		hashBuffers.Put(bp)
	}
	return key
}
