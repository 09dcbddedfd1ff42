package security

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// refusedLogin asserts a callback answer refused the login: an error status,
// no session cookie, and no session in the browser afterwards.
func refusedLogin(t *testing.T, b *browser, s step) {
	t.Helper()
	if s.Status < 400 || s.Status >= 600 {
		t.Errorf("callback answered %d (Location %q), want a refusal", s.Status, s.Location)
	}
	if v := sessionCookie(s.SetCookies); v != "" {
		t.Errorf("callback set a session cookie")
	}
	if u := b.get(suite.public + "/.portcullis/userinfo"); u.Status != http.StatusUnauthorized {
		t.Errorf("after the refused login /userinfo answered %d: %s", u.Status, u.Body)
	}
}

// Forged ID tokens: each is refused, whatever it claims.
func TestLoginTokenForgery(t *testing.T) {
	t.Run("honest token logs in (control)", func(t *testing.T) {
		b := newBrowser(t)
		s := b.get(b.authorize(b.start("alpha", "/x"), "bob", "").String())
		if s.Status != http.StatusFound || sessionCookie(s.SetCookies) == "" {
			t.Fatalf("honest login refused: %d %q", s.Status, s.Body)
		}
	})
	for _, mode := range forgeModes {
		for _, idp := range []string{"alpha", "beta"} {
			t.Run(idp+"/"+mode+" is refused", func(t *testing.T) {
				b := newBrowser(t)
				s := b.get(b.authorize(b.start(idp, "/x"), "bob", mode).String())
				refusedLogin(t, b, s)
			})
		}
	}
}

// Invariant 7: login state is single use, bound to the browser and to the
// IdP it was started for.
func TestLoginCSRF(t *testing.T) {
	withQuery := func(u *url.URL, set map[string]string, del ...string) string {
		c := *u
		q := c.Query()
		for k, v := range set {
			q.Set(k, v)
		}
		for _, k := range del {
			q.Del(k)
		}
		c.RawQuery = q.Encode()
		return c.String()
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, b *browser) step
	}{
		{"missing state", func(t *testing.T, b *browser) step {
			return b.get(withQuery(b.authorize(b.start("alpha", ""), "bob", ""), nil, "state"))
		}},
		{"empty state", func(t *testing.T, b *browser) step {
			return b.get(withQuery(b.authorize(b.start("alpha", ""), "bob", ""), map[string]string{"state": ""}))
		}},
		{"forged state", func(t *testing.T, b *browser) step {
			return b.get(withQuery(b.authorize(b.start("alpha", ""), "bob", ""), map[string]string{"state": "AAAAAAAAAAAAAAAAAAAAAA"}))
		}},
		{"state with its case changed", func(t *testing.T, b *browser) step {
			cb := b.authorize(b.start("alpha", ""), "bob", "")
			return b.get(withQuery(cb, map[string]string{"state": swapCase(cb.Query().Get("state"))}))
		}},
		{"state with a suffix", func(t *testing.T, b *browser) step {
			cb := b.authorize(b.start("alpha", ""), "bob", "")
			return b.get(withQuery(cb, map[string]string{"state": cb.Query().Get("state") + "x"}))
		}},
		{"state that is too long", func(t *testing.T, b *browser) step {
			return b.get(withQuery(b.authorize(b.start("alpha", ""), "bob", ""), map[string]string{"state": strings.Repeat("A", 5000)}))
		}},
		{"state of another browser (login CSRF)", func(t *testing.T, b *browser) step {
			attacker := newBrowser(t)
			cb := attacker.authorize(attacker.start("alpha", ""), "eve", "")
			b.start("alpha", "") // the victim has a login of its own in progress
			return b.get(cb.String())
		}},
		{"state of another browser, victim has no login in progress", func(t *testing.T, b *browser) step {
			attacker := newBrowser(t)
			return b.get(attacker.authorize(attacker.start("alpha", ""), "eve", "").String())
		}},
		{"flow cookie moved under another state's name", func(t *testing.T, b *browser) step {
			cb := b.authorize(b.start("alpha", ""), "bob", "")
			forged := "BBBBBBBBBBBBBBBBBBBBBB"
			u, _ := url.Parse(suite.public + "/")
			var flow string
			for _, c := range b.client.Jar.Cookies(u) {
				if strings.HasPrefix(c.Name, "portcullis_login_") {
					flow = c.Value
				}
			}
			b.client.Jar.SetCookies(u, []*http.Cookie{{Name: "portcullis_login_" + forged[:8], Value: flow, Path: "/"}})
			return b.get(withQuery(cb, map[string]string{"state": forged}))
		}},
		{"replayed callback", func(t *testing.T, b *browser) step {
			cb := b.authorize(b.start("alpha", ""), "bob", "")
			first := b.get(cb.String())
			if first.Status != http.StatusFound {
				t.Fatalf("first use refused: %d", first.Status)
			}
			// Log out so a replay cannot ride on the first session.
			b.get(suite.public + "/.portcullis/logout")
			return b.get(cb.String())
		}},
		{"replayed code in a new login, caught by PKCE", func(t *testing.T, b *browser) step {
			old := b.authorize(b.start("alpha", ""), "bob", "")
			b.get(old.String())
			b.get(suite.public + "/.portcullis/logout")
			fresh := b.authorize(b.start("alpha", ""), "bob", "")
			return b.get(withQuery(fresh, map[string]string{"code": old.Query().Get("code")}))
		}},
		{"replayed code in a new login, caught by the nonce", func(t *testing.T, b *browser) step {
			old := b.authorize(b.start("alpha", ""), "bob", "skip_pkce")
			b.get(old.String())
			b.get(suite.public + "/.portcullis/logout")
			fresh := b.authorize(b.start("alpha", ""), "bob", "")
			return b.get(withQuery(fresh, map[string]string{"code": old.Query().Get("code")}))
		}},
		{"attacker's code in the victim's own login (code injection)", func(t *testing.T, b *browser) step {
			attacker := newBrowser(t)
			evil := attacker.authorize(attacker.start("alpha", ""), "eve", "skip_pkce")
			mine := b.authorize(b.start("alpha", ""), "bob", "")
			return b.get(withQuery(mine, map[string]string{"code": evil.Query().Get("code")}))
		}},
		{"state started at beta delivered to alpha's callback", func(t *testing.T, b *browser) step {
			cb := b.authorize(b.start("beta", ""), "bob", "")
			cb.Path = "/.portcullis/oidc/alpha/callback"
			return b.get(cb.String())
		}},
		{"state started at alpha delivered to beta's callback", func(t *testing.T, b *browser) step {
			cb := b.authorize(b.start("alpha", ""), "bob", "")
			cb.Path = "/.portcullis/oidc/beta/callback"
			return b.get(cb.String())
		}},
		{"alpha's login answered by beta (code from another IdP)", func(t *testing.T, b *browser) step {
			auth := b.start("alpha", "")
			other, _ := url.Parse(suite.beta.issuer + "/authorize?" + auth.RawQuery)
			return b.get(b.authorize(other, "bob", "").String())
		}},
		{"answer naming another issuer (RFC 9207 iss)", func(t *testing.T, b *browser) step {
			return b.get(withQuery(b.authorize(b.start("alpha", ""), "bob", ""), map[string]string{"iss": suite.beta.issuer}))
		}},
		{"IdP error instead of a code", func(t *testing.T, b *browser) step {
			return b.get(withQuery(b.authorize(b.start("alpha", ""), "bob", ""), map[string]string{"error": "access_denied", "error_description": "<script>alert(1)</script>"}, "code"))
		}},
		{"no code", func(t *testing.T, b *browser) step {
			return b.get(withQuery(b.authorize(b.start("alpha", ""), "bob", ""), nil, "code"))
		}},
		{"callback of an unknown IdP", func(t *testing.T, b *browser) step {
			cb := b.authorize(b.start("alpha", ""), "bob", "")
			cb.Path = "/.portcullis/oidc/nope/callback"
			return b.get(cb.String())
		}},
		{"callback of the unreachable IdP", func(t *testing.T, b *browser) step {
			cb := b.authorize(b.start("alpha", ""), "bob", "")
			cb.Path = "/.portcullis/oidc/down/callback"
			return b.get(cb.String())
		}},
		{"login at the unreachable IdP", func(t *testing.T, b *browser) step {
			return b.get(suite.public + "/.portcullis/login/down?rd=/x")
		}},
		{"login at an unknown IdP", func(t *testing.T, b *browser) step {
			return b.get(suite.public + "/.portcullis/login/nope?rd=/x")
		}},
	} {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			b := newBrowser(t)
			refusedLogin(t, b, tc.run(t, b))
		})
	}
}

func swapCase(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z':
			b[i] = c - 32
		case 'A' <= c && c <= 'Z':
			b[i] = c + 32
		}
	}
	return string(b)
}
