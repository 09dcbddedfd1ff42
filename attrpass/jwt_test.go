package attrpass

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"gopkg.in/yaml.v3"

	"github.com/portcullis-proxy/portcullis/idp"
)

func p256PEM(t testing.TB, pkcs8 bool) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if pkcs8 {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
}

func p384PEM(t testing.TB) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
}

func ed25519PEM(t testing.TB) string {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// verify checks token against the published JWKS, as an upstream would, and
// returns its claims.
func verify(t *testing.T, p *Pass, token string) Assertion {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(p.JWKS(), &set); err != nil {
		t.Fatalf("decode JWKS: %v", err)
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("parse assertion: %v", err)
	}
	if len(tok.Headers) != 1 {
		t.Fatalf("assertion has %d signatures, want 1", len(tok.Headers))
	}
	hdr := tok.Headers[0]
	if hdr.Algorithm != "ES256" {
		t.Errorf("alg = %q, want ES256", hdr.Algorithm)
	}
	if typ := hdr.ExtraHeaders[jose.HeaderType]; typ != "JWT" {
		t.Errorf("typ = %v, want JWT", typ)
	}
	keys := set.Key(hdr.KeyID)
	if len(keys) != 1 {
		t.Fatalf("JWKS has %d keys with kid %q, want 1", len(keys), hdr.KeyID)
	}
	var a Assertion
	if err := tok.Claims(keys[0].Key, &a); err != nil {
		t.Fatalf("verify assertion with the JWKS key: %v", err)
	}
	return a
}

func TestAssertionVerifiesAgainstJWKS(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(keyFile, []byte(p256PEM(t, true)), 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name         string
		jwt          JWTConfig
		wantIssuer   string
		wantAudience jwt.Audience
		wantLifetime time.Duration
	}{
		{
			name:         "SEC 1 key inline, issuer from public_url, default lifetime",
			jwt:          JWTConfig{Header: "X-Portcullis-Assertion", SigningKey: p256PEM(t, false)},
			wantIssuer:   "https://cvat.example.com",
			wantLifetime: time.Minute,
		},
		{
			name:         "PKCS 8 key inline with issuer, audience and lifetime",
			jwt:          JWTConfig{Header: "X-Portcullis-Assertion", SigningKey: p256PEM(t, true), Issuer: "portcullis", Audience: "cvat", Lifetime: 90 * time.Second},
			wantIssuer:   "portcullis",
			wantAudience: jwt.Audience{"cvat"},
			wantLifetime: 90 * time.Second,
		},
		{
			name:         "key from a file",
			jwt:          JWTConfig{Header: "X-Portcullis-Assertion", SigningKeyFile: keyFile},
			wantIssuer:   "https://cvat.example.com",
			wantLifetime: time.Minute,
		},
		{
			name:         "generated key",
			jwt:          JWTConfig{Header: "X-Portcullis-Assertion"},
			wantIssuer:   "https://cvat.example.com",
			wantLifetime: time.Minute,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(Config{JWT: &tt.jwt}, "https://cvat.example.com")
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			p.jwt.now = func() time.Time { return now }
			prof := &idp.Profile{
				IdP: "company-oidc", Sub: "u-42", Email: "ann@company.com", EmailVerified: true,
				Username: "ann", Name: "Ann Lee", Groups: []string{"staff", "cvat-admins"}, Roles: []string{"admin"},
				Claims: map[string]any{"secret": "not in the assertion"},
			}
			h := http.Header{}
			if err := p.Inject(h, prof); err != nil {
				t.Fatalf("Inject: %v", err)
			}
			a := verify(t, p, h.Get("X-Portcullis-Assertion"))

			if a.Issuer != tt.wantIssuer {
				t.Errorf("iss = %q, want %q", a.Issuer, tt.wantIssuer)
			}
			if !slices.Equal(a.Audience, tt.wantAudience) {
				t.Errorf("aud = %q, want %q", a.Audience, tt.wantAudience)
			}
			if a.Subject != "u-42" || a.IdP != "company-oidc" || a.Email != "ann@company.com" || !a.EmailVerified ||
				a.Username != "ann" || a.Name != "Ann Lee" {
				t.Errorf("identity claims = %+v", a)
			}
			if !slices.Equal(a.Groups, prof.Groups) || !slices.Equal(a.Roles, prof.Roles) {
				t.Errorf("groups = %q, roles = %q", a.Groups, a.Roles)
			}
			if !a.IssuedAt.Time().Equal(now) || !a.NotBefore.Time().Equal(now) || !a.Expiry.Time().Equal(now.Add(tt.wantLifetime)) {
				t.Errorf("iat %v nbf %v exp %v, want %v, %v, %v", a.IssuedAt.Time(), a.NotBefore.Time(), a.Expiry.Time(), now, now, now.Add(tt.wantLifetime))
			}
			if err := a.Claims.Validate(jwt.Expected{Issuer: tt.wantIssuer, Time: now.Add(tt.wantLifetime / 2)}); err != nil {
				t.Errorf("claims do not validate in mid-life: %v", err)
			}
			if err := a.Claims.ValidateWithLeeway(jwt.Expected{Time: now.Add(tt.wantLifetime + time.Second)}, 0); err == nil {
				t.Errorf("claims still valid after their lifetime")
			}
		})
	}
}

func TestAssertionFromAnotherKeyDoesNotVerify(t *testing.T) {
	a := compileYAML(t, cvatYAML)
	// Another proxy: another process's generated key, or a key of its own.
	b := compileYAML(t, strings.Replace(cvatYAML, "  header: X-Portcullis-Assertion\n",
		"  header: X-Portcullis-Assertion\n  signing_key: |\n    "+strings.ReplaceAll(strings.TrimSpace(p256PEM(t, false)), "\n", "\n    ")+"\n", 1))
	h := http.Header{}
	if err := a.Inject(h, &idp.Profile{Sub: "1"}); err != nil {
		t.Fatalf("Inject: %v", err)
	}
	tok, err := jwt.ParseSigned(h.Get("X-Portcullis-Assertion"), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b.JWKS(), &set); err != nil {
		t.Fatalf("decode JWKS: %v", err)
	}
	if err := tok.Claims(set.Keys[0].Key, &Assertion{}); err == nil {
		t.Errorf("assertion verified against another proxy's key")
	}
}

// Every reload compiles the attribute pass again: the key generated at
// start must be the one it signs with after, or the assertions signed
// before stop verifying against the JWKS the upstream fetched.
func TestGeneratedKeyIsTheSameAtEveryCompile(t *testing.T) {
	if a, b := compileYAML(t, cvatYAML).JWKS(), compileYAML(t, cvatYAML).JWKS(); string(a) != string(b) {
		t.Errorf("two compiles of one jwt block without a key published different keys:\n%s\n%s", a, b)
	}
}

func TestAssertionListsAreNeverNull(t *testing.T) {
	p := compileYAML(t, cvatYAML)
	token, err := p.jwt.sign(&idp.Profile{Sub: "1"})
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("assertion is not a compact JWS: %q", token)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("decode payload: %v", err)
	}
	for _, want := range []string{`"groups":[]`, `"roles":[]`} {
		if !bytes.Contains(payload, []byte(want)) {
			t.Errorf("payload %s lacks %s", payload, want)
		}
	}
}

func TestJWKSShape(t *testing.T) {
	p := compileYAML(t, cvatYAML)
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(p.JWKS(), &set); err != nil {
		t.Fatalf("decode JWKS %s: %v", p.JWKS(), err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS has %d keys, want 1: %s", len(set.Keys), p.JWKS())
	}
	k := set.Keys[0]
	for field, want := range map[string]string{"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256"} {
		if k[field] != want {
			t.Errorf("%s = %q, want %q", field, k[field], want)
		}
	}
	if _, private := k["d"]; private {
		t.Errorf("JWKS publishes the private key")
	}
	if len(k) != 7 {
		t.Errorf("JWK has fields %v, want kty crv x y kid use alg", k)
	}
	// RFC 7638: the SHA-256 of the required members in lexical order.
	members := `{"crv":"P-256","kty":"EC","x":"` + k["x"] + `","y":"` + k["y"] + `"}`
	sum := sha256.Sum256([]byte(members))
	if want := base64.RawURLEncoding.EncodeToString(sum[:]); k["kid"] != want {
		t.Errorf("kid = %q, want the RFC 7638 thumbprint %q", k["kid"], want)
	}
}

func TestJWKSWithoutJWTIsEmptySet(t *testing.T) {
	p, err := Compile(Config{Headers: map[string]string{"X-Email": "email"}}, "https://x")
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if got := string(p.JWKS()); got != `{"keys":[]}` {
		t.Errorf("JWKS = %s, want an empty set", got)
	}
}

// A key generated at start is a warning of jwt (check prints it, serve
// logs it); a configured one, or no assertion at all, is none.
func TestGeneratedKeyIsWarnedOf(t *testing.T) {
	tests := []struct {
		name     string
		jwt      *JWTConfig
		wantWarn bool
	}{
		{"no key configured warns about replicas", &JWTConfig{Header: "X-A"}, true},
		{"configured key does not warn", &JWTConfig{Header: "X-A", SigningKey: p256PEM(t, false)}, false},
		{"configured key file does not warn", &JWTConfig{Header: "X-A", SigningKeyFile: "/etc/portcullis/assertion.pem"}, false},
		{"no assertion does not warn", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := Config{JWT: tt.jwt}.Warnings()
			warned := len(w) == 1 && w[0].Key == "jwt" && strings.Contains(w[0].Message, "replicas")
			if warned != tt.wantWarn || len(w) > 1 {
				t.Errorf("warnings %v: warned = %v, want %v", w, warned, tt.wantWarn)
			}
		})
	}
}

func TestLifetimeFromYAML(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    time.Duration
		wantErr bool
	}{
		{"duration string is read", "lifetime: 90s", 90 * time.Second, false},
		{"compound duration is read", "lifetime: 1m30s", 90 * time.Second, false},
		{"absent lifetime is zero, meaning the default", "header: X-A", 0, false},
		{"bare number is refused rather than read as nanoseconds", "lifetime: 90", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c JWTConfig
			err := yaml.Unmarshal([]byte(tt.yaml), &c)
			if (err != nil) != tt.wantErr {
				t.Fatalf("decode error = %v, want error %v", err, tt.wantErr)
			}
			if c.Lifetime != tt.want {
				t.Errorf("Lifetime = %v, want %v", c.Lifetime, tt.want)
			}
		})
	}
}
