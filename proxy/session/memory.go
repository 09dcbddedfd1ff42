package session

import (
	"container/heap"
	"crypto/sha256"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// expiringSet remembers keys until a time (revoked session IDs, used login
// states). It holds at most max keys: when full it first forgets expired ones
// and then the ones closest to expiring, so memory stays bounded even under a
// flood of logouts or logins. It never forgets a key silently: it keeps the
// latest time of the keys it had to forget before their time, and treats
// every key whose own time is at or before that as still remembered (fail
// closed). A login in progress that old must be started again, a session that
// close to its end must log in again; newer ones are unaffected.
type expiringSet struct {
	mu    sync.Mutex
	max   int
	until map[string]time.Time
	order expiryHeap // every key in until has an entry here with the same time
	// forgotten is the latest time of a key forgotten before it expired.
	forgotten time.Time
	// marks tells, for keys added by Mark, which addition they are from
	// (RemoveMark); nil until Mark is used.
	marks map[string]uint64
	seq   uint64 // the last mark handed out

	what    string // names the set in the warning
	log     *slog.Logger
	evicted int       // keys forgotten before their time since the last warning
	warned  time.Time // when that warning was logged
}

// evictionWarnEvery spaces the warnings about keys forgotten before their
// time: a flood is reported once a minute with a count, not once per key.
const evictionWarnEvery = time.Minute

// newExpiringSet builds a set of at most max keys; what names it in the
// warning log logs when it forgets keys before their time (nil: slog.Default()).
func newExpiringSet(max int, what string, log *slog.Logger) *expiringSet {
	if log == nil {
		log = slog.Default()
	}
	return &expiringSet{max: max, until: make(map[string]time.Time), what: what, log: log}
}

// Add remembers key until the given time. It reports false when key was
// already remembered and not yet expired, or may have been (until is at or
// before the time of a key forgotten early), which makes it a check-and-set
// for single use.
func (s *expiringSet) Add(key string, until, now time.Time) bool {
	// A copy of its own: a key cut from a request (a login's state, from a
	// form or a query) would keep the whole request alive until it expires,
	// up to a megabyte of SAML answer for each state for ten minutes.
	key = strings.Clone(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.add(key, until, now)
}

// Mark is Add that also returns, when it added key, a number that tells
// this addition of key from every other, for RemoveMark.
func (s *expiringSet) Mark(key string, until, now time.Time) (uint64, bool) {
	key = strings.Clone(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.add(key, until, now) {
		return 0, false
	}
	if s.marks == nil {
		s.marks = make(map[string]uint64)
	}
	s.seq++
	s.marks[key] = s.seq
	return s.seq, true
}

// RemoveMark forgets key if it is still remembered from the addition that
// mark (Mark) stands for: not once it was added again since, after it
// expired or was removed, by another caller, whose addition a late
// RemoveMark must not undo.
func (s *expiringSet) RemoveMark(key string, mark uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.marks[key]; ok && m == mark {
		delete(s.until, key)
		delete(s.marks, key)
	}
}

// add is Add under the lock, with key already its own copy.
func (s *expiringSet) add(key string, until, now time.Time) bool {
	s.sweep(now)
	if old, ok := s.until[key]; ok && now.Before(old) {
		if until.After(old) {
			s.until[key] = until
			s.push(key, until)
		}
		return false
	}
	if s.covers(until) {
		return false
	}
	if _, ok := s.until[key]; !ok {
		s.makeRoom(now)
	}
	s.until[key] = until
	delete(s.marks, key) // the mark of an addition before, expired
	s.push(key, until)
	return true
}

// Has reports whether key, which is valid until the given time, is
// remembered and not yet expired, or may have been forgotten early.
func (s *expiringSet) Has(key string, until, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	remembered, ok := s.until[key]
	return (ok && now.Before(remembered)) || s.covers(until)
}

// Forgets reports whether a key valid until the given time may have been
// forgotten before its time, and is therefore refused.
func (s *expiringSet) Forgets(until time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.covers(until)
}

// lookup tells, under one lock (it runs on every request once a user was
// logged out at the IdP), the time key is remembered until, if it is (an
// expired key stays until the next Add sweeps it), and whether an item
// valid until the given time may have been forgotten early (Forgets).
func (s *expiringSet) lookup(key string, until time.Time) (remembered time.Time, ok, forgotten bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	remembered, ok = s.until[key]
	return remembered, ok, s.covers(until)
}

// Remove forgets key now; its heap entry goes stale and is skipped, and
// counts against no bound (push, makeRoom).
func (s *expiringSet) Remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.until, key)
	delete(s.marks, key)
}

// postpone moves the time of every key, and that of the keys forgotten
// early, d later (d > 0). Moving every heap entry by the same amount keeps
// the heap in order, and a stale entry stays stale.
func (s *expiringSet) postpone(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.until {
		s.until[k] = t.Add(d)
	}
	for i := range s.order {
		s.order[i].until = s.order[i].until.Add(d)
	}
	if !s.forgotten.IsZero() {
		s.forgotten = s.forgotten.Add(d)
	}
}

func (s *expiringSet) covers(until time.Time) bool {
	return !s.forgotten.IsZero() && !until.After(s.forgotten)
}

func (s *expiringSet) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.until)
}

// makeRoom forgets the keys closest to expiring until one more fits. Only
// keys count: the stale entries that removed keys (logins whose answer
// failed, which anyone can send) leave in the heap are passed over for
// nothing, so that they never push a key out before its time.
func (s *expiringSet) makeRoom(now time.Time) {
	for len(s.until) >= s.max {
		e := heap.Pop(&s.order).(expiryEntry)
		if !s.drop(e) || !now.Before(e.until) {
			continue
		}
		if e.until.After(s.forgotten) {
			s.forgotten = e.until
		}
		s.evicted++
	}
	if s.evicted > 0 && (s.warned.IsZero() || now.Sub(s.warned) >= evictionWarnEvery) {
		s.log.Warn("session: memory bound reached, unexpired entries forgotten; older ones are refused until then",
			"set", s.what, "bound", s.max, "forgotten", s.evicted, "refused_until", s.forgotten)
		s.evicted, s.warned = 0, now
	}
}

// staleSlack is how many stale heap entries beyond as many as there are
// keys are let be before the heap is rebuilt.
const staleSlack = 16

// push adds key's heap entry. Once stale entries (of removed keys, and of
// keys remembered longer since) outnumber the keys, the heap is rebuilt
// from the keys alone, so that it holds at most about twice as many
// entries as there are keys, at a cost spread over the pushes that made
// them stale.
func (s *expiringSet) push(key string, until time.Time) {
	heap.Push(&s.order, expiryEntry{key, until})
	if len(s.order) <= 2*len(s.until)+staleSlack {
		return
	}
	order := make(expiryHeap, 0, len(s.until))
	for k, t := range s.until {
		order = append(order, expiryEntry{k, t})
	}
	heap.Init(&order)
	s.order = order
}

// sweep forgets the keys that have expired.
func (s *expiringSet) sweep(now time.Time) {
	for len(s.order) > 0 && !now.Before(s.order[0].until) {
		s.drop(heap.Pop(&s.order).(expiryEntry))
	}
}

// drop forgets the key of a popped heap entry and reports whether it did:
// an entry is stale when the key was re-added later with a later time.
func (s *expiringSet) drop(e expiryEntry) bool {
	if t, ok := s.until[e.key]; !ok || !t.Equal(e.until) {
		return false
	}
	delete(s.until, e.key)
	delete(s.marks, e.key)
	return true
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
	old[len(old)-1] = expiryEntry{} // its key is not kept by the array
	*h = old[:len(old)-1]
	return e
}

// openedCache maps the SHA-256 of a sealed session value to the session it
// opened to, so that the HMAC check, decryption and decoding happen once per
// cookie value rather than on every request. It holds only sessions that
// opened; expiry, idle timeout and revocation are checked by the caller on
// every hit, so a cached entry never outlives its session's validity. It is
// bounded both in entries and in the memory its sessions hold (heldBytes).
type openedCache struct {
	mu       sync.RWMutex
	max      int
	maxBytes int
	bytes    int
	entries  map[[sha256.Size]byte]cached
}

type cached struct {
	session *Session
	size    int // heldBytes of the session
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

// put caches s, which holds size bytes (heldBytes).
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

// heldBytes estimates the memory session s holds once opened, for the
// cache's bound: its profile's Footprint, its tokens, and the structs
// around them. The length of the sealed value it came from is no measure:
// sessions are deflated before they are sealed, and one with 300 groups
// named by their DN holds ten times its 2 KB of cookie.
func heldBytes(s *Session) int {
	n := 512 + s.Profile.Footprint() // with the Session and its cache entry
	t := &s.Tokens
	n += len(s.ID) + len(t.RefreshToken) + len(t.IDToken) + len(t.Sub) + len(t.SID) + len(s.openedSubject)
	if id := t.NameID; id != nil {
		n += 80 + len(id.Value) + len(id.Format) + len(id.NameQualifier) + len(id.SPNameQualifier) + len(id.SPProvidedID)
	}
	return n
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
