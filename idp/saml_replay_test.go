package idp

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crewjam/saml"
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

// An assertion is recorded until crewjam would refuse it anyway: past every
// NotOnOrAfter it carries, and past the clock skew allowed after them.
// Forgotten sooner, it could be posted again in the time left.
func TestSAMLReplayExpiryIsTheLastAcceptableInstant(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	bearer := func(until time.Time) saml.SubjectConfirmation {
		return saml.SubjectConfirmation{Method: "urn:oasis:names:tc:SAML:2.0:cm:bearer",
			SubjectConfirmationData: &saml.SubjectConfirmationData{NotOnOrAfter: until}}
	}
	tests := []struct {
		name          string
		conditions    time.Time
		confirmations []saml.SubjectConfirmation
		want          time.Time
	}{
		{"conditions end last", base.Add(5 * time.Minute), []saml.SubjectConfirmation{bearer(base)}, base.Add(5 * time.Minute)},
		{"the confirmation ends last", base, []saml.SubjectConfirmation{bearer(base.Add(5 * time.Minute))}, base.Add(5 * time.Minute)},
		{"the later of two confirmations", base, []saml.SubjectConfirmation{bearer(base.Add(time.Minute)), bearer(base.Add(2 * time.Minute))}, base.Add(2 * time.Minute)},
		{"conditions without NotOnOrAfter", time.Time{}, []saml.SubjectConfirmation{bearer(base)}, base},
		{"a confirmation without data", base, []saml.SubjectConfirmation{{Method: "urn:oasis:names:tc:SAML:2.0:cm:bearer"}}, base},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := &saml.Assertion{Conditions: &saml.Conditions{NotOnOrAfter: tc.conditions},
				Subject: &saml.Subject{SubjectConfirmations: tc.confirmations}}
			if got, want := replayExpiry(a), tc.want.Add(saml.MaxClockSkew); !got.Equal(want) {
				t.Errorf("recorded until %s, want %s (the last NotOnOrAfter and the clock skew)", got, want)
			}
		})
	}
}
