package session

import (
	"bytes"
	"compress/flate"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestExpiringSet(t *testing.T) {
	now := time.Now()
	s := newExpiringSet(3)
	if !s.Add("a", now.Add(time.Minute), now) || s.Add("a", now.Add(time.Minute), now) {
		t.Error("Add is not a check-and-set")
	}
	if !s.Has("a", now) || s.Has("a", now.Add(time.Minute)) {
		t.Error("a key is not remembered exactly until its time")
	}
	if !s.Add("a", now.Add(2*time.Minute), now.Add(time.Minute)) {
		t.Error("an expired key cannot be added again")
	}
	s.Add("b", now.Add(3*time.Minute), now)
	s.Add("c", now.Add(4*time.Minute), now)
	s.Add("d", now.Add(5*time.Minute), now)
	if s.Len() != 3 || s.Has("a", now) || !s.Has("d", now) {
		t.Errorf("a full set did not forget the key closest to expiring: len %d", s.Len())
	}
	s.Add("e", now.Add(6*time.Minute), now.Add(4*time.Minute+time.Second))
	if s.Len() != 2 || s.Has("b", now) || s.Has("c", now) {
		t.Errorf("expired keys not swept: len %d", s.Len())
	}
}

func TestExpiringSetStaysBounded(t *testing.T) {
	now := time.Now()
	s := newExpiringSet(100)
	for i := range 1000 {
		s.Add(fmt.Sprint(i%150), now.Add(time.Duration(i)*time.Second), now)
	}
	if s.Len() > 100 || len(s.order) > 100 {
		t.Errorf("%d keys and %d heap entries, want at most 100", s.Len(), len(s.order))
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
