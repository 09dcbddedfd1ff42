package e2e

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crewjam/saml"
	"github.com/crewjam/saml/xmlenc"
	dsig "github.com/russellhaering/goxmldsig"

	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// samlInteropConfig is the proxy in front of every SAML entry of the test
// (IDENTITY_PROVIDERS). The second admin rule is docs/saml.md's for an
// IdP that sends the groups as one comma-separated value.
const samlInteropConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [SESSION_KEY]
sso:
  identity_providers:
IDENTITY_PROVIDERS
role_mapping:
  roles: [admin, user]
  default: user
  rules:
    - role: admin
      when: '"cvat-admins" in groups'
    - role: admin
      when: 'any(groups, {"cvat-admins" in split(#, ",")})'
attribute_pass:
  headers:
    X-Sub: sub
    X-Email: email
    X-Groups: 'join(groups, "|")'
    X-Roles: 'join(roles, ",")'
`

// samlInteropCase is one way an IdP may be set up, with the proxy's entry
// for it, whose id names the service provider at the IdP.
type samlInteropCase struct {
	name  string
	id    string
	shape samlserver.Shape
	// mapping is the entry's attribute_mapping, YAML flow style.
	mapping string
	// spKey: the entry has sp_cert_file and sp_key_file, of spCert.
	spKey bool
	// sub, groups: what the upstream gets; default the NameID samlidp
	// sends (the email) and alice's two groups.
	sub, groups string
	// failReason, when set, is the login_failed reason expected instead
	// of a login, with hints that the line's hint must mention.
	failReason string
	hints      []string
}

// Attribute edits of the assertion samlidp makes, as other IdPs name and
// group what they send.
func attr(name, friendly string, values ...string) saml.Attribute {
	a := saml.Attribute{Name: name, FriendlyName: friendly, NameFormat: "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"}
	if friendly == "" && !strings.Contains(name, ":") {
		a.NameFormat = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
	}
	for _, v := range values {
		a.Values = append(a.Values, saml.AttributeValue{Type: "xs:string", Value: v})
	}
	return a
}

// statements replaces the assertion's attributes with these statements.
func statements(stmts ...[]saml.Attribute) func(*saml.Assertion) {
	return func(a *saml.Assertion) {
		a.AttributeStatements = nil
		for _, s := range stmts {
			a.AttributeStatements = append(a.AttributeStatements, saml.AttributeStatement{Attributes: s})
		}
	}
}

// nameID sets the assertion's NameID; an empty format leaves none.
func nameID(format saml.NameIDFormat, value string) func(*saml.Assertion) {
	return func(a *saml.Assertion) {
		a.Subject.NameID = nil
		if format != "" {
			a.Subject.NameID = &saml.NameID{Format: string(format), Value: value}
		}
	}
}

func TestSAMLProviderVariationsLogIn(t *testing.T) {
	s := listen(t)
	spKey, spCert, err := samlserver.NewKeyPair("portcullis saml sp")
	if err != nil {
		t.Fatal(err)
	}
	_, otherCert, err := samlserver.NewKeyPair("an older portcullis saml sp")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := writeRSAPair(t, spKey, spCert)
	enc := func(newRSA func() xmlenc.RSA, cipher xmlenc.BlockCipher) xmlenc.Encrypter {
		e := newRSA()
		e.BlockCipher = cipher
		return e
	}
	// cbcHints are what the hint for CBC data in an unsigned response
	// names: the ADFS and Entra ID settings that sign it, and AES-GCM.
	cbcHints := []string{"CBC", "-SamlResponseSignature MessageAndAssertion", "Sign SAML response and assertion", "AES-GCM"}
	alice := samlAlice
	azure := []saml.Attribute{
		attr("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress", "", alice.Email),
		attr("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "", alice.Email),
		attr("http://schemas.microsoft.com/ws/2008/06/identity/claims/groups", "", alice.Groups...),
	}

	cases := []samlInteropCase{
		{name: "response and assertion signed RSA-SHA256 (samlidp, Okta)", id: "both"},
		{name: "response signed only (Shibboleth, ADFS MessageOnly)", id: "response-only",
			shape: samlserver.Shape{Sign: samlserver.SignResponse}},
		{name: "assertion signed only (Entra ID, ADFS, Auth0)", id: "assertion-only",
			shape: samlserver.Shape{Sign: samlserver.SignAssertion}},
		{name: "signed RSA-SHA512", id: "sha512",
			shape: samlserver.Shape{SignatureMethod: dsig.RSASHA512SignatureMethod}},
		{name: "assertion signed only, RSA-SHA512", id: "assertion-sha512",
			shape: samlserver.Shape{Sign: samlserver.SignAssertion, SignatureMethod: dsig.RSASHA512SignatureMethod}},
		{name: "signed with exclusive c14n with comments", id: "c14n-comments",
			shape: samlserver.Shape{C14NWithComments: true}},
		{name: "signed with the next certificate, listed second in the metadata (rollover)", id: "next-cert",
			shape: samlserver.Shape{SignWithNext: true, Sign: samlserver.SignAssertion}},
		{name: "signed RSA-SHA1 (old ADFS, Shibboleth) is refused, naming SHA-1", id: "sha1",
			shape:      samlserver.Shape{SignatureMethod: dsig.RSASHA1SignatureMethod},
			failReason: "saml_sha1", hints: []string{"SHA-1", "SHA-256"}},
		{name: "assertion signed only RSA-SHA1 is refused, naming SHA-1", id: "assertion-sha1",
			shape:      samlserver.Shape{Sign: samlserver.SignAssertion, SignatureMethod: dsig.RSASHA1SignatureMethod},
			failReason: "saml_sha1", hints: []string{"SHA-1"}},

		{name: "assertion encrypted AES-128-CBC, RSA-OAEP-MGF1P, signed only itself (ADFS) is refused, naming response signing", id: "enc-adfs", spKey: true,
			shape:      samlserver.Shape{Sign: samlserver.SignAssertion, EncryptTo: spCert},
			failReason: "saml_encrypted", hints: cbcHints},
		{name: "the same with the response signed too (ADFS MessageAndAssertion)", id: "enc-adfs-signed", spKey: true,
			shape: samlserver.Shape{EncryptTo: spCert}},
		{name: "assertion encrypted AES-256-CBC, signed only itself (Entra ID) is refused, naming response signing", id: "enc-entra", spKey: true,
			shape:      samlserver.Shape{Sign: samlserver.SignAssertion, EncryptTo: spCert, Encrypter: enc(xmlenc.OAEP, xmlenc.AES256CBC)},
			failReason: "saml_encrypted", hints: cbcHints},
		{name: "the same with the response signed too (Entra ID: Sign SAML response and assertion)", id: "enc-entra-signed", spKey: true,
			shape: samlserver.Shape{EncryptTo: spCert, Encrypter: enc(xmlenc.OAEP, xmlenc.AES256CBC)}},
		{name: "assertion encrypted AES-128-GCM, signed only itself", id: "enc-gcm", spKey: true,
			shape: samlserver.Shape{Sign: samlserver.SignAssertion, EncryptTo: spCert, Encrypter: enc(xmlenc.OAEP, xmlenc.AES128GCM)}},
		{name: "assertion encrypted AES-256-GCM, RSA-OAEP (XML Encryption 1.1), response signed (Shibboleth)", id: "enc-shibboleth", spKey: true,
			shape: samlserver.Shape{Sign: samlserver.SignResponse, EncryptTo: spCert, Encrypter: enc(xmlenc.OAEP_SHA256, xmlenc.AES256GCM)}},
		{name: "assertion encrypted AES-256-CBC, both signed (Okta)", id: "enc-okta", spKey: true,
			shape: samlserver.Shape{EncryptTo: spCert, Encrypter: enc(xmlenc.OAEP, xmlenc.AES256CBC)}},
		{name: "assertion encrypted AES-128-GCM and signed only itself, for another SP entity ID, is named as such", id: "enc-audience", spKey: true,
			shape: samlserver.Shape{Sign: samlserver.SignAssertion, EncryptTo: spCert, Encrypter: enc(xmlenc.OAEP, xmlenc.AES128GCM), Assertion: func(a *saml.Assertion) {
				a.Conditions.AudienceRestrictions[0].Audience.Value = "https://cvat.example.com"
			}},
			failReason: "saml_audience", hints: []string{`"https://cvat.example.com"`, "Audience URI"}},
		{name: "assertion key transported with RSA 1.5 is refused, naming RSA-OAEP", id: "enc-rsa15", spKey: true,
			shape:      samlserver.Shape{EncryptTo: spCert, Encrypter: enc(xmlenc.PKCS1v15, xmlenc.AES128CBC)},
			failReason: "saml_encrypted", hints: []string{"RSA 1.5", "RSA-OAEP"}},
		{name: "assertion encrypted to another certificate than sp_cert_file's is refused, naming sp_cert_file", id: "enc-other-cert", spKey: true,
			shape:      samlserver.Shape{EncryptTo: otherCert},
			failReason: "saml_encrypted", hints: []string{"sp_cert_file"}},
		{name: "assertion encrypted without sp_cert_file is refused, naming sp_cert_file", id: "enc-no-sp-key",
			shape:      samlserver.Shape{EncryptTo: spCert},
			failReason: "saml_encrypted", hints: []string{"sp_cert_file", "sp_key_file"}},

		{name: "NameID persistent", id: "persistent", sub: "4b1d3c5e-persistent",
			shape: samlserver.Shape{Assertion: nameID(saml.PersistentNameIDFormat, "4b1d3c5e-persistent")}},
		{name: "NameID transient, uid from an attribute", id: "transient", mapping: "{uid: uid}", sub: alice.Name,
			shape: samlserver.Shape{Assertion: nameID(saml.TransientNameIDFormat, "_a3f9e0c1d2b4")}},
		{name: "NameID unspecified", id: "unspecified", sub: "ALICE",
			shape: samlserver.Shape{Assertion: nameID(saml.UnspecifiedNameIDFormat, "ALICE")}},
		{name: "no NameID, the user id an attribute, is refused, naming the NameID", id: "no-nameid", mapping: "{uid: uid}",
			shape:      samlserver.Shape{Assertion: nameID("", "")},
			failReason: "saml_nameid", hints: []string{"NameID"}},

		{name: "attributes named by Entra ID's claim URIs", id: "azure-uris",
			shape: samlserver.Shape{Assertion: statements(azure)}},
		{name: "attributes named by OID with FriendlyName, mapped by FriendlyName", id: "oids", mapping: "{email: mail, groups: eduPersonAffiliation}",
			shape: samlserver.Shape{Assertion: statements([]saml.Attribute{
				attr("urn:oid:0.9.2342.19200300.100.1.3", "mail", alice.Email),
				attr("urn:oid:1.3.6.1.4.1.5923.1.1.1.1", "eduPersonAffiliation", alice.Groups...)})}},
		{name: "attributes named by short names (Okta, Google Workspace)", id: "short", mapping: "{email: email, groups: groups}",
			shape: samlserver.Shape{Assertion: statements([]saml.Attribute{attr("email", "", alice.Email), attr("groups", "", alice.Groups...)})}},
		{name: "attributes over several AttributeStatements, a group per statement", id: "split",
			shape: samlserver.Shape{Assertion: statements(
				[]saml.Attribute{attr("email", "", alice.Email), attr("groups", "", alice.Groups[0])},
				[]saml.Attribute{attr("groups", "", alice.Groups[1])})}},
		{name: "groups as one comma-separated value, split by the role rule", id: "comma-groups", groups: "cvat-admins,staff",
			shape: samlserver.Shape{Assertion: statements([]saml.Attribute{attr("email", "", alice.Email), attr("groups", "", "cvat-admins,staff")})}},

		{name: "an extra Audience beside this SP's", id: "extra-audience",
			shape: samlserver.Shape{Assertion: func(a *saml.Assertion) {
				r := &a.Conditions.AudienceRestrictions[0]
				r.AdditionalAudiences = append(r.AdditionalAudiences, r.Audience)
				r.Audience = saml.Audience{Value: "urn:amazon:webservices"}
			}}},
		{name: "Conditions without NotBefore", id: "no-notbefore",
			shape: samlserver.Shape{Assertion: func(a *saml.Assertion) { a.Conditions.NotBefore = time.Time{} }}},
		{name: "SubjectConfirmationData with NotBefore", id: "scd-notbefore",
			shape: samlserver.Shape{Assertion: func(a *saml.Assertion) {
				a.Subject.SubjectConfirmations[0].SubjectConfirmationData.NotBefore = a.IssueInstant.Add(-time.Minute)
			}}},
		{name: "AuthnStatement with SessionNotOnOrAfter", id: "session-not-on-or-after",
			shape: samlserver.Shape{Assertion: func(a *saml.Assertion) {
				later := a.IssueInstant.Add(8 * time.Hour)
				a.AuthnStatements[0].SessionNotOnOrAfter = &later
			}}},
	}

	entity := func(id string) string { return s.URL + "/.portcullis/saml/" + id + "/metadata" }
	shapes := map[string]samlserver.Shape{}
	for _, c := range cases[1:] {
		shapes[entity(c.id)] = c.shape
	}
	// Every entry reads metadata with two signing certificates and an
	// encryption certificate of its own, as an IdP's during a rollover.
	idpSrv := samlserver.Start(t, samlserver.Options{Users: []samlserver.User{alice},
		Shapes: shapes, NextCertificate: true, EncryptionCertificate: true})

	var entries strings.Builder
	for _, c := range cases {
		fmt.Fprintf(&entries, "    - id: %s\n      protocol: SAML\n      entity_id: %s\n      metadata_url: %s\n", c.id, idpSrv.EntityID(), idpSrv.MetadataURL())
		if c.mapping != "" {
			fmt.Fprintf(&entries, "      attribute_mapping: %s\n", c.mapping)
		}
		if c.spKey {
			fmt.Fprintf(&entries, "      sp_cert_file: %s\n      sp_key_file: %s\n", certFile, keyFile)
		}
	}
	logs := s.startLogged(t, strings.Replace(samlInteropConfig, "IDENTITY_PROVIDERS", entries.String(), 1))
	for _, c := range cases {
		if err := idpSrv.AddServiceProviderURL(t.Context(), entity(c.id)); err != nil {
			t.Fatal(err)
		}
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := browser(t)
			resp := samlLogin(t, b, idpSrv.SSOURL(), s.URL+"/.portcullis/login/"+c.id+"?rd=/tasks", alice.Name, alice.Password)
			if !interopLoginEnded(t, s, logs, b, resp, "/.portcullis/saml/"+c.id+"/acs", c.failReason, c.hints) {
				return
			}
			sub, groups := c.sub, c.groups
			if sub == "" {
				sub = alice.Email
			}
			if groups == "" {
				groups = strings.Join(alice.Groups, "|")
			}
			h := upstreamSees(t, b, s)
			if got := h.Get("X-Sub"); got != sub {
				t.Errorf("X-Sub = %q, want %q", got, sub)
			}
			if e, g, r := h.Get("X-Email"), h.Get("X-Groups"), h.Get("X-Roles"); e != alice.Email || g != groups || r != "admin" {
				t.Errorf("X-Email %q, X-Groups %q, X-Roles %q; want %s, %s, admin", e, g, r, alice.Email, groups)
			}
		})
	}
}

// writeRSAPair writes key and cert as PEM files, as sp_cert_file and
// sp_key_file name them.
func writeRSAPair(t *testing.T, key *rsa.PrivateKey, cert *x509.Certificate) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "sp.crt"), filepath.Join(dir, "sp.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
