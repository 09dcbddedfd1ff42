package security

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// oidcIdP is a tiny OpenID provider whose keys the suite holds, so that it can
// hand the proxy ID tokens forged the way an attacker would. It stands in for
// "a token the attacker made": no certified provider would issue these.
//
// Its authorize endpoint logs the user named by the test-only `user`
// parameter in at once and redirects back with a code; the test-only `forge`
// parameter picks how the token endpoint then builds the ID token (see
// forgeModes). Codes may be redeemed any number of times, so that it is the
// proxy's own checks that refuse a replay.
type oidcIdP struct {
	name     string
	issuer   string
	srv      *http.Server
	key      *rsa.PrivateKey // published in the JWKS as kid "k1"
	attacker *rsa.PrivateKey // never published
	mu       sync.Mutex
	codes    map[string]grant
	issued   map[string][]string // by user: every token the token endpoint gave for them
}

// grant is what a code stands for.
type grant struct {
	user, nonce, challenge, forge, clientID string
}

// users the IdP knows: alice is in the admins group (role admin), bob and
// eve are not.
var users = map[string]map[string]any{
	"alice": {"email": "alice@example.com", "groups": []string{"admins", "staff"}},
	"bob":   {"email": "bob@example.com", "groups": []string{"staff"}},
	"eve":   {"email": "eve@example.com", "groups": []string{"staff"}},
	// carol's sessions are the ones the back-channel logout cases end.
	"carol": {"email": "carol@example.com", "groups": []string{"staff"}},
	// dave's logins get a refresh token besides the access and ID tokens:
	// what no answer to the browser nor the upstream may show.
	"dave": {"email": "dave@example.com", "groups": []string{"staff"}},
	// mallory's IdP lets her put a header break into her email address.
	"mallory": {"email": "mallory@example.com\r\nX-Groups: admin", "groups": []string{"staff"}},
}

func startIdP(name string) *oidcIdP {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	p := &oidcIdP{name: name, issuer: "http://" + ln.Addr().String(), codes: map[string]grant{}, issued: map[string][]string{}}
	if p.key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if p.attacker, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET /jwks", p.jwks)
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	mux.HandleFunc("GET /userinfo", p.userinfo)
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go p.srv.Serve(ln)
	return p
}

func (p *oidcIdP) close() { p.srv.Close() }

// tokensOf is every token the token endpoint gave for user.
func (p *oidcIdP) tokensOf(user string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.issued[user]...)
}

func (p *oidcIdP) discovery(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, map[string]any{
		"issuer":                                p.issuer,
		"authorization_endpoint":                p.issuer + "/authorize",
		"token_endpoint":                        p.issuer + "/token",
		"jwks_uri":                              p.issuer + "/jwks",
		"userinfo_endpoint":                     p.issuer + "/userinfo",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256", "HS256", "none"},
		"code_challenge_methods_supported":      []string{"S256"},
	})
}

func (p *oidcIdP) jwks(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &p.key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"},
	}})
}

func (p *oidcIdP) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	user := q.Get("user")
	if user == "" {
		user = "bob"
	}
	code := randomText()
	p.mu.Lock()
	p.codes[code] = grant{user: user, nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), forge: q.Get("forge"), clientID: q.Get("client_id")}
	p.mu.Unlock()
	back, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || back.Host == "" {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	v := back.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	back.RawQuery = v.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (p *oidcIdP) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	g, ok := p.codes[r.PostForm.Get("code")]
	p.mu.Unlock()
	if !ok {
		tokenError(w, "invalid_grant")
		return
	}
	if g.challenge != "" {
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge && g.forge != "skip_pkce" {
			tokenError(w, "invalid_grant")
			return
		}
	}
	switch g.forge {
	case "token_endpoint_down":
		// The IdP dies in the middle of the exchange.
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	case "token_error":
		tokenError(w, "invalid_grant")
		return
	}
	access := "at-" + randomText()
	p.mu.Lock()
	p.codes[access] = g
	p.mu.Unlock()
	resp := map[string]any{"access_token": access, "token_type": "Bearer", "expires_in": 300}
	if g.forge != "no_id_token" {
		resp["id_token"] = p.idToken(g, access)
	}
	if g.user == "dave" {
		resp["refresh_token"] = "rt-" + randomText()
	}
	p.mu.Lock()
	for _, k := range []string{"access_token", "id_token", "refresh_token"} {
		if tok, ok := resp[k].(string); ok {
			p.issued[g.user] = append(p.issued[g.user], tok)
		}
	}
	p.mu.Unlock()
	writeJSON(w, resp)
}

func (p *oidcIdP) userinfo(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	g, ok := p.codes[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	p.mu.Unlock()
	if !ok {
		http.Error(w, "no such token", http.StatusUnauthorized)
		return
	}
	claims := p.claims(g)
	if g.forge == "userinfo_other_sub" {
		claims["sub"] = "alice"
		claims["groups"] = []string{"admins"}
	}
	writeJSON(w, claims)
}

// claims are the honest claims about g's user.
func (p *oidcIdP) claims(g grant) map[string]any {
	u := users[g.user]
	now := time.Now()
	c := map[string]any{
		"iss": p.issuer, "aud": g.clientID, "sub": g.user,
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"nonce":              g.nonce,
		"email":              u["email"],
		"email_verified":     true,
		"preferred_username": g.user,
		"given_name":         g.user, "family_name": "Example", "name": g.user + " Example",
		"groups": u["groups"],
	}
	return c
}

// forgeModes are the ways the token endpoint can forge an ID token, each one
// a token the proxy must refuse. "" is the honest token.
var forgeModes = []string{
	"alg_none", "alg_none_uppercase", "hs256_public_key_pem", "hs256_public_key_der",
	"hs256_public_key_jwk_n", "unknown_kid", "attacker_key_same_kid", "attacker_key_no_kid",
	"attacker_key_embedded_jwk", "signature_stripped", "payload_swapped", "two_signatures",
	"wrong_iss", "iss_trailing_slash", "other_idp_iss", "wrong_aud", "aud_list_without_client",
	"no_aud", "expired", "no_exp", "nbf_future", "iat_future", "wrong_nonce", "no_nonce",
	"empty_sub", "bad_at_hash", "no_id_token", "token_error", "token_endpoint_down",
	"userinfo_other_sub", "json_flattened", "json_general", "whitespace_in_payload",
}

// idToken builds the ID token for g, forged as g.forge says.
func (p *oidcIdP) idToken(g grant, access string) string {
	c := p.claims(g)
	now := time.Now()
	switch g.forge {
	case "wrong_iss":
		c["iss"] = "http://evil.example"
	case "iss_trailing_slash":
		c["iss"] = p.issuer + "/"
	case "other_idp_iss":
		if p == suite.alpha {
			c["iss"] = suite.beta.issuer
		} else {
			c["iss"] = suite.alpha.issuer
		}
	case "wrong_aud":
		c["aud"] = "someone-else"
	case "aud_list_without_client":
		c["aud"] = []string{"someone-else", "another"}
	case "no_aud":
		delete(c, "aud")
	case "expired":
		c["iat"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
	case "no_exp":
		delete(c, "exp")
	case "nbf_future":
		c["nbf"] = now.Add(time.Hour).Unix()
	case "iat_future":
		c["iat"], c["exp"] = now.Add(time.Hour).Unix(), now.Add(2*time.Hour).Unix()
	case "wrong_nonce":
		c["nonce"] = "not-the-nonce"
	case "no_nonce":
		delete(c, "nonce")
	case "empty_sub":
		c["sub"] = ""
	case "bad_at_hash":
		sum := sha256.Sum256([]byte("another access token"))
		c["at_hash"] = base64.RawURLEncoding.EncodeToString(sum[:16])
	case "userinfo_other_sub":
		// The ID token lacks the profile claims, so the proxy asks userinfo.
		for _, k := range []string{"email", "groups", "preferred_username", "given_name", "family_name", "name", "email_verified"} {
			delete(c, k)
		}
	}
	payload, _ := json.Marshal(c)
	pubDER, _ := x509.MarshalPKIXPublicKey(&p.key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	switch g.forge {
	case "alg_none":
		return unsigned(`{"alg":"none","typ":"JWT"}`, payload) + "."
	case "alg_none_uppercase":
		return unsigned(`{"alg":"NONE","kid":"k1"}`, payload) + "."
	case "hs256_public_key_pem":
		return sign(jose.HS256, pubPEM, "k1", payload)
	case "hs256_public_key_der":
		return sign(jose.HS256, pubDER, "k1", payload)
	case "hs256_public_key_jwk_n":
		return sign(jose.HS256, p.key.PublicKey.N.Bytes(), "k1", payload)
	case "unknown_kid":
		return sign(jose.RS256, p.attacker, "nope", payload)
	case "attacker_key_same_kid":
		return sign(jose.RS256, p.attacker, "k1", payload)
	case "attacker_key_no_kid":
		return sign(jose.RS256, p.attacker, "", payload)
	case "attacker_key_embedded_jwk":
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: p.attacker},
			(&jose.SignerOptions{EmbedJWK: true}).WithType("JWT"))
		if err != nil {
			panic(err)
		}
		return compact(s, payload)
	case "signature_stripped":
		tok := sign(jose.RS256, p.key, "k1", payload)
		return tok[:strings.LastIndexByte(tok, '.')+1]
	case "payload_swapped":
		// A genuine signature over bob's claims, on alice-as-admin claims.
		tok := sign(jose.RS256, p.key, "k1", payload)
		parts := strings.Split(tok, ".")
		c["sub"], c["email"], c["groups"] = "alice", "alice@example.com", []string{"admins"}
		evil, _ := json.Marshal(c)
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(evil) + "." + parts[2]
	case "two_signatures":
		s, err := jose.NewMultiSigner([]jose.SigningKey{
			{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: p.key, KeyID: "k1"}},
			{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: p.attacker, KeyID: "k2"}},
		}, nil)
		if err != nil {
			panic(err)
		}
		jws, err := s.Sign(payload)
		if err != nil {
			panic(err)
		}
		return jws.FullSerialize()
	case "json_flattened", "json_general", "whitespace_in_payload":
		// The IdP's own token, honest claims and all, in a form other than
		// the compact one that go-jose reads too: what the proxy reads from
		// the token it keeps (its sub) is read from the compact form only.
		return reshaped(sign(jose.RS256, p.key, "k1", payload), g.forge)
	}
	return sign(jose.RS256, p.key, "k1", payload)
}

// logoutToken is a back-channel logout token for every session of sub,
// typed typ and signed with the IdP's published key, as the IdP would send
// it; each has a jti of its own.
func (p *oidcIdP) logoutToken(typ, sub string) string {
	payload, _ := json.Marshal(map[string]any{
		"iss": p.issuer, "aud": "portcullis", "iat": time.Now().Unix(), "jti": randomText(), "sub": sub,
		"events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}},
	})
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: p.key, KeyID: "k1"}},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)))
	if err != nil {
		panic(err)
	}
	return compact(s, payload)
}

func sign(alg jose.SignatureAlgorithm, key any, kid string, payload []byte) string {
	k := key
	if kid != "" {
		k = jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: string(alg)}
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: k}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		panic(fmt.Sprintf("signer %s: %v", alg, err))
	}
	return compact(s, payload)
}

func compact(s jose.Signer, payload []byte) string {
	jws, err := s.Sign(payload)
	if err != nil {
		panic(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		panic(err)
	}
	return out
}

// reshaped is the compact JWS tok rewritten as shape says, each a form
// that go-jose, under go-oidc, still verifies: the JWS JSON serialization,
// flattened or general (RFC 7515 7.2), or with whitespace in it, which
// go-jose strips.
func reshaped(tok, shape string) string {
	parts := strings.Split(tok, ".")
	switch shape {
	case "json_flattened":
		return `{"protected":"` + parts[0] + `","payload":"` + parts[1] + `","signature":"` + parts[2] + `"}`
	case "json_general":
		return `{"payload":"` + parts[1] + `","signatures":[{"protected":"` + parts[0] + `","signature":"` + parts[2] + `"}]}`
	case "whitespace_in_payload":
		return parts[0] + "." + parts[1][:4] + " " + parts[1][4:] + "." + parts[2]
	}
	panic("unknown shape " + shape)
}

func unsigned(header string, payload []byte) string {
	return base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString(payload)
}

func tokenError(w http.ResponseWriter, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"error": code})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func randomText() string { return rand.Text() }
