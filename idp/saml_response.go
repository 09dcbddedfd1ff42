package idp

import (
	"bytes"
	"compress/flate"
	"crypto/rsa"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	"github.com/crewjam/saml/xmlenc"
)

const (
	samlProtocolNS  = "urn:oasis:names:tc:SAML:2.0:protocol"
	samlAssertionNS = "urn:oasis:names:tc:SAML:2.0:assertion"
	xmlencNS        = "http://www.w3.org/2001/04/xmlenc#"
)

var errResponseTooLarge = fmt.Errorf("SAMLResponse larger than %d bytes", maxSAMLResponse)

// decodeSAMLResponse turns the posted form value into response XML. The
// HTTP-POST binding sends plain base64; a few IdPs deflate it as the Redirect
// binding does, so a body that is not XML is inflated, under the same limit.
func decodeSAMLResponse(form string) ([]byte, error) {
	if form == "" {
		return nil, errors.New("no SAMLResponse in the form")
	}
	// Checked before decoding so that a huge value costs nothing more;
	// the slack allows for line breaks some IdPs put in the base64.
	if len(form) > base64.StdEncoding.EncodedLen(maxSAMLResponse)*11/10 {
		return nil, errResponseTooLarge
	}
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(form), ""))
	if err != nil {
		return nil, fmt.Errorf("base64: %w", err)
	}
	if len(raw) > maxSAMLResponse {
		return nil, errResponseTooLarge
	}
	if trimmed := bytes.TrimLeft(raw, " \t\r\n\ufeff"); len(trimmed) > 0 && trimmed[0] == '<' {
		return raw, nil
	}
	inflated, err := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(raw)), maxSAMLResponse+1))
	if err != nil {
		return nil, fmt.Errorf("neither XML nor deflated XML: %w", err)
	}
	if len(inflated) > maxSAMLResponse {
		return nil, fmt.Errorf("inflated %w", errResponseTooLarge)
	}
	return inflated, nil
}

// errEncryptedAssertion refuses what this entry cannot decrypt: without
// sp_cert_file and sp_key_file the SP key is generated at start, so no IdP
// can have been given its certificate to encrypt to; an ECDSA key decrypts
// nothing.
var errEncryptedAssertion = errors.New("EncryptedAssertion refused: this entry has no RSA key of sp_cert_file and sp_key_file to decrypt it with")

// encryptionError is an EncryptedAssertion whose key transport this entry
// cannot undo: an algorithm crewjam/saml refuses (RSA 1.5), or a key
// encrypted to another certificate. Nothing of the assertion has been
// decrypted then, so saying which tells a sender nothing about it.
type encryptionError struct{ err error }

func (e encryptionError) Error() string { return e.err.Error() }
func (e encryptionError) Unwrap() error { return e.err }

// cbcUnsignedError is an EncryptedAssertion in CBC mode in a Response
// without signature, refused before anything of it is decrypted.
type cbcUnsignedError struct{ algorithm string }

func (e cbcUnsignedError) Error() string {
	return fmt.Sprintf("EncryptedAssertion not decrypted: its data is encrypted with %s, a CBC cipher, which authenticates nothing, and the Response is not signed", e.algorithm)
}

// gcmAlgorithms are the XML Encryption 1.1 block ciphers in GCM mode:
// authenticated, so a modified ciphertext fails to decrypt whatever it
// would decrypt to.
var gcmAlgorithms = map[string]bool{
	xmlenc.AES128GCM.Algorithm(): true,
	xmlenc.AES192GCM.Algorithm(): true,
	xmlenc.AES256GCM.Algorithm(): true,
}

// cbcAlgorithms are those crewjam/saml's RequireSignedResponseForCBC
// holds back: the block ciphers in CBC mode.
var cbcAlgorithms = map[string]bool{
	xmlenc.AES128CBC.Algorithm(): true,
	xmlenc.AES192CBC.Algorithm(): true,
	xmlenc.AES256CBC.Algorithm(): true,
	xmlenc.TripleDES.Algorithm(): true,
}

// inspectedResponse is what inspectResponse found in a response.
type inspectedResponse struct {
	// response is the Response element, as received.
	response *etree.Element
	// assertion is its one assertion, for the checks that need more of it
	// than crewjam's parsed form keeps (checkAudience, samlDiagnose): a
	// child of response or, decrypted from an EncryptedAssertion, the root
	// of its plaintext, read alone, as crewjam/saml verifies and reads it
	// (the response's namespace declarations do not reach it). nil for a
	// response with none, and for an EncryptedAssertion left encrypted.
	assertion *etree.Element
	// encrypted: assertion was decrypted from an EncryptedAssertion.
	encrypted bool
}

// inspectResponse refuses shapes that crewjam/saml would accept but that
// carry known attacks: more than one assertion, encrypted or not (signature
// wrapping: crewjam returns the first that verifies, wherever the others
// hide), and XML comments (exclusive canonicalization drops them, so a
// comment can split a signed NameID such as alice@example.com<!---->.evil.com
// without breaking the signature). Both are checked before anything is
// decrypted.
//
// An EncryptedAssertion, which crewjam reads only as a child of the
// Response, is decrypted with key (nil: errEncryptedAssertion) and its
// plaintext held to the same rules, since a user could encrypt a tampered
// assertion of their own to the SP certificate; crewjam decrypts it again,
// to the same plaintext: both use the one EncryptedKey allowed. Data in GCM
// mode is decrypted whoever sent it. Data in CBC mode (or any mode but GCM)
// is decrypted only from the Response as its signature covers it, when
// verify, the check of a signature against the IdP's certificates, accepts
// it, as crewjam does with RequireSignedResponseForCBC: decrypting
// unauthenticated CBC data is the format oracle of Jager and Somorovsky
// (2011), which learns the plaintext from how fast the answer comes, bad
// padding or XML at once, well-formed XML after the signature check. In a
// Response without signature it is a cbcUnsignedError; in one whose
// signature does not verify it is left encrypted, for crewjam to refuse the
// signature.
//
// A response with no assertion is one an IdP that refuses the login sends:
// it says so in the status and MUST NOT send an assertion (saml-profiles
// 4.1.4.2), and crewjam reads that status once it has checked the
// response's Destination, InResponseTo and Issuer; one with a status of
// Success and no assertion it refuses.
func inspectResponse(data []byte, key *rsa.PrivateKey, verify func(*etree.Element) (*etree.Element, error)) (inspectedResponse, error) {
	var none inspectedResponse
	if err := scanXML(data, "response", responseLimits); err != nil {
		return none, err
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(data); err != nil {
		return none, fmt.Errorf("parse XML: %w", err)
	}
	root := doc.Root()
	if root == nil || root.Tag != "Response" || root.NamespaceURI() != samlProtocolNS {
		return none, errors.New("root element is not a SAML 2.0 Response")
	}
	found := inspectedResponse{response: root}
	assertions, encrypted, err := findAssertions(root)
	if err != nil {
		return none, err
	}
	if n := len(assertions) + len(encrypted); n > 1 {
		return none, fmt.Errorf("response carries %d assertions, want exactly 1", n)
	}
	if len(assertions) == 1 {
		found.assertion = assertions[0]
		return found, nil
	}
	if len(encrypted) == 0 {
		return found, nil
	}
	enc := encrypted[0]
	if enc.Parent() != root {
		return none, fmt.Errorf("EncryptedAssertion inside <%s>: refused, crewjam/saml reads one only as a child of the Response", enc.Parent().Tag)
	}
	if key == nil {
		return none, errEncryptedAssertion
	}
	if algorithm, authenticated := dataAlgorithm(enc); !authenticated {
		if !signed(root) {
			if cbcAlgorithms[algorithm] {
				return none, cbcUnsignedError{algorithm}
			}
			return none, fmt.Errorf("EncryptedAssertion not decrypted: its data algorithm %q is not supported in a Response without signature", truncate(algorithm, 128))
		}
		covered, err := verify(root)
		if err != nil {
			// Nothing is decrypted before the signature holds.
			return found, nil
		}
		// Decrypted from what the signature covers, as crewjam does.
		_, coveredEnc, err := findAssertions(covered)
		if err != nil || len(coveredEnc) != 1 || coveredEnc[0].Parent() != covered {
			return found, nil
		}
		enc = coveredEnc[0]
	}
	plain, err := decryptAssertion(enc, key)
	if err != nil {
		return none, err
	}
	// Whatever fails from here on is refused like a plaintext assertion:
	// the one plain refusal, as for data that does not decrypt.
	inner, innerEncrypted, err := findAssertions(plain)
	if err != nil {
		return none, err
	}
	if n := len(inner) + len(innerEncrypted); n > 1 {
		return none, fmt.Errorf("response carries %d assertions, want exactly 1", n)
	}
	found.assertion, found.encrypted = plain, true
	return found, nil
}

// findAssertions returns the Assertion and EncryptedAssertion elements of
// the SAML assertion namespace in el and below, el included, and refuses
// XML comments anywhere in el.
func findAssertions(el *etree.Element) (assertions, encrypted []*etree.Element, err error) {
	var walk func(el *etree.Element) error
	walk = func(el *etree.Element) error {
		if el.NamespaceURI() == samlAssertionNS {
			switch el.Tag {
			case "Assertion":
				assertions = append(assertions, el)
			case "EncryptedAssertion":
				encrypted = append(encrypted, el)
			}
		}
		for _, tok := range el.Child {
			switch t := tok.(type) {
			case *etree.Comment:
				return fmt.Errorf("XML comment inside <%s>: refused, comments can alter signed values", el.Tag)
			case *etree.Element:
				if err := walk(t); err != nil {
					return err
				}
			}
		}
		return nil
	}
	err = walk(el)
	return assertions, encrypted, err
}

// dataAlgorithm is the algorithm that decrypts the data of enc, an
// EncryptedAssertion, and whether it authenticates the data: it does only
// if every EncryptionMethod of every EncryptedData in enc, of any
// namespace, names AES-GCM, since crewjam/saml's RequireSignedResponseForCBC
// looks at them all and xmlenc uses the first it finds. The algorithm
// returned is a CBC one, if any is.
func dataAlgorithm(enc *etree.Element) (string, bool) {
	var algorithms []string
	for _, data := range enc.ChildElements() {
		if data.Tag != "EncryptedData" {
			continue
		}
		for _, method := range data.ChildElements() {
			if method.Tag == "EncryptionMethod" {
				algorithms = append(algorithms, method.SelectAttrValue("Algorithm", ""))
			}
		}
	}
	for _, a := range algorithms {
		if cbcAlgorithms[a] {
			return a, false
		}
	}
	for _, a := range algorithms {
		if !gcmAlgorithms[a] {
			return a, false
		}
	}
	if len(algorithms) == 0 {
		return "", false
	}
	return algorithms[0], true
}

// decryptAssertion decrypts an EncryptedAssertion with crewjam/saml's
// xmlenc as crewjam's decryptWithKeys does: its one EncryptedData of the
// XML Encryption namespace, the content key in the one EncryptedKey that
// crewjam would try, of any namespace, beside the data or inside its
// KeyInfo (crewjam tries them all and uses the first that decrypts, so
// with two it could decrypt another plaintext than this one). A failure
// to unwrap the key is an encryptionError; a failure past it (the data's
// padding or tag, a plaintext that is no well-formed assertion within
// responseLimits) is one plain error, whatever failed: which one would
// tell whoever modified a ciphertext about its plaintext.
func decryptAssertion(enc *etree.Element, key *rsa.PrivateKey) (*etree.Element, error) {
	var data []*etree.Element
	for _, c := range enc.ChildElements() {
		if c.Tag == "EncryptedData" && c.NamespaceURI() == xmlencNS {
			data = append(data, c)
		}
	}
	if len(data) != 1 {
		return nil, fmt.Errorf("EncryptedAssertion has %d EncryptedData, want 1", len(data))
	}
	encKeys := append(enc.FindElements("./EncryptedKey"), data[0].FindElements("./KeyInfo/EncryptedKey")...)
	if len(encKeys) != 1 {
		return nil, fmt.Errorf("EncryptedAssertion has %d EncryptedKeys, want 1", len(encKeys))
	}
	contentKey, err := xmlenc.Decrypt(key, encKeys[0])
	if err != nil {
		return nil, encryptionError{fmt.Errorf("decrypt EncryptedAssertion key: %w", err)}
	}
	// The block ciphers would unwrap a KeyInfo EncryptedKey again; the
	// key is known now.
	cipher := data[0].Copy()
	for _, k := range cipher.FindElements("./KeyInfo/EncryptedKey") {
		k.Parent().RemoveChild(k)
	}
	errDecrypt := errors.New("decrypt EncryptedAssertion: the data does not decrypt to a well-formed assertion")
	plain, err := xmlenc.Decrypt(contentKey, cipher)
	if err != nil {
		return nil, errDecrypt
	}
	if scanXML(plain, "decrypted assertion", responseLimits) != nil {
		return nil, errDecrypt
	}
	doc := etree.NewDocument()
	if doc.ReadFromBytes(plain) != nil {
		return nil, errDecrypt
	}
	a := doc.Root()
	if a == nil || a.Tag != "Assertion" || a.NamespaceURI() != samlAssertionNS {
		return nil, errDecrypt
	}
	return a, nil
}

// xmlLimits bound the shape of a SAML message's XML; scanXML checks them.
// What inspectResponse and crewjam/saml allocate to check a message grows
// with its nodes and attributes, and with the namespaces in scope at each
// element (canonicalization copies them for every element), far more than
// with its bytes.
type xmlLimits struct {
	// elements bounds the elements.
	elements int
	// nodes bounds the elements and every other node: text (a run of
	// characters or a CDATA section), comments, processing instructions
	// and directives. An IdP that indents its XML has a text node between
	// every two tags.
	nodes int
	// attributes bounds the attributes, namespace declarations included.
	attributes int
	// depth bounds the nesting of elements; SAML messages nest 7 or 8 deep.
	depth int
	// namespaces bounds the namespace declarations in scope at an element;
	// IdPs have 3 to 6.
	namespaces int
}

// responseLimits are the limits of a response at the ACS. The IdP's signed
// response with 60,000 empty elements in its assertion (249 KB, posted
// deflated as 4.5 KB) cost 184 MB to refuse, with 55 namespaces declared
// over them 442 MB. The limits are about twice what a user in 1,000 groups
// needs: samlidp's response for one has 2,060 elements (each group twice,
// as groups and as eduPersonAffiliation), 2,000 text nodes, 4,075
// attributes, 7 levels and 5 namespaces in scope; Okta and Keycloak send a
// group once, with three attributes; Entra ID sends at most 150 groups;
// ADFS sends every group, about 60 bytes each, so that maxSAMLResponse and
// the element limit both stop it at 4,000 to 4,500.
var responseLimits = xmlLimits{elements: 4096, nodes: 3 * 4096, attributes: 2 * 4096, depth: 32, namespaces: 16}

// xmlShapeError is XML beyond its xmlLimits.
type xmlShapeError struct{ msg string }

func (e *xmlShapeError) Error() string { return e.msg }

// scanXML refuses XML of what (a "response", a "message") beyond limits,
// with an *xmlShapeError, in one streaming pass that builds nothing,
// before inspectResponse and crewjam/saml build trees of it. crewjam parses
// a message twice (xmlroundtrip, then etree) and canonicalizes what a
// signature covers before it compares the digest: parsing takes nothing
// but a post (93 MB for the 60,000 elements above with a signature made
// up), canonicalizing a message whose SignedInfo the IdP signed, which
// anyone with an account at the IdP has. Within responseLimits, a
// response costs what a real one of its size does: up to 38 MB at 256 KiB.
// XML that does not parse is refused as etree would refuse it.
func scanXML(data []byte, what string, limits xmlLimits) error {
	d := xml.NewDecoder(bytes.NewReader(data))
	// As etree reads it: the declared encoding is not converted.
	d.CharsetReader = func(_ string, r io.Reader) (io.Reader, error) { return r, nil }
	var declared []int // namespaces each open element declares
	elements, nodes, attrs, inScope := 0, 0, 0, 0
	rooted := false // the root element has begun
	beyond := func(format string, limit int) error {
		return &xmlShapeError{fmt.Sprintf(format, what, limit)}
	}
	for {
		tok, err := d.RawToken()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("parse XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			// SAML documents carry no DTD (crewjam/saml reads past one,
			// and nothing of it is expanded); one is no IdP's.
			return fmt.Errorf("%s has a document type declaration", what)
		case xml.StartElement:
			if rooted && len(declared) == 0 {
				// XML has one root; crewjam/saml reads the first and
				// nothing after it, which an IdP never sends.
				return fmt.Errorf("%s has an element after its root element", what)
			}
			rooted = true
			elements++
			attrs += len(t.Attr)
			n := 0
			for _, a := range t.Attr {
				if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
					n++
				}
			}
			declared = append(declared, n)
			inScope += n
		case xml.EndElement:
			// RawToken does not match end tags to start tags; etree
			// refuses XML where they do not match.
			if len(declared) > 0 {
				inScope -= declared[len(declared)-1]
				declared = declared[:len(declared)-1]
			}
			continue
		}
		nodes++
		switch {
		case elements > limits.elements:
			return beyond("%s has more than %d XML elements", limits.elements)
		case nodes > limits.nodes:
			return beyond("%s has more than %d XML nodes", limits.nodes)
		case attrs > limits.attributes:
			return beyond("%s has more than %d XML attributes", limits.attributes)
		case len(declared) > limits.depth:
			return beyond("%s nests XML elements more than %d deep", limits.depth)
		case inScope > limits.namespaces:
			return beyond("%s has more than %d XML namespace declarations in scope", limits.namespaces)
		}
	}
}

// parseAssertion runs crewjam/saml's checks: signatures against the IdP's
// certificates, issuer, destination, InResponseTo, a Subject, Conditions, an
// AuthnStatement, a bearer confirmation naming this ACS as Recipient, and
// validity times (MaxClockSkew, 180 s, of leeway). The audience is
// checkAudience's.
func parseAssertion(sp *saml.ServiceProvider, data []byte, requestIDs []string, acs url.URL) (*saml.Assertion, error) {
	a, err := sp.ParseXMLResponse(data, requestIDs, acs)
	if err != nil {
		// InvalidResponseError hides the reason behind a fixed message.
		var ire *saml.InvalidResponseError
		if errors.As(err, &ire) && ire.PrivateErr != nil {
			return nil, ire.PrivateErr
		}
		return nil, err
	}
	return a, nil
}

// checkAudience requires what SAML core (2.5.1.4) and the Web Browser SSO
// profile require: at least one AudienceRestriction, and every one of them
// naming entityID. crewjam/saml checks the same since v0.6; this check stays
// because its error says which restriction fails. It reads the XML that
// inspectResponse found, after crewjam verified it.
func checkAudience(assertion *etree.Element, entityID string) error {
	// Conditions and AudienceRestriction match in any namespace, as they do
	// for crewjam's unmarshalling; only a SAML Audience names us.
	restrictions := 0
	for _, conditions := range assertion.SelectElements("Conditions") {
		for _, restriction := range conditions.SelectElements("AudienceRestriction") {
			restrictions++
			named := false
			for _, audience := range restriction.SelectElements("Audience") {
				named = named || (audience.NamespaceURI() == samlAssertionNS &&
					len(audience.ChildElements()) == 0 && audience.Text() == entityID)
			}
			if !named {
				return audienceError{fmt.Errorf("assertion AudienceRestriction %d does not name this SP (%q)", restrictions, entityID)}
			}
		}
	}
	if restrictions == 0 {
		return audienceError{fmt.Errorf("assertion has no AudienceRestriction (want one naming this SP, %q)", entityID)}
	}
	return nil
}

// replayExpiry is when an assertion stops being acceptable, so the replay
// cache can forget it: its latest NotOnOrAfter plus the clock skew allowed.
func replayExpiry(a *saml.Assertion) time.Time {
	t := a.Conditions.NotOnOrAfter
	for _, sc := range a.Subject.SubjectConfirmations {
		if d := sc.SubjectConfirmationData; d != nil && d.NotOnOrAfter.After(t) {
			t = d.NotOnOrAfter
		}
	}
	return t.Add(saml.MaxClockSkew)
}
