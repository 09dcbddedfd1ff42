package idp

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"

	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

func TestSAMLLoginEndToEnd(t *testing.T) {
	e := newSAMLEnv(t, nil)

	start := time.Now()
	f, post := e.login(t, "alice", "alice-pw")
	prof, tokens, err := e.p.Complete(post.request(), f)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SAML login round trip (LoginURL → IdP form → credentials → ACS post → Complete): %s", elapsed)
	if tokens != nil {
		t.Errorf("SAML login returned tokens %+v, want nil", tokens)
	}
	if post.RelayState != f.State {
		t.Errorf("RelayState = %q, want the flow state %q", post.RelayState, f.State)
	}
	want := Profile{
		IdP: "corp", Sub: "alice@example.com", Email: "alice@example.com", Username: "alice",
		FirstName: "Alice", LastName: "Liddell", Name: "Alice Liddell",
		Groups: []string{"cvat-admins", "staff"},
	}
	got := *prof
	got.Claims = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("profile =\n%+v\nwant\n%+v", got, want)
	}
	for name, value := range map[string]any{
		"groups":                            []string{"cvat-admins", "staff"},
		"mail":                              "alice@example.com",
		"urn:oid:0.9.2342.19200300.100.1.3": "alice@example.com",
		"eduPersonAffiliation":              []string{"cvat-admins", "staff"},
		"givenName":                         "Alice",
	} {
		if !reflect.DeepEqual(prof.Claims[name], value) {
			t.Errorf("claims[%q] = %#v, want %#v", name, prof.Claims[name], value)
		}
	}

	// A second login reuses the IdP session: no form, straight back.
	start = time.Now()
	f2, post2 := e.login(t, "alice", "")
	if _, _, err := e.p.Complete(post2.request(), f2); err != nil {
		t.Fatal(err)
	}
	t.Logf("SAML login round trip with an IdP session: %s", time.Since(start))
}

// A user in 1,000 groups logs in: the response's size and shape stay within
// maxSAMLResponse and responseLimits, as IdPs send it and as samlidp
// does, with each group twice.
func TestSAMLLoginWithManyGroups(t *testing.T) {
	tests := []struct {
		name string
		// group names the i-th group.
		group func(i int) string
		// maker makes the IdP's assertions; nil is samlserver's.
		maker saml.AssertionMaker
	}{
		{
			name:  "1,000 groups in one attribute, as Okta and Keycloak send them",
			group: func(i int) string { return fmt.Sprintf("cvat-project-%04d-annotators", i) },
			maker: samlGroupsOnce{},
		},
		{
			// Short names: 2,000 values of longer ones would not fit in
			// maxSAMLResponse.
			name:  "1,000 groups each sent twice (groups and eduPersonAffiliation), as samlidp sends them",
			group: func(i int) string { return fmt.Sprintf("g%03d", i) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			carol := samlserver.User{Name: "carol", Password: "carol-pw", Email: "carol@example.com"}
			for i := range 1000 {
				carol.Groups = append(carol.Groups, tc.group(i))
			}
			e := newSAMLEnvWith(t, samlserver.Options{Users: []samlserver.User{carol}, AssertionMaker: tc.maker}, nil)
			f, post := e.login(t, carol.Name, carol.Password)
			raw, err := base64.StdEncoding.DecodeString(post.SAMLResponse)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("response: %d bytes of XML, %d AttributeValue elements", len(raw), strings.Count(string(raw), "<saml:AttributeValue "))
			prof, _, err := e.p.Complete(post.request(), f)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(prof.Groups, carol.Groups) {
				t.Errorf("profile has %d groups, want the user's %d", len(prof.Groups), len(carol.Groups))
			}
		})
	}
}

// samlGroupsOnce is samlserver's assertion without eduPersonAffiliation,
// where samlidp repeats the groups: each group once, as the IdPs in
// docs/saml.md send them.
type samlGroupsOnce struct{}

func (samlGroupsOnce) MakeAssertion(req *saml.IdpAuthnRequest, s *saml.Session) error {
	if err := (samlserver.GroupsAssertionMaker{}).MakeAssertion(req, s); err != nil {
		return err
	}
	for i := range req.Assertion.AttributeStatements {
		st := &req.Assertion.AttributeStatements[i]
		st.Attributes = slices.DeleteFunc(st.Attributes, func(a saml.Attribute) bool { return a.FriendlyName == "eduPersonAffiliation" })
	}
	return nil
}

func TestSAMLLoginURL(t *testing.T) {
	e := newSAMLEnv(t, nil)
	f := &Flow{State: "st/with+chars=", IdP: "corp"}
	raw, err := e.p.LoginURL(f)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if got := u.Scheme + "://" + u.Host + u.Path; got != e.idp.SSOURL() {
		t.Errorf("login URL goes to %q, want the IdP's SSO URL %q", got, e.idp.SSOURL())
	}
	if q.Get("RelayState") != f.State {
		t.Errorf("RelayState = %q, want %q", q.Get("RelayState"), f.State)
	}
	if q.Get("Signature") == "" || q.Get("SigAlg") == "" {
		t.Errorf("AuthnRequest is not signed: %s", raw)
	}
	req := samlInflateRequest(t, q.Get("SAMLRequest"))
	root := req.Root()
	if id := root.SelectAttrValue("ID", ""); id != f.RequestID {
		t.Errorf("AuthnRequest ID %q, Flow.RequestID %q", id, f.RequestID)
	}
	if acs := root.SelectAttrValue("AssertionConsumerServiceURL", ""); acs != "https://portcullis.test/.portcullis/saml/corp/acs" {
		t.Errorf("ACS URL %q", acs)
	}
	if iss := root.FindElement("./Issuer"); iss == nil || iss.Text() != "https://portcullis.test/.portcullis/saml/corp/metadata" {
		t.Errorf("AuthnRequest issuer is not the SP metadata URL")
	}
}

func samlInflateRequest(t *testing.T, s string) *etree.Document {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	xmlBytes, err := decodeSAMLResponse(base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		t.Fatal(err)
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(xmlBytes); err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestSAMLMetadata(t *testing.T) {
	e := newSAMLEnv(t, nil)
	md, err := e.p.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(md); err != nil {
		t.Fatal(err)
	}
	root := doc.Root()
	if got := root.SelectAttrValue("entityID", ""); got != "https://portcullis.test/.portcullis/saml/corp/metadata" {
		t.Errorf("entityID = %q", got)
	}
	acs := root.FindElements("./SPSSODescriptor/AssertionConsumerService")
	if len(acs) != 1 || acs[0].SelectAttrValue("Binding", "") != "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" ||
		acs[0].SelectAttrValue("Location", "") != "https://portcullis.test/.portcullis/saml/corp/acs" {
		t.Errorf("want exactly one HTTP-POST ACS at the acs URL, got %d", len(acs))
	}
	keys := root.FindElements("./SPSSODescriptor/KeyDescriptor")
	if len(keys) != 1 || keys[0].SelectAttrValue("use", "") != "signing" {
		t.Errorf("want one signing key and no encryption key, got %d key descriptors", len(keys))
	}
	if !strings.Contains(string(md), `AuthnRequestsSigned="true"`) {
		t.Errorf("metadata does not say AuthnRequests are signed")
	}
}

func TestSAMLStaticCertAndSSOURL(t *testing.T) {
	// The IdP checks AuthnRequest signatures against the SP certificate it
	// was given, so both providers sign with the same configured key pair.
	e := newSAMLEnv(t, func(c *Config) { c.SPCertFile, c.SPKeyFile, _ = writeSPKeyPair(t) })
	srv := e.idp
	// A second provider for the same IdP, configured without metadata.
	c := e.p.cfg
	c.MetadataURL, c.X509Cert, c.SSOURL = "", srv.CertificatePEM(), srv.SSOURL()
	p, err := newSAMLProvider(t.Context(), c, samlTestOptions(), defaultSAMLTiming)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Ready(); err != nil {
		t.Fatal(err)
	}
	// Same entity id and ACS as the registered one, so the IdP accepts it.
	e.p = p
	f, post := e.login(t, "bob", "bob-pw")
	prof, _, err := p.Complete(post.request(), f)
	if err != nil {
		t.Fatal(err)
	}
	if prof.Email != "bob@example.com" || prof.Groups != nil {
		t.Errorf("profile %+v, want bob with no groups", prof)
	}
}

func TestSAMLIdPInitiated(t *testing.T) {
	for _, tc := range []struct {
		name  string
		allow bool
		ok    bool
	}{
		{"IdP-initiated login is accepted when allow_idp_initiated is true", true, true},
		{"IdP-initiated login is refused when allow_idp_initiated is false", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSAMLEnv(t, func(c *Config) { c.AllowIdPInitiated = tc.allow })
			if err := e.idp.AddShortcut("portcullis", e.p.base.EntityID, "/after-login"); err != nil {
				t.Fatal(err)
			}
			post := e.browse(t, e.idp.URL+"/login/portcullis", "alice", "alice-pw")
			prof, _, err := e.p.Complete(post.request(), nil)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				if prof.Email != "alice@example.com" || post.RelayState != "/after-login" {
					t.Errorf("profile %+v relay state %q", prof, post.RelayState)
				}
			} else if err == nil {
				t.Fatal("IdP-initiated response accepted")
			}
		})
	}
}

func TestSAMLCompleteRefusesGET(t *testing.T) {
	e := newSAMLEnv(t, nil)
	f, post := e.login(t, "alice", "alice-pw")
	r := post.request()
	r.Method = http.MethodGet
	if _, _, err := e.p.Complete(r, f); err == nil {
		t.Fatal("GET to the ACS accepted")
	}
}
