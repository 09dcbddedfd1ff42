package idp

import (
	"encoding/json"
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
