package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
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

// Explain walks r through the pipeline of cfg, as serve would were r to
// come from the address peer: when peer is a trusted proxy, the client
// address is read from r's X-Forwarded-For, and its X-Request-Id kept, as
// serve reads them. Given the claims an IdP would send (and which IdP: ""
// for the first configured), r carries that user's session cookie, and
// Explain goes on past the session as a login would: the IdP's claim
// mapping and admission rules, role mapping, allow_if and the headers the
// upstream would get. Build r with ExplainRequest, so that it is what
// serve's server would make of the request.
func Explain(cfg *Config, r *http.Request, peer netip.Addr, claims map[string]any, idpID string) (*Explanation, error) {
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
	h := &Handler{compiled: c}
	r.RemoteAddr = netip.AddrPortFrom(peer, 0).String()
	if claims != nil {
		// The session's cookie as the rules see it, in the one Cookie line
		// a browser sends; its value, sealed and random, is left out.
		addCookie(r.Header, c.sessionOptions(nil).Name()+"=(session)")
	}
	before := headerNames(r.Header)
	h.cleanHeaders(r, []string{h.requestID(r)})
	for _, name := range before {
		if _, ok := r.Header[name]; !ok {
			e.Stripped = append(e.Stripped, name)
		}
	}
	// A Connection header that names Cookie drops the session's cookie
	// with the others, and with it the session.
	_, hasCookie := r.Header["Cookie"]
	dropped := claims != nil && !hasCookie
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
	if h.isAuthPath(path) {
		e.Decision, e.Reason = "endpoint", "a portcullis endpoint under server.auth_prefix; never forwarded"
		return e, nil
	}
	req := rules.NewRequest(r, path, h.clientAddr(r))
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
	if claims == nil || dropped && !basic {
		e.Decision = decisionUnauthorized
		next := " (give --claims to go on)"
		if dropped {
			next = " (the Connection header names Cookie, which drops the session's cookie)"
		}
		switch {
		case basic:
			e.Reason = "Authorization: Basic is checked at LDAP IdP " + idpID + ", with no session: the right password goes on as that user" +
				next + ", a wrong one gets 401 with WWW-Authenticate"
		case isNavigation(r):
			e.Decision = decisionRedirect
			e.Reason = "needs a session: a browser is sent to " + cfg.Server.AuthPrefix + "/login" + next
		default:
			e.Reason = "needs a session: 401 JSON, or a redirect to the login page for a browser navigating" + next
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
		e.Decision, e.Reason = decisionForbidden, loginRefused+err.Error()
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
		e.Decision, e.Reason = decisionForbidden, loginRefused+err.Error()
		return e, nil
	}
	roles, err := c.roles.Map(profile)
	if errors.Is(err, rolemap.ErrNoRole) {
		e.Decision, e.Reason = decisionForbidden, loginRefused+"no role matches and role_mapping.default is empty"
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

// loginRefused starts the reason of an explanation whose claims a login
// would refuse: no subject, an admission rule, a preset's refusal, no role.
const loginRefused = "the login would be refused: "

// ExplainRequest is the request `portcullis explain` describes: method,
// the URL (a bare path is one to public_url) and the header lines ("Name:
// value") as curl or a browser send them, with the URL's path and query
// as the request-target, its fragment left out, and a Host line of the
// URL's host unless the lines have one; then read as serve reads a request
// (readRequest). An error is a request serve's server refuses, or a URL
// that is none.
func ExplainRequest(cfg *Config, method, rawURL string, header []string) (*http.Request, error) {
	host, target, err := splitURL(cfg, rawURL)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(header, isHostLine) {
		header = append([]string{"Host: " + host}, header...)
	}
	return readRequest(method, target, header)
}

// splitURL is the host and the request-target of a URL given to explain.
func splitURL(cfg *Config, u string) (host, target string, err error) {
	if strings.HasPrefix(u, "/") {
		pu, err := url.Parse(cfg.Server.PublicURL)
		if err != nil {
			return "", "", fmt.Errorf("server.public_url: %w", err)
		}
		host, target = browserHost(pu), u
	} else {
		scheme, rest, ok := strings.Cut(u, "://")
		if !ok || scheme == "" {
			return "", "", fmt.Errorf("URL %q: want an absolute URL (https://host/path) or a path (/path)", u)
		}
		end := strings.IndexAny(rest, "/?#")
		if end < 0 {
			end = len(rest)
		}
		host, target = rest[:end], rest[end:]
		if _, after, ok := strings.Cut(host, "@"); ok {
			host = after // userinfo goes in Authorization, if anywhere
		}
	}
	target, _, _ = strings.Cut(target, "#")
	if target == "" || target[0] == '?' {
		target = "/" + target
	}
	return host, target, nil
}

func isHostLine(line string) bool {
	name, _, _ := strings.Cut(line, ":")
	return strings.EqualFold(strings.TrimSpace(name), "Host")
}

// readRequest is the request whose request line is method and target (as
// HTTP/1.1) and whose header lines are header, as the public listener's
// server reads it off a connection (newPublicServer): the same Host, path,
// header keys, values and continuations, and the same refusals (no Host,
// two Host lines, invalid names or values). An error says what that server
// answered instead of passing the request on.
func readRequest(method, target string, header []string) (*http.Request, error) {
	var raw strings.Builder
	raw.WriteString(method + " " + target + " HTTP/1.1\r\n")
	for _, line := range append([]string{method, target}, header...) {
		if strings.ContainsAny(line, "\r\n") {
			return nil, fmt.Errorf("%q: a line break in a request line or a header", line)
		}
	}
	for _, line := range header {
		if line == "" {
			return nil, errors.New("an empty header line")
		}
		raw.WriteString(line + "\r\n")
	}
	raw.WriteString("\r\n")

	client, conn := net.Pipe()
	defer client.Close()
	got := make(chan *http.Request, 1)
	srv := newPublicServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got <- r }), log.New(io.Discard, "", 0))
	defer srv.Close()
	go srv.Serve(&oneConn{conn: conn})
	go client.Write([]byte(raw.String())) // until the server has read it, or client is closed
	answer := make(chan string, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(client), nil)
		if err != nil {
			answer <- err.Error()
			return
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		answer <- strings.TrimSpace(string(body))
	}()
	select {
	case r := <-got:
		return r, nil
	case why := <-answer:
		select {
		case r := <-got: // the handler had it; this is its answer
			return r, nil
		default:
			return nil, fmt.Errorf("the proxy's server refuses the request: %s", withReason(why, raw.String()))
		}
	}
}

// withReason is the server's answer to the request raw, with the reason
// net/http's request reader refused it for when the answer gives none:
// the server answers a bare "400 Bad Request" to two Host lines or a header
// line its reader refuses, and reads requests with the same reader as
// http.ReadRequest. Only the reason is kept, not the line it may quote.
func withReason(answer, raw string) string {
	if strings.Contains(answer, ":") {
		return answer
	}
	_, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err == nil {
		return answer
	}
	reason, _, _ := strings.Cut(err.Error(), ":")
	return answer + ": " + reason
}

// oneConn is a listener that accepts one connection, then no more.
type oneConn struct {
	conn net.Conn
	done bool
}

func (l *oneConn) Accept() (net.Conn, error) {
	if l.done {
		return nil, net.ErrClosed
	}
	l.done = true
	return l.conn, nil
}

func (l *oneConn) Close() error   { return nil }
func (l *oneConn) Addr() net.Addr { return l.conn.LocalAddr() }

// addCookie adds the cookie pair to h's last Cookie line.
func addCookie(h http.Header, pair string) {
	if lines := h["Cookie"]; len(lines) > 0 {
		h["Cookie"] = append(lines[:len(lines)-1:len(lines)-1], lines[len(lines)-1]+"; "+pair)
		return
	}
	h["Cookie"] = []string{pair}
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

// explainDN stands for the entry's DN when the claims file gives none (or an
// empty one): every entry a login finds has one, and it is sub when the
// entry has no attribute_mapping.uid attribute, so a login never has an
// empty sub.
const explainDN = "(dn)"

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
				return nil, fmt.Errorf("--claims: %s: want a string", name)
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
					return nil, fmt.Errorf("--claims: attribute %q: want a string or a list of strings (a %s IdP sends no other)", name, protocol)
				}
				attrs[name] = append(attrs[name], s)
			}
		default:
			return nil, fmt.Errorf("--claims: attribute %q: want a string or a list of strings (a %s IdP sends no other)", name, protocol)
		}
	}
	return attrs, nil
}

// loginProfile is the profile a login at ic would give: from the claims
// through ic's claims mapping (OIDC, OAuth2), or from attrs through its
// attribute_mapping, by the function the OIDC, SAML or LDAP provider itself
// uses, so that what it refuses (no subject, a preset's refusal) is
// refused. An error is one the login would fail with.
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
		if strings.TrimSpace(dn) == "" {
			dn = explainDN
		}
		return idp.LDAPProfile(ic, dn, attrs), nil
	}
	return idp.OIDCProfile(ic, claims)
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
	return idp.Config{}, fmt.Errorf("--idp: no identity provider with id %q", id)
}
