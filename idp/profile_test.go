package idp

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// Footprint counts what a profile's claims hold whatever their types: the
// SAML and LDAP providers give a multi-valued attribute as a []string (an
// LDAP user's memberOf is as long as their group list), and the caches that
// bound their memory by it (Basic auth, the attribute pass's identities)
// keep those profiles as the provider made them. Counted as one value each,
// 1,000 group DNs in a claim were 40 KB counted as 16 bytes.
func TestFootprintCountsEveryClaimType(t *testing.T) {
	dns := make([]string, 1000)
	for i := range dns {
		dns[i] = fmt.Sprintf("cn=group-%d,ou=groups,dc=example,dc=com", i)
	}
	long := strings.Join(dns, ";")
	anys := make([]any, len(dns))
	for i, dn := range dns {
		anys[i] = dn
	}
	byDN := make(map[string]string, len(dns))
	for _, dn := range dns {
		byDN[dn] = dn
	}
	tests := []struct {
		name  string
		claim any
		holds int // bytes of text in it, at least
	}{
		{"a string", long, len(long)},
		{"a []any of strings (JSON)", anys, len(long)},
		{"a []string (SAML and LDAP multi-valued attributes)", dns, len(long)},
		{"a []string inside a []any", []any{dns}, len(long)},
		{"a []string inside a map", map[string]any{"memberOf": dns}, len(long)},
		{"a map[string]string", byDN, 2 * len(long)},
		{"a json.Number", json.Number(strings.Repeat("1", 60000)), 60000},
		{"a large key", map[string]any{long: true}, len(long)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bare := (&Profile{Sub: "alice"}).Footprint()
			p := &Profile{Sub: "alice", Claims: map[string]any{"c": tt.claim}}
			if got := p.Footprint() - bare; got < tt.holds {
				t.Errorf("a claim holding %d bytes adds %d to Footprint", tt.holds, got)
			}
		})
	}
}

// A logout from the IdP finds sessions by SessionKey: a SAML SessionIndex
// counts only within its NameID (another user's session may have the same
// index), and a login that left no session index has no key at all.
func TestTokensSessionKey(t *testing.T) {
	alice := Tokens{NameID: &SAMLNameID{Value: "alice"}, SID: "idx-1"}
	bob := Tokens{NameID: &SAMLNameID{Value: "bob"}, SID: "idx-1"}
	if alice.SessionKey() == bob.SessionKey() {
		t.Errorf("alice's and bob's sessions with SessionIndex idx-1 share the key %q", alice.SessionKey())
	}
	if got, want := alice.SessionKey(), SAMLSessionKey("alice", "idx-1"); got != want {
		t.Errorf("SessionKey() = %q, want SAMLSessionKey %q", got, want)
	}
	if got := (Tokens{NameID: &SAMLNameID{Value: "alice"}}).SessionKey(); got != "" {
		t.Errorf("SAML login without SessionIndex: SessionKey() = %q, want none", got)
	}
	if got := (Tokens{SID: "oidc-sid"}).SessionKey(); got != "oidc-sid" {
		t.Errorf("OIDC login: SessionKey() = %q, want its sid", got)
	}
}

func TestTokensSubjectIsTheIdPsNameForTheUser(t *testing.T) {
	idToken := func(claims string) string {
		enc := base64.RawURLEncoding.EncodeToString
		return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(claims)) + ".c2ln"
	}
	tests := []struct {
		name   string
		tokens Tokens
		want   string
	}{
		{"an OIDC login's is its ID token's sub", Tokens{IDToken: idToken(`{"sub":"00u1","email":"a@example.com"}`), SID: "s"}, "00u1"},
		{"an OIDC login without single_sign_out keeps only the sub", Tokens{Sub: "00u1", SID: "s"}, "00u1"},
		{"a SAML login's is its NameID's value, trimmed as a profile's sub", Tokens{NameID: &SAMLNameID{Value: " a@example.com\n", Format: "f"}, SID: "i"}, "a@example.com"},
		{"an OAuth2 login has none", Tokens{RefreshToken: "r"}, ""},
		{"an ID token that does not decode names none", Tokens{IDToken: "not.a-jwt"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tokens.Subject(); got != tt.want {
				t.Errorf("Subject() = %q, want %q", got, tt.want)
			}
		})
	}
}

// A refresh keeps the login's amr, acr and auth_time only where what it read
// has none of its own: a refresh that says acr anew (a step-up that has
// lapsed at the IdP: a lower level) or amr null is taken at its word, and
// a login that had none gives none (an OAuth2 or SAML login never had them).
func TestKeepSignInOnlyFillsWhatTheRefreshLacks(t *testing.T) {
	login := &Profile{Claims: map[string]any{"acr": "2", "amr": []any{"pwd", "otp"}, "auth_time": float64(100), "email": "a@x"}}
	for _, tc := range []struct {
		name    string
		refresh map[string]any
		want    map[string]any
	}{
		{"from userinfo: all three kept", map[string]any{"sub": "s"},
			map[string]any{"sub": "s", "acr": "2", "amr": []any{"pwd", "otp"}, "auth_time": float64(100)}},
		{"a lower acr and amr null from the refresh win", map[string]any{"sub": "s", "acr": "1", "amr": nil},
			map[string]any{"sub": "s", "acr": "1", "amr": nil, "auth_time": float64(100)}},
		{"no claims at all", nil,
			map[string]any{"acr": "2", "amr": []any{"pwd", "otp"}, "auth_time": float64(100)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Profile{Claims: tc.refresh}
			p.KeepSignIn(login)
			if !reflect.DeepEqual(p.Claims, tc.want) {
				t.Errorf("claims %v, want %v", p.Claims, tc.want)
			}
		})
	}
	if len(login.Claims) != 4 {
		t.Errorf("the login's claims changed: %v", login.Claims)
	}
	p := &Profile{Claims: map[string]any{"sub": "s"}}
	p.KeepSignIn(&Profile{Claims: map[string]any{"sub": "s", "login": "octocat"}})
	if len(p.Claims) != 1 {
		t.Errorf("a login without amr, acr or auth_time gave %v", p.Claims)
	}
}
