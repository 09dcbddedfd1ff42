package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
)

// The refreshes remembered stay bounded when their sessions could not be
// saved, which are remembered until they expire: past refreshEntries, those
// that expired go first, then all.
func TestRefreshRecordIsBoundedWithUnsavedSessions(t *testing.T) {
	rf := newRefresher(time.Second)
	now := time.Unix(1_700_000_000, 0)
	add := func(id string, expires time.Time) {
		s := &session.Session{ID: id, Refreshed: now.Add(-time.Hour), Profile: idp.Profile{Sub: id}}
		c, leader := rf.join(s, now)
		if !leader {
			t.Fatalf("%s: a refresh already remembered", id)
		}
		next := *s
		next.Expires = expires
		c.waiting-- // its request gave up: the outcome stays to be written
		if rf.finish(id, c, &next, false, true, now) {
			t.Fatalf("%s: taken with no request waiting", id)
		}
	}
	add("expiring", now.Add(2*time.Minute))
	for i := range refreshEntries - 1 {
		add("s"+strconv.Itoa(i), now.Add(12*time.Hour))
	}
	later := now.Add(5 * time.Minute)
	if c, leader := rf.join(&session.Session{ID: "s1", Refreshed: now.Add(-time.Hour)}, later); leader || c.s == nil {
		t.Errorf("an unsaved session 5 minutes on is not remembered: its old refresh token would be spent again")
	}
	now = later
	add("one more", now.Add(12*time.Hour))
	if _, ok := rf.recent["expiring"]; ok || len(rf.recent) != refreshEntries {
		t.Errorf("%d remembered (the expired one: %v), want %d without the expired one", len(rf.recent), ok, refreshEntries)
	}
	add("and another", now.Add(12*time.Hour))
	if n := len(rf.recent); n > refreshEntries {
		t.Errorf("%d remembered, want at most %d", n, refreshEntries)
	}
}

// A refresh's outcome is forgotten once it no longer answers for its
// session (a minute for one that was saved), not only once refreshEntries
// are held: each kept the renewed session, tokens included, and a proxy
// that ran for days held those of every session refreshed since it
// started, up to the bound, sessions long logged out included.
func TestRefreshRecordForgetsWhatNoLongerAnswers(t *testing.T) {
	rf := newRefresher(time.Minute)
	t0 := time.Unix(1_700_000_000, 0)
	const perHour = 500
	for hour := range 10 {
		now := t0.Add(time.Duration(hour) * time.Hour)
		for i := range perHour {
			s := &session.Session{ID: strconv.Itoa(hour) + "-" + strconv.Itoa(i), Refreshed: now.Add(-time.Hour)}
			c, _ := rf.join(s, now)
			next := *s
			next.Refreshed, next.Expires = now, now.Add(12*time.Hour)
			rf.finish(s.ID, c, &next, false, false, now)
		}
	}
	if n := len(rf.recent); n > 2*perHour {
		t.Errorf("after 10 hours of %d refreshes an hour, %d remembered, want at most %d (two hours')", perHour, n, 2*perHour)
	}
}

// answeringRefresher answers every refresh as the IdP would after the
// user's account changed: with profile, or with err. It records the
// refresh tokens it was given.
type answeringRefresher struct {
	profile *idp.Profile
	err     error
	spent   *[]string
}

func (answeringRefresher) Ready() error { return nil }

func (a answeringRefresher) Refresh(_ context.Context, t *idp.Tokens) (*idp.Profile, *idp.Tokens, error) {
	*a.spent = append(*a.spent, t.RefreshToken)
	if a.err != nil {
		return nil, nil, a.err
	}
	next := *t
	next.RefreshToken = t.RefreshToken + "+"
	p := *a.profile
	return &p, &next, nil
}

// A refresh is a new word from the IdP about the user, checked as a login
// is: the IdP answering for another user, admission rules the user no
// longer passes, no role left and a refused refresh each end the session
// (no request reaches the upstream, the cookies are cleared); otherwise the
// roles are mapped afresh and the rotated refresh token is the one spent
// next time.
func TestRefreshChecksTheIdPsAnswerAsALogin(t *testing.T) {
	y := strings.NewReplacer(
		"      client_id: portcullis\n", "      client_id: portcullis\n      allowed_groups: [staff, contractors]\n",
		"  default: user\n", "  default: \"\"\n",
		"  rules:\n    - role: admin", "  rules:\n    - role: user\n      when: '\"staff\" in groups'\n    - role: admin",
	).Replace(testConfig)
	alice := idp.Profile{IdP: "company", Sub: "alice", Email: "alice@example.com", EmailVerified: true, Groups: []string{"staff", "cvat-admins"}}
	changed := func(edit func(p *idp.Profile)) *idp.Profile {
		p := alice
		edit(&p)
		return &p
	}
	tests := []struct {
		name      string
		answer    answeringRefresher
		wantRoles string // X-Groups at the upstream; "": the session ends
	}{
		{"the IdP answering for another user ends the session",
			answeringRefresher{profile: changed(func(p *idp.Profile) { p.Sub = "mallory" })}, ""},
		{"a user no longer in an allowed group is no longer admitted",
			answeringRefresher{profile: changed(func(p *idp.Profile) { p.Groups = []string{"cvat-admins"} })}, ""},
		{"a user no role matches any more is signed out",
			answeringRefresher{profile: changed(func(p *idp.Profile) { p.Groups = []string{"contractors"} })}, ""},
		{"a refused refresh ends the session",
			answeringRefresher{err: idp.ErrRefreshRefused}, ""},
		{"a user who left cvat-admins loses admin",
			answeringRefresher{profile: changed(func(p *idp.Profile) { p.Groups = []string{"staff"} })}, "user"},
		{"an unchanged user keeps admin",
			answeringRefresher{profile: changed(func(*idp.Profile) {})}, "admin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixtureOf(t, y)
			f.h.refresher = newRefresher(time.Minute)
			var spent []string
			tc.answer.spent = &spent
			f.h.providers["company"].impl = tc.answer
			p := alice
			roles, err := f.h.roles.Map(&p)
			if err != nil {
				t.Fatal(err)
			}
			p.Roles = roles
			s := session.New(p, idp.Tokens{RefreshToken: "first"}, f.h.cookies)
			s.Refreshed = time.Now().Add(-2 * time.Minute)
			rec := httptest.NewRecorder()
			if err := f.store.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
				t.Fatal(err)
			}
			cookies := rec.Result().Cookies()

			resp, got, reached := f.do(t, request("GET", "/tasks", cookies, "Accept", "application/json"))
			if tc.wantRoles == "" {
				if resp.StatusCode != http.StatusUnauthorized || reached {
					t.Fatalf("request at the refresh: %d (upstream reached: %v), want 401", resp.StatusCode, reached)
				}
				cleared := false
				for _, c := range resp.Cookies() {
					cleared = cleared || c.Name == f.h.cookies.Name() && c.MaxAge < 0
				}
				if !cleared {
					t.Errorf("the session's cookie is not cleared: Set-Cookie %q", resp.Header.Values("Set-Cookie"))
				}
				return
			}
			if resp.StatusCode != http.StatusOK || !reached {
				t.Fatalf("request at the refresh: %d (upstream reached: %v), want 200", resp.StatusCode, reached)
			}
			if g := got.Header.Get("X-Groups"); g != tc.wantRoles {
				t.Errorf("X-Groups = %q, want %q", g, tc.wantRoles)
			}

			// The renewed session's next refresh spends the rotated token.
			f.h.refresher = newRefresher(time.Minute)
			f.h.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
			if resp, _, _ := f.do(t, request("GET", "/tasks", resp.Cookies(), "Accept", "application/json")); resp.StatusCode != http.StatusOK {
				t.Fatalf("request at the second refresh: %d", resp.StatusCode)
			}
			if want := []string{"first", "first+"}; strings.Join(spent, " ") != strings.Join(want, " ") {
				t.Errorf("refresh tokens spent %q, want %q", spent, want)
			}
		})
	}
}

// A refresh the proxy and the IdP are not set up to complete (an
// idp.SetupError: the client's ID token signing alg changed at the IdP) is
// logged with its reason and hint, as the login's login_failed line has
// them, so that the operator learns what to change from the first session
// that meets it; the session is kept, as for any refresh that failed
// without the IdP refusing the user.
func TestRefreshSetUpOtherwiseLogsTheReasonAndHint(t *testing.T) {
	f := newFixture(t)
	f.h.refresher = newRefresher(time.Minute)
	var spent []string
	setup := &idp.SetupError{Reason: "id_token_signing_alg", Hint: `the IdP signs this client's ID tokens with "HS256"; this proxy verifies only RS256`,
		Err: errors.New(`oidc company: refresh: verify id token: unexpected signature algorithm "HS256"`)}
	f.h.providers["company"].impl = answeringRefresher{err: fmt.Errorf("wrapped: %w", setup), spent: &spent}
	logs := &logBuffer{}
	f.h.log = slog.New(slog.NewJSONHandler(logs, nil))
	s := session.New(idp.Profile{IdP: "company", Sub: "alice", Email: "alice@example.com"}, idp.Tokens{RefreshToken: "first"}, f.h.cookies)
	s.Refreshed = time.Now().Add(-2 * time.Minute)
	rec := httptest.NewRecorder()
	if err := f.store.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
		t.Fatal(err)
	}
	resp, _, reached := f.do(t, request("GET", "/tasks", rec.Result().Cookies(), "Accept", "application/json"))
	if resp.StatusCode != http.StatusOK || !reached {
		t.Fatalf("request at the refresh: %d (upstream reached: %v), want 200: the session is kept", resp.StatusCode, reached)
	}
	lines := logs.find(t, map[string]any{"msg": "refresh failed; keeping the session for now", "idp": "company",
		"reason": setup.Reason, "hint": setup.Hint})
	if len(lines) != 1 {
		t.Fatalf("want one refresh line with reason and hint, got:\n%s", logs.String())
	}
	if lines[0]["level"] != "ERROR" {
		t.Errorf("level %v, want ERROR: every refresh at this IdP fails alike until its set-up changes", lines[0]["level"])
	}
	if err, _ := lines[0]["err"].(string); !strings.Contains(err, "unexpected signature algorithm") {
		t.Errorf("err %q, want the verifier's error", err)
	}
}

// panickingRefresher is an IdP whose refresh panics: a bug in the proxy.
type panickingRefresher struct{}

func (panickingRefresher) Ready() error { return nil }

func (panickingRefresher) Refresh(context.Context, *idp.Tokens) (*idp.Profile, *idp.Tokens, error) {
	panic("a bug in the refresh")
}

// A refresh that panics, which runs apart from the request that started
// it, where net/http recovers nothing, keeps the session for now (counted
// as an error) and ends no process.
func TestRefreshThatPanicsKeepsTheSession(t *testing.T) {
	f := newFixture(t)
	f.h.refresher = newRefresher(time.Minute)
	f.h.providers["company"].impl = panickingRefresher{}
	p := idp.Profile{IdP: "company", Sub: "alice", Email: "alice@example.com", Roles: []string{"user"}}
	s := session.New(p, idp.Tokens{RefreshToken: "first"}, f.h.cookies)
	rec := httptest.NewRecorder()
	if err := f.store.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
		t.Fatal(err)
	}
	f.h.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	resp, _, reached := f.do(t, request("GET", "/tasks", rec.Result().Cookies(), "Accept", "application/json"))
	if resp.StatusCode != http.StatusOK || !reached {
		t.Errorf("request at the refresh that panicked: %d (upstream reached: %v), want 200 with the session kept", resp.StatusCode, reached)
	}
	if n := refreshResults(t, f.h, refreshError); n != 1 {
		t.Errorf("%v refresh errors counted, want 1", n)
	}
}
