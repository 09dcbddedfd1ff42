package proxy

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/portcullis-proxy/portcullis/attrpass"
)

// newUpstream builds the reverse proxy to the application. It uses Rewrite,
// never Director: Rewrite runs after hop-by-hop headers are removed, so a
// client's `Connection: X-Email` cannot delete a header the proxy injects.
func (h *Handler) newUpstream() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:        h.rewrite,
		Transport:      noticeKeptConnectionClosed{h.transport},
		BufferPool:     bufferPool{},
		ErrorHandler:   h.upstreamError,
		ModifyResponse: h.modifyResponse,
		ErrorLog:       slogErrorLog(h.log),
	}
}

func (h *Handler) modifyResponse(resp *http.Response) error {
	// The client gets the proxy's X-Request-Id (the one the upstream was
	// sent), once, not again as the upstream echoes it.
	delete(resp.Header, requestIDHeader)
	if resp.Request != nil {
		if identity, ok := resp.Request.Context().Value(identityKey{}).(*attrpass.Identity); ok {
			_, cookie := resp.Request.Context().Value(sessionCookieSetKey{}).(bool)
			keepFromSharedCaches(resp.Header, cookie)
			h.warnHeaderTooLong(resp, identity)
		}
	}
	if loc := resp.Header["Location"]; len(loc) == 1 {
		if public, ok := h.publicLocation(loc[0]); ok {
			resp.Header["Location"] = []string{public}
		}
	}
	return nil
}

// appHeaderLine is the longest request header line that application
// servers and the proxies in front of them take by default: gunicorn's
// limit_request_field_size and Apache httpd's LimitRequestFieldSize (8190),
// nginx's large_client_header_buffers (8k; CVAT's cvat_server runs nginx
// before uvicorn).
const appHeaderLine = 8190

// warnHeaderTooLong logs, at most once a second, that the upstream refused
// a request (400, 431) whose identity header line is longer than
// appHeaderLine: gunicorn then answers every request of that user with its
// bare "Error parsing headers: 'limit request headers fields size'", nginx
// with "Request Header Or Cookie Too Large", and nothing else says why.
func (h *Handler) warnHeaderTooLong(resp *http.Response, identity *attrpass.Identity) {
	if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		return
	}
	if mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";"); resp.StatusCode == http.StatusBadRequest &&
		strings.HasSuffix(strings.TrimSpace(strings.ToLower(mt)), "json") {
		// The application's own answer (an API's validation error), not a
		// server's refusal of the request's headers, which is a page. A
		// 431 says the headers are too large, in whatever body.
		return
	}
	name, n := identity.LongestLine()
	if n <= appHeaderLine {
		return
	}
	h.logThrottled(&h.headerTooLong, slog.LevelWarn, "upstream refused an identity header longer than application servers take",
		slog.String("header", name), slog.Int("line_bytes", n), slog.Int("status", resp.StatusCode),
		slog.String("path", resp.Request.URL.Path),
		slog.String("hint", "gunicorn (limit_request_field_size), Apache httpd (LimitRequestFieldSize) and nginx (large_client_header_buffers, also inside CVAT's cvat_server) "+
			"refuse a header line over 8190 bytes (8 KB) by default, with 400 on every request of this user: "+
			"pass fewer values in attribute_pass (roles rather than every group, or filter() the groups the application reads), "+
			"or raise that limit (gunicorn --limit-request-field_size 32768). See docs/troubleshooting.md"))
}

// keepFromSharedCaches marks the upstream's answer to a signed-in user
// private, so that a shared cache in front (nginx's proxy_cache, Apache's
// mod_cache, Varnish, a CDN) does not serve it to other visitors without
// asking the proxy: such a cache keys by URL, and it cannot tell a session
// cookie from any other. It is what RFC 9111 3.5 has caches do for
// requests with Authorization, which portcullis's cookie stands in for: an
// answer is shared only when it says so, with public or s-maxage. Without
// a word on caching (nginx's proxy_cache_valid stores it then, and
// Apache's heuristics when it has a Last-Modified) it gets private; the
// upstream's no-store, private, public and s-maxage are kept. A private
// with field names (private="Set-Cookie") lets shared caches keep the rest
// of the answer (RFC 9111 5.2.2.7): it is no word that the answer is one
// user's, and becomes a plain private. An answer that carries a Set-Cookie
// (the proxy's renewed session when cookie, or the upstream's) is private
// whatever it said: mod_cache stores the Set-Cookie with the page and
// sends it to whoever asks next.
//
// The fields that shared caches obey instead of Cache-Control say the
// same (sharedCacheFields).
func keepFromSharedCaches(h http.Header, cookie bool) {
	cc := h["Cache-Control"]
	if cookie || len(h["Set-Cookie"]) > 0 {
		h["Cache-Control"] = privately(cc)
		sharedCacheFields(h, true)
		return
	}
	if saysAny(cc, "public", "s-maxage") {
		return // the upstream's word that the answer may be shared
	}
	if saysAny(cc, "private", "no-store") {
		sharedCacheFields(h, false) // kept from shared caches by the upstream: there too
		return
	}
	if len(cc) == 0 {
		h["Cache-Control"] = privateOnly // the common case, without an allocation
	} else {
		h["Cache-Control"] = privately(cc)
	}
	sharedCacheFields(h, false)
}

// sharedCacheFields makes the fields that shared caches read instead of
// Cache-Control keep from them an answer that keepFromSharedCaches made
// private. CDN-Cache-Control (RFC 9213) and a CDN's own
// (Cloudflare-CDN-Cache-Control) have CDNs ignore Cache-Control, and
// Surrogate-Control has Varnish's built-in VCL ignore its private (Varnish
// 7.1 kept an answer with Cache-Control: private and Surrogate-Control:
// content="ESI/1.0" for two minutes). One that says how long shared caches
// may keep the answer (max-age, s-maxage, public) is the upstream's word
// to them, as s-maxage is in Cache-Control, and is kept; one that does not
// (an ESI content= only) says no-store there too, and private here. With a
// Set-Cookie (cookie) none of them may share the answer.
func sharedCacheFields(h http.Header, cookie bool) {
	for k, v := range h {
		switch {
		case k == "Surrogate-Control":
			if cookie || !saysAny(v, "max-age", "no-store") {
				h[k] = noStore(v)
			}
		case k == "Cdn-Cache-Control" || strings.HasSuffix(k, "-Cdn-Cache-Control"):
			if cookie || !saysAny(v, "public", "s-maxage", "max-age", "private", "no-store", "no-cache") {
				h[k] = privately(v)
			}
		}
	}
}

// privately is a Cache-Control value that begins with private, followed by
// the directives of vals but its public, s-maxage and private ones.
func privately(vals []string) []string {
	kept := []string{"private"}
	for _, v := range vals {
		for rest := v; rest != ""; {
			var d, name string
			d, name, rest = nextDirective(rest)
			if d == "" || isName(name, "public") || isName(name, "s-maxage") || isName(name, "private") {
				continue
			}
			kept = append(kept, d)
		}
	}
	return []string{strings.Join(kept, ", ")}
}

// noStore is a Surrogate-Control value that begins with no-store, followed
// by the directives of vals but its max-age ones: what ESI's content= asks
// of the surrogate is still done, but nothing is kept.
func noStore(vals []string) []string {
	kept := []string{"no-store"}
	for _, v := range vals {
		for rest := v; rest != ""; {
			var d, name string
			d, name, rest = nextDirective(rest)
			if d == "" || isName(name, "max-age") || isName(name, "no-store") {
				continue
			}
			kept = append(kept, d)
		}
	}
	return []string{strings.Join(kept, ", ")}
}

// saysAny reports whether the cache directives of vals include one of
// names, written as RFC 9111 writes it: max-age and s-maxage with a number
// of seconds, the others bare. A private with field names is not private,
// and a directive that does not follow the grammar (no-store=, max-age=)
// says nothing: a cache that reads it by the grammar ignores it.
func saysAny(vals []string, names ...string) bool {
	for _, v := range vals {
		for rest := v; rest != ""; {
			var d, name string
			d, name, rest = nextDirective(rest)
			for _, n := range names {
				if isName(name, n) && wellFormed(d, n) {
					return true
				}
			}
		}
	}
	return false
}

// isName reports whether a directive's name is want, a lower-case
// directive name, in any case of ASCII letters alone: a cache does not
// read ſ-maxage as s-maxage, as strings.EqualFold would.
func isName(name, want string) bool {
	if len(name) != len(want) {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != want[i] {
			return false
		}
	}
	return true
}

// wellFormed reports whether directive d, named name, has the argument its
// name takes: delta-seconds (a token, or a quoted string, which RFC 9111
// 1.2.2 has recipients accept) for max-age and s-maxage, none for the rest.
func wellFormed(d, name string) bool {
	arg := d[len(name):]
	if name != "max-age" && name != "s-maxage" {
		return arg == ""
	}
	arg, ok := strings.CutPrefix(arg, "=")
	if !ok {
		return false
	}
	if len(arg) >= 2 && arg[0] == '"' && arg[len(arg)-1] == '"' {
		arg = arg[1 : len(arg)-1]
	}
	if arg == "" {
		return false
	}
	for i := 0; i < len(arg); i++ {
		if arg[i] < '0' || arg[i] > '9' {
			return false
		}
	}
	return true
}

// nextDirective splits the first directive off a cache directive list:
// d is it, without the spaces and tabs around it (RFC 9110's OWS), name its
// name, and rest what follows its comma. A comma inside a quoted value
// (no-cache="Set-Cookie, Set-Cookie2") is part of the value. Other white
// space (a no-break space, U+0085) is part of the directive, as it is to a
// cache that reads the grammar and ignores it: trimmed, "\u00a0public" would
// pass as the upstream's word that the answer may be shared.
func nextDirective(s string) (d, name, rest string) {
	quoted, i := false, 0
	for ; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == ',':
			d, rest = trimOWS(s[:i]), s[i+1:]
			name, _, _ = strings.Cut(d, "=")
			return d, name, rest
		}
	}
	d = trimOWS(s)
	name, _, _ = strings.Cut(d, "=")
	return d, name, ""
}

// privateOnly is the Cache-Control of an answer that said nothing of
// caching. Shared by every such answer: header values are replaced, never
// written in place, and its capacity makes an append copy it.
var privateOnly = []string{"private"}[:1:1]

// publicLocation is a redirect to upstream.url (an application that builds
// its own URLs from the Host it got, with preserve_host: false, or from its
// configured name) turned into the same path at public_url, as nginx's
// proxy_redirect default does: the browser cannot reach the application's
// address, and must not go around the proxy if it could. ok is false for
// any other Location, which passes as the application sent it.
func (h *Handler) publicLocation(loc string) (string, bool) {
	u := h.upstreamURL
	// scheme://host[:port], then upstream.url's path, which the proxy put
	// before the request's, taken off again.
	n := len(u.Scheme) + len("://") + len(u.Host)
	if len(loc) < n || !strings.EqualFold(loc[:n], u.Scheme+"://"+u.Host) {
		return "", false
	}
	rest, ok := strings.CutPrefix(loc[n:], strings.TrimSuffix(u.Path, "/"))
	if !ok || rest != "" && rest[0] != '/' && rest[0] != '?' && rest[0] != '#' {
		return "", false // another port, a longer host name, another path
	}
	if rest == "" || rest[0] != '/' {
		rest = "/" + rest
	}
	return h.publicURL.Scheme + "://" + h.publicURL.Host + rest, true
}

func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(h.upstreamURL) // and the Host of upstream.url
	if *h.cfg.Upstream.PreserveHost {
		// public_url's host, as browsers send it; never the client's Host
		// or absolute-form target, which would let any client pick another
		// virtual host behind a host-routing upstream (traefik).
		pr.Out.Host = h.publicURL.Host
	}
	// X-Forwarded-For as ProxyRequest.SetXForwarded makes it: a trusted
	// peer's list, then the peer. An empty line stays an empty entry (as
	// nginx's $proxy_add_x_forwarded_for keeps it too): the client was
	// unknown to the rules (clientAddr), and without it the list would
	// end at the trusted peer, which an upstream could take for the
	// client. Its X-Forwarded-Host and -Proto would be overwritten: they
	// come from public_url, prepared once (compile.go) and shared by every
	// request, never modified in place.
	var prior []string
	if h.trustedPeer(pr.In) {
		prior = pr.In.Header["X-Forwarded-For"]
	}
	if client, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		if len(prior) > 0 {
			client = strings.Join(prior, ", ") + ", " + client
		}
		pr.Out.Header["X-Forwarded-For"] = []string{client}
	} else {
		delete(pr.Out.Header, "X-Forwarded-For")
	}
	pr.Out.Header["X-Forwarded-Proto"] = h.forwardedProto
	pr.Out.Header["X-Forwarded-Host"] = h.forwardedHost
	// A client's trailers are stripped as its headers are (SPEC invariant
	// 1): declared here, their values would follow the body upstream.
	h.pass.Strip(pr.Out.Trailer)
	identity, authenticated := pr.In.Context().Value(identityKey{}).(*attrpass.Identity)
	// A bypassed request loses the application's session cookies too: the
	// application would log it in from them, and its session would outlive
	// the proxy's (logout, idle timeout, allow_if).
	h.dropCookies(pr.Out.Header, !authenticated)

	// Injected last, after the hop-by-hop headers (and whatever a client's
	// Connection header named) are gone.
	if authenticated {
		identity.Set(pr.Out.Header)
	}
}

// dropCookies removes the proxy's own cookies (session, chunks, login
// flows) from what the upstream gets (SPEC invariant 3), and with appSession
// the application's session cookies (upstream.logout_cookies).
func (h *Handler) dropCookies(hdr http.Header, appSession bool) {
	lines := hdr["Cookie"]
	if len(lines) == 0 {
		return
	}
	var app []string
	if appSession {
		app = h.cfg.Upstream.LogoutCookies
	}
	found := false
	for _, line := range lines {
		if strings.Contains(line, h.cfg.Session.CookieName) {
			found = true
		}
		for _, o := range h.formerCookies {
			if strings.Contains(line, o.CookieName) {
				found = true
			}
		}
		for _, name := range app {
			if strings.Contains(line, name) {
				found = true
			}
		}
	}
	if !found {
		return
	}
	// The other cookies, in order, as one line, gathered on the stack.
	var buf [1024]byte
	kept := buf[:0]
	for _, line := range lines {
		for part := range strings.SplitSeq(line, ";") {
			// As the application's server and the proxy's (session's
			// cookiePair) read the pair: spaces and tabs around it are
			// no part of it, any other byte is the cookie's, sent on as
			// it came. Its name is compared as leniently as an upstream
			// may read it (trimCookieName).
			part = trimOWS(part)
			name, _, _ := strings.Cut(part, "=")
			name = trimCookieName(name)
			if part == "" || h.ownsCookie(name) || slices.Contains(app, name) {
				continue
			}
			if len(kept) > 0 {
				kept = append(kept, "; "...)
			}
			kept = append(kept, part...)
		}
	}
	if len(kept) == 0 {
		delete(hdr, "Cookie")
		return
	}
	hdr["Cookie"] = []string{string(kept)}
}

// ownsCookie reports whether name is one of the proxy's cookies, under
// session.cookie_name or one a reload replaced.
func (h *Handler) ownsCookie(name string) bool {
	if h.cookies.Owns(name) {
		return true
	}
	for _, o := range h.formerCookies {
		if o.Owns(name) {
			return true
		}
	}
	return false
}

// trimCookieName is a cookie's name as the application reads it. Django
// strips names with Python's str.strip(), which in the Latin-1 that servers
// decode headers with also removes \x85 and \xa0 ("sessionid\xa0=x" is its
// sessionid); every byte that is not printable ASCII is trimmed here.
func trimCookieName(name string) string {
	for len(name) > 0 && (name[0] <= ' ' || name[0] >= 0x7f) {
		name = name[1:]
	}
	for len(name) > 0 && (name[len(name)-1] <= ' ' || name[len(name)-1] >= 0x7f) {
		name = name[:len(name)-1]
	}
	return name
}

func (h *Handler) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	h.metrics.upstreamErrors.Inc()
	status, title, msg := http.StatusBadGateway, "Bad gateway", "The application is not answering. Try again in a moment."
	if isTimeout(err) {
		status, title, msg = http.StatusGatewayTimeout, "Gateway timeout", "The application took too long to answer."
	}
	attrs := []slog.Attr{slog.Any("err", err), slog.String("path", r.URL.Path)}
	var closed *keptConnectionClosed
	if errors.As(err, &closed) {
		idle := h.cfg.Upstream.Timeouts.withDefaults().Idle
		attrs = append(attrs, slog.String("method", r.Method), slog.String("idle_for", closed.idle.Round(time.Millisecond).String()),
			slog.String("hint", fmt.Sprintf("the application closed this kept-alive connection (idle for %s) as the request went out on it, "+
				"and a %s is not sent twice: if idle_for is about the application's keep-alive timeout, set upstream.timeouts.idle (now %s) "+
				"below it, or raise the application's above upstream.timeouts.idle", closed.idle.Round(time.Millisecond), r.Method, idle)))
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		attrs = append(attrs, slog.String("hint", "the application's certificate is signed by a CA the proxy does not trust: set upstream.tls.ca_file to that CA's PEM"))
	}
	h.logThrottled(&h.upstreamDown, slog.LevelWarn, "upstream request failed", attrs...)
	h.pages.fail(w, r, status, title, msg)
}

// noticeKeptConnectionClosed marks the failure of a request that went out
// on a kept-alive connection the application closed without answering, when
// Go's transport did not send it again: an application that closes idle
// connections sooner than upstream.timeouts.idle (gunicorn after 2 s,
// uvicorn and Node after 5 s) closes one now and then just as the proxy
// sends the next request on it. Go sends a GET, HEAD, OPTIONS or TRACE again
// on a new connection, never a POST, PUT, PATCH or DELETE, and neither does
// the proxy: it cannot tell that close from an application that died while
// acting on the request (a worker killed at its timeout), and sending a form
// twice is worse than a 502 (nginx, Traefik and Caddy do not either). What
// it can do is say which failure it was, and what to change (upstreamError).
type noticeKeptConnectionClosed struct{ next http.RoundTripper }

func (t noticeKeptConnectionClosed) RoundTrip(r *http.Request) (*http.Response, error) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return t.next.RoundTrip(r) // sent again by Go when that happens
	}
	var conn httptrace.GotConnInfo
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
		GotConn: func(c httptrace.GotConnInfo) { conn = c }, // called before RoundTrip returns, on its goroutine
	}))
	resp, err := t.next.RoundTrip(r)
	if err != nil && conn.Reused && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		err = &keptConnectionClosed{idle: conn.IdleTime, err: err}
	}
	return resp, err
}

// keptConnectionClosed is the error of a request that went out on a kept
// connection the application closed (EOF, or a reset) before any answer.
type keptConnectionClosed struct {
	idle time.Duration // how long the connection had been kept unused
	err  error
}

func (e *keptConnectionClosed) Error() string { return e.err.Error() }
func (e *keptConnectionClosed) Unwrap() error { return e.err }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// clientAddr is the address of the client: the peer, unless the peer is a
// trusted proxy, in which case the nearest untrusted address it forwarded.
// An entry on the way there that does not parse makes the client unknown:
// the invalid netip.Addr{}, which no sources rule matches. (Taking the
// trusted proxy for the client instead would let every client match a
// rule that covers the proxy.)
func (h *Handler) clientAddr(r *http.Request) netip.Addr {
	peer := peerAddr(r)
	if !h.isTrusted(peer) {
		return peer
	}
	forwarded := r.Header.Values("X-Forwarded-For")
	if len(forwarded) == 0 {
		return peer
	}
	hops := strings.Split(strings.Join(forwarded, ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a := parseForwardedFor(hops[i])
		if !a.IsValid() {
			return netip.Addr{}
		}
		// Compared as the rules compare it: unmapped, and without a zone,
		// which names an interface, not another address.
		if a = a.Unmap().WithZone(""); !h.isTrusted(a) {
			return a
		}
	}
	return peer
}

// parseForwardedFor reads one X-Forwarded-For entry: an address, or an
// address with a port (203.0.113.9:5555, [2001:db8::1]:443, as Azure
// Application Gateway writes them), or a bracketed IPv6 address. Anything
// else (unknown, obfuscated names, garbage) is the invalid address.
func parseForwardedFor(s string) netip.Addr {
	// Optional white space (RFC 9110: spaces and tabs), not every Unicode
	// space: "192.0.2.10\u00a0" is no address a proxy wrote.
	s = trimOWS(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr()
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return a
		}
	}
	return netip.Addr{}
}

// clientText is a client address as the logs show it.
func clientText(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown" // a trusted proxy forwarded an entry that does not parse
	}
	return a.String()
}

func (h *Handler) trustedPeer(r *http.Request) bool {
	return len(h.trusted) > 0 && h.isTrusted(peerAddr(r)) // no address to parse without trusted proxies
}

func (h *Handler) isTrusted(a netip.Addr) bool {
	for _, p := range h.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	// A link-local peer's zone (fe80::1%eth0) names the interface it came
	// in on: with it, a trusted proxy at that address was never trusted,
	// and every client behind it was taken for the proxy.
	return ap.Addr().Unmap().WithZone("")
}

// bufferPool lends the reverse proxy its copy buffers instead of allocating
// 32 KiB per request.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

// trimOWS trims a header element of the optional white space around it
// (RFC 9110: spaces and tabs), and of nothing else: a no-break space or
// another Unicode space is part of the element, as it is to a server or a
// cache that reads the grammar.
func trimOWS(s string) string { return strings.Trim(s, " \t") }
