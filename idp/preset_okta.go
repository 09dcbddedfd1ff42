package idp

import (
	"fmt"
	"regexp"
)

// oktaServerID is the id of an Okta authorization server: "default", or
// the one Okta gives a custom server (aus8x2l1r1SLCHP7e4x6).
var oktaServerID = regexp.MustCompile(`^[A-Za-z0-9]+$`)

// presetOkta is an Okta org at domain. Without authorization_server it uses
// the org authorization server (issuer https://{domain}), which grants the
// Okta-specific groups scope; with one ("default" or an id) the issuer is
// https://{domain}/oauth2/{authorization_server}, whose groups claim the
// admin adds in Okta (named groups).
func (c *Config) presetOkta() error {
	if err := c.needs(map[string]string{"domain": c.Domain}); err != nil {
		return err
	}
	origin, err := httpsOrigin("domain", c.Domain)
	if err != nil {
		return err
	}
	server, scopes := origin, []string{"openid", "email", "profile", "groups"}
	if c.AuthorizationServer != "" && !oktaServerID.MatchString(c.AuthorizationServer) {
		// It is a path segment of the issuer: the issuer URL pasted whole,
		// or a slash, made an issuer that discovery could never find, found
		// only by /readyz after the start.
		return fmt.Errorf("authorization_server: must be the id of an Okta authorization server, like default or aus8x2l1r1SLCHP7e4x6 (got %q)", c.AuthorizationServer)
	}
	if c.AuthorizationServer != "" {
		server, scopes = origin+"/oauth2/"+c.AuthorizationServer, []string{"openid", "email", "profile"}
	}
	return c.apply(presetDefaults{
		protocol:  OIDC,
		serverURL: server,
		scopes:    scopes,
		claims:    map[string]string{"groups": "groups", "username": "preferred_username"},
	})
}
