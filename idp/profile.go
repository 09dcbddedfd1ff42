// Package idp holds the identity providers portcullis logs users in with (OIDC,
// OAuth2, SAML, LDAP) and the one identity type they all produce: Profile.
package idp

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Profile is what every identity provider produces after a login, what role
// mapping and attribute pass read, and what the session stores. The expr tags
// are the names that configuration expressions see.
type Profile struct {
	IdP           string         `json:"idp" expr:"idp"`
	Sub           string         `json:"sub" expr:"sub"`
	Email         string         `json:"email,omitempty" expr:"email"`
	EmailVerified bool           `json:"email_verified,omitempty" expr:"email_verified"`
	Username      string         `json:"username,omitempty" expr:"username"`
	FirstName     string         `json:"first_name,omitempty" expr:"first_name"`
	LastName      string         `json:"last_name,omitempty" expr:"last_name"`
	Name          string         `json:"name,omitempty" expr:"name"`
	Groups        []string       `json:"groups,omitempty" expr:"groups"`
	Roles         []string       `json:"roles,omitempty" expr:"roles"`
	Claims        map[string]any `json:"claims,omitempty" expr:"claims"`

	// missing is what Missing reports; set by the provider at login, and
	// kept neither in the session nor in what expressions see.
	missing map[string]string
}

// Footprint estimates the bytes p holds in memory: its strings with a
// header each, its groups, roles and claims. The caches that keep profiles
// (opened sessions, the attribute pass's identities) bound what they hold
// by it, since what a profile holds is not in proportion to anything they
// see: a sealed session is deflated, and 300 groups named by their DN hold
// ten times its cookie.
func (p *Profile) Footprint() int {
	n := 200 // the struct itself
	for _, v := range [...]string{p.IdP, p.Sub, p.Email, p.Username, p.FirstName, p.LastName, p.Name} {
		n += len(v)
	}
	for _, list := range [...][]string{p.Groups, p.Roles} {
		for _, v := range list {
			n += valueHeader + len(v)
		}
	}
	return n + claimFootprint(p.Claims)
}

// signInClaims are the ID token claims that say how and when the user
// signed in (OpenID Connect Core 2): the login's, which a refresh does not
// change (Core 12.2: a refreshed ID token's auth_time is the login's).
var signInClaims = []string{"auth_time", "acr", "amr"}

// KeepSignIn gives p, the profile a refresh read, the claims of login,
// the session's profile, that say how the user signed in, where p has
// none of its own: an IdP that answers a refresh without an ID token
// (Glewlwyd 2.7), or with one that leaves them out, has its user read
// from userinfo, which never carries them, and a rule reading claims.amr
// or claims.acr would otherwise change its answer at the first refresh.
// What the refresh says of them wins.
func (p *Profile) KeepSignIn(login *Profile) {
	for _, name := range signInClaims {
		v, ok := login.Claims[name]
		if !ok {
			continue
		}
		if _, has := p.Claims[name]; has {
			continue
		}
		if p.Claims == nil {
			p.Claims = map[string]any{}
		}
		p.Claims[name] = v
	}
}

// Same reports whether q holds what p holds, field for field. Sessions
// opened from the same cookie share their slices and claims, so the usual
// case costs a few comparisons of equal pointers; claims decoded afresh (a
// re-sealed cookie, the Redis store) are compared in depth.
func (p *Profile) Same(q *Profile) bool {
	return p.IdP == q.IdP && p.Sub == q.Sub && p.Email == q.Email && p.EmailVerified == q.EmailVerified &&
		p.Username == q.Username && p.FirstName == q.FirstName && p.LastName == q.LastName && p.Name == q.Name &&
		sameStrings(p.Groups, q.Groups) && sameStrings(p.Roles, q.Roles) && sameClaims(p.Claims, q.Claims)
}

// sameStrings is slices.Equal, which compares every element even of one
// and the same list: 1.5 µs for 1,000 groups, twice a request (the roles
// and the identity headers remembered), where a session's requests share
// their lists.
func sameStrings(a, b []string) bool {
	return sameBacking(a, b) || slices.Equal(a, b)
}

// SharesBacking reports whether p and q hold the same groups, roles and
// claims, not equal copies of them: Same's fast path. A cache that found q
// the Same as the p it remembered, but not sharing its backing (the profile
// of a session decoded afresh: a re-sealed cookie, a refresh, the login's
// own profile against its cookie's), remembers q instead, so that the
// session's next requests compare pointers rather than every claim again.
func (p *Profile) SharesBacking(q *Profile) bool {
	return sameBacking(p.Groups, q.Groups) && sameBacking(p.Roles, q.Roles) &&
		reflect.ValueOf(p.Claims).UnsafePointer() == reflect.ValueOf(q.Claims).UnsafePointer()
}

func sameBacking(a, b []string) bool {
	return len(a) == len(b) && reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

func sameClaims(a, b map[string]any) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer() || reflect.DeepEqual(a, b)
}

// valueHeader is what Footprint counts for a value besides its bytes: a
// string's header, or an interface's two words.
const valueHeader = 16

// claimFootprint is Footprint for a claim's value: as JSON decodes it (a
// session's), or as a provider made it, which need not be JSON's types: the
// SAML and LDAP providers give a multi-valued attribute as a []string, which
// an LDAP user's memberOf makes as long as their group list.
func claimFootprint(v any) int {
	switch v := v.(type) {
	case string:
		return valueHeader + len(v)
	case []string:
		n := 2 * valueHeader
		for _, e := range v {
			n += valueHeader + len(e)
		}
		return n
	case []any:
		n := 2 * valueHeader
		for _, e := range v {
			n += claimFootprint(e)
		}
		return n
	case map[string]any:
		n := 3 * valueHeader
		for k, e := range v {
			n += valueHeader + len(k) + claimFootprint(e)
		}
		return n
	case nil, bool, float64, int, int64:
		return valueHeader
	}
	return reflectFootprint(reflect.ValueOf(v))
}

// reflectFootprint is claimFootprint for the types it does not name (a
// json.Number, a map[string]string): its strings, slices and maps counted
// as claimFootprint counts them, anything else as one value.
func reflectFootprint(v reflect.Value) int {
	switch v.Kind() {
	case reflect.String:
		return valueHeader + v.Len()
	case reflect.Slice, reflect.Array:
		n := 2 * valueHeader
		for i := range v.Len() {
			n += reflectFootprint(v.Index(i))
		}
		return n
	case reflect.Map:
		n := 3 * valueHeader
		for it := v.MapRange(); it.Next(); {
			n += reflectFootprint(it.Key()) + reflectFootprint(it.Value())
		}
		return n
	case reflect.Interface:
		if v.IsNil() {
			return valueHeader
		}
		return reflectFootprint(v.Elem())
	}
	return valueHeader // a number, a boolean; a pointer is not followed
}

// Missing names the profile fields that access most often hangs on, email
// and groups, that the IdP's answer did not carry at all, each with the
// claim (or the SAML attributes) it is read from; nil when it carried both,
// or for LDAP, where the directory's word is final. An IdP that releases no
// email or no groups (a scope not asked for, an attribute not configured)
// otherwise shows only as an empty X-Email upstream, or everyone in the
// default role. A claim sent empty (no groups) is not missing.
func (p *Profile) Missing() map[string]string { return p.missing }

// missingFields are the profile fields Missing reports on.
var missingFields = []string{"email", "groups"}

// Flow is the state of one login between its start and the IdP's answer. The
// proxy seals it into a short-lived cookie bound to the browser; providers fill
// in what their protocol needs when the login starts and check it when it ends.
type Flow struct {
	// State is the random, single-use value the IdP echoes back (OIDC state,
	// SAML RelayState).
	State string `json:"st"`
	// IdP is the id of the provider the login was started at.
	IdP string `json:"idp"`
	// Redirect is where the browser goes after the login (already validated).
	Redirect string `json:"rd,omitempty"`
	// Nonce binds an OIDC ID token to this login.
	Nonce string `json:"n,omitempty"`
	// Verifier is the PKCE code verifier.
	Verifier string `json:"v,omitempty"`
	// RequestID is the ID of a SAML AuthnRequest, checked against InResponseTo.
	RequestID string `json:"rid,omitempty"`
	// Created is the Unix time the login started.
	Created int64 `json:"c"`
}

// Tokens are what an OIDC or OAuth2 login leaves behind for later use by the
// session: refreshing it and logging out at the IdP.
type Tokens struct {
	RefreshToken string `json:"rt,omitempty"`
	// IDToken is the OIDC ID token of the login (or of its last refresh),
	// kept only for an IdP entry with single_sign_out, whose logout sends it
	// back as id_token_hint: it is most of an OIDC session's size (Entra ID
	// and others put the user's groups in it, which the profile holds
	// already), and each request carries the cookie-store session.
	IDToken string `json:"it,omitempty"`
	// Sub is the ID token's sub where the ID token itself is not kept.
	Sub string `json:"sub,omitempty"`
	// Expiry is the Unix time the access token expires (0 when unknown).
	Expiry int64 `json:"exp,omitempty"`
	// SID is the IdP's session ID, which a logout from the IdP names: the
	// ID token's sid claim (OIDC back-channel logout), or the SAML
	// assertion's SessionIndex (kept with single_sign_out).
	SID string `json:"sid,omitempty"`
	// NameID is the SAML assertion's NameID, kept with single_sign_out to
	// name the user in the LogoutRequest exactly as the IdP did.
	NameID *SAMLNameID `json:"nid,omitempty"`
	// SessionEnd is the latest the session of this login may last, as the
	// IdP bounds it (a SAML AuthnStatement's SessionNotOnOrAfter, with the
	// clock skew allowed); zero when it does not. The session's own expiry keeps it, so it is not
	// stored here.
	SessionEnd time.Time `json:"-"`
}

// Subject is the IdP's own name for the user the tokens were issued to,
// which a logout from the IdP names: the sub of the OIDC ID token (Sub, or
// read from the ID token where it is kept), or the SAML NameID's value (kept with single_sign_out), trimmed as a profile's
// sub is; "" when the login left neither (OAuth2, LDAP, SAML without
// single_sign_out). It is the profile's sub unless the IdP entry maps sub
// to another claim (claims.sub) or attribute (attribute_mapping.uid).
func (t Tokens) Subject() string {
	if t.NameID != nil {
		return strings.TrimSpace(t.NameID.Value)
	}
	if t.Sub != "" {
		return t.Sub
	}
	return subjectOf(t.IDToken)
}

// keepIDToken keeps the ID token for an IdP entry with single_sign_out, or
// only its sub (Sub) for one without: a session made before the ID token
// was dropped loses it at its next refresh.
func (t *Tokens) keepIDToken(keep bool) {
	switch {
	case t.IDToken == "":
	case keep:
		t.Sub = "" // the ID token names the user
	default:
		t.Sub, t.IDToken = subjectOf(t.IDToken), ""
	}
}

// SessionKey is what a logout from the IdP finds the session by, "" when
// the login left no IdP session ID: the OIDC sid, or the SAML SessionIndex
// within its NameID (SAMLSessionKey).
func (t Tokens) SessionKey() string {
	if t.SID == "" || t.NameID == nil {
		return t.SID
	}
	return SAMLSessionKey(t.NameID.Value, t.SID)
}

// SAMLSessionKey is the SessionKey of a SAML session of the NameID value
// nameID with sessionIndex. An IdP need only make a SessionIndex unique
// among the sessions of one principal (SAML core 2.7.2), and a LogoutRequest
// names both: the same index under another NameID is another session. XML
// holds no NUL, so no two pairs give one key.
func SAMLSessionKey(nameID, sessionIndex string) string {
	return nameID + "\x00" + sessionIndex
}

// SAMLNameID is a SAML NameID as the IdP gave it: its value, format and
// qualifiers, which a LogoutRequest must repeat (SAML core 3.7.1).
type SAMLNameID struct {
	Value           string `json:"v"`
	Format          string `json:"f,omitempty"`
	NameQualifier   string `json:"nq,omitempty"`
	SPNameQualifier string `json:"spq,omitempty"`
	SPProvidedID    string `json:"spp,omitempty"`
}

// Redirector is an IdP that logs users in by sending the browser away and
// getting it back at a callback (OIDC, OAuth2, SAML).
type Redirector interface {
	// LoginURL fills in the parts of f that the protocol needs (nonce, PKCE
	// verifier, request ID) and returns the URL to send the browser to.
	LoginURL(f *Flow) (string, error)
	// Complete checks the IdP's answer in r against f and returns the user.
	Complete(r *http.Request, f *Flow) (*Profile, *Tokens, error)
}

// PasswordChecker is an IdP that checks a username and password itself (LDAP).
type PasswordChecker interface {
	// Authenticate checks password for username and returns the user. When
	// allow is not nil it is asked first, with the account the username
	// names at the IdP (an LDAP entry's DN): an error from it ends the check
	// with that error, before the password is tried. Other spellings of one
	// account (uid or mail, any case) name the same account.
	Authenticate(r *http.Request, username, password string, allow func(account string) error) (*Profile, error)
}

// ErrNotReady means the provider could not reach its IdP yet (discovery or
// metadata failed); the login should be answered with 503 and retried later.
var ErrNotReady = errors.New("identity provider not ready")

// ErrInvalidCredentials means a password login was refused by the directory.
var ErrInvalidCredentials = errors.New("invalid username or password")

// OIDCProfile is the profile a login at the OIDC or OAuth2 entry c (its
// preset filled in) would produce from claims, by the function the login
// uses (mapClaims). An error is one the login would fail with.
// `portcullis explain --claims` uses it.
func OIDCProfile(c Config, claims map[string]any) (*Profile, error) {
	return c.mapClaims(claims, claimMapping(c.Claims))
}

// mapClaims is what a login or a refresh at the OIDC or OAuth2 entry c makes
// of the IdP's claims: first what the preset does to them (Entra ID's group
// overage refuses the login, Hugging Face's orgs become groups; claims may be
// changed), then mapping; a profile without a subject is refused. One
// function for the login, the refresh and explain, so that explain cannot
// show a login that never happens.
func (c Config) mapClaims(claims map[string]any, mapping map[string]string) (*Profile, error) {
	if err := c.checkPresetClaims(claims); err != nil {
		return nil, err
	}
	p := c.profile(claims, mapping)
	if p.Sub == "" {
		return nil, fmt.Errorf("map claims: no subject in claim %q", mapping["sub"])
	}
	return p, nil
}
