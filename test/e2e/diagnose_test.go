package e2e

// The mistakes operators make when they first set portcullis up, made for
// real against the test IdPs: what the browser gets, what the log says, and
// the metric. The page says what the user can do and gives the request ID;
// the log line for that request ID gives a stable reason and a hint that
// says what to change, and neither holds a secret.

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crewjam/saml"

	"github.com/portcullis-proxy/portcullis/proxy"
	"github.com/portcullis-proxy/portcullis/proxy/jsonlog"
	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// operatorLog is the proxy's log as `portcullis serve` writes it: JSON
// lines, info and up.
type operatorLog struct{ out process.Output }

// startLogged is start with the proxy's log kept in an operatorLog.
func (s *stack) startLogged(t *testing.T, configYAML string) *operatorLog {
	t.Helper()
	l := s.serveLogged(t, configYAML)
	s.waitReady(t)
	return l
}

// serveLogged is startLogged without waiting for the IdPs to be ready.
func (s *stack) serveLogged(t *testing.T, configYAML string) *operatorLog {
	t.Helper()
	l := &operatorLog{}
	s.serve(t, configYAML, jsonlog.New(&l.out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("portcullis log:\n%s", l.out.String())
		}
	})
	return l
}

// find returns the lines that have every field of match.
func (l *operatorLog) find(t *testing.T, match map[string]any) []map[string]any {
	t.Helper()
	var found []map[string]any
	for _, text := range strings.Split(strings.TrimSpace(l.out.String()), "\n") {
		if text == "" {
			continue // nothing logged yet: callers poll
		}
		var line map[string]any
		if err := json.Unmarshal([]byte(text), &line); err != nil {
			t.Fatalf("log line is not JSON: %q", text)
		}
		ok := true
		for k, v := range match {
			ok = ok && line[k] == v
		}
		if ok {
			found = append(found, line)
		}
	}
	return found
}

// audit returns the one audit line event wrote for the request resp
// answered.
func (l *operatorLog) audit(t *testing.T, resp *http.Response, event string) map[string]any {
	t.Helper()
	lines := l.find(t, map[string]any{"log": "audit", "event": event, "request_id": resp.Header.Get("X-Request-Id")})
	if len(lines) != 1 {
		t.Fatalf("%d %s audit lines for request %s, want 1", len(lines), event, resp.Header.Get("X-Request-Id"))
	}
	return lines[0]
}

// metric is the value of one series on the admin listener's /metrics,
// summed over the replicas as a dashboard does; -1 when there is none.
func (s *stack) metric(t *testing.T, series string) float64 {
	t.Helper()
	replicas := s.all
	if replicas == nil {
		replicas = []*proxy.Handler{s.Handler}
	}
	sum, found := 0.0, false
	for _, h := range replicas {
		rec := httptest.NewRecorder()
		h.Admin().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		for _, line := range strings.Split(rec.Body.String(), "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("metric line %q: %v", line, err)
				}
				sum, found = sum+f, true
			}
		}
	}
	if !found {
		return -1
	}
	return sum
}

// operatorSees checks what a login that failed for reason shows: a page
// with status, the words says and the request ID, naming none of the
// internals, and
// the one login_failed audit line of that request, with reason and a hint
// that mentions every one of hints; it returns that line.
func operatorSees(t *testing.T, s *stack, logs *operatorLog, resp *http.Response, status int, says, reason string, hints ...string) map[string]any {
	t.Helper()
	page := readBody(t, resp)
	id := resp.Header.Get("X-Request-Id")
	if resp.StatusCode != status || !strings.Contains(page, says) || !strings.Contains(page, id) {
		t.Errorf("page: status %d, want %d, saying %q, with the request ID %q:\n%s", resp.StatusCode, status, says, id, page)
	}
	for _, internal := range append([]string{reason}, hints...) {
		if strings.Contains(page, internal) {
			t.Errorf("the page shows %q, which is for the operator:\n%s", internal, page)
		}
	}
	line := logs.audit(t, resp, "login_failed")
	if line["reason"] != reason {
		t.Errorf("login_failed reason = %v, want %s", line["reason"], reason)
	}
	hint, _ := line["hint"].(string)
	for _, h := range hints {
		if !strings.Contains(hint, h) {
			t.Errorf("login_failed hint %q does not mention %q", hint, h)
		}
	}
	if got := s.metric(t, `portcullis_logins_total{idp="`+fmt.Sprint(line["idp"])+`",result="failure"}`); got != 1 {
		t.Errorf("logins_total{idp=%q} failure = %v, want 1", line["idp"], got)
	}
	return line
}

// setupPage is what the page of a login the IdP and the proxy are not set
// up to complete says to the user.
const setupPage = "not with your account"

// oidcStackLogged is oidcStack with the operator's log, and cvatConfig
// changed by edit.
func oidcStackLogged(t *testing.T, o oidcserver.Options, edit func(config string) string) (*stack, *oidcserver.Server, *operatorLog) {
	t.Helper()
	s := listen(t)
	if o.RedirectURIs == nil {
		o.RedirectURIs = []string{s.URL + "/.portcullis/oidc/company/callback"}
	}
	idpSrv := oidcserver.Start(t, o)
	config := strings.Replace(cvatConfig, "ISSUER", idpSrv.Issuer, 1)
	if edit != nil {
		config = edit(config)
	}
	return s, idpSrv, s.startLogged(t, config)
}

// A client secret that is not the IdP's: the token endpoint answers
// invalid_client. The log names the keys to check, the secret's
// environment variable among them, and neither secret.
func TestWrongClientSecretIsNamedInTheLog(t *testing.T) {
	s, _, logs := oidcStackLogged(t, oidcserver.Options{}, func(c string) string {
		return strings.Replace(c, "client_secret: portcullis-secret", "client_secret: not-the-secret", 1)
	})
	resp := oidcserver.Login(t, browser(t), s.URL+"/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	if resp.Request.URL.Path != "/.portcullis/oidc/company/callback" {
		t.Fatalf("the login ended at %s, want the callback's page", resp.Request.URL)
	}
	operatorSees(t, s, logs, resp, http.StatusBadGateway, setupPage, "invalid_client",
		"client_secret", "PORTCULLIS_IDP_COMPANY_CLIENT_SECRET", "token_auth_method", "client_secret_basic")
	for _, secret := range []string{"portcullis-secret", "not-the-secret"} {
		if strings.Contains(logs.out.String(), secret) {
			t.Errorf("the log holds a client secret, %q", secret)
		}
	}
}

// The same at an IdP that answers a client authentication it does not
// accept with unauthorized_client (Glewlwyd 2.7.5, 403), which RFC 6749
// keeps for a grant type the client may not use: the log names the
// credentials to check too, not only the grant.
func TestWrongClientSecretAtAnIdPThatSaysUnauthorizedClient(t *testing.T) {
	s, _, logs := oidcStackLogged(t, oidcserver.Options{ClientAuthUnauthorized: true}, func(c string) string {
		return strings.Replace(c, "client_secret: portcullis-secret", "client_secret: not-the-secret", 1)
	})
	resp := oidcserver.Login(t, browser(t), s.URL+"/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	if resp.Request.URL.Path != "/.portcullis/oidc/company/callback" {
		t.Fatalf("the login ended at %s, want the callback's page", resp.Request.URL)
	}
	operatorSees(t, s, logs, resp, http.StatusBadGateway, setupPage, "unauthorized_client",
		"authorization code grant", "client_secret", "PORTCULLIS_IDP_COMPANY_CLIENT_SECRET", "token_auth_method", "client_secret_basic")
}

// An IdP that releases a claim nested 100 levels deep (a user-editable
// attribute, a mapper gone wrong): the login is refused, not cut short, and
// the log names the reason and the claim.
func TestDeeplyNestedClaimIsRefused(t *testing.T) {
	var deep any = "bottom"
	for range 100 {
		deep = map[string]any{"a": deep}
	}
	dave := oidcserver.User{Password: "dave-pw", Email: "dave@example.com", EmailVerified: true, Groups: []string{"annotators"},
		Extra: map[string]any{"profile_data": deep}}
	s, _, logs := oidcStackLogged(t, oidcserver.Options{ExtraUsers: map[string]oidcserver.User{"dave": dave}}, nil)
	b := browser(t)
	resp := oidcserver.Login(t, b, s.URL+"/tasks", "dave", "dave-pw")
	if resp.Request.URL.Path != "/.portcullis/oidc/company/callback" {
		t.Fatalf("the login ended at %s, want the callback's page", resp.Request.URL)
	}
	line := operatorSees(t, s, logs, resp, http.StatusBadGateway, "nested deeper than a sign-in here accepts", "claims_too_deep",
		"more than 32 levels", "stop releasing it")
	if e, _ := line["err"].(string); !strings.Contains(e, `claim "profile_data"`) {
		t.Errorf("login_failed err %q does not name the claim", e)
	}
	if code := userinfo(t, s, b.Jar.Cookies(mustURL(t, s.URL))); code != http.StatusUnauthorized {
		t.Errorf("after the refused login, /userinfo answered %d, want 401", code)
	}
	// The others at the same IdP sign in as before.
	readBody(t, oidcserver.Login(t, browser(t), s.URL+"/tasks", oidcserver.Bob, oidcserver.BobPassword))
	if n := len(logs.find(t, map[string]any{"log": "audit", "event": "login", "sub": oidcserver.Bob})); n != 1 {
		t.Errorf("%d login lines for bob, want 1", n)
	}
}

// A callback with a code the IdP never issued, and the state of a login
// this browser started: anyone can send one. The IdP answers invalid_grant
// (Glewlwyd 2.7: 403 invalid_code), which is the client's doing, not a
// set-up mistake: a plain refusal, not an error line telling the operator
// to change the set-up.
func TestMadeUpCodeIsNoSetUpMistake(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    oidcserver.Options
	}{
		{"the IdP answers invalid_grant", oidcserver.Options{}},
		{"the IdP answers invalid_code", oidcserver.Options{CodeRefusedAsInvalidCode: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, idpSrv, logs := oidcStackLogged(t, tc.o, nil)
			b := browser(t)
			start, err := noRedirect(b).Get(s.URL + "/.portcullis/login/company?rd=/tasks")
			if err != nil {
				t.Fatal(err)
			}
			start.Body.Close()
			at, err := url.Parse(start.Header.Get("Location"))
			if err != nil || at.Query().Get("state") == "" {
				t.Fatalf("the login went to %q, want the IdP with a state", start.Header.Get("Location"))
			}
			resp, err := b.Get(s.URL + "/.portcullis/oidc/company/callback?code=made-up&state=" + url.QueryEscape(at.Query().Get("state")) +
				"&iss=" + url.QueryEscape(idpSrv.Issuer))
			if err != nil {
				t.Fatal(err)
			}
			page := readBody(t, resp)
			line := logs.audit(t, resp, "login_failed")
			if resp.StatusCode == http.StatusBadGateway || strings.Contains(page, setupPage) || line["reason"] != "idp" || line["level"] == "ERROR" || line["hint"] != nil {
				t.Errorf("status %d, login_failed line %v: want a plain refusal (reason idp, no hint, not an error)", resp.StatusCode, line)
			}
		})
	}
}

// An IdP whose clock is off: its ID tokens are issued in the future, or
// expired already. The log says it is the clocks, by how much.
func TestClockSkewIsNamedInTheLog(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    oidcserver.Options
		hint string
	}{
		{"an IdP ten minutes ahead issues ID tokens in the future", oidcserver.Options{ClockSkew: 10 * time.Minute}, "ahead of this machine's clock"},
		{"an IdP ten minutes behind issues five-minute ID tokens already expired",
			oidcserver.Options{ClockSkew: -10 * time.Minute, IDTokenTTL: 5 * time.Minute}, "behind this one's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, logs := oidcStackLogged(t, tc.o, nil)
			resp := oidcserver.Login(t, browser(t), s.URL+"/tasks", oidcserver.Alice, oidcserver.AlicePassword)
			operatorSees(t, s, logs, resp, http.StatusBadGateway, setupPage, "clock_skew", tc.hint, "NTP")
		})
	}
}

// readyz is the admin listener's /readyz: its status and body.
func (s *stack) readyz(t *testing.T) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Handler.Admin().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	return rec.Code, rec.Body.String()
}

// A server_url that is not the issuer: discovery fails, and /readyz and the
// log say what server_url must be, and when to retry in words rather than
// nanoseconds. Either the IdP names another issuer (another host name for
// it here; http for https, or a path, elsewhere), or there is no discovery
// document at all (the IdP's host without the issuer's path, as Keycloak
// without /realms/NAME), which said only "404 Not Found".
func TestServerURLNotTheIssuerSaysWhatItMustBe(t *testing.T) {
	for _, tc := range []struct {
		name      string
		serverURL func(issuer string) string
		want      func(issuer string) []string
	}{
		{"the IdP names another issuer",
			func(issuer string) string { return strings.Replace(issuer, "127.0.0.1", "localhost", 1) },
			func(issuer string) []string {
				return []string{`set server_url to the issuer exactly as the IdP names it, "` + issuer + `"`}
			}},
		{"no discovery document there",
			func(issuer string) string { return issuer + "/realms/cvat" },
			func(string) []string { return []string{"404", "server_url must be the issuer"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := listen(t)
			idpSrv := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{s.URL + "/.portcullis/oidc/company/callback"}})
			logs := s.serveLogged(t, strings.Replace(cvatConfig, "ISSUER", tc.serverURL(idpSrv.Issuer), 1))
			var lines []map[string]any
			deadline := time.Now().Add(20 * time.Second)
			for len(lines) == 0 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				lines = logs.find(t, map[string]any{"msg": "oidc discovery failed; retrying", "idp": "company"})
			}
			if len(lines) == 0 {
				t.Fatal("no line says that discovery failed")
			}
			if lines[0]["retry_in"] != "1s" {
				t.Errorf("retry_in = %v, want 1s", lines[0]["retry_in"])
			}
			status, body := s.readyz(t)
			var ready struct{ Problems map[string]string }
			json.Unmarshal([]byte(body), &ready)
			err, _ := lines[0]["err"].(string)
			for _, want := range tc.want(idpSrv.Issuer) {
				if !strings.Contains(err, want) {
					t.Errorf("discovery error %q does not say %s", err, want)
				}
				if status != http.StatusServiceUnavailable || !strings.Contains(ready.Problems["idp company"], want) {
					t.Errorf("/readyz: %d %s; want 503 saying %s", status, body, want)
				}
			}
		})
	}
}

// An IdP that sends no email or no groups claim (a scope not asked for, an
// attribute not configured): its users get in with no email upstream and
// the default role. Each login line names the claims left out and the names
// of those the IdP did send, never their values, and the first login that
// leaves out a set also writes a warning that says what to change.
func TestMissingClaimsAreNamedInTheLoginLine(t *testing.T) {
	for _, conform := range []bool{false, true} {
		name := map[bool]string{false: "claims in the ID token", true: "claims from userinfo"}[conform]
		t.Run(name, func(t *testing.T) {
			s, _, logs := oidcStackLogged(t, oidcserver.Options{ConformIDTokenClaims: conform}, func(c string) string {
				return strings.Replace(c, "scopes: [openid, email, profile, groups]", "scopes: [openid, profile]", 1)
			})
			for _, user := range []struct{ name, password string }{{oidcserver.Alice, oidcserver.AlicePassword}, {oidcserver.Bob, oidcserver.BobPassword}} {
				resp := oidcserver.Login(t, browser(t), s.URL+"/tasks", user.name, user.password)
				readBody(t, resp)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("login of %s: %d, want the upstream's page (the default role)", user.name, resp.StatusCode)
				}
				lines := logs.find(t, map[string]any{"event": "login", "sub": user.name})
				if len(lines) != 1 {
					t.Fatalf("%d login lines for %s, want 1", len(lines), user.name)
				}
				checkMissing(t, lines[0], map[string]any{"email": "email", "groups": "groups"}, "preferred_username", "scopes")
			}
			if warned := logs.find(t, map[string]any{"level": "WARN", "msg": "login: the IdP sent no claim for a profile field"}); len(warned) != 1 {
				t.Errorf("%d warnings for two logins without the same claims, want 1", len(warned))
			}
		})
	}
}

// checkMissing checks the missing_claims of a login line, and that its
// claims_sent has the claim sent and only names.
func checkMissing(t *testing.T, line map[string]any, want map[string]any, sent, hint string) {
	t.Helper()
	missing, _ := line["missing_claims"].(map[string]any)
	if len(missing) != len(want) {
		t.Errorf("missing_claims = %v, want %v", line["missing_claims"], want)
	}
	for k, v := range want {
		if missing[k] != v {
			t.Errorf("missing_claims = %v, want %v", line["missing_claims"], want)
		}
	}
	names, _ := line["claims_sent"].([]any)
	found := false
	for _, n := range names {
		found = found || n == sent
		if s, _ := n.(string); strings.ContainsAny(s, "@ ") {
			t.Errorf("claims_sent has %q, which looks like a value", s)
		}
	}
	if !found {
		t.Errorf("claims_sent = %v, want %s among them", names, sent)
	}
	if h, _ := line["hint"].(string); !strings.Contains(h, hint) {
		t.Errorf("hint %q does not mention %s", h, hint)
	}
}

// samlStackLogged is samlStack, the IdP given by x509_cert and sso_url,
// with the operator's log: trusted is the certificate the proxy trusts
// (nil: the IdP's own), and edit changes samlConfig.
func samlStackLogged(t *testing.T, trusted *x509.Certificate, edit func(config string) string) (*stack, *samlserver.Server, *operatorLog) {
	t.Helper()
	idpSrv := samlserver.Start(t, samlserver.Options{Users: []samlserver.User{samlAlice, samlBob}})
	if trusted == nil {
		trusted = idpSrv.Certificate
	}
	s := listen(t)
	src := "x509_cert: " + base64.StdEncoding.EncodeToString(trusted.Raw) + "\n      sso_url: " + idpSrv.SSOURL()
	config := strings.NewReplacer("ENTITY_ID", idpSrv.EntityID(), "IDP_SOURCE", src).Replace(samlConfig)
	if edit != nil {
		config = edit(config)
	}
	logs := s.startLogged(t, config)
	if err := idpSrv.AddServiceProviderURL(t.Context(), s.URL+"/.portcullis/saml/corp/metadata"); err != nil {
		t.Fatal(err)
	}
	return s, idpSrv, logs
}

// The SAML side of it: an attribute_mapping naming an attribute the IdP
// does not send.
func TestMissingSAMLAttributesAreNamedInTheLoginLine(t *testing.T) {
	s, idpSrv, logs := samlStackLogged(t, nil, func(c string) string {
		return strings.Replace(c, "attribute_mapping: {groups: groups}", "attribute_mapping: {groups: memberOf}", 1)
	})
	resp := samlLogin(t, browser(t), idpSrv.SSOURL(), s.URL+"/tasks", samlAlice.Name, samlAlice.Password)
	readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d, want the upstream's page (the default role)", resp.StatusCode)
	}
	lines := logs.find(t, map[string]any{"event": "login", "email": samlAlice.Email})
	if len(lines) != 1 {
		t.Fatalf("%d login lines, want 1", len(lines))
	}
	checkMissing(t, lines[0], map[string]any{"groups": "memberOf"}, samlserver.GroupsAttribute, "attribute_mapping")
}

// An IdP that sends no email_verified at all (LemonLDAP::NG as it comes,
// ADFS) and an entry with allowed_email_domains, which admits only verified
// addresses: the login is refused, as it should be, but the page does not
// send the user to verify an address at an IdP that has nothing to verify,
// and the denied line tells the operator which claim the IdP left out and
// what else would do (trust_email). An IdP that says the address is
// verified, or that it is not, is answered as before.
func TestUnsaidEmailVerificationIsNamed(t *testing.T) {
	dave := oidcserver.User{Password: "dave-pw", Email: "dave@example.com", Groups: []string{"annotators"}}
	erin := oidcserver.User{Password: "erin-pw", Email: "erin@example.com", EmailVerified: "false", Groups: []string{"annotators"}}
	// fay's IdP sends no groups either: the line's one hint says both.
	fay := oidcserver.User{Password: "fay-pw", Email: "fay@example.com"}
	users := map[string]oidcserver.User{"dave": dave, "erin": erin, "fay": fay}
	s, _, logs := oidcStackLogged(t, oidcserver.Options{ExtraUsers: users}, func(c string) string {
		return strings.Replace(c, "      scopes: [openid, email, profile, groups]\n",
			"      scopes: [openid, email, profile, groups]\n      allowed_email_domains: [example.com]\n", 1)
	})
	for _, tc := range []struct {
		user, password string
		says, not      string // on the page
		hints          []string
	}{
		{"dave", "dave-pw", "Company SSO did not say whether your email address is verified", "Verify it there", []string{"email_verified", "trust_email"}},
		{"erin", "erin-pw", "Your email address is not verified at Company SSO", "did not say", nil},
		{"fay", "fay-pw", "Company SSO did not say whether your email address is verified", "Verify it there", []string{"trust_email", "ask for the scope that releases it"}},
	} {
		resp := oidcserver.Login(t, browser(t), s.URL+"/tasks", tc.user, tc.password)
		page := readBody(t, resp)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(page, tc.says) || strings.Contains(page, tc.not) {
			t.Errorf("%s: page %d, want 403 saying %q and not %q:\n%s", tc.user, resp.StatusCode, tc.says, tc.not, page)
		}
		lines := logs.find(t, map[string]any{"msg": "login denied", "sub": tc.user})
		if len(lines) != 1 {
			t.Fatalf("%s: %d login denied lines, want 1", tc.user, len(lines))
		}
		hint, _ := lines[0]["hint"].(string)
		for _, h := range tc.hints {
			if !strings.Contains(hint, h) {
				t.Errorf("%s: login denied hint %q does not mention %s", tc.user, hint, h)
			}
		}
		if tc.hints == nil && hint != "" {
			t.Errorf("%s: login denied hint %q for an IdP that said the address is not verified", tc.user, hint)
		}
	}
	readBody(t, oidcserver.Login(t, browser(t), s.URL+"/tasks", oidcserver.Alice, oidcserver.AlicePassword))
	if n := len(logs.find(t, map[string]any{"log": "audit", "event": "login", "sub": oidcserver.Alice})); n != 1 {
		t.Errorf("%d login lines for alice, whose address the IdP verified, want 1", n)
	}
}

// public_url names another host than the one the browser uses (localhost
// and 127.0.0.1 here; a proxy's internal name and the public one, in real
// set-ups): the login starts where the browser is, the IdP sends it back to
// public_url, and there the login's cookie is not sent. The page says to
// open the application at public_url, which works, and the log what the
// likely causes are.
func TestLoginCookieNotComingBackIsNamed(t *testing.T) {
	s := listen(t)
	public := strings.Replace(s.URL, "127.0.0.1", "localhost", 1)
	idpSrv := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{public + "/.portcullis/oidc/company/callback"}})
	config := strings.Replace(cvatConfig, "ISSUER", idpSrv.Issuer, 1)
	logs := s.startLogged(t, strings.Replace(config, "public_url: PUBLIC_URL", "public_url: "+public, 1))

	b := browser(t)
	resp := oidcserver.Login(t, b, s.URL+"/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	if resp.Request.URL.Host != mustURL(t, public).Host {
		t.Fatalf("the login ended at %s, want public_url's callback", resp.Request.URL)
	}
	line := operatorSees(t, s, logs, resp, http.StatusBadRequest, "Open this application at "+public,
		"state_cookie_missing", "public_url ("+public+")", "another host name", "Secure cookies", "a proxy in front")
	if line["err"] != "no login in progress in this browser for this state" {
		t.Errorf("login_failed err = %v", line["err"])
	}

	// As the page says: at public_url the same browser signs in.
	resp = oidcserver.Login(t, b, public+"/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	readBody(t, resp)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Echo") != "1" {
		t.Errorf("login at public_url: %d, want the upstream's page", resp.StatusCode)
	}
}

// replicas runs one proxy for each of keys (session.keys) behind one
// address, a load balancer that sends each request to the replica route
// picks, all logging to one operatorLog; s.Handler is the first, s.all
// every one.
func (s *stack) replicas(t *testing.T, configYAML string, keys []string, route func(*http.Request) int) *operatorLog {
	t.Helper()
	logs := &operatorLog{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("portcullis log:\n%s", logs.out.String())
		}
	})
	var hs []*proxy.Handler
	for i, key := range keys {
		config := strings.NewReplacer("PUBLIC_URL", s.URL, "UPSTREAM_URL", s.upURL, "SESSION_KEY", key).Replace(configYAML)
		cfg, err := proxy.ParseConfig([]byte(config), os.Getenv)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		h, err := proxy.New(ctx, cfg, slog.New(jsonlog.New(&logs.out, &slog.HandlerOptions{Level: slog.LevelInfo})).With("replica", i))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			s.Handler = h
		}
		hs = append(hs, h)
		s.all = append(s.all, h)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs[route(r)].ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(s.ln)
	t.Cleanup(func() { srv.Close() })
	s.waitReady(t)
	return logs
}

// otherKey is a second session key, as a replica deployed with its own
// secret has.
const otherKey = "c2Vjb25kLXNlc3Npb24ta2V5LTMyLWJ5dGVzLWxvbmc="

// Two replicas with different session.keys behind a load balancer: the
// login starts at one and its answer reaches the other, where the login's
// cookie does not open. The log says to give every replica the same keys.
func TestLoginCookieOfAReplicaWithOtherKeysIsNamed(t *testing.T) {
	s := listen(t)
	idpSrv := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{s.URL + "/.portcullis/oidc/company/callback"}})
	logs := s.replicas(t, strings.Replace(cvatConfig, "ISSUER", idpSrv.Issuer, 1), []string{sessionKey, otherKey}, func(r *http.Request) int {
		if strings.HasSuffix(r.URL.Path, "/callback") {
			return 0
		}
		return 1
	})
	resp := oidcserver.Login(t, browser(t), s.URL+"/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	operatorSees(t, s, logs, resp, http.StatusBadRequest, "tell your administrator",
		"state_cookie_invalid", "session.keys", "every replica")
}

// ldapStackLogged is ldapStackWith with the operator's log, and ldapConfig
// changed by edit; it waits for the directory to be ready.
func ldapStackLogged(t *testing.T, edit func(config string) string) (*stack, *ldapserver.Server, *operatorLog) {
	t.Helper()
	s, dir, logs := ldapStackServing(t, edit, ldapserver.ServicePassword)
	s.waitReady(t)
	return s, dir, logs
}

// ldapStackServing is ldapStackLogged without the wait, for a proxy the
// directory will never let be ready, with bindPassword in the environment.
func ldapStackServing(t *testing.T, edit func(config string) string, bindPassword string) (*stack, *ldapserver.Server, *operatorLog) {
	t.Helper()
	dir := ldapserver.Start(t, ldapserver.Options{})
	t.Setenv("PORTCULLIS_IDP_CORP_LDAP_BIND_PASSWORD", bindPassword)
	s := listen(t)
	config := strings.ReplaceAll(ldapConfig, "LDAP_URL", dir.URL)
	if edit != nil {
		config = edit(config)
	}
	return s, dir, s.serveLogged(t, config)
}

// postLDAPForm fills in the login form page (the answer to GET of the
// form, or of a page that led there) and posts it.
func postLDAPForm(t *testing.T, b *http.Client, form *http.Response, username, password string) *http.Response {
	t.Helper()
	fields := formFields(readBody(t, form))
	if _, ok := fields["state"]; !ok {
		t.Fatalf("%s is not the login form", form.Request.URL)
	}
	values := url.Values{}
	for k, v := range fields {
		values.Set(k, v)
	}
	values.Set("username", username)
	values.Set("password", password)
	resp, err := b.PostForm(form.Request.URL.String(), values)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// A browser that keeps no cookies (blocked for the site, or dropped on the
// way) gets the LDAP form back at every try: the form says why, and the
// log why and what else can be the cause.
func TestLDAPFormCookieNotComingBackIsNamed(t *testing.T) {
	s, _, logs := ldapStackLogged(t, nil)
	noCookies := &http.Client{Transport: acceptHTML{http.DefaultTransport}, Timeout: 30 * time.Second}
	form, err := noCookies.Get(s.URL + "/tasks")
	if err != nil {
		t.Fatal(err)
	}
	resp := postLDAPForm(t, noCookies, form, "alice", "alice-pw")
	page := readBody(t, resp)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "did not send back the cookie") || !strings.Contains(page, "accepts its cookies") {
		t.Errorf("form: %d, want 400 saying that the cookie did not come back:\n%s", resp.StatusCode, page)
	}
	line := logs.audit(t, resp, "login_failed")
	if hint, _ := line["hint"].(string); line["reason"] != "state_cookie_missing" || !strings.Contains(hint, "blocks them") {
		t.Errorf("login_failed line %v, want reason state_cookie_missing with a hint", line)
	}

	// Posted from another site's page (a browser says so), the form is
	// refused before its cookie is looked for: only the form's own page
	// posts it, and no hint blames the set-up.
	crossSite := &http.Client{Transport: crossSitePosts{noCookies.Transport}, Timeout: 30 * time.Second}
	if form, err = crossSite.Get(s.URL + "/tasks"); err != nil {
		t.Fatal(err)
	}
	resp = postLDAPForm(t, crossSite, form, "alice", "alice-pw")
	readBody(t, resp)
	line = logs.audit(t, resp, "login_not_started")
	if resp.StatusCode != http.StatusForbidden || line["reason"] != "another_site" || line["sec_fetch_dest"] != "document" {
		t.Errorf("a cross-site post: %d, login_not_started line %v; want 403 with reason another_site", resp.StatusCode, line)
	}
}

// crossSitePosts says of every POST what a browser says of a form another
// site's page submits.
type crossSitePosts struct{ next http.RoundTripper }

func (c crossSitePosts) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost {
		r = r.Clone(r.Context())
		r.Header.Set("Sec-Fetch-Site", "cross-site")
		r.Header.Set("Sec-Fetch-Mode", "navigate")
		r.Header.Set("Sec-Fetch-Dest", "document")
	}
	return c.next.RoundTrip(r)
}

// keepCookies is a proxy in front that passes on only the cookies whose
// names match: a cache or CDN set up to forward "the application's
// cookies", here every portcullis_ one and CVAT's, but not portcullis
// itself, the session.
func keepCookies(next http.Handler, keep *regexp.Regexp) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var kept []string
		for _, c := range r.Cookies() {
			if keep.MatchString(c.Name) {
				kept = append(kept, c.Name+"="+c.Value)
			}
		}
		r.Header.Del("Cookie")
		if len(kept) > 0 {
			r.Header.Set("Cookie", strings.Join(kept, "; "))
		}
		next.ServeHTTP(w, r)
	})
}

// A login loop: the login succeeds, and the session cookie it set does not
// come back, or does not open, so the browser is sent to sign in again,
// and through an IdP that remembers the user, round and round until the
// browser gives up, every login in the log a success. The proxy stops it at
// the next sign-in with a page that says what the user can do, and a log
// line that says which it is and what causes it.
func TestLoginLoopIsStoppedAndNamed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setUp  func(t *testing.T, s *stack, config string) *operatorLog
		status int
		says   string
		reason string
		hints  []string
	}{
		{
			name: "a proxy in front drops the session cookie",
			setUp: func(t *testing.T, s *stack, config string) *operatorLog {
				logs := s.serveLogged(t, config)
				s.waitReady(t)
				front := &http.Server{Handler: keepCookies(s.Handler, regexp.MustCompile(`^(portcullis_.*|sessionid|csrftoken)$`)), ReadHeaderTimeout: 10 * time.Second}
				s.handOver(t, front)
				return logs
			},
			status: http.StatusBadRequest, says: "did not send back the cookie that keeps you signed in",
			reason: "session_cookie_missing", hints: []string{"without the session cookie (portcullis)", "a proxy, CDN or cache in front", "third-party cookies"},
		},
		{
			name: "replicas have different session keys",
			setUp: func(t *testing.T, s *stack, config string) *operatorLog {
				// The login at the first replica, the application's pages
				// and /login at the second.
				return s.replicas(t, config, []string{sessionKey, otherKey}, func(r *http.Request) int {
					if strings.HasSuffix(r.URL.Path, "/callback") || strings.HasPrefix(r.URL.Path, "/.portcullis/login/") {
						return 0
					}
					return 1
				})
			},
			status: http.StatusInternalServerError, says: "could not read your session",
			reason: "session_cookie_invalid", hints: []string{"does not open here", "different session.keys", "share one Redis"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := listen(t)
			idpSrv := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{s.URL + "/.portcullis/oidc/company/callback"}})
			logs := tc.setUp(t, s, strings.Replace(cvatConfig, "ISSUER", idpSrv.Issuer, 1))
			b := browser(t)
			resp := oidcserver.Login(t, b, s.URL+"/tasks", oidcserver.Alice, oidcserver.AlicePassword)
			if resp.Request.URL.Path != "/.portcullis/login" {
				t.Fatalf("the browser ended at %s (%d), want the loop stopped at /login", resp.Request.URL, resp.StatusCode)
			}
			if n := len(logs.find(t, map[string]any{"event": "login"})); n != 1 {
				t.Errorf("%d logins before the loop was stopped, want 1", n)
			}
			line := operatorSees(t, s, logs, resp, tc.status, tc.says, tc.reason, tc.hints...)
			if line["idp"] != "company" {
				t.Errorf("login_failed idp = %v, want company", line["idp"])
			}
			if page := logs.find(t, map[string]any{"log": "access", "request_id": resp.Header.Get("X-Request-Id")}); len(page) != 1 {
				t.Errorf("%d access lines for the loop's page, want 1", len(page))
			}

			// Try again goes to the IdP, as a sign-in does: the mark is gone.
			again, err := noRedirect(b).Get(resp.Request.URL.String())
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, again)
			if again.StatusCode != http.StatusFound {
				t.Errorf("trying again: %d, want the way to the IdP", again.StatusCode)
			}
		})
	}
}

// Signing out and straight in again is no loop: the sign-out takes the
// mark of the last login with it.
func TestSigningOutAndInAgainIsNoLoop(t *testing.T) {
	s, _, logs := oidcStackLogged(t, oidcserver.Options{}, nil)
	b := browser(t)
	for i := range 2 {
		resp := oidcserver.Login(t, b, s.URL+"/tasks", oidcserver.Alice, oidcserver.AlicePassword)
		readBody(t, resp)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Echo") != "1" {
			t.Fatalf("login %d: %d at %s, want the upstream's page", i+1, resp.StatusCode, resp.Request.URL)
		}
		out, err := b.Get(s.URL + "/.portcullis/logout")
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, out)
	}
	if failed := logs.find(t, map[string]any{"event": "login_failed"}); len(failed) != 0 {
		t.Errorf("login_failed lines: %v", failed)
	}
}

// idpAssertion makes the test IdP's assertions as an IdP set up with
// another Audience URI (SP entity ID) or ACS URL than the proxy's would.
type idpAssertion struct{ audience, recipient string }

func (m idpAssertion) MakeAssertion(req *saml.IdpAuthnRequest, session *saml.Session) error {
	if err := (samlserver.GroupsAssertionMaker{}).MakeAssertion(req, session); err != nil {
		return err
	}
	if m.audience != "" {
		req.Assertion.Conditions.AudienceRestrictions[0].Audience.Value = m.audience
	}
	if m.recipient != "" {
		req.Assertion.Subject.SubjectConfirmations[0].SubjectConfirmationData.Recipient = m.recipient
	}
	return nil
}

// sha256Fingerprint is how IdP consoles and the log show a certificate.
func sha256Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	var hex []string
	for _, b := range sum {
		hex = append(hex, fmt.Sprintf("%02X", b))
	}
	return strings.Join(hex, ":")
}

// A SAML IdP and the proxy's entry for it that do not agree: the IdP
// signs with a new certificate, or was given another SP entity ID or ACS
// URL than the proxy's. The login fails at the ACS; the log says what the
// IdP sent on that point and what the proxy expects.
func TestSAMLSetUpMismatchesAreNamed(t *testing.T) {
	old := samlserver.Start(t, samlserver.Options{}) // the IdP's certificate before the rotation
	for _, tc := range []struct {
		name    string
		trusted *x509.Certificate
		maker   saml.AssertionMaker
		reason  string
		hints   func(s *stack, idpSrv *samlserver.Server) []string
	}{
		{
			name: "the IdP signs with a new certificate", trusted: old.Certificate, reason: "saml_signature",
			hints: func(s *stack, idpSrv *samlserver.Server) []string {
				return []string{"changed its signing certificate", "SHA-256 " + sha256Fingerprint(idpSrv.Certificate),
					"trusted: " + sha256Fingerprint(old.Certificate), "x509_cert"}
			},
		},
		{
			name: "the IdP has another SP entity ID", maker: idpAssertion{audience: "https://cvat.example.com"}, reason: "saml_audience",
			hints: func(s *stack, idpSrv *samlserver.Server) []string {
				return []string{`"https://cvat.example.com"`, "Audience URI", "to " + s.URL + "/.portcullis/saml/corp/metadata"}
			},
		},
		{
			name: "the IdP has another ACS URL", maker: idpAssertion{recipient: "https://cvat.example.com/saml/acs"}, reason: "saml_acs_url",
			hints: func(s *stack, idpSrv *samlserver.Server) []string {
				return []string{`"https://cvat.example.com/saml/acs"`, "ACS URL", "to " + s.URL + "/.portcullis/saml/corp/acs"}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, idpSrv, logs := samlStackLogged(t, tc.trusted, nil)
			if tc.maker != nil {
				idpSrv.IDP.IDP.AssertionMaker = tc.maker
			}
			resp := samlLogin(t, browser(t), idpSrv.SSOURL(), s.URL+"/tasks", samlAlice.Name, samlAlice.Password)
			operatorSees(t, s, logs, resp, http.StatusBadGateway, setupPage, tc.reason, tc.hints(s, idpSrv)...)
		})
	}
}

// A login started at the IdP's portal (an application tile), which the
// entry does not accept (allow_idp_initiated): it has no login state of
// the proxy's, which is no cookie trouble, and the log says which key
// accepts it.
func TestSAMLIdPInitiatedLoginIsNamed(t *testing.T) {
	s, idpSrv, logs := samlStackLogged(t, nil, nil)
	b := browser(t)
	post := portalAnswer(t, s, idpSrv, b)
	operatorSees(t, s, logs, post.post(t, b), http.StatusBadRequest, "sign in from there", "saml_idp_initiated", "allow_idp_initiated")
}

// portalAnswer signs alice in at the IdP's portal tile for the proxy's SAML
// entry corp, as browser b, and returns the answer the IdP's page would
// post to the proxy's ACS, not yet posted.
func portalAnswer(t *testing.T, s *stack, idpSrv *samlserver.Server, b *http.Client) acsPost {
	t.Helper()
	if err := idpSrv.AddShortcut("cvat", s.URL+"/.portcullis/saml/corp/metadata", ""); err != nil {
		t.Fatal(err)
	}
	tile := idpSrv.URL + "/login/cvat"
	resp, err := b.Get(tile)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	resp, err = b.PostForm(tile, url.Values{"user": {samlAlice.Name}, "password": {samlAlice.Password}})
	if err != nil {
		t.Fatal(err)
	}
	page := readBody(t, resp)
	fields := formFields(page)
	post := acsPost{Action: formAction(page), Form: url.Values{"SAMLResponse": {fields["SAMLResponse"]}, "RelayState": {fields["RelayState"]}}}
	if fields["SAMLResponse"] == "" || post.Action != s.URL+"/.portcullis/saml/corp/acs" {
		t.Fatalf("the IdP's portal gave no answer for the proxy's ACS:\n%s", page)
	}
	return post
}

// The mistakes of an LDAP entry: a service account the directory refuses
// (its DN, or its password in the environment), a base DN the directory
// does not have. The page says to tell the administrator, not to try again
// in a moment, and the log, and /readyz for the service account, say what
// to check; no password reaches either.
func TestLDAPSetUpMistakesAreNamed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(config string) string
		env     string // PORTCULLIS_IDP_CORP_LDAP_BIND_PASSWORD, when not the right one
		reason  string
		hints   []string
		unready bool
	}{
		{
			name: "a bind_dn the directory does not have",
			edit: func(c string) string {
				return strings.Replace(c, "bind_dn: cn=portcullis,ou=services,", "bind_dn: cn=portcullis,ou=service,", 1)
			},
			reason: "service_bind", unready: true,
			hints: []string{"refused the service account", `bind_dn ("cn=portcullis,ou=service,dc=example,dc=com")`, "PORTCULLIS_IDP_CORP_LDAP_BIND_PASSWORD"},
		},
		{
			name: "a bind password that is not the service account's", env: "not-the-service-password",
			reason: "service_bind", unready: true,
			hints: []string{"refused the service account", "bind_password"},
		},
		{
			name: "a user_search.base_dn the directory does not have",
			edit: func(c string) string {
				return strings.Replace(c, `user_search: {base_dn: "dc=example,dc=com"`, `user_search: {base_dn: "ou=staff,dc=example,dc=com"`, 1)
			},
			reason: "user_search",
			hints:  []string{`user_search.base_dn "ou=staff,dc=example,dc=com" is no entry of the directory`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			password := ldapserver.ServicePassword
			if tc.env != "" {
				password = tc.env
			}
			s, _, logs := ldapStackServing(t, tc.edit, password)
			if !tc.unready {
				s.waitReady(t)
			}
			b := browser(t)
			form, err := b.Get(s.URL + "/tasks")
			if err != nil {
				t.Fatal(err)
			}
			resp := postLDAPForm(t, b, form, ldapserver.Alice, ldapserver.AlicePassword)
			operatorSees(t, s, logs, resp, http.StatusServiceUnavailable, "not set up right", tc.reason, tc.hints...)
			if tc.unready {
				status, body := s.readyz(t)
				if status != http.StatusServiceUnavailable || !strings.Contains(body, tc.reason+": ") || !strings.Contains(body, "refused the service account") {
					t.Errorf("/readyz: %d %s; want 503 saying the service account is refused", status, body)
				}
			}
			for _, secret := range []string{ldapserver.ServicePassword, "not-the-service-password", ldapserver.AlicePassword, "not-the-password"} {
				if strings.Contains(logs.out.String(), secret) {
					t.Errorf("the log holds a password, %q", secret)
				}
			}
		})
	}
}

// A username no entry has and a wrong password get the same page, as
// they must; the log tells them apart for the operator, who otherwise sees
// "invalid_credentials" for a user_search.filter that finds nobody.
func TestLDAPUnknownUserAndWrongPasswordAreToldApartInTheLog(t *testing.T) {
	s, _, logs := ldapStackLogged(t, nil)
	for _, tc := range []struct{ name, username, password, err string }{
		{"a username no entry has", "nosuch", ldapserver.AlicePassword, "no entry under user_search.base_dn matches user_search.filter"},
		{"a wrong password", ldapserver.Alice, "not-alices-password", "the directory refused the password of uid=alice,ou=people,dc=example,dc=com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := fromAddr(browser(t), "10.3.0.1")
			form, err := b.Get(s.URL + "/tasks")
			if err != nil {
				t.Fatal(err)
			}
			resp := postLDAPForm(t, b, form, tc.username, tc.password)
			if page := readBody(t, resp); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(page, "Wrong username or password.") {
				t.Errorf("page: %d, want 401 with the one message for both:\n%s", resp.StatusCode, page)
			}
			line := logs.audit(t, resp, "login_failed")
			if e, _ := line["err"].(string); line["reason"] != "invalid_credentials" || !strings.Contains(e, tc.err) {
				t.Errorf("login_failed line %v, want reason invalid_credentials and err saying %q", line, tc.err)
			}
		})
	}
}

// An IdP-initiated answer that is the IdP's refusal (a status other than
// Success), at an entry that accepts IdP-initiated logins: there is no
// login state, so no login's rd for the "Sign in again" link. Anyone can
// post such a response (the status is read before any signature), and it
// is the sign-in-failed page, not a panic in the handler.
func TestSAMLIdPInitiatedRefusalIsSignInFailed(t *testing.T) {
	s, _, logs := samlStackLogged(t, nil, func(c string) string {
		return strings.Replace(c, "      attribute_mapping:", "      allow_idp_initiated: true\n      attribute_mapping:", 1)
	})
	response := `<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_refused" Version="2.0" IssueInstant="` +
		time.Now().UTC().Format(time.RFC3339) + `"><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Responder"/></samlp:Status></samlp:Response>`
	post := acsPost{Action: s.URL + "/.portcullis/saml/corp/acs", Form: url.Values{"SAMLResponse": {base64.StdEncoding.EncodeToString([]byte(response))}}}
	resp := post.post(t, noRedirect(browser(t)))
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "Sign in again") || !strings.Contains(body, `href="/.portcullis/login"`) {
		t.Fatalf("refusal posted without a login: status %d, want 502 with a link to sign in again:\n%s", resp.StatusCode, body)
	}
	logs.audit(t, resp, "login_failed")
}

// Entra ID's word on an address is the claim preset azure reads its
// email_verified from, xms_edov: one that says false refuses the login
// with no admission key set, as an IdP's email_verified: false does (the
// address would go upstream as the user's), and one that says true admits.
func TestEntraUnverifiedAddressIsRefused(t *testing.T) {
	gus := oidcserver.User{Password: "gus-pw", Email: "gus@example.com", Groups: []string{"annotators"}, Extra: map[string]any{"xms_edov": false}}
	hal := oidcserver.User{Password: "hal-pw", Email: "hal@example.com", Groups: []string{"annotators"}, Extra: map[string]any{"xms_edov": true}}
	s, _, logs := oidcStackLogged(t, oidcserver.Options{ExtraUsers: map[string]oidcserver.User{"gus": gus, "hal": hal}}, func(c string) string {
		// server_url, given, wins over the preset's Microsoft URL.
		return strings.Replace(c, "      protocol: OIDC\n", "      preset: azure\n      tenant: 72f988bf-86f1-41af-91ab-2d7cd011db47\n", 1)
	})
	resp := oidcserver.Login(t, browser(t), s.URL+"/tasks", "gus", "gus-pw")
	page := readBody(t, resp)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(page, "Your email address is not verified at Company SSO") {
		t.Errorf("gus (xms_edov false): page %d, want 403 saying the address is not verified:\n%s", resp.StatusCode, page)
	}
	if got, ok := s.Upstream.Last(); ok && got.Header.Get("X-Email") == "gus@example.com" {
		t.Errorf("gus's unverified address went upstream")
	}
	resp = oidcserver.Login(t, browser(t), s.URL+"/tasks", "hal", "hal-pw")
	if page := readBody(t, resp); resp.StatusCode != http.StatusOK {
		t.Errorf("hal (xms_edov true): page %d, want the upstream's:\n%s", resp.StatusCode, page)
	}
	if n := len(logs.find(t, map[string]any{"log": "audit", "event": "login", "sub": "hal"})); n != 1 {
		t.Errorf("%d login lines for hal, want 1", n)
	}
}

// An entry that accepts IdP-initiated logins, on plain http, with the IdP
// on another site: the answer to a login the proxy started comes back as
// Firefox 153 posts it (seen in the lab: Origin of the IdP, Sec-Fetch-Site
// cross-site, and no login cookie, which is SameSite=Lax). Its RelayState
// is the proxy's own state, so it is no IdP-initiated login: the page and
// the log say what TestSAMLAnswerFromAnotherSiteOverHTTPIsNamedInChromium
// sees, not "could not be completed" with an InResponseTo mismatch.
func TestSAMLAnswerFromAnotherSiteOverHTTPIsNamedWithIdPInitiatedAllowed(t *testing.T) {
	s, idpSrv, logs := samlStackLogged(t, nil, func(c string) string {
		return strings.Replace(c, "      attribute_mapping:", "      allow_idp_initiated: true\n      attribute_mapping:", 1)
	})
	answer := samlAnswer(t, browser(t), idpSrv.SSOURL(), s.URL+"/tasks", samlAlice.Name, samlAlice.Password)
	req, err := http.NewRequest(http.MethodPost, answer.Action, strings.NewReader(answer.Form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
		"Origin": "http://127.0.0.2:25504", "Referer": "http://127.0.0.2:25504/", "Upgrade-Insecure-Requests": "1",
		"Sec-Fetch-Dest": "document", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "cross-site",
	} {
		req.Header.Set(k, v)
	}
	resp, err := noRedirect(browser(t)).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	operatorSees(t, s, logs, resp, http.StatusBadRequest, setupPage, "state_cookie_missing", "another site", "SameSite", "same host")
}

// An IdP-initiated answer posted again (a replay), at an entry that accepts
// IdP-initiated logins, with a RelayState shaped like the proxy's own login
// states, which whoever posts it chooses: refused for the replay, at WARN
// with the IdP's reason, as with any other RelayState, whether the browser
// is signed in or not. It is no answer to a login started here (it answers
// no request), so neither said as a login state that did not come back nor
// sent on to the application.
func TestSAMLIdPInitiatedReplayWithStateShapedRelayStateIsRefused(t *testing.T) {
	s, idpSrv, logs := samlStackLogged(t, nil, func(c string) string {
		return strings.Replace(c, "      attribute_mapping:", "      allow_idp_initiated: true\n      attribute_mapping:", 1)
	})
	b := browser(t)
	post := portalAnswer(t, s, idpSrv, b)
	post.Form.Del("RelayState")
	if resp := post.post(t, b); resp.StatusCode != http.StatusOK {
		t.Fatalf("the IdP-initiated login: %d, want the application:\n%s", resp.StatusCode, readBody(t, resp))
	}
	post.Form.Set("RelayState", strings.Repeat("A", 43)) // as session.NewState makes them
	for _, c := range []struct {
		name string
		b    *http.Client
	}{{"signed-in browser", b}, {"another browser", browser(t)}} {
		t.Run(c.name, func(t *testing.T) {
			resp := post.post(t, noRedirect(c.b))
			if page := readBody(t, resp); resp.StatusCode != http.StatusForbidden {
				t.Errorf("replayed answer: %d %s, want 403:\n%s", resp.StatusCode, resp.Header.Get("Location"), page)
			}
			line := logs.audit(t, resp, "login_failed")
			if e, _ := line["err"].(string); line["reason"] != "idp" || !strings.Contains(e, "replay") {
				t.Errorf("login_failed line %v, want reason idp and err naming the replay", line)
			}
		})
	}
}
