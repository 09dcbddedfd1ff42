package e2e

import (
	"bytes"
	"compress/flate"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/crewjam/saml"
	dsig "github.com/russellhaering/goxmldsig"

	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// Where the proxy keeps sessions in a single logout test.
const (
	cookieStore = "cookie"
	redisStore  = "redis"
)

// sloStack is samlStack with single_sign_out on, sessions in store.
func sloStack(t *testing.T, source, store string) (*stack, *samlserver.Server) {
	t.Helper()
	return sloStackOf(t, source, store, samlserver.Options{}, "{groups: groups}")
}

// sloStackOf is sloStack with the IdP's options (its users are alice, bob
// and o.Users) and the entry's attribute_mapping.
func sloStackOf(t *testing.T, source, store string, o samlserver.Options, mapping string) (*stack, *samlserver.Server) {
	t.Helper()
	o.Users = append([]samlserver.User{samlAlice, samlBob}, o.Users...)
	idpSrv := samlserver.Start(t, o)
	s := listen(t)
	src := "metadata_url: " + idpSrv.MetadataURL()
	if source == fromCertificate {
		src = "x509_cert: " + base64.StdEncoding.EncodeToString(idpSrv.Certificate.Raw) +
			"\n      sso_url: " + idpSrv.SSOURL() + "\n      slo_url: " + idpSrv.URL + "/slo"
	}
	cfg := strings.NewReplacer("ENTITY_ID", idpSrv.EntityID(), "IDP_SOURCE", src+"\n      single_sign_out: true",
		"attribute_mapping: {groups: groups}", "attribute_mapping: "+mapping).Replace(samlConfig)
	if store == redisStore {
		r := redisserver.Start(t)
		cfg = strings.Replace(cfg, "  keys: [SESSION_KEY]\n", "  keys: [SESSION_KEY]\n  store: redis\n  redis: {url: "+r.URL+"}\n", 1)
	}
	s.start(t, cfg)
	if err := idpSrv.AddServiceProviderURL(t.Context(), s.URL+"/.portcullis/saml/corp/metadata"); err != nil {
		t.Fatal(err)
	}
	return s, idpSrv
}

// sloLogin logs user in with a fresh browser and returns it with a copy of
// its session cookies.
func sloLogin(t *testing.T, s *stack, idpSrv *samlserver.Server, user samlserver.User) (*http.Client, []*http.Cookie) {
	t.Helper()
	b := browser(t)
	resp := answer(t, b, idpSrv, s.URL+"/tasks", user).post(t, b)
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("login of %s: status %d\n%s", user.Name, resp.StatusCode, body)
	}
	return b, b.Jar.Cookies(mustURL(t, s.URL))
}

// sloLoginIndex is sloLogin that returns only the session cookies and the
// SessionIndex the IdP gave the session, read from the assertion the
// browser posted.
func sloLoginIndex(t *testing.T, s *stack, idpSrv *samlserver.Server, user samlserver.User) ([]*http.Cookie, string) {
	t.Helper()
	b := browser(t)
	post := answer(t, b, idpSrv, s.URL+"/tasks", user)
	raw, err := base64.StdEncoding.DecodeString(post.Form.Get("SAMLResponse"))
	if err != nil {
		t.Fatal(err)
	}
	var sent saml.Response
	if err := xml.Unmarshal(raw, &sent); err != nil || sent.Assertion == nil ||
		len(sent.Assertion.AuthnStatements) == 0 || sent.Assertion.AuthnStatements[0].SessionIndex == "" {
		t.Fatalf("the IdP's answer to %s has no SessionIndex (err %v):\n%s", user.Name, err, raw)
	}
	resp := post.post(t, b)
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("login of %s: status %d\n%s", user.Name, resp.StatusCode, body)
	}
	return b.Jar.Cookies(mustURL(t, s.URL)), sent.Assertion.AuthnStatements[0].SessionIndex
}

// userinfo is the status of /userinfo with these cookies, sent by a client
// of their own.
func userinfo(t *testing.T, s *stack, cookies []*http.Cookie) int {
	t.Helper()
	status, _ := userinfoBody(t, s, cookies)
	return status
}

// userinfoBody is the status and body of /userinfo with these cookies,
// sent by a client of their own.
func userinfoBody(t *testing.T, s *stack, cookies []*http.Cookie) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/.portcullis/userinfo", nil)
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, readBody(t, resp)
}

// chain follows u in b and returns every URL it was sent to, the last one
// not followed when stop says so.
func chain(t *testing.T, b *http.Client, u string, stop func(*url.URL) bool) ([]string, *http.Response) {
	t.Helper()
	var via []string
	c := *b
	c.CheckRedirect = func(r *http.Request, _ []*http.Request) error {
		via = append(via, r.URL.String())
		if stop != nil && stop(r.URL) {
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	return via, resp
}

func TestSAMLSingleLogoutFromTheProxy(t *testing.T) {
	for _, source := range []string{fromMetadataURL, fromCertificate} {
		t.Run("IdP from "+source, func(t *testing.T) {
			s, idpSrv := sloStack(t, source, cookieStore)
			b, cookies := sloLogin(t, s, idpSrv, samlAlice)

			via, resp := chain(t, b, s.URL+"/.portcullis/logout?rd=/bye", func(u *url.URL) bool { return u.Path == "/bye" })
			readBody(t, resp)
			if len(via) != 3 || !strings.HasPrefix(via[0], idpSrv.URL+"/slo?SAMLRequest=") ||
				!strings.HasPrefix(via[1], s.URL+"/.portcullis/saml/corp/slo?SAMLResponse=") || via[2] != s.URL+"/bye" {
				t.Fatalf("logout went through %q, want the IdP's SLO, the proxy's SLO and rd", via)
			}
			if code := userinfo(t, s, cookies); code != http.StatusUnauthorized {
				t.Errorf("the session cookie after logout: userinfo %d, want 401", code)
			}
			// The IdP session is gone too: the next visit asks for the password.
			post := answer(t, b, idpSrv, s.URL+"/tasks", samlAlice)
			if resp := post.post(t, b); readBody(t, resp) == "" || resp.StatusCode != http.StatusOK {
				t.Errorf("logging in again: status %d", resp.StatusCode)
			}

			// rd off public_url's origin leads to its root.
			via, resp = chain(t, b, s.URL+"/.portcullis/logout?rd=https://evil.example/x", func(u *url.URL) bool { return !strings.HasSuffix(u.Path, "/slo") })
			readBody(t, resp)
			if len(via) < 2 || via[len(via)-1] != s.URL+"/" {
				t.Errorf("logout with rd off the origin went through %q, want it to end at %s/", via, s.URL)
			}
		})
	}
}

// idpForger signs logout messages with the IdP's key as the IdP would, with
// crewjam/saml's SP side: its entity ID and key are the IdP's, and its
// "IdP" is the proxy's SLO endpoint.
func idpForger(s *stack, idpSrv *samlserver.Server) *saml.ServiceProvider {
	slo := s.URL + "/.portcullis/saml/corp/slo"
	return &saml.ServiceProvider{
		EntityID: idpSrv.EntityID(), Key: idpSrv.Key, Certificate: idpSrv.Certificate,
		SignatureMethod: dsig.RSASHA256SignatureMethod,
		IDPMetadata: &saml.EntityDescriptor{EntityID: s.URL + "/.portcullis/saml/corp/metadata", IDPSSODescriptors: []saml.IDPSSODescriptor{{
			SSODescriptor: saml.SSODescriptor{SingleLogoutServices: []saml.Endpoint{{Binding: saml.HTTPRedirectBinding, Location: slo}}},
		}}},
	}
}

func TestSAMLHostileLogoutAnswersAreRefused(t *testing.T) {
	s, idpSrv := sloStack(t, fromMetadataURL, cookieStore)
	// startLogout signs a browser out and returns its RelayState and the
	// LogoutRequest URL, not yet taken to the IdP.
	startLogout := func(t *testing.T) (*http.Client, string, string) {
		b, _ := sloLogin(t, s, idpSrv, samlAlice)
		resp, err := noRedirect(b).Get(s.URL + "/.portcullis/logout")
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, idpSrv.URL+"/slo?") {
			t.Fatalf("logout: status %d Location %q, want the IdP's SLO", resp.StatusCode, loc)
		}
		return b, mustURL(t, loc).Query().Get("RelayState"), loc
	}
	// answerAt takes the LogoutRequest to the IdP in b and returns its
	// answer to the proxy, not yet delivered.
	answerAt := func(t *testing.T, b *http.Client, loc string) string {
		via, resp := chain(t, b, loc, func(u *url.URL) bool { return strings.HasPrefix(u.String(), s.URL) })
		readBody(t, resp)
		if len(via) == 0 {
			t.Fatalf("the IdP did not answer the LogoutRequest: status %d", resp.StatusCode)
		}
		return via[len(via)-1]
	}
	for _, tc := range []struct {
		name   string
		attack func(t *testing.T) (*http.Client, string)
	}{
		{"an answer delivered twice is refused", func(t *testing.T) (*http.Client, string) {
			b, _, loc := startLogout(t)
			back := answerAt(t, b, loc)
			resp, err := b.Get(back)
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
			return b, back
		}},
		{"another browser's answer is refused", func(t *testing.T) (*http.Client, string) {
			a, _, locA := startLogout(t)
			victim, _, _ := startLogout(t)
			return victim, answerAt(t, a, locA)
		}},
		{"an answer signed for this browser's RelayState but to another browser's LogoutRequest is refused", func(t *testing.T) (*http.Client, string) {
			_, _, locA := startLogout(t)
			victim, relayState, _ := startLogout(t)
			var reqA saml.LogoutRequest
			decodeRedirect(t, locA, "SAMLRequest", &reqA)
			u, err := idpForger(s, idpSrv).MakeRedirectLogoutResponse(reqA.ID, relayState)
			if err != nil {
				t.Fatal(err)
			}
			return victim, u.String()
		}},
		{"an unsigned answer is refused", func(t *testing.T) (*http.Client, string) {
			victim, relayState, loc := startLogout(t)
			var req saml.LogoutRequest
			decodeRedirect(t, loc, "SAMLRequest", &req)
			forger := idpForger(s, idpSrv)
			forger.SignatureMethod = ""
			u, err := forger.MakeRedirectLogoutResponse(req.ID, relayState)
			if err != nil {
				t.Fatal(err)
			}
			return victim, u.String()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, target := tc.attack(t)
			resp, err := noRedirect(b).Get(target)
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "You are signed out here") {
				t.Errorf("status %d Location %q, want 400 saying the user is signed out here; body:\n%s",
					resp.StatusCode, resp.Header.Get("Location"), body)
			}
		})
	}
}

func TestSAMLLogoutTheIdPDidNotCompleteSaysSo(t *testing.T) {
	s, idpSrv := sloStack(t, fromMetadataURL, cookieStore)
	for _, tc := range []struct {
		name   string
		status saml.Status
		code   int
		says   string
	}{
		{"a failure at the IdP", saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusResponder}},
			http.StatusBadGateway, "did not end its session"},
		{"a partial logout", saml.Status{StatusCode: saml.StatusCode{Value: saml.StatusSuccess,
			StatusCode: &saml.StatusCode{Value: saml.StatusPartialLogout}}}, http.StatusOK, "may still be signed in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, cookies := sloLogin(t, s, idpSrv, samlAlice)
			resp, err := noRedirect(b).Get(s.URL + "/.portcullis/logout?rd=/bye")
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
			var req saml.LogoutRequest
			loc := resp.Header.Get("Location")
			decodeRedirect(t, loc, "SAMLRequest", &req)
			u, err := idpForger(s, idpSrv).MakeRedirectLogoutResponseWithStatus(req.ID, mustURL(t, loc).Query().Get("RelayState"), tc.status)
			if err != nil {
				t.Fatal(err)
			}
			resp, err = noRedirect(b).Get(u.String())
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != tc.code || !strings.Contains(body, "You are signed out here") || !strings.Contains(body, tc.says) {
				t.Errorf("status %d, want %d and a page saying so; body:\n%s", resp.StatusCode, tc.code, body)
			}
			if code := userinfo(t, s, cookies); code != http.StatusUnauthorized {
				t.Errorf("the session: userinfo %d, want 401", code)
			}
		})
	}
}

// decodeRedirect reads the SAML message param of an HTTP-Redirect binding
// URL into v.
func decodeRedirect(t *testing.T, raw, param string, v any) {
	t.Helper()
	data, err := base64.StdEncoding.DecodeString(mustURL(t, raw).Query().Get(param))
	if err != nil {
		t.Fatal(err)
	}
	if err := xmlUnmarshalDeflated(data, v); err != nil {
		t.Fatalf("%s: %v", param, err)
	}
}

func TestSAMLSingleLogoutFromTheIdP(t *testing.T) {
	for _, store := range []string{cookieStore, redisStore} {
		t.Run(store+" store", func(t *testing.T) {
			s, idpSrv := sloStack(t, fromMetadataURL, store)

			t.Run("the IdP's logout page signs the browser out", func(t *testing.T) {
				b, cookies := sloLogin(t, s, idpSrv, samlBob)
				via, resp := chain(t, b, idpSrv.URL+"/logout", nil)
				body := readBody(t, resp)
				if len(via) != 2 || !strings.HasPrefix(via[0], s.URL+"/.portcullis/saml/corp/slo?SAMLRequest=") ||
					!strings.HasPrefix(via[1], idpSrv.URL+"/slo?SAMLResponse=") {
					t.Errorf("the IdP's logout went through %q, want the proxy's SLO and back", via)
				}
				if resp.StatusCode != http.StatusOK || !strings.Contains(body, "You have been logged out") || strings.Contains(body, "could not be confirmed") {
					t.Errorf("the IdP's page after logout: status %d\n%s", resp.StatusCode, body)
				}
				if code := userinfo(t, s, cookies); code != http.StatusUnauthorized {
					t.Errorf("the session after the IdP's logout: userinfo %d, want 401", code)
				}

				// Signing in again a moment later is no login loop: the
				// logout took the last login's mark with the session.
				resp, err := noRedirect(b).Get(s.URL + "/.portcullis/login/corp")
				if err != nil {
					t.Fatal(err)
				}
				body = readBody(t, resp)
				if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, idpSrv.SSOURL()) {
					t.Errorf("signing in again after the IdP's logout: status %d Location %q, want the way to the IdP\n%s", resp.StatusCode, loc, body)
				}
			})

			t.Run("a LogoutRequest reaching the proxy without the session cookie ends the session", func(t *testing.T) {
				b, cookies := sloLogin(t, s, idpSrv, samlAlice)
				resp, err := noRedirect(b).Get(idpSrv.URL + "/logout")
				if err != nil {
					t.Fatal(err)
				}
				readBody(t, resp)
				toProxy := resp.Header.Get("Location")
				if !strings.HasPrefix(toProxy, s.URL+"/.portcullis/saml/corp/slo?SAMLRequest=") {
					t.Fatalf("the IdP's logout: status %d Location %q, want the proxy's SLO", resp.StatusCode, toProxy)
				}
				// As a cross-site POST would, without the proxy's cookies.
				other := browser(t)
				resp, err = noRedirect(other).Get(toProxy)
				if err != nil {
					t.Fatal(err)
				}
				readBody(t, resp)
				if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, idpSrv.URL+"/slo?SAMLResponse=") {
					t.Fatalf("the proxy's SLO: status %d Location %q, want the LogoutResponse to the IdP", resp.StatusCode, loc)
				}
				var answer saml.LogoutResponse
				decodeRedirect(t, resp.Header.Get("Location"), "SAMLResponse", &answer)
				if answer.Status.StatusCode.Value != saml.StatusSuccess || answer.Status.StatusCode.StatusCode != nil {
					t.Errorf("the LogoutResponse's status %+v, want Success", answer.Status.StatusCode)
				}
				if code := userinfo(t, s, cookies); code != http.StatusUnauthorized {
					t.Errorf("the session after the IdP's LogoutRequest: userinfo %d, want 401", code)
				}

				// The same request again is refused.
				resp, err = noRedirect(other).Get(toProxy)
				if err != nil {
					t.Fatal(err)
				}
				if body := readBody(t, resp); resp.StatusCode != http.StatusBadRequest {
					t.Errorf("the LogoutRequest replayed: status %d, want 400\n%s", resp.StatusCode, body)
				}
			})

			t.Run("a LogoutRequest for another user leaves the browser's own session", func(t *testing.T) {
				b, cookies := sloLogin(t, s, idpSrv, samlAlice)
				// Not bob: a request without SessionIndex ends every session
				// of its user created up to this second, and bob logs in below.
				u, err := idpForger(s, idpSrv).MakeRedirectLogoutRequest("carol@example.com", "")
				if err != nil {
					t.Fatal(err)
				}
				resp, err := noRedirect(b).Get(s.URL + "/.portcullis/saml/corp/slo?" + u.RawQuery)
				if err != nil {
					t.Fatal(err)
				}
				readBody(t, resp)
				if resp.StatusCode != http.StatusFound {
					t.Errorf("carol's LogoutRequest: status %d, want the LogoutResponse to the IdP", resp.StatusCode)
				}
				if code := userinfo(t, s, cookies); code != http.StatusOK {
					t.Errorf("alice's session after carol's LogoutRequest in her browser: userinfo %d, want 200", code)
				}
			})

			t.Run("hostile LogoutRequests end no session", func(t *testing.T) {
				_, cookies := sloLogin(t, s, idpSrv, samlAlice)
				slo := s.URL + "/.portcullis/saml/corp/slo"
				for _, tc := range []struct {
					name string
					edit func(sp *saml.ServiceProvider)
				}{
					{"unsigned", func(sp *saml.ServiceProvider) { sp.SignatureMethod = "" }},
					{"from another issuer", func(sp *saml.ServiceProvider) { sp.EntityID = "https://evil.example/idp" }},
					{"addressed to another SP", func(sp *saml.ServiceProvider) {
						sp.IDPMetadata.IDPSSODescriptors[0].SingleLogoutServices[0].Location = "https://other.example/slo"
					}},
				} {
					forger := idpForger(s, idpSrv)
					tc.edit(forger)
					u, err := forger.MakeRedirectLogoutRequest(samlAlice.Email, "")
					if err != nil {
						t.Fatal(err)
					}
					resp, err := noRedirect(browser(t)).Get(slo + "?" + u.RawQuery)
					if err != nil {
						t.Fatal(err)
					}
					if body := readBody(t, resp); resp.StatusCode != http.StatusBadRequest {
						t.Errorf("%s: status %d, want 400\n%s", tc.name, resp.StatusCode, body)
					}
				}
				if code := userinfo(t, s, cookies); code != http.StatusOK {
					t.Errorf("after hostile LogoutRequests: userinfo %d, want the session still there", code)
				}
			})

			t.Run("a SessionIndex ends only the sessions of the NameID it comes with", func(t *testing.T) {
				// An IdP numbers sessions per user (SAML core 2.7.2): the
				// same SessionIndex under another NameID is another session.
				alices, aliceIndex := sloLoginIndex(t, s, idpSrv, samlAlice)
				bobs, bobIndex := sloLoginIndex(t, s, idpSrv, samlBob)
				u, err := idpForger(s, idpSrv).MakeRedirectLogoutRequest(samlAlice.Email, "", saml.WithSessionIndex(bobIndex))
				if err != nil {
					t.Fatal(err)
				}
				resp, err := noRedirect(browser(t)).Get(s.URL + "/.portcullis/saml/corp/slo?" + u.RawQuery)
				if err != nil {
					t.Fatal(err)
				}
				if body := readBody(t, resp); resp.StatusCode != http.StatusFound {
					t.Errorf("alice's LogoutRequest with bob's SessionIndex: status %d, want the LogoutResponse to the IdP\n%s", resp.StatusCode, body)
				}
				if code := userinfo(t, s, bobs); code != http.StatusOK {
					t.Errorf("bob's session after alice's LogoutRequest naming his SessionIndex: userinfo %d, want 200", code)
				}
				if code := userinfo(t, s, alices); code != http.StatusOK {
					t.Errorf("alice's session (SessionIndex %q) after a LogoutRequest for another of hers: userinfo %d, want 200", aliceIndex, code)
				}

				// Her own SessionIndex ends her session.
				u, err = idpForger(s, idpSrv).MakeRedirectLogoutRequest(samlAlice.Email, "", saml.WithSessionIndex(aliceIndex))
				if err != nil {
					t.Fatal(err)
				}
				resp, err = noRedirect(browser(t)).Get(s.URL + "/.portcullis/saml/corp/slo?" + u.RawQuery)
				if err != nil {
					t.Fatal(err)
				}
				readBody(t, resp)
				if code := userinfo(t, s, alices); code != http.StatusUnauthorized {
					t.Errorf("alice's session after a LogoutRequest with her SessionIndex: userinfo %d, want 401", code)
				}
				if code := userinfo(t, s, bobs); code != http.StatusOK {
					t.Errorf("bob's session after alice's logout: userinfo %d, want 200", code)
				}
			})

			// Last: it ends every session of alice created up to now.
			t.Run("a LogoutRequest without SessionIndex ends every session of the user", func(t *testing.T) {
				_, first := sloLogin(t, s, idpSrv, samlAlice)
				_, second := sloLogin(t, s, idpSrv, samlAlice)
				_, bobs := sloLogin(t, s, idpSrv, samlBob)
				u, err := idpForger(s, idpSrv).MakeRedirectLogoutRequest(samlAlice.Email, "")
				if err != nil {
					t.Fatal(err)
				}
				resp, err := noRedirect(browser(t)).Get(s.URL + "/.portcullis/saml/corp/slo?" + u.RawQuery)
				if err != nil {
					t.Fatal(err)
				}
				readBody(t, resp)
				if resp.StatusCode != http.StatusFound {
					t.Errorf("alice's LogoutRequest: status %d, want the LogoutResponse to the IdP", resp.StatusCode)
				}
				for name, cookies := range map[string][]*http.Cookie{"alice's first": first, "alice's second": second} {
					if code := userinfo(t, s, cookies); code != http.StatusUnauthorized {
						t.Errorf("%s session: userinfo %d, want 401", name, code)
					}
				}
				if code := userinfo(t, s, bobs); code != http.StatusOK {
					t.Errorf("bob's session: userinfo %d, want 200", code)
				}
			})
		})
	}
}

func TestSAMLSingleLogoutEndpointNeedsSingleSignOut(t *testing.T) {
	s, _ := samlStack(t, fromMetadataURL)
	resp, err := noRedirect(browser(t)).Get(s.URL + "/.portcullis/saml/corp/slo?SAMLRequest=x")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusNotFound {
		t.Errorf("SLO without single_sign_out: status %d, want 404\n%s", resp.StatusCode, body)
	}
}

// xmlUnmarshalDeflated inflates data (the HTTP-Redirect binding's DEFLATE)
// and reads the XML into v.
func xmlUnmarshalDeflated(data []byte, v any) error {
	inflated, err := io.ReadAll(flate.NewReader(bytes.NewReader(data)))
	if err != nil {
		return err
	}
	return xml.Unmarshal(inflated, v)
}

// withoutSessionIndex makes the test IdP's assertions without a
// SessionIndex, which SAML core (2.7.2) leaves optional: its LogoutRequests
// then name the user by NameID alone.
type withoutSessionIndex struct {
	samlserver.GroupsAssertionMaker
}

func (m withoutSessionIndex) MakeAssertion(req *saml.IdpAuthnRequest, session *saml.Session) error {
	if err := m.GroupsAssertionMaker.MakeAssertion(req, session); err != nil {
		return err
	}
	for i := range req.Assertion.AuthnStatements {
		req.Assertion.AuthnStatements[i].SessionIndex = ""
	}
	return nil
}

// profileSub is the sub of the session these cookies carry, as /userinfo
// shows it.
func profileSub(t *testing.T, s *stack, cookies []*http.Cookie) string {
	t.Helper()
	status, body := userinfoBody(t, s, cookies)
	var p struct{ Sub string }
	if err := json.Unmarshal([]byte(body), &p); err != nil || status != http.StatusOK {
		t.Fatalf("userinfo: status %d, %v", status, err)
	}
	return p.Sub
}

// With attribute_mapping.uid the profile's sub is an attribute, but the
// IdP names the user of a LogoutRequest by the NameID it issued: the
// sessions are found by that, with or without the browser's cookie, and
// the proxy's own LogoutRequest names it too.
func TestSAMLSingleLogoutOfAUserWhoseSubIsAnAttribute(t *testing.T) {
	for _, store := range []string{cookieStore, redisStore} {
		t.Run(store+" store", func(t *testing.T) {
			s, idpSrv := sloStackOf(t, fromMetadataURL, store,
				samlserver.Options{AssertionMaker: withoutSessionIndex{}}, "{groups: groups, uid: uid}")

			// Each subtest ends every session of its user created up to
			// its second: alice first, then bob.
			t.Run("the proxy's own logout names the user by the NameID the IdP gave", func(t *testing.T) {
				b, cookies := sloLogin(t, s, idpSrv, samlAlice)
				if sub := profileSub(t, s, cookies); sub != samlAlice.Name {
					t.Fatalf("the profile's sub is %q, want the uid attribute %q", sub, samlAlice.Name)
				}
				via, resp := chain(t, b, s.URL+"/.portcullis/logout?rd=/bye", func(u *url.URL) bool { return u.Path == "/bye" })
				readBody(t, resp)
				if len(via) != 3 || via[2] != s.URL+"/bye" {
					t.Fatalf("logout went through %q, want the IdP's SLO, the proxy's SLO and rd", via)
				}
				var req saml.LogoutRequest
				decodeRedirect(t, via[0], "SAMLRequest", &req)
				if req.NameID == nil || req.NameID.Value != samlAlice.Email {
					t.Errorf("the proxy's LogoutRequest names %+v, want the NameID %q", req.NameID, samlAlice.Email)
				}
			})

			t.Run("a LogoutRequest reaching the proxy without the session cookie ends every session of the user", func(t *testing.T) {
				b, first := sloLogin(t, s, idpSrv, samlAlice)
				_, second := sloLogin(t, s, idpSrv, samlAlice)
				_, bobs := sloLogin(t, s, idpSrv, samlBob)
				resp, err := noRedirect(b).Get(idpSrv.URL + "/logout")
				if err != nil {
					t.Fatal(err)
				}
				readBody(t, resp)
				toProxy := resp.Header.Get("Location")
				var sent saml.LogoutRequest
				decodeRedirect(t, toProxy, "SAMLRequest", &sent)
				if sent.NameID == nil || sent.NameID.Value != samlAlice.Email || sent.SessionIndex != nil {
					t.Fatalf("the IdP's LogoutRequest names %+v, SessionIndex %+v; want alice's NameID alone", sent.NameID, sent.SessionIndex)
				}
				// As a cross-site POST would, without the proxy's cookies.
				resp, err = noRedirect(browser(t)).Get(toProxy)
				if err != nil {
					t.Fatal(err)
				}
				readBody(t, resp)
				var answer saml.LogoutResponse
				decodeRedirect(t, resp.Header.Get("Location"), "SAMLResponse", &answer)
				if code := answer.Status.StatusCode; code.Value != saml.StatusSuccess || code.StatusCode != nil {
					t.Errorf("the LogoutResponse's status %s %+v, want Success alone", code.Value, code.StatusCode)
				}
				for name, cookies := range map[string][]*http.Cookie{"alice's first": first, "alice's second": second} {
					if code := userinfo(t, s, cookies); code != http.StatusUnauthorized {
						t.Errorf("%s session after the IdP's LogoutRequest: userinfo %d, want 401", name, code)
					}
				}
				if code := userinfo(t, s, bobs); code != http.StatusOK {
					t.Errorf("bob's session: userinfo %d, want 200", code)
				}
			})

			t.Run("a LogoutRequest the browser brings ends its session and the user's others", func(t *testing.T) {
				b, first := sloLogin(t, s, idpSrv, samlBob)
				_, second := sloLogin(t, s, idpSrv, samlBob)
				via, resp := chain(t, b, idpSrv.URL+"/logout", nil)
				body := readBody(t, resp)
				if len(via) != 2 || !strings.HasPrefix(via[0], s.URL+"/.portcullis/saml/corp/slo?SAMLRequest=") ||
					resp.StatusCode != http.StatusOK || !strings.Contains(body, "You have been logged out") {
					t.Errorf("the IdP's logout went through %q to status %d\n%s", via, resp.StatusCode, body)
				}
				for name, cookies := range map[string][]*http.Cookie{"bob's own": first, "bob's other": second} {
					if code := userinfo(t, s, cookies); code != http.StatusUnauthorized {
						t.Errorf("%s session after the IdP's LogoutRequest: userinfo %d, want 401", name, code)
					}
				}
			})
		})
	}
}

// With attribute_mapping.uid, the profile's sub and the NameID are names
// from two different lists: one user's uid attribute can be another's
// NameID (here mallory chose the username bob@example.com, and the IdP
// names bob by his email). A logout from the IdP that mallory's browser
// brings ends mallory's sessions, found by her NameID and by her own
// session's sub among the sessions of that sub, never bob's, whose NameID
// her sub happens to be.
func TestSAMLSingleLogoutEndsNoOtherUsersSessions(t *testing.T) {
	mallory := samlserver.User{Name: samlBob.Email, Password: "mallory-pw", Email: "mallory@example.com"}
	for _, store := range []string{cookieStore, redisStore} {
		t.Run(store+" store", func(t *testing.T) {
			s, idpSrv := sloStackOf(t, fromMetadataURL, store,
				samlserver.Options{AssertionMaker: withoutSessionIndex{}, Users: []samlserver.User{mallory}}, "{groups: groups, uid: uid}")
			_, bobs := sloLogin(t, s, idpSrv, samlBob)
			b, hers := sloLogin(t, s, idpSrv, mallory)
			if sub := profileSub(t, s, hers); sub != samlBob.Email {
				t.Fatalf("mallory's profile sub is %q, want her uid attribute %q", sub, samlBob.Email)
			}
			via, resp := chain(t, b, idpSrv.URL+"/logout", nil)
			if body := readBody(t, resp); len(via) != 2 || resp.StatusCode != http.StatusOK {
				t.Fatalf("mallory's logout at the IdP went through %q to status %d\n%s", via, resp.StatusCode, body)
			}
			if code := userinfo(t, s, hers); code != http.StatusUnauthorized {
				t.Errorf("mallory's session after her logout at the IdP: userinfo %d, want 401", code)
			}
			if code := userinfo(t, s, bobs); code != http.StatusOK {
				t.Errorf("bob's session after mallory's logout at the IdP: userinfo %d, want 200", code)
			}
		})
	}
}
