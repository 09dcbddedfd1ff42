package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/rolemap"
	"github.com/portcullis-proxy/portcullis/rules"
)

// Explanation is what `portcullis explain` reports about one request: what
// the pipeline would do with it, step by step, without starting anything.
type Explanation struct {
	Path     string            // the normalized path rules and upstream see
	Stripped []string          // client headers the proxy would remove
	Rule     string            // the rule that matched
	Action   rules.Action      // its action
	Decision string            // what happens: bypass, denied, redirect, ...
	Reason   string            // why, in words
	Roles    []string          // with a profile: the mapped roles
	Headers  map[string]string // with a profile and access: the headers injected
	// Missing is, with a profile, what a login's missing_claims says:
	// each profile field access hangs on (email, groups) that the claims
	// lack, with the claim the IdP's mapping reads it from; MissingHint
	// is that line's hint, what makes the IdP send them.
	Missing     map[string]string
	MissingHint string
	MissingFrom string // what Missing's names are: claim, or SAML's attribute
}

// Explain walks r through the pipeline of cfg. Given the claims an IdP would
// send (and which IdP: "" for the first configured), it goes on past the
// session as a login would: the IdP's claim mapping and admission rules, role
// mapping, allow_if and the headers the upstream would get.
func Explain(cfg *Config, r *http.Request, source netip.Addr, claims map[string]any, idpID string) (*Explanation, error) {
	c, err := compile(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	if claims != nil {
		if _, err := cfg.identityProvider(idpID); err != nil {
			return nil, err
		}
	}
	e := &Explanation{}
	before := headerNames(r.Header)
	c.pass.Strip(r.Header)
	stripUpgrade(r.Header)
	dropConnectionListed(r.Header)
	for _, name := range before {
		if _, ok := r.Header[name]; !ok {
			e.Stripped = append(e.Stripped, name)
		}
	}
	if status, err := checkMethod(r.Method); err != nil {
		e.Decision, e.Reason = decisionDenied, strconv.Itoa(status)+": the method is refused: "+err.Error()
		return e, nil
	}
	path, err := rules.CleanPath(requestPath(r))
	if err != nil {
		e.Decision, e.Reason = decisionDenied, "400: the path is refused: "+err.Error()
		return e, nil
	}
	e.Path = path
	h := &Handler{compiled: c}
	if h.isAuthPath(path) {
		e.Decision, e.Reason = "endpoint", "a portcullis endpoint under server.auth_prefix; never forwarded"
		return e, nil
	}
	req := rules.NewRequest(r, path, source)
	rule, err := c.rules.Evaluate(req, time.Now())
	if err != nil {
		// What Match does, with the whole error, which its log line leaves out.
		e.Rule, e.Action = "error", rules.Deny
		e.Decision, e.Reason = decisionDenied, "403: a when expression failed, which refuses the request: "+err.Error()
		return e, nil
	}
	e.Rule, e.Action = rule.Name, rule.Action
	switch rule.Action {
	case rules.Deny:
		e.Decision, e.Reason = decisionDenied, "403: the rule denies it"
		return e, nil
	case rules.Bypass:
		e.Decision, e.Reason = decisionBypass, "forwarded as is, with no identity headers"
		return e, nil
	}
	// A basic_auth rule checks the caller's password at its LDAP IdP instead
	// of a session, as serveBasic does; the claims are then that IdP's.
	basic := rule.Config.BasicAuth != "" && hasBasicCredentials(r)
	if basic {
		idpID = rule.Config.BasicAuth
	}
	if claims == nil {
		e.Decision = decisionUnauthorized
		switch {
		case basic:
			e.Reason = "Authorization: Basic is checked at LDAP IdP " + idpID + ", with no session: the right password goes on as that user " +
				"(give --claims to go on), a wrong one gets 401 with WWW-Authenticate"
		case isNavigation(r):
			e.Decision = decisionRedirect
			e.Reason = "needs a session: a browser is sent to " + cfg.Server.AuthPrefix + "/login (give --claims to go on)"
		default:
			e.Reason = "needs a session: 401 JSON, or a redirect to the login page for a browser navigating (give --claims to go on)"
		}
		return e, nil
	}
	ic, err := cfg.identityProvider(idpID)
	if err != nil {
		return nil, err
	}
	attrs, err := attributes(ic.Protocol, claims)
	if err != nil {
		return nil, err
	}
	profile, err := loginProfile(ic, claims, attrs)
	if err != nil {
		e.Decision, e.Reason = decisionForbidden, "the login would be refused: "+err.Error()
		return e, nil
	}
	// As a login's line has it (missingClaims); none for LDAP, where the
	// directory's word is final (idp.Profile.Missing).
	if e.Missing = profile.Missing(); len(e.Missing) > 0 && ic.Protocol != idp.LDAP {
		e.MissingHint, e.MissingFrom = ic.MissingHint(), "claim"
		if ic.Protocol == idp.SAML {
			e.MissingFrom = "attribute"
		}
	} else {
		e.Missing = nil
	}
	if err := ic.Admit(profile); err != nil {
		e.Decision, e.Reason = decisionForbidden, "the login would be refused: "+err.Error()
		return e, nil
	}
	roles, err := c.roles.Map(profile)
	if errors.Is(err, rolemap.ErrNoRole) {
		e.Decision, e.Reason = decisionForbidden, "the login would be refused: no role matches and role_mapping.default is empty"
		return e, nil
	}
	if err != nil {
		return nil, fmt.Errorf("role mapping: %w", err)
	}
	profile.Roles, e.Roles = roles, roles
	ok, err := rule.Allow(profile, req, time.Now())
	if !ok {
		e.Decision, e.Reason = decisionForbidden, "403: allow_if is false"
		if err != nil {
			e.Reason += " (" + err.Error() + ")"
		}
		return e, nil
	}
	if e.Headers, err = c.pass.Values(profile); err != nil {
		e.Decision, e.Reason = decisionInternal, "500: "+err.Error()
		return e, nil
	}
	e.Decision, e.Reason = decisionAuthenticated, "forwarded with the identity headers below"
	if basic {
		e.Reason += ", without its Authorization header"
	}
	return e, nil
}

// The keys of a claims file for SAML and LDAP that are not attributes: an
// assertion's NameID, an entry's DN.
const (
	claimsNameID = "NameID"
	claimsDN     = "dn"
)

// explainNameID stands for the assertion's NameID when the claims file gives
// none: real assertions carry one, and it is sub unless attribute_mapping.uid
// names an attribute.
const explainNameID = "(NameID)"

// attributes reads claims as a SAML IdP's or an LDAP directory's attributes
// for those protocols, each a string or a list of strings: what a real one
// sends. Nil for OIDC and OAuth2, whose claims are any JSON.
func attributes(protocol string, claims map[string]any) (map[string][]string, error) {
	if protocol != idp.SAML && protocol != idp.LDAP {
		return nil, nil
	}
	attrs := map[string][]string{}
	for name, v := range claims {
		if name == claimsNameID && protocol == idp.SAML || name == claimsDN && protocol == idp.LDAP {
			if _, ok := v.(string); !ok {
				return nil, fmt.Errorf("claims: %s: want a string", name)
			}
			continue
		}
		switch v := v.(type) {
		case string:
			attrs[name] = []string{v}
		case []any:
			for _, e := range v {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("claims: attribute %q: want a string or a list of strings (a %s IdP sends no other)", name, protocol)
				}
				attrs[name] = append(attrs[name], s)
			}
		default:
			return nil, fmt.Errorf("claims: attribute %q: want a string or a list of strings (a %s IdP sends no other)", name, protocol)
		}
	}
	return attrs, nil
}

// loginProfile is the profile a login at ic would give: from the claims
// through ic's claims mapping (OIDC, OAuth2), or from attrs through its
// attribute_mapping, by the function the SAML or LDAP provider itself
// uses. An error is one the login would fail with.
func loginProfile(ic idp.Config, claims map[string]any, attrs map[string][]string) (*idp.Profile, error) {
	switch ic.Protocol {
	case idp.SAML:
		nameID, ok := claims[claimsNameID].(string)
		if !ok {
			nameID = explainNameID
		}
		return idp.SAMLProfile(ic, attrs, nameID)
	case idp.LDAP:
		dn, _ := claims[claimsDN].(string)
		return idp.LDAPProfile(ic, dn, attrs), nil
	}
	return idp.ProfileFromClaims(ic.ID, claims, ic.Claims), nil
}

func headerNames(h http.Header) []string {
	names := make([]string, 0, len(h))
	for name := range h {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// identityProvider is the IdP entry with that id (the first one for ""),
// with its preset filled in.
func (c *Config) identityProvider(id string) (idp.Config, error) {
	for _, ic := range c.SSO.IdentityProviders {
		if id == "" || ic.ID == id {
			return ic.WithPreset()
		}
	}
	return idp.Config{}, fmt.Errorf("no identity provider with id %q", id)
}
