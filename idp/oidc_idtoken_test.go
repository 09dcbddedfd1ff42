package idp

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestOIDCIDTokenChecksAtLogin holds a login to the checks of the ID token
// and of userinfo that a real IdP cannot be made to fail: at_hash (OpenID
// Connect Core 3.1.3.8), the nonce of a flow that has none, and userinfo
// about another subject (5.3.2). The test issuer signs whatever each case
// sets.
func TestOIDCIDTokenChecksAtLogin(t *testing.T) {
	ti := newTestIssuer(t)
	ti.userinfo = map[string]any{"sub": "alice", "email": "alice@example.com"}
	p := ti.provider(t)
	atHash := func(accessToken string) string {
		sum := sha256.Sum256([]byte(accessToken))
		return base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
	}

	tests := []struct {
		name string
		// edit changes the ID token's claims.
		edit func(claims map[string]any)
		// userinfoSub is the subject userinfo answers about ("" for alice).
		userinfoSub string
		// noNonce is a flow without nonce, as one sealed while the entry
		// was OAuth2 (a reload turned it into OIDC during the login).
		noNonce bool
		wantErr string
	}{
		{name: "an at_hash of the access token is accepted", edit: func(c map[string]any) { c["at_hash"] = atHash("at") }},
		{name: "an at_hash of another access token is refused", edit: func(c map[string]any) { c["at_hash"] = atHash("another") },
			wantErr: "access token hash"},
		{name: "a flow without nonce and a token without one are refused", noNonce: true, wantErr: "nonce does not match"},
		{name: "userinfo about the ID token's subject fills in what it lacks", edit: func(c map[string]any) { delete(c, "email") }},
		{name: "userinfo about another subject is refused", edit: func(c map[string]any) { delete(c, "email") }, userinfoSub: "mallory",
			wantErr: `subject "mallory" is not the id token's "alice"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ti.edit = tt.edit
			ti.userinfo["sub"] = "alice"
			if tt.userinfoSub != "" {
				ti.userinfo["sub"] = tt.userinfoSub
			}
			f := &Flow{State: rand.Text()}
			if _, err := p.LoginURL(f); err != nil {
				t.Fatal(err)
			}
			if tt.noNonce {
				f.Nonce = ""
			}
			ti.nonce = f.Nonce
			prof, _, err := p.Complete(httptest.NewRequest(http.MethodGet, "/cb?state="+f.State+"&code=c", nil), f)
			if tt.wantErr == "" {
				if err != nil || prof == nil || prof.Sub != "alice" || prof.Email != "alice@example.com" {
					t.Fatalf("got %+v, %v; want alice with her email", prof, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %+v, %v; want an error containing %q", prof, err, tt.wantErr)
			}
		})
	}
}

// TestOIDCRefreshChecksAtHash: an ID token from a refresh whose at_hash is
// not that of the access token it came with is refused, as at login.
func TestOIDCRefreshChecksAtHash(t *testing.T) {
	ti := newTestIssuer(t)
	p := ti.provider(t)
	atHash := func(accessToken string) string {
		sum := sha256.Sum256([]byte(accessToken))
		return base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
	}
	for _, tt := range []struct {
		accessToken string
		wantErr     string
	}{
		{accessToken: "at"},
		{accessToken: "another", wantErr: "access token hash"},
	} {
		ti.edit = func(c map[string]any) { c["at_hash"] = atHash(tt.accessToken) }
		prof, _, err := p.Refresh(t.Context(), &Tokens{RefreshToken: "rt", IDToken: fakeJWT(`{"sub":"alice"}`)})
		if tt.wantErr == "" {
			if err != nil || prof == nil || prof.Sub != "alice" {
				t.Errorf("at_hash of %q: got %+v, %v; want alice", tt.accessToken, prof, err)
			}
		} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("at_hash of %q: got %+v, %v; want an error containing %q", tt.accessToken, prof, err, tt.wantErr)
		}
	}
}

// TestOIDCRefreshRefusesAnIDTokenIssuedInTheFuture: an iat past the clock
// skew is refused at a refresh, as at a login.
func TestOIDCRefreshRefusesAnIDTokenIssuedInTheFuture(t *testing.T) {
	ti := newTestIssuer(t)
	p := ti.provider(t)
	ti.edit = func(c map[string]any) {
		c["iat"] = time.Now().Add(time.Hour).Unix()
		c["exp"] = time.Now().Add(2 * time.Hour).Unix()
	}
	prof, _, err := p.Refresh(t.Context(), &Tokens{RefreshToken: "rt", IDToken: fakeJWT(`{"sub":"alice"}`)})
	if err == nil || !strings.Contains(err.Error(), "issued in the future") {
		t.Fatalf("got %+v, %v; want the ID token refused as issued in the future", prof, err)
	}
}

// TestOIDCRefreshKeepsTheNewIDToken: with single_sign_out, the ID token of a
// refresh replaces the login's, so that the logout's id_token_hint uses it.
func TestOIDCRefreshKeepsTheNewIDToken(t *testing.T) {
	ti := newTestIssuer(t)
	p := ti.provider(t)
	p.cfg.SingleSignOut = true
	old := fakeJWT(`{"sub":"alice"}`)
	_, next, err := p.Refresh(t.Context(), &Tokens{RefreshToken: "rt", IDToken: old})
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if next.IDToken == old || subjectOf(next.IDToken) != "alice" {
		t.Errorf("ID token after the refresh = %q, want the new one the issuer sent", next.IDToken)
	}
}
