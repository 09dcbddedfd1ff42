package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"net/textproto"
	"net/url"
	"slices"
	"strings"

	"github.com/portcullis-proxy/portcullis/attrpass"
	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/rolemap"
	"github.com/portcullis-proxy/portcullis/rules"
	"golang.org/x/net/publicsuffix"
)

// compiled is everything in a Config that can be checked and built without
// reaching the network: it is what `portcullis check` and `explain` use, and
// what New builds the running proxy from.
type compiled struct {
	cfg         *Config
	publicURL   *url.URL
	upstreamURL *url.URL
	trusted     []netip.Prefix
	keys        [][]byte
	rules       *rules.Set
	roles       *rolemap.Mapper
	pass        *attrpass.Pass
	// keepFromProxy are server.trusted_proxy_certificate_headers, spelt
	// canonically: kept from a trusted proxy by the strip.
	keepFromProxy []string

	// forwardedProto and forwardedHost are the X-Forwarded-Proto and
	// X-Forwarded-Host values of public_url, set on every upstream request.
	forwardedProto, forwardedHost []string
}

// sessionOptions are the options of c's session cookies, for log.
func (c *compiled) sessionOptions(log *slog.Logger) session.Options {
	return session.Options{
		CookieName:  c.cfg.Session.CookieName,
		Keys:        c.keys,
		Secure:      c.publicURL.Scheme == "https",
		Lifetime:    c.cfg.Session.Lifetime,
		IdleTimeout: c.cfg.Session.IdleTimeout,
		Audience:    strings.ToLower(c.publicURL.Scheme + "://" + c.publicURL.Host),
		Logger:      log,
	}
}

// SessionOptions are the options of cfg's session cookies as serve uses
// them, keys and audience included: for tools that make or read sessions
// outside the proxy. cfg must pass Check.
func SessionOptions(cfg *Config) (session.Options, error) {
	c, err := compile(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return session.Options{}, err
	}
	return c.sessionOptions(nil), nil
}

// Check validates cfg completely without reaching the network and returns
// every problem, each as "path.to.key: what is wrong".
func Check(cfg *Config) error {
	_, err := compile(cfg, slog.New(slog.DiscardHandler))
	return err
}

// Warning is something in a configuration that is valid but may not do what
// was meant: `portcullis check` prints it and still passes, and serve logs
// it at start and at every reload.
type Warning struct {
	Key     string // path.to.key
	Message string
}

func (w Warning) String() string { return w.Key + ": " + w.Message }

// Warnings lists what in cfg is valid but may not do what was meant, in the
// order of the configuration's blocks: what weakens the set-up outside
// development (a plain-http public_url off loopback; a trusted_proxies
// entry that makes any client on the internet a proxy, trustsThePublic; the
// IdPs' and attribute_pass's own, idp.Config.Warnings and
// attrpass.Config.Warnings); an entry's email_domain or weight that
// sso.selection_mode does not read (selectionKeyWarnings); a rule that an
// earlier one leaves nothing to match, and a bypass of every path
// (rules.Set.Warnings);
// in every expression over the profile, a comparison of idp with an id no
// IdP has (idp.UnknownIdPWarnings); and the conditions that admit users by
// a group's name (role_mapping's when, a rule's allow_if) that some IdP's
// users can make theirs, or that more than one IdP can give
// (idp.GroupNameWarnings). It is the one list of them: serve logs nothing
// of these on its own.
func Warnings(cfg *Config) []Warning {
	var out []Warning
	if u, err := url.Parse(cfg.Server.PublicURL); err == nil && u.Scheme == "http" && u.Host != "" && !isLoopback(u.Hostname()) {
		out = append(out, Warning{"server.public_url", "plain http: session cookies are sent unencrypted; use https outside development"})
	}
	for i, s := range cfg.Server.TrustedProxies {
		if p, err := rules.ParsePrefix(s); err == nil && trustsThePublic(p) {
			out = append(out, Warning{fmt.Sprintf("server.trusted_proxies[%d]", i), s + " includes public addresses: any client that connects from one is taken for a proxy, and its X-Forwarded-For sets the client address that sources rules, the logs and LDAP's failed-login limit see; list only your proxies' own addresses or ranges"})
		}
	}
	under := func(prefix string, ws []idp.Warning) {
		for _, w := range ws {
			out = append(out, Warning{Key: prefix + w.Key, Message: w.Message})
		}
	}
	for i, ic := range cfg.SSO.IdentityProviders {
		under(fmt.Sprintf("sso.identity_providers[%d].", i), ic.Warnings())
		under(fmt.Sprintf("sso.identity_providers[%d].", i), selectionKeyWarnings(cfg.SSO.SelectionMode, len(cfg.SSO.IdentityProviders) == 1, ic))
		if key, idpSite, ok := samlAnswersFromAnotherSite(cfg.Server.PublicURL, ic); ok {
			out = append(out, Warning{fmt.Sprintf("sso.identity_providers[%d].%s", i, key), "this SAML IdP's pages are on another site (" + idpSite + ") than server.public_url, which is plain http: " +
				"browsers send the login's cookie with the IdP's answer, a POST from its site, only when the cookie is SameSite=None, which they accept only with Secure, over https; " +
				"so every login started here fails with state_cookie_missing. Serve the proxy on https, or, in development, put the IdP on the proxy's host (another port is fine)"})
		}
	}
	providers := cfg.SSO.IdentityProviders
	expression := func(key, src string) {
		for _, msg := range idp.UnknownIdPWarnings(src, providers) {
			out = append(out, Warning{Key: key, Message: msg})
		}
		for _, msg := range idp.EmailDomainWarnings(src) {
			out = append(out, Warning{Key: key, Message: msg})
		}
	}
	condition := func(key, src string) {
		expression(key, src)
		for _, msg := range idp.GroupNameWarnings(src, providers) {
			out = append(out, Warning{Key: key, Message: msg})
		}
	}
	for i, r := range cfg.RoleMapping.Rules {
		condition(fmt.Sprintf("role_mapping.rules[%d].when", i), r.When)
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.AttributePass.Headers)) {
		expression("attribute_pass.headers."+name, cfg.AttributePass.Headers[name])
	}
	under("attribute_pass.", cfg.AttributePass.Warnings())
	if set, err := rules.Compile(cfg.Rules, cfg.DefaultAction, nil); err == nil { // else check reports the rules' errors
		under("", set.Warnings())
	}
	for i, r := range cfg.Rules {
		expression(fmt.Sprintf("rules[%d].when", i), r.When)
		condition(fmt.Sprintf("rules[%d].allow_if", i), r.AllowIf)
	}
	return out
}

// selectionKeyWarnings: email_domain and weight only pick the IdP a login
// goes to, each in one sso.selection_mode, and in any other do nothing;
// nor does email_domain with one IdP (alone), to which /login sends every
// user without asking an address. email_domain above all may have been
// written to limit who signs in, which it never does (an operator from
// oauth2-proxy, whose email_domains does), so its warning names the key
// that does.
func selectionKeyWarnings(mode string, alone bool, ic idp.Config) []idp.Warning {
	var ws []idp.Warning
	switch {
	case ic.EmailDomain == "":
	case mode != SelectEmailAddress:
		ws = append(ws, idp.Warning{Key: "email_domain", Message: "ignored: only sso.selection_mode email_address reads it, to pick the IdP by the address a user types (the mode is " + mode + "); to limit who signs in use allowed_email_domains"})
	case alone:
		ws = append(ws, idp.Warning{Key: "email_domain", Message: "ignored: with one identity provider every login goes to it, whatever the address (sso.selection_mode email_address asks for none); to limit who signs in use allowed_email_domains"})
	}
	if ic.Weight != 0 && mode != SelectLowestWeight {
		ws = append(ws, idp.Warning{Key: "weight", Message: "ignored: only sso.selection_mode lowest_weight reads it, to send every login to the entry of lowest weight (the mode is " + mode + ")"})
	}
	return ws
}

// samlAnswersFromAnotherSite says whether ic is a SAML IdP whose answers
// no login started at a plain-http public can take: its pages (sso_url, or
// else where its metadata is) on another site than public's, so that its
// HTTP-POST answer comes without the login's Lax cookie (session.Flows
// makes it None only over https). It names the key it read and the IdP's
// site. The runtime's side of this is flowFailure's hint.
func samlAnswersFromAnotherSite(public string, ic idp.Config) (key, idpSite string, ok bool) {
	pu, err := url.Parse(public)
	if err != nil || pu.Scheme != "http" {
		return "", "", false
	}
	if resolved, err := ic.WithPreset(); err == nil {
		ic = resolved
	}
	if ic.Protocol != idp.SAML {
		return "", "", false
	}
	key, at := "sso_url", ic.SSOURL
	if at == "" {
		key, at = "metadata_url", ic.MetadataURL
	}
	iu, err := url.Parse(at)
	if err != nil || iu.Host == "" {
		return "", "", false // validate says what is wrong
	}
	if idpSite = site(iu); idpSite == site(pu) {
		return "", "", false
	}
	return key, idpSite, true
}

// site is u's site as browsers compare sites for SameSite cookies: its
// scheme (Chromium's schemeful same-site, since version 89) and its
// registrable domain, or the whole host for an IP address or a name with
// none (localhost; the public suffix list's default rule makes each name
// under localhost, as under any unlisted top-level name, a site of its own).
func site(u *url.URL) string {
	host := strings.ToLower(u.Hostname())
	if _, err := netip.ParseAddr(host); err != nil {
		if domain, err := publicsuffix.EffectiveTLDPlusOne(host); err == nil {
			host = domain
		}
	}
	return u.Scheme + "://" + host
}

func compile(cfg *Config, log *slog.Logger) (*compiled, error) {
	var p problems
	cfg.validate(&p)
	checkBasicAuth(cfg, &p) // rules naming an LDAP IdP (ldap.go)
	c := &compiled{cfg: cfg}
	var err error
	c.rules, err = rules.Compile(cfg.Rules, cfg.DefaultAction, log)
	p.addAll("", err)
	c.roles, err = rolemap.Compile(cfg.RoleMapping)
	p.addAll("role_mapping.", err)
	c.pass, err = attrpass.Compile(cfg.AttributePass, cfg.Server.PublicURL)
	p.addAll("attribute_pass.", err)
	if c.pass != nil {
		c.pass.AlsoStrip(spoofable...)
		c.pass.AlsoStrip(clientCertificateHeaders...)
		c.pass.AlsoStrip(requestIDHeader) // every spelling; the proxy sets its own after the strip
		c.pass.AlsoStripOtherSpellings(forwardedHeaders[:]...)
	}
	// A value of the wrong type stays one whatever a PORTCULLIS_* variable
	// says, so only the rest may name one.
	if p = slices.Concat(cfg.blameEmptyVars(cfg.shape, false), cfg.blameEmptyVars(p.except(cfg.undecoded), true)); len(p) > 0 {
		return nil, errors.Join(p...)
	}
	// validate has already refused anything these could fail on.
	c.publicURL, _ = url.Parse(cfg.Server.PublicURL)
	c.publicURL.Path = ""
	c.publicURL.Host = browserHost(c.publicURL)
	c.forwardedProto, c.forwardedHost = []string{c.publicURL.Scheme}, []string{c.publicURL.Host}
	c.upstreamURL, _ = url.Parse(cfg.Upstream.URL)
	c.trusted, _ = parsePrefixes(cfg.Server.TrustedProxies)
	for _, name := range cfg.Server.TrustedProxyCertificateHeaders {
		c.keepFromProxy = append(c.keepFromProxy, textproto.CanonicalMIMEHeaderKey(name))
	}
	for _, k := range cfg.Session.Keys {
		key, err := decodeKey(k)
		if err != nil {
			return nil, fmt.Errorf("session.keys: %w", err)
		}
		c.keys = append(c.keys, key)
	}
	return c, nil
}

// browserHost is u's host as browsers send it in Host and Origin: without
// the scheme's default port, which the upstream (Django's CSRF check)
// compares them with.
func browserHost(u *url.URL) string {
	if port := u.Port(); (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
		return strings.TrimSuffix(u.Host, ":"+port)
	}
	return u.Host
}
