package idp

// presetGitHub is GitHub (or GitHub Enterprise Server at base_url) over plain
// OAuth2: GitHub has no OpenID Connect for users. The profile comes from the
// REST API (github.go): the user, the primary verified email, and the
// organisations and teams as groups.
func (c *Config) presetGitHub() error {
	web, api := "https://github.com", "https://api.github.com"
	base, err := httpsOrigin("base_url", c.BaseURL)
	if err != nil {
		return err
	}
	if base != "" {
		// GitHub Enterprise Server serves the API under /api/v3 of its own host.
		web, api = base, base+"/api/v3"
	}
	return c.apply(presetDefaults{
		protocol:    OAuth2,
		authURL:     web + "/login/oauth/authorize",
		tokenURL:    web + "/login/oauth/access_token",
		userinfoURL: api + "/user",
		scopes:      []string{"read:user", "user:email", "read:org"},
		// GitHub documents client_id and client_secret as form parameters.
		tokenAuthMethod: ClientSecretPost,
		claims:          map[string]string{"username": "login"},
	})
}
