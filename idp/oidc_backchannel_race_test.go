package idp

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pausedContext is a request's context whose Done, the first time it is
// asked for, runs pause: go-oidc asks for it when a token's signature check
// waits for the keys it asked for (RemoteKeySet.keysFromRemote), which
// lets a test act between that fetch and what the check makes of it.
type pausedContext struct {
	context.Context
	once  sync.Once
	pause func()
}

func (c *pausedContext) Done() <-chan struct{} {
	c.once.Do(c.pause)
	return c.Context.Done()
}

// The IdP's logout token, signed with a key it published after the keys
// were last fetched, comes just before the floor ends: its check is
// answered with the keys fetched before (the floor's). Before the check
// has made anything of them, the floor passes and a forged token has the
// keys fetched again (an attacker can post them all along, to have that
// fetch made at once): it began after the IdP's token came, and it brought
// the new key. The IdP's token was not checked with that fetch, but was
// refused as invalid, as though it had been: "a fetch begun after it came
// has ended" was read as "its check had that fetch's keys". A 400 is final
// for the IdP (Back-Channel Logout 1.0, 2.8), and the user's sessions here
// outlived the logout. Checked with keys of that fetch (or a later one), it
// verifies.
func TestLogoutTokenCheckedWithTheKeysBeforeAFetchThatEndedMeanwhileIsNotInvalid(t *testing.T) {
	li := newTestIssuer(t)
	ft := newFloorTest(t, li)
	p := ft.p
	start := time.Now()
	var elapsed atomic.Int64
	var clockReads atomic.Int32
	p.jwks.now = func() time.Time {
		clockReads.Add(1)
		return start.Add(time.Duration(elapsed.Load()))
	}
	if _, err := p.VerifyLogoutToken(t.Context(), ft.token(nil)); err != nil {
		t.Fatalf("a valid logout token: %v", err)
	}
	if got := li.jwksFetches.Load(); got != 1 {
		t.Fatalf("the JWKS was fetched %d times; want once", got)
	}

	// A second before the floor ends, the IdP rotates its key and logs
	// alice out with a token signed with the new one.
	elapsed.Store(int64(jwksRefetchEvery - time.Second))
	li.rotateTo(t, "k2")
	raw := ft.token(nil)
	paused := false
	readsBefore := clockReads.Load()
	ctx := &pausedContext{Context: t.Context(), pause: func() {
		paused = true
		// The check's fetch reads the clock (within the floor: the keys
		// fetched before are its answer).
		for deadline := time.Now().Add(10 * time.Second); clockReads.Load() == readsBefore; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the logout token's check asked for no keys")
			}
		}
		elapsed.Store(int64(jwksRefetchEvery))
		fetchForForged(t, li, ft)
	}}
	_, err := p.VerifyLogoutToken(ctx, raw)
	if !paused {
		t.Fatal("the logout token's check did not wait for keys fetched for it")
	}
	if got := li.jwksFetches.Load(); got != 2 {
		t.Errorf("the JWKS was fetched %d times; want 2", got)
	}
	if err != nil && !errors.Is(err, ErrNotReady) {
		t.Errorf("the IdP's logout token, checked with the keys from before a fetch that began after it came and ended before its check did: %v; "+
			"want it checked with that fetch's keys (or ErrNotReady, to be sent again), not refused as invalid", err)
	}
}
