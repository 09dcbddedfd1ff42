package e2e

import (
	"encoding/base64"
	"encoding/xml"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/crewjam/saml"

	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// samlConfig is the CVAT profile with a SAML IdP; IDP_SOURCE is where the
// proxy learns the IdP's key and SSO URL (metadata_url, or x509_cert and
// sso_url).
const samlConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [SESSION_KEY]
sso:
  identity_providers:
    - id: corp
      name: Corporate SAML
      protocol: SAML
      entity_id: ENTITY_ID
      IDP_SOURCE
      attribute_mapping: {groups: groups}
role_mapping:
  roles: [admin, business, user, worker]
  default: user
  rules:
    - role: admin
      when: '"cvat-admins" in groups'
attribute_pass:
  headers:
    X-Email: email
    X-Groups: 'join(roles, ",")'
rules:
  - name: cvat-api-credentials
    path_prefix: /api/
    headers: {Authorization: '^(Basic|Token|Bearer) '}
    action: bypass
default_action: authenticate
`

// The users of the test IdP: alice is a CVAT admin by group, bob an
// annotator, who gets the default role.
var (
	samlAlice = samlserver.User{Name: "alice", Password: "alice-pw", Email: "alice@example.com",
		GivenName: "Alice", Surname: "Liddell", Groups: []string{"cvat-admins", "staff"}}
	samlBob = samlserver.User{Name: "bob", Password: "bob-pw", Email: "bob@example.com",
		GivenName: "Bob", Surname: "Builder", Groups: []string{"annotators"}}
)

// How the proxy is told about the IdP.
const (
	fromMetadataURL = "metadata_url"
	fromCertificate = "x509_cert and sso_url"
)

// samlStack is portcullis with the CVAT profile in front of the echo
// upstream, logging in at a real samlidp where it is registered as a service
// provider from its own metadata endpoint.
func samlStack(t *testing.T, source string) (*stack, *samlserver.Server) {
	t.Helper()
	idpSrv := samlserver.Start(t, samlserver.Options{Users: []samlserver.User{samlAlice, samlBob}})
	s := listen(t)
	var src string
	switch source {
	case fromMetadataURL:
		src = "metadata_url: " + idpSrv.MetadataURL()
	case fromCertificate:
		// The bare base64 DER that IdP consoles show.
		src = "x509_cert: " + base64.StdEncoding.EncodeToString(idpSrv.Certificate.Raw) + "\n      sso_url: " + idpSrv.SSOURL()
	default:
		t.Fatalf("unknown IdP source %q", source)
	}
	s.start(t, strings.NewReplacer("ENTITY_ID", idpSrv.EntityID(), "IDP_SOURCE", src).Replace(samlConfig))
	if err := idpSrv.AddServiceProviderURL(t.Context(), s.URL+"/.portcullis/saml/corp/metadata"); err != nil {
		t.Fatal(err)
	}
	return s, idpSrv
}

// acsPost is the form the IdP's answer page makes the browser post to the
// service provider: the SAMLResponse and the RelayState.
type acsPost struct {
	Action string
	Form   url.Values
}

// samlAnswer logs user in as a browser without JavaScript would: it opens
// pageURL, follows the redirects to the IdP's SSO URL, fills in and posts the
// IdP's login form, and returns the auto-POST form of the IdP's answer, not
// yet posted.
func samlAnswer(t *testing.T, b *http.Client, ssoURL, pageURL, user, password string) acsPost {
	t.Helper()
	resp, err := b.Get(pageURL)
	if err != nil {
		t.Fatal(err)
	}
	page := readBody(t, resp)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Request.URL.String(), ssoURL+"?") {
		t.Fatalf("GET %s ended at %s (status %d), want the IdP's login form at %s; body:\n%s",
			pageURL, resp.Request.URL, resp.StatusCode, ssoURL, page)
	}
	fields := formFields(page)
	if _, ok := fields["password"]; !ok {
		t.Fatalf("the IdP showed no login form:\n%s", page)
	}
	// The login form has no action: it posts back to the page it is on.
	form := url.Values{"user": {user}, "password": {password}}
	for _, name := range []string{"SAMLRequest", "RelayState"} {
		form.Set(name, fields[name])
	}
	resp, err = b.PostForm(resp.Request.URL.String(), form)
	if err != nil {
		t.Fatal(err)
	}
	page = readBody(t, resp)
	fields = formFields(page)
	if resp.StatusCode != http.StatusOK || fields["SAMLResponse"] == "" {
		t.Fatalf("the IdP answered the login of %s with status %d and no SAMLResponse form:\n%s", user, resp.StatusCode, page)
	}
	post := acsPost{Action: formAction(page), Form: url.Values{}}
	for _, name := range []string{"SAMLResponse", "RelayState"} {
		post.Form.Set(name, fields[name])
	}
	return post
}

// samlLogin logs user in at pageURL and returns the page the browser lands on.
func samlLogin(t *testing.T, b *http.Client, ssoURL, pageURL, user, password string) *http.Response {
	t.Helper()
	return samlAnswer(t, b, ssoURL, pageURL, user, password).post(t, b)
}

// answer is samlAnswer for a user of the test IdP.
func answer(t *testing.T, b *http.Client, idpSrv *samlserver.Server, pageURL string, user samlserver.User) acsPost {
	t.Helper()
	return samlAnswer(t, b, idpSrv.SSOURL(), pageURL, user.Name, user.Password)
}

// post submits the form as the IdP's auto-POST page would.
func (a acsPost) post(t *testing.T, b *http.Client) *http.Response {
	t.Helper()
	resp, err := b.PostForm(a.Action, a.Form)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// startLogin starts a login at the proxy in b without going to the IdP, and
// returns the RelayState the proxy bound to b's flow cookie.
func startLogin(t *testing.T, b *http.Client, s *stack) string {
	t.Helper()
	resp, err := noRedirect(b).Get(s.URL + "/.portcullis/login/corp?rd=/")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || loc.Query().Get("RelayState") == "" {
		t.Fatalf("start login: status %d Location %q, want a redirect to the IdP with a RelayState", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query().Get("RelayState")
}

var (
	inputRe  = regexp.MustCompile(`<input[^>]*\bname="([^"]+)"[^>]*>`)
	valueRe  = regexp.MustCompile(`\bvalue="([^"]*)"`)
	actionRe = regexp.MustCompile(`<form[^>]*\baction="([^"]*)"`)
)

// formFields returns the named inputs of an HTML page with their values.
func formFields(page string) map[string]string {
	out := map[string]string{}
	for _, m := range inputRe.FindAllStringSubmatch(page, -1) {
		v := ""
		if vm := valueRe.FindStringSubmatch(m[0]); vm != nil {
			v = html.UnescapeString(vm[1])
		}
		out[m[1]] = v
	}
	return out
}

func formAction(page string) string {
	if m := actionRe.FindStringSubmatch(page); m != nil {
		return html.UnescapeString(m[1])
	}
	return ""
}

func TestSAMLLoginPassesIdentityToCVAT(t *testing.T) {
	for _, source := range []string{fromMetadataURL, fromCertificate} {
		t.Run("IdP from "+source, func(t *testing.T) {
			s, idpSrv := samlStack(t, source)
			for _, tc := range []struct {
				name string
				user samlserver.User
				role string
			}{
				{"a member of cvat-admins is passed on as admin", samlAlice, "admin"},
				{"an annotator is passed on with the default role user", samlBob, "user"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					b := browser(t)
					post := answer(t, b, idpSrv, s.URL+"/tasks?page=2", tc.user)
					if want := s.URL + "/.portcullis/saml/corp/acs"; post.Action != want {
						t.Fatalf("the IdP's answer posts to %q, want the ACS %q", post.Action, want)
					}
					resp := post.post(t, b)
					body := readBody(t, resp)
					if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Echo") != "1" {
						t.Fatalf("after login: status %d, want the upstream's page; body:\n%s", resp.StatusCode, body)
					}
					if got := resp.Request.URL.RequestURI(); got != "/tasks?page=2" {
						t.Errorf("landed on %q, want the page asked for, /tasks?page=2", got)
					}
					got, _ := s.Upstream.Last()
					if e := got.Header.Get("X-Email"); e != tc.user.Email {
						t.Errorf("upstream X-Email = %q, want %s", e, tc.user.Email)
					}
					if g := got.Header.Get("X-Groups"); g != tc.role {
						t.Errorf("upstream X-Groups = %q, want %s", g, tc.role)
					}
					if c := got.Header.Get("Cookie"); strings.Contains(c, "portcullis") {
						t.Errorf("upstream got the proxy's cookie: %q", c)
					}
					if !strings.Contains(body, "Signed in as") || !strings.Contains(body, tc.user.Email) {
						t.Errorf("the upstream's page does not show who is signed in:\n%s", body)
					}
				})
			}
		})
	}
}

func TestSAMLServiceProviderMetadata(t *testing.T) {
	s, _ := samlStack(t, fromMetadataURL)
	resp, err := http.Get(s.URL + "/.portcullis/saml/corp/metadata")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "xml") {
		t.Fatalf("metadata: status %d Content-Type %q, want 200 XML", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var md saml.EntityDescriptor
	if err := xml.Unmarshal([]byte(body), &md); err != nil {
		t.Fatalf("metadata is not an EntityDescriptor: %v\n%s", err, body)
	}
	if want := s.URL + "/.portcullis/saml/corp/metadata"; md.EntityID != want {
		t.Errorf("entityID = %q, want the metadata URL %q", md.EntityID, want)
	}
	if len(md.SPSSODescriptors) != 1 || len(md.SPSSODescriptors[0].AssertionConsumerServices) == 0 ||
		md.SPSSODescriptors[0].AssertionConsumerServices[0].Location != s.URL+"/.portcullis/saml/corp/acs" {
		t.Errorf("metadata does not name the ACS %s:\n%s", s.URL+"/.portcullis/saml/corp/acs", body)
	}
	// Operators upload a saved copy of it to IdPs that refuse an SP whose
	// metadata's validUntil has passed: SimpleSAMLphp's converter keeps it
	// as the entry's 'expire', and Shibboleth's IdP drops expired metadata.
	if strings.Contains(body, "validUntil") || strings.Contains(body, "cacheDuration") {
		t.Errorf("metadata carries a validUntil or cacheDuration, after which a saved copy stops working at the IdP:\n%s", body)
	}
	if n := len(s.Upstream.Requests()); n != 0 {
		t.Errorf("the metadata request reached the upstream (%d requests)", n)
	}
}

func TestSAMLHostileACSPostsAreRefused(t *testing.T) {
	s, idpSrv := samlStack(t, fromMetadataURL)
	for _, tc := range []struct {
		name string
		// attack returns the browser that posts and what it posts.
		attack func(t *testing.T) (*http.Client, acsPost)
		// loggedIn says the posting browser has a session of its own
		// already, so only the upstream's silence is checked.
		loggedIn bool
	}{
		{
			name: "a response posted again by the browser it was for signs in no one",
			attack: func(t *testing.T) (*http.Client, acsPost) {
				b := browser(t)
				post := answer(t, b, idpSrv, s.URL+"/tasks", samlAlice)
				if resp := post.post(t, b); readBody(t, resp) == "" || resp.StatusCode != http.StatusOK {
					t.Fatalf("the first post: status %d, want the upstream's page", resp.StatusCode)
				}
				return b, post
			},
			loggedIn: true,
		},
		{
			name: "a used response replayed with a fresh login's RelayState is refused",
			attack: func(t *testing.T) (*http.Client, acsPost) {
				victim := browser(t)
				post := answer(t, victim, idpSrv, s.URL+"/tasks", samlAlice)
				readBody(t, post.post(t, victim))
				attacker := browser(t)
				post.Form.Set("RelayState", startLogin(t, attacker, s))
				return attacker, post
			},
		},
		{
			name: "a response and RelayState of another browser are refused",
			attack: func(t *testing.T) (*http.Client, acsPost) {
				// Login CSRF: the attacker's own login answer, posted
				// from the victim's browser, which started a login too.
				post := answer(t, browser(t), idpSrv, s.URL+"/tasks", samlBob)
				victim := browser(t)
				startLogin(t, victim, s)
				return victim, post
			},
		},
		{
			name: "another browser's response with this browser's RelayState is refused",
			attack: func(t *testing.T) (*http.Client, acsPost) {
				post := answer(t, browser(t), idpSrv, s.URL+"/tasks", samlBob)
				victim := browser(t)
				post.Form.Set("RelayState", startLogin(t, victim, s))
				return victim, post
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, post := tc.attack(t)
			before := len(s.Upstream.Requests())
			resp := post.post(t, noRedirect(b))
			body := readBody(t, resp)
			switch {
			case tc.loggedIn:
				// The browser's own answer again (the back button into the
				// IdP's posting page): its login is spent, and the signed-in
				// user goes on to the application's root, with no cookie
				// of a new session (README, "What users see around a sign-in").
				if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != s.URL+"/" || len(resp.Cookies()) != 0 {
					t.Errorf("the browser's own ACS post again: status %d Location %q cookies %v, want 303 to %s/ and no cookie",
						resp.StatusCode, resp.Header.Get("Location"), resp.Cookies(), s.URL)
				}
			case resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusForbidden:
				t.Errorf("hostile ACS post: status %d Location %q, want 400 or 403; body:\n%s",
					resp.StatusCode, resp.Header.Get("Location"), body)
			}
			if n := len(s.Upstream.Requests()); n != before {
				t.Errorf("the upstream saw %d more requests, want none", n-before)
			}
			if tc.loggedIn {
				return
			}
			info, err := b.Get(s.URL + "/.portcullis/userinfo")
			if err != nil {
				t.Fatal(err)
			}
			if body := readBody(t, info); info.StatusCode != http.StatusUnauthorized {
				t.Errorf("after a refused post the browser has a session: userinfo status %d %s", info.StatusCode, body)
			}
		})
	}
}
