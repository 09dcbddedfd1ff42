// Package sspserver runs a real SimpleSAMLphp (Debian's simplesamlphp
// package, 1.19) as a SAML 2.0 identity provider for tests: a second IdP,
// built on xmlseclibs rather than on crewjam/saml, whose answers portcullis
// must read as it reads samlidp's.
//
// It runs under PHP's built-in web server (php -S) on a free loopback
// port, in the foreground, with its configuration, metadata, key pair,
// sessions and logs in a temporary directory that SIMPLESAMLPHP_CONFIG_DIR
// points at; no system web server and nothing under /etc is used. The
// built-in server serves SimpleSAMLphp's PATH_INFO URLs
// (module.php/core/loginuserpass.php) without a router script. Users log in
// with the exampleauth:UserPass source; service providers are written to
// saml20-sp-remote.php, which SimpleSAMLphp reads at every request.
package sspserver

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// WebRoot is where Debian's simplesamlphp package puts the web root.
const WebRoot = "/usr/share/simplesamlphp/www"

// attributeMaps is the package's directory of attribute maps (name2oid,
// oid2name, ...), which the core:AttributeMap filter reads.
const attributeMaps = "/usr/share/simplesamlphp/config/attributemap/"

// User is one account of the exampleauth:UserPass source, with the
// attributes SimpleSAMLphp releases for it, each multi-valued.
type User struct {
	Name, Password string
	Attributes     map[string][]string
}

// ServiceProvider is one entry of saml20-sp-remote.php: where the IdP
// answers, and how.
type ServiceProvider struct {
	EntityID string
	// ACS is the AssertionConsumerService (HTTP-POST); SLO the
	// SingleLogoutService (HTTP-Redirect), none when empty.
	ACS, SLO string
	// Certificate is the SP's, for signatures (validate.authnrequest and
	// validate.logout are on when it is set) and for encryption.
	Certificate *x509.Certificate
	// SignResponse and SignAssertion are saml20.sign.response and
	// saml20.sign.assertion; SimpleSAMLphp signs both by default.
	SignResponse, SignAssertion *bool
	// SignLogout is sign.logout: SimpleSAMLphp signs its LogoutRequests
	// and LogoutResponses to this SP only with it (default false).
	SignLogout bool
	// EncryptAssertion is assertion.encryption (to Certificate).
	EncryptAssertion bool
	// OIDNames sends the attributes named by OID
	// (urn:oid:0.9.2342.19200300.100.1.3), with the uri NameFormat, through
	// the name2oid attribute map, as eduGAIN federations do; without, by
	// their short names with the basic NameFormat.
	OIDNames bool
	// NameIDFormat is the NameID format sent; default transient, as
	// SimpleSAMLphp sends unless told otherwise.
	NameIDFormat string
	// NameIDAttribute is the attribute whose value becomes the NameID
	// (simplesaml.nameidattribute), for persistent and emailAddress formats.
	NameIDAttribute string
	// PersistentNameID is the attribute that the saml:PersistentNameID
	// filter hashes, with the secret salt and both entity IDs, into a
	// persistent NameID (what eduGAIN IdPs send); with NameIDFormat
	// persistent.
	PersistentNameID string
}

// Options configure a Server.
type Options struct {
	Users            []User
	ServiceProviders []ServiceProvider
}

// Server is a running SimpleSAMLphp IdP.
type Server struct {
	// URL is the base URL, e.g. http://127.0.0.1:41234.
	URL string
	// Key and Certificate sign the IdP's messages.
	Key         *rsa.PrivateKey
	Certificate *x509.Certificate

	dir  string
	cmd  *exec.Cmd
	done <-chan struct{}
	logs *process.Output
}

// EntityID is the IdP's entity ID: SimpleSAMLphp's default for
// __DYNAMIC:1__, its metadata URL.
func (s *Server) EntityID() string { return s.MetadataURL() }

// MetadataURL is where the IdP serves its metadata.
func (s *Server) MetadataURL() string { return s.URL + "/saml2/idp/metadata.php" }

// SSOURL is the SingleSignOnService (HTTP-Redirect and HTTP-POST).
func (s *Server) SSOURL() string { return s.URL + "/saml2/idp/SSOService.php" }

// SLOURL is the SingleLogoutService (HTTP-Redirect).
func (s *Server) SLOURL() string { return s.URL + "/saml2/idp/SingleLogoutService.php" }

// InitSLOURL starts a logout at the IdP of every service the browser's IdP
// session signed in to, then sends the browser to relayState.
func (s *Server) InitSLOURL(relayState string) string {
	return s.URL + "/saml2/idp/initSLO.php?RelayState=" + url.QueryEscape(relayState)
}

// IdPInitiatedURL starts a login at the IdP, with no AuthnRequest, for the
// service provider spEntityID: the link an IdP's users are given for it.
// relayState, when not empty, is sent along with the answer.
func (s *Server) IdPInitiatedURL(spEntityID, relayState string) string {
	q := url.Values{"spentityid": {spEntityID}}
	if relayState != "" {
		q.Set("RelayState", relayState)
	}
	return s.SSOURL() + "?" + q.Encode()
}

// LoginPath is the path of the login form, which SimpleSAMLphp's SSO
// redirects to.
const LoginPath = "/module.php/core/loginuserpass.php"

// Logs is what PHP's server and SimpleSAMLphp (logging to stderr) wrote.
func (s *Server) Logs() string { return s.logs.String() }

// Logged reports whether SimpleSAMLphp's log says line, waiting a while
// for it: PHP writes it to its stderr as it answers, and the pipe may
// bring it after the answer.
func (s *Server) Logged(line string) bool { return s.logs.Awaits(line, 10*time.Second) }

// Start writes the configuration, starts php -S and waits until the IdP
// serves its metadata; the process is killed when the test ends. It fails
// the test when php or simplesamlphp is missing.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	php, err := process.LookPath("php")
	if err != nil {
		t.Fatalf("sspserver: %v: install Debian's php8.2-cli (test/run.sh does)", err)
	}
	if _, err := os.Stat(filepath.Join(WebRoot, "saml2", "idp", "SSOService.php")); err != nil {
		t.Fatalf("sspserver: %v: install Debian's simplesamlphp (test/run.sh does)", err)
	}
	s := &Server{dir: t.TempDir(), logs: &process.Output{}}
	addr := "127.0.0.1:" + strconv.Itoa(process.FreePort(t))
	s.URL = "http://" + addr
	if s.Key, s.Certificate, err = samlserver.NewKeyPair("sspserver " + addr); err != nil {
		t.Fatalf("sspserver: generate key pair: %v", err)
	}
	if err := s.write(o); err != nil {
		t.Fatalf("sspserver: %v", err)
	}

	// Deprecation notices of PHP 8.2 about SimpleSAMLphp 1.19's code go to
	// stderr, not into the pages the tests parse.
	s.cmd = exec.Command(php, "-d", "display_errors=stderr", "-d", "error_reporting=E_ALL & ~E_DEPRECATED",
		"-S", addr, "-t", WebRoot)
	s.cmd.Env = append(os.Environ(), "SIMPLESAMLPHP_CONFIG_DIR="+filepath.Join(s.dir, "config"))
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	serves := func() bool {
		resp, err := http.Get(s.MetadataURL())
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	if s.done, err = process.Start(s.cmd, serves, 15*time.Second); err != nil {
		t.Fatalf("sspserver: php -S serving %s: %v:\n%s", s.MetadataURL(), err, s.logs)
	}
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
		if t.Failed() {
			t.Logf("sspserver: output:\n%s", s.logs)
		}
	})
	return s
}

// write makes the config and metadata directories and the key pair.
func (s *Server) write(o Options) error {
	for _, d := range []string{"config", "metadata", "cert", "log", "data", "tmp", "sessions"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o700); err != nil {
			return err
		}
	}
	files := map[string]string{
		"cert/idp.key":                   string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(s.Key)})),
		"cert/idp.crt":                   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate.Raw})),
		"config/config.php":              s.config(),
		"config/authsources.php":         authsources(o.Users),
		"metadata/saml20-idp-hosted.php": idpHosted,
		"metadata/saml20-sp-remote.php":  spRemote(o.ServiceProviders),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(text), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// config is config.php. Cookies are neither Secure nor SameSite: the IdP
// is plain http on loopback; their names are SimpleSAMLphp's own, apart
// from the proxy's on the same host.
func (s *Server) config() string {
	dir := func(name string) string { return php(filepath.Join(s.dir, name) + "/") }
	return `<?php
$config = [
    'baseurlpath' => ` + php(s.URL+"/") + `,
    'certdir' => ` + dir("cert") + `,
    'loggingdir' => ` + dir("log") + `,
    'datadir' => ` + dir("data") + `,
    'tempdir' => ` + php(filepath.Join(s.dir, "tmp")) + `,
    'metadatadir' => ` + dir("metadata") + `,
    'attributenamemapdir' => ` + php(attributeMaps) + `,
    'technicalcontact_name' => 'sspserver',
    'technicalcontact_email' => 'na@example.org',
    'secretsalt' => ` + php(randomString()) + `,
    'auth.adminpassword' => ` + php(randomString()) + `,
    'admin.protectindexpage' => true,
    'admin.protectmetadata' => false,
    'timezone' => 'UTC',
    'logging.level' => SimpleSAML\Logger::INFO,
    'logging.handler' => 'stderr',
    'showerrors' => true,
    'errorreporting' => false,
    'enable.saml20-idp' => true,
    'module.enable' => ['exampleauth' => true, 'core' => true, 'saml' => true],
    'store.type' => 'phpsession',
    'session.phpsession.savepath' => ` + dir("sessions") + `,
    'session.cookie.secure' => false,
    'session.cookie.samesite' => null,
    'language.cookie.secure' => false,
    'language.cookie.samesite' => null,
    'metadata.sources' => [['type' => 'flatfile']],
    // initSLO.php's RelayState may lead to any service on loopback.
    'trusted.url.domains' => ['127\\.0\\.0\\.1(:[0-9]+)?'],
    'trusted.url.regex' => true,
];
`
}

// idpHosted is saml20-idp-hosted.php: the key pair, the users, RSA-SHA256.
const idpHosted = `<?php
$metadata['__DYNAMIC:1__'] = [
    'host' => '__DEFAULT__',
    'privatekey' => 'idp.key',
    'certificate' => 'idp.crt',
    'auth' => 'users',
    'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
    'SingleLogoutServiceBinding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect',
];
`

func authsources(users []User) string {
	var b strings.Builder
	b.WriteString("<?php\n$config = [\n    'admin' => ['core:AdminPassword'],\n    'users' => [\n        'exampleauth:UserPass',\n")
	for _, u := range users {
		fmt.Fprintf(&b, "        %s => [\n", php(u.Name+":"+u.Password))
		names := make([]string, 0, len(u.Attributes))
		for name := range u.Attributes {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			fmt.Fprintf(&b, "            %s => %s,\n", php(name), phpList(u.Attributes[name]))
		}
		b.WriteString("        ],\n")
	}
	b.WriteString("    ],\n];\n")
	return b.String()
}

func spRemote(sps []ServiceProvider) string {
	var b strings.Builder
	b.WriteString("<?php\n")
	for _, sp := range sps {
		fmt.Fprintf(&b, "$metadata[%s] = [\n", php(sp.EntityID))
		fmt.Fprintf(&b, "    'AssertionConsumerService' => [['Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST', 'Location' => %s, 'index' => 0]],\n", php(sp.ACS))
		if sp.SLO != "" {
			fmt.Fprintf(&b, "    'SingleLogoutService' => [['Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect', 'Location' => %s]],\n", php(sp.SLO))
		}
		if sp.Certificate != nil {
			fmt.Fprintf(&b, "    'certData' => %s,\n    'validate.authnrequest' => true,\n    'validate.logout' => true,\n",
				php(base64.StdEncoding.EncodeToString(sp.Certificate.Raw)))
		}
		if sp.SignResponse != nil {
			fmt.Fprintf(&b, "    'saml20.sign.response' => %t,\n", *sp.SignResponse)
		}
		if sp.SignAssertion != nil {
			fmt.Fprintf(&b, "    'saml20.sign.assertion' => %t,\n", *sp.SignAssertion)
		}
		if sp.SignLogout {
			b.WriteString("    'sign.logout' => true,\n")
		}
		if sp.EncryptAssertion {
			b.WriteString("    'assertion.encryption' => true,\n")
		}
		if sp.NameIDFormat != "" {
			fmt.Fprintf(&b, "    'NameIDFormat' => %s,\n", php(sp.NameIDFormat))
		}
		if sp.NameIDAttribute != "" {
			fmt.Fprintf(&b, "    'simplesaml.nameidattribute' => %s,\n", php(sp.NameIDAttribute))
		}
		var authproc []string
		if sp.PersistentNameID != "" {
			authproc = append(authproc, fmt.Sprintf("20 => ['class' => 'saml:PersistentNameID', 'attribute' => %s]", php(sp.PersistentNameID)))
		}
		if sp.OIDNames {
			b.WriteString("    'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:uri',\n")
			authproc = append(authproc, "90 => ['class' => 'core:AttributeMap', 'name2oid']")
		} else {
			b.WriteString("    'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic',\n")
		}
		if len(authproc) > 0 {
			fmt.Fprintf(&b, "    'authproc' => [%s],\n", strings.Join(authproc, ", "))
		}
		b.WriteString("];\n")
	}
	return b.String()
}

// php is s as a single-quoted PHP string literal.
func php(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func phpList(values []string) string {
	quoted := make([]string, len(values))
	for i, v := range values {
		quoted[i] = php(v)
	}
	return "[" + strings.Join(quoted, ", ") + "]"
}

func randomString() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
