package idp

// presetGitLab is gitlab.com, or a self-hosted GitLab at base_url, over
// OpenID Connect. GitLab lists the full paths of the user's groups in the
// groups claim of its userinfo answer, which the login merges in.
func (c *Config) presetGitLab() error {
	server := "https://gitlab.com"
	base, err := httpsOrigin("base_url", c.BaseURL)
	if err != nil {
		return err
	}
	if base != "" {
		server = base
	}
	return c.apply(presetDefaults{
		protocol:  OIDC,
		serverURL: server,
		scopes:    []string{"openid", "profile", "email"},
		claims:    map[string]string{"groups": "groups", "username": "preferred_username"},
	})
}
