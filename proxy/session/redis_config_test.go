package session

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// A client certificate is a pair: each file without the other, or files
// that do not make a pair, are refused at start naming the key to fix,
// rather than at the first connection to a Redis that asks for one.
func TestRedisConfigValidateClientCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	testcert.NewCA(t, "redis CA").IssueClient(t, "portcullis", time.Now().Add(time.Hour)).Write(t, certFile, keyFile)
	otherCert, otherKey := filepath.Join(dir, "other.crt"), filepath.Join(dir, "other.key")
	testcert.New(t, "other", time.Now().Add(time.Hour)).Write(t, otherCert, otherKey)
	tests := []struct {
		name string
		tls  RedisTLS
		want string // in the error; empty: no error
	}{
		{"the pair", RedisTLS{CertFile: certFile, KeyFile: keyFile}, ""},
		{"a certificate without its key", RedisTLS{CertFile: certFile}, "tls.key_file: required with tls.cert_file"},
		{"a key without its certificate", RedisTLS{KeyFile: keyFile}, "tls.cert_file: required with tls.key_file"},
		{"a key of another certificate", RedisTLS{CertFile: certFile, KeyFile: otherKey}, "tls.cert_file: tls: private key does not match public key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := RedisConfig{URL: "redis://127.0.0.1:6379/0", TLS: tc.tls}
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
}

// cert_file alone turns TLS on (a Redis that asks for a client
// certificate speaks TLS), and the pair is what the connections offer.
func TestRedisTLSConfigOffersTheClientCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	testcert.NewCA(t, "redis CA").IssueClient(t, "portcullis", time.Now().Add(time.Hour)).Write(t, certFile, keyFile)
	c := RedisConfig{URL: "redis://127.0.0.1:6379/0", TLS: RedisTLS{CertFile: certFile, KeyFile: keyFile}}
	tc, err := c.tlsConfig()
	if err != nil || tc == nil {
		t.Fatalf("tlsConfig: %v, %v; want TLS for cert_file", tc, err)
	}
	if len(tc.Certificates) != 1 || tc.Certificates[0].Leaf == nil || tc.Certificates[0].Leaf.Subject.CommonName != "portcullis" {
		t.Errorf("Certificates: %+v, want the pair of cert_file", tc.Certificates)
	}
}

// A password that starts with / # or ? leaves the URL's host empty with
// no parse error ("redis:///pw@host" reads as a path): it is the password
// that needs percent-encoding, not the URL that is not a Redis one.
func TestRedisURLWithAnUnencodedPassword(t *testing.T) {
	for _, u := range []string{"redis:///secret@redis.internal:6379/0", "rediss://#secret@redis.internal:6379/0", "redis://:pa%zz@redis.internal:6379"} {
		c := RedisConfig{URL: u}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "must be percent-encoded") {
			t.Errorf("Validate(%q): %v, want the percent-encoding hint", u, err)
		}
	}
}
