// Package session keeps logged-in browsers: the Session type, the stores that
// keep sessions between requests (a sealed, chunked cookie by default), and the
// short-lived sealed cookies that carry a login flow from its start at the
// proxy to the identity provider's answer.
package session

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/portcullis-proxy/portcullis/idp"
)

// Defaults for the session config block; the caller applies them before
// building Options (an IdleTimeout of 0 means no idle timeout).
const (
	DefaultCookieName  = "portcullis"
	DefaultLifetime    = 12 * time.Hour
	DefaultIdleTimeout = 2 * time.Hour
)

// KeySize is the length in bytes every session key must have.
const KeySize = 32

// hostPrefix makes browsers accept a cookie only when it is Secure, has Path=/
// and no Domain, so a sibling domain cannot set or shadow it.
const hostPrefix = "__Host-"

// Options configure sessions (from the `session:` config block, already
// validated by the caller).
type Options struct {
	// CookieName is the base name, e.g. "portcullis" (DefaultCookieName when empty).
	CookieName string
	// Keys are each exactly KeySize bytes; the first seals, all open (rotation).
	Keys [][]byte
	// Secure is set when public_url is https: the cookie names get the
	// __Host- prefix and the Secure flag.
	Secure bool
	// Lifetime is the absolute lifetime of a session (DefaultLifetime when 0).
	Lifetime time.Duration
	// IdleTimeout ends a session that saw no request for this long (0 = none).
	IdleTimeout time.Duration
	// Audience is public_url's origin. Everything sealed is bound to it: a
	// deployment given the same keys (sidecars of several applications
	// sharing one Secret) cannot open another's cookies, which carry roles
	// mapped for that other application. Empty (tests, tools): unbound.
	Audience string
	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
	// Logger receives debug notes on refused cookies and warnings when a
	// memory bound forgets entries early; nil means slog.Default().
	Logger *slog.Logger
}

// Name is the session cookie's full name (with __Host- when Secure).
func (o Options) Name() string {
	if o.Secure {
		return hostPrefix + o.base()
	}
	return o.base()
}

// SignedInName is the name of the cookie a login leaves in the browser for
// a short while, so that the proxy can tell a browser sent to sign in again
// at once (a login loop) from one signing in (with __Host- when Secure).
func (o Options) SignedInName() string { return o.Name() + signedInSuffix }

const signedInSuffix = "_signed_in"

// Owns reports whether a cookie name belongs to portcullis (the session, its
// chunks, login flow cookies, the signed-in mark, the device cookie), with
// or without the __Host- or __Secure- prefix, so the proxy can remove it
// from the Cookie header sent upstream (SPEC invariant 3). It does not
// allocate.
func (o Options) Owns(cookieName string) bool {
	name, host := strings.CutPrefix(cookieName, hostPrefix)
	if !host {
		name = strings.TrimPrefix(name, securePrefix)
	}
	rest, ok := strings.CutPrefix(name, o.base())
	if !ok {
		return false
	}
	if rest == "" || strings.HasPrefix(rest, "_login_") || rest == signedInSuffix || rest == deviceSuffix {
		return true
	}
	// Chunk names: "_1" .. "_99", wider than the chunks we write so that a
	// leftover from another configuration never leaks upstream either.
	digits, ok := strings.CutPrefix(rest, "_")
	if !ok || len(digits) == 0 || len(digits) > 2 {
		return false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return false
		}
	}
	return true
}

// audienceTag is what a sealed session carries of o.Audience: 48 bits of
// its SHA-256, eight characters, as every byte of the cookie goes back with
// every request. Deployments that share keys are few, and one of them
// forging a collision needs the keys anyway.
func (o Options) audienceTag() string {
	if o.Audience == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(o.Audience))
	return base64.RawURLEncoding.EncodeToString(sum[:6])
}

func (o Options) base() string {
	if o.CookieName == "" {
		return DefaultCookieName
	}
	return o.CookieName
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o Options) lifetime() time.Duration {
	if o.Lifetime <= 0 {
		return DefaultLifetime
	}
	return o.Lifetime
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// Session is one logged-in browser.
type Session struct {
	// ID is random (128 bits) and URL-safe; revocation and logging use it.
	ID string
	// Profile is the user, with roles already mapped.
	Profile idp.Profile
	// Tokens are what the IdP left for refreshing the session and logging out.
	Tokens idp.Tokens
	// Created is when the login finished.
	Created time.Time
	// Expires is Created + Lifetime; the session is refused after it.
	Expires time.Time
	// LastSeen is the last recorded activity, for the idle timeout.
	LastSeen time.Time
	// Refreshed is when the IdP last confirmed the user (the login, then
	// each refresh with the refresh token).
	Refreshed time.Time

	// stored is set on sessions a server-side store loaded: saving one
	// again only updates it, so that a session ended meanwhile (logout on
	// another replica) is never written back to life.
	stored bool
	// openedSubject is Tokens.Subject, the IdP's own name for the user
	// (by which a back-channel logout token's sub or a SAML LogoutRequest's
	// NameID finds the session; "" when the tokens name none), worked out
	// once when the cookie store opens the session from its cookie: the
	// store checks it on every request against the users logged out at
	// their IdP, and reading it from the ID token takes a few microseconds.
	// The sessions it opens are shared and never modified; copies whose
	// Tokens change must not rely on it.
	openedSubject string
}

// New starts a session for a user who just logged in. Times are kept to the
// second, the precision the cookie stores.
func New(p idp.Profile, t idp.Tokens, o Options) *Session {
	now := o.now().Truncate(time.Second)
	return &Session{
		ID:        randomToken(),
		Profile:   p,
		Tokens:    t,
		Created:   now,
		Expires:   now.Add(o.lifetime()),
		LastSeen:  now,
		Refreshed: now,
	}
}

// NewState returns a fresh login state: 128 random bits, URL-safe.
func NewState() string {
	return randomToken()
}

func randomToken() string {
	var b [16]byte
	// crypto/rand.Read never returns an error; it crashes the program
	// instead when the system's randomness is broken.
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// codecs derives, from every configured key, a pair of HMAC and AES keys with
// HKDF under the given purpose, so that sessions and login flows never share
// key material even though they come from the same configured keys.
func codecs(keys [][]byte, purpose string, maxAge time.Duration, maxLength int, sz securecookie.Serializer) ([]securecookie.Codec, error) {
	pairs := make([][]byte, 0, 2*len(keys))
	for i, key := range keys {
		hashKey, err := hkdf.Key(sha256.New, key, nil, "portcullis "+purpose+" hash", 32)
		if err != nil {
			return nil, fmt.Errorf("derive %s hash key %d: %w", purpose, i, err)
		}
		blockKey, err := hkdf.Key(sha256.New, key, nil, "portcullis "+purpose+" block", 32)
		if err != nil {
			return nil, fmt.Errorf("derive %s block key %d: %w", purpose, i, err)
		}
		pairs = append(pairs, hashKey, blockKey)
	}
	cs := securecookie.CodecsFromPairs(pairs...)
	for _, c := range cs {
		sc := c.(*securecookie.SecureCookie)
		// A little slack over the lifetime so that our own clock check,
		// which honours Options.Now, is the one that decides.
		sc.MaxAge(int((maxAge + time.Minute) / time.Second))
		sc.MaxLength(maxLength)
		sc.SetSerializer(sz)
	}
	return cs, nil
}

func checkKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return fmt.Errorf("no session keys")
	}
	for i, k := range keys {
		if len(k) != KeySize {
			return fmt.Errorf("session key %d: %d bytes, want %d", i, len(k), KeySize)
		}
	}
	return nil
}
