package proxy

import (
	"encoding/base64"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// redisFailsDuring is the SAML provider, with Redis stopped at a chosen
// point of the IdP's answer: before the provider checks it (and records its
// assertion as used), or after, before the session is saved.
type redisFailsDuring struct {
	idp.Provider
	real        idp.Redirector
	stop        func()
	afterVerify bool
}

func (p redisFailsDuring) LoginURL(f *idp.Flow) (string, error) { return p.real.LoginURL(f) }

func (p redisFailsDuring) Complete(r *http.Request, f *idp.Flow) (*idp.Profile, *idp.Tokens, error) {
	if !p.afterVerify {
		p.stop()
	}
	prof, tokens, err := p.real.Complete(r, f)
	if p.afterVerify {
		p.stop()
	}
	return prof, tokens, err
}

var formInputRe = regexp.MustCompile(`<input[^>]*\bname="([^"]+)"[^>]*\bvalue="([^"]*)"`)

// With session.store redis, a login whose answer checked out at the IdP but
// that Redis failed to record is a 503 to try again, never a refusal that
// reads like an authentication failure (403 "could not be completed", 400
// "expired"), which sends users and their helpdesk after the wrong cause.
func TestLoginsAnswer503WhenRedisFailsMidway(t *testing.T) {
	for _, tc := range []struct {
		name        string
		afterVerify bool
	}{
		{"Redis stops after the login state is spent, before the assertion is recorded", false},
		{"Redis stops after the assertion is recorded, before the session is saved", true},
	} {
		t.Run("SAML: "+tc.name, func(t *testing.T) {
			srv := redisserver.Start(t)
			idpSrv := samlserver.Start(t, samlserver.Options{Users: []samlserver.User{{
				Name: "alice", Password: "alice-pw", Email: "alice@example.com",
			}}})
			y := storeInRedis(minimal, srv.URL)
			y += "    - id: corp\n      protocol: SAML\n      entity_id: " + idpSrv.EntityID() +
				"\n      x509_cert: " + base64.StdEncoding.EncodeToString(idpSrv.Certificate.Raw) +
				"\n      sso_url: " + idpSrv.SSOURL() + "\n"
			h := newTestHandler(t, y)
			p := h.providers["corp"]
			md, ok := p.implAsMetadata()
			if !ok {
				t.Fatal("the SAML provider publishes no metadata")
			}
			metadata, err := md.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			if err := idpSrv.AddServiceProviderXML(metadata); err != nil {
				t.Fatal(err)
			}

			// The login starts at the proxy, which sets the flow cookie,
			// and the browser signs in at the IdP.
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/.portcullis/login/corp?rd=/", nil))
			if rec.Code != http.StatusFound {
				t.Fatalf("start login: %d %s", rec.Code, rec.Body)
			}
			flowCookies := rec.Result().Cookies()
			acs := signInAtSAMLIdP(t, rec.Header().Get("Location"), "alice", "alice-pw")

			real, _ := p.implAsRedirector()
			p.impl = redisFailsDuring{Provider: p.impl, real: real, stop: srv.Stop, afterVerify: tc.afterVerify}
			r := httptest.NewRequest("POST", "/.portcullis/saml/corp/acs", strings.NewReader(acs.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			for _, c := range flowCookies {
				r.AddCookie(c)
			}
			rec = httptest.NewRecorder()
			start := time.Now()
			h.ServeHTTP(rec, r)
			if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "Try again in a moment") {
				t.Errorf("ACS with Redis stopped: %d, want 503 saying to try again", rec.Code)
			}
			t.Logf("ACS answered %d in %s with Redis stopped", rec.Code, time.Since(start).Round(time.Millisecond))
		})
	}

	t.Run("LDAP: Redis stops between the form and its post", func(t *testing.T) {
		srv := redisserver.Start(t)
		h := newTestHandler(t, storeInRedis(withLDAP, srv.URL))
		form := openLDAPForm(t, h)
		srv.Stop()
		rec := postLDAPForm(t, h, form, "alice", "alice-pw")
		if body := rec.Body.String(); rec.Code != http.StatusServiceUnavailable || strings.Contains(body, "expired") {
			t.Errorf("form posted with Redis stopped: %d, want 503 (not a form that has \"expired\")", rec.Code)
		}
	})
}

// signInAtSAMLIdP follows loginURL to the IdP, signs in as user, and returns
// the form the IdP's answer page posts to the ACS.
func signInAtSAMLIdP(t testing.TB, loginURL, user, password string) url.Values {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	page := func(resp *http.Response, err error) (string, map[string]string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("IdP %s: %d %s", resp.Request.URL, resp.StatusCode, body)
		}
		fields := map[string]string{}
		for _, m := range formInputRe.FindAllStringSubmatch(string(body), -1) {
			fields[m[1]] = html.UnescapeString(m[2])
		}
		return resp.Request.URL.String(), fields
	}
	at, fields := page(browser.Get(loginURL))
	// The IdP's login form posts back to the page it is on.
	_, fields = page(browser.PostForm(at, url.Values{
		"user": {user}, "password": {password},
		"SAMLRequest": {fields["SAMLRequest"]}, "RelayState": {fields["RelayState"]},
	}))
	if fields["SAMLResponse"] == "" {
		t.Fatal("the IdP did not answer with a SAMLResponse")
	}
	return url.Values{"SAMLResponse": {fields["SAMLResponse"]}, "RelayState": {fields["RelayState"]}}
}
