package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// cvatConfig is the CVAT profile from the README quick start, pointed at the
// test IdP and the echo upstream.
const cvatConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [SESSION_KEY]
sso:
  identity_providers:
    - id: company
      name: Company SSO
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups]
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
  - name: admin-only
    path_prefix: /admin
    action: authenticate
    allow_if: '"admin" in roles'
default_action: authenticate
`

// oidcStack is portcullis with the CVAT profile in front of the echo
// upstream, logging in at a real oidc-provider.
func oidcStack(t *testing.T, o oidcserver.Options) (*stack, *oidcserver.Server) {
	t.Helper()
	s := listen(t)
	o.RedirectURIs = []string{s.URL + "/.portcullis/oidc/company/callback"}
	idp := oidcserver.Start(t, o)
	s.start(t, strings.Replace(cvatConfig, "ISSUER", idp.Issuer, 1))
	return s, idp
}

func TestOIDCLoginPassesIdentityToCVAT(t *testing.T) {
	for _, conform := range []bool{false, true} {
		name := map[bool]string{false: "claims in the ID token", true: "claims from userinfo"}[conform]
		t.Run(name, func(t *testing.T) {
			s, _ := oidcStack(t, oidcserver.Options{ConformIDTokenClaims: conform})
			b := browser(t)

			resp := oidcserver.Login(t, b, s.URL+"/tasks?page=2", oidcserver.Alice, oidcserver.AlicePassword)
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Echo") != "1" {
				t.Fatalf("after login: status %d, want the upstream's page; body:\n%s", resp.StatusCode, body)
			}
			if got := resp.Request.URL.RequestURI(); got != "/tasks?page=2" {
				t.Errorf("landed on %q, want the page asked for, /tasks?page=2", got)
			}
			got, _ := s.Upstream.Last()
			if e := got.Header.Get("X-Email"); e != "alice@example.com" {
				t.Errorf("upstream X-Email = %q, want alice@example.com", e)
			}
			if g := got.Header.Get("X-Groups"); g != "admin" {
				t.Errorf("upstream X-Groups = %q, want admin", g)
			}
			if c := got.Header.Get("Cookie"); strings.Contains(c, "portcullis") {
				t.Errorf("upstream got the proxy's cookie: %q", c)
			}

			// userinfo shows the session.
			info, err := b.Get(s.URL + "/.portcullis/userinfo")
			if err != nil {
				t.Fatal(err)
			}
			var prof struct {
				Email  string   `json:"email"`
				Roles  []string `json:"roles"`
				Groups []string `json:"groups"`
			}
			json.Unmarshal([]byte(readBody(t, info)), &prof)
			if info.StatusCode != 200 || prof.Email != "alice@example.com" || len(prof.Roles) != 1 || prof.Roles[0] != "admin" {
				t.Errorf("userinfo: status %d, %+v", info.StatusCode, prof)
			}
		})
	}
}

func TestBasicAuthAPICallBypassesWithoutIdentity(t *testing.T) {
	s, _ := oidcStack(t, oidcserver.Options{})
	req, _ := http.NewRequest("GET", s.URL+"/api/tasks", nil)
	req.SetBasicAuth("cvat-user", "secret")
	req.Header.Set("X-Email", "spoofed@evil.example")
	req.Header["X_Groups"] = []string{"admin"}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("bypassed API call: status %d, want 200 from the upstream", resp.StatusCode)
	}
	got, _ := s.Upstream.Last()
	if got.Header.Get("Authorization") == "" {
		t.Error("the caller's Authorization header did not reach the upstream")
	}
	for name := range got.Header {
		if n := strings.ToLower(strings.NewReplacer("_", "-", ".", "-").Replace(name)); n == "x-email" || n == "x-groups" {
			t.Errorf("bypassed request reached the upstream with identity header %s: %q", name, got.Header[name])
		}
	}
}

func TestAPICallWithoutSessionGets401(t *testing.T) {
	s, _ := oidcStack(t, oidcserver.Options{})
	resp, err := http.Get(s.URL + "/api/tasks")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"unauthorized"`) {
		t.Fatalf("status %d body %s, want 401 JSON", resp.StatusCode, body)
	}
	if n := len(s.Upstream.Requests()); n != 0 {
		t.Fatalf("upstream saw %d requests, want none", n)
	}
}

func TestNonAdminGets403OnAllowIfRoute(t *testing.T) {
	s, _ := oidcStack(t, oidcserver.Options{})
	b := browser(t)
	resp := oidcserver.Login(t, b, s.URL+"/admin/users", oidcserver.Bob, oidcserver.BobPassword)
	readBody(t, resp)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bob on /admin: status %d, want 403", resp.StatusCode)
	}
	if n := len(s.Upstream.Requests()); n != 0 {
		t.Fatalf("upstream saw %d requests, want none", n)
	}
	// The same session reaches an ordinary page, as a user.
	resp, err := b.Get(s.URL + "/tasks")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	got, _ := s.Upstream.Last()
	if resp.StatusCode != 200 || got.Header.Get("X-Groups") != "user" || got.Header.Get("X-Email") != "bob@example.com" {
		t.Fatalf("bob on /tasks: status %d, X-Email %q X-Groups %q; want 200, bob@example.com, user",
			resp.StatusCode, got.Header.Get("X-Email"), got.Header.Get("X-Groups"))
	}
}

func TestLogoutEndsTheSession(t *testing.T) {
	s, _ := oidcStack(t, oidcserver.Options{})
	b := browser(t)
	readBody(t, oidcserver.Login(t, b, s.URL+"/tasks", oidcserver.Alice, oidcserver.AlicePassword))
	stolen := b.Jar.Cookies(mustURL(t, s.URL))
	if len(stolen) == 0 {
		t.Fatal("no session cookie after login")
	}

	resp, err := b.Get(s.URL + "/.portcullis/logout")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != 200 || !strings.Contains(body, "signed out") {
		t.Fatalf("logout: status %d, want the signed-out page; body %s", resp.StatusCode, body)
	}
	resp, err = noRedirect(b).Get(s.URL + "/tasks")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), "/.portcullis/login?rd=") {
		t.Fatalf("after logout: status %d Location %q, want a redirect to the login page", resp.StatusCode, resp.Header.Get("Location"))
	}

	// The cookie from before the logout, replayed, is no session.
	req, _ := http.NewRequest("GET", s.URL+"/tasks", nil)
	for _, c := range stolen {
		req.AddCookie(c)
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("replayed cookie after logout: status %d, want 401", resp.StatusCode)
	}
}

// An error the IdP sends to the callback instead of a code (RFC 6749
// 4.1.2.1) says what happened, in the proxy's words: error_description and
// unknown codes are the IdP's (or whoever wrote the link's) text, and never
// reach the page.
func TestIdPErrorAtTheCallbackIsExplained(t *testing.T) {
	s, idp := oidcStack(t, oidcserver.Options{})

	t.Run("the user cancels at the IdP", func(t *testing.T) {
		resp := oidcserver.Cancel(t, browser(t), s.URL+"/tasks")
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "cancelled") || !strings.Contains(body, "Company SSO") {
			t.Fatalf("status %d at %s, want 403 saying the sign-in at Company SSO was cancelled; body:\n%s", resp.StatusCode, resp.Request.URL, body)
		}
	})

	tests := []struct {
		name       string
		code       string
		wantStatus int
		want       string
	}{
		{name: "access_denied", code: "access_denied", wantStatus: http.StatusForbidden, want: "cancelled"},
		{name: "the IdP failing", code: "temporarily_unavailable", wantStatus: http.StatusBadGateway, want: "Try again in a moment"},
		{name: "a refused request", code: "invalid_scope", wantStatus: http.StatusBadGateway, want: "invalid_scope"},
		{name: "a code of markup", code: "<b>x</b>", wantStatus: http.StatusBadGateway, want: "ask your administrator"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" with a hostile description", func(t *testing.T) {
			b := browser(t)
			start, err := noRedirect(b).Get(s.URL + "/.portcullis/login/company")
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, start)
			authz, err := url.Parse(start.Header.Get("Location"))
			if err != nil || authz.Query().Get("state") == "" {
				t.Fatalf("login start: %d %q, want a redirect to the IdP with a state", start.StatusCode, start.Header.Get("Location"))
			}
			q := url.Values{"state": {authz.Query().Get("state")}, "iss": {idp.Issuer}, "error": {tt.code},
				"error_description": {`<script>alert(1)</script> Your account is locked; call +1 555 0100`}}
			resp, err := b.Get(s.URL + "/.portcullis/oidc/company/callback?" + q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.want) {
				t.Errorf("status %d, want %d with %q; body:\n%s", resp.StatusCode, tt.wantStatus, tt.want, body)
			}
			for _, leak := range []string{"<script>", "alert(1)", "555 0100", "<b>x</b>", "&lt;b&gt;"} {
				if strings.Contains(body, leak) {
					t.Errorf("the page shows %q from the callback's query:\n%s", leak, body)
				}
			}
		})
	}
}

// TestAbandonedLoginsDoNotPileUpInTheBrowser starts logins that are never
// finished, as a page that reloads into the login, or another site's
// <img src=".../login/company"> tags, do: each leaves a login cookie for ten
// minutes, and enough of them make every request too large for the
// proxy's 64 KiB of headers (431) and push the session's cookies past
// browsers' ~180 cookies a site.
func TestAbandonedLoginsDoNotPileUpInTheBrowser(t *testing.T) {
	s, _ := refreshStack(t)
	b := browser(t)
	for range 150 {
		resp, err := noRedirect(b).Get(s.URL + "/.portcullis/login/company?rd=/tasks/17/jobs")
		if err != nil {
			t.Fatal(err)
		}
		if readBody(t, resp); resp.StatusCode != http.StatusFound {
			t.Fatalf("login start: status %d", resp.StatusCode)
		}
	}
	logins := 0
	for _, c := range b.Jar.Cookies(mustURL(t, s.URL)) {
		if strings.HasPrefix(c.Name, "portcullis_login_") {
			logins++
		}
	}
	size := len(cookieHeader(t, b, s))
	t.Logf("after 150 abandoned logins the browser holds %d login cookies, %d bytes of Cookie header", logins, size)
	if logins > 10 {
		t.Errorf("%d login cookies held after 150 abandoned logins, want at most 10", logins)
	}

	// The latest login still finishes.
	resp := oidcserver.Login(t, b, s.URL+"/", oidcserver.Alice, oidcserver.AlicePassword)
	readBody(t, resp)
	if got, _ := s.Upstream.Last(); resp.StatusCode != http.StatusOK || got.Header.Get("X-Email") != "alice@example.com" {
		t.Errorf("login after the abandoned ones: status %d, X-Email %q", resp.StatusCode, got.Header.Get("X-Email"))
	}
}

// An answer at the callback that gives state, code, iss or error more than
// once is refused (RFC 6749 3.1: response parameters must not be included
// more than once): which copy counts would be the proxy's guess, and the
// RFC 9207 issuer check would hold only for the copy it happened to read.
// The genuine answer from the real provider, with one parameter repeated
// after it, is refused and makes no session.
func TestCallbackWithARepeatedParameterIsRefused(t *testing.T) {
	s, idp := oidcStack(t, oidcserver.Options{})
	for _, tt := range []struct{ name, extra string }{
		{"a second iss naming another issuer", "iss=" + url.QueryEscape("http://evil.example")},
		{"a second, empty iss", "iss="},
		{"a second code", "code=bogus"},
		{"a second state", "state=junk"},
		{"an error beside the code", "error=access_denied"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := browser(t)
			// The browser logs in at the IdP but stops before the callback...
			resp := oidcserver.Login(t, beforeCallback(b), s.URL+"/.portcullis/login/company?rd=/tasks", oidcserver.Alice, oidcserver.AlicePassword)
			readBody(t, resp)
			callback := resp.Header.Get("Location")
			if !strings.HasPrefix(callback, s.URL+"/.portcullis/oidc/company/callback?") || !strings.Contains(callback, "iss="+url.QueryEscape(idp.Issuer)) {
				t.Fatalf("the IdP redirected to %q, want the callback with its iss", callback)
			}
			// ...where the answer arrives with the parameter given twice.
			resp, err := noRedirect(b).Get(callback + "&" + tt.extra)
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode < 400 || !strings.Contains(body, "Sign-in failed") {
				t.Errorf("status %d (Location %q), want the answer refused with Sign-in failed:\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
			}
			info, err := b.Get(s.URL + "/.portcullis/userinfo")
			if err != nil {
				t.Fatal(err)
			}
			if readBody(t, info); info.StatusCode != http.StatusUnauthorized {
				t.Errorf("after the refused answer /userinfo answered %d, want 401: it made a session", info.StatusCode)
			}
		})
	}
}
