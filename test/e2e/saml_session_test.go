package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/crewjam/saml"

	"github.com/portcullis-proxy/portcullis/test/samlserver"
	"github.com/portcullis-proxy/portcullis/test/sspserver"
)

// TestSAMLSessionEndsAtSessionNotOnOrAfter: an AuthnStatement's
// SessionNotOnOrAfter is "an upper bound on sessions with the subject
// derived from the enclosing assertion" (SAML core 2.7.2), and the proxy's
// session is one: it ends then, before session.lifetime (12h) would end
// it, as Shibboleth's SP and mod_auth_mellon end theirs. An assertion whose
// SessionNotOnOrAfter has passed signs no one in.
func TestSAMLSessionEndsAtSessionNotOnOrAfter(t *testing.T) {
	s, idpSrv, entityID, shapes := shapedSAMLStack(t)
	sessionEnd := func(end time.Time) samlserver.Shape {
		return samlserver.Shape{Assertion: func(a *saml.Assertion) {
			for i := range a.AuthnStatements {
				a.AuthnStatements[i].SessionNotOnOrAfter = &end
			}
		}}
	}

	// The bound is the IdP's clock's, read on the proxy's: it is allowed
	// the clock skew that the assertion's other times are (Shibboleth's SP
	// adds its clockSkew to it the same way).
	for _, tc := range []struct {
		name, why string
		end       time.Duration
	}{
		{"the session ends at SessionNotOnOrAfter, an hour ahead", "", time.Hour},
		{"a SessionNotOnOrAfter less than a second ahead signs in",
			"the IdP's session ends as the proxy's did: the browser, whose cookie went a second early, is answered by the IdP's session still", 300 * time.Millisecond},
		{"a SessionNotOnOrAfter passed by less than the clock skew signs in",
			"an IdP whose clock is behind the proxy's, within the skew every other check allows, still holds its session", -30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			end := time.Now().Add(tc.end).UTC()
			shapes[entityID] = sessionEnd(end)
			b := browser(t)
			resp := samlLogin(t, b, idpSrv.SSOURL(), s.URL+"/tasks", samlAlice.Name, samlAlice.Password)
			if body := readBody(t, resp); resp.StatusCode != http.StatusOK {
				t.Fatalf("login: status %d, want it signed in (%s)\n%s", resp.StatusCode, tc.why, body)
			}
			status, body := userinfoBody(t, s, b.Jar.Cookies(mustURL(t, s.URL)))
			var info struct {
				Expires time.Time `json:"expires"`
			}
			if err := json.Unmarshal([]byte(body), &info); status != http.StatusOK || err != nil {
				t.Fatalf("userinfo: status %d %v\n%s", status, err, body)
			}
			if info.Expires.After(end.Add(saml.MaxClockSkew)) {
				t.Errorf("the session expires at %s, after the assertion's SessionNotOnOrAfter %s and the clock skew %s", info.Expires, end, saml.MaxClockSkew)
			}
		})
	}

	t.Run("an assertion whose SessionNotOnOrAfter has passed signs no one in", func(t *testing.T) {
		// Ten minutes: beyond the clock skew allowed.
		shapes[entityID] = sessionEnd(time.Now().Add(-10 * time.Minute).UTC())
		b := browser(t)
		post := answer(t, b, idpSrv, s.URL+"/tasks", samlAlice)
		before := len(s.Upstream.Requests())
		resp := post.post(t, noRedirect(b))
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusBadGateway {
			t.Errorf("ACS: status %d Location %q, want the login refused\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
		}
		if n := len(s.Upstream.Requests()); n != before {
			t.Errorf("the upstream saw %d more requests, want none", n-before)
		}
		if status := userinfo(t, s, b.Jar.Cookies(mustURL(t, s.URL))); status != http.StatusUnauthorized {
			t.Errorf("userinfo after the refused login: status %d, want 401", status)
		}
	})
}

// TestSAMLSimpleSAMLphpSessionDurationBoundsTheSession: SimpleSAMLphp sends
// every assertion with SessionNotOnOrAfter at the login plus its
// session.duration (8h by default), which ends the proxy's session before
// session.lifetime's 12h.
func TestSAMLSimpleSAMLphpSessionDurationBoundsTheSession(t *testing.T) {
	s := listen(t)
	idpSrv := sspserver.Start(t, sspserver.Options{Users: []sspserver.User{sspAnn}, ServiceProviders: []sspserver.ServiceProvider{
		{EntityID: s.URL + "/.portcullis/saml/ssp/metadata", ACS: s.URL + "/.portcullis/saml/ssp/acs"},
	}})
	entry := "    - id: ssp\n      protocol: SAML\n      entity_id: " + idpSrv.EntityID() + "\n      metadata_url: " + idpSrv.MetadataURL() +
		"\n      attribute_mapping: " + sspBasicMapping + "\n"
	s.start(t, strings.Replace(samlInteropConfig, "IDENTITY_PROVIDERS\n", entry, 1))
	before := time.Now()
	_, cookies := sspLogin(t, s, idpSrv, "ssp")
	after := time.Now()
	status, body := userinfoBody(t, s, cookies)
	var info struct {
		Expires time.Time `json:"expires"`
	}
	if err := json.Unmarshal([]byte(body), &info); status != http.StatusOK || err != nil {
		t.Fatalf("userinfo: status %d %v\n%s", status, err, body)
	}
	// SimpleSAMLphp counts from its AuthnInstant, within the login; the
	// proxy allows the clock skew after it.
	if info.Expires.Before(before.Add(8*time.Hour).Add(-time.Minute)) || info.Expires.After(after.Add(8*time.Hour).Add(saml.MaxClockSkew)) {
		t.Errorf("the session expires at %s, want SimpleSAMLphp's session.duration (8h) after the login at %s, and the clock skew", info.Expires, before.UTC())
	}
}

// TestSAMLSessionShorterThanTheLoopWindowIsNoLoop: a SessionNotOnOrAfter can
// leave a session shorter than the two minutes after a login in which a
// browser sent to sign in again without a session is taken for a login
// loop (an IdP whose session was almost over; SiteMinder's "Use Assertion
// Validity"). When it ends, the browser signs in again at the IdP, as after
// session.lifetime; it is not shown "Sign-in did not hold".
func TestSAMLSessionShorterThanTheLoopWindowIsNoLoop(t *testing.T) {
	s, idpSrv, entityID, shapes := shapedSAMLStack(t)
	// The session ends about ten seconds after the login: the bound, read
	// with the clock skew, is that far ahead.
	end := time.Now().Add(10*time.Second - saml.MaxClockSkew).UTC()
	shapes[entityID] = samlserver.Shape{Assertion: func(a *saml.Assertion) {
		for i := range a.AuthnStatements {
			a.AuthnStatements[i].SessionNotOnOrAfter = &end
		}
	}}
	b := browser(t)
	resp := answer(t, b, idpSrv, s.URL+"/tasks", samlAlice).post(t, noRedirect(b))
	if body := readBody(t, resp); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != s.URL+"/tasks" {
		t.Fatalf("ACS: status %d Location %q, want the login to lead to /tasks\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	// The browser drops the session cookie when its Max-Age is up.
	app := mustURL(t, s.URL)
	deadline := time.Now().Add(time.Minute)
	for hasCookie(b.Jar.Cookies(app), "portcullis") {
		if time.Now().After(deadline) {
			t.Fatal("the session cookie is still in the browser a minute after its session's end")
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, err := noRedirect(b).Get(s.URL + "/tasks")
	if err != nil {
		t.Fatal(err)
	}
	login := resp.Header.Get("Location")
	if readBody(t, resp); resp.StatusCode != http.StatusFound || !strings.Contains(login, "/.portcullis/login") {
		t.Fatalf("/tasks after the session ended: status %d Location %q, want sent to sign in", resp.StatusCode, login)
	}
	// /login, then /login/corp, then the IdP.
	for hop := 0; strings.Contains(login, "/.portcullis/login") && hop < 3; hop++ {
		resp, err = noRedirect(b).Get(app.ResolveReference(mustURL(t, login)).String())
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("%s after the session ended: status %d, want on to the IdP\n%s", login, resp.StatusCode, body)
		}
		login = resp.Header.Get("Location")
	}
	if !strings.HasPrefix(login, idpSrv.SSOURL()) {
		t.Errorf("signing in after the session ended leads to %q, want the IdP", login)
	}
}

func hasCookie(cookies []*http.Cookie, name string) bool {
	for _, c := range cookies {
		if c.Name == name {
			return true
		}
	}
	return false
}

// shapedSAMLStack is samlStack (from metadata_url, alice alone) with the
// IdP's answers to the proxy shaped by shapes[entityID], which a test sets
// before each login.
func shapedSAMLStack(t *testing.T) (s *stack, idpSrv *samlserver.Server, entityID string, shapes map[string]samlserver.Shape) {
	t.Helper()
	s = listen(t)
	entityID = s.URL + "/.portcullis/saml/corp/metadata"
	shapes = map[string]samlserver.Shape{entityID: {}}
	idpSrv = samlserver.Start(t, samlserver.Options{Users: []samlserver.User{samlAlice}, Shapes: shapes})
	s.start(t, strings.NewReplacer("ENTITY_ID", idpSrv.EntityID(), "IDP_SOURCE", "metadata_url: "+idpSrv.MetadataURL()).Replace(samlConfig))
	if err := idpSrv.AddServiceProviderURL(t.Context(), entityID); err != nil {
		t.Fatal(err)
	}
	return s, idpSrv, entityID, shapes
}
