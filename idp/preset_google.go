package idp

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
