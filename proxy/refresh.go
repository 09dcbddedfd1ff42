package proxy

import (
	"context"
	"errors"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
)

// Refresh results, as counted in session_refreshes_total{result}.
const (
	refreshSuccess = "success"
	refreshRefused = "refused"
	refreshError   = "error"
)

const (
	// refreshTimeout bounds a refresh at the IdP: its token endpoint and
	// what follows. Longer than idpTimeout: a refresh given up on may still
	// be run by an IdP that resumes (a stall), and one that rotates refresh
	// tokens has then spent the session's, with the new one lost, so that
	// the next refresh is refused as reused. No request waits that long
	// (refreshWait).
	refreshTimeout = time.Minute
	// refreshWait is the longest the requests of a session wait for its
	// refresh at the IdP: past it they are served with the session as it
	// was, and the refresh goes on (refreshTimeout); a later request gets
	// its outcome.
	refreshWait = 3 * time.Second
	// refreshMemory is the longest an outcome is remembered for requests
	// that still carry the cookie from before the refresh.
	refreshMemory = time.Minute
	// refreshEntries bounds the outcomes remembered.
	refreshEntries = 10000
)

// refresher renews sessions at their IdP with the refresh token once
// session.refresh has passed. A rotating refresh token may be spent only
// once, so within this process one refresh runs per session at a time and
// its outcome is remembered for a while: requests that were already on their
// way with the old cookie get the new session instead of spending the old
// token again.
type refresher struct {
	every time.Duration
	// wait is how long requests wait for their session's refresh at the
	// IdP: refreshWait (a test waits longer, where it asks whether the
	// answer carries the refresh's outcome, not how long it took).
	wait time.Duration
	*refreshCalls
}

// refreshCalls are the refreshes running and just finished, which a reload
// hands on whatever it changes (reload.go's inherit).
type refreshCalls struct {
	mu       sync.Mutex
	inFlight map[string]*refreshCall
	recent   map[string]*refreshCall // finished, by session ID
	// sweepAt is how many are remembered when those that no longer answer
	// are next forgotten (minSweep).
	sweepAt int

	// held counts the refreshes this process runs for sessions in Redis
	// from when it takes their refresh lock until their outcome is
	// written (hold): no other replica writes it, so a shutdown waits for
	// them (stop). idle is closed when none is left.
	held int
	idle chan struct{}
	// stopping says that a shutdown has stopped waiting: no refresh is
	// held, nor asked of an IdP for a session in Redis, any more.
	stopping bool
	// abandoned ends, at that shutdown, every refresh still running
	// (runRefresh), with errRefreshAbandoned.
	abandoned context.Context
	abandon   context.CancelCauseFunc
}

// errRefreshAbandoned ends the refreshes still running when a shutdown stops
// waiting for them.
var errRefreshAbandoned = errors.New("refresh abandoned: the process is stopping")

// refreshCall is one refresh of one session: in flight until done closes.
type refreshCall struct {
	done chan struct{}
	// started is when it was started, by the real clock: requests wait
	// for it until refresher.wait after that.
	started time.Time
	// waiting counts the requests waiting for it that have not given up
	// (wait): when none is left as it finishes, no request takes its
	// outcome to the store, and runRefresh does. Under refreshCalls.mu.
	waiting int
	// from is the Refreshed time of the session that was refreshed.
	from time.Time
	// s is the session to use from now on; nil when it ended.
	s *session.Session
	// kept says the IdP could not be asked: every request keeps its own.
	kept     bool
	finished time.Time
	// unsaved says that s is not saved yet: it could not be (Redis was
	// away), or it came after every request had stopped waiting for it
	// and only a later request of the session can write it (the cookie
	// store), or runRefresh is still writing it (Redis). The store still
	// holds the session from before the refresh, with the refresh token
	// the IdP has rotated away. Under refreshCalls.mu.
	unsaved bool
	// held says that the refresh counts in refreshCalls.held. Under
	// refreshCalls.mu.
	held bool
}

// waitFor waits for c to finish until rf.wait after it started, or until r's
// client goes away, and reports whether it finished. A request that joined
// c in flight and gives up on it is no longer counted as waiting: whether
// one is left to take the outcome, finish decides under the same lock.
func (rf *refresher) waitFor(c *refreshCall, r *http.Request) bool {
	if left := rf.wait - time.Since(c.started); left > 0 {
		timer := time.NewTimer(left)
		defer timer.Stop()
		select {
		case <-c.done:
			return true
		case <-timer.C:
		case <-r.Context().Done():
		}
	}
	rf.mu.Lock()
	defer rf.mu.Unlock()
	select { // done as the wait ended: taken, not left to nobody
	case <-c.done:
		return true
	default:
	}
	c.waiting--
	return false
}

func newRefresher(every time.Duration) *refresher {
	abandoned, abandon := context.WithCancelCause(context.Background())
	return &refresher{every: every, wait: refreshWait, refreshCalls: &refreshCalls{inFlight: map[string]*refreshCall{},
		recent: map[string]*refreshCall{}, sweepAt: minSweep, abandoned: abandoned, abandon: abandon}}
}

// hold counts c, a refresh of a session in Redis whose lock this process
// has just taken, among those a shutdown waits for, until letGo. It
// reports false once a shutdown has stopped waiting: then the IdP must not
// be asked, for an outcome that nobody would write.
func (rc *refreshCalls) hold(c *refreshCall) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.stopping {
		return false
	}
	if rc.held == 0 {
		rc.idle = make(chan struct{})
	}
	rc.held++
	c.held = true
	return true
}

// letGo ends hold's count of c, if it counts.
func (rc *refreshCalls) letGo(c *refreshCall) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !c.held {
		return
	}
	c.held = false
	if rc.held--; rc.held == 0 {
		close(rc.idle)
	}
}

// stop is a shutdown's end of the refreshes: it waits, until ctx ends, for
// those held (hold), whose outcome only this process can write to Redis,
// then abandons every refresh still running and returns how many of the
// held it abandoned. Those of cookie-store sessions are not waited for:
// with no request left to carry a renewed session's cookie, their outcome
// is lost with the process, waited for or not. Nor are those that wait for
// another replica's refresh: their outcome is that replica's to write.
//
// The held are abandoned a little before ctx's deadline (a tenth of what
// is left, at most abandonedWrites), which is kept for those the IdP had
// half answered: its token endpoint rotated the refresh token, userinfo
// had not answered yet. Their renewed session, the new token in it, is
// then written to Redis before stop returns and Redis is closed.
func (rc *refreshCalls) stop(ctx context.Context) int {
	waiting := ctx
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		margin := min(max(time.Until(deadline), 0)/10, abandonedWrites)
		waiting, cancel = context.WithDeadline(ctx, deadline.Add(-margin))
		defer cancel()
	}
	n := rc.waitHeld(waiting, true)
	rc.abandon(errRefreshAbandoned)
	rc.waitHeld(ctx, false)
	return n
}

// abandonedWrites bounds the end of a shutdown's grace that stop keeps for
// the refreshes it abandons to write what the IdP answered.
const abandonedWrites = time.Second

// waitHeld waits until no refresh is held or ctx ends, and returns how many
// still are. stopping then holds none any more (hold), under the same lock.
func (rc *refreshCalls) waitHeld(ctx context.Context, stopping bool) int {
	for {
		rc.mu.Lock()
		if rc.held == 0 || ctx.Err() != nil {
			rc.stopping = rc.stopping || stopping
			n := rc.held
			rc.mu.Unlock()
			return n
		}
		idle := rc.idle
		rc.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
		}
	}
}

// refreshSession returns the session to carry on with: s itself when no
// refresh is due, the renewed one (saved in w) after a refresh, s again when
// the IdP could not be asked, and nil when the IdP refused, in which case the
// session has been deleted and the request has no session, or when this
// configuration does not admit the renewed one (authorize), or, which serve's
// loadSession rules out, when the IdP is no longer configured.
func (h *Handler) refreshSession(w http.ResponseWriter, r *http.Request, s *session.Session) *session.Session {
	rf := h.refresher
	now := h.now()
	if rf == nil || rf.every <= 0 || s.Tokens.RefreshToken == "" || now.Sub(s.Refreshed) < rf.every {
		return s
	}
	p := h.providers[s.Profile.IdP]
	if p == nil {
		return nil // the IdP left the configuration: no session (loadSession)
	}
	impl, ok := p.impl.(idp.Refresher)
	if !ok {
		return s
	}

	call, leader := rf.join(s, now)
	if leader {
		// Detached from the request: others wait on this refresh, and
		// neither a client that goes away nor the end of the wait may
		// leave a spent token with no session to keep it.
		go h.runRefresh(context.WithoutCancel(r.Context()), rf, impl, s, call)
	}
	if !rf.waitFor(call, r) {
		// Still at the IdP (stalling): served as the session was, as when
		// the IdP could not be asked. Its outcome is remembered for the
		// session's next request (unsaved).
		return s
	}

	switch {
	case call.s == nil:
		if err := h.sessions.Delete(w, r, s); err != nil {
			h.log.Error("refresh: session not deleted", "err", err)
		}
		h.clearSignedIn(w, r) // the IdP ended it: the next sign-in is no loop
		return nil
	case call.kept:
		return s // nothing new to write
	}
	next := *call.s
	err := h.sessions.Save(w, r, &next)
	// Redis away: the IdP has rotated the refresh token, and only this
	// process knows the new one (remembers).
	rf.markUnsaved(call, errors.Is(err, session.ErrUnavailable), h.now())
	switch {
	case errors.Is(err, session.ErrTooLarge):
		// The IdP now says more about the user than the cookies hold, and
		// the refresh token it replaced is spent: carried on, the old
		// cookie would spend it again a minute later and be refused as if
		// the IdP had ended the session. The user logs in again, where
		// the login says why it cannot finish.
		h.log.Warn("refresh: the renewed session does not fit its cookies; session ended", "idp", s.Profile.IdP, "sub", s.Profile.Sub, "err", err)
		if err := h.sessions.Delete(w, r, s); err != nil {
			h.log.Error("refresh: session not deleted", "err", err)
		}
		h.clearSignedIn(w, r)
		return nil
	case err != nil:
		// With Redis away, the next request that carries the session from
		// before the refresh, on this replica, saves it (remembers).
		h.log.Error("refresh: session not saved", "idp", s.Profile.IdP, "err", err)
	}
	// The refresh may have been made, and its roles mapped, by the
	// configuration before a reload: remembered for the requests still
	// carrying the cookie it replaced, it answers them under this one.
	return h.authorize(&next)
}

// join returns the refresh of s to wait for: one already running or just
// finished for this session, or a new one that the caller (leader) runs.
func (rf *refresher) join(s *session.Session, now time.Time) (call *refreshCall, leader bool) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if c := rf.inFlight[s.ID]; c != nil {
		c.waiting++
		return c, false
	}
	// A finished refresh answers requests still carrying the cookie it
	// replaced (same starting point), not a later, newer one.
	if c := rf.recent[s.ID]; c != nil && !s.Refreshed.After(c.from) && rf.remembers(c, now) {
		return c, false
	}
	c := &refreshCall{done: make(chan struct{}), from: s.Refreshed, started: time.Now(), waiting: 1}
	rf.inFlight[s.ID] = c
	return c, true
}

// runRefresh runs the refresh c of s that rf.join gave this request to
// lead, across replicas too with the Redis store (redis.go), and finishes
// it. A session the IdP ended is ended in the store here, before any
// request hears of it: one that no request waits for any more would
// otherwise live on once the outcome is forgotten. A renewed session that
// no request waits for any more (their wait over, their clients gone) is
// saved here when the store can save it without a response (Redis, when
// this replica asked the IdP: another replica's outcome is its own to
// save); otherwise it stays unsaved, remembered until a request of the
// session writes it. A panic, which net/http no longer recovers here,
// keeps the session for now (and ends no process). ctx, detached from the
// request, ends only when a shutdown abandons the refresh (refreshCalls.stop).
func (h *Handler) runRefresh(ctx context.Context, rf *refresher, impl idp.Refresher, s *session.Session, c *refreshCall) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(rf.abandoned, func() { cancel(context.Cause(rf.abandoned)) })()
	finished := false
	defer func() {
		if v := recover(); v != nil && !finished {
			h.log.Error("refresh panicked; keeping the session for now", "idp", s.Profile.IdP, "sub", s.Profile.Sub,
				"panic", v, "stack", string(debug.Stack()))
			h.metrics.refreshes.WithLabelValues(s.Profile.IdP, refreshError).Inc()
			rf.finish(s.ID, c, s, true, false, h.now())
		}
		// Its outcome written, or never to be: a shutdown waits no more.
		rf.letGo(c)
	}()
	next, result, ran := h.refreshShared(ctx, rf, impl, s, c)
	if ran {
		h.metrics.refreshes.WithLabelValues(s.Profile.IdP, result).Inc()
	}
	if next == nil && ran {
		// Before any request hears of it, which may be none: the store
		// forgets the session (Redis), or refuses its cookie from now on
		// (cookies); a request that waited clears the cookies too.
		if err := h.sessions.Delete(&noResponse{h: http.Header{}}, nil, s); err != nil {
			h.log.Error("refresh: session not deleted", "err", err)
		}
	}
	// Kept: the IdP could not be asked, and the session is s itself.
	kept := next == s
	rs, inRedis := h.sessions.(*session.RedisStore)
	finished = true
	if rf.finish(s.ID, c, next, kept, !inRedis || ran, h.now()) || next == nil || kept || !inRedis || !ran {
		return
	}
	// Not ctx, which a shutdown may have ended as the IdP answered: the
	// renewed session holds the refresh token the IdP just issued.
	err := rs.SaveRenewed(context.WithoutCancel(ctx), next)
	if err != nil {
		h.log.Warn("refresh: the renewed session not saved yet", "idp", next.Profile.IdP, "err", err)
	}
	rf.markUnsaved(c, errors.Is(err, session.ErrUnavailable), h.now())
}

// noResponse is where what a store writes to a response goes when there
// is none (a refresh that no request waits for).
type noResponse struct{ h http.Header }

func (w *noResponse) Header() http.Header         { return w.h }
func (w *noResponse) Write(b []byte) (int, error) { return len(b), nil }
func (w *noResponse) WriteHeader(int)             {}

// remembers says whether the finished refresh c still answers for its
// session. When the IdP could not be asked, it is asked again after the
// refresh interval. A renewed session that could not be saved is
// remembered until it expires: the store gives out the session from before
// the refresh, whose refresh token the IdP has rotated away, and spent
// again it would be refused as reused and the user signed out, however
// long Redis was away. The next request after Redis is back saves it.
func (rf *refresher) remembers(c *refreshCall, now time.Time) bool {
	switch {
	case c.unsaved:
		return now.Before(c.s.Expires)
	case c.kept:
		return now.Sub(c.finished) < min(rf.every, refreshMemory)
	}
	return now.Sub(c.finished) < refreshMemory
}

// markUnsaved records whether the renewed session of c is still to be
// saved, after a request tried to at now. One saved only now is
// remembered a while from now, for the requests that still carry the
// session it replaces (a page's parallel requests).
func (rf *refresher) markUnsaved(c *refreshCall, unsaved bool, now time.Time) {
	rf.mu.Lock()
	if c.unsaved && !unsaved {
		c.finished = now
	}
	c.unsaved = unsaved
	rf.mu.Unlock()
}

// forgetDone forgets the outcomes that no longer answer for their
// sessions; rf.mu is held.
func (rf *refresher) forgetDone(now time.Time) {
	for k, old := range rf.recent {
		if !rf.remembers(old, now) {
			delete(rf.recent, k)
		}
	}
}

// finish records the outcome of c, the refresh of session id, wakes the
// requests waiting for it, and reports whether one is left to take it to
// the store. When none is, a renewed session is unsaved if untaken says
// so (it is still to be written).
func (rf *refresher) finish(id string, c *refreshCall, next *session.Session, kept, untaken bool, now time.Time) (taken bool) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	taken = c.waiting > 0
	c.s, c.kept, c.unsaved, c.finished = next, kept, !taken && untaken && next != nil && !kept, now
	delete(rf.inFlight, id)
	// Each outcome holds a renewed session, tokens included: swept only
	// once refreshEntries are held, those of every session refreshed
	// since the start would stay, sessions long logged out included.
	if len(rf.recent) >= rf.sweepAt {
		rf.forgetDone(now)
		rf.sweepAt = max(2*len(rf.recent), minSweep)
	}
	if len(rf.recent) >= refreshEntries {
		rf.forgetDone(now)
		if len(rf.recent) >= refreshEntries {
			clear(rf.recent) // a burst of refreshes: forget rather than grow
		}
	}
	rf.recent[id] = c
	close(c.done)
	return taken
}

// refreshAtIdP asks the IdP about s's user and builds the session that
// follows: s with new tokens and a re-mapped profile, s with new tokens and
// its profile as it was when the IdP renewed them but the user could not be
// read anew (result refreshError), s itself, unchanged, when the IdP could
// not be asked, or nil when the session must end.
func (h *Handler) refreshAtIdP(ctx context.Context, impl idp.Refresher, s *session.Session) (*session.Session, string) {
	id := s.Profile.IdP
	// ctx is runRefresh's, detached from the request: others wait on this
	// refresh, and a client that goes away must not leave a spent token
	// with no session to keep it. Only a shutdown ends it sooner.
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	tokens := s.Tokens
	profile, next, err := impl.Refresh(ctx, &tokens)
	if errors.Is(err, idp.ErrRefreshRefused) {
		h.log.Info("refresh refused by the IdP; session ended", "idp", id, "sub", s.Profile.Sub, "err", err)
		return nil, refreshRefused
	}
	if err != nil && next == nil && errors.Is(context.Cause(ctx), errRefreshAbandoned) {
		// The shutdown said how many it gave up on; this says whose
		// session may meet a spent refresh token at its next refresh.
		h.log.Info("refresh abandoned at shutdown; an IdP that runs it all the same and rotates refresh tokens refuses the session's next refresh",
			"idp", id, "sub", s.Profile.Sub)
		return s, refreshError
	}
	if err != nil {
		attrs := []any{"idp", id, "sub", s.Profile.Sub}
		if next != nil {
			// The profile is kept until the next refresh reads it.
			attrs = append(attrs, "tokens", "renewed")
		}
		if setup, ok := errors.AsType[*idp.SetupError](err); ok {
			// As a login's setupFailed: every refresh at this IdP fails
			// alike until an administrator changes something, and the
			// hint says what.
			h.log.Error("refresh failed; keeping the session for now", append(attrs, "reason", setup.Reason, "hint", setup.Hint, "err", err)...)
		} else {
			h.log.Warn("refresh failed; keeping the session for now", append(attrs, "err", err)...)
		}
		if next == nil {
			return s, refreshError
		}
		// The IdP has spent the refresh token the session held: kept, it
		// would be sent again at the next refresh, refused as reused, and
		// the grant revoked (Hydra, Okta, Auth0). The session carries on
		// with the new tokens and the profile as it was, until the next
		// refresh reads the user again.
		profile = nil
	}
	out := *s
	out.Tokens = *next
	out.Refreshed = h.now().Truncate(time.Second)
	out.LastSeen = out.Refreshed
	if profile == nil {
		if err != nil {
			// The user was not read: the next refresh is due when one
			// the IdP could not answer would be retried, not a whole
			// interval on, so that what the IdP now says of the user (a
			// group taken away) counts as soon as it did before. Still
			// after s's, so that requests carrying s are told apart.
			every := h.refresher.every
			out.Refreshed = out.Refreshed.Add(min(every, refreshMemory) - every)
			if !out.Refreshed.After(s.Refreshed) {
				out.Refreshed = s.Refreshed.Add(time.Second)
			}
			return &out, refreshError
		}
		return &out, refreshSuccess
	}
	if profile.Sub != s.Profile.Sub {
		h.log.Warn("refresh answered for another user; session ended", "idp", id, "sub", s.Profile.Sub, "got", profile.Sub)
		return nil, refreshRefused
	}
	profile.KeepSignIn(&s.Profile)
	if reason := h.admit(profile); reason != "" {
		h.log.Info("refresh: user no longer admitted; session ended", "idp", id, "sub", s.Profile.Sub, "reason", reason)
		return nil, refreshRefused
	}
	roles, err := h.roles.Map(profile)
	if err != nil {
		h.log.Info("refresh: user has no role any more; session ended", "idp", id, "sub", s.Profile.Sub, "err", err)
		return nil, refreshRefused
	}
	profile.Roles = roles
	out.Profile = *profile
	return &out, refreshSuccess
}
