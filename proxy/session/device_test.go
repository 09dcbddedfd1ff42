package session

import (
	"net/http/httptest"
	"testing"
	"time"
)

// issued is the value of the device cookie d sets for user at IdP corp,
// who signed in to the account "corp\x00dn-of-"+user.
func issued(t testing.TB, d *Devices, user string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := d.Issue(rec, "/.portcullis/ldap/corp", "corp", user, "corp\x00dn-of-"+user); err != nil {
		t.Fatal(err)
	}
	return rec.Result().Cookies()[0].Value
}

// A device cookie opens to its nonce for the user and IdP it was issued
// for, with any of the session keys (rotation), and to nothing otherwise;
// it vouches for the account its login signed in to, and no other; every
// login gets a new nonce.
func TestDevices(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	d := NewDevices(o)
	find := func(d *Devices, value, idpID, user string) Device {
		r := httptest.NewRequest("POST", "/.portcullis/ldap/corp", nil)
		r.Header.Set("Cookie", "other=1; "+d.opts.DeviceName()+"="+value)
		return d.Find(r, idpID, user)
	}
	nonce := func(d *Devices, value, idpID, user string) string { return find(d, value, idpID, user).Nonce }
	alice := issued(t, d, "corp\x00alice")
	first := nonce(d, alice, "corp", "corp\x00alice")
	if first == "" {
		t.Fatal("alice's device cookie does not open for her")
	}
	if found := find(d, alice, "corp", "corp\x00alice"); !found.SignedInTo("corp\x00dn-of-corp\x00alice") || found.SignedInTo("corp\x00dn-of-corp\x00bob") {
		t.Error("alice's device cookie does not vouch for her account alone")
	}
	if (Device{}).SignedInTo("") {
		t.Error("no device cookie vouches for an account")
	}
	// Version 1 named no account.
	v1, err := d.codecs[0].Encode(deviceCodecName, wireDevice{V: 1, IdP: "corp", User: userTag("corp\x00alice"), Nonce: "n",
		Expires: c.Now().Add(time.Hour).Unix(), Aud: d.aud})
	if err != nil {
		t.Fatal(err)
	}
	if got := nonce(d, v1, "corp", "corp\x00alice"); got != "" {
		t.Errorf("a version 1 device cookie, which names no account, opens: %q", got)
	}
	if again := nonce(d, issued(t, d, "corp\x00alice"), "corp", "corp\x00alice"); again == "" || again == first {
		t.Errorf("a second login's cookie has nonce %q, the first's %q: want a new one", again, first)
	}
	rotated := o
	rotated.Keys = [][]byte{key(2), key(1)}
	if got := nonce(NewDevices(rotated), alice, "corp", "corp\x00alice"); got != first {
		t.Errorf("after a rotation that keeps the old key: %q, want %q", got, first)
	}
	removed := o
	removed.Keys = [][]byte{key(2)}
	if got := nonce(NewDevices(removed), alice, "corp", "corp\x00alice"); got != "" {
		t.Errorf("with its key removed, the cookie opens: %q", got)
	}
	for _, tc := range []struct{ name, idp, user string }{
		{"another user", "corp", "corp\x00bob"},
		{"another IdP", "other", "corp\x00alice"},
	} {
		if got := nonce(d, alice, tc.idp, tc.user); got != "" {
			t.Errorf("alice's device cookie opens for %s: %q", tc.name, got)
		}
	}
	c.Advance(DeviceLifetime)
	if got := nonce(d, alice, "corp", "corp\x00alice"); got != "" {
		t.Errorf("a year on, the cookie still opens: %q", got)
	}
}
