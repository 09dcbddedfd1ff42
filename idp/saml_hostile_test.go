package idp

import (
	"bytes"
	"compress/flate"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml/xmlenc"
	dsig "github.com/russellhaering/goxmldsig"

	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// samlForgery alters a real response from the IdP. Signing decides what
// signs the result afterwards.
type samlForgery struct {
	name string
	// mutate edits the response (root) and its assertion in place.
	mutate func(t testing.TB, resp, assertion *etree.Element)
	sign   samlSigning
	// relayState, when set, replaces the posted RelayState.
	wantErr string
	// reason is the *SetupError's Reason the refusal is logged with, one
	// an IdP set up unlike its entry would cause; "" for a refusal that is
	// no set-up mistake (a forgery), which must not send the operator to
	// change the set-up.
	reason string
	// idpError is the code of the *CallbackError of an IdP that refused
	// the login (a status other than Success).
	idpError string
}

type samlSigning int

const (
	// signedByIdP re-signs assertion and response with the IdP's key: only
	// the check under test can tell the forgery apart.
	signedByIdP samlSigning = iota
	// signedByForeignKey re-signs both with a key the IdP never had.
	signedByForeignKey
	// signedByForeignKeyWithIdPCert does so but embeds the IdP's certificate.
	signedByForeignKeyWithIdPCert
	// unsigned strips both signatures.
	unsigned
	// untouchedSignatures keeps the IdP's original signatures.
	untouchedSignatures
	// assertionSignatureOnly strips the response signature and keeps the
	// assertion's (a valid shape: the assertion carries the proof).
	assertionSignatureOnly
	// signedByIdPWithSHA1 re-signs both with the IdP's key, as
	// signedByIdP, but with RSA-SHA1 and SHA-1 digests.
	signedByIdPWithSHA1
)

// samlHostileCases are the forgeries of TestSAMLHostileResponses, with times
// relative to now; FuzzSAMLResponse starts from them too.
func samlHostileCases(now time.Time) []samlForgery {
	later := func(d time.Duration) string { return now.Add(d).UTC().Format(time.RFC3339) }
	return append([]samlForgery{
		{name: "response re-signed by the IdP unchanged is accepted (the forging works)", sign: signedByIdP},
		{name: "response with only the assertion signed is accepted", sign: assertionSignatureOnly},
		{name: "response with no signature at all is refused", sign: unsigned, wantErr: "signature", reason: "saml_unsigned"},
		{name: "response signed by a foreign key is refused", sign: signedByForeignKey, wantErr: "signature", reason: "saml_signature"},
		{name: "foreign signature carrying the IdP's certificate is refused", sign: signedByForeignKeyWithIdPCert, wantErr: "signature"},
		{
			name: "assertion edited after signing is refused", sign: untouchedSignatures, wantErr: "signature",
			mutate: func(t testing.TB, resp, a *etree.Element) { setText(t, a, "./Subject/NameID", "bob@example.com") },
		},
		{
			name: "assertion without signature inside an unsigned response is refused", sign: unsigned, wantErr: "signature", reason: "saml_unsigned",
			mutate: func(t testing.TB, resp, a *etree.Element) { setText(t, a, "./Subject/NameID", "bob@example.com") },
		},
		{
			name: "second, forged assertion before the signed one is refused (signature wrapping)", sign: untouchedSignatures,
			wantErr: "2 assertions",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				resp.RemoveChild(resp.SelectElement("Signature"))
				evil := a.Copy()
				evil.RemoveChild(evil.SelectElement("Signature"))
				evil.CreateAttr("ID", "id-evil")
				setText(t, evil, "./Subject/NameID", "bob@example.com")
				resp.InsertChildAt(a.Index(), evil)
			},
		},
		{
			name: "forged assertion hidden in Extensions is refused (signature wrapping)", sign: untouchedSignatures,
			wantErr: "2 assertions",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				ext := resp.CreateElement("samlp:Extensions")
				evil := a.Copy()
				setText(t, evil, "./Subject/NameID", "bob@example.com")
				ext.AddChild(evil)
				resp.InsertChildAt(a.Index(), ext)
			},
		},
		{
			name: "wrong audience is refused", wantErr: "AudienceRestriction", reason: "saml_audience",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				setText(t, a, "./Conditions/AudienceRestriction/Audience", "https://other-sp.example/metadata")
			},
		},
		{
			name: "assertion without AudienceRestriction is refused", wantErr: "no AudienceRestriction", reason: "saml_audience",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				c := a.FindElement("./Conditions")
				c.RemoveChild(c.SelectElement("AudienceRestriction"))
			},
		},
		{
			name: "second AudienceRestriction naming only another SP is refused", wantErr: "AudienceRestriction 2", reason: "saml_audience",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				c := a.FindElement("./Conditions")
				other := c.SelectElement("AudienceRestriction").Copy()
				setText(t, other, "./Audience", "https://other-sp.example/metadata")
				c.AddChild(other)
			},
		},
		{
			// Restrictions all apply: one whose only Audience is an element
			// of that name in another namespace does not include this SP.
			name: "second AudienceRestriction naming this SP only in another namespace is refused", wantErr: "AudienceRestriction 2", reason: "saml_audience",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				c := a.FindElement("./Conditions")
				other := c.SelectElement("AudienceRestriction").Copy()
				foreign := other.SelectElement("Audience")
				foreign.Space = "x"
				foreign.CreateAttr("xmlns:x", "urn:example:not-saml")
				c.AddChild(other)
			},
		},
		{
			name: "AudienceRestriction with an empty Audience is refused", wantErr: "AudienceRestriction 1", reason: "saml_audience",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				setText(t, a, "./Conditions/AudienceRestriction/Audience", "")
			},
		},
		{
			// etree's Text is the text before the first child, this SP's
			// entity ID here; the Audience crewjam reads is all of its
			// character data, another SP's.
			name: "Audience starting with this SP's entity ID, then an element and more text, is refused", wantErr: "AudienceRestriction 1", reason: "saml_audience",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				aud := a.FindElement("./Conditions/AudienceRestriction/Audience")
				aud.CreateElement("Split")
				aud.CreateText(".other-sp.example")
			},
		},
		{
			name: "AudienceRestriction naming this SP and, after it, another is accepted",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				ar := a.FindElement("./Conditions/AudienceRestriction")
				other := ar.SelectElement("Audience").Copy()
				other.SetText("https://other-sp.example/metadata")
				ar.AddChild(other)
			},
		},
		{
			name: "two AudienceRestrictions both naming this SP are accepted",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				c := a.FindElement("./Conditions")
				c.AddChild(c.SelectElement("AudienceRestriction").Copy())
			},
		},
		{
			name: "wrong recipient is refused", wantErr: "Recipient", reason: "saml_acs_url",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				setAttr(t, a, "./Subject/SubjectConfirmation/SubjectConfirmationData", "Recipient", "https://other-sp.example/acs")
			},
		},
		{
			name: "wrong destination is refused", wantErr: "Destination", reason: "saml_acs_url",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				resp.CreateAttr("Destination", "https://other-sp.example/acs")
			},
		},
		{
			name: "unsigned response to another destination around the IdP's signed assertion is refused", wantErr: "Destination", reason: "saml_acs_url",
			sign: assertionSignatureOnly,
			mutate: func(t testing.TB, resp, a *etree.Element) {
				resp.CreateAttr("Destination", "https://other-sp.example/acs")
			},
		},
		// crewjam reads an unsigned response's Destination, Issuer and
		// IssueInstant before it checks its assertion's signature: a
		// forgery refused for them is no set-up mistake.
		{
			name: "unsigned response to another destination around an edited assertion is no set-up mistake", wantErr: "Destination",
			sign: assertionSignatureOnly,
			mutate: func(t testing.TB, resp, a *etree.Element) {
				resp.CreateAttr("Destination", "https://other-sp.example/acs")
				setText(t, a, "./Subject/NameID", "bob@example.com")
			},
		},
		{
			name: "unsigned response from another issuer around an edited assertion is no set-up mistake", wantErr: "Issuer",
			sign: assertionSignatureOnly,
			mutate: func(t testing.TB, resp, a *etree.Element) {
				setText(t, resp, "./Issuer", "https://evil.example/idp")
				setText(t, a, "./Subject/NameID", "bob@example.com")
			},
		},
		{
			name: "unsigned response issued long ago around an assertion restamped ahead is no set-up mistake", wantErr: "IssueInstant",
			sign: assertionSignatureOnly,
			mutate: func(t testing.TB, resp, a *etree.Element) {
				resp.CreateAttr("IssueInstant", later(-30*time.Minute))
				a.CreateAttr("IssueInstant", later(10*time.Minute))
			},
		},
		{
			name: "assertion from another issuer is refused", wantErr: "issuer", reason: "saml_issuer",
			mutate: func(t testing.TB, resp, a *etree.Element) { setText(t, a, "./Issuer", "https://evil.example/idp") },
		},
		{
			name: "conditions expired beyond the clock skew are refused", wantErr: "expired",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				setAttr(t, a, "./Conditions", "NotOnOrAfter", later(-10*time.Minute))
			},
		},
		{
			name: "conditions not yet valid beyond the clock skew are refused", wantErr: "not yet valid",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				setAttr(t, a, "./Conditions", "NotBefore", later(10*time.Minute))
			},
		},
		{
			name: "conditions not yet valid within the clock skew are accepted",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				setAttr(t, a, "./Conditions", "NotBefore", later(30*time.Second))
			},
		},
		{
			name: "expired subject confirmation is refused", wantErr: "expired",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				setAttr(t, a, "./Subject/SubjectConfirmation/SubjectConfirmationData", "NotOnOrAfter", later(-10*time.Minute))
			},
		},
		{
			name: "assertion stamped ten minutes ahead, by an IdP whose clock is off, is refused", wantErr: "in the future", reason: "clock_skew",
			mutate: func(t testing.TB, resp, a *etree.Element) { a.CreateAttr("IssueInstant", later(10*time.Minute)) },
		},
		{
			name: "response whose status is not Success is the IdP refusing the login", wantErr: "Responder", idpError: "Responder",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				setAttr(t, resp, "./Status/StatusCode", "Value", "urn:oasis:names:tc:SAML:2.0:status:Responder")
			},
		},
		{
			// As IdPs refuse a login: saml-profiles 4.1.4.2 forbids an
			// assertion in an error response.
			name: "response whose status is not Success, without assertion, is the IdP refusing the login", sign: unsigned,
			wantErr: "Responder", idpError: "Responder",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				resp.RemoveChild(a)
				setAttr(t, resp, "./Status/StatusCode", "Value", "urn:oasis:names:tc:SAML:2.0:status:Responder")
			},
		},
		{
			name: "response whose status is Success, without assertion, is refused", sign: unsigned, wantErr: "Assertion",
			mutate: func(t testing.TB, resp, a *etree.Element) { resp.RemoveChild(a) },
		},
		{
			name: "response issued long ago is refused", wantErr: "IssueInstant",
			mutate: func(t testing.TB, resp, a *etree.Element) { resp.CreateAttr("IssueInstant", later(-30*time.Minute)) },
		},
		{
			name: "assertion without subject confirmation is refused", wantErr: "SubjectConfirmation",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				s := a.FindElement("./Subject")
				s.RemoveChild(s.SelectElement("SubjectConfirmation"))
			},
		},
		{
			name: "bearer confirmation without NotOnOrAfter is refused", wantErr: "expired",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				a.FindElement("./Subject/SubjectConfirmation/SubjectConfirmationData").RemoveAttr("NotOnOrAfter")
			},
		},
		{
			name: "holder-of-key confirmation naming this ACS beside a bearer one for another SP is refused", wantErr: "Recipient", reason: "saml_acs_url",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				setAttr(t, a, "./Subject/SubjectConfirmation/SubjectConfirmationData", "Recipient", "https://other-sp.example/acs")
				addConfirmation(a, "urn:oasis:names:tc:SAML:2.0:cm:holder-of-key", later(5*time.Minute))
			},
		},
		{
			name: "holder-of-key confirmation beside a bearer one that passes is accepted",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				addConfirmation(a, "urn:oasis:names:tc:SAML:2.0:cm:holder-of-key", later(5*time.Minute))
			},
		},
		{
			name: "response signed with SHA-1 is refused", sign: signedByIdPWithSHA1, wantErr: "SHA-1", reason: "saml_sha1",
		},
		{
			name: "condition of an unknown type is refused (its assertion is Indeterminate)", wantErr: "unrecognised conditions",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				c := a.FindElement("./Conditions").CreateElement("saml:Condition")
				c.CreateAttr("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance")
				c.CreateAttr("xmlns:del", "urn:oasis:names:tc:SAML:2.0:conditions:delegation")
				c.CreateAttr("xsi:type", "del:DelegationRestrictionType")
			},
		},
		{
			name: "assertion without subject is refused", wantErr: "no Subject",
			mutate: func(t testing.TB, resp, a *etree.Element) { a.RemoveChild(a.SelectElement("Subject")) },
		},
		{
			name: "assertion without conditions is refused", wantErr: "no Conditions",
			mutate: func(t testing.TB, resp, a *etree.Element) { a.RemoveChild(a.SelectElement("Conditions")) },
		},
		{
			name: "assertion without an AuthnStatement (attributes only) is refused", wantErr: "no AuthnStatement",
			mutate: func(t testing.TB, resp, a *etree.Element) { a.RemoveChild(a.SelectElement("AuthnStatement")) },
		},
		{
			name: "comment splitting the NameID is refused", sign: untouchedSignatures, wantErr: "comment",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				// What an attacker does with mallory's genuine response:
				// the signature still verifies, exclusive c14n drops comments.
				nameID := a.FindElement("./Subject/NameID")
				if nameID.Text() != "alice@example.com.evil.com" {
					t.Fatalf("NameID %q", nameID.Text())
				}
				nameID.SetText("alice@example.com")
				nameID.CreateComment("")
				nameID.CreateText(".evil.com")
			},
		},
	}, samlShapeForgeries()...)
}

// samlShapeForgeries are responses whose XML has a shape no IdP sends,
// within maxSAMLResponse: each is the IdP's signed response with the
// padding in its assertion, so that crewjam/saml, reading it, would parse,
// canonicalize and digest all of it before finding the signature wrong.
// Deflated, each posts as a form value of 3 to 5 KB.
func samlShapeForgeries() []samlForgery {
	pad := func(n int, makeChild func(parent *etree.Element, i int)) func(t testing.TB, resp, a *etree.Element) {
		return func(t testing.TB, resp, a *etree.Element) {
			el := a.FindElement("./Subject").CreateElement("a")
			for i := range n {
				makeChild(el, i)
			}
		}
	}
	element := func(parent *etree.Element, _ int) { parent.CreateElement("a") }
	return []samlForgery{
		{
			name: "60,000 empty elements in the assertion are refused", sign: untouchedSignatures,
			wantErr: "more than 4096 XML elements",
			mutate:  pad(60_000, element),
		},
		{
			name: "60,000 empty elements under 55 namespace declarations are refused", sign: untouchedSignatures,
			wantErr: "more than 16 XML namespace declarations in scope",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				pad(60_000, element)(t, resp, a)
				padding := a.FindElement("./Subject/a")
				for i := range 55 {
					padding.CreateAttr(fmt.Sprintf("xmlns:p%d", i), fmt.Sprintf("u%d", i))
				}
			},
		},
		{
			// An element declares one default namespace; nested, they
			// add up as prefixed ones do.
			name: "2,000 empty elements under 20 nested default namespace declarations are refused", sign: untouchedSignatures,
			wantErr: "more than 16 XML namespace declarations in scope",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				el := a.FindElement("./Subject")
				for i := range 20 {
					el = el.CreateElement("a")
					el.CreateAttr("xmlns", fmt.Sprintf("u%d", i))
				}
				for range 2_000 {
					el.CreateElement("a")
				}
			},
		},
		{
			name: "2,000 elements with 10 attributes each are refused", sign: untouchedSignatures,
			wantErr: "more than 8192 XML attributes",
			mutate: pad(2_000, func(parent *etree.Element, _ int) {
				el := parent.CreateElement("a")
				for i := range 10 {
					el.CreateAttr(fmt.Sprintf("b%d", i), "")
				}
			}),
		},
		{
			name: "45,000 processing instructions in the assertion are refused", sign: untouchedSignatures,
			wantErr: "more than 12288 XML nodes",
			mutate:  pad(45_000, func(parent *etree.Element, _ int) { parent.CreateProcInst("a", "") }),
		},
		{
			name: "elements nested 40 deep in the assertion are refused", sign: untouchedSignatures,
			wantErr: "more than 32 deep",
			mutate: func(t testing.TB, resp, a *etree.Element) {
				el := a.FindElement("./Subject")
				for range 40 {
					el = el.CreateElement("a")
				}
			},
		},
	}
}

// user is who logs in for the forgery: mallory for the NameID tricks.
func (tc samlForgery) user() samlserver.User {
	name := "alice"
	if strings.Contains(tc.name, "NameID") {
		name = "mallory"
	}
	for _, u := range samlUsers {
		if u.Name == name {
			return u
		}
	}
	panic("no user " + name)
}

func TestSAMLHostileResponses(t *testing.T) {
	e := newSAMLEnv(t, nil)
	foreignKey, foreignCert := samlTestKeyPair(t)
	keys := samlSigners{idpKey: e.idp.Key, idpCert: e.idp.Certificate, foreignKey: foreignKey, foreignCert: foreignCert}
	for _, tc := range samlHostileCases(time.Now()) {
		t.Run(tc.name, func(t *testing.T) {
			user := tc.user()
			f, post := e.login(t, user.Name, user.Password)
			post.SAMLResponse = forgeResponse(t, post.SAMLResponse, tc, keys)
			prof, _, err := e.p.Complete(post.request(), f)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if prof.Email != user.Email {
					t.Fatalf("logged in as %q", prof.Email)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted as %+v, want an error about %q", prof, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not mention %q", err, tc.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "saml corp: ") {
				t.Errorf("error %q is not prefixed with the provider", err)
			}
			reason := ""
			if setup, ok := errors.AsType[*SetupError](err); ok {
				reason = setup.Reason
			}
			if reason != tc.reason {
				t.Errorf("logged with reason %q, want %q (%v)", reason, tc.reason, err)
			}
			if answered, _ := errors.AsType[*CallbackError](err); (answered == nil && tc.idpError != "") || (answered != nil && answered.Code != tc.idpError) {
				t.Errorf("IdP error %+v, want code %q", answered, tc.idpError)
			}
		})
	}
}

// An EncryptedAssertion is decrypted with sp_key_file's RSA key and held to
// the checks of a plaintext one; without sp_cert_file (a key generated at
// start, which no IdP can have been given) it is refused before anything
// decrypts it, with a hint that names the keys to set. A CBC one is
// decrypted only inside a Response whose signature verifies: decrypting
// unauthenticated CBC is the XML Encryption format oracle.
func TestSAMLEncryptedAssertions(t *testing.T) {
	withKeyFiles := func(c *Config) { c.SPCertFile, c.SPKeyFile = "testdata/saml-fuzz-sp.crt", "testdata/saml-fuzz-sp.key" }
	// encryptedByIdP is the IdP's answer, response and assertion signed,
	// the assertion encrypted AES-128-CBC: registered with crewjam's full
	// metadata, which offers the SP certificate for encryption, samlidp
	// encrypts (with AES-256-GCM, which the metadata lists, but for the
	// encrypter set here).
	encryptedByIdP := func(t *testing.T, e *samlEnv) (*Flow, samlACSPost) {
		if err := e.idp.AddServiceProvider(e.p.base.Metadata()); err != nil {
			t.Fatal(err)
		}
		cbc := xmlenc.OAEP()
		cbc.BlockCipher = xmlenc.AES128CBC
		cbc.DigestMethod = &xmlenc.SHA1
		e.idp.IDP.IDP.AssertionEncrypter = cbc
		f, post := e.login(t, "alice", "alice-pw")
		if raw, _ := base64.StdEncoding.DecodeString(post.SAMLResponse); !strings.Contains(string(raw), xmlenc.AES128CBC.Algorithm()) {
			t.Fatal("the IdP did not encrypt the assertion AES-128-CBC")
		}
		return f, post
	}
	selfEncrypted := func(t *testing.T, e *samlEnv) (*Flow, samlACSPost) {
		f, post := e.login(t, "mallory", "mallory-pw")
		post.SAMLResponse = forgeResponse(t, post.SAMLResponse, samlSelfEncrypted(e.p.base.Certificate), samlSigners{})
		return f, post
	}
	// encryptedBy is alice's answer with its assertion, which the IdP
	// signed (or, after edit, signed again with the IdP's key), encrypted
	// with cipher to the SP certificate by whoever holds it, in a response
	// without signature: what Entra ID sends, or a user who re-wraps it.
	encryptedBy := func(cipher xmlenc.BlockCipher, edit func(a *etree.Element)) func(t *testing.T, e *samlEnv) (*Flow, samlACSPost) {
		return func(t *testing.T, e *samlEnv) (*Flow, samlACSPost) {
			f, post := e.login(t, "alice", "alice-pw")
			post.SAMLResponse = editResponse(t, post.SAMLResponse, func(resp *etree.Element) {
				resp.RemoveChild(resp.SelectElement("Signature"))
				a := resp.SelectElement("Assertion")
				if edit != nil {
					a.RemoveChild(a.SelectElement("Signature"))
					edit(a)
					signed := signElement(t, a, e.idp.Key, [][]byte{e.idp.Certificate.Raw}, dsig.RSASHA256SignatureMethod)
					i := a.Index()
					resp.RemoveChildAt(i)
					resp.InsertChildAt(i, signed)
					a = signed
				}
				i := a.Index()
				resp.RemoveChildAt(i)
				resp.InsertChildAt(i, samlEncrypt(t, a, e.p.base.Certificate, cipher))
			})
			return f, post
		}
	}
	// then applies edit to what respond posts.
	then := func(respond func(t *testing.T, e *samlEnv) (*Flow, samlACSPost), edits ...func(resp *etree.Element)) func(t *testing.T, e *samlEnv) (*Flow, samlACSPost) {
		return func(t *testing.T, e *samlEnv) (*Flow, samlACSPost) {
			f, post := respond(t, e)
			for _, edit := range edits {
				post.SAMLResponse = editResponse(t, post.SAMLResponse, edit)
			}
			return f, post
		}
	}
	unsign := func(resp *etree.Element) { resp.RemoveChild(resp.SelectElement("Signature")) }
	// garble replaces the data's ciphertext with one that decrypts with
	// no key: 17 bytes, not a whole number of AES blocks, too short for a
	// GCM nonce and tag.
	garble := func(resp *etree.Element) {
		for _, v := range resp.FindElements("//EncryptedData/CipherData/CipherValue") {
			v.SetText(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 17)))
		}
	}
	cbcUnsigned := func(setup *SetupError) bool {
		return setup.Reason == "saml_encrypted" && strings.Contains(setup.Hint, "CBC") &&
			strings.Contains(setup.Hint, "-SamlResponseSignature MessageAndAssertion") && strings.Contains(setup.Hint, "AES-GCM")
	}
	namesKeys := func(setup *SetupError) bool {
		return setup.Reason == "saml_encrypted" && strings.Contains(setup.Hint, "sp_cert_file")
	}
	// keyName leaves the response signature's KeyInfo naming the key
	// (KeyName), no certificate, as IdPs set not to embed it do; noKeyInfo
	// leaves it without KeyInfo. KeyInfo is outside what is signed.
	keyName := func(resp *etree.Element) {
		keyInfo := resp.FindElement("./Signature/KeyInfo")
		for _, c := range keyInfo.ChildElements() {
			keyInfo.RemoveChild(c)
		}
		keyInfo.CreateElement("ds:KeyName").SetText("idp-signing")
	}
	_, otherCert := samlTestKeyPair(t)
	noKeyInfo := func(resp *etree.Element) {
		sig := resp.SelectElement("Signature")
		sig.RemoveChild(sig.SelectElement("KeyInfo"))
	}
	tests := []struct {
		name string
		// rollover: the IdP's metadata lists a second signing certificate.
		rollover bool
		keys     func(c *Config)
		respond  func(t *testing.T, e *samlEnv) (*Flow, samlACSPost)
		// wantErr is what the error says; "" is a login as alice.
		wantErr string
		// setup, when set, says whether the refusal is the set-up error
		// wanted; when nil, the refusal must be a plain one.
		setup func(*SetupError) bool
	}{
		{name: "CBC assertion the IdP encrypted to sp_cert_file's certificate, in a signed response, logs in", keys: withKeyFiles, respond: encryptedByIdP},
		{
			// crewjam/saml drops a KeyInfo without certificate and tries
			// every trusted one, so the response's signature must hold
			// for the decryption before it as it does for crewjam.
			name: "the same with the response signature naming its key by KeyName, no certificate, logs in", keys: withKeyFiles,
			respond: then(encryptedByIdP, keyName),
		},
		{
			name: "the same with no KeyInfo, the IdP's metadata listing two signing certificates, logs in", rollover: true, keys: withKeyFiles,
			respond: then(encryptedByIdP, noKeyInfo),
		},
		{
			name: "assertion the IdP encrypted without sp_cert_file is refused, naming sp_cert_file", respond: encryptedByIdP,
			wantErr: "inspect response: EncryptedAssertion refused", setup: namesKeys,
		},
		{
			name: "signed assertion with a comment in its NameID, encrypted by the user to the SP certificate, is refused",
			keys: withKeyFiles, respond: selfEncrypted, wantErr: "XML comment",
		},
		{
			name: "the same without sp_cert_file is refused before decryption", respond: selfEncrypted,
			wantErr: "inspect response: EncryptedAssertion refused", setup: namesKeys,
		},
		{
			name: "GCM assertion signed by the IdP, in an unsigned response, logs in", keys: withKeyFiles,
			respond: encryptedBy(xmlenc.AES256GCM, nil),
		},
		{
			name: "CBC assertion in an unsigned response is refused undecrypted, naming response signing", keys: withKeyFiles,
			respond: then(encryptedByIdP, unsign), wantErr: "not decrypted", setup: cbcUnsigned,
		},
		{
			name: "the same with a ciphertext that decrypts with no key gets the same refusal: nothing was decrypted", keys: withKeyFiles,
			respond: then(encryptedByIdP, unsign, garble), wantErr: "not decrypted", setup: cbcUnsigned,
		},
		{
			name: "CBC assertion in a response whose signature a changed ciphertext broke is refused for the signature, undecrypted", keys: withKeyFiles,
			respond: then(encryptedByIdP, garble), wantErr: "Signature could not be verified",
		},
		{
			name: "an EncryptedKey beside the data in another namespace, which crewjam/saml would try too, is refused", keys: withKeyFiles,
			respond: then(encryptedBy(xmlenc.AES256GCM, nil), func(resp *etree.Element) {
				enc := resp.SelectElement("EncryptedAssertion")
				decoy := enc.FindElement("./EncryptedData/KeyInfo/EncryptedKey").Copy()
				decoy.Space = "x"
				decoy.CreateAttr("xmlns:x", "urn:other")
				enc.AddChild(decoy)
			}),
			wantErr: "2 EncryptedKeys",
		},
		{
			name: "an EncryptedAssertion elsewhere than in the response is refused undecrypted", keys: withKeyFiles,
			respond: then(encryptedBy(xmlenc.AES256GCM, nil), garble, func(resp *etree.Element) {
				enc := resp.SelectElement("EncryptedAssertion")
				resp.RemoveChild(enc)
				ext := resp.CreateElement("samlp:Extensions")
				ext.AddChild(enc)
			}),
			wantErr: "EncryptedAssertion inside <Extensions>",
		},
		{
			name: "two EncryptedAssertions are refused before either is decrypted", keys: withKeyFiles,
			respond: then(encryptedBy(xmlenc.AES256GCM, nil), garble, func(resp *etree.Element) {
				enc := resp.SelectElement("EncryptedAssertion")
				resp.InsertChildAt(enc.Index(), enc.Copy())
			}),
			wantErr: "2 assertions",
		},
		{
			// The plaintext is read alone, as crewjam/saml verifies and
			// reads it: an unprefixed Audience there is in no namespace,
			// whatever default namespace the response declares.
			name: "a decrypted assertion is read in its own namespaces, not the response's", keys: withKeyFiles,
			respond: then(encryptedBy(xmlenc.AES256GCM, func(a *etree.Element) {
				a.FindElement("./Conditions/AudienceRestriction/Audience").Space = ""
			}), func(resp *etree.Element) { resp.CreateAttr("xmlns", samlAssertionNS) }),
			wantErr: "AudienceRestriction 1 does not name this SP",
			setup:   func(s *SetupError) bool { return s.Reason == "saml_audience" },
		},
		{
			// xmlenc decrypts with the first EncryptionMethod, of any
			// namespace; crewjam's RequireSignedResponseForCBC looks at all.
			name: "GCM data with a CBC EncryptionMethod of another namespace before its own, in an unsigned response, is refused undecrypted", keys: withKeyFiles,
			respond: then(encryptedBy(xmlenc.AES256GCM, nil), func(resp *etree.Element) {
				data := resp.FindElement("./EncryptedAssertion/EncryptedData")
				decoy := etree.NewElement("x:EncryptionMethod")
				decoy.CreateAttr("xmlns:x", "urn:other")
				decoy.CreateAttr("Algorithm", xmlenc.AES128CBC.Algorithm())
				data.InsertChildAt(0, decoy)
			}),
			wantErr: "not decrypted", setup: cbcUnsigned,
		},
		{
			// KeyInfo is outside what the response's signature covers.
			name: "a second EncryptedAssertion in the response signature's KeyInfo is counted before anything is decrypted", keys: withKeyFiles,
			respond: then(encryptedByIdP, func(resp *etree.Element) {
				resp.FindElement("./Signature/KeyInfo").AddChild(resp.SelectElement("EncryptedAssertion").Copy())
			}),
			wantErr: "2 assertions",
		},
		{
			name: "a decrypted assertion holding another EncryptedAssertion is refused", keys: withKeyFiles,
			respond: encryptedBy(xmlenc.AES256GCM, func(a *etree.Element) {
				advice := etree.NewElement("saml:Advice")
				advice.AddChild(samlEncrypt(t, a, otherCert, xmlenc.AES256GCM))
				a.InsertChildAt(a.SelectElement("Conditions").Index()+1, advice)
			}),
			wantErr: "2 assertions",
		},
		{
			// crewjam/saml follows no RetrievalMethod: an EncryptedKey
			// elsewhere is none it would try.
			name: "data whose EncryptedKey is referred to by a RetrievalMethod is refused", keys: withKeyFiles,
			respond: then(encryptedBy(xmlenc.AES256GCM, nil), func(resp *etree.Element) {
				keyInfo := resp.FindElement("./EncryptedAssertion/EncryptedData/KeyInfo")
				key := keyInfo.SelectElement("EncryptedKey")
				keyInfo.RemoveChild(key)
				key.CreateAttr("Id", "k1")
				resp.FindElement("./Status").AddChild(key)
				keyInfo.CreateElement("ds:RetrievalMethod").CreateAttr("URI", "#k1")
			}),
			wantErr: "0 EncryptedKeys",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newSAMLEnvWith(t, samlserver.Options{Users: samlUsers, NextCertificate: tc.rollover}, tc.keys)
			f, post := tc.respond(t, e)
			prof, _, err := e.p.Complete(post.request(), f)
			if tc.wantErr == "" {
				if err != nil || prof.Email != "alice@example.com" {
					t.Fatalf("profile %+v, error %v; want alice logged in", prof, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted as %q", prof.Email)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q, want one saying %q", err, tc.wantErr)
			}
			setup, ok := errors.AsType[*SetupError](err)
			switch {
			case tc.setup != nil && (!ok || !tc.setup(setup)):
				t.Errorf("logged as %+v, not the set-up error wanted", setup)
			case tc.setup == nil && ok:
				t.Errorf("logged as set-up error %+v, want a plain refusal", setup)
			}
		})
	}
}

// editResponse applies edit to the response of a base64 SAMLResponse.
func editResponse(t testing.TB, b64 string, edit func(resp *etree.Element)) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(raw); err != nil {
		t.Fatal(err)
	}
	edit(doc.Root())
	out, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(out)
}

// samlEncrypt is assertion as an EncryptedAssertion to cert: RSA-OAEP-MGF1P
// key transport, data with cipher, the EncryptedKey in the data's KeyInfo,
// as crewjam/saml's IdP makes it.
func samlEncrypt(t testing.TB, assertion *etree.Element, cert *x509.Certificate, cipher xmlenc.BlockCipher) *etree.Element {
	t.Helper()
	doc := etree.NewDocument()
	doc.SetRoot(assertion.Copy())
	plain, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	enc := xmlenc.OAEP()
	enc.BlockCipher = cipher
	enc.DigestMethod = &xmlenc.SHA1
	data, err := enc.Encrypt(cert, plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	data.CreateAttr("Type", "http://www.w3.org/2001/04/xmlenc#Element")
	encrypted := etree.NewElement("saml:EncryptedAssertion")
	encrypted.AddChild(data)
	return encrypted
}

// samlSelfEncrypted is mallory hiding the comment trick from
// inspectResponse by encrypting her own signed assertion to spCert, which
// the SP metadata publishes, with AES-GCM, which is decrypted whether or
// not the response is signed.
func samlSelfEncrypted(spCert *x509.Certificate) samlForgery {
	return samlForgery{
		name: "signed assertion with a comment in its NameID, encrypted by the user to the SP certificate",
		sign: assertionSignatureOnly,
		mutate: func(t testing.TB, resp, a *etree.Element) {
			nameID := a.FindElement("./Subject/NameID")
			nameID.SetText("alice@example.com")
			nameID.CreateComment("")
			nameID.CreateText(".evil.com")
			i := a.Index()
			resp.RemoveChildAt(i)
			resp.InsertChildAt(i, samlEncrypt(t, a, spCert, xmlenc.AES256GCM))
		},
	}
}

func TestSAMLFlowBinding(t *testing.T) {
	e := newSAMLEnv(t, func(c *Config) { c.AllowIdPInitiated = true })
	tests := []struct {
		name    string
		run     func(t *testing.T) error
		wantErr string
	}{
		{
			name: "response to another browser's request is refused", wantErr: "InResponseTo",
			run: func(t *testing.T) error {
				_, postA := e.login(t, "alice", "alice-pw")
				fB, _ := e.login(t, "alice", "alice-pw")
				postA.RelayState = fB.State
				_, _, err := e.p.Complete(postA.request(), fB)
				return err
			},
		},
		{
			name: "RelayState other than the flow's is refused", wantErr: "RelayState",
			run: func(t *testing.T) error {
				f, post := e.login(t, "alice", "alice-pw")
				post.RelayState = "something-else"
				_, _, err := e.p.Complete(post.request(), f)
				return err
			},
		},
		{
			name: "response to an SP request posted as IdP-initiated is refused", wantErr: "InResponseTo",
			run: func(t *testing.T) error {
				_, post := e.login(t, "alice", "alice-pw")
				_, _, err := e.p.Complete(post.request(), nil)
				return err
			},
		},
		{
			name: "response to an SP request, its InResponseTo cut from the unsigned response, posted as IdP-initiated is refused", wantErr: "request IDs",
			run: func(t *testing.T) error {
				_, post := e.login(t, "alice", "alice-pw")
				post.SAMLResponse = forgeResponse(t, post.SAMLResponse, samlForgery{sign: assertionSignatureOnly,
					mutate: func(t testing.TB, resp, a *etree.Element) { resp.RemoveAttr("InResponseTo") }}, samlSigners{})
				_, _, err := e.p.Complete(post.request(), nil)
				return err
			},
		},
		{
			name: "IdP-initiated response posted into a login this browser started is refused", wantErr: "InResponseTo",
			run: func(t *testing.T) error {
				if err := e.idp.AddShortcut("portcullis", e.p.base.EntityID, "/after-login"); err != nil {
					t.Fatal(err)
				}
				post := e.browse(t, e.idp.URL+"/login/portcullis", "alice", "alice-pw")
				f, _ := e.login(t, "alice", "alice-pw")
				post.RelayState = f.State
				_, _, err := e.p.Complete(post.request(), f)
				return err
			},
		},
		{
			name: "flow without a request ID is refused", wantErr: "AuthnRequest ID",
			run: func(t *testing.T) error {
				f, post := e.login(t, "alice", "alice-pw")
				f.RequestID = ""
				_, _, err := e.p.Complete(post.request(), f)
				return err
			},
		},
		{
			name: "flow started at another IdP is refused", wantErr: "started at",
			run: func(t *testing.T) error {
				f, post := e.login(t, "alice", "alice-pw")
				f.IdP = "other"
				_, _, err := e.p.Complete(post.request(), f)
				return err
			},
		},
		{
			name: "the same assertion posted twice is refused the second time", wantErr: "replay",
			run: func(t *testing.T) error {
				f, post := e.login(t, "alice", "alice-pw")
				if _, _, err := e.p.Complete(post.request(), f); err != nil {
					t.Fatalf("first use refused: %v", err)
				}
				_, _, err := e.p.Complete(post.request(), f)
				return err
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run(t)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one about %q", err, tc.wantErr)
			}
		})
	}
}

func TestSAMLOversizedResponses(t *testing.T) {
	e := newSAMLEnv(t, nil)
	deflate := func(t *testing.T, data []byte) string {
		return base64.StdEncoding.EncodeToString(samlDeflate(data))
	}
	padded := func(t *testing.T, b64 string, n int) []byte {
		raw, _ := base64.StdEncoding.DecodeString(b64)
		return samlPadded(raw, n)
	}
	tests := []struct {
		name    string
		encode  func(t *testing.T, b64 string) string
		wantErr error
	}{
		{"deflated response within the limit is accepted", func(t *testing.T, b64 string) string {
			raw, _ := base64.StdEncoding.DecodeString(b64)
			return deflate(t, raw)
		}, nil},
		{"response over 256 KiB is refused", func(t *testing.T, b64 string) string {
			return base64.StdEncoding.EncodeToString(padded(t, b64, maxSAMLResponse))
		}, errResponseTooLarge},
		{"deflate bomb is refused", func(t *testing.T, b64 string) string {
			return deflate(t, padded(t, b64, 64<<20))
		}, errResponseTooLarge},
		{"form value far over the limit is refused before decoding", func(t *testing.T, b64 string) string {
			// Under the body limit Complete sets, over the encoded limit.
			return b64 + strings.Repeat("A", 390_000-len(b64))
		}, errResponseTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, post := e.login(t, "alice", "alice-pw")
			post.SAMLResponse = tc.encode(t, post.SAMLResponse)
			_, _, err := e.p.Complete(post.request(), f)
			if !errors.Is(err, tc.wantErr) && !(tc.wantErr == nil && err == nil) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// A response of a shape no IdP sends is refused before anything builds a
// tree of it (scanXML): what inspectResponse and crewjam/saml allocate
// to parse and canonicalize a response grows with its nodes, attributes and
// namespaces in scope, and anyone can post 256 KiB of them deflated into a
// few KB. Refusing each costs less than maxAlloc.
func TestSAMLResponseShapesAreRefusedBeforeParsing(t *testing.T) {
	const maxAlloc = 8 << 20
	e := newSAMLEnv(t, nil)
	for _, tc := range samlShapeForgeries() {
		t.Run(tc.name, func(t *testing.T) {
			f, post := e.login(t, "alice", "alice-pw")
			raw, err := base64.StdEncoding.DecodeString(forgeResponse(t, post.SAMLResponse, tc, samlSigners{}))
			if err != nil {
				t.Fatal(err)
			}
			if len(raw) > maxSAMLResponse {
				t.Fatalf("the forgery is %d bytes, over maxSAMLResponse: it tests nothing", len(raw))
			}
			post.SAMLResponse = base64.StdEncoding.EncodeToString(samlDeflate(raw))
			r := post.request()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			prof, _, err := e.p.Complete(r, f)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("accepted as %q", prof.Email)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d bytes of XML posted as %d: refused after %.1f MB allocated", len(raw), len(post.SAMLResponse), float64(alloc)/1e6)
			if alloc > maxAlloc {
				t.Errorf("refusing it allocated %.1f MB, want less than %d MB", float64(alloc)/1e6, maxAlloc>>20)
			}
		})
	}
}

// addConfirmation puts a SubjectConfirmation of method, naming this SP's ACS
// and valid until notOnOrAfter, before the assertion's first one.
func addConfirmation(a *etree.Element, method, notOnOrAfter string) {
	s := a.FindElement("./Subject")
	sc := etree.NewElement("saml:SubjectConfirmation")
	sc.CreateAttr("Method", method)
	d := sc.CreateElement("saml:SubjectConfirmationData")
	d.CreateAttr("Recipient", "https://portcullis.test/.portcullis/saml/corp/acs")
	d.CreateAttr("NotOnOrAfter", notOnOrAfter)
	s.InsertChildAt(s.SelectElement("SubjectConfirmation").Index(), sc)
}

// samlDeflate compresses data as the IdPs that deflate their responses do.
func samlDeflate(data []byte) []byte {
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestCompression)
	w.Write(data)
	w.Close()
	return buf.Bytes()
}

// samlPadded is a response padded with n spaces inside its root element,
// which compress to almost nothing.
func samlPadded(raw []byte, n int) []byte {
	i := bytes.Index(raw, []byte("<samlp:Response")) + len("<samlp:Response")
	return append(append(append([]byte{}, raw[:i]...), bytes.Repeat([]byte(" "), n)...), raw[i:]...)
}

// samlSigners are the keys forgeResponse signs with.
type samlSigners struct {
	idpKey      *rsa.PrivateKey
	idpCert     *x509.Certificate
	foreignKey  *rsa.PrivateKey
	foreignCert *x509.Certificate
}

// forgeResponse applies tc to a real base64 SAMLResponse.
func forgeResponse(t testing.TB, b64 string, tc samlForgery, keys samlSigners) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(raw); err != nil {
		t.Fatal(err)
	}
	resp := doc.Root()
	assertion := resp.SelectElement("Assertion")
	if assertion == nil {
		t.Fatalf("the IdP's response has no plaintext assertion:\n%s", raw)
	}
	if tc.sign != untouchedSignatures && tc.sign != assertionSignatureOnly {
		resp.RemoveChild(resp.SelectElement("Signature"))
		assertion.RemoveChild(assertion.SelectElement("Signature"))
	}
	if tc.sign == assertionSignatureOnly {
		resp.RemoveChild(resp.SelectElement("Signature"))
	}
	if tc.mutate != nil {
		tc.mutate(t, resp, assertion)
	}
	var key *rsa.PrivateKey
	var certs [][]byte
	method := dsig.RSASHA256SignatureMethod
	switch tc.sign {
	case signedByIdP:
		key, certs = keys.idpKey, [][]byte{keys.idpCert.Raw}
	case signedByIdPWithSHA1:
		key, certs, method = keys.idpKey, [][]byte{keys.idpCert.Raw}, dsig.RSASHA1SignatureMethod
	case signedByForeignKey:
		key, certs = keys.foreignKey, [][]byte{keys.foreignCert.Raw}
	case signedByForeignKeyWithIdPCert:
		key, certs = keys.foreignKey, [][]byte{keys.idpCert.Raw}
	}
	if key != nil {
		signed := signElement(t, assertion, key, certs, method)
		i := assertion.Index()
		resp.RemoveChildAt(i)
		resp.InsertChildAt(i, signed)
		doc.SetRoot(signElement(t, resp, key, certs, method))
	}
	out, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(out)
}

// signElement signs el as samlidp does (enveloped, exclusive c14n), with
// key and method (whose hash is the digests' too), embedding certs.
func signElement(t testing.TB, el *etree.Element, key *rsa.PrivateKey, certs [][]byte, method string) *etree.Element {
	t.Helper()
	ctx := dsig.NewDefaultSigningContext(dsig.TLSCertKeyStore(tls.Certificate{Certificate: certs, PrivateKey: key}))
	ctx.Canonicalizer = dsig.MakeC14N10ExclusiveCanonicalizerWithPrefixList("")
	if err := ctx.SetSignatureMethod(method); err != nil {
		t.Fatal(err)
	}
	signed, err := ctx.SignEnveloped(el)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func setText(t testing.TB, el *etree.Element, path, text string) {
	t.Helper()
	target := el.FindElement(path)
	if target == nil {
		t.Fatalf("no %s in <%s>", path, el.Tag)
	}
	target.SetText(text)
}

func setAttr(t testing.TB, el *etree.Element, path, attr, value string) {
	t.Helper()
	target := el.FindElement(path)
	if target == nil {
		t.Fatalf("no %s in <%s>", path, el.Tag)
	}
	target.CreateAttr(attr, value)
}

func samlTestKeyPair(t testing.TB) (*rsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "attacker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

// A response with a document type declaration, or with an element after
// its root, is not what an IdP sends: SAML documents carry no DTD, and XML
// has one root. Both were accepted (crewjam/saml reads the first root and
// no DTD), which only a careful reading showed harmless; refused instead.
func TestSAMLResponseOutsideTheRootIsRefused(t *testing.T) {
	e := newSAMLEnv(t, nil)
	for _, tc := range []struct {
		name, wantErr string
		edit          func(raw []byte) []byte
	}{
		{"a DOCTYPE with an internal subset", "document type declaration", func(raw []byte) []byte {
			return append([]byte(`<!DOCTYPE Response [<!ENTITY e "x">]>`), raw...)
		}},
		{"a second root element after the response", "after its root element", func(raw []byte) []byte {
			return append(raw, []byte(`<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"/>`)...)
		}},
		{"an element of padding after the response", "after its root element", func(raw []byte) []byte {
			return append(raw, []byte(`<a/>`)...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, post := e.login(t, "alice", "alice-pw")
			raw, err := base64.StdEncoding.DecodeString(post.SAMLResponse)
			if err != nil {
				t.Fatal(err)
			}
			if i := bytes.Index(raw, []byte("?>")); bytes.HasPrefix(raw, []byte("<?xml")) && i > 0 {
				raw = raw[i+2:] // the declaration goes first; the DOCTYPE after it
			}
			post.SAMLResponse = base64.StdEncoding.EncodeToString(tc.edit(raw))
			prof, _, err := e.p.Complete(post.request(), f)
			if err == nil {
				t.Fatalf("accepted as %q", prof.Email)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}
