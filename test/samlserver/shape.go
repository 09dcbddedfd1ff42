package samlserver

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/http"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	"github.com/crewjam/saml/xmlenc"
	dsig "github.com/russellhaering/goxmldsig"
)

// Signing says which elements of its answer an IdP signs.
type Signing int

const (
	// SignBoth signs the assertion and the response around it, as samlidp
	// (and Okta) do.
	SignBoth Signing = iota
	// SignResponse signs the response only (Shibboleth's default, ADFS's
	// "MessageOnly").
	SignResponse
	// SignAssertion signs the assertion only (Entra ID's and ADFS's
	// default, Auth0's add-on).
	SignAssertion
)

// Shape is how the IdP makes its answers to one service provider: which
// elements it signs, with which algorithms and key, whether it encrypts
// the assertion, and what it changes in the assertion. The zero Shape is
// samlidp's own answer.
type Shape struct {
	// Sign says what is signed.
	Sign Signing
	// SignatureMethod is the signature algorithm URI (goxmldsig's
	// RSASHA1SignatureMethod, RSASHA512SignatureMethod…); "" is
	// RSA-SHA256. The digests use the same hash, as goxmldsig makes them.
	SignatureMethod string
	// C14NWithComments signs with exclusive canonicalization "with
	// comments" (xml-exc-c14n#WithComments) instead of without.
	C14NWithComments bool
	// SignWithNext signs with the next key pair (Options.NextCertificate),
	// as an IdP does once it has rolled its certificate over.
	SignWithNext bool
	// EncryptTo, when set, encrypts the signed assertion to this
	// certificate (the SP certificate an operator uploaded at the IdP),
	// whether or not the SP metadata offers an encryption key.
	EncryptTo *x509.Certificate
	// Encrypter encrypts for EncryptTo; nil is crewjam's default
	// (RSA-OAEP-MGF1P, AES-128-CBC).
	Encrypter xmlenc.Encrypter
	// Assertion, when set, changes the assertion the AssertionMaker made
	// before it is signed.
	Assertion func(a *saml.Assertion)
}

// shapedWriter writes samlidp's answers, made per the Shape of the
// service provider they go to (by entity ID); others as samlidp does.
type shapedWriter struct {
	s      *Server
	shapes map[string]Shape
}

func (w shapedWriter) WriteResponse(rw http.ResponseWriter, req *saml.IdpAuthnRequest) error {
	shape, ok := Shape{}, false
	if req.ServiceProviderMetadata != nil {
		shape, ok = w.shapes[req.ServiceProviderMetadata.EntityID]
	}
	if !ok || req.Assertion == nil || req.ResponseEl != nil {
		return req.WriteResponse(rw)
	}
	if shape.Assertion != nil {
		shape.Assertion(req.Assertion)
	}
	el, err := w.s.shapedResponse(req, shape)
	if err != nil {
		return fmt.Errorf("samlserver: make the answer to %s: %w", req.ServiceProviderMetadata.EntityID, err)
	}
	req.ResponseEl = el
	return req.WriteResponse(rw)
}

// shapedResponse is MakeAssertionEl and MakeResponse of crewjam's IdP,
// with what shape says signed, with its algorithms and key, and encrypted.
func (s *Server) shapedResponse(req *saml.IdpAuthnRequest, shape Shape) (*etree.Element, error) {
	key, cert := s.Key, s.Certificate
	if shape.SignWithNext {
		if s.NextKey == nil {
			return nil, fmt.Errorf("SignWithNext without Options.NextCertificate")
		}
		key, cert = s.NextKey, s.NextCertificate
	}
	ctx := dsig.NewDefaultSigningContext(dsig.TLSCertKeyStore(tls.Certificate{
		Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}))
	ctx.Canonicalizer = dsig.MakeC14N10ExclusiveCanonicalizerWithPrefixList("")
	if shape.C14NWithComments {
		ctx.Canonicalizer = dsig.MakeC14N10ExclusiveWithCommentsCanonicalizerWithPrefixList("")
	}
	method := shape.SignatureMethod
	if method == "" {
		method = dsig.RSASHA256SignatureMethod
	}
	if err := ctx.SetSignatureMethod(method); err != nil {
		return nil, err
	}

	// The signature goes where the schema puts it, after the Issuer, as
	// crewjam's IdP places it: signed enveloped, then rendered again.
	assertionEl := req.Assertion.Element()
	if shape.Sign != SignResponse {
		signed, err := ctx.SignEnveloped(assertionEl)
		if err != nil {
			return nil, fmt.Errorf("sign assertion: %w", err)
		}
		req.Assertion.Signature = signed.ChildElements()[len(signed.ChildElements())-1]
		assertionEl = req.Assertion.Element()
	}
	if shape.EncryptTo != nil {
		doc := etree.NewDocument()
		doc.SetRoot(assertionEl)
		plain, err := doc.WriteToBytes()
		if err != nil {
			return nil, err
		}
		enc := shape.Encrypter
		if enc == nil {
			oaep := xmlenc.OAEP()
			oaep.DigestMethod = &xmlenc.SHA1
			oaep.BlockCipher = xmlenc.AES128CBC
			enc = oaep
		}
		data, err := enc.Encrypt(shape.EncryptTo, plain, nil)
		if err != nil {
			return nil, fmt.Errorf("encrypt assertion: %w", err)
		}
		data.CreateAttr("Type", "http://www.w3.org/2001/04/xmlenc#Element")
		assertionEl = etree.NewElement("saml:EncryptedAssertion")
		assertionEl.AddChild(data)
	}

	id := make([]byte, 20)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	response := &saml.Response{
		Destination:  req.ACSEndpoint.Location,
		ID:           "id-" + hex.EncodeToString(id),
		InResponseTo: req.Request.ID,
		IssueInstant: req.Now,
		Version:      "2.0",
		Issuer:       &saml.Issuer{Format: "urn:oasis:names:tc:SAML:2.0:nameid-format:entity", Value: req.IDP.MetadataURL.String()},
		Status:       saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusSuccess}},
	}
	responseEl := response.Element()
	responseEl.AddChild(assertionEl)
	if shape.Sign != SignAssertion {
		signed, err := ctx.SignEnveloped(responseEl)
		if err != nil {
			return nil, fmt.Errorf("sign response: %w", err)
		}
		response.Signature = signed.ChildElements()[len(signed.ChildElements())-1]
		responseEl = response.Element()
		responseEl.AddChild(assertionEl)
	}
	return responseEl, nil
}
