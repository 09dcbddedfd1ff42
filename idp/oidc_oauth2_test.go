package idp

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/portcullis-proxy/portcullis/test/githubapi"
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

// TestTokenEndpointErrorBodyIsCutShort: a token endpoint's answer without an
// OAuth error code reaches the log as its status and the start of its body,
// not the whole body (up to 1 MiB), which may echo the request's secrets.
func TestTokenEndpointErrorBodyIsCutShort(t *testing.T) {
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, "<html><body>upstream failed "+strings.Repeat(".", 300)+" request was client_secret=s3cret</body></html>")
	}))
	defer endpoint.Close()
	public, _ := url.Parse("https://cvat.example.com")
	impl, err := New(context.Background(), Config{ID: "o", Protocol: OAuth2, AuthURL: endpoint.URL + "/authorize",
		TokenURL: endpoint.URL + "/token", UserinfoURL: endpoint.URL + "/user", ClientID: "c", ClientSecret: "s3cret"},
		Options{PublicURL: public, AuthPrefix: "/.portcullis", HTTPClient: endpoint.Client()})
	if err != nil {
		t.Fatal(err)
	}
	p := impl.(*oidcProvider)
	f := &Flow{State: "st"}
	if _, err := p.LoginURL(f); err != nil {
		t.Fatal(err)
	}
	_, _, loginErr := p.Complete(httptest.NewRequest("GET", "/.portcullis/oidc/o/callback?state=st&code=c1", nil), f)
	_, _, refreshErr := p.Refresh(context.Background(), &Tokens{RefreshToken: "r1"})
	for step, err := range map[string]error{"exchange code": loginErr, "refresh": refreshErr} {
		if err == nil || !strings.Contains(err.Error(), "502 Bad Gateway: <html><body>upstream failed") {
			t.Errorf("%s: %v, want the status and the start of the body", step, err)
		} else if strings.Contains(err.Error(), "s3cret") || len(err.Error()) > 300 {
			t.Errorf("%s: %d bytes, past the start of the body: %v", step, len(err.Error()), err)
		}
	}
}

// A plain OAuth2 IdP's userinfo answer is read up to 1 MiB, as an OIDC
// one's is, and one larger is refused as such: it was cut at 1 MiB, so
// that what came before the cut was decoded, and an answer padded past it
// parsed. githubapi's GET /user plays the IdP (Gitea's and others' are of
// its shape), with a user whose name fills the answer.
func TestOAuth2UserinfoIsBounded(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int
		refused bool
	}{
		{"a 512 KiB answer is read", 512 << 10, false},
		{"a 2 MiB answer is refused", 2 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gh := githubapi.Start(t, githubapi.Options{User: githubapi.User{Login: "hoarder", ID: 7, Name: strings.Repeat("x", tc.size)}})
			p := &oidcProvider{cfg: Config{ID: "o", Protocol: OAuth2, UserinfoURL: gh.URL + "/user"}, client: gh.Client()}
			claims, err := p.oauth2Claims(context.Background(), &oauth2.Token{AccessToken: gh.IssueToken("read:user"), TokenType: "bearer"})
			switch {
			case tc.refused && (err == nil || !strings.Contains(err.Error(), "fetch userinfo: the answer is larger than 1048576 bytes")):
				t.Errorf("oauth2Claims = %d claims, %v; want the answer refused as larger than 1 MiB", len(claims), err)
			case !tc.refused && (err != nil || claims["login"] != "hoarder"):
				t.Errorf("oauth2Claims = %v, %v; want hoarder's claims", claims["login"], err)
			}
		})
	}
}
