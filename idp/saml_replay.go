package idp

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/crewjam/saml"
)

// ReplayStore records values that may be used once: given to the SAML
// provider in Options.Replay, it makes each assertion acceptable once. The
// proxy passes Redis, which its replicas share, or a bounded set in its own
// memory that outlives configuration reloads.
type ReplayStore interface {
	// MarkOnce records key until the given time and reports whether it was
	// new; false also when a bounded store may have forgotten key under a
	// flood. An error means it could not be recorded.
	MarkOnce(ctx context.Context, key string, until time.Time) (bool, error)
}

// useAssertion accepts an assertion once. It is marked by its issuer and
// ID, not by this entry: two entries for one IdP (other attributes, another
// SP entity) must not each accept an assertion whose audience names both.
// An assertion that cannot be recorded is refused.
func (p *SAMLProvider) useAssertion(ctx context.Context, a *saml.Assertion) error {
	if a.ID == "" {
		return errors.New("assertion has no ID")
	}
	first, err := p.replay.MarkOnce(ctx, "saml:"+a.Issuer.Value+"\x00"+a.ID, replayExpiry(a))
	if err != nil {
		return fmt.Errorf("record assertion: %w", err)
	}
	if !first {
		return errors.New("assertion already used (replay), or as old as ones a full in-memory store forgot")
	}
	return nil
}
