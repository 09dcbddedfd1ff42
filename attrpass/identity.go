package attrpass

import (
	"net/http"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
)

// identityEntries bounds the identities a Pass remembers: about one per
// active session.
const identityEntries = 10000

// identityBytes bounds the memory the identities remembered hold (their
// footprint): each keeps its profile and header values, the signed
// assertion too, and 10,000 of users with 300 groups held 367 MiB. The
// sessions behind them may be long gone: a login is a new session, and
// nothing else forgets them.
const identityBytes = 16 << 20

// Identity is what the attribute pass sets on the requests of one session:
// each header key with its value, ready to be set without evaluating the
// expressions or signing the assertion again.
type Identity struct {
	prof   idp.Profile // what it was computed from
	fields []field
	signed time.Time // when the assertion was signed; zero without jwt
	// footprint estimates the bytes it holds: its profile's Footprint and
	// its header values.
	footprint int
}

type field struct {
	key   string
	value []string // shared by every request of the session: never modified
}

// Set sets the identity headers on h. The value slices are shared between
// requests; callers replace them, never modify them in place.
func (id *Identity) Set(h http.Header) {
	for _, f := range id.fields {
		h[f.key] = f.value
	}
}

// LongestLine is the identity header with the longest line as HTTP/1.1
// sends it ("Name: value", one line a value), and that line's length.
func (id *Identity) LongestLine() (name string, n int) {
	for _, f := range id.fields {
		for _, v := range f.value {
			if l := len(f.key) + len(": ") + len(v); l > n {
				name, n = f.key, l
			}
		}
	}
	return name, n
}

// For is Inject for the requests of one session: it returns the identity of
// prof, remembered under the session's key (its ID) so that the expressions
// run and the assertion is signed once per session rather than per request.
// A remembered identity is used only for the very same profile, only while
// its assertion has at least three quarters of its lifetime left, and never
// when a header's expression reads the clock (now()). The Pass is rebuilt on
// every configuration change, and its memory with it. An empty session key
// remembers nothing.
func (p *Pass) For(session string, prof *idp.Profile) (*Identity, error) {
	now := time.Time{}
	if p.jwt != nil {
		now = p.jwt.now()
	}
	remember := session != "" && !p.volatile
	if remember {
		id, ok := p.ids.Get(session)
		if ok && id.prof.Same(prof) && (p.jwt == nil || now.Sub(id.signed) < p.jwt.lifetime/4) {
			if !id.prof.SharesBacking(prof) {
				// The same profile in another copy: the session's cookie
				// against the login's profile the identity was first
				// computed from, a re-sealed cookie, a refresh that changed
				// nothing. Remembered with this copy, which the session's
				// next requests share, or every one of them compares all
				// the claims (6% of the proxy's CPU under load with an
				// OIDC login's two dozen claims).
				fresh := *id
				fresh.prof = *prof
				id = &fresh
				p.ids.Put(session, id, id.footprint)
			}
			return id, nil
		}
	}
	id, err := p.identity(prof, now)
	if err != nil {
		return nil, err
	}
	if remember {
		p.ids.Put(session, id, id.footprint)
	}
	return id, nil
}

func (p *Pass) identity(prof *idp.Profile, now time.Time) (*Identity, error) {
	id := &Identity{prof: *prof, fields: make([]field, 0, len(p.headers)+1)}
	for _, hd := range p.headers {
		v, err := p.value(hd, prof)
		if err != nil {
			return nil, err
		}
		if v != "" { // as in Inject: an empty identity header is worse than none
			id.fields = append(id.fields, field{hd.key, []string{v}})
		}
	}
	if p.jwt != nil {
		token, err := p.jwt.signAt(prof, now)
		if err != nil {
			return nil, err
		}
		id.fields = append(id.fields, field{p.jwt.key, []string{token}})
		id.signed = now
	}
	id.footprint = 128 + id.prof.Footprint()
	for _, f := range id.fields {
		id.footprint += 64 + len(f.value[0])
	}
	return id, nil
}
