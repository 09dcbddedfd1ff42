package idp

// presetAuth0 is an Auth0 tenant at domain (its own or a custom domain). The
// issuer ends in a slash. Auth0 has no groups claim of its own: an Action
// adds one, conventionally namespaced ("https://cvat.example.com/groups"),
// and claims.groups names it; until then groups read the claim "groups".
func (c *Config) presetAuth0() error {
	if err := c.needs(map[string]string{"domain": c.Domain}); err != nil {
		return err
	}
	origin, err := httpsOrigin("domain", c.Domain)
	if err != nil {
		return err
	}
	return c.apply(presetDefaults{
		protocol:  OIDC,
		serverURL: origin + "/",
		scopes:    []string{"openid", "profile", "email"},
		// Auth0 database users have a nickname, rarely a preferred_username.
		claims: map[string]string{"username": "nickname"},
	})
}
