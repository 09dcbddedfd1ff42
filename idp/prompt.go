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

// promptWarnings: a prompt without consent on an entry whose scopes list
// offline_access, at an IdP that then issues no refresh token (c resolved
// with its preset). Which IdPs do is not known from the configuration:
// the warning says which do not mind.
func (c *Config) promptWarnings() []Warning {
	if c.Protocol != OIDC || !slices.Contains(c.Scopes, ScopeOfflineAccess) ||
		c.Prompt == "" || c.Prompt == PromptAuto || slices.Contains(strings.Fields(c.Prompt), "consent") {
		return nil
	}
	const lead = "with offline_access in scopes and no consent in prompt, "
	switch c.Preset {
	case "":
		// OpenID Connect Core 11: offline_access is ignored unless prompt
		// has consent. oidc-provider follows it (TestPromptAtAStrictIdP).
		return []Warning{{"prompt", lead + "an IdP that follows OpenID Connect Core 11 (oidc-provider, and those built on it) issues no refresh token, " +
			"and sessions last session.lifetime unrefreshed; Dex, Keycloak, Okta, Auth0 and Authelia issue one without it"}}
	case PresetGoogle:
		// googleOfflineAccess: the refresh token comes with the first
		// code exchange of a user's grant, or again with consent.
		return []Warning{{"prompt", lead + "Google issues a refresh token only at a user's first consent to this client: " +
			"sessions of later sign-ins last session.lifetime unrefreshed"}}
	}
	// Entra ID issues one for the scope alone; the other presets' IdPs
	// (Keycloak, Okta, Auth0, GitLab, Cognito) without consent too.
	return nil
}
