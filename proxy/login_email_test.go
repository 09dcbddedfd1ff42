package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestEmailAddressModeMatchesDomainsInASCIIOnly(t *testing.T) {
	h := newTestHandler(t, `
server:
  public_url: https://cvat.example.com
upstream:
  url: http://127.0.0.1:1
session:
  keys: [`+testKey+`]
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
`)
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
