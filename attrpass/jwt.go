package attrpass

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/textproto"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/portcullis-proxy/portcullis/idp"
)

// JWTConfig is attribute_pass.jwt: a signed assertion of the user that the
// upstream can verify against the keys at {auth_prefix}/jwks.json.
type JWTConfig struct {
	// Header carries the assertion, e.g. X-Portcullis-Assertion. Required.
	Header string `yaml:"header"`
	// SigningKey is a PEM EC P-256 private key (SEC 1 or PKCS #8), inline;
	// use ${VAR} to keep it out of the file. Without it or SigningKeyFile a
	// key is generated at start.
	SigningKey string `yaml:"signing_key"`
	// SigningKeyFile is a file holding the key instead.
	SigningKeyFile string `yaml:"signing_key_file"`
	// Issuer is the iss claim; empty means the proxy's public_url.
	Issuer string `yaml:"issuer"`
	// Audience is the aud claim; empty leaves it out.
	Audience string `yaml:"audience"`
	// Lifetime is how long an assertion is valid; 0 means one minute.
	// yaml.v3 reads strings such as "90s" into a time.Duration itself.
	Lifetime time.Duration `yaml:"lifetime"`
}

// DefaultLifetime is the lifetime of an assertion when none is configured.
const DefaultLifetime = time.Minute

// Assertion is the claim set of the assertion JWT, signed with ES256.
type Assertion struct {
	jwt.Claims
	Email         string   `json:"email,omitempty"`
	EmailVerified bool     `json:"email_verified"`
	Username      string   `json:"username,omitempty"`
	Name          string   `json:"name,omitempty"`
	Groups        []string `json:"groups"`
	Roles         []string `json:"roles"`
	IdP           string   `json:"idp"`
}

// signer signs assertions; it is built once at Compile.
type signer struct {
	key      string // http.Header key of the assertion
	issuer   string
	audience jwt.Audience
	lifetime time.Duration
	signer   jose.Signer
	jwks     []byte
	now      func() time.Time // time.Now; tests set it
}

func newSigner(c JWTConfig, issuer string) (*signer, error) {
	var errs []error
	priv, err := loadKey(c)
	if err != nil {
		errs = append(errs, err)
	}
	s := &signer{
		key:      textproto.CanonicalMIMEHeaderKey(c.Header),
		issuer:   c.Issuer,
		lifetime: c.Lifetime,
		now:      time.Now,
	}
	if s.issuer == "" {
		s.issuer = issuer
	}
	if s.issuer == "" {
		errs = append(errs, errors.New("jwt.issuer: required when server.public_url is empty"))
	}
	if c.Audience != "" {
		s.audience = jwt.Audience{c.Audience}
	}
	switch {
	case s.lifetime < 0:
		errs = append(errs, fmt.Errorf("jwt.lifetime: must be positive (got %s)", c.Lifetime))
	case s.lifetime == 0:
		s.lifetime = DefaultLifetime
	}
	if priv == nil {
		return nil, errors.Join(errs...)
	}

	pub := jose.JSONWebKey{Key: &priv.PublicKey, Algorithm: string(jose.ES256), Use: "sig"}
	thumb, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, errors.Join(append(errs, fmt.Errorf("jwt: key thumbprint: %w", err))...)
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(thumb)
	if s.jwks, err = json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}}); err != nil {
		return nil, errors.Join(append(errs, fmt.Errorf("jwt: encode JWKS: %w", err))...)
	}
	// A JSONWebKey as the signing key puts its KeyID in the kid header.
	s.signer, err = jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: pub.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		errs = append(errs, fmt.Errorf("jwt: signer: %w", err))
	}
	return s, errors.Join(errs...)
}

// generatedKey is the signing key of a jwt block that names none, made once
// in the life of the process: every reload compiles the attribute pass
// again, and a key made anew each time made the assertions signed before
// the reload stop verifying against the JWKS the upstream had fetched.
var generatedKey = sync.OnceValues(func() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
})

// loadKey reads the configured signing key, or the one generated at start.
func loadKey(c JWTConfig) (*ecdsa.PrivateKey, error) {
	key, pemText := "jwt.signing_key", []byte(c.SigningKey)
	switch {
	case c.SigningKey != "" && c.SigningKeyFile != "":
		return nil, errors.New("jwt.signing_key: set either signing_key or signing_key_file, not both")
	case c.SigningKeyFile != "":
		key = "jwt.signing_key_file"
		var err error
		if pemText, err = os.ReadFile(c.SigningKeyFile); err != nil {
			return nil, fmt.Errorf("%s: read: %w", key, err)
		}
	case c.SigningKey == "": // Warnings says so
		priv, err := generatedKey()
		if err != nil {
			return nil, fmt.Errorf("jwt: generate key: %w", err)
		}
		return priv, nil
	}

	block, _ := pem.Decode(pemText)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block found", key)
	}
	var priv *ecdsa.PrivateKey
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: parse EC private key: %w", key, err)
		}
		priv = k
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: parse PKCS #8 private key: %w", key, err)
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: %T key; want an EC P-256 key", key, k)
		}
		priv = ec
	default:
		return nil, fmt.Errorf("%s: PEM block is %q; want \"EC PRIVATE KEY\" or \"PRIVATE KEY\"", key, block.Type)
	}
	if priv.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s: curve %s; want P-256 (ES256)", key, priv.Curve.Params().Name)
	}
	return priv, nil
}

// sign makes the assertion for prof. Signing costs an ECDSA signature (see
// BenchmarkInject); Pass.Identity reuses a session's assertion for a quarter
// of its lifetime.
func (s *signer) sign(prof *idp.Profile) (string, error) {
	return s.signAt(prof, s.now())
}

// signAt signs the assertion of prof as issued at now.
func (s *signer) signAt(prof *idp.Profile, now time.Time) (string, error) {
	token, err := jwt.Signed(s.signer).Claims(s.assertion(prof, now)).Serialize()
	if err != nil {
		return "", fmt.Errorf("attribute pass: sign assertion: %w", err)
	}
	return token, nil
}

// describe is the assertion of prof as `portcullis explain` shows it: its
// claims, unsigned. A signed one would be a working credential, for the
// assertion's lifetime, of whoever the claims file names, printed to a
// terminal that may be shared or logged.
func (s *signer) describe(prof *idp.Profile) (string, error) {
	claims, err := json.Marshal(s.assertion(prof, s.now()))
	if err != nil {
		return "", fmt.Errorf("attribute pass: encode assertion: %w", err)
	}
	return "(an ES256 JWT of these claims, not signed here) " + string(claims), nil
}

// assertion is the claim set of prof's assertion issued at now.
func (s *signer) assertion(prof *idp.Profile, now time.Time) Assertion {
	return Assertion{
		Claims: jwt.Claims{
			Issuer:    s.issuer,
			Subject:   prof.Sub,
			Audience:  s.audience,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			Expiry:    jwt.NewNumericDate(now.Add(s.lifetime)),
		},
		Email:         prof.Email,
		EmailVerified: prof.EmailVerified,
		Username:      prof.Username,
		Name:          prof.Name,
		// Lists are always arrays, never null, so upstreams need one case.
		Groups: nonNil(prof.Groups),
		Roles:  nonNil(prof.Roles),
		IdP:    prof.IdP,
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// JWKS returns the JSON Web Key Set that verifies the assertion, to serve at
// {auth_prefix}/jwks.json; without jwt it is an empty set.
func (p *Pass) JWKS() []byte {
	if p.jwt == nil {
		return []byte(`{"keys":[]}`)
	}
	return slices.Clone(p.jwt.jwks)
}
