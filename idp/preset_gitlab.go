package idp

// presetGitLab is gitlab.com, or a self-hosted GitLab at base_url, over
// OpenID Connect. GitLab lists in the groups claim of its userinfo answer,
// which the login merges in, the full paths of the user's groups and of
// every subgroup below them (membership inherited from an ancestor group);
// the ID token's groups_direct lists only the groups the user was added to.
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
