package proxy

import (
	"fmt"
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
// checks, and headers that a front proxy set as docs/troubleshooting.md
// says passes on.
func (lf *loginFuzz) checkLongAnswer(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	lf.checkLoginAnswer(t, rec)
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

// The longest fields a browser, or an IdP, brings to the proxy's own
// endpoints, and longer: an LDAP form's username and password (the form
// takes 256 and 1024 characters, a client any), an IdP's answer whose
// state, code, error or RelayState is kilobytes long, and a page whose
// address is longer than rd may be. No answer is a 500, sets a cookie that
// browsers drop or has headers a front proxy set as the docs say refuses;
// and a login started before still goes through.
func TestLoginEndpointsTakeLongFields(t *testing.T) {
	lf := newLoginFuzzOf(t, strings.Replace(testConfig, "session:\n", "session:\n  cookie_name: "+strings.Repeat("c", 64)+"\n", 1))
	long := func(n int) string { return padTo("", "x&/%", n) }
	fields := []struct {
		name string
		// send sends the field with b, whose login at company (OIDC),
		// corp (SAML) or corp-ldap's form is under way: loc is where its
		// start sent it, form the form.
		send func(t *testing.T, b *stateBrowser, loc *url.URL, form url.Values) *httptest.ResponseRecorder
	}{
		{"a username of 1 KB at the LDAP form", func(t *testing.T, b *stateBrowser, _ *url.URL, form url.Values) *httptest.ResponseRecorder {
			form.Set("username", long(1<<10))
			form.Set("password", ldapserver.BobPassword)
			return b.post("/.portcullis/ldap/corp-ldap", form)
		}},
		{"a username of 10 KB at the LDAP form", func(t *testing.T, b *stateBrowser, _ *url.URL, form url.Values) *httptest.ResponseRecorder {
			form.Set("username", strings.Repeat("x", 10<<10))
			form.Set("password", ldapserver.BobPassword)
			return b.post("/.portcullis/ldap/corp-ldap", form)
		}},
		{"bob's name and 1 KB of spaces at the LDAP form", func(t *testing.T, b *stateBrowser, _ *url.URL, form url.Values) *httptest.ResponseRecorder {
			form.Set("username", ldapserver.Bob+strings.Repeat(" ", 1<<10))
			form.Set("password", "wrong")
			return b.post("/.portcullis/ldap/corp-ldap", form)
		}},
		{"a password of 1 KB at the LDAP form", func(t *testing.T, b *stateBrowser, _ *url.URL, form url.Values) *httptest.ResponseRecorder {
			form.Set("username", ldapserver.Bob)
			form.Set("password", long(1<<10))
			return b.post("/.portcullis/ldap/corp-ldap", form)
		}},
		{"a password of 10 KB at the LDAP form", func(t *testing.T, b *stateBrowser, _ *url.URL, form url.Values) *httptest.ResponseRecorder {
			form.Set("username", ldapserver.Bob)
			form.Set("password", strings.Repeat("x", 10<<10))
			return b.post("/.portcullis/ldap/corp-ldap", form)
		}},
		{"a state of 4 KB at the OIDC callback", func(t *testing.T, b *stateBrowser, _ *url.URL, _ url.Values) *httptest.ResponseRecorder {
			return b.get("/.portcullis/oidc/company/callback?" + url.Values{"code": {"abc"}, "state": {long(4 << 10)}}.Encode())
		}},
		{"a code of 4 KB at the OIDC callback", func(t *testing.T, b *stateBrowser, loc *url.URL, _ url.Values) *httptest.ResponseRecorder {
			return b.get("/.portcullis/oidc/company/callback?" + url.Values{"code": {long(4 << 10)}, "state": {loc.Query().Get("state")}, "iss": {lf.oidc.Issuer}}.Encode())
		}},
		{"an error of 4 KB at the OIDC callback", func(t *testing.T, b *stateBrowser, loc *url.URL, _ url.Values) *httptest.ResponseRecorder {
			return b.get("/.portcullis/oidc/company/callback?" + url.Values{"error": {long(4 << 10)}, "state": {loc.Query().Get("state")}, "iss": {lf.oidc.Issuer}}.Encode())
		}},
		{"an error_description of 4 KB at the OIDC callback", func(t *testing.T, b *stateBrowser, loc *url.URL, _ url.Values) *httptest.ResponseRecorder {
			return b.get("/.portcullis/oidc/company/callback?" + url.Values{"error": {"access_denied"}, "error_description": {long(4 << 10)},
				"state": {loc.Query().Get("state")}, "iss": {lf.oidc.Issuer}}.Encode())
		}},
		{"a RelayState of 4 KB at the ACS", func(t *testing.T, b *stateBrowser, _ *url.URL, _ url.Values) *httptest.ResponseRecorder {
			answer := url.Values{"SAMLResponse": {lf.spent["{saml-response}"]}, "RelayState": {long(4 << 10)}}
			return b.post("/.portcullis/saml/corp/acs", answer)
		}},
		{"a RelayState of 4 KB at the SLO endpoint", func(t *testing.T, b *stateBrowser, _ *url.URL, _ url.Values) *httptest.ResponseRecorder {
			return b.get("/.portcullis/saml/corp/slo?" + url.Values{"SAMLResponse": {"PHNhbWxwOkxvZ291dFJlc3BvbnNlLz4="}, "RelayState": {long(4 << 10)}}.Encode())
		}},
		{"a page of 40 KB navigated to without a session", func(t *testing.T, b *stateBrowser, _ *url.URL, _ url.Values) *httptest.ResponseRecorder {
			return b.do(request("GET", "/tasks?"+strings.Repeat("a&", 20<<10), nil, "Accept", "text/html"))
		}},
		{"an rd of 40 KB at the chooser", func(t *testing.T, b *stateBrowser, _ *url.URL, _ url.Values) *httptest.ResponseRecorder {
			return b.get("/.portcullis/login?rd=" + url.QueryEscape("/tasks?"+strings.Repeat("a&", 20<<10)))
		}},
	}
	for _, f := range fields {
		t.Run(f.name, func(t *testing.T) {
			b := newStateBrowser(t, lf.h)
			b.answered = func(rec *httptest.ResponseRecorder) { lf.checkLongAnswer(t, rec) }
			atCompany, atCorp := b.started(t, "company"), b.started(t, "corp")
			form := formFields(t, b.get("/.portcullis/ldap/corp-ldap?rd=/tasks"))
			rec := f.send(t, b, atCompany, form)
			if s, _ := lf.sessionSet(rec); s != nil {
				t.Errorf("signed in by %s", f.name)
			}
			// The logins under way still go through, but for the one
			// whose state the field was sent with.
			if !strings.Contains(f.name, "OIDC callback") || strings.Contains(f.name, "state") {
				rec = b.get("/.portcullis/oidc/company/callback?" + lf.signInAtOIDC(t, atCompany).RawQuery)
				if s, _ := lf.sessionSet(rec); rec.Code != http.StatusFound || s == nil {
					t.Errorf("the login at company after it: %d, session %v", rec.Code, s != nil)
				}
			}
			rec = b.post("/.portcullis/saml/corp/acs", signInAtSAMLIdP(t, atCorp.String(), "alice", "alice-pw"))
			if s, _ := lf.sessionSet(rec); rec.Code != http.StatusFound || s == nil {
				t.Errorf("the login at corp after it: %d, session %v", rec.Code, s != nil)
			}
		})
	}
}

// The pages that pass rd on to a login without one at hand: GET /login
// with one IdP, or lowest_weight's, and the email form's post, with an rd
// longer than safeRedirect follows, as a form may post it or a page's
// address be. Escaped, it made a Location of up to three times its size,
// more than a front proxy, or the proxy's own listener (64 KB), takes in
// the next request; past maxRedirect it leads to the root all the same.
func TestLoginSelectionCarriesNoOverlongRD(t *testing.T) {
	lowest := strings.Replace(testConfig, "sso:\n", "sso:\n  selection_mode: lowest_weight\n", 1)
	rds := []string{padTo("/tasks?", "a&", maxRedirect), padTo("/tasks?q=", "e", 15<<10), padTo("/tasks?", "a&", 40<<10)}
	for _, tc := range []struct{ name, config, method string }{
		{"GET /login with one IdP", testConfig, "GET"},
		{"GET /login in lowest_weight", lowest, "GET"},
		{"the email form posted with one IdP", emailModeConfig, "POST"},
		{"the email form posted", emailModeTwoConfig, "POST"},
	} {
		h := newTestHandler(t, strings.Replace(tc.config, "UPSTREAM", "http://127.0.0.1:1", 1))
		for _, rd := range rds {
			t.Run(fmt.Sprintf("%s, an rd of %d bytes", tc.name, len(rd)), func(t *testing.T) {
				r := request("GET", "/.portcullis/login?rd="+url.QueryEscape(rd), nil)
				if tc.method == "POST" {
					r = httptest.NewRequest("POST", "/.portcullis/login", strings.NewReader(url.Values{"email": {"eve@sso.example"}, "rd": {rd}}.Encode()))
					r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				loc := rec.Header().Get("Location")
				if rec.Code/100 == 5 || len(loc) > maxLocation {
					t.Errorf("%d to a Location of %d bytes, want no more than %d", rec.Code, len(loc), maxLocation)
				}
				if want := url.QueryEscape(rd); len(rd) <= maxRedirect && !strings.HasSuffix(loc, "?rd="+want) {
					t.Errorf("%d to %.100q…, want rd carried on", rec.Code, loc)
				}
			})
		}
	}
}
