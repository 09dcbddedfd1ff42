package proxy

import (
	"net/http"
	"net/http/cookiejar"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// The IdP's ID token key is rotated to one of another algorithm, as ORY
// Hydra v2.3.0's is by `hydra create jwks hydra.openid.id-token --alg
// ES256`: it signs ID tokens and logout tokens with the new key at once,
// and its discovery document lists ES256 from then on. The proxy read the
// document once, at its start, when it listed RS256 alone: every login
// after the rotation failed (502, id_token_signing_alg, whose hint sent
// the administrator to change a setting that was right), and the IdP's
// logout tokens were refused for good (400), which left the users signed
// in here. A token signed with an algorithm the document did not list has
// it read again.
func TestIdPRotatingItsKeyToAnotherAlgorithm(t *testing.T) {
	s, op, tokens := startBackchannelStack(t, nil)

	jar, _ := cookiejar.New(nil)
	alice := &http.Client{Jar: jar, Timeout: time.Minute}
	resp := oidcserver.Login(t, alice, s.base+"/.portcullis/login/company?rd=/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("alice's login: %d", resp.StatusCode)
	}
	session := jar.Cookies(resp.Request.URL)

	kid := op.RotateKeysTo(t, "ES256")

	// A login after the rotation: its ID token is signed with ES256.
	bobJar, _ := cookiejar.New(nil)
	bob := &http.Client{Jar: bobJar, Timeout: time.Minute}
	resp = oidcserver.Login(t, bob, s.base+"/.portcullis/login/company?rd=/tasks", oidcserver.Bob, oidcserver.BobPassword)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("bob's login after the rotation: %d, want 200", resp.StatusCode)
	} else if code := sessionAnswers(t, s.base, bobJar.Cookies(resp.Request.URL)); code != http.StatusOK {
		t.Errorf("bob's session after his login: %d, want 200", code)
	}

	// Alice signs out at the IdP: its logout token, signed with the new
	// key, ends her session here (sent again after Retry-After, as the
	// IdP does, while the keys fetched last lack the new key).
	oidcserver.Logout(t, alice, op.Issuer+"/session/end").Body.Close()
	var token string
	select {
	case token = <-tokens:
	case <-time.After(30 * time.Second):
		t.Fatal("the IdP sent no logout token")
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || tok.Headers[0].KeyID != kid {
		t.Fatalf("the IdP's logout token is not signed with its new ES256 key %s: %v", kid, err)
	}
	a := postLogoutToken(t, s.base, "company", token)
	waitFor(t, "the logout token to be taken", func() bool {
		if a.code == http.StatusServiceUnavailable && a.retryAfter >= 1 && a.retryAfter <= 10 {
			time.Sleep(time.Duration(a.retryAfter) * time.Second)
			a = postLogoutToken(t, s.base, "company", token)
		}
		if a.code != http.StatusOK && a.code != http.StatusServiceUnavailable {
			t.Fatalf("the IdP's logout token signed with ES256: %d %s, want 200", a.code, a.body)
		}
		return a.code == http.StatusOK
	})
	if code := sessionAnswers(t, s.base, session); code != http.StatusUnauthorized {
		t.Errorf("alice's session after the IdP's logout token: %d, want 401", code)
	}
}
