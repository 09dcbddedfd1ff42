// Package e2e runs portcullis end to end against real servers on loopback:
// the npm oidc-provider, crewjam/saml's samlidp, and an echo upstream.
package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy"
	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// sessionKey is a fixed test key (32 bytes, base64).
const sessionKey = "dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE="

// stack is portcullis in front of an echo upstream, listening on loopback.
type stack struct {
	URL      string // the proxy's public URL
	Upstream *echo.Server
	Handler  *proxy.Handler
	all      []*proxy.Handler // every replica, when there are several
	ln       net.Listener
	srv      *http.Server // serving ln
	upURL    string
}

// listen reserves the proxy's address first: the IdP must know the callback
// URL before the proxy's configuration can name the IdP.
func listen(t *testing.T) *stack {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	up := echo.New()
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)
	return &stack{URL: "http://" + ln.Addr().String(), Upstream: up, ln: ln, upURL: upSrv.URL}
}

// listenTLS is listen for an https public_url, served with a self-signed
// certificate for 127.0.0.1: the proxy's cookies are then Secure and
// __Host-, and SAML's login states SameSite=None, as in production.
func listenTLS(t *testing.T) *stack {
	t.Helper()
	s := listen(t)
	pair := testcert.New(t, "127.0.0.1", time.Now().Add(24*time.Hour))
	cert, err := tls.X509KeyPair(pair.Cert, pair.Key)
	if err != nil {
		t.Fatal(err)
	}
	s.ln = tls.NewListener(s.ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	s.URL = "https://" + s.ln.Addr().String()
	return s
}

// start runs portcullis with configYAML, in which PUBLIC_URL, UPSTREAM_URL and
// SESSION_KEY are replaced, and waits until every IdP is ready.
func (s *stack) start(t *testing.T, configYAML string) {
	t.Helper()
	s.serve(t, configYAML, slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s.waitReady(t)
}

// serve runs portcullis with configYAML (placeholders as for start), logging
// to log, without waiting for its IdPs.
func (s *stack) serve(t *testing.T, configYAML string, log slog.Handler) {
	t.Helper()
	configYAML = strings.NewReplacer("PUBLIC_URL", s.URL, "UPSTREAM_URL", s.upURL, "SESSION_KEY", sessionKey).Replace(configYAML)
	cfg, err := proxy.ParseConfig([]byte(configYAML), os.Getenv)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h, err := proxy.New(ctx, cfg, slog.New(log))
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	s.Handler = h
	s.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(s.ln)
	t.Cleanup(func() { s.srv.Close() })
}

// handOver serves the stack's address with srv from now on, in place of
// the proxy alone (a proxy in front of it, say).
func (s *stack) handOver(t *testing.T, srv *http.Server) {
	t.Helper()
	s.srv.Close() // closes s.ln too
	ln, err := net.Listen("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s.ln, s.srv = ln, srv
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// waitReady waits until every IdP of the running proxy, and of every
// replica, is ready.
func (s *stack) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	// Every replica (s.all), not only the first: a request the load
	// balancer sends to one still discovering its IdP gets 503.
	for _, h := range append([]*proxy.Handler{s.Handler}, s.all...) {
		for len(h.Ready()) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("proxy not ready: %v", h.Ready())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// browser is an http.Client that behaves like a browser navigating: it keeps
// cookies, follows redirects and asks for HTML.
func browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Transport: acceptHTML{http.DefaultTransport}, Timeout: 30 * time.Second}
}

type acceptHTML struct{ next http.RoundTripper }

func (a acceptHTML) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Accept") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Accept", "text/html,application/xhtml+xml")
	}
	return a.next.RoundTrip(r)
}

// beforeCallback is c stopping at the redirect to a login's callback: the
// IdP's answer is in the last response's Location, not yet delivered.
func beforeCallback(c *http.Client) *http.Client {
	cc := *c
	cc.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if strings.HasSuffix(r.URL.Path, "/callback") {
			return http.ErrUseLastResponse
		}
		return nil
	}
	return &cc
}

// noRedirect makes c stop at the first redirect.
func noRedirect(c *http.Client) *http.Client {
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cc
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
