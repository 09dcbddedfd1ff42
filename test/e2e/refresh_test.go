package e2e

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy"
	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/process"
)

// refreshConfig is one OIDC IdP that issues rotating refresh tokens, with
// sessions confirmed at it every second and single sign-out on.
const refreshConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [SESSION_KEY]
  refresh: 1s
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups, offline_access]
      single_sign_out: true
role_mapping:
  roles: [admin, user]
  default: user
  rules:
    - role: admin
      when: '"cvat-admins" in groups'
attribute_pass:
  headers:
    X-Email: email
`

// refreshStack is portcullis with refreshConfig in front of the echo
// upstream and a real oidc-provider.
func refreshStack(t *testing.T) (*stack, *oidcserver.Server) {
	t.Helper()
	s := listen(t)
	idp := oidcserver.Start(t, oidcserver.Options{
		RedirectURIs:           []string{s.URL + "/.portcullis/oidc/company/callback"},
		PostLogoutRedirectURIs: []string{s.URL + "/.portcullis/logout/done"},
	})
	s.start(t, strings.Replace(refreshConfig, "ISSUER", idp.Issuer, 1))
	return s, idp
}

// refreshes reads session_refreshes_total{idp="company",result} from the
// admin listener's metrics.
func refreshes(t *testing.T, s *stack, result string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Handler.Admin().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	want := `portcullis_session_refreshes_total{idp="company",result="` + result + `"} `
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return 0
}

// eventually waits until cond holds, for up to 90 s: past the proxy's bound
// on a refresh at the IdP (a minute), a failure's bound, not a measure. A
// request waits 3 s for its session's refresh: an IdP slower than that (a
// loaded machine) answers after it, and what the refresh did shows in the
// metrics then, and to the session's following requests, as to a
// browser's next page.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(90 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 90 s", what)
		}
	}
}

// cookieHeader is the Cookie header the browser sends to the proxy now.
func cookieHeader(t *testing.T, b *http.Client, s *stack) string {
	t.Helper()
	var parts []string
	for _, c := range b.Jar.Cookies(mustURL(t, s.URL)) {
		if strings.HasPrefix(c.Name, "portcullis") {
			parts = append(parts, c.Name+"="+c.Value)
		}
	}
	return strings.Join(parts, "; ")
}

// apiGet is a script's request with the given cookies (no jar, no redirects).
func apiGet(t *testing.T, s *stack, cookie string) (status int, _ string) {
	t.Helper()
	req, _ := http.NewRequest("GET", s.URL+"/data", nil)
	req.Header.Set("Cookie", cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	readBody(t, resp)
	return resp.StatusCode, ""
}

func TestRefreshIsSpentOnceUnderConcurrentRequests(t *testing.T) {
	s, idp := refreshStack(t)
	b := browser(t)
	readBody(t, oidcserver.Login(t, b, s.URL+"/", oidcserver.Alice, oidcserver.AlicePassword))
	oldCookie := cookieHeader(t, b, s)
	if oldCookie == "" {
		t.Fatal("no session cookie after login")
	}
	// The token endpoint's requests, counted by the IdP: so far the code
	// exchange, and a refresh when the login crossed a second (sessions
	// keep their refresh times to the second: the login's last request
	// may already be due).
	loginCalls, loginRefreshes := idp.TokenRequests(t), refreshes(t, s, "success")

	time.Sleep(1100 * time.Millisecond) // past session.refresh
	const concurrent = 40
	var wg sync.WaitGroup
	var ok atomic.Int64
	start := make(chan struct{})
	for range concurrent {
		wg.Go(func() {
			<-start
			// Every request carries the cookie from before the refresh, as
			// a page's parallel requests do.
			if status, _ := apiGet(t, s, oldCookie); status == http.StatusOK {
				ok.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	eventually(t, "the refresh to succeed", func() bool { return refreshes(t, s, "success")-loginRefreshes >= 1 })

	idpRefreshes := idp.TokenRequests(t) - loginCalls
	t.Logf("%d concurrent requests after the refresh interval: %d succeeded, %d refresh(es) at the IdP", concurrent, ok.Load(), idpRefreshes)
	if ok.Load() != concurrent {
		t.Errorf("%d of %d requests succeeded, want all", ok.Load(), concurrent)
	}
	if idpRefreshes != 1 {
		t.Errorf("the IdP's token endpoint was called %d times, want exactly 1 refresh", idpRefreshes)
	}
	if n, refused := refreshes(t, s, "success")-loginRefreshes, refreshes(t, s, "refused"); n != 1 || refused != 0 {
		t.Errorf("session_refreshes_total success=%d refused=%d, want 1 and 0", n, refused)
	}

	// The old cookie still works for a moment (requests already on their
	// way), and the browser's new cookie carries the rotated token.
	if status, _ := apiGet(t, s, oldCookie); status != http.StatusOK {
		t.Errorf("old cookie right after the refresh: status %d, want 200", status)
	}
	resp, err := b.Get(s.URL + "/data")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if got, _ := s.Upstream.Last(); resp.StatusCode != 200 || got.Header.Get("X-Email") != "alice@example.com" {
		t.Errorf("browser after the refresh: status %d, X-Email %q", resp.StatusCode, got.Header.Get("X-Email"))
	}
	if n := idp.TokenRequests(t) - loginCalls; n != 1 {
		t.Errorf("token endpoint calls after the burst = %d, want still 1", n)
	}
}

func TestRefreshOutcomes(t *testing.T) {
	s, idp := refreshStack(t)
	b := browser(t)
	readBody(t, oidcserver.Login(t, b, s.URL+"/", oidcserver.Bob, oidcserver.BobPassword))
	cookie := cookieHeader(t, b, s)

	// An IdP that cannot be reached keeps the session for now.
	idp.Stop()
	time.Sleep(1100 * time.Millisecond)
	if status, email := apiGet(t, s, cookie); status != http.StatusOK {
		t.Fatalf("IdP down: status %d (%q), want the session kept", status, email)
	}
	eventually(t, "the refresh to fail", func() bool { return refreshes(t, s, "error") >= 1 })
	if n := refreshes(t, s, "error"); n != 1 {
		t.Errorf("session_refreshes_total{result=error} = %d, want 1", n)
	}

	// Restarted, the IdP has forgotten every token: the refresh is refused
	// and the session ends.
	idp.Restart()
	time.Sleep(1100 * time.Millisecond) // the failed attempt is retried after session.refresh
	// The request that starts the refresh, or one that follows it, finds
	// the session ended; until then the session is kept.
	eventually(t, "the refused refresh to end the session", func() bool {
		status, _ := apiGet(t, s, cookie)
		if status != http.StatusOK && status != http.StatusUnauthorized {
			t.Fatalf("refused refresh: status %d, want 401 (session ended)", status)
		}
		return status == http.StatusUnauthorized
	})
	if n := refreshes(t, s, "refused"); n != 1 {
		t.Errorf("session_refreshes_total{result=refused} = %d, want 1", n)
	}
	if status, _ := apiGet(t, s, cookie); status != http.StatusUnauthorized {
		t.Errorf("the ended session's cookie again: status %d, want 401", status)
	}
}

// A session the IdP ends at a refresh, a moment after its login, sends the
// browser to sign in again: that is no login loop, and the sign-in goes to
// the IdP rather than to the page that says the session cookie was lost.
func TestSessionEndedAtARefreshIsNoLoginLoop(t *testing.T) {
	s, idp := refreshStack(t)
	b := browser(t)
	readBody(t, oidcserver.Login(t, b, s.URL+"/", oidcserver.Bob, oidcserver.BobPassword))

	idp.Restart() // forgets every token: the next refresh is refused
	time.Sleep(1100 * time.Millisecond)
	// The request that starts the refresh, or one that follows it, meets
	// the session's end; until then the session is kept.
	var via []string
	var resp *http.Response
	var body string
	eventually(t, "a request to meet the session's end", func() bool {
		via, resp = chain(t, b, s.URL+"/data", func(u *url.URL) bool { return !strings.HasPrefix(u.String(), s.URL) })
		body = readBody(t, resp)
		return resp.StatusCode != http.StatusOK
	})
	if n := refreshes(t, s, "refused"); n != 1 {
		t.Fatalf("session_refreshes_total{result=refused} = %d, want 1", n)
	}
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound ||
		!strings.HasPrefix(loc, idp.Issuer) {
		t.Errorf("after the refused refresh the browser went through %q and got %d (Location %q), want the way to the IdP\n%s",
			via, resp.StatusCode, loc, body)
	}
}

func TestSingleSignOutEndsTheIdPSession(t *testing.T) {
	s, idp := refreshStack(t)
	b := browser(t)
	readBody(t, oidcserver.Login(t, b, s.URL+"/", oidcserver.Alice, oidcserver.AlicePassword))

	// Logout goes through the IdP's end-session confirmation, back to the
	// proxy and on to rd.
	var visited []string
	watching := *b
	watching.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		visited = append(visited, r.URL.String())
		return nil
	}
	resp := oidcserver.Logout(t, &watching, s.URL+"/.portcullis/logout?rd=/bye")
	body := readBody(t, resp)
	trail := strings.Join(visited, "\n")
	for _, want := range []string{idp.Issuer + "/session/end", s.URL + "/.portcullis/logout/done?state=", s.URL + "/bye"} {
		if !strings.Contains(trail, want) {
			t.Errorf("the logout did not pass %s; redirects:\n%s", want, trail)
		}
	}
	// /bye needs a session, and the IdP no longer has one: the browser ends
	// on the IdP's login form, not silently logged in again.
	if !strings.Contains(body, `name="password"`) {
		t.Fatalf("after single sign-out the browser is at %s without the IdP's login form:\n%s", resp.Request.URL, body)
	}
	if status, _ := apiGet(t, s, cookieHeader(t, b, s)); status != http.StatusUnauthorized {
		t.Errorf("after single sign-out: status %d, want 401", status)
	}
}

// TestReloadChangingRefreshKeepsRefreshesInFlight changes session.refresh
// in a reload right after a refresh: a request still carrying the cookie
// from before it (a page's parallel requests) must get the refreshed
// session, not spend the rotated-away refresh token again, which the IdP
// refuses as reuse and which ends the session.
func TestReloadChangingRefreshKeepsRefreshesInFlight(t *testing.T) {
	listenAddr := fmt.Sprintf("127.0.0.1:%d", process.FreePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", process.FreePort(t))
	public := "http://" + listenAddr
	up := echo.New()
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)
	idp := oidcserver.Start(t, oidcserver.Options{
		RedirectURIs:           []string{public + "/.portcullis/oidc/company/callback"},
		PostLogoutRedirectURIs: []string{public + "/.portcullis/logout/done"},
	})
	configYAML := func(refresh string) []byte {
		y := strings.NewReplacer("PUBLIC_URL", public, "UPSTREAM_URL", upSrv.URL, "SESSION_KEY", sessionKey,
			"ISSUER", idp.Issuer, "refresh: 1s", "refresh: "+refresh).Replace(refreshConfig)
		return []byte(strings.Replace(y, "server:\n", "server:\n  listen: "+listenAddr+"\n  admin_listen: "+adminAddr+"\n", 1))
	}
	path := filepath.Join(t.TempDir(), "portcullis.yaml")
	if err := os.WriteFile(path, configYAML("2s"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := proxy.ParseConfig(configYAML("2s"), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan os.Signal, 1)
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	go func() {
		done <- proxy.Run(ctx, cfg, proxy.ServeOptions{Log: log, ConfigPath: path, Reload: reload, PollInterval: -1, Grace: time.Second})
	}()
	t.Cleanup(func() { cancel(); <-done })
	s := &stack{URL: public}
	metric := func(series string) float64 {
		resp, err := http.Get("http://" + adminAddr + "/metrics")
		if err != nil {
			return -1
		}
		body := readBody(t, resp)
		for line := range strings.SplitSeq(body, "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				n, _ := strconv.ParseFloat(v, 64)
				return n
			}
		}
		return 0
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err == nil && readBody(t, resp) != "" && resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("proxy not ready")
		}
		time.Sleep(50 * time.Millisecond)
	}

	b := browser(t)
	readBody(t, oidcserver.Login(t, b, public+"/", oidcserver.Alice, oidcserver.AlicePassword))
	oldCookie := cookieHeader(t, b, s)
	if oldCookie == "" {
		t.Fatal("no session cookie after login")
	}
	// A refresh when the login's last request came more than a second
	// after its callback (refresh times are kept to the second): the
	// session the test starts from is then the refreshed one.
	loginRefreshes := metric(`portcullis_session_refreshes_total{idp="company",result="success"}`)
	time.Sleep(2100 * time.Millisecond) // past session.refresh
	if status, _ := apiGet(t, s, oldCookie); status != http.StatusOK {
		t.Fatalf("request that refreshes: status %d, want 200", status)
	}
	// The refresh is over, as the reload comes.
	eventually(t, "the refresh to succeed", func() bool {
		return metric(`portcullis_session_refreshes_total{idp="company",result="success"}`) > loginRefreshes
	})

	// The interval shortened: the old cookie is due again under it.
	if err := os.WriteFile(path, configYAML("1s"), 0o600); err != nil {
		t.Fatal(err)
	}
	reload <- syscall.SIGHUP
	for metric(`portcullis_config_reloads_total{result="success"}`) != 1 {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatal("no reload")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if status, _ := apiGet(t, s, oldCookie); status != http.StatusOK {
		t.Errorf("the cookie from before the refresh, after a reload that changed session.refresh: status %d, want 200", status)
	}
	// Nor is the browser, whose cookie has the new token, signed out.
	resp, err := noRedirect(b).Get(public + "/data")
	if err != nil {
		t.Fatal(err)
	}
	if readBody(t, resp); resp.StatusCode != http.StatusOK {
		t.Errorf("the browser after the reload: status %d, want 200 (its session kept)", resp.StatusCode)
	}
	if n := metric(`portcullis_session_refreshes_total{idp="company",result="refused"}`); n != 0 {
		t.Errorf("session_refreshes_total{result=refused} = %v, want 0: the rotated-away token was spent again", n)
	}
	if n := metric(`portcullis_session_refreshes_total{idp="company",result="success"}`) - loginRefreshes; n != 1 {
		t.Errorf("session_refreshes_total{result=success} = %v, want 1", n)
	}
}
