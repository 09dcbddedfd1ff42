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
// When the entry it is posted to verifies it but another entry for its
// client cannot check it so, the sessions of the entries that verify it
// end now, and the 503 has the IdP send it again for the others'.
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
	targets, unchecked := h.logoutTargets(r.Context(), id, tok, raw)
	// A jti is its issuer's: the token ends the sessions of every entry
	// that verifies it (logoutTargets), so posted again at another of them
	// it is a replay too. It is marked while the sessions are ended, so
	// that a replay of a token spent is refused before it ends anything,
	// and unmarked when not all of them could be (below).
	jti := "jti:" + tok.Issuer + "\x00" + tok.ID
	mark, first, err := h.logoutTokens.Claim(r.Context(), jti, tok.IssuedAt.Add(idp.LogoutTokenMaxAge+time.Minute))
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
	ended := make([]string, 0, len(targets))
	for _, at := range targets {
		// Sub: the sessions of the user made before they were found by
		// the IdP's subject, where the profile's sub is that subject.
		who := session.User{Subject: at.tok.Subject, Sub: at.tok.Sub}
		var found int
		found, err = revoker.RevokeUser(r.Context(), at.id, who, at.tok.SessionID, h.now().Truncate(time.Second))
		n += found
		if err != nil {
			break
		}
		ended = append(ended, at.id)
	}
	if err != nil || len(unchecked) > 0 {
		// The token ended nothing, or not everywhere it is for: the IdP's
		// retry of it must not be refused as a replay. It ends again what
		// this one ended, which is no more there to count.
		if err := h.logoutTokens.Unmark(context.WithoutCancel(r.Context()), mark); err != nil {
			h.log.Error("back-channel logout: token left marked used; a retry of it will be refused", "idp", id, "err", err)
		}
	}
	if err != nil {
		h.log.Error("back-channel logout: sessions not ended", "idp", id, "sub", tok.Subject, "sid", tok.SessionID, "err", err)
		retryLater(w)
		writeJSON(w, http.StatusServiceUnavailable, logoutError("temporarily_unavailable", "sessions cannot be ended right now"))
		return
	}
	attrs := []slog.Attr{slog.String("idp", id), slog.String("sub", tok.Subject), slog.String("sid", tok.SessionID),
		slog.Int("sessions", n), slog.Any("ended_at", ended)}
	if len(unchecked) > 0 {
		names := make([]string, len(unchecked))
		for i, u := range unchecked {
			names[i] = u.id
		}
		attrs = append(attrs, slog.Any("not_checked_at", names))
	}
	h.audit(r, slog.LevelInfo, "backchannel_logout", attrs...)
	if len(unchecked) > 0 {
		h.notCheckedEverywhere(w, r, id, unchecked)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// keyNotFetched answers a logout token posted to entry id that its keys
// (err names it), as last fetched, lack the key of, within the floor on
// fetching them again: the IdP may have rotated its key since. The same
// token sent again once they may be fetched is checked with the keys then,
// and a forged one refused then. Nothing is ended or spent now. The line
// names the request and its client, as the refusal a forged token got
// before (an audit line) did: a 503 is what a forged token naming a kid
// not held gets too.
func (h *Handler) keyNotFetched(w http.ResponseWriter, r *http.Request, id string, err *idp.UnfetchedKeyError) {
	wait := retryAfterOf(err)
	h.log.Warn("back-channel logout: the token could not be checked; sessions not ended", "idp", id,
		"request_id", r.Header.Get(requestIDHeader), "client", clientText(h.clientAddr(r)),
		"reason", "signing_key_not_fetched", "kid", err.KeyID, "retry_after", wait, "err", err)
	w.Header().Set("Retry-After", strconv.Itoa(wait))
	writeJSON(w, http.StatusServiceUnavailable, logoutError("temporarily_unavailable",
		"the logout token is signed with a key that the identity provider's keys, as last fetched, do not have; they are fetched again after Retry-After"))
}

// notCheckedEverywhere answers a logout token posted to entry id, which
// ended the sessions of the entries that verify it, when other entries
// for its client (unchecked) could not check it: their sessions stay
// until the IdP sends it again, after the longest of their Retry-Afters.
// Each is named in a line of its own, with the request and its client (a
// forged token posted elsewhere may have had their keys fetched just
// before).
func (h *Handler) notCheckedEverywhere(w http.ResponseWriter, r *http.Request, id string, unchecked []uncheckedEntry) {
	wait := 0
	for _, u := range unchecked {
		attrs := []any{"idp", id, "not_checked_at", u.id, "request_id", r.Header.Get(requestIDHeader), "client", clientText(h.clientAddr(r))}
		if e := (*idp.UnfetchedKeyError)(nil); errors.As(u.err, &e) {
			attrs = append(attrs, "reason", "signing_key_not_fetched", "kid", e.KeyID)
		}
		wait = max(wait, retryAfterOf(u.err))
		h.log.Warn("back-channel logout: the token could not be checked at another entry of its client; sessions there not ended",
			append(attrs, "retry_after", retryAfterOf(u.err), "err", u.err)...)
	}
	w.Header().Set("Retry-After", strconv.Itoa(wait))
	writeJSON(w, http.StatusServiceUnavailable, logoutError("temporarily_unavailable",
		"the logout token could not be checked at every entry of its client; the sessions of those that checked it have ended, send it again after Retry-After for the others"))
}

// retryAfterOf is the Retry-After, in seconds, of a logout token that
// could not be checked (err, an idp.ErrNotReady): what is left of the
// floor for a key not fetched yet, else retryAfter.
func retryAfterOf(err error) int {
	if e := (*idp.UnfetchedKeyError)(nil); errors.As(err, &e) {
		return int(math.Ceil(e.RetryAfter.Seconds()))
	}
	wait, _ := strconv.Atoi(retryAfter)
	return wait
}

// logoutTarget is an IdP entry whose sessions a logout token ends, and
// the token as that entry reads it (its own claim mapping of sub).
type logoutTarget struct {
	id  string
	tok *idp.LogoutToken
}

// uncheckedEntry is an IdP entry for a logout token's client that could
// not check it, and why (an idp.ErrNotReady).
type uncheckedEntry struct {
	id  string
	err error
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
// unchecked are the entries that could not check it (idp.ErrNotReady:
// their keys could not be fetched, or as last fetched lack its key within
// the floor, or their discovery has not succeeded), though it says it is
// for their client: an entry says ErrNotReady only of a token whose
// issuer, audience and claims are those of a logout token for its client,
// so another client's or issuer's token, forged or not, is never one.
func (h *Handler) logoutTargets(ctx context.Context, id string, tok *idp.LogoutToken, raw string) (targets []logoutTarget, unchecked []uncheckedEntry) {
	targets = []logoutTarget{{id: id, tok: tok}}
	for _, p := range h.order {
		other, ok := p.impl.(idp.BackchannelLogouter)
		if !ok || p.cfg.ID == id {
			continue
		}
		t, err := other.VerifyLogoutToken(ctx, raw)
		switch {
		case err == nil:
			targets = append(targets, logoutTarget{id: p.cfg.ID, tok: t})
		case errors.Is(err, idp.ErrNotReady):
			unchecked = append(unchecked, uncheckedEntry{id: p.cfg.ID, err: err})
		}
	}
	return targets, unchecked
}

func logoutError(code, description string) map[string]string {
	return map[string]string{"error": code, "error_description": description}
}
