package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// emailModeConfig has one IdP, of the domain sso.example.
const emailModeConfig = `
server:
  public_url: https://cvat.example.com
upstream:
  url: http://127.0.0.1:1
session:
  keys: [` + testKey + `]
sso:
  selection_mode: email_address
  identity_providers:
    - id: sso
      protocol: OIDC
      server_url: http://127.0.0.1:1/
      client_id: portcullis
      email_domain: sso.example
role_mapping:
  roles: [user]
  default: user
`

// emailModeTwoConfig picks between two IdPs by the domains sso.example and
// partner.example.
var emailModeTwoConfig = strings.Replace(emailModeConfig, "      email_domain: sso.example\n",
	"      email_domain: sso.example\n    - id: partner\n      protocol: OIDC\n      server_url: http://127.0.0.1:1/\n      client_id: portcullis\n      email_domain: partner.example\n", 1)

func TestEmailAddressModeMatchesDomainsInASCIIOnly(t *testing.T) {
	h := newTestHandler(t, emailModeTwoConfig)
	for _, tt := range []struct {
		name, email string
		want        int
	}{
		{"the domain in other ASCII case picks the IdP", "Eve@SSO.Example", http.StatusSeeOther},
		{"a long s does not fold to s", "eve@\u017F\u017Fo.example", http.StatusBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/.portcullis/login", strings.NewReader(url.Values{"email": {tt.email}}.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tt.want {
				t.Fatalf("POST login with %q: status %d (Location %q), want %d", tt.email, rec.Code, rec.Header().Get("Location"), tt.want)
			}
		})
	}
}

// TestEmailFormNamesOnlyADomain: the page that says no IdP has the domain
// names it only when it is a domain name; anything else would let a
// cross-site form put its own words on this origin's login page.
func TestEmailFormNamesOnlyADomain(t *testing.T) {
	h := newTestHandler(t, emailModeTwoConfig)
	for _, tt := range []struct{ name, email, want string }{
		{"a domain no IdP has", "eve@other.example", "There is no sign-in for the domain other.example."},
		{"an IDN domain no IdP has", "eve@b\u00FCcher.example", "There is no sign-in for the domain b\u00FCcher.example."},
		{"prose after the @", "eve@sso.example. Your account is locked; call the IT desk at +1 555 0100", "Enter your full email address"},
		{"an overlong domain", "eve@" + strings.Repeat("a.", 130) + "example", "Enter your full email address"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/.portcullis/login", strings.NewReader(url.Values{"email": {tt.email}}.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("Accept", "text/html")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			_, alert, _ := strings.Cut(rec.Body.String(), `role="alert"`)
			if alert, _, _ = strings.Cut(alert, "</p>"); rec.Code != http.StatusBadRequest || !strings.Contains(alert, tt.want) {
				t.Fatalf("status %d, alert %q; want 400 and %q", rec.Code, alert, tt.want)
			}
			if strings.Contains(alert, "locked") {
				t.Errorf("the alert repeats the posted prose: %q", alert)
			}
		})
	}
}

// TestEmailAddressModeWithOneIdP: with one identity provider there is
// nothing for an address to pick, so GET /login goes straight to it, as in
// every mode (SPEC: "straight to the one IdP that selection picks"), and a
// POST of any address goes there too rather than telling a user of another
// domain there is no sign-in for it, which the GET never would: email_domain
// admits no one and keeps no one out.
func TestEmailAddressModeWithOneIdP(t *testing.T) {
	for _, tt := range []struct {
		name, config string
	}{
		{"with an email_domain", emailModeConfig},
		{"without one", strings.Replace(emailModeConfig, "      email_domain: sso.example\n", "", 1)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(t, tt.config)
			r := httptest.NewRequest(http.MethodGet, "/.portcullis/login?rd=/tasks", nil)
			r.Header.Set("Accept", "text/html")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != http.StatusFound || rec.Header().Get("Location") != "/.portcullis/login/sso?rd=%2Ftasks" {
				t.Errorf("GET login: status %d, Location %q; want 302 to the one IdP", rec.Code, rec.Header().Get("Location"))
			}
			for _, email := range []string{"eve@sso.example", "eve@other.example"} {
				r := httptest.NewRequest(http.MethodPost, "/.portcullis/login", strings.NewReader(url.Values{"email": {email}, "rd": {"/tasks"}}.Encode()))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/.portcullis/login/sso?rd=%2Ftasks" {
					t.Errorf("POST login with %q: status %d, Location %q; want 303 to the one IdP", email, rec.Code, rec.Header().Get("Location"))
				}
			}
		})
	}
}
