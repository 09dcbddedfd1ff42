package proxy

import (
	"context"
	"errors"
	"runtime"
	"time"
)

// Checking a SAML response at the ACS is the costliest answer the proxy
// gives to a request that needs no account: crewjam/saml parses the
// response into trees, canonicalizes it and checks its signatures, and the
// largest one the idp package lets through (256 KiB of XML within its
// shape limits, samlidp's answer for a user in 1,000 groups) allocates 38 MB
// on the way. The idp package bounds what one check costs; checkSlots bound
// how many run at once, so that a burst of posts takes a bounded share of a
// replica's memory. Posted 16 and 32 at a time into fresh logins, that
// answer (refused, after its check, as an answer to another login) held
// 119 and 265 MB of heap without slots, 68 and 105 MB with two. No more
// checks than the process has CPUs run at the same time anyway, and no
// more than maxSAMLChecks, since a replica's memory limit does not grow
// with the cores of the node it runs on. The rest wait their turn for up to
// samlCheckWait (a response of a few KB takes 2 to 3 ms to check, the one
// of 1,000 groups 90), then get 503 with Retry-After, their login state
// given back so that the same answer may be posted again.
const (
	maxSAMLChecks = 4
	samlCheckWait = 2 * time.Second
)

var (
	// errChecksBusy: no check slot came free in time.
	errChecksBusy = errors.New("too many SAML responses being checked at once")
	// errLeftWaiting: the client went away while waiting for a slot.
	errLeftWaiting = errors.New("the client left while its SAML response waited to be checked")
)

// checkSlots is a counting semaphore of SAML response checks, one per
// replica: a reload hands it on.
type checkSlots struct {
	slots chan struct{} // a check holds one by sending
	wait  time.Duration // how long a check waits for one: samlCheckWait; tests shorten it
}

// newCheckSlots has one slot per CPU the Go scheduler uses (GOMAXPROCS,
// which follows a container's CPU limit), at most maxSAMLChecks.
func newCheckSlots() *checkSlots {
	return &checkSlots{slots: make(chan struct{}, min(runtime.GOMAXPROCS(0), maxSAMLChecks)), wait: samlCheckWait}
}

// take waits for a slot up to s.wait, or until ctx ends (the client left).
func (s *checkSlots) take(ctx context.Context) error {
	select {
	case s.slots <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(s.wait)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		return nil
	case <-t.C:
		return errChecksBusy
	case <-ctx.Done():
		return errLeftWaiting
	}
}

// give returns a slot that take took.
func (s *checkSlots) give() { <-s.slots }
