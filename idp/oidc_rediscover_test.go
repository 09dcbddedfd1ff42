package idp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// discoveryReads counts the GETs of a discovery document sent through it.
type discoveryReads struct {
	n    atomic.Int64
	next http.RoundTripper
}

func (d *discoveryReads) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, wellKnown) {
		d.n.Add(1)
	}
	return d.next.RoundTrip(r)
}

// Anyone may post a logout token. Forged ones whose header names an
// algorithm that the IdP's discovery document does not list (an IdP that
// moved to another algorithm lists it) have the document read again once
// within 10 s, not once each, and none verifies.
func TestForgedTokensOfAnUnlistedAlgorithmReadTheDiscoveryDocumentOnce(t *testing.T) {
	reads := &discoveryReads{next: http.DefaultTransport}
	p, op, _, _ := startOIDCThrough(t, reads)

	forged := func() string { return unsignedLogoutToken(t, "ES384", "made-up", op.Issuer, op.ClientID) }
	before := reads.n.Load()
	start := time.Now()
	errs := make([]error, 20)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { _, errs[i] = p.VerifyLogoutToken(t.Context(), forged()) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	for i, err := range errs {
		// Those that came before the read began are invalid: the read
		// does not list ES384. Those that came after, within the floor,
		// may be the IdP's first of a new algorithm: to send again once
		// the document may be read again.
		var unfetched *UnfetchedKeyError
		switch {
		case err == nil:
			t.Errorf("forged token %d verified", i)
		case errors.As(err, &unfetched):
			if unfetched.RetryAfter < time.Second || unfetched.RetryAfter > rediscoverEvery {
				t.Errorf("forged token %d: to send again after %s, want 1 s to %s", i, unfetched.RetryAfter, rediscoverEvery)
			}
		case errors.Is(err, ErrNotReady):
			t.Errorf("forged token %d: %v, want refused as invalid or to send again after the floor", i, err)
		}
	}
	// Each 10 s begun may read it once: a loaded machine may take longer
	// than 10 s for the 20.
	if n, most := reads.n.Load()-before, 1+int64(elapsed/rediscoverEvery); n < 1 || n > most {
		t.Errorf("20 forged tokens of an unlisted algorithm in %s read the discovery document %d times, want 1 to %d", elapsed, n, most)
	}
}

// cancelOnDiscovery calls cancel, when set, as a GET of a discovery
// document is sent through it: the request that had it read goes away
// while the read is under way.
type cancelOnDiscovery struct {
	cancel atomic.Pointer[context.CancelFunc]
	next   http.RoundTripper
}

func (c *cancelOnDiscovery) RoundTrip(r *http.Request) (*http.Response, error) {
	if f := c.cancel.Swap(nil); f != nil && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, wellKnown) {
		(*f)()
	}
	return c.next.RoundTrip(r)
}

// A forged logout token of an algorithm the IdP now lists, posted by a
// client that hangs up while the discovery document is read again, does
// not spend the read: the IdP's own token of that algorithm, within 10 s,
// is checked with the document read then. Before, the read ended with the
// forger's request and the floor held: one forged token every 10 s kept
// the IdP's tokens of its new algorithm refused (logout tokens for good).
func TestAForgerHangingUpDoesNotSpendTheDiscoveryRead(t *testing.T) {
	hangUp := &cancelOnDiscovery{next: http.DefaultTransport}
	p, op, _, _ := startOIDCThrough(t, hangUp)
	op.RotateKeysTo(t, "ES256")

	token := func() string { return unsignedLogoutToken(t, "ES256", "made-up", op.Issuer, op.ClientID) }
	d, err := p.current()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	hangUp.cancel.Store(&cancel)
	p.forAlgOf(ctx, d, token())
	if hangUp.cancel.Load() != nil {
		t.Fatal("the forged token did not have the discovery document read")
	}
	// The IdP's token: it waits for the read under way, if any.
	if got := p.forAlgOf(t.Context(), d, token()); !slices.Contains(got.idTokenAlgs, "ES256") {
		t.Errorf("the IdP's ES256 token within 10 s of a read begun for a forger who hung up: checked with %v, want ES256 among them", got.idTokenAlgs)
	}
}

// hydraListing answers a discovery document, once only is set, with
// id_token_signing_alg_values_supported holding that algorithm alone, as
// ORY Hydra v2.3.0's lists its current ID token key's (the test IdP lists
// the algorithms of the keys before too).
type hydraListing struct {
	only atomic.Pointer[string]
	next http.RoundTripper
}

func (h *hydraListing) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := h.next.RoundTrip(r)
	alg := h.only.Load()
	if err != nil || alg == nil || r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, wellKnown) {
		return resp, err
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return nil, err
	}
	doc["id_token_signing_alg_values_supported"] = []string{*alg}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// The IdP moves to ES256 and its discovery document lists ES256 alone
// (ORY Hydra): read again for an ES256 token, the algorithms verified are
// RS256, listed before, and ES256; a reload carries both over, as the
// running entry keeps them (use). The reload took the last document's
// alone.
func TestTheAlgorithmsListedBeforeAreKeptAcrossAReload(t *testing.T) {
	hydra := &hydraListing{next: http.DefaultTransport}
	p, op, c, o := startOIDCThrough(t, hydra)
	d, err := p.current()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.idTokenAlgs, []string{"RS256"}) {
		t.Fatalf("at start: %v, want [RS256]", d.idTokenAlgs)
	}
	op.RotateKeysTo(t, "ES256")
	es256 := "ES256"
	hydra.only.Store(&es256)
	head, _ := json.Marshal(map[string]any{"alg": "ES256", "typ": "JWT"})
	want := []string{"RS256", "ES256"}
	if d = p.forAlgOf(t.Context(), d, base64.RawURLEncoding.EncodeToString(head)+".e30.AA"); !slices.Equal(d.idTokenAlgs, want) {
		t.Fatalf("read again for an ES256 token: %v, want %v", d.idTokenAlgs, want)
	}

	o.Running = p
	reloaded := startOIDC(t, c, o)
	got, err := reloaded.current()
	if err != nil {
		t.Fatalf("reloaded: %v", err)
	}
	if !slices.Equal(got.idTokenAlgs, want) {
		t.Errorf("after a reload: %v, want %v as before it", got.idTokenAlgs, want)
	}
}

// Anyone can have the discovery document read again, with a logout token
// of an algorithm it does not list, just before an IdP that lists its
// current key's algorithm alone (ORY Hydra) rotates to a key of that
// algorithm. The IdP's first logout token of it, within 10 s of that read,
// is answered "send again after the floor" (503 with Retry-After), not
// refused: a refusal is final (Back-Channel Logout 1.0, 2.8), and its user
// stayed signed in. A token read for after it came, or not for this
// client, is still refused.
func TestALogoutTokenOfAnAlgorithmListedSinceTheLastReadIsToBeSentAgain(t *testing.T) {
	hydra := &hydraListing{next: http.DefaultTransport}
	rs256, es256 := "RS256", "ES256"
	hydra.only.Store(&rs256)
	p, op, _, _ := startOIDCThrough(t, hydra)

	token := func(aud string) string { return unsignedLogoutToken(t, "ES256", "new-key", op.Issuer, aud) }
	// A forger's: the document is read for it, and lists RS256 alone.
	if _, err := p.VerifyLogoutToken(t.Context(), token(op.ClientID)); err == nil || errors.Is(err, ErrNotReady) {
		t.Fatalf("a token of an algorithm the document read for it does not list: %v, want refused as invalid", err)
	}
	// The IdP rotates to an ES256 key, and lists ES256 alone.
	hydra.only.Store(&es256)
	_, err := p.VerifyLogoutToken(t.Context(), token(op.ClientID))
	var unfetched *UnfetchedKeyError
	if !errors.As(err, &unfetched) {
		t.Fatalf("the IdP's first ES256 logout token within 10 s of a read that listed RS256 alone: %v, want to send again after the floor", err)
	}
	if unfetched.RetryAfter < time.Second || unfetched.RetryAfter > rediscoverEvery || unfetched.KeyID != "new-key" {
		t.Errorf("to send again after %s, kid %q; want 1 s to %s, new-key", unfetched.RetryAfter, unfetched.KeyID, rediscoverEvery)
	}
	if _, err := p.VerifyLogoutToken(t.Context(), token("another-client")); err == nil || errors.Is(err, ErrNotReady) {
		t.Errorf("an ES256 token for another client within the floor: %v, want refused as invalid", err)
	}
}

// failingDiscovery fails the GETs of a discovery document sent through it
// while fail is set: the IdP's discovery is down.
type failingDiscovery struct {
	fail atomic.Bool
	next http.RoundTripper
}

func (f *failingDiscovery) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.fail.Load() && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, wellKnown) {
		return nil, errors.New("the discovery document is down")
	}
	return f.next.RoundTrip(r)
}

// A logout token of an algorithm the document did not list, whose read
// again fails (the IdP's discovery down at that moment), could not be
// checked: it is answered "send again after the floor", not refused for
// good. Once the document answers, after the floor, its retry is checked
// with what it lists.
func TestALogoutTokenWhoseDiscoveryReadFailsIsToBeSentAgain(t *testing.T) {
	down := &failingDiscovery{next: http.DefaultTransport}
	p, op, _, _ := startOIDCThrough(t, down)

	token := unsignedLogoutToken(t, "ES256", "new-key", op.Issuer, op.ClientID)
	down.fail.Store(true)
	_, err := p.VerifyLogoutToken(t.Context(), token)
	var unfetched *UnfetchedKeyError
	if !errors.As(err, &unfetched) {
		t.Fatalf("a logout token of an unlisted algorithm whose discovery read failed: %v, want to send again after the floor", err)
	}
	if unfetched.RetryAfter < time.Second || unfetched.RetryAfter > rediscoverEvery {
		t.Errorf("to send again after %s, want 1 s to %s", unfetched.RetryAfter, rediscoverEvery)
	}
}

// startOIDCThrough starts the test IdP and, ready, an entry for it whose
// calls to the IdP go through rt.
func startOIDCThrough(t *testing.T, rt http.RoundTripper) (*oidcProvider, *oidcserver.Server, Config, Options) {
	t.Helper()
	o := testOptions(callbackCatcher(t).URL, false)
	o.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: rt}
	op := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{o.CallbackURL("oidc", testIdP, "callback")}})
	c := Config{ID: testIdP, Protocol: OIDC, ServerURL: op.Issuer, ClientID: op.ClientID, ClientSecret: op.ClientSecret}
	p := startOIDC(t, c, o)
	waitReady(t, p, 10*time.Second)
	return p, op, c, o
}

// unsignedLogoutToken is a logout token for alice from iss to aud, with a
// header naming alg and kid, whose signature is zeros: what anyone may post.
func unsignedLogoutToken(t *testing.T, alg, kid, iss, aud string) string {
	t.Helper()
	part := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return part(map[string]any{"alg": alg, "kid": kid, "typ": "logout+jwt"}) + "." +
		part(map[string]any{"iss": iss, "aud": aud, "iat": time.Now().Unix(), "jti": rand.Text(),
			"sub": oidcserver.Alice, "events": map[string]any{BackchannelLogoutEvent: map[string]any{}}}) + "." +
		base64.RawURLEncoding.EncodeToString(make([]byte, 64))
}
