package idp

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"

	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

const testSLOURL = "https://portcullis.test/.portcullis/saml/corp/slo"

// newSLOEnv is a samlEnv whose provider has single_sign_out.
func newSLOEnv(t *testing.T, edit func(*Config)) *samlEnv {
	t.Helper()
	return newSAMLEnv(t, func(c *Config) {
		c.SingleSignOut = true
		if edit != nil {
			edit(c)
		}
	})
}

// sloLogin logs user in and returns what the session keeps.
func (e *samlEnv) sloLogin(t *testing.T, user, password string) *Tokens {
	t.Helper()
	f, post := e.login(t, user, password)
	_, tokens, err := e.p.Complete(post.request(), f)
	if err != nil {
		t.Fatal(err)
	}
	if tokens == nil || tokens.NameID == nil || tokens.SID == "" {
		t.Fatalf("Complete with single_sign_out kept %+v, want the NameID and SessionIndex", tokens)
	}
	return tokens
}

// toSP follows u in user's browser until the IdP sends it to the proxy
// (portcullis.test), and returns that URL.
func (e *samlEnv) toSP(t *testing.T, user, u string) string {
	t.Helper()
	b := *e.browsers[user]
	var back string
	b.CheckRedirect = func(r *http.Request, _ []*http.Request) error {
		if r.URL.Host == "portcullis.test" {
			back = r.URL.String()
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := b.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if back == "" {
		t.Fatalf("the IdP did not send the browser back to the SP: status %d at %s\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	return back
}

// redirectMessage decodes the SAMLRequest or SAMLResponse of an
// HTTP-Redirect binding URL into v.
func redirectMessage(t *testing.T, raw, param string, v any) url.Values {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	deflated, err := base64.StdEncoding.DecodeString(q.Get(param))
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(flate.NewReader(bytes.NewReader(deflated)))
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v\n%s", param, err, data)
	}
	return q
}

func TestSAMLSingleLogoutSPInitiated(t *testing.T) {
	e := newSLOEnv(t, nil)
	tokens := e.sloLogin(t, "alice", "alice-pw")
	if want := (SAMLNameID{Value: "alice@example.com", Format: string(saml.EmailAddressNameIDFormat)}); *tokens.NameID != want {
		t.Errorf("kept NameID %+v, want it as the assertion gave it, %+v", *tokens.NameID, want)
	}

	f := &Flow{State: "logout-state-0123456789", IdP: "corp"}
	u, err := e.p.LogoutURL(tokens, "", f)
	if err != nil || u == "" {
		t.Fatalf("LogoutURL = %q, %v", u, err)
	}
	var req saml.LogoutRequest
	q := redirectMessage(t, u, "SAMLRequest", &req)
	if !strings.HasPrefix(u, e.idp.URL+"/slo?") || q.Get("Signature") == "" || q.Get("RelayState") != f.State {
		t.Errorf("LogoutURL %s: want the IdP's SLO URL, signed in the query, with the flow state as RelayState", u)
	}
	if f.RequestID == "" || req.ID != f.RequestID {
		t.Errorf("flow RequestID %q, LogoutRequest ID %q: want it recorded", f.RequestID, req.ID)
	}
	// The NameID exactly as issued: crewjam's own would be of the SP's
	// requested format (none) with its qualifiers.
	if nid := req.NameID; nid == nil || nid.Value != "alice@example.com" || nid.Format != string(saml.EmailAddressNameIDFormat) ||
		nid.NameQualifier != "" || nid.SPNameQualifier != "" {
		t.Errorf("LogoutRequest NameID %+v, want alice's as the assertion gave it", req.NameID)
	}
	if req.SessionIndex == nil || req.SessionIndex.Value != tokens.SID {
		t.Errorf("LogoutRequest SessionIndex %+v, want %q", req.SessionIndex, tokens.SID)
	}

	back := e.toSP(t, "alice", u)
	if !strings.HasPrefix(back, testSLOURL+"?") {
		t.Fatalf("the IdP answered at %s, want the SLO endpoint", back)
	}
	answer := httptest.NewRequest(http.MethodGet, back, nil)
	if err := e.p.FinishLogout(answer, f); err != nil {
		t.Fatalf("FinishLogout: %v", err)
	}
	// The IdP session is gone: the next login asks for the password again.
	lf := &Flow{State: "state-after-logout-0123", IdP: "corp"}
	lu, err := e.p.LoginURL(lf)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.browsers["alice"].Get(lu)
	if err != nil {
		t.Fatal(err)
	}
	if fields := samlFormFields(samlReadPage(t, resp)); fields["password"] == "" && !hasField(fields, "password") {
		t.Errorf("after single logout the IdP did not ask alice to log in again")
	}

	// The same answer again, for another logout of this browser, is refused.
	f2 := &Flow{State: "logout-state-9876543210", IdP: "corp"}
	if _, err := e.p.LogoutURL(tokens, "", f2); err != nil {
		t.Fatal(err)
	}
	if err := e.p.FinishLogout(httptest.NewRequest(http.MethodGet, back, nil), f2); err == nil || !strings.Contains(err.Error(), "InResponseTo") {
		t.Errorf("an answer to another LogoutRequest: %v, want it refused for its InResponseTo", err)
	}
}

func hasField(fields map[string]string, name string) bool {
	_, ok := fields[name]
	return ok
}

func TestSAMLSingleLogoutURLWithoutWhatItNeeds(t *testing.T) {
	e := newSLOEnv(t, nil)
	if u, err := e.p.LogoutURL(&Tokens{}, "", &Flow{State: "s-0123456789abcdef"}); u != "" || err != nil {
		t.Errorf("a session without a NameID: LogoutURL = %q, %v; want none", u, err)
	}
	// Without single_sign_out a login keeps nothing and the SP metadata
	// lists no SingleLogoutService.
	plain := newSAMLEnv(t, nil)
	f, post := plain.login(t, "alice", "alice-pw")
	if _, tokens, err := plain.p.Complete(post.request(), f); err != nil || tokens != nil {
		t.Errorf("Complete without single_sign_out = %+v, %v; want no tokens", tokens, err)
	}
	for _, tc := range []struct {
		p    *SAMLProvider
		want int
	}{{plain.p, 0}, {e.p, 2}} {
		md, err := tc.p.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		var ed saml.EntityDescriptor
		if err := xml.Unmarshal(md, &ed); err != nil {
			t.Fatal(err)
		}
		slo := ed.SPSSODescriptors[0].SingleLogoutServices
		if len(slo) != tc.want {
			t.Errorf("single_sign_out %v: metadata lists %d SingleLogoutServices, want %d", tc.p.cfg.SingleSignOut, len(slo), tc.want)
		}
		for _, s := range slo {
			if s.Location != testSLOURL || (s.Binding != saml.HTTPRedirectBinding && s.Binding != saml.HTTPPostBinding) {
				t.Errorf("SingleLogoutService %+v, want Redirect and POST at %s", s, testSLOURL)
			}
		}
	}
}

// sloForger makes logout messages as the IdP would (logoutForger), with
// the IdP's entity ID and key; edit makes them hostile.
func (e *samlEnv) sloForger(edit func(sp *saml.ServiceProvider)) *saml.ServiceProvider {
	sp := logoutForger(e.idp.EntityID(), e.idp.Key, e.idp.Certificate, e.p.base.EntityID)
	if edit != nil {
		edit(sp)
	}
	return sp
}

// logoutForger makes logout messages as the IdP idpEntityID would, with
// crewjam/saml's SP side: an SP whose entity ID and key are the IdP's signs
// them, for the SP spEntityID and addressed to its SLO endpoint (the "IdP"
// of this SP side, with every binding).
func logoutForger(idpEntityID string, key *rsa.PrivateKey, cert *x509.Certificate, spEntityID string) *saml.ServiceProvider {
	var slo []saml.Endpoint
	for _, binding := range []string{saml.HTTPRedirectBinding, saml.HTTPPostBinding, saml.HTTPPostSimpleSignBinding} {
		slo = append(slo, saml.Endpoint{Binding: binding, Location: testSLOURL})
	}
	return &saml.ServiceProvider{
		EntityID:        idpEntityID,
		Key:             key,
		Certificate:     cert,
		SignatureMethod: dsig.RSASHA256SignatureMethod,
		IDPMetadata: &saml.EntityDescriptor{EntityID: spEntityID, IDPSSODescriptors: []saml.IDPSSODescriptor{{
			SSODescriptor: saml.SSODescriptor{SingleLogoutServices: slo},
		}}},
	}
}

// addressedTo makes sp's messages name dest as their Destination.
func addressedTo(dest string) func(sp *saml.ServiceProvider) {
	return func(sp *saml.ServiceProvider) {
		for i := range sp.IDPMetadata.IDPSSODescriptors[0].SingleLogoutServices {
			sp.IDPMetadata.IDPSSODescriptors[0].SingleLogoutServices[i].Location = dest
		}
	}
}

// samlLogoutResponseCase is an IdP's LogoutResponse to the logout a browser
// started, and what FinishLogout must make of it.
type samlLogoutResponseCase struct {
	name string
	// edit changes who signs it and how.
	edit   func(sp *saml.ServiceProvider)
	status saml.Status
	// inResponseTo answers another LogoutRequest than the flow's.
	inResponseTo string
	// want is part of the error that refuses it; wantErr the error of an
	// answer that is sound but says the IdP did not end every session.
	want    string
	wantErr error
	// unsigned is an answer refused as ErrUnsignedLogout, and no other.
	unsigned bool
}

// samlLogoutResponseCases are the LogoutResponses of
// TestSAMLHostileLogoutResponses and FuzzSAMLLogout: sound ones, then
// forgeries (keys.foreignKey signs one).
func samlLogoutResponseCases(keys samlSigners) []samlLogoutResponseCase {
	status := func(code string, second string) saml.Status {
		s := saml.Status{StatusCode: saml.StatusCode{Value: code}}
		if second != "" {
			s.StatusCode.StatusCode = &saml.StatusCode{Value: second}
		}
		return s
	}
	success := status(saml.StatusSuccess, "")
	return []samlLogoutResponseCase{
		{name: "a sound answer is accepted", status: success},
		{name: "PartialLogout is reported", status: status(saml.StatusSuccess, saml.StatusPartialLogout), wantErr: ErrPartialLogout},
		{name: "a failure status is reported", status: status(saml.StatusResponder, ""), wantErr: ErrLogoutFailed},
		{name: "an unsigned answer is refused", edit: func(sp *saml.ServiceProvider) { sp.SignatureMethod = "" },
			status: success, want: "signature", unsigned: true},
		{name: "an answer signed with another key is refused", edit: func(sp *saml.ServiceProvider) { sp.Key, sp.Certificate = keys.foreignKey, keys.foreignCert },
			status: success, want: "ignature"},
		{name: "an answer from another issuer is refused", edit: func(sp *saml.ServiceProvider) { sp.EntityID = "https://evil.example/idp" },
			status: success, want: "issuer"},
		{name: "an answer addressed to another SP is refused", edit: addressedTo("https://other.example/slo"), status: success, want: "Destination"},
		{name: "an answer to another browser's LogoutRequest is refused", status: success, inResponseTo: "id-of-another-logout", want: "InResponseTo"},
	}
}

func TestSAMLHostileLogoutResponses(t *testing.T) {
	e := newSLOEnv(t, nil)
	tokens := e.sloLogin(t, "alice", "alice-pw")
	otherKey, otherCert := samlTestKeyPair(t)
	success := saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusSuccess}}
	for _, tc := range samlLogoutResponseCases(samlSigners{foreignKey: otherKey, foreignCert: otherCert}) {
		t.Run(tc.name, func(t *testing.T) {
			f := &Flow{State: "logout-" + samlRandom(t), IdP: "corp"}
			if _, err := e.p.LogoutURL(tokens, "", f); err != nil {
				t.Fatal(err)
			}
			irt := f.RequestID
			if tc.inResponseTo != "" {
				irt = tc.inResponseTo
			}
			u, err := e.sloForger(tc.edit).MakeRedirectLogoutResponseWithStatus(irt, f.State, tc.status)
			if err != nil {
				t.Fatal(err)
			}
			target := testSLOURL + "?" + u.RawQuery
			err = e.p.FinishLogout(httptest.NewRequest(http.MethodGet, target, nil), f)
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("FinishLogout = %v, want %v", err, tc.wantErr)
				}
			case tc.want == "":
				if err != nil {
					t.Errorf("FinishLogout = %v, want it accepted", err)
				}
			case err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, ErrLogoutFailed):
				t.Errorf("FinishLogout = %v, want it refused for %q", err, tc.want)
			case errors.Is(err, ErrUnsignedLogout) != tc.unsigned:
				t.Errorf("FinishLogout = %v: errors.Is ErrUnsignedLogout %v, want %v", err, !tc.unsigned, tc.unsigned)
			default:
				t.Logf("refused: %v", err)
			}
		})
	}
	t.Run("a flow started at another IdP is refused", func(t *testing.T) {
		f := &Flow{State: "logout-" + samlRandom(t), IdP: "corp"}
		if _, err := e.p.LogoutURL(tokens, "", f); err != nil {
			t.Fatal(err)
		}
		u, err := e.sloForger(nil).MakeRedirectLogoutResponseWithStatus(f.RequestID, f.State, success)
		if err != nil {
			t.Fatal(err)
		}
		f.IdP = "other"
		if err := e.p.FinishLogout(httptest.NewRequest(http.MethodGet, testSLOURL+"?"+u.RawQuery, nil), f); err == nil || !strings.Contains(err.Error(), "started at") {
			t.Errorf("FinishLogout = %v, want it refused", err)
		}
	})
}

// logoutRequestHTTP is the request the browser brings to the SLO endpoint
// with req, over binding, as the IdP sp sends it.
func logoutRequestHTTP(t *testing.T, sp *saml.ServiceProvider, req *saml.LogoutRequest, binding, relayState string) *http.Request {
	t.Helper()
	if binding == saml.HTTPRedirectBinding {
		u, err := sp.RedirectLogoutRequestURL(req, relayState)
		if err != nil {
			t.Fatal(err)
		}
		return httptest.NewRequest(http.MethodGet, testSLOURL+"?"+u.RawQuery, nil)
	}
	doc := etree.NewDocument()
	el := req.Element()
	doc.SetRoot(el)
	raw, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"SAMLRequest": {base64.StdEncoding.EncodeToString(raw)}, "RelayState": {relayState}}
	r := httptest.NewRequest(http.MethodPost, testSLOURL, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

// samlLogoutRequestCase is a LogoutRequest that the IdP, or someone else,
// sends to the SLO endpoint, and what VerifyLogoutRequest must make of it.
type samlLogoutRequestCase struct {
	name string
	// edit changes who signs it and how.
	edit func(sp *saml.ServiceProvider)
	opts []saml.LogoutRequestOption
	// dest is its Destination; "" is the SLO endpoint.
	dest string
	// want is part of the error that refuses it; "" accepts it.
	want string
	// unsigned is a request refused as ErrUnsignedLogout, and no other.
	unsigned bool
}

// samlLogoutRequestCases are the LogoutRequests of
// TestSAMLIdPLogoutRequests and FuzzSAMLLogout: a sound one, then forgeries
// (keys.foreignKey signs one). now is the IdP's clock.
func samlLogoutRequestCases(now time.Time, keys samlSigners) []samlLogoutRequestCase {
	type opt = saml.LogoutRequestOption
	return []samlLogoutRequestCase{
		{name: "a signed request is accepted", opts: []opt{saml.WithSessionIndexes("idx-1", "idx-2")}},
		// An empty one would name the sessions that have none.
		{name: "an empty SessionIndex is left out", opts: []opt{saml.WithSessionIndexes("idx-1", "idx-2"), func(r *saml.LogoutRequest) {
			r.AdditionalSessionIndexes = append(r.AdditionalSessionIndexes, saml.SessionIndex{})
		}}},
		{name: "an unsigned request is refused", edit: func(sp *saml.ServiceProvider) { sp.SignatureMethod = "" }, want: "ignature", unsigned: true},
		{name: "a request signed with another key is refused", edit: func(sp *saml.ServiceProvider) { sp.Key, sp.Certificate = keys.foreignKey, keys.foreignCert }, want: "ignature"},
		{name: "a request from another issuer is refused", edit: func(sp *saml.ServiceProvider) { sp.EntityID = "https://evil.example/idp" }, want: "issuer"},
		{name: "a request addressed to another SP is refused", dest: "https://other.example/slo", want: "Destination"},
		{name: "a request past its NotOnOrAfter is refused", opts: []opt{func(r *saml.LogoutRequest) {
			past := now.Add(-10 * time.Minute)
			r.NotOnOrAfter = &past
		}}, want: "expired"},
		{name: "a request issued long ago is refused", opts: []opt{func(r *saml.LogoutRequest) {
			r.IssueInstant = now.Add(-10 * time.Minute)
		}}, want: "expired"},
		{name: "a request without NameID is refused", opts: []opt{func(r *saml.LogoutRequest) { r.NameID = nil }}, want: "NameID"},
		{name: "a request whose NameID is blank is refused", opts: []opt{func(r *saml.LogoutRequest) { r.NameID.Value = " \n " }}, want: "NameID"},
	}
}

func TestSAMLIdPLogoutRequests(t *testing.T) {
	e := newSLOEnv(t, nil)
	otherKey, otherCert := samlTestKeyPair(t)
	for _, binding := range []string{saml.HTTPRedirectBinding, saml.HTTPPostBinding} {
		t.Run(binding[strings.LastIndex(binding, ":")+1:], func(t *testing.T) {
			for _, tc := range samlLogoutRequestCases(time.Now(), samlSigners{foreignKey: otherKey, foreignCert: otherCert}) {
				t.Run(tc.name, func(t *testing.T) {
					sp := e.sloForger(tc.edit)
					dest := testSLOURL
					if tc.dest != "" {
						dest = tc.dest
					}
					req, err := sp.MakeLogoutRequest(dest, "alice@example.com", tc.opts...)
					if err != nil {
						t.Fatal(err)
					}
					got, err := e.p.VerifyLogoutRequest(logoutRequestHTTP(t, sp, req, binding, "relay-1"))
					if tc.want != "" {
						if err == nil || !strings.Contains(err.Error(), tc.want) {
							t.Fatalf("VerifyLogoutRequest = %+v, %v; want it refused for %q", got, err, tc.want)
						}
						if errors.Is(err, ErrUnsignedLogout) != tc.unsigned {
							t.Errorf("VerifyLogoutRequest = %v: errors.Is ErrUnsignedLogout %v, want %v", err, !tc.unsigned, tc.unsigned)
						}
						t.Logf("refused: %v", err)
						return
					}
					if err != nil {
						t.Fatalf("VerifyLogoutRequest: %v", err)
					}
					want := SAMLLogoutRequest{ID: req.ID, NameID: "alice@example.com", Subject: "alice@example.com", Sub: "alice@example.com",
						SessionIndexes: []string{"idx-1", "idx-2"}, RelayState: "relay-1"}
					if strings.Join(got.SessionIndexes, ",") != "idx-1,idx-2" || got.ID != want.ID || got.NameID != want.NameID ||
						got.Subject != want.Subject || got.Sub != want.Sub || got.RelayState != want.RelayState {
						t.Errorf("VerifyLogoutRequest = %+v, want %+v", *got, want)
					}
					// Its ID is kept as long as the request could be
					// accepted: forgotten sooner, it could be sent again.
					marks := e.p.replay.(*memoryMarks)
					if until := marks.keys["saml:corp:logout:"+req.ID]; until.Before(req.IssueInstant.Add(saml.MaxIssueDelay)) {
						t.Errorf("request ID recorded until %s, want at least its IssueInstant %s and MaxIssueDelay", until, req.IssueInstant)
					}
					// The same request again is refused.
					if _, err := e.p.VerifyLogoutRequest(logoutRequestHTTP(t, sp, req, binding, "relay-1")); err == nil || !strings.Contains(err.Error(), "replay") {
						t.Errorf("the request again: %v, want it refused as a replay", err)
					}
					// The answer goes to the IdP's SLO, signed, answering it.
					u, post, err := e.p.LogoutResponse(got, LogoutPartial)
					if err != nil || post != nil {
						t.Fatalf("LogoutResponse = %q, %+v, %v", u, post, err)
					}
					var resp saml.LogoutResponse
					q := redirectMessage(t, u, "SAMLResponse", &resp)
					if !strings.HasPrefix(u, e.idp.URL+"/slo?") || resp.Destination != e.idp.URL+"/slo" || q.Get("Signature") == "" || q.Get("RelayState") != "relay-1" ||
						resp.InResponseTo != req.ID || resp.Issuer == nil || resp.Issuer.Value != e.p.base.EntityID ||
						resp.Status.StatusCode.Value != saml.StatusSuccess || resp.Status.StatusCode.StatusCode == nil ||
						resp.Status.StatusCode.StatusCode.Value != saml.StatusPartialLogout {
						t.Errorf("LogoutResponse %s:\n%+v\nwant a signed PartialLogout answer to %s at the IdP's SLO, naming it as Destination", u, resp, req.ID)
					}
				})
			}
		})
	}
	t.Run("with attribute_mapping.uid the request still names the sessions' subject, the NameID, and no profile sub", func(t *testing.T) {
		e := newSLOEnv(t, func(c *Config) { c.AttributeMapping = map[string]string{"uid": "uid"} })
		sp := e.sloForger(nil)
		req, err := sp.MakeLogoutRequest(testSLOURL, " alice@example.com ")
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.p.VerifyLogoutRequest(logoutRequestHTTP(t, sp, req, saml.HTTPRedirectBinding, ""))
		if err != nil || got.Subject != "alice@example.com" || got.NameID != " alice@example.com " || got.Sub != "" {
			t.Errorf("VerifyLogoutRequest = %+v, %v; want the NameID as sent and, trimmed, as the subject, and no sub: "+
				"the uid attribute is another list of names", got, err)
		}
	})
}

// servedMetadata serves the IdP metadata at metadataURL, as edit changes
// it, and returns its URL.
func servedMetadata(t *testing.T, metadataURL string, edit func(root *etree.Element)) string {
	t.Helper()
	resp, err := http.Get(metadataURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	doc := etree.NewDocument()
	if _, err := doc.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	edit(doc.Root())
	md, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(md) }))
	t.Cleanup(srv.Close)
	return srv.URL + "/metadata"
}

// An IdP's SingleLogoutService may give a ResponseLocation, where responses
// go instead of its Location (SAML metadata 2.2.2): portcullis's
// LogoutResponse goes there and names it as its Destination, while its
// LogoutRequests still go to the Location.
func TestSAMLLogoutResponseGoesToResponseLocation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		binding string
	}{
		{"HTTP-Redirect", saml.HTTPRedirectBinding},
		{"HTTP-POST, the IdP's only binding", saml.HTTPPostBinding},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var location, answers string
			e := newSLOEnv(t, func(c *Config) {
				location = strings.TrimSuffix(c.MetadataURL, "/metadata") + "/slo"
				answers = location + "/answers"
				c.MetadataURL = servedMetadata(t, c.MetadataURL, func(root *etree.Element) {
					for _, slo := range root.FindElements("//SingleLogoutService") {
						if slo.SelectAttrValue("Location", "") != location {
							t.Fatalf("samlidp's metadata lists a SingleLogoutService at %s, want %s", slo.SelectAttrValue("Location", ""), location)
						}
						if tc.binding == saml.HTTPPostBinding && slo.SelectAttrValue("Binding", "") == saml.HTTPRedirectBinding {
							slo.Parent().RemoveChild(slo)
						}
						slo.CreateAttr("ResponseLocation", answers)
					}
				})
			})
			sp := e.sloForger(nil)
			req, err := sp.MakeLogoutRequest(testSLOURL, "alice@example.com")
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.p.VerifyLogoutRequest(logoutRequestHTTP(t, sp, req, saml.HTTPRedirectBinding, "relay-1"))
			if err != nil {
				t.Fatal(err)
			}
			target, post, err := e.p.LogoutResponse(got, LogoutSucceeded)
			if err != nil {
				t.Fatal(err)
			}
			var resp saml.LogoutResponse
			var sentTo string
			if tc.binding == saml.HTTPRedirectBinding {
				redirectMessage(t, target, "SAMLResponse", &resp)
				sentTo, _, _ = strings.Cut(target, "?")
			} else {
				if post == nil || post.Fields.Get("RelayState") != "relay-1" {
					t.Fatalf("LogoutResponse over HTTP-POST: %+v, want a form with the RelayState relay-1", post)
				}
				sentTo = post.URL
				raw, err := base64.StdEncoding.DecodeString(post.Fields.Get("SAMLResponse"))
				if err != nil {
					t.Fatal(err)
				}
				if err := xml.Unmarshal(raw, &resp); err != nil {
					t.Fatal(err)
				}
			}
			if sentTo != answers || resp.Destination != answers || resp.InResponseTo != req.ID {
				t.Errorf("the LogoutResponse to %s goes to %q with Destination %q, want both the ResponseLocation %q", req.ID, sentTo, resp.Destination, answers)
			}

			if tc.binding == saml.HTTPRedirectBinding {
				u, err := e.p.LogoutURL(&Tokens{NameID: &SAMLNameID{Value: "alice@example.com"}}, "", &Flow{State: "logout-state-0123456789"})
				if err != nil {
					t.Fatal(err)
				}
				var sent saml.LogoutRequest
				redirectMessage(t, u, "SAMLRequest", &sent)
				if to, _, _ := strings.Cut(u, "?"); to != location || sent.Destination != location {
					t.Errorf("the LogoutRequest goes to %q with Destination %q, want both the Location %q", to, sent.Destination, location)
				}
			}
		})
	}
}

// The IdP metadata's SingleLogoutService locations are where the proxy
// sends browsers: a redirect's Location, a form's action. One whose
// Location or ResponseLocation is not an absolute http(s) URL never gets
// there. crewjam/saml refuses, as it parses it, metadata with a location of
// another scheme (javascript:, data:) or none (a relative URL, empty): the
// fetch fails and is logged, as for any metadata that does not parse. It
// takes an http(s) URL without a host ("https:///evil.example/slo",
// "https:slo"), which browsers read as a URL of the host after the
// slashes; that service is left out, with a log line naming it, and the
// IdP is one without single logout over its binding. Before, the
// HTTP-Redirect binding redirected there and the HTTP-POST binding's form
// posted there.
func TestSAMLLogoutLocationsMustBeAbsoluteHTTPURLs(t *testing.T) {
	for _, tc := range []struct {
		name, attr, value string
		// refused: the metadata does not load; else the service is left out.
		refused bool
	}{
		{"a javascript: Location", "Location", "javascript:alert(document.domain)", true},
		{"a data: Location", "Location", "data:text/html,<script>alert(1)</script>", true},
		{"a relative Location", "Location", "/saml/slo", true},
		{"an empty Location", "Location", "", true},
		{"a javascript: ResponseLocation", "ResponseLocation", "javascript:alert(document.domain)", true},
		{"a relative ResponseLocation", "ResponseLocation", "slo/answers", true},
		{"a Location without a host", "Location", "https:///evil.example/slo", false},
		{"an opaque https: Location", "Location", "https:evil.example/slo", false},
		{"a ResponseLocation without a host", "ResponseLocation", "https:///evil.example/slo", false},
	} {
		for _, binding := range []string{saml.HTTPRedirectBinding, saml.HTTPPostBinding} {
			t.Run(tc.name+" ("+binding[strings.LastIndex(binding, ":")+1:]+" only)", func(t *testing.T) {
				srv := samlserver.Start(t, samlserver.Options{})
				c := Config{ID: "corp", Protocol: SAML, EntityID: srv.EntityID(), SingleSignOut: true,
					MetadataURL: servedMetadata(t, srv.MetadataURL(), func(root *etree.Element) {
						for _, slo := range root.FindElements("//SingleLogoutService") {
							if slo.SelectAttrValue("Binding", "") != binding {
								slo.Parent().RemoveChild(slo)
								continue
							}
							slo.CreateAttr(tc.attr, tc.value)
						}
					})}
				logs := &process.Output{}
				o := samlTestOptions()
				o.Logger = slog.New(slog.NewTextHandler(logs, nil))
				ctx, cancel := context.WithCancel(context.Background())
				t.Cleanup(cancel)
				p, err := newSAMLProvider(ctx, c, o, defaultSAMLTiming)
				if err != nil {
					t.Fatal(err)
				}

				if tc.refused {
					if err := p.Ready(); err == nil || !strings.Contains(err.Error(), "invalid url") {
						t.Errorf("Ready = %v, want the metadata refused for its URL", err)
					}
				} else if err := p.Ready(); err != nil {
					t.Errorf("Ready = %v, want the metadata loaded without the SingleLogoutService", err)
				}
				u, err := p.LogoutURL(&Tokens{NameID: &SAMLNameID{Value: "alice@example.com"}}, "", &Flow{State: "logout-state-0123456789"})
				if u != "" || (err == nil) == tc.refused {
					t.Errorf("LogoutURL = %q, %v; want no IdP logout", u, err)
				}
				req := &SAMLLogoutRequest{ID: "id-of-the-idp-logout", NameID: "alice@example.com", RelayState: "relay-1"}
				target, post, err := p.LogoutResponse(req, LogoutSucceeded)
				if target != "" || post != nil || err == nil {
					t.Errorf("LogoutResponse = %q, %+v, %v; want no answer", target, post, err)
				}
				want := []string{"SingleLogoutService", tc.attr + ": not an absolute URL"}
				if tc.refused {
					want = []string{"fetching IdP metadata failed", "invalid url"}
				}
				for _, w := range want {
					if !strings.Contains(logs.String(), w) {
						t.Errorf("log %q: want a line with %q", logs.String(), w)
					}
				}
			})
		}
	}
}

// Logout messages that cost far more to read than they are worth are
// refused before crewjam/saml parses them: larger than 64 KiB once
// inflated, or with XML comments, which canonicalization takes out one at a
// time (a SAMLRequest of 5 KB that inflated to 1 MiB of comments took 22 s
// of CPU). All carry the IdP's valid XML signature, which neither padding
// inside a start tag nor comments break; sending one takes no more than the
// IdP's public certificate and any signed message.
func TestSAMLCostlyLogoutMessagesAreRefused(t *testing.T) {
	e := newSLOEnv(t, nil)
	sp := e.sloForger(nil)
	signed := func(t *testing.T, param string) []byte {
		t.Helper()
		var el *etree.Element
		if param == "SAMLRequest" {
			req, err := sp.MakeLogoutRequest(testSLOURL, "alice@example.com")
			if err != nil {
				t.Fatal(err)
			}
			el = req.Element()
		} else {
			resp, err := sp.MakeLogoutResponseWithStatus(testSLOURL, "id-of-the-logout", saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusSuccess}})
			if err != nil {
				t.Fatal(err)
			}
			el = resp.Element()
		}
		doc := etree.NewDocument()
		doc.SetRoot(el)
		raw, err := doc.WriteToBytes()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	// insert puts n bytes of pad into raw after the first occurrence of at
	// (" ": after the root element's name).
	insert := func(raw []byte, at, pad string, n int) []byte {
		i := bytes.Index(raw, []byte(at)) + len(at)
		return append(append(append([]byte{}, raw[:i]...), bytes.Repeat([]byte(pad), n/len(pad))...), raw[i:]...)
	}
	// last puts n bytes of pad into raw as the root element's last
	// children, after its Signature, so that crewjam canonicalizes them.
	last := func(raw []byte, pad string, n int) []byte {
		i := bytes.LastIndex(raw, []byte("</samlp:"))
		return append(append(append([]byte{}, raw[:i]...), bytes.Repeat([]byte(pad), n/len(pad))...), raw[i:]...)
	}
	namespaces := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, ` xmlns:p%d="u%d"`, i, i)
		}
		return b.String()
	}
	for _, tc := range []struct {
		name string
		// make edits the signed message.
		make func(raw []byte) []byte
		post bool
		want string
		// maxAlloc, when set, bounds what refusing it may allocate.
		maxAlloc uint64
	}{
		{"the signed message as it is is accepted", func(raw []byte) []byte { return raw }, false, "", 0},
		{"padded inside its start tag to 1 MiB", func(raw []byte) []byte { return insert(raw, " ", " ", 1<<20-len(raw)) }, false, "larger than", 0},
		{"a deflate bomb: 16 MiB of spaces in 16 KB", func(raw []byte) []byte { return insert(raw, " ", " ", 16<<20) }, false, "larger than", 0},
		// Within the form's limit, which allows for base64.
		{"padded inside its start tag to 80 KB, posted", func(raw []byte) []byte { return insert(raw, " ", " ", 80<<10-len(raw)) }, true, "larger than", 0},
		{"1 MiB of comments", func(raw []byte) []byte { return insert(raw, "</saml:Issuer>", "<!---->", 1<<20-len(raw)) }, false, "larger than", 0},
		{"50 KB of comments", func(raw []byte) []byte { return insert(raw, "</saml:Issuer>", "<!---->", 50<<10) }, false, "comment", 0},
		{"50 KB of comments, posted", func(raw []byte) []byte { return insert(raw, "</saml:Issuer>", "<!---->", 50<<10) }, true, "comment", 0},
		{"one comment", func(raw []byte) []byte { return insert(raw, "</saml:Issuer>", "<!---->", 7) }, false, "comment", 0},
		// What canonicalizing grows with, within 64 KiB (35 and 90 MB
		// allocated before logoutLimits).
		{"60 KB of empty elements", func(raw []byte) []byte { return last(raw, "<a/>", 60<<10) }, false, "more than 256 XML elements", 2 << 20},
		{"60 KB of empty elements under 55 namespace declarations", func(raw []byte) []byte {
			pad := "<a" + namespaces(55) + ">" + strings.Repeat("<a/>", 14_000) + "</a>"
			return last(raw, pad, len(pad))
		}, false, "more than 16 XML namespace declarations in scope", 2 << 20},
		{"60 KB of empty elements, posted", func(raw []byte) []byte { return last(raw, "<a/>", 60<<10) }, true, "more than 256 XML elements", 2 << 20},
		// XML that does not parse before what costs: crewjam's first,
		// lenient pass reads past the error that etree stops at (10.5 MB
		// allocated when this was left to crewjam).
		{"an undefined entity before 60 KB of empty elements", func(raw []byte) []byte {
			return last(insert(raw, "</saml:Issuer>", "&x;", 3), "<a/>", 60<<10)
		}, false, "invalid character entity &x;", 2 << 20},
		{"an attribute without a value before 60 KB of empty elements, posted", func(raw []byte) []byte {
			return last(insert(raw, "</saml:Issuer>", "<b c></b>", 9), "<a/>", 60<<10)
		}, true, "attribute name without =", 2 << 20},
	} {
		for _, param := range []string{"SAMLRequest", "SAMLResponse"} {
			t.Run(tc.name+" ("+param+")", func(t *testing.T) {
				raw := tc.make(signed(t, param))
				form := url.Values{"RelayState": {"relay-1"}}
				var r *http.Request
				if tc.post {
					form.Set(param, base64.StdEncoding.EncodeToString(raw))
					r = httptest.NewRequest(http.MethodPost, testSLOURL, strings.NewReader(form.Encode()))
					r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				} else {
					form.Set(param, base64.StdEncoding.EncodeToString(samlDeflate(raw)))
					r = httptest.NewRequest(http.MethodGet, testSLOURL+"?"+form.Encode(), nil)
				}
				start := time.Now()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				var err error
				if param == "SAMLRequest" {
					_, err = e.p.VerifyLogoutRequest(r)
				} else {
					err = e.p.FinishLogout(r, &Flow{State: "relay-1", IdP: "corp", RequestID: "id-of-the-logout"})
				}
				runtime.ReadMemStats(&after)
				took := time.Since(start)
				alloc := after.TotalAlloc - before.TotalAlloc
				switch {
				case tc.want == "" && err != nil:
					t.Fatalf("refused: %v", err)
				case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
					t.Fatalf("%d bytes (%d sent) took %s, %.1f MB allocated: %v; want it refused for %q",
						len(raw), len(r.URL.RawQuery), took, float64(alloc)/1e6, err, tc.want)
				}
				t.Logf("%d bytes (%d in the query) took %s, %.1f MB allocated: %v", len(raw), len(r.URL.RawQuery), took, float64(alloc)/1e6, err)
				if tc.maxAlloc > 0 && alloc > tc.maxAlloc {
					t.Errorf("refusing it allocated %.1f MB, want at most %d MB", float64(alloc)/1e6, tc.maxAlloc>>20)
				}
			})
		}
	}
}

// The RelayState that goes back to the IdP is the one that came with its
// LogoutRequest, by the binding that carried it: with HTTP-Redirect the one
// in the query, which the IdP's signature covers, not another in a posted
// form that the same request carries.
func TestSAMLLogoutRequestRelayStateIsTheSignedOne(t *testing.T) {
	e := newSLOEnv(t, nil)
	sp := e.sloForger(nil)
	req, err := sp.MakeLogoutRequest(testSLOURL, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	u, err := sp.RedirectLogoutRequestURL(req, "signed-relay")
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, testSLOURL+"?"+u.RawQuery, strings.NewReader("RelayState=https%3A%2F%2Fevil.example%2F"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	got, err := e.p.VerifyLogoutRequest(r)
	if err != nil {
		t.Fatal(err)
	}
	if got.RelayState != "signed-relay" {
		t.Errorf("RelayState %q, want the one the IdP signed, %q", got.RelayState, "signed-relay")
	}

	// Query parameter names are case-sensitive: a relaystate before the
	// signed RelayState is another parameter, which the signature does not
	// cover.
	req, err = sp.MakeLogoutRequest(testSLOURL, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if u, err = sp.RedirectLogoutRequestURL(req, "signed-relay"); err != nil {
		t.Fatal(err)
	}
	got, err = e.p.VerifyLogoutRequest(httptest.NewRequest(http.MethodGet, testSLOURL+"?relaystate=https%3A%2F%2Fevil.example%2F&"+u.RawQuery, nil))
	if err != nil {
		t.Fatal(err)
	}
	if got.RelayState != "signed-relay" {
		t.Errorf("RelayState %q, want the one the IdP signed, %q", got.RelayState, "signed-relay")
	}
}

// The session keeps the first SessionIndex the assertion carries: an
// AuthnStatement without one before it does not leave the session without.
func TestSAMLLogoutTokensKeepTheFirstSessionIndex(t *testing.T) {
	p := &SAMLProvider{cfg: Config{ID: "corp", SingleSignOut: true}}
	a := &saml.Assertion{Subject: &saml.Subject{NameID: &saml.NameID{Value: "alice@example.com"}},
		AuthnStatements: []saml.AuthnStatement{{}, {SessionIndex: "idx-2"}, {SessionIndex: "idx-3"}}}
	if got := p.logoutTokens(a); got == nil || got.SID != "idx-2" || got.NameID.Value != "alice@example.com" {
		t.Errorf("logoutTokens = %+v, want NameID alice@example.com and SessionIndex idx-2", got)
	}
}
