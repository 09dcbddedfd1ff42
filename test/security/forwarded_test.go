package security

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

const trustedPeer = "127.0.0.2" // server.trusted_proxies in the suite's config

// The internal rule bypasses /internal/ for clients in 10.0.0.0/8. Only a
// trusted proxy's X-Forwarded-For may say where a client is.
func TestForwardedHeaderTrustSource(t *testing.T) {
	for _, tc := range []struct {
		name    string
		from    string
		headers []string
		bypass  bool
	}{
		{"untrusted peer, X-Forwarded-For", "", []string{"X-Forwarded-For: 10.1.2.3"}, false},
		{"untrusted peer, X-Forwarded-For listing itself last", "", []string{"X-Forwarded-For: 10.1.2.3, 127.0.0.1"}, false},
		{"untrusted peer, two X-Forwarded-For lines", "", []string{"X-Forwarded-For: 10.1.2.3", "X-Forwarded-For: 10.4.5.6"}, false},
		{"untrusted peer, x_forwarded_for", "", []string{"x_forwarded_for: 10.1.2.3"}, false},
		{"untrusted peer, X-Real-IP", "", []string{"X-Real-IP: 10.1.2.3"}, false},
		{"untrusted peer, Forwarded", "", []string{"Forwarded: for=10.1.2.3"}, false},
		{"untrusted peer, True-Client-IP", "", []string{"True-Client-IP: 10.1.2.3"}, false},
		{"untrusted peer, CF-Connecting-IP", "", []string{"CF-Connecting-IP: 10.1.2.3"}, false},
		{"untrusted peer, X-Client-IP", "", []string{"X-Client-IP: 10.1.2.3"}, false},
		{"untrusted peer, X-Cluster-Client-IP", "", []string{"X-Cluster-Client-IP: 10.1.2.3"}, false},
		{"untrusted peer, X-Originating-IP", "", []string{"X-Originating-IP: 10.1.2.3"}, false},
		{"untrusted peer, IPv4-mapped IPv6", "", []string{"X-Forwarded-For: ::ffff:10.1.2.3"}, false},
		{"trusted peer forwarding an internal client", trustedPeer, []string{"X-Forwarded-For: 10.1.2.3"}, true},
		{"trusted peer forwarding an internal client as IPv4-mapped IPv6", trustedPeer, []string{"X-Forwarded-For: ::ffff:10.1.2.3"}, true},
		{"trusted peer forwarding an internal client with a port", trustedPeer, []string{"X-Forwarded-For: 10.1.2.3:5555"}, true},
		{"trusted peer forwarding an internal client bracketed with a port", trustedPeer, []string{"X-Forwarded-For: [::ffff:10.1.2.3]:443"}, true},
		{"trusted peer forwarding unknown", trustedPeer, []string{"X-Forwarded-For: unknown"}, false},
		{"trusted peer whose client claims to be internal", trustedPeer, []string{"X-Forwarded-For: 10.1.2.3, 203.0.113.9"}, false},
		{"trusted peer forwarding garbage", trustedPeer, []string{"X-Forwarded-For: not-an-ip"}, false},
		{"trusted peer forwarding garbage before an internal address", trustedPeer, []string{"X-Forwarded-For: 10.1.2.3, junk"}, false},
		{"trusted peer with X-Real-IP only", trustedPeer, []string{"X-Real-IP: 10.1.2.3"}, false},
		{"trusted peer with Forwarded only", trustedPeer, []string{"Forwarded: for=10.1.2.3"}, false},
		{"trusted peer forwarding nothing", trustedPeer, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, rq{target: "/internal/report", from: tc.from, headers: append(tc.headers, "Accept: application/json")})
			if !tc.bypass {
				refusedCleanly(t, r, "spoofed source")
				if r.Status != http.StatusUnauthorized {
					t.Errorf("status %d, want 401", r.Status)
				}
				return
			}
			if r.Status != 200 || len(r.Upstream) != 1 {
				t.Fatalf("want the bypass (trusted proxy's word); got %s", fmtReply(r))
			}
			if got := r.Upstream[0].Values("X-Forwarded-For"); len(got) != 1 || !strings.HasSuffix(got[0], ", "+tc.from) {
				t.Errorf("upstream X-Forwarded-For = %q, want the forwarded chain ending in the trusted peer", got)
			}
		})
	}
}

// Headers that rewrite the URL or the origin in some servers never change the
// decision, never reach the upstream, and never move a redirect elsewhere.
func TestForwardedHeaderTrustRewrite(t *testing.T) {
	bob := sessionFor(t, "bob")
	rewrites := []string{
		"X-Original-URL", "X-Rewrite-URL", "X-Forwarded-Uri", "X-Forwarded-Path", "X-Forwarded-Prefix",
		"X-Original-Uri", "X-Envoy-Original-Path",
	}
	for _, peer := range []string{"", trustedPeer} {
		peerName := map[string]string{"": "untrusted", trustedPeer: "trusted"}[peer]
		for _, name := range rewrites {
			t.Run(peerName+" peer/"+name+" pointing at admin does not follow", func(t *testing.T) {
				r := do(t, rq{target: "/public/x", from: peer, headers: []string{name + ": /admin", "Accept: application/json"}})
				if r.Status != 200 || len(r.Upstream) != 1 {
					t.Fatalf("want the bypass of /public/x; got %s", fmtReply(r))
				}
				s := r.Upstream[0]
				if s.Target != "/public/x" {
					t.Errorf("upstream target %q, want /public/x", s.Target)
				}
				if got := s.Values(name); len(got) > 0 && isRewriteHeader(name) {
					t.Errorf("upstream got %s = %q; a rewrite header must never reach it", name, got)
				}
			})
			t.Run(peerName+" peer/"+name+" pointing at the bypass prefix does not unlock admin", func(t *testing.T) {
				r := do(t, rq{target: "/admin/panel", from: peer, headers: []string{"Cookie: " + bob, name + ": /public/x", "Accept: application/json"}})
				refusedCleanly(t, r, "admin with a rewrite header")
				if r.Status != http.StatusForbidden {
					t.Errorf("status %d, want 403", r.Status)
				}
			})
		}
		t.Run(peerName+" peer/upstream gets the public origin whatever the client forwarded", func(t *testing.T) {
			r := do(t, rq{target: "/public/x", from: peer, headers: []string{"X-Forwarded-Host: evil.example", "X-Forwarded-Proto: https", "X-Forwarded-Port: 443", "X-Forwarded-Server: evil"}})
			if r.Status != 200 || len(r.Upstream) != 1 {
				t.Fatalf("got %s", fmtReply(r))
			}
			s := r.Upstream[0]
			if got := s.Values("X-Forwarded-Host"); len(got) != 1 || got[0] != suite.proxy {
				t.Errorf("upstream X-Forwarded-Host = %q, want [%q]", got, suite.proxy)
			}
			if got := s.Values("X-Forwarded-Proto"); len(got) != 1 || got[0] != "http" {
				t.Errorf("upstream X-Forwarded-Proto = %q, want [http]", got)
			}
			for _, n := range []string{"X-Forwarded-Port", "X-Forwarded-Server"} {
				if got := s.Values(n); len(got) > 0 {
					t.Errorf("upstream got the client's %s %q", n, got)
				}
			}
		})
	}
}

// traefik in front, trusting its client's forwarded headers (insecure, or
// trustedIPs naming a load balancer), forwards a client's
// X-Forwarded-Tls-Client-Cert and -Info with its own headers, as this head
// is what traefik v3.6.12 sent. Neither reaches the upstream: a traefik
// behind portcullis that believes its forwarded headers (docs/cvat.md)
// keeps them where its passTLSClientCert middleware finds no certificate,
// and the application would take the client's word for its certificate.
// Nor do the headers in which other proxies, load balancers and meshes
// tell the application the client's certificate (Envoy's XFCC, RFC 9440's
// Client-Cert, nginx's and ingress-nginx's, AWS ALB's, CloudFront's,
// Cloudflare's), from any peer: a proxy in front that does not set one
// passes a client's on.
func TestClientCertificateHeaders(t *testing.T) {
	bob := sessionFor(t, "bob")
	traefik := []string{
		"X-Forwarded-For: 203.0.113.9", "X-Forwarded-Host: cvat.example.com", "X-Forwarded-Port: 443",
		"X-Forwarded-Proto: https", "X-Forwarded-Server: traefik-7d9f",
		"X-Forwarded-Tls-Client-Cert: MIIBforged", "X-Forwarded-Tls-Client-Cert-Info: Subject%3D%22CN%3Dadmin%22",
		"X-Real-Ip: 203.0.113.9",
	}
	for _, peer := range []string{"", trustedPeer} {
		peerName := map[string]string{"": "untrusted peer", trustedPeer: "trusted peer"}[peer]
		for _, tc := range []struct{ name, target, cookie, auth string }{
			{"bypass", "/public/x", "", ""},
			{"credentials bypass", "/api/x", "", "Authorization: Bearer api-token"},
			{"signed in", "/app/page", bob, ""},
		} {
			for _, sent := range []struct {
				name    string
				headers []string
				names   []string
			}{
				{"traefik", traefik, []string{"X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info", "X-Forwarded-Port", "X-Forwarded-Server", "X-Real-Ip"}},
				{"traefik with underscores", []string{"X_Forwarded_Tls_Client_Cert: MIIBforged", "x_forwarded_tls_client_cert_info: Subject%3D%22CN%3Dadmin%22"},
					[]string{"X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info"}},
				{"Envoy XFCC", []string{`X-Forwarded-Client-Cert: Hash=00;Subject="CN=admin";URI=spiffe://cluster.local/ns/a/sa/admin`}, []string{"X-Forwarded-Client-Cert"}},
				{"RFC 9440", []string{"Client-Cert: :MIIBforged:", "Client-Cert-Chain: :MIIBca:"}, []string{"Client-Cert", "Client-Cert-Chain"}},
				{"nginx", []string{"X-SSL-Client-Cert: MIIBforged", "X-SSL-Client-Verify: SUCCESS", "X-SSL-Client-S-DN: CN=admin", "X-Client-Cert: MIIBforged", "X-Client-Verify: SUCCESS"},
					[]string{"X-Ssl-Client-Cert", "X-Ssl-Client-Verify", "X-Ssl-Client-S-Dn", "X-Client-Cert", "X-Client-Verify"}},
				{"ingress-nginx and Tomcat's SSLValve", []string{"ssl-client-cert: MIIBforged", "ssl-client-verify: SUCCESS", "ssl-client-subject-dn: CN=admin", "ssl_client_cert: MIIBforged"},
					[]string{"Ssl-Client-Cert", "Ssl-Client-Verify", "Ssl-Client-Subject-Dn"}},
				{"AWS ALB", []string{"X-Amzn-Mtls-Clientcert-Subject: CN=admin", "X-Amzn-Mtls-Clientcert-Leaf: MIIBforged", "X-Amzn-Mtls-Clientcert: MIIBforged"},
					[]string{"X-Amzn-Mtls-Clientcert-Subject", "X-Amzn-Mtls-Clientcert-Leaf", "X-Amzn-Mtls-Clientcert"}},
				{"CloudFront", []string{"CloudFront-Viewer-Cert-Subject: CN=admin", "CloudFront-Viewer-Cert-Present: 1"}, []string{"Cloudfront-Viewer-Cert-Subject", "Cloudfront-Viewer-Cert-Present"}},
				{"Cloudflare", []string{"cf-cert-verified: true", "cf-cert-subject-dn: CN=admin"}, []string{"Cf-Cert-Verified", "Cf-Cert-Subject-Dn"}},
			} {
				t.Run(peerName+"/"+tc.name+"/"+sent.name, func(t *testing.T) {
					hs := append([]string{"Accept: application/json"}, sent.headers...)
					if tc.cookie != "" {
						hs = append(hs, "Cookie: "+tc.cookie)
					}
					if tc.auth != "" {
						hs = append(hs, tc.auth)
					}
					r := do(t, rq{target: tc.target, from: peer, headers: hs})
					if r.Status != 200 || len(r.Upstream) != 1 {
						t.Fatalf("want it forwarded; got %s", fmtReply(r))
					}
					for _, n := range sent.names {
						if got := r.Upstream[0].Values(n); len(got) > 0 {
							t.Errorf("upstream got the client's %s %q", n, got)
						}
					}
					for _, f := range r.Upstream[0].Fields {
						if strings.Contains(strings.ToLower(f.Name), "cert") {
							t.Errorf("upstream got %s: %q", f.Name, f.Value)
						}
					}
				})
			}
		}
	}
}

// The upstream's Host is public_url's, whatever host the client names: a
// host-routing upstream would otherwise send the request to another
// application, past the rules (SPEC: upstream.preserve_host).
func TestUpstreamHostIsPublicURLs(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    rq
	}{
		{"Host header", rq{target: "/public/x", headers: []string{"Host: grafana.internal"}}},
		{"Host header with credentials", rq{target: "/api/x", headers: []string{"Host: grafana.internal", "Authorization: Bearer x"}}},
		{"absolute-form target", rq{target: "http://grafana.internal/public/x"}},
		{"absolute-form target with a port", rq{target: "http://grafana.internal:8080/public/x", headers: []string{"Host: grafana.internal:8080"}}},
		{"trusted peer's X-Forwarded-Host", rq{target: "/public/x", from: trustedPeer, headers: []string{"Host: grafana.internal", "X-Forwarded-Host: grafana.internal"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.r)
			if r.Status != 200 || len(r.Upstream) != 1 {
				t.Fatalf("want it forwarded; got %s", fmtReply(r))
			}
			if got := r.Upstream[0].Values("Host"); len(got) != 1 || got[0] != suite.proxy {
				t.Errorf("upstream Host %q, want [%q]", got, suite.proxy)
			}
		})
	}
}

func isRewriteHeader(name string) bool {
	// The proxy strips these: servers (IIS, Symfony, nginx auth setups,
	// Spring) route by them.
	switch name {
	case "X-Original-URL", "X-Rewrite-URL", "X-Forwarded-Uri", "X-Forwarded-Path", "X-Forwarded-Prefix":
		return true
	}
	return false
}

// originHeaders are the ways a client can claim another origin.
var originHeaders = [][]string{
	{"X-Forwarded-Host: evil.example"},
	{"X-Forwarded-Host: evil.example", "X-Forwarded-Proto: https"},
	{"X-Forwarded-Prefix: //evil.example"},
	{"X-Forwarded-Proto: javascript"},
	{"Forwarded: host=evil.example;proto=https"},
	{"X-Original-URL: //evil.example/"},
	{"X-Forwarded-Server: evil.example", "X-Forwarded-Port: 1"},
	{"Host: evil.example"},
	{"Host: evil.example", "X-Forwarded-Host: evil.example"},
}

// Every Location the proxy sends is relative to, or on, public_url's origin,
// whatever origin the request claims.
func TestForwardedHeaderTrustRedirects(t *testing.T) {
	for _, peer := range []string{"", trustedPeer} {
		for _, hs := range originHeaders {
			name := strings.Join(hs, " + ")
			if peer != "" {
				name = "trusted peer/" + name
			}
			t.Run(name+"/login challenge", func(t *testing.T) {
				r := do(t, rq{target: "/app/page", from: peer, headers: append([]string{"Accept: text/html"}, hs...)})
				if r.Status != http.StatusFound {
					t.Fatalf("want the login redirect; got %s", fmtReply(r))
				}
				checkLocation(t, r.Header.Get("Location"))
			})
			t.Run(name+"/login start sends the IdP the public callback", func(t *testing.T) {
				r := do(t, rq{target: "/.portcullis/login/alpha?rd=/x", from: peer, headers: hs})
				if r.Status != http.StatusFound {
					t.Fatalf("want the IdP redirect; got %s", fmtReply(r))
				}
				auth, err := url.Parse(r.Header.Get("Location"))
				if err != nil || !strings.HasPrefix(auth.String(), suite.alpha.issuer+"/authorize?") {
					t.Fatalf("Location %q is not alpha's authorize endpoint", r.Header.Get("Location"))
				}
				if got, want := auth.Query().Get("redirect_uri"), suite.public+"/.portcullis/oidc/alpha/callback"; got != want {
					t.Errorf("redirect_uri %q, want %q", got, want)
				}
			})
			t.Run(name+"/login through /login", func(t *testing.T) {
				r := do(t, rq{target: "/.portcullis/login?rd=/x", from: peer, headers: hs})
				checkLocation(t, r.Header.Get("Location"))
			})
			t.Run(name+"/logout", func(t *testing.T) {
				r := do(t, rq{target: "/.portcullis/logout?rd=/bye", from: peer, headers: hs})
				if r.Status != http.StatusFound {
					t.Fatalf("want a redirect; got %s", fmtReply(r))
				}
				checkLocation(t, r.Header.Get("Location"))
			})
			t.Run(name+"/after login", func(t *testing.T) {
				b := newBrowser(t)
				cb := b.authorize(b.start("alpha", "/landing"), "bob", "")
				r := do(t, rq{target: cb.RequestURI(), from: peer, headers: append(hs, "Cookie: "+b.cookieHeader())})
				if r.Status != http.StatusFound {
					t.Fatalf("want the post-login redirect; got %s", fmtReply(r))
				}
				loc := r.Header.Get("Location")
				checkLocation(t, loc)
				if loc != suite.public+"/landing" {
					t.Errorf("Location %q, want %q", loc, suite.public+"/landing")
				}
			})
		}
	}
}

// checkLocation asserts loc is on public_url's origin (or a path on it).
func checkLocation(t *testing.T, loc string) {
	t.Helper()
	if loc == "" {
		t.Fatal("no Location")
	}
	if strings.ContainsAny(loc, "\r\n\t\\") {
		t.Errorf("Location %q has a control character or backslash", loc)
	}
	if strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "//") {
		return
	}
	u, err := url.Parse(loc)
	if err != nil || u.Scheme+"://"+u.Host != suite.public || u.User != nil {
		t.Errorf("Location %q leaves %s", loc, suite.public)
	}
}
