package e2e

import (
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/crewjam/saml"

	"github.com/portcullis-proxy/portcullis/test/samlserver"
	"github.com/portcullis-proxy/portcullis/test/sspserver"
)

// sspAnn is the user of the SimpleSAMLphp IdP, with the attributes an
// eduGAIN IdP releases: isMemberOf carries her groups.
var sspAnn = sspserver.User{Name: "ann", Password: "ann-password", Attributes: map[string][]string{
	"uid":                  {"ann"},
	"mail":                 {"ann@example.edu"},
	"givenName":            {"Ann"},
	"sn":                   {"Example"},
	"eduPersonAffiliation": {"staff", "member"},
	"isMemberOf":           {"cvat-admins", "staff"},
}}

// sspCase is one way SimpleSAMLphp may be set up for the proxy's entry id.
type sspCase struct {
	name string
	id   string
	sp   sspserver.ServiceProvider
	// fromCert: the entry has x509_cert and sso_url rather than
	// metadata_url.
	fromCert bool
	mapping  string
	sub      string // what the upstream gets as X-Sub; default "ann"
	// failReason, hints: as in samlInteropCase.
	failReason string
	hints      []string
}

// The attribute_mapping for what SimpleSAMLphp sends by short name, and by
// OID through name2oid (which sends no FriendlyName).
const (
	sspBasicMapping = "{uid: uid, email: mail, groups: isMemberOf}"
	sspOIDMapping   = `{uid: "urn:oid:0.9.2342.19200300.100.1.1", email: "urn:oid:0.9.2342.19200300.100.1.3", groups: "urn:oid:1.3.6.1.4.1.5923.1.5.1.1"}`
)

func TestSAMLSimpleSAMLphpLogsIn(t *testing.T) {
	s := listen(t)
	spKey, spCert, err := samlserver.NewKeyPair("portcullis saml sp")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := writeRSAPair(t, spKey, spCert)
	no := false
	cases := []sspCase{
		{name: "short attribute names, both signed, from metadata_url", id: "basic", mapping: sspBasicMapping,
			sp: sspserver.ServiceProvider{SignLogout: true}},
		{name: "attributes named by OID (name2oid), from metadata_url", id: "oid", mapping: sspOIDMapping,
			sp: sspserver.ServiceProvider{OIDNames: true}},
		{name: "from x509_cert and sso_url", id: "cert", fromCert: true, mapping: sspBasicMapping,
			sp: sspserver.ServiceProvider{SignLogout: true}},
		{name: "response signed only (saml20.sign.assertion false)", id: "response-only", mapping: sspBasicMapping,
			sp: sspserver.ServiceProvider{SignAssertion: &no}},
		{name: "assertion signed only (saml20.sign.response false)", id: "assertion-only", mapping: sspBasicMapping,
			sp: sspserver.ServiceProvider{SignResponse: &no}},
		{name: "assertion encrypted (AES-128-CBC, RSA-OAEP), both signed", id: "encrypted", mapping: sspBasicMapping,
			sp: sspserver.ServiceProvider{EncryptAssertion: true}},
		{name: "assertion encrypted, signed only itself, is refused naming response signing", id: "encrypted-assertion-only", mapping: sspBasicMapping,
			sp:         sspserver.ServiceProvider{EncryptAssertion: true, SignResponse: &no},
			failReason: "saml_encrypted", hints: []string{"CBC", "AES-GCM"}},
		{name: "NameID emailAddress from mail", id: "email-nameid", mapping: "{email: mail, groups: isMemberOf}", sub: "ann@example.edu",
			sp: sspserver.ServiceProvider{NameIDFormat: string(saml.EmailAddressNameIDFormat), NameIDAttribute: "mail"}},
	}

	var sps []sspserver.ServiceProvider
	for _, c := range cases {
		sp := c.sp
		base := s.URL + "/.portcullis/saml/" + c.id
		sp.EntityID, sp.ACS, sp.SLO, sp.Certificate = base+"/metadata", base+"/acs", base+"/slo", spCert
		sps = append(sps, sp)
	}
	idpSrv := sspserver.Start(t, sspserver.Options{Users: []sspserver.User{sspAnn}, ServiceProviders: sps})

	var entries strings.Builder
	for _, c := range cases {
		fmt.Fprintf(&entries, "    - id: %s\n      protocol: SAML\n      entity_id: %s\n", c.id, idpSrv.EntityID())
		if c.fromCert {
			fmt.Fprintf(&entries, "      x509_cert: %s\n      sso_url: %s\n      slo_url: %s\n",
				base64.StdEncoding.EncodeToString(idpSrv.Certificate.Raw), idpSrv.SSOURL(), idpSrv.SLOURL())
		} else {
			fmt.Fprintf(&entries, "      metadata_url: %s\n", idpSrv.MetadataURL())
		}
		fmt.Fprintf(&entries, "      attribute_mapping: %s\n      sp_cert_file: %s\n      sp_key_file: %s\n      single_sign_out: true\n",
			c.mapping, certFile, keyFile)
	}
	logs := s.startLogged(t, strings.Replace(samlInteropConfig, "IDENTITY_PROVIDERS", entries.String(), 1))

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := browser(t)
			post, _ := sspAnswer(t, b, idpSrv, s.URL+"/.portcullis/login/"+c.id+"?rd=/tasks", sspAnn.Password)
			if post == nil {
				t.Fatal("SimpleSAMLphp did not answer the login")
			}
			if post.Action != s.URL+"/.portcullis/saml/"+c.id+"/acs" {
				t.Errorf("SimpleSAMLphp posts the answer to %s, want the entry's ACS", post.Action)
			}
			resp := post.post(t, b)
			if !interopLoginEnded(t, s, logs, b, resp, "/.portcullis/saml/"+c.id+"/acs", c.failReason, c.hints) {
				return
			}
			sub := c.sub
			if sub == "" {
				sub = "ann"
			}
			h := upstreamSees(t, b, s)
			if got := h.Get("X-Sub"); got != sub {
				t.Errorf("X-Sub = %q, want %q", got, sub)
			}
			if e, g, r := h.Get("X-Email"), h.Get("X-Groups"), h.Get("X-Roles"); e != "ann@example.edu" || g != "cvat-admins|staff" || r != "admin" {
				t.Errorf("X-Email %q, X-Groups %q, X-Roles %q; want ann@example.edu, cvat-admins|staff, admin", e, g, r)
			}
			if lines := logs.find(t, map[string]any{"event": "login", "idp": c.id}); len(lines) != 1 || lines[0]["sub"] != sub {
				t.Errorf("login lines of %s: %v, want one of sub %s", c.id, lines, sub)
			}
		})
	}

	t.Run("a wrong password stays at SimpleSAMLphp's login form", func(t *testing.T) {
		b := browser(t)
		post, resp := sspAnswer(t, b, idpSrv, s.URL+"/.portcullis/login/basic?rd=/tasks", "not-the-password")
		if post != nil {
			t.Fatalf("SimpleSAMLphp answered a wrong password with a SAMLResponse to %s", post.Action)
		}
		if !strings.HasPrefix(resp.Request.URL.String(), idpSrv.URL+sspserver.LoginPath) {
			t.Errorf("after a wrong password the browser is at %s, want SimpleSAMLphp's login form", resp.Request.URL)
		}
		if code := userinfo(t, s, b.Jar.Cookies(mustURL(t, s.URL))); code != http.StatusUnauthorized {
			t.Errorf("/userinfo after a wrong password: %d, want 401", code)
		}
	})

	for _, id := range []string{"basic", "cert"} {
		t.Run("single logout from the proxy ("+id+")", func(t *testing.T) {
			b, cookies := sspLogin(t, s, idpSrv, id)
			via, resp := chain(t, b, s.URL+"/.portcullis/logout?rd=/bye", func(u *url.URL) bool { return u.Path == "/bye" })
			readBody(t, resp)
			if len(via) < 3 || !strings.HasPrefix(via[0], idpSrv.SLOURL()+"?SAMLRequest=") ||
				!strings.HasPrefix(via[len(via)-2], s.URL+"/.portcullis/saml/"+id+"/slo?SAMLResponse=") || via[len(via)-1] != s.URL+"/bye" {
				t.Fatalf("logout went through %q, want SimpleSAMLphp's SLO, the proxy's SLO and rd", via)
			}
			if code := userinfo(t, s, cookies); code != http.StatusUnauthorized {
				t.Errorf("the session cookie after logout: userinfo %d, want 401", code)
			}
			if lines := logs.find(t, map[string]any{"event": "logout", "idp": id}); len(lines) == 0 {
				t.Errorf("no logout line for %s", id)
			}
			// The IdP session is gone too: the next login asks for the password.
			if post, _ := sspAnswer(t, b, idpSrv, s.URL+"/.portcullis/login/"+id+"?rd=/tasks", sspAnn.Password); post == nil {
				t.Error("logging in again after logout failed")
			}
		})
	}

	// SimpleSAMLphp signs logout messages only with sign.logout: the
	// LogoutResponse of one without is refused, the session here having
	// ended already.
	t.Run("single logout from the proxy, SimpleSAMLphp without sign.logout", func(t *testing.T) {
		b, cookies := sspLogin(t, s, idpSrv, "oid")
		via, resp := chain(t, b, s.URL+"/.portcullis/logout?rd=/bye", func(u *url.URL) bool { return u.Path == "/bye" })
		readBody(t, resp)
		if resp.StatusCode != http.StatusBadRequest || resp.Request.URL.Path != "/.portcullis/saml/oid/slo" {
			t.Fatalf("logout ended at %s with %d, want the proxy's SLO refusing the answer; went through %q", resp.Request.URL, resp.StatusCode, via)
		}
		if strings.Contains(resp.Request.URL.RawQuery, "Signature=") {
			t.Errorf("SimpleSAMLphp signed the LogoutResponse without sign.logout: %s", resp.Request.URL)
		}
		lines := logs.find(t, map[string]any{"event": "saml_logout_refused", "idp": "oid"})
		if len(lines) != 1 || lines[0]["reason"] != "invalid_response" || !strings.Contains(fmt.Sprint(lines[0]["err"]), "signature") {
			t.Errorf("saml_logout_refused lines: %v, want one naming the missing signature", lines)
		} else if !strings.Contains(fmt.Sprint(lines[0]["hint"]), "sign.logout") {
			t.Errorf("saml_logout_refused hint %q, want it to say what to set at the IdP", lines[0]["hint"])
		}
		if code := userinfo(t, s, cookies); code != http.StatusUnauthorized {
			t.Errorf("the session cookie after logout: userinfo %d, want 401", code)
		}
	})

	t.Run("single logout from SimpleSAMLphp without sign.logout is refused", func(t *testing.T) {
		b, cookies := sspLogin(t, s, idpSrv, "oid")
		via, resp := chain(t, b, idpSrv.InitSLOURL(s.URL+"/bye"), func(u *url.URL) bool { return u.Path == "/bye" })
		readBody(t, resp)
		if resp.StatusCode != http.StatusBadRequest || resp.Request.URL.Path != "/.portcullis/saml/oid/slo" ||
			strings.Contains(resp.Request.URL.RawQuery, "Signature=") {
			t.Fatalf("logout ended at %s with %d, want the proxy's SLO refusing an unsigned LogoutRequest; went through %q", resp.Request.URL, resp.StatusCode, via)
		}
		lines := logs.find(t, map[string]any{"event": "saml_logout_refused", "idp": "oid", "reason": "invalid_request"})
		if len(lines) != 1 {
			t.Errorf("saml_logout_refused invalid_request lines of oid: %v, want one", lines)
		} else if !strings.Contains(fmt.Sprint(lines[0]["hint"]), "sign.logout") {
			t.Errorf("saml_logout_refused hint %q, want it to say what to set at the IdP", lines[0]["hint"])
		}
		if code := userinfo(t, s, cookies); code != http.StatusOK {
			t.Errorf("the session after an unsigned LogoutRequest: userinfo %d, want 200 (still signed in)", code)
		}
	})

	t.Run("single logout from SimpleSAMLphp", func(t *testing.T) {
		b, cookies := sspLogin(t, s, idpSrv, "basic")
		var req saml.LogoutRequest
		via, resp := chain(t, b, idpSrv.InitSLOURL(s.URL+"/bye"), func(u *url.URL) bool { return u.Path == "/bye" })
		readBody(t, resp)
		i := 0
		for i < len(via) && !strings.HasPrefix(via[i], s.URL+"/.portcullis/saml/basic/slo?SAMLRequest=") {
			i++
		}
		if i == len(via) || i+1 == len(via) || !strings.HasPrefix(via[i+1], idpSrv.SLOURL()+"?SAMLResponse=") || via[len(via)-1] != s.URL+"/bye" {
			t.Fatalf("logout went through %q, want the proxy's SLO with a LogoutRequest, SimpleSAMLphp's SLO with a LogoutResponse, and the RelayState", via)
		}
		decodeRedirect(t, via[i], "SAMLRequest", &req)
		if req.NameID == nil || req.NameID.Value == "" || req.SessionIndex == nil {
			t.Errorf("SimpleSAMLphp's LogoutRequest has no NameID or SessionIndex: %+v", req)
		}
		var answer saml.LogoutResponse
		decodeRedirect(t, via[i+1], "SAMLResponse", &answer)
		if answer.Status.StatusCode.Value != saml.StatusSuccess {
			t.Errorf("the proxy answered SimpleSAMLphp's LogoutRequest with %s", answer.Status.StatusCode.Value)
		}
		if code := userinfo(t, s, cookies); code != http.StatusUnauthorized {
			t.Errorf("the session cookie after SimpleSAMLphp's logout: userinfo %d, want 401", code)
		}
		if lines := logs.find(t, map[string]any{"event": "saml_logout", "idp": "basic"}); len(lines) != 1 {
			t.Errorf("saml_logout lines of basic: %v, want one", lines)
		}
	})

	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("SimpleSAMLphp's log:\n%s", idpSrv.Logs())
		}
	})
}

// sspAnswer opens pageURL in b, follows the redirects to SimpleSAMLphp's
// login form, posts ann's name with password and returns the auto-POST form
// of the IdP's answer, not yet posted (nil when the IdP answered with none),
// and the IdP's last page.
func sspAnswer(t *testing.T, b *http.Client, idpSrv *sspserver.Server, pageURL, password string) (*acsPost, *http.Response) {
	t.Helper()
	resp, err := b.Get(pageURL)
	if err != nil {
		t.Fatal(err)
	}
	page := readBody(t, resp)
	fields := formFields(page)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Request.URL.String(), idpSrv.URL+sspserver.LoginPath+"?") || fields["AuthState"] == "" {
		t.Fatalf("GET %s ended at %s (status %d), want SimpleSAMLphp's login form; body:\n%s", pageURL, resp.Request.URL, resp.StatusCode, page)
	}
	resp, err = b.PostForm(resp.Request.URL.String(), url.Values{"username": {sspAnn.Name}, "password": {password}, "AuthState": {fields["AuthState"]}})
	if err != nil {
		t.Fatal(err)
	}
	page = readBody(t, resp)
	fields = formFields(page)
	if resp.StatusCode != http.StatusOK || fields["SAMLResponse"] == "" {
		return nil, resp
	}
	post := &acsPost{Action: formAction(page), Form: url.Values{}}
	for _, name := range []string{"SAMLResponse", "RelayState"} {
		post.Form.Set(name, fields[name])
	}
	raw, _ := base64.StdEncoding.DecodeString(post.Form.Get("SAMLResponse"))
	var r saml.Response
	if err := xml.Unmarshal(raw, &r); err != nil {
		t.Fatalf("SimpleSAMLphp's SAMLResponse is no Response: %v", err)
	}
	return post, resp
}

// sspLogin signs ann in at the entry id with a fresh browser and returns it
// with a copy of its session cookies.
func sspLogin(t *testing.T, s *stack, idpSrv *sspserver.Server, id string) (*http.Client, []*http.Cookie) {
	t.Helper()
	b := browser(t)
	post, page := sspAnswer(t, b, idpSrv, s.URL+"/.portcullis/login/"+id+"?rd=/tasks", sspAnn.Password)
	if post == nil {
		t.Fatalf("SimpleSAMLphp did not answer the login at %s: %s", id, readBody(t, page))
	}
	resp := post.post(t, b)
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("login at %s: status %d\n%s", id, resp.StatusCode, body)
	}
	return b, b.Jar.Cookies(mustURL(t, s.URL))
}
