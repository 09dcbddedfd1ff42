package idp

import (
	"fmt"
	"net/url"
)

// SingleSignOuter is an IdP that can end the user's session at the IdP too
// when they log out of the proxy (OIDC RP-initiated logout, SAML single
// logout).
type SingleSignOuter interface {
	// LogoutURL returns where to send the browser so that the IdP ends its
	// session: t is what the login left (the ID token hint, the SAML NameID
	// and SessionIndex), f the logout's flow, whose State the IdP sends
	// back and whose other fields the protocol fills in (the SAML
	// LogoutRequest's ID). An OIDC IdP sends the browser back to
	// postLogoutRedirect (Cognito without the state), a SAML IdP to the
	// SP's SingleLogoutService. It returns "" when the IdP offers no
	// logout endpoint.
	LogoutURL(t *Tokens, postLogoutRedirect string, f *Flow) (string, error)
}

var _ SingleSignOuter = (*oidcProvider)(nil)

// LogoutURL builds the OpenID Connect RP-Initiated Logout 1.0 request to the
// end_session_endpoint of the discovery document, or Cognito's own.
func (p *oidcProvider) LogoutURL(t *Tokens, postLogoutRedirect string, f *Flow) (string, error) {
	d, err := p.current()
	if err != nil {
		return "", err
	}
	if d.provider == nil {
		return "", nil // plain OAuth2 has no logout endpoint
	}
	var meta struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if err := d.provider.Claims(&meta); err != nil {
		return "", fmt.Errorf("oidc %s: logout: read discovery document: %w", p.cfg.ID, err)
	}
	if p.cfg.Preset == PresetCognito {
		return p.cognitoLogoutURL(meta.EndSession, d.oauth.Endpoint.AuthURL, postLogoutRedirect)
	}
	if meta.EndSession == "" {
		return "", nil
	}
	u, err := url.Parse(meta.EndSession)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("oidc %s: logout: end_session_endpoint %q is not an absolute URL", p.cfg.ID, meta.EndSession)
	}
	q := u.Query()
	// client_id lets the IdP check post_logout_redirect_uri even when the
	// ID token hint is missing or has expired.
	q.Set("client_id", p.cfg.ClientID)
	if t != nil && t.IDToken != "" {
		q.Set("id_token_hint", t.IDToken)
	}
	if postLogoutRedirect != "" {
		q.Set("post_logout_redirect_uri", postLogoutRedirect)
		if f != nil && f.State != "" {
			q.Set("state", f.State)
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
