package idp

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"
)

// Bits of FuzzSAMLLogout's mode.
const (
	// sloFuzzResponse sends the input as the IdP's LogoutResponse to the
	// logout samlFuzzLogoutID started; otherwise as the IdP's LogoutRequest.
	sloFuzzResponse = 1 << iota
	// sloFuzzPost sends it with the HTTP-POST binding, in base64 in the
	// posted form; otherwise with the HTTP-Redirect binding, deflated and in
	// base64 in the query.
	sloFuzzPost
	// sloFuzzVerbatim sends the input as the whole query string
	// (HTTP-Redirect) or form body (HTTP-POST), with its RelayState, SigAlg
	// and Signature (HTTP-Redirect's query signature, HTTP-POST-SimpleSign's).
	// Otherwise only an XML signature inside the message can sign it.
	sloFuzzVerbatim
	// sloFuzzQueryAndForm sends the input as the query string of a POST
	// whose form carries another RelayState (and nothing else), whatever
	// the bits above say.
	sloFuzzQueryAndForm
)

const (
	// samlFuzzLogoutID is the ID of the LogoutRequest the proxy sent, which
	// the IdP's LogoutResponse answers.
	samlFuzzLogoutID = "id-fuzz-logout-request"
	// samlFuzzRelayState is the RelayState that comes with the messages.
	samlFuzzRelayState = "fuzz-relay-state"
	// samlFuzzPostedRelayState is the RelayState that a sloFuzzQueryAndForm
	// form carries.
	samlFuzzPostedRelayState = "posted-relay-state"
)

// sloFuzzParam is the parameter that carries the message mode sends.
func sloFuzzParam(mode byte) string {
	if mode&sloFuzzResponse != 0 {
		return "SAMLResponse"
	}
	return "SAMLRequest"
}

// sloFuzzRequest is the request a browser brings to the SLO endpoint with
// input, as mode says.
func sloFuzzRequest(input []byte, mode byte) *http.Request {
	if mode&sloFuzzQueryAndForm != 0 {
		r := httptest.NewRequest(http.MethodPost, testSLOURL, strings.NewReader("RelayState="+samlFuzzPostedRelayState))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.URL.RawQuery = string(input)
		return r
	}
	encoded := url.Values{"RelayState": {samlFuzzRelayState}}
	if mode&sloFuzzPost == 0 {
		r := httptest.NewRequest(http.MethodGet, testSLOURL, nil)
		if mode&sloFuzzVerbatim != 0 {
			// Any bytes, even those no request line could carry: crewjam
			// parses the raw query itself.
			r.URL.RawQuery = string(input)
		} else {
			encoded.Set(sloFuzzParam(mode), base64.StdEncoding.EncodeToString(samlDeflate(input)))
			r.URL.RawQuery = encoded.Encode()
		}
		return r
	}
	body := string(input)
	if mode&sloFuzzVerbatim == 0 {
		encoded.Set(sloFuzzParam(mode), base64.StdEncoding.EncodeToString(input))
		body = encoded.Encode()
	}
	r := httptest.NewRequest(http.MethodPost, testSLOURL, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

// sloFuzzMessage is the XML of the message that r carries in param, read
// as its binding says (r's form already parsed): deflated in the query
// (HTTP-Redirect), else in the posted form (HTTP-POST and its SimpleSign).
func sloFuzzMessage(r *http.Request, param string) ([]byte, error) {
	if v := r.URL.Query().Get(param); v != "" {
		deflated, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, err
		}
		return io.ReadAll(flate.NewReader(bytes.NewReader(deflated)))
	}
	return base64.StdEncoding.DecodeString(r.PostForm.Get(param))
}

// sloFuzzRelayState is the RelayState that came with the message in param
// of r, by the binding that carried it: with HTTP-Redirect, in the query as
// crewjam parses it (where a query string signature covers it).
func sloFuzzRelayState(r *http.Request, param string) string {
	if r.URL.Query().Get(param) != "" {
		v := redirectValues(r.URL.RawQuery, "RelayState")
		if len(v) == 0 {
			return ""
		}
		return v[0]
	}
	return r.PostForm.Get("RelayState")
}

// logoutSignedContent is a logout message as its signature covers it: the
// root element in exclusive c14n, without an enveloped signature. A query
// string or SimpleSign signature covers the bytes that carry it; an XML
// signature its canonical form. Two messages with the same content say the
// same.
func logoutSignedContent(raw []byte) (string, error) {
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(raw); err != nil {
		return "", err
	}
	root := doc.Root()
	if root == nil {
		return "", errors.New("no root element")
	}
	for _, sig := range root.SelectElements("Signature") {
		if sig.NamespaceURI() == dsig.Namespace {
			root.RemoveChild(sig)
		}
	}
	out, err := dsig.MakeC14N10ExclusiveCanonicalizerWithPrefixList("").Canonicalize(root)
	return string(out), err
}

// logoutOutcome names what FinishLogout's err says of an accepted
// LogoutResponse; ok is false for a refused one.
func logoutOutcome(err error) (outcome string, ok bool) {
	switch {
	case err == nil:
		return "logged out", true
	case errors.Is(err, ErrPartialLogout):
		return "partial logout", true
	case errors.Is(err, ErrLogoutFailed):
		return "logout failed", true
	}
	return "", false
}

// samlLogoutFuzzSeed is an input of FuzzSAMLLogout and what must become of
// it.
type samlLogoutFuzzSeed struct {
	name  string
	input []byte
	mode  byte
	// want is part of the error that refuses it; "" accepts it, and wantErr
	// is then FinishLogout's outcome for a LogoutResponse.
	want    string
	wantErr error
	// id is the ID of an accepted LogoutRequest.
	id string
}

// logoutFlow is the logout the proxy started, which LogoutResponses answer.
func (e *samlFuzzEnv) logoutFlow() *Flow {
	return &Flow{State: samlFuzzRelayState, IdP: "corp", RequestID: samlFuzzLogoutID}
}

// logoutForger signs logout messages as the IdP, on the fixed clock.
func (e *samlFuzzEnv) logoutForger(edit func(sp *saml.ServiceProvider)) *saml.ServiceProvider {
	sp := logoutForger(samlFuzzIdP, e.keys.idpKey, e.keys.idpCert, e.logout.base.EntityID)
	sp.Clock = dsig.NewFakeClockAt(samlFuzzTime)
	if edit != nil {
		edit(sp)
	}
	return sp
}

// logoutSeeds are the LogoutRequests and LogoutResponses of
// samlLogoutRequestCases and samlLogoutResponseCases, each over every
// binding: HTTP-Redirect with the query string signature, HTTP-Redirect and
// HTTP-POST with the XML signature, HTTP-POST-SimpleSign; and a deflate
// bomb of each.
func (e *samlFuzzEnv) logoutSeeds(tb testing.TB) []samlLogoutFuzzSeed {
	tb.Helper()
	// crewjam draws the messages' IDs from saml.RandReader (no test of
	// this package runs in parallel with this one). Each message draws
	// from a stream of its own, named after its case: a case added or
	// removed changes no other seed. The inputs a fuzz run keeps (go's fuzz
	// cache, testdata) carry the fuzz IdP's real signatures over the seeds
	// of their day, and the target takes an accepted message that is no
	// seed's for a forgery: with one stream for all, a case added to the
	// table gave every later seed another ID, and such an input failed.
	saved := saml.RandReader
	defer func() { saml.RandReader = saved }()
	drawIDsFor := func(name string) {
		saml.RandReader = rand.NewChaCha8(sha256.Sum256([]byte("portcullis FuzzSAMLLogout seed " + name)))
	}

	xmlOf := func(el *etree.Element) []byte {
		doc := etree.NewDocument()
		doc.SetRoot(el)
		out, err := doc.WriteToBytes()
		if err != nil {
			tb.Fatal(err)
		}
		return out
	}
	formOf := func(page []byte, err error) []byte {
		if err != nil {
			tb.Fatal(err)
		}
		form := url.Values{}
		for name, value := range samlFormFields(string(page)) {
			if name != "" && !strings.HasPrefix(name, "SAMLSubmit") {
				form.Set(name, value)
			}
		}
		return []byte(form.Encode())
	}
	var seeds []samlLogoutFuzzSeed
	// each adds the encodings of one message, made by sp: redirect is its
	// HTTP-Redirect URL, signed in the query; signed the message with its
	// XML signature; simpleSign its HTTP-POST-SimpleSign form.
	each := func(s samlLogoutFuzzSeed, sp *saml.ServiceProvider, redirect *url.URL, signed []byte, simpleSign func() ([]byte, error)) {
		name := s.name
		s.name, s.input, s.mode = name+" (HTTP-Redirect)", []byte(redirect.RawQuery), s.mode|sloFuzzVerbatim
		seeds = append(seeds, s)
		posted := s
		posted.name, posted.mode = name+" (HTTP-Redirect, posted with another RelayState)", s.mode|sloFuzzQueryAndForm
		seeds = append(seeds, posted)
		s.name, s.input, s.mode = name+" (HTTP-Redirect, XML signature)", signed, s.mode&^sloFuzzVerbatim
		seeds = append(seeds, s)
		s.name, s.mode = name+" (HTTP-POST)", s.mode|sloFuzzPost
		seeds = append(seeds, s)
		if sp.SignatureMethod != "" {
			s.name, s.input, s.mode = name+" (HTTP-POST-SimpleSign)", formOf(simpleSign()), s.mode|sloFuzzVerbatim
			seeds = append(seeds, s)
		}
	}

	for _, tc := range samlLogoutRequestCases(samlFuzzTime, e.keys) {
		drawIDsFor("request " + tc.name)
		sp := e.logoutForger(tc.edit)
		dest := testSLOURL
		if tc.dest != "" {
			dest = tc.dest
		}
		req, err := sp.MakeLogoutRequest(dest, "alice@example.com", tc.opts...)
		if err != nil {
			tb.Fatal(err)
		}
		redirect, err := sp.RedirectLogoutRequestURL(req, samlFuzzRelayState)
		if err != nil {
			tb.Fatal(err)
		}
		unsigned := *req
		unsigned.Signature = nil
		each(samlLogoutFuzzSeed{name: tc.name, want: tc.want, id: req.ID}, sp, redirect, xmlOf(req.Element()),
			func() ([]byte, error) { return unsigned.SimpleSign(samlFuzzRelayState, sp) })
	}
	for _, tc := range samlLogoutResponseCases(e.keys) {
		drawIDsFor("response " + tc.name)
		sp := e.logoutForger(tc.edit)
		irt := samlFuzzLogoutID
		if tc.inResponseTo != "" {
			irt = tc.inResponseTo
		}
		redirect, err := sp.MakeRedirectLogoutResponseWithStatus(irt, samlFuzzRelayState, tc.status)
		if err != nil {
			tb.Fatal(err)
		}
		resp, err := sp.MakeLogoutResponseWithStatus(sp.GetSLOBindingLocation(saml.HTTPPostBinding), irt, tc.status)
		if err != nil {
			tb.Fatal(err)
		}
		each(samlLogoutFuzzSeed{name: tc.name, mode: sloFuzzResponse, want: tc.want, wantErr: tc.wantErr}, sp, redirect, xmlOf(resp.Element()),
			func() ([]byte, error) {
				return sp.MakeSimpleSignLogoutResponseWithStatus(irt, samlFuzzRelayState, tc.status)
			})
	}

	// A deflate bomb: a sound request, and a response, padded with 4 MiB
	// of spaces, which deflate to 4 KB; and each with a comment, which its
	// XML signature does not cover.
	drawIDsFor("deflate bomb")
	sp := e.logoutForger(nil)
	req, err := sp.MakeLogoutRequest(testSLOURL, "alice@example.com")
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := sp.MakeLogoutResponseWithStatus(testSLOURL, samlFuzzLogoutID, saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusSuccess}})
	if err != nil {
		tb.Fatal(err)
	}
	for _, m := range []struct {
		mode byte
		el   *etree.Element
	}{{0, req.Element()}, {sloFuzzResponse, resp.Element()}} {
		raw := xmlOf(m.el)
		i := bytes.IndexByte(raw, ' ')
		bomb := append(append(append([]byte{}, raw[:i]...), bytes.Repeat([]byte(" "), 4<<20)...), raw[i:]...)
		query := url.Values{sloFuzzParam(m.mode): {base64.StdEncoding.EncodeToString(samlDeflate(bomb))}, "RelayState": {samlFuzzRelayState}}
		seeds = append(seeds, samlLogoutFuzzSeed{name: "deflate bomb " + sloFuzzParam(m.mode), input: []byte(query.Encode()),
			mode: m.mode | sloFuzzVerbatim, want: errLogoutTooLarge.Error()})
		i = bytes.Index(raw, []byte("</saml:Issuer>")) + len("</saml:Issuer>")
		commented := append(append(append([]byte{}, raw[:i]...), "<!---->"...), raw[i:]...)
		for _, binding := range []byte{0, sloFuzzPost} {
			seeds = append(seeds, samlLogoutFuzzSeed{name: "comment in " + sloFuzzParam(m.mode), input: commented,
				mode: m.mode | binding, want: "comment"})
		}
	}
	return seeds
}

// FuzzSAMLLogout sends any bytes to the SLO endpoint as the IdP's
// LogoutRequest (VerifyLogoutRequest) or LogoutResponse (FinishLogout, to
// the logout samlFuzzLogoutID), over HTTP-Redirect or HTTP-POST, either as
// the message alone or as the whole query string or form with its
// signature parameters, or as the query string of a form that carries
// another RelayState. It is seeded with the messages of
// TestSAMLIdPLogoutRequests and TestSAMLHostileLogoutResponses, sound and
// forged, over every binding. It checks that nothing panics and that what
// is accepted is what the IdP signed: no mutation forges a signature, so an
// accepted message has the signed content of an accepted seed and yields
// what that seed did (a LogoutRequest's ID, NameID, SessionIndexes and
// IssueInstant, a LogoutResponse's outcome), with the RelayState that came
// with it.
func FuzzSAMLLogout(f *testing.F) {
	e := newSAMLFuzzEnv(f)
	// The signed content of accepted seeds, and what they yielded.
	acceptedRequests := map[string]*SAMLLogoutRequest{}
	acceptedResponses := map[string]string{}
	content := func(tb testing.TB, r *http.Request, mode byte) string {
		tb.Helper()
		raw, err := sloFuzzMessage(r, sloFuzzParam(mode))
		if err != nil {
			tb.Fatalf("accepted, but the message does not decode: %v", err)
		}
		c, err := logoutSignedContent(raw)
		if err != nil {
			tb.Fatalf("accepted, but the message cannot be canonicalized: %v", err)
		}
		return c
	}
	for _, s := range e.logoutSeeds(f) {
		r := sloFuzzRequest(s.input, s.mode)
		var err error
		var got *SAMLLogoutRequest
		if s.mode&sloFuzzResponse != 0 {
			err = e.logout.FinishLogout(r, e.logoutFlow())
		} else {
			got, err = e.logout.VerifyLogoutRequest(r)
		}
		outcome, accepted := logoutOutcome(err)
		switch {
		case s.want != "" && accepted:
			f.Fatalf("seed %q: accepted (%v), want an error about %q", s.name, err, s.want)
		case s.want != "" && !strings.Contains(err.Error(), s.want):
			f.Fatalf("seed %q: error %q does not mention %q", s.name, err, s.want)
		case s.want != "":
		case s.mode&sloFuzzResponse != 0:
			if !errors.Is(err, s.wantErr) {
				f.Fatalf("seed %q: FinishLogout = %v, want %v", s.name, err, s.wantErr)
			}
			acceptedResponses[content(f, r, s.mode)] = outcome
		case err != nil:
			f.Fatalf("seed %q: refused: %v", s.name, err)
		default:
			if got.ID != s.id || got.NameID != "alice@example.com" || strings.Join(got.SessionIndexes, ",") != "idx-1,idx-2" ||
				!got.IssueInstant.Equal(samlFuzzTime) || got.RelayState != samlFuzzRelayState {
				f.Fatalf("seed %q: accepted as %+v", s.name, got)
			}
			seen := *got
			seen.RelayState = ""
			acceptedRequests[content(f, r, s.mode)] = &seen
		}
		f.Add(s.input, s.mode)
	}

	flow := e.logoutFlow()
	f.Fuzz(func(t *testing.T, input []byte, mode byte) {
		r := sloFuzzRequest(input, mode)
		if mode&sloFuzzResponse != 0 {
			err := e.logout.FinishLogout(r, flow)
			outcome, accepted := logoutOutcome(err)
			if !accepted {
				return
			}
			want, ok := acceptedResponses[content(t, r, mode)]
			switch {
			case !ok:
				t.Fatalf("accepted (%v) a LogoutResponse that no accepted seed carries (or an input kept from a run over other seeds: go clean -fuzzcache)", err)
			case outcome != want:
				t.Fatalf("accepted as %q, but the seed with this LogoutResponse as %q", outcome, want)
			}
			return
		}
		got, err := e.logout.VerifyLogoutRequest(r)
		if err != nil {
			if got != nil {
				t.Fatalf("refused (%v) but returned %+v", err, got)
			}
			return
		}
		want, ok := acceptedRequests[content(t, r, mode)]
		if !ok {
			t.Fatalf("accepted as %+v a LogoutRequest that no accepted seed carries (or an input kept from a run over other seeds: go clean -fuzzcache)", got)
		}
		if sent := sloFuzzRelayState(r, "SAMLRequest"); got.RelayState != sent {
			t.Fatalf("RelayState %q, but %q came with the request", got.RelayState, sent)
		}
		seen := *got
		seen.RelayState = ""
		if !reflect.DeepEqual(&seen, want) {
			t.Fatalf("accepted as %+v, but the seed with this LogoutRequest as %+v", seen, *want)
		}
	})
}

// The accepted seeds of FuzzSAMLLogout must be the same bytes in every
// process: each fuzzing worker knows what is acceptable by its own seeds.
func TestSAMLLogoutFuzzSeedsAreDeterministic(t *testing.T) {
	a, b := newSAMLFuzzEnv(t).logoutSeeds(t), newSAMLFuzzEnv(t).logoutSeeds(t)
	for i := range a {
		if a[i].want == "" && !bytes.Equal(a[i].input, b[i].input) {
			t.Errorf("seed %q differs between two environments", a[i].name)
		}
	}
}
