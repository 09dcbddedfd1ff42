package idp

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// hydraIssuer answers as ORY Hydra v2.3.0 did in the lab after its ID token
// key was rotated (POST /admin/keys/hydra.openid.id-token) while a refresh
// token chain begun before lived: the JWKS publishes the access token key
// and both ID token keys, and the refresh's ID token names the old key in
// its header (kid) but is signed with the new one (ory/hydra#3573). The
// discovery document, the token and userinfo answers and the ID token's claims are those
// captured there, trimmed to what a relying party reads.
type hydraIssuer struct {
	url string
	// oldKey is the ID token key before the rotation, still published;
	// newKey signs; accessKey is hydra.jwt.access-token's, published too.
	oldKey, newKey, accessKey *rsa.PrivateKey
	// signWith, when set, signs instead of newKey.
	signWith *rsa.PrivateKey
	// kid is the ID token's header kid.
	kid string
}

const (
	hydraOldKid    = "4c290fc7-105b-4d8c-8ef9-e17c99977e3d"
	hydraNewKid    = "rot-1796579131"
	hydraAccessKid = "345c3864-9de6-433e-a89e-53faf9dbe112"
)

func newHydraIssuer(t *testing.T) *hydraIssuer {
	t.Helper()
	key := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	hi := &hydraIssuer{oldKey: key(), newKey: key(), accessKey: key(), kid: hydraOldKid}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                hi.url + "/",
			"authorization_endpoint":                hi.url + "/oauth2/auth",
			"token_endpoint":                        hi.url + "/oauth2/token",
			"jwks_uri":                              hi.url + "/.well-known/jwks.json",
			"userinfo_endpoint":                     hi.url + "/userinfo",
			"end_session_endpoint":                  hi.url + "/oauth2/sessions/logout",
			"subject_types_supported":               []string{"public"},
			"response_types_supported":              []string{"code", "code id_token", "id_token", "token id_token", "token", "token id_token code"},
			"scopes_supported":                      []string{"offline_access", "offline", "openid"},
			"token_endpoint_auth_methods_supported": []string{"client_secret_post", "client_secret_basic", "private_key_jwt", "none"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"code_challenge_methods_supported":      []string{"plain", "S256"},
			"backchannel_logout_supported":          true,
			"backchannel_logout_session_supported":  true,
		})
	})
	mux.HandleFunc("/.well-known/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		// Hydra's order: the access token key, then the ID token keys, newest first.
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "private, no-cache, no-store, must-revalidate")
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &hi.accessKey.PublicKey, KeyID: hydraAccessKid, Algorithm: "RS256", Use: "sig"},
			{Key: &hi.newKey.PublicKey, KeyID: hydraNewKid, Algorithm: "RS256", Use: "sig"},
			{Key: &hi.oldKey.PublicKey, KeyID: hydraOldKid, Algorithm: "RS256", Use: "sig"},
		}})
	})
	mux.HandleFunc("/userinfo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		json.NewEncoder(w).Encode(map[string]any{"aud": []string{"pc-basic"}, "auth_time": time.Now().Add(-time.Minute).Unix(),
			"email": "alice@example.com", "email_verified": true, "groups": []string{"cvat-admins", "staff"},
			"iat": time.Now().Unix(), "iss": hi.url + "/", "name": "Alice A", "rat": time.Now().Add(-time.Minute).Unix(), "sub": "alice"})
	})
	mux.HandleFunc("/oauth2/token", func(w http.ResponseWriter, r *http.Request) {
		if r.FormValue("grant_type") != "refresh_token" || r.FormValue("refresh_token") != "ory_rt_before" {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		const accessToken = "ory_at_CMD9DZ9jXk_RZO-oKV1Pggoi6AzpgcHqF.after"
		sum := sha256.Sum256([]byte(accessToken))
		now := time.Now()
		claims := map[string]any{
			"at_hash": base64.RawURLEncoding.EncodeToString(sum[:16]), "aud": []string{"pc-basic"},
			"auth_time": now.Add(-time.Minute).Unix(), "email": "alice@example.com", "email_verified": true,
			"exp": now.Add(time.Hour).Unix(), "groups": []string{"cvat-admins", "staff"}, "iat": now.Unix(),
			"iss": hi.url + "/", "jti": "59381799-1048-45b2-ae0b-100ad767ae69", "name": "Alice A",
			"nonce": "FZZ657EGSLVVOLR75LOZJGCCF3", "rat": now.Add(-time.Minute).Unix(),
			"sid": "332e26ff-1a6a-4758-8ac2-607319a3d0d8", "sub": "alice",
		}
		key := hi.newKey
		if hi.signWith != nil {
			key = hi.signWith
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
			(&jose.SignerOptions{}).WithHeader("kid", hi.kid).WithType("JWT"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		idToken, err := jwt.Signed(signer).Claims(claims).Serialize()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		json.NewEncoder(w).Encode(map[string]any{"access_token": accessToken, "expires_in": 29, "id_token": idToken,
			"refresh_token": "ory_rt_93ALdstukDMysXA5ws1BYkRnEnJEHiK8m.after", "scope": "openid offline_access email",
			"token_type": "bearer"})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	hi.url = srv.URL
	return hi
}

// TestOIDCRefreshAfterHydraRotatedItsKey: a refreshed ID token whose kid
// names one of the IdP's published keys that does not verify it, as ORY
// Hydra's do after its ID token key is rotated, is verified with the IdP's
// other published keys: the session refreshes, reads the user anew and
// keeps that ID token, which Hydra's logout takes as id_token_hint (it
// checks hints with its current key only). Without that, every refresh of
// every session begun before the rotation failed until its lifetime ended,
// and their sign-outs stopped at Hydra's error page. A token no published
// key verifies is refused as before.
func TestOIDCRefreshAfterHydraRotatedItsKey(t *testing.T) {
	hi := newHydraIssuer(t)
	p := startOIDC(t, Config{ID: "hydra", Protocol: OIDC, ServerURL: hi.url, ClientID: "pc-basic", ClientSecret: "s",
		Scopes: []string{"openid", "email", "profile", "offline_access"}, SingleSignOut: true},
		testOptions("http://127.0.0.1:1", false))
	waitReady(t, p, 10*time.Second)
	stranger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		kid      string
		signWith *rsa.PrivateKey
		wantErr  string
	}{
		{name: "kid of the key that signed it", kid: hydraNewKid},
		{name: "kid of the rotated-away key, signed with the current one (Hydra after a rotation)", kid: hydraOldKid},
		{name: "kid of the access token key, signed with the current ID token key", kid: hydraAccessKid},
		{name: "kid of a published key, signed with a key the IdP does not publish", kid: hydraOldKid, signWith: stranger,
			wantErr: "verify id token"},
		{name: "kid of no published key, signed with a key the IdP does not publish", kid: "unknown", signWith: stranger,
			wantErr: "verify id token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hi.kid, hi.signWith = tc.kid, tc.signWith
			before := &Tokens{RefreshToken: "ory_rt_before", IDToken: fakeJWT(`{"sub":"alice"}`), SID: "332e26ff-1a6a-4758-8ac2-607319a3d0d8"}
			prof, next, err := p.Refresh(t.Context(), before)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %+v, %v; want an error containing %q", prof, err, tc.wantErr)
				}
				if next == nil || next.IDToken != before.IDToken {
					t.Errorf("the refused ID token was kept: %+v", next)
				}
				return
			}
			if err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if prof == nil || prof.Sub != "alice" || prof.Email != "alice@example.com" || !slices.Equal(prof.Groups, []string{"cvat-admins", "staff"}) {
				t.Errorf("profile = %+v, want alice with her groups", prof)
			}
			if next.IDToken == before.IDToken || headerKid(t, next.IDToken) != tc.kid {
				t.Errorf("kept ID token with kid %q, want the refresh's (kid %q)", headerKid(t, next.IDToken), tc.kid)
			}
			if next.RefreshToken != "ory_rt_93ALdstukDMysXA5ws1BYkRnEnJEHiK8m.after" {
				t.Errorf("refresh token = %q, want the rotated one", next.RefreshToken)
			}
		})
	}
}

// headerKid is the kid in the header of the compact JWT raw.
func headerKid(t *testing.T, raw string) string {
	t.Helper()
	header, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		t.Fatalf("header of %q: %v", raw, err)
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("header of %q: %v", raw, err)
	}
	return h.Kid
}
