package idp

import (
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestOIDCAuthorizedParty holds ID tokens, at login and at refresh, to OpenID
// Connect Core 3.1.3.7 steps 4 and 5: several audiences need azp, and azp
// must be this client.
func TestOIDCAuthorizedParty(t *testing.T) {
	ti := newTestIssuer(t)
	p := ti.provider(t)

	tests := []struct {
		name    string
		aud     any
		azp     any // nil: no azp claim
		wantErr string
	}{
		{name: "one audience without azp is accepted (Azure, Okta, Cognito)", aud: "portcullis"},
		{name: "one audience with azp naming this client is accepted (Google, Keycloak)", aud: "portcullis", azp: "portcullis"},
		{name: "several audiences with azp naming this client are accepted", aud: []string{"portcullis", "api"}, azp: "portcullis"},
		{name: "several audiences without azp are refused", aud: []string{"other-client", "portcullis"},
			wantErr: "2 audiences and no azp claim"},
		{name: "several audiences with azp naming another client are refused", aud: []string{"other-client", "portcullis"}, azp: "other-client",
			wantErr: `azp "other-client" is not this client`},
		{name: "one audience with azp naming another client is refused", aud: "portcullis", azp: "other-client",
			wantErr: `azp "other-client" is not this client`},
		{name: "an azp that is not a string is refused", aud: "portcullis", azp: []string{"portcullis"},
			wantErr: "is not this client"},
	}
	for _, tt := range tests {
		ti.edit = func(c map[string]any) {
			c["aud"] = tt.aud
			if tt.azp != nil {
				c["azp"] = tt.azp
			}
		}
		check := func(t *testing.T, prof *Profile, err error) {
			t.Helper()
			if tt.wantErr == "" {
				if err != nil || prof == nil || prof.Sub != "alice" {
					t.Fatalf("got %+v, %v; want alice", prof, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %+v, %v; want an error containing %q", prof, err, tt.wantErr)
			}
		}
		t.Run(tt.name+" at login", func(t *testing.T) {
			f := &Flow{State: rand.Text()}
			if _, err := p.LoginURL(f); err != nil {
				t.Fatal(err)
			}
			ti.nonce = f.Nonce
			prof, _, err := p.Complete(httptest.NewRequest(http.MethodGet, "/cb?state="+f.State+"&code=c", nil), f)
			check(t, prof, err)
		})
		t.Run(tt.name+" at refresh", func(t *testing.T) {
			ti.nonce = ""
			prof, _, err := p.Refresh(t.Context(), &Tokens{RefreshToken: "rt", IDToken: fakeJWT(`{"sub":"alice"}`)})
			check(t, prof, err)
		})
	}
}
