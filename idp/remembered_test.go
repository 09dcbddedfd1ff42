package idp

import (
	"strconv"
	"testing"
)

func TestRememberedIsBounded(t *testing.T) {
	t.Run("in number", func(t *testing.T) {
		c := NewRemembered[int](100, 1<<20)
		for i := range 150 {
			c.Put(strconv.Itoa(i), i, 10)
		}
		if c.Len() > 100 || c.Bytes() != 10*c.Len() {
			t.Errorf("%d values of %d bytes in all, want at most 100 of 10 bytes each", c.Len(), c.Bytes())
		}
		if v, ok := c.Get("149"); !ok || v != 149 {
			t.Errorf("the last one put: %d %v, want it remembered", v, ok)
		}
	})
	t.Run("in bytes", func(t *testing.T) {
		c := NewRemembered[int](1000, 16000)
		for i := range 100 {
			c.Put(strconv.Itoa(i), i, 900)
		}
		if c.Bytes() > 16000 {
			t.Errorf("the values remembered hold %d bytes, want at most 16000", c.Bytes())
		}
	})
	t.Run("a value of more than a sixteenth is not kept", func(t *testing.T) {
		c := NewRemembered[int](1000, 16000)
		c.Put("small", 1, 1000)
		c.Put("huge", 2, 1001)
		if _, ok := c.Get("huge"); ok || c.Len() != 1 {
			t.Errorf("huge remembered (%d values), want only small", c.Len())
		}
	})
	t.Run("put again in place", func(t *testing.T) {
		c := NewRemembered[int](10, 1000)
		c.Put("a", 1, 50)
		c.Put("a", 2, 30)
		if v, _ := c.Get("a"); v != 2 || c.Len() != 1 || c.Bytes() != 30 {
			t.Errorf("a = %d, %d values of %d bytes; want 2, one value of 30", v, c.Len(), c.Bytes())
		}
	})
}
