package idp

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/tls"
	"encoding/base64"
	"encoding/pem"
	"encoding/xml"
	"math/rand/v2"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	"github.com/crewjam/saml/xmlenc"
	dsig "github.com/russellhaering/goxmldsig"
	"github.com/russellhaering/goxmldsig/etreeutils"

	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// The fuzzing workers each build the target again and must recognise the
// seeds the coordinator signed, so everything that goes into a signed
// response is fixed: the keys (testdata/saml-fuzz-*), the clock of the IdP
// and of the SP, the request ID and the IDs samlidp draws.
var samlFuzzTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	samlFuzzIdP       = "https://idp.example/metadata"
	samlFuzzRequestID = "id-fuzz-request"
	samlFuzzState     = "fuzz-state"
)

// Bits of FuzzSAMLResponse's mode.
const (
	// samlFuzzVerbatim posts the input as the form value itself, where it is
	// otherwise base64-encoded as the HTTP-POST binding does.
	samlFuzzVerbatim = 1 << iota
	// samlFuzzUnsolicited posts it with no login started (IdP-initiated) to
	// a provider with allow_idp_initiated.
	samlFuzzUnsolicited
)

// samlFuzzEnv is an IdP that signs in-process with a fixed key, the two
// providers FuzzSAMLResponse posts to and the one with single logout that
// FuzzSAMLLogout sends to.
type samlFuzzEnv struct {
	idp         *saml.IdentityProvider
	keys        samlSigners
	spInitiated *SAMLProvider
	unsolicited *SAMLProvider
	logout      *SAMLProvider
	// spMetadata is what the SP registers at the IdP (no encryption key);
	// encrypting is the SP metadata crewjam would publish.
	spMetadata, encrypting *saml.EntityDescriptor
}

// alwaysNew is a ReplayStore that never saw an assertion, so that an
// accepted seed is accepted on every execution.
type alwaysNew struct{}

func (alwaysNew) MarkOnce(context.Context, string, time.Time) (bool, error) { return true, nil }

func newSAMLFuzzEnv(tb testing.TB) *samlFuzzEnv {
	tb.Helper()
	pair, err := tls.LoadX509KeyPair("testdata/saml-fuzz-idp.crt", "testdata/saml-fuzz-idp.key")
	if err != nil {
		tb.Fatal(err)
	}
	foreignKey, foreignCert := samlTestKeyPair(tb)
	e := &samlFuzzEnv{keys: samlSigners{
		idpKey: pair.PrivateKey.(*rsa.PrivateKey), idpCert: pair.Leaf,
		foreignKey: foreignKey, foreignCert: foreignCert,
	}}
	idpURL, _ := url.Parse(samlFuzzIdP)
	e.idp = &saml.IdentityProvider{
		Key: e.keys.idpKey, Certificate: e.keys.idpCert,
		MetadataURL: *idpURL, SSOURL: *idpURL.JoinPath("../sso"),
		Clock: dsig.NewFakeClockAt(samlFuzzTime),
	}

	provider := func(edit func(c *Config)) *SAMLProvider {
		c := Config{
			ID: "corp", Protocol: SAML, EntityID: samlFuzzIdP,
			X509Cert:   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.keys.idpCert.Raw})),
			SSOURL:     e.idp.SSOURL.String(),
			SPCertFile: "testdata/saml-fuzz-sp.crt", SPKeyFile: "testdata/saml-fuzz-sp.key",
			AttributeMapping: map[string]string{"groups": samlserver.GroupsAttribute, "name": "cn"},
		}
		edit(&c)
		o := samlTestOptions()
		o.Replay = alwaysNew{}
		p, err := newSAMLProvider(context.Background(), c, o, defaultSAMLTiming)
		if err != nil {
			tb.Fatal(err)
		}
		sp := *p.current.Load()
		sp.Clock = dsig.NewFakeClockAt(samlFuzzTime)
		p.current.Store(&sp)
		return p
	}
	e.spInitiated = provider(func(*Config) {})
	e.unsolicited = provider(func(c *Config) { c.AllowIdPInitiated = true })
	e.logout = provider(func(c *Config) { c.SingleSignOut, c.SLOURL = true, idpURL.JoinPath("../slo").String() })

	md, err := e.spInitiated.Metadata()
	if err != nil {
		tb.Fatal(err)
	}
	e.spMetadata = &saml.EntityDescriptor{}
	if err := xml.Unmarshal(md, e.spMetadata); err != nil {
		tb.Fatal(err)
	}
	e.encrypting = e.spInitiated.base.Metadata()
	return e
}

// respond is the IdP's signed response for user to requestID ("" for an
// IdP-initiated login), as samlidp makes it after a login.
func (e *samlFuzzEnv) respond(tb testing.TB, user samlserver.User, requestID string, sp *saml.EntityDescriptor) []byte {
	tb.Helper()
	// samlidp draws the assertion and response IDs from saml.RandReader (no
	// test of this package runs in parallel with this one).
	saved := saml.RandReader
	saml.RandReader = rand.NewChaCha8([32]byte([]byte("portcullis FuzzSAMLResponse seed")))
	defer func() { saml.RandReader = saved }()

	r := httptest.NewRequest("POST", e.idp.SSOURL.String(), nil)
	r.RemoteAddr = "192.0.2.1:40000"
	req := &saml.IdpAuthnRequest{
		IDP: e.idp, HTTPRequest: r, Now: samlFuzzTime,
		Request:                 saml.AuthnRequest{ID: requestID, IssueInstant: samlFuzzTime},
		ServiceProviderMetadata: sp,
		SPSSODescriptor:         &sp.SPSSODescriptors[0],
		ACSEndpoint:             &sp.SPSSODescriptors[0].AssertionConsumerServices[0],
	}
	session := &saml.Session{
		ID: "session-" + user.Name, Index: "index-" + user.Name,
		CreateTime: samlFuzzTime, ExpireTime: samlFuzzTime.Add(time.Hour),
		NameID: user.Email, NameIDFormat: string(saml.EmailAddressNameIDFormat),
		UserName: user.Name, UserEmail: user.Email, Groups: user.Groups,
		UserCommonName: user.CommonName, UserSurname: user.Surname, UserGivenName: user.GivenName,
	}
	if err := (samlserver.GroupsAssertionMaker{}).MakeAssertion(req, session); err != nil {
		tb.Fatal(err)
	}
	if err := req.MakeResponse(); err != nil {
		tb.Fatal(err)
	}
	doc := etree.NewDocument()
	doc.SetRoot(req.ResponseEl)
	out, err := doc.WriteToBytes()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// complete posts form to the ACS as mode says.
func (e *samlFuzzEnv) complete(form string, mode byte) (*Profile, *Tokens, error) {
	p, f := e.spInitiated, &Flow{State: samlFuzzState, IdP: "corp", RequestID: samlFuzzRequestID}
	if mode&samlFuzzUnsolicited != 0 {
		p, f = e.unsolicited, nil
	}
	return p.Complete(samlACSPost{SAMLResponse: form, RelayState: samlFuzzState}.request(), f)
}

// samlFuzzForm is the form value the browser posts for input.
func samlFuzzForm(input []byte, mode byte) string {
	if mode&samlFuzzVerbatim != 0 {
		return string(input)
	}
	return base64.StdEncoding.EncodeToString(input)
}

// signedContent is the one assertion of a response as its signature
// covers it: exclusive c14n, in the namespaces in scope, without the
// signature. Two responses whose assertions have the same signedContent
// assert the same.
func signedContent(raw []byte, p *SAMLProvider) (string, error) {
	sp := p.current.Load()
	found, err := inspectResponse(raw, p.decryptionKey(), func(el *etree.Element) (*etree.Element, error) { return verifiedElement(sp, el) })
	if err != nil {
		return "", err
	}
	el := found.assertion
	ctx, err := etreeutils.NSBuildParentContext(el)
	if err != nil {
		return "", err
	}
	detached, err := etreeutils.NSDetatch(ctx, el)
	if err != nil {
		return "", err
	}
	for _, sig := range detached.SelectElements("Signature") {
		if sig.NamespaceURI() == dsig.Namespace {
			detached.RemoveChild(sig)
		}
	}
	out, err := dsig.MakeC14N10ExclusiveCanonicalizerWithPrefixList("").Canonicalize(detached)
	return string(out), err
}

// samlFuzzSeed is an input of FuzzSAMLResponse and what Complete must do
// with it.
type samlFuzzSeed struct {
	name  string
	input []byte
	mode  byte
	// wantErr is part of the error expected; "" means accepted as user.
	wantErr string
	user    samlserver.User
}

func (e *samlFuzzEnv) seeds(tb testing.TB) []samlFuzzSeed {
	tb.Helper()
	alice := samlUsers[0]
	good := e.respond(tb, alice, samlFuzzRequestID, e.spMetadata)
	good64 := base64.StdEncoding.EncodeToString(good)
	seeds := []samlFuzzSeed{
		{name: "IdP's response", input: good, user: alice},
		{name: "IdP's response as the posted base64", input: []byte(good64), mode: samlFuzzVerbatim, user: alice},
		{name: "IdP-initiated response", input: e.respond(tb, alice, "", e.spMetadata), mode: samlFuzzUnsolicited, user: alice},
		{name: "IdP-initiated response posted to a login the SP started", input: e.respond(tb, alice, "", e.spMetadata), wantErr: "InResponseTo"},
		{name: "response to an SP request posted as IdP-initiated", input: good, mode: samlFuzzUnsolicited, wantErr: "InResponseTo"},
		{name: "response to another browser's request", input: e.respond(tb, alice, "id-other-request", e.spMetadata), wantErr: "InResponseTo"},
		{name: "assertion the IdP encrypted to the SP certificate", input: e.respond(tb, alice, samlFuzzRequestID, e.encrypting), user: alice},
		{name: "deflated response", input: samlDeflate(good), user: alice},
		{name: "response over 256 KiB", input: samlPadded(good, maxSAMLResponse), wantErr: errResponseTooLarge.Error()},
		{name: "deflate bomb", input: samlDeflate(samlPadded(good, 1<<20)), wantErr: errResponseTooLarge.Error()},
		{name: "form value far over the limit", input: []byte(good64 + strings.Repeat("A", 390_000-len(good64))), mode: samlFuzzVerbatim, wantErr: errResponseTooLarge.Error()},
		{name: "empty form value", input: nil, mode: samlFuzzVerbatim, wantErr: "no SAMLResponse"},
	}
	forge := func(tc samlForgery) []byte {
		user := tc.user()
		b64 := base64.StdEncoding.EncodeToString(e.respond(tb, user, samlFuzzRequestID, e.spMetadata))
		raw, err := base64.StdEncoding.DecodeString(forgeResponse(tb, b64, tc, e.keys))
		if err != nil {
			tb.Fatal(err)
		}
		return raw
	}
	for _, tc := range samlHostileCases(samlFuzzTime) {
		seeds = append(seeds, samlFuzzSeed{name: tc.name, input: forge(tc), wantErr: tc.wantErr, user: tc.user()})
	}
	self := samlSelfEncrypted(e.spInitiated.base.Certificate)
	seeds = append(seeds, samlFuzzSeed{name: self.name, input: forge(self), wantErr: "XML comment"})
	// Encrypted assertions, after every seed above so that none of those
	// changes: each respond draws its IDs from a stream of its own, and the
	// ciphertexts are random (xmlenc's RandReader) but decrypt to the
	// same assertion, which is what accepted seeds are known by.
	cbc := xmlenc.OAEP()
	cbc.BlockCipher = xmlenc.AES128CBC
	cbc.DigestMethod = &xmlenc.SHA1
	cbcSigned := func(requestID string) []byte {
		e.idp.AssertionEncrypter = cbc
		defer func() { e.idp.AssertionEncrypter = nil }()
		return e.respond(tb, alice, requestID, e.encrypting)
	}
	edit := func(raw []byte, edits ...func(resp *etree.Element)) []byte {
		b64 := base64.StdEncoding.EncodeToString(raw)
		for _, ed := range edits {
			b64 = editResponse(tb, b64, ed)
		}
		out, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			tb.Fatal(err)
		}
		return out
	}
	unsign := func(resp *etree.Element) { resp.RemoveChild(resp.SelectElement("Signature")) }
	// gcmUnsigned encrypts the assertion, which the IdP signed, with
	// AES-256-GCM in a response without signature, as Entra ID sends it.
	gcmUnsigned := func(resp *etree.Element) {
		a := resp.SelectElement("Assertion")
		i := a.Index()
		resp.RemoveChildAt(i)
		resp.InsertChildAt(i, samlEncrypt(tb, a, e.spInitiated.base.Certificate, xmlenc.AES256GCM))
	}
	keyName := func(resp *etree.Element) {
		keyInfo := resp.FindElement("./Signature/KeyInfo")
		for _, c := range keyInfo.ChildElements() {
			keyInfo.RemoveChild(c)
		}
		keyInfo.CreateElement("ds:KeyName").SetText("idp-signing")
	}
	seeds = append(seeds,
		samlFuzzSeed{name: "GCM assertion the IdP signed, in an unsigned response", input: edit(good, unsign, gcmUnsigned), user: alice},
		samlFuzzSeed{name: "the same IdP-initiated", input: edit(e.respond(tb, alice, "", e.spMetadata), unsign, gcmUnsigned), mode: samlFuzzUnsolicited, user: alice},
		samlFuzzSeed{name: "CBC assertion in a signed response", input: cbcSigned(samlFuzzRequestID), user: alice},
		samlFuzzSeed{name: "the same IdP-initiated", input: cbcSigned(""), mode: samlFuzzUnsolicited, user: alice},
		samlFuzzSeed{name: "the same with a signature that names its key by KeyName", input: edit(cbcSigned(samlFuzzRequestID), keyName), user: alice},
		samlFuzzSeed{name: "CBC assertion in an unsigned response", input: edit(cbcSigned(samlFuzzRequestID), unsign), wantErr: "not decrypted"},
	)
	return seeds
}

// FuzzSAMLResponse posts any bytes to the ACS as a SAMLResponse, through
// Complete (base64 form value, size limits, inspectResponse, crewjam/saml's
// parse and checks, checkAudience, the attribute mapping), seeded with the
// IdP's signed responses and the forgeries of TestSAMLHostileResponses. It
// checks that nothing panics and that whatever is accepted is what the IdP
// signed for this SP: no mutation forges a signature, so an accepted
// response carries the signed content of an accepted seed, posted the same
// way (SP- or IdP-initiated), and yields that seed's profile.
func FuzzSAMLResponse(f *testing.F) {
	e := newSAMLFuzzEnv(f)
	// accepted maps how a seed was posted (unsolicited or not) and its
	// assertion's signedContent to the profile Complete returned.
	accepted := map[string]*Profile{}
	for _, s := range e.seeds(f) {
		prof, _, err := e.complete(samlFuzzForm(s.input, s.mode), s.mode)
		switch {
		case s.wantErr != "" && err == nil:
			f.Fatalf("seed %q: accepted as %+v, want an error about %q", s.name, prof, s.wantErr)
		case s.wantErr != "" && !strings.Contains(err.Error(), s.wantErr):
			f.Fatalf("seed %q: error %q does not mention %q", s.name, err, s.wantErr)
		case s.wantErr == "" && err != nil:
			f.Fatalf("seed %q: refused: %v", s.name, err)
		case s.wantErr == "" && prof.Email != s.user.Email:
			f.Fatalf("seed %q: logged in as %q, want %q", s.name, prof.Email, s.user.Email)
		case s.wantErr == "":
			raw, err := decodeSAMLResponse(samlFuzzForm(s.input, s.mode))
			if err != nil {
				f.Fatal(err)
			}
			content, err := signedContent(raw, e.spInitiated)
			if err != nil {
				f.Fatal(err)
			}
			accepted[string(s.mode&samlFuzzUnsolicited)+content] = prof
		}
		f.Add(s.input, s.mode)
	}

	f.Fuzz(func(t *testing.T, input []byte, mode byte) {
		form := samlFuzzForm(input, mode)
		prof, tokens, err := e.complete(form, mode)
		if err != nil {
			if prof != nil || tokens != nil {
				t.Fatalf("refused (%v) but returned a profile %+v", err, prof)
			}
			return
		}
		raw, err := decodeSAMLResponse(form)
		if err != nil {
			t.Fatalf("accepted, but the form does not decode: %v", err)
		}
		content, err := signedContent(raw, e.spInitiated)
		if err != nil {
			t.Fatalf("accepted, but its assertion cannot be canonicalized: %v", err)
		}
		want, ok := accepted[string(mode&samlFuzzUnsolicited)+content]
		if !ok {
			t.Fatalf("accepted as %+v an assertion no accepted seed carries", prof)
		}
		if !reflect.DeepEqual(prof, want) {
			t.Fatalf("accepted as %+v, but the seed with this assertion as %+v", prof, want)
		}
		if tokens != nil {
			t.Fatalf("accepted with tokens %+v", tokens)
		}
	})
}

// A committed corpus entry of FuzzSAMLResponse stays meaningful only while
// the seeds are the same bytes in every process.
func TestSAMLFuzzSeedsAreDeterministic(t *testing.T) {
	a, b := newSAMLFuzzEnv(t), newSAMLFuzzEnv(t)
	alice := samlUsers[0]
	if !bytes.Equal(a.respond(t, alice, samlFuzzRequestID, a.spMetadata), b.respond(t, alice, samlFuzzRequestID, b.spMetadata)) {
		t.Fatal("two environments sign different responses for the same login")
	}
}
