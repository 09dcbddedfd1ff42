package session

import (
	"context"
	"time"
)

// MemoryMarks is a OnceMarker in this process's memory, bounded to a number
// of keys: what a single replica (the cookie store) uses where replicas with
// Redis share marks, e.g. the jti of back-channel logout tokens.
type MemoryMarks struct {
	set *expiringSet
}

// NewMemoryMarks remembers up to max keys.
func NewMemoryMarks(max int) *MemoryMarks {
	return &MemoryMarks{set: newExpiringSet(max)}
}

// MarkOnce records key until the given time and reports whether it was new.
func (m *MemoryMarks) MarkOnce(_ context.Context, key string, until time.Time) (bool, error) {
	return m.set.Add(key, until, time.Now()), nil
}
