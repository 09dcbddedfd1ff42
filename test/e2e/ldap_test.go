package e2e

import (
	"encoding/base64"
	"html"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// ldapConfig is the CVAT profile with an LDAP directory: users by uid,
// groupOfNames groups by member (nesting walked by the proxy), admins and
// workers by group. The bind password in the file is wrong on purpose: the
// environment override (PORTCULLIS_IDP_CORP_LDAP_BIND_PASSWORD) supplies
// the right one. Requests come through a trusted proxy (the test), so
// X-Forwarded-For sets the client address the failure limits see.
const ldapConfig = `
server:
  public_url: PUBLIC_URL
  trusted_proxies: [127.0.0.1/32]
upstream:
  url: UPSTREAM_URL
session:
  keys: [SESSION_KEY]
sso:
  identity_providers:
    - id: corp-ldap
      name: Corporate directory
      protocol: LDAP
      url: LDAP_URL
      bind_dn: cn=portcullis,ou=services,dc=example,dc=com
      bind_password: not-the-password
      user_search: {base_dn: "dc=example,dc=com", filter: "(&(objectClass=inetOrgPerson)(uid={username}))"}
      group_search: {base_dn: "ou=groups,dc=example,dc=com", filter: "(&(objectClass=groupOfNames)(member={dn}))"}
role_mapping:
  roles: [admin, business, user, worker]
  default: user
  rules:
    - role: admin
      when: '"cvat-admins" in groups'
    - role: worker
      when: '"workers" in groups'
attribute_pass:
  headers:
    X-Email: email
    X-Groups: 'join(roles, ",")'
rules:
  - name: legacy-api
    path_prefix: /legacy/
    basic_auth: corp-ldap
    action: authenticate
  - name: cvat-api-credentials
    path_prefix: /api/
    headers: {Authorization: '^(Basic|Token|Bearer) '}
    action: bypass
default_action: authenticate
`

// ldapStack is portcullis with ldapConfig in front of the echo upstream,
// checking passwords at a fresh slapd.
func ldapStack(t *testing.T) (*stack, *ldapserver.Server) {
	t.Helper()
	return ldapStackWith(t, ldapConfig)
}

// ldapStackWith is ldapStack with another config.
func ldapStackWith(t *testing.T, config string) (*stack, *ldapserver.Server) {
	t.Helper()
	return ldapStackAt(t, config, ldapserver.Options{})
}

// ldapStackAt is ldapStackWith with a directory started with o.
func ldapStackAt(t *testing.T, config string, o ldapserver.Options) (*stack, *ldapserver.Server) {
	t.Helper()
	dir := ldapserver.Start(t, o)
	t.Logf("slapd started with the tree in %s", dir.StartupTime.Round(time.Millisecond))
	t.Setenv("PORTCULLIS_IDP_CORP_LDAP_BIND_PASSWORD", ldapserver.ServicePassword)
	s := listen(t)
	s.start(t, strings.ReplaceAll(config, "LDAP_URL", dir.URL))
	return s, dir
}

// fromAddr makes c's requests come from addr, as a trusted proxy would say.
func fromAddr(c *http.Client, addr string) *http.Client {
	cc := *c
	cc.Transport = forwardedFor{addr, c.Transport}
	return &cc
}

type forwardedFor struct {
	addr string
	next http.RoundTripper
}

func (f forwardedFor) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", f.addr)
	return f.next.RoundTrip(r)
}

var (
	ldapFormAction = regexp.MustCompile(`<form method="post" action="([^"]+)"`)
	ldapHidden     = regexp.MustCompile(`<input type="hidden" name="(state|rd)" value="([^"]*)"`)
)

// ldapForm is the login form as a browser got it.
type ldapForm struct {
	action string
	fields url.Values
}

// openForm follows start to the login form and reads it.
func openForm(t *testing.T, c *http.Client, start string) ldapForm {
	t.Helper()
	resp, err := c.Get(start)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, want the login form:\n%s", start, resp.StatusCode, body)
	}
	return readForm(t, resp.Request.URL, body)
}

func readForm(t *testing.T, base *url.URL, body string) ldapForm {
	t.Helper()
	m := ldapFormAction.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no login form in:\n%s", body)
	}
	f := ldapForm{action: base.ResolveReference(mustURL(t, html.UnescapeString(m[1]))).String(), fields: url.Values{}}
	for _, h := range ldapHidden.FindAllStringSubmatch(body, -1) {
		f.fields.Set(h[1], html.UnescapeString(h[2]))
	}
	if f.fields.Get("state") == "" {
		t.Fatalf("login form without a state field:\n%s", body)
	}
	return f
}

// submit posts the form with username and password, without following
// the redirect that a success answers with.
func (f ldapForm) submit(t *testing.T, c *http.Client, username, password string) (*http.Response, string) {
	t.Helper()
	v := url.Values{}
	for k := range f.fields {
		v.Set(k, f.fields.Get(k))
	}
	v.Set("username", username)
	v.Set("password", password)
	resp, err := noRedirect(c).PostForm(f.action, v)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readBody(t, resp)
}

// TestLDAPFormLogin logs users in with the form and checks the roles their
// groups give them, nested groups included.
func TestLDAPFormLogin(t *testing.T) {
	s, _ := ldapStack(t)
	tests := []struct {
		name, user, password, email, role string
	}{
		{"alice is an admin by group", ldapserver.Alice, ldapserver.AlicePassword, "alice@example.com", "admin"},
		{"bob is a worker through the group his group is in", ldapserver.Bob, ldapserver.BobPassword, "bob@example.com", "worker"},
		{"a user with a star in the name logs in and gets the default role", ldapserver.StarUser, ldapserver.StarUserPassword, "star@example.com", "user"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := fromAddr(browser(t), "10.1.0."+strconv.Itoa(i+1))
			// Unauthenticated: /login (one IdP) → /login/corp-ldap → the form.
			form := openForm(t, c, s.URL+"/tasks/7?page=2")
			if !strings.HasSuffix(form.action, "/.portcullis/ldap/corp-ldap") || form.fields.Get("rd") != s.URL+"/tasks/7?page=2" {
				t.Errorf("form posts to %s with rd %q", form.action, form.fields.Get("rd"))
			}
			resp, body := form.submit(t, c, tc.user, tc.password)
			if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != s.URL+"/tasks/7?page=2" {
				t.Fatalf("login: %d to %q, want 302 to the page first asked for:\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
			}
			s.Upstream.Reset()
			resp, err := c.Get(s.URL + "/tasks/7?page=2")
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
			got, ok := s.Upstream.Last()
			if !ok || got.Header.Get("X-Email") != tc.email || got.Header.Get("X-Groups") != tc.role {
				t.Errorf("upstream saw X-Email %q X-Groups %q, want %q %q", got.Header.Get("X-Email"), got.Header.Get("X-Groups"), tc.email, tc.role)
			}
		})
	}

	t.Run("the chooser is skipped and the form offers no other way with one IdP", func(t *testing.T) {
		c := fromAddr(browser(t), "10.1.1.1")
		resp, err := noRedirect(c).Get(s.URL + "/.portcullis/login/corp-ldap?rd=/x")
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, "/.portcullis/ldap/corp-ldap?rd=") {
			t.Errorf("/login/corp-ldap: %d to %q, want a redirect to the form", resp.StatusCode, loc)
		}
	})
}

// TestLDAPFormPostedAgainWhenSignedIn: the form a login used, posted again
// by the browser it signed in. WebKit keeps the form's page in its
// back-forward cache over plain http (it skips no-store pages only over
// https), so back after the login shows that very form, not the GET that
// would send a signed-in browser on; its Sign in posts the spent state.
// The browser goes on to the form's rd, as from the GET, not to a fresh
// form that says it expired.
func TestLDAPFormPostedAgainWhenSignedIn(t *testing.T) {
	s, _ := ldapStack(t)
	c := browser(t)
	form := openForm(t, c, s.URL+"/tasks/7?page=2")
	if resp, body := form.submit(t, c, ldapserver.Alice, ldapserver.AlicePassword); resp.StatusCode != http.StatusFound {
		t.Fatalf("login: %d, want 302:\n%s", resp.StatusCode, body)
	}
	resp, body := form.submit(t, c, ldapserver.Alice, ldapserver.AlicePassword)
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != s.URL+"/tasks/7?page=2" {
		t.Fatalf("the used form posted again when signed in: %d to %q, want 303 to the form's rd:\n%s", resp.StatusCode, loc, body)
	}

	// Not signed in, the same post is still refused with a fresh form.
	resp, body = form.submit(t, browser(t), ldapserver.Alice, ldapserver.AlicePassword)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "expired") {
		t.Errorf("the used form posted by a browser not signed in: %d, want 400 with a fresh form that says it expired:\n%s", resp.StatusCode, body)
	}

	// Another user at the same browser (a shared machine) types their own
	// name into the used form: they are not silently left signed in as
	// alice, but get a fresh form, with which they sign in as themselves.
	resp, body = form.submit(t, c, ldapserver.Bob, ldapserver.BobPassword)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "expired") {
		t.Fatalf("alice's used form posted with bob's name: %d to %q, want 400 with a fresh form, not alice's page:\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	fresh := readForm(t, mustURL(t, form.action), body)
	if resp, body := fresh.submit(t, c, ldapserver.Bob, ldapserver.BobPassword); resp.StatusCode != http.StatusFound {
		t.Fatalf("bob with the fresh form: %d, want 302:\n%s", resp.StatusCode, body)
	}
	s.Upstream.Reset()
	resp, err := c.Get(s.URL + "/tasks/7?page=2")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if got, ok := s.Upstream.Last(); !ok || got.Header.Get("X-Email") != "bob@example.com" {
		t.Errorf("after bob's login the upstream saw X-Email %q, want bob@example.com", got.Header.Get("X-Email"))
	}
}

// TestLDAPFormRefusals tries every way in that must fail: each gets the
// form again with the same message and a 401, and no session.
func TestLDAPFormRefusals(t *testing.T) {
	s, _ := ldapStack(t)
	tests := []struct{ name, user, password string }{
		{"wrong password", ldapserver.Alice, ldapserver.BobPassword},
		{"unknown user", "mallory", ldapserver.AlicePassword},
		{"empty password (an anonymous bind would succeed)", ldapserver.Alice, ""},
		{"a lone star", "*", ldapserver.AlicePassword},
		{"a filter closed early", "*)(uid=*", ldapserver.AlicePassword},
		{"an OR injected", "alice)(|(uid=*", ldapserver.AlicePassword},
		{"a trailing NUL", "alice\x00", ldapserver.AlicePassword},
		{"a star matching the star user's prefix", "star*", ldapserver.StarUserPassword},
		{"a username two entries have", ldapserver.Dup, ldapserver.DupPassword},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := fromAddr(browser(t), "10.2.0."+strconv.Itoa(i+1))
			form := openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap?rd=/")
			resp, body := form.submit(t, c, tc.user, tc.password)
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Wrong username or password.") {
				t.Fatalf("status %d, want 401 with the form's message:\n%s", resp.StatusCode, body)
			}
			again := readForm(t, resp.Request.URL, body)
			if again.fields.Get("state") == form.fields.Get("state") {
				t.Errorf("the form came back with the used state")
			}
			if u, _ := url.Parse(s.URL); len(c.Jar.Cookies(u)) > 0 {
				for _, ck := range c.Jar.Cookies(u) {
					if ck.Name == "portcullis" {
						t.Errorf("a session cookie was set")
					}
				}
			}
			resp, err := c.Get(s.URL + "/.portcullis/userinfo")
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("userinfo after a refused login: %d, want 401", resp.StatusCode)
			}
		})
	}

	t.Run("a form posted without its flow cookie checks no password", func(t *testing.T) {
		form := openForm(t, fromAddr(browser(t), "10.2.1.1"), s.URL+"/.portcullis/ldap/corp-ldap")
		other := fromAddr(browser(t), "10.2.1.1") // another browser: no flow cookie
		resp, body := form.submit(t, other, ldapserver.Alice, ldapserver.AlicePassword)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "did not send back the cookie") || !strings.Contains(body, `name="state"`) {
			t.Errorf("status %d, want 400 with a fresh form:\n%s", resp.StatusCode, body)
		}
	})
	t.Run("a form's state works once", func(t *testing.T) {
		c := fromAddr(browser(t), "10.2.1.2")
		form := openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap")
		if resp, _ := form.submit(t, c, ldapserver.Bob, "wrong"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("first post: %d, want 401", resp.StatusCode)
		}
		if resp, _ := form.submit(t, c, ldapserver.Bob, ldapserver.BobPassword); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("second post of the same state: %d, want 400", resp.StatusCode)
		}
	})
	t.Run("rd leading elsewhere is replaced by the public origin", func(t *testing.T) {
		c := fromAddr(browser(t), "10.2.1.3")
		form := openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap?rd=https://evil.example/")
		form.fields.Set("rd", "https://evil.example/") // the hidden field is not trusted either
		resp, _ := form.submit(t, c, ldapserver.Alice, ldapserver.AlicePassword)
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != s.URL+"/" {
			t.Errorf("login: %d to %q, want 302 to %s/", resp.StatusCode, loc, s.URL)
		}
	})
}

// TestLDAPFormPasswordMustChange resets a password as the administrator of
// a directory with OpenLDAP's ppolicy overlay (pwdMustChange): the new
// password binds, but the policy says it must be changed first, and the
// form says so instead of signing the user in.
func TestLDAPFormPasswordMustChange(t *testing.T) {
	s, dir := ldapStackAt(t, ldapConfig, ldapserver.Options{PasswordPolicy: true})
	dir.Modify(t, "dn: "+ldapserver.UserDN(ldapserver.Bob)+"\nchangetype: modify\nreplace: userPassword\nuserPassword: reset-pw\n")
	c := fromAddr(browser(t), "10.2.2.1")
	form := openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap?rd=/")
	resp, body := form.submit(t, c, ldapserver.Bob, "reset-pw")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Your password was reset and must be changed before you can sign in.") {
		t.Fatalf("status %d, want 401 with the form saying the password must be changed:\n%s", resp.StatusCode, body)
	}
	resp, err := c.Get(s.URL + "/.portcullis/userinfo")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("userinfo after the refused login: %d, want 401", resp.StatusCode)
	}
	// Basic auth callers get no session from it either.
	req, _ := http.NewRequest("GET", s.URL+"/legacy/x", nil)
	req.Header.Set("X-Forwarded-For", "10.2.2.2")
	req.SetBasicAuth(ldapserver.Bob, "reset-pw")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("Basic auth with the reset password: %d, want 401", resp.StatusCode)
	}
}

// TestLDAPRateLimit fails logins until the limits answer 429, per username
// (5) and per client address (20), and checks the metric.
func TestLDAPRateLimit(t *testing.T) {
	s, _ := ldapStack(t)
	attempt := func(addr, user, password string) (*http.Response, string) {
		t.Helper()
		c := fromAddr(browser(t), addr)
		return openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap").submit(t, c, user, password)
	}

	// Per username: five failures from five addresses; the sixth attempt
	// is refused before the directory sees it, right password or not.
	for i := 1; i <= 5; i++ {
		if resp, _ := attempt("10.3.0."+strconv.Itoa(i), ldapserver.Bob, "guess-"+strconv.Itoa(i)); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d, want 401", i, resp.StatusCode)
		}
	}
	resp, body := attempt("10.3.0.6", "BOB", ldapserver.BobPassword)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "Try again later") {
		t.Fatalf("sixth attempt: %d, want 429 with a try-again-later page:\n%s", resp.StatusCode, body)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Errorf("Retry-After %q, want 1..60 seconds (one attempt comes back a minute after the fifth failure)", resp.Header.Get("Retry-After"))
	}
	// Other users are not held back.
	if resp, _ := attempt("10.3.0.7", ldapserver.Alice, ldapserver.AlicePassword); resp.StatusCode != http.StatusFound {
		t.Errorf("alice while bob is limited: %d, want 302", resp.StatusCode)
	}

	// Per address: twenty failures with different usernames from one
	// address; then even alice's right password from there is refused,
	// while she still gets in from elsewhere.
	for i := 1; i <= 20; i++ {
		if resp, _ := attempt("10.3.1.1", "nobody"+strconv.Itoa(i), "x"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("address failure %d: %d, want 401", i, resp.StatusCode)
		}
	}
	if resp, _ := attempt("10.3.1.1", ldapserver.Alice, ldapserver.AlicePassword); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("21st attempt from one address: %d, want 429", resp.StatusCode)
	}
	if resp, _ := attempt("10.3.1.2", ldapserver.Alice, ldapserver.AlicePassword); resp.StatusCode != http.StatusFound {
		t.Errorf("alice from another address: %d, want 302", resp.StatusCode)
	}

	metrics := scrape(t, s)
	for _, want := range []string{
		`portcullis_logins_total{idp="corp-ldap",result="rate_limited"} 2`,
		`portcullis_logins_total{idp="corp-ldap",result="failure"} 25`,
		`portcullis_logins_total{idp="corp-ldap",result="success"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestLDAPRateLimitAcrossSpellings fails bob's logins until he is limited,
// then tries his password under spellings slapd reads as bob: they share
// his limit, so none reaches the directory.
func TestLDAPRateLimitAcrossSpellings(t *testing.T) {
	s, _ := ldapStack(t)
	attempt := func(addr, user, password string) *http.Response {
		t.Helper()
		c := fromAddr(browser(t), addr)
		resp, _ := openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap").submit(t, c, user, password)
		return resp
	}
	for i := 1; i <= 5; i++ {
		if resp := attempt("10.3.4."+strconv.Itoa(i), ldapserver.Bob, "guess-"+strconv.Itoa(i)); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d, want 401", i, resp.StatusCode)
		}
	}
	for i, spelling := range []string{"ｂｏｂ", "ＢＯＢ", "𝐛ob", "ⓑob", "\u3000bob"} {
		if resp := attempt("10.3.5."+strconv.Itoa(i+1), spelling, ldapserver.BobPassword); resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("%q with bob's password while bob is limited: %d, want 429", spelling, resp.StatusCode)
		}
	}
}

// TestLDAPRateLimitAcrossAttributes logs in by uid or by mail, as many
// directories are set up to (AD: sAMAccountName or userPrincipalName): once
// bob's uid is limited, his mail address is held back too, before his
// password is tried, because both find the same entry, and answered as a
// wrong password, as an unknown username would be. Other users are not.
func TestLDAPRateLimitAcrossAttributes(t *testing.T) {
	byUIDOrMail := strings.Replace(ldapConfig, "(uid={username})", "(|(uid={username})(mail={username}))", 1)
	s, _ := ldapStackWith(t, byUIDOrMail)
	attempt := func(addr, user, password string) *http.Response {
		t.Helper()
		c := fromAddr(browser(t), addr)
		resp, _ := openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap").submit(t, c, user, password)
		return resp
	}
	if resp := attempt("10.3.6.1", "alice@example.com", ldapserver.AlicePassword); resp.StatusCode != http.StatusFound {
		t.Fatalf("alice by mail: %d, want 302 (the filter takes mail)", resp.StatusCode)
	}
	for i := 1; i <= 5; i++ {
		if resp := attempt("10.3.6."+strconv.Itoa(i+1), ldapserver.Bob, "guess-"+strconv.Itoa(i)); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d, want 401", i, resp.StatusCode)
		}
	}
	// His right password: had it been tried, it would have logged him in.
	// A 429 would tell that bob@example.com names an account.
	c := fromAddr(browser(t), "10.3.7.1")
	resp, body := openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap").submit(t, c, "bob@example.com", ldapserver.BobPassword)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Wrong username or password") {
		t.Errorf("bob's mail with his password while his uid is limited: %d, want 401 Wrong username or password\n%s", resp.StatusCode, body)
	}
	if resp := attempt("10.3.7.2", "alice@example.com", ldapserver.AlicePassword); resp.StatusCode != http.StatusFound {
		t.Errorf("alice by mail while bob is limited: %d, want 302", resp.StatusCode)
	}
}

// TestLDAPFailureCountsInRedisNameNobody fails logins with the counts in
// Redis, then lists its keys: key names show in SCAN, MONITOR and SLOWLOG,
// and none may hold the client's address, the username or the account's DN.
func TestLDAPFailureCountsInRedisNameNobody(t *testing.T) {
	rdb := redisserver.Start(t)
	s, _ := ldapStackWith(t, strings.Replace(ldapConfig, "  keys: [SESSION_KEY]\n",
		"  keys: [SESSION_KEY]\n  store: redis\n  redis: {url: "+rdb.URL+"}\n", 1))
	for _, addr := range []string{"10.5.0.9", "2001:db8:5::7"} {
		c := fromAddr(browser(t), addr)
		for _, user := range []string{ldapserver.Bob, "mallory"} { // an account the directory has, and none
			if resp, _ := openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap").submit(t, c, user, "guess"); resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("%s from %s: %d, want 401", user, addr, resp.StatusCode)
			}
		}
	}
	client := redis.NewClient(&redis.Options{Addr: rdb.Addr})
	t.Cleanup(func() { client.Close() })
	keys, err := client.Keys(t.Context(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, k := range keys {
		for _, clear := range []string{"10.5.0.9", "2001:db8:5", ldapserver.Bob, "mallory", ldapserver.UserDN(ldapserver.Bob)} {
			if strings.Contains(strings.ToLower(k), strings.ToLower(clear)) {
				t.Errorf("key %q names %q in the clear", k, clear)
			}
		}
		if kind, _, ok := strings.Cut(strings.TrimPrefix(k, "portcullis:lim:"), ":"); ok && strings.HasPrefix(k, "portcullis:lim:") {
			counts[kind]++
		}
	}
	// Two usernames, bob's account (counted under its DN, and under its IdP
	// and DN as builds before 453e932 count it: a rolling update from one
	// shares the count), two addresses.
	if want := map[string]int{"user": 2, "account": 2, "addr": 2}; !maps.Equal(counts, want) {
		t.Errorf("failure counts in Redis by kind: %v, want %v; keys: %q", counts, want, keys)
	}
}

func scrape(t *testing.T, s *stack) string {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Handler.Admin().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// TestLDAPDirectoryAway stops slapd: logins get a clear 503 page (not
// "wrong password"), /readyz says so, and logins work again once it is back.
func TestLDAPDirectoryAway(t *testing.T) {
	s, dir := ldapStack(t)
	c := fromAddr(browser(t), "10.4.0.1")
	if resp, _ := openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap").submit(t, c, ldapserver.Alice, ldapserver.AlicePassword); resp.StatusCode != http.StatusFound {
		t.Fatalf("login before the stop: %d", resp.StatusCode)
	}

	dir.Stop()
	c = fromAddr(browser(t), "10.4.0.2")
	form := openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap") // the form itself needs no directory
	resp, body := form.submit(t, c, ldapserver.Alice, ldapserver.AlicePassword)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "Directory unavailable") || strings.Contains(body, "Wrong username") {
		t.Fatalf("login with the directory stopped: %d, want 503 \"Directory unavailable\":\n%s", resp.StatusCode, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
	if problems := s.Handler.Ready(); problems["idp corp-ldap"] == "" {
		t.Errorf("Ready with the directory stopped: %v, want a problem for corp-ldap", problems)
	}
	// Failures while the directory is away are not held against the user.
	for range 5 {
		openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap").submit(t, c, ldapserver.Alice, "wrong")
	}

	dir.Restart()
	resp, body = openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap").submit(t, c, ldapserver.Alice, ldapserver.AlicePassword)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("login after the restart: %d, want 302:\n%s", resp.StatusCode, body)
	}
	if problems := s.Handler.Ready(); len(problems) > 0 {
		t.Errorf("Ready after the restart: %v", problems)
	}
}

// TestLDAPBasicAuth calls a legacy API route with Basic credentials that
// the proxy checks at the directory.
func TestLDAPBasicAuth(t *testing.T) {
	s, dir := ldapStack(t)
	call := func(addr, path, authorization string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", s.URL+path, nil)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("X-Forwarded-For", addr)
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	basic := func(user, password string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	}

	t.Run("valid credentials reach the upstream as that user, without the password", func(t *testing.T) {
		s.Upstream.Reset()
		resp, body := call("10.5.0.1", "/legacy/items", basic(ldapserver.Alice, ldapserver.AlicePassword))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		got, _ := s.Upstream.Last()
		if got.Header.Get("X-Email") != "alice@example.com" || got.Header.Get("X-Groups") != "admin" {
			t.Errorf("upstream saw X-Email %q X-Groups %q", got.Header.Get("X-Email"), got.Header.Get("X-Groups"))
		}
		if got.Header.Get("Authorization") != "" {
			t.Errorf("the Basic credentials reached the upstream")
		}
		if strings.Contains(resp.Header.Get("Set-Cookie"), "portcullis=") {
			t.Errorf("a Basic auth call made a session")
		}
	})
	t.Run("nested groups count for Basic auth too", func(t *testing.T) {
		s.Upstream.Reset()
		if resp, body := call("10.5.0.1", "/legacy/items", basic(ldapserver.Bob, ldapserver.BobPassword)); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if got, _ := s.Upstream.Last(); got.Header.Get("X-Groups") != "worker" {
			t.Errorf("upstream saw X-Groups %q, want worker", got.Header.Get("X-Groups"))
		}
	})
	for _, tc := range []struct{ name, authorization string }{
		{"a wrong password", basic(ldapserver.Alice, "wrong")},
		{"an unknown user", basic("mallory", "x")},
		{"an empty password", basic(ldapserver.Alice, "")},
		{"an injected filter", basic("*)(uid=*", ldapserver.AlicePassword)},
		{"malformed Basic credentials", "Basic !!!"},
	} {
		t.Run(tc.name+" gets 401 asking for Basic credentials", func(t *testing.T) {
			s.Upstream.Reset()
			resp, body := call("10.5.1.1", "/legacy/items", tc.authorization)
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Basic realm="Corporate directory"`) {
				t.Errorf("status %d WWW-Authenticate %q: %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
			}
			if _, reached := s.Upstream.Last(); reached {
				t.Errorf("the request reached the upstream")
			}
		})
	}
	t.Run("without credentials the route wants a session as usual", func(t *testing.T) {
		if resp, _ := call("10.5.1.2", "/legacy/items", ""); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != "" {
			t.Errorf("status %d WWW-Authenticate %q, want the usual 401 without a Basic challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})
	t.Run("a checked password is reused from the cache for a while", func(t *testing.T) {
		dir.Stop()
		defer dir.Restart()
		if resp, body := call("10.5.0.1", "/legacy/items", basic(ldapserver.Alice, ldapserver.AlicePassword)); resp.StatusCode != http.StatusOK {
			t.Errorf("cached credentials with the directory stopped: %d: %s", resp.StatusCode, body)
		}
		// Only the exact password is cached.
		if resp, body := call("10.5.0.2", "/legacy/items", basic(ldapserver.Alice, ldapserver.AlicePassword+"x")); resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("another password with the directory stopped: %d, want 503: %s", resp.StatusCode, body)
		}
	})
	t.Run("Basic auth failures are rate limited", func(t *testing.T) {
		for i := 1; i <= 5; i++ {
			call("10.5.2."+strconv.Itoa(i), "/legacy/items", basic(ldapserver.StarUser, "guess"))
		}
		resp, _ := call("10.5.2.9", "/legacy/items", basic(ldapserver.StarUser, ldapserver.StarUserPassword))
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Errorf("sixth attempt: %d Retry-After %q, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	})
	t.Run("credentials on other API routes still pass through untouched", func(t *testing.T) {
		s.Upstream.Reset()
		resp, _ := call("10.5.3.1", "/api/tasks", "Token abc")
		got, _ := s.Upstream.Last()
		if resp.StatusCode != http.StatusOK || got.Header.Get("Authorization") != "Token abc" || got.Header.Get("X-Email") != "" {
			t.Errorf("bypass: %d Authorization %q X-Email %q", resp.StatusCode, got.Header.Get("Authorization"), got.Header.Get("X-Email"))
		}
	})
}

// TestLDAPFormInChromium logs in with the form in a real browser: wrong
// password first, then the right one, landing on the page first asked for.
func TestLDAPFormInChromium(t *testing.T) {
	s, _ := ldapStack(t)
	browserCtx := newChromium(t)
	artifacts := artifactDir(t)
	tab := newTab(t, browserCtx)

	step(t, tab, "open a page", chromedp.Navigate(s.URL+"/projects"))
	step(t, tab, "wait for the login form", chromedp.WaitVisible(chromedp.CSS(`#username`)))
	if loc := value(t, tab, "read the location", chromedp.Location()); !strings.Contains(loc, "/.portcullis/ldap/corp-ldap?rd=") {
		t.Fatalf("opening /projects led to %s, want the LDAP form", loc)
	}
	screenshot(t, tab, artifacts, "ldap-form.png")

	step(t, tab, "sign in with a wrong password",
		chromedp.SendKeys(chromedp.CSS(`#username`), ldapserver.Alice),
		chromedp.SendKeys(chromedp.CSS(`#password`), "wrong"),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#form-error`)),
	)
	screenshot(t, tab, artifacts, "ldap-form-wrong-password.png")
	if msg := value(t, tab, "read the error", chromedp.Text(chromedp.CSS(`#form-error`))); msg != "Wrong username or password." {
		t.Errorf("error message %q", msg)
	}
	if user := value(t, tab, "read the username", chromedp.Value(chromedp.CSS(`#username`))); user != ldapserver.Alice {
		t.Errorf("the form forgot the username: %q", user)
	}

	step(t, tab, "sign in with the right password",
		chromedp.SendKeys(chromedp.CSS(`#password`), ldapserver.AlicePassword),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#email`)),
	)
	screenshot(t, tab, artifacts, "ldap-signed-in.png")
	if loc := value(t, tab, "read the location", chromedp.Location()); loc != s.URL+"/projects" {
		t.Errorf("landed on %s, want %s/projects", loc, s.URL)
	}
	if email := value(t, tab, "read the email", chromedp.Text(chromedp.CSS(`#email`))); email != "alice@example.com" {
		t.Errorf("echo page shows %q", email)
	}
	if role := value(t, tab, "read the role", chromedp.Text(chromedp.CSS(`#role`))); role != "admin" {
		t.Errorf("echo page shows role %q", role)
	}
}

// TestLDAPDeviceCookieInChromium signs alice in with the form in a real
// browser, signs her out, and has someone else fail enough guesses as
// alice that her username is held back for every new browser: Chromium
// kept the device cookie her sign-in set (Path the form's, SameSite=Strict)
// and sends it with the form, so her right password still gets her in.
func TestLDAPDeviceCookieInChromium(t *testing.T) {
	s, _ := ldapStack(t)
	tab := newTab(t, newChromium(t))
	signIn := func(what string) {
		t.Helper()
		step(t, tab, what,
			chromedp.Navigate(s.URL+"/projects"),
			chromedp.WaitVisible(chromedp.CSS(`#username`)),
			chromedp.SendKeys(chromedp.CSS(`#username`), ldapserver.Alice),
			chromedp.SendKeys(chromedp.CSS(`#password`), ldapserver.AlicePassword),
			chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#email`)),
		)
	}
	signIn("sign in")
	step(t, tab, "sign out", chromedp.Navigate(s.URL+"/.portcullis/logout"),
		chromedp.WaitVisible(chromedp.CSS(`[role="status"]`)))

	attempt := func(addr, password string) int {
		t.Helper()
		c := fromAddr(browser(t), addr)
		resp, _ := openForm(t, c, s.URL+"/.portcullis/ldap/corp-ldap").submit(t, c, ldapserver.Alice, password)
		return resp.StatusCode
	}
	for i := 1; i <= 5; i++ {
		if code := attempt("10.6.0.1", "guess-"+strconv.Itoa(i)); code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d, want 401", i, code)
		}
	}
	if code := attempt("10.6.0.2", ldapserver.AlicePassword); code != http.StatusTooManyRequests {
		t.Fatalf("alice's password from a new browser after five failed guesses: %d, want 429", code)
	}

	signIn("sign in again while alice's username is held back")
	if loc := value(t, tab, "read the location", chromedp.Location()); loc != s.URL+"/projects" {
		t.Errorf("landed on %s, want %s/projects", loc, s.URL)
	}
}
