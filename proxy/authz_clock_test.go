package proxy

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
)

// A role rule that reads the clock maps the roles at every request; when
// they come out as the session has them, the session's own roles are used,
// so that the attribute pass finds the identity it remembered sharing them
// and keeps it, rather than remembering it again, twice a request under its
// lock (once for the roles just mapped, once for the session's).
func TestSessionRolesThatReadTheClockKeepTheRememberedIdentity(t *testing.T) {
	t.Parallel()
	until := time.Now().Add(time.Hour)
	cfg := strings.Replace(testConfig, `      when: '"cvat-admins" in groups'`,
		`      when: 'now() < date("`+until.Format(time.RFC3339Nano)+`") && "cvat-admins" in groups'`, 1)
	h := newTestHandler(t, strings.Replace(cfg, "UPSTREAM", "http://127.0.0.1:1", 1))
	// The session as the store's cache of opened sessions shares it with
	// every request of its cookie: each request works on a copy of it.
	opened := &session.Session{ID: "s1", Profile: idp.Profile{IdP: "company", Sub: "alice", Email: "alice@example.com",
		Groups: []string{"cvat-admins"}, Roles: []string{"admin"}, Claims: map[string]any{"sub": "alice"}}}
	request := func() any {
		t.Helper()
		s := *opened
		got := h.authorize(&s)
		if got == nil || !slices.Equal(got.Profile.Roles, []string{"admin"}) {
			t.Fatalf("authorize = %+v, want admin", got)
		}
		id, err := h.pass.For(got.ID, &got.Profile)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	first := request()
	for i := range 3 {
		if again := request(); again != first {
			t.Fatalf("request %d: the session's identity was remembered again (a Put under the attribute pass's lock at every request)", i+2)
		}
	}
}
