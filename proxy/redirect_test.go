package proxy

import (
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
)

// Invariant 6: after login and logout, rd leads only to public_url's origin.
func TestSafeRedirect(t *testing.T) {
	c := &compiled{publicURL: &url.URL{Scheme: "https", Host: "cvat.example.com"}}
	const home = "https://cvat.example.com/"
	for _, tc := range []struct{ rd, want string }{
		{"", home},
		{"/tasks?id=1", "https://cvat.example.com/tasks?id=1"},
		{"/tasks#frag", "https://cvat.example.com/tasks#frag"},
		{"https://cvat.example.com/tasks", "https://cvat.example.com/tasks"},
		{"HTTPS://CVAT.EXAMPLE.COM/tasks", "https://cvat.example.com/tasks"},
		{"https://cvat.example.com/tasks?id=1", "https://cvat.example.com/tasks?id=1"},
		{"https://cvat.example.com/%2F%2Fevil.com", "https://cvat.example.com/%2F%2Fevil.com"}, // kept as escaped, not decoded
		{"/%2F%2Fevil.com", "https://cvat.example.com/%2F%2Fevil.com"},
		{"//evil.com", home},
		{"///evil.com", home},
		{"/\\evil.com", home},
		{"\\\\evil.com", home},
		{"https:evil.com", home},
		{"https:/evil.com", home},
		{"http://cvat.example.com/", home},
		{"https://evil.com", home},
		{"https://cvat.example.com.evil.com/", home},
		{"https://cvat.example.com@evil.com/", home},
		{"https://user:pw@cvat.example.com/", home},
		{"https://evil.com#@cvat.example.com", home},
		{"/\t/evil.com", home},
		{"/\n/evil.com", home},
		{" //evil.com", home},
		{"/ /evil.com", home}, // a space, which url.Parse lets through to the Location header
		{"javascript:alert(1)", home},
		{"data:text/html,x", home},
		{"evil.com", home},
		{"tasks", home},
		{"https://cvat.example.com//evil.com", "https://cvat.example.com/"},
		{"https://cvаt.example.com/", home}, // Cyrillic а
		// With a path, so that keeping it here is told apart from the root:
		// only this origin's own URLs keep their path.
		{"http://cvat.example.com/tasks", home},
		{"https://user:pw@cvat.example.com/tasks", home},
		{"https://evilcvat.example.com/tasks", home},
		{"https://cvat.example.com.evil.com/tasks", home},
		{"/ｅvil", home},
	} {
		if got := c.safeRedirect(tc.rd); got != tc.want {
			t.Errorf("safeRedirect(%q) = %q, want %q", tc.rd, got, tc.want)
		}
	}
}

// Invariant 6 holds for a logout that goes by the IdP too (single_sign_out):
// rd is made safe before it is sealed into the logout's state, since
// /logout/done follows that as it stands, after the IdP's end-session page.
func TestSingleSignOutLeadsOnlyToThisOrigin(t *testing.T) {
	lf := newLoginFuzz(t)
	for _, tc := range []struct{ rd, want string }{
		{"https://evil.example/", "https://cvat.example.com/"},
		{"//evil.example/tasks", "https://cvat.example.com/"},
		{"/bye?x=1", "https://cvat.example.com/bye?x=1"},
	} {
		t.Run(tc.rd, func(t *testing.T) {
			b := newStateBrowser(t, lf.h)
			b.signedIn(t, lf, "company")
			rec := b.get("/.portcullis/logout?rd=" + url.QueryEscape(tc.rd))
			loc, _ := url.Parse(rec.Header().Get("Location"))
			if rec.Code != http.StatusFound || !strings.HasPrefix(loc.String(), lf.oidc.Issuer+"/session/end?") {
				t.Fatalf("logout: %d to %q, want the IdP's end-session endpoint", rec.Code, loc)
			}
			rec = b.get("/.portcullis/logout/done?state=" + loc.Query().Get("state"))
			if got := rec.Header().Get("Location"); rec.Code != http.StatusFound || got != tc.want {
				t.Errorf("/logout/done: %d to %q, want %q", rec.Code, got, tc.want)
			}
		})
	}
}

// Invariant 6 holds for the LDAP form too: rd is made safe when the form is
// shown, and again when a refused post shows it anew, since the login state
// the form carries is where the browser goes once the password checks out.
func TestLDAPFormLeadsOnlyToThisOrigin(t *testing.T) {
	lf := newLoginFuzz(t)
	stateIn := func(t *testing.T, rec *httptest.ResponseRecorder) string {
		t.Helper()
		m := regexp.MustCompile(`name="state" value="([^"]+)"`).FindStringSubmatch(rec.Body.String())
		if m == nil {
			t.Fatalf("no form: %d\n%s", rec.Code, rec.Body)
		}
		return m[1]
	}
	signIn := func(t *testing.T, b *stateBrowser, state string) {
		t.Helper()
		rec := b.post("/.portcullis/ldap/corp-ldap", url.Values{"username": {ldapserver.Bob}, "password": {ldapserver.BobPassword}, "state": {state}})
		if got := rec.Header().Get("Location"); rec.Code != http.StatusFound || got != "https://cvat.example.com/" {
			t.Errorf("signed in: %d to %q, want https://cvat.example.com/", rec.Code, got)
		}
	}
	const evil = "https://evil.example/"
	t.Run("the form", func(t *testing.T) {
		b := newStateBrowser(t, lf.h)
		signIn(t, b, stateIn(t, b.get("/.portcullis/ldap/corp-ldap?rd="+url.QueryEscape(evil))))
	})
	t.Run("the form shown again after a refused post", func(t *testing.T) {
		b := newStateBrowser(t, lf.h)
		rec := b.post("/.portcullis/ldap/corp-ldap", url.Values{"username": {ldapserver.Bob}, "password": {ldapserver.BobPassword},
			"state": {"expired-or-never-started-state"}, "rd": {evil}})
		if rec.Code != http.StatusBadRequest {
			t.Fatalf("a post without its login state: %d, want 400 and the form again", rec.Code)
		}
		signIn(t, b, stateIn(t, rec))
	})
}

// A page to go back to may be kilobytes long (rd may have maxRedirect
// bytes), more than a login's cookie holds: sealed into it, the cookie was
// more than a browser keeps, or the login's start a 500. The login goes
// on, back to the same page without its query, or to the root when even
// the page's path is that long. The cookie's JSON spells each & of a
// query in six bytes, so a page well under half of maxRedirect can be too
// long as well.
func TestLoginKeepsWhatItsCookieHoldsOfALongPage(t *testing.T) {
	lf := newLoginFuzz(t)
	const root = "https://cvat.example.com/"
	pages := []struct{ name, rd, want string }{
		{"a long query", "/tasks?filter=" + strings.Repeat("e", 3000), root + "tasks"},
		{"a query of many &", "/tasks?" + strings.Repeat("a&", 700), root + "tasks"},
		{"a long path", "/tasks/" + strings.Repeat("e", 3000), root},
		{"a page that fits", "/tasks?filter=" + strings.Repeat("e", 1000), root + "tasks?filter=" + strings.Repeat("e", 1000)},
	}
	// signIn finishes a login the browser started with loc, and returns
	// where it then went.
	signIn := map[string]func(t *testing.T, b *stateBrowser, loc *url.URL) *httptest.ResponseRecorder{
		"company": func(t *testing.T, b *stateBrowser, loc *url.URL) *httptest.ResponseRecorder {
			return b.get("/.portcullis/oidc/company/callback?" + lf.signInAtOIDC(t, loc).RawQuery)
		},
		"corp": func(t *testing.T, b *stateBrowser, loc *url.URL) *httptest.ResponseRecorder {
			return b.post("/.portcullis/saml/corp/acs", signInAtSAMLIdP(t, loc.String(), "alice", "alice-pw"))
		},
		"corp-ldap": func(t *testing.T, b *stateBrowser, loc *url.URL) *httptest.ResponseRecorder {
			form := b.get(loc.String())
			fields := map[string]string{}
			for _, m := range formInputRe.FindAllStringSubmatch(form.Body.String(), -1) {
				fields[m[1]] = html.UnescapeString(m[2])
			}
			if form.Code != http.StatusOK || fields["state"] == "" {
				t.Fatalf("the form: %d\n%s", form.Code, form.Body)
			}
			return b.post("/.portcullis/ldap/corp-ldap", url.Values{"username": {ldapserver.Bob}, "password": {ldapserver.BobPassword},
				"state": {fields["state"]}, "rd": {fields["rd"]}})
		},
	}
	for _, id := range []string{"company", "corp", "corp-ldap"} {
		for _, p := range pages {
			t.Run(id+"/"+p.name, func(t *testing.T) {
				b := newStateBrowser(t, lf.h)
				rec := signIn[id](t, b, b.startedFor(t, id, p.rd))
				if s, _ := lf.sessionSet(rec); rec.Code != http.StatusFound || s == nil || rec.Header().Get("Location") != p.want {
					t.Errorf("signed in: %d to %.80q…, session %v; want 302 to %.80q…\n%.300s", rec.Code, rec.Header().Get("Location"), s != nil, p.want, rec.Body)
				}
			})
		}
	}
	for _, p := range []struct{ name, rd, want string }{pages[0], pages[2]} {
		t.Run("single sign-out at corp (SAML)/"+p.name, func(t *testing.T) {
			b := newStateBrowser(t, lf.h)
			b.signedIn(t, lf, "corp")
			rec := b.get("/.portcullis/logout?rd=" + url.QueryEscape(p.rd))
			loc := rec.Header().Get("Location")
			if rec.Code != http.StatusFound || !strings.HasPrefix(loc, lf.saml.URL+"/slo?SAMLRequest=") {
				t.Fatalf("logout: %d to %.100q…, want the IdP's SLO endpoint", rec.Code, loc)
			}
			rec = b.get(atSAMLIdPSLO(t, loc).RequestURI())
			if got := rec.Header().Get("Location"); rec.Code != http.StatusFound || got != p.want {
				t.Errorf("the IdP's LogoutResponse: %d to %q, want %q\n%.300s", rec.Code, got, p.want, rec.Body)
			}
		})
	}
	t.Run("single sign-out", func(t *testing.T) {
		b := newStateBrowser(t, lf.h)
		b.signedIn(t, lf, "company")
		rec := b.get("/.portcullis/logout?rd=" + url.QueryEscape(pages[0].rd))
		loc, _ := url.Parse(rec.Header().Get("Location"))
		if rec.Code != http.StatusFound || !strings.HasPrefix(loc.String(), lf.oidc.Issuer+"/session/end?") {
			t.Fatalf("logout: %d to %q, want the IdP's end-session endpoint", rec.Code, loc)
		}
		rec = b.get("/.portcullis/logout/done?state=" + loc.Query().Get("state"))
		if got := rec.Header().Get("Location"); rec.Code != http.StatusFound || got != pages[0].want {
			t.Errorf("/logout/done: %d to %q, want %q", rec.Code, got, pages[0].want)
		}
	})
}

// atSAMLIdPSLO takes the LogoutRequest that loc brings to the SAML IdP's
// SLO endpoint, and returns where the IdP sends the browser with its
// LogoutResponse.
func atSAMLIdPSLO(t *testing.T, loc string) *url.URL {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(loc)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	back, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || back.Query().Get("SAMLResponse") == "" {
		t.Fatalf("the IdP's SLO endpoint: %d to %q, want a LogoutResponse\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	return back
}

// A browser that opens a page of more than maxRedirect bytes without a
// session is sent to /login with that page's path, where the address is
// that long only for its query, as startFlow keeps a page too long for its
// cookie; else with no rd, and the login ends at the root.
func TestLoginFromAnOverlongPageKeepsItsPath(t *testing.T) {
	lf := newLoginFuzz(t)
	for _, tc := range []struct{ name, page, login, want string }{
		{"a query of 5 KB", "/tasks?q=" + strings.Repeat("e", 5<<10), "/.portcullis/login?rd=" + url.QueryEscape("/tasks"), "https://cvat.example.com/tasks"},
		{"a path of 5 KB", "/tasks/" + strings.Repeat("e", 5<<10), "/.portcullis/login", "https://cvat.example.com/"},
		{"a path of 5 KB with a query", "/tasks/" + strings.Repeat("e", 5<<10) + "?q=1", "/.portcullis/login", "https://cvat.example.com/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newStateBrowser(t, lf.h)
			rec := b.do(request("GET", tc.page, nil, "Accept", "text/html"))
			if loc := rec.Header().Get("Location"); rec.Code != http.StatusFound || loc != tc.login {
				t.Fatalf("the page: %d to %.100q, want %q", rec.Code, loc, tc.login)
			}
			start := b.get(link(t, b.get(tc.login), "/.portcullis/login/company"))
			loc, err := url.Parse(start.Header().Get("Location"))
			if start.Code != http.StatusFound || err != nil {
				t.Fatalf("the login at company: %d to %q", start.Code, start.Header().Get("Location"))
			}
			rec = b.get("/.portcullis/oidc/company/callback?" + lf.signInAtOIDC(t, loc).RawQuery)
			if s, _ := lf.sessionSet(rec); rec.Code != http.StatusFound || s == nil || rec.Header().Get("Location") != tc.want {
				t.Errorf("signed in: %d to %.100q, session %v; want 302 to %q", rec.Code, rec.Header().Get("Location"), s != nil, tc.want)
			}
		})
	}
}
