package idp

import (
	"encoding/json"
	"reflect"
	"testing"
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
			want := tt.want
			want.IdP, want.Claims = "corp", claims
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("profile =\n %+v\nwant\n %+v", *got, want)
			}
		})
	}
}
