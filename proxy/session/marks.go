package session

import (
	"context"
	"log/slog"
	"time"
)

// MemoryMarks is a OnceMarker in this process's memory, bounded to a number
// of keys: what a single replica (the cookie store) uses where replicas with
// Redis share marks, e.g. the jti of back-channel logout tokens or the IDs
// of SAML assertions.
type MemoryMarks struct {
	set *expiringSet
}

// NewMemoryMarks remembers up to max keys. When more unexpired keys come, it
// forgets the ones closest to expiring and from then on reports every key
// valid no longer than those as already used, with a warning to log (nil:
// slog.Default()) that names the marks by what.
func NewMemoryMarks(max int, what string, log *slog.Logger) *MemoryMarks {
	return &MemoryMarks{set: newExpiringSet(max, what, log)}
}

// MarkOnce records key until the given time and reports whether it was new;
// false also for a key that may have been forgotten under a flood.
func (m *MemoryMarks) MarkOnce(_ context.Context, key string, until time.Time) (bool, error) {
	return m.set.Add(key, until, time.Now()), nil
}

// Claim records key until the given time as MarkOnce does and, when it was
// new, returns the Mark that gives it back (Unmark).
func (m *MemoryMarks) Claim(_ context.Context, key string, until time.Time) (Mark, bool, error) {
	seq, first := m.set.Mark(key, until, time.Now())
	if !first {
		return Mark{}, false, nil
	}
	return Mark{key: key, seq: seq}, true, nil
}

// Unmark forgets mark's key if it still holds that mark, so that it may be
// marked again.
func (m *MemoryMarks) Unmark(_ context.Context, mark Mark) error {
	m.set.RemoveMark(mark.key, mark.seq)
	return nil
}
