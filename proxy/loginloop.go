package proxy

import (
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy/session"
)

// loginLoopWindow is how long after a login a browser sent to sign in
// again, without a session that opens, is taken for a login loop. A loop
// through an IdP that remembers the user goes round in a second; an LDAP
// form that keeps coming back, in the time it takes to type a password.
const loginLoopWindow = 2 * time.Minute

// loginLoopSkew is how far ahead of this replica's clock a mark may be: the
// replica that set it may run a little ahead, and a loop through replicas
// whose clocks are seconds apart is a loop all the same.
const loginLoopSkew = 30 * time.Second

// markSignedIn leaves in the browser, for loginLoopWindow, when and at which
// IdP it last signed in: the only way to tell, at the next /login, a
// browser that just signed in and lost its session at once from one that
// signs in. It holds nothing secret, and a forged one can do no more than
// show its browser the loop page. It goes no later than the session made
// at that login, ends: one the IdP bounds (SAML's SessionNotOnOrAfter) may
// end within the window, and its browser, back without it, has no loop.
// Both cookies' Max-Age are whole seconds rounded down, the mark's counted
// after the session's, so the mark never outlasts the session cookie.
func (h *Handler) markSignedIn(w http.ResponseWriter, idpID string, sessionEnd time.Time) {
	now := h.now()
	maxAge := min(loginLoopWindow, sessionEnd.Sub(now)) / time.Second
	if maxAge <= 0 {
		return // 0 would be a cookie with no Max-Age, kept until the browser closes
	}
	http.SetCookie(w, h.signedInCookie(strconv.FormatInt(now.Unix(), 10)+"."+idpID, int(maxAge)))
}

// clearSignedIn removes the mark: wherever the proxy ends the browser's
// session itself (logout, the IdP's single logout, a refresh the IdP
// refuses), since the browser then comes to sign in again without a
// session for a reason that is no loop; and once the loop is reported, so
// that the user's next try goes to the IdP.
func (h *Handler) clearSignedIn(w http.ResponseWriter, r *http.Request) {
	if _, err := r.Cookie(h.cookies.SignedInName()); err == nil {
		http.SetCookie(w, h.signedInCookie("", -1))
	}
}

// whyNoSession is why a browser without a session, which signed in ago,
// has none: as the store tells from its cookie, or Ended when the session
// could have run out of time since the login, which a store that keeps
// nothing of it (Redis, once its TTL is up; the browser, once the cookie's
// Max-Age is) cannot tell.
func (h *Handler) whyNoSession(r *http.Request, ago time.Duration) (session.Absence, error) {
	// The session cookie's Max-Age is whole seconds, rounded down from
	// the session's end, so the browser drops it up to a second before
	// the lifetime is up; and the mark's second may be one after the
	// session's start. Within those two seconds it has ended all the same.
	if ago+2*time.Second >= h.cfg.Session.Lifetime || (h.cfg.Session.IdleTimeout > 0 && ago > h.cfg.Session.IdleTimeout) {
		return session.Ended, nil
	}
	return h.sessions.Absent(r)
}

func (h *Handler) signedInCookie(value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: h.cookies.SignedInName(), Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: h.cookies.Secure, SameSite: http.SameSiteLaxMode}
}

// loginLoop answers, and reports true for, a browser sent to sign in again
// within loginLoopWindow of signing in here, without a session that opens:
// the session cookie set then did not come back, or came back and did not
// open. Left alone the browser goes round through the IdP until it gives up
// ("too many redirects"), with every login in the log a success. The page
// says what the user can do and offers to try again; the log line says
// which it is and what causes it. A session that opens and has ended
// meanwhile (whyNoSession) is no loop: the browser signs in again.
func (h *Handler) loginLoop(w http.ResponseWriter, r *http.Request) bool {
	mark, err := r.Cookie(h.cookies.SignedInName())
	if err != nil {
		return false
	}
	at, id, _ := strings.Cut(mark.Value, ".")
	unix, err := strconv.ParseInt(at, 10, 64)
	ago := h.now().Sub(time.Unix(unix, 0))
	if err != nil || ago < -loginLoopSkew || ago > loginLoopWindow {
		return false
	}
	s, err := h.sessions.Load(r)
	if err != nil || (s != nil && h.providers[s.Profile.IdP] != nil) {
		return false // a store that cannot answer says so elsewhere; a session: signing in again on purpose
	}
	// A session of an IdP this configuration no longer has has ended here
	// (loadSession).
	why := session.Ended
	if s == nil {
		if why, err = h.whyNoSession(r, ago); err != nil {
			return false
		}
	}
	h.clearSignedIn(w, r)
	if why == session.Ended {
		return false
	}
	if h.providers[id] == nil {
		id = "" // a label of logins_total is a configured IdP or nothing
	}
	if id != "" {
		h.metrics.login(id, "failure", 0)
	}
	loop := h.explainLoop(why, max(ago, 0).Round(time.Second))
	h.audit(r, loop.level, "login_failed", slog.String("idp", id), slog.String("reason", loop.reason), slog.String("hint", loop.hint))
	h.pages.failWithLink(w, r, loop.status, "Sign-in did not hold", loop.msg, r.URL.RequestURI(), "Try again")
	return true
}

// loopAnswer is what the loop page and the login_failed line say.
type loopAnswer struct {
	status       int
	level        slog.Level
	reason, hint string
	msg          string // the page's, for the user
}

// explainLoop says, for a browser back to sign in ago after it signed in
// here and why it has no session, what the user can do, and what may cause
// it. A cookie that is no sealed value at all (session.Malformed) is a
// warning: anyone can make their own browser send one, with a mark of
// their own making, and a real one is spoilt only by something that cuts
// cookies short, which then keeps coming. A sealed one that no key opens
// is the set-up's, as a cookie that does not come back is.
func (h *Handler) explainLoop(why session.Absence, ago time.Duration) loopAnswer {
	public := h.cfg.Server.PublicURL
	back := "the browser came back to sign in " + ago.String() + " after it signed in here, "
	switch why {
	case session.NoCookie:
		return loopAnswer{status: http.StatusBadRequest, level: slog.LevelError, reason: "session_cookie_missing",
			hint: back + "without the session cookie (" + h.cookies.Name() +
				") set then: a proxy, CDN or cache in front drops it or does not pass it on, or the browser refuses it: public_url (" + public +
				") is https and the site is browsed over http, or the application is shown in a frame of another site (third-party cookies)",
			msg: "You signed in a moment ago, but your browser did not send back the cookie that keeps you signed in. " +
				"Open this application at " + public + ", make sure your browser accepts its cookies, and try again."}
	case session.Malformed:
		return loopAnswer{status: http.StatusBadRequest, level: slog.LevelWarn, reason: "session_cookie_malformed",
			hint: back + "with a session cookie (" + h.cookies.Name() + ") that is no sealed value: cut short or altered " +
				"by a proxy or CDN in front (a limit on the size of cookies or headers) or in the browser, or made up there, " +
				"with the mark of a login; a set-up problem only if it keeps coming",
			msg: "You signed in a moment ago, but your browser sent back a damaged copy of the cookie that keeps you signed in. " +
				"Try again; if this page comes back, tell your administrator, with the request ID below."}
	}
	return loopAnswer{status: http.StatusInternalServerError, level: slog.LevelError, reason: "session_cookie_invalid",
		hint: back + "with a session cookie that does not open here: " +
			"replicas with different session.keys or server.public_url, or with session.store redis, replicas that do not share one Redis and database, " +
			"or the session removed from Redis behind the proxy's back (a flush, a restart that lost its data)",
		msg: "You signed in a moment ago, but this application could not read your session. " +
			"This is a problem with its setup: tell your administrator, with the request ID below."}
}
