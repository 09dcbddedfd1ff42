package proxy

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/ldapserver"
)

// The IdP's answer loaded again by a signed-in browser (the back button, a
// reload: its login cookie is spent) goes on to public_url's root. One that
// comes with a login cookie the proxy refuses (a forged one, or a spent
// one sent again: no browser does either) is no such thing, and stays the
// failure it is, with its warning in the audit log.
func TestLoginAnswerAgainInASignedInBrowser(t *testing.T) {
	lf := newLoginFuzz(t)
	var log bytes.Buffer
	lf.h.log = slog.New(slog.NewJSONHandler(&log, nil))
	warned := func() bool { return strings.Contains(log.String(), `"level":"WARN","msg":"login_failed"`) }

	t.Run("the back button into the callback goes to the root", func(t *testing.T) {
		b := newStateBrowser(t, lf.h)
		loc := b.started(t, "company")
		answer := "/.portcullis/oidc/company/callback?" + lf.signInAtOIDC(t, loc).RawQuery
		if rec := b.get(answer); rec.Code != http.StatusFound {
			t.Fatalf("login: %d\n%s", rec.Code, rec.Body)
		}
		log.Reset()
		rec := b.get(answer)
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "https://cvat.example.com/" || warned() {
			t.Errorf("the answer again: %d to %q, want 303 to the root and no warning\n%s", rec.Code, rec.Header().Get("Location"), log.String())
		}
	})

	for _, tc := range []struct {
		name   string
		cookie func(spent *http.Cookie) *http.Cookie
	}{
		{"a spent login cookie sent again is refused", func(spent *http.Cookie) *http.Cookie { return spent }},
		{"a login cookie that does not open is refused", func(spent *http.Cookie) *http.Cookie {
			return &http.Cookie{Name: spent.Name, Value: strings.ToUpper(spent.Value)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newStateBrowser(t, lf.h)
			loc := b.started(t, "company")
			cookies := b.jar.Cookies(b.at)
			var flow *http.Cookie
			for _, c := range cookies {
				if strings.Contains(c.Name, "_login_"+loc.Query().Get("state")[:8]) {
					flow = c
				}
			}
			if flow == nil {
				t.Fatal("no login cookie for the login's state")
			}
			answer := "/.portcullis/oidc/company/callback?" + lf.signInAtOIDC(t, loc).RawQuery
			if rec := b.get(answer); rec.Code != http.StatusFound {
				t.Fatalf("login: %d\n%s", rec.Code, rec.Body)
			}
			log.Reset()
			r := httptest.NewRequest("GET", answer, nil)
			r.AddCookie(tc.cookie(flow))
			rec := b.do(r)
			if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "sign_in_failed") || !warned() {
				t.Errorf("the answer again with that cookie: %d to %q, want 400 sign_in_failed and an audit warning\n%s\n%s",
					rec.Code, rec.Header().Get("Location"), rec.Body, log.String())
			}
		})
	}

	// The ACS loaded with GET is SAML's alone: at another protocol's entry
	// it is no login answer, signed in or not.
	t.Run("the ACS path of an OIDC entry is no sign-in", func(t *testing.T) {
		for _, b := range []*stateBrowser{newStateBrowser(t, lf.h), signedInBrowser(t, lf, "company")} {
			if rec := b.get("/.portcullis/saml/company/acs"); rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "no such sign-in method") {
				t.Errorf("GET of company's ACS: %d to %q, want 404 Unknown sign-in\n%s", rec.Code, rec.Header().Get("Location"), rec.Body)
			}
		}
	})

	// Signed in at one IdP, a bookmark of another's LDAP form is a user who
	// wants to sign in there: the form, not the page it leads to.
	t.Run("the LDAP form for a browser signed in at another IdP", func(t *testing.T) {
		b := signedInBrowser(t, lf, "company")
		if rec := b.get("/.portcullis/ldap/corp-ldap?rd=/tasks"); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `name="password"`) {
			t.Errorf("the LDAP form signed in at company: %d to %q, want the form\n%s", rec.Code, rec.Header().Get("Location"), rec.Body)
		}
	})

	// A session of an IdP a reload removed has ended (loadSession): the
	// answer loaded again is the failure it is, not a way to the root.
	t.Run("a session of an IdP this configuration no longer has is no sign-in", func(t *testing.T) {
		b := newStateBrowser(t, lf.h)
		rec := httptest.NewRecorder()
		gone := session.New(idp.Profile{IdP: "retired", Sub: "alice", Email: "alice@example.com"}, idp.Tokens{}, lf.h.cookies)
		if err := lf.h.sessions.Save(rec, httptest.NewRequest("GET", "/", nil), gone); err != nil {
			t.Fatal(err)
		}
		b.jar.SetCookies(b.at, rec.Result().Cookies())
		if rec := b.get("/.portcullis/oidc/company/callback?code=spent&state=" + lf.spent["{oidc-spent}"]); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "sign_in_failed") {
			t.Errorf("the answer again with a retired IdP's session: %d to %q, want 400 Sign-in failed\n%s", rec.Code, rec.Header().Get("Location"), rec.Body)
		}
	})
}

// signedInBrowser is a browser signed in at IdP id for real.
func signedInBrowser(t *testing.T, lf *loginFuzz, id string) *stateBrowser {
	t.Helper()
	b := newStateBrowser(t, lf.h)
	b.signedIn(t, lf, id)
	return b
}

// The LDAP form posted again (a reload after a wrong password: its state is
// spent) by a browser whose other cookies of ours came back says that the
// form expired, and no more: the cookie of this browser did come back, so
// the message about cookies that may not come back is for a browser that
// sent none.
func TestLDAPFormPostedAgainSaysItExpired(t *testing.T) {
	lf := newLoginFuzz(t)
	b := newStateBrowser(t, lf.h)
	form := b.get("/.portcullis/ldap/corp-ldap?rd=/tasks")
	m := regexp.MustCompile(`name="state" value="([^"]+)"`).FindStringSubmatch(form.Body.String())
	if form.Code != http.StatusOK || m == nil {
		t.Fatalf("form: %d\n%s", form.Code, form.Body)
	}
	post := url.Values{"username": {ldapserver.Alice}, "password": {"wrong"}, "state": {m[1]}}
	if rec := b.post("/.portcullis/ldap/corp-ldap", post); rec.Code == http.StatusSeeOther {
		t.Fatalf("a wrong password signed in: %d to %q", rec.Code, rec.Header().Get("Location"))
	}
	rec := b.post("/.portcullis/ldap/corp-ldap", post)
	if body := rec.Body.String(); rec.Code != http.StatusBadRequest || !strings.Contains(body, "This sign-in form has expired. Enter your password again.") ||
		strings.Contains(body, "did not send back") {
		t.Errorf("the form posted again: %d, want 400 saying only that it expired\n%s", rec.Code, body)
	}
}
