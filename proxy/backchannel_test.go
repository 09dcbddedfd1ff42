package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/redis/go-redis/v9"
)

// fixedLogoutToken is an IdP whose every logout token verifies to tok, or
// only the token accept when that is set (as another issuer's tokens fail
// at their iss).
type fixedLogoutToken struct {
	idp.Provider
	tok    idp.LogoutToken
	accept string
}

func (f fixedLogoutToken) VerifyLogoutToken(_ context.Context, raw string) (*idp.LogoutToken, error) {
	if f.accept != "" && raw != f.accept {
		return nil, errors.New("logout token: issued by another issuer")
	}
	tok := f.tok
	return &tok, nil
}

// TestBackchannelLogoutThatFailsCanBeSentAgain: when the sessions cannot be
// ended (503), the IdP's retry of the same logout token must end them, not
// be refused as a replay of a token that ended nothing.
func TestBackchannelLogoutThatFailsCanBeSentAgain(t *testing.T) {
	srv := redisserver.Start(t)
	y := strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1)
	y = storeInRedis(y, srv.URL)
	h := newTestHandler(t, y)
	p := h.providers["company"]
	p.impl = fixedLogoutToken{Provider: p.impl, tok: idp.LogoutToken{Subject: "u-1", Sub: "u-1", ID: "jti-1", IssuedAt: time.Now()}}

	rec := httptest.NewRecorder()
	s := session.New(idp.Profile{IdP: "company", Sub: "u-1", Email: "alice@example.com"}, idp.Tokens{}, h.cookies)
	if err := h.sessions.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
		t.Fatal(err)
	}
	cookies := rec.Result().Cookies()
	post := func() int {
		r := httptest.NewRequest("POST", "/.portcullis/oidc/company/backchannel-logout",
			strings.NewReader(url.Values{"logout_token": {"signed"}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}

	// Redis records the token but fails to read who has sessions.
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { admin.Close() })
	ctx := context.Background()
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "-zrange", "-smembers").Err(); err != nil {
		t.Fatal(err)
	}
	if code := post(); code != http.StatusServiceUnavailable {
		t.Fatalf("logout with the sessions unreadable: %d, want 503", code)
	}
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	if code := post(); code != http.StatusOK {
		t.Errorf("the IdP's retry of the logout: %d, want 200", code)
	}
	r := httptest.NewRequest("GET", "/", nil)
	for _, c := range cookies {
		r.AddCookie(c)
	}
	if got, err := h.sessions.Load(r); err != nil || got != nil {
		t.Errorf("after the retried logout the session is %v (%v), want gone", got, err)
	}
}

// A logout token is an answer once (its jti): the same token posted again,
// captured on the way or replayed from a log, is refused, so it cannot
// end the sessions the user made after the logout it was for.
func TestBackchannelLogoutTokenIsRefusedTheSecondTime(t *testing.T) {
	h := newTestHandler(t, strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1))
	p := h.providers["company"]
	p.impl = fixedLogoutToken{Provider: p.impl, tok: idp.LogoutToken{Subject: "u-1", Sub: "u-1", ID: "jti-1", IssuedAt: time.Now()}}
	post := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/.portcullis/oidc/company/backchannel-logout",
			strings.NewReader(url.Values{"logout_token": {"signed"}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := post(); w.Code != http.StatusOK {
		t.Fatalf("first logout with the token: %d, want 200\n%s", w.Code, w.Body)
	}
	logs := &logBuffer{}
	h.log = slog.New(slog.NewJSONHandler(logs, nil))
	if w := post(); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "already used") {
		t.Errorf("the same token again: %d %s, want 400 saying it was already used", w.Code, w.Body)
	}
	// The audit line's reason is a stable word, as every other reason is,
	// that troubleshooting.md and the README can name and an alert match.
	if got := logs.find(t, map[string]any{"event": "backchannel_logout_refused", "reason": "replayed"}); len(got) != 1 {
		t.Errorf("the replay's audit lines: %v, want one backchannel_logout_refused with reason replayed", logs.lines(t))
	}
}

// A logout token that names an IdP session (sid) ends the sessions of that
// IdP session only: the user's login in another browser, another session
// at the IdP, stays.
func TestBackchannelLogoutWithASidEndsThatIdPSessionOnly(t *testing.T) {
	h := newTestHandler(t, strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1))
	p := h.providers["company"]
	p.impl = fixedLogoutToken{Provider: p.impl, tok: idp.LogoutToken{Subject: "u-1", Sub: "u-1", SessionID: "sid-a", ID: "jti-1", IssuedAt: time.Now()}}
	h.now = func() time.Time { return time.Now().Add(time.Second) } // the sessions were made before the logout
	login := func(sid string) []*http.Cookie {
		rec := httptest.NewRecorder()
		s := session.New(idp.Profile{IdP: "company", Sub: "u-1", Email: "alice@example.com"}, idp.Tokens{SID: sid}, h.cookies)
		if err := h.sessions.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
			t.Fatal(err)
		}
		return rec.Result().Cookies()
	}
	a, b := login("sid-a"), login("sid-b")
	r := httptest.NewRequest("POST", "/.portcullis/oidc/company/backchannel-logout",
		strings.NewReader(url.Values{"logout_token": {"signed"}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("logout: %d %s", w.Code, w.Body)
	}
	for _, tc := range []struct {
		name    string
		cookies []*http.Cookie
		ended   bool
	}{{"sid-a", a, true}, {"sid-b", b, false}} {
		r := httptest.NewRequest("GET", "/", nil)
		for _, c := range tc.cookies {
			r.AddCookie(c)
		}
		if got, err := h.sessions.Load(r); err != nil || (got == nil) != tc.ended {
			t.Errorf("the session of %s after the logout of sid-a: %v (%v), want ended %v", tc.name, got, err, tc.ended)
		}
	}
}

// A jti is chosen by the IdP that issued it, unique among its own tokens
// only (RFC 7519 leaves collisions across issuers to the application):
// another IdP's token that happens to carry the same jti is no replay, and
// ends its user's sessions.
func TestBackchannelLogoutTokenIDsAreEachIdPsOwn(t *testing.T) {
	y := strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1)
	y = strings.Replace(y, "      client_id: portcullis\n", "      client_id: portcullis\n"+
		"    - id: partner\n      protocol: OIDC\n      server_url: http://127.0.0.1:2/\n      client_id: portcullis\n", 1)
	h := newTestHandler(t, y)
	for _, id := range []string{"company", "partner"} {
		p := h.providers[id]
		p.impl = fixedLogoutToken{Provider: p.impl, accept: id + "-signed",
			tok: idp.LogoutToken{Subject: "u-1", Sub: "u-1", ID: "jti-1", Issuer: "https://" + id + ".example", IssuedAt: time.Now()}}
	}
	h.now = func() time.Time { return time.Now().Add(time.Second) } // the session was made before the logout
	rec := httptest.NewRecorder()
	s := session.New(idp.Profile{IdP: "partner", Sub: "u-1", Email: "alice@partner.example"}, idp.Tokens{}, h.cookies)
	if err := h.sessions.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
		t.Fatal(err)
	}
	post := func(id string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/.portcullis/oidc/"+id+"/backchannel-logout",
			strings.NewReader(url.Values{"logout_token": {id + "-signed"}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for _, step := range []struct {
		name, idp string
		status    int
	}{
		{"company's token", "company", http.StatusOK},
		{"partner's token with the same jti", "partner", http.StatusOK},
		{"partner's token again", "partner", http.StatusBadRequest},
	} {
		if w := post(step.idp); w.Code != step.status {
			t.Errorf("%s: %d %s, want %d", step.name, w.Code, w.Body, step.status)
		}
	}
	r := httptest.NewRequest("GET", "/", nil)
	for _, c := range rec.Result().Cookies() {
		r.AddCookie(c)
	}
	if got, err := h.sessions.Load(r); err != nil || got != nil {
		t.Errorf("partner's session after partner's logout: %v (%v), want ended", got, err)
	}
}

// Two entries for one client of an issuer both end the user's sessions at
// a logout token posted to either (logoutTargets), so the token posted
// again at the other is a replay: it would end the sessions made since the
// logout, at both entries, for as long as the token is young.
func TestBackchannelLogoutTokenIsSpentAtEveryEntryOfItsIssuer(t *testing.T) {
	y := strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1)
	y = strings.Replace(y, "      client_id: portcullis\n", "      client_id: portcullis\n"+
		"    - id: company-groups\n      protocol: OIDC\n      server_url: http://127.0.0.1:2/\n      client_id: portcullis\n", 1)
	h := newTestHandler(t, y)
	for _, id := range []string{"company", "company-groups"} {
		p := h.providers[id]
		p.impl = fixedLogoutToken{Provider: p.impl, accept: "signed",
			tok: idp.LogoutToken{Subject: "u-1", Sub: "u-1", ID: "jti-1", Issuer: "https://login.example", IssuedAt: time.Now()}}
	}
	for _, step := range []struct {
		name, idp string
		status    int
	}{
		{"the token at company", "company", http.StatusOK},
		{"the same token at company-groups", "company-groups", http.StatusBadRequest},
	} {
		r := httptest.NewRequest("POST", "/.portcullis/oidc/"+step.idp+"/backchannel-logout",
			strings.NewReader(url.Values{"logout_token": {"signed"}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != step.status {
			t.Errorf("%s: %d %s, want %d", step.name, w.Code, w.Body, step.status)
		}
	}
}

// uncheckedLogoutToken is an IdP entry that cannot check a logout token
// (err, an idp.ErrNotReady) until checked is set: then every token
// verifies to tok.
type uncheckedLogoutToken struct {
	idp.Provider
	tok     idp.LogoutToken
	err     error
	checked *atomic.Bool
}

func (u uncheckedLogoutToken) VerifyLogoutToken(context.Context, string) (*idp.LogoutToken, error) {
	if !u.checked.Load() {
		return nil, u.err
	}
	tok := u.tok
	return &tok, nil
}

// A logout token posted to one entry, which it verifies, ends at once the
// sessions of every entry that verifies it (the same client of its
// issuer), and when another entry for that client cannot check it yet
// (its keys lack the token's key within the floor, or cannot be fetched at
// all) it is answered 503 with the largest Retry-After among them, the
// token not spent, the entries that could not check it named in a WARN
// line: the IdP's retry ends the rest, ending those ended before again
// (a sessions count of what it found still there), and the token is spent
// then, a replay refused. Before, a token that another entry lacked the
// key of ended nothing until the retry, and one whose keys could not be
// fetched at all was spent at once, its sessions there kept for good.
func TestBackchannelLogoutEndsWhatItCanAndIsSentAgainForTheRest(t *testing.T) {
	keyNotFetched := func(wait time.Duration) error { return &idp.UnfetchedKeyError{KeyID: "k2", RetryAfter: wait} }
	keysUnavailable := fmt.Errorf("oidc: logout token: the IdP's signing keys could not be fetched: %w", idp.ErrNotReady)
	for _, tc := range []struct {
		name  string
		redis bool
		// unchecked are the entries that cannot check the token at first,
		// and why.
		unchecked  map[string]error
		retryAfter string
	}{
		{name: "another entry lacks the token's key", unchecked: map[string]error{"company-groups": keyNotFetched(6500 * time.Millisecond)}, retryAfter: "7"},
		{name: "another entry cannot fetch its keys", unchecked: map[string]error{"company-groups": keysUnavailable}, retryAfter: retryAfter},
		{name: "two entries cannot check it, the longer wait", retryAfter: retryAfter,
			unchecked: map[string]error{"company-groups": keyNotFetched(2500 * time.Millisecond), "company-admin": keysUnavailable}},
		{name: "another entry cannot fetch its keys, with Redis", redis: true, unchecked: map[string]error{"company-groups": keysUnavailable}, retryAfter: retryAfter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1)
			entries := []string{"company", "company-groups", "company-admin", "company-other"}
			for _, id := range slices.Backward(entries[1:]) { // each goes right after company
				y = strings.Replace(y, "      client_id: portcullis\n", "      client_id: portcullis\n"+
					"    - id: "+id+"\n      protocol: OIDC\n      server_url: http://127.0.0.1:2/\n      client_id: portcullis\n", 1)
			}
			if tc.redis {
				y = storeInRedis(y, redisserver.Start(t).URL)
			}
			h := newTestHandler(t, y)
			logs := &logBuffer{}
			h.log = slog.New(slog.NewJSONHandler(logs, nil))
			h.now = func() time.Time { return time.Now().Add(time.Second) } // the sessions were made before the logout
			tok := idp.LogoutToken{Subject: "u-1", Sub: "u-1", ID: "jti-1", Issuer: "https://login.example", IssuedAt: time.Now()}
			checked := &atomic.Bool{}
			for _, id := range entries {
				p := h.providers[id]
				switch err, ok := tc.unchecked[id]; {
				case id == "company-other":
					// Another client's entry: the token is invalid there.
					p.impl = fixedLogoutToken{Provider: p.impl, accept: "another client's token"}
				case ok:
					p.impl = uncheckedLogoutToken{Provider: p.impl, tok: tok, err: err, checked: checked}
				default:
					p.impl = fixedLogoutToken{Provider: p.impl, tok: tok}
				}
			}

			cookies := map[string][]*http.Cookie{}
			for _, id := range entries {
				rec := httptest.NewRecorder()
				s := session.New(idp.Profile{IdP: id, Sub: "u-1", Email: "alice@example.com"}, idp.Tokens{}, h.cookies)
				if err := h.sessions.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
					t.Fatal(err)
				}
				cookies[id] = rec.Result().Cookies()
			}
			// signedOut are the entries whose session of alice has ended.
			signedOut := func() []string {
				var out []string
				for _, id := range entries {
					r := httptest.NewRequest("GET", "/", nil)
					for _, c := range cookies[id] {
						r.AddCookie(c)
					}
					if s, err := h.sessions.Load(r); err != nil || s == nil {
						out = append(out, id)
					}
				}
				return out
			}
			post := func() *httptest.ResponseRecorder {
				r := httptest.NewRequest("POST", "/.portcullis/oidc/company/backchannel-logout",
					strings.NewReader(url.Values{"logout_token": {"signed"}}.Encode()))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				return w
			}
			sessions := func(n int) float64 {
				if tc.redis {
					return float64(n)
				}
				return 0 // the cookie store cannot count them
			}
			var ended, unchecked []any
			for _, id := range entries[:3] {
				if _, ok := tc.unchecked[id]; ok {
					unchecked = append(unchecked, id)
				} else {
					ended = append(ended, id)
				}
			}

			w := post()
			if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != tc.retryAfter || !strings.Contains(w.Body.String(), "temporarily_unavailable") {
				t.Errorf("a token that %v cannot check yet: %d (Retry-After %q) %s, want 503 temporarily_unavailable with Retry-After %s",
					unchecked, w.Code, w.Header().Get("Retry-After"), w.Body, tc.retryAfter)
			}
			if got, want := fmt.Sprint(signedOut()), fmt.Sprint(ended); got != want {
				t.Errorf("entries signed out after the first post: %s, want %s (those that checked the token)", got, want)
			}
			// Each entry that could not check it is named, with the
			// request and its client, as the audit line of a refused
			// token is: a forged token naming a kid not held gets a 503.
			for _, id := range unchecked {
				lines := logs.find(t, map[string]any{"level": "WARN", "idp": "company", "not_checked_at": id, "client": "192.0.2.1"})
				if len(lines) != 1 || lines[0]["request_id"] == "" {
					t.Errorf("WARN lines naming %s: %v; want one, with its client and request_id", id, logs.lines(t))
				} else if _, lacksKey := tc.unchecked[id.(string)].(*idp.UnfetchedKeyError); lacksKey &&
					(lines[0]["reason"] != "signing_key_not_fetched" || lines[0]["kid"] != "k2") {
					t.Errorf("WARN line naming %s: %v; want reason signing_key_not_fetched and kid k2", id, lines[0])
				}
			}
			if got := logs.find(t, map[string]any{"event": "backchannel_logout"}); len(got) != 1 ||
				fmt.Sprint(got[0]["ended_at"]) != fmt.Sprint(ended) || fmt.Sprint(got[0]["not_checked_at"]) != fmt.Sprint(unchecked) ||
				got[0]["sessions"] != sessions(len(ended)) {
				t.Errorf("audit lines: %v; want one backchannel_logout ended_at %v, not_checked_at %v, sessions %v", got, ended, unchecked, sessions(len(ended)))
			}

			// The IdP's retry, once they can check it, ends the rest.
			checked.Store(true)
			logs = &logBuffer{}
			h.log = slog.New(slog.NewJSONHandler(logs, nil))
			if w := post(); w.Code != http.StatusOK {
				t.Errorf("the same token, sent again once every entry can check it: %d %s, want 200", w.Code, w.Body)
			}
			if got, want := fmt.Sprint(signedOut()), fmt.Sprint(entries[:3]); got != want {
				t.Errorf("entries signed out after the retry: %s, want %s", got, want)
			}
			if got := logs.find(t, map[string]any{"event": "backchannel_logout"}); len(got) != 1 ||
				fmt.Sprint(got[0]["ended_at"]) != fmt.Sprint(entries[:3]) || got[0]["not_checked_at"] != nil || got[0]["sessions"] != sessions(len(unchecked)) {
				t.Errorf("audit lines of the retry: %v; want one backchannel_logout ended_at %v, sessions %v (those still there)", got, entries[:3], sessions(len(unchecked)))
			}

			// Spent now: a replay is refused before it ends anything, the
			// session alice has made since at company too, even while
			// another entry cannot check it again.
			later := h.cookies
			later.Now = func() time.Time { return time.Now().Add(3 * time.Second) } // after the retry's logout
			rec := httptest.NewRecorder()
			s := session.New(idp.Profile{IdP: "company", Sub: "u-1", Email: "alice@example.com"}, idp.Tokens{}, later)
			if err := h.sessions.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
				t.Fatal(err)
			}
			cookies["company"] = rec.Result().Cookies()
			checked.Store(false)
			if w := post(); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "already used") {
				t.Errorf("the token a third time: %d %s, want 400, already used", w.Code, w.Body)
			}
			if got := signedOut(); slices.Contains(got, "company") {
				t.Errorf("entries signed out after the replay: %v; want alice's new session at company kept", got)
			}
		})
	}
}
