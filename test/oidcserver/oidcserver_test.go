package oidcserver

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second}
}

func fetch(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	return string(b)
}

func TestRestartKeepsIssuerAndSigningKeys(t *testing.T) {
	s := Start(t, Options{RedirectURIs: []string{"http://127.0.0.1:1/cb"}})
	t.Logf("provider started in %s", s.StartupTime)
	issuer, keys := s.Issuer, fetch(t, s.Issuer+"/jwks")
	s.Restart()
	t.Logf("provider restarted in %s", s.StartupTime)
	if s.Issuer != issuer {
		t.Errorf("issuer after restart = %s, want %s", s.Issuer, issuer)
	}
	if got := fetch(t, s.Issuer+"/jwks"); got != keys {
		t.Errorf("signing keys changed across restart:\n%s\n%s", keys, got)
	}
}

func TestLoginThenLogoutAsksForTheFormAgain(t *testing.T) {
	rp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "relying party")
	}))
	defer rp.Close()
	s := Start(t, Options{
		RedirectURIs:           []string{rp.URL + "/cb"},
		PostLogoutRedirectURIs: []string{rp.URL + "/bye"},
	})
	authURL := s.Issuer + "/auth?" + url.Values{
		"client_id": {s.ClientID}, "redirect_uri": {rp.URL + "/cb"}, "response_type": {"code"},
		"scope": {"openid"}, "state": {"st"}, "nonce": {"n"},
	}.Encode()
	b := browser(t)

	resp := Login(t, b, authURL, Bob, BobPassword)
	resp.Body.Close()
	q := resp.Request.URL.Query()
	if resp.Request.URL.Path != "/cb" || q.Get("code") == "" || q.Get("state") != "st" {
		t.Fatalf("login ended at %s, want the redirect URI with a code", resp.Request.URL)
	}

	// With a session at the IdP, the next login needs no form.
	resp, body := get(t, b, authURL)
	if resp.Request.URL.Path != "/cb" {
		t.Fatalf("second login ended at %s (%s), want straight back to the redirect URI", resp.Request.URL, body)
	}

	resp = Logout(t, b, s.Issuer+"/session/end?"+url.Values{
		"client_id": {s.ClientID}, "post_logout_redirect_uri": {rp.URL + "/bye"},
	}.Encode())
	resp.Body.Close()
	if resp.Request.URL.String() != rp.URL+"/bye" {
		t.Fatalf("logout ended at %s, want the post-logout redirect URI", resp.Request.URL)
	}

	_, body = get(t, b, authURL)
	if !strings.Contains(string(body), `name="password"`) {
		t.Fatalf("login after logout did not show the form:\n%s", body)
	}
}

func TestTokenRequestsCountsEveryPOSTToTheTokenEndpoint(t *testing.T) {
	s := Start(t, Options{RedirectURIs: []string{"http://127.0.0.1:1/cb"}})
	if n := s.TokenRequests(t); n != 0 {
		t.Fatalf("token requests at start = %d, want 0", n)
	}
	for range 2 {
		resp, err := http.PostForm(s.Issuer+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"unknown"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := s.TokenRequests(t); n != 2 {
		t.Errorf("token requests after two refused refreshes = %d, want 2", n)
	}
}

// RotateKeysInPlace publishes a new key first, keeps the old one published
// after it, and keeps them across a restart.
func TestRotateKeysInPlacePublishesTheNewKeyBeforeTheOld(t *testing.T) {
	s := Start(t, Options{RedirectURIs: []string{"http://127.0.0.1:1/cb"}})
	kids := func() []string {
		var set struct{ Keys []struct{ Kid string } }
		if err := json.Unmarshal([]byte(fetch(t, s.Issuer+"/jwks")), &set); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, k := range set.Keys {
			out = append(out, k.Kid)
		}
		return out
	}
	before := kids()
	rotated := s.RotateKeysInPlace(t)
	want := append(slices.Clone(rotated), before...)
	if got := kids(); !slices.Equal(got, want) {
		t.Errorf("kids after the rotation: %v, want %v (the new ones, then those before)", got, want)
	}
	s.Restart()
	if got := kids(); !slices.Equal(got, want) {
		t.Errorf("kids after a restart: %v, want %v", got, want)
	}
}

// RotateKeysTo publishes the new key, of the algorithm asked for, before
// those held, and the discovery document lists that algorithm beside the
// one before.
func TestRotateKeysToAnotherAlgorithm(t *testing.T) {
	s := Start(t, Options{RedirectURIs: []string{"http://127.0.0.1:1/cb"}})
	algs := func() []string {
		var d struct {
			Algs []string `json:"id_token_signing_alg_values_supported"`
		}
		if err := json.Unmarshal([]byte(fetch(t, s.Issuer+"/.well-known/openid-configuration")), &d); err != nil {
			t.Fatal(err)
		}
		return d.Algs
	}
	if got := algs(); slices.Contains(got, "ES256") {
		t.Fatalf("discovery lists %v before the rotation, want no ES256", got)
	}
	kid := s.RotateKeysTo(t, "ES256")
	var set struct {
		Keys []struct{ Kid, Kty, Alg string }
	}
	if err := json.Unmarshal([]byte(fetch(t, s.Issuer+"/jwks")), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 || set.Keys[0].Kid != kid || set.Keys[0].Kty != "EC" || set.Keys[1].Kty != "RSA" {
		t.Errorf("keys after the rotation: %+v, want the new EC key %s, then the RSA key before", set.Keys, kid)
	}
	if got := algs(); !slices.Contains(got, "ES256") || !slices.Contains(got, "RS256") {
		t.Errorf("discovery lists %v after the rotation, want ES256 and RS256", got)
	}
}

// RotateKeysKeepingKids publishes a new key under each old key's kid, and
// the old key no more.
func TestRotateKeysKeepingKidsReplacesTheKeyUnderItsKid(t *testing.T) {
	s := Start(t, Options{RedirectURIs: []string{"http://127.0.0.1:1/cb"}})
	keys := func() map[string]string {
		var set struct{ Keys []struct{ Kid, N string } }
		if err := json.Unmarshal([]byte(fetch(t, s.Issuer+"/jwks")), &set); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, k := range set.Keys {
			out[k.Kid] = k.N
		}
		return out
	}
	before := keys()
	kids := s.RotateKeysKeepingKids(t)
	after := keys()
	if len(after) != len(before) {
		t.Errorf("keys after the rotation: %v, want as many as before, %v", after, before)
	}
	for _, kid := range kids {
		if before[kid] == "" || after[kid] == "" || before[kid] == after[kid] {
			t.Errorf("kid %s: modulus before %.12q, after %.12q; want a new key under the kid kept", kid, before[kid], after[kid])
		}
	}
}
