package idp

import (
	"crypto/fips140"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// TestStartTLSConfigVerifiesAsGoDoes holds startTLSConfig, which turns
// crypto/tls's own certificate check off to do it in VerifyConnection (so
// that the x509 error survives go-ldap's StartTLS), to refusing every
// certificate crypto/tls refuses and accepting what it accepts: another
// CA's, another host's, an expired one, and any at all when the config
// names no server (crypto/tls refuses to connect then; x509 without a
// DNSName checks no host); with insecure_skip_verify, any certificate; one
// an issuing CA signed, which the directory sends (Active Directory
// Certificate Services' two tiers).
func TestStartTLSConfigVerifiesAsGoDoes(t *testing.T) {
	ca, other := testcert.NewCA(t, "directory CA"), testcert.NewCA(t, "another CA")
	roots := func(c *testcert.CA) *x509.CertPool {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(c.PEM) {
			t.Fatal("no CA certificate")
		}
		return pool
	}
	tomorrow := time.Now().Add(24 * time.Hour)
	issuing := ca.Intermediate(t, "issuing CA")
	chained := issuing.Issue(t, "ad.example.com", tomorrow)
	chained.Cert = append(chained.Cert, issuing.PEM...) // the directory sends its issuing CA
	tests := []struct {
		name       string
		pair       testcert.Pair
		serverName string
		roots      *x509.CertPool
		insecure   bool   // insecure_skip_verify
		want       string // what the refusal says; "" accepts
	}{
		{"the directory's certificate", ca.Issue(t, "ad.example.com", tomorrow), "ad.example.com", roots(ca), false, ""},
		{"signed by a CA not in the roots", other.Issue(t, "ad.example.com", tomorrow), "ad.example.com", roots(ca), false, "unknown authority"},
		{"for another host", ca.Issue(t, "ipa.example.com", tomorrow), "ad.example.com", roots(ca), false, "not ad.example.com"},
		{"expired", ca.Issue(t, "ad.example.com", time.Now().Add(-time.Hour)), "ad.example.com", roots(ca), false, "expired"},
		{"a config that names no server", ca.Issue(t, "ad.example.com", tomorrow), "", roots(ca), false, "ServerName"},
		{"signed by an issuing CA it sends, under the trusted root", chained, "ad.example.com", roots(ca), false, ""},
		{"insecure_skip_verify takes another CA's, for another host", other.Issue(t, "ipa.example.com", tomorrow), "ad.example.com", roots(ca), true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := tls.X509KeyPair(tc.pair.Cert, tc.pair.Key)
			if err != nil {
				t.Fatal(err)
			}
			base := &tls.Config{ServerName: tc.serverName, RootCAs: tc.roots, InsecureSkipVerify: tc.insecure, MinVersion: tls.VersionTLS12}
			// A loopback listener, not net.Pipe: a client's alert and the
			// server's flight written at once block each other on a pipe.
			addr := process.Serve(t, func(c net.Conn) {
				s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
				_ = s.SetDeadline(time.Now().Add(30 * time.Second))
				_ = s.Handshake()
				c.Close()
			})
			handshake := func(client *tls.Config) error {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				return tls.Client(c, client).Handshake()
			}
			goErr := handshake(base)
			tc2, failed := startTLSConfig(base)
			ourErr := handshake(tc2)
			if (goErr == nil) != (tc.want == "") {
				t.Fatalf("crypto/tls's own check: %v; the case is wrong", goErr)
			}
			if (ourErr == nil) != (goErr == nil) {
				t.Fatalf("startTLSConfig's handshake: %v; crypto/tls's own: %v", ourErr, goErr)
			}
			if tc.want == "" {
				return
			}
			if !strings.Contains(ourErr.Error(), tc.want) {
				t.Errorf("startTLSConfig's handshake: %v, want it to say %q", ourErr, tc.want)
			}
			if tc.serverName != "" && !errors.As(*failed, new(*tls.CertificateVerificationError)) {
				t.Errorf("the check's error %v is no *tls.CertificateVerificationError, which certificateSetupError reads", *failed)
			}
		})
	}
}

// TestStartTLSConfigLeavesFIPSModeToCryptoTLS: under GODEBUG=fips140=on,
// crypto/tls refuses certificate chains with keys FIPS 140 does not allow,
// a check x509.Verify lacks, so startTLSConfig must not stand in for it.
// The test binary runs itself again in that mode.
func TestStartTLSConfigLeavesFIPSModeToCryptoTLS(t *testing.T) {
	if os.Getenv("PORTCULLIS_FIPS_CHILD") == "1" {
		base := &tls.Config{ServerName: "ad.example.com"}
		if tc, _ := startTLSConfig(base); !fips140.Enabled() || tc != base {
			t.Fatalf("fips140 %v: startTLSConfig gave another config (InsecureSkipVerify %v)", fips140.Enabled(), tc.InsecureSkipVerify)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestStartTLSConfigLeavesFIPSModeToCryptoTLS$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PORTCULLIS_FIPS_CHILD=1", "GODEBUG=fips140=on")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "PASS") {
		t.Fatalf("in FIPS mode: %v\n%s", err, out)
	}
}
