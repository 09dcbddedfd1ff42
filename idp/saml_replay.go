package idp

import (
	"context"
	"errors"
	"fmt"
	"time"
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

// useAssertion accepts the assertion id once. An assertion that cannot be
// recorded is refused.
//
// The mark is per entry. Keying it by the IdP's issuer instead (tried)
// would stop a sibling entry of the same IdP accepting the assertion again,
// but only an assertion with a bearer confirmation naming each entry's ACS
// and an audience naming both could pass there, which IdPs do not issue;
// while it broke rolling updates: the replicas of the release before, which
// share Redis, read the old key, so each version accepted an assertion once
// (seen with both binaries behind one load balancer).
func (p *SAMLProvider) useAssertion(ctx context.Context, id string, expiry time.Time) error {
	if id == "" {
		return errors.New("assertion has no ID")
	}
	first, err := p.replay.MarkOnce(ctx, "saml:"+p.cfg.ID+":"+id, expiry)
	if err != nil {
		return fmt.Errorf("record assertion: %w", err)
	}
	if !first {
		return errors.New("assertion already used (replay), or as old as ones a full in-memory store forgot")
	}
	return nil
}
