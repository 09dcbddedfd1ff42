package idp

import (
	"fmt"
	"regexp"

	"golang.org/x/oauth2"
)

var tenantID = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// presetAzure is Microsoft Entra ID (Azure AD) v2.0 for one tenant:
// https://login.microsoftonline.com/{tenant}/v2.0, or another cloud's login
// host at base_url. The tenant must be the directory id: a tenant name, or
// common/organizations/consumers, discovers an issuer other than the URL
// asked for, which cannot be verified. Groups are the groups claim (object
// ids, or names when the app's token configuration says so); email_verified
// reads the optional claim xms_edov, the only verification signal Entra ID
// sends: without it allowed_email_domains and require_verified_email refuse
// everyone, and azureUnverifiedReason says so.
func (c *Config) presetAzure() error {
	if err := c.needs(map[string]string{"tenant": c.Tenant}); err != nil {
		return err
	}
	if !tenantID.MatchString(c.Tenant) {
		return fmt.Errorf("tenant: must be the directory (tenant) id, a GUID like 72f988bf-86f1-41af-91ab-2d7cd011db47 (got %q): other values discover an issuer that cannot be verified", c.Tenant)
	}
	login := "https://login.microsoftonline.com"
	base, err := httpsOrigin("base_url", c.BaseURL)
	if err != nil {
		return err
	}
	if base != "" {
		login = base
	}
	return c.apply(presetDefaults{
		protocol:  OIDC,
		serverURL: login + "/" + c.Tenant + "/v2.0",
		scopes:    []string{"openid", "profile", "email"},
		claims: map[string]string{
			"groups":         "groups",
			"username":       "preferred_username",
			"email_verified": "xms_edov",
		},
	})
}

// azureOfflineAccess is how an Entra ID login asks for a refresh token, for
// an entry whose scopes list offline_access: that scope alone does it, and
// prompt=consent, OpenID Connect's way, "triggers the OAuth consent dialog
// after the user signs in", at every sign-in
// (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow).
var azureOfflineAccess []oauth2.AuthCodeOption

// azureUnverifiedReason is the reason to give a user refused for an
// unverified email when Entra ID said nothing about it: the application's
// token configuration lacks the optional claim xms_edov, which only an
// administrator can add. "" when that is not the case.
func (c *Config) azureUnverifiedReason(p *Profile) string {
	if c.Preset != PresetAzure || (c.Claims["email_verified"] != "" && c.Claims["email_verified"] != "xms_edov") {
		return ""
	}
	if _, sent := p.Claims["xms_edov"]; sent || p.Email == "" {
		return ""
	}
	return "Microsoft did not say whether your email address is verified, which signing in here requires. Ask your administrator to add the optional claim xms_edov to this application's ID token."
}

// Entra ID's SAML group claim, and what it sends instead past 150 groups
// (group overage): a link to the Graph API, where portcullis does not look.
// Over OIDC, azureClaims finds the overage; over SAML, samlMapping.profile.
// Both refuse the login with entraOverageMessage.
const (
	entraGroupsClaim    = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
	entraGroupsOverage  = "http://schemas.microsoft.com/claims/groups.link"
	entraOverageMessage = "You are a member of more groups than Microsoft can list at sign-in, so your groups cannot be checked here. " +
		"Ask your administrator to send only the groups assigned to this application."
)

// azureClaims refuses a login whose groups did not fit in the token (group
// overage: more than 200 groups, announced by _claim_names.groups or
// hasgroups). Logging in without them would silently drop the user to the
// default role; the fix is on the Azure side (emit only the groups assigned
// to the application, or app roles mapped with claims.groups: roles).
func (c *Config) azureClaims(claims map[string]any) error {
	if c.Claims["groups"] != "groups" {
		return nil
	}
	names, _ := claims["_claim_names"].(map[string]any)
	_, overage := names["groups"]
	if overage || claimBool(claims["hasgroups"]) {
		return &AdmissionError{
			Rule:   "groups",
			Reason: entraOverageMessage,
		}
	}
	return nil
}
