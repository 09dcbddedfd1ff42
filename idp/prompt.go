package idp

import (
	"fmt"
	"slices"
	"strings"
)

// An entry's prompt (Config.Prompt): what the prompt parameter of its
// logins' authorization requests is (OpenID Connect Core 3.1.2.1; OAuth 2.0
// servers such as GitHub's read it too).
const (
	// PromptAuto sends what offline_access needs (offlineAccess): consent
	// on an OIDC entry whose scopes list it, a preset's own way on google
	// and azure, else nothing. An entry without prompt is auto.
	PromptAuto = "auto"
	// PromptOmit sends no prompt parameter, offline_access or not: Dex
	// shows its approval page at every login that asks for consent, and
	// issues refresh tokens without it.
	PromptOmit = "omit"
)

// promptValues are the values of OpenID Connect's prompt an entry may list.
// none is not among them (validatePrompt says why).
var promptValues = []string{"login", "consent", "select_account"}

const promptWant = "(want auto, omit, or a space-separated list of login, consent and select_account)"

// validatePrompt checks c's prompt, c resolved with its preset.
func (c *Config) validatePrompt() []error {
	if c.Prompt == "" {
		return nil
	}
	bad := func(format string, args ...any) []error {
		return []error{fmt.Errorf("prompt: %s", fmt.Sprintf(format, args...))}
	}
	switch c.Protocol {
	case OIDC, OAuth2:
	case SAML:
		// Its analogue, AuthnRequest's ForceAuthn, is not a prompt: read
		// here as one, the entry would say it asks users to sign in again
		// and not do it.
		return bad("OIDC and OAUTH2 only (protocol is SAML); SAML's ForceAuthn is not this key")
	default:
		return bad("OIDC and OAUTH2 only (protocol is %s)", c.Protocol)
	}
	values := strings.Fields(c.Prompt)
	if len(values) == 0 {
		return bad("empty %s", promptWant)
	}
	if slices.Contains(values, "none") {
		// OpenID Connect's none is for a page's silent check of a session
		// the user already has at the IdP: where they have none, the IdP
		// answers login_required, and every such login fails.
		return bad("none is refused: the IdP then shows no page and fails the login of every user who has no session there (login_required), " +
			"which no sign-in here can get past; to send no prompt parameter, write " + PromptOmit)
	}
	for i, v := range values {
		switch {
		case v == PromptAuto || v == PromptOmit:
			if len(values) > 1 {
				return bad("%s stands alone, not in a list", v)
			}
		case !slices.Contains(promptValues, v):
			return bad("unknown value %q %s", v, promptWant)
		case slices.Contains(values[:i], v):
			return bad("%s listed twice", v)
		}
	}
	return nil
}

// loginPrompt is the prompt parameter a login at c sends, given auto, the
// one that offline access needs (offlineAccess); "" sends none.
func (c *Config) loginPrompt(auto string) string {
	switch c.Prompt {
	case "", PromptAuto:
		return auto
	case PromptOmit:
		return ""
	}
	return strings.Join(strings.Fields(c.Prompt), " ")
}

// asksNoConsent reports whether c's prompt is one of the entry's own that
// lacks consent (omit, or a list without it).
func (c *Config) asksNoConsent() bool {
	return c.Prompt != "" && c.Prompt != PromptAuto && !slices.Contains(strings.Fields(c.Prompt), "consent")
}

// promptWarnings: a prompt without consent on an entry of preset google
// whose scopes list offline_access (c resolved with its preset), which
// then gets a refresh token at a user's first sign-in only. An entry
// without a preset is not warned of here: whether its IdP needs consent
// for a refresh token (OpenID Connect Core 11, oidc-provider) or shows an
// approval page for it at every login and issues one without (Dex) is
// not in the configuration, and a warning on the set-up that Dex needs
// could not be silenced. Its first login without a refresh token says so
// instead (warnNoRefreshToken).
func (c *Config) promptWarnings() []Warning {
	if c.Preset != PresetGoogle || !slices.Contains(c.Scopes, ScopeOfflineAccess) || !c.asksNoConsent() {
		return nil
	}
	// googleOfflineAccess: the refresh token comes with the first code
	// exchange of a user's grant, or again with consent.
	return []Warning{{"prompt", "with offline_access in scopes and no consent in prompt, Google issues a refresh token only at a user's first consent to this client: " +
		"sessions of later sign-ins last session.lifetime unrefreshed"}}
}

// warnNoRefreshToken logs, once for this provider, a login that asked for
// a refresh token (offline_access in scopes) and that the IdP answered
// without one (refreshToken empty): its session, and each like it, lasts
// session.lifetime unrefreshed. With a prompt without consent, the
// likely cause is named: an IdP that follows OpenID Connect Core 11
// (oidc-provider) ignores offline_access without it.
func (p *oidcProvider) warnNoRefreshToken(refreshToken string) {
	if refreshToken != "" || p.cfg.Protocol != OIDC || !slices.Contains(p.cfg.Scopes, ScopeOfflineAccess) ||
		!p.noRefreshTokenWarned.CompareAndSwap(false, true) {
		return
	}
	const msg = "oidc: a login asked for a refresh token (offline_access in scopes) and the IdP issued none: such sessions last session.lifetime unrefreshed"
	if p.cfg.asksNoConsent() {
		p.log.Warn(msg+"; prompt asks no consent, without which an IdP that follows OpenID Connect Core 11 (oidc-provider, and those built on it) issues none: "+
			"leave prompt out (auto), or list consent in it", "prompt", p.cfg.Prompt)
		return
	}
	p.log.Warn(msg + "; check that the IdP's client may use the refresh_token grant")
}
