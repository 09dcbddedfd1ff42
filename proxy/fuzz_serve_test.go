package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/rules"
	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// Bits of FuzzServeHTTP's flags: what the harness adds to the fuzzer's
// request.
const (
	fuzzSession      = 1 << iota // a Cookie line with bob's valid session (role user, not admin)
	fuzzNoHost                   // no Host line of the harness's
	fuzzSessionFirst             // bob's Cookie line before the fuzzer's header lines, not after
	fuzzConfigShift  = iota      // the bits from here up pick the configuration (startServeConfigs), modulo their number
)

// fuzzProbeHeader ties what the upstream got to the iteration that sent it.
const fuzzProbeHeader = "X-Fuzz-Probe"

// bobIdentity is what the attribute pass of testConfig sets for bob's
// session, and for ldapserver.Bob's directory password on a basic_auth
// rule: the only identity any request of FuzzServeHTTP may carry.
var bobIdentity = map[string]string{"X-Email": "bob@example.com", "X-Groups": "user"}

// bobBasic is ldapserver.Bob's right directory password as Basic
// credentials, and bobWrongBasic a wrong one.
var (
	bobBasic      = "Basic " + base64.StdEncoding.EncodeToString([]byte(ldapserver.Bob+":"+ldapserver.BobPassword))
	bobWrongBasic = "Basic " + base64.StdEncoding.EncodeToString([]byte(ldapserver.Bob+":x"))
)

// fuzzHeaderNames and fuzzHeaderValues are what FuzzServeHTTP's picks add
// as header lines, a pair of bytes each: names and values that mean
// something to the proxy or the upstream, which byte mutations alone
// seldom spell.
var fuzzHeaderNames = []string{
	"X-Email", "x_email", "X.Groups", "X-Groups", "X_Forwarded_User", "Cookie", "Authorization",
	"Connection", "Transfer-Encoding", "Content-Length", "Host", "X-Forwarded-For", "X_Forwarded_Host",
	"X-Forwarded-Proto", "Forwarded", "Upgrade", "Trailer", "Expect", "X-Original-URL",
	"X-HTTP-Method-Override", "X-Request-Id", "Accept", "Sec-Fetch-Mode", "Te", "Keep-Alive",
}

var fuzzHeaderValues = []string{
	"evil@example.com", "admin", "Bearer x", "Token t", "Basic YTpi", "X-Email", "X-Email, X-Groups",
	"Cookie", "Authorization", "close", "keep-alive", "Upgrade", "chunked", "gzip, chunked", "0", "5",
	"evil.example", "cvat.example.com", "10.0.0.1", "__Host-portcullis=x", "__Host-portcullis_1=x; a=b",
	"__Host-portcullis_login_a=1; sessionid=s; csrftoken=c", "websocket", "h2c", "text/html", "navigate",
	"/admin", "/blocked", "DELETE", "100-continue", "trailers", bobBasic, bobWrongBasic, "basic " + bobBasic[6:],
	"/legacy/x", "",
}

// serveHeaderValues are fuzzHeaderValues and, for FuzzServeHTTP alone,
// device cookies: the real one (fuzzDevice) and its name under the other
// prefixes.
var serveHeaderValues = slices.Concat(fuzzHeaderValues, []string{
	fuzzDevice, fuzzDevice + "; sessionid=s", "portcullis_device=x", "__Host-portcullis_device=x; a=b",
})

// fuzzDevice stands, in FuzzServeHTTP's header lines, for a device cookie
// of the LDAP form's (name and value) that the configuration's proxy
// sealed for ldapserver.Bob: browsers send it only to the form, but one
// set by another site of the domain, or kept under another path, comes
// with any request.
const fuzzDevice = "{device}"

// serveSeeds are the classic tricks against a reverse proxy's decisions, as
// FuzzServeHTTP's inputs: method, request-target, protocol, header lines
// (separated by \n; each is sent with CRLF), body and flags.
var serveSeeds = []struct {
	method, target, proto, headers, body string
	flags                                uint8
}{
	{"GET", "/public/x", "HTTP/1.1", "Accept: application/json", "", 0},
	{"GET", "/tasks", "HTTP/1.1", "Accept: text/html", "", 0},
	{"GET", "/tasks", "HTTP/1.1", "Accept: application/json", "", fuzzSession},
	{"GET", "/admin/panel", "HTTP/1.1", "", "", fuzzSession},
	{"GET", "/blocked", "HTTP/1.1", "", "", fuzzSession},
	{"GET", "/api/tasks", "HTTP/1.1", "Authorization: Token abc", "", fuzzSession},
	{"GET", "/api/tasks", "HTTP/1.1", "Authorization: Bearer x\nConnection: Authorization", "", fuzzSession},
	{"GET", "/api/tasks", "HTTP/1.1", "Authorization: Bearer x\nAuthorization: junk", "", fuzzSession},
	{"GET", "/api/tasks", "HTTP/1.1", "authorization: Basic YTpi\nX-Email: evil@example.com", "", 0},
	// Basic credentials on the basic_auth rule: checked, or nothing goes
	// upstream, and never the password itself.
	{"GET", "/legacy/x", "HTTP/1.1", "Authorization: " + bobBasic, "", 0},
	{"GET", "/legacy/x", "HTTP/1.1", "Authorization: " + bobBasic + "\nX-Email: evil@example.com", "", fuzzSession},
	{"GET", "/legacy/x", "HTTP/1.1", "Authorization: " + bobWrongBasic, "", fuzzSession},
	{"GET", "/legacy/x", "HTTP/1.1", "Authorization: Bearer x\nAuthorization: " + bobBasic, "", fuzzSession},
	{"GET", "/legacy/x", "HTTP/1.1", "Authorization: Basic\t" + bobBasic[6:], "", fuzzSession},
	{"POST", "/legacy/x", "HTTP/1.1", "Transfer-Encoding: chunked\nTrailer: Authorization", "3\r\nabc\r\n0\r\nAuthorization: " + bobBasic + "\r\n\r\n", fuzzSession},
	{"GET", "/legacy/../legacy/x", "HTTP/1.1", "authorization: BASIC " + bobBasic[6:] + "\nConnection: Authorization", "", 0},
	{"GET", "/legacy/x", "HTTP/1.1", "Authorization: " + bobBasic + "\nContent-Length: 0", "GET /legacy/y HTTP/1.1\r\nHost: cvat.example.com\r\nAuthorization: " + bobWrongBasic + "\r\n\r\n", 0},
	// Encoded slashes, dot segments, ; and //.
	{"GET", "/public%2F..%2Fadmin/x", "HTTP/1.1", "", "", fuzzSession},
	{"GET", "/public/..%2Fblocked", "HTTP/1.1", "", "", 0},
	{"GET", "/public/../admin/x", "HTTP/1.1", "", "", fuzzSession},
	{"GET", "/public/%2e%2e/blocked", "HTTP/1.1", "", "", 0},
	{"GET", "/public/%252e%252e/admin", "HTTP/1.1", "", "", 0},
	{"GET", "/public/..;/admin", "HTTP/1.1", "", "", fuzzSession},
	{"GET", "/blocked;x=1", "HTTP/1.1", "", "", 0},
	{"GET", "//blocked", "HTTP/1.1", "", "", 0},
	{"GET", "/public//../admin", "HTTP/1.1", "", "", fuzzSession},
	{"GET", "/public\\..\\admin", "HTTP/1.1", "", "", 0},
	{"GET", "/public/%c0%ae%c0%ae/admin", "HTTP/1.1", "", "", 0},
	{"GET", "/api/%2e%2e/admin?x=/public/", "HTTP/1.1", "Authorization: Token t", "", 0},
	{"GET", "/public/x#/../../admin", "HTTP/1.1", "", "", 0},
	{"GET", "/ADMIN", "HTTP/1.1", "", "", fuzzSession},
	{"GET", "/.portcullis/../admin", "HTTP/1.1", "", "", fuzzSession},
	{"GET", "/.portcullis/userinfo", "HTTP/1.1", "", "", fuzzSession},
	{"GET", "/%2eportcullis/userinfo", "HTTP/1.1", "", "", 0},
	{"GET", "/.portcullis/login?rd=//evil.example", "HTTP/1.1", "Accept: text/html", "", 0},
	{"OPTIONS", "*", "HTTP/1.1", "", "", 0},
	// Absolute-form targets.
	{"GET", "http://cvat.example.com/admin/x", "HTTP/1.1", "", "", fuzzSession},
	{"GET", "http://evil.example/public/../blocked", "HTTP/1.1", "", "", 0},
	{"GET", "https://cvat.example.com", "HTTP/1.1", "", "", fuzzSession},
	// Identity headers in other spellings, repeated, and named in Connection.
	{"GET", "/public/x", "HTTP/1.1", "X-Email: evil@example.com\nx_email: evil@example.com\nX.Groups: admin\nX_Forwarded_User: root", "", fuzzSession},
	{"GET", "/tasks", "HTTP/1.1", "X-EMAIL: evil@example.com\nX-Email: evil@example.com\nX-Groups: admin", "", fuzzSession},
	{"GET", "/tasks", "HTTP/1.1", "Connection: X-Email, X-Groups, Cookie", "", fuzzSession},
	{"GET", "/tasks", "HTTP/1.1", "X-Email: a\n b@example.com", "", fuzzSession | fuzzSessionFirst},
	{"GET", "/public/x", "HTTP/1.1", "X-Forwarded-Host: evil.example\nX_Forwarded_Host: evil.example\nx-forwarded-proto: http\nForwarded: for=10.0.0.1;host=evil", "", 0},
	{"GET", "/public/x", "HTTP/1.1", "X-Original-URL: /admin\nX-HTTP-Method-Override: DELETE\nX-Real-IP: 10.0.0.1", "", 0},
	{"GET", "/tasks", "HTTP/1.1", "X-Request-Id: forged\nx_request_id: forged", "", fuzzSession},
	{"GET", "/tasks", "HTTP/1.1", "Host: evil.example", "", fuzzSession},
	{"GET", "/tasks", "HTTP/1.1", "Upgrade: h2c\nConnection: Upgrade, HTTP2-Settings\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA", "", fuzzSession},
	// The proxy's own cookies, and the application's on a bypass.
	{"GET", "/public/x", "HTTP/1.1", "Cookie: __Host-portcullis=x; __Host-portcullis_1=y; a=b\nCookie: __Host-portcullis_login_abc=z; __Host-portcullis_signed_in=1; sessionid=s; csrftoken=c", "", 0},
	{"GET", "/tasks", "HTTP/1.1", "Cookie: a=b; __Host-portcullis_2=x;  portcullis=y ;\xa0__Host-portcullis_login_x=1", "", fuzzSession},
	{"GET", "/api/x", "HTTP/1.1", "Authorization: Bearer junk\nCookie: sessionid=s; csrftoken=c", "", fuzzSession | fuzzSessionFirst},
	{"GET", "/tasks", "HTTP/1.1", "Cookie: " + fuzzDevice + "; a=b", "", fuzzSession},
	{"GET", "/public/x", "HTTP/1.1", "Cookie: a=b; " + fuzzDevice + "\nCookie: portcullis_device=x; __Host-portcullis_device=y", "", 0},
	{"GET", "/legacy/x", "HTTP/1.1", "Authorization: " + bobBasic + "\nCookie: " + fuzzDevice, "", 0},
	{"POST", "/tasks", "HTTP/1.1", "Transfer-Encoding: chunked\nTrailer: Cookie", "3\r\nabc\r\n0\r\nCookie: " + fuzzDevice + "\r\n\r\n", fuzzSession},
	{"GET", "/tasks", "HTTP/1.1", "Cookie: __Host-portcullis=forged", "", fuzzSession},
	// Bodies: chunked with trailers, conflicting framing.
	{"POST", "/tasks", "HTTP/1.1", "Transfer-Encoding: chunked\nTrailer: X-Email, Cookie", "3\r\nabc\r\n0\r\nX-Email: evil@example.com\r\nCookie: __Host-portcullis=x\r\n\r\n", fuzzSession},
	{"POST", "/public/x", "HTTP/1.1", "Transfer-Encoding: chunked\nTrailer: X-Groups", "3\r\nabc\r\n0\r\nX-Groups: admin\r\nx_email: evil@example.com\r\n\r\n", 0},
	{"POST", "/public/x", "HTTP/1.1", "Content-Length: 5\nTransfer-Encoding: chunked", "0\r\n\r\nGET /admin/x HTTP/1.1\r\nHost: cvat.example.com\r\n\r\n", fuzzSession},
	{"POST", "/public/x", "HTTP/1.1", "Content-Length: 3\nContent-Length: 40", "abcGET /blocked HTTP/1.1\r\nHost: x\r\n\r\n", 0},
	{"POST", "/public/x", "HTTP/1.1", "Transfer-Encoding: chunked, identity", "3\r\nabc\r\n0\r\n\r\n", 0},
	{"POST", "/tasks", "HTTP/1.1", "Content-Length: 4\nExpect: 100-continue", "abcd", fuzzSession},
	// Protocols and methods.
	{"GET", "/tasks", "HTTP/1.0", "", "", fuzzSession | fuzzNoHost},
	{"GET", "/blocked", "HTTP/1.0", "", "", fuzzNoHost},
	{"GET", "/tasks", "HTTP/1.0", "Connection: keep-alive", "", fuzzSession},
	{"GET", "/tasks", "HTTP/1.1", "", "", fuzzNoHost},
	{"get", "/public/x", "HTTP/1.1", "", "", 0},
	{"DELETE", "/admin/x", "HTTP/1.1", "X-HTTP-Method-Override: GET", "", fuzzSession},
	{"TRACE", "/tasks", "HTTP/1.1", "", "", fuzzSession},
	{"CONNECT", "cvat.example.com:443", "HTTP/1.1", "", "", 0},
	{"HEAD", "/tasks", "HTTP/1.1", "Accept: text/html", "", 0},
	{"PROPFIND", "/admin", "HTTP/1.1", "", "", fuzzSession},
}

// FuzzServeHTTP sends any request through the whole pipeline, as raw bytes
// over a real connection (so that net/http parses it as it parses an
// attacker's): method, request-target, protocol, header lines (the
// fuzzer's, then those its picks choose), body, and by its flags a valid
// session of bob, who is no admin, and the configuration it goes to
// (startServeConfigs). It checks SECURITY.md's guarantees on what reached the upstream and on what
// came back:
//   - identity headers (and every header the proxy strips) reach the upstream,
//     in any spelling and in trailers, only as the proxy set them for bob's
//     session or, on a basic_auth rule, for his directory password, and
//     never on a bypass;
//   - on a basic_auth rule, no Basic credentials reach the upstream: they
//     are checked at the directory and removed, or refused;
//   - the rules, run on the request as the upstream got it, agree with what
//     happened: no deny, no admin path, no path of the proxy's own and no
//     authenticate rule without the session (invariant 4);
//   - none of the proxy's cookies reaches the upstream (the LDAP form's
//     device cookie too, which the header lines can carry, sealed for
//     ldapserver.Bob: fuzzDevice), nor the application's session cookies
//     on a bypass;
//   - Host and X-Forwarded-Host and -Proto come from public_url, and
//     X-Forwarded-For is the peer's (servePeers: trusted and untrusted,
//     IPv4-mapped, zoned link-local), after a trusted peer's own lines;
//     the rules above are run as from the client that list names
//     (wantClientBehind), sources, allow_if and when on request.source
//     included (the configuration trusted_proxies);
//   - no answer is a 500 or the proxy's own 5xx, and a request that did not
//     reach the upstream was refused with a 4xx or sent to log in.
func FuzzServeHTTP(f *testing.F) {
	configs := startServeConfigs(f)
	for c := range configs {
		for _, s := range serveSeeds {
			f.Add(s.method, s.target, s.proto, s.headers, []byte(nil), s.body, s.flags|uint8(c)<<fuzzConfigShift, uint8(0))
		}
	}
	f.Add("GET", "/api/x", "HTTP/1.1", "", []byte{6, 2, 7, 8}, "", uint8(fuzzSession), uint8(0))
	f.Add("POST", "/tasks", "HTTP/1.1", "", []byte{8, 12, 16, 5, 0, 0}, "3\r\nabc\r\n0\r\nX-Email: evil@example.com\r\n\r\n", uint8(fuzzSession), uint8(0))
	for _, s := range peerSeeds {
		c := slices.IndexFunc(configs, func(c *serveConfig) bool { return c.name == s.config })
		f.Add("GET", s.target, "HTTP/1.1", s.headers, []byte(nil), "", s.flags|uint8(c)<<fuzzConfigShift, s.peer)
	}
	iteration := 0
	f.Fuzz(func(t *testing.T, method, target, proto, headers string, picks []byte, body string, flags, peerPick uint8) {
		iteration++
		probe := strconv.Itoa(iteration)
		for i := 0; i+1 < len(picks); i += 2 {
			headers += "\n" + fuzzHeaderNames[int(picks[i])%len(fuzzHeaderNames)] + ": " + serveHeaderValues[int(picks[i+1])%len(serveHeaderValues)]
		}
		fx := configs[int(flags>>fuzzConfigShift)%len(configs)]
		headers, body = strings.ReplaceAll(headers, fuzzDevice, fx.device), strings.ReplaceAll(body, fuzzDevice, fx.device)
		raw := fuzzRequestBytes(method, target, proto, headers, body, flags, fx.bob, probe)
		if len(raw) > 16<<10 {
			return // the head limit and large bodies have tests of their own
		}
		sent, finished := preParse(raw)
		fx.upstream.Reset()
		if fx.directory {
			// Each iteration has its own failure limits, as a client of
			// its own: the fuzzer's one address would use the 20 failures
			// it may have within minutes, and every Basic check after
			// would be a 429.
			fx.h.passwords.limits = newLoginLimits()
		}
		peer := int(peerPick) % len(servePeers)
		answers := exchangeRawFrom(t, peerSource(peer), fx.addr, raw, sent, finished)
		var reached []echo.Request
		for _, got := range fx.upstream.Requests() {
			if p := got.Header.Values(fuzzProbeHeader); len(p) == 0 {
				// A request of the fuzzer's own, pipelined: its credentials
				// are somewhere in raw, its X-Forwarded-For lines unknown.
				fx.checkUpstreamGot(t, got, false, fx.directory && bytes.Contains(raw, []byte(bobBasic[len("Basic "):])), peer, nil)
			} else if slices.Contains(p, probe) {
				forwarded := []string{}
				if sent != nil {
					forwarded = sent.Header["X-Forwarded-For"] // a Connection line that names it drops it not
				}
				fx.checkUpstreamGot(t, got, flags&fuzzSession != 0, fx.directory && sentBobsPassword(sent), peer, &forwarded)
			} else {
				continue
			}
			reached = append(reached, got)
		}
		checkAnswers(t, fx.h, answers, sent, finished, len(reached) > 0)
		if t.Failed() {
			t.Logf("request to the %s configuration from %s:\n%q", fx.name, servePeers[peer], raw)
		}
	})
}

// serveConfig is one configuration FuzzServeHTTP sends requests to, on a
// listener of its own.
type serveConfig struct {
	*fixture
	name string
	addr string
	bob  string // the Cookie header of bob's session
	// device is a device cookie of the LDAP form for ldapserver.Bob, as
	// a Cookie header's name=value, sealed by this configuration's proxy.
	device string
	// directory is true when the rule legacy (/legacy/) checks Basic
	// credentials at a real slapd, where ldapserver.Bob has bob's identity.
	directory bool
	// trusted is the configuration's server.trusted_proxies.
	trusted []string
}

// startServeConfigs starts FuzzServeHTTP's configurations, once a process:
// testConfig as it is (cookie sessions); with session.store redis, at a
// redis-server of its own, so that sessions go through RedisStore's Load,
// its cache of opened sessions and its ended and absent sessions; with
// the rule legacy, basic_auth at a real slapd, before the others; and
// clientConfig, behind IPv4, IPv6 and link-local trusted proxies, with
// rules on the client address (sources, allow_if and when). Each listens
// for servePeers (peerListener).
func startServeConfigs(f *testing.F) []*serveConfig {
	redis := redisserver.Start(f)
	dir := ldapserver.Start(f, ldapserver.Options{})
	withRedis := storeInRedis(testConfig, redis.URL)
	var configs []*serveConfig
	for _, c := range []struct {
		name, yaml string
		directory  bool
	}{{"cookie", testConfig, false}, {"redis", withRedis, false}, {"basic_auth", withLegacyRule(dir.URL), true},
		{"trusted_proxies", clientConfig, false}} {
		fx := newFixtureOf(f, c.yaml)
		if c.directory {
			// A refused password is answered at once: the failure floor
			// (250 ms and more) has tests of its own.
			fx.h.pause = func(context.Context, time.Time) {}
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			f.Fatal(err)
		}
		addr := serveLiveOn(f, newLive(f.Context(), fx.h, fx.h.log), peerListener{ln})
		configs = append(configs, &serveConfig{fixture: fx, name: c.name, addr: addr,
			bob: cookieHeader(fx.login(f, bobIdentity["X-Email"], "staff")), device: bobsDevice(f, fx.h), directory: c.directory,
			trusted: fx.h.cfg.Server.TrustedProxies})
	}
	return configs
}

// servePeers are the addresses FuzzServeHTTP's requests come from, as
// http.Request.RemoteAddr has them: the first the loopback address they
// are sent from, the others clientPeers (trusted and untrusted, in a
// sources rule, IPv4-mapped, link-local with a zone), which loopback alone
// cannot give: peerListener says each comes from there.
var servePeers = append([]string{"127.0.0.1"}, clientPeers...)

// peerSource is the loopback address FuzzServeHTTP connects from to come
// from servePeers[i].
func peerSource(i int) netip.Addr {
	if i == 0 {
		return netip.MustParseAddr("127.0.0.1")
	}
	return netip.AddrFrom4([4]byte{127, 0, 1, byte(i)})
}

// peerListener is a loopback listener whose connections from
// peerSource(i) come from servePeers[i], as far as the server can tell.
type peerListener struct{ net.Listener }

func (l peerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	from := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
	for i := 1; i < len(servePeers); i++ {
		if from == peerSource(i) {
			return peerConn{c.(*net.TCPConn), servePeers[i]}, nil
		}
	}
	return c, nil
}

// peerConn is a connection from the peer it names (host:port); the
// *net.TCPConn stays what the server reads, writes and half-closes.
type peerConn struct {
	*net.TCPConn
	peer string
}

func (c peerConn) RemoteAddr() net.Addr { return peerName(c.peer) }

// peerName is a net.Addr that is a host:port.
type peerName string

func (peerName) Network() string  { return "tcp" }
func (p peerName) String() string { return string(p) }

// peerSeeds are FuzzServeHTTP's seeds on the client address: the request
// (a GET), the configuration (by name), the peer (servePeers) and flags.
var peerSeeds = []struct {
	target, headers, config string
	peer, flags             uint8
}{
	{"/internal/x", "X-Forwarded-For: 203.0.113.9", "trusted_proxies", 1, fuzzSession},                    // a trusted peer's client, not in sources
	{"/internal/x", "X-Forwarded-For: 192.168.1.1", "trusted_proxies", 1, 0},                              // a trusted peer's client, in sources
	{"/internal/x", "X-Forwarded-For: 203.0.113.9", "trusted_proxies", 6, fuzzSession},                    // behind a zoned link-local proxy
	{"/internal/x", "X-Forwarded-For: 203.0.113.9", "trusted_proxies", 2, fuzzSession},                    // behind an IPv4-mapped one
	{"/internal/x", "X-Forwarded-For: 192.168.1.1", "trusted_proxies", 3, fuzzSession},                    // from an untrusted peer: not believed
	{"/office/x", "X-Forwarded-For: 192.0.2.10", "trusted_proxies", 4, fuzzSession},                       // trusted IPv6 proxy, allow_if on the source
	{"/office/x", "X-Forwarded-For: 192.0.2.10\u00a0", "trusted_proxies", 1, fuzzSession},                 // an entry that is no address
	{"/lab/x", "X-Forwarded-For: 192.0.2.66, 10.9.9.9", "trusted_proxies", 1, 0},                          // when on the source, past a trusted hop
	{"/public/x", "X-Forwarded-For: 198.51.100.7\nX-Real-IP: 10.0.0.1", "trusted_proxies", 1, 0},          // a banned client
	{"/public/x", "X-Forwarded-For: \nx_forwarded_for: 192.168.1.1", "trusted_proxies", 1, 0},             // an empty line, another spelling
	{"/internal/x", "X-Forwarded-For: 203.0.113.9\nConnection: X-Forwarded-For", "trusted_proxies", 1, 0}, // a list named in Connection
	{"/office/x", "", "trusted_proxies", 10, fuzzSession},                                                 // the peer itself in allow_if
	{"/tasks", "X-Forwarded-For: 203.0.113.9, fe80::2%eth0", "cookie", 1, fuzzSession},                    // testConfig's trusted proxy
	{"/legacy/x", "Authorization: " + bobBasic + "\nX-Forwarded-For: 203.0.113.9", "basic_auth", 1, 0},    // the failure limits' client
}

// bobsDevice is a device cookie that h seals for ldapserver.Bob's login to
// his entry at corp-ldap (whether or not h has that IdP), as a Cookie
// header's name=value.
func bobsDevice(t testing.TB, h *Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	const id = "corp-ldap"
	if err := h.devices.Issue(rec, h.ldapFormPath(id, ""), id, userKey(id, ldapserver.Bob), accountKey(id, ldapserver.UserDN(ldapserver.Bob))); err != nil {
		t.Fatal(err)
	}
	return cookieHeader(rec.Result().Cookies())
}

// withLegacyRule is testConfig with the LDAP IdP corp-ldap at the
// directory url (ldapserver's tree) and, before the other rules, the rule
// legacy: /legacy/ checks Basic credentials there.
func withLegacyRule(url string) string {
	y := strings.Replace(testConfig, "  identity_providers:\n", "  identity_providers:\n"+`    - id: corp-ldap
      protocol: LDAP
      url: `+url+`
      bind_dn: `+ldapserver.ServiceDN+`
      bind_password: `+ldapserver.ServicePassword+`
      user_search: {base_dn: "`+ldapserver.Suffix+`", filter: "(&(objectClass=inetOrgPerson)(uid={username}))"}
`, 1)
	return strings.Replace(y, "rules:\n  - name: cvat-api-credentials", "rules:\n"+`  - name: legacy
    path_prefix: /legacy/
    action: authenticate
    basic_auth: corp-ldap
  - name: cvat-api-credentials`, 1)
}

// sentBobsPassword reports whether sent carries bob's directory password
// as the proxy reads Basic credentials, under a username the directory
// takes for his: slapd matches uid without regard to case or to
// insignificant spaces (caseIgnoreMatch), so "boB" is bob and signs in as
// him, as it does at the LDAP form.
func sentBobsPassword(sent *http.Request) bool {
	if sent == nil {
		return false
	}
	user, password, ok := sent.BasicAuth()
	return ok && strings.EqualFold(strings.Join(strings.Fields(user), " "), ldapserver.Bob) && password == ldapserver.BobPassword
}

// fuzzRequestBytes lays out FuzzServeHTTP's request: the request line, the
// Host line, the fuzzer's header lines (an empty one is left out, so that
// the head never ends early by the harness's doing), the session, the probe
// and Connection: close, then the body.
func fuzzRequestBytes(method, target, proto, headers, body string, flags uint8, session, probe string) []byte {
	var b bytes.Buffer
	b.WriteString(method + " " + target + " " + proto + "\r\n")
	if flags&fuzzNoHost == 0 {
		b.WriteString("Host: cvat.example.com\r\n")
	}
	cookie := flags&fuzzSession != 0
	if cookie && flags&fuzzSessionFirst != 0 {
		b.WriteString("Cookie: " + session + "\r\n")
		cookie = false
	}
	for line := range strings.SplitSeq(headers, "\n") {
		if line != "" {
			b.WriteString(line + "\r\n")
		}
	}
	if cookie {
		b.WriteString("Cookie: " + session + "\r\n")
	}
	b.WriteString(fuzzProbeHeader + ": " + probe + "\r\nConnection: close\r\n\r\n")
	b.WriteString(body)
	return b.Bytes()
}

// preParse reads raw as the proxy's server will: the request it makes of
// it (nil when it refuses it), and whether that request, body and all, is
// exactly raw and closes the connection. Only then does the server answer
// and close without the client closing its side first.
func preParse(raw []byte) (req *http.Request, finished bool) {
	br := bufio.NewReader(bytes.NewReader(raw))
	req, err := http.ReadRequest(br)
	if err != nil {
		// A head that ends early makes the server wait for the rest;
		// anything else it refuses at once.
		return nil, !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF)
	}
	_, err = io.Copy(io.Discard, req.Body)
	return req, err == nil && req.Close && br.Buffered() == 0
}

// answer is one final response of the proxy.
type answer struct {
	status   int
	location string
	handler  bool // the Handler's answer, not net/http's own
}

// exchangeRaw sends raw on a new connection to addr and reads the answers
// until the server closes it. When raw is not one finished request, the
// client closes its side once it has sent everything, so that the server
// stops waiting for more.
func exchangeRaw(t *testing.T, addr string, raw []byte, sent *http.Request, finished bool) []answer {
	return exchangeRawFrom(t, netip.Addr{}, addr, raw, sent, finished)
}

// exchangeRawFrom is exchangeRaw on a connection from the local address
// from (the invalid Addr: any).
func exchangeRawFrom(t *testing.T, from netip.Addr, addr string, raw []byte, sent *http.Request, finished bool) []answer {
	var d net.Dialer
	if from.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Not a measure of anything: the bound on a proxy that never answers,
	// which fails the input instead of stalling the fuzzer.
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(raw); err != nil {
		return nil // the server refused the head and closed before reading it all
	}
	if !finished {
		conn.(*net.TCPConn).CloseWrite()
	}
	var answers []answer
	br := bufio.NewReader(conn)
	for {
		resp, err := http.ReadResponse(br, sent)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no answer from the proxy: %v", err)
			}
			return answers
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			answers = append(answers, answer{resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get(requestIDHeader) != ""})
		}
		// One finished request has one final answer, after which the
		// server may keep the connection open all the same: an HTTP/1.0
		// request saying both keep-alive and close gets keep-alive.
		if err != nil || resp.Close || finished && len(answers) > 0 {
			return answers
		}
		sent = nil // the fuzzer's own pipelined requests: their methods are unknown
	}
}

// checkUpstreamGot checks one request the upstream got against the rules
// and against what the proxy may have set, session telling whether the
// client sent bob's session and password whether it sent bob's directory
// password, from servePeers[peer] with the X-Forwarded-For lines
// *forwarded (nil: not known, as of a pipelined request; its client is
// read from the X-Forwarded-For the upstream got).
func (f *serveConfig) checkUpstreamGot(t *testing.T, got echo.Request, session, password bool, peer int, forwarded *[]string) {
	t.Helper()
	// Invariant 4: the upstream got a canonical path, one that cleaning
	// again leaves as it is, and the decision on it is what happened.
	escaped, _, _ := strings.Cut(got.RequestURI, "?")
	if clean, err := rules.CleanPath(escaped); err != nil || clean != got.Path {
		t.Errorf("upstream got %q (path %q), not a clean path: CleanPath gives %q, %v", got.RequestURI, got.Path, clean, err)
	}
	if f.h.isAuthPath(got.Path) {
		t.Errorf("upstream got %q, under the proxy's own auth_prefix", got.Path)
	}
	identity := f.checkIdentityHeaders(t, got, session || password)
	client, xff := f.wantClient(t, got, peer, forwarded)
	view := &http.Request{Method: got.Method, Host: got.Host, Header: got.Header.Clone()}
	f.h.pass.Strip(view.Header) // what the rules saw of the client's headers
	req := rules.NewRequest(view, got.Path, client)
	rule := f.h.rules.Match(req)
	if rule.Config.BasicAuth != "" {
		checkNoBasicCredentials(t, got, rule.Name)
	} else if identity && !session {
		t.Errorf("upstream got bob's identity on %s %q without his session, and rule %s checks no password", got.Method, got.Path, rule.Name)
	}
	switch {
	case rule.Action == rules.Deny:
		t.Errorf("upstream got %s %q, which rule %s denies", got.Method, got.Path, rule.Name)
	case rule.Action == rules.Bypass && identity:
		t.Errorf("upstream got identity headers on %s %q, which rule %s bypasses", got.Method, got.Path, rule.Name)
	case rule.Action == rules.Authenticate && !identity:
		t.Errorf("upstream got %s %q without identity, which rule %s lets through only with a session", got.Method, got.Path, rule.Name)
	case rule.Action == rules.Authenticate:
		bob := idp.Profile{Email: bobIdentity["X-Email"], Roles: []string{bobIdentity["X-Groups"]}}
		if ok, err := rule.Allow(&bob, req, time.Now()); !ok || err != nil {
			t.Errorf("upstream got %s %q as bob, whom rule %s's allow_if refuses (%v)", got.Method, got.Path, rule.Name, err)
		}
	}
	f.checkCookies(t, got, !identity)
	// Guarantee 8: where the request came from is the proxy's word.
	if got.Host != "cvat.example.com" {
		t.Errorf("upstream got Host %q, not public_url's", got.Host)
	}
	want := map[string]string{"x-forwarded-host": "cvat.example.com", "x-forwarded-proto": "https", "x-forwarded-for": xff, "forwarded": ""}
	for name, values := range got.Header {
		n := foldHeaderName(name)
		if v, ok := want[n]; ok && (v == "" || name != http.CanonicalHeaderKey(n) || len(values) != 1 || values[0] != v) {
			t.Errorf("upstream got %s: %q; want only the proxy's %s: %q", name, values, http.CanonicalHeaderKey(n), v)
		}
	}
	if got.Header.Get("X-Forwarded-For") == "" {
		t.Errorf("upstream got no X-Forwarded-For; want %q", xff)
	}
}

// wantClient is the client the rules must have seen for a request the
// upstream got from servePeers[peer] with the X-Forwarded-For lines
// *forwarded (wantClientBehind: the README read with package net, not the
// proxy's netip), the invalid Addr when unknown, and the X-Forwarded-For
// the upstream must have got, as its server reads it (spaces and tabs
// around the value trimmed). Without forwarded, the lines are read back
// from the upstream's X-Forwarded-For, which must then end with the peer.
func (f *serveConfig) wantClient(t *testing.T, got echo.Request, peer int, forwarded *[]string) (netip.Addr, string) {
	t.Helper()
	from := servePeers[peer]
	if peer == 0 {
		from = net.JoinHostPort(from, "1") // the real port is the connection's
	}
	host, _, _ := net.SplitHostPort(from)
	var lines []string
	switch xff := got.Header.Get("X-Forwarded-For"); {
	case forwarded != nil:
		lines = *forwarded
	case !trustedPeerBehind(f.trusted, from) || xff == host:
	case strings.HasSuffix(xff, ", "+host):
		lines = []string{strings.TrimSuffix(xff, ", "+host)}
	default:
		t.Errorf("upstream got X-Forwarded-For %q from %s; want it to end with the peer", xff, from)
	}
	ip, known := wantClientBehind(f.trusted, from, lines)
	client := netip.Addr{}
	if v4 := ip.To4(); known && v4 != nil {
		client = netip.AddrFrom4([4]byte(v4))
	} else if known {
		client = netip.AddrFrom16([16]byte(ip))
	}
	return client, textproto.TrimString(wantForwardedFor(f.trusted, from, lines))
}

// checkNoBasicCredentials checks that no Authorization header or trailer
// the upstream got on the basic_auth rule named carries Basic credentials,
// read as leniently as any server reads them (Django REST framework splits
// the value at any white space): the directory password stays at the proxy.
func checkNoBasicCredentials(t *testing.T, got echo.Request, rule string) {
	t.Helper()
	for _, h := range []http.Header{got.Header, got.Trailer} {
		for name, values := range h {
			if foldHeaderName(name) != "authorization" {
				continue
			}
			for _, v := range values {
				if words := strings.Fields(v); len(words) > 0 && strings.EqualFold(words[0], "basic") {
					t.Errorf("upstream got %s: %q on rule %s, which checks Basic credentials at the directory", name, v, rule)
				}
			}
		}
	}
}

// checkIdentityHeaders checks every header the proxy strips from clients as
// the upstream got it, in headers and trailers, and reports whether the
// request carried bob's identity, which it may only when bob (his session
// or his password) sent it.
func (f *fixture) checkIdentityHeaders(t *testing.T, got echo.Request, bob bool) (identity bool) {
	t.Helper()
	stripped := map[string]bool{}
	for _, name := range f.h.pass.Names() {
		stripped[foldHeaderName(name)] = true
	}
	for name, values := range got.Trailer {
		if stripped[foldHeaderName(name)] {
			t.Errorf("upstream got the trailer %s: %q", name, values)
		}
	}
	for name, values := range got.Header {
		n := foldHeaderName(name)
		if !stripped[n] || n == "x-request-id" {
			continue
		}
		want, ok := bobIdentity[name]
		switch {
		case !ok:
			t.Errorf("upstream got %s: %q, which no client may set and the proxy does not", name, values)
		case !bob:
			t.Errorf("upstream got %s: %q without a session or a password", name, values)
		case len(values) != 1 || values[0] != want:
			t.Errorf("upstream got %s: %q; bob's session has %q", name, values, want)
		default:
			identity = true
		}
	}
	if emails, groups := got.Header.Values("X-Email"), got.Header.Values("X-Groups"); identity && (len(emails) != 1 || len(groups) != 1) {
		t.Errorf("upstream got part of an identity: X-Email %q, X-Groups %q", emails, groups)
	}
	return identity
}

// checkCookies checks the Cookie lines the upstream got, read as leniently
// as any server reads them (Django strips names of every space Python
// knows): none is the proxy's, and on a bypass none is the application's
// session (upstream.logout_cookies).
func (f *fixture) checkCookies(t *testing.T, got echo.Request, bypass bool) {
	t.Helper()
	for _, lines := range [][]string{got.Header["Cookie"], got.Trailer["Cookie"]} {
		for _, line := range lines {
			for part := range strings.SplitSeq(line, ";") {
				name, _, _ := strings.Cut(part, "=")
				name = strings.TrimFunc(name, func(r rune) bool { return r <= ' ' || r >= 0x7f })
				if f.h.ownsCookie(name) || f.isDeviceCookie(name) {
					t.Errorf("upstream got the proxy's cookie %q in %q", name, line)
				}
				if bypass && slices.Contains(f.h.cfg.Upstream.LogoutCookies, name) {
					t.Errorf("upstream got the application's session cookie %q on a bypass", name)
				}
			}
		}
	}
}

// isDeviceCookie reports whether name is the LDAP form's device cookie,
// with or without a prefix: named here, and not left to ownsCookie alone,
// which is the proxy's own reading of its cookies.
func (f *fixture) isDeviceCookie(name string) bool {
	base := strings.TrimPrefix(f.h.cookies.DeviceName(), "__Secure-")
	return name == base || name == "__Secure-"+base || name == "__Host-"+base
}

// checkAnswers checks the answers to sent (nil: net/http refused it):
// never a 500; from the Handler, a 5xx only when the upstream (502, 504) or
// something the proxy waits on (503) failed, and, when nothing reached the
// upstream, a refusal (4xx) or the way to log in; from net/http itself
// (without the Handler's X-Request-Id), a 4xx, 501 (an unknown transfer
// coding) or 505. A finished request always gets an answer: a connection
// closed without one is a panic.
func checkAnswers(t *testing.T, h *Handler, answers []answer, sent *http.Request, finished, reached bool) {
	t.Helper()
	if finished && len(answers) == 0 {
		t.Errorf("the connection closed without an answer")
	}
	for i, a := range answers {
		if !a.handler {
			if (a.status < 400 || a.status >= 500) && a.status != http.StatusNotImplemented &&
				a.status != http.StatusHTTPVersionNotSupported {
				t.Errorf("net/http's own answer %d", a.status)
			}
			continue
		}
		switch a.status {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		default:
			if a.status >= 500 {
				t.Errorf("answer %d", a.status)
			}
		}
		if i > 0 || !finished || reached || sent == nil {
			continue // the fuzzer's own pipelined requests, or the upstream's answer
		}
		if path, err := rules.CleanPath(requestPath(sent)); err == nil && h.isAuthPath(path) {
			continue // the proxy's own endpoints answer for themselves
		}
		login := a.status == http.StatusFound && strings.HasPrefix(a.location, h.cfg.Server.AuthPrefix+"/login?")
		if (a.status < 400 || a.status >= 500) && !login {
			t.Errorf("nothing reached the upstream, yet the answer is %d (Location %q)", a.status, a.location)
		}
	}
}

// foldHeaderName is a header name as servers behind CGI-style gateways
// read it: case-insensitively, with _ and . as -.
func foldHeaderName(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '.' {
			return '-'
		}
		return r
	}, strings.ToLower(name))
}
