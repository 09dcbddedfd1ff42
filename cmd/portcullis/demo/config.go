package demo

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// configParams are the parts of the demo configuration known only at start.
type configParams struct {
	Listen, AdminListen, PublicURL, UpstreamURL string
	SessionKey                                  string
	IdPEntityID, MetadataURL                    string
	SPCertFile, SPKeyFile                       string
}

// configTemplate is the CVAT profile of the README: identity in X-Email and
// X-Groups, CVAT's roles, and API calls with their own credentials passed
// through untouched.
var configTemplate = template.Must(template.New("config").Funcs(template.FuncMap{"q": strconv.Quote}).Parse(
	`# The configuration ` + "`portcullis demo`" + ` runs with (written at start).
server:
  listen: {{q .Listen}}
  admin_listen: {{q .AdminListen}}
  public_url: {{q .PublicURL}}
upstream:
  url: {{q .UpstreamURL}}
session:
  keys: [{{q .SessionKey}}]        # fresh on every start
sso:
  identity_providers:
    - id: ` + IdPID + `
      name: Demo identity provider
      protocol: SAML
      entity_id: {{q .IdPEntityID}}
      metadata_url: {{q .MetadataURL}}
      sp_cert_file: {{q .SPCertFile}}   # temporary: removed when the demo stops
      sp_key_file: {{q .SPKeyFile}}
      attribute_mapping: {uid: uid, groups: groups}   # uid: a stable sub, not the transient NameID
role_mapping:
  roles: [admin, business, user, worker]
  default: user
  highest_only: true
  rules:
    - role: admin
      when: '"` + adminGroup + `" in groups'
attribute_pass:
  headers:
    X-Email: email
    X-Groups: 'join(roles, ",")'
rules:
  - name: cvat-api-credentials
    path_prefix: /api/
    headers: {Authorization: '^(Basic|Token|Bearer) '}
    action: bypass
  - name: admin-only
    path_prefix: /admin
    action: authenticate
    allow_if: '"admin" in roles'
default_action: authenticate
`))

func configYAML(p configParams) string {
	var b strings.Builder
	if err := configTemplate.Execute(&b, p); err != nil {
		// The template and its data are fixed: this is a bug, not an input error.
		panic("demo: config template: " + err.Error())
	}
	return b.String()
}

// sessionKey is a fresh random session key, as `portcullis keys` prints.
func sessionKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// spKeyPair is the service provider's signing key and certificate, in files
// of a temporary directory. Configuring them (rather than letting the proxy
// make one) keeps the demo free of the warning meant for production setups.
type spKeyPair struct {
	dir, certFile, keyFile string
}

func newSPKeyPair() (*spKeyPair, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "portcullis demo service provider"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "portcullis-demo-")
	if err != nil {
		return nil, err
	}
	kp := &spKeyPair{dir: dir, certFile: filepath.Join(dir, "sp.crt"), keyFile: filepath.Join(dir, "sp.key")}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(kp.certFile, certPEM, 0o600); err != nil {
		kp.remove()
		return nil, err
	}
	if err := os.WriteFile(kp.keyFile, keyPEM, 0o600); err != nil {
		kp.remove()
		return nil, err
	}
	return kp, nil
}

func (kp *spKeyPair) remove() { os.RemoveAll(kp.dir) }
