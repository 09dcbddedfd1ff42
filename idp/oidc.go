package idp

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Discovery retries start after this delay and double up to the maximum.
const (
	discoveryFirstRetry = time.Second
	discoveryMaxRetry   = time.Minute
	discoveryTimeout    = 30 * time.Second
	// idTokenClockSkew is how far in the future an ID token's iat may be.
	idTokenClockSkew = 5 * time.Minute
)

// Token auth methods a client may use at the token endpoint.
const (
	ClientSecretBasic = "client_secret_basic"
	ClientSecretPost  = "client_secret_post"
)

// CallbackError is what the IdP sent to the callback instead of a code
// (RFC 6749 section 4.1.2.1), e.g. access_denied when the user cancelled.
// Both fields come from the query string: untrusted text, to be escaped.
type CallbackError struct {
	// Code is the error parameter, e.g. "access_denied".
	Code string
	// Description is error_description, for logs rather than pages.
	Description string
}

func (e *CallbackError) Error() string {
	if e.Description == "" {
		return fmt.Sprintf("idp answered error %q", e.Code)
	}
	return fmt.Sprintf("idp answered error %q (%q)", e.Code, e.Description)
}

// oidcProvider logs users in with OpenID Connect (discovered from server_url)
// or with plain OAuth2 (endpoints configured, profile from userinfo).
type oidcProvider struct {
	cfg    Config
	client *http.Client
	// jwks is the transport of the client logout tokens' keys are fetched with.
	jwks     *jwksThrottle
	pkce     bool
	mapping  map[string]string
	redirect string
	log      *slog.Logger

	mu sync.RWMutex
	// oauth is nil until discovery succeeded.
	oauth    *oauth2.Config
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
	// logoutVerifier checks back-channel logout tokens, with keys of its own.
	logoutVerifier *oidc.IDTokenVerifier
	issuer         string
	// jwksURI is the discovery document's jwks_uri.
	jwksURI string
	// issParam is the discovery document's
	// authorization_response_iss_parameter_supported (RFC 9207).
	issParam bool
	// idTokenAlgs are the algorithms ID tokens are verified with.
	idTokenAlgs []string
	// notReady says why oauth is still nil.
	notReady error

	// rediscovering, holding one value while forAlgOf reads the discovery
	// document again, makes those reads one at a time; the last began at
	// rediscovered.
	rediscovering chan struct{}
	rediscovered  atomic.Int64 // Unix ns
	// rediscoverFailed says the read begun at rediscovered failed.
	rediscoverFailed atomic.Bool
	// noRefreshTokenWarned: warnNoRefreshToken has logged.
	noRefreshTokenWarned atomic.Bool
}

func newOIDC(ctx context.Context, c Config, o Options) (Provider, error) {
	p := &oidcProvider{
		cfg:      c,
		client:   o.HTTPClient,
		pkce:     o.PKCE,
		mapping:  claimMapping(c.Claims),
		redirect: o.CallbackURL("oidc", c.ID, "callback"),
		log:      o.Logger,
		notReady: errors.New("discovery has not finished yet"),

		rediscovering: make(chan struct{}, 1),
	}
	if p.client == nil {
		p.client = &http.Client{Timeout: discoveryTimeout}
	}
	p.jwks = newJWKSThrottle(p.client.Transport)
	if p.log == nil {
		p.log = slog.Default()
	}
	p.log = p.log.With("idp", c.ID)

	if c.Protocol == OAuth2 {
		// Plain OAuth2 has nothing to discover: the endpoints are configured.
		p.oauth = p.oauthConfig(oauth2.Endpoint{AuthURL: c.AuthURL, TokenURL: c.TokenURL})
		p.notReady = nil
		return p, nil
	}
	if running, ok := o.Running.(*oidcProvider); ok && running.cfg.Protocol == OIDC && running.cfg.ServerURL == c.ServerURL {
		if d, err := running.current(); err == nil {
			// The algorithms the running entry verifies, those listed
			// in a document read before among them (use keeps them for
			// the same issuer).
			p.issuer, p.idTokenAlgs = d.issuer, d.idTokenAlgs
			if err := p.use(d.provider); err == nil {
				p.log.Debug("oidc: discovery carried over from the provider before the reload", "issuer", p.issuer)
				return p, nil
			}
		}
	}
	go p.discoverLoop(ctx)
	return p, nil
}

// oauthConfig builds the client side of the code flow for endpoint.
func (p *oidcProvider) oauthConfig(endpoint oauth2.Endpoint) *oauth2.Config {
	switch {
	case p.cfg.TokenAuthMethod == ClientSecretPost || p.cfg.ClientSecret == "":
		// A public client has no secret to put in a Basic header; it sends
		// client_id in the body.
		endpoint.AuthStyle = oauth2.AuthStyleInParams
	default:
		endpoint.AuthStyle = oauth2.AuthStyleInHeader
	}
	scopes := p.cfg.Scopes
	if len(scopes) == 0 {
		scopes = []string{oidc.ScopeOpenID, "email", "profile"}
		if p.cfg.Protocol == OAuth2 {
			scopes = nil
		}
	}
	return &oauth2.Config{
		ClientID:     p.cfg.ClientID,
		ClientSecret: p.cfg.ClientSecret,
		Endpoint:     endpoint,
		RedirectURL:  p.redirect,
		Scopes:       p.requestScopes(scopes),
	}
}

// discoverLoop keeps trying discovery until it succeeds or ctx ends, so a
// proxy can start while its IdP is still down.
func (p *oidcProvider) discoverLoop(ctx context.Context) {
	delay := discoveryFirstRetry
	for {
		err := p.discover(ctx)
		if err == nil {
			// Read under p.mu: a token of an algorithm not listed may
			// have the document read again already (forAlgOf).
			d, _ := p.current()
			p.log.Info("oidc discovery succeeded", "issuer", d.issuer)
			return
		}
		p.mu.Lock()
		p.notReady = err
		p.mu.Unlock()
		p.log.Warn("oidc discovery failed; retrying", "err", err, "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, discoveryMaxRetry)
	}
}

// wellKnown is where an issuer publishes its OpenID configuration
// (OpenID Connect Discovery 1.0, 4).
const wellKnown = "/.well-known/openid-configuration"

// notAnIssuer says what server_url must be, for a discovery that found no
// document: the issuer, with its path.
const notAnIssuer = "server_url must be the issuer, the URL before " + wellKnown + ", path included " +
	"(Keycloak: https://HOST/realms/REALM, Entra ID: https://login.microsoftonline.com/TENANT/v2.0, " +
	"Okta: https://ORG.okta.com/oauth2/default, GitLab: https://gitlab.example.com), or a preset's keys that make it"

func (p *oidcProvider) discover(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, p.client), discoveryTimeout)
	defer cancel()
	provider, err := oidc.NewProvider(ctx, p.cfg.ServerURL)
	var mismatch *oidc.IssuerMismatchError
	if errors.As(err, &mismatch) &&
		strings.TrimSuffix(mismatch.Discovered, "/") == strings.TrimSuffix(mismatch.Provided, "/") {
		// server_url was written with or without the trailing slash that the
		// issuer has; the issuer's own spelling is what ID tokens carry.
		provider, err = oidc.NewProvider(ctx, mismatch.Discovered)
	}
	if errors.As(err, &mismatch) {
		// ID tokens carry the issuer as the IdP names it, so it must be
		// server_url, character for character. An IdP that names a plain
		// http or internal address does not know the URL it is reached at.
		return fmt.Errorf("oidc %s: discover %s: %w: set server_url to the issuer exactly as the IdP names it, %q; "+
			"if that is not the address the IdP is reached at, the IdP is not told its public URL (its hostname setting, or the X-Forwarded-Proto and Host of a proxy in front of it)",
			p.cfg.ID, p.cfg.ServerURL, err, mismatch.Discovered)
	}
	if err != nil && strings.HasPrefix(err.Error(), "404 ") {
		// go-oidc's error for a discovery document the server does not
		// have: server_url is not the issuer, most often a base URL
		// missing the issuer's path.
		return fmt.Errorf("oidc %s: discover %s: %w: there is no %s there; %s", p.cfg.ID, p.cfg.ServerURL, err,
			wellKnown, notAnIssuer)
	}
	if err != nil {
		return fmt.Errorf("oidc %s: discover %s: %w", p.cfg.ID, p.cfg.ServerURL, err)
	}
	return p.use(provider)
}

// use makes what discovery found in provider's document, with this
// entry's client, what logins and tokens are checked with.
func (p *oidcProvider) use(provider *oidc.Provider) error {
	var meta struct {
		Issuer   string   `json:"issuer"`
		IssParam bool     `json:"authorization_response_iss_parameter_supported"`
		JWKSURI  string   `json:"jwks_uri"`
		Algs     []string `json:"id_token_signing_alg_values_supported"`
		// EndSession is OIDC RP-Initiated Logout's endpoint.
		EndSession string `json:"end_session_endpoint"`
	}
	if err := provider.Claims(&meta); err != nil {
		return fmt.Errorf("oidc %s: read discovery document: %w", p.cfg.ID, err)
	}
	if p.cfg.SingleSignOut && meta.EndSession == "" && p.cfg.Preset != PresetCognito {
		// Said before the first login, as of SAML metadata without a
		// SingleLogoutService, not only at each sign-out: the user has
		// been told they signed out by then. Cognito's logout endpoint
		// is its own, outside the document.
		p.log.Warn("oidc: single_sign_out is on, but the IdP's discovery document has no end_session_endpoint; /logout signs users out here only, " +
			"and the IdP's session signs them in again at their next login")
	}
	p.jwks.watch(meta.JWKSURI)

	p.mu.Lock()
	defer p.mu.Unlock()
	p.provider = provider
	p.jwksURI = meta.JWKSURI
	p.issParam = meta.IssParam
	algs := verifiableAlgs(meta.Algs)
	if p.issuer == meta.Issuer {
		// Read again (forAlgOf): an algorithm listed before may still
		// sign tokens in flight, and an IdP that lists its current key's
		// alone (ORY Hydra) still publishes the key before.
		algs = verifiableAlgs(append(algs, p.idTokenAlgs...))
	}
	p.issuer = meta.Issuer
	p.idTokenAlgs = algs
	p.verifier = provider.Verifier(&oidc.Config{ClientID: p.cfg.ClientID, SupportedSigningAlgs: p.idTokenAlgs})
	// Logout tokens get keys of their own, fetched through p.jwks: anyone
	// may post one, and a login's ID token must not wait for the floor
	// that forged ones are held to (an IdP that rotates its key signs the
	// next ID token with the new one at once).
	throttled := *p.client
	throttled.Transport = p.jwks
	// exp is optional in a logout token; VerifyLogoutToken checks it when
	// present. The issuer, keys and algorithms are those provider's own
	// verifiers take; logoutKeys tells VerifyLogoutToken when the
	// signature check was what failed.
	keys := oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), &throttled), meta.JWKSURI)
	p.logoutVerifier = oidc.NewVerifier(meta.Issuer, logoutKeys{keys},
		&oidc.Config{ClientID: p.cfg.ClientID, SkipExpiryCheck: true, SupportedSigningAlgs: p.idTokenAlgs})
	p.oauth = p.oauthConfig(provider.Endpoint())
	p.notReady = nil
	return nil
}

// Ready reports nil once the IdP's endpoints are known.
func (p *oidcProvider) Ready() error {
	_, err := p.current()
	return err
}

// discovered is a consistent view of what discovery found.
type discovered struct {
	oauth    *oauth2.Config
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
	// logoutVerifier checks back-channel logout tokens, with keys of its own.
	logoutVerifier *oidc.IDTokenVerifier
	issuer         string
	jwksURI        string
	issParam       bool
	idTokenAlgs    []string
}

func (p *oidcProvider) current() (discovered, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.oauth == nil {
		return discovered{}, fmt.Errorf("oidc %s: %w: %w", p.cfg.ID, ErrNotReady, p.notReady)
	}
	return discovered{oauth: p.oauth, provider: p.provider, verifier: p.verifier, logoutVerifier: p.logoutVerifier,
		issuer: p.issuer, jwksURI: p.jwksURI, issParam: p.issParam, idTokenAlgs: p.idTokenAlgs}, nil
}

// LoginURL sets f's nonce (OIDC) and PKCE verifier (when enabled) and returns
// the IdP's authorization URL carrying f.State.
func (p *oidcProvider) LoginURL(f *Flow) (string, error) {
	d, err := p.current()
	if err != nil {
		return "", err
	}
	if f.State == "" {
		return "", fmt.Errorf("oidc %s: login url: flow has no state", p.cfg.ID)
	}
	f.IdP = p.cfg.ID
	var opts []oauth2.AuthCodeOption
	if p.cfg.Protocol == OIDC {
		f.Nonce = rand.Text()
		opts = append(opts, oidc.Nonce(f.Nonce))
	}
	if p.pkce {
		f.Verifier = oauth2.GenerateVerifier()
		opts = append(opts, oauth2.S256ChallengeOption(f.Verifier))
	}
	offline, auto := p.offlineAccess(p.cfg.Scopes)
	opts = append(opts, offline...)
	if prompt := p.cfg.loginPrompt(auto); prompt != "" {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", prompt))
	}
	return d.oauth.AuthCodeURL(f.State, opts...), nil
}

// Complete checks the callback request r against f, redeems the code and
// returns the user's profile and the tokens to keep.
func (p *oidcProvider) Complete(r *http.Request, f *Flow) (*Profile, *Tokens, error) {
	id := p.cfg.ID
	d, err := p.current()
	if err != nil {
		return nil, nil, err
	}
	q := r.URL.Query()
	// The state is checked first: an answer that does not belong to this
	// browser's login is refused whatever it says.
	if f.State == "" || subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(f.State)) != 1 {
		return nil, nil, fmt.Errorf("oidc %s: callback: state does not match the login", id)
	}
	if f.IdP != "" && f.IdP != id {
		return nil, nil, fmt.Errorf("oidc %s: callback: login was started at %q", id, f.IdP)
	}
	// RFC 6749 3.1: no answer parameter comes twice. Which copy counts would
	// be a guess, and the iss check below would hold for one copy only.
	for _, name := range []string{"state", "code", "iss", "error"} {
		if n := len(q[name]); n > 1 {
			return nil, nil, fmt.Errorf("oidc %s: callback: answer gives %s %d times", id, name, n)
		}
	}
	// RFC 9207 2.4: an answer naming another issuer is a mix-up attack, and
	// so is one without iss from an IdP whose discovery says it sends it
	// (another server answered in its place). error answers carry it too.
	switch iss, sent := q.Get("iss"), q.Has("iss"); {
	case sent && d.issuer != "" && iss != d.issuer:
		return nil, nil, fmt.Errorf("oidc %s: callback: answer from issuer %q, want %q", id, truncate(iss, 256), d.issuer)
	case !sent && d.issParam:
		return nil, nil, fmt.Errorf("oidc %s: callback: answer has no iss, which %s sends in every answer (authorization_response_iss_parameter_supported)", id, d.issuer)
	}
	if code := q.Get("error"); code != "" {
		return nil, nil, fmt.Errorf("oidc %s: callback: %w", id, &CallbackError{
			Code:        truncate(code, 64),
			Description: truncate(q.Get("error_description"), 256),
		})
	}
	code := q.Get("code")
	if code == "" {
		return nil, nil, fmt.Errorf("oidc %s: callback: no code", id)
	}

	ctx := oidc.ClientContext(r.Context(), p.client)
	var opts []oauth2.AuthCodeOption
	if f.Verifier != "" {
		opts = append(opts, oauth2.VerifierOption(f.Verifier))
	}
	token, err := d.oauth.Exchange(ctx, code, opts...)
	if err != nil {
		return nil, nil, p.exchangeError(d, fmt.Errorf("oidc %s: exchange code: %w", id, tokenEndpointError(err)), err)
	}
	tokens := &Tokens{RefreshToken: token.RefreshToken}
	if !token.Expiry.IsZero() {
		tokens.Expiry = token.Expiry.Unix()
	}

	var claims map[string]any
	if p.cfg.Protocol == OAuth2 {
		claims, err = p.oauth2Claims(ctx, token)
	} else {
		claims, tokens.IDToken, err = p.oidcClaims(ctx, d, token, f)
	}
	if err != nil {
		return nil, nil, err
	}
	if err := checkClaimDepth(claims); err != nil {
		return nil, nil, fmt.Errorf("oidc %s: %w", id, err)
	}
	profile, err := p.cfg.mapClaims(claims, p.mapping)
	if err != nil {
		return nil, nil, fmt.Errorf("oidc %s: %w", id, err)
	}
	if tokens.IDToken != "" {
		// The IdP's session, which a back-channel logout names.
		tokens.SID, _ = claims["sid"].(string)
	}
	tokens.keepIDToken(p.cfg.SingleSignOut)
	p.warnNoRefreshToken(tokens.RefreshToken)
	return profile, tokens, nil
}

// oidcClaims verifies the ID token in token and returns its claims, merged
// with userinfo's when the ID token lacks some mapped claim.
func (p *oidcProvider) oidcClaims(ctx context.Context, d discovered, token *oauth2.Token, f *Flow) (map[string]any, string, error) {
	id := p.cfg.ID
	raw, _ := token.Extra("id_token").(string)
	if raw == "" {
		return nil, "", fmt.Errorf("oidc %s: exchange code: token response has no id_token", id)
	}
	if !compactJWT(raw) {
		return nil, "", fmt.Errorf("oidc %s: verify id token: %w", id, errNotCompact)
	}
	d = p.forAlgOf(ctx, d, raw)
	idToken, err := d.verifier.Verify(ctx, raw)
	if err != nil {
		err = fmt.Errorf("oidc %s: verify id token: %w", id, err)
		if alg := jwtAlg(raw); alg != "" && !slices.Contains(d.idTokenAlgs, alg) {
			return nil, "", p.unverifiableAlg(d, alg, err)
		}
		if skewed := p.clockSkew(ctx, d, raw, err); skewed != nil {
			return nil, "", skewed
		}
		return nil, "", err
	}
	if f.Nonce == "" || subtle.ConstantTimeCompare([]byte(idToken.Nonce), []byte(f.Nonce)) != 1 {
		return nil, "", fmt.Errorf("oidc %s: verify id token: nonce does not match the login", id)
	}
	// go-oidc checks exp and nbf, not iat. A token issued in the future was
	// not made for a login happening now: refuse it, allowing the same clock
	// skew go-oidc allows for nbf.
	if now := time.Now(); idToken.IssuedAt.After(now.Add(idTokenClockSkew)) {
		return nil, "", setupError("clock_skew", fmt.Sprintf("the IdP stamped the ID token %s ahead of this machine's clock, more than the %s allowed: "+
			"one of the two clocks is wrong. Keep both on NTP", idToken.IssuedAt.Sub(now).Round(time.Second), idTokenClockSkew),
			fmt.Errorf("oidc %s: verify id token: issued in the future (iat %s, now %s)",
				id, idToken.IssuedAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)))
	}
	if idToken.AccessTokenHash != "" {
		if err := idToken.VerifyAccessToken(token.AccessToken); err != nil {
			return nil, "", fmt.Errorf("oidc %s: verify id token: %w", id, err)
		}
	}
	claims := map[string]any{}
	if err := idToken.Claims(&claims); err != nil {
		return nil, "", fmt.Errorf("oidc %s: read id token claims: %w", id, err)
	}
	if err := p.checkAuthorizedParty(idToken.Audience, claims); err != nil {
		return nil, "", fmt.Errorf("oidc %s: verify id token: %w", id, err)
	}
	if !p.lacksClaims(claims) || d.provider.UserInfoEndpoint() == "" {
		return claims, raw, nil
	}

	// Conforming IdPs keep the ID token small when an access token is issued,
	// and release the rest at userinfo.
	info, alg, err := p.userinfo(ctx, d, token)
	if err != nil {
		err = fmt.Errorf("oidc %s: fetch userinfo: %w", id, err)
		if alg != "" && !slices.Contains(verifiedAlgs, alg) {
			return nil, "", unverifiableUserinfo(alg, err)
		}
		return nil, "", err
	}
	if info.Subject != idToken.Subject {
		// OIDC Core 5.3.2: a userinfo answer about someone else must not be used.
		return nil, "", fmt.Errorf("oidc %s: fetch userinfo: subject %q is not the id token's %q", id, info.Subject, idToken.Subject)
	}
	extra := map[string]any{}
	if err := info.Claims(&extra); err != nil {
		return nil, "", fmt.Errorf("oidc %s: read userinfo claims: %w", id, err)
	}
	for k, v := range extra {
		// The signed ID token wins over userinfo.
		if _, ok := claims[k]; !ok {
			claims[k] = v
		}
	}
	return claims, raw, nil
}

// clockSkew is the set-up error for raw, an ID token that Verify refused
// (err) for its times alone: expired already (exp), or valid only from a
// moment ahead (nbf), though the IdP issued it for this exchange just now,
// which only a clock can do. Nil for any other refusal.
func (p *oidcProvider) clockSkew(ctx context.Context, d discovered, raw string, err error) error {
	tok := p.genuine(ctx, d, raw)
	if tok == nil {
		return nil
	}
	now := time.Now()
	if expired, ok := errors.AsType[*oidc.TokenExpiredError](err); ok {
		return setupError("clock_skew", fmt.Sprintf("the IdP issued an ID token that had expired %s before this machine's clock (exp %s, now %s): "+
			"the IdP's clock is behind this one's, or its ID tokens live only seconds. Keep both clocks on NTP",
			now.Sub(expired.Expiry).Round(time.Second), expired.Expiry.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)), err)
	}
	// go-oidc reports an nbf ahead of its leeway (idTokenClockSkew) in
	// words only, with no error type: read it from the token, which
	// verified but for its times.
	var times struct {
		NotBefore float64 `json:"nbf"`
	}
	if tok.Claims(&times) != nil || times.NotBefore == 0 {
		return nil
	}
	nbf := time.Unix(int64(times.NotBefore), 0)
	if !nbf.After(now.Add(idTokenClockSkew)) {
		return nil
	}
	return setupError("clock_skew", fmt.Sprintf("the IdP made the ID token valid only from %s ahead of this machine's clock (nbf %s, now %s), "+
		"more than the %s allowed: the IdP's clock is ahead of this one's. Keep both clocks on NTP",
		nbf.Sub(now).Round(time.Second), nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), idTokenClockSkew), err)
}

// genuine is raw, an ID token refused for its times, verified without
// them; nil when it is not the IdP's: a forged token must not be logged as
// the IdP's clock being wrong.
func (p *oidcProvider) genuine(ctx context.Context, d discovered, raw string) *oidc.IDToken {
	v := d.provider.Verifier(&oidc.Config{ClientID: p.cfg.ClientID, SkipExpiryCheck: true, SupportedSigningAlgs: d.idTokenAlgs})
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		return nil
	}
	return tok
}

// verifiedAlgs are the JWS algorithms go-oidc verifies ID tokens with
// (its supportedAlgorithms), in the order a hint lists them.
var verifiedAlgs = []string{oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512, oidc.EdDSA}

// verifiableAlgs are the algorithms of discovered (the discovery
// document's id_token_signing_alg_values_supported) that go-oidc verifies,
// or RS256 alone when it lists none of them: go-oidc's own choice when it
// is given none, made here so that a refused token's alg can be named.
func verifiableAlgs(discovered []string) []string {
	var algs []string
	for _, a := range verifiedAlgs {
		if slices.Contains(discovered, a) {
			algs = append(algs, a)
		}
	}
	if len(algs) == 0 {
		return []string{oidc.RS256}
	}
	return algs
}

// unverifiableAlg is the set-up error for an ID token signed with alg,
// which the proxy does not verify: HS256 (keyed with the client secret),
// Ed25519 (RFC 9864's name for EdDSA), or one the IdP's discovery does not
// list. Every login at this client fails alike until the IdP's client
// settings change. The token came straight from the token endpoint, so its
// header is the IdP's own, though its signature cannot be checked.
func (p *oidcProvider) unverifiableAlg(d discovered, alg string, err error) error {
	return setupError("id_token_signing_alg", fmt.Sprintf("the IdP signs this client's ID tokens with %q; this proxy verifies only %s: "+
		"those of %s that the IdP's discovery document lists in id_token_signing_alg_values_supported. "+
		"Set the client's ID token signature algorithm at the IdP to one of them (Keycloak: the client's Advanced tab, "+
		"\"ID token signature algorithm\"; LemonLDAP::NG, whose default is HS512: the relying party's Options, Security, "+
		"\"ID Token signature algorithm\"; RS256 is most IdPs' default)",
		truncate(alg, 32), strings.Join(d.idTokenAlgs, ", "), strings.Join(verifiedAlgs, ", ")), err)
}

// jwtAlg is the alg in the header of the compact JWT raw, "" when there is
// none to read.
func jwtAlg(raw string) string {
	alg, _ := jwtHeader(raw)
	return alg
}

// jwtHeader is the alg and the kid in the header of the compact JWT raw,
// "" where there is none to read.
func jwtHeader(raw string) (alg, kid string) {
	header, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		return "", ""
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if json.Unmarshal(b, &h) != nil {
		return "", ""
	}
	return h.Alg, h.Kid
}

// checkAuthorizedParty applies OpenID Connect Core 3.1.3.7 steps 4 and 5,
// which go-oidc leaves out: an ID token for several audiences must name in
// azp the client it was issued to, and an azp, when present, must be this
// client. Otherwise a token issued to another client of the same IdP, that
// merely lists this one as an extra audience, would log in here.
func (p *oidcProvider) checkAuthorizedParty(aud []string, claims map[string]any) error {
	azp, present := claims["azp"]
	if !present {
		if len(aud) > 1 {
			return fmt.Errorf("%d audiences and no azp claim", len(aud))
		}
		return nil
	}
	if s, ok := azp.(string); !ok || s != p.cfg.ClientID {
		return fmt.Errorf("azp %q is not this client", claimText(azp))
	}
	return nil
}

// lacksClaims reports whether a mapped profile field has no claim in claims.
func (p *oidcProvider) lacksClaims(claims map[string]any) bool {
	for _, field := range slices.Sorted(maps.Keys(p.mapping)) {
		if _, ok := lookupClaim(claims, p.mapping[field]); !ok {
			return true
		}
	}
	return false
}

// oauth2Claims fetches the user from the configured userinfo URL. With no
// sub claim configured, a missing "sub" falls back to "id" (GitHub, Gitea).
func (p *oidcProvider) oauth2Claims(ctx context.Context, token *oauth2.Token) (map[string]any, error) {
	if p.cfg.Preset == PresetGitHub {
		// GitHub's user takes several API calls: emails, organizations, teams.
		return p.githubClaims(ctx, token)
	}
	id := p.cfg.ID
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.UserinfoURL, nil)
	if err != nil {
		return nil, fmt.Errorf("oidc %s: fetch userinfo: %w", id, err)
	}
	req.Header.Set("Accept", "application/json")
	token.SetAuthHeader(req)
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("oidc %s: fetch userinfo: %w", id, err)
	}
	defer resp.Body.Close()
	body, err := readBounded(resp.Body, maxUserinfo)
	if err != nil {
		return nil, fmt.Errorf("oidc %s: fetch userinfo: %w", id, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("oidc %s: fetch userinfo: %s: %s", id, resp.Status, strings.TrimSpace(truncate(string(body), 200)))
	}
	claims := map[string]any{}
	if err := json.Unmarshal(body, &claims); err != nil {
		return nil, fmt.Errorf("oidc %s: decode userinfo: %w", id, err)
	}
	if _, configured := p.cfg.Claims["sub"]; !configured {
		if _, ok := claims["sub"]; !ok {
			if v, ok := claims["id"]; ok {
				claims["sub"] = claimText(v)
			}
		}
	}
	return claims, nil
}

// exchangeError is logged, the failed code exchange, as a *SetupError
// with what to check: the IdP's error code (RFC 6749 5.2) says which side
// of the client's registration is wrong. raw is the token endpoint's error.
func (p *oidcProvider) exchangeError(d discovered, logged, raw error) error {
	code := ""
	if re, ok := errors.AsType[*oauth2.RetrieveError](raw); ok {
		code = oauthErrorCode(re.ErrorCode)
	}
	switch code {
	case "invalid_client", "unauthorized_client":
		method := ClientSecretBasic
		if d.oauth.Endpoint.AuthStyle == oauth2.AuthStyleInParams {
			method = ClientSecretPost
		}
		hint := fmt.Sprintf("the IdP did not accept this client's credentials at its token endpoint: check that client_id (%q) is the client registered there, "+
			"that client_secret (or %s) is its current secret, and that the IdP expects the secret the way token_auth_method says (%s)",
			p.cfg.ClientID, p.cfg.envName("CLIENT_SECRET"), method)
		if code == "unauthorized_client" {
			// RFC 6749 5.2 keeps it for a grant the client may not use,
			// but Glewlwyd (2.7) answers it for credentials it does not
			// take as well: a wrong secret, the other auth method.
			hint = "the IdP does not let this client use the authorization code grant: enable it (and refresh tokens, with session.refresh) in the client's settings at the IdP. " +
				"Some IdPs (Glewlwyd) answer so when they do not accept the client's credentials, too: " + hint
		}
		return setupError(code, hint, logged)
	case "invalid_grant":
		// A code the IdP does not take: anyone who starts a login can send
		// its callback a made-up one, and a real one fails so only when
		// spent or expired (the proxy sends the redirect URI it sent the
		// browser with). The client's doing, not the set-up's: a plain
		// refusal, not an error line telling the operator to change things.
		return logged
	case "":
		return setupError("token_exchange", fmt.Sprintf("the token endpoint (%s) did not answer with tokens: check that this host reaches it (proxies, firewalls, TLS) "+
			"and that it is the IdP's", d.oauth.Endpoint.TokenURL), logged)
	}
	return setupError("token_exchange", "the IdP refused the code exchange with the error code above: see its documentation or its own log for that code", logged)
}

// tokenEndpointError is err from the token endpoint as the log shows it. An
// answer without an OAuth error code (a gateway's error page, a server that
// echoes the request) comes with its whole body, up to 1 MiB, in
// oauth2.RetrieveError's message: the status and the start of the body tell
// what went wrong, as for userinfo.
func tokenEndpointError(err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "" || re.Response == nil {
		return err
	}
	return fmt.Errorf("token endpoint answered %s: %s", re.Response.Status, strings.TrimSpace(truncate(string(re.Body), 200)))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// validateOIDC checks the keys OIDC and OAUTH2 entries use.
func (c *Config) validateOIDC() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	// Plain http only to loopback (development): on any other path whoever
	// sits on it could forge what the URL vouches for.
	checkHTTP := func(key, raw string, required bool, carries string) {
		if raw == "" {
			if required {
				bad(key, "required")
			}
			return
		}
		u, err := url.Parse(raw)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
			bad(key, "not an absolute http(s) URL: %q", RedactURL(raw))
		case u.Scheme == "http" && !isLoopbackHost(u.Hostname()):
			bad(key, "plain http refused outside development: the host %q is not loopback, and %s; use https", u.Hostname(), carries)
		case u.User != nil:
			// Never of use: discovery would find an issuer without them,
			// the client signs in with client_id and client_secret, and
			// auth_url is where every browser is sent. The errors and
			// /readyz that quote the URL would show them.
			bad(key, "must not carry credentials (user:password@); the IdP is reached with client_id and client_secret")
		}
	}

	if c.Protocol == OAuth2 {
		checkHTTP("auth_url", c.AuthURL, true, "the browser would log in at a page anyone on the path can replace")
		checkHTTP("token_url", c.TokenURL, true, "the client secret and the tokens travel over it")
		checkHTTP("userinfo_url", c.UserinfoURL, true, "who the user is comes from it")
	} else {
		// A preset knows its IdP's server URL.
		checkHTTP("server_url", c.ServerURL, c.Preset == "", "discovery and the keys that sign ID tokens come from it")
		if len(c.Scopes) > 0 && !slices.Contains(c.Scopes, oidc.ScopeOpenID) {
			bad("scopes", "must include openid for protocol OIDC")
		}
	}
	return append(errs, c.validateClient()...)
}

// validateClient checks the keys of the client registered at an OIDC or
// OAUTH2 IdP, which no preset fills in.
func (c *Config) validateClient() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.ClientID == "" {
		bad("client_id", "required")
	}
	switch c.TokenAuthMethod {
	case "", ClientSecretBasic, ClientSecretPost:
	default:
		bad("token_auth_method", "unknown method %q (want %s or %s)", c.TokenAuthMethod, ClientSecretBasic, ClientSecretPost)
	}
	for _, field := range slices.Sorted(maps.Keys(c.Claims)) {
		if _, ok := defaultClaims[field]; !ok {
			bad("claims."+field, "unknown profile field (want one of %s)", profileFields())
		} else if strings.TrimSpace(c.Claims[field]) == "" {
			bad("claims."+field, "empty claim name")
		}
	}
	return errs
}
