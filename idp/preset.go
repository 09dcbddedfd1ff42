package idp

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// Presets: well-known identity providers whose endpoints, scopes and claim
// mapping portcullis fills in (preset: on an IdP entry). Each lives in its
// own preset_<name>.go over the helpers below.
const (
	PresetGoogle      = "google"
	PresetGitHub      = "github"
	PresetGitLab      = "gitlab"
	PresetCognito     = "cognito"
	PresetAzure       = "azure"
	PresetOkta        = "okta"
	PresetAuth0       = "auth0"
	PresetKeycloak    = "keycloak"
	PresetHuggingFace = "huggingface"
)

// presetNames lists every preset, for messages.
const presetNames = "google, github, gitlab, cognito, azure, okta, auth0, keycloak or huggingface"

// WithPreset returns c with its preset's defaults filled in wherever c leaves
// a key empty: protocol, endpoints, scopes, token_auth_method and claims
// (field by field). Keys the user gave always win. Without a preset it returns
// c unchanged. The error lists every key the preset needs and lacks, as
// "preset: azure needs tenant".
func (c Config) WithPreset() (Config, error) {
	if c.Preset == "" {
		return c, nil
	}
	// The claims map is shared with the caller's config: fill in a copy.
	c.Claims = maps.Clone(c.Claims)
	var err error
	switch c.Preset {
	case PresetGoogle:
		err = c.presetGoogle()
	case PresetGitHub:
		err = c.presetGitHub()
	case PresetGitLab:
		err = c.presetGitLab()
	case PresetCognito:
		err = c.presetCognito()
	case PresetAzure:
		err = c.presetAzure()
	case PresetOkta:
		err = c.presetOkta()
	case PresetAuth0:
		err = c.presetAuth0()
	case PresetKeycloak:
		err = c.presetKeycloak()
	case PresetHuggingFace:
		err = c.presetHuggingFace()
	default:
		err = fmt.Errorf("preset: unknown preset %q (want %s)", c.Preset, presetNames)
	}
	return c, err
}

// presetDisplayName is the name the chooser shows for a preset entry that has
// no name of its own.
func presetDisplayName(preset string) string {
	return map[string]string{
		PresetGoogle:      "Google",
		PresetGitHub:      "GitHub",
		PresetGitLab:      "GitLab",
		PresetCognito:     "Amazon Cognito",
		PresetAzure:       "Microsoft",
		PresetOkta:        "Okta",
		PresetAuth0:       "Auth0",
		PresetKeycloak:    "Keycloak",
		PresetHuggingFace: "Hugging Face",
	}[preset]
}

// presetDefaults is what one preset fills in; empty fields fill in nothing.
type presetDefaults struct {
	protocol        string
	serverURL       string
	authURL         string
	tokenURL        string
	userinfoURL     string
	scopes          []string
	tokenAuthMethod string
	// claims maps profile fields to the IdP's claim names.
	claims map[string]string
}

// apply fills the empty keys of c from d. A protocol the user chose that the
// preset cannot speak is an error.
func (c *Config) apply(d presetDefaults) error {
	var err error
	if d.protocol != "" {
		switch c.Protocol {
		case "":
			c.Protocol = d.protocol
		case d.protocol:
		default:
			err = fmt.Errorf("protocol: preset %s uses %s, not %s", c.Preset, d.protocol, c.Protocol)
		}
	}
	for field, value := range map[*string]string{
		&c.ServerURL:       d.serverURL,
		&c.AuthURL:         d.authURL,
		&c.TokenURL:        d.tokenURL,
		&c.UserinfoURL:     d.userinfoURL,
		&c.TokenAuthMethod: d.tokenAuthMethod,
	} {
		if *field == "" {
			*field = value
		}
	}
	if c.Scopes == nil && d.scopes != nil {
		c.Scopes = append([]string(nil), d.scopes...)
	}
	for field, claim := range d.claims {
		if _, set := c.Claims[field]; !set {
			if c.Claims == nil {
				c.Claims = map[string]string{}
			}
			c.Claims[field] = claim
		}
	}
	return err
}

// needs returns "preset: <preset> needs <key>" for each named key that is empty.
func (c *Config) needs(keys map[string]string) error {
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(keys)) {
		if strings.TrimSpace(keys[key]) == "" {
			errs = append(errs, fmt.Errorf("preset: %s needs %s", c.Preset, key))
		}
	}
	return errors.Join(errs...)
}

// httpsOrigin reads a host name or an http(s) URL as an origin without
// trailing slash: "login.example.com" and "https://login.example.com/" both
// give "https://login.example.com". The empty string stays empty.
func httpsOrigin(key, raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", nil
	}
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") ||
		u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("%s: not a host name or http(s) URL: %q", key, RedactURL(raw))
	}
	if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		// Checked here rather than on the URLs made from it, so that the
		// problem names the key the file has.
		return "", fmt.Errorf("%s: plain http refused outside development: the host %q is not loopback, and the preset's login, token and user endpoints are under it; use https", key, u.Hostname())
	}
	return strings.TrimSuffix(u.Scheme+"://"+u.Host+u.Path, "/"), nil
}

// checkPresetClaims refuses or adjusts, per preset, the claims of a login
// before they become a profile (Azure's group overage, Hugging Face's orgs).
func (c *Config) checkPresetClaims(claims map[string]any) error {
	switch c.Preset {
	case PresetAzure:
		return c.azureClaims(claims)
	case PresetHuggingFace:
		huggingFaceClaims(claims)
	}
	return nil
}

// unsentFields are the profile fields that entry c's IdP has no claim for,
// per preset, unless the operator mapped one: a login without them is
// missing nothing (Config.profile), and a hint to ask for a scope that
// releases them would send the operator looking for one the IdP does not
// have. Every Google login was logged as missing groups.
func (c *Config) unsentFields() []string {
	if c.noGroups() != "" {
		return []string{"groups"}
	}
	return nil
}

// noGroups says why entry c, its preset applied, never has groups, or ""
// when its IdP sends them or can be set up to (an Auth0 Action, Okta's and
// Azure's groups claims, Hugging Face's orgs): Google's ID token and
// userinfo carry none (a Workspace's groups are its Directory API's), nor
// does the userInfo of Cognito's hosted UI, which an entry with domain
// alone reads. A claims.groups the operator mapped is believed.
func (c *Config) noGroups() string {
	if _, mapped := c.Claims["groups"]; mapped {
		return ""
	}
	switch {
	case c.Preset == PresetGoogle:
		return "Google sends no groups (a Workspace's groups are in its Cloud Identity and Admin SDK Directory APIs, which portcullis does not call); " +
			"to admit only your Workspace, list its domains in allowed_email_domains, or admit by its hd claim in a condition: claims.hd == \"company.com\""
	case c.Preset == PresetCognito && c.Protocol == OAuth2:
		return "an entry of preset cognito with domain alone speaks OAUTH2 and reads the user from userInfo, which has no groups; " +
			"give user_pool_id (and region) instead, to read cognito:groups from the ID token"
	}
	return ""
}
