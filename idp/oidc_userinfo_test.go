package idp

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"golang.org/x/oauth2"
)

// go-oidc reads a userinfo answer whole, however long: an IdP that puts
// 2 MiB in a user's claims (an attribute a user can fill) had them decoded,
// mapped and sealed. The answer is read up to 1 MiB, as the token
// endpoint's is; a user whose claims are large but within it signs in.
func TestOIDCUserinfoIsBounded(t *testing.T) {
	h := newOIDCHarness(t, oidcserver.Options{
		ConformIDTokenClaims: true, // the claims come from userinfo
		ExtraUsers: map[string]oidcserver.User{
			"hoarder": {Password: "hoarder-pw", Email: "hoarder@example.com", Extra: map[string]any{"notes": strings.Repeat("x", 2<<20)}},
			"writer":  {Password: "writer-pw", Email: "writer@example.com", Extra: map[string]any{"notes": strings.Repeat("x", 512<<10)}},
		},
	}, Config{}, true)

	f, cb := h.login(t, "writer", "writer-pw")
	if prof, _, err := h.provider.Complete(cb, f); err != nil || prof.Email != "writer@example.com" {
		t.Fatalf("a user with 512 KiB of claims: %v, %v; want signed in", prof, err)
	}
	f, cb = h.login(t, "hoarder", "hoarder-pw")
	prof, _, err := h.provider.Complete(cb, f)
	if err == nil || !strings.Contains(err.Error(), "fetch userinfo") || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Fatalf("a user with 2 MiB of claims: %+v, %v; want the userinfo answer refused as too large", prof != nil, err)
	}
}

// readBounded refuses an answer one byte past its bound also when the read
// that crosses the bound ends the answer too (its data comes with io.EOF,
// which ends io.ReadAll at once), and reads one exactly at the bound.
func TestReadBoundedRefusesWhatCrossesTheBoundWithEOF(t *testing.T) {
	if got, err := readBounded(io.NopCloser(iotest.DataErrReader(strings.NewReader("1234"))), 4); err != nil || string(got) != "1234" {
		t.Errorf("4 bytes bounded at 4: %q, %v; want them read", got, err)
	}
	if got, err := readBounded(io.NopCloser(iotest.DataErrReader(strings.NewReader("12345"))), 4); err == nil || err.Error() != "the answer is larger than 4 bytes" {
		t.Errorf("5 bytes bounded at 4: %q, %v; want them refused as larger than 4 bytes", got, err)
	}
}

// At login, as at refresh, userinfo only fills in what the signed ID token
// lacks: a claim both carry is the ID token's.
func TestOIDCLoginIDTokenClaimsWinOverUserinfo(t *testing.T) {
	ti := newTestIssuer(t)
	ti.userinfo = map[string]any{"sub": "alice", "email": "not-the-id-token@example.com", "groups": []string{"staff"}}
	p := ti.provider(t)
	f := &Flow{State: rand.Text()}
	if _, err := p.LoginURL(f); err != nil {
		t.Fatal(err)
	}
	ti.nonce = f.Nonce
	prof, _, err := p.Complete(httptest.NewRequest(http.MethodGet, "/cb?state="+f.State+"&code=c", nil), f)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if prof.Email != "alice@example.com" || !slices.Equal(prof.Groups, []string{"staff"}) {
		t.Errorf("email %q groups %q; want the ID token's alice@example.com and userinfo's [staff]", prof.Email, prof.Groups)
	}
}

// A userinfo answer that is a JWT (application/jwt) is read by the
// transport that notes its alg before go-oidc reads it: it is held to the
// same 1 MiB, and one go-oidc cannot verify is refused with its alg noted
// for the hint.
func TestOIDCUserinfoJWTIsBoundedAndItsAlgNoted(t *testing.T) {
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/jwt; charset=utf-8")
		io.WriteString(w, body)
	}))
	defer srv.Close()
	d := discovered{provider: (&oidc.ProviderConfig{IssuerURL: srv.URL, UserInfoURL: srv.URL, JWKSURL: srv.URL}).NewProvider(context.Background())}
	p := &oidcProvider{client: srv.Client()}
	token := &oauth2.Token{AccessToken: "at", TokenType: "Bearer"}

	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body = header + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"alice"}`)) + ".c2ln"
	if _, alg, err := p.userinfo(context.Background(), d, token); err == nil || alg != "HS256" {
		t.Errorf("a userinfo JWT signed HS256: alg %q, err %v; want it refused with alg HS256", alg, err)
	}
	body = header + "." + strings.Repeat("x", 2<<20) + ".c2ln"
	if _, _, err := p.userinfo(context.Background(), d, token); err == nil || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Errorf("a userinfo JWT of 2 MiB: %v; want it refused as too large", err)
	}
}
