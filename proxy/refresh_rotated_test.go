package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// userinfoFailsOnce passes the proxy's calls to the IdP on and, once armed,
// answers the next userinfo request itself with a 503, as an IdP behind a
// load balancer does for a moment: the token endpoint has already rotated
// the refresh token by then. It counts the refreshes sent to the token
// endpoint.
type userinfoFailsOnce struct {
	next      http.RoundTripper
	userinfo  string
	token     string
	armed     atomic.Bool
	refreshes atomic.Int64
	// adds, when set, are claims added to every userinfo answer from
	// then on, as an IdP that now says more of the user.
	adds atomic.Pointer[map[string]any]
	// stall, when set, holds every userinfo request until its caller
	// gives up on it, as an IdP that stalls just after its token endpoint
	// answered; stalled counts the requests held.
	stall   atomic.Bool
	stalled atomic.Int64
}

func (u *userinfoFailsOnce) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && r.URL.String() == u.userinfo && u.stall.Load() {
		u.stalled.Add(1)
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	if r.Method == http.MethodGet && r.URL.String() == u.userinfo && u.armed.CompareAndSwap(true, false) {
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable",
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Request: r,
			Header: http.Header{"Content-Type": {"text/plain"}}, Body: io.NopCloser(strings.NewReader("busy"))}, nil
	}
	if adds := u.adds.Load(); adds != nil && r.Method == http.MethodGet && r.URL.String() == u.userinfo {
		resp, err := u.next.RoundTrip(r)
		if err != nil {
			return nil, err
		}
		claims := map[string]any{}
		err = json.NewDecoder(resp.Body).Decode(&claims)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		maps.Copy(claims, *adds)
		body, _ := json.Marshal(claims)
		resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		resp.Header.Del("Content-Length")
		return resp, nil
	}
	if r.Method == http.MethodPost && r.URL.String() == u.token && r.Body != nil {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		if strings.Contains(string(body), "grant_type=refresh_token") {
			u.refreshes.Add(1)
		}
	}
	return u.next.RoundTrip(r)
}

// countRefreshes is a way to op that counts the refreshes sent to its
// token endpoint, as they leave (an IdP that stalls has them all the same).
func countRefreshes(t *testing.T, op *oidcserver.Server) *userinfoFailsOnce {
	t.Helper()
	var meta struct {
		Token    string `json:"token_endpoint"`
		Userinfo string `json:"userinfo_endpoint"`
	}
	resp, err := http.Get(op.Issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if err != nil || meta.Userinfo == "" || meta.Token == "" {
		t.Fatalf("discovery: %+v, %v", meta, err)
	}
	return &userinfoFailsOnce{next: http.DefaultTransport, userinfo: meta.Userinfo, token: meta.Token}
}

// When the IdP has rotated the refresh token and what follows in the
// refresh fails (userinfo answering 503 for a moment), the session keeps
// the rotated refresh token, not the one just spent: spent again at the
// next refresh, an IdP that detects reuse (oidc-provider, ORY Hydra,
// Okta, Auth0) refuses it and revokes the whole grant, which signed the
// user out. With both stores.
func TestRefreshKeepsTheRotatedTokenWhenUserinfoFails(t *testing.T) {
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store, func(t *testing.T) {
			rs := startRotatedStack(t, store, nil)
			via, at, get := rs.via, rs.at, rs.get

			// The IdP rotates the refresh token, then its userinfo fails:
			// the user carries on as they were.
			via.armed.Store(true)
			at.Add(int64(2 * time.Second))
			if code := get(); code != http.StatusOK {
				t.Fatalf("the refresh whose userinfo failed: %d, want 200 (the session kept)", code)
			}
			if via.armed.Load() || via.refreshes.Load() != 1 {
				t.Fatalf("userinfo failure not reached (armed %v) or %d refreshes, want 1", via.armed.Load(), via.refreshes.Load())
			}
			// Past the minute a refresh's outcome is remembered: the next
			// refresh spends the token the IdP rotated to, and so does the
			// one after it.
			for i := 2; i <= 3; i++ {
				at.Add(int64(2 * time.Minute))
				// Redis remembers an outcome for a minute, or a second
				// when the IdP could not be asked, of its own clock; the
				// proxy's moves on with it.
				for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
					at.Add(int64(100 * time.Millisecond))
					if code := get(); code != http.StatusOK {
						t.Fatalf("refresh %d after the one whose userinfo failed: %d, want 200: the spent refresh token was sent again, and the IdP revoked the grant", i, code)
					}
					if via.refreshes.Load() >= int64(i) {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("no refresh %d at the IdP in 20 s", i)
					}
				}
				if n := via.refreshes.Load(); n != int64(i) {
					t.Fatalf("%d refreshes at the IdP, want %d", n, i)
				}
			}
		})
	}
}

// A refresh whose tokens were renewed but whose user could not be read
// (userinfo answering 503) keeps the profile it had: the user is read
// again as soon as a refresh the IdP could not answer would be retried
// (session.refresh, at most a minute), not a whole session.refresh later,
// so that a group taken away at the IdP meanwhile counts as soon as it
// would have before. With both stores.
func TestRefreshReadsTheUserAgainSoonAfterUserinfoFailed(t *testing.T) {
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store, func(t *testing.T) {
			rs := startRotatedStack(t, store, func(y string) string {
				return strings.Replace(y, "  refresh: 1s\n", "  refresh: 1h\n", 1)
			})
			via, at, get := rs.via, rs.at, rs.get
			via.armed.Store(true)
			at.Add(int64(time.Hour + time.Second))
			if code := get(); code != http.StatusOK || via.armed.Load() || via.refreshes.Load() != 1 {
				t.Fatalf("the refresh whose userinfo failed: %d, armed %v, %d refreshes; want 200 after 1", code, via.armed.Load(), via.refreshes.Load())
			}
			// Two minutes on: past the minute a failed refresh waits.
			at.Add(int64(2 * time.Minute))
			for deadline := time.Now().Add(20 * time.Second); via.refreshes.Load() < 2; time.Sleep(50 * time.Millisecond) {
				if code := get(); code != http.StatusOK {
					t.Fatalf("the refresh after the one whose userinfo failed: %d, want 200", code)
				}
				if via.refreshes.Load() < 2 && time.Now().After(deadline) {
					t.Fatalf("the user was not read again 2 minutes after userinfo failed (%d refreshes): the profile waits for session.refresh, an hour", via.refreshes.Load())
				}
				at.Add(int64(100 * time.Millisecond))
			}
			// Read, the user waits for session.refresh again.
			at.Add(int64(2 * time.Minute))
			if code := get(); code != http.StatusOK || via.refreshes.Load() != 2 {
				t.Fatalf("2 minutes after a refresh that read the user: %d, %d refreshes; want 200 and no refresh before the hour", code, via.refreshes.Load())
			}
		})
	}
}

// An IdP whose answer to a refresh is refused as a login's would be, as
// Entra ID's group overage is (preset azure: hasgroups, the groups left
// out), ends the session, rather than leaving the user the groups of
// before until the session ends. With both stores.
func TestRefreshWhoseClaimsALoginRefusesEndsTheSession(t *testing.T) {
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store, func(t *testing.T) {
			rs := startRotatedStack(t, store, func(y string) string {
				// server_url, given, wins over the preset's Microsoft URL.
				y = strings.Replace(y, "      client_id: portcullis\n", "      client_id: entra\n", 1)
				return strings.Replace(y, "      protocol: OIDC\n", "      preset: azure\n      tenant: 72f988bf-86f1-41af-91ab-2d7cd011db47\n", 1)
			})
			via, at, get := rs.via, rs.at, rs.get
			at.Add(int64(2 * time.Second))
			if code := get(); code != http.StatusOK || via.refreshes.Load() != 1 {
				t.Fatalf("a refresh without overage: %d, %d refreshes; want 200 after 1", code, via.refreshes.Load())
			}
			via.adds.Store(&map[string]any{"hasgroups": true})
			at.Add(int64(2 * time.Minute))
			if code := get(); code != http.StatusUnauthorized || via.refreshes.Load() != 2 {
				t.Fatalf("the refresh that announced a group overage: %d, %d refreshes; want 401 (the session ended) after 2", code, via.refreshes.Load())
			}
		})
	}
}

// rotatedStack is the proxy in front of the echo upstream, logged in as
// alice at a real oidc-provider that rotates refresh tokens and releases
// email and groups at userinfo alone, so that every refresh reads it.
// The proxy's clock (at) stands still unless the test moves it on.
type rotatedStack struct {
	via *userinfoFailsOnce
	at  *atomic.Int64
	get func() int // GET /data as a script: 200, or 401 without a session
	// getCtx is get with ctx: an error when the client gave up.
	getCtx func(ctx context.Context) (int, error)
	op     *oidcserver.Server
	h      *Handler
	// stored is the session the store holds for the client's cookie.
	stored func() *session.Session
}

// startRotatedStack starts it with store ("cookie" or "redis"); edit, when
// set, changes the config.
func startRotatedStack(t *testing.T, store string, edit func(string) string) *rotatedStack {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	public := "http://" + ln.Addr().String()
	up := httptest.NewServer(echo.New())
	t.Cleanup(up.Close)
	// email and groups only at userinfo: every refresh reads it.
	// entra is a client set up as Entra ID issues refresh tokens: for
	// offline_access without prompt=consent, which preset azure does not
	// send.
	op := oidcserver.Start(t, oidcserver.Options{ConformIDTokenClaims: true,
		RedirectURIs: []string{public + "/.portcullis/oidc/company/callback"},
		Clients:      []oidcserver.Client{{ID: "entra", RedirectURIs: []string{public + "/.portcullis/oidc/company/callback"}, RefreshTokens: "always"}}})
	via := countRefreshes(t, op)

	y := strings.NewReplacer("PUBLIC_URL", public, "UPSTREAM_URL", up.URL, "ISSUER", op.Issuer).Replace(refreshRedisConfig)
	if store == "redis" {
		y = strings.Replace(y, "REDIS_URL", redisserver.Start(t).URL, 1)
	} else {
		y = strings.Replace(y, "  store: redis\n  redis: {url: REDIS_URL}\n", "", 1)
	}
	if edit != nil {
		y = edit(y)
	}
	h := newTestHandlerVia(t, y, via)
	// A request waits for the refresh it finds due as long as the refresh
	// may take (refreshTimeout), not refreshWait: these tests ask what its
	// answer carries, which on a loaded machine must not depend on how
	// soon the IdP answers.
	h.refresher.wait = refreshTimeout
	// The proxy's clock stands still unless the test moves it on,
	// so that no request but those meant to refresh the session.
	at := new(atomic.Int64)
	h.now = func() time.Time { return time.Unix(0, at.Load()) }
	at.Store(time.Now().UnixNano())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	for deadline := time.Now().Add(20 * time.Second); len(h.Ready()) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("proxy not ready: %v", h.Ready())
		}
	}

	jar, _ := cookiejar.New(nil)
	b := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	resp := oidcserver.Login(t, b, public+"/.portcullis/login/company?rd=/", oidcserver.Alice, oidcserver.AlicePassword)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	// The session's times are the store's clock's, the real one.
	at.Store(time.Now().UnixNano())
	getCtx := func(ctx context.Context) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", public+"/data", nil)
		req.Header.Set("Accept", "application/json")
		resp, err := b.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	get := func() int {
		t.Helper()
		code, err := getCtx(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	stored := func() *session.Session {
		t.Helper()
		req, _ := http.NewRequest("GET", public+"/data", nil)
		for _, c := range jar.Cookies(req.URL) {
			req.AddCookie(c)
		}
		s, err := h.sessions.Load(req)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return &rotatedStack{via: via, at: at, get: get, getCtx: getCtx, op: op, h: h, stored: stored}
}
