package proxy

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
)

// TestPagesConfigNamesTheKey: every mistake in the pages block, templates
// included, is a load error naming its key.
func TestPagesConfigNamesTheKey(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pages string
		files map[string]string // written to a template_dir
		want  string
	}{
		{name: "an accent colour not in #rrggbb form", pages: "accent_color: purple", want: `pages.accent_color: must be a colour as #rrggbb, got "purple"`},
		{name: "an accent too light for white text", pages: `accent_color: "#f5a623"`, want: "pages.accent_color: white button text on #f5a623 has a contrast of 2.0:1"},
		{name: "a logo over plain http", pages: "logo_url: http://cdn.example.com/logo.png", want: "pages.logo_url: must be an https:// URL or a data:image/... URI"},
		{name: "a logo host that would add a directive to the CSP", pages: "logo_url: https://cdn.example.com;script-src/logo.png", want: "pages.logo_url: must be an https:// URL or a data:image/... URI"},
		{name: "a logo host that is a wildcard", pages: "logo_url: https://*.example.com/logo.png", want: "pages.logo_url: must be an https:// URL or a data:image/... URI"},
		{name: "a logo data URI that is not an image", pages: "logo_url: 'data:text/html,<script>'", want: "pages.logo_url:"},
		{name: "a logo URL with credentials, which every visitor's page would carry", pages: "logo_url: https://cdn:s3cret@cdn.example.com/logo.png", want: "pages.logo_url: must be an https:// URL or a data:image/... URI"},
		{name: "a logo data URI that would end the src attribute", pages: `logo_url: 'data:image/svg+xml,<svg onload="x">'`, want: "pages.logo_url: must be an https:// URL or a data:image/... URI"},
		{name: "a template directory that does not exist", pages: "template_dir: /nonexistent/pages", want: "pages.template_dir: open /nonexistent/pages"},
		{name: "a template that does not parse", files: map[string]string{"chooser.html": `{{define "content"}}{{range .Providers}}{{end}`}, want: "pages.template_dir: chooser.html: template:"},
		{name: "a template naming a field pages do not have", files: map[string]string{"denied.html": `{{define "content"}}{{.Nope}}{{end}}`}, want: "pages.template_dir: denied.html:"},
		{name: "a file that replaces no page", files: map[string]string{"choser.html": `x`}, want: "pages.template_dir: choser.html replaces no page"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pages := tc.pages
			if tc.files != nil {
				dir := t.TempDir()
				for name, text := range tc.files {
					if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				pages = "template_dir: " + dir
			}
			err := checkYAML(t, minimal+"pages:\n  "+pages+"\n", nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestPagesAndRefreshConfigAccepted(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "signed_out.html"), []byte(`{{define "content"}}<p>Bye from {{.Brand}}.</p>{{end}}`), 0o644)
	yaml := minimal + `pages:
  title: Example Annotation
  logo_url: https://cdn.example.com/logo.svg
  accent_color: "#5B2A86"
  template_dir: ` + dir + "\n"
	yaml = strings.Replace(yaml, "session:\n", "session:\n  refresh: 5m\n", 1)
	cfg, err := ParseConfig([]byte(yaml), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(cfg); err != nil {
		t.Fatalf("check: %v", err)
	}
	if cfg.Session.Refresh.Minutes() != 5 {
		t.Errorf("session.refresh = %s, want 5m", cfg.Session.Refresh)
	}

	p := newPages(cfg.Pages, "/.portcullis", slog.New(slog.DiscardHandler))
	rec := httptest.NewRecorder()
	p.signedOut(rec, httptest.NewRequest("GET", "/.portcullis/logout", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{"Bye from Example Annotation.", `<img class="logo" src="https://cdn.example.com/logo.svg"`, "--accent: #5b2a86"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("signed-out page lacks %q:\n%s", want, body)
		}
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "img-src 'self' data: https://cdn.example.com;") {
		t.Errorf("CSP %q does not let the logo load", csp)
	}
}

// TestSingleSignOutOfAnOIDCPreset: an entry whose preset speaks OIDC has the
// end_session_endpoint of its discovery, with no protocol key of its own.
func TestSingleSignOutOfAnOIDCPreset(t *testing.T) {
	for _, tc := range []struct{ name, keys string }{
		{"okta", "preset: okta\n      domain: acme.okta.com"},
		{"keycloak", "preset: keycloak\n      server_url: https://kc.example.com/realms/cvat"},
		{"google", "preset: google"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := strings.Replace(minimal, "protocol: OIDC\n      server_url: https://login.example.com/", tc.keys+"\n      single_sign_out: true", 1)
			if err := checkYAML(t, yaml, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestConfigRefusesRefreshAndProtocolKeyMistakes(t *testing.T) {
	for _, tc := range []struct{ name, old, new, want string }{
		{"a negative session.refresh", "session:\n", "session:\n  refresh: -1m\n", "session.refresh: must be 0 (off) or a positive duration"},
		{"single_sign_out on plain OAuth2", "      protocol: OIDC\n      server_url: https://login.example.com/\n",
			"      protocol: OAUTH2\n      auth_url: https://x.example/a\n      token_url: https://x.example/t\n      userinfo_url: https://x.example/u\n      single_sign_out: true\n",
			"sso.identity_providers[0].single_sign_out: only OIDC and SAML providers offer single sign-out"},
		{"single_sign_out on a preset of plain OAuth2", "      protocol: OIDC\n      server_url: https://login.example.com/\n",
			"      preset: github\n      single_sign_out: true\n", "sso.identity_providers[0].single_sign_out: only OIDC and SAML providers offer single sign-out (protocol is OAUTH2)"},
		{"allow_idp_initiated on OIDC", "      server_url: https://login.example.com/\n",
			"      server_url: https://login.example.com/\n      allow_idp_initiated: true\n",
			"sso.identity_providers[0].allow_idp_initiated: only SAML providers send logins the user did not start here (protocol is OIDC)"},
		{"allow_idp_initiated on a preset of plain OAuth2", "      protocol: OIDC\n      server_url: https://login.example.com/\n",
			"      preset: github\n      allow_idp_initiated: true\n", "sso.identity_providers[0].allow_idp_initiated: only SAML providers send logins the user did not start here (protocol is OAUTH2)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkYAML(t, strings.Replace(minimal, tc.old, tc.new, 1), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestEveryPageCarriesTheSecurityHeaders: every page is kept out of caches
// and frames, runs no script, and sends no Referer, even with a layout from
// template_dir that lacks the meta tag saying so.
func TestEveryPageCarriesTheSecurityHeaders(t *testing.T) {
	dir := t.TempDir()
	layout := `{{define "layout"}}<!doctype html><html lang="en"><head><title>{{.Title}}</title>` +
		`<img src="https://cdn.example.com/logo.png" alt=""></head><body>{{template "content" .}}</body></html>{{end}}`
	if err := os.WriteFile(filepath.Join(dir, "layout.html"), []byte(layout), 0o644); err != nil {
		t.Fatal(err)
	}
	p := newPages(PagesConfig{TemplateDir: dir, LogoURL: "https://cdn.example.com/logo.png"}, "/.portcullis", slog.New(slog.DiscardHandler))
	browser := func() *http.Request {
		r := httptest.NewRequest("GET", "/.portcullis/oidc/company/callback?code=secret-code&state=s", nil)
		r.Header.Set("Accept", "text/html")
		return r
	}
	for name, show := range map[string]func(w http.ResponseWriter){
		"chooser":    func(w http.ResponseWriter) { p.chooser(w, browser(), nil, "/") },
		"email":      func(w http.ResponseWriter) { p.emailForm(w, http.StatusOK, "/", "", "") },
		"error":      func(w http.ResponseWriter) { p.fail(w, browser(), http.StatusForbidden, "Sign-in failed", "No.") },
		"denied":     func(w http.ResponseWriter) { p.denied(w, browser(), "No role.") },
		"sign_out":   func(w http.ResponseWriter) { p.askToSignOut(w, browser(), "/") },
		"signed_out": func(w http.ResponseWriter) { p.signedOut(w, browser()) },
		"ldap":       func(w http.ResponseWriter) { p.render(w, http.StatusOK, "ldap", page{Title: "Sign in", State: "s"}) },
	} {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			show(rec)
			for header, want := range map[string]string{
				"Content-Type":           "text/html; charset=utf-8",
				"Cache-Control":          "no-store",
				"X-Frame-Options":        "DENY",
				"X-Content-Type-Options": "nosniff",
				"Referrer-Policy":        "no-referrer",
			} {
				if got := rec.Header().Get(header); got != want {
					t.Errorf("%s: %q, want %q", header, got, want)
				}
			}
			csp := rec.Header().Get("Content-Security-Policy")
			wants := []string{"default-src 'none'", "frame-ancestors 'none'", "base-uri 'none'"}
			if name != "email" && name != "sign_out" {
				// Only the email form's answer goes on to another origin
				// (the IdP the address picks), and a sign-out's with
				// single_sign_out (the IdP's end-session endpoint).
				wants = append(wants, "form-action 'self'")
			}
			for _, want := range wants {
				if !strings.Contains(csp, want) || strings.Contains(csp, "script-src") {
					t.Errorf("Content-Security-Policy %q: want %s and no script-src", csp, want)
				}
			}
		})
	}
}

// The chooser's links carry rd whole: a query string of its own (&, #, ?)
// stays inside the rd parameter rather than ending it, so the user comes
// back to exactly the page they asked for.
func TestChooserLinksCarryTheWholeRD(t *testing.T) {
	p := newPages(PagesConfig{}, "/.portcullis", slog.New(slog.DiscardHandler))
	const rd = "https://cvat.example.com/tasks?page=2&sort=name#top"
	rec := httptest.NewRecorder()
	p.chooser(rec, httptest.NewRequest("GET", "/.portcullis/login", nil), []*provider{{cfg: idp.Config{ID: "company", Name: "Company SSO"}}}, rd)
	m := regexp.MustCompile(`href="(/\.portcullis/login/company[^"]*)"`).FindStringSubmatch(rec.Body.String())
	if m == nil {
		t.Fatalf("no link to company's login:\n%s", rec.Body)
	}
	u, err := url.Parse(html.UnescapeString(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Query().Get("rd"); got != rd || u.Fragment != "" {
		t.Errorf("the link %q takes rd %q (fragment %q), want %q", m[1], got, u.Fragment, rd)
	}
}

// TestSAMLPostPageRunsOnlyItsScript: the page that posts a LogoutResponse
// on to the IdP (HTTP-POST binding) is a page like the others, save that
// its policy runs the one script that posts the form, by its hash, lets
// the form go to the IdP, and lets the IdP frame the page.
func TestSAMLPostPageRunsOnlyItsScript(t *testing.T) {
	p := newPages(PagesConfig{}, "/.portcullis", slog.New(slog.DiscardHandler))
	rec := httptest.NewRecorder()
	p.samlPost(rec, "Corporate SAML", &idp.SAMLPost{URL: "https://idp.example.com/slo",
		Fields: url.Values{"SAMLResponse": {"PHJlc3BvbnNlLz4="}, "RelayState": {"relay-1"}}})
	body := rec.Body.String()
	for _, want := range []string{
		`<html lang="en">`, `<title>Signing out · portcullis</title>`, `<h1 id="title">Signing out</h1>`,
		`<form id="saml-post" method="post" action="https://idp.example.com/slo">`,
		`<input type="hidden" name="RelayState" value="relay-1">`, `<input type="hidden" name="SAMLResponse" value="PHJlc3BvbnNlLz4=">`,
		`<button type="submit">Continue to Corporate SAML</button>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %s:\n%s", want, body)
		}
	}
	script := regexp.MustCompile(`<script>(.*)</script>`).FindStringSubmatch(body)
	if script == nil {
		t.Fatalf("the page has no script to post its form:\n%s", body)
	}
	sum := sha256.Sum256([]byte(script[1]))
	csp := rec.Header().Get("Content-Security-Policy")
	directives := map[string]string{}
	for _, d := range strings.Split(csp, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	if want := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; directives["script-src"] != want {
		t.Errorf("Content-Security-Policy %q: want script-src %s alone, the hash of the page's script", csp, want)
	}
	for _, unwanted := range []string{"frame-ancestors", "form-action"} {
		if _, ok := directives[unwanted]; ok {
			t.Errorf("Content-Security-Policy %q has %s", csp, unwanted)
		}
	}
	if !strings.Contains(csp, "default-src 'none'") || rec.Header().Get("X-Frame-Options") != "" ||
		rec.Header().Get("Cache-Control") != "no-store" || rec.Header().Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("headers %v: want default-src 'none', no X-Frame-Options, no-store and no-referrer", rec.Header())
	}
}

func TestDeniedPageForScriptsIsJSON(t *testing.T) {
	p := newPages(PagesConfig{}, "/.portcullis", slog.New(slog.DiscardHandler))
	rec := httptest.NewRecorder()
	p.denied(rec, httptest.NewRequest("GET", "/", nil), "Email addresses at x.example are not allowed to sign in here.")
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), `"access_denied"`) || !strings.Contains(rec.Body.String(), "x.example") {
		t.Errorf("denied for a script: %d %s, want 403 JSON with the reason", rec.Code, rec.Body)
	}
}

// A client that does not ask for HTML gets the page's title as a JSON error
// code in snake case, like every other code the proxy answers with
// (access_denied, sign_out_not_done): "Sign-in failed" is sign_in_failed,
// not a code with a hyphen in it for a script to match.
func TestFailureForScriptsHasASnakeCaseCode(t *testing.T) {
	p := newPages(PagesConfig{}, "/.portcullis", slog.New(slog.DiscardHandler))
	for title, want := range map[string]string{
		"Bad request":          "bad_request",
		"Sign-in failed":       "sign_in_failed",
		"Sign-in not started":  "sign_in_not_started",
		"Sign-in did not hold": "sign_in_did_not_hold",
		"Sign-out incomplete":  "sign_out_incomplete",
		"Signed out here only": "signed_out_here_only",
	} {
		rec := httptest.NewRecorder()
		p.fail(rec, httptest.NewRequest("GET", "/.portcullis/login/company", nil), http.StatusBadRequest, title, "No.")
		var body struct{ Error string }
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error != want {
			t.Errorf("%q for a script: %s, want error %q", title, rec.Body, want)
		}
	}
}

// A form an endpoint cannot read is refused: 413 when it is over the
// endpoint's limit, 400 when it is malformed.
func TestUnreadableFormsAreRefused(t *testing.T) {
	f := newFixture(t)
	big := "rd=" + strings.Repeat("a", 2<<20)
	for _, tc := range []struct {
		name, path, body string
		want             int
	}{
		{"oversized sign-out form", "/.portcullis/logout", big, http.StatusRequestEntityTooLarge},
		{"malformed sign-out form", "/.portcullis/logout", "rd=%zz", http.StatusBadRequest},
		{"oversized SAML answer", "/.portcullis/saml/company/acs", big, http.StatusRequestEntityTooLarge},
		{"SAML answer over what a 256 KiB response takes", "/.portcullis/saml/company/acs",
			"SAMLResponse=" + strings.Repeat("A", 600<<10), http.StatusRequestEntityTooLarge},
		{"malformed SAML answer", "/.portcullis/saml/company/acs", "SAMLResponse=%zz", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "https://cvat.example.com"+tc.path, strings.NewReader(tc.body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			rec := httptest.NewRecorder()
			f.h.ServeHTTP(rec, r)
			if rec.Code != tc.want {
				t.Errorf("status %d, want %d", rec.Code, tc.want)
			}
		})
	}
}

// A page that reports a failure shows the request's ID, the one in its
// X-Request-Id header and in the log lines about it, so that a user's
// report leads the operator to why.
func TestFailurePagesShowTheRequestID(t *testing.T) {
	f := newFixture(t)
	for name, req := range map[string]*http.Request{
		"a sign-in that cannot be finished": request("GET", "/.portcullis/oidc/company/callback?state=forged-state-0123456789&code=c", nil, "Accept", "text/html"),
		"a page the proxy does not have":    request("GET", "/.portcullis/nope", nil, "Accept", "text/html"),
		"a request refused by a deny rule":  request("GET", "/blocked", nil, "Accept", "text/html"),
	} {
		t.Run(name, func(t *testing.T) {
			resp, _, _ := f.do(t, req)
			body, _ := io.ReadAll(resp.Body)
			id := resp.Header.Get("X-Request-Id")
			if id == "" || !strings.Contains(string(body), `Request ID <span class="request-id">`+id+`</span>`) {
				t.Errorf("%d page does not show its request ID %q:\n%s", resp.StatusCode, id, body)
			}
		})
	}
}

// A login-loop mark set by a replica whose clock runs a few seconds ahead
// is a loop all the same: a browser back at /login with it and without its
// session cookie gets the page that says so, not the IdP again.
func TestLoginLoopMarkFromAReplicaAhead(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name  string
		ahead time.Duration
		want  int
	}{
		{"five seconds ahead", 5 * time.Second, http.StatusBadRequest},
		{"an hour ahead: no mark of a login here", time.Hour, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mark := &http.Cookie{Name: f.h.cookies.SignedInName(), Value: strconv.FormatInt(time.Now().Add(tc.ahead).Unix(), 10) + ".company"}
			rec := httptest.NewRecorder()
			f.h.ServeHTTP(rec, request("GET", "https://cvat.example.com/.portcullis/login/company?rd=/tasks", []*http.Cookie{mark}, "Accept", "text/html"))
			loop := rec.Code == http.StatusBadRequest && strings.Contains(rec.Body.String(), "did not send back")
			if loop != (tc.want == http.StatusBadRequest) {
				t.Errorf("status %d, loop page %v, want it %v:\n%s", rec.Code, loop, tc.want == http.StatusBadRequest, rec.Body)
			}
		})
	}
}
