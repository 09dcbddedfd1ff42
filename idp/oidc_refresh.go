package idp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// ScopeOfflineAccess asks an OIDC provider for a refresh token.
const ScopeOfflineAccess = "offline_access"

// ErrRefreshRefused means the IdP refused the refresh token (invalid_grant:
// revoked, expired, already used, or the user was disabled; Dex's 400
// invalid_request for the same), or answered for
// another user, or said what a login would refuse (claims nested too deep,
// Entra ID's group overage, no subject). The session it belonged to must end.
var ErrRefreshRefused = errors.New("identity provider refused the refresh token")

// Refresher is an IdP whose logins can be renewed without the browser: with
// the refresh token the login left behind.
type Refresher interface {
	// Refresh spends t's refresh token and returns the user as the IdP sees
	// them now and the tokens to keep instead of t. When ctx has a
	// deadline, the token endpoint is waited for until then, however short
	// the IdP client's own timeout. The profile is nil when
	// the IdP confirmed the token but released nothing to map anew. An error
	// wrapping ErrRefreshRefused means the session must end; any other error
	// means the IdP could not be asked, or, when it comes with tokens, that
	// the IdP renewed them but the user could not be read anew (userinfo
	// failed, say): t's refresh token may be spent (rotated), so those
	// tokens replace t's all the same.
	Refresh(ctx context.Context, t *Tokens) (*Profile, *Tokens, error)
}

var _ Refresher = (*oidcProvider)(nil)

// offlineAccess is what a login needs for the IdP to issue a refresh token
// when scopes, the entry's, list offline_access: extra authorization
// parameters, and the prompt that an entry with prompt auto sends
// (loginPrompt). OpenID Connect Core 11 makes offline_access count only
// with prompt=consent. Google and Entra ID do it their own way
// (googleOfflineAccess, azureOfflineAccess).
func (p *oidcProvider) offlineAccess(scopes []string) (opts []oauth2.AuthCodeOption, prompt string) {
	if p.cfg.Protocol != OIDC || !slices.Contains(scopes, ScopeOfflineAccess) {
		return nil, ""
	}
	switch p.cfg.Preset {
	case PresetGoogle:
		return googleOfflineAccess, googleOfflineAccessPrompt
	case PresetAzure:
		return azureOfflineAccess, ""
	}
	return nil, "consent"
}

// requestScopes are the scopes an entry's logins ask for: scopes, less
// offline_access at an IdP that refuses it and is asked for a refresh token
// otherwise (offlineAccess).
func (p *oidcProvider) requestScopes(scopes []string) []string {
	if p.cfg.Preset == PresetGoogle && slices.Contains(scopes, ScopeOfflineAccess) {
		return slices.DeleteFunc(slices.Clone(scopes), func(s string) bool { return s == ScopeOfflineAccess })
	}
	return scopes
}

// Refresh spends t's refresh token at the token endpoint. A new ID token is
// verified like one from a login and must name the same subject; the profile
// is then mapped from it, merged with userinfo as at login.
func (p *oidcProvider) Refresh(ctx context.Context, t *Tokens) (*Profile, *Tokens, error) {
	id := p.cfg.ID
	if t == nil || t.RefreshToken == "" {
		return nil, nil, fmt.Errorf("oidc %s: refresh: no refresh token", id)
	}
	d, err := p.current()
	if err != nil {
		return nil, nil, err
	}
	// The token endpoint is waited for as long as ctx allows, past the
	// client's own bound on a call: a refresh given up on may still be run
	// by an IdP that resumes from a stall, and one that rotates refresh
	// tokens has then spent t's, with the new one lost.
	spend := *p.client
	if _, ok := ctx.Deadline(); ok {
		spend.Timeout = 0
	}
	ctx = oidc.ClientContext(ctx, p.client)
	// No access token: the token source goes straight to the token endpoint.
	token, err := d.oauth.TokenSource(oidc.ClientContext(ctx, &spend), &oauth2.Token{RefreshToken: t.RefreshToken}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && refusal(re) {
			return nil, nil, fmt.Errorf("oidc %s: refresh: %w: %s %s", id, ErrRefreshRefused, re.ErrorCode, truncate(re.ErrorDescription, 200))
		}
		return nil, nil, fmt.Errorf("oidc %s: refresh: %w", id, tokenEndpointError(err))
	}
	next := &Tokens{RefreshToken: token.RefreshToken, IDToken: t.IDToken, Sub: t.Sub, SID: t.SID}
	// Whichever way the refresh ends, the ID token (the login's or the
	// refresh's) is kept as the login's is.
	defer next.keepIDToken(p.cfg.SingleSignOut)
	if next.RefreshToken == "" {
		next.RefreshToken = t.RefreshToken // an IdP that does not rotate keeps the old one valid
	}
	if !token.Expiry.IsZero() {
		next.Expiry = token.Expiry.Unix()
	}

	var claims map[string]any
	switch raw, _ := token.Extra("id_token").(string); {
	case p.cfg.Protocol == OAuth2:
		claims, err = p.oauth2Claims(ctx, token)
	case raw != "":
		claims, err = p.refreshedIDTokenClaims(ctx, d, token, raw, t.Subject())
		if err == nil {
			next.IDToken = raw
		}
	case d.provider.UserInfoEndpoint() != "":
		claims, err = p.userinfoClaims(ctx, d, token, t.Subject())
	default:
		// The IdP renewed the token and said nothing more about the user.
		return nil, next, nil
	}
	if err != nil {
		// The refresh token in t may be spent: an IdP that rotates them
		// (Hydra, Okta, Auth0, oidc-provider) refuses it when it comes
		// again, and revokes the whole grant, the new one included.
		return nil, next, err
	}
	if err := checkClaimDepth(claims); err != nil {
		// What the IdP now says of the user is refused, as at a login: the
		// session, with what it said before, ends.
		return nil, next, fmt.Errorf("oidc %s: refresh: %w: %w", id, ErrRefreshRefused, err)
	}
	// The same checks as at login: an Azure group overage, say, must not
	// slip in through a refresh. What a login refuses (the overage, no
	// subject) the IdP will say again at every refresh: as with
	// checkClaimDepth, the session ends, rather than keep the groups of
	// before until it expires.
	profile, err := p.cfg.mapClaims(claims, p.mapping)
	if err != nil {
		return nil, next, fmt.Errorf("oidc %s: refresh: %w: %w", id, ErrRefreshRefused, err)
	}
	return profile, next, nil
}

// refusal tells an answer that revokes the login (the grant is gone, the
// client may no longer use it) from a passing failure of the IdP.
func refusal(re *oauth2.RetrieveError) bool {
	switch oauthErrorCode(re.ErrorCode) {
	case "invalid_grant", "unauthorized_client", "invalid_client":
		return true
	case "invalid_request":
		// Dex answers a refresh token it does not take (spent, expired,
		// lost with its storage) 400 invalid_request, and its own
		// failures (storage, an LDAP server down) 500 invalid_request.
		// A request of this shape the IdP calls malformed will not do
		// better a minute later either.
		return re.Response != nil && re.Response.StatusCode == http.StatusBadRequest
	}
	// An answer without an error code: 400 and 401 still mean "no".
	return re.ErrorCode == "" && re.Response != nil &&
		(re.Response.StatusCode == http.StatusBadRequest || re.Response.StatusCode == http.StatusUnauthorized)
}

// refreshedIDTokenClaims verifies an ID token from a refresh (OpenID Connect
// Core 12.2: same issuer and audience, checked by the verifier, and the same
// subject as the login's) and merges userinfo when it lacks mapped claims.
func (p *oidcProvider) refreshedIDTokenClaims(ctx context.Context, d discovered, token *oauth2.Token, raw, sub string) (map[string]any, error) {
	id := p.cfg.ID
	if !compactJWT(raw) {
		return nil, fmt.Errorf("oidc %s: refresh: verify id token: %w", id, errNotCompact)
	}
	d = p.forAlgOf(ctx, d, raw)
	idToken, err := d.verifier.Verify(ctx, raw)
	if _, kid := jwtHeader(raw); err != nil && kid != "" {
		// go-oidc tries only the key the header's kid names. ORY Hydra
		// (v2.3.0, ory/hydra#3573) signs the ID tokens of refresh token
		// chains begun before its key was rotated with the new key, and
		// names the old one: every refresh of those sessions failed until
		// their lifetime ended. The token comes from the token endpoint,
		// and a signature by any key the IdP publishes is the IdP's.
		if tok, anyErr := p.verifyWithAnyKey(ctx, d, raw); anyErr == nil {
			p.log.Debug("refreshed ID token verified with another of the IdP's keys than its kid names", "kid", truncate(kid, 64))
			idToken, err = tok, nil
		}
	}
	if err != nil {
		err = fmt.Errorf("oidc %s: refresh: verify id token: %w", id, err)
		if alg := jwtAlg(raw); alg != "" && !slices.Contains(d.idTokenAlgs, alg) {
			// The client's signing alg changed at the IdP since the login:
			// said as a login says it, with what to set.
			return nil, p.unverifiableAlg(d, alg, err)
		}
		return nil, err
	}
	if sub != "" && idToken.Subject != sub {
		return nil, fmt.Errorf("oidc %s: refresh: %w: id token names subject %q, the login was %q", id, ErrRefreshRefused, idToken.Subject, sub)
	}
	if now := time.Now(); idToken.IssuedAt.After(now.Add(idTokenClockSkew)) {
		return nil, fmt.Errorf("oidc %s: refresh: verify id token: issued in the future", id)
	}
	if idToken.AccessTokenHash != "" {
		if err := idToken.VerifyAccessToken(token.AccessToken); err != nil {
			return nil, fmt.Errorf("oidc %s: refresh: verify id token: %w", id, err)
		}
	}
	claims := map[string]any{}
	if err := idToken.Claims(&claims); err != nil {
		return nil, fmt.Errorf("oidc %s: refresh: read id token claims: %w", id, err)
	}
	if err := p.checkAuthorizedParty(idToken.Audience, claims); err != nil {
		return nil, fmt.Errorf("oidc %s: refresh: verify id token: %w", id, err)
	}
	if !p.lacksClaims(claims) || d.provider.UserInfoEndpoint() == "" {
		return claims, nil
	}
	extra, err := p.userinfoClaims(ctx, d, token, idToken.Subject)
	if err != nil {
		return nil, err
	}
	for k, v := range extra {
		if _, ok := claims[k]; !ok {
			claims[k] = v
		}
	}
	return claims, nil
}

// userinfoClaims asks the userinfo endpoint with the new access token; an
// answer about another subject than sub is refused.
func (p *oidcProvider) userinfoClaims(ctx context.Context, d discovered, token *oauth2.Token, sub string) (map[string]any, error) {
	id := p.cfg.ID
	info, _, err := p.userinfo(ctx, d, token)
	if err != nil {
		return nil, fmt.Errorf("oidc %s: refresh: fetch userinfo: %w", id, err)
	}
	if sub != "" && info.Subject != sub {
		return nil, fmt.Errorf("oidc %s: refresh: %w: userinfo names subject %q, the login was %q", id, ErrRefreshRefused, info.Subject, sub)
	}
	claims := map[string]any{}
	if err := info.Claims(&claims); err != nil {
		return nil, fmt.Errorf("oidc %s: refresh: read userinfo claims: %w", id, err)
	}
	return claims, nil
}

// subjectOf reads the sub claim of an ID token the session keeps. It was
// verified at login and has been sealed in the session since, so its
// signature is not checked again here; "" when there is none.
func subjectOf(rawIDToken string) string {
	parts := strings.Split(rawIDToken, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return ""
	}
	return c.Sub
}
