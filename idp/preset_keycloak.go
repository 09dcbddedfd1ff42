package idp

// presetKeycloak is a Keycloak realm: server_url is the realm URL
// (https://keycloak.example.com/realms/NAME). Groups are the realm roles
// (realm_access.roles) unless claims.groups names another claim, e.g. the
// groups claim of a "Group Membership" mapper.
func (c *Config) presetKeycloak() error {
	if err := c.needs(map[string]string{"server_url (the realm URL, https://keycloak.example.com/realms/NAME)": c.ServerURL}); err != nil {
		return err
	}
	return c.apply(presetDefaults{
		protocol: OIDC,
		scopes:   []string{"openid", "email", "profile"},
		claims:   map[string]string{"groups": "realm_access.roles", "username": "preferred_username"},
	})
}
