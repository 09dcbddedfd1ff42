package proxy

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy/jsonlog"
	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// unpassableUsers are accounts at the test OIDC provider whose profile
// carries what an identity header cannot (a line break, NUL, ESC), and one
// whose email and name are not ASCII, which headers carry as they are.
var unpassableUsers = map[string]oidcserver.User{
	"crlf":  {Password: "pw", Email: "crlf@example.com\r\nX-Groups: admin", EmailVerified: true},
	"nul":   {Password: "pw", Email: "nul@example.com", EmailVerified: true, Name: "Null\x00Byte"},
	"esc":   {Password: "pw", Email: "esc@example.com", EmailVerified: true, Extra: map[string]any{"dept": "R&D\x1b[31m"}},
	"zoe":   {Password: "pw", Email: "zoë@exämple.com", EmailVerified: true, Name: "Zoë Łukasiewicz-Müller 日本"},
	"carol": {Password: "pw", Email: "carol@example.com", EmailVerified: true, Name: "Carol\nSmith"},
}

// newUnpassableProxy is portcullis with the test OIDC provider's
// unpassableUsers, passing attribute_pass headers besides X-Groups
// (replacing its X-Groups line with extra), its log in logs.
func newUnpassableProxy(t *testing.T, extra string) (*signedInBeforeReload, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	e := newReloadingProxyLogged(t, slog.New(jsonlog.New(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), func(publicURL, upstreamURL string) string {
		op := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{publicURL + "/.portcullis/oidc/company/callback"}, ExtraUsers: unpassableUsers})
		return strings.NewReplacer("    X-Groups: 'join(roles, \",\")'\n", "    X-Groups: 'join(roles, \",\")'\n"+extra,
			"PUBLIC_URL", publicURL, "UPSTREAM_URL", upstreamURL, "ISSUER", op.Issuer, "STORE", "  store: cookie").Replace(authzReloadConfig)
	})
	return e, logs
}

// signIn signs user in at the test provider with a fresh browser, going to
// /tasks: the last answer, its body, and the browser.
func (e *signedInBeforeReload) signIn(t *testing.T, user string) (*http.Response, string, *http.Client) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	b := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	e.upstream.Reset()
	resp := oidcserver.Login(t, b, e.url+"/.portcullis/login/company?rd=/tasks", user, unpassableUsers[user].Password)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), b
}

// A login whose profile gives an identity header a byte that no header
// value can carry is refused at the login, with 403 and the reason, as
// the login refuses other unusable answers, and its login denied line
// names the header, the profile field and the kind of byte, never the
// value. Before, the login succeeded, and every request of the session
// was then refused with 500 and an error line: a session that could never
// work. Non-ASCII values pass as they are (obs-text, which net/http sends).
func TestLoginRefusesAnIdentityNoHeaderCanCarry(t *testing.T) {
	t.Parallel()
	e, logs := newUnpassableProxy(t, "    X-Email: email\n    X-Name: name\n    X-Dept: claims.dept\n")

	for _, tc := range []struct {
		user, header, field, class string
	}{
		{"crlf", "X-Email", "email", "line break"},
		{"nul", "X-Name", "name", "NUL"},
		{"esc", "X-Dept", "claims.dept", "control character"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			resp, body, b := e.signIn(t, tc.user)
			if resp.StatusCode != http.StatusForbidden || resp.Request.URL.Path != "/.portcullis/oidc/company/callback" {
				t.Fatalf("login: %d at %s, want 403 at the callback", resp.StatusCode, resp.Request.URL.Path)
			}
			if !strings.Contains(body, "cannot be passed on to this application") {
				t.Errorf("the refusal's page gives no reason:\n%s", body)
			}
			if _, ok := e.upstream.Last(); ok {
				t.Errorf("a request reached the upstream")
			}
			for _, c := range b.Jar.Cookies(resp.Request.URL) {
				if c.Name == "portcullis" {
					t.Errorf("a session cookie was set: %s", c.Name)
				}
			}
			lines := logs.find(t, map[string]any{"msg": "login denied", "why": "identity_unpassable", "idp": "company"})
			var line map[string]any
			for _, l := range lines {
				if hint, _ := l["hint"].(string); strings.Contains(hint, tc.header) {
					line = l
				}
			}
			if line == nil {
				t.Fatalf("no login denied line names %s; lines: %v", tc.header, lines)
			}
			hint := line["hint"].(string)
			for _, want := range []string{tc.header, "profile's " + tc.field, tc.class} {
				if !strings.Contains(hint, want) {
					t.Errorf("hint %q does not name %q", hint, want)
				}
			}
			if strings.ContainsAny(hint, "\r\n\x00\x1b") || strings.Contains(hint, "Null") || strings.Contains(hint, "R&D") || strings.Contains(hint, "X-Groups: admin") {
				t.Errorf("hint %q carries the value", hint)
			}
		})
	}

	t.Run("non-ASCII email and name reach the upstream intact", func(t *testing.T) {
		resp, _, _ := e.signIn(t, "zoe")
		if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/tasks" {
			t.Fatalf("login: %d at %s, want 200 at /tasks", resp.StatusCode, resp.Request.URL.Path)
		}
		got, ok := e.upstream.Last()
		if !ok {
			t.Fatal("nothing reached the upstream")
		}
		if v := got.Header.Get("X-Email"); v != unpassableUsers["zoe"].Email {
			t.Errorf("X-Email = %q, want %q", v, unpassableUsers["zoe"].Email)
		}
		if v := got.Header.Get("X-Name"); v != unpassableUsers["zoe"].Name {
			t.Errorf("X-Name = %q, want %q", v, unpassableUsers["zoe"].Name)
		}
	})
}

// A session whose identity a reload made unpassable (a header added that
// takes a profile field with a line break) is no session, as one whose
// user the reload no longer admits: a script gets 401, a browser is sent
// to sign in, where the login's refusal says why. Before, every request
// of it was refused with 500 until it ended.
func TestReloadThatMakesASessionUnpassable(t *testing.T) {
	t.Parallel()
	e, logs := newUnpassableProxy(t, "")
	resp, _, b := e.signIn(t, "carol")
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/tasks" {
		t.Fatalf("login before the reload: %d at %s, want 200 at /tasks", resp.StatusCode, resp.Request.URL.Path)
	}
	var kept []string
	for _, c := range b.Jar.Cookies(resp.Request.URL) {
		if strings.HasPrefix(c.Name, "portcullis") {
			kept = append(kept, c.Name+"="+c.Value)
		}
	}
	e.cookies = strings.Join(kept, "; ")

	e.reload(t, "    X-Groups: 'join(roles, \",\")'\n", "    X-Groups: 'join(roles, \",\")'\n    X-Name: name\n")
	if status, _ := e.get(t, "/tasks"); status != http.StatusUnauthorized {
		t.Errorf("a script's request after the reload: %d, want 401", status)
	}
	if _, ok := e.upstream.Last(); ok {
		t.Errorf("a request reached the upstream")
	}
	req, _ := http.NewRequest("GET", e.url+"/tasks", nil)
	req.Header.Set("Cookie", e.cookies)
	req.Header.Set("Accept", "text/html")
	nav, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	nav.Body.Close()
	if loc := nav.Header.Get("Location"); nav.StatusCode != http.StatusFound || !strings.HasPrefix(loc, "/.portcullis/login") {
		t.Errorf("a browser's request after the reload: %d to %q, want 302 to sign in", nav.StatusCode, loc)
	}

	// Signing in again is refused, and says why.
	e.upstream.Reset()
	resp = oidcserver.Login(t, b, e.url+"/.portcullis/login/company?rd=/tasks", "carol", "pw")
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("signing in again: %d at %s, want 403", resp.StatusCode, resp.Request.URL.Path)
	}
	if len(logs.find(t, map[string]any{"msg": "login denied", "why": "identity_unpassable"})) != 1 {
		t.Errorf("want one login denied line for carol's second login")
	}
	if n := len(logs.find(t, map[string]any{"msg": "attribute pass failed; refusing"})); n != 0 {
		t.Errorf("%d requests refused with 500, want none", n)
	}
}

// An LDAP account whose displayName holds a line break is refused at the
// form's login with 403, and with Basic credentials with 403 in the JSON of
// Basic auth's other refusals; nothing reaches the upstream. A UTF-8 name
// passes as it is. Before, the form's login succeeded and each request
// then failed with 500, as every Basic request did.
func TestLDAPRefusesAnIdentityNoHeaderCanCarry(t *testing.T) {
	entry := func(uid, displayName string) string {
		return "dn: uid=" + uid + ",ou=people," + ldapserver.Suffix + "\nobjectClass: inetOrgPerson\nuid: " + uid + "\ncn: " + uid + "\nsn: " + uid +
			"\nmail: " + uid + "@example.com\ndisplayName:: " + base64.StdEncoding.EncodeToString([]byte(displayName)) +
			"\nuserPassword: " + ldapserver.SSHA("pw") + "\n\n"
	}
	dir := ldapserver.Start(t, ldapserver.Options{LDIF: ldapserver.Tree() + "\n" +
		entry("mallory", "Mallory\r\nX-Groups: admin") + entry("zoe", "Zoë Łukasiewicz")})
	f := newFixtureOf(t, strings.Replace(withLegacyRule(dir.URL), "    X-Email: email\n", "    X-Email: email\n    X-Name: name\n", 1))

	t.Run("Basic auth", func(t *testing.T) {
		r := request("GET", "/legacy/x", nil, "Accept", "application/json")
		r.SetBasicAuth("mallory", "pw")
		resp, _, reached := f.do(t, r)
		var body map[string]string
		json.NewDecoder(resp.Body).Decode(&body)
		if resp.StatusCode != http.StatusForbidden || reached || body["error"] != "access_denied" ||
			!strings.Contains(body["message"], "cannot be passed on to this application") {
			t.Errorf("%d %v (upstream reached: %v), want 403 access_denied with the reason", resp.StatusCode, body, reached)
		}

		r = request("GET", "/legacy/x", nil, "Accept", "application/json")
		r.SetBasicAuth("zoe", "pw")
		resp, got, reached := f.do(t, r)
		if resp.StatusCode != http.StatusOK || !reached || got.Header.Get("X-Name") != "Zoë Łukasiewicz" {
			t.Errorf("zoe: %d (upstream reached: %v) with X-Name %q, want 200 with her name as it is", resp.StatusCode, reached, got.Header.Get("X-Name"))
		}
	})
	t.Run("the login form", func(t *testing.T) {
		rec := postLDAPForm(t, f.h, openLDAPForm(t, f.h), "mallory", "pw")
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "cannot be passed on to this application") {
			t.Errorf("login: %d, want 403 with the reason\n%s", rec.Code, rec.Body)
		}
		for _, c := range rec.Result().Cookies() {
			if c.Name == "portcullis" && c.MaxAge >= 0 {
				t.Errorf("a session cookie was set")
			}
		}
	})
}
