package idp

import (
	"fmt"
	"slices"
	"strings"
)

// entryKey is a key of an identity_providers entry that only some entries
// read. On any other entry it does nothing: Config.Warnings says so, and
// Validate refuses it where its doing nothing lets in users it was written
// to keep out.
//
// single_sign_out and allow_idp_initiated (the proxy's check), trust_email
// on LDAP and allowed_organizations/allowed_teams off preset github
// (validateAdmission), and prompt on SAML and LDAP (validatePrompt) are
// refused where they do nothing, and are not here.
type entryKey struct {
	name string
	// set reports whether the user's entry (before its preset, after the
	// environment: a PORTCULLIS_IDP_<ID>_CLIENT_SECRET counts) gives the key.
	set func(c *Config) bool
	// readers is who reads the key: protocols (OIDC, OAUTH2, SAML, LDAP),
	// presets (azure), or a preset over one of its protocols
	// (cognito/OAUTH2). A protocol's keys are read by its presets' entries.
	readers []string
	// hint ends the warning: where what the key was meant to do is said.
	hint string
	// refuse gives, for a preset whose entries do not read the key, why
	// its being ignored is refused rather than warned of.
	refuse map[string]string
}

// signsInElsewhere is why a key that names the IdP's host, on a preset that
// takes it only as base_url, is refused: the preset's public IdP is used
// instead, where names that groups and admission rules compare are anyone's.
const (
	githubElsewhere = "users would sign in at github.com, where anyone can take an organization or team name; GitHub Enterprise's address is base_url"
	gitlabElsewhere = "users would sign in at gitlab.com, where anyone can take a group name; a self-managed GitLab's address is base_url"
)

// entryKeys is which entries read each key that not every entry reads.
var entryKeys = []entryKey{
	{name: "server_url", set: func(c *Config) bool { return c.ServerURL != "" }, readers: []string{OIDC},
		refuse: map[string]string{PresetGitHub: githubElsewhere}},
	{name: "client_id", set: func(c *Config) bool { return c.ClientID != "" }, readers: []string{OIDC, OAuth2}},
	{name: "client_secret", set: func(c *Config) bool { return c.ClientSecret != "" }, readers: []string{OIDC, OAuth2}},
	{name: "scopes", set: func(c *Config) bool { return len(c.Scopes) > 0 }, readers: []string{OIDC, OAuth2}},
	{name: "token_auth_method", set: func(c *Config) bool { return c.TokenAuthMethod != "" }, readers: []string{OIDC, OAuth2}},
	{name: "claims", set: func(c *Config) bool { return len(c.Claims) > 0 }, readers: []string{OIDC, OAuth2},
		hint: "SAML and LDAP entries map attributes with attribute_mapping"},
	{name: "auth_url", set: func(c *Config) bool { return c.AuthURL != "" }, readers: []string{OAuth2}},
	{name: "token_url", set: func(c *Config) bool { return c.TokenURL != "" }, readers: []string{OAuth2}},
	{name: "userinfo_url", set: func(c *Config) bool { return c.UserinfoURL != "" }, readers: []string{OAuth2}},

	{name: "base_url", set: func(c *Config) bool { return c.BaseURL != "" }, readers: []string{PresetGitHub, PresetGitLab, PresetAzure}},
	{name: "domain", set: func(c *Config) bool { return c.Domain != "" }, readers: []string{PresetOkta, PresetAuth0, PresetCognito + "/" + OAuth2},
		refuse: map[string]string{
			// Google has no domain to give: the operator meant a Workspace's
			// domain to limit who signs in (oauth2-proxy's email domains).
			PresetGoogle: "any Google account would sign in, whatever its domain; to admit only your Workspace's addresses, list its domains in allowed_email_domains",
			PresetGitHub: githubElsewhere,
			PresetGitLab: gitlabElsewhere,
		}},
	{name: "tenant", set: func(c *Config) bool { return c.Tenant != "" }, readers: []string{PresetAzure}},
	{name: "region", set: func(c *Config) bool { return c.Region != "" }, readers: []string{PresetCognito + "/" + OIDC}},
	{name: "user_pool_id", set: func(c *Config) bool { return c.UserPoolID != "" }, readers: []string{PresetCognito + "/" + OIDC}},
	{name: "authorization_server", set: func(c *Config) bool { return c.AuthorizationServer != "" }, readers: []string{PresetOkta}},

	{name: "entity_id", set: func(c *Config) bool { return c.EntityID != "" }, readers: []string{SAML}},
	{name: "metadata_url", set: func(c *Config) bool { return c.MetadataURL != "" }, readers: []string{SAML}},
	{name: "x509_cert", set: func(c *Config) bool { return c.X509Cert != "" }, readers: []string{SAML}},
	{name: "sso_url", set: func(c *Config) bool { return c.SSOURL != "" }, readers: []string{SAML}},
	{name: "slo_url", set: func(c *Config) bool { return c.SLOURL != "" }, readers: []string{SAML}},
	{name: "sp_cert_file", set: func(c *Config) bool { return c.SPCertFile != "" }, readers: []string{SAML}},
	{name: "sp_key_file", set: func(c *Config) bool { return c.SPKeyFile != "" }, readers: []string{SAML}},
	{name: "attribute_mapping", set: func(c *Config) bool { return len(c.AttributeMapping) > 0 }, readers: []string{SAML, LDAP},
		hint: "OIDC and OAUTH2 entries map claims with claims"},

	{name: "url", set: func(c *Config) bool { return c.URL != "" }, readers: []string{LDAP}},
	{name: "bind_dn", set: func(c *Config) bool { return c.BindDN != "" }, readers: []string{LDAP}},
	{name: "bind_password", set: func(c *Config) bool { return c.BindPassword != "" }, readers: []string{LDAP}},
	{name: "start_tls", set: func(c *Config) bool { return c.StartTLS }, readers: []string{LDAP}},
	{name: "ca_file", set: func(c *Config) bool { return c.CAFile != "" }, readers: []string{LDAP}},
	{name: "insecure_skip_verify", set: func(c *Config) bool { return c.InsecureSkipVerify }, readers: []string{LDAP}},
	{name: "user_search", set: func(c *Config) bool { return c.UserSearch != Search{} }, readers: []string{LDAP}},
	{name: "group_search", set: func(c *Config) bool { return c.GroupSearch != Search{} }, readers: []string{LDAP}},
}

var protocols = []string{OIDC, OAuth2, SAML, LDAP}

// readBy reports whether the entry r, its preset applied, reads k.
func (k entryKey) readBy(r *Config) bool {
	return slices.ContainsFunc(k.readers, func(who string) bool {
		if slices.Contains(protocols, who) {
			return r.Protocol == who
		}
		preset, protocol, _ := strings.Cut(who, "/")
		return r.Preset == preset && (protocol == "" || r.Protocol == protocol)
	})
}

// ignoredKeys are the keys that c gives and that c, resolved to r with its
// preset, does not read: refused are those whose refuse names r's preset,
// warned of the others.
func (c *Config) ignoredKeys(r *Config) (refused []error, warned []Warning) {
	if !slices.Contains(protocols, r.Protocol) {
		return nil, nil // Validate says what is wrong
	}
	for _, k := range entryKeys {
		if !k.set(c) || k.readBy(r) {
			continue
		}
		if why := k.refuse[r.Preset]; why != "" {
			refused = append(refused, fmt.Errorf("%s: not read by preset %s: %s", k.name, r.Preset, why))
			continue
		}
		msg := fmt.Sprintf("ignored: %s does not read it (%s)", describeEntry(r, k), describeReaders(k.readers))
		if k.hint != "" {
			msg += "; " + k.hint
		}
		warned = append(warned, Warning{k.name, msg})
	}
	return refused, warned
}

// describeEntry names the kind of entry r is, as a warning about k says it.
func describeEntry(r *Config, k entryKey) string {
	article := "an"
	if r.Protocol == SAML {
		article = "a"
	}
	switch {
	case r.Preset == PresetCognito:
		// The only preset with two protocols, and keys of each.
		return "an entry of preset cognito over " + r.Protocol
	case r.Preset != "":
		return "an entry of preset " + r.Preset
	case !slices.ContainsFunc(k.readers, func(who string) bool { return slices.Contains(protocols, who) }):
		return article + " " + r.Protocol + " entry without a preset"
	}
	return article + " " + r.Protocol + " entry"
}

// describeReaders says who reads a key: "OIDC and OAUTH2 entries do",
// "presets okta, auth0 and cognito over OAUTH2 do".
func describeReaders(readers []string) string {
	var protos, presets []string
	for _, who := range readers {
		if slices.Contains(protocols, who) {
			protos = append(protos, who)
		} else {
			presets = append(presets, strings.Replace(who, "/", " over ", 1))
		}
	}
	switch {
	case len(protos) > 0:
		return joinAnd(protos) + " entries do"
	case len(presets) == 1:
		return "preset " + presets[0] + " does"
	}
	return "presets " + joinAnd(presets) + " do"
}

func joinAnd(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}
