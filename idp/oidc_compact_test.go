package idp

import (
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestOIDCIDTokenMustBeCompact: go-oidc verifies an ID token through
// go-jose, which also reads the JWS JSON serialization and strips
// whitespace anywhere in a token, so the IdP's token rewritten into another
// form still verifies. The session keeps the ID token, and what it later
// reads from it (its sub, against which refreshes and back-channel logouts
// are checked) is read from the compact form: an ID token in any other form
// is refused, at login and at refresh.
func TestOIDCIDTokenMustBeCompact(t *testing.T) {
	ti := newTestIssuer(t)
	p := ti.provider(t)

	tests := []struct {
		name    string
		reshape func(raw string) string // nil: the compact token as signed
	}{
		{name: "a compact ID token is accepted"},
		{name: "an ID token in the flattened JWS JSON serialization is refused", reshape: func(raw string) string { return jwsJSON(raw, false) }},
		{name: "an ID token in the general JWS JSON serialization is refused", reshape: func(raw string) string { return jwsJSON(raw, true) }},
		{name: "an ID token with a space in its payload is refused", reshape: func(raw string) string {
			i := strings.IndexByte(raw, '.') + 5
			return raw[:i] + " " + raw[i:]
		}},
		{name: "an ID token with a line break after it is refused", reshape: func(raw string) string { return raw + "\r\n" }},
	}
	for _, tt := range tests {
		check := func(t *testing.T, prof *Profile, tokens *Tokens, err error) {
			t.Helper()
			if tt.reshape == nil {
				if err != nil || prof == nil || prof.Sub != "alice" || tokens.Subject() != "alice" {
					t.Fatalf("got %+v, %+v, %v; want alice", prof, tokens, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "not a compact JWT") {
				t.Fatalf("got %+v, %+v, %v; want the ID token refused as not a compact JWT", prof, tokens, err)
			}
		}
		ti.reshape = tt.reshape
		t.Run(tt.name+" at login", func(t *testing.T) {
			f := &Flow{State: rand.Text()}
			if _, err := p.LoginURL(f); err != nil {
				t.Fatal(err)
			}
			ti.nonce = f.Nonce
			prof, tokens, err := p.Complete(httptest.NewRequest(http.MethodGet, "/cb?state="+f.State+"&code=c", nil), f)
			check(t, prof, tokens, err)
		})
		t.Run(tt.name+" at refresh", func(t *testing.T) {
			ti.nonce = ""
			prof, tokens, err := p.Refresh(t.Context(), &Tokens{RefreshToken: "rt", IDToken: fakeJWT(`{"sub":"alice"}`)})
			check(t, prof, tokens, err)
		})
	}
}
