package proxy

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
}
