package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// defaultCertPoll is how often the files server.tls names are checked for a
// renewal.
const defaultCertPoll = 30 * time.Second

// certificate is the pair server.tls names, given to every TLS handshake
// and re-read when the files change, so that a renewal (cert-manager
// rewriting a Secret volume, certbot) needs no restart. A pair that does not
// load never replaces the one being served.
type certificate struct {
	cur atomic.Pointer[tls.Certificate]
	log *slog.Logger

	mu    sync.Mutex // one check at a time; guards what follows
	files TLSConfig
	// tried identifies the content last tried, loaded or refused: the same
	// content is not parsed, nor warned about, again.
	tried [sha256.Size]byte
	// unread is the last failure to read the files that was logged, so that
	// a missing file warns once, not on every poll.
	unread string
}

// loadCertificate reads the pair files names; it is served from then on.
// Unlike a later check, it fails when the pair does not load: there is
// nothing to serve instead.
func loadCertificate(files TLSConfig, log *slog.Logger) (*certificate, error) {
	c := &certificate{files: files, log: log}
	certPEM, keyPEM, err := files.read()
	if err != nil {
		return nil, fmt.Errorf("server.tls: %w", err)
	}
	pair, err := parsePair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("server.tls: %w", err)
	}
	c.tried = pairSum(certPEM, keyPEM)
	c.use(pair, "start")
	return c, nil
}

// CheckCertificate loads server.tls's pair as serve does at start, so that
// `portcullis check` finds a missing or broken pair before a start does. A
// reload does not ask it: there, a pair that does not load leaves the one
// being served (certificate.check), and the rest of the reload is taken.
func CheckCertificate(cfg *Config) error {
	if cfg.Server.TLS.CertFile == "" || cfg.Server.TLS.KeyFile == "" {
		return nil // none, or half of one: validate names that
	}
	_, err := loadCertificate(cfg.Server.TLS, slog.New(slog.DiscardHandler))
	return err
}

// GetCertificate is tls.Config's: the pair loaded last.
func (c *certificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// notAfter is when the certificate being served expires.
func (c *certificate) notAfter() time.Time { return c.cur.Load().Leaf.NotAfter }

// watch checks the files every interval until ctx ends (negative: never).
func (c *certificate) watch(ctx context.Context, every time.Duration) {
	if every < 0 {
		return
	}
	if every == 0 {
		every = defaultCertPoll
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.check("poll")
		}
	}
}

// follow makes the pair come from files from now on (a reload changed their
// paths), then checks them.
func (c *certificate) follow(files TLSConfig, trigger string) {
	c.mu.Lock()
	if files != c.files {
		c.files, c.tried, c.unread = files, [sha256.Size]byte{}, ""
	}
	c.mu.Unlock()
	c.check(trigger)
}

// check serves the files' pair if their content changed since it was last
// tried and it loads, and reports whether it did. A pair that does not load
// (half written, a key of another certificate) is logged and the one being
// served stays; it is tried again once the files change.
//
// Both files are read whole every time, rather than compared by size and
// modification time first: a renewal keeps the size more often than not,
// and a copy that keeps the time (cp -p, rsync -t) would go unnoticed, while
// reading a few kilobytes every poll costs nothing. os.ReadFile follows
// symlinks, so a Secret volume's swap of its ..data link is seen too.
func (c *certificate) check(trigger string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	certPEM, keyPEM, err := c.files.read()
	if err != nil {
		if err.Error() != c.unread {
			c.unread = err.Error()
			c.refused(trigger, err)
		}
		return false
	}
	c.unread = ""
	sum := pairSum(certPEM, keyPEM)
	if sum == c.tried {
		return false
	}
	c.tried = sum
	pair, err := parsePair(certPEM, keyPEM)
	if err == nil {
		// An expired certificate is served when it is all there is (at
		// start, or in place of one expired too), never in place of one
		// that clients still accept.
		if now := time.Now(); now.After(pair.Leaf.NotAfter) && !now.After(c.notAfter()) {
			err = fmt.Errorf("the certificate expired at %s and the one being served has not",
				pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	if err != nil {
		c.refused(trigger, err)
		return false
	}
	c.use(pair, trigger)
	return true
}

func (c *certificate) refused(trigger string, err error) {
	c.log.Warn("tls certificate not loaded; the one being served stays", "trigger", trigger,
		"cert_file", c.files.CertFile, "key_file", c.files.KeyFile, "err", err.Error())
}

// use serves pair from now on and says so.
func (c *certificate) use(pair *tls.Certificate, trigger string) {
	c.cur.Store(pair)
	leaf := pair.Leaf
	attrs := []any{"trigger", trigger, "cert_file", c.files.CertFile, "key_file", c.files.KeyFile,
		"subject", leaf.Subject.String(), "sans", sans(leaf),
		"not_before", leaf.NotBefore.UTC().Format(time.RFC3339), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
	c.log.Info("tls certificate loaded", attrs...)
	switch now := time.Now(); {
	case now.After(leaf.NotAfter):
		c.log.Warn("tls certificate has expired; serving it until the files hold a valid one", attrs...)
	case now.Before(leaf.NotBefore):
		c.log.Warn("tls certificate is not valid yet; clients whose clock agrees will refuse it", attrs...)
	}
}

// read reads the certificate and key files.
func (f TLSConfig) read() (certPEM, keyPEM []byte, err error) {
	if certPEM, err = os.ReadFile(f.CertFile); err != nil {
		return nil, nil, fmt.Errorf("read cert_file: %w", err)
	}
	if keyPEM, err = os.ReadFile(f.KeyFile); err != nil {
		return nil, nil, fmt.Errorf("read key_file: %w", err)
	}
	return certPEM, keyPEM, nil
}

// parsePair is tls.X509KeyPair, with its leaf parsed.
func parsePair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load key pair: %w", err)
	}
	if pair.Leaf == nil { // GODEBUG=x509keypairleaf=0
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
	}
	return &pair, nil
}

func pairSum(certPEM, keyPEM []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0}) // PEM has no NUL: the boundary counts
	h.Write(keyPEM)
	return [sha256.Size]byte(h.Sum(nil))
}

// sans are the certificate's subject alternative names.
func sans(leaf *x509.Certificate) []string {
	out := append([]string{}, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		out = append(out, ip.String())
	}
	out = append(out, leaf.EmailAddresses...)
	for _, u := range leaf.URIs {
		out = append(out, u.String())
	}
	return out
}
