package proxy

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
)

// The roles remembered per session are bounded in number and in the memory
// their profiles hold, as the attribute pass's identities are: the sessions
// behind them may be long gone, and nothing else forgets them.
func TestSessionAuthzIsBounded(t *testing.T) {
	t.Parallel()
	t.Run("in number", func(t *testing.T) {
		c := newSessionAuthz()
		for i := range authzEntries + 100 {
			e := &authzEntry{prof: idp.Profile{IdP: "company", Sub: strconv.Itoa(i)}, roles: []string{"user"}}
			c.Put(strconv.Itoa(i), e, e.footprint())
		}
		if n := c.Len(); n > authzEntries {
			t.Errorf("%d sessions remembered, want at most %d", n, authzEntries)
		}
	})
	t.Run("in the memory their profiles hold", func(t *testing.T) {
		c := newSessionAuthz()
		groups := make([]string, 300) // 300 groups named by their DN
		for i := range groups {
			groups[i] = "cn=group-" + strconv.Itoa(i) + "," + strings.Repeat("ou=unit,", 8) + "dc=example,dc=com"
		}
		for i := range 2000 {
			e := &authzEntry{prof: idp.Profile{IdP: "company", Sub: strconv.Itoa(i), Groups: groups}}
			c.Put(strconv.Itoa(i), e, e.footprint())
		}
		if c.Bytes() > authzBytes {
			t.Errorf("the profiles remembered hold %d bytes, want at most %d", c.Bytes(), authzBytes)
		}
		huge := idp.Profile{IdP: "company", Sub: "huge", Claims: map[string]any{"blob": strings.Repeat("x", authzBytes/16)}}
		e := &authzEntry{prof: huge}
		c.Put("huge", e, e.footprint())
		if _, ok := c.Get("huge"); ok {
			t.Error("a profile of a sixteenth of the bound is remembered, pushing out many others")
		}
	})
}

// A session's profile decoded afresh with nothing changed (a re-sealed
// cookie, a refresh at which the IdP said the same) keeps its roles and is
// remembered in the place of the copy before it: its next requests share
// its groups and claims, and are told apart from it by pointers, not by
// comparing every group and claim on every request.
func TestSessionAuthzRemembersTheProfileDecodedAfresh(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t, strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1))
	profile := func() idp.Profile {
		return idp.Profile{IdP: "company", Sub: "alice", Email: "alice@example.com", Groups: []string{"cvat-admins", "annotators"},
			Claims: map[string]any{"sub": "alice", "groups": []any{"cvat-admins", "annotators"}}}
	}
	first := session.Session{ID: "s1", Profile: profile()}
	if s := h.authorize(&first); s == nil || !slices.Equal(s.Profile.Roles, []string{"admin"}) {
		t.Fatalf("first request: %+v, want admin", s)
	}
	resealed := session.Session{ID: "s1", Profile: profile()}
	if s := h.authorize(&resealed); s == nil || !slices.Equal(s.Profile.Roles, []string{"admin"}) {
		t.Fatalf("the profile decoded afresh: %+v, want admin", s)
	}
	key := resealed.Profile // what authorize remembers: the profile without its roles
	key.Roles = nil
	if e, _ := h.authz.Get("s1"); !e.prof.SharesBacking(&key) {
		t.Error("the profile decoded afresh is not the one remembered: every request after it compares its groups and claims in depth")
	}
}

// A role rule that reads the clock (a role until a date) is decided at
// every request: remembered per session, the role would last until the
// session was forgotten or the configuration reloaded, at a different time
// at every replica.
func TestSessionRolesThatReadTheClockAreNotRemembered(t *testing.T) {
	t.Parallel()
	until := time.Now().Add(3 * time.Second) // room for the handler to start on a loaded machine
	cfg := strings.Replace(testConfig, `      when: '"cvat-admins" in groups'`,
		`      when: 'now() < date("`+until.Format(time.RFC3339Nano)+`") && "cvat-admins" in groups'`, 1)
	h := newTestHandler(t, strings.Replace(cfg, "UPSTREAM", "http://127.0.0.1:1", 1))
	alice := func() *session.Session {
		return &session.Session{ID: "s1", Profile: idp.Profile{IdP: "company", Sub: "alice", Groups: []string{"cvat-admins"}}}
	}
	if s := h.authorize(alice()); s == nil || !slices.Equal(s.Profile.Roles, []string{"admin"}) {
		t.Fatalf("before the date: %+v, want admin", s)
	}
	time.Sleep(time.Until(until) + 50*time.Millisecond)
	if s := h.authorize(alice()); s == nil || !slices.Equal(s.Profile.Roles, []string{"user"}) {
		t.Errorf("after the date: %+v, want user (the rule's date has passed)", s)
	}
}

// A session's email_verified is what this configuration's admission makes
// of it, as its roles are: allow_if and the headers see what admission saw.
// trust_email given since the login verifies the email; taken away, the
// email is verified only on the IdP's word (here the IdP said nothing).
func TestSessionEmailVerifiedIsTheLiveConfigs(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name          string
		trustEmail    bool
		stored, wants bool
	}{
		{"trust_email taken away", false, true, false},
		{"trust_email given", true, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1)
			if c.trustEmail {
				cfg = strings.Replace(cfg, "      client_id: portcullis\n", "      client_id: portcullis\n      trust_email: true\n", 1)
			}
			h := newTestHandler(t, cfg)
			s := &session.Session{ID: "s1", Profile: idp.Profile{IdP: "company", Sub: "alice", Email: "alice@example.com",
				EmailVerified: c.stored, Groups: []string{"cvat-admins"}}}
			if got := h.authorize(s); got == nil || got.Profile.EmailVerified != c.wants {
				t.Errorf("email_verified stored %v: authorized as %+v, want email_verified %v", c.stored, got, c.wants)
			}
		})
	}
}
