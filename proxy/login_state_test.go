package proxy

import (
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// stateBrowser is one browser at the login fixture's public URL: it sends
// the cookies the proxy's answers set, and forgets those they expire, so
// that a login state an answer spent is gone as it is from a browser.
type stateBrowser struct {
	h   *Handler
	jar *cookiejar.Jar
	at  *url.URL
	// answered, if set, checks each answer the browser gets.
	answered func(*httptest.ResponseRecorder)
}

func newStateBrowser(t testing.TB, h *Handler) *stateBrowser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &stateBrowser{h: h, jar: jar, at: &url.URL{Scheme: h.publicURL.Scheme, Host: h.publicURL.Host, Path: "/"}}
}

// do sends r with the browser's cookies and keeps what its answer sets.
func (b *stateBrowser) do(r *http.Request) *httptest.ResponseRecorder {
	for _, c := range b.jar.Cookies(b.at) {
		r.AddCookie(c)
	}
	r.RemoteAddr = "203.0.113.7:40000"
	rec := httptest.NewRecorder()
	b.h.ServeHTTP(rec, r)
	var kept []*http.Cookie
	for _, c := range rec.Result().Cookies() {
		// A browser drops a cookie whose name and value come to more
		// than 4096 bytes, without a word (RFC 6265bis 5.6).
		if len(c.Name)+len(c.Value) <= 4096 {
			kept = append(kept, c)
		}
	}
	b.jar.SetCookies(b.at, kept)
	if b.answered != nil {
		b.answered(rec)
	}
	return rec
}

func (b *stateBrowser) get(target string) *httptest.ResponseRecorder {
	return b.do(httptest.NewRequest("GET", target, nil))
}

func (b *stateBrowser) post(target string, form url.Values) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", target, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(r)
}

// started starts a login at IdP id and returns where it sends the browser.
func (b *stateBrowser) started(t *testing.T, id string) *url.URL {
	t.Helper()
	return b.startedFor(t, id, "/tasks")
}

// startedFor starts a login at IdP id that is to go back to rd.
func (b *stateBrowser) startedFor(t *testing.T, id, rd string) *url.URL {
	t.Helper()
	rec := b.get("/.portcullis/login/" + id + "?rd=" + url.QueryEscape(rd))
	loc, err := url.Parse(rec.Header().Get("Location"))
	if rec.Code != http.StatusFound || err != nil {
		t.Fatalf("login at %s: %d to %q\n%s", id, rec.Code, rec.Header().Get("Location"), rec.Body)
	}
	return loc
}

// signedIn signs the browser in at IdP id (company or corp) for real.
func (b *stateBrowser) signedIn(t *testing.T, lf *loginFuzz, id string) {
	t.Helper()
	loc := b.started(t, id)
	var rec *httptest.ResponseRecorder
	if id == "corp" {
		rec = b.post("/.portcullis/saml/corp/acs", signInAtSAMLIdP(t, loc.String(), "alice", "alice-pw"))
	} else {
		rec = b.get("/.portcullis/oidc/company/callback?" + lf.signInAtOIDC(t, loc).RawQuery)
	}
	if s, _ := lf.sessionSet(rec); rec.Code != http.StatusFound || s == nil {
		t.Fatalf("a real login at %s: %d, session %v\n%s", id, rec.Code, s, rec.Body)
	}
}

// flowCookies are the login-state cookies rec sets (not those it expires).
func flowCookies(rec *httptest.ResponseRecorder) []*http.Cookie {
	var set []*http.Cookie
	for _, c := range rec.Result().Cookies() {
		if strings.Contains(c.Name, "_login_") && c.MaxAge > 0 {
			set = append(set, c)
		}
	}
	return set
}

// A login's state is an answer to that login only, and a logout's to that
// logout (SPEC invariant 7): shown to the other's endpoint it is refused
// and left alone, so the step it was made for still finishes.
func TestLoginStateIsAnAnswerOnlyToItsOwnStep(t *testing.T) {
	lf := newLoginFuzz(t)

	t.Run("a login's state at /logout/done is no logout, and the login still finishes", func(t *testing.T) {
		b := newStateBrowser(t, lf.h)
		loc := b.started(t, "company")
		rec := b.get("/.portcullis/logout/done?state=" + loc.Query().Get("state"))
		if rec.Code != http.StatusOK || rec.Header().Get("Location") != "" {
			t.Errorf("/logout/done with a login's state: %d to %q, want the signed-out page", rec.Code, rec.Header().Get("Location"))
		}
		rec = b.get("/.portcullis/oidc/company/callback?" + lf.signInAtOIDC(t, loc).RawQuery)
		if s, _ := lf.sessionSet(rec); rec.Code != http.StatusFound || s == nil {
			t.Errorf("the login after /logout/done saw its state: %d, session %v, want signed in\n%s", rec.Code, s, rec.Body)
		}
	})

	t.Run("a SAML login's state at the SLO endpoint is no logout, and the login still finishes", func(t *testing.T) {
		b := newStateBrowser(t, lf.h)
		loc := b.started(t, "corp")
		junk := url.Values{"SAMLResponse": {"PHNhbWxwOkxvZ291dFJlc3BvbnNlLz4="}, "RelayState": {loc.Query().Get("RelayState")}}
		if rec := b.get("/.portcullis/saml/corp/slo?" + junk.Encode()); rec.Code != http.StatusBadRequest {
			t.Errorf("the SLO endpoint with a login's RelayState: %d, want 400", rec.Code)
		}
		rec := b.post("/.portcullis/saml/corp/acs", signInAtSAMLIdP(t, loc.String(), "alice", "alice-pw"))
		if s, _ := lf.sessionSet(rec); rec.Code != http.StatusFound || s == nil {
			t.Errorf("the login after the SLO endpoint saw its state: %d, session %v, want signed in\n%s", rec.Code, s, rec.Body)
		}
	})

	t.Run("a logout's state at the callback is no login, and the logout still finishes", func(t *testing.T) {
		b := newStateBrowser(t, lf.h)
		b.signedIn(t, lf, "company")
		rec := b.get("/.portcullis/logout?rd=/bye")
		loc, _ := url.Parse(rec.Header().Get("Location"))
		if rec.Code != http.StatusFound || !strings.HasPrefix(loc.String(), lf.oidc.Issuer+"/session/end?") {
			t.Fatalf("logout: %d to %q, want the IdP's end-session endpoint", rec.Code, loc)
		}
		state := loc.Query().Get("state")
		exchanges := lf.oidc.TokenRequests(t)
		rec = b.get("/.portcullis/oidc/company/callback?" + url.Values{"code": {"abc"}, "state": {state}, "iss": {lf.oidc.Issuer}}.Encode())
		if s, _ := lf.sessionSet(rec); rec.Code != http.StatusBadRequest || s != nil {
			t.Errorf("the callback with a logout's state: %d, session %v, want 400\n%s", rec.Code, s, rec.Body)
		}
		if n := lf.oidc.TokenRequests(t) - exchanges; n != 0 {
			t.Errorf("the callback with a logout's state sent its code to the IdP's token endpoint (%d requests): it was taken for a login", n)
		}
		rec = b.get("/.portcullis/logout/done?state=" + state)
		if loc := rec.Header().Get("Location"); rec.Code != http.StatusFound || !strings.HasSuffix(loc, "/bye") {
			t.Errorf("/logout/done after the callback saw its state: %d to %q, want on to /bye", rec.Code, loc)
		}
	})
}

// Only a SAML IdP answers with a cross-site POST (the HTTP-POST binding at
// the ACS, and at the SLO endpoint), for which browsers send only
// SameSite=None cookies; every other login state is Lax, which another
// site's subresources (an <img> starting logins) neither set nor send.
func TestLoginStateCookiesAreSameSiteNoneOnlyForSAML(t *testing.T) {
	lf := newLoginFuzz(t)
	check := func(t *testing.T, what string, rec *httptest.ResponseRecorder, want http.SameSite) {
		t.Helper()
		set := flowCookies(rec)
		if len(set) != 1 || set[0].SameSite != want || !set[0].Secure || !set[0].HttpOnly {
			t.Errorf("%s sets login-state cookies %q, want one, HttpOnly, Secure, SameSite %v", what, rec.Header().Values("Set-Cookie"), want)
		}
	}
	b := newStateBrowser(t, lf.h)
	for _, tc := range []struct {
		what, target string
		want         http.SameSite
	}{
		{"an OIDC login", "/.portcullis/login/company", http.SameSiteLaxMode},
		{"a SAML login", "/.portcullis/login/corp", http.SameSiteNoneMode},
		{"the LDAP form", "/.portcullis/ldap/corp-ldap", http.SameSiteLaxMode},
	} {
		check(t, tc.what, b.get(tc.target), tc.want)
	}
	for _, tc := range []struct {
		id   string
		want http.SameSite
	}{{"company", http.SameSiteLaxMode}, {"corp", http.SameSiteNoneMode}} {
		b := newStateBrowser(t, lf.h)
		b.signedIn(t, lf, tc.id)
		rec := b.get("/.portcullis/logout")
		if rec.Code != http.StatusFound {
			t.Fatalf("logout from %s: %d, want a redirect to the IdP", tc.id, rec.Code)
		}
		check(t, "a single sign-out at "+tc.id, rec, tc.want)
	}
}

// Another site's page can make a browser load any URL (<img src=...>, a
// frame, a script's fetch); were a login started each time, a handful of
// them would expire the browser's real login in progress (session.Flows
// keeps 8). Browsers say what a request is for (Sec-Fetch-*): a login
// starts only in a top-level navigation when another site caused it, and
// as before for browsers that do not say.
func TestLoginStartsFromAnotherSiteOnlyInATopLevelNavigation(t *testing.T) {
	lf := newLoginFuzz(t)
	fetch := func(site, mode, dest string) []string {
		return []string{"Sec-Fetch-Site", site, "Sec-Fetch-Mode", mode, "Sec-Fetch-Dest", dest}
	}
	for _, tc := range []struct {
		name    string
		headers []string
		starts  bool
	}{
		{"another site's <img>", fetch("cross-site", "no-cors", "image"), false},
		{"another site's frame", fetch("cross-site", "navigate", "iframe"), false},
		{"another site's script", fetch("cross-site", "cors", "empty"), false},
		{"a sibling subdomain's <img>", fetch("same-site", "no-cors", "image"), false},
		{"a link on another site", fetch("cross-site", "navigate", "document"), true},
		{"a bookmark", fetch("none", "navigate", "document"), true},
		{"a frame of the application's own", fetch("same-origin", "navigate", "iframe"), true},
		{"a client that sends no Sec-Fetch headers (curl, older browsers)", nil, true},
		{"a client that says where it comes from but not what for", []string{"Sec-Fetch-Site", "cross-site"}, true},
	} {
		for _, target := range []string{"/.portcullis/login/company", "/.portcullis/login/corp", "/.portcullis/ldap/corp-ldap"} {
			t.Run(tc.name+" at "+target, func(t *testing.T) {
				rec := httptest.NewRecorder()
				lf.h.ServeHTTP(rec, request("GET", target, nil, append([]string{"Accept", "text/html"}, tc.headers...)...))
				started := len(flowCookies(rec)) > 0
				switch {
				case tc.starts && !started:
					t.Errorf("no login started: %d\n%s", rec.Code, rec.Body)
				case !tc.starts && (started || rec.Code != http.StatusForbidden):
					t.Errorf("%d, login-state cookies %q; want 403 and none", rec.Code, rec.Header().Values("Set-Cookie"))
				}
			})
		}
	}
	// Only the form's own page posts it, from the proxy's origin: another
	// site's form can hold no state of this browser's, so it checks no
	// password. Answered with a fresh form, it would start a login there
	// and show this origin's form with the username it chose, and log a
	// missing cookie with a hint that blames the set-up.
	for _, site := range []string{"cross-site", "same-site"} {
		t.Run("a "+site+" form posting the LDAP form", func(t *testing.T) {
			r := httptest.NewRequest("POST", "/.portcullis/ldap/corp-ldap", strings.NewReader("username=mallory&password=x&state=abcdefghijklmnopqrstuv"))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("Accept", "text/html")
			r.Header.Set("Sec-Fetch-Site", site)
			r.Header.Set("Sec-Fetch-Mode", "navigate")
			r.Header.Set("Sec-Fetch-Dest", "document")
			rec := httptest.NewRecorder()
			lf.h.ServeHTTP(rec, r)
			if set := flowCookies(rec); len(set) > 0 || rec.Code != http.StatusForbidden || strings.Contains(rec.Body.String(), "mallory") {
				t.Errorf("%d, login-state cookies %q; want 403 and none, and no username shown\n%s", rec.Code, rec.Header().Values("Set-Cookie"), rec.Body)
			}
		})
	}
	t.Run("another site's script posting the LDAP form", func(t *testing.T) {
		r := httptest.NewRequest("POST", "/.portcullis/ldap/corp-ldap", strings.NewReader("username=alice&password=x&state=abcdefghijklmnopqrstuv"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Sec-Fetch-Site", "cross-site")
		r.Header.Set("Sec-Fetch-Mode", "no-cors")
		r.Header.Set("Sec-Fetch-Dest", "empty")
		rec := httptest.NewRecorder()
		lf.h.ServeHTTP(rec, r)
		if set := flowCookies(rec); len(set) > 0 || rec.Code != http.StatusForbidden {
			t.Errorf("%d, login-state cookies %q; want 403 and none", rec.Code, rec.Header().Values("Set-Cookie"))
		}
	})
}

// A login's state is an answer only at the callback of the IdP it was
// started at (SPEC invariant 7), whether or not that IdP checks it too: the
// state of a login at partner, brought to company's callback, is refused
// there even though company signs in anyone (a mix-up attack).
func TestLoginStateIsAnAnswerOnlyAtItsOwnIdP(t *testing.T) {
	partner := "sso:\n  identity_providers:\n    - id: partner\n      protocol: OIDC\n      server_url: http://127.0.0.1:2/\n      client_id: portcullis\n"
	f := newFixtureOf(t, strings.Replace(testConfig, "sso:\n  identity_providers:\n", partner, 1))
	atPartner, atCompany := &signingIn{}, &signingIn{}
	f.h.providers["partner"].impl = atPartner
	f.h.providers["company"].impl = atCompany
	b := newStateBrowser(t, f.h)
	b.started(t, "partner")
	rec := b.get("/.portcullis/oidc/company/callback?code=c&state=" + atPartner.state)
	if rec.Code != http.StatusBadRequest {
		t.Errorf("partner's login state at company's callback: %d, want 400\n%s", rec.Code, rec.Body)
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name == f.h.cookies.Name() && c.MaxAge >= 0 {
			t.Errorf("partner's login state at company's callback set a session")
		}
	}
}

// An IdP answers only at its own protocol's endpoint: a login at an OIDC
// IdP is no answer at a SAML ACS of the same id, nor a SAML login at an
// OIDC callback (which would check its assertion outside the check slots,
// samlchecks.go). Such a request is 404 and leaves the login state alone,
// so that the login still finishes where it belongs.
func TestLoginIsFinishedOnlyAtItsProtocolsEndpoint(t *testing.T) {
	lf := newLoginFuzz(t)

	t.Run("an OIDC login's answer posted to a SAML ACS", func(t *testing.T) {
		b := newStateBrowser(t, lf.h)
		loc := b.started(t, "company")
		answer := lf.signInAtOIDC(t, loc)
		rec := b.post("/.portcullis/saml/company/acs?"+answer.RawQuery, url.Values{"RelayState": {answer.Query().Get("state")}})
		if rec.Code != http.StatusNotFound {
			t.Errorf("the ACS of an OIDC IdP: %d, want 404\n%s", rec.Code, rec.Body)
		}
		rec = b.get("/.portcullis/oidc/company/callback?" + answer.RawQuery)
		if s, _ := lf.sessionSet(rec); rec.Code != http.StatusFound || s == nil {
			t.Errorf("the callback after the ACS saw its state: %d, session %v, want signed in\n%s", rec.Code, s, rec.Body)
		}
	})

	t.Run("a SAML login's state at an OIDC callback", func(t *testing.T) {
		b := newStateBrowser(t, lf.h)
		loc := b.started(t, "corp")
		rec := b.get("/.portcullis/oidc/corp/callback?state=" + url.QueryEscape(loc.Query().Get("RelayState")))
		if rec.Code != http.StatusNotFound {
			t.Errorf("the OIDC callback of a SAML IdP: %d, want 404\n%s", rec.Code, rec.Body)
		}
		rec = b.post("/.portcullis/saml/corp/acs", signInAtSAMLIdP(t, loc.String(), "alice", "alice-pw"))
		if s, _ := lf.sessionSet(rec); rec.Code != http.StatusFound || s == nil {
			t.Errorf("the ACS after the callback saw its state: %d, session %v, want signed in\n%s", rec.Code, s, rec.Body)
		}
	})
}
