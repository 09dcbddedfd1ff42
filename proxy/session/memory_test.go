package session

import (
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
)

// quiet is a logger for sets whose warnings a test does not read.
var quiet = slog.New(slog.DiscardHandler)

func TestExpiringSet(t *testing.T) {
	now := time.Now()
	s := newExpiringSet(3, "test", quiet)
	if !s.Add("a", now.Add(time.Minute), now) || s.Add("a", now.Add(time.Minute), now) {
		t.Error("Add is not a check-and-set")
	}
	if !s.Has("a", now.Add(time.Minute), now) || s.Has("a", now.Add(time.Minute), now.Add(time.Minute)) {
		t.Error("a key is not remembered exactly until its time")
	}
	if !s.Add("a", now.Add(2*time.Minute), now.Add(time.Minute)) {
		t.Error("an expired key cannot be added again")
	}
	s.Add("b", now.Add(3*time.Minute), now)
	s.Add("c", now.Add(4*time.Minute), now)
	s.Add("d", now.Add(5*time.Minute), now)
	if _, kept := s.until["a"]; s.Len() != 3 || kept || !s.Has("d", now.Add(5*time.Minute), now) {
		t.Errorf("a full set did not forget the key closest to expiring: len %d", s.Len())
	}
	s.Add("e", now.Add(6*time.Minute), now.Add(4*time.Minute+time.Second))
	_, keptB := s.until["b"]
	_, keptC := s.until["c"]
	if s.Len() != 2 || keptB || keptC {
		t.Errorf("expired keys not swept: len %d", s.Len())
	}
}

func TestExpiringSetStaysBounded(t *testing.T) {
	now := time.Now()
	s := newExpiringSet(100, "test", quiet)
	for i := range 1000 {
		s.Add(fmt.Sprint(i%150), now.Add(time.Duration(i)*time.Second), now)
	}
	if s.Len() > 100 || len(s.order) > 100 {
		t.Errorf("%d keys and %d heap entries, want at most 100", s.Len(), len(s.order))
	}
}

func TestExpiringSetFailsClosedWhenFull(t *testing.T) {
	now := time.Now()
	full := func() *expiringSet {
		s := newExpiringSet(3, "test", quiet)
		for i, k := range []string{"a", "b", "c", "d"} { // a is forgotten for d
			s.Add(k, now.Add(time.Duration(i+1)*time.Minute), now)
		}
		return s
	}
	tests := []struct {
		name  string
		key   string
		until time.Duration
		want  bool // Has, and the opposite of what Add reports
	}{
		{"the key forgotten early is still remembered", "a", time.Minute, true},
		{"any key valid no longer than it is remembered too", "x", 30 * time.Second, true},
		{"a key valid exactly as long is remembered too", "y", time.Minute, true},
		{"a key valid longer is not", "z", 90 * time.Second, false},
		{"a key still held is remembered", "d", 4 * time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := full().Has(tt.key, now.Add(tt.until), now); got != tt.want {
				t.Errorf("Has = %v, want %v", got, tt.want)
			}
			if got := full().Add(tt.key, now.Add(tt.until), now); got == tt.want {
				t.Errorf("Add = %v, want %v", got, !tt.want)
			}
		})
	}
}

func TestMemoryMarksFailClosedWhenFull(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	m := NewMemoryMarks(2, "test", quiet)
	for i, k := range []string{"victim", "flood-1", "flood-2"} {
		if first, _ := m.MarkOnce(ctx, k, now.Add(time.Duration(i+1)*time.Hour)); !first {
			t.Fatalf("MarkOnce(%s) = false on its first use", k)
		}
	}
	if first, _ := m.MarkOnce(ctx, "victim", now.Add(time.Hour)); first {
		t.Error("a mark forgotten to make room was accepted as new")
	}
}

// recorder keeps the records logged through it.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) forgotten() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var counts []int64
	for _, rec := range r.records {
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "forgotten" {
				counts = append(counts, a.Value.Int64())
			}
			return true
		})
	}
	return counts
}

func TestExpiringSetWarnsOncePerBurst(t *testing.T) {
	now := time.Now()
	var logged recorder
	s := newExpiringSet(10, "test", slog.New(&logged))
	for i := range 10 { // expire before the flood: forgotten without a warning
		s.Add(fmt.Sprint("old-", i), now.Add(time.Second), now)
	}
	now = now.Add(time.Minute)
	for i := range 1000 {
		s.Add(fmt.Sprint(i), now.Add(time.Hour+time.Duration(i)*time.Second), now)
	}
	if got := logged.forgotten(); !slices.Equal(got, []int64{1}) {
		t.Fatalf("warnings counting %v keys forgotten early, want one warning at the first", got)
	}
	now = now.Add(evictionWarnEvery)
	s.Add("late", now.Add(2*time.Hour), now)
	if got := logged.forgotten(); !slices.Equal(got, []int64{1, 990}) {
		t.Errorf("warnings counting %v keys forgotten early, want a second one counting the rest of the burst", got)
	}
}

func TestOpenedCacheStaysBounded(t *testing.T) {
	now := time.Now()
	c := newOpenedCache(50, 1<<20)
	for i := range 500 {
		c.put(valueKey(fmt.Sprint(i)), &Session{ID: fmt.Sprint(i), Expires: now.Add(time.Hour)}, 100, now)
	}
	if len(c.entries) > 50 {
		t.Errorf("%d entries, want at most 50", len(c.entries))
	}
	if got := c.get(valueKey("499")); got == nil || got.ID != "499" {
		t.Errorf("the newest entry is missing: %v", got)
	}

	small := newOpenedCache(1000, 10000)
	for i := range 100 {
		small.put(valueKey(fmt.Sprint(i)), &Session{ID: fmt.Sprint(i), Expires: now.Add(time.Hour)}, 3000, now)
	}
	if len(small.entries) > 3 || small.bytes > 10000 {
		t.Errorf("%d entries of %d bytes, want at most 10000 bytes", len(small.entries), small.bytes)
	}
	small.put(valueKey("huge"), &Session{ID: "huge"}, 20000, now)
	if small.get(valueKey("huge")) != nil {
		t.Error("a value bigger than the whole cache was cached")
	}
	small.drop("99")
	if small.get(valueKey("99")) != nil || small.bytes != 3000*len(small.entries) {
		t.Errorf("drop left %d entries, %d bytes", len(small.entries), small.bytes)
	}
}

func TestCompactJSON(t *testing.T) {
	type value struct{ A string }
	tests := []struct {
		name         string
		in           string
		wantDeflated bool
	}{
		{"a short value stays plain JSON", "short", false},
		{"a long repetitive value is deflated", strings.Repeat("cvat-admins,", 100), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := compactJSON{}.Serialize(value{tt.in})
			if err != nil {
				t.Fatal(err)
			}
			if (b[0] == deflatedMark) != tt.wantDeflated {
				t.Errorf("deflated: %v, want %v", b[0] == deflatedMark, tt.wantDeflated)
			}
			var out value
			if err := (compactJSON{}).Deserialize(b, &out); err != nil || out.A != tt.in {
				t.Errorf("round trip: %q, %v", out.A, err)
			}
		})
	}
	t.Run("a value inflating beyond the limit is refused", func(t *testing.T) {
		var b bytes.Buffer
		b.WriteByte(deflatedMark)
		zw, _ := flate.NewWriter(&b, flate.BestCompression)
		zw.Write([]byte(`{"A":"`))
		zw.Write(bytes.Repeat([]byte("a"), maxInflated))
		zw.Write([]byte(`"}`))
		zw.Close()
		var out value
		if err := (compactJSON{}).Deserialize(b.Bytes(), &out); err == nil {
			t.Error("accepted")
		}
	})
}

func TestExpiringSetPostpone(t *testing.T) {
	now := time.Now()
	s := newExpiringSet(3, "test", quiet)
	for i, k := range []string{"a", "b", "c", "d"} { // a is forgotten for d
		s.Add(k, now.Add(time.Duration(i+1)*time.Minute), now)
	}
	s.postpone(10 * time.Minute)
	if !s.Forgets(now.Add(11*time.Minute)) || s.Forgets(now.Add(11*time.Minute+time.Second)) {
		t.Error("the time of the keys forgotten early did not move with the keys")
	}
	s.Add("e", now.Add(time.Hour), now.Add(12*time.Minute+30*time.Second))
	_, keptB := s.until["b"]
	_, keptC := s.until["c"]
	if keptB || !keptC || !s.Has("c", now.Add(13*time.Minute), now.Add(12*time.Minute+30*time.Second)) {
		t.Errorf("after postponing, keys do not expire at their new times in order: b kept %v, c kept %v", keptB, keptC)
	}
}

// liveHeap is the bytes of live heap objects, after two collections: the
// first moves what sync.Pools hold (sealing's compressors, about a MiB
// each) to their victim caches, the second frees it, so that it counts
// whether or not the pools were full when the test looked.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// The cache's bound on bytes counts what its sessions hold once opened, not
// the length of their sealed values: a session is deflated before it is
// sealed, and one with 300 groups named by their DN holds ten times its 2 KB
// of cookie. Bounded by the sealed length, the cache meant to hold 16 MiB
// held 168 MiB of such sessions, which an active user's re-sealed cookie (a
// new value every minute) fills within hours.
func TestOpenedCacheBoundCountsWhatSessionsHold(t *testing.T) {
	c := newClock()
	st := mustStore(t, testOptions(c))
	const bound = 2 << 20
	st.cache = newOpenedCache(cacheEntries, bound)
	groups := make([]string, 300)
	for i := range groups {
		groups[i] = fmt.Sprintf("cn=group-%d,ou=groups,dc=example,dc=com", i)
	}
	before := liveHeap()
	for i := range 2000 {
		p := testProfile()
		p.Sub, p.Groups = fmt.Sprint("user-", i), groups
		load(t, st, request(saved(t, st, New(p, idp.Tokens{}, st.opts))...))
	}
	held := liveHeap() - before
	runtime.KeepAlive(st)
	t.Logf("%d sessions cached, %d KiB counted, %d KiB live", len(st.cache.entries), st.cache.bytes>>10, held>>10)
	if held > 2*bound {
		t.Errorf("a cache bounded to %d KiB holds %d KiB of sessions", bound>>10, held>>10)
	}
}
