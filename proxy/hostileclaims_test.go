package proxy

import (
	"encoding/json"
	"maps"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// documentedConditions are the README's, docs/cvat.md's and
// docs/idp/google.md's conditions over the profile, as the CVAT profile
// writes them: a group, the whole address at a domain, a Workspace's hd
// claim.
const documentedConditions = `
server:
  public_url: https://cvat.example.com
upstream:
  url: http://traefik:8080
session:
  keys: [` + testKey + `]
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: https://login.example.com/
      client_id: portcullis
role_mapping:
  roles: [admin, business, worker, user]
  default: user
  rules:
    - role: admin
      when: '"cvat-admins" in groups'
    - role: business
      when: 'email matches "^[^@]+@contractor[.]example$"'
    - role: worker
      when: 'claims.hd == "example.com"'
attribute_pass:
  headers:
    X-Email: email
    X-Groups: 'join(roles, ",")'
`

// What a login with claims an IdP may send in more than one shape gives,
// through the documented conditions: the classes of peers' advisories about
// claims read loosely (oauth2-proxy's GHSA-c5c4-8r6x-56w3, an address with
// two @; unverified addresses taken as the user's; a groups string split
// into groups; look-alike domains). Each is decided as the login decides
// it: explain walks the same code, and FuzzExplainAgreesWithServe holds it
// to serve.
func TestDocumentedConditionsOverClaimsOfEveryShape(t *testing.T) {
	cfg, err := ParseConfig([]byte(documentedConditions), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, claims string
		roles        []string // nil: the login is refused
		email        string   // X-Email, "" for none
	}{
		{"control: a contractor's verified address", `{"sub":"1","email":"ana@contractor.example","email_verified":true}`, []string{"business"}, "ana@contractor.example"},
		{"two @ before the contractor's domain is no contractor", `{"sub":"2","email":"eve@evil.example@contractor.example","email_verified":true}`, []string{"user"}, "eve@evil.example@contractor.example"},
		{"the domain under another is no contractor", `{"sub":"3","email":"eve@contractor.example.evil.example","email_verified":true}`, []string{"user"}, "eve@contractor.example.evil.example"},
		{"a Cyrillic e in the domain is no contractor", `{"sub":"4","email":"eve@contractor.exampl\u0435","email_verified":true}`, []string{"user"}, "eve@contractor.exampl\u0435"},
		{"a fullwidth c in the domain is no contractor", `{"sub":"5","email":"eve@\uff43ontractor.example","email_verified":true}`, []string{"user"}, "eve@\uff43ontractor.example"},
		// matches is case-sensitive: an upper-case domain gets the
		// default role (the IdP's spelling; lower(email) would fold
		// Unicode too, a Kelvin sign K to k).
		{"the domain in upper case is not matched", `{"sub":"6","email":"ana@CONTRACTOR.EXAMPLE","email_verified":true}`, []string{"user"}, "ana@CONTRACTOR.EXAMPLE"},
		{"email_verified the string false refuses the login", `{"sub":"7","email":"ana@contractor.example","email_verified":"false"}`, nil, ""},
		{"email_verified null refuses the login", `{"sub":"8","email":"ana@contractor.example","email_verified":null}`, nil, ""},
		{"email_verified 0 refuses the login", `{"sub":"9","email":"ana@contractor.example","email_verified":0}`, nil, ""},
		{"email_verified the string true is verified", `{"sub":"10","email":"ana@contractor.example","email_verified":"true"}`, []string{"business"}, "ana@contractor.example"},
		{"an IdP that says nothing of verification is believed", `{"sub":"11","email":"ana@contractor.example"}`, []string{"business"}, "ana@contractor.example"},
		{"email null gives no address and no X-Email", `{"sub":"12","email":null,"groups":["staff"]}`, []string{"user"}, ""},
		{"email as a list is no address", `{"sub":"13","email":["ana@contractor.example"],"email_verified":true}`, []string{"user"}, ""},
		{"groups as one string is one group", `{"sub":"14","groups":"cvat-admins"}`, []string{"admin"}, ""},
		{"groups as one string with a comma is one group, not two", `{"sub":"15","groups":"staff,cvat-admins"}`, []string{"user"}, ""},
		{"groups as one string with spaces is one group", `{"sub":"16","groups":"staff cvat-admins"}`, []string{"user"}, ""},
		{"groups null is no group", `{"sub":"17","groups":null}`, []string{"user"}, ""},
		{"null and empty groups in the list are dropped, the rest kept", `{"sub":"18","groups":[null,"","cvat-admins"]}`, []string{"admin"}, ""},
		{"groups as an object is no group", `{"sub":"19","groups":{"cvat-admins":true}}`, []string{"user"}, ""},
		{"a group differing in case is another group", `{"sub":"20","groups":["CVAT-Admins"]}`, []string{"user"}, ""},
		{"hd null is no Workspace", `{"sub":"21","hd":null}`, []string{"user"}, ""},
		{"hd as a list is no Workspace", `{"sub":"22","hd":["example.com"]}`, []string{"user"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var claims map[string]any
			if err := json.Unmarshal([]byte(tc.claims), &claims); err != nil {
				t.Fatal(err)
			}
			e, err := Explain(cfg, httptest.NewRequest("GET", "https://cvat.example.com/tasks", nil), netip.MustParseAddr("203.0.113.7"), claims, "company")
			if err != nil {
				t.Fatal(err)
			}
			if tc.roles == nil {
				if e.Decision != decisionForbidden || !strings.Contains(e.Reason, "the login would be refused") || len(e.Headers) > 0 {
					t.Fatalf("decision %s (%s), headers %v; want the login refused", e.Decision, e.Reason, e.Headers)
				}
				return
			}
			if e.Decision != decisionAuthenticated {
				t.Fatalf("decision %s (%s), want %s", e.Decision, e.Reason, decisionAuthenticated)
			}
			if !slices.Equal(e.Roles, tc.roles) {
				t.Errorf("roles %q, want %q", e.Roles, tc.roles)
			}
			want := map[string]string{"X-Groups": strings.Join(tc.roles, ",")}
			if tc.email != "" {
				want["X-Email"] = tc.email
			}
			if !maps.Equal(e.Headers, want) {
				t.Errorf("headers %q, want %q", e.Headers, want)
			}
		})
	}
}
