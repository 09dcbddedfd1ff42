package idp

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// memoryMarks is the ReplayStore of these tests, standing in for the
// proxy's: one unbounded map, which fails like a Redis that is down.
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
	if m.keys == nil {
		m.keys = map[string]time.Time{}
	}
	m.keys[key] = until
	return true, nil
}

func TestSAMLAssertionIsRecordedOnce(t *testing.T) {
	e := newSAMLEnv(t, nil)
	marks := e.p.replay.(*memoryMarks)

	f, post := e.login(t, "alice", "alice-pw")
	if _, _, err := e.p.Complete(post.request(), f); err != nil {
		t.Fatalf("first use refused: %v", err)
	}
	if len(marks.keys) != 1 {
		t.Fatalf("the store has %d marks, want the assertion's", len(marks.keys))
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

func TestSAMLAssertionWithoutIDIsRefused(t *testing.T) {
	p := &SAMLProvider{cfg: Config{ID: "corp"}, replay: &memoryMarks{}}
	if err := p.useAssertion(t.Context(), "", time.Now().Add(time.Minute)); err == nil {
		t.Fatal("empty ID accepted")
	}
}
