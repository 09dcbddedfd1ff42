package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// A browser back at /login within two minutes of its login, with a session
// cookie that opens to a session that has ended (signed out, a back-channel
// logout, idle too long), or whose session could have run out since, lost
// its session for no fault of its cookie: it goes to the IdP to sign in
// again, the mark cleared. The loop page is for a cookie that did not come
// back or does not open, and, with Redis, for a session this replica's
// Redis never had.
func TestLoginLoopPageOnlyForACookieThatFailed(t *testing.T) {
	const (
		toIdP     = 0
		missing   = http.StatusBadRequest
		unopened  = http.StatusInternalServerError
		malformed = http.StatusBadRequest
		idleLimit = time.Minute
	)
	if session.EndedKept < loginLoopWindow+loginLoopSkew {
		t.Fatalf("the Redis store remembers an ended session %s, less than a login-loop mark lasts (%s)", session.EndedKept, loginLoopWindow+loginLoopSkew)
	}
	alice := idp.Profile{IdP: "company", Sub: "alice", Email: "alice@example.com", Roles: []string{"user"}}
	saved := func(t *testing.T, st session.Store, s *session.Session) []*http.Cookie {
		t.Helper()
		rec := httptest.NewRecorder()
		if err := st.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
			t.Fatal(err)
		}
		return rec.Result().Cookies()
	}
	signedIn := func(t *testing.T, h *Handler) []*http.Cookie {
		return saved(t, h.sessions, session.New(alice, idp.Tokens{}, h.cookies))
	}
	common := []loopCase{
		{"no session cookie", func(*testing.T, *Handler) []*http.Cookie { return nil }, 10 * time.Second,
			missing, "session_cookie_missing", slog.LevelError},
		// Anyone can make their own browser send these, with a made-up
		// mark: nothing the operator has to look into, unless it keeps
		// coming (something in front that cuts cookies short).
		{"a session cookie that is not one", func(*testing.T, *Handler) []*http.Cookie {
			return []*http.Cookie{{Name: "__Host-portcullis", Value: "bm90IGEgc2Vzc2lvbg"}}
		}, 10 * time.Second, malformed, "session_cookie_malformed", slog.LevelWarn},
		{"a session cookie cut short", func(t *testing.T, h *Handler) []*http.Cookie {
			cookies := signedIn(t, h)
			cookies[0].Value = cookies[0].Value[:len(cookies[0].Value)/2]
			return cookies
		}, 10 * time.Second, malformed, "session_cookie_malformed", slog.LevelWarn},
		{"too many session cookies that are not one", func(*testing.T, *Handler) []*http.Cookie {
			var junk []*http.Cookie
			for i := range 5 {
				junk = append(junk, &http.Cookie{Name: "__Host-portcullis", Value: "junk" + strconv.Itoa(i)})
			}
			return junk
		}, 10 * time.Second, malformed, "session_cookie_malformed", slog.LevelWarn},
		{"signed out here", func(t *testing.T, h *Handler) []*http.Cookie {
			cookies := signedIn(t, h)
			s, err := h.sessions.Load(request("GET", "/", cookies))
			if err != nil || s == nil {
				t.Fatalf("the session does not load: %v", err)
			}
			if err := h.sessions.Delete(httptest.NewRecorder(), request("GET", "/", cookies), s); err != nil {
				t.Fatal(err)
			}
			return cookies
		}, 10 * time.Second, toIdP, "", 0},
		{"ended by a back-channel logout", func(t *testing.T, h *Handler) []*http.Cookie {
			cookies := signedIn(t, h)
			if _, err := h.sessions.(userRevoker).RevokeUser(context.Background(), "company", session.User{Sub: "alice"}, "", time.Now()); err != nil {
				t.Fatal(err)
			}
			return cookies
		}, 10 * time.Second, toIdP, "", 0},
		{"a session of an IdP no longer configured", func(t *testing.T, h *Handler) []*http.Cookie {
			retired := alice
			retired.IdP = "retired"
			return saved(t, h.sessions, session.New(retired, idp.Tokens{}, h.cookies))
		}, 10 * time.Second, toIdP, "", 0},
	}
	for _, store := range []struct {
		name  string
		yaml  string
		cases []loopCase
	}{
		{name: "cookie store", yaml: "", cases: []loopCase{
			{"a session cookie sealed with other keys", func(t *testing.T, h *Handler) []*http.Cookie {
				o := h.cookies
				o.Keys = [][]byte{[]byte(strings.Repeat("k", session.KeySize))}
				other, err := session.NewCookieStore(o)
				if err != nil {
					t.Fatal(err)
				}
				return saved(t, other, session.New(alice, idp.Tokens{}, o))
			}, 10 * time.Second, unopened, "session_cookie_invalid", slog.LevelError},
			{"idle longer than idle_timeout", func(t *testing.T, h *Handler) []*http.Cookie {
				s := session.New(alice, idp.Tokens{}, h.cookies)
				s.LastSeen = s.LastSeen.Add(-2 * idleLimit)
				return saved(t, h.sessions, s)
			}, 10 * time.Second, toIdP, "", 0},
		}},
		{name: "redis store", yaml: "  store: redis\n  redis: {url: REDIS_URL}\n", cases: []loopCase{
			// The session cookie opens, and its session is not in Redis:
			// another replica's Redis has it, or its TTL ran out.
			{"a session in another Redis", inAnotherRedis(alice), 10 * time.Second, unopened, "session_cookie_invalid", slog.LevelError},
			{"a session gone from Redis after idle_timeout", inAnotherRedis(alice), idleLimit + 30*time.Second, toIdP, "", 0},
		}},
	} {
		for _, tc := range append(common, store.cases...) {
			t.Run(store.name+": "+tc.name, func(t *testing.T) {
				y := strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1)
				y = strings.Replace(y, "session:\n", "session:\n  idle_timeout: 1m\n"+store.yaml, 1)
				if store.yaml != "" {
					y = strings.Replace(y, "REDIS_URL", redisserver.Start(t).URL, 1)
				}
				h := newTestHandler(t, y)
				var logs bytes.Buffer
				h.log = slog.New(slog.NewJSONHandler(&logs, nil))
				cookies := tc.browser(t, h)
				mark := &http.Cookie{Name: h.cookies.SignedInName(), Value: strconv.FormatInt(time.Now().Add(-tc.ago).Unix(), 10) + ".company"}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, request("GET", "https://cvat.example.com/.portcullis/login/company?rd=/tasks", append(cookies, mark), "Accept", "text/html"))
				loopPage := strings.Contains(rec.Body.String(), "Sign-in did not hold")
				switch {
				case tc.want == toIdP && (loopPage || !wentToIdP(rec)):
					t.Errorf("%d, loop page %v, want the way to the IdP:\n%s", rec.Code, loopPage, rec.Body)
				case tc.want != toIdP && (!loopPage || rec.Code != tc.want):
					t.Errorf("%d, loop page %v, want the loop page with %d:\n%s", rec.Code, loopPage, tc.want, rec.Body)
				}
				var line struct{ Level, Reason string }
				for l := range strings.Lines(logs.String()) {
					if strings.Contains(l, `"event":"login_failed"`) {
						json.Unmarshal([]byte(l), &line)
					}
				}
				if line.Reason != tc.reason || (tc.reason != "" && line.Level != tc.level.String()) {
					t.Errorf("login_failed line: reason %q at %s, want %q at %s", line.Reason, line.Level, tc.reason, tc.level)
				}
				cleared := false
				for _, c := range rec.Result().Cookies() {
					cleared = cleared || (c.Name == mark.Name && c.MaxAge < 0)
				}
				if !cleared {
					t.Errorf("the mark is left: Set-Cookie %q", rec.Header().Values("Set-Cookie"))
				}
			})
		}
	}
}

// A mark is read for loginLoopWindow after the login that left it, and
// for loginLoopSkew before (the replica that set it may run ahead): a
// browser that kept one longer than its Max-Age, or whose mark is dated
// further ahead, signs in as any other does. The session cookie missing
// would be the loop page's first case.
func TestLoginLoopMarkIsReadOnlyWithinItsWindow(t *testing.T) {
	h := newTestHandler(t, strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1))
	if h.cfg.Session.IdleTimeout <= loginLoopWindow {
		t.Fatalf("idle_timeout %s: a session idle past it ended, whatever the mark", h.cfg.Session.IdleTimeout)
	}
	for _, tc := range []struct {
		name string
		ago  time.Duration
		loop bool
	}{
		{"just within the window", loginLoopWindow - 10*time.Second, true},
		{"past the window", loginLoopWindow + 10*time.Second, false},
		{"just within the skew ahead", -loginLoopSkew + 10*time.Second, true},
		{"further ahead than the skew", -loginLoopSkew - 10*time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mark := &http.Cookie{Name: h.cookies.SignedInName(), Value: strconv.FormatInt(time.Now().Add(-tc.ago).Unix(), 10) + ".company"}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, request("GET", "https://cvat.example.com/.portcullis/login/company?rd=/tasks", []*http.Cookie{mark}, "Accept", "text/html"))
			if loop := strings.Contains(rec.Body.String(), "Sign-in did not hold"); loop != tc.loop || !loop && !wentToIdP(rec) {
				t.Errorf("%d, loop page %v, want the loop page %v:\n%s", rec.Code, loop, tc.loop, rec.Body)
			}
		})
	}
}

// A browser back at /login without its session cookie, near the end of a
// session.lifetime shorter than the mark's window, lost it to the cookie's
// Max-Age (whole seconds, rounded down) or to the mark's second (which may
// follow the session's start): within two seconds of the lifetime the
// session has ended, and it signs in again; earlier, the cookie did not
// come back, and it gets the loop page.
func TestLoginLoopMarkNearTheEndOfTheSession(t *testing.T) {
	h := newTestHandler(t, strings.NewReplacer("UPSTREAM", "http://127.0.0.1:1", "session:\n", "session:\n  lifetime: 60s\n").Replace(testConfig))
	marked := time.Unix(time.Now().Unix(), 0)
	for _, tc := range []struct {
		name string
		ago  time.Duration
		loop bool
	}{
		{"a second and a half before the lifetime is up: ended", 58500 * time.Millisecond, false},
		{"exactly two seconds before: ended", 58 * time.Second, false},
		{"two and a half seconds before: the cookie did not come back", 57500 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.now = func() time.Time { return marked.Add(tc.ago) }
			mark := &http.Cookie{Name: h.cookies.SignedInName(), Value: strconv.FormatInt(marked.Unix(), 10) + ".company"}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, request("GET", "https://cvat.example.com/.portcullis/login/company?rd=/tasks", []*http.Cookie{mark}, "Accept", "text/html"))
			if loop := strings.Contains(rec.Body.String(), "Sign-in did not hold"); loop != tc.loop || !loop && !wentToIdP(rec) {
				t.Errorf("%d, loop page %v, want the loop page %v:\n%s", rec.Code, loop, tc.loop, rec.Body)
			}
		})
	}
}

// wentToIdP says the login went on past the loop check to the IdP, which
// testConfig puts where nothing answers: the login start's 503 page.
func wentToIdP(rec *httptest.ResponseRecorder) bool {
	return rec.Code == http.StatusServiceUnavailable && strings.Contains(rec.Body.String(), "cannot be reached right now")
}

// loopCase is a browser back at /login, which signed in ago, and what it
// gets: toIdP (wentToIdP), or the loop page's status and the login_failed line's reason
// and level.
type loopCase struct {
	name    string
	browser func(t *testing.T, h *Handler) []*http.Cookie
	ago     time.Duration
	want    int
	reason  string
	level   slog.Level
}

// inAnotherRedis is a browser signed in at a replica with the same keys
// and another Redis: its cookie opens, and this replica's Redis does not
// have its session.
func inAnotherRedis(p idp.Profile) func(t *testing.T, h *Handler) []*http.Cookie {
	return func(t *testing.T, h *Handler) []*http.Cookie {
		t.Helper()
		r, err := session.DialRedis(session.RedisConfig{URL: redisserver.Start(t).URL})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		other, err := session.NewRedisStore(h.cookies, r)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		if err := other.Save(rec, httptest.NewRequest("GET", "/", nil), session.New(p, idp.Tokens{}, h.cookies)); err != nil {
			t.Fatal(err)
		}
		return rec.Result().Cookies()
	}
}
