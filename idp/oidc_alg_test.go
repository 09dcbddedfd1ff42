package idp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// The verifier discovery builds (verifiableAlgs, passed as
// SupportedSigningAlgs so that a refusal can name the algs) takes exactly
// the ID token algs go-oidc's own default takes for the same discovery
// document: those it supports of the listed ones, or RS256 alone when the
// document lists none of them. go-oidc may come to support more (RFC
// 9864's Ed25519): verifiedAlgs, a copy of its list, would then refuse
// tokens its default takes, and this fails on the upgrade.
func TestIDTokenAlgsAreGoOIDCDefaults(t *testing.T) {
	// Every JWS alg of the IANA registry (and RSA-OAEP, a JWE's), not
	// verifiedAlgs: the test must not take its list from what it tests.
	candidates := []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512",
		"EdDSA", "Ed25519", "Ed448", "ES256K", "HS256", "HS384", "HS512", "none", "RSA-OAEP"}
	var listed atomic.Pointer[[]string] // what the discovery document says, per case
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		discovery := map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + "/jwks"}
		if l := *listed.Load(); l != nil {
			discovery["id_token_signing_alg_values_supported"] = l
		}
		json.NewEncoder(w).Encode(discovery)
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"keys":[]}`)) })

	// takes reports whether v gets past the alg check for a token signed
	// alg: with no key to verify it, it then fails for the signature.
	takes := func(v *oidc.IDTokenVerifier, alg string) bool {
		header, _ := json.Marshal(map[string]string{"alg": alg, "kid": "k1"})
		raw := base64.RawURLEncoding.EncodeToString(header) + "." +
			base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"x","sub":"alice"}`)) + "." +
			base64.RawURLEncoding.EncodeToString([]byte("signature"))
		_, err := v.Verify(context.Background(), raw)
		if err == nil {
			t.Fatalf("a token signed %s with no key verified", alg)
		}
		return !strings.Contains(err.Error(), "unexpected signature algorithm")
	}
	lists := [][]string{nil, {}, {"HS256", "none"}, {"Ed25519"}, {"HS256", "RS256"}, {"ES256", "RS256"}, candidates}
	for _, a := range candidates {
		lists = append(lists, []string{a})
	}
	for _, l := range lists {
		listed.Store(&l)
		provider, err := oidc.NewProvider(context.Background(), srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		theirs := provider.Verifier(&oidc.Config{ClientID: "portcullis"})
		ours := provider.Verifier(&oidc.Config{ClientID: "portcullis", SupportedSigningAlgs: verifiableAlgs(l)})
		for _, alg := range candidates {
			if got, want := takes(ours, alg), takes(theirs, alg); got != want {
				t.Errorf("discovery listing %q: a token signed %s taken %t, go-oidc's default %t", l, alg, got, want)
			}
		}
	}
}

// A refresh whose new ID token is signed with an alg the verifier does not
// take fails as such a login does: a *SetupError id_token_signing_alg whose
// hint names the alg and the ones verified, not a bare verify error that
// leaves the operator to guess. The IdP's client settings changed after the
// login; every session of this client fails alike at its next refresh.
func TestRefreshWithAnUnverifiableAlgSaysWhichAndWhatToSet(t *testing.T) {
	ti := newTestIssuer(t)
	// The token as an IdP that now signs HS256 sends it: the header says
	// so, and the signature is never looked at.
	ti.reshape = func(raw string) string {
		_, rest, _ := strings.Cut(raw, ".")
		return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"k1","typ":"JWT"}`)) + "." + rest
	}
	c := Config{ID: "company", Protocol: OIDC, ServerURL: ti.url, ClientID: "portcullis", ClientSecret: "s"}
	p := startOIDC(t, c, testOptions("http://127.0.0.1:1", false))
	waitReady(t, p, 10*time.Second)
	prof, _, err := p.Refresh(t.Context(), &Tokens{RefreshToken: "rt", IDToken: fakeJWT(`{"sub":"alice"}`)})
	setup, ok := errors.AsType[*SetupError](err)
	if !ok || setup.Reason != "id_token_signing_alg" {
		t.Fatalf("Refresh = %+v, %v; want a SetupError id_token_signing_alg", prof, err)
	}
	// LemonLDAP::NG 2.x signs a new relying party's ID tokens HS512 unless
	// told otherwise: the hint says where, and does not claim that RS256 is
	// every IdP's default.
	for _, want := range []string{`"HS256"`, "verifies only RS256", "ID token signature algorithm", "LemonLDAP::NG", "HS512"} {
		if !strings.Contains(setup.Hint, want) {
			t.Errorf("hint %q does not say %q", setup.Hint, want)
		}
	}
	if strings.Contains(setup.Hint, "every IdP") {
		t.Errorf("hint %q says RS256 is every IdP's default; LemonLDAP::NG's is HS512", setup.Hint)
	}
	if errors.Is(err, ErrRefreshRefused) {
		t.Errorf("err %v ends the session: the IdP did not refuse the user, it is set up otherwise", err)
	}
	if !strings.Contains(err.Error(), "oidc company: refresh: verify id token") {
		t.Errorf("err %q does not say the step", err)
	}
}

// An ID token from a refresh that fails verification for another reason
// than its alg (a signature that does not verify under an alg the client
// takes, a header that names no alg) is no id_token_signing_alg setup
// error: its hint would send the operator to change a setting that is
// right.
func TestRefreshVerifyFailureIsAnAlgSetupErrorOnlyForTheAlg(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reshape func(raw string) string
	}{
		{"RS256 with a signature that does not verify", func(raw string) string {
			i := strings.LastIndex(raw, ".")
			return raw[:i+1] + base64.RawURLEncoding.EncodeToString([]byte("not the signature"))
		}},
		{"a header without alg", func(raw string) string {
			_, rest, _ := strings.Cut(raw, ".")
			return base64.RawURLEncoding.EncodeToString([]byte(`{"kid":"k1","typ":"JWT"}`)) + "." + rest
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ti := newTestIssuer(t)
			ti.reshape = tc.reshape
			c := Config{ID: "company", Protocol: OIDC, ServerURL: ti.url, ClientID: "portcullis", ClientSecret: "s"}
			p := startOIDC(t, c, testOptions("http://127.0.0.1:1", false))
			waitReady(t, p, 10*time.Second)
			prof, _, err := p.Refresh(t.Context(), &Tokens{RefreshToken: "rt", IDToken: fakeJWT(`{"sub":"alice"}`)})
			if err == nil || !strings.Contains(err.Error(), "oidc company: refresh: verify id token") {
				t.Fatalf("Refresh = %+v, %v; want the verification refused", prof, err)
			}
			if setup, ok := errors.AsType[*SetupError](err); ok {
				t.Errorf("Refresh: %v, a SetupError %q: the alg is not what failed", err, setup.Reason)
			}
		})
	}
}
