package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Invariant 6: after login and logout, rd leads only to public_url's origin.
func TestSafeRedirect(t *testing.T) {
	c := &compiled{publicURL: &url.URL{Scheme: "https", Host: "cvat.example.com"}}
	const home = "https://cvat.example.com/"
	for _, tc := range []struct{ rd, want string }{
		{"", home},
		{"/tasks?id=1", "https://cvat.example.com/tasks?id=1"},
		{"/tasks#frag", "https://cvat.example.com/tasks#frag"},
		{"https://cvat.example.com/tasks", "https://cvat.example.com/tasks"},
		{"HTTPS://CVAT.EXAMPLE.COM/tasks", "https://cvat.example.com/tasks"},
		{"https://cvat.example.com/tasks?id=1", "https://cvat.example.com/tasks?id=1"},
		{"https://cvat.example.com/%2F%2Fevil.com", "https://cvat.example.com/%2F%2Fevil.com"}, // kept as escaped, not decoded
		{"/%2F%2Fevil.com", "https://cvat.example.com/%2F%2Fevil.com"},
		{"//evil.com", home},
		{"///evil.com", home},
		{"/\\evil.com", home},
		{"\\\\evil.com", home},
		{"https:evil.com", home},
		{"https:/evil.com", home},
		{"http://cvat.example.com/", home},
		{"https://evil.com", home},
		{"https://cvat.example.com.evil.com/", home},
		{"https://cvat.example.com@evil.com/", home},
		{"https://user:pw@cvat.example.com/", home},
		{"https://evil.com#@cvat.example.com", home},
		{"/\t/evil.com", home},
		{"/\n/evil.com", home},
		{" //evil.com", home},
		{"/ /evil.com", home}, // a space, which url.Parse lets through to the Location header
		{"javascript:alert(1)", home},
		{"data:text/html,x", home},
		{"evil.com", home},
		{"tasks", home},
		{"https://cvat.example.com//evil.com", "https://cvat.example.com/"},
		{"https://cvаt.example.com/", home}, // Cyrillic а
		// With a path, so that keeping it here is told apart from the root:
		// only this origin's own URLs keep their path.
		{"http://cvat.example.com/tasks", home},
		{"https://user:pw@cvat.example.com/tasks", home},
		{"https://evilcvat.example.com/tasks", home},
		{"https://cvat.example.com.evil.com/tasks", home},
		{"/ｅvil", home},
	} {
		if got := c.safeRedirect(tc.rd); got != tc.want {
			t.Errorf("safeRedirect(%q) = %q, want %q", tc.rd, got, tc.want)
		}
	}
}

// Invariant 6 holds for a logout that goes by the IdP too (single_sign_out):
// rd is made safe before it is sealed into the logout's state, since
// /logout/done follows that as it stands, after the IdP's end-session page.
func TestSingleSignOutLeadsOnlyToThisOrigin(t *testing.T) {
	lf := newLoginFuzz(t)
	for _, tc := range []struct{ rd, want string }{
		{"https://evil.example/", "https://cvat.example.com/"},
		{"//evil.example/tasks", "https://cvat.example.com/"},
		{"/bye?x=1", "https://cvat.example.com/bye?x=1"},
	} {
		t.Run(tc.rd, func(t *testing.T) {
			b := newStateBrowser(t, lf.h)
			b.signedIn(t, lf, "company")
			rec := b.get("/.portcullis/logout?rd=" + url.QueryEscape(tc.rd))
			loc, _ := url.Parse(rec.Header().Get("Location"))
			if rec.Code != http.StatusFound || !strings.HasPrefix(loc.String(), lf.oidc.Issuer+"/session/end?") {
				t.Fatalf("logout: %d to %q, want the IdP's end-session endpoint", rec.Code, loc)
			}
			rec = b.get("/.portcullis/logout/done?state=" + loc.Query().Get("state"))
			if got := rec.Header().Get("Location"); rec.Code != http.StatusFound || got != tc.want {
				t.Errorf("/logout/done: %d to %q, want %q", rec.Code, got, tc.want)
			}
		})
	}
}
