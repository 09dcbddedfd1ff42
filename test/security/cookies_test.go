package security

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
)

// mint seals a session for profile the way the proxy does, with key and a
// clock set to now; it is how the suite makes cookies the proxy never issued.
func mint(t *testing.T, key []byte, now time.Time, lifetime time.Duration, p idp.Profile) string {
	t.Helper()
	o := session.Options{CookieName: "portcullis", Keys: [][]byte{key}, Lifetime: lifetime, IdleTimeout: 2 * time.Hour,
		Now: func() time.Time { return now }}
	st, err := session.NewCookieStore(o)
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	if err := st.Save(w, httptest.NewRequest("GET", "/", nil), session.New(p, idp.Tokens{}, o)); err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, c := range w.Result().Cookies() {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return strings.Join(parts, "; ")
}

var adminProfile = idp.Profile{IdP: "alpha", Sub: "mallory", Email: "mallory@evil.example", Groups: []string{"admins"}, Roles: []string{"admin"}}

func suiteKey(t *testing.T) []byte {
	k, err := base64.StdEncoding.DecodeString(sessionKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sessionUser asks /userinfo who cookie is, and checks the upstream view
// agrees: "" when cookie carries no session.
func sessionUser(t *testing.T, cookie string) string {
	t.Helper()
	r := do(t, rq{target: "/.portcullis/userinfo", headers: []string{"Cookie: " + cookie}})
	app := do(t, rq{target: "/app/x", headers: []string{"Cookie: " + cookie, "Accept: application/json"}})
	switch {
	case r.Status == http.StatusUnauthorized:
		refusedCleanly(t, app, "no session")
		if app.Status != http.StatusUnauthorized {
			t.Errorf("/app answered %d without a session, want 401", app.Status)
		}
		return ""
	case r.Status == http.StatusOK:
		var sub string
		if i := strings.Index(r.Body, `"sub":"`); i >= 0 {
			sub, _, _ = strings.Cut(r.Body[i+7:], `"`)
		}
		if len(app.Upstream) != 1 {
			t.Errorf("/userinfo knows %s but /app did not reach the upstream: %s", sub, fmtReply(app))
		}
		return sub
	}
	t.Fatalf("/userinfo answered %s", fmtReply(r))
	return ""
}

// Invariant 5: a session cookie that fails to open is no session.
func TestCookies(t *testing.T) {
	bob := sessionFor(t, "bob")
	alice := sessionFor(t, "alice")
	value := strings.TrimPrefix(bob, "portcullis=")
	key := suiteKey(t)
	now := time.Now()

	t.Run("honest session opens (control)", func(t *testing.T) {
		if u := sessionUser(t, bob); u != "bob" {
			t.Fatalf("bob's cookie is %q's session", u)
		}
	})
	t.Run("cookie minted with the proxy's key opens (control for the forgeries)", func(t *testing.T) {
		if u := sessionUser(t, mint(t, key, now, time.Hour, adminProfile)); u != "mallory" {
			t.Fatalf("minted cookie opened as %q", u)
		}
	})

	cases := map[string]string{}
	for _, pos := range []int{0, 1, 2, 5, 10, 20, len(value) / 4, len(value) / 3, len(value) / 2, 2 * len(value) / 3, len(value) - 20, len(value) - 3, len(value) - 2, len(value) - 1} {
		b, ok := flipBit(value, pos)
		if !ok {
			t.Fatalf("no bit at byte %d of the session cookie changes what it decodes to", pos)
		}
		cases[fmt.Sprintf("bit flip at byte %d", pos)] = "portcullis=" + b
	}
	for _, n := range []int{0, 1, 10, 32, len(value) / 2, len(value) - 10, len(value) - 4, len(value) - 1} {
		cases[fmt.Sprintf("truncated to %d bytes", n)] = "portcullis=" + value[:n]
	}
	for name, suffix := range map[string]string{"A": "A", "padding": "==", "NUL": "%00", "its own copy": value} {
		cases["extended with "+name] = "portcullis=" + value + suffix
	}
	cases["base64 of another encoding"] = "portcullis=" + base64.StdEncoding.EncodeToString([]byte(value))
	cases["wrong key"] = mint(t, bytes.Repeat([]byte{7}, 32), now, time.Hour, adminProfile)
	cases["old rotated-out key"] = mint(t, bytes.Repeat([]byte{9}, 32), now, time.Hour, adminProfile)
	cases["expired, sealed with the right key"] = mint(t, key, now.Add(-3*time.Hour), time.Hour, adminProfile)
	cases["beyond the configured lifetime, sealed with the right key"] = mint(t, key, now.Add(-2*time.Hour), 24*time.Hour, adminProfile)
	cases["unsigned JSON"] = "portcullis=" + base64.URLEncoding.EncodeToString([]byte(`{"v":1,"id":"x","p":{"sub":"mallory","roles":["admin"]},"e":9999999999}`))
	cases["empty value"] = "portcullis="
	cases["quoted garbage"] = `portcullis="garbage"`
	cases["session under the __Host- name over http"] = "__Host-" + bob
	cases["session under a chunk name"] = "portcullis_1=" + value
	cases["chunk marker with missing chunks"] = "portcullis=3~" + value
	cases["chunk marker over the real value"] = "portcullis=2~" + value + "; portcullis_1=" + value
	cases["a valid session twice under the head and bogus chunk"] = "portcullis=8~" + value + "; portcullis_1=x; portcullis_2=y"

	// A login flow cookie is sealed for another purpose and never opens as a session.
	fb := newBrowser(t)
	fb.start("alpha", "/x")
	u, _ := url.Parse(suite.public + "/")
	for _, c := range fb.client.Jar.Cookies(u) {
		if strings.HasPrefix(c.Name, "portcullis_login_") {
			cases["login flow cookie presented as the session"] = "portcullis=" + c.Value
		}
	}
	if _, ok := cases["login flow cookie presented as the session"]; !ok {
		t.Fatal("no login flow cookie to test with")
	}

	// Cookie tossing: two cookies of the same name that both open are
	// refused; the request has no session.
	aliceValue := strings.TrimPrefix(alice, "portcullis=")
	cases["two valid sessions of two users (cookie tossing)"] = bob + "; " + alice
	cases["two valid sessions in two Cookie headers"] = bob + "\r\nCookie: " + alice
	cases["attacker's session before the victim's"] = alice + "; " + bob
	cases["many duplicates"] = bob + "; portcullis=a; portcullis=b; portcullis=c"
	_ = aliceValue

	for name, cookie := range cases {
		t.Run(name+" is no session", func(t *testing.T) {
			if u := sessionUser(t, cookie); u != "" {
				t.Errorf("cookie opened as %q's session", u)
			}
		})
	}

	t.Run("valid session next to garbage of the same name opens as itself only", func(t *testing.T) {
		if u := sessionUser(t, "portcullis=garbage; "+bob); u != "bob" && u != "" {
			t.Errorf("opened as %q", u)
		}
	})
	t.Run("hundreds of chunk cookies are no session and cost little", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("portcullis=8~" + value[:100])
		for i := 1; i < 400; i++ {
			fmt.Fprintf(&b, "; portcullis_%d=%s", i%10, value[:100])
		}
		start := time.Now()
		if u := sessionUser(t, b.String()); u != "" {
			t.Errorf("opened as %q", u)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v", d)
		}
	})
	t.Run("oversized Cookie header is refused with 431", func(t *testing.T) {
		r := do(t, rq{target: "/app/x", headers: []string{"Cookie: " + bob + "; pad=" + strings.Repeat("x", 100<<10)}})
		refusedCleanly(t, r, "oversized cookie")
		if r.Err == nil && r.Status != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("status %d, want 431", r.Status)
		}
	})
	t.Run("large garbage session cookie under the header limit is no session", func(t *testing.T) {
		if u := sessionUser(t, "portcullis="+strings.Repeat("A", 50<<10)); u != "" {
			t.Errorf("opened as %q", u)
		}
	})
	t.Run("session replayed after logout is no session", func(t *testing.T) {
		c := sessionOf(newBrowser(t).login("bob"))
		if u := sessionUser(t, c); u != "bob" {
			t.Fatalf("fresh session is %q", u)
		}
		r := do(t, rq{target: "/.portcullis/logout", headers: []string{"Cookie: " + c}})
		if r.Status != http.StatusOK && r.Status != http.StatusFound {
			t.Fatalf("logout: %s", fmtReply(r))
		}
		if u := sessionUser(t, c); u != "" {
			t.Errorf("replayed cookie still opens as %q", u)
		}
	})
	t.Run("session cookie presented as a login flow cookie is refused", func(t *testing.T) {
		b := newBrowser(t)
		cb := b.authorize(b.start("alpha", ""), "bob", "")
		state := cb.Query().Get("state")
		r := do(t, rq{target: cb.RequestURI(), headers: []string{"Cookie: portcullis_login_" + state[:8] + "=" + value}})
		if r.Status < 400 || sessionCookie(parseSetCookies(r.Header)) != "" {
			t.Errorf("callback with a session as flow cookie: %s", fmtReply(r))
		}
	})
}

func parseSetCookies(h http.Header) []*http.Cookie {
	return (&http.Response{Header: h}).Cookies()
}

// Invariant 3: the proxy's own cookies never reach the upstream.
func TestCookiesNeverReachUpstream(t *testing.T) {
	bob := sessionFor(t, "bob")
	own := []string{bob, "portcullis_1=chunk", "portcullis_7=chunk", "portcullis_42=chunk", "portcullis_login_abcdefgh=flow", "__Host-portcullis=x", "__Host-portcullis_login_x=y"}
	for _, ctx := range []struct{ name, target, extra string }{
		{"authenticated", "/app/x", ""}, {"bypass", "/public/x", ""}, {"credentials bypass", "/api/x", "Authorization: Bearer t"},
	} {
		for _, layout := range []struct {
			name  string
			lines func(app string) []string
		}{
			{"one Cookie header", func(app string) []string { return []string{"Cookie: " + strings.Join(own, "; ") + "; " + app} }},
			{"app cookie first", func(app string) []string { return []string{"Cookie: " + app + "; " + strings.Join(own, "; ")} }},
			{"no spaces", func(app string) []string { return []string{"Cookie: " + strings.Join(own, ";") + ";" + app} }},
			{"one Cookie header per cookie", func(app string) []string {
				var l []string
				for _, c := range own {
					l = append(l, "Cookie: "+c)
				}
				return append(l, "Cookie: "+app)
			}},
			{"lower-case header name", func(app string) []string { return []string{"cookie: " + strings.Join(own, "; ") + "; " + app} }},
		} {
			t.Run(ctx.name+"/"+layout.name, func(t *testing.T) {
				h := layout.lines("app=1")
				if ctx.extra != "" {
					h = append(h, ctx.extra)
				}
				r := do(t, rq{target: ctx.target, headers: h})
				if r.Status != 200 || len(r.Upstream) != 1 {
					t.Fatalf("got %s", fmtReply(r))
				}
				got := r.Upstream[0].Values("Cookie")
				if len(got) != 1 || got[0] != "app=1" {
					t.Errorf("upstream Cookie = %q, want [app=1]", got)
				}
			})
		}
	}
}

// flipBit flips one bit of the cookie value at pos so that the bytes it
// decodes to change. securecookie's base64 decoder ignores the unused low
// bits of the last character, so a flip there would leave the same sealed
// bytes: the same session, not a forgery. Lower bits are tried first.
func flipBit(value string, pos int) (string, bool) {
	orig, err := base64.URLEncoding.DecodeString(value)
	if err != nil {
		return "", false
	}
	for bit := byte(1); bit != 0 && bit < 0x40; bit <<= 1 {
		b := []byte(value)
		b[pos] ^= bit
		if b[pos] == '=' || b[pos] == ';' || b[pos] < 0x21 || b[pos] > 0x7e {
			continue
		}
		if dec, err := base64.URLEncoding.DecodeString(string(b)); err == nil && string(dec) == string(orig) {
			continue
		}
		return string(b), true
	}
	return "", false
}
