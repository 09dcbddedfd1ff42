package proxy

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/rules"
)

// clientConfig is testConfig behind trusted proxies (IPv4, IPv6 and
// link-local), with rules that read the client address: sources that
// bypass, sources that deny, an allow_if and a when on request.source.
var clientConfig = strings.Replace(strings.Replace(testConfig,
	"trusted_proxies: [10.0.0.0/8]", `trusted_proxies: [10.0.0.0/8, "fd00::/8", "fe80::/10"]`, 1),
	"rules:\n  - name: cvat-api-credentials", `rules:
  - name: internal
    path_prefix: /internal/
    sources: [10.0.0.0/8, 192.168.0.0/16, "2001:db8:1::/48", "fe80::/10"]
    action: bypass
  - name: banned
    path_prefix: /
    sources: [198.51.100.0/24, "2001:db8:bad::/48"]
    action: deny
  - name: office
    path_prefix: /office/
    action: authenticate
    allow_if: 'request.source in ["192.0.2.10", "2001:db8::10"]'
  - name: lab
    path_prefix: /lab/
    when: 'request.source startsWith "192.0.2."'
    action: bypass
  - name: cvat-api-credentials`, 1)

// clientTrusted, clientInternal, clientBanned, clientOffice are
// clientConfig's CIDRs and addresses, for the oracle to read with package
// net, not with the netip the proxy uses.
var (
	clientTrusted  = []string{"10.0.0.0/8", "fd00::/8", "fe80::/10"}
	clientInternal = []string{"10.0.0.0/8", "192.168.0.0/16", "2001:db8:1::/48", "fe80::/10"}
	clientBanned   = []string{"198.51.100.0/24", "2001:db8:bad::/48"}
	clientOffice   = []string{"192.0.2.10", "2001:db8::10"}
)

// clientPeers are the peers FuzzClientAddress connects from, as
// http.Request.RemoteAddr has them: trusted, untrusted, in a sources rule,
// IPv4-mapped, and link-local with a zone (the form Go gives such a peer).
var clientPeers = []string{
	"10.1.2.3:5555", "[::ffff:10.1.2.3]:5555", "203.0.113.7:40000", "[fd00::1]:443", "[2001:db8::5]:80",
	"[fe80::1%eth0]:8080", "198.51.100.7:1", "192.168.1.1:2", "[2001:db8:1::9]:3", "192.0.2.10:4", "127.0.0.1:9",
}

// clientPaths are the paths FuzzClientAddress asks for, one per rule that
// reads the client address.
var clientPaths = []string{"/internal/x", "/office/x", "/lab/x"}

// forwardedEntries are what FuzzClientAddress's picks put in
// X-Forwarded-For lists: addresses of every rule and trusted range, with
// ports, brackets, mapped, zoned, obfuscated and plainly invalid.
var forwardedEntries = []string{
	"203.0.113.9", "10.9.9.9", "198.51.100.7", "192.0.2.10", "192.168.1.1", "2001:db8::10", "[2001:db8::10]:443",
	"::ffff:192.0.2.10", "[::ffff:10.9.9.9]:80", "192.0.2.10:5555", "fd00::2", "[fd00::2]", "fe80::2%eth0",
	"[fe80::2%25eth0]:80", "fd00::2%1", "2001:db8:1::1", "2001:db8:bad::1", "unknown", "", " ", "_hidden",
	"010.9.9.9", "192.0.2.010", "3221225994", "0xc0.0.2.10", "2001:DB8::10", "2001:db8:0:0:0:0:0:10",
	"192.0.2.10\u00a0", "\t192.0.2.10", "[192.0.2.10]", "192.0.2.10:", "192.0.2.10:99999", "[2001:db8::10]",
	"for=192.0.2.10", "127.0.0.1", "::1", "10.9.9.9:1",
}

// clientSeeds are FuzzClientAddress's seeds: peer, path, header lines
// (separated by \n) and picks.
var clientSeeds = []struct {
	peer, path uint8
	headers    string
	picks      []byte
}{
	{0, 0, "X-Forwarded-For: 203.0.113.9", nil},
	{0, 0, "X-Forwarded-For: 10.9.9.9", nil},
	{0, 0, "X-Forwarded-For: 10.9.9.9, garbage", nil},
	{0, 1, "X-Forwarded-For: 192.0.2.10:5555", nil},
	{0, 1, "X-Forwarded-For: [2001:db8::10]", nil},
	{0, 1, "X-Real-IP: 192.0.2.10\nForwarded: for=\"[2001:db8::10]\"", nil},
	{1, 2, "X-Forwarded-For: [192.0.2.10]", nil},
	{1, 1, "X-Forwarded-For: [2001:db8::10]:443", nil},
	{2, 1, "X-Forwarded-For: 192.0.2.10", nil},
	{2, 0, "X-Forwarded-For: 10.9.9.9\nX-Real-IP: 10.9.9.9\nForwarded: for=10.9.9.9", nil},
	{0, 2, "X-Forwarded-For: 192.0.2.10\nx_forwarded_for: 10.9.9.9", nil},
	{0, 2, "X-Forwarded-For: 192.0.2.66\nX-Forwarded-For: 10.9.9.9", nil},
	{0, 0, "X-Forwarded-For: 198.51.100.7, 10.9.9.9,", nil},
	{3, 0, "X-Forwarded-For: fd00::2, 2001:db8:1::1", nil},
	{5, 0, "X-Forwarded-For: 203.0.113.9", nil},
	{0, 0, "X-Forwarded-For: fd00::2%1", nil},
	{0, 1, "", []byte{3, 1, 255, 10, 13}},
	{0, 2, "x-forwarded-for: 192.0.2.10\u00a0", nil},
	{0, 0, "X-Forwarded-For: 203.0.113.9,\n 10.9.9.9", nil},
	{0, 0, "X-Forwarded-For: ", nil},
	{0, 2, "X-Forwarded-For: 192.0.2.10\nX-Forwarded-For: ", nil},
}

// FuzzClientAddress sends requests from trusted and untrusted peers with
// any X-Forwarded-For (and Forwarded, X-Real-IP and the like) through
// clientConfig, and checks them against a reference reading of the README
// written apart from the proxy's (package net, not netip):
//   - the client is the peer, unless the peer is a trusted proxy: then the
//     nearest X-Forwarded-For entry, from the right, that is no trusted
//     proxy; an entry on the way that is no address (with or without a
//     port or brackets) makes it unknown, which no sources rule matches;
//     no other header moves it;
//   - the rules decide on that address (sources, allow_if and when), and
//     LDAP's failed-login limits count it;
//   - the upstream gets one X-Forwarded-For: a trusted peer's lines, in
//     order, an empty one too, then the peer; from any other peer the
//     peer alone; and no
//     Forwarded or X-Real-IP.
func FuzzClientAddress(f *testing.F) {
	fx := newFixtureOf(f, clientConfig)
	bob := cookieHeader(fx.login(f, bobIdentity["X-Email"], "staff"))
	for _, s := range clientSeeds {
		f.Add(s.peer, s.path, s.headers, s.picks)
	}
	f.Fuzz(func(t *testing.T, peerPick, pathPick uint8, headers string, picks []byte) {
		peer, path := clientPeers[int(peerPick)%len(clientPeers)], clientPaths[int(pathPick)%len(clientPaths)]
		var list []string
		for _, p := range picks {
			if p == 255 {
				if len(list) > 0 {
					headers += "\nX-Forwarded-For: " + strings.Join(list, ",")
				}
				list = nil
				continue
			}
			list = append(list, forwardedEntries[int(p)%len(forwardedEntries)])
		}
		if len(list) > 0 {
			headers += "\nX-Forwarded-For: " + strings.Join(list, ", ")
		}
		lines := []string{"Host: cvat.example.com"}
		size := 0
		for line := range strings.SplitSeq(headers, "\n") {
			name, _, _ := strings.Cut(line, ":")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "", "cookie", "connection", "host":
				continue // bob's session and the Host stay the harness's: FuzzServeHTTP varies them
			}
			lines = append(lines, line)
			size += len(line)
		}
		if size > 16<<10 {
			return
		}
		// Read as the proxy's server reads it off a connection, refusals
		// and all (an invalid header name is a 400 there, never a request).
		r, err := readRequest("GET", path, append(lines, "Cookie: "+bob))
		if err != nil {
			return
		}
		r = r.WithContext(context.Background()) // not the context of readRequest's server, which ends with it
		r.RemoteAddr = peer
		forwarded := slices.Clone(r.Header["X-Forwarded-For"])
		client, known := wantClient(peer, forwarded)
		addr := fx.h.clientAddr(r)
		if got := rules.NewRequest(r, path, addr).Addr(); got.IsValid() != known || known && !net.IP(got.AsSlice()).Equal(client) {
			t.Errorf("from %s with X-Forwarded-For %q the rules see %v; want %v (known %v)", peer, forwarded, got, client, known)
		}
		// The logs and LDAP's failed-login limits take clientAddr as it is.
		if got, want := addrKey(addr), wantLimitKey(client, known); got != want || addr.Zone() != "" {
			t.Errorf("from %s with X-Forwarded-For %q the client is %v, limited under %q; want %q", peer, forwarded, addr, got, want)
		}
		wantXFF := wantForwardedFor(clientTrusted, peer, forwarded)

		fx.upstream.Reset()
		rec := httptest.NewRecorder()
		fx.h.ServeHTTP(rec, r)
		got, reached := fx.upstream.Last()
		reach, identity := wantDecision(path, client, known)
		if reached != reach {
			t.Fatalf("%s from %s with X-Forwarded-For %q (client %v, known %v): reached the upstream %v (status %d), want %v",
				path, peer, forwarded, client, known, reached, rec.Code, reach)
		}
		if !reached {
			if rec.Code != http.StatusForbidden {
				t.Errorf("refused with %d, want 403", rec.Code)
			}
			return
		}
		if hasID := got.Header.Get("X-Email") != ""; hasID != identity {
			t.Errorf("%s from %s with X-Forwarded-For %q: identity headers %v, want %v", path, peer, forwarded, hasID, identity)
		}
		for name, values := range got.Header {
			switch n := foldHeaderName(name); {
			case n == "x-forwarded-for":
				if name != "X-Forwarded-For" || len(values) != 1 || values[0] != wantXFF {
					t.Errorf("from %s with X-Forwarded-For %q the upstream got %s: %q; want X-Forwarded-For: %q", peer, forwarded, name, values, wantXFF)
				}
			case n == "forwarded" || n == "x-real-ip" || strings.HasSuffix(n, "client-ip"):
				t.Errorf("upstream got %s: %q", name, values)
			}
		}
		if got.Header.Get("X-Forwarded-For") == "" {
			t.Errorf("upstream got no X-Forwarded-For; want %q", wantXFF)
		}
	})
}

// wantClient is the client address the rules must see for a request from
// peer (host:port) with the X-Forwarded-For lines forwarded: the README's
// "trusted_proxies" and "sources" read with package net. A zone names an
// interface, not another address: it is dropped before anything is
// compared.
func wantClient(peer string, forwarded []string) (net.IP, bool) {
	return wantClientBehind(clientTrusted, peer, forwarded)
}

// wantClientBehind is wantClient behind the trusted proxies in trusted
// (CIDRs).
func wantClientBehind(trusted []string, peer string, forwarded []string) (net.IP, bool) {
	host, _, err := net.SplitHostPort(peer)
	if err != nil {
		return nil, false
	}
	ip := parseIPNoZone(host)
	if ip == nil {
		return nil, false
	}
	if !inAny(ip, trusted) || len(forwarded) == 0 {
		return ip, true
	}
	entries := strings.Split(strings.Join(forwarded, ","), ",")
	for i := len(entries) - 1; i >= 0; i-- {
		a := forwardedIP(strings.Trim(entries[i], " \t"))
		if a == nil {
			return nil, false
		}
		if !inAny(a, trusted) {
			return a, true
		}
	}
	return ip, true
}

// wantLimitKey is the key LDAP's failed-login limits count the client
// under: its IPv4 address, or its IPv6 /64 (one host's share of a network);
// one key for every unknown client.
func wantLimitKey(client net.IP, known bool) string {
	switch {
	case !known:
		return "unknown"
	case client.To4() != nil:
		return client.To4().String()
	}
	n := net.IPNet{IP: client.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}
	return n.String()
}

// forwardedIP reads an X-Forwarded-For entry as the README lists its
// forms: an address, IPv4:port, [IPv6]:port or [IPv6]; nil for anything
// else.
func forwardedIP(s string) net.IP {
	if ip := parseIPNoZone(s); ip != nil {
		return ip
	}
	if host, port, err := net.SplitHostPort(s); err == nil {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return nil
		}
		bracketed := strings.HasPrefix(s, "[")
		if ip := parseIPNoZone(host); ip != nil && bracketed == strings.Contains(host, ":") {
			return ip
		}
		return nil
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' && strings.Contains(s, ":") {
		return parseIPNoZone(s[1 : len(s)-1])
	}
	return nil
}

// parseIPNoZone is net.ParseIP of an address that may carry an IPv6 zone,
// which it drops.
func parseIPNoZone(s string) net.IP {
	if addr, zone, ok := strings.Cut(s, "%"); ok {
		if zone == "" || !strings.Contains(addr, ":") {
			return nil
		}
		s = addr
	}
	return net.ParseIP(s)
}

func inAny(ip net.IP, cidrs []string) bool {
	for _, c := range cidrs {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			panic(err)
		}
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

func trustedPeer(peer string) bool {
	return trustedPeerBehind(clientTrusted, peer)
}

// trustedPeerBehind reports whether peer (host:port) is in trusted (CIDRs).
func trustedPeerBehind(trusted []string, peer string) bool {
	host, _, _ := net.SplitHostPort(peer)
	ip := parseIPNoZone(host)
	return ip != nil && inAny(ip, trusted)
}

// wantForwardedFor is the X-Forwarded-For the upstream must get for a
// request from peer (host:port) with the X-Forwarded-For lines forwarded,
// behind trusted: a trusted peer's lines, in order, an empty one too, then
// the peer; from any other peer the peer alone.
func wantForwardedFor(trusted []string, peer string, forwarded []string) string {
	host, _, _ := net.SplitHostPort(peer)
	if trustedPeerBehind(trusted, peer) && len(forwarded) > 0 {
		return strings.Join(forwarded, ", ") + ", " + host
	}
	return host
}

// wantDecision is clientConfig's rules on path for bob's session from the
// client (unknown unless known): whether the request reaches the upstream,
// and with bob's identity.
func wantDecision(path string, client net.IP, known bool) (reach, identity bool) {
	switch {
	case path == "/internal/x" && known && inAny(client, clientInternal):
		return true, false
	case known && inAny(client, clientBanned):
		return false, false
	case path == "/office/x":
		for _, a := range clientOffice {
			if known && client.Equal(net.ParseIP(a)) {
				return true, true
			}
		}
		return false, false
	case path == "/lab/x" && known && client.To4() != nil && strings.HasPrefix(client.To4().String(), "192.0.2."):
		return true, false
	}
	return true, true // default_action: authenticate, with bob's session
}

// A zone names the interface an IPv6 address is reached on, not another
// address. A link-local proxy in trusted_proxies is trusted with the zone
// Go gives its peer address (fe80::1%eth0), and a zoned X-Forwarded-For
// entry in a trusted range is a trusted hop. With the zone, the proxy was
// taken for the client, and a sources rule that covers it (clientConfig's
// internal) let every client behind it through; a zoned hop was taken for
// the client. Found by FuzzClientAddress's seeds.
func TestZonedAddressesOfTrustedProxies(t *testing.T) {
	f := newFixtureOf(t, clientConfig)
	for _, tc := range []struct{ peer, xff, upstream string }{
		{"[fe80::1%eth0]:8080", "203.0.113.9", "203.0.113.9, fe80::1%eth0"},
		{"10.1.2.3:5555", "203.0.113.9, fe80::2%eth0", "203.0.113.9, fe80::2%eth0, 10.1.2.3"},
		{"10.1.2.3:5555", "203.0.113.9, [fd00::2%1]:80", "203.0.113.9, [fd00::2%1]:80, 10.1.2.3"},
	} {
		t.Run(tc.peer+" "+tc.xff, func(t *testing.T) {
			r := request("GET", "/internal/x", nil, "X-Forwarded-For", tc.xff, "Accept", "application/json")
			r.RemoteAddr = tc.peer
			if got := f.h.clientAddr(r); got != netip.MustParseAddr("203.0.113.9") {
				t.Errorf("client %v, want 203.0.113.9", got)
			}
			if resp, _, reached := f.do(t, r); reached {
				t.Errorf("203.0.113.9 bypassed by the rule internal (sources: its proxies' ranges), status %d", resp.StatusCode)
			}
			r = request("GET", "/public/x", nil, "X-Forwarded-For", tc.xff)
			r.RemoteAddr = tc.peer
			if _, got, reached := f.do(t, r); !reached || got.Header.Get("X-Forwarded-For") != tc.upstream {
				t.Errorf("upstream got X-Forwarded-For %q (reached %v), want %q", got.Header.Get("X-Forwarded-For"), reached, tc.upstream)
			}
		})
	}
}

// An empty X-Forwarded-For line from a trusted proxy is an entry that is
// no address: the client is unknown to the rules, and the upstream gets
// the line as it came, then the peer, as Go's ReverseProxy
// (ProxyRequest.SetXForwarded) and nginx's $proxy_add_x_forwarded_for
// forward it. Left out, the upstream's list would end at the trusted
// proxy, and an upstream that reads the rightmost address it does not
// trust, and refuses what does not parse as portcullis does, would take
// that proxy for the client rather than an unknown one: a sources rule
// that covers it (clientConfig's internal) would let the client through
// there.
func TestEmptyForwardedForOfATrustedProxy(t *testing.T) {
	f := newFixtureOf(t, clientConfig)
	for _, tc := range []struct {
		name     string
		lines    []string
		upstream string
	}{
		{"one empty line", []string{""}, ", 10.1.2.3"},
		{"an empty line after an address", []string{"192.0.2.10", ""}, "192.0.2.10, , 10.1.2.3"},
		{"a line of spaces", []string{"  "}, ", 10.1.2.3"}, // the upstream's server trims the value it reads
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := request("GET", "/internal/x", nil, "Accept", "application/json")
			r.Header["X-Forwarded-For"] = tc.lines
			r.RemoteAddr = "10.1.2.3:5555"
			if got := f.h.clientAddr(r); got.IsValid() {
				t.Errorf("client %v, want unknown", got)
			}
			if resp, _, reached := f.do(t, r); reached {
				t.Errorf("an unknown client bypassed by the rule internal (sources: its proxy's range), status %d", resp.StatusCode)
			}
			r = request("GET", "/public/x", nil)
			r.Header["X-Forwarded-For"] = tc.lines
			r.RemoteAddr = "10.1.2.3:5555"
			if _, got, reached := f.do(t, r); !reached || got.Header.Get("X-Forwarded-For") != tc.upstream {
				t.Errorf("upstream got X-Forwarded-For %q (reached %v), want %q", got.Header.Get("X-Forwarded-For"), reached, tc.upstream)
			}
		})
	}
}

// A trusted proxy's X-Forwarded-For names the client even when its
// Connection header names X-Forwarded-For: a front that passes a client's
// Connection line on (none should: RFC 9110 7.6.1) let the client drop
// the list, and the proxy itself was taken for the client, which a sources
// rule covering it (clientConfig's internal) let through. The list is for
// the proxy to read, hop-by-hop or not; the upstream gets the proxy's own.
func TestConnectionCannotHideTheForwardedClient(t *testing.T) {
	f := newFixtureOf(t, clientConfig)
	for _, connection := range []string{"X-Forwarded-For", "keep-alive, x-forwarded-for"} {
		t.Run(connection, func(t *testing.T) {
			r := request("GET", "/internal/x", nil, "X-Forwarded-For", "203.0.113.9", "Connection", connection, "Accept", "application/json")
			r.RemoteAddr = "10.1.2.3:5555"
			if resp, _, reached := f.do(t, r); reached {
				t.Errorf("203.0.113.9 bypassed by the rule internal (sources: its proxy's range), status %d", resp.StatusCode)
			}
			r = request("GET", "/public/x", nil, "X-Forwarded-For", "203.0.113.9", "Connection", connection)
			r.RemoteAddr = "10.1.2.3:5555"
			if _, got, reached := f.do(t, r); !reached || got.Header.Get("X-Forwarded-For") != "203.0.113.9, 10.1.2.3" {
				t.Errorf("upstream got X-Forwarded-For %q (reached %v), want %q", got.Header.Get("X-Forwarded-For"), reached, "203.0.113.9, 10.1.2.3")
			}
		})
	}
}
