package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
)

// UpstreamTimeouts is the `upstream.timeouts:` block: how long the proxy
// waits on the application before it answers 502 or 504 itself.
type UpstreamTimeouts struct {
	// Dial bounds opening a connection to the upstream (0: 10s).
	Dial time.Duration `yaml:"dial"`
	// ResponseHeader bounds the wait for the response head once the request
	// is sent, body included (0: no limit, for long-polling and slow reports).
	ResponseHeader time.Duration `yaml:"response_header"`
	// Idle is how long an unused upstream connection is kept for reuse (0: 90s).
	Idle time.Duration `yaml:"idle"`
}

// Defaults of upstream.timeouts.
const (
	defaultDialTimeout = 10 * time.Second
	defaultIdleTimeout = 90 * time.Second
)

func (t UpstreamTimeouts) validate(p *problems) {
	for _, f := range []struct {
		key string
		d   time.Duration
	}{{"dial", t.Dial}, {"response_header", t.ResponseHeader}, {"idle", t.Idle}} {
		if f.d < 0 {
			p.add("upstream.timeouts."+f.key, "must not be negative, got %s", f.d)
		}
	}
}

func (t UpstreamTimeouts) withDefaults() UpstreamTimeouts {
	if t.Dial == 0 {
		t.Dial = defaultDialTimeout
	}
	if t.Idle == 0 {
		t.Idle = defaultIdleTimeout
	}
	return t
}

// UpstreamTLS is the `upstream.tls:` block, for an https upstream.url.
type UpstreamTLS struct {
	// CAFile is a PEM bundle of the CAs that sign the application's
	// certificate (a private CA, a self-signed certificate), trusted in
	// place of the system's; empty: the system's.
	CAFile string `yaml:"ca_file"`
}

func (c UpstreamTLS) validate(p *problems, up *url.URL) {
	if c.CAFile == "" {
		return
	}
	if up != nil && up.Scheme != "https" {
		p.add("upstream.tls.ca_file", "only for an https upstream.url: the connections to %s are plain http", up.Redacted())
		return
	}
	if _, _, err := loadUpstreamCAs(c.CAFile); err != nil {
		p.add("upstream.tls.ca_file", "%v", err)
	}
}

// loadUpstreamCAs reads upstream.tls.ca_file; nil for none.
func loadUpstreamCAs(file string) (*x509.CertPool, []byte, error) {
	if file == "" {
		return nil, nil, nil
	}
	return idp.LoadCAFile(file)
}

// upstreamTransport is prev's upstream transport when upstream.timeouts and
// the CAs of upstream.tls.ca_file (read again at every reload, so that a
// renewed CA is trusted) did not change, else a new one. A reload keeps the
// connections to the upstream: with a transport of its own, each reload
// under load opened one more connection for every request in flight, and
// the old ones stayed idle for upstream.timeouts.idle (10 reloads with 20
// requests at a time left 220 connections open at the upstream).
func upstreamTransport(c UpstreamConfig, prev *Handler) (*http.Transport, []byte, error) {
	pool, pem, err := loadUpstreamCAs(c.TLS.CAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream.tls.ca_file: %w", err)
	}
	if prev != nil && prev.transport != nil && prev.cfg.Upstream.Timeouts.withDefaults() == c.Timeouts.withDefaults() && bytes.Equal(prev.upstreamCAs, pem) {
		return prev.transport, pem, nil
	}
	t := newTransport(c.Timeouts)
	if pool != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	return t, pem, nil
}

// releaseTransport closes the idle upstream connections of h's transport
// unless keep (the Handler replacing h, or nil at shutdown) took it over.
// Requests still running on h hand theirs back to it and they close after
// upstream.timeouts.idle.
func (h *Handler) releaseTransport(keep *Handler) {
	if h.transport != nil && (keep == nil || keep.transport != h.transport) {
		h.transport.CloseIdleConnections()
	}
}

// newTransport is the one upstream transport, with an idle pool large enough
// that a busy proxy reuses connections instead of opening new ones.
func newTransport(t UpstreamTimeouts) *http.Transport {
	t = t.withDefaults()
	return &http.Transport{
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   t.Dial,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       t.Idle,
		ResponseHeaderTimeout: t.ResponseHeader,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass bodies through as the upstream sent them
	}
}
