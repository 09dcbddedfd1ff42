package proxy

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// A refresh is no new sign-in: what the login's ID token said of how the
// user signed in (amr, acr, auth_time) still holds after it, for the
// rules and headers that read it, whether the IdP answers the refresh
// with an ID token that says so again (oidc-provider) or with none, its
// user read from userinfo, which never says it (Glewlwyd 2.7).
func TestRefreshKeepsHowTheUserSignedIn(t *testing.T) {
	for _, tc := range []struct {
		name           string
		withoutIDToken bool
	}{
		{"the refresh answers with an ID token", false},
		{"the refresh answers without an ID token", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			public := "http://" + ln.Addr().String()
			up := httptest.NewServer(echo.New())
			t.Cleanup(up.Close)
			callback := public + "/.portcullis/oidc/company/callback"
			op := oidcserver.Start(t, oidcserver.Options{AMR: []string{"pwd", "otp"}, ACR: "urn:test:loa:2",
				RedirectURIs: []string{callback},
				Clients: []oidcserver.Client{{ID: "app", RedirectURIs: []string{callback}, RefreshTokens: "always",
					RefreshWithoutIDToken: tc.withoutIDToken}}})
			via := countRefreshes(t, op)
			y := strings.NewReplacer("PUBLIC_URL", public, "UPSTREAM_URL", up.URL, "ISSUER", op.Issuer).Replace(refreshRedisConfig)
			y = strings.Replace(y, "  store: redis\n  redis: {url: REDIS_URL}\n", "", 1)
			y = strings.Replace(y, "      client_id: portcullis\n", "      client_id: app\n", 1)
			y += `role_mapping:
  roles: [admin, user]
  default: user
  rules:
    - role: admin
      when: '"otp" in claims.amr && claims.acr == "urn:test:loa:2"'
attribute_pass:
  headers:
    X-Amr: 'join(claims.amr ?? [], " ")'
    X-Role: 'join(roles, ",")'
`
			h := newTestHandlerVia(t, y, via)
			h.refresher.wait = refreshTimeout
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
			beforeLogin := time.Now()
			resp := oidcserver.Login(t, b, public+"/.portcullis/login/company?rd=/", oidcserver.Alice, oidcserver.AlicePassword)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("login: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
			}
			// The session's times are the store's clock's, the real one at
			// the callback, kept to the second: the proxy's clock stands
			// before it, so that the first requests find no refresh due
			// however long the login and its redirect took (at the real
			// time now, one that came late in a second was already due).
			at.Store(beforeLogin.UnixNano())
			upstream := func() (amr, role string, authTime any) {
				t.Helper()
				req, _ := http.NewRequest("GET", public+"/data", nil)
				req.Header.Set("Accept", "application/json")
				resp, err := b.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var seen echo.Request
				err = json.NewDecoder(resp.Body).Decode(&seen)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || err != nil {
					t.Fatalf("GET /data: %d, %v", resp.StatusCode, err)
				}
				req, _ = http.NewRequest("GET", public+"/.portcullis/userinfo", nil)
				resp, err = b.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var info struct {
					Claims map[string]any `json:"claims"`
				}
				err = json.NewDecoder(resp.Body).Decode(&info)
				resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				return seen.Header.Get("X-Amr"), seen.Header.Get("X-Role"), info.Claims["auth_time"]
			}

			amr, role, authTime := upstream()
			if amr != "pwd otp" || role != "admin" || authTime == nil {
				t.Fatalf("after the login: X-Amr %q, X-Role %q, auth_time %v; want pwd otp, admin and the login's time", amr, role, authTime)
			}
			at.Store(time.Now().Add(time.Second).UnixNano()) // past session.refresh from the login, whenever it was
			gotAMR, gotRole, gotAuthTime := upstream()
			if via.refreshes.Load() != 1 {
				t.Fatalf("%d refreshes, want 1", via.refreshes.Load())
			}
			if gotAMR != amr || gotRole != role || !slices.Equal([]any{gotAuthTime}, []any{authTime}) {
				t.Errorf("after the refresh: X-Amr %q, X-Role %q, auth_time %v; want %q, %q, %v as at the login",
					gotAMR, gotRole, gotAuthTime, amr, role, authTime)
			}
		})
	}
}
