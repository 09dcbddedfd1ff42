package proxy

import (
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
)

// SAML single logout at {auth_prefix}/saml/{idp}/slo, for entries with
// single_sign_out: the IdP's LogoutResponse to a logout this browser started
// at /logout (singleSignOut sent it there), and the IdP's own LogoutRequest,
// which ends the user's sessions here as a back-channel logout does
// (backchannel.go): on this replica with the cookie store, everywhere with
// Redis, and in the browser that carries it.

// samlLogouter is a SAML provider's side of single logout (idp.SAMLProvider).
type samlLogouter interface {
	FinishLogout(r *http.Request, f *idp.Flow) error
	VerifyLogoutRequest(r *http.Request) (*idp.SAMLLogoutRequest, error)
	LogoutResponse(req *idp.SAMLLogoutRequest, outcome idp.SAMLLogoutOutcome) (redirect string, post *idp.SAMLPost, err error)
}

// maxSLOForm bounds a posted LogoutRequest or LogoutResponse; they are a
// few KB.
const maxSLOForm = 64 << 10

func (h *Handler) samlSLO(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	p := h.providers[r.PathValue("idp")]
	var slo samlLogouter
	if p != nil && p.cfg.SingleSignOut {
		slo, _ = p.impl.(samlLogouter)
	}
	if slo == nil {
		h.pages.fail(w, r, http.StatusNotFound, "Not found", "There is no single logout for this sign-in method.")
		return
	}
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, maxSLOForm)
	}
	if err := r.ParseForm(); err != nil {
		h.pages.fail(w, r, formStatus(err), "Bad request", "The logout message could not be read.")
		return
	}
	switch {
	case r.Form.Get("SAMLResponse") != "":
		h.samlLogoutResponse(w, r, p, slo)
	case r.Form.Get("SAMLRequest") != "":
		h.samlLogoutRequest(w, r, p, slo)
	default:
		h.pages.fail(w, r, http.StatusBadRequest, "Bad request", "No SAML logout message was sent.")
	}
}

// samlLogoutResponse ends a logout this browser started: the session ended
// at /logout, and the IdP says whether its own did. The flow is single-use
// and bound to this browser and IdP like a login's (SPEC invariant 7).
func (h *Handler) samlLogoutResponse(w http.ResponseWriter, r *http.Request, p *provider, slo samlLogouter) {
	id, name := p.cfg.ID, p.cfg.DisplayName()
	f, _, err := h.flows.Finish(w, r, session.LogoutFlow, r.Form.Get("RelayState"))
	switch {
	case errors.Is(err, session.ErrUnavailable):
		h.log.Error("single logout: the session store is unavailable", "idp", id, "err", err)
		retryLater(w)
		h.pages.fail(w, r, http.StatusServiceUnavailable, "Signed out",
			"You are signed out here, but the answer from "+name+" cannot be checked right now.")
		return
	case err != nil:
		h.samlLogoutRefused(w, r, id, "state", err, "You are signed out here, but this answer from "+name+
			" has expired, was already used or was meant for another browser.")
		return
	case f.IdP != id:
		h.samlLogoutRefused(w, r, id, "idp_mismatch", errors.New("flow belongs to "+f.IdP),
			"You are signed out here, but this answer came from another sign-in method than the logout went to.")
		return
	}
	err = slo.FinishLogout(r, f)
	switch {
	case err == nil:
		rd := f.Redirect
		if rd == "" {
			h.pages.signedOut(w, r)
			return
		}
		http.Redirect(w, r, rd, http.StatusFound)
	case errors.Is(err, idp.ErrPartialLogout):
		h.audit(r, slog.LevelWarn, "saml_logout_incomplete", slog.String("idp", id), slog.Any("err", err))
		h.pages.failWithLink(w, r, http.StatusOK, "Signed out",
			"You are signed out here and at "+name+", but some other applications may still be signed in. Close the browser to end them.",
			h.cfg.Server.AuthPrefix+"/login", "Sign in again")
	case errors.Is(err, idp.ErrLogoutFailed):
		h.audit(r, slog.LevelWarn, "saml_logout_incomplete", slog.String("idp", id), slog.Any("err", err))
		h.pages.failWithLink(w, r, http.StatusBadGateway, "Signed out here only",
			"You are signed out here, but "+name+" did not end its session. Close the browser to end it.",
			h.cfg.Server.AuthPrefix+"/login", "Sign in again")
	default:
		h.samlLogoutRefused(w, r, id, "invalid_response", err,
			"You are signed out here, but the answer from "+name+" could not be verified.")
	}
}

// samlLogoutRefused answers a LogoutRequest or LogoutResponse that failed a
// check with 400, and audits why, with a hint for an IdP set up not to sign
// its logout messages.
func (h *Handler) samlLogoutRefused(w http.ResponseWriter, r *http.Request, id, reason string, err error, msg string) {
	attrs := []slog.Attr{slog.String("idp", id), slog.String("reason", reason), slog.Any("err", err)}
	if errors.Is(err, idp.ErrUnsignedLogout) {
		attrs = append(attrs, slog.String("hint", "the IdP sent this logout message unsigned, and an unsigned one is refused (any site could send it): "+
			"have the IdP sign its logout messages (SimpleSAMLphp: 'sign.logout' => true in the SP's saml20-sp-remote.php entry); see docs/saml.md"))
	}
	h.audit(r, slog.LevelWarn, "saml_logout_refused", attrs...)
	h.pages.failWithLink(w, r, http.StatusBadRequest, "Bad logout request", msg, h.cfg.Server.AuthPrefix+"/login", "Sign in")
}

// samlLogoutRequest ends the sessions a verified LogoutRequest from the IdP
// names and answers the IdP with a signed LogoutResponse: of the IdP
// session (SessionIndex, of that NameID only) when it names one, else of the
// user (NameID) created up to its IssueInstant (logoutCutoff); and the
// session of the browser that carries it, when it is one of them and was
// created by then.
func (h *Handler) samlLogoutRequest(w http.ResponseWriter, r *http.Request, p *provider, slo samlLogouter) {
	id := p.cfg.ID
	req, err := slo.VerifyLogoutRequest(r)
	switch {
	case errors.Is(err, session.ErrUnavailable):
		h.log.Error("single logout: the session store is unavailable", "idp", id, "err", err)
		retryLater(w)
		h.pages.fail(w, r, http.StatusServiceUnavailable, "Temporarily unavailable",
			"Sessions cannot be ended right now. Try again in a moment.")
		return
	case err != nil:
		h.samlLogoutRefused(w, r, id, "invalid_request", err, "The logout request could not be verified.")
		return
	}
	outcome, n := idp.LogoutSucceeded, 0
	before := logoutCutoff(req.IssueInstant, h.now())
	own, err := h.sessions.Load(r)
	if err == nil && own != nil && samlSessionNamed(own, id, req) && !own.Created.After(before) {
		err = h.sessions.Delete(w, r, own)
		h.clearUpstreamCookies(w)
		h.clearSignedIn(w, r) // signed out at the IdP: signing in again is no loop
		n++
	}
	revoker, canRevoke := h.sessions.(userRevoker)
	switch {
	case err != nil:
	case !canRevoke:
		outcome = idp.LogoutPartial
	case len(req.SessionIndexes) > 0:
		for _, si := range req.SessionIndexes {
			var ended int
			if ended, err = revoker.RevokeUser(r.Context(), id, session.User{}, idp.SAMLSessionKey(req.NameID, si), before); err != nil {
				break
			}
			n += ended
		}
	default:
		var ended int
		ended, err = revoker.RevokeUser(r.Context(), id, loggedOutUser(req, own, id), "", before)
		n += ended
	}
	if err != nil {
		h.log.Error("single logout: sessions not ended", "idp", id, "name_id", req.NameID, "err", err)
		outcome = idp.LogoutFailed
	}
	h.audit(r, slog.LevelInfo, "saml_logout", slog.String("idp", id), slog.String("name_id", req.NameID),
		slog.Any("session_index", req.SessionIndexes), slog.Int("sessions", n), slog.Bool("complete", outcome == idp.LogoutSucceeded))
	target, post, err := slo.LogoutResponse(req, outcome)
	if err != nil {
		h.log.Error("single logout: LogoutResponse not made", "idp", id, "err", err)
		h.pages.fail(w, r, http.StatusInternalServerError, "Signed out", "You are signed out, but "+p.cfg.DisplayName()+" could not be told.")
		return
	}
	if target != "" {
		http.Redirect(w, r, target, http.StatusFound)
		return
	}
	h.pages.samlPost(w, p.cfg.DisplayName(), post)
}

// logoutCutoff is the time up to which a LogoutRequest issued at issued and
// received at now ends its user's sessions (those found by NameID in the
// cookie store, and the browser's own): its IssueInstant, when the IdP
// ended the user's session there, not now, so that a signed request
// replayed within its acceptance window (on another replica: with the
// cookie store each remembers only the request IDs it saw) does not end
// logins made after that logout. It is never later than now (the IdP's
// clock may run ahead), and read to the second, as sessions' creation
// times are. Redis ends the sessions it indexes when the request comes
// (its ID is accepted once on all replicas), and a SessionIndex names an
// IdP session that the logout ended.
func logoutCutoff(issued, now time.Time) time.Time {
	if issued.IsZero() || issued.After(now) {
		issued = now
	}
	return issued.Truncate(time.Second)
}

// loggedOutUser is whose sessions a LogoutRequest from IdP id without
// SessionIndex ends: those whose tokens name its NameID, and those of the
// NameID's profile sub, which is the NameID itself unless
// attribute_mapping.uid takes sub from an attribute; then, when own (the
// browser's session, or nil) is one of the NameID's, its sub. The sessions
// made before single_sign_out was on (their tokens name no NameID), and
// those the Redis store indexed before it indexed NameIDs, are found by
// that sub. Never by the NameID among profile subs, nor by a sub among
// NameIDs: with attribute_mapping.uid they are two lists of names, and one
// user's attribute can be another user's NameID.
func loggedOutUser(req *idp.SAMLLogoutRequest, own *session.Session, id string) session.User {
	who := session.User{Subject: req.Subject, Sub: req.Sub}
	if who.Sub == "" && own != nil && samlSessionNamed(own, id, req) {
		who.Sub = own.Profile.Sub
	}
	return who
}

// samlSessionNamed reports whether s is a session of the user a
// LogoutRequest from IdP id names (and of one of its IdP sessions, when it
// names any).
func samlSessionNamed(s *session.Session, id string, req *idp.SAMLLogoutRequest) bool {
	if s.Profile.IdP != id || s.Tokens.NameID == nil || s.Tokens.NameID.Value != req.NameID {
		return false
	}
	return len(req.SessionIndexes) == 0 || slices.Contains(req.SessionIndexes, s.Tokens.SID)
}
