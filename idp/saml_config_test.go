package idp

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/crewjam/saml"
)

// writeSPKeyPair writes a fresh key pair as PEM files and returns the paths
// and the certificate.
func writeSPKeyPair(t *testing.T) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, cert := samlTestKeyPair(t)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "sp.crt"), filepath.Join(dir, "sp.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

// writeEd25519KeyPair writes a self-signed Ed25519 certificate and its key
// as PEM files, a pair tls.LoadX509KeyPair loads.
func writeEd25519KeyPair(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sp"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "sp.crt"), filepath.Join(dir, "sp.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestValidateSAML(t *testing.T) {
	certFile, keyFile, cert := writeSPKeyPair(t)
	otherCert, _, _ := writeSPKeyPair(t)
	edCert, edKey := writeEd25519KeyPair(t)
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
	certB64 := base64.StdEncoding.EncodeToString(cert.Raw)
	wrapped := strings.Join([]string{certB64[:64], certB64[64:]}, "\n  ")

	tests := []struct {
		name string
		edit func(c *Config)
		want []string
	}{
		{"metadata_url form is valid", func(c *Config) {}, nil},
		{"x509_cert (PEM) and sso_url form is valid", func(c *Config) {
			c.MetadataURL, c.X509Cert, c.SSOURL = "", certPEM, "https://sso.company.com/sso"
		}, nil},
		{"x509_cert as bare base64 with line breaks is valid", func(c *Config) {
			c.MetadataURL, c.X509Cert, c.SSOURL = "", wrapped, "https://sso.company.com/sso"
		}, nil},
		{"entity_id is required", func(c *Config) { c.EntityID = "" }, []string{"entity_id: required"}},
		{"metadata_url or x509_cert and sso_url is required", func(c *Config) { c.MetadataURL = "" },
			[]string{"metadata_url: required unless x509_cert and sso_url are given"}},
		{"x509_cert alone lacks sso_url", func(c *Config) { c.MetadataURL, c.X509Cert = "", certPEM },
			[]string{"sso_url: required with x509_cert"}},
		{"sso_url alone lacks x509_cert", func(c *Config) { c.MetadataURL, c.SSOURL = "", "https://sso.company.com/sso" },
			[]string{"x509_cert: required with sso_url"}},
		{"both forms at once are refused", func(c *Config) { c.X509Cert, c.SSOURL = certPEM, "https://sso.company.com/sso" },
			[]string{"x509_cert: not used with metadata_url", "sso_url: not used with metadata_url"}},
		{"metadata_url must be an http(s) URL", func(c *Config) { c.MetadataURL = "ldap://sso.company.com/md" },
			[]string{"metadata_url: must be an http or https URL"}},
		{"metadata_url over plain http to a remote host is refused", func(c *Config) { c.MetadataURL = "http://sso.company.com/saml/metadata" },
			[]string{`metadata_url: plain http refused outside development: the host "sso.company.com" is not loopback`}},
		{"metadata_url over plain http to an address that only looks local is refused", func(c *Config) { c.MetadataURL = "http://127.0.0.1.nip.io/md" },
			[]string{"metadata_url: plain http refused"}},
		{"metadata_url over plain http to 127.0.0.1 is valid", func(c *Config) { c.MetadataURL = "http://127.0.0.1:8080/md" }, nil},
		{"metadata_url over plain http to [::1] is valid", func(c *Config) { c.MetadataURL = "http://[::1]:8080/md" }, nil},
		{"metadata_url over plain http to localhost is valid", func(c *Config) { c.MetadataURL = "http://localhost:8080/md" }, nil},
		{"metadata_url must be absolute", func(c *Config) { c.MetadataURL = "/saml/metadata" },
			[]string{"metadata_url: not an absolute URL"}},
		{"x509_cert that is no certificate is refused", func(c *Config) {
			c.MetadataURL, c.X509Cert, c.SSOURL = "", "not a cert!", "https://sso.company.com/sso"
		}, []string{"x509_cert: neither PEM nor base64 DER"}},
		{"sp_cert_file and sp_key_file load", func(c *Config) { c.SPCertFile, c.SPKeyFile = certFile, keyFile }, nil},
		{"sp_cert_file needs sp_key_file", func(c *Config) { c.SPCertFile = certFile }, []string{"sp_key_file: required with sp_cert_file"}},
		{"sp_key_file needs sp_cert_file", func(c *Config) { c.SPKeyFile = keyFile }, []string{"sp_cert_file: required with sp_key_file"}},
		{"a certificate that does not match the key is refused", func(c *Config) { c.SPCertFile, c.SPKeyFile = otherCert, keyFile },
			[]string{"sp_cert_file: cannot load key pair"}},
		{"a missing key file is refused", func(c *Config) { c.SPCertFile, c.SPKeyFile = certFile, "/nonexistent/sp.key" },
			[]string{"sp_cert_file: cannot load key pair"}},
		{"an Ed25519 key pair is refused: AuthnRequests are signed with RSA or ECDSA", func(c *Config) { c.SPCertFile, c.SPKeyFile = edCert, edKey },
			[]string{"sp_cert_file: key type ed25519.PrivateKey not supported (want RSA or ECDSA)"}},
		{"single_sign_out with metadata_url is valid (the metadata names the SingleLogoutService)", func(c *Config) { c.SingleSignOut = true }, nil},
		{"single_sign_out with x509_cert, sso_url and slo_url is valid", func(c *Config) {
			c.MetadataURL, c.X509Cert, c.SSOURL, c.SLOURL, c.SingleSignOut = "", certPEM, "https://sso.company.com/sso", "https://sso.company.com/slo", true
		}, nil},
		{"single_sign_out with x509_cert and sso_url needs slo_url", func(c *Config) {
			c.MetadataURL, c.X509Cert, c.SSOURL, c.SingleSignOut = "", certPEM, "https://sso.company.com/sso", true
		}, []string{"slo_url: required with single_sign_out and x509_cert"}},
		{"slo_url without single_sign_out is refused", func(c *Config) {
			c.MetadataURL, c.X509Cert, c.SSOURL, c.SLOURL = "", certPEM, "https://sso.company.com/sso", "https://sso.company.com/slo"
		}, []string{"slo_url: used only with single_sign_out: true"}},
		{"slo_url must be an http(s) URL", func(c *Config) {
			c.MetadataURL, c.X509Cert, c.SSOURL, c.SLOURL, c.SingleSignOut = "", certPEM, "https://sso.company.com/sso", "ldap://sso.company.com/slo", true
		}, []string{"slo_url: must be an http or https URL"}},
		{"slo_url must not be a javascript: URL", func(c *Config) {
			c.MetadataURL, c.X509Cert, c.SSOURL, c.SingleSignOut = "", certPEM, "https://sso.company.com/sso", true
			c.SLOURL = "javascript:alert(document.domain)"
		}, []string{"slo_url: not an absolute URL"}},
		{"slo_url must not be relative", func(c *Config) {
			c.MetadataURL, c.X509Cert, c.SSOURL, c.SLOURL, c.SingleSignOut = "", certPEM, "https://sso.company.com/sso", "/saml/slo", true
		}, []string{"slo_url: not an absolute URL"}},
		{"slo_url must have a host", func(c *Config) {
			c.MetadataURL, c.X509Cert, c.SSOURL, c.SLOURL, c.SingleSignOut = "", certPEM, "https://sso.company.com/sso", "https:///evil.example/slo", true
		}, []string{"slo_url: not an absolute URL"}},
		{"slo_url with metadata_url is refused", func(c *Config) { c.SLOURL, c.SingleSignOut = "https://sso.company.com/slo", true },
			[]string{"slo_url: not used with metadata_url"}},
		{"attribute_mapping of known fields is valid", func(c *Config) {
			c.AttributeMapping = map[string]string{"uid": "employeeID", "email": "mail", "groups": "memberOf", "email_verified": "emailVerified"}
		}, nil},
		{"attribute_mapping of an unknown field is refused", func(c *Config) { c.AttributeMapping = map[string]string{"role": "x"} },
			[]string{"attribute_mapping.role: unknown profile field"}},
		{"attribute_mapping to an empty attribute name is refused", func(c *Config) { c.AttributeMapping = map[string]string{"email": " "} },
			[]string{"attribute_mapping.email: empty attribute name"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{ID: "corp", Protocol: SAML, EntityID: "https://sso.company.com", MetadataURL: "https://sso.company.com/saml/metadata"}
			tc.edit(&c)
			errs := c.validateSAML()
			if len(errs) != len(tc.want) {
				t.Fatalf("errors %q, want %d matching %q", errs, len(tc.want), tc.want)
			}
			for i, want := range tc.want {
				if !strings.HasPrefix(errs[i].Error(), want) {
					t.Errorf("error %d = %q, want prefix %q", i, errs[i], want)
				}
			}
			// Validate reports the same through errors.Join.
			if err := c.Validate(); (err == nil) != (len(tc.want) == 0) {
				t.Errorf("Validate = %v", err)
			}
		})
	}
}

func TestSAMLConfiguredSPKeyPair(t *testing.T) {
	certFile, keyFile, cert := writeSPKeyPair(t)
	e := newSAMLEnv(t, func(c *Config) { c.SPCertFile, c.SPKeyFile = certFile, keyFile })
	if !e.p.base.Certificate.Equal(cert) {
		t.Fatal("the provider does not use sp_cert_file")
	}
	md, err := e.p.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), base64.StdEncoding.EncodeToString(cert.Raw)) {
		t.Error("SP metadata does not carry the configured certificate")
	}
	f, post := e.login(t, "alice", "alice-pw")
	if _, _, err := e.p.Complete(post.request(), f); err != nil {
		t.Fatal(err)
	}
}

func TestNewSAMLRefusesInvalidConfig(t *testing.T) {
	_, err := New(t.Context(), Config{ID: "corp", Protocol: SAML}, samlTestOptions())
	if err == nil || !strings.Contains(err.Error(), "entity_id: required") {
		t.Fatalf("New = %v, want the validation error", err)
	}
}

func TestNewSAMLRequiresAReplayStore(t *testing.T) {
	o := samlTestOptions()
	o.Replay = nil
	c := Config{ID: "corp", Protocol: SAML, EntityID: "https://idp.example.com", MetadataURL: "https://idp.example.com/md"}
	_, err := New(t.Context(), c, o)
	if err == nil || !strings.Contains(err.Error(), "Replay is required") {
		t.Fatalf("New = %v, want an error naming Options.Replay", err)
	}
}

func TestSAMLProfileMapping(t *testing.T) {
	attr := func(name, friendly string, values ...string) saml.Attribute {
		a := saml.Attribute{Name: name, FriendlyName: friendly}
		for _, v := range values {
			a.Values = append(a.Values, saml.AttributeValue{Value: v})
		}
		return a
	}
	assertion := func(nameID string, attrs ...saml.Attribute) *saml.Assertion {
		return &saml.Assertion{
			Subject:             &saml.Subject{NameID: &saml.NameID{Value: nameID}},
			AttributeStatements: []saml.AttributeStatement{{Attributes: attrs}},
		}
	}
	azure := assertion("A1B2C3",
		attr("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress", "", "ada@corp.com"),
		attr("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname", "", "Ada"),
		attr("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname", "", "Lovelace"),
		attr("http://schemas.microsoft.com/ws/2008/06/identity/claims/groups", "", "g1", "g2"),
		attr("department", "", "R&D"),
	)
	tests := []struct {
		name    string
		mapping map[string]string
		in      *saml.Assertion
		want    Profile
		wantErr string
	}{
		{
			name: "defaults read Azure AD claim URIs and sub is the NameID",
			in:   azure,
			want: Profile{IdP: "corp", Sub: "A1B2C3", Email: "ada@corp.com", FirstName: "Ada", LastName: "Lovelace",
				Name: "Ada Lovelace", Groups: []string{"g1", "g2"}},
		},
		{
			name:    "uid maps sub from an attribute",
			mapping: map[string]string{"uid": "department"},
			in:      azure,
			want: Profile{IdP: "corp", Sub: "R&D", Email: "ada@corp.com", FirstName: "Ada", LastName: "Lovelace",
				Name: "Ada Lovelace", Groups: []string{"g1", "g2"}},
		},
		{
			name:    "a mapped uid attribute that is missing refuses the login",
			mapping: map[string]string{"uid": "employeeNumber"},
			in:      azure,
			wantErr: "attribute_mapping.uid",
		},
		{
			name:    "mapping names an attribute by FriendlyName; repeated attributes merge",
			mapping: map[string]string{"email": "mail", "groups": "memberOf", "email_verified": "verified", "username": "uid"},
			in: assertion("n",
				attr("urn:oid:0.9.2342.19200300.100.1.3", "mail", "m@x.org"),
				attr("memberOf", "", "a"), attr("memberOf", "", "b"),
				attr("verified", "", "TRUE"),
				attr("urn:oid:0.9.2342.19200300.100.1.1", "uid", "mx")),
			want: Profile{IdP: "corp", Sub: "n", Email: "m@x.org", EmailVerified: true, Username: "mx", Groups: []string{"a", "b"}},
		},
		{
			name:    "an email_verified attribute saying false leaves the address unverified",
			mapping: map[string]string{"email_verified": "verified"},
			in:      assertion("n", attr("mail", "", "m@x.org"), attr("verified", "", "false")),
			want:    Profile{IdP: "corp", Sub: "n", Email: "m@x.org"},
		},
		{
			name: "blank group values are dropped and the others trimmed",
			in:   assertion("n", attr("groups", "", " staff ", "", "  ")),
			want: Profile{IdP: "corp", Sub: "n", Groups: []string{"staff"}},
		},
		{
			// Shibboleth sends eduPersonTargetedID so.
			name:    "an attribute value that is a NameID counts as the NameID's value",
			mapping: map[string]string{"uid": "urn:oid:1.3.6.1.4.1.5923.1.1.1.10"},
			in: assertion("transient-1", saml.Attribute{Name: "urn:oid:1.3.6.1.4.1.5923.1.1.1.10",
				Values: []saml.AttributeValue{{NameID: &saml.NameID{Value: "a1b2c3", Format: "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"}}}}),
			want: Profile{IdP: "corp", Sub: "a1b2c3"},
		},
		{
			name:    "no NameID and no uid mapping refuses the login",
			in:      assertion(""),
			wantErr: "no NameID",
		},
		{
			// Entra ID sends groups.link instead of the groups claim past 150
			// groups; logging in without them would drop the user to the
			// default role.
			name: "Entra ID group overage (groups.link) refuses the login",
			in: assertion("A1B2C3",
				attr("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress", "", "ada@corp.com"),
				attr("http://schemas.microsoft.com/claims/groups.link", "",
					"https://graph.windows.net/tenant/users/A1B2C3/getMemberObjects")),
			wantErr: "more groups than Microsoft",
		},
		{
			name:    "Entra ID group overage refuses the login with groups mapped to the claim URI",
			mapping: map[string]string{"groups": "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"},
			in: assertion("A1B2C3",
				attr("http://schemas.microsoft.com/claims/groups.link", "", "https://graph.microsoft.com/v1.0/users/A1B2C3/getMemberObjects")),
			wantErr: "more groups than Microsoft",
		},
		{
			name:    "groups.link is ignored when groups come from another attribute",
			mapping: map[string]string{"groups": "roles"},
			in: assertion("A1B2C3",
				attr("roles", "", "cvat-admins"),
				attr("http://schemas.microsoft.com/claims/groups.link", "", "https://graph.microsoft.com/v1.0/users/A1B2C3/getMemberObjects")),
			want: Profile{IdP: "corp", Sub: "A1B2C3", Groups: []string{"cvat-admins"}},
		},
		{
			// ADFS's "Group" claim type (Token-Groups as claims) and Auth0's
			// SAML add-on send groups under this URI.
			name: "defaults read the ADFS and Auth0 Group claim URI and ADFS's upn",
			in: assertion("S-1-5-21",
				attr("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn", "", "ada@corp.com"),
				attr("http://schemas.xmlsoap.org/claims/Group", "", "CVAT Admins", "Domain Users")),
			want: Profile{IdP: "corp", Sub: "S-1-5-21", Username: "ada@corp.com", Groups: []string{"CVAT Admins", "Domain Users"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newSAMLMapping(tc.mapping)
			got, err := m.profile("corp", tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one about %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			claims := got.Claims
			got.Claims, got.missing = nil, nil // Missing: TestMissingClaims
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("profile\n%+v\nwant\n%+v", *got, tc.want)
			}
			if len(claims) == 0 {
				t.Error("no claims")
			}
		})
	}
	t.Run("every attribute is a claim: one value a string, several a list, friendly names too", func(t *testing.T) {
		m := newSAMLMapping(nil)
		got, err := m.profile("corp", assertion("n",
			attr("urn:oid:2.5.4.42", "givenName", "Ada"),
			attr("roles", "", "x", "y"),
			attr("department", "", "R&D"),
			// A FriendlyName that is another attribute's Name does not
			// take that claim: expressions that name it read the IdP's
			// attribute of that Name.
			attr("urn:oid:2.5.4.11", "department", "Sales")))
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"urn:oid:2.5.4.42": "Ada", "givenName": "Ada", "roles": []string{"x", "y"}, "department": "R&D",
			"urn:oid:2.5.4.11": "Sales"}
		if !reflect.DeepEqual(got.Claims, want) {
			t.Errorf("claims %#v, want %#v", got.Claims, want)
		}
	})
}

// TestStaticIdPMetadataHasTheSLOURL: an IdP configured by x509_cert and
// sso_url has slo_url as its SingleLogoutService, where single sign-out
// sends the browser.
func TestStaticIdPMetadataHasTheSLOURL(t *testing.T) {
	_, _, cert := writeSPKeyPair(t)
	md, err := staticIdPMetadata(Config{X509Cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		SSOURL: "https://sso.company.com/sso", SLOURL: "https://sso.company.com/slo"})
	if err != nil {
		t.Fatal(err)
	}
	slo := md.IDPSSODescriptors[0].SingleLogoutServices
	if len(slo) != 1 || slo[0].Location != "https://sso.company.com/slo" || slo[0].Binding != saml.HTTPRedirectBinding {
		t.Errorf("SingleLogoutServices = %+v, want slo_url over HTTP-Redirect", slo)
	}
}
