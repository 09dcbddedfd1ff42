package proxy

import (
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
)

// padTo is prefix followed by as many units as fit in n bytes.
func padTo(prefix, unit string, n int) string {
	return prefix + strings.Repeat(unit, (n-len(prefix))/len(unit))
}

// longRedirects are pages to go back to of maxRedirect bytes, the most rd
// may have, in the shapes that cost the most: sealed into a login's cookie
// (JSON spells & as \u0026) or escaped into a Location (/, ?, & and %
// take three bytes each).
var longRedirects = []struct{ name, rd string }{
	{"a long path", padTo("/tasks/", "e", maxRedirect)},
	{"a long query", padTo("/tasks?q=", "e", maxRedirect)},
	{"a query of many &", padTo("/tasks?", "a&", maxRedirect)},
	{"a query of percent-escapes", padTo("/tasks?q=", "%2F", maxRedirect)},
	{"a non-ASCII query, escaped", padTo("/tasks?q=", "%C3%A4", maxRedirect)},
	{"an absolute URL of slashes", padTo("https://cvat.example.com/tasks?q=", "/", maxRedirect)},
	{"one byte too long", padTo("/tasks?q=", "e", maxRedirect+1)},
}

// maxLocation is the longest Location, or link, the proxy's own endpoints
// may send:
// one rd that safeRedirect follows, each byte escaped, and an endpoint's
// path. A front proxy reads an answer's headers into one buffer
// (nginx's proxy_buffer_size), and the browser's next request line too
// (large_client_header_buffers); docs/troubleshooting.md has them at 32k,
// which this and a login's cookies fit in.
const maxLocation = 3*maxRedirect + 256

// maxAnswerHeader is the most header an answer of the proxy's own
// endpoints may have: what docs/troubleshooting.md sets a front's
// proxy_buffer_size to.
const maxAnswerHeader = 32 << 10

// checkLongAnswer checks an answer to a long input: FuzzLoginEndpoints's
// checks, a Location no longer than maxLocation, and headers that a front
// proxy set as docs/troubleshooting.md says passes on.
func (lf *loginFuzz) checkLongAnswer(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	lf.checkLoginAnswer(t, rec)
	if loc := rec.Header().Get("Location"); len(loc) > maxLocation {
		t.Errorf("a Location of %d bytes, more than %d: %.100q…", len(loc), maxLocation, loc)
	}
	n := 0
	for k, vs := range rec.Header() {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	if n > maxAnswerHeader {
		t.Errorf("headers of %d bytes, more than a front proxy set as docs/troubleshooting.md says reads", n)
	}
}

// hrefRe finds a page's links.
var hrefRe = regexp.MustCompile(`href="([^"]+)"`)

// link is the first link of rec's page to a path starting with prefix.
func link(t *testing.T, rec *httptest.ResponseRecorder, prefix string) string {
	t.Helper()
	for _, m := range hrefRe.FindAllStringSubmatch(rec.Body.String(), -1) {
		if href := html.UnescapeString(m[1]); strings.HasPrefix(href, prefix) {
			return href
		}
	}
	t.Fatalf("no link to %s on the page: %d\n%.500s", prefix, rec.Code, rec.Body)
	return ""
}

// formFields are the fields of rec's page's form, as a browser posts them.
func formFields(t *testing.T, rec *httptest.ResponseRecorder) url.Values {
	t.Helper()
	fields := url.Values{}
	for _, m := range formInputRe.FindAllStringSubmatch(rec.Body.String(), -1) {
		fields.Set(m[1], html.UnescapeString(m[2]))
	}
	if len(fields) == 0 {
		t.Fatalf("no form on the page: %d\n%.500s", rec.Code, rec.Body)
	}
	return fields
}

// Every page a browser is sent to under auth_prefix, given the longest rd
// that is followed (or one byte more), in each of the shapes that seal or
// escape largest, and with session.cookie_name as long as it may be: no
// answer is a 500, sets a cookie that browsers drop, or has headers that
// a front proxy set as the docs say refuses; and without JavaScript, the
// login or logout goes through, back to a page of public_url's origin
// (SPEC invariant 6): rd, or that page without its query, or the root.
func TestLoginEndpointsTakeTheLongestRedirect(t *testing.T) {
	name := strings.Repeat("c", 64) // config.go's longest session.cookie_name
	lf := newLoginFuzzOf(t, strings.Replace(testConfig, "session:\n", "session:\n  cookie_name: "+name+"\n", 1))
	const root = "https://cvat.example.com/"
	// landed checks the answer that ends a login or logout: to rd, to
	// rd without its query, or to the root; signedIn says whether it made
	// a session.
	landed := func(t *testing.T, rec *httptest.ResponseRecorder, rd string, signedIn bool) {
		t.Helper()
		want := lf.h.safeRedirect(rd)
		path, _, _ := strings.Cut(want, "?")
		loc := rec.Header().Get("Location")
		switch {
		case !signedIn && rec.Code == http.StatusOK && strings.Contains(rec.Body.String(), "<title>Signed out"):
			return // an rd that is not followed: the signed-out page
		case rec.Code != http.StatusFound && rec.Code != http.StatusSeeOther || loc != want && loc != path && loc != root:
			t.Errorf("%d to %.100q…, want a redirect to %.100q…, its path or the root\n%.300s", rec.Code, loc, want, rec.Body)
		}
		if s, _ := lf.sessionSet(rec); (s != nil) != signedIn {
			t.Errorf("session made: %v, want %v", s != nil, signedIn)
		}
	}
	// atOIDC and atSAML finish a login that loc sent the browser to the IdP with.
	atOIDC := func(t *testing.T, b *stateBrowser, loc *url.URL) *httptest.ResponseRecorder {
		return b.get("/.portcullis/oidc/company/callback?" + lf.signInAtOIDC(t, loc).RawQuery)
	}
	atSAML := func(t *testing.T, b *stateBrowser, loc *url.URL) *httptest.ResponseRecorder {
		return b.post("/.portcullis/saml/corp/acs", signInAtSAMLIdP(t, loc.String(), "alice", "alice-pw"))
	}
	// atForm signs bob in with the LDAP form that rec shows.
	atForm := func(t *testing.T, b *stateBrowser, rec *httptest.ResponseRecorder) *httptest.ResponseRecorder {
		t.Helper()
		fields := formFields(t, rec)
		fields.Set("username", ldapserver.Bob)
		fields.Set("password", ldapserver.BobPassword)
		return b.post("/.portcullis/ldap/corp-ldap", fields)
	}
	located := func(t *testing.T, rec *httptest.ResponseRecorder) *url.URL {
		t.Helper()
		loc, err := url.Parse(rec.Header().Get("Location"))
		if rec.Code != http.StatusFound && rec.Code != http.StatusSeeOther || err != nil {
			t.Fatalf("%d to %.100q…, want a redirect\n%.300s", rec.Code, rec.Header().Get("Location"), rec.Body)
		}
		return loc
	}
	flows := []struct {
		name string
		// run takes the browser from its first request, with rd, to
		// the answer that ends its login or logout.
		run      func(t *testing.T, b *stateBrowser, rd string) *httptest.ResponseRecorder
		signedIn bool
	}{
		{"the chooser, then company (OIDC)", func(t *testing.T, b *stateBrowser, rd string) *httptest.ResponseRecorder {
			start := link(t, b.get("/.portcullis/login?rd="+url.QueryEscape(rd)), "/.portcullis/login/company")
			return atOIDC(t, b, located(t, b.get(start)))
		}, true},
		{"a login at corp (SAML)", func(t *testing.T, b *stateBrowser, rd string) *httptest.ResponseRecorder {
			return atSAML(t, b, located(t, b.get("/.portcullis/login/corp?rd="+url.QueryEscape(rd))))
		}, true},
		{"a login at corp-ldap, by its form", func(t *testing.T, b *stateBrowser, rd string) *httptest.ResponseRecorder {
			form := b.get(located(t, b.get("/.portcullis/login/corp-ldap?rd="+url.QueryEscape(rd))).String())
			return atForm(t, b, form)
		}, true},
		{"the LDAP form, a wrong password first", func(t *testing.T, b *stateBrowser, rd string) *httptest.ResponseRecorder {
			fields := formFields(t, b.get("/.portcullis/ldap/corp-ldap?rd="+url.QueryEscape(rd)))
			fields.Set("username", ldapserver.Bob)
			fields.Set("password", "wrong")
			return atForm(t, b, b.post("/.portcullis/ldap/corp-ldap", fields))
		}, true},
		{"the LDAP form's other ways to sign in, then company", func(t *testing.T, b *stateBrowser, rd string) *httptest.ResponseRecorder {
			chooser := b.get(link(t, b.get("/.portcullis/ldap/corp-ldap?rd="+url.QueryEscape(rd)), "/.portcullis/login?"))
			return atOIDC(t, b, located(t, b.get(link(t, chooser, "/.portcullis/login/company"))))
		}, true},
		{"a single sign-out at company", func(t *testing.T, b *stateBrowser, rd string) *httptest.ResponseRecorder {
			b.signedIn(t, lf, "company")
			loc := located(t, b.get("/.portcullis/logout?rd="+url.QueryEscape(rd)))
			if !strings.HasPrefix(loc.String(), lf.oidc.Issuer+"/session/end?") {
				t.Errorf("the sign-out went to %.100q…, not by the IdP's end-session endpoint", loc)
			}
			return b.get("/.portcullis/logout/done?state=" + url.QueryEscape(loc.Query().Get("state")))
		}, false},
		{"a sign-out another site asked for, confirmed", func(t *testing.T, b *stateBrowser, rd string) *httptest.ResponseRecorder {
			b.signedIn(t, lf, "company")
			r := httptest.NewRequest("POST", "/.portcullis/logout", strings.NewReader(url.Values{"rd": {rd}}.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("Accept", "text/html")
			r.Header.Set("Sec-Fetch-Site", "cross-site")
			question := b.do(request("GET", located(t, b.do(r)).String(), nil, "Accept", "text/html"))
			loc := located(t, b.post("/.portcullis/logout", formFields(t, question)))
			if !strings.HasPrefix(loc.String(), lf.oidc.Issuer+"/session/end?") {
				t.Errorf("the sign-out went to %.100q…, not by the IdP's end-session endpoint", loc)
			}
			return b.get("/.portcullis/logout/done?state=" + url.QueryEscape(loc.Query().Get("state")))
		}, false},
	}
	for _, f := range flows {
		for _, p := range longRedirects {
			t.Run(f.name+"/"+p.name, func(t *testing.T) {
				b := newStateBrowser(t, lf.h)
				b.answered = func(rec *httptest.ResponseRecorder) { lf.checkLongAnswer(t, rec) }
				landed(t, f.run(t, b, p.rd), p.rd, f.signedIn)
			})
		}
	}
}
