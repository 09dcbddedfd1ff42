package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// staleConnections is how a server that closes idle connections after a few
// seconds (an IdP or an application: Node's default keep-alive timeout is
// 5 s, Apache httpd's and uvicorn's too, gunicorn's 2 s) looks to the proxy
// at the worst moment: every connection carries one request and its answer,
// and the next request sent on it leaves just as the server's close
// arrives, so it is written and never answered.
type staleConnections struct {
	dialer net.Dialer
	mu     sync.Mutex
	lost   []string // the request line of each request sent on a closed connection
}

func (s *staleConnections) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := s.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &staleConnection{Conn: c, s: s}, nil
}

func (s *staleConnections) lostRequests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lost...)
}

// staleConnection is one connection of staleConnections. The transport
// reads and writes it from two goroutines.
type staleConnection struct {
	net.Conn
	s        *staleConnections
	answered atomic.Bool // an answer came back: the connection is kept, idle
	closed   atomic.Bool // the IdP closed it
}

func (c *staleConnection) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.closed.Load() {
		return 0, io.EOF // the IdP's FIN
	}
	if n > 0 {
		c.answered.Store(true)
	}
	return n, err
}

func (c *staleConnection) Write(p []byte) (int, error) {
	if c.answered.Load() && c.closed.CompareAndSwap(false, true) {
		line, _, _ := strings.Cut(string(p), "\r\n")
		c.s.mu.Lock()
		c.s.lost = append(c.s.lost, line)
		c.s.mu.Unlock()
		c.Conn.Close() // wakes the transport's read of the answer
	}
	if c.closed.Load() {
		return len(p), nil // into the socket's buffer, before the close was seen
	}
	return c.Conn.Write(p)
}

// An IdP that closes a kept-alive connection as the proxy sends its code to
// the token endpoint on it does not fail the login. Go's transport sends a
// GET again on a new connection when that happens, but not a POST, which
// it cannot know is safe to repeat: the login failed with token_exchange
// ("EOF", or "connection reset by peer") when a user's callback came about
// as long after the proxy's last call to the IdP as the IdP keeps
// connections open. Sending the code again is safe: the IdP closed the
// connection without reading the request, and an IdP that had redeemed the
// code refuses it the second time, which fails the login as before.
// serveWithOIDC serves a proxy on a loopback port, in front of the echo
// upstream, with one OIDC IdP, company: a real oidc-provider, called
// through via. It returns the proxy's base URL once it is ready.
func serveWithOIDC(t *testing.T, via *http.Transport) (string, *Handler, *oidcserver.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	up := httptest.NewServer(echo.New())
	t.Cleanup(up.Close)
	op := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{base + "/.portcullis/oidc/company/callback"}})
	y := strings.NewReplacer("PUBLIC_URL", base, "UPSTREAM_URL", up.URL, "ISSUER", op.Issuer).Replace(`
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [` + testKey + `]
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups]
`)
	h := newTestHandlerVia(t, y, via)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	waitFor(t, "the proxy to be ready", func() bool { return len(h.Ready()) == 0 })
	return base, h, op
}

func TestIdPClosingAKeptConnectionDoesNotFailTheLogin(t *testing.T) {
	stale := &staleConnections{}
	base, _, _ := serveWithOIDC(t, &http.Transport{DialContext: stale.DialContext})

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	resp := oidcserver.Login(t, browser, base+"/.portcullis/login/company?rd=/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/tasks" {
		t.Fatalf("login ended with %d at %s:\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	var posts, gets int
	for _, line := range stale.lostRequests() {
		if strings.HasPrefix(line, "POST ") {
			posts++
		}
		if strings.HasPrefix(line, "GET ") {
			gets++
		}
	}
	if posts == 0 {
		t.Fatalf("no POST to the IdP went out on a closed connection (lost: %q): the test tested nothing", stale.lostRequests())
	}
	// The GETs (here the keys; discovery, userinfo and a SAML IdP's
	// metadata go through the same client) Go sends again by itself.
	if gets == 0 {
		t.Errorf("no GET to the IdP went out on a closed connection (lost: %q): Go's resending of GETs is untested", stale.lostRequests())
	}
}
