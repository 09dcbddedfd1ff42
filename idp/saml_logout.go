package idp

import (
	"bytes"
	"compress/flate"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
)

// SAML single logout (SAML profiles 4.4), with single_sign_out on: the proxy
// sends the IdP a signed LogoutRequest when a user logs out (HTTP-Redirect
// binding) and checks its LogoutResponse, and takes the IdP's own
// LogoutRequests (HTTP-Redirect and HTTP-POST), answering each with a
// signed LogoutResponse. Both come to {auth_prefix}/saml/{id}/slo, which the
// SP metadata then lists. crewjam/saml checks the messages: the IdP's
// signature (an unsigned message is refused), Issuer, Destination, times,
// and a LogoutResponse's InResponseTo.

var _ SingleSignOuter = (*SAMLProvider)(nil)

// Errors of FinishLogout for a LogoutResponse that is sound but says the
// IdP did not end every session.
var (
	// ErrPartialLogout: the IdP ended its session but could not log the
	// user out of every other application (status PartialLogout).
	ErrPartialLogout = errors.New("the IdP ended its session, but not in every application (PartialLogout)")
	// ErrLogoutFailed: the IdP answered with a status other than Success.
	ErrLogoutFailed = errors.New("the IdP did not end its session")
	// ErrUnsignedLogout: a LogoutRequest or LogoutResponse refused because
	// it carries no signature, as SimpleSAMLphp sends them unless told to
	// sign them (sign.logout); an unsigned one could come from any site.
	ErrUnsignedLogout = errors.New("the IdP did not sign it")
)

// maxLogoutMessage bounds the XML of a logout message, inflated
// (HTTP-Redirect) or decoded (HTTP-POST); they are a few KB. crewjam/saml
// inflates up to 1 MiB, and parses and canonicalizes all of it before the
// signature is found wrong.
const maxLogoutMessage = 64 << 10

var errLogoutTooLarge = fmt.Errorf("logout message larger than %d bytes", maxLogoutMessage)

// logoutLimits bound the shape of a logout message's XML, as responseLimits
// do a response's: a LogoutRequest or LogoutResponse has about 20 elements
// (Issuer, the Signature's 13, NameID and SessionIndex, or Status), and the
// IdP's signed LogoutRequest padded to 64 KiB with empty elements after its
// Signature cost 35 MB to refuse, with 55 namespaces declared over 14,000
// of them 90 MB, from a GET of 3 KB.
var logoutLimits = xmlLimits{elements: 256, nodes: 3 * 256, attributes: 2 * 256, depth: 32, namespaces: 16}

// SAMLLogoutOutcome is what the proxy tells the IdP in a LogoutResponse.
type SAMLLogoutOutcome int

const (
	// LogoutSucceeded: every session the request named has ended.
	LogoutSucceeded SAMLLogoutOutcome = iota
	// LogoutPartial: some sessions may live on (status Success with
	// PartialLogout).
	LogoutPartial
	// LogoutFailed: sessions could not be ended (status Responder).
	LogoutFailed
)

// SAMLLogoutRequest is a LogoutRequest from the IdP that passed every check:
// end the sessions of NameID, only those of SessionIndexes when it names
// any.
type SAMLLogoutRequest struct {
	// ID is the request's ID, which the LogoutResponse answers.
	ID string
	// NameID is the user's NameID value.
	NameID string
	// Subject is the Tokens.Subject of the user's sessions: the NameID's
	// value, trimmed.
	Subject string
	// Sub is the profile sub of the user's sessions, Subject; "" when
	// attribute_mapping.uid takes sub from an attribute, whose values are
	// another list of names than NameIDs: one user's may be another's
	// NameID.
	Sub            string
	SessionIndexes []string
	// IssueInstant is when the IdP made the request: the logout happened
	// then, and sessions made after it are not the ones it ends.
	IssueInstant time.Time
	// RelayState goes back to the IdP with the LogoutResponse.
	RelayState string
}

// logoutTokens are what a login leaves for single logout: the NameID as the
// assertion gave it and the first SessionIndex of its AuthnStatements. nil
// without single_sign_out, so that sessions stay as small as before.
func (p *SAMLProvider) logoutTokens(a *saml.Assertion) *Tokens {
	if !p.cfg.SingleSignOut || a.Subject == nil || a.Subject.NameID == nil {
		return nil
	}
	nid := a.Subject.NameID
	t := &Tokens{NameID: &SAMLNameID{Value: nid.Value, Format: nid.Format, NameQualifier: nid.NameQualifier,
		SPNameQualifier: nid.SPNameQualifier, SPProvidedID: nid.SPProvidedID}}
	for _, st := range a.AuthnStatements {
		if st.SessionIndex != "" {
			t.SID = st.SessionIndex
			break
		}
	}
	return t
}

// LogoutURL makes a signed LogoutRequest for the IdP's SingleLogoutService
// (HTTP-Redirect binding, the signature in the query) naming the user's
// NameID exactly as the assertion did, with its SessionIndex, records its ID
// in f.RequestID and returns the URL that carries it, with f.State as
// RelayState. The IdP answers at the SLO endpoint, not postLogoutRedirect.
// It returns "" when the IdP offers no such SingleLogoutService, or t has no
// NameID (a session made before single_sign_out was turned on).
func (p *SAMLProvider) LogoutURL(t *Tokens, _ string, f *Flow) (string, error) {
	if err := p.Ready(); err != nil {
		return "", err
	}
	sp := p.current.Load()
	dest := sp.GetSLOBindingLocation(saml.HTTPRedirectBinding)
	if dest == "" || t == nil || t.NameID == nil {
		return "", nil
	}
	nid := saml.NameID{Value: t.NameID.Value, Format: t.NameID.Format, NameQualifier: t.NameID.NameQualifier,
		SPNameQualifier: t.NameID.SPNameQualifier, SPProvidedID: t.NameID.SPProvidedID}
	// crewjam names the user with the SP's requested format and its own
	// qualifiers; the IdP matches the NameID it issued.
	asIssued := func(r *saml.LogoutRequest) { r.NameID = &nid }
	req, err := sp.MakeLogoutRequest(dest, nid.Value, saml.WithSessionIndex(t.SID), asIssued)
	if err != nil {
		return "", fmt.Errorf("saml %s: make LogoutRequest: %w", p.cfg.ID, err)
	}
	u, err := sp.RedirectLogoutRequestURL(req, f.State)
	if err != nil {
		return "", fmt.Errorf("saml %s: encode LogoutRequest: %w", p.cfg.ID, err)
	}
	f.RequestID = req.ID
	return u.String(), nil
}

// FinishLogout checks the IdP's LogoutResponse in r (HTTP-Redirect or
// HTTP-POST binding) against f, the logout this browser started: within
// inspectLogoutMessage's bounds, signed by the IdP, from its entity ID,
// addressed to the SLO endpoint, recent, and in response to f.RequestID.
// It returns nil when the IdP ended the session, ErrPartialLogout or an
// error wrapping ErrLogoutFailed for a response that says otherwise, and
// any other error for a response that is refused.
func (p *SAMLProvider) FinishLogout(r *http.Request, f *Flow) error {
	id := p.cfg.ID
	sp := p.current.Load()
	if sp == nil {
		return p.Ready()
	}
	if f.IdP != id {
		return fmt.Errorf("saml %s: check flow: logout was started at %q", id, f.IdP)
	}
	if f.RequestID == "" {
		return fmt.Errorf("saml %s: check flow: no LogoutRequest ID in the logout state", id)
	}
	if err := inspectLogoutMessage(r, "SAMLResponse"); err != nil {
		return fmt.Errorf("saml %s: inspect LogoutResponse: %w", id, err)
	}
	resp, err := sp.ParseLogoutResponse(r, []string{f.RequestID})
	var status saml.ErrBadStatus
	switch {
	case errors.As(err, &status):
		// crewjam checks the status after the signature, Issuer and
		// Destination, before InResponseTo; the flow, single-use and
		// bound to this browser, is what ties the answer to it.
		return fmt.Errorf("saml %s: %w: status %s", id, ErrLogoutFailed, status.Status)
	case err != nil:
		return fmt.Errorf("saml %s: verify LogoutResponse: %w", id, unwrapInvalid(err))
	}
	if sub := resp.Status.StatusCode.StatusCode; sub != nil && sub.Value == saml.StatusPartialLogout {
		return fmt.Errorf("saml %s: %w", id, ErrPartialLogout)
	}
	return nil
}

// VerifyLogoutRequest checks a LogoutRequest from the IdP in r
// (HTTP-Redirect or HTTP-POST binding): within inspectLogoutMessage's
// bounds, signed by the IdP (an unsigned one is refused: any site could
// otherwise sign users out), from its entity ID, addressed to the SLO
// endpoint, not expired, naming a NameID, and with an ID not seen before
// (recorded in the replay store of assertions).
func (p *SAMLProvider) VerifyLogoutRequest(r *http.Request) (*SAMLLogoutRequest, error) {
	id := p.cfg.ID
	if err := p.Ready(); err != nil {
		return nil, err
	}
	sp := p.current.Load()
	if err := inspectLogoutMessage(r, "SAMLRequest"); err != nil {
		return nil, fmt.Errorf("saml %s: inspect LogoutRequest: %w", id, err)
	}
	req, err := sp.ValidateLogoutRequest(r)
	if err != nil {
		return nil, fmt.Errorf("saml %s: verify LogoutRequest: %w", id, unwrapInvalid(err))
	}
	if req.NameID == nil || strings.TrimSpace(req.NameID.Value) == "" {
		return nil, fmt.Errorf("saml %s: verify LogoutRequest: no NameID", id)
	}
	// crewjam refuses the request from MaxIssueDelay after its
	// IssueInstant on; the ID is remembered a minute longer.
	first, err := p.replay.MarkOnce(r.Context(), "saml:"+id+":logout:"+req.ID, req.IssueInstant.Add(saml.MaxIssueDelay+time.Minute))
	if err != nil {
		return nil, fmt.Errorf("saml %s: record LogoutRequest: %w", id, err)
	}
	if !first {
		return nil, fmt.Errorf("saml %s: LogoutRequest %q already used (replay)", id, req.ID)
	}
	// The RelayState that came with the request, where crewjam read it:
	// with HTTP-Redirect the one in the query, which the IdP's signature
	// covers, not one that a form posted with it carries.
	relayState := r.PostForm.Get("RelayState")
	if r.URL.Query().Get("SAMLRequest") != "" {
		relayState = ""
		if v := redirectValues(r.URL.RawQuery, "RelayState"); len(v) > 0 {
			relayState = v[0]
		}
	}
	out := &SAMLLogoutRequest{ID: req.ID, NameID: req.NameID.Value, Subject: strings.TrimSpace(req.NameID.Value),
		IssueInstant: req.IssueInstant, RelayState: relayState}
	if !p.mapping.explicit["uid"] {
		out.Sub = out.Subject // as the profile's sub is made
	}
	for _, si := range req.AllSessionIndexes() {
		if si.Value != "" {
			out.SessionIndexes = append(out.SessionIndexes, si.Value)
		}
	}
	return out, nil
}

// SAMLPost is a SAML message for the HTTP-POST binding: the form fields a
// browser posts to URL. The proxy shows it on a page of its own.
type SAMLPost struct {
	URL    string
	Fields url.Values
}

// LogoutResponse answers req with a signed LogoutResponse to the IdP's
// SingleLogoutService: a URL to redirect the browser to (HTTP-Redirect
// binding, signed in the query) or, for an IdP that offers only HTTP-POST,
// the form the browser posts (the response signed in its XML). It goes to
// the service's ResponseLocation when the metadata gives one, else to its
// Location, and names that as its Destination.
func (p *SAMLProvider) LogoutResponse(req *SAMLLogoutRequest, outcome SAMLLogoutOutcome) (redirect string, post *SAMLPost, err error) {
	sp := p.current.Load()
	if sp == nil {
		return "", nil, p.Ready()
	}
	status := saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusSuccess}}
	switch outcome {
	case LogoutPartial:
		status.StatusCode.StatusCode = &saml.StatusCode{Value: saml.StatusPartialLogout}
	case LogoutFailed:
		status.StatusCode.Value = saml.StatusResponder
	}
	if to := responseLocation(sp, saml.HTTPRedirectBinding); to != "" {
		u, err := answeringAt(sp, saml.HTTPRedirectBinding, to).MakeRedirectLogoutResponseWithStatus(req.ID, req.RelayState, status)
		if err != nil {
			return "", nil, fmt.Errorf("saml %s: make LogoutResponse: %w", p.cfg.ID, err)
		}
		return u.String(), nil, nil
	}
	if to := responseLocation(sp, saml.HTTPPostBinding); to != "" {
		// As crewjam/saml's MakePostLogoutResponseWithStatus, without its
		// page: a bare form and script, with no title, language or heading.
		resp, err := answeringAt(sp, saml.HTTPPostBinding, to).MakeLogoutResponseWithStatus(to, req.ID, status)
		if err != nil {
			return "", nil, fmt.Errorf("saml %s: make LogoutResponse: %w", p.cfg.ID, err)
		}
		doc := etree.NewDocument()
		doc.SetRoot(resp.Element())
		xml, err := doc.WriteToBytes()
		if err != nil {
			return "", nil, fmt.Errorf("saml %s: encode LogoutResponse: %w", p.cfg.ID, err)
		}
		fields := url.Values{"SAMLResponse": {base64.StdEncoding.EncodeToString(xml)}}
		if req.RelayState != "" {
			fields.Set("RelayState", req.RelayState)
		}
		return "", &SAMLPost{URL: to, Fields: fields}, nil
	}
	return "", nil, fmt.Errorf("saml %s: the IdP metadata has no SingleLogoutService to answer at", p.cfg.ID)
}

// responseLocation is where the IdP takes LogoutResponses over binding:
// the ResponseLocation of its SingleLogoutService for that binding, which
// SAML metadata (2.2.2) says responses go to when present, else its
// Location, where requests go; "" without one. The service is the one
// crewjam/saml would pick, the first for the binding.
func responseLocation(sp *saml.ServiceProvider, binding string) string {
	if sp.IDPMetadata == nil {
		return ""
	}
	for _, d := range sp.IDPMetadata.IDPSSODescriptors {
		for _, e := range d.SingleLogoutServices {
			if e.Binding != binding {
				continue
			}
			if e.Location == "" {
				return "" // as crewjam reads it: no service for binding
			}
			if e.ResponseLocation != "" {
				return e.ResponseLocation
			}
			return e.Location
		}
	}
	return ""
}

// withUsableLogoutServices is md without the SingleLogoutServices for the
// bindings the proxy sends over (HTTP-Redirect, HTTP-POST) whose Location
// or ResponseLocation is not an absolute http(s) URL, and why each was left
// out. These URLs become a redirect's Location and a form's action in the
// user's browser. crewjam/saml refuses metadata with another scheme, or
// none, as it parses it, but takes an http(s) URL without a host
// ("https:///evil.example/slo", "https:slo"), which a browser reads as one
// of the host after the slashes. A binding left without a service is one
// the IdP offers no single logout over.
func withUsableLogoutServices(md *saml.EntityDescriptor) (*saml.EntityDescriptor, []error) {
	var leftOut []error
	descriptors := slices.Clone(md.IDPSSODescriptors)
	for i := range descriptors {
		var kept []saml.Endpoint
		for _, e := range descriptors[i].SingleLogoutServices {
			if err := checkLogoutService(e); err != nil {
				leftOut = append(leftOut, fmt.Errorf("SingleLogoutService %s: %w", e.Binding, err))
				continue
			}
			kept = append(kept, e)
		}
		descriptors[i].SingleLogoutServices = kept
	}
	if len(leftOut) == 0 {
		return md, nil
	}
	usable := *md
	usable.IDPSSODescriptors = descriptors
	return &usable, leftOut
}

// checkLogoutService refuses a SingleLogoutService for a binding the proxy
// sends over whose Location, or ResponseLocation when it has one, is not an
// absolute http(s) URL.
func checkLogoutService(e saml.Endpoint) error {
	if e.Binding != saml.HTTPRedirectBinding && e.Binding != saml.HTTPPostBinding {
		return nil
	}
	if err := checkHTTPURL("Location", e.Location); err != nil {
		return err
	}
	if e.ResponseLocation != "" {
		return checkHTTPURL("ResponseLocation", e.ResponseLocation)
	}
	return nil
}

// answeringAt is sp with the IdP's SingleLogoutService for binding at to:
// crewjam/saml makes a LogoutResponse for that binding addressed to the
// service's Location (its Destination and, HTTP-Redirect, the URL or,
// HTTP-POST, the form's action), and has no way to name another.
func answeringAt(sp *saml.ServiceProvider, binding, to string) *saml.ServiceProvider {
	md := *sp.IDPMetadata
	md.IDPSSODescriptors = []saml.IDPSSODescriptor{{SSODescriptor: saml.SSODescriptor{
		SingleLogoutServices: []saml.Endpoint{{Binding: binding, Location: to}},
	}}}
	answering := *sp
	answering.IDPMetadata = &md
	return &answering
}

// inspectLogoutMessage refuses, before crewjam/saml reads it, a logout
// message in r's param (SAMLRequest or SAMLResponse: every copy of it that
// crewjam could read, deflated in the query or posted) that is larger than
// maxLogoutMessage, has an XML comment, is not well-formed XML or has a
// shape beyond logoutLimits.
// crewjam parses any message, which takes no key, and canonicalizes what
// its XML signature covers once the signature over SignedInfo checks out,
// which takes only a message the IdP once signed (padded as one likes
// outside SignedInfo); canonicalization takes comments out one at a time,
// each moving all that follow: a GET of 5 KB whose SAMLRequest inflated to
// 1 MiB of comments took 22 s of CPU.
// The IdPs in docs/saml.md send none, as the ACS's inspectResponse expects
// of their responses. Values that do not decode (base64, deflate) are left
// to crewjam, which refuses them before it parses anything; XML that does
// not parse is refused here, as the ACS refuses it (see below).
func inspectLogoutMessage(r *http.Request, param string) error {
	if r.Method == http.MethodPost && r.PostForm == nil {
		// The proxy limits the body too; this keeps the provider safe alone.
		r.Body = http.MaxBytesReader(nil, r.Body, 2*maxLogoutMessage)
	}
	if err := r.ParseForm(); err != nil {
		return fmt.Errorf("read form: %w", err)
	}
	var messages [][]byte
	for _, v := range redirectValues(r.URL.RawQuery, param) {
		deflated, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			continue
		}
		inflated, err := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(deflated)), maxLogoutMessage+1))
		if len(inflated) > maxLogoutMessage {
			return fmt.Errorf("inflated %w", errLogoutTooLarge)
		}
		if err == nil {
			messages = append(messages, inflated)
		}
	}
	for _, v := range r.PostForm[param] {
		raw, err := base64.StdEncoding.DecodeString(v)
		if len(raw) > maxLogoutMessage {
			return errLogoutTooLarge
		}
		if err == nil {
			messages = append(messages, raw)
		}
	}
	for _, m := range messages {
		// Every comment starts so; the string anywhere else (in a CDATA
		// section or a processing instruction) is refused along with it.
		if bytes.Contains(m, []byte("<!--")) {
			return errors.New("XML comment in the message: refused")
		}
		// XML that does not parse is refused too, not left to crewjam:
		// scanXML stops at the first error, and crewjam first checks the
		// whole message with a lenient decoder (xmlroundtrip, not strict),
		// which reads past it, so a stray "&x;" at the start let 60 KB of
		// elements through to cost 10.5 MB instead of 0.5. etree, strict
		// and with scanXML's settings, would refuse it at the same token.
		if err := scanXML(m, "message", logoutLimits); err != nil {
			return err
		}
	}
	return nil
}

// redirectValues are the values of name in rawQuery as crewjam/saml parses
// an HTTP-Redirect binding's query: split at '&' only (url.ParseQuery drops
// a pair with a ';'), with pairs that do not unescape left out.
func redirectValues(rawQuery, name string) []string {
	var values []string
	for _, pair := range strings.Split(rawQuery, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if k, err := url.QueryUnescape(k); err != nil || k != name {
			continue
		}
		if v, err := url.QueryUnescape(v); err == nil {
			values = append(values, v)
		}
	}
	return values
}

// unwrapInvalid returns the reason behind crewjam's InvalidResponseError,
// whose own message is fixed, as ErrUnsignedLogout too when the reason is
// that the message carries no signature: crewjam's error for that, in the
// binding's query or in the XML, is not exported, so its words are matched.
func unwrapInvalid(err error) error {
	var ire *saml.InvalidResponseError
	if errors.As(err, &ire) && ire.PrivateErr != nil {
		err = ire.PrivateErr
	}
	if err != nil && strings.Contains(err.Error(), "signature element not present") {
		return fmt.Errorf("%w: %w", ErrUnsignedLogout, err)
	}
	return err
}
