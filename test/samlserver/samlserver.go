// Package samlserver runs crewjam/saml's samlidp as an in-process SAML 2.0
// identity provider on loopback, with users, groups and a key pair generated
// at start. The idp tests log in against it, and `portcullis demo` embeds it.
package samlserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/crewjam/saml"
	"github.com/crewjam/saml/samlidp"
	"golang.org/x/crypto/bcrypt"
)

// User is one account of the identity provider. Its Email becomes the
// assertion's NameID; Groups are sent as the multi-valued attribute "groups"
// (and, as samlidp always does, as eduPersonAffiliation).
type User struct {
	Name      string
	Password  string
	Email     string
	GivenName string
	Surname   string
	// CommonName is the display name (attribute cn).
	CommonName string
	Groups     []string
}

// Options configure a Server.
type Options struct {
	// Users are the accounts that can log in.
	Users []User
	// Addr is the listen address; default "127.0.0.1:0" (a free loopback port).
	Addr string
	// Logger receives samlidp's log lines; default: discarded.
	Logger *slog.Logger
	// AssertionMaker makes the assertions; default: GroupsAssertionMaker.
	AssertionMaker saml.AssertionMaker
	// Shapes are how the answers to some service providers, by entity ID,
	// are signed, encrypted and changed; the others get samlidp's.
	Shapes map[string]Shape
	// NextCertificate generates a second key pair, published in the
	// metadata after the first as the one the IdP rolls over to (Server's
	// NextKey; Shape.SignWithNext signs with it).
	NextCertificate bool
	// EncryptionCertificate publishes a certificate of its own as the
	// metadata's use="encryption" key, as IdPs with separate keys do;
	// default: the signing certificate, as samlidp does.
	EncryptionCertificate bool
}

// Server is a running SAML identity provider. Its entity id is its metadata
// URL, as samlidp makes it.
type Server struct {
	// URL is the base URL, e.g. http://127.0.0.1:41234.
	URL string
	// Key and Certificate sign the responses; tests use them to forge
	// responses that only the signature check can tell apart.
	Key         *rsa.PrivateKey
	Certificate *x509.Certificate
	// NextKey and NextCertificate are the key pair the IdP rolls over
	// to, with Options.NextCertificate; nil without.
	NextKey         *rsa.PrivateKey
	NextCertificate *x509.Certificate
	// IDP is the underlying samlidp server.
	IDP *samlidp.Server

	http *http.Server
	ln   net.Listener
}

// GroupsAttribute is the name of the attribute that carries a user's groups.
const GroupsAttribute = "groups"

// loginForm posts back to the page it was served on (no action attribute):
// /sso?SAMLRequest=… for a login the SP started (see loginAndReturn), /sso
// for one whose AuthnRequest came in a POST (the hidden fields carry it
// again), /login/{shortcut} for one the IdP starts. samlidp's default form
// posts the request again in its body, where the signature of one sent with
// the HTTP-Redirect binding is lost.
var loginForm = template.Must(template.New("login").Parse(`<!doctype html>
<html><head><title>Demo identity provider</title></head>
<body style="font-family:sans-serif;max-width:24em;margin:4em auto">
<h1>Demo identity provider</h1>
{{if .Toast}}<p style="color:#b00">{{.Toast}}</p>{{end}}
<form method="post">
<p><label>Username <input type="text" name="user" autofocus></label></p>
<p><label>Password <input type="password" name="password"></label></p>
<input type="hidden" name="SAMLRequest" value="{{.SAMLRequest}}">
<input type="hidden" name="RelayState" value="{{.RelayState}}">
<p><input type="submit" value="Log in"></p>
</form>
</body></html>`))

// New generates a key pair, starts the identity provider on opts.Addr and
// creates opts.Users. Close stops it.
func New(opts Options) (*Server, error) {
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("samlserver: listen: %w", err)
	}
	base := url.URL{Scheme: "http", Host: ln.Addr().String()}

	key, cert, err := NewKeyPair("portcullis demo idp " + base.Host)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("samlserver: generate key pair: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{URL: base.String(), Key: key, Certificate: cert, ln: ln}
	var extra []*x509.Certificate
	if opts.NextCertificate {
		if s.NextKey, s.NextCertificate, err = NewKeyPair("portcullis demo idp " + base.Host + " next"); err != nil {
			ln.Close()
			return nil, fmt.Errorf("samlserver: generate next key pair: %w", err)
		}
		extra = append(extra, s.NextCertificate)
	}
	idp, err := samlidp.New(samlidp.Options{
		URL:               base,
		Key:               key,
		Certificate:       cert,
		ExtraCertificates: extra,
		Store:             &samlidp.MemoryStore{},
		Logger:            printfLogger{log},
		LoginFormTemplate: loginForm,
	})
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("samlserver: create idp: %w", err)
	}
	s.IDP = idp
	idp.IDP.AssertionMaker = opts.AssertionMaker
	if idp.IDP.AssertionMaker == nil {
		idp.IDP.AssertionMaker = GroupsAssertionMaker{}
	}
	if opts.EncryptionCertificate {
		// Only published: nothing in these tests encrypts to the IdP.
		if _, idp.IDP.EncryptionCertificate, err = NewKeyPair("portcullis demo idp " + base.Host + " encryption"); err != nil {
			ln.Close()
			return nil, fmt.Errorf("samlserver: generate encryption key pair: %w", err)
		}
	}
	if len(opts.Shapes) > 0 {
		idp.IDP.ResponseWriter = shapedWriter{s: s, shapes: opts.Shapes}
	}

	for _, u := range opts.Users {
		if err := s.AddUser(u); err != nil {
			ln.Close()
			return nil, err
		}
	}
	s.http = &http.Server{Handler: parseForms(s.loginAndReturn(idp)), ReadHeaderTimeout: 10 * time.Second}
	go s.http.Serve(ln)
	return s, nil
}

// Start is New for tests: it fails t on error and closes the server when the
// test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Close stops the server.
func (s *Server) Close() error {
	return s.http.Close()
}

// EntityID is the identity provider's entity id (the issuer of its assertions).
func (s *Server) EntityID() string { return s.URL + "/metadata" }

// MetadataURL is where the identity provider's metadata is served.
func (s *Server) MetadataURL() string { return s.URL + "/metadata" }

// SSOURL is the single sign-on endpoint (HTTP-Redirect and HTTP-POST bindings).
func (s *Server) SSOURL() string { return s.URL + "/sso" }

// CertificatePEM is the signing certificate in PEM form, as a config's
// x509_cert would hold it.
func (s *Server) CertificatePEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate.Raw}))
}

// AddUser creates or replaces an account.
func (s *Server) AddUser(u User) error {
	// The lowest bcrypt cost keeps logins fast; these are throwaway accounts.
	hash, err := bcrypt.GenerateFromPassword([]byte(u.Password), bcrypt.MinCost)
	if err != nil {
		return fmt.Errorf("samlserver: hash password of %s: %w", u.Name, err)
	}
	err = s.IDP.Store.Put("/users/"+u.Name, &samlidp.User{
		Name:           u.Name,
		HashedPassword: hash,
		Groups:         u.Groups,
		Email:          u.Email,
		CommonName:     u.CommonName,
		Surname:        u.Surname,
		GivenName:      u.GivenName,
	})
	if err != nil {
		return fmt.Errorf("samlserver: store user %s: %w", u.Name, err)
	}
	return nil
}

// AddServiceProvider registers a service provider from its metadata, so that
// the identity provider accepts its AuthnRequests and answers at its ACS.
func (s *Server) AddServiceProvider(md *saml.EntityDescriptor) error {
	data, err := xml.Marshal(md)
	if err != nil {
		return fmt.Errorf("samlserver: encode metadata of %s: %w", md.EntityID, err)
	}
	return s.AddServiceProviderXML(data)
}

// AddServiceProviderXML registers a service provider from its metadata XML
// (what the SP serves at its metadata URL).
func (s *Server) AddServiceProviderXML(metadata []byte) error {
	var md saml.EntityDescriptor
	if err := xml.Unmarshal(metadata, &md); err != nil {
		return fmt.Errorf("samlserver: parse service provider metadata: %w", err)
	}
	if md.EntityID == "" {
		return errors.New("samlserver: service provider metadata has no entityID")
	}
	// samlidp registers services only through its REST handler, so call it
	// in-process rather than over the network.
	req := httptest.NewRequest(http.MethodPut, "/services/"+url.PathEscape(serviceName(md.EntityID)), bytes.NewReader(metadata))
	rec := httptest.NewRecorder()
	s.IDP.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent {
		return fmt.Errorf("samlserver: register service provider %s: status %d", md.EntityID, rec.Code)
	}
	return nil
}

// AddServiceProviderURL fetches a service provider's metadata from its URL
// and registers it.
func (s *Server) AddServiceProviderURL(ctx context.Context, metadataURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metadataURL, nil)
	if err != nil {
		return fmt.Errorf("samlserver: fetch %s: %w", metadataURL, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("samlserver: fetch %s: %w", metadataURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("samlserver: fetch %s: status %d", metadataURL, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("samlserver: fetch %s: %w", metadataURL, err)
	}
	return s.AddServiceProviderXML(data)
}

// AddShortcut makes /login/{name} start an IdP-initiated login at the service
// provider with the given entity id, carrying relayState.
func (s *Server) AddShortcut(name, spEntityID, relayState string) error {
	sc := &samlidp.Shortcut{Name: name, ServiceProviderID: spEntityID}
	if relayState != "" {
		sc.RelayState = &relayState
	}
	if err := s.IDP.Store.Put("/shortcuts/"+name, sc); err != nil {
		return fmt.Errorf("samlserver: store shortcut %s: %w", name, err)
	}
	return nil
}

// parseForms parses POSTed forms before samlidp sees them: its IdP-initiated
// handler reads the login form's credentials without parsing the body.
func parseForms(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
			if err := r.ParseForm(); err != nil {
				http.Error(w, "bad form", http.StatusBadRequest)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// loginAndReturn finishes the login form of an SP-initiated login whose
// AuthnRequest came with the HTTP-Redirect binding: the form posts the
// credentials to the page's URL, /sso with the request, its RelayState and
// its query string signature as the service provider sent them. samlidp
// checks that signature against the SP's metadata, and can only when it
// reads the request from that query, so the credentials go to samlidp's
// own /login handler, which starts the IdP session, and the browser is sent
// back to the same URL with GET (303), where samlidp verifies the request
// again and answers it with the session, as an IdP that keeps the request
// while the user logs in does. Wrong credentials get samlidp's answer: the
// form again, with its message.
func (s *Server) loginAndReturn(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != s.IDP.IDP.SSOURL.Path ||
			!r.URL.Query().Has("SAMLRequest") || r.PostForm.Get("user") == "" {
			next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		s.IDP.HandleLogin(rec, r)
		res := rec.Result()
		if res.StatusCode != http.StatusOK || len(res.Cookies()) == 0 {
			for name, values := range res.Header {
				w.Header()[name] = values
			}
			w.WriteHeader(res.StatusCode)
			w.Write(rec.Body.Bytes())
			return
		}
		for _, c := range res.Cookies() {
			http.SetCookie(w, c)
		}
		http.Redirect(w, r, r.URL.RequestURI(), http.StatusSeeOther)
	})
}

// serviceName turns an entity id (usually a URL) into a store key.
func serviceName(entityID string) string {
	r := strings.NewReplacer("://", "_", "/", "_", ":", "_", "?", "_", "#", "_")
	return r.Replace(entityID)
}

// GroupsAssertionMaker makes the server's assertions: samlidp's, with the
// user's groups added as a plain "groups" attribute, the name most IdPs
// (Okta, Keycloak, Auth0) are configured to use.
type GroupsAssertionMaker struct{}

// MakeAssertion sets req.Assertion for the user of session.
func (GroupsAssertionMaker) MakeAssertion(req *saml.IdpAuthnRequest, session *saml.Session) error {
	if err := (saml.DefaultAssertionMaker{}).MakeAssertion(req, session); err != nil {
		return err
	}
	if len(session.Groups) == 0 {
		return nil
	}
	attr := saml.Attribute{
		Name:       GroupsAttribute,
		NameFormat: "urn:oasis:names:tc:SAML:2.0:attrname-format:basic",
	}
	for _, g := range session.Groups {
		attr.Values = append(attr.Values, saml.AttributeValue{Type: "xs:string", Value: g})
	}
	stmts := req.Assertion.AttributeStatements
	stmts[len(stmts)-1].Attributes = append(stmts[len(stmts)-1].Attributes, attr)
	return nil
}

// NewKeyPair makes an RSA key and a self-signed certificate named name: an
// IdP's signing pair (SimpleSAMLphp's too, which signs with RSA only), or
// what a service provider's key files hold, for a Shape to encrypt to.
func NewKeyPair(name string) (*rsa.PrivateKey, *x509.Certificate, error) {
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
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
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

// printfLogger adapts slog to samlidp's Printf-style logger.
type printfLogger struct{ l *slog.Logger }

func (p printfLogger) Printf(format string, v ...any) { p.l.Debug(fmt.Sprintf(format, v...)) }
func (p printfLogger) Print(v ...any)                 { p.l.Debug(fmt.Sprint(v...)) }
func (p printfLogger) Println(v ...any)               { p.l.Debug(fmt.Sprint(v...)) }
func (p printfLogger) Fatal(v ...any)                 { p.l.Error(fmt.Sprint(v...)) }
func (p printfLogger) Fatalf(format string, v ...any) { p.l.Error(fmt.Sprintf(format, v...)) }
func (p printfLogger) Fatalln(v ...any)               { p.l.Error(fmt.Sprint(v...)) }
func (p printfLogger) Panic(v ...any)                 { panic(fmt.Sprint(v...)) }
func (p printfLogger) Panicf(format string, v ...any) { panic(fmt.Sprintf(format, v...)) }
func (p printfLogger) Panicln(v ...any)               { panic(fmt.Sprint(v...)) }
