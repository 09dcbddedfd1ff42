package idp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// BackchannelLogoutEvent is the member of a logout token's events claim that
// makes it one (OpenID Connect Back-Channel Logout 1.0, section 2.4).
const BackchannelLogoutEvent = "http://schemas.openid.net/event/backchannel-logout"

// LogoutTokenMaxAge is how old (by its iat) a logout token may be; a token's
// jti needs to be remembered only this long.
const LogoutTokenMaxAge = 5 * time.Minute

// maxLogoutErrorText bounds the text of VerifyLogoutToken's errors: they
// name what a token says (go-oidc's name its aud and iss whole), and
// anyone may post one, of up to the 64 KiB form, to have it logged.
const maxLogoutErrorText = 1024

// LogoutToken is a verified back-channel logout token: the IdP says that the
// session SessionID, or when that is empty every session of Subject, ended.
type LogoutToken struct {
	// Subject is the token's sub, the ID token's (Tokens.Subject).
	Subject string
	// Sub is the profile sub of the sessions of Subject: Subject when the
	// entry takes the profile's sub from the sub claim, "" when claims.sub
	// maps another claim, whose values are another list of names: one
	// user's may be another's sub.
	Sub       string
	SessionID string
	// ID is the jti claim, single-use; Issuer, the iss claim, whose tokens
	// it tells apart.
	ID       string
	Issuer   string
	IssuedAt time.Time
}

// BackchannelLogouter is an IdP that ends sessions by calling the proxy with
// a signed logout token (OIDC Back-Channel Logout 1.0).
type BackchannelLogouter interface {
	// VerifyLogoutToken checks raw (signature by the IdP's keys, typ when
	// present, iss, aud, iat, events, sub or sid, no nonce, jti) and returns
	// what it says. It
	// does not check that jti is unused; the caller does. An error that is
	// ErrNotReady says the token could not be checked (discovery has not
	// succeeded, the IdP's keys could not be fetched, or, an
	// *UnfetchedKeyError, its key may be one published since they were),
	// not that it is bad; it is said only of a token whose issuer,
	// audience and claims are those of a logout token for this client.
	VerifyLogoutToken(ctx context.Context, raw string) (*LogoutToken, error)
}

var _ BackchannelLogouter = (*oidcProvider)(nil)

// VerifyLogoutToken verifies a logout token like an ID token (the IdP's
// signing keys from its JWKS, issuer, audience this client), then the claims
// that make it a logout token rather than an ID token.
func (p *oidcProvider) VerifyLogoutToken(ctx context.Context, raw string) (*LogoutToken, error) {
	tok, err := p.verifyLogoutToken(ctx, raw)
	if err != nil && len(err.Error()) > maxLogoutErrorText {
		err = clippedError{err}
	}
	return tok, err
}

// clippedError is err, its text cut at maxLogoutErrorText bytes.
type clippedError struct{ err error }

func (e clippedError) Error() string {
	return strings.ToValidUTF8(truncate(e.err.Error(), maxLogoutErrorText-len(" (cut)")), "") + " (cut)"
}

func (e clippedError) Unwrap() error { return e.err }

// verifyLogoutToken is VerifyLogoutToken, its errors' text unbounded.
func (p *oidcProvider) verifyLogoutToken(ctx context.Context, raw string) (*LogoutToken, error) {
	id := p.cfg.ID
	d, err := p.current()
	if err != nil {
		// Nothing but what it says can be checked before discovery: only
		// a token that says it is for this client could be good.
		// Another's is invalid here, not one to send again: a token
		// posted to another entry ends this one's sessions too if it
		// verifies here, and waits for this one if it could not be
		// checked here (proxy's logoutTargets).
		if !compactJWT(raw) {
			return nil, fmt.Errorf("oidc %s: logout token: %w", id, errNotCompact)
		}
		if bad := p.undiscoveredSaysLogout(ctx, raw); bad != nil {
			return nil, fmt.Errorf("oidc %s: logout token: %w", id, bad)
		}
		return nil, err
	}
	if d.provider == nil {
		return nil, fmt.Errorf("oidc %s: logout token: plain OAuth2 has no back-channel logout", id)
	}
	if !compactJWT(raw) {
		// go-jose would read the JWS JSON serialization too, into which
		// anyone can rewrite a token the IdP signed: its header is then not
		// where the typ check below reads it.
		return nil, fmt.Errorf("oidc %s: logout token: %w", id, errNotCompact)
	}
	came := time.Now()
	d = p.forAlgOf(ctx, d, raw)
	if wait, ok := p.unlistedAlgWait(d, raw, came); ok {
		alg, kid := jwtHeader(raw)
		listed := d
		listed.idTokenAlgs = append(slices.Clip(d.idTokenAlgs), alg)
		if p.saysLogout(ctx, listed, raw) {
			return nil, &UnfetchedKeyError{KeyID: truncate(kid, 64), RetryAfter: wait,
				err: fmt.Errorf("oidc %s: logout token: signed with %s, which the IdP's discovery document, as read within %s before it came, does not list",
					id, alg, rediscoverEvery)}
		}
	}
	check := &signatureCheck{}
	fetches := p.jwks.fetchesBegun()
	tok, err := d.logoutVerifier.Verify(context.WithValue(ctx, signatureCheckKey{}, check), raw)
	var said *LogoutToken
	if err != nil && check.err != nil {
		said, _ = p.saidLogout(ctx, d, raw)
	}
	if said != nil {
		if p.jwks.keysUnavailable() {
			// Its signature could not be checked: the keys held do not
			// verify it, and those the IdP was asked for (now, or
			// within the floor) did not come (it is down or stalls).
			// Nothing says the token is bad. A token refused before
			// its signature check (not a JWT of the IdP's algorithms),
			// or for what it says, is bad, whenever a fetch last failed.
			return nil, fmt.Errorf("oidc %s: logout token: the IdP's signing keys could not be fetched: %w: %w", id, ErrNotReady, err)
		}
		// The keys held do not verify it, and were fetched before it
		// came: the floor answered its check with them. An IdP that
		// rotates its key signs with the new one at once, and anyone
		// can have the keys fetched just before, with a token naming a
		// kid never published. Unless the key its kid names is held
		// and was fetched after the token was issued, it may be good
		// (an IdP with a constant kid publishes its new key under the
		// old one's): a fetch once the floor has passed will tell, and
		// a 400 now would be final (Back-Channel Logout 1.0, 2.8).
		kid := signedKeyID(raw, d.idTokenAlgs)
		if wait, ok := p.jwks.keyNotFetched(fetches, kid, said.IssuedAt); ok {
			return nil, &UnfetchedKeyError{KeyID: truncate(kid, 64), RetryAfter: wait,
				err: fmt.Errorf("oidc %s: logout token: signed with a key not among the IdP's keys as last fetched, "+
					"within %s of that fetch: %w", id, jwksRefetchEvery, err)}
		}
		if p.jwks.fetchedSince(fetches) {
			// A fetch begun after it came has ended, but its check may
			// have been answered before that fetch ended, with the keys
			// fetched before: the floor passed, and another token had
			// them fetched, while the check was under way. Checked again,
			// it is checked with that fetch's keys (or a later one's),
			// which an IdP publishes before it signs with them; refused
			// then, it is invalid. The floor holds for this check as for
			// any: that fetch has just ended.
			check = &signatureCheck{}
			tok, err = d.logoutVerifier.Verify(context.WithValue(ctx, signatureCheckKey{}, check), raw)
			if err != nil && check.err != nil && p.jwks.keysUnavailable() {
				return nil, fmt.Errorf("oidc %s: logout token: the IdP's signing keys could not be fetched: %w: %w", id, ErrNotReady, err)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("oidc %s: logout token: %w", id, err)
	}
	out, err := p.logoutToken(tok, raw, time.Now())
	if err != nil {
		return nil, fmt.Errorf("oidc %s: logout token: %w", id, err)
	}
	return out, nil
}

// saysLogout reports whether raw, a logout token whose signature the keys
// held did not verify, says what a logout token for this client says (its
// issuer, audience and claims, read unverified): only then may it be good
// once checked with other keys. One that does not is invalid, whatever
// key it is signed with.
func (p *oidcProvider) saysLogout(ctx context.Context, d discovered, raw string) bool {
	_, ok := p.saidLogout(ctx, d, raw)
	return ok
}

// saidLogout is what raw says, read unverified, when saysLogout.
func (p *oidcProvider) saidLogout(ctx context.Context, d discovered, raw string) (*LogoutToken, bool) {
	v := oidc.NewVerifier(d.issuer, nil, &oidc.Config{ClientID: p.cfg.ClientID, SkipExpiryCheck: true,
		SupportedSigningAlgs: d.idTokenAlgs, InsecureSkipSignatureCheck: true})
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		return nil, false
	}
	out, err := p.logoutToken(tok, raw, time.Now())
	return out, err == nil
}

// undiscoveredSaysLogout is saysLogout before this entry's discovery has
// succeeded: why raw, a compact JWT read unverified, is not what a logout
// token for this client says, or nil. The issuer discovery is to find is
// server_url, but for a trailing slash (discover); the algorithms, any
// that ID tokens may be verified with.
func (p *oidcProvider) undiscoveredSaysLogout(ctx context.Context, raw string) error {
	v := oidc.NewVerifier("", nil, &oidc.Config{ClientID: p.cfg.ClientID, SkipIssuerCheck: true, SkipExpiryCheck: true,
		SupportedSigningAlgs: verifiedAlgs, InsecureSkipSignatureCheck: true})
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		return err
	}
	if strings.TrimSuffix(tok.Issuer, "/") != strings.TrimSuffix(p.cfg.ServerURL, "/") {
		return fmt.Errorf("issued by a different provider, %q, than server_url %q", truncate(tok.Issuer, 256), p.cfg.ServerURL)
	}
	_, err = p.logoutToken(tok, raw, time.Now())
	return err
}

// logoutToken checks the claims that make tok, an ID token as go-oidc
// read it from raw, a logout token rather than an ID token, and returns
// what it says.
func (p *oidcProvider) logoutToken(tok *oidc.IDToken, raw string, now time.Time) (*LogoutToken, error) {
	var claims struct {
		SID    string                     `json:"sid"`
		JTI    string                     `json:"jti"`
		Events map[string]json.RawMessage `json:"events"`
		Nonce  json.RawMessage            `json:"nonce"`
	}
	if err := tok.Claims(&claims); err != nil {
		return nil, fmt.Errorf("read claims: %w", err)
	}
	var problem error
	switch event, ok := claims.Events[BackchannelLogoutEvent]; {
	case !logoutTokenType(raw):
		// Back-Channel Logout 4.1: explicit typing keeps another JWT signed
		// by the same keys for this client from passing for a logout token.
		problem = fmt.Errorf("typ %q is not logout+jwt", truncate(jwtHeaderType(raw), 64))
	case !ok:
		problem = fmt.Errorf("events has no %s", BackchannelLogoutEvent)
	case len(event) == 0 || event[0] != '{':
		problem = errors.New("the logout event is not a JSON object")
	case claims.Nonce != nil:
		// An ID token carries a nonce; a logout token must not, so that one
		// can never pass for the other.
		problem = errors.New("it has a nonce")
	case tok.Subject == "" && claims.SID == "":
		problem = errors.New("it names neither sub nor sid")
	case claims.JTI == "":
		problem = errors.New("it has no jti")
	case tok.IssuedAt.IsZero():
		problem = errors.New("it has no iat")
	case tok.IssuedAt.After(now.Add(idTokenClockSkew)):
		problem = fmt.Errorf("issued in the future (iat %s)", tok.IssuedAt.UTC().Format(time.RFC3339))
	case now.Sub(tok.IssuedAt) > LogoutTokenMaxAge:
		problem = fmt.Errorf("issued too long ago (iat %s)", tok.IssuedAt.UTC().Format(time.RFC3339))
	case !tok.Expiry.IsZero() && now.After(tok.Expiry.Add(idTokenClockSkew)):
		problem = errors.New("it has expired")
	}
	if problem != nil {
		return nil, problem
	}
	out := &LogoutToken{Subject: tok.Subject, SessionID: claims.SID, ID: claims.JTI, Issuer: tok.Issuer, IssuedAt: tok.IssuedAt}
	if p.mapping["sub"] == "sub" {
		out.Sub = tok.Subject
	}
	return out, nil
}

// UnfetchedKeyError is a logout token that the IdP's keys, as last
// fetched, do not verify, whose header names a kid not among them (or
// none, or one among them when it was issued after that fetch: an IdP
// with a constant kid), within jwksRefetchEvery of that fetch: the IdP may have
// published the key it is signed with since, and the floor holds the
// next fetch back. It is ErrNotReady, a token that could not be checked:
// sent again after RetryAfter, it is checked with the keys fetched then.
// A forged one is refused then.
type UnfetchedKeyError struct {
	// KeyID is the kid the token's header names (its first 64 bytes),
	// "" for none: whatever its sender chose.
	KeyID string
	// RetryAfter is how long until the keys may be fetched again, a
	// second at least.
	RetryAfter time.Duration
	err        error
}

func (e *UnfetchedKeyError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("logout token: signed with a key (kid %q) not among the IdP's keys as last fetched", e.KeyID)
	}
	return e.err.Error()
}

// Unwrap makes it ErrNotReady, and the signature check's error.
func (e *UnfetchedKeyError) Unwrap() []error {
	if e.err == nil {
		return []error{ErrNotReady}
	}
	return []error{ErrNotReady, e.err}
}

// errNotCompact is a JWT from the IdP (an ID token, a logout token) refused
// for its form. go-jose, under go-oidc's checks, also reads the JWS JSON
// serialization and strips whitespace anywhere in a token, so a token the
// IdP signed, rewritten, still verifies; but what the proxy reads from a
// token itself (a logout token's typ, the sub of the ID token a session
// keeps, which refreshes and back-channel logouts are checked against) is
// read from the compact form only.
var errNotCompact = errors.New("not a compact JWT (three base64url parts, nothing else: RFC 7519 7.2); " +
	"it came in another serialization (JWS JSON, padding, whitespace, more parts)")

// compactJWT reports whether raw is in the JWS compact serialization, three
// base64url parts and nothing else: the only form a JWT takes (RFC 7519
// 7.2), and the one jwtHeaderType and subjectOf read.
func compactJWT(raw string) bool {
	if strings.Count(raw, ".") != 2 {
		return false
	}
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// logoutTokenType reports whether the JOSE header of the compact JWT raw
// allows it to be a logout token: typed logout+jwt (with or without
// "application/", in any case, as RFC 7515 4.1.9 allows), or untyped. "JWT"
// says no more than no typ at all, and Keycloak sends it.
func logoutTokenType(raw string) bool {
	typ := strings.ToLower(jwtHeaderType(raw))
	switch strings.TrimPrefix(typ, "application/") {
	case "", "jwt", "logout+jwt":
		return true
	}
	return false
}

// jwtHeaderType is the typ of the compact JWT raw's header: "" when it has
// none or cannot be read (the signature check refuses those), its JSON when
// it is not a string.
func jwtHeaderType(raw string) string {
	header, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		return ""
	}
	var h struct {
		Typ json.RawMessage `json:"typ"`
	}
	if json.Unmarshal(b, &h) != nil || h.Typ == nil {
		return ""
	}
	var typ string
	if json.Unmarshal(h.Typ, &typ) != nil {
		return string(h.Typ)
	}
	return typ
}

// signedKeyID is the kid that the header of raw, a JWS of one of algs,
// names, as go-oidc reads it to pick the key: "" for none.
func signedKeyID(raw string, algs []string) string {
	sigAlgs := make([]jose.SignatureAlgorithm, len(algs))
	for i, a := range algs {
		sigAlgs[i] = jose.SignatureAlgorithm(a)
	}
	jws, err := jose.ParseSigned(raw, sigAlgs)
	if err != nil || len(jws.Signatures) == 0 {
		return ""
	}
	return jws.Signatures[0].Header.KeyID
}

// logoutKeys is the key set logout tokens are verified with: go-oidc's,
// fetched through the provider's jwksThrottle, which records the outcome
// of each signature check in the signatureCheck its context carries.
// go-oidc's Verify gives its key set's error only as text.
type logoutKeys struct{ keys *oidc.RemoteKeySet }

// signatureCheck is the outcome of a logout token's signature check.
type signatureCheck struct{ err error }

// signatureCheckKey is the context key of a *signatureCheck.
type signatureCheckKey struct{}

// VerifySignature implements oidc.KeySet.
func (k logoutKeys) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := k.keys.VerifySignature(ctx, jwt)
	if c, ok := ctx.Value(signatureCheckKey{}).(*signatureCheck); ok {
		c.err = err
	}
	return payload, err
}
