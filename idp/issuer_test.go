package idp

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// testIssuer is a minimal OpenID provider on loopback, for the checks that
// need tokens the real test provider would never issue: discovery, a JWKS
// with one RSA key, and a token endpoint that answers every grant (code or
// refresh) with an ID token for alice carrying the claims the test sets.
type testIssuer struct {
	url string
	// key signs the tokens; a test that swaps it for another signs tokens
	// the JWKS does not vouch for.
	key *rsa.PrivateKey
	mu  sync.Mutex // guards published, kid and retired, which rotate and rotateTo replace
	// published is the key in the JWKS, as kid: "k1" until rotateTo.
	published *rsa.PublicKey
	kid       string
	// retired are the keys rotateTo replaced, published after the one
	// signing, as IdPs keep publishing a key for tokens signed before.
	retired []jose.JSONWebKey
	// jwksFetches counts the requests for the JWKS.
	jwksFetches atomic.Int32
	// jwksDown, when set, is the body of a 503 that the JWKS is answered
	// with instead of the keys.
	jwksDown atomic.Pointer[string]
	// jwksHeld, when set, holds the JWKS's answers back, with the keys
	// published when asked, until it is closed.
	jwksHeld atomic.Pointer[chan struct{}]
	// edit changes the ID token's claims before they are signed.
	edit func(claims map[string]any)
	// nonce is the nonce the next ID token carries.
	nonce string
	// reshape, when set, rewrites the signed ID token (a compact JWT)
	// before the token endpoint sends it: into another serialization.
	reshape func(raw string) string
	// userinfo, when set before the provider discovers the issuer, is what
	// its userinfo endpoint answers; with none, discovery names no endpoint.
	userinfo map[string]any
	// endSession, when set before the provider discovers the issuer, is the
	// discovery document's end_session_endpoint.
	endSession string
	// jwksURI, when set before the provider discovers the issuer, is the
	// discovery document's jwks_uri, another spelling of url+"/jwks" or a
	// URL under url+"/keys/", which serves the JWKS too.
	jwksURI string
}

func newTestIssuer(t *testing.T) *testIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ti := &testIssuer{key: key, published: &key.PublicKey, kid: "k1"}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		discovery := map[string]any{
			"issuer": ti.url, "authorization_endpoint": ti.url + "/auth", "token_endpoint": ti.url + "/token",
			"jwks_uri": ti.url + "/jwks", "id_token_signing_alg_values_supported": []string{"RS256"},
		}
		if ti.jwksURI != "" {
			discovery["jwks_uri"] = ti.jwksURI
		}
		if ti.endSession != "" {
			discovery["end_session_endpoint"] = ti.endSession
		}
		if ti.userinfo != nil {
			discovery["userinfo_endpoint"] = ti.url + "/userinfo"
		}
		json.NewEncoder(w).Encode(discovery)
	})
	mux.HandleFunc("/userinfo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(ti.userinfo)
	})
	jwks := func(w http.ResponseWriter, r *http.Request) {
		ti.jwksFetches.Add(1)
		if down := ti.jwksDown.Load(); down != nil {
			http.Error(w, *down, http.StatusServiceUnavailable)
			return
		}
		ti.mu.Lock()
		keys := append([]jose.JSONWebKey{{Key: ti.published, KeyID: ti.kid, Algorithm: "RS256", Use: "sig"}}, ti.retired...)
		ti.mu.Unlock()
		if held := ti.jwksHeld.Load(); held != nil {
			select {
			case <-*held:
			case <-r.Context().Done():
				return
			}
		}
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: keys})
	}
	mux.HandleFunc("/jwks", jwks)
	mux.HandleFunc("/keys/", jwks)
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		claims := map[string]any{"iss": ti.url, "aud": "portcullis", "sub": "alice", "nonce": ti.nonce,
			"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "email": "alice@example.com"}
		if ti.edit != nil {
			ti.edit(claims)
		}
		raw, err := ti.sign("JWT", claims, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if ti.reshape != nil {
			raw = ti.reshape(raw)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "refresh_token": "rt", "id_token": raw})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	ti.url = srv.URL
	return ti
}

// sign makes a JWT of type typ (no typ header when "") from claims, signed with key (the issuer's
// when nil), whose header names the kid of the issuer's key.
func (ti *testIssuer) sign(typ string, claims map[string]any, key *rsa.PrivateKey) (string, error) {
	ti.mu.Lock()
	kid := ti.kid
	if key == nil {
		key = ti.key
	}
	ti.mu.Unlock()
	return signJWT(typ, claims, key, kid)
}

// signJWT makes a JWT of type typ (no typ header when "") from claims,
// signed with key, whose header names kid (none when "").
func signJWT(typ string, claims map[string]any, key *rsa.PrivateKey, kid string) (string, error) {
	opts := &jose.SignerOptions{}
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, opts)
	if err != nil {
		return "", err
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

// provider is an OIDC entry "company" at the issuer, discovered and ready.
func (ti *testIssuer) provider(t *testing.T) *oidcProvider {
	t.Helper()
	p := startOIDC(t, Config{ID: "company", Protocol: OIDC, ServerURL: ti.url, ClientID: "portcullis", ClientSecret: "s"},
		testOptions("http://127.0.0.1:1", false))
	waitReady(t, p, 10*time.Second)
	return p
}

// rotate replaces the issuer's key, the one it signs with and publishes
// (under its kid still), with a new one.
func (ti *testIssuer) rotate(t *testing.T) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ti.mu.Lock()
	ti.key, ti.published = key, &key.PublicKey
	ti.mu.Unlock()
}

// rotateTo makes a new key, published as kid, the issuer's: it signs with
// it from now on, and publishes the one before (and any before that)
// after it, as Keycloak, Entra ID, Okta and Hydra rotate their keys.
func (ti *testIssuer) rotateTo(t *testing.T, kid string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ti.mu.Lock()
	ti.retired = append([]jose.JSONWebKey{{Key: ti.published, KeyID: ti.kid, Algorithm: "RS256", Use: "sig"}}, ti.retired...)
	ti.key, ti.published, ti.kid = key, &key.PublicKey, kid
	ti.mu.Unlock()
}

// jwsJSON rewrites the compact JWS raw into the JWS JSON serialization
// (RFC 7515 7.2), flattened or general, as anyone holding it can: the
// signature still verifies.
func jwsJSON(raw string, general bool) string {
	parts := strings.Split(raw, ".")
	if general {
		return `{"payload":"` + parts[1] + `","signatures":[{"protected":"` + parts[0] + `","signature":"` + parts[2] + `"}]}`
	}
	return `{"protected":"` + parts[0] + `","payload":"` + parts[1] + `","signature":"` + parts[2] + `"}`
}
