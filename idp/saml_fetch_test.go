package idp

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/beevik/etree"
)

// Nothing in a response at the ACS makes portcullis fetch a URL: not the
// key references of XML Signature (ds:RetrievalMethod, ds:KeyInfoReference,
// ds:X509URL; XMLTooling's SSRF, Shibboleth SP advisory 2023-06-12,
// CVE-2023-36661), not a DTD or an external entity (XMLTooling's
// CVE-2018-0486), not an XInclude. Whoever posts to the ACS could otherwise
// make the proxy call addresses inside its network. A document type
// declaration is refused before anything parses the response; the rest
// are verified to the end and log the IdP's user in, with no request made.
func TestSAMLResponseURLsAreNeverFetched(t *testing.T) {
	var fetched atomic.Int64
	lure := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetched.Add(1)
		w.Write([]byte(`<!ENTITY lured "bob@example.com">`))
	}))
	t.Cleanup(lure.Close)
	at := lure.URL + "/lure"

	// addToKeyInfo adds children to the KeyInfo of the outermost signature
	// (the response's, or the assertion's when it is the only one), which
	// that signature does not cover: the IdP's signatures stay valid, and
	// the response is verified to the end.
	addToKeyInfo := func(names ...string) func(testing.TB, *etree.Element, *etree.Element) {
		return func(t testing.TB, resp, a *etree.Element) {
			ki := resp.FindElement("./Signature/KeyInfo")
			if ki == nil {
				ki = a.FindElement("./Signature/KeyInfo")
			}
			if ki == nil {
				t.Fatal("the IdP's signature has no KeyInfo")
			}
			for _, name := range names {
				el := ki.CreateElement(qualified(ki.Space, name))
				el.CreateAttr("URI", at)
				el.SetText(at)
			}
		}
	}
	// withPrologue puts text between the XML declaration and the root.
	withPrologue := func(prologue string) func(t *testing.T, xml string) string {
		return func(t *testing.T, xml string) string {
			i := strings.Index(xml, "<samlp:Response")
			if i < 0 {
				t.Fatalf("no samlp:Response in %.200s", xml)
			}
			return xml[:i] + prologue + xml[i:]
		}
	}
	for _, tc := range []struct {
		name   string
		sign   samlSigning
		mutate func(testing.TB, *etree.Element, *etree.Element)
		raw    func(t *testing.T, xml string) string // edits the XML as text, after mutate
		login  bool                                  // the response is the user's login still
	}{
		{name: "ds:RetrievalMethod in the response's KeyInfo", sign: untouchedSignatures, mutate: addToKeyInfo("RetrievalMethod"), login: true},
		{name: "ds:KeyInfoReference in the response's KeyInfo", sign: untouchedSignatures, mutate: addToKeyInfo("KeyInfoReference"), login: true},
		{name: "ds:RetrievalMethod in the assertion's KeyInfo", sign: assertionSignatureOnly, mutate: addToKeyInfo("RetrievalMethod"), login: true},
		{name: "ds:RetrievalMethod, X509URL and KeyInfoReference together", sign: assertionSignatureOnly,
			mutate: addToKeyInfo("RetrievalMethod", "X509URL", "KeyInfoReference"), login: true},
		{name: "external DTD", sign: untouchedSignatures, raw: withPrologue(`<!DOCTYPE samlp:Response SYSTEM "` + at + `">`)},
		{name: "external parameter entity", sign: untouchedSignatures, raw: withPrologue(`<!DOCTYPE samlp:Response [<!ENTITY % ext SYSTEM "` + at + `"> %ext;]>`)},
		{
			name: "external entity used in the NameID", sign: signedByIdP,
			mutate: func(t testing.TB, resp, a *etree.Element) {
				setText(t, a, "./Subject/NameID", "ENTITYREF")
			},
			raw: func(t *testing.T, xml string) string {
				xml = withPrologue(`<!DOCTYPE samlp:Response [<!ENTITY xxe SYSTEM "`+at+`">]>`)(t, xml)
				return strings.Replace(xml, "ENTITYREF", "&xxe;", 1)
			},
		},
		{
			name: "XInclude in an attribute value signed by the IdP", sign: signedByIdP, login: true,
			mutate: func(t testing.TB, resp, a *etree.Element) {
				v := a.FindElement("./AttributeStatement/Attribute/AttributeValue")
				if v == nil {
					t.Fatal("no AttributeValue")
				}
				inc := v.CreateElement("xi:include")
				inc.CreateAttr("xmlns:xi", "http://www.w3.org/2001/XInclude")
				inc.CreateAttr("href", at)
				inc.CreateAttr("parse", "text")
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSAMLEnv(t, nil)
			user := samlUsers[0]
			f, post := e.login(t, user.Name, user.Password)
			keys := samlSigners{idpKey: e.idp.Key, idpCert: e.idp.Certificate}
			forged := forgeResponse(t, post.SAMLResponse, samlForgery{name: tc.name, sign: tc.sign, mutate: tc.mutate}, keys)
			if tc.raw != nil {
				xml, err := base64.StdEncoding.DecodeString(forged)
				if err != nil {
					t.Fatal(err)
				}
				forged = base64.StdEncoding.EncodeToString([]byte(tc.raw(t, string(xml))))
			}
			before := fetched.Load()
			post.SAMLResponse = forged
			prof, _, err := e.p.Complete(post.request(), f)
			if n := fetched.Load() - before; n != 0 {
				t.Fatalf("the response made portcullis fetch %s %d times", at, n)
			}
			switch {
			case tc.login && err != nil:
				t.Fatalf("refused (%v); want the IdP's response verified to the end", err)
			case !tc.login && err == nil:
				t.Fatalf("accepted as %q; want it refused", prof.Email)
			case err == nil && prof.Email != user.Email:
				t.Fatalf("logged in as %q, want %q", prof.Email, user.Email)
			}
		})
	}
}

// qualified is name with the prefix space, if any.
func qualified(space, name string) string {
	if space == "" {
		return name
	}
	return space + ":" + name
}
