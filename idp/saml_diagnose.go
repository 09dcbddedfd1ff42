package idp

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"
	"github.com/russellhaering/goxmldsig/etreeutils"
)

// samlDiagnose returns err, a response refused by crewjam/saml's checks or
// checkAudience, as a *SetupError when the refusal means that the IdP and
// this entry are not set up alike: a signing certificate this entry does
// not trust (rotated at the IdP), an answer addressed to another SP entity
// ID or ACS URL, another issuer, clocks apart. The hint quotes what the
// response says on the point (an audience, a certificate's fingerprint):
// unverified, but only ever set beside what this entry expects, for the
// operator to compare. Anything else, a broken signature above all, stays
// as it is: a forgery is no set-up mistake. A status other than Success is
// the IdP refusing the login, a *CallbackError as an OIDC IdP's error is.
func (p *SAMLProvider) samlDiagnose(sp *saml.ServiceProvider, response, assertion *etree.Element, err error) error {
	if bad, ok := errors.AsType[saml.ErrBadStatus](err); ok {
		code := bad.Status[strings.LastIndex(bad.Status, ":")+1:]
		return fmt.Errorf("saml %s: response status: %w", p.cfg.ID, &CallbackError{Code: truncate(code, 64), Description: truncate(bad.Status, 256)})
	}
	if assertion == nil {
		// A response without assertion that is no refusal by the IdP:
		// nothing in it tells a set-up mistake apart.
		return err
	}
	if !signed(response) && signed(assertion) && responseLevel(err) && !genuineAssertion(sp, assertion) {
		// crewjam reads an unsigned response's Destination, Issuer and
		// IssueInstant before it checks the assertion's signature: refused
		// for them, the answer is vouched for by nothing, and anyone who
		// starts a login could have the operator told to change the set-up.
		return err
	}
	switch {
	case !signed(response) && !signed(assertion):
		// Whatever else is wrong, nothing in it can be believed before that.
		return setupError("saml_unsigned", "the IdP signs neither the response nor the assertion: turn on signing at the IdP "+
			"(the assertion, the response, or both, with SHA-256); if it does sign, this answer came from someone else", err)
	case errors.Is(err, saml.ErrUntrustedCertificate):
		source := "x509_cert holds it: replace it with the IdP's new signing certificate (its metadata or console shows it)"
		if p.cfg.MetadataURL != "" {
			source = "metadata_url is fetched again every hour, and at a restart: if the IdP's metadata does not list the new certificate yet, it has not published it there"
		}
		return setupError("saml_signature", fmt.Sprintf("the IdP signed with a certificate this entry does not trust (SHA-256 %s; trusted: %s): "+
			"it changed its signing certificate, or the answer came from someone else: the fingerprint is the answer's word, "+
			"compare it with the IdP's console before trusting it. %s", signingFingerprint(response, assertion), strings.Join(trustedFingerprints(sp), ", "), source), err)
	case errors.Is(err, saml.ErrCertificateNotValidNow):
		return setupError("saml_signature", "the IdP signed with the certificate this entry trusts, but outside its validity: "+
			"renew the IdP's signing certificate and give this entry the new one", err)
	case errors.Is(err, saml.ErrUnsupported) && strings.Contains(err.Error(), "SHA-1"):
		// crewjam/saml's own refusal of SHA-1, which has no error of its own.
		return setupError("saml_sha1", "the IdP signs with SHA-1, which is refused: set its signature and digest algorithms to SHA-256 "+
			"(Auth0's SAML add-on: \"signatureAlgorithm\": \"rsa-sha256\", \"digestAlgorithm\": \"sha256\")", err)
	case errors.Is(err, saml.ErrMissingElement) && strings.Contains(err.Error(), "has no BaseID, NameID or EncryptedID"):
		// crewjam checks the Subject once a signature verified.
		return setupError("saml_nameid", "the IdP sends no NameID in the assertion's Subject, and crewjam/saml, which checks the answer, refuses an assertion without one: "+
			"give this application a NameID at the IdP (persistent, or the email address); attribute_mapping.uid still takes sub from an attribute", err)
	case errors.Is(err, saml.ErrAudienceMismatch) || isAudienceError(err):
		return setupError("saml_audience", fmt.Sprintf("the IdP addressed its assertion to %s, not to this SP's entity ID: "+
			"set the IdP's Audience URI (Identifier, SP entity ID) for this application to %s; if it has that already, "+
			"the answer was meant for another application and was posted here", quoteAll(audiences(assertion)), sp.EntityID), err)
	case errors.Is(err, saml.ErrDestinationMismatch):
		return setupError("saml_acs_url", fmt.Sprintf("the IdP addressed its answer to %s, not to this SP's ACS URL: "+
			"set the IdP's ACS URL (Reply URL, Single sign-on URL) to %s; if it has that already, public_url is not the address the browser uses, "+
			"or the answer was meant for another application and was posted here",
			quoteAll(recipients(response, assertion, sp.AcsURL.String())), sp.AcsURL.String()), err)
	case errors.Is(err, saml.ErrIssuerMismatch):
		return setupError("saml_issuer", fmt.Sprintf("the answer's Issuer is %s: entity_id must be the IdP's entity ID exactly, as in its metadata (entityID)",
			quoteAll(texts(response, "Issuer"), texts(assertion, "Issuer"))), err)
	case errors.Is(err, saml.ErrExpired) || errors.Is(err, saml.ErrNotYetValid):
		issued, perr := time.Parse(time.RFC3339Nano, assertion.SelectAttrValue("IssueInstant", ""))
		now := time.Now()
		if skew := issued.Sub(now); perr == nil && skew.Abs() > saml.MaxClockSkew {
			return setupError("clock_skew", fmt.Sprintf("the IdP stamped its assertion %s (IssueInstant), %s from this machine's clock, more than the %s allowed: "+
				"one of the two clocks is wrong. Keep both on NTP", issued.UTC().Format(time.RFC3339), skew.Round(time.Second), saml.MaxClockSkew), err)
		}
	}
	return err
}

// responseLevel reports whether err is one that crewjam may raise from the
// response's own Destination, Issuer or IssueInstant (saml-core 3.2.2), read
// before the signature of its assertion when the response has none.
func responseLevel(err error) bool {
	return errors.Is(err, saml.ErrDestinationMismatch) || errors.Is(err, saml.ErrIssuerMismatch) ||
		errors.Is(err, saml.ErrExpired) || errors.Is(err, saml.ErrNotYetValid)
}

// genuineAssertion reports whether the signature of assertion verifies with
// a certificate this entry trusts, whatever else is wrong with it: what
// crewjam would have checked next, had the unsigned response around it
// passed. It costs one more canonicalization of the assertion, within the
// bounds scanXML set, and only for an answer already refused.
func genuineAssertion(sp *saml.ServiceProvider, assertion *etree.Element) bool {
	_, err := verifiedElement(sp, assertion)
	return err == nil
}

// verifiedElement returns el as its enveloped signature covers it, if that
// signature verifies with a signing certificate of the IdP's metadata (or
// x509_cert), with goxmldsig, which crewjam/saml verifies with too, and as
// crewjam does. It costs a canonicalization of el and an RSA verification,
// one per signing certificate when the signature carries none, as it
// costs crewjam.
func verifiedElement(sp *saml.ServiceProvider, el *etree.Element) (*etree.Element, error) {
	var roots []*x509.Certificate
	if sp.IDPMetadata != nil {
		for _, d := range sp.IDPMetadata.IDPSSODescriptors {
			for _, k := range d.KeyDescriptors {
				if k.Use != "" && k.Use != "signing" {
					continue
				}
				for _, c := range k.KeyInfo.X509Data.X509Certificates {
					der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(c.Data), ""))
					if err != nil {
						continue
					}
					if cert, err := x509.ParseCertificate(der); err == nil {
						roots = append(roots, cert)
					}
				}
			}
		}
	}
	if len(roots) == 0 {
		return nil, errors.New("no signing certificate of the IdP")
	}
	// Detached with the namespaces it has in scope, as crewjam does: the
	// response may declare the prefixes of the assertion in it.
	ns, err := etreeutils.NSBuildParentContext(el)
	if err != nil {
		return nil, err
	}
	if ns, err = ns.SubContext(el); err != nil {
		return nil, err
	}
	detached, err := etreeutils.NSDetatch(ns, el)
	if err != nil {
		return nil, err
	}
	if detached.FindElement("./Signature/KeyInfo/X509Data/X509Certificate") != nil {
		return validateSignature(detached, roots)
	}
	// As crewjam/saml verifies a signature without certificate: its
	// KeyInfo (a KeyName, an RSAKeyValue), which goxmldsig refuses, is
	// dropped, and each trusted certificate is tried alone, since
	// goxmldsig picks none of several. Verified otherwise, an IdP that
	// does not embed its certificate, or lists two during a rollover,
	// had its CBC assertions refused although crewjam accepts them.
	if sig := detached.FindElement("./Signature"); sig != nil {
		if keyInfo := sig.FindElement("KeyInfo"); keyInfo != nil {
			sig.RemoveChild(keyInfo)
		}
	}
	for _, root := range roots {
		var covered *etree.Element
		if covered, err = validateSignature(detached, []*x509.Certificate{root}); err == nil {
			return covered, nil
		}
	}
	return nil, err
}

// validateSignature returns el as its enveloped signature covers it, if
// that signature verifies with one of roots.
func validateSignature(el *etree.Element, roots []*x509.Certificate) (*etree.Element, error) {
	v := dsig.NewDefaultValidationContext(&dsig.MemoryX509CertificateStore{Roots: roots})
	v.IdAttribute = "ID"
	return v.Validate(el)
}

// audienceError is checkAudience's refusal.
type audienceError struct{ error }

func isAudienceError(err error) bool {
	_, ok := errors.AsType[audienceError](err)
	return ok
}

// signed reports whether el carries an XML signature of its own.
func signed(el *etree.Element) bool {
	return el != nil && el.SelectElement("Signature") != nil
}

// signingFingerprint is the SHA-256 fingerprint of the certificate in the
// signature of the response or, failing that, of the assertion.
func signingFingerprint(response, assertion *etree.Element) string {
	for _, el := range []*etree.Element{response, assertion} {
		if el == nil {
			continue
		}
		if c := el.FindElement("./Signature/KeyInfo/X509Data/X509Certificate"); c != nil {
			return fingerprint(c.Text())
		}
	}
	return "not in the signature"
}

// trustedFingerprints are the SHA-256 fingerprints of the signing
// certificates of the IdP's metadata (or x509_cert).
func trustedFingerprints(sp *saml.ServiceProvider) []string {
	var out []string
	if sp.IDPMetadata == nil {
		return out
	}
	for _, d := range sp.IDPMetadata.IDPSSODescriptors {
		for _, k := range d.KeyDescriptors {
			if k.Use != "" && k.Use != "signing" {
				continue
			}
			for _, c := range k.KeyInfo.X509Data.X509Certificates {
				out = append(out, fingerprint(c.Data))
			}
		}
	}
	return out
}

// fingerprint is the SHA-256 of a base64 DER certificate, in the colon
// separated hex that IdP consoles show.
func fingerprint(b64 string) string {
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(b64), ""))
	if err != nil {
		return "unreadable"
	}
	sum := sha256.Sum256(der)
	hex := make([]string, len(sum))
	for i, b := range sum {
		hex[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(hex, ":")
}

// audiences are the Audience values of the assertion's conditions.
func audiences(assertion *etree.Element) []string {
	var out []string
	for _, a := range assertion.FindElements("./Conditions/AudienceRestriction/Audience") {
		out = append(out, a.Text())
	}
	return out
}

// recipients are where the IdP addressed its answer, the response's
// Destination and the assertion's bearer Recipient, when not to acs.
func recipients(response, assertion *etree.Element, acs string) []string {
	var out []string
	if d := response.SelectAttrValue("Destination", ""); d != "" && d != acs {
		out = append(out, d)
	}
	for _, d := range assertion.FindElements("./Subject/SubjectConfirmation/SubjectConfirmationData") {
		if r := d.SelectAttrValue("Recipient", ""); r != "" && r != acs {
			out = append(out, r)
		}
	}
	return out
}

// texts are the texts of el's children named tag.
func texts(el *etree.Element, tag string) []string {
	var out []string
	if el == nil {
		return out
	}
	for _, c := range el.SelectElements(tag) {
		out = append(out, strings.TrimSpace(c.Text()))
	}
	return out
}

// quoteAll quotes every value, each at most 256 bytes, for a hint; "none"
// when there is none.
func quoteAll(lists ...[]string) string {
	var out []string
	for _, list := range lists {
		for _, v := range list {
			q := fmt.Sprintf("%q", truncate(v, 256))
			if !strings.Contains(strings.Join(out, " "), q) {
				out = append(out, q)
			}
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, " and ")
}
