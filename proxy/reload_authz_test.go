package proxy

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// authzReloadConfig is one OIDC IdP, an admin area and the role CVAT gets
// in X-Groups; alice (groups cvat-admins, annotators at test/oidc) is admin.
const authzReloadConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [` + testKey + `]
STORE
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups]
role_mapping:
  roles: [admin, user]
  default: user
  rules:
    - role: admin
      when: '"cvat-admins" in groups'
attribute_pass:
  headers:
    X-Groups: 'join(roles, ",")'
rules:
  - name: api-credentials
    path_prefix: /api/
    headers: {Authorization: '^Token '}
    action: bypass
  - name: admin-only
    path_prefix: /admin
    action: authenticate
    allow_if: '"admin" in roles'
default_action: authenticate
`

// signedInBeforeReload is portcullis served as `serve` runs it, from a
// config file it reloads, with alice signed in through the real
// oidc-provider.
type signedInBeforeReload struct {
	live     *live
	url      string
	yaml     string
	path     string
	upstream *echo.Server
	cookies  string // sent with every request, unless empty
	// ahead runs the proxy's clock this far ahead of the machine's (in
	// nanoseconds), past session.refresh without waiting; it is every
	// Handler's, the reloaded ones' too.
	ahead atomic.Int64
}

func (e *signedInBeforeReload) now() time.Time {
	return time.Now().Add(time.Duration(e.ahead.Load()))
}

// newReloadingProxy serves the config configFor gives for the proxy's and
// the upstream's URLs from a file that reload reads again.
func newReloadingProxy(t *testing.T, configFor func(publicURL, upstreamURL string) string) *signedInBeforeReload {
	t.Helper()
	return newReloadingProxyLogged(t, slog.New(slog.DiscardHandler), configFor)
}

// newReloadingProxyLogged is newReloadingProxy writing to log.
func newReloadingProxyLogged(t *testing.T, log *slog.Logger, configFor func(publicURL, upstreamURL string) string) *signedInBeforeReload {
	t.Helper()
	e := &signedInBeforeReload{upstream: echo.New()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.url = "http://" + ln.Addr().String()
	up := httptest.NewServer(e.upstream)
	t.Cleanup(up.Close)
	e.yaml = configFor(e.url, up.URL)
	e.path = filepath.Join(t.TempDir(), "portcullis.yaml")
	e.write(t, e.yaml)

	cfg, err := ParseConfig([]byte(e.yaml), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h, err := New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	h.now = e.now
	// A request waits for the refresh it finds due as long as the refresh
	// may take (refreshTimeout), not refreshWait: these tests ask what its
	// answer carries, which on a loaded machine must not depend on how
	// soon the IdP answers.
	h.refresher.wait = refreshTimeout
	e.live = newLive(ctx, h, h.log)
	e.live.src = &configSource{path: e.path, getenv: os.Getenv}
	_, e.live.src.stamp, _ = e.live.src.read()
	srv := &http.Server{Handler: e.live, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	for deadline := time.Now().Add(20 * time.Second); len(h.Ready()) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("proxy not ready: %v", h.Ready())
		}
	}
	return e
}

// newSignedInBeforeReload is alice signed in, with her session in store;
// oldNew are replacements in authzReloadConfig.
func newSignedInBeforeReload(t *testing.T, store string, oldNew ...string) *signedInBeforeReload {
	t.Helper()
	return newSignedInAs(t, store, oidcserver.Alice, oidcserver.AlicePassword, nil, oldNew...)
}

// newSignedInAs is newSignedInBeforeReload with user signed in, among
// the IdP's users and users.
func newSignedInAs(t *testing.T, store, user, password string, users map[string]oidcserver.User, oldNew ...string) *signedInBeforeReload {
	t.Helper()
	e := newReloadingProxy(t, func(publicURL, upstreamURL string) string {
		op := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{publicURL + "/.portcullis/oidc/company/callback"}, ExtraUsers: users})
		storeYAML := "  store: cookie"
		if store == "redis" {
			storeYAML = "  store: redis\n  redis: {url: " + redisserver.Start(t).URL + "}"
		}
		// oldNew first: of two replacements of one string, the first counts.
		return strings.NewReplacer(append(oldNew, "PUBLIC_URL", publicURL, "UPSTREAM_URL", upstreamURL, "ISSUER", op.Issuer, "STORE", storeYAML)...).Replace(authzReloadConfig)
	})

	jar, _ := cookiejar.New(nil)
	b := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	resp := oidcserver.Login(t, b, e.url+"/.portcullis/login/company?rd=/", user, password)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	var kept []string
	for _, c := range jar.Cookies(resp.Request.URL) {
		if strings.HasPrefix(c.Name, "portcullis") {
			kept = append(kept, c.Name+"="+c.Value)
		}
	}
	e.cookies = strings.Join(kept, "; ")
	if resp.StatusCode != http.StatusOK || e.cookies == "" {
		t.Fatalf("login: %d at %s, session cookies %q", resp.StatusCode, resp.Request.URL, e.cookies)
	}
	if status, groups := e.get(t, "/admin/users"); status != http.StatusOK || groups != "admin" {
		t.Fatalf("before the reload: /admin %d with X-Groups %q, want 200 as admin", status, groups)
	}
	return e
}

func (e *signedInBeforeReload) write(t *testing.T, yaml string) {
	t.Helper()
	if err := os.WriteFile(e.path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reload rewrites the config with each old→new replacement and reloads.
func (e *signedInBeforeReload) reload(t *testing.T, oldNew ...string) {
	t.Helper()
	y := e.yaml
	for i := 0; i < len(oldNew); i += 2 {
		if !strings.Contains(y, oldNew[i]) {
			t.Fatalf("the config has no %q to replace", oldNew[i])
		}
		y = strings.Replace(y, oldNew[i], oldNew[i+1], 1)
	}
	e.write(t, y)
	if err := e.live.reload("signal"); err != nil {
		t.Fatal(err)
	}
	e.live.cur.Load().now = e.now // before any request reaches it
	e.live.cur.Load().refresher.wait = refreshTimeout
}

// get is a script's request with the session's cookies: its status, and the
// X-Groups the upstream got ("" when nothing reached it).
func (e *signedInBeforeReload) get(t *testing.T, path string, headers ...string) (int, string) {
	t.Helper()
	e.upstream.Reset()
	req, _ := http.NewRequest("GET", e.url+path, nil)
	if e.cookies != "" {
		req.Header.Set("Cookie", e.cookies)
	}
	for i := 0; i < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	got, ok := e.upstream.Last()
	if !ok {
		return resp.StatusCode, ""
	}
	return resp.StatusCode, got.Header.Get("X-Groups")
}

// A reload that takes access away takes it away from the sessions made
// before it, at their next request: roles are what the role_mapping live
// now gives the session's profile, and a session that the IdP entry's
// admission rules live now refuse is no session. Before, the roles mapped
// at login were kept until the session ended (12 hours by default), so a
// demoted admin stayed admin, upstream and in allow_if.
func TestReloadTakesAccessAwayFromSessions(t *testing.T) {
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store+" store: role_mapping no longer makes the user admin", func(t *testing.T) {
			t.Parallel()
			e := newSignedInBeforeReload(t, store)
			e.reload(t, `'"cvat-admins" in groups'`, `'"cvat-owners" in groups'`)
			if status, groups := e.get(t, "/admin/users"); status != http.StatusForbidden {
				t.Errorf("/admin after the reload demoted the user: %d with X-Groups %q, want 403", status, groups)
			}
			if status, groups := e.get(t, "/tasks"); status != http.StatusOK || groups != "user" {
				t.Errorf("/tasks after the reload: %d with X-Groups %q, want 200 as user", status, groups)
			}
		})
		t.Run(store+" store: allowed_groups no longer admits the user", func(t *testing.T) {
			t.Parallel()
			e := newSignedInBeforeReload(t, store)
			e.reload(t, "      client_secret: portcullis-secret\n", "      client_secret: portcullis-secret\n      allowed_groups: [cvat-owners]\n")
			if status, groups := e.get(t, "/tasks"); status != http.StatusUnauthorized {
				t.Errorf("/tasks after the reload refused the user's group: %d with X-Groups %q, want 401", status, groups)
			}
		})
		t.Run(store+" store: role_mapping that gives the user no role", func(t *testing.T) {
			t.Parallel()
			e := newSignedInBeforeReload(t, store)
			e.reload(t, "  default: user\n", "  default: \"\"\n", `'"cvat-admins" in groups'`, `'"cvat-owners" in groups'`)
			if status, groups := e.get(t, "/tasks"); status != http.StatusUnauthorized {
				t.Errorf("/tasks after the reload left the user no role: %d with X-Groups %q, want 401", status, groups)
			}
		})
	}
}

// anonymousToken are the headers of an API caller with its own token and no
// session (headers of get: an empty Cookie sends none).
var anonymousToken = []string{"Cookie", "", "Authorization", "Token abc"}

// What a reload already took away at once, before sessions' roles did too,
// kept so: rules are matched and allow_if decided by the configuration
// live at each request, a session of an IdP entry renamed is none, a
// shortened session.lifetime ends the sessions older than it, and a reload
// refused for one problem applies none of its other changes.
func TestReloadTakesAccessAwayWithRulesAndSessions(t *testing.T) {
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store+" store", func(t *testing.T) {
			t.Parallel()
			e := newSignedInBeforeReload(t, store)
			if status, _ := e.get(t, "/api/tasks", anonymousToken...); status != http.StatusOK {
				t.Fatalf("bypassed request before the reload: %d, want 200", status)
			}

			e.write(t, strings.NewReplacer(`'"cvat-admins" in groups'`, `'"cvat-owners" in groups'`,
				"      client_secret: portcullis-secret\n", "      client_secret: portcullis-secret\n      allowed_groups: [cvat-owners]\n",
				"default_action: authenticate", "default_action: explode").Replace(e.yaml))
			if err := e.live.reload("signal"); err == nil {
				t.Fatal("a config with an unknown default_action was taken")
			}
			if status, groups := e.get(t, "/admin/users"); status != http.StatusOK || groups != "admin" {
				t.Errorf("after a refused reload that demoted the user among other changes: /admin %d with X-Groups %q, want 200 as admin (nothing of it applied)", status, groups)
			}

			steps := []struct {
				name, path string
				headers    []string
				want       int
				oldNew     []string
			}{
				{"allow_if tightened", "/admin/users", nil, http.StatusForbidden, []string{`allow_if: '"admin" in roles'`, `allow_if: '"admin" in roles && "cvat-owners" in groups'`}},
				{"default_action deny", "/tasks", nil, http.StatusForbidden, []string{"default_action: authenticate", "default_action: deny"}},
				{"bypass rule removed", "/api/tasks", anonymousToken, http.StatusUnauthorized, []string{"    action: bypass\n", "    action: authenticate\n"}},
				{"IdP entry renamed", "/tasks", nil, http.StatusUnauthorized, []string{"    - id: company\n", "    - id: corp\n"}},
			}
			for _, step := range steps {
				e.reload(t, step.oldNew...)
				if status, groups := e.get(t, step.path, step.headers...); status != step.want {
					t.Errorf("%s: %s %d with X-Groups %q, want %d", step.name, step.path, status, groups, step.want)
				}
				e.reload(t) // back to the first config
				if status, _ := e.get(t, step.path, step.headers...); status != http.StatusOK {
					t.Errorf("%s, then the change undone: %s %d, want 200", step.name, step.path, status)
				}
			}

			// The session was made at least a second ago (its times are
			// kept to the second) once a second has passed.
			time.Sleep(time.Second)
			e.reload(t, "  keys: [", "  lifetime: 1s\n  keys: [")
			if status, _ := e.get(t, "/tasks"); status != http.StatusUnauthorized {
				t.Errorf("session.lifetime shortened below the session's age: /tasks %d, want 401", status)
			}
		})
	}
}

// A Basic auth check that the directory passed before a reload is not
// reused after it: the cache of checks belongs to the configuration that
// made them, so a reload that changes the entry's group_search (alice
// found in no group: no longer admin) or user_search (alice not found)
// decides the very next request with the directory (slapd) again.
func TestReloadForgetsBasicAuthChecks(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	for _, tc := range []struct {
		name   string
		oldNew []string
		want   int
	}{
		{"group_search finds no group", []string{"(member={dn})", "(member={dn})(cn=cvat-owners)"}, http.StatusForbidden},
		{"user_search finds no alice", []string{"(uid={username})", "(uid={username})(uid=bob)"}, http.StatusUnauthorized},
		{"the entry removed", []string{"    basic_auth: corp-ldap\n", "", "    - id: corp-ldap\n", "    - id: corp-ldap-gone\n"}, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newReloadingProxy(t, func(publicURL, upstreamURL string) string {
				cfg := strings.Replace(ldapProxyConfig(dir.URL, upstreamURL), "https://cvat.example.com", publicURL, 1)
				return cfg + "    allow_if: '\"admin\" in roles'\n" +
					"role_mapping:\n  roles: [admin, user]\n  default: user\n  rules:\n    - role: admin\n      when: '\"cvat-admins\" in groups'\n" +
					"attribute_pass:\n  headers:\n    X-Groups: 'join(roles, \",\")'\n"
			})
			basic := []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(ldapserver.Alice+":"+ldapserver.AlicePassword))}
			if status, groups := e.get(t, "/legacy/api", basic...); status != http.StatusOK || groups != "admin" {
				t.Fatalf("before the reload: %d with X-Groups %q, want 200 as admin", status, groups)
			}
			e.reload(t, tc.oldNew...)
			if status, groups := e.get(t, "/legacy/api", basic...); status != tc.want {
				t.Errorf("after the reload: %d with X-Groups %q, want %d", status, groups, tc.want)
			}
		})
	}
}

// A refresh that the configuration before a reload made, and remembers for
// the requests still on their way with the cookie it replaced (a minute),
// answers them after the reload with the roles of the configuration live
// now, not with those it mapped.
func TestReloadTakesAccessAwayFromARefreshJustMade(t *testing.T) {
	t.Parallel()
	// session.refresh far longer than the login takes on a loaded machine:
	// at 1s, the check at the end of the login could refresh already.
	e := newSignedInBeforeReload(t, "cookie", "STORE", "  store: cookie\n  refresh: 1m",
		"scopes: [openid, email, profile, groups]", "scopes: [openid, email, profile, groups, offline_access]")
	e.ahead.Store(int64(2 * time.Minute)) // past session.refresh
	if status, groups := e.get(t, "/admin/users"); status != http.StatusOK || groups != "admin" {
		t.Fatalf("the request that refreshed the session: %d with X-Groups %q, want 200 as admin", status, groups)
	}
	if n := refreshesCounted(t, e.live.cur.Load()); n != 1 {
		t.Fatalf("%v refreshes, want 1", n)
	}
	e.reload(t, `'"cvat-admins" in groups'`, `'"cvat-owners" in groups'`)
	// Still the cookie from before the refresh, as a request sent with it
	// at the same time would be.
	if status, groups := e.get(t, "/admin/users"); status != http.StatusForbidden {
		t.Errorf("/admin with the cookie the refresh replaced, after the reload demoted the user: %d with X-Groups %q, want 403", status, groups)
	}
	if n := refreshesCounted(t, e.live.cur.Load()); n != 1 {
		t.Errorf("%v refreshes, want 1: the refresh before the reload answers", n)
	}
}

// refreshesCounted is session_refreshes_total{idp="company",result="success"}.
func refreshesCounted(t *testing.T, h *Handler) float64 {
	t.Helper()
	for _, m := range gather(t, h)["portcullis_session_refreshes_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["idp"] == "company" && labels["result"] == refreshSuccess {
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// A reload that renames an identity header keeps removing the old name from
// client requests: the upstream may still trust X-Groups (CVAT does, until
// its own settings change), and a client that sends it on a bypassed
// request, or beside a session, must not reach it with a role of its
// choosing. Before, the old name reached the upstream as the client sent it
// from the request after the reload on.
func TestReloadKeepsStrippingAHeaderItNoLongerSets(t *testing.T) {
	t.Parallel()
	e := newSignedInBeforeReload(t, "cookie")
	e.reload(t, "    X-Groups: 'join(roles, \",\")'", "    X-Roles: 'join(roles, \",\")'")

	if status, groups := e.get(t, "/api/tasks", "Authorization", "Token abc", "X-Groups", "admin"); status != http.StatusOK || groups != "" {
		t.Errorf("bypassed with X-Groups: admin after the rename: %d, upstream got X-Groups %q; want 200 without it", status, groups)
	}
	if status, groups := e.get(t, "/tasks", "X-Groups", "admin"); status != http.StatusOK || groups != "" {
		t.Errorf("signed in, with X-Groups: admin after the rename: %d, upstream got X-Groups %q; want 200 without it", status, groups)
	}
	if got, _ := e.upstream.Last(); got.Header.Get("X-Roles") != "admin" {
		t.Errorf("upstream got X-Roles %q, want the renamed header set: admin", got.Header.Get("X-Roles"))
	}
}

// A session made under trust_email, of a user whose IdP says in so many
// words that the email is not verified, is no session once a reload takes
// trust_email away: the login would now be refused (email_verified), and
// the email_verified: true that trust_email put in the session's profile
// is not the IdP's word.
func TestReloadTakesTrustEmailAway(t *testing.T) {
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store+" store", func(t *testing.T) {
			t.Parallel()
			carol := map[string]oidcserver.User{"carol": {Password: "carol-pw", Email: "carol@example.com", EmailVerified: false,
				Groups: []string{"cvat-admins"}}}
			trust := []string{"      client_secret: portcullis-secret\n", "      client_secret: portcullis-secret\n      trust_email: true\n"}
			e := newSignedInAs(t, store, "carol", "carol-pw", carol, trust...)
			e.reload(t, "      trust_email: true\n", "")
			if status, groups := e.get(t, "/tasks"); status != http.StatusUnauthorized {
				t.Errorf("/tasks after the reload took trust_email away from an IdP that says the email is not verified: %d with X-Groups %q, want 401", status, groups)
			}
		})
	}
}

// A role rule that reads the clock gives an API caller with Basic
// credentials the role until the rule's date, as it does a session: the
// check the directory passed is reused for a minute (basicAuthTTL), but
// its roles are mapped again at each request. Before, they were those of
// the check, a minute past the date.
func TestBasicAuthRolesThatReadTheClockAreNotReused(t *testing.T) {
	t.Parallel()
	dir := ldapserver.Start(t, ldapserver.Options{})
	until := time.Now().Add(5 * time.Second) // room for slapd and the proxy to start on a loaded machine
	e := newReloadingProxy(t, func(publicURL, upstreamURL string) string {
		cfg := strings.Replace(ldapProxyConfig(dir.URL, upstreamURL), "https://cvat.example.com", publicURL, 1)
		return cfg + "role_mapping:\n  roles: [admin, user]\n  default: user\n  rules:\n    - role: admin\n" +
			"      when: 'now() < date(\"" + until.Format(time.RFC3339Nano) + "\") && \"cvat-admins\" in groups'\n" +
			"attribute_pass:\n  headers:\n    X-Groups: 'join(roles, \",\")'\n"
	})
	basic := []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(ldapserver.Alice+":"+ldapserver.AlicePassword))}
	if status, groups := e.get(t, "/legacy/api", basic...); status != http.StatusOK || groups != "admin" {
		t.Fatalf("before the date: %d with X-Groups %q, want 200 as admin", status, groups)
	}
	time.Sleep(time.Until(until) + 50*time.Millisecond)
	if status, groups := e.get(t, "/legacy/api", basic...); status != http.StatusOK || groups != "user" {
		t.Errorf("after the date, the check reused: %d with X-Groups %q, want 200 as user", status, groups)
	}
}

// A sign-out after a reload renamed session.cookie_name ends the session the
// browser still carries under the name before: a reload that renames it
// back (a rollback) must not sign the user in again. The soak run found it:
// /logout looked at the new name only, answered "signed out", and left the
// session, which the rollback brought back, admin headers and all. Its
// cookies under the old name are expired too.
func TestLogoutAfterCookieRenameEndsTheSession(t *testing.T) {
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store+" store", func(t *testing.T) {
			t.Parallel()
			e := newSignedInBeforeReload(t, store)
			e.reload(t, "session:\n", "session:\n  cookie_name: renamed\n")

			req, _ := http.NewRequest("GET", e.url+"/.portcullis/logout", nil)
			req.Header.Set("Cookie", e.cookies)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("logout: %d, want 200", resp.StatusCode)
			}
			expired := map[string]bool{}
			for _, c := range resp.Cookies() {
				if c.MaxAge < 0 {
					expired[c.Name] = true
				}
			}
			for part := range strings.SplitSeq(e.cookies, "; ") {
				name, _, _ := strings.Cut(part, "=")
				if !expired[name] {
					t.Errorf("logout left the cookie %s of the name before the reload in the browser", name)
				}
			}

			// The rollback; the cookies sent as they were, as by a copy
			// of them.
			e.reload(t)
			if status, groups := e.get(t, "/tasks"); status != http.StatusUnauthorized {
				t.Errorf("/tasks after the logout and a reload back to the old cookie name: %d with X-Groups %q, want 401", status, groups)
			}
		})
	}
}
