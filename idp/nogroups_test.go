package idp

import (
	"slices"
	"strings"
	"testing"
)

// allowed_groups on an entry whose IdP never sends groups would refuse
// every user: Validate says so, for Google and for Cognito with domain
// alone (OAUTH2, userInfo without groups), and not when claims.groups is
// mapped or Cognito's user pool sends cognito:groups in its ID token.
// unsentFields, what a login is not said to miss, agrees.
func TestAllowedGroupsOnAnEntryWithoutGroups(t *testing.T) {
	const refusal = "allowed_groups: admits no one"
	cognitoDomain := "https://cvat.auth.us-east-1.amazoncognito.com"
	tests := []struct {
		name       string
		c          Config
		wantRefuse bool
	}{
		{"Google", Config{Preset: PresetGoogle}, true},
		{"Google with claims.groups mapped", Config{Preset: PresetGoogle, Claims: map[string]string{"groups": "workspace_groups"}}, false},
		{"Cognito with domain alone", Config{Preset: PresetCognito, Domain: cognitoDomain}, true},
		{"Cognito with its user pool", Config{Preset: PresetCognito, UserPoolID: "eu-west-1_AbC123xyz"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			c.ID, c.ClientID, c.ClientSecret = "sso", "portcullis", "secret"
			c.AllowedGroups = []string{"staff"}
			err := c.Validate()
			if got := err != nil && strings.Contains(err.Error(), refusal); got != tc.wantRefuse {
				t.Errorf("Validate: %v; want %q: %v", err, refusal, tc.wantRefuse)
			}
			c.AllowedGroups = nil
			if err := c.Validate(); err != nil && strings.Contains(err.Error(), refusal) {
				t.Errorf("without allowed_groups, Validate: %v", err)
			}
			resolved := mustPreset(t, c)
			unsent := resolved.unsentFields()
			if got := slices.Contains(unsent, "groups"); got != tc.wantRefuse {
				t.Errorf("unsentFields: %q; want groups in it: %v", unsent, tc.wantRefuse)
			}
		})
	}
}
