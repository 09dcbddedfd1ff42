package idp

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// memoryMarks is a ReplayStore standing in for Redis: one map that several
// providers (replicas) share, or that fails like a Redis that is down.
type memoryMarks struct {
	mu   sync.Mutex
	keys map[string]time.Time
	down bool
}

func (m *memoryMarks) MarkOnce(_ context.Context, key string, until time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return false, errors.New("redis: connection refused")
	}
	if _, ok := m.keys[key]; ok {
		return false, nil
	}
	m.keys[key] = until
	return true, nil
}

func TestSAMLReplayStoreIsUsedWhenGiven(t *testing.T) {
	e := newSAMLEnv(t, nil)
	marks := &memoryMarks{keys: map[string]time.Time{}}
	e.p.shared = marks

	f, post := e.login(t, "alice", "alice-pw")
	if _, _, err := e.p.Complete(post.request(), f); err != nil {
		t.Fatalf("first use refused: %v", err)
	}
	if len(marks.keys) != 1 || e.p.replay.len() != 0 {
		t.Fatalf("shared store has %d marks, local cache %d: want the assertion recorded in the shared store only", len(marks.keys), e.p.replay.len())
	}
	for k, until := range marks.keys {
		if !strings.HasPrefix(k, "saml:corp:") || !until.After(time.Now()) {
			t.Errorf("mark %q until %v: want saml:corp:<assertion ID> until the assertion expires", k, until)
		}
	}
	if _, _, err := e.p.Complete(post.request(), f); err == nil || !strings.Contains(err.Error(), "replay") {
		t.Errorf("second use: %v, want a replay refusal", err)
	}

	marks.down = true
	f, post = e.login(t, "alice", "alice-pw")
	if _, _, err := e.p.Complete(post.request(), f); err == nil || !strings.Contains(err.Error(), "record assertion") {
		t.Errorf("with the store down: %v, want the assertion refused", err)
	}
}
