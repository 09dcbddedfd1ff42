package ldapserver

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// writeCertificates makes a CA and a server certificate signed by it, by
// issue or else for 127.0.0.1 and localhost for a day, and writes them as
// PEM files into dir.
func writeCertificates(t testing.TB, dir string, issue func(testing.TB, *testcert.CA) testcert.Pair) (caFile, certFile, keyFile string) {
	t.Helper()
	ca := testcert.NewCA(t, "ldapserver test CA")
	if issue == nil {
		issue = func(t testing.TB, ca *testcert.CA) testcert.Pair {
			return ca.Issue(t, "127.0.0.1", time.Now().Add(24*time.Hour))
		}
	}
	pair := issue(t, ca)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatalf("ldapserver: %v", err)
	}
	pair.Write(t, certFile, keyFile)
	return caFile, certFile, keyFile
}
