package idp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// logoutToken makes a logout token from claims, signed with key (ti's when nil).
func logoutToken(t *testing.T, ti *testIssuer, claims map[string]any, key *rsa.PrivateKey) string {
	t.Helper()
	return typedLogoutToken(t, ti, "logout+jwt", claims, key)
}

// typedLogoutToken is logoutToken with the JOSE header typ set to typ.
func typedLogoutToken(t *testing.T, ti *testIssuer, typ string, claims map[string]any, key *rsa.PrivateKey) string {
	t.Helper()
	raw, err := ti.sign(typ, claims, key)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestVerifyLogoutToken(t *testing.T) {
	li := newTestIssuer(t)
	p := li.provider(t)
	foreignKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}

	now := time.Now()
	valid := func() map[string]any {
		return map[string]any{
			"iss": li.url, "aud": "portcullis", "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
			"jti": "jti-1", "sub": "alice", "sid": "sid-1",
			"events": map[string]any{BackchannelLogoutEvent: map[string]any{}},
		}
	}
	tests := []struct {
		name    string
		edit    func(map[string]any)
		key     *rsa.PrivateKey
		typ     *string // nil: logout+jwt
		wantErr string  // "" accepts
	}{
		{name: "a token with sub and sid is accepted", edit: func(map[string]any) {}},
		{name: "a token with only sid is accepted", edit: func(c map[string]any) { delete(c, "sub") }},
		{name: "a token with only sub is accepted", edit: func(c map[string]any) { delete(c, "sid") }},
		{name: "a token without exp is accepted", edit: func(c map[string]any) { delete(c, "exp") }},
		{name: "a token without typ is accepted", edit: func(map[string]any) {}, typ: ptr("")},
		{name: "a token typed JWT is accepted (Keycloak)", edit: func(map[string]any) {}, typ: ptr("JWT")},
		{name: "a token typed application/logout+jwt is accepted", edit: func(map[string]any) {}, typ: ptr("application/Logout+JWT")},
		{name: "a token typed as another kind of JWT is refused", edit: func(map[string]any) {}, typ: ptr("at+jwt"), wantErr: `typ "at+jwt"`},
		{name: "a token typed as a security event of another profile is refused", edit: func(map[string]any) {}, typ: ptr("secevent+jwt"), wantErr: "typ"},
		{name: "a token signed by another key is refused", edit: func(map[string]any) {}, key: foreignKey, wantErr: "signature"},
		{name: "a token from another issuer is refused", edit: func(c map[string]any) { c["iss"] = "https://evil.example" }, wantErr: "issued by a different provider"},
		{name: "a token for another client is refused", edit: func(c map[string]any) { c["aud"] = "someone-else" }, wantErr: "audience"},
		{name: "a token without the logout event is refused", edit: func(c map[string]any) { c["events"] = map[string]any{"other": map[string]any{}} }, wantErr: "events has no"},
		{name: "a token whose event is not an object is refused", edit: func(c map[string]any) { c["events"] = map[string]any{BackchannelLogoutEvent: "yes"} }, wantErr: "not a JSON object"},
		{name: "a token with a nonce (an ID token) is refused", edit: func(c map[string]any) { c["nonce"] = "n" }, wantErr: "nonce"},
		{name: "a token naming neither sub nor sid is refused", edit: func(c map[string]any) { delete(c, "sub"); delete(c, "sid") }, wantErr: "neither sub nor sid"},
		{name: "a token without jti is refused", edit: func(c map[string]any) { delete(c, "jti") }, wantErr: "no jti"},
		{name: "a token without iat is refused", edit: func(c map[string]any) { delete(c, "iat") }, wantErr: "no iat"},
		{name: "a token issued long ago is refused", edit: func(c map[string]any) { c["iat"] = now.Add(-time.Hour).Unix(); delete(c, "exp") }, wantErr: "too long ago"},
		{name: "a token issued in the future is refused", edit: func(c map[string]any) { c["iat"] = now.Add(time.Hour).Unix() }, wantErr: "future"},
		{name: "an expired token is refused", edit: func(c map[string]any) {
			c["iat"] = now.Add(-4 * time.Minute).Unix()
			c["exp"] = now.Add(-10 * time.Minute).Unix()
		}, wantErr: "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims := valid()
			tt.edit(claims)
			typ := "logout+jwt"
			if tt.typ != nil {
				typ = *tt.typ
			}
			tok, err := p.VerifyLogoutToken(t.Context(), typedLogoutToken(t, li, typ, claims, tt.key))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tok.ID != "jti-1" || tok.Issuer != li.url || tok.Subject != claims["sub"] && claims["sub"] != nil || tok.SessionID != claims["sid"] && claims["sid"] != nil {
					t.Errorf("token %+v does not carry the claims %v", tok, claims)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want one about %q", err, tt.wantErr)
			}
		})
	}
	if _, err := p.VerifyLogoutToken(t.Context(), "not-a-jwt"); err == nil {
		t.Error("garbage accepted as a logout token")
	}
	// go-jose's ParseSigned reads the JWS JSON serialization too, into which
	// anyone can rewrite a compact token the IdP signed: its header is then
	// no longer before the first dot, where the typ check reads it.
	for _, typ := range []string{"secevent+jwt", "logout+jwt"} {
		asJSON := jwsJSON(typedLogoutToken(t, li, typ, valid(), nil), false)
		if tok, err := p.VerifyLogoutToken(t.Context(), asJSON); err == nil || !strings.Contains(err.Error(), "compact") {
			t.Errorf("a token typed %s in the JWS JSON serialization: %+v, %v; want it refused as not a compact JWT", typ, tok, err)
		}
	}
	if tok, err := p.VerifyLogoutToken(t.Context(), typedLogoutToken(t, li, "logout+jwt", valid(), nil)); err != nil || tok.Sub != "alice" {
		t.Errorf("token %+v (%v): want the profile sub of its sessions to be its sub, which the entry maps sub from", tok, err)
	}
	mapped := startOIDC(t, Config{ID: "company", Protocol: OIDC, ServerURL: li.url, ClientID: "portcullis", ClientSecret: "s",
		Claims: map[string]string{"sub": "email"}}, testOptions("http://127.0.0.1:1", false))
	waitReady(t, mapped, 10*time.Second)
	claims := valid()
	claims["jti"] = "jti-2"
	if tok, err := mapped.VerifyLogoutToken(t.Context(), typedLogoutToken(t, li, "logout+jwt", claims, nil)); err != nil ||
		tok.Subject != "alice" || tok.Sub != "" {
		t.Errorf("token %+v (%v) at an entry with claims.sub: email: want subject alice and no profile sub, another list of names", tok, err)
	}
}

func ptr[T any](v T) *T { return &v }

// floorTest is an OIDC provider at an issuer, whose logout tokens' JWKS
// floor runs on a clock the test moves (now).
type floorTest struct {
	p   *oidcProvider
	now time.Time
	// forger is a key the issuer never published.
	forger *rsa.PrivateKey
	// token makes a logout token for alice, each with a jti of its own,
	// signed with key (the issuer's when nil).
	token func(key *rsa.PrivateKey) string
	// forge makes a logout token for alice like token, signed with forger,
	// whose header names kid (none when "").
	forge func(kid string) string
}

func newFloorTest(t *testing.T, li *testIssuer) *floorTest {
	t.Helper()
	p := li.provider(t)
	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ft := &floorTest{p: p, now: time.Now(), forger: forger}
	p.jwks.now = func() time.Time { return ft.now }
	n := 0
	claims := func() map[string]any {
		n++
		return map[string]any{
			"iss": li.url, "aud": "portcullis", "iat": time.Now().Unix(), "jti": fmt.Sprint("jti-", n), "sub": "alice",
			"events": map[string]any{BackchannelLogoutEvent: map[string]any{}},
		}
	}
	ft.token = func(key *rsa.PrivateKey) string { return logoutToken(t, li, claims(), key) }
	ft.forge = func(kid string) string {
		raw, err := signJWT("logout+jwt", claims(), forger, kid)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	return ft
}

// go-oidc fetches the IdP's JWKS again whenever a token's signature matches
// no key it holds, and anyone may post a logout token: without a floor each
// forged one was a request to the IdP.
func TestForgedLogoutTokensDoNotFetchTheJWKSEachTime(t *testing.T) {
	li := newTestIssuer(t)
	ft := newFloorTest(t, li)
	p, token, foreignKey := ft.p, ft.token, ft.forger
	if _, err := p.VerifyLogoutToken(t.Context(), token(nil)); err != nil {
		t.Fatalf("a valid logout token: %v", err)
	}
	for range 20 {
		if _, err := p.VerifyLogoutToken(t.Context(), token(foreignKey)); err == nil {
			t.Fatal("a forged logout token was accepted")
		}
	}
	if got := li.jwksFetches.Load(); got != 1 {
		t.Errorf("the JWKS was fetched %d times for one valid and 20 forged logout tokens within %s; want once", got, jwksRefetchEvery)
	}

	// The IdP rotates its key and signs with the new one at once. A login's
	// ID token is verified with keys of its own, which the forged logout
	// tokens did not hold back; logout tokens find the new key once the
	// floor has passed.
	li.rotate(t)
	idToken, err := li.sign("", map[string]any{"iss": li.url, "aud": "portcullis", "sub": "alice",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := p.current()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.verifier.Verify(t.Context(), idToken); err != nil {
		t.Errorf("an ID token signed with the IdP's new key, right after the forged logout tokens: %v", err)
	}
	if _, err := p.VerifyLogoutToken(t.Context(), token(nil)); err == nil {
		t.Errorf("a logout token signed with the new key within %s of the last fetch was accepted; want it refused until then", jwksRefetchEvery)
	}
	ft.now = ft.now.Add(jwksRefetchEvery)
	if err := verifyOnceFetched(t, p, func() string { return token(nil) }); err != nil {
		t.Errorf("a logout token signed with the IdP's new key, %s later: %v", jwksRefetchEvery, err)
	}
	if got := li.jwksFetches.Load(); got != 3 {
		t.Errorf("the JWKS was fetched %d times in all; want 3 (for logout tokens at the first and once the floor passed, for the ID token once)", got)
	}
}

// The floor holds for a jwks_uri that the IdP spells otherwise than
// go-oidc's request for it does: that request's URL is jwks_uri parsed,
// whose String lowercases the scheme and escapes a space or non-ASCII
// letters. The throttle compared it with jwks_uri as discovered, found them
// different, and let every forged logout token fetch the JWKS.
func TestForgedLogoutTokensDoNotFetchTheJWKSEachTimeWhateverItsSpelling(t *testing.T) {
	for _, tc := range []struct {
		name string
		uri  func(issuer string) string
	}{
		{"an uppercase scheme", func(issuer string) string { return "HTTP" + strings.TrimPrefix(issuer, "http") + "/jwks" }},
		{"a space in the path", func(issuer string) string { return issuer + "/keys/signing keys" }},
		{"a non-ASCII path", func(issuer string) string { return issuer + "/keys/clés" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			li := newTestIssuer(t)
			li.jwksURI = tc.uri(li.url)
			ft := newFloorTest(t, li)
			for i := range 21 {
				key := ft.forger
				if i == 0 {
					key = nil
				}
				_, err := ft.p.VerifyLogoutToken(t.Context(), ft.token(key))
				if (err == nil) != (key == nil) {
					t.Fatalf("logout token %d (forged: %v): %v", i, key != nil, err)
				}
			}
			if got := li.jwksFetches.Load(); got != 1 {
				t.Errorf("jwks_uri %q: the JWKS was fetched %d times for one valid and 20 forged logout tokens within %s; want once", li.jwksURI, got, jwksRefetchEvery)
			}
		})
	}
}

// verifyOnceFetched verifies logout tokens from token until one passes, for
// a while. go-oidc hands a token that needs the keys fetched the result of
// the fetch just done, until the goroutine that made it has let it go: the
// first token after the floor can still get the fetch before it.
func verifyOnceFetched(t *testing.T, p *oidcProvider, token func() string) error {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := p.VerifyLogoutToken(t.Context(), token())
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// The floor holds when the IdP's JWKS fails too: an IdP that is down, or
// that answers 429 to the fetches, is not sent one for each forged logout
// token. A logout token is refused until the floor has passed, then the
// keys are fetched again.
func TestForgedLogoutTokensDoNotFetchAFailingJWKSEachTime(t *testing.T) {
	li := newTestIssuer(t)
	ft := newFloorTest(t, li)
	p, token, foreignKey := ft.p, ft.token, ft.forger

	li.jwksDown.Store(ptr("down for maintenance"))
	if _, err := p.VerifyLogoutToken(t.Context(), token(nil)); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("a logout token while the JWKS answers 503: %v; want it refused, saying so", err)
	}
	for range 20 {
		if _, err := p.VerifyLogoutToken(t.Context(), token(foreignKey)); err == nil {
			t.Fatal("a forged logout token was accepted")
		}
	}
	li.jwksDown.Store(nil)
	// A second short of the floor: still the failed fetch's answer, which
	// says why there are no keys.
	ft.now = ft.now.Add(jwksRefetchEvery - time.Second)
	if _, err := p.VerifyLogoutToken(t.Context(), token(nil)); err == nil || !strings.Contains(err.Error(), "not fetched again") || !strings.Contains(err.Error(), "503") {
		t.Errorf("a logout token within %s of the failed fetch: %v; want it refused as not fetched again after a 503", jwksRefetchEvery, err)
	}
	if got := li.jwksFetches.Load(); got != 1 {
		t.Errorf("the JWKS was fetched %d times for 22 logout tokens within %s of a fetch that failed; want once", got, jwksRefetchEvery)
	}
	ft.now = ft.now.Add(time.Second)
	if err := verifyOnceFetched(t, p, func() string { return token(nil) }); err != nil {
		t.Errorf("a logout token %s after the failed fetch, the IdP back: %v", jwksRefetchEvery, err)
	}
	if got := li.jwksFetches.Load(); got != 2 {
		t.Errorf("the JWKS was fetched %d times in all; want 2", got)
	}
}

// A JWKS answer is read up to maxJWKS and refused beyond it, whatever its
// status: go-oidc reads an answer other than 200 whole into its error,
// however long.
func TestLogoutTokensJWKSAnswerIsBounded(t *testing.T) {
	li := newTestIssuer(t)
	ft := newFloorTest(t, li)
	li.jwksDown.Store(ptr(strings.Repeat("x", 2*maxJWKS)))
	_, err := ft.p.VerifyLogoutToken(t.Context(), ft.token(nil))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("larger than %d bytes", maxJWKS)) || len(err.Error()) > 4096 {
		t.Errorf("a 2 MiB answer from the JWKS: %d bytes of error (%.200s…); want it refused as larger than %d bytes", len(err.Error()), err, maxJWKS)
	}
}

// A logout token is "could not be checked" (ErrNotReady, a 503 to send it
// again) only when its signature check needed the IdP's keys and they did
// not come, never because some earlier fetch failed: after an outage the
// keys held verify the IdP's tokens without a fetch, and a token refused
// for what it says (another client's audience, another issuer, not a JWT
// the IdP's algorithms sign) is invalid, a 400, not one to send again.
func TestLogoutTokenRefusedForItsClaimsAfterAKeysOutageIsInvalid(t *testing.T) {
	li := newTestIssuer(t)
	ft := newFloorTest(t, li)
	p, token := ft.p, ft.token
	if _, err := p.VerifyLogoutToken(t.Context(), token(nil)); err != nil {
		t.Fatalf("a valid logout token: %v", err)
	}
	// The IdP's JWKS fails once, at a token whose key the proxy does not
	// hold: that one could not be checked.
	// go-oidc may hand the first such token the valid one's fetch, until
	// the goroutine that made it lets it go (verifyOnceFetched): the next
	// one gets a fetch of its own.
	ft.now = ft.now.Add(jwksRefetchEvery)
	li.jwksDown.Store(ptr("down for maintenance"))
	var err error
	for deadline := time.Now().Add(5 * time.Second); !errors.Is(err, ErrNotReady) && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		_, err = p.VerifyLogoutToken(t.Context(), token(ft.forger))
	}
	if !errors.Is(err, ErrNotReady) {
		t.Fatalf("a token of a key not held while the JWKS fails: %v; want ErrNotReady", err)
	}
	claims := func(edit func(map[string]any)) map[string]any {
		c := map[string]any{"iss": li.url, "aud": "portcullis", "iat": time.Now().Unix(), "jti": rand.Text(), "sub": "alice",
			"events": map[string]any{BackchannelLogoutEvent: map[string]any{}}}
		edit(c)
		return c
	}
	// While the keys cannot be fetched, a token of a key not held that
	// says what no logout token for this client says is invalid all the
	// same (go-oidc checks the signature before iss and aud).
	otherAudience, err := signJWT("logout+jwt", claims(func(c map[string]any) { c["aud"] = "another-client" }), ft.forger, "k9")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.VerifyLogoutToken(t.Context(), otherAudience); err == nil || errors.Is(err, ErrNotReady) {
		t.Errorf("another client's token, of a key not held, while the JWKS fails: %v; want it refused as invalid, not ErrNotReady", err)
	}
	li.jwksDown.Store(nil)

	for name, raw := range map[string]string{
		"another client's audience": logoutToken(t, li, claims(func(c map[string]any) { c["aud"] = "another-client" }), nil),
		"another issuer":            logoutToken(t, li, claims(func(c map[string]any) { c["iss"] = "https://elsewhere.example" }), nil),
		"not a signed JWT":          "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.c2ln",
	} {
		_, err := p.VerifyLogoutToken(t.Context(), raw)
		if err == nil || errors.Is(err, ErrNotReady) {
			t.Errorf("%s, signed with a key held, after the failed fetch: %v; want it refused as invalid, not ErrNotReady", name, err)
		}
	}
	if _, err := p.VerifyLogoutToken(t.Context(), token(nil)); err != nil {
		t.Errorf("a valid logout token after the failed fetch: %v", err)
	}
	if got := li.jwksFetches.Load(); got != 2 {
		t.Errorf("the JWKS was fetched %d times; want 2 (the keys held verify the rest)", got)
	}
}

// fetchForForged posts forged logout tokens naming a kid the issuer never
// published until one has the keys fetched (the floor having passed): go-oidc
// may hand the first the fetch just before it, until the goroutine that made
// it lets it go (verifyOnceFetched). Each is refused; the one whose check
// fetched the keys as invalid, not as one to send again: the keys, fetched
// after it came, do not have its kid.
func fetchForForged(t *testing.T, li *testIssuer, ft *floorTest) {
	t.Helper()
	want := li.jwksFetches.Load() + 1
	for deadline := time.Now().Add(5 * time.Second); li.jwksFetches.Load() < want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("forged logout tokens past the floor had the keys fetched %d times, want once", li.jwksFetches.Load()-want+1)
		}
		_, err := ft.p.VerifyLogoutToken(t.Context(), ft.forge("never-published"))
		if err == nil {
			t.Fatal("a forged logout token was accepted")
		}
		if li.jwksFetches.Load() == want && errors.Is(err, ErrNotReady) {
			t.Errorf("a forged logout token whose check fetched the keys: %v; want it refused as invalid, not ErrNotReady", err)
		}
	}
}

// An IdP that rotates its signing key signs its next logout token with the
// new key at once. Right after a fetch of its keys (which anyone can make
// happen, posting a token that names a kid never published), the floor
// answers that token's check with the keys fetched before: refused as
// invalid, a 400, the IdP would not send it again (Back-Channel Logout 1.0,
// 2.8) and the user's sessions here would outlive the logout. It could not
// be checked yet: ErrNotReady, with the time left of the floor; sent again
// once the floor has passed, it verifies. The floor holds all along.
func TestLogoutTokenOfAKeyRotatedWithinTheFloorIsToBeSentAgain(t *testing.T) {
	li := newTestIssuer(t)
	ft := newFloorTest(t, li)
	p := ft.p
	if _, err := p.VerifyLogoutToken(t.Context(), ft.token(nil)); err != nil {
		t.Fatalf("a valid logout token: %v", err)
	}
	ft.now = ft.now.Add(jwksRefetchEvery)
	fetchForForged(t, li, ft)

	// The IdP rotates its key a second later, and signs a logout token
	// with the new one.
	li.rotateTo(t, "k2")
	ft.now = ft.now.Add(time.Second)
	raw := ft.token(nil)
	_, err := p.VerifyLogoutToken(t.Context(), raw)
	var unfetched *UnfetchedKeyError
	if !errors.As(err, &unfetched) || !errors.Is(err, ErrNotReady) {
		t.Fatalf("a logout token signed with the IdP's new key %s after a fetch: %v; want ErrNotReady, a key not fetched yet", time.Second, err)
	}
	if unfetched.KeyID != "k2" || unfetched.RetryAfter != jwksRefetchEvery-time.Second {
		t.Errorf("the token's kid %q, to be sent again after %s; want k2 after %s", unfetched.KeyID, unfetched.RetryAfter, jwksRefetchEvery-time.Second)
	}
	if got := li.jwksFetches.Load(); got != 2 {
		t.Errorf("the JWKS was fetched %d times; want 2 (the floor holds)", got)
	}

	// Sent again when the floor has passed, the same token verifies.
	ft.now = ft.now.Add(unfetched.RetryAfter)
	if err := verifyOnceFetched(t, p, func() string { return raw }); err != nil {
		t.Errorf("the same logout token sent again after %s: %v", unfetched.RetryAfter, err)
	}
	if got := li.jwksFetches.Load(); got != 3 {
		t.Errorf("the JWKS was fetched %d times in all; want 3", got)
	}
}

// Within the floor, a logout token is invalid, not one to send again, when
// the keys held refuse it for anything but a key they may lack: what it
// says (another audience or issuer: those are checked before its signature,
// whatever its kid), its algorithm (none, HS256), or a signature that the
// key its kid names does not verify when it was issued before the keys
// were fetched. Only one naming a kid not held, or none, or one naming a
// kid held and issued since the fetch (an IdP with a constant kid that
// rotated its key), could be signed with a key published since the fetch;
// a forged one is refused once the floor has passed. None has the keys
// fetched.
func TestLogoutTokenRefusedWithinTheFloorIsInvalidUnlessItsKeyMayBeNew(t *testing.T) {
	li := newTestIssuer(t)
	ft := newFloorTest(t, li)
	p := ft.p
	if _, err := p.VerifyLogoutToken(t.Context(), ft.token(nil)); err != nil {
		t.Fatalf("a valid logout token: %v", err)
	}
	ft.now = ft.now.Add(time.Second)
	signed := func(edit func(map[string]any), kid string) string {
		c := map[string]any{"iss": li.url, "aud": "portcullis", "iat": time.Now().Unix(), "jti": rand.Text(), "sub": "alice",
			"events": map[string]any{BackchannelLogoutEvent: map[string]any{}}}
		edit(c)
		raw, err := signJWT("logout+jwt", c, ft.forger, kid)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	hs256, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("portcullis-client-secret-32-bytes")},
		(&jose.SignerOptions{}).WithHeader("kid", "k9"))
	if err != nil {
		t.Fatal(err)
	}
	macked, err := jwt.Signed(hs256).Claims(map[string]any{"iss": li.url, "aud": "portcullis", "iat": time.Now().Unix(),
		"jti": "mac", "sub": "alice", "events": map[string]any{BackchannelLogoutEvent: map[string]any{}}}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		raw   string
		again bool // ErrNotReady, to send again
	}{
		{"a forged signature under the kid of a key held, issued a minute before the fetch", signed(func(c map[string]any) {
			c["iat"] = time.Now().Add(-time.Minute).Unix()
		}, "k1"), false},
		{"a signature under the kid of a key held, issued since the fetch (a new key under a constant kid)", ft.forge("k1"), true},
		{"another client's audience, naming a kid not held", signed(func(c map[string]any) { c["aud"] = "another-client" }, "k9"), false},
		{"another issuer, naming a kid not held", signed(func(c map[string]any) { c["iss"] = "https://elsewhere.example" }, "k9"), false},
		{"alg none", "eyJhbGciOiJub25lIiwia2lkIjoiazkifQ.eyJzdWIiOiJhbGljZSJ9.", false},
		{"HS256, naming a kid not held", macked, false},
		{"a kid not held", ft.forge("k9"), true},
		{"no kid", ft.forge(""), true},
	} {
		_, err := p.VerifyLogoutToken(t.Context(), tc.raw)
		var unfetched *UnfetchedKeyError
		switch {
		case err == nil:
			t.Errorf("%s: accepted", tc.name)
		case tc.again && (!errors.As(err, &unfetched) || unfetched.RetryAfter != jwksRefetchEvery-time.Second):
			t.Errorf("%s, %s after a fetch: %v; want ErrNotReady, to send again after %s", tc.name, time.Second, err, jwksRefetchEvery-time.Second)
		case !tc.again && errors.Is(err, ErrNotReady):
			t.Errorf("%s, %s after a fetch: %v; want it refused as invalid, not ErrNotReady", tc.name, time.Second, err)
		}
	}
	if got := li.jwksFetches.Load(); got != 1 {
		t.Errorf("the JWKS was fetched %d times; want once", got)
	}
}

// Two logout tokens at once: a forged one, whose check fetches the keys
// once the floor has passed, and, while that fetch is under way (the
// IdP's JWKS answering with the keys it published when asked), the IdP's
// own, signed with a key it published since. go-oidc checks the second
// with what that fetch brings, which cannot have its key: it began before
// the token came. That token is to be sent again, and verifies once the
// floor has passed; the forged one, whose check began before that fetch,
// is invalid.
func TestLogoutTokenOfAKeyPublishedDuringAFetchIsToBeSentAgain(t *testing.T) {
	li := newTestIssuer(t)
	ft := newFloorTest(t, li)
	p := ft.p
	if _, err := p.VerifyLogoutToken(t.Context(), ft.token(nil)); err != nil {
		t.Fatalf("a valid logout token: %v", err)
	}
	ft.now = ft.now.Add(jwksRefetchEvery)
	held := make(chan struct{})
	li.jwksHeld.Store(&held)
	released := false
	release := func() {
		if !released {
			released = true
			close(held)
		}
	}
	t.Cleanup(release)

	// go-oidc may hand a forged token the fetch before it (see
	// fetchForForged); the next one fetches.
	forged := make(chan error, 1)
	for deadline := time.Now().Add(5 * time.Second); li.jwksFetches.Load() < 2; {
		go func() {
			_, err := p.VerifyLogoutToken(t.Context(), ft.forge("never-published"))
			forged <- err
		}()
		for li.jwksFetches.Load() < 2 && len(forged) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no forged logout token past the floor had the keys fetched")
			}
			time.Sleep(time.Millisecond)
		}
		if li.jwksFetches.Load() < 2 {
			if err := <-forged; err == nil {
				t.Fatal("a forged logout token was accepted")
			}
		}
	}
	// The fetch is under way, the keys it answers with read. The IdP
	// rotates its key and posts a logout token signed with the new one.
	li.rotateTo(t, "k2")
	raw := ft.token(nil)
	fromIdP := make(chan error, 1)
	go func() {
		_, err := p.VerifyLogoutToken(t.Context(), raw)
		fromIdP <- err
	}()
	release()
	if err := <-forged; err == nil || errors.Is(err, ErrNotReady) {
		t.Errorf("the forged logout token whose check fetched the keys: %v; want it refused as invalid", err)
	}
	err := <-fromIdP
	var unfetched *UnfetchedKeyError
	if !errors.As(err, &unfetched) || unfetched.KeyID != "k2" || unfetched.RetryAfter != jwksRefetchEvery {
		t.Fatalf("the IdP's logout token, signed with a key published while a fetch was under way: %v; want ErrNotReady, to send again after %s",
			err, jwksRefetchEvery)
	}
	if got := li.jwksFetches.Load(); got != 2 {
		t.Errorf("the JWKS was fetched %d times; want 2", got)
	}
	ft.now = ft.now.Add(unfetched.RetryAfter)
	if err := verifyOnceFetched(t, p, func() string { return raw }); err != nil {
		t.Errorf("the same logout token sent again after %s: %v", unfetched.RetryAfter, err)
	}
}

// Before an entry's discovery has succeeded nothing can be checked but
// what a logout token says: one that says what a logout token for this
// client says (the issuer that discovery must find, server_url, with or
// without its trailing slash; this client among its aud; the claims of
// a logout token) could not be checked (ErrNotReady, to send again); any
// other is invalid here, whatever key signed it. A token posted to another
// entry also ends the sessions of this one when it verifies here
// (proxy's logoutTargets), and waits for an entry that could not check
// it: an entry of another issuer or client, whose discovery has not
// succeeded (its IdP down, or a server_url mistyped), must not have every
// logout at the others answered 503.
func TestLogoutTokenBeforeDiscoveryIsToBeSentAgainOnlyWhenItIsForThisClient(t *testing.T) {
	li := newTestIssuer(t)
	for _, serverURL := range []string{li.url, li.url + "/"} {
		// Its discovery ends with the context it was started with,
		// before it succeeded.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		prov, err := New(ctx, Config{ID: "company-groups", Protocol: OIDC, ServerURL: serverURL, ClientID: "portcullis", ClientSecret: "s"},
			testOptions("http://127.0.0.1:1", false))
		if err != nil {
			t.Fatal(err)
		}
		p := prov.(*oidcProvider)
		if err := p.Ready(); !errors.Is(err, ErrNotReady) {
			t.Fatalf("an entry whose discovery has not succeeded: Ready %v, want ErrNotReady", err)
		}
		token := func(edit func(map[string]any)) string {
			c := map[string]any{"iss": li.url, "aud": []string{"other", "portcullis"}, "iat": time.Now().Unix(), "jti": rand.Text(),
				"sub": "alice", "events": map[string]any{BackchannelLogoutEvent: map[string]any{}}}
			edit(c)
			return logoutToken(t, li, c, nil)
		}
		for _, tc := range []struct {
			name  string
			raw   string
			again bool // ErrNotReady, to send again
		}{
			{"a logout token for this client", token(func(map[string]any) {}), true},
			{"another client's", token(func(c map[string]any) { c["aud"] = "another-client" }), false},
			{"another issuer's", token(func(c map[string]any) { c["iss"] = "https://elsewhere.example" }), false},
			{"another issuer's whose path extends this one's", token(func(c map[string]any) { c["iss"] = li.url + "/realms/x" }), false},
			{"an ID token (a nonce, no logout event)", token(func(c map[string]any) { c["nonce"] = "n"; delete(c, "events") }), false},
			{"one issued long ago", token(func(c map[string]any) { c["iat"] = time.Now().Add(-time.Hour).Unix() }), false},
			{"not a JWT", "signed", false},
			{"in the JWS JSON serialization", jwsJSON(token(func(map[string]any) {}), false), false},
		} {
			_, err := p.VerifyLogoutToken(t.Context(), tc.raw)
			switch {
			case err == nil:
				t.Errorf("server_url %s, %s: accepted before discovery", serverURL, tc.name)
			case tc.again != errors.Is(err, ErrNotReady):
				t.Errorf("server_url %s, %s, before discovery: %v; want ErrNotReady %v", serverURL, tc.name, err, tc.again)
			}
		}
	}
}

// Anyone may post a logout token, and what a refused one says is logged
// (the proxy's backchannel_logout_refused line): what it says itself is
// bounded there, as its typ, kid and issuer are, however long the claims
// go-oidc names in its errors (aud, iss) are. The form it comes in may
// be 64 KiB.
func TestLogoutTokenErrorTextIsBounded(t *testing.T) {
	li := newTestIssuer(t)
	discovered := li.provider(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	prov, err := New(ctx, Config{ID: "company-groups", Protocol: OIDC, ServerURL: li.url, ClientID: "portcullis", ClientSecret: "s"},
		testOptions("http://127.0.0.1:1", false))
	if err != nil {
		t.Fatal(err)
	}
	undiscovered := prov.(*oidcProvider)
	long := strings.Repeat("A", 30_000)
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
	}{
		{"a long audience", func(c map[string]any) { c["aud"] = []string{long} }},
		{"a long issuer", func(c map[string]any) { c["iss"] = long }},
	} {
		c := map[string]any{"iss": li.url, "aud": "portcullis", "iat": time.Now().Unix(), "jti": rand.Text(),
			"sub": "alice", "events": map[string]any{BackchannelLogoutEvent: map[string]any{}}}
		tc.edit(c)
		raw := logoutToken(t, li, c, nil)
		for _, p := range []*oidcProvider{discovered, undiscovered} {
			_, err := p.VerifyLogoutToken(t.Context(), raw)
			if err == nil {
				t.Fatalf("%s at %s: accepted", tc.name, p.cfg.ID)
			}
			if errors.Is(err, ErrNotReady) || len(err.Error()) > maxLogoutErrorText {
				t.Errorf("%s at %s (discovered %v): %d bytes of error text (ErrNotReady %v), want it refused in at most %d",
					tc.name, p.cfg.ID, p.Ready() == nil, len(err.Error()), errors.Is(err, ErrNotReady), maxLogoutErrorText)
			}
		}
	}
}

// An entry whose server_url is the issuer spelled otherwise than but for
// a trailing slash never discovers (go-oidc wants the issuer exactly), so
// a token of that issuer is not one to send again there: the entry that
// verifies it would otherwise wait for it forever.
func TestLogoutTokenBeforeDiscoveryAtAnotherSpellingOfTheIssuerIsInvalid(t *testing.T) {
	li := newTestIssuer(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	prov, err := New(ctx, Config{ID: "company-groups", Protocol: OIDC, ServerURL: "HTTP" + strings.TrimPrefix(li.url, "http"),
		ClientID: "portcullis", ClientSecret: "s"}, testOptions("http://127.0.0.1:1", false))
	if err != nil {
		t.Fatal(err)
	}
	raw := logoutToken(t, li, map[string]any{"iss": li.url, "aud": "portcullis", "iat": time.Now().Unix(), "jti": rand.Text(),
		"sub": "alice", "events": map[string]any{BackchannelLogoutEvent: map[string]any{}}}, nil)
	if _, err := prov.(*oidcProvider).VerifyLogoutToken(t.Context(), raw); err == nil || errors.Is(err, ErrNotReady) {
		t.Errorf("a token of %s at an entry whose server_url is spelled otherwise, before discovery: %v; want it invalid", li.url, err)
	}
}
