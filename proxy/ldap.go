package proxy

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/rolemap"
	"github.com/portcullis-proxy/portcullis/rules"
	"golang.org/x/sync/singleflight"
)

// Password logins (LDAP): the login form at {auth_prefix}/ldap/{idp}, and
// rules with basic_auth, whose API callers send their directory password
// in an Authorization: Basic header. Both go through checkPassword, which
// applies the failure limits (ratelimit.go).

// basicAuthTTL is how long a successful Basic auth check is reused without
// asking the directory again.
const basicAuthTTL = 60 * time.Second

// maxBasicAuthEntries bounds the Basic auth cache.
const maxBasicAuthEntries = 10_000

// maxBasicAuthBytes bounds the memory of the profiles the Basic auth cache
// holds (their Footprint).
const maxBasicAuthBytes = 16 << 20

// passwordLogins is the state of password logins: failure limits, the
// Basic auth cache and the Basic auth checks under way.
type passwordLogins struct {
	limits failureLimits // in memory, or shared through Redis (redis.go)
	cache  *basicCache
	checks singleflight.Group // by cache key: see basicIdentity
}

func newPasswordLogins() *passwordLogins {
	return &passwordLogins{limits: newLoginLimits(), cache: newBasicCache(basicAuthTTL, maxBasicAuthEntries)}
}

// errRateLimited means the username, its account or the client failed too
// often lately.
var errRateLimited = errors.New("too many failed logins")

// checkPassword checks username and password at p unless the failure
// limits hold them back (errRateLimited, with how long to wait), and counts
// the outcome. Other errors are idp.ErrInvalidCredentials (also for a
// username whose account the limits hold back: see below) or the directory
// being unavailable.
//
// Each attempt is counted as a failure before it is made, against the
// username and the client before the directory is asked, and against the
// account once the directory has found it, before the password is tried:
// the check and the count are one step, so that simultaneous attempts
// cannot all pass the limits before any of them is counted, and another
// spelling of a limited account (its mail instead of its uid) gets no
// attempts of its own. A success forgets the username's and the account's
// failures and gives the client its attempt back; an attempt the directory
// could not answer is given back whole, unless its password was sent.
//
// device is the browser's device cookie for this username
// (session.Devices), with no Nonce for none: while the cookie has attempts
// left, the attempt is counted against it and the client instead of the
// username, and no failures of other clients hold it back; once it has
// none, it is a login like any other (trustedAttempt). It stands for the
// account's count only when the directory finds the account the cookie's
// login signed in to: a username the limits read as the cookie's can find
// another (OpenLDAP tells jürgen.strauß from jürgen.strauss, the limits do
// not), and that account is counted, with the username, as for any client.
// account is the key (accountKey) of the account the directory found for
// username, "" when it found none; a successful login's new device cookie
// names it.
//
// A check refused as wrong credentials returns no sooner than p's failure
// floor after it began (failuredelay.go), whether the directory found the
// user or not; it waits with the failure already counted, so that the
// limits hold back at once a client that keeps trying meanwhile, and with
// no directory connection or lock held.
func (h *Handler) checkPassword(r *http.Request, p *provider, checker idp.PasswordChecker, username, password string, device session.Device) (prof *idp.Profile, account string, wait time.Duration, err error) {
	start := h.now()
	prof, account, wait, err = h.tryPassword(r, p, checker, username, password, device)
	if errors.Is(err, idp.ErrInvalidCredentials) {
		h.pause(r.Context(), p.pace.answerAt(start))
	}
	return prof, account, wait, err
}

// tryPassword is checkPassword without the wait at the failure floor,
// which is the caller's.
func (h *Handler) tryPassword(r *http.Request, p *provider, checker idp.PasswordChecker, username, password string, device session.Device) (*idp.Profile, string, time.Duration, error) {
	id := p.cfg.ID
	limits := h.passwords.limits
	start := h.now()
	keys, trust := h.trustedAttempt(r, id, username, device.Nonce, start)
	keys, wait := limits.take(keys, start)
	if wait > 0 {
		h.metrics.login(id, "rate_limited", 0)
		h.audit(r, slog.LevelWarn, "login_rate_limited", append(trust, slog.String("idp", id), slog.String("username", username))...)
		return nil, "", wait, errRateLimited
	}
	triedPassword := false
	account := ""
	prof, err := checker.Authenticate(r, username, password, func(dn string) error {
		account = accountKey(id, dn)
		// A device cookie stands for the count of the account its login
		// signed in to: that is the other clients'. Any other account
		// the username finds is counted as for any client, with the
		// username, which the cookie kept out of the count.
		if keys.device == "" || !device.SignedInTo(account) {
			extra := accountAttemptKeys(id, dn)
			if keys.user == "" {
				extra.user = userKey(id, username)
				trust = []slog.Attr{slog.String("device", deviceOtherAccount)}
			}
			taken, wait := limits.take(extra, h.now())
			if wait > 0 {
				return errRateLimited
			}
			// Counted: settled with the others below.
			keys.user, keys.account, keys.legacyAccount = cmp.Or(keys.user, taken.user), taken.account, taken.legacyAccount
			keys.taken = append(keys.taken, taken.taken...)
		}
		triedPassword = true // PasswordChecker: the password is tried next
		return nil
	})
	switch {
	case err == nil:
		limits.succeeded(keys, h.now())
		return prof, account, 0, nil
	case errors.Is(err, errRateLimited):
		// Another spelling of a limited account: only a username that
		// finds an entry gets here, so a 429 would tell that it does. It
		// is refused as a wrong password and stays counted against the
		// username and the client as one; the account's failures stay
		// as they are.
		h.metrics.login(id, "rate_limited", 0)
		h.audit(r, slog.LevelWarn, "login_rate_limited", append(trust, slog.String("idp", id), slog.String("username", username),
			slog.String("limit", "account"))...)
		return nil, "", 0, idp.ErrInvalidCredentials
	case errors.Is(err, idp.ErrInvalidCredentials):
		if triedPassword {
			p.pace.observe(h.now().Sub(start))
		}
		h.metrics.login(id, "failure", 0)
		// err says which (no such user, or a wrong password): the user
		// must not learn it, the operator needs it.
		h.audit(r, slog.LevelWarn, "login_failed", append(trust, slog.String("idp", id), slog.String("reason", "invalid_credentials"),
			slog.String("username", username), slog.Any("err", err))...)
	default:
		// Given back only when the password never reached the directory:
		// once the bind is sent, the directory may have checked it
		// whatever comes back (busy, unavailable, a timeout, a connection
		// cut), and a guess whose answer an attacker can make it lose
		// would otherwise cost nothing.
		if !triedPassword {
			limits.giveBack(keys, h.now())
		}
		h.metrics.login(id, "failure", 0)
		attrs := []slog.Attr{slog.String("idp", id), slog.String("reason", "directory_unavailable")}
		if setup, ok := errors.AsType[*idp.SetupError](err); ok {
			// The directory answers, and refuses what the configuration
			// asks of it: the service account, a base DN.
			attrs = []slog.Attr{slog.String("idp", id), slog.String("reason", setup.Reason), slog.String("hint", setup.Hint)}
		}
		h.audit(r, slog.LevelError, "login_failed", append(append(trust, attrs...), slog.Bool("password_sent", triedPassword), slog.Any("err", err))...)
	}
	return nil, "", 0, err
}

// Values of the device attribute of login lines: the browser's device
// cookie vouched for the username, had no attempts left, or was issued at
// a login to another account than the one the username found.
const (
	deviceTrusted      = "trusted"
	deviceLockedOut    = "locked_out"
	deviceOtherAccount = "other_account"
)

// trustedAttempt is what a login as username from r is counted against:
// with the nonce of a device cookie that vouches for the username
// (device), the cookie and the client while the cookie has attempts left
// (trustedKeys); else, a cookie whose attempts ran out too, as any other
// client's, against the username and the client (OWASP's lockout list:
// who stole a device cookie gets its few attempts, then waits with
// everyone else). The attributes say which, for the login's log lines.
//
// The cookie's count is read here and taken by take, not in one step:
// simultaneous attempts with one cookie can all find its last attempt
// left. The first takes it; take refuses the others 429 and counts them
// nowhere, never as the username's.
func (h *Handler) trustedAttempt(r *http.Request, id, username, device string, now time.Time) (loginKeys, []slog.Attr) {
	addr := h.clientAddr(r)
	if device == "" {
		return attemptKeys(id, username, addr), nil
	}
	trusted := trustedKeys(id, device, addr)
	if h.passwords.limits.wait(loginKeys{device: trusted.device}, now) > 0 {
		return attemptKeys(id, username, addr), []slog.Attr{slog.String("device", deviceLockedOut)}
	}
	return trusted, []slog.Attr{slog.String("device", deviceTrusted)}
}

// passwordProvider is the configured password-checking IdP named id.
func (h *Handler) passwordProvider(id string) (*provider, idp.PasswordChecker, bool) {
	p := h.providers[id]
	if p == nil {
		return nil, nil, false
	}
	checker, ok := p.impl.(idp.PasswordChecker)
	return p, checker, ok
}

// ldapFormPath is where the login form of IdP id is.
func (h *Handler) ldapFormPath(id, rd string) string {
	return withRedirect(h.cfg.Server.AuthPrefix+"/ldap/"+url.PathEscape(id), rd)
}

// ldapForm shows the login form.
func (h *Handler) ldapForm(w http.ResponseWriter, r *http.Request) {
	p, _, ok := h.passwordProvider(r.PathValue("idp"))
	if !ok {
		h.pages.fail(w, r, http.StatusNotFound, "Unknown sign-in", "There is no such sign-in method.")
		return
	}
	if h.startedByAnotherSite(w, r, p.cfg.ID) {
		return
	}
	rd := h.safeRedirect(r.URL.Query().Get("rd"))
	if h.signedInAt(r, p.cfg.ID) {
		// Signed in with this directory already (a bookmark of the form,
		// the back button onto it): on to the page, as a login at an IdP
		// that remembers the user goes. Another user signs out first.
		http.Redirect(w, r, rd, http.StatusSeeOther)
		return
	}
	h.showLDAPForm(w, r, p, rd, http.StatusOK, "", "")
}

// showLDAPForm renders the form with a fresh login flow: its state, in a
// hidden field, must come back with the browser's flow cookie, once. That
// is the form's CSRF protection (SPEC invariant 7), as for the redirect
// logins.
func (h *Handler) showLDAPForm(w http.ResponseWriter, r *http.Request, p *provider, rd string, status int, username, msg string) {
	f := &idp.Flow{State: session.NewState(), IdP: p.cfg.ID, Redirect: rd, Created: h.now().Unix()}
	if err := h.startFlow(w, r, session.LoginFlow, f, false); err != nil {
		h.log.Error("cannot start login", "idp", p.cfg.ID, "err", err)
		h.pages.fail(w, r, http.StatusInternalServerError, "Internal error", "The sign-in could not be started.")
		return
	}
	data := page{
		Title: "Sign in", Message: msg, IdPName: p.cfg.DisplayName(),
		Action: h.ldapFormPath(p.cfg.ID, ""), RD: f.Redirect, State: f.State, Username: username,
	}
	if len(h.order) > 1 {
		data.Link, data.LinkText = h.loginPath(f.Redirect), "Other ways to sign in"
	}
	h.pages.render(w, status, "ldap", data)
}

// ldapLogin checks the posted form: the flow first (this browser started
// this login at this IdP, and has not finished it), then the limits, then
// the password.
func (h *Handler) ldapLogin(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("idp")
	p, checker, ok := h.passwordProvider(id)
	if !ok {
		h.pages.fail(w, r, http.StatusNotFound, "Unknown sign-in", "There is no such sign-in method.")
		return
	}
	// Only the form's own page posts it, from the proxy's origin. Another
	// site's post, even a top-level one, cannot hold this browser's state:
	// it checks no password and starts no fresh form, which would show
	// this origin's form with the username that site chose, and log a
	// missing cookie with a hint that blames the set-up.
	if sentByAnotherSite(r) {
		h.loginNotStarted(w, r, id)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		h.pages.fail(w, r, formStatus(err), "Bad request", "The form could not be read.")
		return
	}
	start := h.now()
	username, password := r.PostForm.Get("username"), r.PostForm.Get("password")
	f, _, err := h.flows.Finish(w, r, session.LoginFlow, r.PostForm.Get("state"))
	if errors.Is(err, session.ErrUnavailable) {
		h.storeUnavailable(w, r, id, err)
		return
	}
	if err == nil && f.IdP != id {
		err = fmt.Errorf("flow belongs to %s", f.IdP)
	}
	if errors.Is(err, session.ErrFlowMissing) && h.signedInAs(r, id, username) {
		// The form a login spent, posted again by the browser it signed
		// in: WebKit keeps the form's page in its back-forward cache over
		// plain http (it leaves out only https pages that are no-store),
		// so back after the login shows this form rather than loading it,
		// which sends a signed-in browser on (ldapForm). On to its rd, as
		// from there; no password is checked. A state that came back and
		// was refused (forged, another IdP's) stays a failure, and so does
		// another name than the session's: someone else at this browser
		// must not stay signed in as its user unawares.
		h.log.Info("login form posted again by a browser already signed in", "idp", id, "username", username, "err", err)
		http.Redirect(w, r, h.safeRedirect(r.PostForm.Get("rd")), http.StatusSeeOther)
		return
	}
	if err != nil {
		// No password is checked without a form this browser got from us;
		// the user gets a fresh one. The form's cookie not coming back
		// would bring them back here at every try: they are told why.
		reason, hint, msg := h.flowFailure(r, err)
		attrs := []slog.Attr{slog.String("idp", id), slog.String("reason", reason)}
		if hint != "" {
			attrs = append(attrs, slog.String("hint", hint))
		}
		switch {
		case errors.Is(err, session.ErrFlowMissing) && !h.carriesOwnCookie(r):
			// A form left open past its state's lifetime, in a browser
			// with no other cookie of ours, looks just like a browser that
			// keeps none: both are told, and a second try tells which.
			msg = "This sign-in form has expired, or your browser did not send back the cookie it came with. Enter your password again; " +
				"if this page comes back at once, open this application at " + h.cfg.Server.PublicURL + " and make sure your browser accepts its cookies."
		case errors.Is(err, session.ErrFlowMissing) || hint == "":
			// Its state used (a reload of the form's answer, a form of
			// another tab's) or gone: the fresh form below is the way on.
			msg = "This sign-in form has expired. Enter your password again."
		}
		h.audit(r, slog.LevelWarn, "login_failed", append(attrs, slog.Any("err", err))...)
		h.showLDAPForm(w, r, p, h.safeRedirect(r.PostForm.Get("rd")), http.StatusBadRequest, username, msg)
		return
	}

	device := h.devices.Find(r, id, userKey(id, username))
	prof, account, wait, err := h.checkPassword(r, p, checker, username, password, device)
	var refused *idp.AccountError
	switch {
	case errors.Is(err, errRateLimited):
		h.tooManyAttempts(w, r, p, f.Redirect, wait)
	case errors.As(err, &refused):
		// The password was right; the account cannot sign in as it is.
		h.showLDAPForm(w, r, p, f.Redirect, http.StatusUnauthorized, username, refused.Reason)
	case errors.Is(err, idp.ErrInvalidCredentials):
		h.showLDAPForm(w, r, p, f.Redirect, http.StatusUnauthorized, username, "Wrong username or password.")
	case err != nil:
		h.directoryUnavailable(w, r, p, err)
	default:
		h.trustDevice(w, p, username, account)
		h.establish(w, r, prof, nil, f.Redirect, start)
	}
}

// trustDevice gives the browser whose password login as username to
// account (accountKey) just succeeded a fresh device cookie for them
// (OWASP: a new one at every successful login), sent back only to the
// form of p, which posts to the path it is shown at. The password was
// right, which is all the cookie vouches for: it is set even if the login
// is then refused (admission, role mapping).
func (h *Handler) trustDevice(w http.ResponseWriter, p *provider, username, account string) {
	id := p.cfg.ID
	if err := h.devices.Issue(w, h.ldapFormPath(id, ""), id, userKey(id, username), account); err != nil {
		h.log.Error("login: no device cookie set", "idp", id, "err", err)
	}
}

// tooManyAttempts answers 429 with Retry-After.
func (h *Handler) tooManyAttempts(w http.ResponseWriter, r *http.Request, p *provider, rd string, wait time.Duration) {
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	h.pages.failWithLink(w, r, http.StatusTooManyRequests, "Too many attempts",
		"There were too many failed sign-ins for this account or from your network. Try again later, in about "+humanWait(secs)+".",
		h.ldapFormPath(p.cfg.ID, rd), "Back to sign-in")
}

// directoryUnavailable answers 503: the password could not be checked,
// because of err. A directory that refuses the configuration's service
// account or base DN will not mend by waiting, and the user is told whom to
// tell.
func (h *Handler) directoryUnavailable(w http.ResponseWriter, r *http.Request, p *provider, err error) {
	retryLater(w)
	if _, setup := errors.AsType[*idp.SetupError](err); setup {
		h.pages.fail(w, r, http.StatusServiceUnavailable, "Directory unavailable",
			p.cfg.DisplayName()+" cannot check passwords: sign-in with it is not set up right. Tell your administrator, with the request ID below.")
		return
	}
	h.pages.fail(w, r, http.StatusServiceUnavailable, "Directory unavailable",
		p.cfg.DisplayName()+" cannot check passwords right now: the directory is unavailable. Try again in a moment.")
}

func humanWait(secs int) string {
	switch {
	case secs <= 60:
		return "a minute"
	case secs < 90*60:
		return strconv.Itoa((secs+59)/60) + " minutes"
	}
	return strconv.Itoa((secs+3599)/3600) + " hours"
}

// hasBasicCredentials reports whether any Authorization line of r says
// Basic, read as leniently as an upstream may read it (Django REST
// framework takes the value's first word, whatever white space follows):
// on a basic_auth rule such credentials are the user's directory password,
// for the proxy to check or refuse and never to pass on beside a session.
func hasBasicCredentials(r *http.Request) bool {
	for _, auth := range r.Header.Values("Authorization") {
		if words := strings.Fields(auth); len(words) > 0 && strings.EqualFold(words[0], "basic") {
			return true
		}
	}
	return false
}

// serveBasic is the pipeline for a request that a basic_auth rule matched
// and that carries Authorization: Basic: the credentials are checked at
// the rule's LDAP IdP (or found in the cache of recent checks) instead of
// a session; then, as in serve, allow_if and the attribute pass. The
// credentials themselves do not go upstream.
func (h *Handler) serveBasic(w http.ResponseWriter, r *http.Request, rule *rules.Rule, req *rules.Request, o *outcome) string {
	prof, key, decision := h.basicIdentity(w, r, rule.Config.BasicAuth)
	if prof == nil {
		return decision
	}
	o.setUser(prof)
	allowed, err := rule.Allow(prof, req, h.now())
	if err != nil {
		h.log.Warn("allow_if failed; refusing", "rule", rule.Name, "at", rules.FailedAt(err))
	}
	if !allowed {
		h.pages.fail(w, r, http.StatusForbidden, "Access denied", "Your account does not have access to this page.")
		return decisionForbidden
	}
	r.Header.Del("Authorization")
	// The identity worked out when the credentials were checked
	// (basicRoles), remembered as a session's is: the expressions run and
	// the assertion is signed once, not at every request of the client.
	return h.forwardAs(w, r, key, prof)
}

// basicIdentityKey is the key under which the attribute pass remembers the
// identity of the Basic credentials whose cache key is k; no session ID
// (URL-safe base64) has its ':'.
func basicIdentityKey(k [32]byte) string { return "basic:" + string(k[:]) }

// basicCheck is the outcome of checking one set of Basic credentials at
// the directory (tryPassword's results).
type basicCheck struct {
	prof *idp.Profile
	wait time.Duration
	err  error
	// took is how long the check itself took, and counted whether one of
	// the requests that share it counted its login, let in or denied: one
	// login, however many requests wait for it (as its failures are
	// counted, once). See countBasicLogin.
	took    time.Duration
	counted *atomic.Bool
}

// basicIdentity checks the request's Basic credentials at IdP id, returning
// the user with roles mapped and the key its identity is remembered under
// (basicIdentityKey); or nil after answering the request.
//
// Requests that bring the same credentials while they are being checked
// share that check (an API client that opens many connections at once,
// before the cache has them): one attempt at the failure limits and one
// bind, where each request's own would be counted before it is made and
// all but five refused 429, the right password too. Credentials are told
// apart by their cache key, never by the password itself. The check runs
// in a goroutine of its own, on a copy of the request that began it
// detached from its cancellation, so that the others' outcome does not
// depend on that client staying; the directory's own timeouts bound it
// (idp's connection pool and operations). Each request waits for the
// outcome only while its own client is there: one that goes away is
// answered 499 at once and leaves the check, and its counting, to the
// others. A refusal is answered no sooner than the floor after each
// request's own start.
func (h *Handler) basicIdentity(w http.ResponseWriter, r *http.Request, id string) (_ *idp.Profile, key, decision string) {
	p, checker, ok := h.passwordProvider(id)
	if !ok {
		// check refuses such a config; this is a safety net.
		h.log.Error("basic_auth names no password IdP", "idp", id)
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal", "message": "basic_auth is misconfigured"})
		return nil, "", decisionInternal
	}
	// Of several Authorization lines, the upstream might read another
	// than the one checked.
	username, password, ok := r.BasicAuth()
	if !ok || len(r.Header.Values("Authorization")) != 1 {
		return nil, "", h.basicChallenge(w, p, "malformed Basic credentials")
	}
	cache := h.passwords.cache
	k := cache.key(id, username, password)
	key = basicIdentityKey(k)
	start := h.now()
	if prof, refused, ok := cache.get(k, start); ok {
		if !h.roles.ReadsClock() {
			return prof, key, ""
		}
		// A role until a date ends at that date, as a session's does
		// (authorize), not up to basicAuthTTL after it. The refusal is
		// counted once for the entry, as its check's outcome was.
		prof = new(*prof)
		if decision := h.basicRoles(w, id, key, prof, &basicCheck{counted: refused}); decision != "" {
			return nil, "", decision
		}
		return prof, key, ""
	}
	// A clone: the request that began the check may have been answered
	// before the check ends.
	detached := r.Clone(context.WithoutCancel(r.Context()))
	outcome := h.passwords.checks.DoChan(string(k[:]), func() (any, error) {
		return h.sharedCheck(detached, p, checker, username, password), nil
	})
	var check basicCheck
	select {
	case res := <-outcome:
		check = res.Val.(basicCheck)
	case <-r.Context().Done():
		// Nobody reads the answer; the status tells the access log
		// (nginx's and Caddy's "client closed request").
		w.WriteHeader(statusClientClosed)
		return nil, "", decisionUnauthorized
	}
	wait, err := check.wait, check.err
	switch {
	case errors.Is(err, errRateLimited):
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "too_many_attempts", "message": "too many failed logins; try again later"})
		return nil, "", decisionUnauthorized
	case errors.Is(err, idp.ErrInvalidCredentials):
		h.pause(r.Context(), p.pace.answerAt(start))
		return nil, "", h.basicChallenge(w, p, "wrong username or password")
	case err != nil:
		retryLater(w)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "directory_unavailable", "message": "the directory cannot check passwords right now"})
		return nil, "", decisionInternal
	}
	prof := new(*check.prof) // each request maps roles onto its own copy
	if decision := h.basicRoles(w, id, key, prof, &check); decision != "" {
		return nil, "", decision
	}
	h.countBasicLogin(id, "success", &check)
	cache.put(k, prof, h.now())
	return prof, key, ""
}

// countBasicLogin counts the login of a Basic auth check at IdP id as
// result: once for all the requests that share check, as its failures are
// counted (tryPassword, in the check), timed from the check's start as a
// form login is. A profile from the cache is no login when it is let in
// (its check counted one); when the role mapping refuses it now (a role
// until a date), check is its cache entry's, and the refusal counts once
// for the entry, not once per request of the client.
func (h *Handler) countBasicLogin(id, result string, check *basicCheck) {
	if check.counted.CompareAndSwap(false, true) {
		h.metrics.login(id, result, check.took)
	}
}

// basicRoles applies IdP id's admission rules to prof, the caller's own
// copy, sets its roles and works out its identity, remembered under key
// (basicIdentityKey); it returns "", or the decision after answering the
// request when they refuse it, counted as check's login (countBasicLogin).
func (h *Handler) basicRoles(w http.ResponseWriter, id, key string, prof *idp.Profile, check *basicCheck) string {
	if reason := h.admit(prof); reason != "" {
		h.countBasicLogin(id, "denied", check)
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "access_denied", "message": reason})
		return decisionForbidden
	}
	roles, err := h.roles.Map(prof)
	if errors.Is(err, rolemap.ErrNoRole) {
		h.countBasicLogin(id, "denied", check)
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "access_denied", "message": "your account has no role in this application"})
		return decisionForbidden
	}
	if err != nil {
		h.log.Error("role mapping failed", "idp", id, "err", err)
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal", "message": "your roles could not be determined"})
		return decisionInternal
	}
	prof.Roles = roles
	if refused := h.unpassable(key, prof); refused != nil {
		// As the form's login refuses it (establish), in the JSON of
		// Basic auth's other refusals.
		h.countBasicLogin(id, "denied", check)
		h.log.Info("login denied", "idp", id, "sub", prof.Sub, "email", prof.Email, "why", whyUnpassable,
			"reason", refused.Reason, "hint", refused.Hint, "via", "basic_auth")
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "access_denied", "message": refused.Reason})
		return decisionForbidden
	}
	return ""
}

// statusClientClosed records a request whose client went away before it
// could be answered.
const statusClientClosed = 499

// sharedCheck is tryPassword for the requests that share one Basic auth
// check, in singleflight's goroutine. A panic there would end the process
// (singleflight re-panics it where nothing can recover it, not in a
// request's goroutine, which net/http would recover): it is a 503 instead.
func (h *Handler) sharedCheck(r *http.Request, p *provider, checker idp.PasswordChecker, username, password string) (check basicCheck) {
	defer func() {
		if v := recover(); v != nil {
			h.log.Error("password check panicked", "idp", p.cfg.ID, "panic", v, "stack", string(debug.Stack()))
			check = basicCheck{err: fmt.Errorf("ldap %s: check panicked: %v", p.cfg.ID, v)}
		}
	}()
	// API clients keep no cookies: no device cookie vouches for them.
	start := h.now()
	prof, _, wait, err := h.tryPassword(r, p, checker, username, password, session.Device{})
	return basicCheck{prof: prof, wait: wait, err: err, took: h.now().Sub(start), counted: new(atomic.Bool)}
}

// basicChallenge answers 401 asking for Basic credentials for p.
func (h *Handler) basicChallenge(w http.ResponseWriter, p *provider, msg string) string {
	realm := strings.NewReplacer(`"`, "", `\`, "").Replace(p.cfg.DisplayName())
	w.Header().Set("WWW-Authenticate", `Basic realm="`+realm+`", charset="UTF-8"`)
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized", "message": msg})
	return decisionUnauthorized
}

// basicCache remembers successful Basic auth checks briefly, so that an
// API client's every request does not cost the directory a bind. Entries
// are keyed by an HMAC of IdP, username and password under a key made at
// start: neither the password nor an unsalted hash of it is kept.
type basicCache struct {
	secret  [32]byte
	ttl     time.Duration
	max     int
	mu      sync.Mutex
	entries map[[32]byte]basicEntry
	// bytes is the Footprint of the profiles in entries, which it keeps
	// within maxBasicAuthBytes: a user whose password is right can sign in
	// under as many spellings of the username as the directory accepts
	// (case, spaces), each an entry with a copy of the groups of its own.
	bytes int
	// sweepAt is how many entries there are when the stale ones are next
	// forgotten (minSweep).
	sweepAt int
}

type basicEntry struct {
	profile *idp.Profile
	expires time.Time
	size    int // the profile's Footprint
	// refused is set once a request with these credentials was refused
	// and counted as a denied login (countBasicLogin).
	refused *atomic.Bool
}

func newBasicCache(ttl time.Duration, max int) *basicCache {
	c := &basicCache{ttl: ttl, max: max, entries: map[[32]byte]basicEntry{}, sweepAt: minSweep}
	rand.Read(c.secret[:])
	return c
}

func (c *basicCache) key(id, username, password string) [32]byte {
	m := hmac.New(sha256.New, c.secret[:])
	// Lengths first: no two (id, username, password) triples share an input.
	fmt.Fprintf(m, "%d:%d:%d:", len(id), len(username), len(password))
	m.Write([]byte(id + username + password))
	var k [32]byte
	m.Sum(k[:0])
	return k
}

// get returns a copy of the profile cached under k, if still fresh, and
// whether a refusal of it was counted (basicEntry.refused).
func (c *basicCache) get(k [32]byte, now time.Time) (*idp.Profile, *atomic.Bool, bool) {
	c.mu.Lock()
	e, ok := c.entries[k]
	c.mu.Unlock()
	if !ok || !now.Before(e.expires) {
		return nil, nil, false
	}
	p := *e.profile
	return &p, e.refused, true
}

func (c *basicCache) put(k [32]byte, p *idp.Profile, now time.Time) {
	size := p.Footprint()
	if size > maxBasicAuthBytes/16 {
		return // checked at every request rather than pushing out a sixteenth of the cache
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Each entry holds a profile, groups included: swept only once max
	// are held, every set of credentials that signed in since the start
	// would stay.
	if len(c.entries) >= c.sweepAt {
		c.forgetStale(now)
		c.sweepAt = max(2*len(c.entries), minSweep)
	}
	if old, ok := c.entries[k]; ok {
		c.bytes -= old.size
		delete(c.entries, k)
	}
	if len(c.entries) >= c.max || c.bytes+size > maxBasicAuthBytes {
		c.forgetStale(now)
		// Still full: drop arbitrary entries; each only costs a bind.
		for key, e := range c.entries {
			if len(c.entries) < c.max && c.bytes+size <= maxBasicAuthBytes {
				break
			}
			c.bytes -= e.size
			delete(c.entries, key)
		}
	}
	saved := *p
	c.entries[k] = basicEntry{profile: &saved, expires: now.Add(c.ttl), size: size, refused: new(atomic.Bool)}
	c.bytes += size
}

// forgetStale forgets the entries past their time; c.mu is held.
func (c *basicCache) forgetStale(now time.Time) {
	for key, e := range c.entries {
		if !now.Before(e.expires) {
			c.bytes -= e.size
			delete(c.entries, key)
		}
	}
}

// checkBasicAuth refuses basic_auth rules that name no LDAP IdP.
func checkBasicAuth(cfg *Config, p *problems) {
	protocols := map[string]string{}
	for _, ic := range cfg.SSO.IdentityProviders {
		protocols[ic.ID] = ic.Protocol
	}
	for i, rc := range cfg.Rules {
		if rc.BasicAuth == "" {
			continue
		}
		key := fmt.Sprintf("rules[%d].basic_auth", i)
		switch proto, ok := protocols[rc.BasicAuth]; {
		case !ok:
			p.add(key, "no identity provider %q in sso.identity_providers", rc.BasicAuth)
		case proto != idp.LDAP:
			p.add(key, "%q uses protocol %s; basic_auth needs an LDAP identity provider, which can check passwords", rc.BasicAuth, proto)
		}
	}
}
