package idp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// Protocols an identity provider can speak.
const (
	OIDC   = "OIDC"
	OAuth2 = "OAUTH2"
	SAML   = "SAML"
	LDAP   = "LDAP"
)

// Config is one entry of sso.identity_providers. One struct serves every
// protocol; Validate says which keys each one needs.
type Config struct {
	ID          string `yaml:"id"`
	Name        string `yaml:"name"`
	Protocol    string `yaml:"protocol"`
	Preset      string `yaml:"preset"`
	EmailDomain string `yaml:"email_domain"`
	Weight      int    `yaml:"weight"`

	// OIDC and OAUTH2.
	ServerURL       string            `yaml:"server_url"`
	ClientID        string            `yaml:"client_id"`
	ClientSecret    string            `yaml:"client_secret"`
	Scopes          []string          `yaml:"scopes"`
	TokenAuthMethod string            `yaml:"token_auth_method"`
	Claims          map[string]string `yaml:"claims"`
	AuthURL         string            `yaml:"auth_url"`
	TokenURL        string            `yaml:"token_url"`
	UserinfoURL     string            `yaml:"userinfo_url"`
	// Prompt is the prompt parameter every login sends (prompt.go): auto
	// (the default, also when empty), omit, or a space-separated list of
	// login, consent and select_account.
	Prompt string `yaml:"prompt"`

	// Where a preset's IdP lives (see preset.go): base_url for GitHub
	// Enterprise (Server, or Cloud with data residency) and self-hosted GitLab, domain for Cognito, Okta and Auth0,
	// tenant for Azure, region and user_pool_id for Cognito,
	// authorization_server for Okta.
	BaseURL             string `yaml:"base_url"`
	Domain              string `yaml:"domain"`
	Tenant              string `yaml:"tenant"`
	Region              string `yaml:"region"`
	UserPoolID          string `yaml:"user_pool_id"`
	AuthorizationServer string `yaml:"authorization_server"`

	// Admission: who may sign in through this provider (see admission.go).
	AllowedEmailDomains  []string `yaml:"allowed_email_domains"`
	RequireVerifiedEmail bool     `yaml:"require_verified_email"`
	AllowedGroups        []string `yaml:"allowed_groups"`
	AllowedOrganizations []string `yaml:"allowed_organizations"`
	AllowedTeams         []string `yaml:"allowed_teams"`
	// TrustEmail counts every email address this IdP sends as verified, for
	// an IdP that sends no verification flag and whose addresses only its
	// administrators set (OIDC or OAUTH2 without a preset, SAML).
	TrustEmail bool `yaml:"trust_email"`
	// SingleSignOut sends the browser, on logout, to the IdP's
	// end_session_endpoint too (OIDC RP-initiated logout), or with a
	// LogoutRequest to its SingleLogoutService (SAML single logout, which
	// also takes the IdP's LogoutRequests).
	SingleSignOut bool `yaml:"single_sign_out"`

	// SAML.
	EntityID          string `yaml:"entity_id"`
	MetadataURL       string `yaml:"metadata_url"`
	X509Cert          string `yaml:"x509_cert"`
	SSOURL            string `yaml:"sso_url"`
	SLOURL            string `yaml:"slo_url"`
	SPCertFile        string `yaml:"sp_cert_file"`
	SPKeyFile         string `yaml:"sp_key_file"`
	AllowIdPInitiated bool   `yaml:"allow_idp_initiated"`

	// SAML and LDAP: directory or assertion attribute -> profile field.
	AttributeMapping map[string]string `yaml:"attribute_mapping"`

	// LDAP.
	URL                string `yaml:"url"`
	BindDN             string `yaml:"bind_dn"`
	BindPassword       string `yaml:"bind_password"`
	StartTLS           bool   `yaml:"start_tls"`
	CAFile             string `yaml:"ca_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
	UserSearch         Search `yaml:"user_search"`
	GroupSearch        Search `yaml:"group_search"`
}

// Search is an LDAP search: where to look and what to look for.
type Search struct {
	BaseDN string `yaml:"base_dn"`
	Filter string `yaml:"filter"`
}

// Options are what every provider needs from the proxy around it.
type Options struct {
	// PublicURL is the origin users see (server.public_url).
	PublicURL *url.URL
	// AuthPrefix is where the proxy's own endpoints live (server.auth_prefix).
	AuthPrefix string
	// HTTPClient reaches the IdP (discovery, tokens, metadata).
	HTTPClient *http.Client
	Logger     *slog.Logger
	// PKCE sends a PKCE S256 challenge with every OIDC and OAuth2 login
	// (sso.enable_pkce).
	PKCE bool
	// Replay records the assertions SAML providers accept, so that each is
	// accepted once; SAML providers require it.
	Replay ReplayStore
	// Running is the provider of the same entry id that this one replaces
	// at a configuration reload (nil at the start). What it fetched from
	// the same place, the OIDC discovery document of the same server_url
	// and the IdP metadata of the same metadata_url and entity_id, carries
	// over: a changed entry (a name, scopes, a client secret) takes effect
	// at once and is as ready as the running one was, rather than not
	// ready until its IdP answers again.
	Running Provider
}

// CallbackURL is the absolute URL of one of this provider's endpoints under the
// auth prefix, e.g. CallbackURL("company", "oidc", "callback").
func (o Options) CallbackURL(parts ...string) string {
	u := *o.PublicURL
	u.Path = strings.TrimSuffix(o.PublicURL.Path, "/") + o.AuthPrefix + "/" + strings.Join(parts, "/")
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

// Provider is a configured identity provider. Each also satisfies Redirector
// or PasswordChecker.
type Provider interface {
	// Ready reports whether the provider can log users in now (nil), or why not.
	Ready() error
}

// New builds the provider c describes. Providers that need the network
// (discovery, metadata) keep trying in the background until ctx ends; until
// then Ready reports ErrNotReady.
func New(ctx context.Context, c Config, o Options) (Provider, error) {
	c, err := c.WithPreset()
	if err != nil {
		return nil, err
	}
	switch c.Protocol {
	case OIDC, OAuth2:
		return newOIDC(ctx, c, o)
	case SAML:
		return newSAML(ctx, c, o)
	case LDAP:
		return newLDAP(ctx, c, o)
	}
	return nil, fmt.Errorf("protocol: unknown protocol %q", c.Protocol)
}

// idPattern is an IdP id; at most 63 bytes, checked apart: a counted
// repetition compiles to a program that every garbage collection scans.
var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// Validate returns every problem with c, each as "key: what is wrong" with the
// key relative to this provider's entry. It reaches nothing on the network.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if !idPattern.MatchString(c.ID) || len(c.ID) > 63 {
		bad("id", "must be 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit (got %q)", c.ID)
	}
	errs = append(errs, c.validateAdmission()...)
	// The entry is checked as it will run: with its preset's defaults. When
	// the preset cannot fill them in, its error says what to add, and the
	// keys it would have filled in are not reported missing as well; those
	// of the client, which every preset has and none fills in, are checked.
	resolved, err := c.WithPreset()
	if err != nil {
		errs = append(errs, err)
		if presetDisplayName(c.Preset) != "" {
			errs = append(errs, c.validateClient()...)
		}
		return errors.Join(errs...)
	}
	refused, _ := c.ignoredKeys(&resolved)
	errs = append(errs, refused...)
	if why := resolved.noGroups(); why != "" && len(c.AllowedGroups) > 0 {
		// Admit would refuse every user: not a setting that does nothing,
		// but one that locks everyone out until the file changes.
		bad("allowed_groups", "admits no one: %s", why)
	}
	c = &resolved
	switch c.Protocol {
	case OIDC, OAuth2:
		errs = append(errs, c.validateOIDC()...)
	case SAML:
		errs = append(errs, c.validateSAML()...)
	case LDAP:
		errs = append(errs, c.validateLDAP()...)
	case "":
		bad("protocol", "required (OIDC, OAUTH2, SAML or LDAP)")
		return errors.Join(errs...)
	default:
		bad("protocol", "unknown protocol %q (want OIDC, OAUTH2, SAML or LDAP)", c.Protocol)
		return errors.Join(errs...)
	}
	errs = append(errs, c.validatePrompt()...)
	return errors.Join(errs...)
}

// Warning is something valid in a configuration that may not do what was
// meant, keyed as Validate's problems are: `portcullis check` prints it and
// serve logs it, at start and at every reload, from the same list.
type Warning struct {
	Key     string
	Message string
}

// Warnings lists what in c is valid but weakens the set-up outside
// development, or does nothing, with keys relative to this provider's
// entry: plain ldap:// to a directory off loopback, a SAML key pair
// generated at start, a prompt that keeps offline_access from bringing a
// refresh token (promptWarnings), a key that this entry does not read
// (entryKeys). The
// IdP is built without logging these itself, so that each is said once.
func (c Config) Warnings() []Warning {
	resolved, err := c.WithPreset()
	if err != nil {
		return nil // Validate says what is wrong
	}
	var ws []Warning
	switch resolved.Protocol {
	case SAML:
		ws = resolved.samlWarnings()
	case LDAP:
		ws = resolved.ldapWarnings()
	case OIDC:
		ws = resolved.promptWarnings()
	}
	_, ignored := c.ignoredKeys(&resolved)
	return append(ws, ignored...)
}

// ApplyEnv overrides secrets from the environment:
// PORTCULLIS_IDP_<ID>_CLIENT_ID, _CLIENT_SECRET and _BIND_PASSWORD, where <ID>
// is the id in upper case with '-' read as '_' (EnvOverrides), each when set.
func (c *Config) ApplyEnv(getenv func(string) string) {
	fields := map[string]*string{
		"client_id":     &c.ClientID,
		"client_secret": &c.ClientSecret,
		"bind_password": &c.BindPassword,
	}
	for key, name := range c.EnvOverrides() {
		if v := getenv(name); v != "" {
			*fields[key] = v
		}
	}
}

// EnvOverrides names, by key relative to this entry, the environment
// variable that ApplyEnv takes that key's value from when it is set; none
// when the id is no id (empty, or with a space or a dot), which Validate
// refuses whatever the environment says: a problem naming
// PORTCULLIS_IDP__CLIENT_ID would send the reader to set it in vain.
func (c *Config) EnvOverrides() map[string]string {
	if !idPattern.MatchString(c.ID) {
		return nil
	}
	prefix := "PORTCULLIS_IDP_" + strings.ToUpper(strings.ReplaceAll(c.ID, "-", "_")) + "_"
	return map[string]string{
		"client_id":     prefix + "CLIENT_ID",
		"client_secret": prefix + "CLIENT_SECRET",
		"bind_password": prefix + "BIND_PASSWORD",
	}
}

// DisplayName is the name shown on the login pages.
func (c *Config) DisplayName() string {
	if c.Name != "" {
		return c.Name
	}
	if name := presetDisplayName(c.Preset); name != "" {
		return name
	}
	return c.ID
}

// RedactURL is a URL from the configuration as a problem may quote it: any
// user:password@ part masked, also where net/url does not read raw as a URL
// with one (no scheme, a space in the password).
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err == nil && u.User != nil:
		u.User = url.User("xxxxx")
		return u.String()
	case !strings.Contains(raw, "@"):
		return raw
	}
	return "xxxxx" + raw[strings.LastIndex(raw, "@"):]
}

func checkURL(key, raw string, required bool) error {
	if raw == "" {
		if required {
			return fmt.Errorf("%s: required", key)
		}
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "ldap" && u.Scheme != "ldaps") {
		return fmt.Errorf("%s: not an absolute URL: %q", key, RedactURL(raw))
	}
	return nil
}

// Registration is one URL of the proxy that the IdP's administrator enters
// at the IdP for this entry: What names it in the IdP's words, Key in the
// log's.
type Registration struct {
	Key, What, URL string
}

// Registrations are the URLs of the proxy to enter at the IdP for c, with
// its preset applied: a redirect URI that is not registered exactly (the
// scheme, the host, a trailing slash) is refused at the IdP, whose error
// page is all the user sees, and the proxy never hears of the login. LDAP
// has none.
func (c Config) Registrations(o Options) []Registration {
	if resolved, err := c.WithPreset(); err == nil {
		c = resolved
	}
	switch c.Protocol {
	case OIDC, OAuth2:
		regs := []Registration{{"redirect_uri", "redirect URI (callback URL)", o.CallbackURL("oidc", c.ID, "callback")}}
		if c.SingleSignOut {
			regs = append(regs, Registration{"post_logout_redirect_uri", "post-logout redirect URI", o.CallbackURL("logout", "done")})
		}
		if c.Protocol == OIDC {
			regs = append(regs, Registration{"backchannel_logout_uri", "back-channel logout URI (optional)", o.CallbackURL("oidc", c.ID, "backchannel-logout")})
		}
		return regs
	case SAML:
		regs := []Registration{
			{"acs_url", "ACS URL (Reply URL, single sign-on URL)", o.CallbackURL("saml", c.ID, "acs")},
			{"sp_entity_id", "SP entity ID (Audience URI) and metadata URL", o.CallbackURL("saml", c.ID, "metadata")},
		}
		if c.SingleSignOut {
			regs = append(regs, Registration{"slo_url", "single logout URL", o.CallbackURL("saml", c.ID, "slo")})
		}
		return regs
	}
	return nil
}
