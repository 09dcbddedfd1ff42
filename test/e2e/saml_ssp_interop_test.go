package e2e

import (
	"bytes"
	"compress/flate"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

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

	// Besides the cases' entries: "idpinit" accepts IdP-initiated logins,
	// "persistent" gets saml:PersistentNameID's NameID; and two service
	// providers that are no entry here, SP B, whose answers must not sign
	// anyone in at the entries: one whose ACS is an entry's (only the
	// audience tells it apart), one whose ACS is elsewhere.
	extras := []sspCase{
		{id: "idpinit", mapping: sspBasicMapping},
		{id: "persistent", mapping: "{email: mail, groups: isMemberOf}",
			sp: sspserver.ServiceProvider{NameIDFormat: string(saml.PersistentNameIDFormat), PersistentNameID: "uid"}},
	}
	entityID := func(id string) string { return s.URL + "/.portcullis/saml/" + id + "/metadata" }
	acsURL := func(id string) string { return s.URL + "/.portcullis/saml/" + id + "/acs" }
	spB := map[string]sspserver.ServiceProvider{
		"basic":     {EntityID: "https://sp-b.example/basic", ACS: acsURL("basic")},
		"idpinit":   {EntityID: "https://sp-b.example/idpinit", ACS: acsURL("idpinit")},
		"elsewhere": {EntityID: "https://sp-b.example/elsewhere", ACS: "https://sp-b.example/acs"},
	}

	var sps []sspserver.ServiceProvider
	for _, c := range append(cases, extras...) {
		sp := c.sp
		base := s.URL + "/.portcullis/saml/" + c.id
		sp.EntityID, sp.ACS, sp.SLO, sp.Certificate = entityID(c.id), acsURL(c.id), base+"/slo", spCert
		sps = append(sps, sp)
	}
	for _, sp := range spB {
		sps = append(sps, sp)
	}
	idpSrv := sspserver.Start(t, sspserver.Options{Users: []sspserver.User{sspAnn}, ServiceProviders: sps})

	var entries strings.Builder
	for _, c := range append(cases, extras...) {
		fmt.Fprintf(&entries, "    - id: %s\n      protocol: SAML\n      entity_id: %s\n", c.id, idpSrv.EntityID())
		if c.fromCert {
			fmt.Fprintf(&entries, "      x509_cert: %s\n      sso_url: %s\n      slo_url: %s\n",
				base64.StdEncoding.EncodeToString(idpSrv.Certificate.Raw), idpSrv.SSOURL(), idpSrv.SLOURL())
		} else {
			fmt.Fprintf(&entries, "      metadata_url: %s\n", idpSrv.MetadataURL())
		}
		if c.id == "idpinit" {
			entries.WriteString("      allow_idp_initiated: true\n")
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

	// IdP-initiated: the link SimpleSAMLphp's users are given,
	// SSOService.php?spentityid=, with a RelayState of the IdP's choosing.
	// The entry that allows it signs ann in and sends her to public_url's
	// root, whatever the RelayState, as docs/saml.md says: never off the
	// origin (SPEC invariant 6).
	for _, relay := range []string{"", "/tasks", "https://evil.example/", "//evil.example", "javascript:alert(document.domain)",
		`/\evil.example`, `\\evil.example`, "http://" + mustURL(t, s.URL).Host + ".evil.example/"} {
		t.Run(fmt.Sprintf("IdP-initiated login with RelayState %q lands on public_url", relay), func(t *testing.T) {
			b := browser(t)
			post, page := sspAnswer(t, b, idpSrv, idpSrv.IdPInitiatedURL(entityID("idpinit"), relay), sspAnn.Password)
			if post == nil {
				t.Fatalf("SimpleSAMLphp did not answer the IdP-initiated login: %s", readBody(t, page))
			}
			if post.Action != acsURL("idpinit") || post.Form.Get("RelayState") != relay {
				t.Errorf("SimpleSAMLphp posts to %s with RelayState %q, want the entry's ACS with %q", post.Action, post.Form.Get("RelayState"), relay)
			}
			resp := post.post(t, noRedirect(b))
			readBody(t, resp)
			if resp.StatusCode != http.StatusFound {
				t.Fatalf("the ACS answered %d, want a redirect after the login", resp.StatusCode)
			}
			if to, err := resp.Location(); err != nil || to.String() != s.URL+"/" {
				t.Errorf("after the IdP-initiated login the browser goes to %v (%v), want public_url's root %s/", to, err, s.URL)
			}
			h := upstreamSees(t, b, s)
			if sub, e, r := h.Get("X-Sub"), h.Get("X-Email"), h.Get("X-Roles"); sub != "ann" || e != "ann@example.edu" || r != "admin" {
				t.Errorf("X-Sub %q, X-Email %q, X-Roles %q; want ann, ann@example.edu, admin", sub, e, r)
			}
		})
	}

	t.Run("IdP-initiated login at an entry without allow_idp_initiated is refused", func(t *testing.T) {
		b := browser(t)
		post, page := sspAnswer(t, b, idpSrv, idpSrv.IdPInitiatedURL(entityID("basic"), "/tasks"), sspAnn.Password)
		if post == nil {
			t.Fatalf("SimpleSAMLphp did not answer the IdP-initiated login: %s", readBody(t, page))
		}
		resp := post.post(t, noRedirect(b))
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "sign in from there") {
			t.Errorf("the ACS answered %d, want 400 saying to sign in from the application:\n%s", resp.StatusCode, body)
		}
		line := logs.audit(t, resp, "login_failed")
		if line["reason"] != "saml_idp_initiated" || !strings.Contains(fmt.Sprint(line["hint"]), "allow_idp_initiated: true") {
			t.Errorf("login_failed line %v, want reason saml_idp_initiated with a hint naming allow_idp_initiated", line)
		}
		if code := userinfo(t, s, b.Jar.Cookies(mustURL(t, s.URL))); code != http.StatusUnauthorized {
			t.Errorf("/userinfo after the refused login: %d, want 401", code)
		}
	})

	// An answer SimpleSAMLphp issued for SP B, another service, posted to an
	// entry's ACS: B (or whoever B's answers reach) must not sign its users
	// in here. SP-initiated, B asks with the ID of the entry's own
	// AuthnRequest (a request of B's own making, unsigned, which B's
	// SimpleSAMLphp entry allows), so that InResponseTo and RelayState
	// match: only the audience, and the Destination and Recipient where
	// B's ACS is not the entry's, are left to refuse it.
	for _, tc := range []struct {
		name, entry, spB, reason, hint string
		idpInitiated                   bool
	}{
		{name: "SP B's answer, its ACS the entry's, to a login the entry started, is refused for its audience",
			entry: "basic", spB: "basic", reason: "saml_audience", hint: "https://sp-b.example/basic"},
		{name: "SP B's answer, its ACS elsewhere, to a login the entry started, is refused for its Destination",
			entry: "basic", spB: "elsewhere", reason: "saml_acs_url", hint: "https://sp-b.example/acs"},
		{name: "SP B's IdP-initiated answer, its ACS the entry's, is refused for its audience",
			entry: "idpinit", spB: "idpinit", reason: "saml_audience", hint: "https://sp-b.example/idpinit", idpInitiated: true},
		{name: "SP B's IdP-initiated answer, its ACS elsewhere, is refused for its Destination",
			entry: "idpinit", spB: "elsewhere", reason: "saml_acs_url", hint: "https://sp-b.example/acs", idpInitiated: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := browser(t)
			b2 := spB[tc.spB]
			start := idpSrv.IdPInitiatedURL(b2.EntityID, "")
			relay := ""
			if !tc.idpInitiated {
				start, relay = sspForeignRequest(t, b, s, idpSrv, tc.entry, b2)
			}
			post, page := sspAnswer(t, b, idpSrv, start, sspAnn.Password)
			if post == nil {
				t.Fatalf("SimpleSAMLphp did not answer SP B's login: %s", readBody(t, page))
			}
			if post.Action != b2.ACS {
				t.Errorf("SimpleSAMLphp posts SP B's answer to %s, want %s", post.Action, b2.ACS)
			}
			if relay != "" && post.Form.Get("RelayState") != relay {
				t.Errorf("SP B's answer carries RelayState %q, want the entry's login state %q", post.Form.Get("RelayState"), relay)
			}
			post.Action = acsURL(tc.entry)
			resp := post.post(t, noRedirect(b))
			readBody(t, resp)
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("the ACS answered SP B's response with %d, want 502 (the set-up page)", resp.StatusCode)
			}
			line := logs.audit(t, resp, "login_failed")
			if line["reason"] != tc.reason || !strings.Contains(fmt.Sprint(line["hint"]), tc.hint) {
				t.Errorf("login_failed line %v, want reason %s with a hint quoting %s", line, tc.reason, tc.hint)
			}
			if code := userinfo(t, s, b.Jar.Cookies(mustURL(t, s.URL))); code != http.StatusUnauthorized {
				t.Errorf("/userinfo after SP B's response: %d, want 401", code)
			}
		})
	}

	t.Run("an IdP-initiated answer accepted once is refused when posted again", func(t *testing.T) {
		b := browser(t)
		post, page := sspAnswer(t, b, idpSrv, idpSrv.IdPInitiatedURL(entityID("idpinit"), ""), sspAnn.Password)
		if post == nil {
			t.Fatalf("SimpleSAMLphp did not answer the IdP-initiated login: %s", readBody(t, page))
		}
		if resp := post.post(t, noRedirect(b)); resp.StatusCode != http.StatusFound {
			t.Fatalf("first post: %d, want 302 signed in: %s", resp.StatusCode, readBody(t, resp))
		}
		other := browser(t)
		resp := post.post(t, noRedirect(other))
		readBody(t, resp)
		line := logs.audit(t, resp, "login_failed")
		if resp.StatusCode != http.StatusForbidden || line["reason"] != "idp" || !strings.Contains(fmt.Sprint(line["err"]), "already used") {
			t.Errorf("the answer posted again: %d, login_failed %v; want 403 and the replay named", resp.StatusCode, line)
		}
		if code := userinfo(t, s, other.Jar.Cookies(mustURL(t, s.URL))); code != http.StatusUnauthorized {
			t.Errorf("/userinfo of the browser that posted it again: %d, want 401", code)
		}
	})

	t.Run("an answer to a login the entry started is refused when posted again from another browser", func(t *testing.T) {
		b := browser(t)
		post, _ := sspAnswer(t, b, idpSrv, s.URL+"/.portcullis/login/basic?rd=/tasks", sspAnn.Password)
		if post == nil {
			t.Fatal("SimpleSAMLphp did not answer the login")
		}
		if resp := post.post(t, b); resp.StatusCode != http.StatusOK {
			t.Fatalf("first post: %d, want the upstream's page: %s", resp.StatusCode, readBody(t, resp))
		}
		other := browser(t)
		resp := post.post(t, noRedirect(other))
		readBody(t, resp)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("the answer posted again from another browser: %d, want 400", resp.StatusCode)
		}
		logs.audit(t, resp, "login_failed")
		if code := userinfo(t, s, other.Jar.Cookies(mustURL(t, s.URL))); code != http.StatusUnauthorized {
			t.Errorf("/userinfo of the browser that posted it again: %d, want 401", code)
		}
	})

	// saml:PersistentNameID: a NameID of its own per user and SP (a hash of
	// uid, the secret salt and both entity IDs), the same at every login; it
	// is the sub, as docs/saml.md says of a NameID without attribute_mapping.uid.
	t.Run("a persistent NameID (saml:PersistentNameID) is the same sub at every login", func(t *testing.T) {
		var subs []string
		for range 2 {
			b := browser(t)
			post, _ := sspAnswer(t, b, idpSrv, s.URL+"/.portcullis/login/persistent?rd=/tasks", sspAnn.Password)
			if post == nil {
				t.Fatal("SimpleSAMLphp did not answer the login")
			}
			raw, _ := base64.StdEncoding.DecodeString(post.Form.Get("SAMLResponse"))
			var r saml.Response
			if err := xml.Unmarshal(raw, &r); err != nil || r.Assertion == nil || r.Assertion.Subject.NameID == nil ||
				r.Assertion.Subject.NameID.Format != string(saml.PersistentNameIDFormat) {
				t.Fatalf("SimpleSAMLphp's answer has no persistent NameID (%v):\n%s", err, raw)
			}
			if resp := post.post(t, b); resp.StatusCode != http.StatusOK {
				t.Fatalf("login: %d, want the upstream's page: %s", resp.StatusCode, readBody(t, resp))
			}
			sub := upstreamSees(t, b, s).Get("X-Sub")
			if sub != r.Assertion.Subject.NameID.Value {
				t.Errorf("X-Sub %q, want the NameID %q", sub, r.Assertion.Subject.NameID.Value)
			}
			subs = append(subs, sub)
		}
		if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(subs[0]) || subs[0] != subs[1] {
			t.Errorf("sub of two logins: %q, want one persistent NameID (a SHA-1 in hex) twice", subs)
		}
		if lines := logs.find(t, map[string]any{"event": "login", "idp": "persistent"}); len(lines) != 2 || lines[0]["sub"] != subs[0] || lines[1]["sub"] != subs[0] {
			t.Errorf("login lines of persistent: %v, want two of sub %s", lines, subs[0])
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

// sspForeignRequest starts a login at the proxy's entry in b without going
// to the IdP, and returns the URL of an AuthnRequest of SP B's, unsigned,
// that carries the ID of the entry's AuthnRequest and the entry's login
// state as RelayState: what SP B, or whoever controls it, would send the
// user to SimpleSAMLphp with to get an answer that passes for the entry's.
func sspForeignRequest(t *testing.T, b *http.Client, s *stack, idpSrv *sspserver.Server, entry string, spB sspserver.ServiceProvider) (string, string) {
	t.Helper()
	resp, err := noRedirect(b).Get(s.URL + "/.portcullis/login/" + entry + "?rd=/tasks")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	to := resp.Header.Get("Location")
	if !strings.HasPrefix(to, idpSrv.SSOURL()+"?") {
		t.Fatalf("the login at %s goes to %q, want SimpleSAMLphp's SSO", entry, to)
	}
	var own saml.AuthnRequest
	decodeRedirect(t, to, "SAMLRequest", &own)
	relay := mustURL(t, to).Query().Get("RelayState")
	request := fmt.Sprintf(`<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"`+
		` ID="%s" Version="2.0" IssueInstant="%s" Destination="%s" AssertionConsumerServiceURL="%s" ProtocolBinding="%s">`+
		`<saml:Issuer>%s</saml:Issuer></samlp:AuthnRequest>`,
		own.ID, time.Now().UTC().Format(time.RFC3339), idpSrv.SSOURL(), spB.ACS, saml.HTTPPostBinding, spB.EntityID)
	var deflated bytes.Buffer
	w, _ := flate.NewWriter(&deflated, flate.DefaultCompression)
	w.Write([]byte(request))
	w.Close()
	q := url.Values{"SAMLRequest": {base64.StdEncoding.EncodeToString(deflated.Bytes())}, "RelayState": {relay}}
	return idpSrv.SSOURL() + "?" + q.Encode(), relay
}
