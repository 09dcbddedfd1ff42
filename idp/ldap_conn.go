package idp

import (
	"context"
	"crypto/fips140"
	"crypto/tls"
	"crypto/x509"
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
		tc, verifyErr := startTLSConfig(p.tls)
		if err := c.StartTLS(tc); err != nil {
			c.Close()
			if *verifyErr != nil {
				err = fmt.Errorf("%w: %w", err, *verifyErr)
			}
			return nil, fmt.Errorf("starttls with %s: %w", host, err)
		}
	}
	// From here each operation has its own timeout (SetTimeout). The
	// deadline was set on raw, which StartTLS wrapped: clearing it on raw
	// clears it for the TLS connection too.
	_ = raw.SetDeadline(time.Time{})
	return c, nil
}

// startTLSConfig is base with the certificate checked in VerifyConnection
// (as crypto/tls's documentation shows for custom checks), and where that
// check's error will be: go-ldap's StartTLS keeps a failed handshake's
// error as text only, and certificateSetupError needs the x509 error to
// tell an unknown CA from a wrong host name.
func startTLSConfig(base *tls.Config) (*tls.Config, *error) {
	failed := new(error)
	// Without a ServerName crypto/tls refuses to connect, but x509 given no
	// DNSName checks no host at all: leave that refusal to crypto/tls. In
	// FIPS 140 mode crypto/tls also refuses chains with keys FIPS does not
	// allow, which x509.Verify does not: leave those to it too, at the price
	// of the hint.
	if base.InsecureSkipVerify || base.ServerName == "" || fips140.Enabled() {
		return base, failed
	}
	tc := base.Clone()
	tc.InsecureSkipVerify = true
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			*failed = errors.New("the directory sent no certificate")
			return *failed
		}
		opts := x509.VerifyOptions{DNSName: base.ServerName, Roots: base.RootCAs, Intermediates: x509.NewCertPool()}
		for _, cert := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(cert)
		}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			*failed = &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
			return *failed
		}
		return nil
	}
	return tc, failed
}

// certificateSetupError is err, a failed connection's, as a *SetupError
// when the directory's certificate is what the TLS handshake refused: an
// unknown CA, another host's certificate, an expired one. Waiting does not
// mend those, and "try again in a moment" sent users away to come back to
// the same refusal. Anything else is returned as it is.
func (c *Config) certificateSetupError(err error) error {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		hint     string
	)
	switch {
	case errors.As(err, &unknown):
		issuer := ""
		if unknown.Cert != nil {
			issuer = fmt.Sprintf(" (issuer %q)", unknown.Cert.Issuer.String())
		}
		hint = fmt.Sprintf("the directory's certificate is signed by a CA this system does not trust%s: "+
			"set ca_file to the PEM file of that CA (FreeIPA: /etc/ipa/ca.crt; Active Directory: the enterprise root CA)", issuer)
		if c.CAFile != "" {
			hint = fmt.Sprintf("ca_file %q does not hold the CA that signed the directory's certificate%s: give that CA's PEM file", c.CAFile, issuer)
		}
	case errors.As(err, &hostname):
		hint = fmt.Sprintf("the directory's certificate is not for the url's host: %v; put a name the certificate holds in url", &hostname)
	case errors.As(err, &invalid):
		hint = fmt.Sprintf("the directory's certificate is refused: %v; renew it at the directory", &invalid)
	default:
		return err
	}
	return setupError("directory_certificate", hint, err)
}

// tlsConfig is the TLS configuration for c's url, or nil when the
// connection stays plain.
func (c *Config) tlsConfig(u *url.URL) (*tls.Config, error) {
	if u.Scheme != "ldaps" && !c.StartTLS {
		return nil, nil
	}
	tc := &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pool, _, err := LoadCAFile(c.CAFile)
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
