package proxy

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// shapeUsers are accounts at the real oidc-provider whose claims take the
// shapes peers' advisories turned on: an address with two @ whose last
// part is the trusted domain (oauth2-proxy's GHSA-c5c4-8r6x-56w3),
// email_verified as the strings "false" and "true", groups as one string
// holding a comma.
var shapeUsers = map[string]oidcserver.User{
	"twoat":    {Password: "pw", Email: "eve@evil.example@contractor.example", EmailVerified: true},
	"strfalse": {Password: "pw", Email: "ana@contractor.example", EmailVerified: "false"},
	"strtrue":  {Password: "pw", Email: "ana@contractor.example", EmailVerified: "true"},
	"grpcomma": {Password: "pw", Email: "gus@example.com", EmailVerified: true, Groups: "staff,cvat-admins"},
	"grpone":   {Password: "pw", Email: "gil@example.com", EmailVerified: true, Groups: "cvat-admins"},
}

// shapeRoles adds to authzReloadConfig the documented condition of
// docs/cvat.md (the whole address at a domain, verified) and X-Email.
var shapeRoles = []string{
	"  roles: [admin, user]\n", "  roles: [admin, business, user]\n",
	"      when: '\"cvat-admins\" in groups'\n", "      when: '\"cvat-admins\" in groups'\n" +
		"    - role: business\n      when: 'email_verified && email matches \"^[^@]+@contractor[.]example$\"'\n",
	"    X-Groups: 'join(roles, \",\")'\n", "    X-Groups: 'join(roles, \",\")'\n    X-Email: email\n",
}

// Logins through oidc-provider with claims of those shapes get what the
// documented conditions mean, whatever the shape: explain's table
// (TestDocumentedConditionsOverClaimsOfEveryShape) against a real IdP.
func TestLoginClaimShapesAtARealIdP(t *testing.T) {
	t.Parallel()
	e := newReloadingProxy(t, func(publicURL, upstreamURL string) string {
		op := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{publicURL + "/.portcullis/oidc/company/callback"}, ExtraUsers: shapeUsers})
		return strings.NewReplacer(append(shapeRoles, "PUBLIC_URL", publicURL, "UPSTREAM_URL", upstreamURL, "ISSUER", op.Issuer, "STORE", "  store: cookie")...).Replace(authzReloadConfig)
	})
	for _, tc := range []struct {
		user   string
		groups string // X-Groups; "" when the login is refused
	}{
		{"twoat", "user"}, // not business: the address is at no one domain
		{"strfalse", ""},  // the IdP says the address is not verified
		{"strtrue", "business"},
		{"grpcomma", "user"}, // one group named "staff,cvat-admins"
		{"grpone", "admin"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			jar, _ := cookiejar.New(nil)
			b := &http.Client{Jar: jar, Timeout: 30 * time.Second}
			e.upstream.Reset()
			resp := oidcserver.Login(t, b, e.url+"/.portcullis/login/company?rd=/tasks", tc.user, shapeUsers[tc.user].Password)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if tc.groups == "" {
				if resp.StatusCode != http.StatusForbidden || resp.Request.URL.Path != "/.portcullis/oidc/company/callback" {
					t.Fatalf("login: %d at %s, want 403 at the callback", resp.StatusCode, resp.Request.URL.Path)
				}
				if _, reached := e.upstream.Last(); reached {
					t.Errorf("the refused login reached the upstream")
				}
				return
			}
			got, reached := e.upstream.Last()
			if resp.StatusCode != http.StatusOK || !reached || got.Path != "/tasks" {
				t.Fatalf("login: %d at %s, upstream reached %v", resp.StatusCode, resp.Request.URL, reached)
			}
			if g, m := got.Header.Values("X-Groups"), got.Header.Values("X-Email"); len(g) != 1 || g[0] != tc.groups || len(m) != 1 || m[0] != shapeUsers[tc.user].Email {
				t.Errorf("upstream got X-Groups %q, X-Email %q; want [%q], [%q]", g, m, tc.groups, shapeUsers[tc.user].Email)
			}
		})
	}
}

// A login never adopts the session cookie the browser brought: a session
// planted in the victim's browser (an attacker's own, set by a sibling
// subdomain or a script where the cookie has no __Host- prefix) is
// replaced by a new one, and the planted one still names the attacker, so
// that the attacker cannot ride the victim's login (session fixation,
// which peers' advisories list beside their CSRF-cookie ones). With the
// Redis store, where the cookie names a server-side session that a login
// could have written over.
func TestLoginNeverAdoptsThePlantedSession(t *testing.T) {
	t.Parallel()
	e := newReloadingProxy(t, func(publicURL, upstreamURL string) string {
		op := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{publicURL + "/.portcullis/oidc/company/callback"}})
		return strings.NewReplacer("PUBLIC_URL", publicURL, "UPSTREAM_URL", upstreamURL, "ISSUER", op.Issuer,
			"STORE", "  store: redis\n  redis: {url: "+redisserver.Start(t).URL+"}").Replace(authzReloadConfig)
	})
	public, _ := url.Parse(e.url + "/")
	signIn := func(jar *cookiejar.Jar, user, password string) string {
		t.Helper()
		b := &http.Client{Jar: jar, Timeout: 30 * time.Second}
		resp := oidcserver.Login(t, b, e.url+"/.portcullis/login/company?rd=/tasks", user, password)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("login as %s: %d at %s", user, resp.StatusCode, resp.Request.URL)
		}
		for _, c := range jar.Cookies(public) {
			if c.Name == "portcullis" {
				return c.Value
			}
		}
		t.Fatalf("login as %s: no session cookie", user)
		return ""
	}
	whoIs := func(value string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", e.url+"/.portcullis/userinfo", nil)
		req.Header.Set("Cookie", "portcullis="+value)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(body)
	}

	attacker, _ := cookiejar.New(nil)
	planted := signIn(attacker, oidcserver.Bob, oidcserver.BobPassword)
	victim, _ := cookiejar.New(nil)
	victim.SetCookies(public, []*http.Cookie{{Name: "portcullis", Value: planted, Path: "/"}})
	mine := signIn(victim, oidcserver.Alice, oidcserver.AlicePassword)

	if mine == planted {
		t.Fatalf("the victim's login kept the planted session cookie")
	}
	if got := whoIs(mine); !strings.Contains(got, `"sub":"alice"`) {
		t.Errorf("the victim's new session: %s, want alice's", got)
	}
	if got := whoIs(planted); !strings.Contains(got, `"sub":"bob"`) || strings.Contains(got, "alice") {
		t.Errorf("the planted session after the victim's login: %s, want still bob's and nothing of alice", got)
	}
}
