package proxy

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
)

// OIDC Back-Channel Logout 1.0: the IdP POSTs a signed logout token to
// {auth_prefix}/oidc/{idp}/backchannel-logout when a user's session at the
// IdP ends, and the proxy ends that user's sessions too. With the Redis store
// they end on every replica; with the cookie store only on the replica the
// IdP reached (its memory holds the revocation). Operators register the URL
// at the IdP; nothing is advertised.

// userRevoker is a session store that can end every session of a user,
// named as the IdP names them (Tokens.Subject: a logout token's sub is the
// ID token's, whatever claim the entry maps the profile's sub to) or by
// their profile's sub, or of one IdP session, named by the
// Tokens.SessionKey of its sessions (both stores).
type userRevoker interface {
	RevokeUser(ctx context.Context, idp string, who session.User, sid string, before time.Time) (int, error)
}

var (
	_ userRevoker = (*session.CookieStore)(nil)
	_ userRevoker = (*session.RedisStore)(nil)
)

// maxLogoutTokenForm bounds the posted form; logout tokens are small JWTs.
const maxLogoutTokenForm = 64 << 10

// backchannelLogout verifies the logout token and ends the sessions it
// names. It answers 200 when they have ended, 400 for a token that is
// missing, invalid or used before (the spec's answers), and 503 when the
// session store could not be reached, the IdP's signing keys could not
// be fetched to check the token, or the token is signed with a key they
// lacked when last fetched, within the floor on fetching them again (the
// sessions may still be there, and the same token may be sent again).
func (h *Handler) backchannelLogout(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	id := r.PathValue("idp")
	p := h.providers[id]
	var verifier idp.BackchannelLogouter
	if p != nil {
		verifier, _ = p.impl.(idp.BackchannelLogouter)
	}
	revoker, canRevoke := h.sessions.(userRevoker)
	if verifier == nil || !canRevoke {
		writeJSON(w, http.StatusNotFound, logoutError("invalid_request", "no back-channel logout for this identity provider"))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLogoutTokenForm)
	if err := r.ParseForm(); err != nil {
		writeJSON(w, formStatus(err), logoutError("invalid_request", "the form could not be read"))
		return
	}
	raw := r.PostForm.Get("logout_token")
	if raw == "" {
		writeJSON(w, http.StatusBadRequest, logoutError("invalid_request", "logout_token is missing"))
		return
	}
	tok, err := verifier.VerifyLogoutToken(r.Context(), raw)
	if unfetched := (*idp.UnfetchedKeyError)(nil); errors.As(err, &unfetched) {
		h.keyNotFetched(w, r, id, unfetched)
		return
	}
	if errors.Is(err, idp.ErrNotReady) {
		// The IdP did not give the keys to check it with: the token may
		// be good, and the same one sent again may end the sessions.
		h.log.Warn("back-channel logout: the token could not be checked; sessions not ended", "idp", id,
			"request_id", r.Header.Get(requestIDHeader), "client", clientText(h.clientAddr(r)), "err", err)
		retryLater(w)
		writeJSON(w, http.StatusServiceUnavailable, logoutError("temporarily_unavailable", "the identity provider's signing keys cannot be fetched right now"))
		return
	}
	if err != nil {
		h.audit(r, slog.LevelWarn, "backchannel_logout_refused", slog.String("idp", id), slog.Any("err", err))
		writeJSON(w, http.StatusBadRequest, logoutError("invalid_request", "the logout token is not valid"))
		return
	}
	targets, unfetched := h.logoutTargets(r.Context(), id, tok, raw)
	if unfetched != nil {
		// Another entry of the token's issuer and client holds keys that
		// lack its key, within its floor (its error names it): ended now,
		// its sessions would stay, and the token sent again be a replay.
		h.keyNotFetched(w, r, id, unfetched)
		return
	}
	// A jti is its issuer's: the token ends the sessions of every entry
	// that verifies it (logoutTargets), so posted again at another of them
	// it is a replay too.
	jti := "jti:" + tok.Issuer + "\x00" + tok.ID
	first, err := h.logoutTokens.MarkOnce(r.Context(), jti, tok.IssuedAt.Add(idp.LogoutTokenMaxAge+time.Minute))
	if err != nil {
		h.log.Error("back-channel logout: the session store is unavailable", "idp", id, "err", err)
		retryLater(w)
		writeJSON(w, http.StatusServiceUnavailable, logoutError("temporarily_unavailable", "sessions cannot be ended right now"))
		return
	}
	if !first {
		h.audit(r, slog.LevelWarn, "backchannel_logout_refused", slog.String("idp", id), slog.String("reason", "replayed"))
		writeJSON(w, http.StatusBadRequest, logoutError("invalid_request", "the logout token was already used"))
		return
	}
	n, err := 0, error(nil)
	for _, at := range targets {
		// Sub: the sessions of the user made before they were found by
		// the IdP's subject, where the profile's sub is that subject.
		who := session.User{Subject: at.tok.Subject, Sub: at.tok.Sub}
		var ended int
		ended, err = revoker.RevokeUser(r.Context(), at.id, who, at.tok.SessionID, h.now().Truncate(time.Second))
		n += ended
		if err != nil {
			break
		}
	}
	if err != nil {
		h.log.Error("back-channel logout: sessions not ended", "idp", id, "sub", tok.Subject, "sid", tok.SessionID, "err", err)
		// The token ended nothing (or not all): the IdP's retry of it must
		// not be refused as a replay.
		if err := h.logoutTokens.Unmark(context.WithoutCancel(r.Context()), jti); err != nil {
			h.log.Error("back-channel logout: token left marked used; a retry of it will be refused", "idp", id, "err", err)
		}
		retryLater(w)
		writeJSON(w, http.StatusServiceUnavailable, logoutError("temporarily_unavailable", "sessions cannot be ended right now"))
		return
	}
	h.audit(r, slog.LevelInfo, "backchannel_logout", slog.String("idp", id), slog.String("sub", tok.Subject),
		slog.String("sid", tok.SessionID), slog.Int("sessions", n))
	w.WriteHeader(http.StatusOK)
}

// keyNotFetched answers a logout token posted to entry id that an
// entry's keys (err names it), as last fetched, lack the key of, within
// the floor on fetching them again: the IdP may have rotated its key since. The same token sent again once they
// may be fetched is checked with the keys then, and a forged one refused
// then. Nothing is ended or spent now. The line names the request and
// its client, as the refusal a forged token got before (an audit line)
// did: a 503 is what a forged token naming a kid not held gets too.
func (h *Handler) keyNotFetched(w http.ResponseWriter, r *http.Request, id string, err *idp.UnfetchedKeyError) {
	wait := int(math.Ceil(err.RetryAfter.Seconds()))
	h.log.Warn("back-channel logout: the token could not be checked; sessions not ended", "idp", id,
		"request_id", r.Header.Get(requestIDHeader), "client", clientText(h.clientAddr(r)),
		"reason", "signing_key_not_fetched", "kid", err.KeyID, "retry_after", wait, "err", err)
	w.Header().Set("Retry-After", strconv.Itoa(wait))
	writeJSON(w, http.StatusServiceUnavailable, logoutError("temporarily_unavailable",
		"the logout token is signed with a key that the identity provider's keys, as last fetched, do not have; they are fetched again after Retry-After"))
}

// logoutTarget is an IdP entry whose sessions a logout token ends, and
// the token as that entry reads it (its own claim mapping of sub).
type logoutTarget struct {
	id  string
	tok *idp.LogoutToken
}

// logoutTargets are the entries whose sessions a logout token posted to
// entry id ends: id, and every other entry that verifies the same token,
// one with the same issuer and a client_id among its aud. An IdP knows one
// back-channel URI per client, so two entries for one client (other
// scopes, a preset beside a generic entry) hear of a logout only at the
// one registered; the other's sessions of the user stayed signed in after
// the IdP ended theirs. An entry of another client of the issuer is not
// named by the token's aud, and keeps its sessions. Another issuer's, or
// another client's, token fails verification (at its signature check,
// whose keys of that issuer do not verify it, or at its iss or aud check).
// unfetched is the error of an entry that could not check the token,
// though it says it is for that entry's client: its keys as last fetched
// lack the token's key, within its floor on fetching them again (of them
// all, the one whose keys may be fetched again last).
func (h *Handler) logoutTargets(ctx context.Context, id string, tok *idp.LogoutToken, raw string) (targets []logoutTarget, unfetched *idp.UnfetchedKeyError) {
	targets = []logoutTarget{{id: id, tok: tok}}
	for _, p := range h.order {
		other, ok := p.impl.(idp.BackchannelLogouter)
		if !ok || p.cfg.ID == id {
			continue
		}
		t, err := other.VerifyLogoutToken(ctx, raw)
		if e := (*idp.UnfetchedKeyError)(nil); errors.As(err, &e) && (unfetched == nil || e.RetryAfter > unfetched.RetryAfter) {
			unfetched = e
		}
		if err == nil {
			targets = append(targets, logoutTarget{id: p.cfg.ID, tok: t})
		}
	}
	return targets, unfetched
}

func logoutError(code, description string) map[string]string {
	return map[string]string{"error": code, "error_description": description}
}
