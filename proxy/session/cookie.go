package session

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/portcullis-proxy/portcullis/idp"
)

// Store keeps sessions. The cookie store is the default; a Redis store comes
// later with the same interface.
type Store interface {
	// Load returns the request's session, or nil when there is none. A cookie
	// that fails to open (tampered, wrong key, truncated, expired, idle too
	// long, revoked) is no session: nil, nil (SPEC invariant 5). An error is
	// only for a store that cannot answer. The session returned is the
	// caller's own copy, but its slices and maps may be shared with other
	// requests: replace them, never modify them in place.
	Load(r *http.Request) (*Session, error)
	// Save writes s (sets cookies; chunked when large).
	Save(w http.ResponseWriter, r *http.Request, s *Session) error
	// Absent is why Load finds no session in r (Absence). An error is only
	// for a store that cannot answer.
	Absent(r *http.Request) (Absence, error)
	// Delete ends s: clears every cookie of it and revokes its ID so the same
	// cookie replayed later is refused. s may be nil to only clear cookies.
	Delete(w http.ResponseWriter, r *http.Request, s *Session) error
	// Touch records activity for the idle timeout. It re-seals only when
	// LastSeen is older than min(idle/10, 1m), so most requests write nothing.
	Touch(w http.ResponseWriter, r *http.Request, s *Session) error
}

// Absence is why a request has no session: what tells a browser that lost
// its session for no fault of its cookie (Ended) from one whose cookie
// failed, and whose fault that may be.
type Absence int

const (
	// NoCookie is a request without a session cookie.
	NoCookie Absence = iota
	// Malformed is a session cookie that is no sealed value at all: cut
	// short or altered on the way or in the browser, or made up; or more
	// of them than a request may carry.
	Malformed
	// Unopened is a sealed value that opens with none of the keys: sealed
	// with others (replicas with different session.keys, a key removed
	// while its sessions lived), or for another public_url. With the Redis store, also a session ID
	// that opens, whose session Redis does not have and the store did not
	// end: replicas that do not share one Redis, or a session removed
	// behind the proxy's back.
	Unopened
	// Ended is a session cookie that opens to a session that has ended:
	// logged out, revoked, expired, idle too long.
	Ended
)

// ErrTooLarge is a session that does not fit the cookie store's cookies:
// a profile with thousands of groups or large claims. It will not fit the
// next time either; session.store redis holds any size.
var ErrTooLarge = errors.New("session too large for the cookie store")

const (
	// chunkSize keeps every cookie, name and attributes included, under the
	// 4096 bytes browsers accept.
	chunkSize = 3800
	// maxChunks bounds a session to about 30 KB of cookies; Save refuses more.
	maxChunks = 8
	// maxValuesPerName and maxCandidates bound the work a request with
	// duplicated cookie names can cause; beyond them the request has no session.
	maxValuesPerName = 3
	maxCandidates    = 4
	// cacheEntries and cacheBytes bound the cache of opened sessions: about
	// 10,000 typical sessions, fewer big ones (heldBytes: a session with 300
	// groups holds about 17 KB, 960 of them).
	cacheEntries = 10000
	cacheBytes   = 16 << 20
	// revokedEntries bounds the set of revoked session IDs; beyond it, sessions
	// expiring no later than the ones forgotten are refused too.
	revokedEntries = 100000
	// sessionCodecName is bound into every session seal; flows use another,
	// so one kind of cookie never opens as the other.
	sessionCodecName = "portcullis session"
	// wireVersion changes when the sealed layout does; older cookies then
	// simply stop opening (users log in again).
	wireVersion = 1
)

// CookieStore keeps the whole session in the browser, sealed (encrypted and
// authenticated) with the session keys and split over several cookies when
// large. Revocation and the cache of opened sessions live in memory, so a
// logout is only known to the process that handled it.
type CookieStore struct {
	opts   Options
	aud    string // opts.audienceTag()
	name   string
	codecs []securecookie.Codec // open cookies, at most maxChunks of them
	// sealer seals with the first key, as codecs[0], without its bound on
	// length, so that Save measures a session too large for the cookies
	// itself and says so (ErrTooLarge) instead of a codec's error.
	sealer  securecookie.Codec
	revoked *expiringSet
	users   *userRevocations // whole users ended by back-channel logout (revoke_user.go)
	cache   *openedCache     // nil disables caching
}

var _ Store = (*CookieStore)(nil)

// NewCookieStore builds the cookie session store; it fails when the keys are
// missing or not KeySize bytes long.
func NewCookieStore(o Options) (*CookieStore, error) {
	if err := checkKeys(o.Keys); err != nil {
		return nil, fmt.Errorf("session cookie store: %w", err)
	}
	cs, err := codecs(o.Keys, "session", o.lifetime(), maxChunks*chunkSize+64, compactJSON{})
	if err != nil {
		return nil, fmt.Errorf("session cookie store: %w", err)
	}
	sealer, err := codecs(o.Keys[:1], "session", o.lifetime(), 0, compactJSON{})
	if err != nil {
		return nil, fmt.Errorf("session cookie store: %w", err)
	}
	return &CookieStore{
		opts:    o,
		aud:     o.audienceTag(),
		name:    o.Name(),
		codecs:  cs,
		sealer:  sealer[0],
		revoked: newExpiringSet(revokedEntries, "revoked sessions", o.logger()),
		users:   newUserRevocations(o.lifetime(), o.logger()),
		cache:   newOpenedCache(cacheEntries, cacheBytes),
	}, nil
}

// Inherit carries over the session IDs and the users revoked so far by prev,
// the store this one replaces on a config reload, so that a reload does not
// make logged-out cookies valid again. A longer session.lifetime makes the
// users' records last longer too (userRevocations.lengthen); a revoked ID
// needs no such care, as it is kept until its session's own expiry, sealed
// in the cookie. Call it before the store serves requests.
func (st *CookieStore) Inherit(prev *CookieStore) {
	if prev != nil {
		st.revoked = prev.revoked
		st.users = prev.users
		st.users.lengthen(st.opts.lifetime())
	}
}

// wireSession is the sealed form of a Session: short keys and Unix seconds,
// since every byte is sent back by the browser on every request.
type wireSession struct {
	V        int         `json:"v"`
	ID       string      `json:"id"`
	Profile  idp.Profile `json:"p"`
	Tokens   idp.Tokens  `json:"t,omitzero"`
	Created  int64       `json:"c"`
	Expires  int64       `json:"e"`
	LastSeen int64       `json:"l"`
	// Refreshed is 0 in cookies sealed before refreshes existed.
	Refreshed int64 `json:"r,omitempty"`
	// Aud is the audience tag of the deployment that sealed the session
	// (Options.audienceTag); empty in sessions sealed before there was one.
	Aud string `json:"a,omitempty"`
}

// toWire is the sealed form of s at the deployment whose audience tag is aud.
func toWire(s *Session, aud string) wireSession {
	return wireSession{
		V: wireVersion, ID: s.ID, Profile: s.Profile, Tokens: s.Tokens,
		Created: s.Created.Unix(), Expires: s.Expires.Unix(), LastSeen: s.LastSeen.Unix(),
		Refreshed: unixOrZero(s.Refreshed), Aud: aud,
	}
}

// opens says whether w is a session of this layout sealed for the deployment
// whose audience tag is aud. One sealed with no tag, by a version before
// sessions carried one, opens wherever its keys do until it expires: an
// update signs nobody out, even while replicas of both versions serve.
func (w *wireSession) opens(aud string) bool {
	return w.V == wireVersion && (w.Aud == "" || w.Aud == aud)
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func (w wireSession) session() *Session {
	p := w.Profile
	// Clipped, so that an append by one request can never write into a
	// backing array another request shares through the cache.
	p.Groups, p.Roles = slices.Clip(p.Groups), slices.Clip(p.Roles)
	s := &Session{
		ID: w.ID, Profile: p, Tokens: w.Tokens,
		Created: time.Unix(w.Created, 0), Expires: time.Unix(w.Expires, 0), LastSeen: time.Unix(w.LastSeen, 0),
		Refreshed: time.Unix(w.Refreshed, 0),
	}
	if w.Refreshed == 0 {
		s.Refreshed = s.Created
	}
	return s
}

// Load returns the request's session, or nil when it has none. Duplicate
// cookie names (cookie tossing from a sibling domain, possible without the
// __Host- prefix) are resolved fail-closed: every combination of the values
// present is tried, within a small bound, and the request has a session only
// when exactly one of them opens. Too many values means no session.
func (st *CookieStore) Load(r *http.Request) (*Session, error) {
	found, _ := st.find(r)
	if found == nil {
		return nil, nil
	}
	s := *found
	return &s, nil
}

// Absent is why r has no session: its cookie opens to one that was
// revoked (a logout, a back-channel logout), expired or idled out; or it
// does not open, or is not there.
func (st *CookieStore) Absent(r *http.Request) (Absence, error) {
	_, why := st.find(r)
	return why, nil
}

// find opens r's session cookies: found is the one session they open to
// that has not ended, shared through the cache; why, when there is none,
// the likeliest reason among the values tried, Ended first.
func (st *CookieStore) find(r *http.Request) (found *Session, why Absence) {
	lines := r.Header["Cookie"]
	if len(lines) == 0 {
		return nil, NoCookie
	}
	var j jar
	j.collect(lines, st.name)
	if j.count[0] == 0 {
		return nil, NoCookie
	}
	if j.overflow {
		st.opts.logger().Debug("session: too many duplicate session cookies; treating as no session")
		return nil, Malformed
	}
	now := st.opts.now()
	candidates := 0
	for _, head := range j.values[0][:j.count[0]] {
		n, first := splitHead(head)
		// Try each combination of the chunk values present (one each,
		// normally), counting each against the bound.
		var pick [maxChunks]int
		for {
			candidates++
			if candidates > maxCandidates {
				return st.refuse("too many candidate session cookies", Malformed)
			}
			key, ok := j.key(first, n, &pick)
			if !ok {
				why = max(why, Malformed) // a chunk is missing: this head opens nothing
				break
			}
			s := st.cache.get(key)
			if s == nil {
				value := j.assemble(first, n, &pick)
				if s = st.unseal(key, value, now); s == nil {
					why = max(why, unopened(value))
				}
			}
			switch {
			case s == nil:
			case !st.valid(s, now):
				why = Ended
			case found != nil:
				return st.refuse("two different session cookies open", Unopened)
			default:
				found = s
			}
			if !j.next(n, &pick) {
				break
			}
		}
	}
	return found, why
}

// refuse is find's answer to cookies it will not choose between: no
// session, for the reason why.
func (st *CookieStore) refuse(reason string, why Absence) (*Session, Absence) {
	st.opts.logger().Debug("session: refusing session cookies", "reason", reason)
	return nil, why
}

// unopened is why a value that no key opens failed: Unopened when it has
// the shape of a sealed value (base64 of a timestamp, the sealed payload
// and a MAC of the size the keys make), which another deployment's keys
// make; Malformed when not, which only a value cut short, altered or made
// up has. securecookie answers both with the same error (ErrMacInvalid).
func unopened(value string) Absence {
	b, err := base64.URLEncoding.DecodeString(value)
	if err != nil {
		return Malformed
	}
	// The timestamp is digits and the payload base64: neither holds a
	// '|', which only the MAC's random bytes may.
	parts := bytes.SplitN(b, []byte("|"), 3)
	if len(parts) != 3 || len(parts[2]) != sha256.Size {
		return Malformed
	}
	if _, err := strconv.ParseUint(string(parts[0]), 10, 63); err != nil {
		return Malformed
	}
	if _, err := base64.URLEncoding.DecodeString(string(parts[1])); err != nil {
		return Malformed
	}
	return Unopened
}

// unseal opens the sealed value whose hash is key and caches the session it
// holds; nil when it does not open. The session is shared through the cache
// and must not be modified.
func (st *CookieStore) unseal(key [sha256.Size]byte, value string, now time.Time) *Session {
	var w wireSession
	if err := securecookie.DecodeMulti(sessionCodecName, value, &w, st.codecs...); err != nil {
		st.opts.logger().Debug("session: cookie does not open", "error", err)
		return nil
	}
	if !w.opens(st.aud) || w.ID == "" {
		return nil
	}
	s := w.session()
	s.openedSubject = s.Tokens.Subject()
	st.cache.put(key, s, heldBytes(s), now)
	return s
}

// valid checks what can change while the sealed value stays the same: the
// clock and revocation.
func (st *CookieStore) valid(s *Session, now time.Time) bool {
	if !now.Before(s.Expires) || !now.Before(s.Created.Add(st.opts.lifetime())) {
		return false // a shortened lifetime applies to existing sessions too
	}
	if idle := st.opts.IdleTimeout; idle > 0 && now.Sub(s.LastSeen) > idle {
		return false
	}
	return !st.revoked.Has(s.ID, s.Expires, now) && !st.users.ended(s)
}

// Save seals s into the session cookie, split into chunks when large, and
// clears chunks left over from a larger earlier session.
func (st *CookieStore) Save(w http.ResponseWriter, r *http.Request, s *Session) error {
	if s == nil || s.ID == "" {
		return errors.New("save session: no session ID")
	}
	now := st.opts.now()
	maxAge := int(s.Expires.Sub(now) / time.Second)
	if maxAge <= 0 {
		return fmt.Errorf("save session %s: already expired", s.ID)
	}
	wire := toWire(s, st.aud)
	sealed, err := st.sealer.Encode(sessionCodecName, wire)
	if err != nil {
		return fmt.Errorf("save session %s: seal: %w", s.ID, err)
	}
	n := (len(sealed) + chunkSize - 1) / chunkSize
	if n > maxChunks {
		return fmt.Errorf("save session %s: sealed session is %d bytes, more than %d cookies of %d bytes: %w",
			s.ID, len(sealed), maxChunks, chunkSize, ErrTooLarge)
	}
	for i := range n {
		piece := sealed[i*chunkSize : min((i+1)*chunkSize, len(sealed))]
		if i == 0 && n > 1 {
			piece = fmt.Sprintf("%d~%s", n, piece)
		}
		http.SetCookie(w, sessionCookie(st.opts, chunkName(st.name, i), piece, maxAge))
	}
	expireChunks(w, r, st.opts, st.name, n)
	// Not cached here: the next request opens it once, so the cache only
	// ever holds exactly what a cookie decodes to, sharing nothing with s.
	return nil
}

// Delete clears every cookie of the session present in r and revokes s's ID
// until it would have expired anyway.
func (st *CookieStore) Delete(w http.ResponseWriter, r *http.Request, s *Session) error {
	http.SetCookie(w, sessionCookie(st.opts, st.name, "", -1))
	expireChunks(w, r, st.opts, st.name, 1)
	if s == nil || s.ID == "" {
		return nil
	}
	now := st.opts.now()
	if now.Before(s.Expires) {
		st.revoked.Add(s.ID, s.Expires, now)
	}
	st.cache.drop(s.ID)
	return nil
}

// Touch records activity on s for the idle timeout, re-sealing the cookie
// only when LastSeen is older than min(idle/10, 1m).
func (st *CookieStore) Touch(w http.ResponseWriter, r *http.Request, s *Session) error {
	idle := st.opts.IdleTimeout
	if idle <= 0 || s == nil {
		return nil
	}
	now := st.opts.now()
	if now.Sub(s.LastSeen) < min(idle/10, time.Minute) {
		return nil
	}
	s.LastSeen = now.Truncate(time.Second)
	if err := st.Save(w, r, s); err != nil {
		return fmt.Errorf("touch: %w", err)
	}
	return nil
}

// sessionCookie is a session cookie (or one of its chunks) as both stores
// write it.
func sessionCookie(o Options, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: o.Secure, SameSite: http.SameSiteLaxMode,
	}
}

// expireChunks expires the session cookies r carries from chunk from on;
// without a request, every chunk name, so that callers clear too much rather
// than too little.
func expireChunks(w http.ResponseWriter, r *http.Request, o Options, name string, from int) {
	var carried [maxChunks]bool
	if r == nil {
		for i := range carried {
			carried[i] = true
		}
	} else {
		var j jar
		j.collect(r.Header["Cookie"], name)
		for i, c := range j.count {
			carried[i] = c > 0
		}
	}
	for i := from; i < maxChunks; i++ {
		if carried[i] {
			http.SetCookie(w, sessionCookie(o, chunkName(name, i), "", -1))
		}
	}
}

// chunkName is the name of chunk i: the session cookie's own name for the
// first, then name_1, name_2...
func chunkName(name string, i int) string {
	if i == 0 {
		return name
	}
	return fmt.Sprintf("%s_%d", name, i)
}

// splitHead reads the chunk count marker ("3~...") off the first cookie's
// value. Sealed values are base64 and never contain '~'.
func splitHead(v string) (n int, rest string) {
	if len(v) > 2 && v[1] == '~' && v[0] >= '2' && v[0] <= '0'+maxChunks {
		return int(v[0] - '0'), v[2:]
	}
	return 1, v
}

// jar holds the values of the session's cookies (the first under index 0,
// chunk i under index i) found in a request's Cookie headers, without
// allocating: the values point into the header strings.
type jar struct {
	values   [maxChunks][maxValuesPerName]string
	count    [maxChunks]int
	overflow bool
}

// collect scans Cookie header lines for name and its chunk names. The scan is
// linear in the header's size and keeps at most maxValuesPerName distinct
// values per name, so hundreds of cookies cost no more than reading them.
func (j *jar) collect(lines []string, name string) {
	for _, line := range lines {
		for part := range strings.SplitSeq(line, ";") {
			k, v, ok := cookiePair(part)
			if !ok {
				continue
			}
			rest, ok := strings.CutPrefix(k, name)
			if !ok {
				continue
			}
			i := 0
			if rest != "" {
				if len(rest) != 2 || rest[0] != '_' || rest[1] < '1' || rest[1] >= '0'+maxChunks {
					continue
				}
				i = int(rest[1] - '0')
			}
			j.add(i, v)
		}
	}
}

// cookiePair is the name and value of one name=value part of a Cookie
// line, read as net/http's readCookies reads it: the part and the name
// trimmed of spaces and tabs (textproto.TrimString: RFC 6265's WSP; a
// server's reader never leaves CR or LF in a header value), and of
// nothing else. A name led by a no-break space or another Unicode space is
// another cookie to a browser, one that the __Host- prefix does not keep a
// sibling subdomain or a script from setting: it is not this one.
func cookiePair(part string) (name, value string, ok bool) {
	name, value, ok = strings.Cut(textproto.TrimString(part), "=")
	return textproto.TrimString(name), value, ok
}

// add keeps v as a value of cookie i unless it is empty or already kept.
func (j *jar) add(i int, v string) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	if v == "" || slices.Contains(j.values[i][:j.count[i]], v) {
		return
	}
	if j.count[i] == maxValuesPerName {
		j.overflow = true
		return
	}
	j.values[i][j.count[i]] = v
	j.count[i]++
}

// key is the cache key of the value assemble would return, computed without
// assembling it; ok is false when a chunk is missing.
func (j *jar) key(first string, n int, pick *[maxChunks]int) (key [sha256.Size]byte, ok bool) {
	if n == 1 {
		return valueKey(first), true
	}
	for i := 1; i < n; i++ {
		if j.count[i] == 0 {
			return key, false
		}
	}
	var pieces [maxChunks]string
	pieces[0] = first
	for i := 1; i < n; i++ {
		pieces[i] = j.values[i][pick[i]]
	}
	return valueKey(pieces[:n]...), true
}

// assemble joins the first chunk's body with the picked value of each of the
// n-1 chunks after it; key has checked that none is missing.
func (j *jar) assemble(first string, n int, pick *[maxChunks]int) string {
	if n == 1 {
		return first
	}
	size := len(first)
	for i := 1; i < n; i++ {
		size += len(j.values[i][pick[i]])
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteString(first)
	for i := 1; i < n; i++ {
		b.WriteString(j.values[i][pick[i]])
	}
	return b.String()
}

// next advances pick to the next combination of chunk values, like an
// odometer; false when all have been tried.
func (j *jar) next(n int, pick *[maxChunks]int) bool {
	for i := 1; i < n; i++ {
		if pick[i]+1 < j.count[i] {
			pick[i]++
			return true
		}
		pick[i] = 0
	}
	return false
}
