package proxy

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// explainIdPs has a SAML entry of each kind a login meets (crewjam's
// samlidp, as test/samlserver runs it, and Entra ID) and an LDAP one, with
// the role rule and identity headers of the CVAT profile.
const explainIdPs = `
server:
  public_url: https://cvat.example.com
upstream:
  url: http://traefik:8080
session:
  keys: [` + testKey + `]
sso:
  identity_providers:
    - id: samlidp
      protocol: SAML
      entity_id: https://sso.example.com/metadata
      metadata_url: https://sso.example.com/metadata
      attribute_mapping: {groups: ` + samlserver.GroupsAttribute + `}
    - id: entra
      protocol: SAML
      entity_id: https://sts.windows.net/00000000-0000-0000-0000-000000000000/
      metadata_url: https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/federationmetadata/2007-06/federationmetadata.xml
      attribute_mapping:
        uid: http://schemas.microsoft.com/identity/claims/objectidentifier
        groups: http://schemas.microsoft.com/ws/2008/06/identity/claims/groups
    - id: ad
      protocol: LDAP
      url: ldaps://ad.example.com
      bind_dn: cn=svc,dc=example,dc=com
      bind_password: x
      user_search: {base_dn: "dc=example,dc=com", filter: "(sAMAccountName={username})"}
role_mapping:
  roles: [admin, user]
  default: user
  rules:
    - role: admin
      when: '"cvat-admins" in groups || "22222222-2222-2222-2222-222222222222" in groups'
attribute_pass:
  headers:
    X-Email: email
    X-User: username
    X-Sub: sub
`

// explain --claims for a SAML or LDAP entry reads the file as the
// attributes that IdP sends, through the entry's attribute_mapping (and its
// defaults), as a login does: not as OIDC claims.
func TestExplainReadsAttributesAsTheLoginDoes(t *testing.T) {
	cfg, err := ParseConfig([]byte(explainIdPs), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, idp   string
		claims      map[string]any
		roles       []string
		headers     map[string]string
		missing     map[string]string
		missingFrom string
	}{
		{
			name: "crewjam samlidp: mail and uid by their OIDs, groups by the mapping, sub the NameID",
			idp:  "samlidp",
			claims: map[string]any{
				"NameID":                            "alice@example.com",
				"urn:oid:0.9.2342.19200300.100.1.1": "alice",
				"urn:oid:0.9.2342.19200300.100.1.3": "alice@example.com",
				"urn:oid:2.5.4.3":                   "Alice Liddell",
				"urn:oid:1.3.6.1.4.1.5923.1.1.1.1":  []any{"member", "cvat-admins"},
				samlserver.GroupsAttribute:          []any{"cvat-admins"},
			},
			roles:   []string{"admin"},
			headers: map[string]string{"X-Email": "alice@example.com", "X-User": "alice", "X-Sub": "alice@example.com"},
		},
		{
			name: "Entra ID: its claim URIs, uid by attribute_mapping, group object IDs",
			idp:  "entra",
			claims: map[string]any{
				"http://schemas.microsoft.com/identity/claims/objectidentifier":      "9f1b0c6e-5d7a-4c21-8f3e-0a1b2c3d4e5f",
				"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress": "bob@example.com",
				"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name":         "bob@example.com",
				"http://schemas.microsoft.com/ws/2008/06/identity/claims/groups":     "22222222-2222-2222-2222-222222222222",
			},
			roles:   []string{"admin"},
			headers: map[string]string{"X-Email": "bob@example.com", "X-User": "bob@example.com", "X-Sub": "9f1b0c6e-5d7a-4c21-8f3e-0a1b2c3d4e5f"},
		},
		{
			name: "a SAML assertion without the mapped groups attribute: missing names the attribute, not an OIDC claim",
			idp:  "samlidp",
			claims: map[string]any{
				"urn:oid:0.9.2342.19200300.100.1.3": "carol@example.com",
				"groups_typo":                       []any{"cvat-admins"},
			},
			roles:       []string{"user"},
			headers:     map[string]string{"X-Email": "carol@example.com", "X-Sub": "(NameID)"},
			missing:     map[string]string{"groups": samlserver.GroupsAttribute},
			missingFrom: "attribute",
		},
		{
			name: "LDAP: the entry's attributes, groups named by the CN of their DN in memberOf",
			idp:  "ad",
			claims: map[string]any{
				"dn":             "CN=Dave,OU=Staff,DC=example,DC=com",
				"sAMAccountName": "dave",
				"mail":           "dave@example.com",
				"memberOf":       []any{"CN=cvat-admins,OU=Groups,DC=example,DC=com", "CN=staff,OU=Groups,DC=example,DC=com"},
			},
			roles:   []string{"admin"},
			headers: map[string]string{"X-Email": "dave@example.com", "X-User": "dave", "X-Sub": "CN=Dave,OU=Staff,DC=example,DC=com"},
		},
		{
			name: "LDAP: an entry given without its DN or a uid attribute: sub is (dn), as a login's is the DN every entry has",
			idp:  "ad",
			claims: map[string]any{
				"sAMAccountName": "dave",
				"mail":           "dave@example.com",
			},
			roles:   []string{"user"},
			headers: map[string]string{"X-Email": "dave@example.com", "X-User": "dave", "X-Sub": "(dn)"},
		},
		{
			name: "LDAP: a blank DN is no DN: sub is (dn)",
			idp:  "ad",
			claims: map[string]any{
				"dn":             "  ",
				"sAMAccountName": "dave",
				"mail":           "dave@example.com",
			},
			roles:   []string{"user"},
			headers: map[string]string{"X-Email": "dave@example.com", "X-User": "dave", "X-Sub": "(dn)"},
		},
		{
			name: "LDAP: an entry without mail or groups lacks nothing, the directory's word being final",
			idp:  "ad",
			claims: map[string]any{
				"dn":             "CN=Erin,OU=Staff,DC=example,DC=com",
				"sAMAccountName": "erin",
			},
			roles:   []string{"user"},
			headers: map[string]string{"X-User": "erin", "X-Sub": "CN=Erin,OU=Staff,DC=example,DC=com"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "https://cvat.example.com/tasks", nil)
			e, err := Explain(cfg, r, netip.MustParseAddr("203.0.113.7"), tc.claims, tc.idp)
			if err != nil {
				t.Fatal(err)
			}
			if e.Decision != decisionAuthenticated || !slices.Equal(e.Roles, tc.roles) || !maps.Equal(e.Headers, tc.headers) {
				t.Errorf("decision %s (%s), roles %v, headers %v; want authenticated, %v, %v", e.Decision, e.Reason, e.Roles, e.Headers, tc.roles, tc.headers)
			}
			if !maps.Equal(e.Missing, tc.missing) || e.MissingFrom != tc.missingFrom {
				t.Errorf("missing %v from %q, want %v from %q", e.Missing, e.MissingFrom, tc.missing, tc.missingFrom)
			}
			if tc.missing != nil && !strings.Contains(e.MissingHint, "attribute_mapping") {
				t.Errorf("hint %q, want the SAML one (attribute_mapping)", e.MissingHint)
			}
		})
	}
}

// What the SAML provider refuses at a login, explain says would be refused,
// and a file a SAML IdP could not have sent is an error naming the value.
func TestExplainRefusesWhatASAMLLoginRefuses(t *testing.T) {
	cfg, err := ParseConfig([]byte(explainIdPs), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	explain := func(idpID string, claims map[string]any) (*Explanation, error) {
		return Explain(cfg, httptest.NewRequest("GET", "https://cvat.example.com/tasks", nil), netip.MustParseAddr("203.0.113.7"), claims, idpID)
	}
	// Entra ID sends a link instead of more than 150 groups.
	e, err := explain("entra", map[string]any{
		"http://schemas.microsoft.com/identity/claims/objectidentifier": "9f1b0c6e",
		"http://schemas.microsoft.com/claims/groups.link":               "https://graph.windows.net/tenant/users/9f1b0c6e/getMemberObjects",
	})
	if err != nil || e.Decision != decisionForbidden || !strings.Contains(e.Reason, "the login would be refused") || !strings.Contains(e.Reason, "more groups than Microsoft can list") {
		t.Errorf("groups overage: %v, %+v; want the login refused, as the provider refuses it", err, e)
	}
	// attribute_mapping.uid names an attribute the assertion lacks.
	if e, err := explain("entra", map[string]any{"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress": "bob@example.com"}); err != nil ||
		e.Decision != decisionForbidden || !strings.Contains(e.Reason, "attribute_mapping.uid") {
		t.Errorf("no uid attribute: %v, %+v; want the login refused, naming attribute_mapping.uid", err, e)
	}
	if _, err := explain("samlidp", map[string]any{"groups": []any{"cvat-admins", 7}}); err == nil || !strings.Contains(err.Error(), `attribute "groups": want a string or a list of strings`) {
		t.Errorf("a number among the groups: %v, want an error naming the attribute", err)
	}
}

// explain --claims says a login would be refused when the entry's admission
// rules refuse the claims, as serve's login does, rather than showing the
// headers of a user who never gets a session.
func TestExplainRefusesWhomAdmissionRefuses(t *testing.T) {
	y := strings.Replace(testConfig, "      client_id: portcullis\n", "      client_id: portcullis\n      allowed_email_domains: [example.com]\n", 1)
	cfg, err := ParseConfig([]byte(strings.Replace(y, "UPSTREAM", "http://traefik:8080", 1)), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		claims   map[string]any
		decision string
		rule     string // the admission rule the reason names
	}{
		{"a verified address at the allowed domain is admitted", map[string]any{"sub": "a1", "email": "alice@example.com", "email_verified": true}, decisionAuthenticated, ""},
		{"an address at another domain is refused", map[string]any{"sub": "m1", "email": "mallory@evil.example", "email_verified": true}, decisionForbidden, "allowed_email_domains"},
		{"an unverified address at the allowed domain is refused", map[string]any{"sub": "m2", "email": "mallory@example.com", "email_verified": false}, decisionForbidden, "email_verified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "https://cvat.example.com/tasks", nil)
			e, err := Explain(cfg, r, netip.MustParseAddr("203.0.113.7"), tc.claims, "company")
			if err != nil {
				t.Fatal(err)
			}
			if e.Decision != tc.decision {
				t.Fatalf("decision %s (%s), want %s", e.Decision, e.Reason, tc.decision)
			}
			if tc.decision == decisionForbidden && (!strings.Contains(e.Reason, "the login would be refused") || !strings.Contains(e.Reason, tc.rule) || len(e.Headers) > 0) {
				t.Errorf("reason %q, headers %v; want the login refused by %s and no headers", e.Reason, e.Headers, tc.rule)
			}
		})
	}
}

// explain --claims for an OIDC or OAuth2 entry passes the claims through
// what the entry's preset does to a login's claims before they become a
// profile: Entra ID's group overage refuses the login, and Hugging Face's
// orgs become groups. Without it, explain showed the default role for a
// user the login refuses, and refused one whom allowed_groups admits.
func TestExplainAppliesThePresetToClaimsAsTheLoginDoes(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
server:
  public_url: https://cvat.example.com
upstream:
  url: http://traefik:8080
session:
  keys: [`+testKey+`]
sso:
  identity_providers:
    - id: azure
      preset: azure
      tenant: 72f988bf-86f1-41af-91ab-2d7cd011db47
      client_id: app
      client_secret: x
    - id: huggingface
      preset: huggingface
      client_id: app
      client_secret: x
      allowed_groups: [cvat-ai]
role_mapping:
  roles: [admin, user]
  default: user
  rules:
    - role: admin
      when: '"cvat-ai" in groups'
`), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, idp string
		claims    map[string]any
		decision  string
		reason    string // in the reason, when the login is refused
		roles     []string
	}{
		{"an Entra ID token that points to Graph for its groups (_claim_names) is refused", "azure",
			map[string]any{"sub": "d", "_claim_names": map[string]any{"groups": "src1"}, "_claim_sources": map[string]any{"src1": map[string]any{"endpoint": "https://graph.microsoft.com/v1.0/users/d/getMemberObjects"}}},
			decisionForbidden, "more groups than Microsoft can list", nil},
		{"an Entra ID token with hasgroups is refused", "azure",
			map[string]any{"sub": "d", "hasgroups": true}, decisionForbidden, "more groups than Microsoft can list", nil},
		{"an Entra ID token with its groups is admitted", "azure",
			map[string]any{"sub": "a", "groups": []any{"g1"}}, decisionAuthenticated, "", []string{"user"}},
		{"Hugging Face's orgs are the groups", "huggingface",
			map[string]any{"sub": "h", "orgs": []any{map[string]any{"sub": "o1", "preferred_username": "cvat-ai"}}}, decisionAuthenticated, "", []string{"admin"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "https://cvat.example.com/tasks", nil)
			e, err := Explain(cfg, r, netip.MustParseAddr("203.0.113.7"), tc.claims, tc.idp)
			if err != nil {
				t.Fatal(err)
			}
			if e.Decision != tc.decision || !strings.Contains(e.Reason, tc.reason) {
				t.Fatalf("decision %s (%s), want %s naming %q", e.Decision, e.Reason, tc.decision, tc.reason)
			}
			if tc.roles != nil && !slices.Equal(e.Roles, tc.roles) {
				t.Errorf("roles %v, want %v", e.Roles, tc.roles)
			}
		})
	}
}

// A login refuses a profile without a subject (OIDC and OAuth2: none in the
// claim the mapping reads sub from; SAML: no NameID and no uid attribute),
// and so does explain, naming where it read sub from, rather than showing
// the roles and headers of a session that never exists. (An LDAP login's
// subject is at worst the entry's DN, which every entry has.)
func TestExplainRefusesALoginWithoutASubject(t *testing.T) {
	cfg, err := ParseConfig([]byte(strings.Replace(explainIdPs, "role_mapping:", `    - id: company
      protocol: OIDC
      server_url: https://login.example.com/
      client_id: portcullis
    - id: employees
      protocol: OAUTH2
      preset: github
      client_id: portcullis
      client_secret: x
      claims: {sub: employee_id}
role_mapping:`, 1)), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, idp string
		claims    map[string]any
		reason    string // in the reason: where sub was read from
	}{
		{"OIDC claims without sub", "company", map[string]any{"email": "alice@example.com", "groups": []any{"cvat-admins"}}, `no subject in claim "sub"`},
		{"OIDC claims with an empty sub", "company", map[string]any{"sub": "", "email": "alice@example.com"}, `no subject in claim "sub"`},
		{"OAuth2 claims without the claim claims.sub names", "employees", map[string]any{"id": 7, "sub": "u1", "email": "alice@example.com"}, `no subject in claim "employee_id"`},
		{"a SAML assertion with an empty NameID and no uid attribute", "samlidp", map[string]any{"NameID": " ", "urn:oid:0.9.2342.19200300.100.1.3": "alice@example.com"}, "no NameID and attribute_mapping.uid is not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "https://cvat.example.com/tasks", nil)
			e, err := Explain(cfg, r, netip.MustParseAddr("203.0.113.7"), tc.claims, tc.idp)
			if err != nil {
				t.Fatal(err)
			}
			if e.Decision != decisionForbidden || !strings.Contains(e.Reason, "the login would be refused") || !strings.Contains(e.Reason, tc.reason) || len(e.Roles) > 0 || len(e.Headers) > 0 {
				t.Errorf("decision %s (%s), roles %v, headers %v; want the login refused naming %q, and no roles or headers", e.Decision, e.Reason, e.Roles, e.Headers, tc.reason)
			}
		})
	}
}

// explain's URL is read as curl sends it: userinfo and the fragment stay
// out of the request, a URL with no path asks for /, and a Host line in
// any case takes the URL host's place rather than making a second one.
func TestExplainRequestReadsTheURLAsCurlSendsIt(t *testing.T) {
	cfg, err := ParseConfig([]byte(explainIdPs), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url    string
		header       []string
		host, target string
	}{
		{"userinfo in the URL is not part of the Host", "https://u:p@cvat.example.com/tasks", nil, "cvat.example.com", "/tasks"},
		{"the fragment is not sent", "https://cvat.example.com/tasks?a=1#top", nil, "cvat.example.com", "/tasks?a=1"},
		{"a URL with only a query asks for /", "https://cvat.example.com?a=1", nil, "cvat.example.com", "/?a=1"},
		{"a host line in lower case is the Host", "/tasks", []string{"host: other.example.com"}, "other.example.com", "/tasks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ExplainRequest(cfg, "GET", tc.url, tc.header)
			if err != nil {
				t.Fatal(err)
			}
			if r.Host != tc.host || r.RequestURI != tc.target {
				t.Errorf("Host %q, request-target %q; want %q, %q", r.Host, r.RequestURI, tc.host, tc.target)
			}
		})
	}
}

// The session cookie --claims stands for joins the last Cookie line, as a
// browser sends its cookies in one: a header rule or expression reads the
// lines joined by ", ", which would otherwise differ from serve's.
func TestExplainAddsTheSessionCookieToTheLastCookieLine(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
		want  []string
	}{
		{"no Cookie line", nil, []string{"s=1"}},
		{"one Cookie line", []string{"a=b"}, []string{"a=b; s=1"}},
		{"two Cookie lines", []string{"a=b", "c=d"}, []string{"a=b", "c=d; s=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.lines != nil {
				h["Cookie"] = slices.Clone(tc.lines)
			}
			addCookie(h, "s=1")
			if !slices.Equal(h["Cookie"], tc.want) {
				t.Errorf("Cookie %q, want %q", h["Cookie"], tc.want)
			}
		})
	}
}

// TestExplainSaysWhyAllowIfRefuses pins the reason explain gives for a 403
// of allow_if: "allow_if is false" alone when the expression gave false, and
// with the whole run-time error in parentheses when it failed, which serve
// refuses alike but logs only where it failed (rules.FailedAt: the values
// come from request headers, which carry credentials). explain is where an
// operator reads what the failure was.
func TestExplainSaysWhyAllowIfRefuses(t *testing.T) {
	y := strings.NewReplacer(
		"UPSTREAM", "http://traefik:8080",
		"  - name: blocked\n", "  - name: quota\n    path_prefix: /quota\n    action: authenticate\n    allow_if: 'int(request.headers[\"X-Quota\"]) > 1'\n  - name: blocked\n",
	).Replace(testConfig)
	cfg, err := ParseConfig([]byte(y), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	user := map[string]any{"sub": "u1", "email": "ulla@example.com", "email_verified": true}
	for _, tc := range []struct {
		name, path, quota, want string
	}{
		{"an allow_if that is false says so, and nothing more", "/admin/", "", "403: allow_if is false"},
		{"an allow_if that fails says how, in parentheses", "/quota", "lots",
			"403: allow_if is false (rule quota: allow_if: invalid operation: int(lots) (1:1)\n | int(request.headers[\"X-Quota\"]) > 1\n | ^)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "https://cvat.example.com"+tc.path, nil)
			if tc.quota != "" {
				r.Header.Set("X-Quota", tc.quota)
			}
			e, err := Explain(cfg, r, netip.MustParseAddr("203.0.113.7"), user, "company")
			if err != nil {
				t.Fatal(err)
			}
			if e.Decision != decisionForbidden || e.Reason != tc.want || len(e.Headers) > 0 {
				t.Errorf("decision %s, reason %q, headers %v;\nwant forbidden, %q and no headers", e.Decision, e.Reason, e.Headers, tc.want)
			}
		})
	}
}
