package proxy

import (
	"errors"
	"slices"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/rolemap"
)

// authzEntries and authzBytes bound the sessions a Handler remembers the
// roles of, and the memory the profiles they were worked out from hold, as
// the attribute pass bounds its identities: about one per active session.
const (
	authzEntries = 10000
	authzBytes   = 16 << 20
)

// sessionAuthz remembers what each session's profile comes to under one
// configuration: the roles its role_mapping gives it, or why its IdP
// entry's admission rules (allowed_groups, allowed_email_domains…) or the
// role mapping now refuse it. A session keeps the roles mapped when it was
// made, by whatever configuration was live then; a reload (or a restart)
// that takes a role or the access away must take it from the sessions made
// before it too, at once, or a demoted admin stays admin until the session
// ends. Every Handler has its own, so a reload starts afresh; the
// expressions then run once per session rather than on every request.
type sessionAuthz = idp.Remembered[*authzEntry]

type authzEntry struct {
	prof    idp.Profile // what it was worked out from, without roles
	roles   []string    // shared by every request of the session: never modified
	refused string      // why the session is no session under this configuration; "" when it is one
	// verified is the profile's email_verified as this configuration's
	// admission reads it (trust_email given or taken away since the
	// login), for allow_if and the headers to see what admission saw.
	verified bool
}

func newSessionAuthz() *sessionAuthz { return idp.NewRemembered[*authzEntry](authzEntries, authzBytes) }

// footprint is the bytes e holds, most of them its profile's.
func (e *authzEntry) footprint() int { return 64 + e.prof.Footprint() }

// authorize is s with the roles this configuration maps its profile to,
// or nil when this configuration would not let its user sign in: the
// session is then no session, as one of an IdP no longer configured
// (loadSession), and its user signs in again, where the login's own
// refusal says why. s is the caller's copy; its profile's roles are
// replaced, never modified in place. When a role rule reads the clock
// (now(): a role until a date), the roles are mapped at every request.
func (h *Handler) authorize(s *session.Session) *session.Session {
	key := s.Profile
	key.Roles = nil
	e, ok := h.authz.Get(s.ID)
	switch {
	case h.roles.ReadsClock(), !ok || !e.prof.Same(&key):
		e = h.reauthorize(s, key)
	case !e.prof.SharesBacking(&key):
		// The same profile decoded afresh: a re-sealed cookie (Touch), a
		// refresh at which the IdP said what it said before. Remembered
		// with this copy's groups and claims, which the session's next
		// requests share, so that they compare pointers rather than every
		// group and claim again (a quarter of a millisecond a request for
		// 1,000 groups named by their DN, as long as the entry lasts).
		fresh := &authzEntry{prof: key, roles: e.roles, refused: e.refused, verified: e.verified}
		h.authz.Put(s.ID, fresh, fresh.footprint())
	}
	if e.refused != "" {
		return nil
	}
	if !slices.Equal(s.Profile.Roles, e.roles) {
		s.Profile.Roles = e.roles
	}
	s.Profile.EmailVerified = e.verified
	return s
}

// sameRoles is roles, mapped just now, as the session's own slice when they
// are what it holds: the attribute pass remembers the session's identity
// with the roles its requests bring, and one that brought an equal copy
// would be remembered again (under its lock), at every request where the
// roles are mapped at every request (a role rule reading the clock).
func sameRoles(session, roles []string) []string {
	if slices.Equal(session, roles) {
		return slices.Clip(session) // the same array and length: still shared; no room for an append to write into
	}
	return slices.Clip(roles)
}

// reauthorize works out and remembers what s's profile, key without its
// roles, comes to under this configuration.
func (h *Handler) reauthorize(s *session.Session, key idp.Profile) *authzEntry {
	e := &authzEntry{prof: key}
	p := key // Admit sets email_verified as this configuration reads it (trust_email); the key stays as the session has it
	if reason := h.admit(&p); reason != "" {
		e.refused = reason
	} else if roles, err := h.roles.Map(&p); errors.Is(err, rolemap.ErrNoRole) {
		e.refused = "Your account has no role in this application."
	} else if err != nil {
		e.refused = "Your roles could not be determined."
	} else if p.Roles = sameRoles(s.Profile.Roles, roles); h.unpassable(s.ID, &p) != nil {
		// As the login would refuse it now (establish): a reload gave
		// attribute_pass a header that this profile's values cannot fill.
		// None rather than a session whose every request fails with 500;
		// its user signs in again and learns why.
		e.refused = "Your account's details cannot be passed on to this application."
	} else {
		e.roles = p.Roles
	}
	e.verified = p.EmailVerified
	if h.roles.ReadsClock() {
		return e // neither remembered nor logged: it is worked out at every request
	}
	// At debug level: a session worked out again (forgotten past the bound,
	// or too large to remember) logs again, at every request for some; the
	// login that a refused user is sent to writes the audit line.
	switch {
	case e.refused != "":
		h.log.Debug("session no longer admitted by the configuration; treated as none",
			"idp", key.IdP, "sub", key.Sub, "reason", e.refused)
	case !slices.Equal(s.Profile.Roles, e.roles):
		h.log.Debug("session's roles mapped again under the configuration",
			"idp", key.IdP, "sub", key.Sub, "was", s.Profile.Roles, "roles", e.roles)
	}
	h.authz.Put(s.ID, e, e.footprint())
	return e
}
