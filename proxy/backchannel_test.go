package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// unfetchedLogoutKey is an IdP whose keys, as last fetched, lack the key
// of every logout token, within its floor on fetching them again, until
// fetched is set: then every token verifies to tok.
type unfetchedLogoutKey struct {
	idp.Provider
	tok     idp.LogoutToken
	fetched *atomic.Bool
}

func (u unfetchedLogoutKey) VerifyLogoutToken(context.Context, string) (*idp.LogoutToken, error) {
	if !u.fetched.Load() {
		return nil, &idp.UnfetchedKeyError{KeyID: "k2", RetryAfter: 6500 * time.Millisecond}
	}
	tok := u.tok
	return &tok, nil
}

// A logout token that the entry it is posted to verifies, but that
// another entry for the same client of that issuer (logoutTargets) cannot
// check yet, its keys lacking the token's key within its floor, is
// answered 503 with that entry's Retry-After, nothing ended or spent:
// taken then, it would leave the other entry's sessions, and the IdP's
// retry would be a replay. Sent again once that entry has the key, it ends
// the sessions at both.
func TestBackchannelLogoutWaitsForEveryEntryOfItsClientToHaveTheKey(t *testing.T) {
	y := strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1)
	y = strings.Replace(y, "      client_id: portcullis\n", "      client_id: portcullis\n"+
		"    - id: company-groups\n      protocol: OIDC\n      server_url: http://127.0.0.1:2/\n      client_id: portcullis\n", 1)
	h := newTestHandler(t, y)
	logs := &logBuffer{}
	h.log = slog.New(slog.NewJSONHandler(logs, nil))
	tok := idp.LogoutToken{Subject: "u-1", Sub: "u-1", ID: "jti-1", Issuer: "https://login.example", IssuedAt: time.Now()}
	p := h.providers["company"]
	p.impl = fixedLogoutToken{Provider: p.impl, tok: tok}
	fetched := &atomic.Bool{}
	other := h.providers["company-groups"]
	other.impl = unfetchedLogoutKey{Provider: other.impl, tok: tok, fetched: fetched}

	var cookies [][]*http.Cookie
	for _, id := range []string{"company", "company-groups"} {
		rec := httptest.NewRecorder()
		s := session.New(idp.Profile{IdP: id, Sub: "u-1", Email: "alice@example.com"}, idp.Tokens{}, h.cookies)
		if err := h.sessions.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
			t.Fatal(err)
		}
		cookies = append(cookies, rec.Result().Cookies())
	}
	signedIn := func() []bool {
		var out []bool
		for _, c := range cookies {
			r := httptest.NewRequest("GET", "/", nil)
			for _, c := range c {
				r.AddCookie(c)
			}
			s, err := h.sessions.Load(r)
			out = append(out, err == nil && s != nil)
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

	w := post()
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "7" || !strings.Contains(w.Body.String(), "temporarily_unavailable") {
		t.Errorf("a token company-groups cannot check yet: %d (Retry-After %q) %s, want 503 temporarily_unavailable with Retry-After 7",
			w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if got := signedIn(); !got[0] || !got[1] {
		t.Errorf("sessions (company, company-groups) signed in after the 503: %v, want both", got)
	}
	// Named by its request and client, as the audit line of a refused
	// token is: a forged token naming a kid not held gets this 503 too.
	if got := logs.find(t, map[string]any{"reason": "signing_key_not_fetched", "idp": "company", "kid": "k2", "client": "192.0.2.1"}); len(got) != 1 || got[0]["request_id"] == "" {
		t.Errorf("log lines: %v, want one with reason signing_key_not_fetched, its client and request_id", logs.lines(t))
	}

	fetched.Store(true)
	if w := post(); w.Code != http.StatusOK {
		t.Errorf("the same token, sent again once company-groups has the key: %d %s, want 200", w.Code, w.Body)
	}
	if got := signedIn(); got[0] || got[1] {
		t.Errorf("sessions (company, company-groups) signed in after the token was taken: %v, want neither", got)
	}
}
