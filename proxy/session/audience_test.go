package session

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// Deployments given the same keys (sidecars of two applications sharing one
// Secret) each open only their own sessions: a session carries the roles its
// own deployment mapped, and a user who is admin at one application must not
// take that cookie to the other and be admin there.
func TestSessionsOpenOnlyAtTheDeploymentThatSealedThem(t *testing.T) {
	c := newClock()
	at := func(audience string) Options {
		o := testOptions(c)
		o.Audience = audience
		return o
	}
	a, b := at("https://grafana.example.com"), at("https://cvat.example.com")
	srv := redisserver.Start(t)
	for _, st := range bothStores(t, srv) {
		t.Run(st.name, func(t *testing.T) {
			s := New(testProfile(), idp.Tokens{}, a)
			cookies := saveTo(t, st.make(a), s)
			if got := loadFrom(t, st.make(a), cookies); got == nil || got.ID != s.ID {
				t.Fatalf("its own deployment: %v, want the session", got)
			}
			if got := loadFrom(t, st.make(b), cookies); got != nil {
				t.Errorf("a deployment with the same keys and another public_url opened it (roles %v)", got.Profile.Roles)
			}

			// Sealed by the version before sessions named their deployment:
			// still open after the update, until they expire.
			legacy := New(testProfile(), idp.Tokens{}, a)
			cookies = saveTo(t, st.make(at("")), legacy)
			if got := loadFrom(t, st.make(a), cookies); got == nil || got.ID != legacy.ID {
				t.Errorf("a session sealed without an audience: %v, want it to open after the update", got)
			}
		})
	}
}

// A device cookie, like a session, opens only at the deployment that sealed
// it: another application's LDAP form given the same keys (and an IdP of
// the same id) must not count its user's logins against that cookie.
func TestDeviceCookiesOpenOnlyAtTheDeploymentThatSealedThem(t *testing.T) {
	c := newClock()
	at := func(audience string) *Devices {
		o := testOptions(c)
		o.Audience = audience
		return NewDevices(o)
	}
	cvat, grafana := at("https://cvat.example.com"), at("https://grafana.example.com")
	r := httptest.NewRequest("POST", "/.portcullis/ldap/corp", nil)
	r.Header.Set("Cookie", cvat.opts.DeviceName()+"="+issued(t, cvat, "corp\x00alice"))
	if cvat.Find(r, "corp", "corp\x00alice").Nonce == "" {
		t.Fatal("the device cookie does not open at its own deployment")
	}
	if got := grafana.Find(r, "corp", "corp\x00alice"); got.Nonce != "" {
		t.Errorf("a deployment with the same keys and another public_url opened it: nonce %q", got.Nonce)
	}
}

// Deployments that share keys and a Redis under one key_prefix (against
// the README's advice, but the chart's default) share the indexes too:
// `sessions list` at one of them must not drop from them the sessions it
// cannot open because another deployment made them, or a revoke there
// would no longer find them.
func TestSessionsListedAtAnotherDeploymentStayRevocable(t *testing.T) {
	c := newClock()
	at := func(audience string) Options {
		o := testOptions(c)
		o.Audience = audience
		return o
	}
	srv := redisserver.Start(t)
	grafana, cvat := replica(t, srv, at("https://grafana.example.com")), replica(t, srv, at("https://cvat.example.com"))
	ctx := context.Background()
	s := New(testProfile(), idp.Tokens{}, at("https://grafana.example.com"))
	cookies := saveTo(t, grafana, s)

	if list, err := cvat.ListByEmail(ctx, s.Profile.Email); err != nil || len(list) != 0 {
		t.Fatalf("ListByEmail at the other deployment = %+v, %v; want none of its own", list, err)
	}
	if n, err := grafana.RevokeByEmail(ctx, s.Profile.Email); err != nil || n != 1 {
		t.Errorf("RevokeByEmail at its own deployment = %d, %v; want 1", n, err)
	}
	if loadFrom(t, grafana, cookies) != nil {
		t.Error("the session still opens after its revoke")
	}
}
