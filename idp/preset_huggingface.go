package idp

// presetHuggingFace is "Sign in with Hugging Face" (OpenID Connect at
// https://huggingface.co). Groups are the organisations the user belongs to
// (the orgs claim of userinfo, by their preferred_username). Granting the app
// an organisation on Hugging Face's consent screen opens that organisation's
// resources to it and adds the user's roleInOrg; it does not decide which
// organisations are listed.
func (c *Config) presetHuggingFace() error {
	return c.apply(presetDefaults{
		protocol:  OIDC,
		serverURL: "https://huggingface.co",
		scopes:    []string{"openid", "profile", "email"},
		claims:    map[string]string{"username": "preferred_username", "groups": "groups"},
	})
}

// huggingFaceClaims sets the groups claim, when the IdP sent none, to the
// names of the orgs in the orgs claim (a list of objects).
func huggingFaceClaims(claims map[string]any) {
	if _, ok := claims["groups"]; ok {
		return
	}
	orgs, ok := claims["orgs"].([]any)
	if !ok {
		return
	}
	var groups []any
	for _, o := range orgs {
		if org, ok := o.(map[string]any); ok {
			if name := claimText(org["preferred_username"]); name != "" {
				groups = append(groups, name)
			}
		}
	}
	claims["groups"] = groups
}
