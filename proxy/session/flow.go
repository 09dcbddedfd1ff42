package session

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/portcullis-proxy/portcullis/idp"
)

// FlowLifetime is how long a login may take between its start and the IdP's
// answer.
const FlowLifetime = 10 * time.Minute

const (
	// flowCodecName is bound into every flow seal, distinct from sessions'.
	flowCodecName = "portcullis login flow"
	// usedStates bounds how many finished login states are remembered.
	usedStates = 100000
	// maxOpenFlows is how many unfinished logins a browser may hold at
	// once: each is a cookie of about 450 bytes for FlowLifetime.
	maxOpenFlows = 8
)

// Reasons Finish refuses a login's answer; their text is short enough for a
// 400 page.
var (
	ErrFlowMissing = errors.New("no login in progress in this browser for this state")
	ErrFlowInvalid = errors.New("login state is invalid")
	ErrFlowExpired = errors.New("login took too long")
	ErrFlowReused  = errors.New("login state was already used")
	// ErrFlowForgotten is a flow older than the newest used state that had
	// to be forgotten to bound memory (a flood of logins): it might have
	// been used, so it is refused and the login must be started again.
	ErrFlowForgotten = errors.New("login state is too old to be checked; start again")
	// ErrFlowUnopened is an ErrFlowInvalid whose cookie came back but opens
	// with none of the keys: another replica sealed it with other
	// session.keys, another deployment on the host uses the cookie name, or
	// it was tampered with.
	ErrFlowUnopened = fmt.Errorf("%w: its cookie does not open with these session keys", ErrFlowInvalid)
	// ErrFlowOtherKind is an ErrFlowInvalid whose cookie opens for the state
	// but was started for another step (FlowKind): a logout's state at a
	// login's callback, or the other way round, or a flow sealed before
	// flows had kinds (an update while a login was under way). Finish
	// leaves it for the step it is for.
	ErrFlowOtherKind = fmt.Errorf("%w: it was started for another step", ErrFlowInvalid)
	// ErrFlowTooLarge is a flow Start cannot seal into a cookie that
	// browsers keep (maxFlowCookie): its Redirect is kilobytes long. No
	// cookie is set; the caller may start it again with less.
	ErrFlowTooLarge = errors.New("login state is too large for a cookie")
)

// maxFlowCookie is the most a flow cookie's name and value may hold
// together: browsers drop a larger cookie silently (RFC 6265bis 5.6, "the
// sum of the lengths of the cookie's name and value exceeds 4096 octets"),
// and the login's answer would then find no login in progress.
const maxFlowCookie = 4096

// FlowKind is what a flow was started for. Each endpoint finishes only its
// own kind: the state of a login is no answer to a logout, nor the other
// way round, even at the same IdP.
type FlowKind string

const (
	// LoginFlow is a login at the flow's IdP, finished at its OIDC
	// callback, SAML ACS or LDAP form.
	LoginFlow FlowKind = "login"
	// LogoutFlow is a single sign-out at the flow's IdP, finished at
	// {auth_prefix}/logout/done or its SAML SLO endpoint.
	LogoutFlow FlowKind = "logout"
)

// sealedFlow is what a flow cookie seals: the flow, and what it is for.
type sealedFlow struct {
	idp.Flow
	Kind FlowKind `json:"k,omitempty"`
}

// Flows keeps login flows (idp.Flow) between the start of a login, or of a
// single sign-out at the IdP, and the IdP's answer, in a sealed short-lived
// cookie bound to the browser and to its kind (FlowKind). Each one is
// single use. The caller still checks that the flow's IdP is the one that
// answered.
type Flows struct {
	opts   Options
	codecs []securecookie.Codec
	err    error // why codecs could not be built, reported by Start and Finish
	used   *expiringSet
	shared OnceMarker // when set, where used states are recorded instead of used
}

// OnceMarker records values that may be used once, until they expire anyway,
// where every replica sees them (Redis), and gives back the uses that did
// not happen after all.
type OnceMarker interface {
	// Claim records key until the given time and reports whether it was
	// new, with the Mark that gives it back when it was; an error means it
	// could not be recorded (the use is refused).
	Claim(ctx context.Context, key string, until time.Time) (Mark, bool, error)
	// Unmark forgets the mark's key if it still holds that mark, so that it
	// may be marked again; a mark set on the key since is kept.
	Unmark(ctx context.Context, m Mark) error
}

// Mark is a key as one caller marked it (OnceMarker.Claim), to give back
// with Unmark. Unmark forgets that mark only, never a newer one that
// another caller set on the key once this one was given back or ran out:
// the IdP's retry of a logout token, a login's answer posted again. An
// Unmark that runs late, as one sent to a Redis that stalled does, or
// twice, as go-redis sends one again that timed out, would otherwise let
// the key be used once more. The zero Mark gives back nothing.
type Mark struct {
	key   string
	token string // in Redis: the value this caller set (setOnce)
	seq   uint64 // in memory: this addition of the key (expiringSet.Mark)
}

// ShareUsedStates records finished login states in m rather than in this
// process's memory, so that a login's answer is single-use whichever replica
// it reaches. Call it before f serves requests.
func (f *Flows) ShareUsedStates(m OnceMarker) {
	f.shared = m
}

// NewFlows builds the login flow keeper. Keys are checked by NewCookieStore;
// with unusable keys every Start and Finish fails.
func NewFlows(o Options) *Flows {
	f := &Flows{opts: o, used: newExpiringSet(usedStates, "used login states", o.logger())}
	if f.err = checkKeys(o.Keys); f.err == nil {
		// No length limit in the codecs: Start's own check, which counts
		// the cookie's name too, refuses a large flow with ErrFlowTooLarge
		// (a redirect of & spelt \u0026 seals to several times its
		// length), and open skips a value longer than Start seals.
		f.codecs, f.err = codecs(o.Keys, "login flow", FlowLifetime, 0, securecookie.JSONEncoder{})
	}
	return f
}

// Inherit carries over the login states prev (the Flows this one replaces on
// a config reload) has seen finished, so that a reload does not make them
// usable again. Call it before f serves requests.
func (f *Flows) Inherit(prev *Flows) {
	if prev != nil {
		f.used = prev.used
	}
}

// CookieName is the name of the cookie carrying the flow with this state:
// one per login, so that logins started in two tabs do not collide.
func (f *Flows) CookieName(state string) string {
	return f.opts.Name() + "_login_" + state[:min(8, len(state))]
}

// Start seals flow, started for kind, into its cookie. flow.State must be
// set (NewState); flow.Created is set to now when zero. postedCrossSite
// says that the IdP answers with a cross-site POST (SAML's HTTP-POST
// binding), which needs a SameSite=None cookie; any other answer is a
// top-level navigation or a post from the proxy's own page, for which Lax
// will do. When r, the request that starts it, already carries
// maxOpenFlows login cookies, they are all expired first. A flow too large
// for a cookie that browsers keep sets nothing and is ErrFlowTooLarge.
func (f *Flows) Start(w http.ResponseWriter, r *http.Request, kind FlowKind, flow *idp.Flow, postedCrossSite bool) error {
	if f.err != nil {
		return fmt.Errorf("start %s: %w", kind, f.err)
	}
	if !validState(flow.State) {
		return fmt.Errorf("start %s at %s: %w", kind, flow.IdP, ErrFlowInvalid)
	}
	if flow.Created == 0 {
		flow.Created = f.opts.now().Unix()
	}
	sealed, err := f.codecs[0].Encode(flowCodecName, sealedFlow{Flow: *flow, Kind: kind})
	if err != nil {
		return fmt.Errorf("start %s at %s: seal flow: %w", kind, flow.IdP, err)
	}
	name := f.CookieName(flow.State)
	if len(name)+len(sealed) > maxFlowCookie {
		return fmt.Errorf("start %s at %s: %w (%d bytes with a redirect of %d)", kind, flow.IdP, ErrFlowTooLarge, len(name)+len(sealed), len(flow.Redirect))
	}
	f.expireAbandoned(w, r)
	http.SetCookie(w, f.cookie(name, sealed, int(FlowLifetime/time.Second), postedCrossSite))
	return nil
}

// expireAbandoned expires the login cookies r carries once there are
// maxOpenFlows of them. Logins that are started and never finished (a page
// that reloads into the login, another site's <img src=".../login/x"> tags)
// each leave one for FlowLifetime: about 140 made every request larger than
// the proxy's 64 KiB of headers, a 431 even for the login, and browsers keep
// about 180 cookies a site. A user finishing one of eight logins at once
// starts it again.
func (f *Flows) expireAbandoned(w http.ResponseWriter, r *http.Request) {
	if r == nil {
		return
	}
	prefix := f.opts.Name() + "_login_"
	var names []string
	for _, c := range r.Cookies() {
		if strings.HasPrefix(c.Name, prefix) && !slices.Contains(names, c.Name) && len(names) < 4*maxOpenFlows {
			names = append(names, c.Name)
		}
	}
	if len(names) < maxOpenFlows {
		return
	}
	f.opts.logger().Info("login: the browser holds too many unfinished logins; expiring them", "count", len(names))
	for _, name := range names {
		http.SetCookie(w, f.expired(name))
	}
}

// Finish returns the flow of kind started in this browser for state, and
// deletes its cookie. It refuses a state that has no cookie here, a cookie
// that does not open or belongs to another state, an expired flow and a
// state already finished once (remembered until it would have expired;
// under a flood that exceeds the memory bound, flows older than the newest
// state forgotten). A flow of another kind is refused and left as it was,
// cookie and state, for the endpoint it is for (ErrFlowOtherKind). The
// Mark of the state finished is for Release, should the login fail.
func (f *Flows) Finish(w http.ResponseWriter, r *http.Request, kind FlowKind, state string) (*idp.Flow, Mark, error) {
	if f.err != nil {
		return nil, Mark{}, fmt.Errorf("finish %s: %w", kind, f.err)
	}
	if !validState(state) {
		return nil, Mark{}, ErrFlowInvalid
	}
	name := f.CookieName(state)
	var j jar
	j.collectExact(r.Header["Cookie"], name)
	if j.count[0] == 0 {
		return nil, Mark{}, ErrFlowMissing
	}
	flow, err := f.open(&j, state)
	if err == nil && flow.Kind != kind {
		return nil, Mark{}, fmt.Errorf("%w: %s, not %s", ErrFlowOtherKind, flow.Kind.describe(), kind)
	}
	// The cookie has done its job whatever the outcome.
	http.SetCookie(w, f.expired(name))
	if err != nil {
		return nil, Mark{}, err
	}
	now := f.opts.now()
	expires := time.Unix(flow.Created, 0).Add(FlowLifetime)
	if !now.Before(expires) {
		return nil, Mark{}, ErrFlowExpired
	}
	if f.shared != nil {
		mark, first, err := f.shared.Claim(r.Context(), "state:"+state, expires)
		if err != nil {
			return nil, Mark{}, fmt.Errorf("finish %s: %w", kind, err)
		}
		if !first {
			return nil, Mark{}, ErrFlowReused
		}
		return &flow.Flow, mark, nil
	}
	seq, first := f.used.Mark(state, expires, now)
	if !first {
		if f.used.Forgets(expires) {
			return nil, Mark{}, ErrFlowForgotten
		}
		return nil, Mark{}, ErrFlowReused
	}
	return &flow.Flow, Mark{key: state, seq: seq}, nil
}

// open opens the flow cookie values j collected for state. With duplicates
// (cookie tossing), exactly one value must open for this state.
func (f *Flows) open(j *jar, state string) (*sealedFlow, error) {
	if j.overflow {
		return nil, ErrFlowInvalid
	}
	var flow *sealedFlow
	opened := false
	for _, v := range j.values[0][:j.count[0]] {
		var candidate sealedFlow
		if len(v) > maxFlowCookie || securecookie.DecodeMulti(flowCodecName, v, &candidate, f.codecs...) != nil {
			continue
		}
		opened = true
		if subtle.ConstantTimeCompare([]byte(candidate.State), []byte(state)) != 1 {
			continue
		}
		if flow != nil {
			return nil, ErrFlowInvalid
		}
		flow = &candidate
	}
	if !opened {
		return nil, ErrFlowUnopened
	}
	if flow == nil {
		return nil, ErrFlowInvalid
	}
	return flow, nil
}

// describe names the kind in an error: a flow without one was sealed by a
// version from before kinds.
func (k FlowKind) describe() string {
	if k == "" {
		return "a flow from before login states had kinds"
	}
	return "a " + string(k)
}

// Release forgets that state was used, once its login has failed (the
// IdP's answer did not check out). A refused answer spends nothing, so junk
// callbacks, which anyone can send without an account, cannot fill the
// bounded set of used states and push real logins past its watermark; only
// logins that succeeded stay marked. A flow retried after its failure is no
// use to anyone but its browser: the IdP's answer must still match its
// nonce, PKCE verifier or request ID. m is the Mark Finish returned: a
// Release that runs late gives back that finish only, not a later one of
// the state.
func (f *Flows) Release(ctx context.Context, m Mark) error {
	if f.shared != nil {
		return f.shared.Unmark(ctx, m)
	}
	f.used.RemoveMark(m.key, m.seq)
	return nil
}

// cookie makes a flow cookie. It is SameSite=Lax, which browsers send on
// the top-level navigation that brings an OIDC or OAuth2 IdP's answer (and
// a single sign-out's way back), and on the LDAP form's post from the
// proxy's own page; and which they neither send nor set on another site's
// subresources: an <img> pointing at a login's start cannot fill the
// browser's maxOpenFlows with logins of its own and so expire the real one.
// A flow whose IdP answers with a cross-site POST (postedCrossSite: SAML's
// HTTP-POST binding, at the ACS and the SLO endpoint) is SameSite=None over
// https, since browsers withhold Lax cookies from such a post. That does
// not weaken the binding: the flow opens only with the state the IdP
// echoes, and only once. Over plain http (development) browsers refuse
// None without Secure, so it stays Lax.
func (f *Flows) cookie(name, value string, maxAge int, postedCrossSite bool) *http.Cookie {
	sameSite := http.SameSiteLaxMode
	if postedCrossSite && f.opts.Secure {
		sameSite = http.SameSiteNoneMode
	}
	return &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: f.opts.Secure, SameSite: sameSite,
	}
}

// expired is the cookie that deletes flow cookie name, whichever SameSite
// that had: None over https, as every flow cookie was before, which a
// browser takes on the ACS's answer to a cross-site POST too.
func (f *Flows) expired(name string) *http.Cookie {
	return f.cookie(name, "", -1, true)
}

// IsState reports whether s could be a login's state (NewState): a
// RelayState that could not is no answer to a login started here.
func IsState(s string) bool { return validState(s) }

// validState accepts what NewState makes and what an IdP may echo back of it:
// URL-safe base64, long enough to be unguessable, short enough to be cheap.
func validState(s string) bool {
	if len(s) < 16 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// collectExact scans Cookie header lines for one exact name only.
func (j *jar) collectExact(lines []string, name string) {
	for _, line := range lines {
		for part := range strings.SplitSeq(line, ";") {
			k, v, ok := cookiePair(part)
			if !ok || k != name {
				continue
			}
			j.add(0, v)
		}
	}
}
