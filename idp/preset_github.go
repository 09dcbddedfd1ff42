package idp

import (
	"net/url"
	"strings"
)

// presetGitHub is GitHub (or GitHub Enterprise at base_url) over plain
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
		// GitHub Enterprise Server serves the API under /api/v3 of its own
		// host; GitHub Enterprise Cloud with data residency (SUBDOMAIN.ghe.com)
		// at the host api.SUBDOMAIN.ghe.com, as api.github.com serves github.com.
		web, api = base, base+"/api/v3"
		if u, err := url.Parse(base); err == nil && strings.HasSuffix(strings.ToLower(u.Hostname()), ".ghe.com") {
			api = u.Scheme + "://api." + u.Host
		}
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
