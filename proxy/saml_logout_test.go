package proxy

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// idpSide signs logout messages to the test handler's SLO endpoint with the
// key of idpSrv, as the IdP does: crewjam/saml's SP side, with the IdP's
// entity ID and key.
func idpSide(idpSrv *samlserver.Server) *saml.ServiceProvider {
	slo := "https://cvat.example.com/.portcullis/saml/corp/slo"
	return &saml.ServiceProvider{
		EntityID: idpSrv.EntityID(), Key: idpSrv.Key, Certificate: idpSrv.Certificate,
		SignatureMethod: dsig.RSASHA256SignatureMethod,
		IDPMetadata: &saml.EntityDescriptor{IDPSSODescriptors: []saml.IDPSSODescriptor{{
			SSODescriptor: saml.SSODescriptor{SingleLogoutServices: []saml.Endpoint{{Binding: saml.HTTPRedirectBinding, Location: slo}}},
		}}},
	}
}

// sloEntry is the IdP entry of idpSrv, id corp, with single_sign_out.
func sloEntry(idpSrv *samlserver.Server) string {
	return `    - id: corp
      protocol: SAML
      entity_id: ` + idpSrv.EntityID() + `
      x509_cert: ` + base64.StdEncoding.EncodeToString(idpSrv.Certificate.Raw) + `
      sso_url: ` + idpSrv.SSOURL() + `
      slo_url: ` + idpSrv.URL + `/slo
      single_sign_out: true
`
}

// A LogoutRequest without SessionIndex ends its user's sessions created up
// to its IssueInstant, when the IdP ended the user's session, not up to
// when it arrives: with the cookie store, the same signed request replayed
// on another replica within its acceptance window (each replica remembers
// only the request IDs it saw) must not end the logins made since.
func TestSAMLLogoutRequestEndsSessionsUpToItsIssueInstant(t *testing.T) {
	idpSrv := samlserver.Start(t, samlserver.Options{})
	h := newTestHandler(t, minimal+sloEntry(idpSrv))
	// The request is checked on crewjam/saml's clock, the real one: it was
	// issued half a minute ago, within the 90 s it is accepted for.
	issued := time.Now().Add(-30 * time.Second).Truncate(time.Second)
	sessionOf := func(email string, created time.Time) []*http.Cookie {
		return samlSessionCookies(t, h, email, "", created)
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

	u, err := idpSide(idpSrv).MakeRedirectLogoutRequest("alice@example.com", "", func(r *saml.LogoutRequest) { r.IssueInstant = issued })
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
		if code := userinfoStatus(h, s.cookies); code != s.want {
			t.Errorf("%s: userinfo %d, want %d", s.name, code, s.want)
		}
	}

	if got, now := logoutCutoff(time.Now().Add(time.Minute), time.Now()), time.Now(); got.After(now) {
		t.Errorf("an IssueInstant a minute ahead (the IdP's clock is fast) cuts off at %s, after now (%s)", got, now)
	}
}

// With attribute_mapping.uid a LogoutRequest names the user by the NameID,
// but the user's sessions were found by the profile's sub before they were
// by the NameID: those the Redis store indexed so before an update, and
// those made before single_sign_out was on, whose tokens name no NameID. A
// LogoutRequest without SessionIndex that the browser brings with one of
// the user's sessions still ends them, by that session's sub.
func TestSAMLLogoutRequestFindsSessionsByTheProfileSubAsBefore(t *testing.T) {
	idpSrv := samlserver.Start(t, samlserver.Options{})
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store+" store", func(t *testing.T) {
			y := minimal + sloEntry(idpSrv) + "      attribute_mapping: {uid: uid}\n"
			if store == "redis" {
				srv := redisserver.Start(t)
				y = storeInRedis(y, srv.URL)
			}
			h := newTestHandler(t, y)
			sessionOf := func(uid string, nameID *idp.SAMLNameID) []*http.Cookie {
				s := session.New(idp.Profile{IdP: "corp", Sub: uid, Roles: []string{"user"}}, idp.Tokens{NameID: nameID}, h.cookies)
				rec := httptest.NewRecorder()
				if err := h.sessions.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
					t.Fatal(err)
				}
				return rec.Result().Cookies()
			}
			own := sessionOf("alice", &idp.SAMLNameID{Value: "alice@example.com"})
			older := sessionOf("alice", nil)
			bobs := sessionOf("bob", &idp.SAMLNameID{Value: "bob@example.com"})

			u, err := idpSide(idpSrv).MakeRedirectLogoutRequest("alice@example.com", "")
			if err != nil {
				t.Fatal(err)
			}
			takeLogoutRequest(t, h, u, own)
			for _, s := range []struct {
				name    string
				cookies []*http.Cookie
				want    int
			}{
				{"the browser's own session", own, http.StatusUnauthorized},
				{"alice's session from before single_sign_out", older, http.StatusUnauthorized},
				{"bob's session", bobs, http.StatusOK},
			} {
				r := httptest.NewRequest("GET", "/.portcullis/userinfo", nil)
				for _, c := range s.cookies {
					r.AddCookie(c)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				if rec.Code != s.want {
					t.Errorf("%s: userinfo %d, want %d", s.name, rec.Code, s.want)
				}
			}
		})
	}
}

// A LogoutRequest that names a SessionIndex ends the sessions of that IdP
// session only, those of the user's other IdP sessions (another browser)
// stay, and so does the session of the browser that brings it when it is of
// another IdP session.
func TestSAMLLogoutRequestWithASessionIndexEndsThatIdPSessionOnly(t *testing.T) {
	idpSrv := samlserver.Start(t, samlserver.Options{})
	h := newTestHandler(t, minimal+sloEntry(idpSrv))
	created := time.Now().Add(-time.Minute).Truncate(time.Second)
	sessionOf := func(index string) []*http.Cookie {
		return samlSessionCookies(t, h, "alice@example.com", index, created)
	}
	ended, other := sessionOf("idx-1"), sessionOf("idx-2")
	u, err := idpSide(idpSrv).MakeRedirectLogoutRequest("alice@example.com", "", func(r *saml.LogoutRequest) {
		r.SessionIndex = &saml.SessionIndex{Value: "idx-1"}
	})
	if err != nil {
		t.Fatal(err)
	}
	takeLogoutRequest(t, h, u, other)
	if code := userinfoStatus(h, ended); code != http.StatusUnauthorized {
		t.Errorf("the session of idx-1: userinfo %d, want 401", code)
	}
	if code := userinfoStatus(h, other); code != http.StatusOK {
		t.Errorf("the session of idx-2, whose browser brought the request: userinfo %d, want 200", code)
	}
}

// samlSessionCookies saves a session of the SAML entry corp for the user
// whose NameID and email are email, in the IdP session index (SID), made at
// created, and returns its cookies.
func samlSessionCookies(t *testing.T, h *Handler, email, index string, created time.Time) []*http.Cookie {
	t.Helper()
	s := session.New(idp.Profile{IdP: "corp", Sub: email, Email: email, Roles: []string{"user"}},
		idp.Tokens{NameID: &idp.SAMLNameID{Value: email}, SID: index}, h.cookies)
	s.Created, s.LastSeen, s.Refreshed = created, created, created
	rec := httptest.NewRecorder()
	if err := h.sessions.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
		t.Fatal(err)
	}
	return rec.Result().Cookies()
}

// userinfoStatus is the status of /userinfo with cookies: 200 while their
// session lives, 401 once it has ended.
func userinfoStatus(h *Handler, cookies []*http.Cookie) int {
	r := httptest.NewRequest("GET", "/.portcullis/userinfo", nil)
	for _, c := range cookies {
		r.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec.Code
}

// takeLogoutRequest brings the IdP's LogoutRequest u (HTTP-Redirect) to the
// SLO endpoint of corp in a browser holding cookies, and wants the
// LogoutResponse to the IdP in return.
func takeLogoutRequest(t *testing.T, h *Handler, u *url.URL, cookies []*http.Cookie) {
	t.Helper()
	r := httptest.NewRequest("GET", "/.portcullis/saml/corp/slo?"+u.RawQuery, nil)
	for _, c := range cookies {
		r.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != http.StatusFound {
		t.Fatalf("the LogoutRequest: %d, want the LogoutResponse to the IdP\n%s", rec.Code, rec.Body)
	}
}
