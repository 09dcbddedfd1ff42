// Package proxy is portcullis's request pipeline: it decides what happens to
// each request, logs browsers in at an identity provider, keeps their
// sessions and forwards requests upstream with the identity headers the
// application trusts.
package proxy

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/portcullis-proxy/portcullis/attrpass"
	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/rules"
)

// Handler is the proxy: every request to the public listener goes through its
// ServeHTTP.
type Handler struct {
	*compiled
	sessions    session.Store
	flows       *session.Flows
	devices     *session.Devices // device cookies of the LDAP form (ldap.go)
	cookies     session.Options
	providers   map[string]*provider
	order       []*provider // as configured, for the login pages
	upstream    *httputil.ReverseProxy
	transport   *http.Transport // upstream's, kept by a reload (timeouts.go)
	upstreamCAs []byte          // upstream.tls.ca_file's PEM the transport trusts; nil: the system's CAs
	auth        http.Handler    // the endpoints under server.auth_prefix
	pages       *pages
	metrics     *metrics
	ruleSeries  *ruleSeries // rule_matches_total of this config's rules
	log         *slog.Logger
	accessLogs  *accessLogs // the access log by rule and decision (accesslog.go)
	now         func() time.Time
	idpStop     map[string]context.CancelFunc // ends each provider's background work (reload.go)
	refresher   *refresher                    // renews sessions at the IdP (refresh.go)
	passwords   *passwordLogins               // LDAP failure limits and Basic auth cache (ldap.go)
	authz       *sessionAuthz                 // sessions' roles under this configuration (authz.go)
	samlChecks  *checkSlots                   // SAML responses checked at once (samlchecks.go)
	// idpTransport carries the requests to the IdPs; nil is
	// http.DefaultTransport (build). A reload keeps it.
	idpTransport http.RoundTripper
	// pause waits until a refused password check may be answered, or its
	// client is gone (failuredelay.go): sleepUntil, which tests replace.
	pause func(ctx context.Context, until time.Time)
	// redis is the Redis replicas share, nil with the cookie store (redis.go).
	redis *session.Redis
	// logoutTokens marks the jti of back-channel logout tokens used (backchannel.go).
	logoutTokens session.OnceMarker
	// assertions marks the SAML assertions used, for every SAML provider (redis.go).
	assertions idp.ReplayStore
	// storeDown and upstreamDown throttle the diagnostic line that each
	// request would write while Redis or the upstream fails (accesslog.go).
	storeDown, upstreamDown oncePerSecond
	headerTooLong           oncePerSecond // warnHeaderTooLong
	// largeLoginWarned is set once a login's answer outgrew a front
	// proxy's default header buffer and the log said so (auth.go).
	largeLoginWarned atomic.Bool
	// formerCookies are the session.cookie_name of the configurations that
	// reloads replaced: browsers send their cookies until they expire, and
	// the upstream must not get them either (upstream.go).
	formerCookies []session.Options
}

// Decisions, as logged and counted in requests_total{decision}.
const (
	decisionBypass        = "bypass"
	decisionAuthenticated = "authenticated"
	decisionRedirect      = "redirect"
	decisionUnauthorized  = "unauthorized"
	decisionForbidden     = "forbidden"
	decisionDenied        = "denied"
	decisionInternal      = "internal"
)

// retryAfter is the Retry-After (RFC 9110 10.2.3, delay-seconds) of every
// 503 the proxy answers itself because something it depends on is briefly
// away: the session store (Redis), an IdP not yet reached, the directory.
// It is what the outages measured in test/e2e last: a Sentinel failover
// answered its first 200 3.4 s after the master died, a Cluster master's
// 3.1 s, and a dropped Redis connection is back within a second. A client
// that waits 5 s and tries once more lands after either; a longer wait
// (the LDAP pages said 30) keeps scripts idle long after the outage, and
// an outage that lasts longer costs a retry every 5 s, each a cheap 503.
// Not /readyz: a probe has its own schedule.
const retryAfter = "5"

// retryLater says, on a 503 about to be written, when to try again.
func retryLater(w http.ResponseWriter) { w.Header().Set("Retry-After", retryAfter) }

// ServeHTTP walks one request through the pipeline:
//
//	strip spoofable headers → normalize path → rules.Match → bypass | deny |
//	authenticate → session (or login) → allow_if → attribute pass → upstream.
//
// A session's roles are what this configuration's role_mapping gives its
// profile (authz.go), not what the configuration that made it gave.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.now()
	x := &exchange{statusRecorder: statusRecorder{ResponseWriter: w, req: r}}
	x.id[0] = h.requestID(r) // read before the strip: a trusted proxy's ID is kept
	x.requestID = x.id[:]    // shared by request and response, never modified
	w.Header()[requestIDHeader] = x.requestID
	decision := h.serve(&x.statusRecorder, r, &x.outcome)
	end := h.now()
	h.metrics.observe(decision, x.status(), end.Sub(start))
	h.logRequest(r, x.id[0], decision, &x.statusRecorder, &x.outcome, end, end.Sub(start))
}

// exchange is the proxy's bookkeeping of one request, in one allocation: the
// writer that records the answer, what the request came to, and its ID.
type exchange struct {
	statusRecorder
	outcome
	id [1]string
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, o *outcome) string {
	h.cleanHeaders(r, o.requestID)

	// A method rule compares methods as sent; an upstream that upper-cases
	// them (Django) would run `delete` as the DELETE the rule refuses.
	if status, err := checkMethod(r.Method); err != nil {
		if status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS") // RFC 9110 15.5.6
		}
		h.pages.fail(w, r, status, http.StatusText(status), "The request method is not allowed: "+err.Error()+".")
		return decisionDenied
	}

	if err := checkTrailer(r.Trailer); err != nil {
		h.pages.fail(w, r, http.StatusBadRequest, "Bad request", "The request is not allowed: "+err.Error()+".")
		return decisionDenied
	}

	// Rules and the upstream see one and the same path (SPEC invariant 4).
	path, err := rules.CleanPath(requestPath(r))
	if err != nil {
		h.pages.fail(w, r, http.StatusBadRequest, "Bad request", "The request path is not allowed: "+err.Error())
		return decisionDenied
	}
	r.URL.Path, r.URL.RawPath = path, ""
	if h.isAuthPath(path) {
		// Every answer of the proxy's own endpoints is for one browser at
		// one moment (a login's state cookie, a redirect that depends on
		// the session): a shared cache in front must not keep it. The
		// public ones (jwks.json) say otherwise for themselves.
		w.Header().Set("Cache-Control", "no-store")
		h.auth.ServeHTTP(w, r)
		return decisionOf(w.(*statusRecorder).status())
	}

	req := &o.req
	req.Init(r, path, h.clientAddr(r))
	o.client = req.Source
	rule := h.rules.Match(req)
	h.ruleSeries.matched(rule)
	o.rule = rule
	switch rule.Action {
	case rules.Deny:
		h.pages.fail(w, r, http.StatusForbidden, "Forbidden", "This address is not available.")
		return decisionDenied
	case rules.Bypass:
		return h.forward(w, r, nil) // no identity: the upstream checks the caller's own credentials
	}

	if rule.Config.BasicAuth != "" && hasBasicCredentials(r) {
		return h.serveBasic(w, r, rule, req, o) // the caller's LDAP password instead of a session (ldap.go)
	}

	s, err := h.loadSession(r)
	if clientLeft(w, r, err) {
		return decisionUnauthorized
	}
	if err != nil {
		h.logThrottled(&h.storeDown, slog.LevelError, "session store unavailable", append(storeFault(err), slog.Any("err", err))...)
		retryLater(w)
		h.pages.fail(w, r, http.StatusServiceUnavailable, "Temporarily unavailable", "Sessions cannot be checked right now. Try again in a moment.")
		return decisionInternal
	}
	if s != nil {
		s = h.refreshSession(w, r, s) // session.refresh: the IdP confirms the user; nil when it refused
	}
	if s == nil {
		return h.challenge(w, r)
	}
	o.setUser(&s.Profile)
	if err := h.sessions.Touch(w, r, s); err != nil {
		h.log.Warn("session touch failed", "err", err)
	}

	allowed, err := rule.Allow(&s.Profile, req, h.now())
	if err != nil {
		h.log.Warn("allow_if failed; refusing", "rule", rule.Name, "at", rules.FailedAt(err))
	}
	if !allowed {
		h.pages.fail(w, r, http.StatusForbidden, "Access denied", "Your account does not have access to this page.")
		return decisionForbidden
	}
	return h.forwardSession(w, r, s) // attribute pass: identity headers for the upstream
}

// cleanHeaders removes from r what no client may send and sets the
// request's ID (requestID, read before), before anything reads the
// headers: nothing a client sends may pose as the proxy's own word about
// identity, nor change how the upstream reads the method or path. Explain
// calls it too, so that the rules see there what they see here.
func (h *Handler) cleanHeaders(r *http.Request, id []string) {
	// A trusted proxy's certificate headers that the configuration keeps,
	// as spelt canonically: only then is the peer's address read.
	var kept [][]string
	if len(h.keepFromProxy) > 0 && h.trustedPeer(r) {
		kept = make([][]string, len(h.keepFromProxy))
		for i, name := range h.keepFromProxy {
			kept[i] = r.Header[name]
		}
	}
	h.pass.Strip(r.Header)
	for i, v := range kept {
		if v != nil {
			r.Header[h.keepFromProxy[i]] = v
		}
	}
	stripUpgrade(r.Header)
	dropConnectionListed(r.Header)
	r.Header[requestIDHeader] = id // the proxy's own, once every client spelling is gone
}

// loadSession is the request's session, nil for none, with the roles this
// configuration maps its profile to. A session whose IdP this configuration
// does not have (removed, renamed) is none: the proxy no longer trusts what
// that IdP said, so the user logs in again; so is one whose user this
// configuration would not let sign in (authorize). It is not deleted:
// during a rolling update the IdP may be one that only newer replicas know,
// and with the Redis store a delete would end it on those too.
func (h *Handler) loadSession(r *http.Request) (*session.Session, error) {
	s, err := h.sessions.Load(r)
	if err != nil || s == nil {
		return s, err
	}
	if h.providers[s.Profile.IdP] == nil {
		return nil, nil
	}
	return h.authorize(s), nil
}

// errLowerCaseMethod refuses a method with a lower-case letter. Methods are
// case-sensitive (RFC 9110), every standard one is upper case, and nginx
// refuses the others too.
var errLowerCaseMethod = errors.New("lower-case letters in the method")

// errUnproxiedMethod refuses CONNECT, which would ask the upstream for a
// tunnel, and TRACE, which would echo the request's cookies back to a
// script (cross-site tracing): neither has a place behind a reverse proxy.
var errUnproxiedMethod = errors.New("CONNECT and TRACE are not passed on")

// checkMethod refuses a method that an upstream could read as another one
// than the rules did, with 400, and one that has no business upstream, with
// 405.
func checkMethod(m string) (status int, err error) {
	if m == http.MethodConnect || m == http.MethodTrace {
		return http.StatusMethodNotAllowed, errUnproxiedMethod
	}
	for i := 0; i < len(m); i++ {
		if 'a' <= m[i] && m[i] <= 'z' {
			return http.StatusBadRequest, errLowerCaseMethod
		}
	}
	return 0, nil
}

// errTrailerName refuses a Trailer header that declares what is no field
// name ("", a quote, a space). net/http's server takes the declaration as
// it comes and its transport refuses to send it on: the client's mistake
// was answered 502 and counted as the upstream's failure.
var errTrailerName = errors.New("the Trailer header declares an invalid field name")

// checkTrailer refuses a request whose declared trailers could not be sent
// upstream.
func checkTrailer(trailer http.Header) error {
	for name := range trailer {
		if !attrpass.ValidName(name) {
			return errTrailerName
		}
	}
	return nil
}

// clientLeft answers 499 when err came of r's client going away (a Redis
// read canceled with it): no sign of the store failing, and nobody reads
// the answer.
func clientLeft(w http.ResponseWriter, r *http.Request, err error) bool {
	if err == nil || r.Context().Err() == nil {
		return false
	}
	w.WriteHeader(statusClientClosed)
	return true
}

// requestPath is the path of r as the client sent it, still escaped; an
// absolute-form target with no path (GET http://host HTTP/1.1) means the
// root. Not URL.EscapedPath(): when the path holds a byte net/url would
// escape ({, |, ^, non-ASCII), that drops the client's encoding and
// re-escapes the decoded path, so /a%2F..%2Fb{ would reach CleanPath as
// /a/../b%7B and its encoded slashes would go unseen.
func requestPath(r *http.Request) string {
	if r.URL.Opaque != "" {
		// An absolute-form target without // after its scheme (GET
		// http:admin/x): net/url keeps what follows the scheme as opaque,
		// which the reverse proxy sends on as the upstream's
		// request-target. It never starts with /, and CleanPath refuses it.
		return r.URL.Opaque
	}
	p := r.URL.RawPath // set whenever the client's encoding is not net/url's own
	if p == "" {
		p = r.URL.EscapedPath() // which is then exactly what the client sent
	}
	if p == "" {
		return "/"
	}
	if strings.IndexByte(p, '#') >= 0 {
		// A # in a request line is part of the path (net/url decodes it
		// as such); %23 is the same # to CleanPath, which refuses a raw
		// one as a fragment.
		p = strings.ReplaceAll(p, "#", "%23")
	}
	return p
}

// challenge answers a request that needs a session and has none: browsers
// navigating go to the login page, everything else gets 401.
func (h *Handler) challenge(w http.ResponseWriter, r *http.Request) string {
	if isNavigation(r) {
		// Not stored by a cache in front: nginx's proxy_cache_valid 302
		// kept it for every visitor of the URL, the signed-in ones too,
		// who were sent back to the login after each sign-in, in a loop.
		w.Header().Set("Cache-Control", "no-store")
		rd := r.URL.RequestURI()
		if len(rd) > maxRedirect {
			// As startFlow keeps a page too long for its cookie: the page
			// without its query, rather than the root (withRedirect
			// leaves out a path that is still too long).
			rd, _, _ = strings.Cut(rd, "?")
		}
		http.Redirect(w, r, h.loginPath(rd), http.StatusFound)
		return decisionRedirect
	}
	writeJSON(w, http.StatusUnauthorized, map[string]string{
		"error":     "unauthorized",
		"message":   "login required",
		"login_url": h.loginPath(""),
	})
	return decisionUnauthorized
}

// decisionOf labels the answers of the proxy's own endpoints by their status.
func decisionOf(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return decisionUnauthorized
	case status == http.StatusForbidden:
		return decisionForbidden
	case status >= 500:
		return decisionInternal
	case status >= 400:
		return decisionDenied
	case status >= 300:
		return decisionRedirect
	}
	return decisionAuthenticated
}

// isNavigation tells a browser loading a page (which should be sent to log
// in) from a script or API client (which should get a status it can handle).
func isNavigation(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if mode := r.Header.Get("Sec-Fetch-Mode"); mode != "" && mode != "navigate" {
		return false
	}
	if r.Header.Get("X-Requested-With") != "" {
		return false
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

func (h *Handler) isAuthPath(path string) bool {
	p := h.cfg.Server.AuthPrefix
	return strings.HasPrefix(path, p) && (len(path) == len(p) || path[len(p)] == '/')
}

func (h *Handler) loginPath(rd string) string {
	return withRedirect(h.cfg.Server.AuthPrefix+"/login", rd)
}

// spoofable are request headers that change how an upstream reads the
// method, path, scheme, origin or client address of a request; a client
// never gets to set them. The attribute pass strips them with the identity
// headers, in every spelling. The client's address goes upstream in
// X-Forwarded-For only: middleware believes the others from its proxy
// (chi's RealIP takes True-Client-IP first, django-ipware X-Client-IP, Rails
// Client-IP). The scheme and host go in X-Forwarded-Proto and -Host only:
// Rack takes X-Forwarded-Ssl, -Scheme and X-Url-Scheme from anyone. A
// forward-auth check behind the upstream's router (Traefik's ForwardAuth,
// nginx auth_request in front of Authelia) judges the method that
// X-Forwarded-Method or X-Original-Method names, as it judges the path of
// X-Forwarded-Uri. Traefik's passTLSClientCert middleware tells the
// application the client's certificate in X-Forwarded-Tls-Client-Cert and
// -Info, and leaves a client's in place when there is none: only traefik's
// forwardedHeaders drops them, from peers it does not trust, and a traefik
// behind portcullis trusts portcullis (docs/cvat.md).
var spoofable = []string{
	"X-Http-Method-Override", "X-Http-Method", "X-Method-Override",
	"X-Forwarded-Method", "X-Original-Method",
	"X-Original-Url", "X-Original-Uri", "X-Rewrite-Url", "X-Envoy-Original-Path",
	"X-Forwarded-Uri", "X-Forwarded-Prefix",
	"X-Forwarded-Path", "X-Forwarded-Port", "X-Forwarded-Server",
	"X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info",
	"X-Forwarded-Scheme", "X-Forwarded-Ssl", "X-Forwarded-Protocol", "X-Url-Scheme", "X-Scheme", "Front-End-Https",
	"X-Original-Host", "X-Host",
	"X-Real-Ip", "True-Client-Ip", "X-Client-Ip", "Client-Ip", "Cf-Connecting-Ip", "Fastly-Client-Ip",
	"X-Cluster-Client-Ip", "X-Originating-Ip", "X-Forwarded", "Forwarded-For", "X-Original-Forwarded-For",
	"Http2-Settings",
}

// clientCertificateHeaders are where other front proxies, load balancers
// and meshes tell the application the client's TLS certificate, as
// traefik's passTLSClientCert does in X-Forwarded-Tls-Client-Cert (in
// spoofable, with its reasons): an application that authenticates by them
// takes whoever set them at their word. A client never gets to set them,
// and portcullis, which sees no client certificate, sets none; they are
// removed from every request, a trusted proxy's too: trusted_proxies says
// whose X-Forwarded-For to believe, not who removes a client's certificate
// headers, and a proxy in front that sets none passes a client's on
// (ingress-nginx without auth-tls, an ALB listener without mTLS, a
// Cloudflare zone without the managed transform).
//
//   - RFC 9440's Client-Cert and Client-Cert-Chain, which CloudFront and
//     Cloudflare's request header rules set, and whose processing rules
//     ask a proxy to remove a client's;
//   - Envoy's X-Forwarded-Client-Cert (Istio's sidecars and gateways);
//   - the names nginx and HAProxy set-ups give $ssl_client_cert and its
//     kin (X-Ssl-Client-*, X-Client-Cert, X-Client-Verify, X-Client-Dn),
//     ingress-nginx's auth-tls-pass-certificate-to-upstream headers
//     (ssl-client-cert, -verify, -subject-dn, -issuer-dn), and ssl_client_cert,
//     which Tomcat's SSLValve reads by default;
//   - AWS ALB mTLS's X-Amzn-Mtls-Clientcert and its -Serial-Number, -Issuer,
//     -Subject, -Validity and -Leaf, and CloudFront's
//     CloudFront-Viewer-Cert-*;
//   - Cloudflare's "Add TLS client auth headers" managed transform (cf-cert-*);
//   - the names Google Cloud's load balancer mTLS examples give its
//     client_cert_* variables (X-Client-Cert-Present, -Chain-Verified, ...):
//     that load balancer sets no header of its own name.
//
// Caddy sets none by default (reverse_proxy's header_up names them).
var clientCertificateHeaders = []string{
	"Client-Cert", "Client-Cert-Chain",
	"X-Forwarded-Client-Cert",
	"X-Ssl-Client-Cert", "X-Ssl-Client-Verify", "X-Ssl-Client-S-Dn", "X-Ssl-Client-I-Dn",
	"X-Ssl-Client-Subject-Dn", "X-Ssl-Client-Issuer-Dn", "X-Ssl-Client-Dn",
	"X-Client-Cert", "X-Client-Verify", "X-Client-Dn",
	"Ssl-Client-Cert", "Ssl-Client-Verify", "Ssl-Client-Subject-Dn", "Ssl-Client-Issuer-Dn",
	"X-Amzn-Mtls-Clientcert", "X-Amzn-Mtls-Clientcert-Leaf", "X-Amzn-Mtls-Clientcert-Serial-Number",
	"X-Amzn-Mtls-Clientcert-Issuer", "X-Amzn-Mtls-Clientcert-Subject", "X-Amzn-Mtls-Clientcert-Validity",
	"Cloudfront-Viewer-Cert-Pem", "Cloudfront-Viewer-Cert-Serial-Number", "Cloudfront-Viewer-Cert-Issuer",
	"Cloudfront-Viewer-Cert-Subject", "Cloudfront-Viewer-Cert-Present", "Cloudfront-Viewer-Cert-Sha256",
	"Cloudfront-Viewer-Cert-Validity",
	"Cf-Cert-Verified", "Cf-Cert-Presented", "Cf-Cert-Revoked", "Cf-Cert-Subject-Dn", "Cf-Cert-Issuer-Dn",
	"Cf-Cert-Subject-Dn-Rfc2253", "Cf-Cert-Issuer-Dn-Rfc2253", "Cf-Cert-Subject-Dn-Legacy", "Cf-Cert-Issuer-Dn-Legacy",
	"Cf-Cert-Serial", "Cf-Cert-Issuer-Serial",
	"X-Client-Cert-Present", "X-Client-Cert-Chain-Verified", "X-Client-Cert-Error", "X-Client-Cert-Hash",
	"X-Client-Cert-Serial-Number", "X-Client-Cert-Spiffe", "X-Client-Cert-Uri-Sans", "X-Client-Cert-Dnsname-Sans",
	"X-Client-Cert-Valid-Not-Before", "X-Client-Cert-Valid-Not-After",
}

// keepableCertificateHeaders are the headers that
// server.trusted_proxy_certificate_headers may name: those above and
// traefik's.
func keepableCertificateHeaders() []string {
	return append([]string{"X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info"}, clientCertificateHeaders...)
}

// forwardedHeaders say where a request came from. The reverse proxy
// removes a client's under these spellings and rewrite sets the proxy's own
// (X-Forwarded-For after a trusted proxy's list); the attribute pass
// removes every other spelling (AlsoStripOtherSpellings).
var forwardedHeaders = [...]string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded"}

// stripUpgrade lets only WebSocket upgrades pass.
func stripUpgrade(h http.Header) {
	// Only WebSocket upgrades pass; an h2c upgrade would let the client talk
	// to the upstream past the proxy's request-by-request checks.
	if up := h["Upgrade"]; len(up) > 0 && (len(up) > 1 || !strings.EqualFold(up[0], "websocket")) {
		delete(h, "Upgrade")
	}
}

// dropConnectionListed removes the headers a client's Connection header
// names. They are for this hop only, and the reverse proxy drops them on the
// way upstream; dropped here, before the rules, a rule never decides on a
// header the upstream will not get (`Connection: Authorization` would
// otherwise pass a credentials bypass rule and reach the upstream anonymous).
// Upgrade stays: the reverse proxy needs it to carry a WebSocket upgrade.
// So does X-Forwarded-For: a trusted proxy's list is this hop's to read
// (clientAddr), and the upstream gets the proxy's own; dropped, the proxy
// was taken for the client.
func dropConnectionListed(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			if name != "" && name != "Upgrade" && name != "Connection" && name != "X-Forwarded-For" {
				delete(h, name)
			}
		}
	}
}

type identityKey struct{}

// sessionCookieSetKey marks, in a request's context, that the proxy sets
// a session cookie on the answer the upstream is about to give.
type sessionCookieSetKey struct{}

// forward sends r upstream; with a profile, as that user. The identity
// headers are computed here, where a failure can still refuse the request,
// and set in rewrite.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, p *idp.Profile) string {
	return h.forwardAs(w, r, "", p)
}

// forwardSession is forward for the user of session s: the attribute pass
// remembers the identity headers of the session instead of computing them
// on every request.
func (h *Handler) forwardSession(w http.ResponseWriter, r *http.Request, s *session.Session) string {
	return h.forwardAs(w, r, s.ID, &s.Profile)
}

// forwardAs is forward; session is the key under which the attribute pass
// may remember the identity, "" for none.
func (h *Handler) forwardAs(w http.ResponseWriter, r *http.Request, session string, p *idp.Profile) string {
	if p != nil {
		identity, err := h.pass.For(session, p)
		if err != nil {
			h.log.Error("attribute pass failed; refusing", "err", err, "idp", p.IdP, "sub", p.Sub)
			h.pages.fail(w, r, http.StatusInternalServerError, "Internal error", "Your identity could not be passed to the application.")
			return decisionInternal
		}
		ctx := context.WithValue(r.Context(), identityKey{}, identity)
		if len(w.Header()["Set-Cookie"]) > 0 {
			// A renewed session (Touch, a refresh) rides on the
			// upstream's answer: modifyResponse keeps caches from it.
			ctx = context.WithValue(ctx, sessionCookieSetKey{}, true)
		}
		r = r.WithContext(ctx)
	}
	if rec, ok := w.(*statusRecorder); ok {
		rec.held.keep(rec.Header())
	}
	h.upstream.ServeHTTP(w, r)
	if p == nil {
		return decisionBypass
	}
	return decisionAuthenticated
}

// statusRecorder remembers the status code and body bytes written, for
// metrics and logs.
// Unwrap lets http.ResponseController reach Flush (streaming) on the real
// writer; Hijack (WebSockets) goes through the recorder.
type statusRecorder struct {
	http.ResponseWriter
	req   *http.Request
	code  int // the final status; informational ones are not recorded
	bytes int64
	held  heldHeaders
}

// Hijack hands the connection over, as the real writer does, and adds it
// to the server's set of hijacked connections, which shutdown closes at the
// end of the grace period.
func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	s.held.restore(s.Header(), s.req) // the reverse proxy writes the 101's head from it
	c, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	set, ok := s.req.Context().Value(connSetKey{}).(*connSet)
	if !ok { // a Handler served without serveOn (tests): nothing to close at shutdown
		return c, brw, nil
	}
	tc := &trackedConn{Conn: c, set: set}
	set.add(tc)
	return tc, brw, nil
}

func (s *statusRecorder) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// An upstream's informational answer (103 Early Hints), passed on
		// by the reverse proxy: neither the status of the request nor the
		// place for the proxy's own headers. Not to an HTTP/1.0 client,
		// which would take it for the answer (RFC 9110 15.2).
		s.held.withhold(s.Header())
		if s.req.ProtoAtLeast(1, 1) {
			s.ResponseWriter.WriteHeader(code)
		}
		return
	}
	if s.code == 0 {
		s.code = code
		s.held.restore(s.Header(), s.req)
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
		s.held.restore(s.Header(), s.req)
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}

// heldHeaders keeps the headers the proxy set on a response before it
// forwarded the request (X-Request-Id, a renewed session's Set-Cookie) out
// of an upstream's informational answers, and puts them back on the final
// one. httputil.ReverseProxy writes a 103 with the response's header map,
// the proxy's headers and the 103's, then clears the map: the final answer
// went without the request's ID and without the renewed session cookie (a
// rotated refresh token lost with it), and the 103 carried them instead.
type heldHeaders struct {
	// others are the proxy's headers besides the request's ID, which
	// the request carries too (serve); nil on most requests.
	others   http.Header
	withheld bool // an informational answer went out without them
}

// keep notes the proxy's own headers in h before the request goes
// upstream; it allocates only for headers besides the request's ID.
func (hh *heldHeaders) keep(h http.Header) {
	if len(h) < 2 {
		return
	}
	for k, v := range h {
		if k == requestIDHeader {
			continue
		}
		if hh.others == nil {
			hh.others = make(http.Header, len(h)-1)
		}
		hh.others[k] = v
	}
}

// withhold takes the proxy's headers out of h, about to be written with an
// informational status: h has them first under each key, then the
// upstream's values (httputil adds those). After the first informational
// answer, h holds only the upstream's: the reverse proxy clears it.
func (hh *heldHeaders) withhold(h http.Header) {
	// The upstream's ID never reaches the client (newUpstream), on any
	// informational answer either.
	delete(h, requestIDHeader)
	if hh.withheld {
		return
	}
	hh.withheld = true
	for k, v := range hh.others {
		if rest := h[k][min(len(v), len(h[k])):]; len(rest) > 0 {
			h[k] = rest
		} else {
			delete(h, k)
		}
	}
}

// restore puts the withheld headers back on h, the final answer's, before
// the upstream's values as they would have been; r is the request, which
// carries the same ID.
func (hh *heldHeaders) restore(h http.Header, r *http.Request) {
	if !hh.withheld {
		return
	}
	hh.withheld = false
	h[requestIDHeader] = r.Header[requestIDHeader]
	for k, v := range hh.others {
		h[k] = append(slices.Clip(v), h[k]...)
	}
}
