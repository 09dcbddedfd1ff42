// Package testcert makes server certificates for tests that serve TLS:
// self-signed for the proxy's unit tests and the operator tests that run the
// binary, signed by a test CA for the LDAP directory.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"testing"
	"time"
)

// Pair is a self-signed certificate for a name, localhost and 127.0.0.1,
// and its key, as PEM.
type Pair struct {
	Name      string // the subject's common name
	Cert, Key []byte
	NotAfter  time.Time
}

// New makes a self-signed pair for name that expires at notAfter (to the
// second) and was valid for 90 days before.
func New(t testing.TB, name string, notAfter time.Time) Pair {
	t.Helper()
	return issue(t, name, notAfter, nil)
}

// CA is a certificate authority of tests, for servers whose clients are
// given a CA file to trust (the LDAP directory's).
type CA struct {
	PEM  []byte // its certificate
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a CA valid from an hour ago for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	return newCA(t, name, nil)
}

// Intermediate makes a CA signed by ca, as an enterprise's issuing CA is
// signed by its root: a server it issues for sends its PEM after its own
// certificate, and clients trust ca alone.
func (ca *CA) Intermediate(t testing.TB, name string) *CA {
	t.Helper()
	return newCA(t, name, ca)
}

func newCA(t testing.TB, name string, parent *CA) *CA {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatalf("testcert: CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testcert: %v", err)
	}
	return &CA{PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert: cert, key: key}
}

// Issue makes a pair for name signed by ca, as New does otherwise.
func (ca *CA) Issue(t testing.TB, name string, notAfter time.Time) Pair {
	t.Helper()
	return issue(t, name, notAfter, ca)
}

// IssueOnlyFor makes a pair for name alone, signed by ca: without the
// localhost and 127.0.0.1 that Issue adds, a server on 127.0.0.1 serving it
// presents another host's certificate to its clients.
func (ca *CA) IssueOnlyFor(t testing.TB, name string, notAfter time.Time) Pair {
	t.Helper()
	return issueFor(t, name, notAfter, ca, x509.ExtKeyUsageServerAuth, true)
}

// IssueClient makes a client certificate for name signed by ca, for
// servers that require one (mutual TLS).
func (ca *CA) IssueClient(t testing.TB, name string, notAfter time.Time) Pair {
	t.Helper()
	return issueFor(t, name, notAfter, ca, x509.ExtKeyUsageClientAuth, false)
}

// issue makes a server pair for name, localhost and 127.0.0.1, signed by ca
// or, when ca is nil, by itself.
func issue(t testing.TB, name string, notAfter time.Time, ca *CA) Pair {
	t.Helper()
	return issueFor(t, name, notAfter, ca, x509.ExtKeyUsageServerAuth, false)
}

// issueFor makes a pair for name and, unless nameOnly, localhost and
// 127.0.0.1.
func issueFor(t testing.TB, name string, notAfter time.Time, ca *CA, usage x509.ExtKeyUsage, nameOnly bool) Pair {
	t.Helper()
	key := newKey(t)
	notAfter = notAfter.Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    notAfter.Add(-90 * 24 * time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if nameOnly {
		tmpl.DNSNames, tmpl.IPAddresses = nil, nil
		if ip := net.ParseIP(name); ip != nil {
			tmpl.IPAddresses = []net.IP{ip}
		} else {
			tmpl.DNSNames = []string{name}
		}
	} else if net.ParseIP(name) == nil && name != "localhost" {
		tmpl.DNSNames = append([]string{name}, tmpl.DNSNames...)
	}
	parent, parentKey := tmpl, key
	if ca != nil {
		parent, parentKey = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatalf("testcert: certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testcert: %v", err)
	}
	return Pair{
		Name:     name,
		Cert:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		NotAfter: notAfter,
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testcert: key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatalf("testcert: serial: %v", err)
	}
	return n
}

// Write overwrites certFile and keyFile in place with the pair.
func (p Pair) Write(t testing.TB, certFile, keyFile string) {
	t.Helper()
	for path, b := range map[string][]byte{certFile: p.Cert, keyFile: p.Key} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatalf("testcert: %v", err)
		}
	}
}
