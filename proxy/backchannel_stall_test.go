package proxy

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// A logout token posted while its IdP stalls (oidc-provider paused), whose
// keys the proxy has yet to fetch, is answered within the bound of the
// IdP's calls as a 503 to send again (the token may be good: its signature
// could not be checked), not as a 400 saying it is not valid; many posted
// at once make one fetch of the keys. The same token posted again once the
// IdP answers ends the user's sessions.
func TestBackchannelLogoutWhileTheIdPStalls(t *testing.T) {
	keyFetches := &countingTransport{next: &http.Transport{ResponseHeaderTimeout: 2 * time.Second}, path: "/jwks"}
	s, op, tokens := startBackchannelStack(t, keyFetches)

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: time.Minute}
	resp := oidcserver.Login(t, browser, s.base+"/.portcullis/login/company?rd=/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	session := jar.Cookies(resp.Request.URL)
	// Alice signs out at the IdP: its logout token for her session goes
	// to capture.
	token := signsOutAtIdP(t, op, browser, tokens)
	signedIn := func() int { return sessionAnswers(t, s.base, session) }
	if code := signedIn(); code != http.StatusOK {
		t.Fatalf("alice's first session before the logout token is posted: %d", code)
	}
	type answer struct {
		code       int
		retryAfter string
		body       string
		took       time.Duration
	}
	post := func() answer {
		start := time.Now()
		resp, err := (&http.Client{Timeout: time.Minute}).PostForm(s.base+"/.portcullis/oidc/company/backchannel-logout", url.Values{"logout_token": {token}})
		if err != nil {
			t.Errorf("post: %v", err)
			return answer{}
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return answer{resp.StatusCode, resp.Header.Get("Retry-After"), string(body), time.Since(start)}
	}
	unavailable := func(a answer) bool {
		return a.code == http.StatusServiceUnavailable && a.retryAfter == retryAfter && strings.Contains(a.body, "temporarily_unavailable")
	}

	op.Pause()
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			op.Resume()
		}
	})
	before, fetchesBefore := runtime.NumGoroutine(), keyFetches.n.Load()
	const posts = 30
	answers := make(chan answer, posts)
	for range posts {
		go func() { answers <- post() }()
	}
	peak := 0
	var longest time.Duration
	for got := 0; got < posts; {
		select {
		case a := <-answers:
			got++
			longest = max(longest, a.took)
			if !unavailable(a) {
				t.Errorf("a logout token posted while the IdP stalls: %d (Retry-After %q) %s, want 503 temporarily_unavailable with Retry-After %s",
					a.code, a.retryAfter, a.body, retryAfter)
			}
		case <-time.After(20 * time.Millisecond):
			peak = max(peak, runtime.NumGoroutine())
		}
	}
	t.Logf("%d posts while the IdP stalls answered, the longest in %v; goroutines %d before, at most %d while they waited (the test's clients' included)",
		posts, longest.Round(time.Millisecond), before, peak)
	if n := keyFetches.n.Load() - fetchesBefore; n != 1 {
		t.Errorf("%d fetches of the IdP's keys for %d logout tokens posted at once, want 1", n, posts)
	}
	if a := post(); !unavailable(a) {
		t.Errorf("posted again before the IdP resumed: %d %s, want 503", a.code, a.body)
	}
	if lines := s.logs.find(t, map[string]any{"msg": "back-channel logout: the token could not be checked; sessions not ended"}); len(lines) != posts+1 {
		t.Errorf("%d log lines saying the token could not be checked, want %d", len(lines), posts+1)
	}
	if code := signedIn(); code != http.StatusOK {
		t.Errorf("alice's session before a logout token was checked: %d, want 200", code)
	}

	// The IdP's retry of the token, once it answers again (and the floor
	// on fetching its keys, jwksRefetchEvery, has passed), ends it.
	op.Resume()
	resumed = true
	var last answer
	waitFor(t, "a logout token posted again to be taken", func() bool {
		last = post()
		if last.code == http.StatusOK {
			return true
		}
		if !unavailable(last) {
			t.Fatalf("the logout token posted again after the IdP resumed: %d %s", last.code, last.body)
		}
		time.Sleep(250 * time.Millisecond)
		return false
	})
	if code := signedIn(); code != http.StatusUnauthorized {
		t.Errorf("alice's session after the logout token was taken: %d, want 401", code)
	}
}

// countingTransport counts the requests for path that pass through it.
type countingTransport struct {
	next http.RoundTripper
	path string
	n    atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == c.path {
		c.n.Add(1)
	}
	return c.next.RoundTrip(r)
}
