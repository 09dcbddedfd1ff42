package idp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// jwksRefetchEvery is the least time between two fetches of an IdP's JWKS
// for logout tokens. go-oidc fetches the keys again whenever a token's
// signature matches none it holds, and anyone can post such a token to the
// back-channel logout endpoint: without a floor, each one was a request to
// the IdP. Keycloak's adapters wait as long (min-time-between-jwks-requests).
// ID tokens at login are verified with keys of their own, without a floor:
// they come from the IdP's token endpoint, and an IdP that rotates its key
// signs the next one with the new key at once.
const jwksRefetchEvery = 10 * time.Second

// maxJWKS bounds the JWKS document read, as userinfo is bounded.
const maxJWKS = 1 << 20

// jwksThrottle is the transport go-oidc fetches an IdP's JWKS through: a
// fetch within jwksRefetchEvery of the last one, successful or not, reaches
// nothing and gets that one's document again, or its failure. Every other
// request goes through.
type jwksThrottle struct {
	next http.RoundTripper
	now  func() time.Time
	// url is the jwks_uri of the last discovery as watch spells it; nil
	// before one.
	url atomic.Pointer[string]

	mu sync.Mutex // held across a fetch: go-oidc makes one at a time anyway
	// fetched is when the last fetch ended; body and header are its
	// document, or failed why it brought none. A failure holds the floor
	// too: an IdP that is down, or that answers 429 to the fetches, would
	// otherwise get one for each forged logout token again.
	fetched time.Time
	body    []byte
	header  http.Header
	failed  error
	// unfetched is set while the last fetch brought no keys (failed is
	// set), read without waiting for a fetch under way.
	unfetched atomic.Bool
	// begun counts the fetches begun, each numbered by it as it begins;
	// last is the last one ended, both read without waiting for a fetch
	// under way.
	begun atomic.Uint64
	last  atomic.Pointer[jwksFetch]
}

// jwksFetch is one fetch of the JWKS that ended.
type jwksFetch struct {
	n     uint64    // its number (begun)
	ended time.Time // when it ended, as fetched
	// kids are the kid of each key its document holds ("" for a key
	// without one), nil when it brought no keys or no JWKS.
	kids map[string]bool
}

// keysUnavailable reports whether the last fetch of the keys brought none.
func (t *jwksThrottle) keysUnavailable() bool { return t.unfetched.Load() }

// fetchesBegun is the number of fetches begun so far, for keyNotFetched.
func (t *jwksThrottle) fetchesBegun() uint64 { return t.begun.Load() }

// keyNotFetched reports whether a logout token that the keys held did not
// verify may yet be good, signed with a key the IdP published after they
// were fetched, and how long until they may be fetched again (a second at
// least). before is what fetchesBegun said before the token was checked,
// kid what its header names ("" for none). It may when
//   - the last fetch that ended began before the token came: the fetch its
//     check asked for was answered with a document fetched before (the
//     floor's, or that of a fetch already under way), and the IdP's keys
//     have not been asked for since it came;
//   - that fetch brought a JWKS;
//   - and it has no key of that kid, or the token was issued (iat, the
//     IdP's clock, in whole seconds) after that fetch ended, or less than
//     jwksRefetchEvery before (the clocks differ). Most
//     IdPs publish a new key under a kid of its own, but one whose
//     administrator configured a constant kid publishes the new key under
//     the old key's kid, and signs with it at once: a token it signed
//     after the keys were fetched may be the new key's. One issued before
//     was signed with a key the IdP published before that fetch, which
//     brought the key of that kid. A token naming none was tried with
//     every key held.
func (t *jwksThrottle) keyNotFetched(before uint64, kid string, issued time.Time) (time.Duration, bool) {
	last := t.last.Load()
	if last == nil || last.kids == nil || last.n > before ||
		(kid != "" && last.kids[kid] && !issued.Add(jwksRefetchEvery).After(last.ended)) {
		return 0, false
	}
	return max(last.ended.Add(jwksRefetchEvery).Sub(t.now()), time.Second), true
}

// fetchedSince reports whether a fetch begun after fetchesBegun said
// before has ended.
func (t *jwksThrottle) fetchedSince(before uint64) bool {
	last := t.last.Load()
	return last != nil && last.n > before
}

// newJWKSThrottle wraps next (http.DefaultTransport when nil), reading at
// most maxJWKS bytes of each answer.
func newJWKSThrottle(next http.RoundTripper) *jwksThrottle {
	return &jwksThrottle{next: boundedAnswers{next: next, max: maxJWKS}, now: time.Now}
}

// watch makes jwksURI, from a discovery document, the URL whose fetches
// are throttled, spelled as go-oidc's requests for it are: their URL is
// jwks_uri parsed (http.NewRequest), whose String lowercases the scheme and
// escapes a space or non-ASCII letters, which the IdP may have left as
// they are. One that does not parse is no request go-oidc can make.
func (t *jwksThrottle) watch(jwksURI string) {
	if u, err := url.Parse(jwksURI); err == nil {
		jwksURI = u.String()
	}
	t.url.Store(&jwksURI)
}

// RoundTrip implements http.RoundTripper.
func (t *jwksThrottle) RoundTrip(req *http.Request) (*http.Response, error) {
	if u := t.url.Load(); u == nil || req.Method != http.MethodGet || req.URL.String() != *u {
		return t.next.RoundTrip(req)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.fetched.IsZero() && t.now().Sub(t.fetched) < jwksRefetchEvery {
		if t.failed != nil {
			// A redirect lands here too: its target was fetched, and
			// go-oidc holds what it brought, but it is not fetched again.
			return nil, fmt.Errorf("not fetched again within %s of the last fetch, which brought no keys itself: %w", jwksRefetchEvery, t.failed)
		}
		return t.answer(req), nil
	}
	n := t.begun.Add(1)
	resp, err := t.next.RoundTrip(req)
	t.fetched, t.body, t.header, t.failed = t.now(), nil, nil, err
	defer func() {
		t.unfetched.Store(t.failed != nil)
		fetch := &jwksFetch{n: n, ended: t.fetched}
		if t.failed == nil {
			fetch.kids = keyIDs(t.body)
		}
		t.last.Store(fetch)
	}()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		t.failed = fmt.Errorf("the JWKS answered %s", resp.Status)
		return resp, nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.failed = err
		return nil, err
	}
	t.body, t.header = body, resp.Header.Clone()
	return t.answer(req), nil
}

// keyIDs are the kid of each key of the JWKS document body ("" for a key
// without one), nil when body is no JWKS.
func keyIDs(body []byte) map[string]bool {
	var set struct {
		Keys []struct {
			KeyID string `json:"kid"`
		} `json:"keys"`
	}
	if json.Unmarshal(body, &set) != nil {
		return nil
	}
	kids := make(map[string]bool, len(set.Keys))
	for _, k := range set.Keys {
		kids[k.KeyID] = true
	}
	return kids
}

// answer is the last document fetched, as a response to req.
func (t *jwksThrottle) answer(req *http.Request) *http.Response {
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: t.header.Clone(), Body: io.NopCloser(bytes.NewReader(t.body)),
		ContentLength: int64(len(t.body)), Request: req,
	}
}

// verifyWithAnyKey verifies raw, an ID token from the token endpoint, as
// d.verifier does, but with every signing key the IdP publishes at its
// jwks_uri, whichever its header's kid names.
func (p *oidcProvider) verifyWithAnyKey(ctx context.Context, d discovered, raw string) (*oidc.IDToken, error) {
	if d.jwksURI == "" {
		return nil, errors.New("the discovery document names no jwks_uri")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.jwksURI, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := readBounded(resp.Body, maxJWKS)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch keys: %s", resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("decode keys: %w", err)
	}
	var keys []crypto.PublicKey
	for _, k := range set.Keys {
		if (k.Use != "" && k.Use != "sig") || !k.IsPublic() || !k.Valid() {
			continue
		}
		switch k.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			keys = append(keys, k.Key)
		}
	}
	v := oidc.NewVerifier(d.issuer, &oidc.StaticKeySet{PublicKeys: keys},
		&oidc.Config{ClientID: p.cfg.ClientID, SupportedSigningAlgs: d.idTokenAlgs})
	return v.Verify(ctx, raw)
}
