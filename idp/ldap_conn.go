package idp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// ldapTiming bounds the work of an LDAP provider; tests shorten it.
type ldapTiming struct {
	// dial bounds connecting, including the TLS handshake and StartTLS.
	dial time.Duration
	// op bounds one LDAP operation (bind, search).
	op time.Duration
	// check is how often the service account's bind is tried for Ready.
	check time.Duration
	// maxOpen bounds the connections open at once; a login waits up to op
	// for one to be free.
	maxOpen int
	// maxIdle bounds the connections kept open between logins.
	maxIdle int
}

var defaultLDAPTiming = ldapTiming{dial: 5 * time.Second, op: 5 * time.Second, check: 30 * time.Second, maxOpen: 16, maxIdle: 4}

// errPoolBusy means every connection was in use for longer than an
// operation may take.
var errPoolBusy = errors.New("all connections to the directory are busy")

// ldapPool keeps a few open connections to the directory. A connection
// comes out of it bound as nobody in particular: whoever takes one binds
// first (the service account, or a user).
type ldapPool struct {
	url    *url.URL
	tls    *tls.Config // nil for plain ldap:// without StartTLS
	start  bool        // StartTLS after connecting
	timing ldapTiming

	slots  chan struct{} // one per open-or-opening connection
	mu     sync.Mutex
	idle   []*ldap.Conn
	closed bool // the provider stopped: connections handed back are closed
}

func newLDAPPool(u *url.URL, tlsConfig *tls.Config, startTLS bool, timing ldapTiming) *ldapPool {
	return &ldapPool{url: u, tls: tlsConfig, start: startTLS, timing: timing, slots: make(chan struct{}, timing.maxOpen)}
}

// get returns an idle connection (reused true) or, with fresh or none idle,
// a new one. The caller must hand it back with put.
func (p *ldapPool) get(ctx context.Context, fresh bool) (c *ldap.Conn, reused bool, err error) {
	wait := time.NewTimer(p.timing.op)
	defer wait.Stop()
	select {
	case p.slots <- struct{}{}:
	case <-wait.C:
		return nil, false, errPoolBusy
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	p.mu.Lock()
	for !fresh && len(p.idle) > 0 {
		c = p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		// The reader notices a closed socket (the directory went away or
		// timed the connection out) and marks the connection closing.
		if !c.IsClosing() {
			p.mu.Unlock()
			return c, true, nil
		}
		c.Close()
	}
	p.mu.Unlock()
	c, err = p.dial()
	if err != nil {
		<-p.slots
		return nil, false, err
	}
	return c, false, nil
}

// put hands c back: kept for the next login when healthy, else closed.
func (p *ldapPool) put(c *ldap.Conn, healthy bool) {
	defer func() { <-p.slots }()
	if !healthy || c.IsClosing() {
		c.Close()
		return
	}
	p.mu.Lock()
	if !p.closed && len(p.idle) < p.timing.maxIdle {
		p.idle = append(p.idle, c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// discard closes c, taken with get, and frees its slot.
func (p *ldapPool) discard(c *ldap.Conn) { p.put(c, false) }

// close closes the idle connections when the provider stops, and those
// that logins still running on it hand back later: a reload that replaced
// the provider leaves nobody to take them again, and each would stay open at
// the directory (OpenLDAP keeps an idle connection forever) with go-ldap's
// goroutines behind it.
func (p *ldapPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

// dial connects, with TLS (ldaps://) or StartTLS when configured. The whole
// setup, handshake and StartTLS included, has one deadline: go-ldap waits
// for the StartTLS answer without one.
func (p *ldapPool) dial() (*ldap.Conn, error) {
	host := p.url.Host
	if p.url.Port() == "" {
		port := ldap.DefaultLdapPort
		if p.url.Scheme == "ldaps" {
			port = ldap.DefaultLdapsPort
		}
		host = net.JoinHostPort(p.url.Hostname(), port)
	}
	deadline := time.Now().Add(p.timing.dial)
	raw, err := (&net.Dialer{Deadline: deadline}).Dial("tcp", host)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", host, err)
	}
	_ = raw.SetDeadline(deadline)
	isTLS := p.url.Scheme == "ldaps"
	if isTLS {
		tc := tls.Client(raw, p.tls)
		if err := tc.Handshake(); err != nil {
			raw.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", host, err)
		}
		raw = tc
	}
	c := ldap.NewConn(raw, isTLS)
	c.Start()
	c.SetTimeout(p.timing.op)
	if p.start {
		if err := c.StartTLS(p.tls); err != nil {
			c.Close()
			return nil, fmt.Errorf("starttls with %s: %w", host, err)
		}
	}
	// From here each operation has its own timeout (SetTimeout). The
	// deadline was set on raw, which StartTLS wrapped: clearing it on raw
	// clears it for the TLS connection too.
	_ = raw.SetDeadline(time.Time{})
	return c, nil
}

// tlsConfig is the TLS configuration for c's url, or nil when the
// connection stays plain.
func (c *Config) tlsConfig(u *url.URL) (*tls.Config, error) {
	if u.Scheme != "ldaps" && !c.StartTLS {
		return nil, nil
	}
	tc := &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pool, err := loadCAFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		tc.RootCAs = pool
	}
	// validateLDAP allows this for loopback hosts only (development).
	tc.InsecureSkipVerify = c.InsecureSkipVerify
	return tc, nil
}

// isUnavailable tells the errors that mean the directory could not be
// reached or did not answer from those it answered with.
func isUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var le *ldap.Error
	if errors.As(err, &le) {
		return le.ResultCode == ldap.ErrorNetwork || le.ResultCode == ldap.LDAPResultServerDown ||
			le.ResultCode == ldap.LDAPResultUnavailable || le.ResultCode == ldap.LDAPResultBusy ||
			le.ResultCode == ldap.LDAPResultTimeout || le.ResultCode == ldap.LDAPResultConnectError
	}
	return true // dial errors, errPoolBusy, TLS failures
}
