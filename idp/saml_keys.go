package idp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	dsig "github.com/russellhaering/goxmldsig"
)

// loadSPKeyPair returns the key and certificate that sign AuthnRequests:
// sp_cert_file and sp_key_file when configured, else a fresh RSA key and
// self-signed certificate, of which samlWarnings warns.
func loadSPKeyPair(c Config) (crypto.Signer, *x509.Certificate, error) {
	if c.SPCertFile != "" {
		return loadSPKeyFiles(c.SPCertFile, c.SPKeyFile)
	}
	return generateSPKeyPair(c.ID)
}

// samlWarnings: a key pair generated at start is another one after every
// restart and on every replica, which an IdP that checks request
// signatures (it pinned the SP metadata's certificate) refuses.
func (c *Config) samlWarnings() []Warning {
	if c.SPCertFile != "" {
		return nil
	}
	return []Warning{{"sp_cert_file", "not set: AuthnRequests are signed with a key generated at start, which changes on every restart and differs between replicas; " +
		"configure sp_cert_file and sp_key_file when the IdP checks request signatures or more than one replica runs"}}
}

// loadSPKeyFiles reads a PEM certificate and its PEM private key (RSA or
// ECDSA; PKCS#1, PKCS#8 or SEC 1).
func loadSPKeyFiles(certFile, keyFile string) (crypto.Signer, *x509.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot load key pair: %w", err)
	}
	switch pair.PrivateKey.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey:
	default:
		return nil, nil, fmt.Errorf("key type %T not supported (want RSA or ECDSA)", pair.PrivateKey)
	}
	return pair.PrivateKey.(crypto.Signer), pair.Leaf, nil
}

// generateSPKeyPair makes an RSA key and a self-signed certificate valid for
// ten years (IdPs pin the certificate, not a chain).
func generateSPKeyPair(id string) (crypto.Signer, *x509.Certificate, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "portcullis saml sp " + id},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return key, cert, nil
}

// signatureMethod picks the AuthnRequest signature algorithm for the key.
func signatureMethod(key crypto.Signer) string {
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		return dsig.ECDSASHA256SignatureMethod
	}
	return dsig.RSASHA256SignatureMethod
}

// parseCertificate reads x509_cert: PEM, or the bare base64 DER that IdP
// consoles show (whitespace allowed).
func parseCertificate(s string) (*x509.Certificate, error) {
	s = strings.TrimSpace(s)
	var der []byte
	if strings.HasPrefix(s, "-----BEGIN") {
		block, _ := pem.Decode([]byte(s))
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, errors.New("not a PEM CERTIFICATE block")
		}
		der = block.Bytes
	} else {
		var err error
		der, err = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			return nil, fmt.Errorf("neither PEM nor base64 DER: %w", err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("not an X.509 certificate: %w", err)
	}
	return cert, nil
}
