package ops

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// servedName is the common name of the certificate a new TLS connection to
// addr gets ("" when the handshake fails).
func servedName(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Logf("TLS handshake with %s: %v", addr, err)
		return ""
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func TestRenewedCertificateIsServedAfterSIGHUP(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	year := time.Now().Add(365 * 24 * time.Hour)
	a, b := testcert.New(t, "a.example", year), testcert.New(t, "b.example", year.Add(24*time.Hour))
	a.Write(t, cert, key)

	p := newProc(t, nil)
	text := strings.Replace(p.text(), "server:\n", "server:\n  tls: {cert_file: "+cert+", key_file: "+key+"}\n", 1)
	p.writeRaw(t, strings.Replace(text, "public_url: http://", "public_url: https://", 1))
	p.start(t, "--watch-interval", "0")
	addr := p.vars["LISTEN"]
	if got := servedName(t, addr); got != "a.example" {
		t.Fatalf("served %q at start, want a.example", got)
	}
	expiry := `portcullis_tls_certificate_expiry_timestamp_seconds`
	if got := p.metric(t, expiry); got != float64(a.NotAfter.Unix()) {
		t.Errorf("%s = %v at start, want %v", expiry, got, a.NotAfter.Unix())
	}

	b.Write(t, cert, key)
	p.signal(t, syscall.SIGHUP)
	eventually(t, 5*time.Second, "renewed certificate served", func() bool { return servedName(t, addr) == "b.example" })
	if got := p.metric(t, expiry); got != float64(b.NotAfter.Unix()) {
		t.Errorf("%s = %v after the renewal, want %v", expiry, got, b.NotAfter.Unix())
	}

	// A broken renewal: the listener stays up with the last good pair.
	if err := os.WriteFile(key, testcert.New(t, "c.example", year).Key, 0o600); err != nil {
		t.Fatal(err)
	}
	p.signal(t, syscall.SIGHUP)
	eventually(t, 5*time.Second, "broken pair refused", func() bool {
		return strings.Contains(p.Log.String(), "tls certificate not loaded; the one being served stays")
	})
	if got := servedName(t, addr); got != "b.example" {
		t.Errorf("after a broken renewal, served %q, want b.example", got)
	}
	if !strings.Contains(p.Log.String(), key) {
		t.Errorf("the warning does not name the key file:\n%s", p.Log)
	}
}
