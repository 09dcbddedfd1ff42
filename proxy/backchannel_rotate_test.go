package proxy

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// The IdP (oidc-provider) rotates its signing key right after the proxy
// fetched its keys, a fetch that anyone can cause by posting a logout
// token that names a kid never published, and then logs alice out: its
// logout token, signed with the new key, comes within the floor on
// fetching the keys again (10 s). It is answered 503 with Retry-After
// until the floor has passed, alice's session kept and the token not
// spent, where a 400 told the IdP that the token was refused for good
// (Back-Channel Logout 1.0, 2.8): she stayed signed in here. Sent again
// after Retry-After, it ends her session. A forged token naming the kid of
// a key held, issued before the fetch, is refused as invalid.
func TestBackchannelLogoutSignedWithAKeyRotatedWithinTheFloor(t *testing.T) {
	s, op, tokens := startBackchannelStack(t, nil)

	forge := logoutTokenForger(t, op.Issuer)
	post := func(token string) logoutAnswer { return postLogoutToken(t, s.base, "company", token) }
	signedIn := func(session []*http.Cookie) int { return sessionAnswers(t, s.base, session) }
	kidOf := func(raw string) string {
		tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Headers[0].KeyID
	}

	// The floor's 10 s run on the clock: the rotation and the IdP's
	// logout must come within them of the fetch before. A machine so
	// loaded that they did not is seen (the token is taken at once,
	// the keys fetched for it), and the whole is done again.
	for attempt := 1; ; attempt++ {
		browser, session := aliceSignsIn(t, s.base)

		// A forged token naming a kid never published: once the floor
		// allows, its check fetches the keys, which do not have its kid,
		// and it is refused as invalid; within the floor of an earlier
		// fetch it is to be sent again.
		haveKeysFetched(t, post, forge)
		kids := op.RotateKeysInPlace(t)
		token := signsOutAtIdP(t, op, browser, tokens)
		if kidOf(token) != kids[0] {
			t.Fatalf("the IdP's logout token names kid %q, want its new key's %q", kidOf(token), kids[0])
		}

		first := post(token)
		if first.code == http.StatusOK && attempt < 3 {
			t.Logf("attempt %d: the IdP's logout token came after the floor and was taken at once; again", attempt)
			continue
		}
		mustBeSentAgain(t, "the IdP's logout token, signed with its new key within the floor", first)
		t.Logf("attempt %d: the IdP's logout token answered 503, Retry-After %d", attempt, first.retryAfter)
		if code := signedIn(session); code != http.StatusOK {
			t.Errorf("alice's session after the 503: %d, want 200 (not ended)", code)
		}
		lines := s.logs.find(t, map[string]any{"msg": "back-channel logout: the token could not be checked; sessions not ended",
			"reason": "signing_key_not_fetched", "kid": kids[0]})
		if len(lines) != 1 || lines[0]["level"] != "WARN" {
			t.Errorf("log lines of the token to send again: %v; want one WARN, reason signing_key_not_fetched, kid %s", lines, kids[0])
		}

		// A forged token naming the kid of a key held, issued before the
		// keys were fetched: invalid (one issued since could be signed
		// with a new key under that kid).
		var set struct{ Keys []struct{ Kid string } }
		if err := json.Unmarshal([]byte(fetchBody(t, op.Issuer+"/jwks")), &set); err != nil {
			t.Fatal(err)
		}
		if a := post(forge(set.Keys[len(set.Keys)-1].Kid, time.Now().Add(-time.Minute))); a.code != http.StatusBadRequest {
			t.Errorf("a forged logout token naming the kid of the IdP's old key, issued a minute ago: %d %s, want 400", a.code, a.body)
		}

		// The IdP's retry, after Retry-After, ends the session.
		sendAgainUntilTaken(t, post, token, first)
		if code := signedIn(session); code != http.StatusUnauthorized {
			t.Errorf("alice's session after the logout token was taken: %d, want 401", code)
		}
		if a := post(token); a.code != http.StatusBadRequest || !strings.Contains(a.body, "already used") {
			t.Errorf("the logout token once more: %d %s, want 400, already used", a.code, a.body)
		}
		return
	}
}

// The IdP (oidc-provider) rotates its signing key but keeps its kid, as
// one whose administrator configured a constant kid does, right after the
// proxy fetched its keys, and then logs alice out: its logout token,
// signed with the new key under the kid of the key the proxy holds, fails
// that key's check, and within the floor the keys are not fetched again.
// It is answered 503 with Retry-After, not a final 400 that left her
// signed in, and sent again after Retry-After it ends her session. A
// forged token under that kid, issued before the fetch, is refused as
// invalid; one issued since is to be sent again, and refused once the keys
// were fetched again more than the floor after it was issued. A login after the rotation succeeds: its ID token,
// signed with the new key, has the keys fetched again at once (no floor).
func TestBackchannelLogoutSignedWithANewKeyUnderTheSameKid(t *testing.T) {
	s, op, tokens := startBackchannelStack(t, nil)
	forge := logoutTokenForger(t, op.Issuer)
	post := func(token string) logoutAnswer { return postLogoutToken(t, s.base, "company", token) }

	for attempt := 1; ; attempt++ {
		browser, session := aliceSignsIn(t, s.base)

		haveKeysFetched(t, post, forge)
		fetched := time.Now()
		kids := op.RotateKeysKeepingKids(t)
		token := signsOutAtIdP(t, op, browser, tokens)
		tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
		if err != nil {
			t.Fatal(err)
		}
		if kid := tok.Headers[0].KeyID; kid != kids[0] {
			t.Fatalf("the IdP's logout token names kid %q, want the kid kept, %q", kid, kids[0])
		}

		// A forged token under the kid, issued since the fetch, is posted
		// before the IdP's: the IdP's answered 503 then says that the
		// floor had not passed when the forged one came either (a post
		// after it would have had the keys fetched, and the IdP's token
		// taken), however long the machine stalled between the two.
		forged := forge(kids[0], time.Now())
		forgedFirst := post(forged)
		first := post(token)
		if first.code == http.StatusOK && attempt < 3 {
			t.Logf("attempt %d: the IdP's logout token came after the floor and was taken at once; again", attempt)
			continue
		}
		mustBeSentAgain(t, "the IdP's logout token, signed with its new key under the kid kept, within the floor", first)
		t.Logf("attempt %d: the IdP's logout token answered 503, Retry-After %d", attempt, first.retryAfter)
		if forgedFirst.code != http.StatusServiceUnavailable {
			t.Errorf("a forged logout token under the kid, issued since the keys were fetched, within the floor: %d %s, want 503",
				forgedFirst.code, forgedFirst.body)
		}
		if code := sessionAnswers(t, s.base, session); code != http.StatusOK {
			t.Errorf("alice's session after the 503: %d, want 200 (not ended)", code)
		}
		if a := post(forge(kids[0], fetched.Add(-time.Minute))); a.code != http.StatusBadRequest {
			t.Errorf("a forged logout token under the kid, issued a minute before the keys were fetched: %d %s, want 400", a.code, a.body)
		}

		sendAgainUntilTaken(t, post, token, first)
		if code := sessionAnswers(t, s.base, session); code != http.StatusUnauthorized {
			t.Errorf("alice's session after the logout token was taken: %d, want 401", code)
		}
		// Sent again, it is refused for good once a fetch of the keys
		// ended more than the floor after it was issued (iat allows for
		// the IdP's clock as much).
		sendUntilRefused(t, "the forged logout token sent again", func() logoutAnswer { return post(forged) })

		// A login after the rotation: its ID token is signed with the new
		// key under the kid whose old key the login's keys held.
		_, again := aliceSignsIn(t, s.base)
		if code := sessionAnswers(t, s.base, again); code != http.StatusOK {
			t.Errorf("a session from a login after the rotation: %d, want 200", code)
		}
		return
	}
}

// fetchBody is the body of a GET of u, which must answer 200.
func fetchBody(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", u, resp.StatusCode, err)
	}
	return string(b)
}

// logoutTokenForger signs logout tokens for alice at issuer with a key of
// its own, under the kid and iat asked for.
func logoutTokenForger(t *testing.T, issuer string) func(kid string, issued time.Time) string {
	t.Helper()
	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return func(kid string, issued time.Time) string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: forger},
			(&jose.SignerOptions{}).WithType("logout+jwt").WithHeader("kid", kid))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := jwt.Signed(signer).Claims(map[string]any{"iss": issuer, "aud": "portcullis", "iat": issued.Unix(),
			"jti": rand.Text(), "sub": oidcserver.Alice, "events": map[string]any{idp.BackchannelLogoutEvent: map[string]any{}}}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
}

// aliceSignsIn logs alice in through the proxy at base, entry company, and
// returns her browser and its session cookies.
func aliceSignsIn(t *testing.T, base string) (*http.Client, []*http.Cookie) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: time.Minute}
	resp := oidcserver.Login(t, browser, base+"/.portcullis/login/company?rd=/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	return browser, jar.Cookies(resp.Request.URL)
}

// haveKeysFetched posts forged logout tokens naming a kid never published
// until one is refused as invalid: its check fetched the IdP's keys, which
// lack that kid. Within the floor of an earlier fetch each is to be sent
// again after its Retry-After.
func haveKeysFetched(t *testing.T, post func(string) logoutAnswer, forge func(string, time.Time) string) {
	t.Helper()
	sendUntilRefused(t, "a forged logout token", func() logoutAnswer { return post(forge("never-published", time.Now())) })
}

// sendUntilRefused sends what until it is refused as invalid (400),
// sleeping each 503's Retry-After within the 10 s floor; any other answer
// fails t.
func sendUntilRefused(t *testing.T, what string, send func() logoutAnswer) {
	t.Helper()
	waitFor(t, what+" to be refused", func() bool {
		a := send()
		switch {
		case a.code == http.StatusBadRequest:
			return true
		case a.code == http.StatusServiceUnavailable && a.retryAfter >= 1 && a.retryAfter <= 10:
			time.Sleep(time.Duration(a.retryAfter) * time.Second)
			return false
		}
		t.Fatalf("%s: %d (Retry-After %d) %s", what, a.code, a.retryAfter, a.body)
		return false
	})
}

// mustBeSentAgain fails t unless a, the answer to what, is 503
// temporarily_unavailable with a Retry-After within the 10 s floor.
func mustBeSentAgain(t *testing.T, what string, a logoutAnswer) {
	t.Helper()
	if a.code != http.StatusServiceUnavailable || a.retryAfter < 1 || a.retryAfter > 10 ||
		!strings.Contains(a.body, "temporarily_unavailable") {
		t.Fatalf("%s: %d (Retry-After %d) %s; want 503 temporarily_unavailable with Retry-After 1 to 10", what, a.code, a.retryAfter, a.body)
	}
}

// sendAgainUntilTaken posts token again, after each answer's Retry-After
// (first's to begin with), as an IdP retries, until it is taken (200);
// any answer but 200 or 503 fails t.
func sendAgainUntilTaken(t *testing.T, post func(string) logoutAnswer, token string, first logoutAnswer) {
	t.Helper()
	a := first
	waitFor(t, "the logout token sent again to be taken", func() bool {
		time.Sleep(time.Duration(a.retryAfter) * time.Second)
		a = post(token)
		if a.code != http.StatusOK && a.code != http.StatusServiceUnavailable {
			t.Fatalf("the logout token sent again: %d %s", a.code, a.body)
		}
		return a.code == http.StatusOK
	})
}
