package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
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

// signsOutAtIdP signs browser out at op's end-session endpoint and returns
// the logout token op then sends to tokens (logoutCatcher's).
func signsOutAtIdP(t *testing.T, op *oidcserver.Server, browser *http.Client, tokens <-chan string) string {
	t.Helper()
	oidcserver.Logout(t, browser, op.Issuer+"/session/end").Body.Close()
	select {
	case token := <-tokens:
		return token
	case <-time.After(30 * time.Second):
		t.Fatal("the IdP sent no logout token")
		return ""
	}
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

// startBackchannelStack starts, ready, the proxy of stalledOIDCConfig (its
// entry company, at oidc-provider, its IdP calls through idpTransport when
// not nil) in front of an echo upstream, and the IdP, whose back-channel
// logout tokens the test is given (tokens) and posts to the proxy itself.
func startBackchannelStack(t *testing.T, idpTransport http.RoundTripper) (*stallReloadStack, *oidcserver.Server, <-chan string) {
	t.Helper()
	up := httptest.NewServer(echo.New())
	t.Cleanup(up.Close)
	tokens, catcher := logoutCatcher(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	op := oidcserver.Start(t, oidcserver.Options{
		RedirectURIs:         []string{"http://" + ln.Addr().String() + "/.portcullis/oidc/company/callback"},
		BackchannelLogoutURI: catcher,
	})
	y := strings.NewReplacer("UPSTREAM_URL", up.URL, "ISSUER", op.Issuer, "NAME", "", "SCOPES", "openid, email, profile, groups",
		"SECRET", "portcullis-secret", "MORE", "").Replace(stalledOIDCConfig)
	s := startStallReloadStack(t, ln, y, idpTransport)
	waitFor(t, "the proxy to be ready", func() bool { return len(s.live.cur.Load().Ready()) == 0 })
	return s, op, tokens
}
