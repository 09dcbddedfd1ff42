package proxy

import (
	"net/url"

	"github.com/portcullis-proxy/portcullis/idp"
)

// Registration is what to enter at one configured IdP (idp.Registrations).
type Registration struct {
	IdP, Protocol string
	URLs          []idp.Registration
}

// Registrations lists, for every IdP of cfg in order, the URLs of this
// proxy its administrator must register there: what `portcullis check`
// prints and `portcullis serve` logs at start, as oauth2-proxy logs its
// redirect URL, since a mismatch stops the login at the IdP, where the
// proxy never hears of it. cfg must have passed Check.
func Registrations(cfg *Config) []Registration {
	public, err := url.Parse(cfg.Server.PublicURL)
	if err != nil {
		return nil
	}
	o := idp.Options{PublicURL: public, AuthPrefix: cfg.Server.AuthPrefix}
	var out []Registration
	for _, ic := range cfg.SSO.IdentityProviders {
		protocol := ic.Protocol
		if resolved, err := ic.WithPreset(); err == nil {
			protocol = resolved.Protocol
		}
		out = append(out, Registration{IdP: ic.ID, Protocol: protocol, URLs: ic.Registrations(o)})
	}
	return out
}
