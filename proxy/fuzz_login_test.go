package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// Bits of FuzzLoginEndpoints's cookies: what the harness adds to the
// fuzzer's request. A login started is one started for this request, as a
// browser does at GET {auth_prefix}/login/{idp}; a login spent is the one
// the fixture completed at the IdP when it started.
const (
	loginOIDC      = 1 << iota // a login started at company (OIDC)
	loginSAML                  // a login started at corp (SAML)
	loginLDAP                  // a login form of corp-ldap opened
	loginSession               // a session of bob's, made for this request
	loginSpentOIDC             // the flow cookie of company's spent login
	loginSpentSAML             // the flow cookie of corp's spent login
	loginDevice                // the device cookie of corp-ldap's form that ldapserver.Bob's sign-in got
)

// loginEndpoints are FuzzLoginEndpoints's paths under the auth prefix:
// every endpoint of every protocol of loginFuzzConfig, at its own IdP and
// at the others.
var loginEndpoints = []string{
	"/login", "/login/company", "/login/corp", "/login/corp-ldap", "/login/nope",
	"/oidc/company/callback", "/oidc/corp/callback", "/oidc/corp-ldap/callback", "/oidc/company/backchannel-logout",
	"/saml/corp/acs", "/saml/company/acs", "/saml/corp/slo", "/saml/corp/metadata",
	"/ldap/corp-ldap", "/ldap/company", "/ldap/corp",
	"/logout", "/logout/done", "/userinfo", "/jwks.json", "/",
}

// loginFuzzIdPs make testConfig's IdP one of three, of each protocol: company at a
// real OIDC provider (ISSUER), corp at a real SAML IdP, and corp-ldap at a
// real directory (LDAP_URL, ldapserver's tree), whose form signs its users
// in with their passwords and sets device cookies.
const loginFuzzIdPs = `      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      single_sign_out: true
    - id: corp
      protocol: SAML
      entity_id: SAML_ENTITY
      x509_cert: SAML_CERT
      sso_url: SAML_SSO
      slo_url: SAML_SLO
      single_sign_out: true
    - id: corp-ldap
      protocol: LDAP
      url: LDAP_URL
      bind_dn: ` + ldapserver.ServiceDN + `
      bind_password: ` + ldapserver.ServicePassword + `
      user_search: {base_dn: "` + ldapserver.Suffix + `", filter: "(&(objectClass=inetOrgPerson)(uid={username}))"}
`

// loginFuzz is FuzzLoginEndpoints's fixture: one Handler with its IdPs,
// and what the fuzzer's placeholders stand for.
type loginFuzz struct {
	*fixture
	oidc *oidcserver.Server
	saml *samlserver.Server
	// spent are the placeholders of the logins completed at start: their
	// answers (a real code, a real signed SAML response), states and flow
	// cookies, each used once already.
	spent                map[string]string
	spentOIDC, spentSAML []*http.Cookie
	// device is the device cookie ldapserver.Bob's sign-in with
	// corp-ldap's form got.
	device       []*http.Cookie
	idpEndpoints []string // where the proxy may send a browser off public_url's origin
}

func newLoginFuzz(t testing.TB) *loginFuzz {
	t.Helper()
	return newLoginFuzzOf(t, testConfig)
}

// newLoginFuzzOf is newLoginFuzz of base, testConfig changed elsewhere
// than its one IdP.
func newLoginFuzzOf(t testing.TB, base string) *loginFuzz {
	t.Helper()
	const callback = "https://cvat.example.com/.portcullis/oidc/company/callback"
	lf := &loginFuzz{
		oidc:  oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{callback}, PostLogoutRedirectURIs: []string{"https://cvat.example.com/.portcullis/logout/done"}}),
		saml:  samlserver.Start(t, samlserver.Options{Users: []samlserver.User{{Name: "alice", Password: "alice-pw", Email: "alice@example.com"}}}),
		spent: map[string]string{},
	}
	dir := ldapserver.Start(t, ldapserver.Options{})
	y := strings.Replace(base, "      server_url: http://127.0.0.1:1/\n      client_id: portcullis\n", strings.NewReplacer(
		"ISSUER", lf.oidc.Issuer, "LDAP_URL", dir.URL, "SAML_ENTITY", lf.saml.EntityID(), "SAML_CERT", base64.StdEncoding.EncodeToString(lf.saml.Certificate.Raw),
		"SAML_SSO", lf.saml.SSOURL(), "SAML_SLO", lf.saml.URL+"/slo").Replace(loginFuzzIdPs), 1)
	lf.fixture = newFixtureOf(t, y)
	// A refused password is answered at once: the failure floor has tests
	// of its own.
	lf.h.pause = func(context.Context, time.Time) {}
	// company is ready once discovery is done.
	for deadline := time.Now().Add(20 * time.Second); lf.h.providers["company"].impl.Ready() != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("company not ready: %v", lf.h.providers["company"].impl.Ready())
		}
	}
	md, err := lf.h.providers["corp"].impl.(metadataServer).Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if err := lf.saml.AddServiceProviderXML(md); err != nil {
		t.Fatal(err)
	}
	lf.idpEndpoints = []string{lf.oidc.Issuer + "/auth?", lf.oidc.Issuer + "/session/end?", lf.saml.SSOURL() + "?", lf.saml.URL + "/slo?"}
	lf.spendOIDC(t)
	lf.spendSAML(t)
	lf.spendLDAP(t)
	return lf
}

// startLogin starts a login at IdP id as a browser does, and returns the
// Location it was sent to and the flow cookie.
func (lf *loginFuzz) startLogin(t testing.TB, id string) (*url.URL, []*http.Cookie) {
	t.Helper()
	rec := httptest.NewRecorder()
	lf.h.ServeHTTP(rec, request("GET", "/.portcullis/login/"+id+"?rd=/tasks", nil))
	loc, err := url.Parse(rec.Header().Get("Location"))
	if rec.Code != http.StatusFound || err != nil || len(rec.Result().Cookies()) == 0 {
		t.Fatalf("login at %s: %d to %q, %v", id, rec.Code, rec.Header().Get("Location"), err)
	}
	return loc, rec.Result().Cookies()
}

// spendOIDC logs alice in at company for real, and keeps her code, its
// state and the flow cookie, all used.
func (lf *loginFuzz) spendOIDC(t testing.TB) {
	t.Helper()
	loc, cookies := lf.startLogin(t, "company")
	answer := lf.signInAtOIDC(t, loc)
	lf.complete(t, request("GET", "/.portcullis/oidc/company/callback?"+answer.RawQuery, cookies))
	lf.spent["{oidc-code}"], lf.spent["{oidc-spent}"] = answer.Query().Get("code"), answer.Query().Get("state")
	lf.spentOIDC = cookies
}

// signInAtOIDC signs alice in at the OIDC provider that loc, a login's
// authorization URL, leads to, and returns the provider's answer: the
// callback URL with its code and state, not yet brought to the Handler.
func (lf *loginFuzz) signInAtOIDC(t testing.TB, loc *url.URL) *url.URL {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(r.URL.String(), lf.oidc.Issuer) {
			return nil
		}
		return http.ErrUseLastResponse // the callback: the test brings it to the Handler
	}}
	resp := oidcserver.Login(t, browser, loc.String(), oidcserver.Alice, oidcserver.AlicePassword)
	resp.Body.Close()
	answer, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || answer.Query().Get("code") == "" {
		t.Fatalf("the OIDC provider answered %d to %q, no code", resp.StatusCode, resp.Header.Get("Location"))
	}
	return answer
}

// spendSAML logs alice in at corp for real, and keeps the signed response,
// its RelayState and the flow cookie, all used.
func (lf *loginFuzz) spendSAML(t testing.TB) {
	t.Helper()
	loc, cookies := lf.startLogin(t, "corp")
	answer := signInAtSAMLIdP(t, loc.String(), "alice", "alice-pw")
	r := httptest.NewRequest("POST", "/.portcullis/saml/corp/acs", strings.NewReader(answer.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, c := range cookies {
		r.AddCookie(c)
	}
	lf.complete(t, r)
	lf.spent["{saml-response}"], lf.spent["{saml-spent}"] = answer.Get("SAMLResponse"), answer.Get("RelayState")
	lf.spentSAML = cookies
}

// spendLDAP signs ldapserver.Bob in with corp-ldap's form for real, and
// keeps the device cookie his browser got.
func (lf *loginFuzz) spendLDAP(t testing.TB) {
	t.Helper()
	rec := postLDAPForm(t, lf.h, openLDAPForm(t, lf.h), ldapserver.Bob, ldapserver.BobPassword)
	if s, _ := lf.sessionSet(rec); rec.Code != http.StatusFound || s == nil {
		t.Fatalf("a real sign-in with the form: %d, session %v\n%s", rec.Code, s, rec.Body)
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name == lf.h.cookies.DeviceName() {
			lf.device = append(lf.device, &http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
	if len(lf.device) != 1 {
		t.Fatalf("a real sign-in with the form set %d device cookies", len(lf.device))
	}
}

// complete sends the IdP's answer to a login and checks that it made a
// session: the fixture's IdPs do log users in.
func (lf *loginFuzz) complete(t testing.TB, r *http.Request) {
	t.Helper()
	rec := httptest.NewRecorder()
	lf.h.ServeHTTP(rec, r)
	if s, _ := lf.sessionSet(rec); rec.Code != http.StatusFound || s == nil {
		t.Fatalf("a real login at %s: %d, session %v\n%s", r.URL.Path, rec.Code, s, rec.Body)
	}
}

// sessionSet is the session that the cookies rec set open to, nil when
// they make none.
func (lf *loginFuzz) sessionSet(rec *httptest.ResponseRecorder) (*session.Session, error) {
	r := httptest.NewRequest("GET", "/", nil)
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge >= 0 && c.Value != "" {
			r.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
	return lf.h.sessions.Load(r)
}

// loginCookies are the cookies of one request of FuzzLoginEndpoints.
type loginCookies struct {
	line   string            // the Cookie line
	states map[string]string // the placeholders of the logins started for it
	bob    string            // the ID of bob's session in it, if any
}

// cookiesFor makes the cookies that the bits of which ask for.
func (lf *loginFuzz) cookiesFor(t testing.TB, which uint8) loginCookies {
	var cookies []*http.Cookie
	states := map[string]string{"{oidc}": "", "{saml}": "", "{ldap}": ""}
	for _, idp := range []struct {
		bit         uint8
		id, name    string
		placeholder string
	}{{loginOIDC, "company", "state", "{oidc}"}, {loginSAML, "corp", "RelayState", "{saml}"}} {
		if which&idp.bit != 0 {
			loc, c := lf.startLogin(t, idp.id)
			states[idp.placeholder] = loc.Query().Get(idp.name)
			cookies = append(cookies, c...)
		}
	}
	if which&loginLDAP != 0 {
		form := openLDAPForm(t, lf.h)
		states["{ldap}"] = form.state
		cookies = append(cookies, form.cookies...)
	}
	bob := ""
	if which&loginSession != 0 {
		c := lf.login(t, bobIdentity["X-Email"])
		s, err := lf.h.sessions.Load(request("GET", "/", c))
		if err != nil || s == nil {
			t.Fatalf("bob's session does not open: %v", err)
		}
		bob, cookies = s.ID, append(cookies, c...)
	}
	if which&loginSpentOIDC != 0 {
		cookies = append(cookies, lf.spentOIDC...)
	}
	if which&loginSpentSAML != 0 {
		cookies = append(cookies, lf.spentSAML...)
	}
	if which&loginDevice != 0 {
		cookies = append(cookies, lf.device...)
	}
	return loginCookies{cookieHeader(cookies), states, bob}
}

// loginSeeds are real answers and their tricks, as FuzzLoginEndpoints's
// inputs: endpoint (an index of loginEndpoints), method, query, form, the
// harness's cookies and header lines. {oidc}, {saml} and {ldap} stand for
// the state of the login the cookies started there; {oidc-code},
// {oidc-spent}, {saml-response} and {saml-spent} for the answers of the
// logins spent at the start and their states.
var loginSeeds = []struct {
	endpoint            uint8
	method, query, form string
	cookies             uint8
	headers             string
}{
	{0, "GET", "rd=/tasks", "", 0, "Accept: text/html"},
	{0, "GET", "rd=https://evil.example/", "", loginSession, ""},
	{1, "GET", "rd=//evil.example", "", 0, ""},
	{1, "GET", "rd=/tasks", "", loginOIDC | loginSAML | loginLDAP, ""},
	{2, "GET", "rd=https:evil.example", "", 0, ""},
	{3, "GET", "rd=/\\evil.example", "", 0, ""},
	{4, "GET", "rd=/tasks", "", 0, ""},
	{0, "POST", "", "email=alice@example.com&rd=//evil.example", 0, ""},
	// OIDC callbacks: the real shapes, replays, the wrong IdP.
	{5, "GET", "code=abc&state={oidc}&iss=ISSUER", "", loginOIDC, ""},
	{5, "GET", "code={oidc-code}&state={oidc}&iss=ISSUER", "", loginOIDC, ""},
	{5, "GET", "code={oidc-code}&state={oidc-spent}&iss=ISSUER", "", loginSpentOIDC, ""},
	{5, "GET", "code={oidc-code}&state={oidc-spent}", "", loginSpentOIDC | loginOIDC, ""},
	{5, "GET", "error=access_denied&state={oidc}&iss=ISSUER", "", loginOIDC, ""},
	{5, "GET", "error=access_denied&state={oidc}", "", loginOIDC, ""},
	{5, "GET", "error=server_error&error_description=%3Cb%3Ex&state={oidc}&iss=https://evil.example", "", loginOIDC, ""},
	{5, "GET", "code=abc&state={saml}", "", loginSAML, ""},
	{5, "GET", "code=abc&state={ldap}", "", loginLDAP, ""},
	{5, "GET", "code=abc&code=def&state={oidc}&state={oidc}", "", loginOIDC, ""},
	{5, "GET", "code=" + strings.Repeat("A", 8000) + "&state={oidc}", "", loginOIDC, ""},
	{5, "GET", "state={oidc}&iss=ISSUER", "", loginOIDC, ""},
	{6, "GET", "code=abc&state={oidc}", "", loginOIDC, ""},
	{7, "GET", "code=abc&state={ldap}", "", loginLDAP, ""},
	{8, "POST", "", "logout_token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ.", loginSession, ""},
	// SAML answers: the real response replayed, on another login, at the
	// wrong IdP, IdP-initiated.
	{9, "POST", "", "SAMLResponse={saml-response}&RelayState={saml-spent}", loginSpentSAML, ""},
	{9, "POST", "", "SAMLResponse={saml-response}&RelayState={saml}", loginSAML, ""},
	{9, "POST", "", "SAMLResponse={saml-response}&RelayState={saml-spent}", loginSpentSAML | loginSAML | loginSession, ""},
	{9, "POST", "", "SAMLResponse={saml-response}", 0, ""},
	{9, "POST", "", "SAMLResponse={saml-response}&RelayState={oidc}", loginOIDC, ""},
	{9, "POST", "", "SAMLResponse=PHNhbWxwOlJlc3BvbnNlLz4=&RelayState={saml}", loginSAML, ""},
	{9, "POST", "", "SAMLResponse=" + strings.Repeat("QUFB", 3000) + "&RelayState={saml}", loginSAML, ""},
	{10, "POST", "", "SAMLResponse={saml-response}&RelayState={saml}", loginSAML, ""},
	{11, "GET", "SAMLResponse={saml-response}&RelayState={saml}", "", loginSAML | loginSession, ""},
	{11, "POST", "", "SAMLRequest=PHNhbWxwOkxvZ291dFJlcXVlc3QvPg==", loginSession, ""},
	{12, "GET", "", "", 0, ""},
	// The LDAP form and its post.
	{13, "GET", "rd=//evil.example", "", 0, ""},
	{13, "POST", "", "username=alice&password=alice-pw&state={ldap}&rd=https://evil.example", loginLDAP, ""},
	{13, "POST", "", "username=alice&password=&state={ldap}", loginLDAP, ""},
	{13, "POST", "", "username=*&password=x&state={oidc}", loginOIDC, ""},
	{13, "POST", "", "username=alice&password=x&state={ldap}&state={ldap}", loginLDAP | loginSession, ""},
	// With the right passwords, and with the device cookie of bob's
	// sign-in: for bob, for another user, without the form's state.
	{13, "POST", "", "username=bob&password=bob-pw&state={ldap}", loginLDAP, ""},
	{13, "POST", "", "username=bob&password=bob-pw&state={ldap}", loginLDAP | loginDevice | loginSession, ""},
	{13, "POST", "", "username=BOB+&password=bob-pw&state={ldap}&rd=/tasks", loginLDAP | loginDevice, ""},
	{13, "POST", "", "username=bob&password=x&state={ldap}", loginLDAP | loginDevice, ""},
	{13, "POST", "", "username=alice&password=bob-pw&state={ldap}", loginLDAP | loginDevice, ""},
	{13, "POST", "", "username=alice&password=alice-pw&state={ldap}", loginLDAP | loginDevice, ""},
	{13, "POST", "", "username=dup&password=dup-pw&state={ldap}", loginLDAP | loginDevice, ""},
	{13, "POST", "", "username=bob&password=bob-pw", loginDevice, ""},
	{13, "POST", "", "username=bob&password=bob-pw&state={oidc}", loginOIDC | loginDevice, ""},
	{13, "POST", "", "username=bob&password=bob-pw&state={ldap}", loginLDAP | loginDevice, "Cookie: __Secure-portcullis_device=forged"},
	{13, "GET", "", "", loginDevice, ""},
	{14, "POST", "", "username=alice&password=x&state={oidc}", loginOIDC, ""},
	{15, "POST", "", "username=alice&password=x&state={saml}", loginSAML, ""},
	// Logout, with and without a session, and its way back.
	{16, "GET", "rd=https://evil.example/", "", loginSession, ""},
	{16, "GET", "rd=https://evil.example/", "", 0, ""},
	{16, "POST", "rd=/tasks", "rd=//evil.example", loginSession, ""},
	{16, "POST", "", "rd=" + strings.Repeat("/x", 9000), loginSession, ""},
	{17, "GET", "state={oidc}", "", loginOIDC, ""},
	{17, "GET", "state={oidc-spent}", "", loginSpentOIDC | loginSession, ""},
	{18, "GET", "", "", loginSession, "Cookie: __Host-portcullis=forged"},
	{18, "GET", "", "", 0, "Cookie: __Host-portcullis_login_abcdefgh=x; __Host-portcullis_signed_in=1.company"},
	{19, "GET", "", "", 0, ""},
	{20, "GET", "rd=//evil.example", "", 0, "X-Forwarded-Host: evil.example\nX-Forwarded-Proto: http"},
}

// FuzzLoginEndpoints sends any request to the proxy's own endpoints, where
// sessions are made: endpoint (of loginEndpoints), method, query, form,
// the logins, spent logins, session of bob's and device cookie of
// corp-ldap's form that the harness adds as cookies (bits), and header
// lines. Without a real login at a real IdP, none of them may make a
// session: no answer sets cookies that open to one, but for bob's own
// session when it was sent, or the session of the user of ldapserver's
// tree whose password a request posted to corp-ldap's form, with the
// state of the form opened for it; that request, and no other, gets a
// device cookie, which vouches for that user's entry. None is a 500, and no
// answer sends the browser off public_url's origin but to an IdP's
// endpoints, whatever rd says (SPEC invariant 6, as FuzzSafeRedirect
// checks it).
func FuzzLoginEndpoints(f *testing.F) {
	lf := newLoginFuzz(f)
	for _, s := range loginSeeds {
		f.Add(s.endpoint, s.method, strings.ReplaceAll(s.query, "ISSUER", lf.oidc.Issuer), s.form, s.cookies, s.headers)
	}
	f.Fuzz(func(t *testing.T, endpoint uint8, method, query, form string, cookies uint8, headers string) {
		if len(query)+len(form)+len(headers) > 64<<10 {
			return // the limits of the head and the forms have tests of their own
		}
		sent := lf.cookiesFor(t, cookies)
		fill := func(s string) string {
			for k, v := range sent.states {
				s = strings.ReplaceAll(s, k, v)
			}
			for k, v := range lf.spent {
				s = strings.ReplaceAll(s, k, v)
			}
			return s
		}
		target := lf.h.cfg.Server.AuthPrefix + loginEndpoints[int(endpoint)%len(loginEndpoints)]
		if query != "" {
			target += "?" + fill(query)
		}
		body := fill(form)
		if body != "" {
			headers += "\nContent-Type: application/x-www-form-urlencoded\nContent-Length: " + strconv.Itoa(len(body))
		}
		var flags uint8
		if sent.line != "" {
			flags = fuzzSession
		}
		raw := fuzzRequestBytes(method, target, "HTTP/1.1", headers, body, flags, sent.line, "0")
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return // net/http's server refuses it before the Handler sees it
		}
		r.RemoteAddr = "203.0.113.7:40000"
		posted := postedForm(r)
		// Each iteration has its own failure limits, as a client of its
		// own: the fuzzer's one address would use the 20 failures it may
		// have within minutes, and every form post after would be a 429.
		lf.h.passwords.limits = newLoginLimits()
		rec := httptest.NewRecorder()
		lf.h.ServeHTTP(rec, r)
		lf.checkLoginAnswer(t, rec)
		lf.checkSignIn(t, rec, sent.bob, lf.ldapSignIn(r, posted, sent.states["{ldap}"]), posted.Get("username"))
		if t.Failed() {
			t.Logf("request:\n%q", raw)
		}
	})
}

// ldapPasswords are the users of ldapserver's tree by their passwords.
var ldapPasswords = map[string]string{
	ldapserver.AlicePassword: ldapserver.Alice, ldapserver.BobPassword: ldapserver.Bob,
	ldapserver.StarUserPassword: ldapserver.StarUser, ldapserver.DupPassword: ldapserver.Dup,
}

// postedForm is the form r posts, as the Handler's ParseForm reads it (nil
// when it refuses it); r's body is left for the Handler to read again.
func postedForm(r *http.Request) url.Values {
	b, err := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	c := r.Clone(context.Background())
	c.Body = io.NopCloser(bytes.NewReader(b))
	if c.ParseForm() != nil {
		return nil
	}
	return c.PostForm
}

// ldapSignIn is the user of ldapserver's tree whose password r posts to
// corp-ldap's form, with state, that of the form opened for it (the
// harness's {ldap}); "" when r does not.
func (lf *loginFuzz) ldapSignIn(r *http.Request, form url.Values, state string) string {
	if r.Method != http.MethodPost || r.URL.Path != lf.h.cfg.Server.AuthPrefix+"/ldap/corp-ldap" || state == "" || form.Get("state") != state {
		return ""
	}
	return ldapPasswords[form.Get("password")]
}

// checkLoginAnswer checks FuzzLoginEndpoints's invariants on one answer
// but those of checkSignIn: no 500, no cookie that a browser would drop
// (over 4096 bytes of name and value), no Location or link longer than
// maxLocation, and no way off public_url's origin.
func (lf *loginFuzz) checkLoginAnswer(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code == http.StatusInternalServerError {
		t.Errorf("answer 500:\n%s", rec.Body)
	}
	for _, c := range rec.Result().Cookies() {
		if n := len(c.Name) + len(c.Value); n > 4096 {
			t.Errorf("cookie %s of %d bytes, which browsers drop", c.Name, n)
		}
	}
	if loc := rec.Header().Get("Location"); len(loc) > maxLocation {
		t.Errorf("a Location of %d bytes, more than %d: %.100q…", len(loc), maxLocation, loc)
	}
	// A link is the request line the browser sends next.
	for _, m := range hrefRe.FindAllStringSubmatch(rec.Body.String(), -1) {
		if href := html.UnescapeString(m[1]); len(href) > maxLocation {
			t.Errorf("a link of %d bytes, more than %d: %.100q…", len(href), maxLocation, href)
		}
	}
	if loc := rec.Header().Get("Location"); loc != "" && !lf.atIdP(loc) {
		if strings.HasPrefix(loc, "/") {
			loc = lf.h.publicURL.Scheme + "://" + lf.h.publicURL.Host + loc // where a browser goes
		}
		if why := offOrigin(lf.h.publicURL, loc); why != "" {
			t.Errorf("it sends the browser to %q: %s", rec.Header().Get("Location"), why)
		}
	}
}

// checkSignIn checks the session and the device cookie that an answer
// set: only the user (of ldapserver's tree) whose password the request
// posted to corp-ldap's form (ldapSignIn), as username, gets either, and
// gets both, a device cookie that vouches for that user's entry; bob is
// the ID of the session of bob's the request carried, which it may set
// again.
func (lf *loginFuzz) checkSignIn(t *testing.T, rec *httptest.ResponseRecorder, bob, user, username string) {
	t.Helper()
	s, err := lf.sessionSet(rec)
	entry := ldapserver.UserDN(user) // the entry the user signed in to
	if s != nil {
		entry, _ = s.Profile.Claims["dn"].(string)
	}
	switch {
	case err != nil:
		t.Errorf("the cookies it set do not load: %v", err)
	case s == nil || bob != "" && s.ID == bob:
	case user == "":
		t.Errorf("it set the cookies of a session of %s (%s), with no login at an IdP; Set-Cookie: %q", s.Profile.Email, s.ID, rec.Header().Values("Set-Cookie"))
	case s.Profile.IdP != "corp-ldap" || !strings.HasPrefix(strings.ToLower(entry), "uid="+user+","):
		t.Errorf("the form took %s's password and set the cookies of a session of %s at %s", user, entry, s.Profile.IdP)
	}
	var devices []*http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == lf.h.cookies.DeviceName() && c.MaxAge >= 0 && c.Value != "" {
			devices = append(devices, &http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
	signedIn := s != nil && user != "" && s.ID != bob
	switch {
	case len(devices) > 0 && user == "":
		t.Errorf("it set a device cookie without the password of a user: Set-Cookie: %q", rec.Header().Values("Set-Cookie"))
	case len(devices) > 1:
		t.Errorf("it set %d device cookies", len(devices))
	case len(devices) == 1:
		const id = "corp-ldap"
		d := lf.h.devices.Find(request("POST", lf.h.ldapFormPath(id, ""), devices), id, userKey(id, username))
		if !d.SignedInTo(accountKey(id, entry)) {
			t.Errorf("the form took %s's password as %q, and set a device cookie that does not vouch for that entry (%+v)", user, username, d)
		}
	case signedIn:
		t.Errorf("the form signed %s in as %q, and set no device cookie", user, username)
	}
}

// atIdP reports whether loc is an endpoint of one of the fixture's IdPs,
// where logins and single sign-out start.
func (lf *loginFuzz) atIdP(loc string) bool {
	for _, e := range lf.idpEndpoints {
		if strings.HasPrefix(loc, e) {
			return true
		}
	}
	return false
}
