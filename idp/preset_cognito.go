package idp

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

var (
	awsRegion     = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]$`)
	cognitoPoolID = regexp.MustCompile(`^([a-z]{2}(?:-[a-z]+)+-[0-9])_[0-9A-Za-z]+$`)
)

// presetCognito is an Amazon Cognito user pool. With user_pool_id (and
// region, which the pool id also carries as its prefix) it speaks OpenID
// Connect at the pool's issuer
// https://cognito-idp.{region}.amazonaws.com/{user_pool_id}, and groups come
// from cognito:groups in the ID token. With domain alone (the hosted UI
// domain, as CVAT's social auth takes it) it speaks plain OAuth2 at
// {domain}/oauth2/…, where userinfo carries no groups.
func (c *Config) presetCognito() error {
	region := c.Region
	if m := cognitoPoolID.FindStringSubmatch(c.UserPoolID); m != nil && region == "" {
		region = m[1]
	}
	protocol := c.Protocol
	if protocol == "" {
		protocol = OAuth2
		if c.UserPoolID != "" {
			protocol = OIDC
		}
	}
	switch protocol {
	case OIDC:
		if err := c.needs(map[string]string{"region": region, "user_pool_id": c.UserPoolID}); err != nil {
			return err
		}
		if !awsRegion.MatchString(region) {
			return fmt.Errorf("region: not an AWS region like us-east-1: %q", region)
		}
		if m := cognitoPoolID.FindStringSubmatch(c.UserPoolID); m == nil || m[1] != region {
			return fmt.Errorf("user_pool_id: not a user pool id of region %s like %s_AbC123xyz: %q", region, region, c.UserPoolID)
		}
		return c.apply(presetDefaults{
			protocol:  OIDC,
			serverURL: "https://cognito-idp." + region + ".amazonaws.com/" + c.UserPoolID,
			scopes:    []string{"openid", "email", "profile"},
			claims:    map[string]string{"groups": "cognito:groups", "username": "cognito:username"},
		})
	case OAuth2:
		if err := c.needs(map[string]string{"domain": c.Domain}); err != nil {
			return err
		}
		origin, err := httpsOrigin("domain", c.Domain)
		if err != nil {
			return err
		}
		origin = strings.TrimSuffix(origin, "/oauth2")
		return c.apply(presetDefaults{
			protocol:    OAuth2,
			authURL:     origin + "/oauth2/authorize",
			tokenURL:    origin + "/oauth2/token",
			userinfoURL: origin + "/oauth2/userInfo",
			// userInfo answers only access tokens granted openid.
			scopes: []string{"openid", "email", "profile"},
			claims: map[string]string{"username": "username"},
		})
	}
	return fmt.Errorf("protocol: preset cognito uses OIDC or OAUTH2, not %s", protocol)
}

// cognitoLogoutURL is the sign-out request for a Cognito user pool. Its
// /logout endpoint, on the domain of the managed login pages, is not OpenID
// Connect RP-Initiated Logout: it wants client_id and logout_uri (one of the
// app client's Allowed sign-out URLs) and reads no post_logout_redirect_uri,
// id_token_hint or state. No state comes back, so the browser ends on the
// signed-out page rather than at the logout's rd. The endpoint is the
// discovery document's end_session_endpoint, or /logout beside the
// authorization endpoint for a pool that publishes none.
func (p *oidcProvider) cognitoLogoutURL(endSession, authURL, postLogoutRedirect string) (string, error) {
	if endSession == "" {
		endSession = strings.TrimSuffix(authURL, "/oauth2/authorize") + "/logout"
	}
	u, err := url.Parse(endSession)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("oidc %s: logout: cognito logout endpoint %q is not an absolute URL", p.cfg.ID, endSession)
	}
	q := url.Values{"client_id": {p.cfg.ClientID}}
	if postLogoutRedirect != "" {
		q.Set("logout_uri", postLogoutRedirect)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
