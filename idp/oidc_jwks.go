package idp

import (
	"bytes"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
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
// fetch within jwksRefetchEvery of the last successful one gets that one's
// document again, and reaches nothing. Every other request goes through.
type jwksThrottle struct {
	next http.RoundTripper
	now  func() time.Time
	// url is the jwks_uri of the last discovery; nil before one.
	url atomic.Pointer[string]

	mu      sync.Mutex // held across a fetch: go-oidc makes one at a time anyway
	body    []byte
	header  http.Header
	fetched time.Time
}

// newJWKSThrottle wraps next (http.DefaultTransport when nil).
func newJWKSThrottle(next http.RoundTripper) *jwksThrottle {
	if next == nil {
		next = http.DefaultTransport
	}
	return &jwksThrottle{next: next, now: time.Now}
}

// RoundTrip implements http.RoundTripper.
func (t *jwksThrottle) RoundTrip(req *http.Request) (*http.Response, error) {
	if u := t.url.Load(); u == nil || req.Method != http.MethodGet || req.URL.String() != *u {
		return t.next.RoundTrip(req)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.body != nil && t.now().Sub(t.fetched) < jwksRefetchEvery {
		return t.answer(req), nil
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKS))
	if err != nil {
		return nil, err
	}
	t.body, t.header, t.fetched = body, resp.Header.Clone(), t.now()
	return t.answer(req), nil
}

// answer is the last document fetched, as a response to req.
func (t *jwksThrottle) answer(req *http.Request) *http.Response {
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: t.header.Clone(), Body: io.NopCloser(bytes.NewReader(t.body)),
		ContentLength: int64(len(t.body)), Request: req,
	}
}
