package sspserver

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/xml"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"

	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

func TestServer(t *testing.T) {
	spKey, spCert, err := samlserver.NewKeyPair("sp")
	if err != nil {
		t.Fatal(err)
	}
	const entity = "http://127.0.0.1:1/sp/metadata"
	s := Start(t, Options{
		Users:            []User{{Name: "ann", Password: "pw", Attributes: map[string][]string{"mail": {"ann@example.edu"}}}},
		ServiceProviders: []ServiceProvider{{EntityID: entity, ACS: "http://127.0.0.1:1/sp/acs", Certificate: spCert}},
	})

	resp, err := http.Get(s.MetadataURL())
	if err != nil {
		t.Fatal(err)
	}
	var md saml.EntityDescriptor
	err = xml.NewDecoder(resp.Body).Decode(&md)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("metadata names the entity ID, the SSO and SLO URLs", func(t *testing.T) {
		if md.EntityID != s.EntityID() || len(md.IDPSSODescriptors) != 1 {
			t.Fatalf("metadata: entity %q, %d IDPSSODescriptors", md.EntityID, len(md.IDPSSODescriptors))
		}
		d := md.IDPSSODescriptors[0]
		if len(d.SingleSignOnServices) == 0 || d.SingleSignOnServices[0].Location != s.SSOURL() {
			t.Errorf("SingleSignOnServices %+v, want %s", d.SingleSignOnServices, s.SSOURL())
		}
		if len(d.SingleLogoutServices) == 0 || d.SingleLogoutServices[0].Location != s.SLOURL() {
			t.Errorf("SingleLogoutServices %+v, want %s", d.SingleLogoutServices, s.SLOURL())
		}
	})

	// validate.authnrequest is on for an SP with a certificate: what the
	// e2e tests log in with was checked against it.
	for _, tc := range []struct {
		name    string
		key     *rsa.PrivateKey
		signed  bool
		refusal string // in SimpleSAMLphp's log; none: the login form
	}{
		{name: "an AuthnRequest signed with the SP's key leads to the login form", key: spKey, signed: true},
		{name: "an unsigned AuthnRequest is refused", key: spKey, refusal: "no signature found"},
		{name: "an AuthnRequest signed with another key is refused", key: mustKey(t), signed: true, refusal: "Unable to validate signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp := saml.ServiceProvider{EntityID: entity, AcsURL: *mustParse(t, "http://127.0.0.1:1/sp/acs"), IDPMetadata: &md, Key: tc.key, Certificate: spCert}
			if tc.signed {
				sp.SignatureMethod = dsig.RSASHA256SignatureMethod
			}
			u, err := sp.MakeRedirectAuthenticationRequest("state")
			if err != nil {
				t.Fatal(err)
			}
			// SimpleSAMLphp sends a browser without cookies to no_cookie.php.
			jar, _ := cookiejar.New(nil)
			resp, err := (&http.Client{Jar: jar}).Get(u.String())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			// Its error page is a 200 too.
			atLogin := resp.StatusCode == http.StatusOK && resp.Request.URL.Path == LoginPath
			if atLogin != (tc.refusal == "") {
				t.Errorf("GET the AuthnRequest ended at %s with %d; want the login form: %v", resp.Request.URL, resp.StatusCode, tc.refusal == "")
			}
			if tc.refusal != "" && !s.Logged(tc.refusal) {
				t.Errorf("SimpleSAMLphp's log does not say %q:\n%s", tc.refusal, s.Logs())
			}
		})
	}
}

// An IdP-initiated login (IdPInitiatedURL) needs no AuthnRequest: after
// the login form the IdP posts an unsolicited Response, with the
// RelayState, to the SP's ACS; saml:PersistentNameID gives it a
// persistent NameID, not the uid it hashes.
func TestServerIdPInitiated(t *testing.T) {
	const entity = "http://127.0.0.1:1/persistent/metadata"
	s := Start(t, Options{
		Users: []User{{Name: "ann", Password: "pw", Attributes: map[string][]string{"uid": {"ann"}}}},
		ServiceProviders: []ServiceProvider{{EntityID: entity, ACS: "http://127.0.0.1:1/persistent/acs",
			NameIDFormat: string(saml.PersistentNameIDFormat), PersistentNameID: "uid"}},
	})
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Get(s.IdPInitiatedURL(entity, "/somewhere"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	authState := resp.Request.URL.Query().Get("AuthState")
	if resp.Request.URL.Path != LoginPath || authState == "" {
		t.Fatalf("IdPInitiatedURL led to %s, want the login form", resp.Request.URL)
	}
	resp, err = c.PostForm(resp.Request.URL.String(), url.Values{"username": {"ann"}, "password": {"pw"}, "AuthState": {authState}})
	if err != nil {
		t.Fatal(err)
	}
	var page strings.Builder
	_, err = io.Copy(&page, resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	field := func(name string) string {
		m := regexp.MustCompile(`name="` + name + `" value="([^"]*)"`).FindStringSubmatch(page.String())
		if m == nil {
			t.Fatalf("no %s in the IdP's answer page:\n%s", name, page.String())
		}
		return html.UnescapeString(m[1])
	}
	if got := field("RelayState"); got != "/somewhere" {
		t.Errorf("RelayState %q, want /somewhere", got)
	}
	raw, err := base64.StdEncoding.DecodeString(field("SAMLResponse"))
	if err != nil {
		t.Fatal(err)
	}
	var r saml.Response
	if err := xml.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	if r.InResponseTo != "" || r.Destination != "http://127.0.0.1:1/persistent/acs" {
		t.Errorf("Response InResponseTo %q, Destination %q; want none and the ACS", r.InResponseTo, r.Destination)
	}
	if r.Assertion == nil || r.Assertion.Subject == nil || r.Assertion.Subject.NameID == nil {
		t.Fatalf("no NameID in the assertion:\n%s", raw)
	}
	if nid := r.Assertion.Subject.NameID; nid.Format != string(saml.PersistentNameIDFormat) || nid.Value == "" || nid.Value == "ann" {
		t.Errorf("NameID %+v, want a persistent one that is not the uid itself", nid)
	}
}

func mustKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
