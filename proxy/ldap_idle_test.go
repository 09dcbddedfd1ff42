package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
)

// directoryRelay passes the proxy's connections on to slapd, to see and to
// time how they end: open counts those neither side closed yet, and
// closeIdle makes the directory's idle close come at the worst moment.
type directoryRelay struct {
	url    string // ldap://, where the proxy connects
	target string
	mu     sync.Mutex
	conns  []*relayedConn
	open   atomic.Int64
	lost   atomic.Int64 // requests dropped by closeIdle
	gate   atomic.Pointer[relayGate]
}

// relayGate holds the first request that arrives after holdNext until
// release is closed.
type relayGate struct{ arrived, release chan struct{} }

// holdNext holds the next request the proxy sends until release is
// called; arrived is closed when it is held.
func (r *directoryRelay) holdNext() (arrived <-chan struct{}, release func()) {
	g := &relayGate{arrived: make(chan struct{}), release: make(chan struct{})}
	r.gate.Store(g)
	return g.arrived, func() { close(g.release) }
}

type relayedConn struct {
	client, server net.Conn
	closing        atomic.Bool // the directory closed it; its close is on the way
	done           sync.Once
	relay          *directoryRelay
}

func newDirectoryRelay(t *testing.T, target string) *directoryRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	r := &directoryRelay{url: "ldap://" + ln.Addr().String(), target: strings.TrimPrefix(target, "ldap://")}
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", r.target)
			if err != nil {
				client.Close()
				continue
			}
			c := &relayedConn{client: client, server: server, relay: r}
			r.open.Add(1)
			r.mu.Lock()
			r.conns = append(r.conns, c)
			r.mu.Unlock()
			go func() { io.Copy(client, server); c.close() }() // slapd closed it: so does the proxy's side
			go c.toDirectory()
		}
	}()
	return r
}

// toDirectory passes the proxy's requests on, but for the first one after
// closeIdle, which arrives as the directory's close does: it is never read.
func (c *relayedConn) toDirectory() {
	defer c.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.client.Read(buf)
		if n > 0 && c.closing.Load() {
			c.relay.lost.Add(1)
			return
		}
		if n > 0 {
			if g := c.relay.gate.Swap(nil); g != nil {
				close(g.arrived)
				<-g.release
			}
			if _, err := c.server.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (c *relayedConn) close() {
	c.done.Do(func() {
		c.client.Close()
		c.server.Close()
		c.relay.open.Add(-1)
	})
}

// closeIdle is the directory closing every connection open now, each just
// as the proxy sends its next request on it.
func (r *directoryRelay) closeIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.closing.Store(true)
	}
	r.conns = nil
}

// allClosed waits until the directory closed every connection.
func (r *directoryRelay) allClosed(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); r.open.Load() > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the directory kept %d connections open", r.open.Load())
		}
	}
}

// ldapIdleProxy is a proxy with the LDAP IdP corp-ldap, reached through
// relay, and a basic_auth rule for it at /legacy/.
func ldapIdleProxy(t *testing.T, dir *ldapserver.Server) (*Handler, *directoryRelay) {
	t.Helper()
	relay := newDirectoryRelay(t, dir.URL)
	up := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(up.Close)
	return newTestHandler(t, ldapProxyConfig(relay.url, up.URL)), relay
}

func formLogin(t *testing.T, h *Handler, username, password string) {
	t.Helper()
	if rec := postLDAPForm(t, h, openLDAPForm(t, h), username, password); rec.Code != http.StatusFound {
		t.Fatalf("form login as %s: %d %s", username, rec.Code, rec.Body)
	}
}

func basicLogin(t *testing.T, h *Handler, username, password string) {
	t.Helper()
	r := httptest.NewRequest("GET", "/legacy/api", nil)
	r.SetBasicAuth(username, password)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		t.Fatalf("Basic auth as %s: %d %s", username, rec.Code, rec.Body)
	}
}

// A directory that closes idle connections (slapd's olcIdleTimeout, 1 s
// here; Active Directory's MaxConnIdleTime is 15 minutes) has closed the
// proxy's kept ones when the next login comes: the form login and a Basic
// auth request go through, on new connections.
func TestLDAPIdleTimeoutClosingKeptConnectionsFailsNoLogin(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{IdleTimeout: time.Second})
	h, relay := ldapIdleProxy(t, dir)
	formLogin(t, h, ldapserver.Alice, ldapserver.AlicePassword)
	relay.allClosed(t)
	formLogin(t, h, ldapserver.Alice, ldapserver.AlicePassword)
	relay.allClosed(t)
	basicLogin(t, h, ldapserver.Bob, ldapserver.BobPassword)
}

// When the directory's close of its idle connections crosses the proxy's
// next request on one, the login goes through: a kept connection that fails
// its first bind is replaced once, by a new connection (serviceConn). The
// proxy keeps two here (two logins at once), which the directory closes
// together, as slapd's idle sweep or a restart does: the retry that took
// the other kept one failed the login with 503.
func TestLDAPClosingAKeptConnectionAsALoginUsesItFailsNoLogin(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	h, relay := ldapIdleProxy(t, dir)
	formLogin(t, h, ldapserver.Alice, ldapserver.AlicePassword)
	form := openLDAPForm(t, h)
	arrived, release := relay.holdNext()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if rec := postLDAPForm(t, h, form, ldapserver.Alice, ldapserver.AlicePassword); rec.Code != http.StatusFound {
			t.Errorf("form login as alice: %d %s", rec.Code, rec.Body)
		}
	}()
	<-arrived // that login holds a connection: this one needs another
	formLogin(t, h, ldapserver.Bob, ldapserver.BobPassword)
	release()
	<-done
	if n := relay.open.Load(); n < 2 {
		t.Fatalf("the proxy keeps %d connections to the directory, want 2 or more", n)
	}
	relay.closeIdle()
	formLogin(t, h, ldapserver.Alice, ldapserver.AlicePassword)
	relay.closeIdle()
	basicLogin(t, h, ldapserver.Bob, ldapserver.BobPassword)
	if n := relay.lost.Load(); n < 2 {
		t.Fatalf("%d requests went out on a closed connection, want 2: the test tested nothing", n)
	}
}
