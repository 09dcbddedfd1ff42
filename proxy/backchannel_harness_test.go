package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"
)

// logoutCatcher is a back-channel logout URI to register at the test IdP
// (oidcserver.Options.BackchannelLogoutURI) that keeps the first logout
// token the IdP sends it, for the test to post to the proxy when it says.
func logoutCatcher(t *testing.T) (tokens <-chan string, uri string) {
	t.Helper()
	kept := make(chan string, 1)
	catcher := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		select {
		case kept <- r.PostForm.Get("logout_token"):
		default:
		}
	}))
	t.Cleanup(catcher.Close)
	return kept, catcher.URL
}

// logoutAnswer is the proxy's answer to a logout token posted to its
// back-channel logout endpoint; retryAfter is its Retry-After in seconds,
// 0 without one.
type logoutAnswer struct {
	code       int
	retryAfter int
	body       string
}

// postLogoutToken posts token to the back-channel logout endpoint of
// entry id of the proxy at base, as the IdP does.
func postLogoutToken(t *testing.T, base, id, token string) logoutAnswer {
	t.Helper()
	resp, err := (&http.Client{Timeout: time.Minute}).PostForm(base+"/.portcullis/oidc/"+id+"/backchannel-logout", url.Values{"logout_token": {token}})
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	a := logoutAnswer{code: resp.StatusCode, body: string(body)}
	if v := resp.Header.Get("Retry-After"); v != "" {
		if a.retryAfter, err = strconv.Atoi(v); err != nil {
			t.Fatalf("Retry-After %q: %v", v, err)
		}
	}
	return a
}

// sessionAnswers is the status the proxy at base answers an API request
// for /tasks with the session's cookies: 200 while it is signed in, 401
// once it has ended.
func sessionAnswers(t *testing.T, base string, session []*http.Cookie) int {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/tasks", nil)
	req.Header.Set("Accept", "application/json")
	for _, c := range session {
		req.AddCookie(c)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
