package ldapserver

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// writeCertificates makes a CA and a server certificate for 127.0.0.1 and
// localhost signed by it, and writes them as PEM files into dir.
func writeCertificates(t testing.TB, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	ca := testcert.NewCA(t, "ldapserver test CA")
	pair := ca.Issue(t, "127.0.0.1", time.Now().Add(24*time.Hour))
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatalf("ldapserver: %v", err)
	}
	pair.Write(t, certFile, keyFile)
	return caFile, certFile, keyFile
}
