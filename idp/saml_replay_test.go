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
		if !strings.HasPrefix(k, "saml:"+e.idp.EntityID()+"\x00") || !until.After(time.Now()) {
			t.Errorf("mark %q until %v: want saml:<the IdP's entity ID>\\x00<assertion ID> until the assertion expires", k, until)
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
	a := &saml.Assertion{Issuer: saml.Issuer{Value: "https://idp.example.com/metadata"}, Conditions: &saml.Conditions{NotOnOrAfter: time.Now().Add(time.Minute)}}
	if err := p.useAssertion(t.Context(), a); err == nil {
		t.Fatal("empty ID accepted")
	}
}

// Two entries for one IdP (a second SP entity with other attributes, say)
// share its assertions' marks: an assertion whose audience names both is
// accepted at one of them, once. Another IdP's assertion with the same ID
// is its own.
func TestSAMLAssertionIsSpentAtEveryEntryOfItsIssuer(t *testing.T) {
	marks := &memoryMarks{}
	corp := &SAMLProvider{cfg: Config{ID: "corp"}, replay: marks}
	sibling := &SAMLProvider{cfg: Config{ID: "corp-admins"}, replay: marks}
	assertion := func(issuer string) *saml.Assertion {
		return &saml.Assertion{ID: "_a1", Issuer: saml.Issuer{Value: issuer},
			Conditions: &saml.Conditions{NotOnOrAfter: time.Now().Add(time.Minute)}, Subject: &saml.Subject{}}
	}
	if err := corp.useAssertion(t.Context(), assertion("https://idp.example.com/metadata")); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := sibling.useAssertion(t.Context(), assertion("https://idp.example.com/metadata")); err == nil || !strings.Contains(err.Error(), "replay") {
		t.Errorf("the same assertion at a sibling entry of its IdP: %v, want a replay refusal", err)
	}
	if err := sibling.useAssertion(t.Context(), assertion("https://other-idp.example.com/metadata")); err != nil {
		t.Errorf("another IdP's assertion with the same ID: %v, want it accepted", err)
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
