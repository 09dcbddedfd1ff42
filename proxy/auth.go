package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/rolemap"
)

// provider is one configured identity provider with the protocol
// implementation behind it.
type provider struct {
	cfg  idp.Config
	impl idp.Provider
	// pace is how long its refused password checks take (failuredelay.go).
	pace *failurePace
	// missingWarned holds the sets of claims left out (idp.Profile.Missing)
	// that a warning was written for already: one a set, not one a login.
	missingWarned sync.Map
}

// answersByPost reports whether p's IdP answers the proxy with a cross-site
// POST (SAML's HTTP-POST binding, at the ACS and the SLO endpoint), which
// browsers send SameSite=None cookies with only: its login states must be
// None, any other's are Lax (session.Flows.Start).
func (p *provider) answersByPost() bool {
	return p.cfg.Protocol == idp.SAML
}

// metadataServer is a provider that publishes metadata about the proxy as
// its client (SAML SP metadata).
type metadataServer interface {
	Metadata() ([]byte, error)
}

// authRoutes are the proxy's own endpoints under server.auth_prefix.
func (h *Handler) authRoutes() http.Handler {
	p := h.cfg.Server.AuthPrefix
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+p+"/login", h.login)
	mux.HandleFunc("POST "+p+"/login", h.loginByEmail)
	mux.HandleFunc("GET "+p+"/login/{idp}", h.startLogin)
	mux.HandleFunc("GET "+p+"/oidc/{idp}/callback", h.oidcCallback)
	mux.HandleFunc("POST "+p+"/oidc/{idp}/backchannel-logout", h.backchannelLogout) // backchannel.go
	mux.HandleFunc("POST "+p+"/saml/{idp}/acs", h.samlACS)
	mux.HandleFunc("GET "+p+"/saml/{idp}/acs", h.samlAnswerAgain)
	mux.HandleFunc("GET "+p+"/saml/{idp}/metadata", h.samlMetadata)
	mux.HandleFunc("GET "+p+"/saml/{idp}/slo", h.samlSLO) // saml_logout.go
	mux.HandleFunc("POST "+p+"/saml/{idp}/slo", h.samlSLO)
	mux.HandleFunc("GET "+p+"/ldap/{idp}", h.ldapForm)
	mux.HandleFunc("POST "+p+"/ldap/{idp}", h.ldapLogin)
	mux.HandleFunc("GET "+p+"/logout", h.logout)
	mux.HandleFunc("POST "+p+"/logout", h.logout)
	mux.HandleFunc("GET "+p+"/logout/done", h.logoutDone)
	mux.HandleFunc("GET "+p+"/logout/confirm", h.confirmLogout)
	mux.HandleFunc("GET "+p+"/userinfo", h.userinfo)
	mux.HandleFunc("GET "+p+"/jwks.json", h.jwks)
	mux.HandleFunc(p+"/", func(w http.ResponseWriter, r *http.Request) {
		h.pages.fail(w, r, http.StatusNotFound, "Not found", "There is no such page.")
	})
	return mux
}

// login starts a login: straight at the one IdP the selection mode picks, or
// with a page that lets the user pick.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	if h.loginLoop(w, r) {
		return
	}
	rd := r.URL.Query().Get("rd")
	if len(h.order) == 1 || h.cfg.SSO.SelectionMode == SelectLowestWeight {
		best := h.order[0]
		for _, p := range h.order[1:] {
			if p.cfg.Weight < best.cfg.Weight {
				best = p
			}
		}
		http.Redirect(w, r, h.startPath(best.cfg.ID, rd), http.StatusFound)
		return
	}
	if h.cfg.SSO.SelectionMode == SelectEmailAddress {
		h.pages.emailForm(w, http.StatusOK, rd, "", "")
		return
	}
	h.pages.chooser(w, r, h.order, rd)
}

// loginByEmail picks the IdP by the domain of the email address the user
// gave, when there is more than one to pick from.
func (h *Handler) loginByEmail(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		h.pages.fail(w, r, formStatus(err), "Bad request", "The form could not be read.")
		return
	}
	email, rd := strings.TrimSpace(r.PostForm.Get("email")), r.PostForm.Get("rd")
	if len(h.order) == 1 {
		// The address picks nothing, as at GET /login, which sends every
		// user to the one IdP without asking (its email_domain, if any,
		// keeps no one out: allowed_email_domains does).
		http.Redirect(w, r, h.startPath(h.order[0].cfg.ID, rd), http.StatusSeeOther)
		return
	}
	at := strings.LastIndex(email, "@")
	domain := strings.TrimSuffix(email[at+1:], ".")
	// The domain is named on the page when no IdP has it: only a domain
	// name, never prose that a cross-site form posted to show on this
	// origin ("x@example.com. Your account is locked; call ...").
	if at <= 0 || len(domain) > 253 || !domainName.MatchString(domain) {
		h.pages.emailForm(w, http.StatusBadRequest, rd, email, "Enter your full email address, like name@company.com.")
		return
	}
	for _, p := range h.order {
		if idp.SameDomain(p.cfg.EmailDomain, domain) {
			http.Redirect(w, r, h.startPath(p.cfg.ID, rd), http.StatusSeeOther)
			return
		}
	}
	h.pages.emailForm(w, http.StatusBadRequest, rd, email, "There is no sign-in for the domain "+domain+". Check the address, or ask your administrator.")
}

// domainName is a domain name as an email address has it, IDNs included.
var domainName = regexp.MustCompile(`^[\p{L}\p{N}-]+(\.[\p{L}\p{N}-]+)*$`)

func (h *Handler) startPath(id, rd string) string {
	return withRedirect(h.cfg.Server.AuthPrefix+"/login/"+url.PathEscape(id), rd)
}

// startLogin sends the browser to the IdP, remembering the login in a sealed
// cookie bound to this browser and this IdP (SPEC invariant 7).
func (h *Handler) startLogin(w http.ResponseWriter, r *http.Request) {
	p := h.providers[r.PathValue("idp")]
	if p == nil {
		h.pages.fail(w, r, http.StatusNotFound, "Unknown sign-in", "There is no such sign-in method.")
		return
	}
	if h.startedByAnotherSite(w, r, p.cfg.ID) || h.loginLoop(w, r) {
		return
	}
	rd := h.safeRedirect(r.URL.Query().Get("rd"))
	if _, ok := p.impl.(idp.PasswordChecker); ok {
		http.Redirect(w, r, h.ldapFormPath(p.cfg.ID, rd), http.StatusFound) // the login form (ldap.go)
		return
	}
	redirector, ok := p.impl.(idp.Redirector)
	if !ok {
		h.pages.fail(w, r, http.StatusNotFound, "Unknown sign-in", "This sign-in method has no login page yet.")
		return
	}
	if err := p.impl.Ready(); err != nil {
		h.log.Warn("login at an IdP that is not ready", "idp", p.cfg.ID, "err", err)
		retryLater(w)
		h.pages.fail(w, r, http.StatusServiceUnavailable, "Temporarily unavailable",
			p.cfg.DisplayName()+" cannot be reached right now. Try again in a moment.")
		return
	}
	f := &idp.Flow{State: session.NewState(), IdP: p.cfg.ID, Redirect: rd, Created: h.now().Unix()}
	target, err := redirector.LoginURL(f)
	if err == nil {
		err = h.startFlow(w, r, session.LoginFlow, f, p.answersByPost())
	}
	if err != nil {
		h.log.Error("cannot start login", "idp", p.cfg.ID, "err", err)
		h.pages.fail(w, r, http.StatusInternalServerError, "Internal error", "The sign-in could not be started.")
		return
	}
	http.Redirect(w, r, target, http.StatusFound)
}

// startFlow starts flow f (session.Flows.Start). A page to go back to too
// long for the flow's cookie (a query of kilobytes: rd may have 4096
// bytes, the cookie holds about half that) is given up for less rather
// than the login: the same page without its query, else public_url's
// root. f.Redirect is then the one kept. The IdP's URL does not hold it,
// so one built from f already stays right.
func (h *Handler) startFlow(w http.ResponseWriter, r *http.Request, kind session.FlowKind, f *idp.Flow, postedCrossSite bool) error {
	err := h.flows.Start(w, r, kind, f, postedCrossSite)
	for _, less := range h.shorterRedirects(f.Redirect) {
		if !errors.Is(err, session.ErrFlowTooLarge) {
			break
		}
		h.log.Info("login: the page to go back to is too long to keep through the sign-in; going back to a shorter one",
			"idp", f.IdP, "kind", kind, "length", len(f.Redirect), "to", less)
		f.Redirect = less
		err = h.flows.Start(w, r, kind, f, postedCrossSite)
	}
	return err
}

// shorterRedirects are what startFlow tries in place of rd, a safeRedirect
// result, in order: rd without its query, and public_url's root.
func (h *Handler) shorterRedirects(rd string) []string {
	home := h.safeRedirect("")
	if rd == "" || rd == home {
		return nil
	}
	if path, _, ok := strings.Cut(rd, "?"); ok && path != home {
		return []string{path, home}
	}
	return []string{home}
}

// startedByAnotherSite answers 403, and reports true, for a request that
// would start a login at IdP id, and set its login state, but that another
// site's page had the browser send as anything but a top-level navigation:
// an <img>, a frame, a script's fetch or form post. Each would leave a
// login state in the browser (SAML's are SameSite=None, which such loads
// set), and a handful expire the user's real login in progress
// (session.Flows keeps 8). A link, a redirect or a bookmark from anywhere
// still starts one, and so does every request of a client that does not
// say where it comes from (curl, browsers without Sec-Fetch-*).
func (h *Handler) startedByAnotherSite(w http.ResponseWriter, r *http.Request, id string) bool {
	if !fromAnotherSitesPage(r) {
		return false
	}
	h.loginNotStarted(w, r, id)
	return true
}

// loginNotStarted answers 403 to a request that another site's page sent to
// start or finish a login at IdP id, and audits it.
func (h *Handler) loginNotStarted(w http.ResponseWriter, r *http.Request, id string) {
	h.audit(r, slog.LevelInfo, "login_not_started", slog.String("idp", id), slog.String("reason", "another_site"),
		slog.String("sec_fetch_site", r.Header.Get("Sec-Fetch-Site")), slog.String("sec_fetch_dest", r.Header.Get("Sec-Fetch-Dest")))
	h.pages.fail(w, r, http.StatusForbidden, "Sign-in not started",
		"Another site's page tried to start a sign-in here. To sign in, open this application in your browser.")
}

// sentByAnotherSite reports whether the browser says that another site's
// page, or a sibling subdomain's, sent r: a link, a redirect, a form, a frame
// or a subresource. A request the user typed or bookmarked (Sec-Fetch-Site:
// none), or a page of this origin sent, is not, and neither is one from a
// client that does not say where it comes from (curl, browsers without
// Sec-Fetch-*).
func sentByAnotherSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return true
	}
	return false
}

// fromAnotherSitesPage reports whether the browser sent r for a page of
// another site, or of a sibling subdomain (Sec-Fetch-Site), as anything
// but the top-level document (Sec-Fetch-Dest): a subresource or a frame.
// Requests that say neither are not.
func fromAnotherSitesPage(r *http.Request) bool {
	dest := r.Header.Get("Sec-Fetch-Dest")
	return sentByAnotherSite(r) && dest != "" && dest != "document"
}

// oidcCallback is where OIDC and OAuth2 providers send the browser back.
func (h *Handler) oidcCallback(w http.ResponseWriter, r *http.Request) {
	h.finishRedirect(w, r, r.URL.Query().Get("state"), false)
}

// maxACSForm bounds the form posted to the ACS. The largest response the
// idp package takes is 256 KiB of XML, 342 KiB in base64, with a RelayState
// of 80 bytes beside it; more is no answer to read, and a post waiting for
// a check slot (samlchecks.go) holds its form meanwhile.
const maxACSForm = 512 << 10

// samlACS is the SAML assertion consumer service (HTTP-POST binding).
func (h *Handler) samlACS(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxACSForm)
	if err := r.ParseForm(); err != nil {
		h.pages.fail(w, r, formStatus(err), "Bad request", "The sign-in answer was too large or malformed.")
		return
	}
	h.finishRedirect(w, r, r.PostForm.Get("RelayState"), true)
}

// samlAnswerAgain is the ACS loaded with GET: where an answer posted again
// from the IdP's site is sent on (finishRedirect), or the ACS's page in the
// browser's history. A signed-in browser goes on to the application, as
// for an OIDC callback loaded again; any other gets the page of an answer
// whose login state did not come back.
func (h *Handler) samlAnswerAgain(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("idp")
	p := h.providers[id]
	if p == nil || p.cfg.Protocol != idp.SAML {
		h.pages.fail(w, r, http.StatusNotFound, "Unknown sign-in", "There is no such sign-in method.")
		return
	}
	if h.signedIn(r) {
		h.log.Info("login answer for a browser already signed in", "idp", id, "err", session.ErrFlowMissing)
		http.Redirect(w, r, h.safeRedirect(""), http.StatusSeeOther)
		return
	}
	reason, hint, msg := h.flowFailure(r, session.ErrFlowMissing)
	h.loginFailed(w, r, id, reason, session.ErrFlowMissing, http.StatusBadRequest, msg, hint)
}

// finishRedirect completes a login at a Redirector: the flow is opened from
// this browser's cookie (single use), must belong to the IdP whose callback
// this is, and the IdP's answer is checked against it.
func (h *Handler) finishRedirect(w http.ResponseWriter, r *http.Request, state string, saml bool) {
	id := r.PathValue("idp")
	p := h.providers[id]
	redirector, ok := p.implAsRedirector()
	if p == nil || !ok || (p.cfg.Protocol == idp.SAML) != saml {
		h.pages.fail(w, r, http.StatusNotFound, "Unknown sign-in", "There is no such sign-in method.")
		return
	}
	start := h.now()
	f, mark, err := h.flows.Finish(w, r, session.LoginFlow, state)
	var flowErr error // why an answer read as IdP-initiated had no login state
	switch {
	case errors.Is(err, session.ErrUnavailable):
		h.storeUnavailable(w, r, id, err)
		return
	case err != nil && saml && p.cfg.AllowIdPInitiated:
		f = nil // IdP-initiated: the provider checks the assertion has no InResponseTo
		flowErr = err
	case err != nil && saml && !session.IsState(state):
		// No login of ours has this RelayState (none, or the IdP's own):
		// the IdP started it, from its portal, which this entry refuses.
		h.loginFailed(w, r, id, "saml_idp_initiated", err, http.StatusBadRequest,
			"This sign-in was started at "+p.cfg.DisplayName()+", which this application does not accept. Open the application and sign in from there.",
			"the IdP started this login itself (its application portal, a tile or bookmark there), with no request from the proxy: "+
				"set allow_idp_initiated: true on this entry to accept such logins (docs/saml.md), or have users start at the application")
		return
	case err != nil:
		h.answerWithoutLogin(w, r, id, saml, err)
		return
	case f.IdP != id:
		// A callback at one IdP for a login started at another: a mix-up attack.
		h.loginFailed(w, r, id, "idp_mismatch", errors.New("flow belongs to "+f.IdP), http.StatusBadRequest,
			"This sign-in was started somewhere else. Start again.")
		return
	}
	rd := ""
	if f != nil { // nil for an IdP-initiated SAML login: it was going nowhere in particular
		rd = f.Redirect
	}
	profile, tokens, err := h.complete(redirector, r, f, saml)
	if err != nil && f != nil {
		if err := h.flows.Release(r.Context(), mark); err != nil {
			h.log.Warn("failed login state not released", "idp", id, "err", err)
		}
	}
	if errors.Is(err, session.ErrUnavailable) {
		// The answer may be sound: Redis failed to record its assertion.
		h.storeUnavailable(w, r, id, err)
		return
	}
	if errors.Is(err, errChecksBusy) {
		// The answer was not looked at, and its login state is released:
		// posted again once there is room, it may well be accepted.
		retryLater(w)
		h.loginFailed(w, r, id, "busy", err, http.StatusServiceUnavailable,
			"Too many sign-ins are being checked right now. Try again in a moment.")
		return
	}
	if errors.Is(err, errLeftWaiting) {
		w.WriteHeader(statusClientClosed) // nobody reads the answer
		return
	}
	var refused *idp.AdmissionError
	if errors.As(err, &refused) {
		// The IdP vouched for the user, but what it sent cannot be used here
		// (Entra ID's group overage): the user gets the reason and what to do.
		h.accessDenied(w, r, &idp.Profile{IdP: id}, refused.Rule, refused.Reason, refused.Hint)
		return
	}
	var answered *idp.CallbackError
	if errors.As(err, &answered) {
		status, msg := idpErrorPage(p.cfg.DisplayName(), answered.Code)
		// Signing in again leads where this login was going.
		h.loginFailedAt(w, r, id, "idp_error", err, status, msg, "", rd)
		return
	}
	if _, deep := errors.AsType[*idp.ClaimsTooDeepError](err); deep {
		// The IdP vouched for the user with a claim too deep to hold: not
		// cut down to size, which would map roles from what the IdP did not say.
		h.loginFailed(w, r, id, "claims_too_deep", err, http.StatusBadGateway,
			"Your account at "+p.cfg.DisplayName()+" carries details nested deeper than a sign-in here accepts. "+
				"Tell your administrator, with the request ID below.",
			fmt.Sprintf("the IdP sent the claim that err names nested more than %d levels of objects and arrays deep, far beyond any IdP's own claims; "+
				"claims are sealed into the session and read by every expression: have the IdP stop releasing it to this client "+
				"(the scope that carries it, a mapper, a user-editable attribute), or flatten it", idp.MaxClaimDepth))
		return
	}
	if idpNotAnswering(err) {
		h.idpUnavailable(w, r, p, err, rd)
		return
	}
	if setup, ok := errors.AsType[*idp.SetupError](err); ok {
		h.setupFailed(w, r, p, setup)
		return
	}
	if flowErr != nil && errors.Is(err, idp.ErrAnswersRequest) && session.IsState(state) {
		// No IdP-initiated login holds, for it answers a request, and the
		// RelayState is one the proxy makes: the answer to a login started
		// here whose state did not come back (a cross-site post to a
		// public_url on plain http, the back button, another browser).
		// Said as such, as at an entry that refuses IdP-initiated logins,
		// not as the InResponseTo that no login state was there to match.
		// Only then: whoever posts an answer chooses its RelayState, and
		// one refused for anything else (a replay, a signature) stays
		// that failure, at WARN, for any RelayState.
		h.log.Info("saml answer is no IdP-initiated login either", "idp", id, "err", err)
		h.answerWithoutLogin(w, r, id, saml, flowErr)
		return
	}
	if err != nil {
		h.loginFailed(w, r, id, "idp", err, http.StatusForbidden, "The sign-in could not be completed.")
		return
	}
	h.establish(w, r, profile, tokens, rd, start)
}

// answerWithoutLogin answers an IdP's answer for which no login state of
// this browser's opened (err, from session.Flows.Finish).
func (h *Handler) answerWithoutLogin(w http.ResponseWriter, r *http.Request, id string, saml bool, err error) {
	switch {
	case saml && h.cookies.Secure && errors.Is(err, session.ErrFlowMissing) &&
		r.Header.Get("Sec-Fetch-Site") == "cross-site" && !h.carriesOwnCookie(r):
		// The answer came again from the IdP's site (the back button, a
		// reload of the IdP's answer page), with no login state of ours,
		// and without the session cookie, which is SameSite=Lax: whether
		// this browser is signed in cannot be told from this post. The
		// GET it is sent on to carries that cookie, and nothing of the
		// answer: it is refused here, and nothing is signed in by it.
		http.Redirect(w, r, r.URL.Path, http.StatusSeeOther)
	case errors.Is(err, session.ErrFlowMissing) && h.signedIn(r):
		// The answer came again (the back button, a reload, a bookmark of
		// the callback) to a browser that is signed in: its login spent
		// the state, and its cookie, already. Nothing is signed in by it;
		// the user goes on to the application rather than to an error
		// about a login that worked. Only without the cookie: one that
		// came back and was refused (forged, spent and sent again, another
		// state's) is no browser's doing, and stays a failure at WARN.
		h.log.Info("login answer for a browser already signed in", "idp", id, "err", err)
		http.Redirect(w, r, h.safeRedirect(""), http.StatusSeeOther)
	case err != nil:
		reason, hint, msg := h.flowFailure(r, err)
		h.loginFailed(w, r, id, reason, err, http.StatusBadRequest, msg, hint)
	}
}

// complete has the IdP check its answer: a SAML response only in one of the
// replica's check slots (samlchecks.go), held while Complete runs, not
// while the login state is opened before it or the session saved after.
func (h *Handler) complete(redirector idp.Redirector, r *http.Request, f *idp.Flow, saml bool) (*idp.Profile, *idp.Tokens, error) {
	if !saml {
		return redirector.Complete(r, f)
	}
	if err := h.samlChecks.take(r.Context()); err != nil {
		return nil, nil, err
	}
	defer h.samlChecks.give()
	return redirector.Complete(r, f)
}

// idpErrorPage is the status and the message for an IdP that answered the
// callback with an error code instead of a code (RFC 6749 4.1.2.1, OpenID
// Connect Core 3.1.2.6), in the proxy's words: error_description and codes
// not registered for the authorization endpoint are text from the IdP, or
// from whoever wrote the link, and stay in the log.
func idpErrorPage(name, code string) (int, string) {
	switch code {
	case "access_denied":
		return http.StatusForbidden, "The sign-in at " + name + " was cancelled, or " + name +
			" did not allow it. Sign in again, or ask your administrator for access."
	case "temporarily_unavailable", "server_error":
		return http.StatusBadGateway, name + " could not complete the sign-in. Try again in a moment."
	case "invalid_request", "unauthorized_client", "unsupported_response_type", "invalid_scope",
		"interaction_required", "login_required", "account_selection_required", "consent_required",
		"invalid_request_uri", "invalid_request_object", "request_not_supported", "request_uri_not_supported",
		"registration_not_supported":
		return http.StatusBadGateway, name + " refused the sign-in request (" + code +
			"). Its settings for this application need a change: ask your administrator."
	}
	return http.StatusBadGateway, name + " could not complete the sign-in; ask your administrator."
}

func (p *provider) implAsRedirector() (idp.Redirector, bool) {
	if p == nil {
		return nil, false
	}
	r, ok := p.impl.(idp.Redirector)
	return r, ok
}

// establish turns a verified profile into a session: roles are mapped once,
// here, and kept with it.
func (h *Handler) establish(w http.ResponseWriter, r *http.Request, p *idp.Profile, t *idp.Tokens, rd string, start time.Time) {
	if refused := h.admission(p); refused != nil {
		h.accessDenied(w, r, p, "admission", refused.Reason, refused.Hint)
		return
	}
	roles, err := h.roles.Map(p)
	if errors.Is(err, rolemap.ErrNoRole) {
		h.accessDenied(w, r, p, "no_role", "Your account has no role in this application.", "")
		return
	}
	if err != nil {
		h.loginFailed(w, r, p.IdP, "role_mapping", err, http.StatusInternalServerError, "Your roles could not be determined.")
		return
	}
	p.Roles = roles
	var tokens idp.Tokens
	if t != nil {
		tokens = *t
	}
	s := session.New(*p, tokens, h.cookies)
	if end := tokens.SessionEnd; !end.IsZero() && end.Before(s.Expires) {
		// The IdP bounds the session (SAML's SessionNotOnOrAfter), as
		// Shibboleth's SP and mod_auth_mellon honour it.
		s.Expires = end.Truncate(time.Second)
	}
	// The identity headers, worked out once for the session's requests:
	// a profile they cannot carry is refused now, never a session whose
	// every request fails.
	if refused := h.unpassable(s.ID, &s.Profile); refused != nil {
		h.accessDenied(w, r, p, whyUnpassable, refused.Reason, refused.Hint)
		return
	}
	switch err := h.sessions.Save(w, r, s); {
	case errors.Is(err, session.ErrUnavailable):
		h.storeUnavailable(w, r, p.IdP, err)
		return
	case errors.Is(err, session.ErrTooLarge):
		h.loginFailed(w, r, p.IdP, "session_too_large", err, http.StatusInternalServerError,
			"Your account carries more groups or details than a sign-in here can hold. Ask your administrator.")
		return
	case err != nil:
		h.loginFailed(w, r, p.IdP, "session", err, http.StatusInternalServerError, "Your session could not be saved.")
		return
	}
	// The application's session starts again with the proxy's: one left by
	// a session that ended without /logout (lifetime, idle timeout, a
	// back-channel logout) may be another user's, and CVAT believes its
	// cookie before the identity headers.
	h.clearUpstreamCookies(w)
	h.markSignedIn(w, p.IdP, s.Expires)
	h.metrics.login(p.IdP, "success", h.now().Sub(start))
	h.audit(r, slog.LevelInfo, "login", append([]slog.Attr{slog.String("idp", p.IdP), slog.String("sub", p.Sub),
		slog.String("email", p.Email), slog.Any("roles", roles)}, h.missingClaims(p)...)...)
	if rd == "" {
		rd = h.safeRedirect("")
	}
	http.Redirect(w, r, rd, http.StatusFound)
	h.warnLargeLoginAnswer(w.Header(), p.IdP)
}

// frontHeaderBuffer is the response-header buffer of nginx's and
// ingress-nginx's defaults (proxy_buffer_size, one 4 KiB page): a login
// answer whose status line and headers outgrow it reaches the browser as
// nginx's 502, which nginx logs as "upstream sent too big header", and
// portcullis logs the login as a success.
const frontHeaderBuffer = 4096

// answerOverhead is what Go's server adds to the headers a handler set, on
// a redirect: the status line, Date, Content-Length and the blank line.
const answerOverhead = 96

// warnLargeLoginAnswer logs, once a process, that a login's answer (session
// cookies, chiefly: a profile with many groups) is larger than the header
// buffer of a front proxy with its defaults, and what to set: the browser
// sees only that front's 502 (or, from Apache httpd, a 400 on the cookies
// the next request brings), with nothing of portcullis's in it.
func (h *Handler) warnLargeLoginAnswer(header http.Header, idpID string) {
	size, cookies := answerOverhead, 0
	for name, values := range header {
		for _, v := range values {
			size += len(name) + len(": ") + len(v) + len("\r\n")
			if name == "Set-Cookie" {
				cookies += len(v)
			}
		}
	}
	if size <= frontHeaderBuffer || h.largeLoginWarned.Swap(true) {
		return
	}
	h.log.LogAttrs(context.Background(), slog.LevelWarn, "login: the answer's headers are larger than a front proxy's default buffer",
		slog.String("idp", idpID), slog.Int("header_bytes", size), slog.Int("set_cookie_bytes", cookies),
		slog.String("hint", "behind nginx with its defaults this login fails with 502 and nginx logs \"upstream sent too big header\": "+
			"set proxy_buffer_size 32k, proxy_buffers 8 32k, proxy_busy_buffers_size 64k and large_client_header_buffers 4 32k "+
			"(ingress-nginx: the annotation nginx.ingress.kubernetes.io/proxy-buffer-size: \"32k\" and the ConfigMap's large-client-header-buffers: \"4 32k\"); "+
			"HAProxy's tune.bufsize (16384, of which tune.maxrewrite keeps 1024 free) fails past 15 KB: set 32768; "+
			"Apache httpd's LimitRequestFieldSize (8190) refuses the next request's Cookie past 8 KB with 400 (431 over HTTP/2): set LimitRequestFieldSize 32768; "+
			"or set session.store: redis, whose cookie stays small. See docs/troubleshooting.md"))
}

// admit applies the IdP entry's admission rules (allowed domains, groups,
// verified email) to p; it returns the reason to show the user when they
// refuse, "" when p may go on.
func (h *Handler) admit(p *idp.Profile) string {
	if refused := h.admission(p); refused != nil {
		return refused.Reason
	}
	return ""
}

// admission is admit's refusal whole, with the hint for the operator that
// a login's denied line carries; nil when p may go on.
func (h *Handler) admission(p *idp.Profile) *idp.AdmissionError {
	pr := h.providers[p.IdP]
	if pr == nil {
		return &idp.AdmissionError{Reason: "This sign-in method is no longer configured."}
	}
	err := pr.cfg.Admit(p)
	if err == nil {
		return nil
	}
	var refused *idp.AdmissionError
	if errors.As(err, &refused) {
		return refused
	}
	return &idp.AdmissionError{Reason: "Your account could not be checked."}
}

// accessDenied answers a login that the IdP accepted but this application
// refuses, with the reason on a 403 page; hint, for the operator, goes to
// the log line alone.
func (h *Handler) accessDenied(w http.ResponseWriter, r *http.Request, p *idp.Profile, kind, reason, hint string) {
	h.metrics.login(p.IdP, "denied", 0)
	attrs := []slog.Attr{slog.String("idp", p.IdP), slog.String("sub", p.Sub),
		slog.String("email", p.Email), slog.String("why", kind), slog.String("reason", reason)}
	for _, a := range h.missingClaims(p) {
		if a.Key == "hint" && hint != "" {
			hint += "; " + a.Value.String() // one hint field: a JSON line with the key twice loses one
			continue
		}
		attrs = append(attrs, a)
	}
	if hint != "" {
		attrs = append(attrs, slog.String("hint", hint))
	}
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "login denied", attrs...)
	h.pages.denied(w, r, reason)
}

// missingClaims are the fields of a login's line about the claims its IdP
// left out (idp.Profile.Missing): which, by profile field, the names of
// the claims it did send, never their values, and what to change. The
// first login to leave out a set also writes a warning, which a login's
// info line would not raise: its user gets in, with no email upstream or
// the default role.
func (h *Handler) missingClaims(p *idp.Profile) []slog.Attr {
	missing, pr := p.Missing(), h.providers[p.IdP]
	if len(missing) == 0 || pr == nil {
		return nil
	}
	attrs := []slog.Attr{slog.Any("missing_claims", missing), slog.Any("claims_sent", slices.Sorted(maps.Keys(p.Claims))),
		slog.String("hint", pr.cfg.MissingHint())}
	if _, warned := pr.missingWarned.LoadOrStore(strings.Join(slices.Sorted(maps.Keys(missing)), ","), true); !warned {
		h.log.LogAttrs(context.Background(), slog.LevelWarn, "login: the IdP sent no claim for a profile field",
			append([]slog.Attr{slog.String("idp", p.IdP)}, attrs...)...)
	}
	return attrs
}

// storeUnavailable answers a login that the session store (Redis) could not
// record, its login state, assertion or session: 503 to try again, never a
// refusal that reads like an authentication failure, since nothing may be
// wrong with the login itself.
// Its line says why Redis failed: store_reason and hint (session.FaultOf).
func (h *Handler) storeUnavailable(w http.ResponseWriter, r *http.Request, id string, err error) {
	retryLater(w)
	f := session.FaultOf(err)
	h.loginFailedWith(w, r, id, "session_store", err, http.StatusServiceUnavailable,
		"Sign-in is not available right now. Try again in a moment.", f.Hint, slog.String("store_reason", f.Reason))
}

// loginFailed answers a login that failed with msg on a page, and writes
// its login_failed line with reason, err and, when there is one, the
// operator's hint.
func (h *Handler) loginFailed(w http.ResponseWriter, r *http.Request, id, reason string, err error, status int, msg string, hint ...string) {
	first := ""
	if len(hint) > 0 {
		first = hint[0]
	}
	h.loginFailedWith(w, r, id, reason, err, status, msg, first)
}

// loginFailedWith is loginFailed with more attributes for the line.
func (h *Handler) loginFailedWith(w http.ResponseWriter, r *http.Request, id, reason string, err error, status int, msg, hint string, more ...slog.Attr) {
	h.loginFailedAt(w, r, id, reason, err, status, msg, hint, "", more...)
}

// loginFailedAt is loginFailedWith for a login that was going to rd: the
// page's link to sign in again leads there too.
func (h *Handler) loginFailedAt(w http.ResponseWriter, r *http.Request, id, reason string, err error, status int, msg, hint, rd string, more ...slog.Attr) {
	h.metrics.login(id, "failure", 0)
	attrs := []slog.Attr{slog.String("idp", id), slog.String("reason", reason)}
	if hint != "" {
		attrs = append(attrs, slog.String("hint", hint))
	}
	attrs = append(attrs, more...)
	h.audit(r, slog.LevelWarn, "login_failed", append(attrs, slog.Any("err", err))...)
	h.pages.failWithLink(w, r, status, "Sign-in failed", msg, h.loginPath(rd), "Sign in again")
}

// signedIn reports whether r carries a session that a request for a page
// would be let in with (loadSession), before session.refresh asks the IdP.
func (h *Handler) signedIn(r *http.Request) bool {
	s, err := h.loadSession(r)
	return err == nil && s != nil
}

// signedInAt is signedIn with a session of IdP id.
func (h *Handler) signedInAt(r *http.Request, id string) bool { return h.sessionAt(r, id) != nil }

// sessionAt is r's session if it is one at IdP id that would be let in
// (loadSession), or nil.
func (h *Handler) sessionAt(r *http.Request, id string) *session.Session {
	s, err := h.loadSession(r)
	if err != nil || s == nil || s.Profile.IdP != id {
		return nil
	}
	return s
}

// signedInAs reports whether r's session is one at IdP id of the user a
// login form names as username: the profile's username, email or sub,
// whatever the case and surrounding spaces. A name that the directory
// spells otherwise does not match, and is asked to sign in again.
func (h *Handler) signedInAs(r *http.Request, id, username string) bool {
	s := h.sessionAt(r, id)
	if s == nil {
		return false
	}
	username = strings.TrimSpace(username)
	for _, name := range [...]string{s.Profile.Username, s.Profile.Email, s.Profile.Sub} {
		if name != "" && strings.EqualFold(name, username) {
			return true
		}
	}
	return false
}

// flowFailure says why a login's answer came without a login flow that
// opens (session.Flows.Finish): the log's reason and hint, and the user's
// message. A browser that sends back none of the proxy's cookies is the
// proxy reached at another address than public_url, or cookies lost on
// the way: the first login of a new set-up fails so, and "expired or
// already used" would send its operator looking elsewhere.
func (h *Handler) flowFailure(r *http.Request, err error) (reason, hint, msg string) {
	public := h.cfg.Server.PublicURL
	switch {
	case errors.Is(err, session.ErrFlowMissing) && r.Method == http.MethodPost && !h.cookies.Secure && r.Header.Get("Sec-Fetch-Site") == "cross-site":
		// The browser says where the post came from: no cookie of ours
		// could have come with it, whatever else is right. Of the posts
		// that get here, only a SAML IdP's answer can be cross-site: the
		// LDAP form refuses another site's post before (sentByAnotherSite).
		reason = "state_cookie_missing"
		hint = "the IdP's answer is a POST from another site (SAML's HTTP-POST binding) to a public_url on plain http (" + public + "): " +
			"browsers send a login's cookie with a cross-site POST only when it is SameSite=None, which they accept only with Secure, over https. " +
			"Serve the proxy on https, as in production, or, in development, put the IdP on the same host as the proxy " +
			"(another port is fine: 127.0.0.1 for both, or localhost for both)"
		msg = "This sign-in cannot be finished: the application is reached over plain http, and your browser does not send back " +
			"the cookie this sign-in started with after the identity provider's answer. This is a problem with how the application is set up, " +
			"not with your account: tell your administrator, with the request ID below."
	case errors.Is(err, session.ErrFlowMissing) && !h.carriesOwnCookie(r):
		reason = "state_cookie_missing"
		hint = "the browser sent back none of the proxy's cookies, so not the one set when this login started: it was started at another address " +
			"than public_url (" + public + "): another host name, or http where public_url is https (browsers keep Secure cookies to https); " +
			"or a proxy in front drops cookies, or the browser blocks them (a frame in another site, privacy settings); " +
			"or, once, this answer was sent again (the back button) after the first had used the cookie"
		msg = "Your browser did not send back the cookie this sign-in started with, so it cannot be finished. " +
			"Open this application at " + public + ", make sure your browser accepts its cookies, and sign in again."
	case errors.Is(err, session.ErrFlowMissing):
		reason = "state_cookie_missing"
		hint = "the browser sent back other cookies of the proxy but not this login's: this answer was sent again (the back button) " +
			"after the first had used it, the login took longer than 10 minutes or was started in another browser, " +
			"or the browser dropped its cookie (more than 8 sign-ins open at once)"
		msg = "This sign-in was not started in this browser, or took too long. Start again."
	case errors.Is(err, session.ErrFlowUnopened):
		reason = "state_cookie_invalid"
		hint = "this login's cookie came back but does not open with session.keys: the replica that started it has other keys " +
			"(every replica needs the same session.keys), or another deployment on this host name uses the same session.cookie_name"
		msg = "This sign-in cannot be finished here. Start again; if this keeps happening, tell your administrator, with the request ID below."
	default:
		reason, msg = "state", "This sign-in has expired or was already used. Start again."
	}
	return reason, hint, msg
}

// carriesOwnCookie reports whether r carries any cookie of the proxy's
// (the session, its chunks, login flows).
func (h *Handler) carriesOwnCookie(r *http.Request) bool {
	for _, c := range r.Cookies() {
		if h.cookies.Owns(c.Name) {
			return true
		}
	}
	return false
}

// idpNotAnswering reports whether err, a login's at its IdP (the token
// endpoint, userinfo, the signing keys), is the IdP not answering in time
// or not taking the connection, rather than an answer the proxy refused:
// an IdP that stalls (a frozen VM, a long pause) or restarts. The same
// login may well work a moment later.
func idpNotAnswering(err error) bool {
	if errors.Is(err, idp.ErrNotReady) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// idpUnavailable answers a login whose IdP did not answer the proxy
// (idpNotAnswering) as the IdP briefly away: 503 with Retry-After and a
// link to sign in again, never a refusal. The code of this answer may be
// spent by the time the IdP resumes, so the way on is a new sign-in,
// which a session at the IdP makes quick. The line keeps the reason and
// hint of a token endpoint that does not answer (token_exchange: on a
// first set-up, a firewall looks the same), idp_unavailable otherwise.
func (h *Handler) idpUnavailable(w http.ResponseWriter, r *http.Request, p *provider, err error, rd string) {
	h.metrics.login(p.cfg.ID, "failure", 0)
	attrs := []slog.Attr{slog.String("idp", p.cfg.ID), slog.String("reason", "idp_unavailable")}
	if setup, ok := errors.AsType[*idp.SetupError](err); ok {
		attrs = []slog.Attr{slog.String("idp", p.cfg.ID), slog.String("reason", setup.Reason), slog.String("hint", setup.Hint)}
	}
	h.audit(r, slog.LevelWarn, "login_failed", append(attrs, slog.Any("err", err))...)
	retryLater(w)
	h.pages.failWithLink(w, r, http.StatusServiceUnavailable, "Temporarily unavailable",
		p.cfg.DisplayName()+" did not answer in time, so this sign-in could not be finished. Sign in again in a moment.",
		h.loginPath(rd), "Sign in again")
}

// setupFailed answers a login that the proxy and its IdP are not set up to
// complete (idp.SetupError: a secret, a registered URL, a certificate, a
// clock). Every login there fails alike until an administrator changes
// something, so the line is an error, with the hint that says what; the
// user learns that it is not their account and what to tell whom. 502: the
// fault lies between the proxy and the IdP, as for an upstream's.
func (h *Handler) setupFailed(w http.ResponseWriter, r *http.Request, p *provider, e *idp.SetupError) {
	h.metrics.login(p.cfg.ID, "failure", 0)
	h.audit(r, slog.LevelError, "login_failed", slog.String("idp", p.cfg.ID), slog.String("reason", e.Reason),
		slog.String("hint", e.Hint), slog.Any("err", e.Err))
	h.pages.failWithLink(w, r, http.StatusBadGateway, "Sign-in failed",
		"You signed in at "+p.cfg.DisplayName()+", but this application could not complete the sign-in with it. "+
			"This is a problem with how the two are set up, not with your account: tell your administrator, with the request ID below.",
		h.cfg.Server.AuthPrefix+"/login", "Sign in again")
}

func (h *Handler) samlMetadata(w http.ResponseWriter, r *http.Request) {
	p := h.providers[r.PathValue("idp")]
	md, ok := p.implAsMetadata()
	if !ok {
		h.pages.fail(w, r, http.StatusNotFound, "Not found", "There is no such SAML service provider.")
		return
	}
	body, err := md.Metadata()
	if err != nil {
		h.log.Error("SAML metadata", "idp", p.cfg.ID, "err", err)
		h.pages.fail(w, r, http.StatusInternalServerError, "Internal error", "Metadata is not available.")
		return
	}
	w.Header().Set("Content-Type", "application/samlmetadata+xml")
	w.Write(body)
}

func (p *provider) implAsMetadata() (metadataServer, bool) {
	if p == nil {
		return nil, false
	}
	m, ok := p.impl.(metadataServer)
	return m, ok
}

// logout ends the session on this proxy (the cookie is cleared and its id
// revoked) and sends the browser to rd or the signed-out page.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	rd := r.URL.Query().Get("rd")
	var formErr error
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		if formErr = r.ParseForm(); formErr == nil && r.PostForm.Get("rd") != "" {
			rd = r.PostForm.Get("rd")
		}
	}
	// Another site cannot sign the user out (logout CSRF): it gets a page
	// whose button posts the same logout from this origin. Other logouts,
	// those of clients that do not say where they come from included, are
	// done at once, as before and as other SSO proxies do.
	if sentByAnotherSite(r) {
		h.audit(r, slog.LevelInfo, "logout_not_done", slog.String("reason", "another_site"),
			slog.String("sec_fetch_site", r.Header.Get("Sec-Fetch-Site")))
		if !wantsHTML(r) {
			h.pages.askToSignOut(w, r, rd)
			return
		}
		// The page is shown at an address of its own, which only asks: the
		// browser loads it again at the back button or a reload as its own
		// request (WebKit: Sec-Fetch-Site none, Chromium: same-origin),
		// which at this one would sign the user out unasked.
		http.Redirect(w, r, withRedirect(h.cfg.Server.AuthPrefix+"/logout/confirm", rd), http.StatusSeeOther)
		return
	}
	s, err := h.sessions.Load(r)
	if err == nil {
		err = h.sessions.Delete(w, r, s)
	}
	if err == nil {
		var former *session.Session
		former, err = h.endFormerSessions(w, r)
		if s == nil {
			s = former
		}
	}
	if err != nil {
		// The store (Redis) did not answer: the cookie goes, but the session
		// may live on for a copy of it; say so rather than "signed out".
		h.log.Error("logout: session not deleted", "err", err)
		h.sessions.Delete(w, r, nil)
		h.clearUpstreamCookies(w)
		h.clearSignedIn(w, r)
		retryLater(w)
		h.pages.fail(w, r, http.StatusServiceUnavailable, "Sign-out incomplete",
			"You are signed out in this browser, but the session could not be ended everywhere. Try again in a moment.")
		return
	}
	h.clearUpstreamCookies(w)
	h.clearSignedIn(w, r) // signing in again is no loop
	if s != nil {
		h.audit(r, slog.LevelInfo, "logout", slog.String("idp", s.Profile.IdP), slog.String("sub", s.Profile.Sub), slog.String("email", s.Profile.Email))
	}
	if formErr != nil {
		// Signed out all the same; an oversized or broken form is refused
		// like on every other endpoint rather than silently ignored.
		h.pages.fail(w, r, formStatus(formErr), "Bad request", "You are signed out, but the form could not be read.")
		return
	}
	if target := h.singleSignOut(w, r, s, rd); target != "" {
		http.Redirect(w, r, target, http.StatusFound)
		return
	}
	if rd != "" {
		http.Redirect(w, r, h.safeRedirect(rd), http.StatusFound)
		return
	}
	h.pages.signedOut(w, r)
}

// endFormerSessions ends the sessions r carries under a session.cookie_name
// that a reload replaced, and expires every cookie of the proxy's under such
// a name. The live configuration does not see them, but a reload back to
// that name (a rollback) would, and would sign in again a user who signed
// out in between. It returns one of the sessions it ended.
func (h *Handler) endFormerSessions(w http.ResponseWriter, r *http.Request) (*session.Session, error) {
	if len(h.formerCookies) == 0 || len(r.Header["Cookie"]) == 0 {
		return nil, nil
	}
	cookies := r.Cookies()
	current := h.cookies.Name()
	var ended *session.Session
	for _, o := range h.formerCookies {
		name := session.Options{CookieName: o.CookieName, Secure: h.cookies.Secure}.Name()
		var renamed []string
		for _, c := range cookies {
			if !o.Owns(c.Name) || h.cookies.Owns(c.Name) {
				continue
			}
			http.SetCookie(w, &http.Cookie{Name: c.Name, Value: "", Path: "/", MaxAge: -1,
				HttpOnly: true, Secure: h.publicURL.Scheme == "https", SameSite: http.SameSiteLaxMode})
			// The session cookie and its chunks, under the live name,
			// open as the live store opens its own: the keys and the
			// store are what a rollback would open them with.
			if rest, ok := strings.CutPrefix(c.Name, name); ok && (rest == "" || isChunkSuffix(rest)) {
				renamed = append(renamed, current+rest+"="+c.Value)
			}
		}
		if len(renamed) == 0 {
			continue
		}
		former := r.Clone(r.Context())
		former.Header.Set("Cookie", strings.Join(renamed, "; "))
		s, err := h.sessions.Load(former)
		if err == nil && s != nil {
			// Its cookies are expired above, under their own name.
			err = h.sessions.Delete(discardHeaders{}, former, s)
		}
		if err != nil {
			return nil, err
		}
		if s != nil {
			ended = s
		}
	}
	return ended, nil
}

// isChunkSuffix says whether rest ("_1", "_2"…) names a chunk of a session
// cookie after the cookie's own name.
func isChunkSuffix(rest string) bool {
	digits, ok := strings.CutPrefix(rest, "_")
	if !ok || digits == "" || len(digits) > 2 {
		return false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return false
		}
	}
	return true
}

// discardHeaders is a ResponseWriter that writes nowhere: for a store's
// Delete whose cookies are expired under another name.
type discardHeaders struct{}

func (discardHeaders) Header() http.Header         { return http.Header{} }
func (discardHeaders) Write(b []byte) (int, error) { return len(b), nil }
func (discardHeaders) WriteHeader(int)             {}

// singleSignOut returns the IdP's end-session URL for s when its IdP entry
// has single_sign_out, so that the IdP's session ends too; "" to finish here.
// The IdP sends the browser back to {auth_prefix}/logout/done (OIDC) or the
// SAML SLO endpoint with a state that a flow cookie binds to this browser,
// to the IdP and to where it goes next.
func (h *Handler) singleSignOut(w http.ResponseWriter, r *http.Request, s *session.Session, rd string) string {
	if s == nil {
		return ""
	}
	p := h.providers[s.Profile.IdP]
	if p == nil || !p.cfg.SingleSignOut {
		return ""
	}
	so, ok := p.impl.(idp.SingleSignOuter)
	if !ok {
		return ""
	}
	f := &idp.Flow{State: session.NewState(), IdP: p.cfg.ID, Created: h.now().Unix()}
	if rd != "" {
		f.Redirect = h.safeRedirect(rd)
	}
	done := h.publicURL.Scheme + "://" + h.publicURL.Host + h.cfg.Server.AuthPrefix + "/logout/done"
	target, err := so.LogoutURL(&s.Tokens, done, f)
	if err == nil && target != "" {
		err = h.startFlow(w, r, session.LogoutFlow, f, p.answersByPost())
	}
	switch {
	case err != nil:
		h.log.Warn("single sign-out: signed out here only", "idp", p.cfg.ID, "err", err)
		return ""
	case target == "":
		h.log.Warn("single sign-out: the IdP offers no logout endpoint (OIDC end_session_endpoint, SAML SingleLogoutService) for this session; signed out here only", "idp", p.cfg.ID)
	}
	return target
}

// clearUpstreamCookies expires the application's own session cookies
// (upstream.logout_cookies): CVAT, for one, trusts its Django session cookie
// before the identity headers, so without this a second user signing in in
// the same browser would reach CVAT as the first.
func (h *Handler) clearUpstreamCookies(w http.ResponseWriter) {
	for _, name := range h.cfg.Upstream.LogoutCookies {
		http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, Secure: h.publicURL.Scheme == "https"})
	}
}

// confirmLogout asks whether to sign out, for a logout that another site
// sent (logout): it signs nobody out, however it is loaded.
func (h *Handler) confirmLogout(w http.ResponseWriter, r *http.Request) {
	h.pages.askToSignOut(w, r, r.URL.Query().Get("rd"))
}

// logoutDone is where the IdP sends the browser back after a single
// sign-out: on to where the logout was asked to lead, or the signed-out page.
func (h *Handler) logoutDone(w http.ResponseWriter, r *http.Request) {
	f, _, err := h.flows.Finish(w, r, session.LogoutFlow, r.URL.Query().Get("state"))
	if err == nil && f.Redirect != "" {
		http.Redirect(w, r, f.Redirect, http.StatusFound)
		return
	}
	h.pages.signedOut(w, r)
}

// userinfo shows the session's profile and roles.
func (h *Handler) userinfo(w http.ResponseWriter, r *http.Request) {
	s, err := h.loadSession(r)
	if clientLeft(w, r, err) {
		return
	}
	if err != nil {
		// "No session" would be a lie that sends the browser to log in again.
		retryLater(w)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "unavailable", "message": "sessions cannot be checked right now"})
		return
	}
	if s == nil {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized", "message": "no session"})
		return
	}
	writeJSON(w, http.StatusOK, struct {
		idp.Profile
		Expires time.Time `json:"expires"`
	}{s.Profile, s.Expires})
}

func (h *Handler) jwks(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(h.pass.JWKS())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff") // as on the pages
	// Kept out of frames as the pages are: a sibling subdomain's frame
	// gets the session cookie (SameSite=Lax lets same-site requests carry
	// it) and would show the user's profile (userinfo) in a page of its own.
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// formStatus is the status of a form that could not be read: 413 when it
// was over its endpoint's limit (http.MaxBytesReader), else 400.
func formStatus(err error) int {
	if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}
