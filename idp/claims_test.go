package idp

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/crewjam/saml"
)

func TestProfileFromClaims(t *testing.T) {
	tests := []struct {
		name    string
		claims  string
		mapping map[string]string
		want    Profile
	}{
		{
			name:   "standard OIDC claims fill the profile by default",
			claims: `{"sub":"u1","email":"a@example.com","email_verified":true,"preferred_username":"alice","given_name":"Alice","family_name":"Admin","name":"Alice Admin","groups":["g1","g2"]}`,
			want:   Profile{Sub: "u1", Email: "a@example.com", EmailVerified: true, Username: "alice", FirstName: "Alice", LastName: "Admin", Name: "Alice Admin", Groups: []string{"g1", "g2"}},
		},
		{
			name:   "a string of groups is one group, not split on commas or spaces",
			claims: `{"sub":"u1","groups":"Domain Users, Staff"}`,
			want:   Profile{Sub: "u1", Groups: []string{"Domain Users, Staff"}},
		},
		{
			name:   "an empty string of groups is no group",
			claims: `{"sub":"u1","groups":"  "}`,
			want:   Profile{Sub: "u1"},
		},
		{
			name:   "empty and non-scalar entries of a groups list are dropped, numbers kept as text",
			claims: `{"sub":"u1","groups":["a","",{"x":1},42]}`,
			want:   Profile{Sub: "u1", Groups: []string{"a", "42"}},
		},
		{
			name:   "email_verified as the string \"true\" is true",
			claims: `{"sub":"u1","email_verified":"True"}`,
			want:   Profile{Sub: "u1", EmailVerified: true},
		},
		{
			name:   "email_verified as the string \"false\" is false",
			claims: `{"sub":"u1","email_verified":"false"}`,
			want:   Profile{Sub: "u1"},
		},
		{
			name:    "a dotted path reads a nested claim",
			claims:  `{"sub":"u1","realm_access":{"roles":["admin","user"]}}`,
			mapping: map[string]string{"groups": "realm_access.roles"},
			want:    Profile{Sub: "u1", Groups: []string{"admin", "user"}},
		},
		{
			name:    "a claim whose name contains dots is found by its whole name first",
			claims:  `{"sub":"u1","https://cvat.example.com/roles":["r1"],"https://cvat":{"example":{"com/roles":["wrong"]}}}`,
			mapping: map[string]string{"groups": "https://cvat.example.com/roles"},
			want:    Profile{Sub: "u1", Groups: []string{"r1"}},
		},
		{
			name:    "a dotted path through a non-object finds nothing",
			claims:  `{"sub":"u1","realm_access":"flat"}`,
			mapping: map[string]string{"groups": "realm_access.roles"},
			want:    Profile{Sub: "u1"},
		},
		{
			name:    "a numeric subject is written as an integer",
			claims:  `{"id":123456789,"login":"octocat"}`,
			mapping: map[string]string{"sub": "id", "username": "login"},
			want:    Profile{Sub: "123456789", Username: "octocat"},
		},
		{
			name:    "a remapped field no longer reads its default claim",
			claims:  `{"sub":"u1","email":"default@example.com","mail":"mapped@example.com"}`,
			mapping: map[string]string{"email": "mail"},
			want:    Profile{Sub: "u1", Email: "mapped@example.com"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims := map[string]any{}
			if err := json.Unmarshal([]byte(tt.claims), &claims); err != nil {
				t.Fatal(err)
			}
			got := profileFromClaims("corp", claims, claimMapping(tt.mapping))
			got.missing = nil // TestMissingClaims
			want := tt.want
			want.IdP, want.Claims = "corp", claims
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("profile =\n %+v\nwant\n %+v", *got, want)
			}
		})
	}
}

// Missing names email and groups when the IdP's answer left them out,
// with the claim or attributes read, and not when it sent them empty.
func TestMissingClaims(t *testing.T) {
	samlWith := func(attrs ...string) *saml.Assertion {
		a := &saml.Assertion{Subject: &saml.Subject{NameID: &saml.NameID{Value: "n"}}, AttributeStatements: []saml.AttributeStatement{{}}}
		for _, name := range attrs {
			a.AttributeStatements[0].Attributes = append(a.AttributeStatements[0].Attributes, saml.Attribute{Name: name})
		}
		return a
	}
	for _, tc := range []struct {
		name string
		got  func(t *testing.T) *Profile
		want map[string]string
	}{
		{"an ID token with only sub misses email and groups, by their claims", func(t *testing.T) *Profile {
			return profileFromClaims("corp", map[string]any{"sub": "u1"}, claimMapping(nil))
		}, map[string]string{"email": "email", "groups": "groups"}},
		{"a remapped field is missing by the claim it names", func(t *testing.T) *Profile {
			return profileFromClaims("corp", map[string]any{"sub": "u1", "email": "a@b.c", "groups": []any{"g"}}, claimMapping(map[string]string{"groups": "roles"}))
		}, map[string]string{"groups": "roles"}},
		{"claims sent empty are not missing", func(t *testing.T) *Profile {
			return profileFromClaims("corp", map[string]any{"sub": "u1", "email": "", "groups": []any{}}, claimMapping(nil))
		}, nil},
		{"Google, which has no groups claim, misses only the email", func(t *testing.T) *Profile {
			c := Config{ID: "google", Preset: PresetGoogle, ClientID: "id", ClientSecret: "s"}
			p, err := OIDCProfile(mustPreset(t, c), map[string]any{"sub": "u1"})
			if err != nil {
				t.Fatal(err)
			}
			return p
		}, map[string]string{"email": "email"}},
		{"Google with groups mapped to a claim of the operator's misses it when it does not come", func(t *testing.T) *Profile {
			c := Config{ID: "google", Preset: PresetGoogle, ClientID: "id", ClientSecret: "s", Claims: map[string]string{"groups": "workspace_groups"}}
			p, err := OIDCProfile(mustPreset(t, c), map[string]any{"sub": "u1", "email": "a@b.c"})
			if err != nil {
				t.Fatal(err)
			}
			return p
		}, map[string]string{"groups": "workspace_groups"}},
		{"Google with nothing missing", func(t *testing.T) *Profile {
			p, err := OIDCProfile(mustPreset(t, Config{ID: "google", Preset: PresetGoogle, ClientID: "id", ClientSecret: "s"}), map[string]any{"sub": "u1", "email": "a@b.c"})
			if err != nil {
				t.Fatal(err)
			}
			return p
		}, nil},
		{"a SAML assertion without groups misses them by the attributes tried", func(t *testing.T) *Profile {
			m := newSAMLMapping(map[string]string{"groups": "memberOf"})
			p, err := m.profile("corp", samlWith("mail"))
			if err != nil {
				t.Fatal(err)
			}
			return p
		}, map[string]string{"groups": "memberOf"}},
		{"a SAML assertion without an email attribute names every default one tried", func(t *testing.T) *Profile {
			m := newSAMLMapping(nil)
			p, err := m.profile("corp", samlWith("groups"))
			if err != nil {
				t.Fatal(err)
			}
			return p
		}, map[string]string{"email": strings.Join(samlDefaultAttributes["email"], " or ")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.got(t).Missing(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Missing() = %v, want %v", got, tc.want)
			}
		})
	}
}

func mustPreset(t *testing.T, c Config) Config {
	t.Helper()
	c, err := c.WithPreset()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// nestedClaim is a claim value of levels nested objects around a string.
func nestedClaim(levels int) any {
	var v any = "bottom"
	for range levels {
		v = map[string]any{"a": v}
	}
	return v
}

// nestedArrays is a claim of arrays alone, levels deep: [[..."bottom"...]].
func nestedArrays(levels int) any {
	var v any = "bottom"
	for range levels {
		v = []any{v}
	}
	return v
}

// keycloakClaims are the claims of a Keycloak ID token with 50 groups, as
// JSON decodes them: what a login's check goes through.
func keycloakClaims(t testing.TB) map[string]any {
	t.Helper()
	groups := make([]string, 50)
	for i := range groups {
		groups[i] = "/org/department-" + strings.Repeat("x", i%12) + "/team"
	}
	raw, _ := json.Marshal(map[string]any{
		"exp": 1700000000, "iat": 1699999700, "auth_time": 1699999690, "jti": "5b9c0f3e-0d6e-4c1b-9a8e-2f1c3d4e5f60",
		"iss": "https://sso.example.com/realms/company", "aud": "portcullis", "sub": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
		"typ": "ID", "azp": "portcullis", "nonce": "n-0S6_WzA2Mj", "session_state": "0a1b2c3d", "at_hash": "77QmUPtjPfzWtF2AnpK9RQ",
		"acr": "1", "sid": "0a1b2c3d", "email_verified": true, "name": "Ann Example", "preferred_username": "ann",
		"given_name": "Ann", "family_name": "Example", "email": "ann@example.com",
		"realm_access":    map[string]any{"roles": []string{"offline_access", "uma_authorization", "default-roles-company"}},
		"resource_access": map[string]any{"account": map[string]any{"roles": []string{"manage-account", "view-profile"}}},
		"groups":          groups,
		"address":         map[string]any{"country": "NL", "locality": "Utrecht"},
	})
	claims := map[string]any{}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

func TestCheckClaimDepth(t *testing.T) {
	tests := []struct {
		name   string
		claims map[string]any
		deep   string // the claim refused; "" accepts
	}{
		{name: "a Keycloak ID token with 50 groups is accepted", claims: keycloakClaims(t)},
		{name: "a claim nested 32 levels deep is accepted", claims: map[string]any{"sub": "ann", "deep": nestedClaim(MaxClaimDepth)}},
		{name: "a claim nested 33 levels deep is refused", claims: map[string]any{"sub": "ann", "deep": nestedClaim(MaxClaimDepth + 1)},
			deep: "deep"},
		{name: "a claim nested 10,000 levels deep (all JSON allows) is refused", claims: map[string]any{"deep": nestedClaim(10000)},
			deep: "deep"},
		{name: "arrays count as levels", claims: map[string]any{"deep": []any{[]any{nestedClaim(MaxClaimDepth - 1)}}}, deep: "deep"},
		{name: "arrays alone nested 32 levels deep are accepted", claims: map[string]any{"deep": nestedArrays(MaxClaimDepth)}},
		{name: "arrays alone nested 33 levels deep are refused", claims: map[string]any{"deep": nestedArrays(MaxClaimDepth + 1)}, deep: "deep"},
		{name: "of two claims nested too deep, the first by name is named", claims: map[string]any{
			"zz": nestedClaim(40), "groups": []any{nestedClaim(40)}, "email": "ann@example.com"}, deep: "groups"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkClaimDepth(tt.claims)
			if tt.deep == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			deep, ok := errors.AsType[*ClaimsTooDeepError](err)
			if !ok || deep.Claim != tt.deep || !strings.Contains(err.Error(), "more than 32 levels") {
				t.Fatalf("error %v, want claim %q refused as nested more than 32 levels deep", err, tt.deep)
			}
		})
	}
}

// BenchmarkCheckClaimDepth is the check's cost on a real IdP's claims,
// which every login and refresh pays.
func BenchmarkCheckClaimDepth(b *testing.B) {
	claims := keycloakClaims(b)
	for b.Loop() {
		if checkClaimDepth(claims) != nil {
			b.Fatal("refused")
		}
	}
}
