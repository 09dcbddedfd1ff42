package idp

import "golang.org/x/oauth2"

// presetGoogle is Google's OpenID Connect provider. Google releases no
// preferred_username, so the email address is the username; Workspace
// accounts carry their domain in the hd claim (claims.hd in expressions).
// Google has no groups claim.
func (c *Config) presetGoogle() error {
	return c.apply(presetDefaults{
		protocol:  OIDC,
		serverURL: "https://accounts.google.com",
		scopes:    []string{"openid", "email", "profile"},
		claims:    map[string]string{"username": "email"},
	})
}

// googleOfflineAccess is how a Google login asks for a refresh token, for
// an entry whose scopes list offline_access: Google refuses that scope
// (invalid_scope) and issues a refresh token for access_type=offline, and
// only at the first code exchange of a user's grant unless the login asks
// for consent again (googleOfflineAccessPrompt), as each login here must,
// its session being new
// (https://developers.google.com/identity/openid-connect/openid-connect,
// https://developers.google.com/identity/protocols/oauth2/web-server#offline).
var googleOfflineAccess = []oauth2.AuthCodeOption{oauth2.AccessTypeOffline}

// googleOfflineAccessPrompt is the prompt of googleOfflineAccess, sent
// unless the entry gives its own (Config.Prompt).
const googleOfflineAccessPrompt = "consent"
