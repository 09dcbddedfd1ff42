package idp

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/oauth2"
)

func TestOAuth2UserinfoSubject(t *testing.T) {
	// A GitHub-like userinfo: no sub, a numeric id.
	userinfo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer at-1" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id": 583231, "login": "octocat", "sub_like": "x"}`)
	}))
	defer userinfo.Close()

	tests := []struct {
		name    string
		claims  map[string]string
		wantSub string
	}{
		{name: "without sub the numeric id is the subject, as text", wantSub: "583231"},
		{name: "a configured sub claim is used as is", claims: map[string]string{"sub": "login"}, wantSub: "octocat"},
		{name: "a configured sub claim that is missing gives no subject", claims: map[string]string{"sub": "uid"}, wantSub: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &oidcProvider{
				cfg:     Config{ID: "gh", Protocol: OAuth2, UserinfoURL: userinfo.URL, Claims: tt.claims},
				client:  userinfo.Client(),
				mapping: claimMapping(tt.claims),
			}
			claims, err := p.oauth2Claims(context.Background(), &oauth2.Token{AccessToken: "at-1", TokenType: "bearer"})
			if err != nil {
				t.Fatalf("oauth2Claims: %v", err)
			}
			if got := profileFromClaims("gh", claims, p.mapping).Sub; got != tt.wantSub {
				t.Errorf("sub = %q, want %q", got, tt.wantSub)
			}
		})
	}

	t.Run("a userinfo error is an error naming the step", func(t *testing.T) {
		p := &oidcProvider{cfg: Config{ID: "gh", Protocol: OAuth2, UserinfoURL: userinfo.URL}, client: userinfo.Client()}
		_, err := p.oauth2Claims(context.Background(), &oauth2.Token{AccessToken: "wrong"})
		if err == nil || err.Error() != "oidc gh: fetch userinfo: 401 Unauthorized: no token" {
			t.Fatalf("err = %q", err)
		}
	})
}
