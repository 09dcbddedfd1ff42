package proxy

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// A LogoutRequest without SessionIndex ends its user's sessions created up
// to its IssueInstant, when the IdP ended the user's session, not up to
// when it arrives: with the cookie store, the same signed request replayed
// on another replica within its acceptance window (each replica remembers
// only the request IDs it saw) must not end the logins made since.
func TestSAMLLogoutRequestEndsSessionsUpToItsIssueInstant(t *testing.T) {
	idpSrv := samlserver.Start(t, samlserver.Options{})
	h := newTestHandler(t, minimal+`    - id: corp
      protocol: SAML
      entity_id: `+idpSrv.EntityID()+`
      x509_cert: `+base64.StdEncoding.EncodeToString(idpSrv.Certificate.Raw)+`
      sso_url: `+idpSrv.SSOURL()+`
      slo_url: `+idpSrv.URL+`/slo
      single_sign_out: true
`)
	// The request is checked on crewjam/saml's clock, the real one: it was
	// issued half a minute ago, within the 90 s it is accepted for.
	issued := time.Now().Add(-30 * time.Second).Truncate(time.Second)
	sessionOf := func(email string, created time.Time) []*http.Cookie {
		s := session.New(idp.Profile{IdP: "corp", Sub: email, Email: email, Roles: []string{"user"}},
			idp.Tokens{NameID: &idp.SAMLNameID{Value: email}}, h.cookies)
		s.Created, s.LastSeen, s.Refreshed = created, created, created
		rec := httptest.NewRecorder()
		if err := h.sessions.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
			t.Fatal(err)
		}
		return rec.Result().Cookies()
	}
	userinfo := func(cookies []*http.Cookie) int {
		r := httptest.NewRequest("GET", "/.portcullis/userinfo", nil)
		for _, c := range cookies {
			r.AddCookie(c)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	sessions := []struct {
		name    string
		cookies []*http.Cookie
		want    int
	}{
		{"alice's login a minute before the IdP's logout", sessionOf("alice@example.com", issued.Add(-time.Minute)), http.StatusUnauthorized},
		{"alice's login in the second of the IdP's logout", sessionOf("alice@example.com", issued), http.StatusUnauthorized},
		{"alice's login since the IdP's logout", sessionOf("alice@example.com", issued.Add(10*time.Second)), http.StatusOK},
		{"bob's login before it", sessionOf("bob@example.com", issued.Add(-time.Minute)), http.StatusOK},
	}

	slo := "https://cvat.example.com/.portcullis/saml/corp/slo"
	forger := &saml.ServiceProvider{ // the IdP's side, with its key
		EntityID: idpSrv.EntityID(), Key: idpSrv.Key, Certificate: idpSrv.Certificate,
		SignatureMethod: dsig.RSASHA256SignatureMethod,
		IDPMetadata: &saml.EntityDescriptor{IDPSSODescriptors: []saml.IDPSSODescriptor{{
			SSODescriptor: saml.SSODescriptor{SingleLogoutServices: []saml.Endpoint{{Binding: saml.HTTPRedirectBinding, Location: slo}}},
		}}},
	}
	u, err := forger.MakeRedirectLogoutRequest("alice@example.com", "", func(r *saml.LogoutRequest) { r.IssueInstant = issued })
	if err != nil {
		t.Fatal(err)
	}
	// Brought by the browser of alice's new login: it stays too.
	r := httptest.NewRequest("GET", "/.portcullis/saml/corp/slo?"+u.RawQuery, nil)
	for _, c := range sessions[2].cookies {
		r.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if loc := rec.Header().Get("Location"); rec.Code != http.StatusFound || !strings.HasPrefix(loc, idpSrv.URL+"/slo?SAMLResponse=") {
		t.Fatalf("the LogoutRequest: %d to %q, want the LogoutResponse to the IdP\n%s", rec.Code, loc, rec.Body)
	}
	for _, s := range sessions {
		if code := userinfo(s.cookies); code != s.want {
			t.Errorf("%s: userinfo %d, want %d", s.name, code, s.want)
		}
	}

	if got, now := logoutCutoff(time.Now().Add(time.Minute), time.Now()), time.Now(); got.After(now) {
		t.Errorf("an IssueInstant a minute ahead (the IdP's clock is fast) cuts off at %s, after now (%s)", got, now)
	}
}
