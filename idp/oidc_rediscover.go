package idp

import (
	"context"
	"slices"
	"time"
)

// rediscoverEvery is how often, at most, the IdP's discovery document is
// read again for a token signed with an algorithm it did not list: anyone
// may post a logout token, so that no one can have it read more often than
// the IdP's keys are fetched for one.
const rediscoverEvery = jwksRefetchEvery

// forAlgOf is d, or what the IdP's discovery document says now when raw,
// an ID token or a logout token, is signed with an algorithm this proxy
// verifies that d's document did not list. An IdP whose document lists
// the algorithm of its current key alone (ORY Hydra v2.3.0) lists another
// once its ID token key is rotated to a key of that algorithm, and signs
// with it at once: read at start and never again, the document refused
// every login after such a rotation and every logout token. The document
// is read again at most once every rediscoverEvery, the algorithms listed
// before kept (use); a read that fails, or that the token's request cannot
// wait for, leaves d as it is (the read goes on without it).
func (p *oidcProvider) forAlgOf(ctx context.Context, d discovered, raw string) discovered {
	alg := jwtAlg(raw)
	if alg == "" || slices.Contains(d.idTokenAlgs, alg) || !slices.Contains(verifiedAlgs, alg) || p.rediscovering == nil {
		return d
	}
	// One read at a time; a token waits for the one under way only as
	// long as its request may (the IdP may stall).
	select {
	case p.rediscovering <- struct{}{}:
	case <-ctx.Done():
		return d
	}
	if cur, err := p.current(); err == nil && (slices.Contains(cur.idTokenAlgs, alg) || time.Since(p.lastRediscovery()) < rediscoverEvery) {
		// Read again meanwhile, for another token, or within the floor.
		<-p.rediscovering
		return cur
	}
	p.rediscoverFailed.Store(false)
	p.rediscovered.Store(time.Now().UnixNano())
	// The read is not the request's: one whose client hangs up (anyone
	// may post a logout token) would otherwise end it and spend the
	// floor, and the IdP's own tokens of that algorithm would be refused
	// until the next. discover bounds it by discoveryTimeout.
	done := make(chan error, 1)
	go func() {
		defer func() { <-p.rediscovering }()
		err := p.discover(context.WithoutCancel(ctx))
		p.rediscoverFailed.Store(err != nil)
		if err != nil {
			p.log.Warn("oidc discovery read again for a token's signing algorithm failed", "alg", truncate(alg, 32), "err", err)
		} else if cur, cerr := p.current(); cerr == nil && slices.Contains(cur.idTokenAlgs, alg) {
			p.log.Info("oidc discovery read again: the IdP now lists the signing algorithm of a token", "alg", alg, "algs", cur.idTokenAlgs)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return d
		}
	case <-ctx.Done():
		return d
	}
	cur, err := p.current()
	if err != nil {
		return d
	}
	return cur
}

// lastRediscovery is when forAlgOf last began to read the discovery
// document again; the zero time when it never has.
func (p *oidcProvider) lastRediscovery() time.Time {
	if ns := p.rediscovered.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// unlistedAlgWait says whether raw, which came at came, is signed with an
// algorithm this proxy verifies that d, the discovery document as forAlgOf
// left it, does not list, the document last read again before raw came
// and within the floor, and how long until it may be read again (a second
// at least). Such a token may be the IdP's first of a new algorithm: anyone
// can have the document read just before an IdP that lists its current
// key's algorithm alone (ORY Hydra) rotates to another, with a token of
// that algorithm, and a refusal of a logout token is final (Back-Channel
// Logout 1.0, 2.8). A document read again after raw came, which still does
// not list it, says raw is bad; one whose read failed (the IdP's discovery
// is down or stalls) says nothing.
func (p *oidcProvider) unlistedAlgWait(d discovered, raw string, came time.Time) (time.Duration, bool) {
	alg := jwtAlg(raw)
	if alg == "" || slices.Contains(d.idTokenAlgs, alg) || !slices.Contains(verifiedAlgs, alg) {
		return 0, false
	}
	last := p.lastRediscovery()
	if last.IsZero() || !last.Before(came) && !p.rediscoverFailed.Load() {
		return 0, false
	}
	wait := rediscoverEvery - time.Since(last)
	if wait <= 0 {
		// The floor passed while it waited for a read under way.
		return 0, false
	}
	return max(wait, time.Second), true
}
