package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// A logout token names the user by the IdP's own sub. An IdP entry that
// maps the profile's sub to another claim (claims: {sub: email}, as one
// does with Azure's oid or Google's email) still has the user's sessions
// ended by a token that names sub alone, with either store.
func TestBackchannelLogoutOfAUserWhoseSubIsMapped(t *testing.T) {
	for _, store := range []string{cookieStore, redisStore} {
		t.Run(store+" store", func(t *testing.T) {
			s := listen(t)
			idp := oidcserver.Start(t, oidcserver.Options{
				RedirectURIs:                []string{s.URL + "/.portcullis/oidc/company/callback"},
				BackchannelLogoutURI:        s.URL + "/.portcullis/oidc/company/backchannel-logout",
				BackchannelLogoutWithoutSID: true,
			})
			redisURL := "redis://unused:6379"
			if store == redisStore {
				redisURL = redisserver.Start(t).URL
			}
			s.start(t, strings.NewReplacer("ISSUER", idp.Issuer, "store: redis", "store: "+store, "REDIS_URL", redisURL, "REFRESH", "0s",
				"offline_access]\n", "offline_access]\n      claims: {sub: email}\n").Replace(replicasConfig))

			login := func(user, password string) []*http.Cookie {
				b := browser(t)
				readBody(t, oidcserver.Login(t, b, s.URL+"/", user, password))
				return b.Jar.Cookies(mustURL(t, s.URL))
			}
			// Alice in two browsers, two sessions at the IdP; bob in a third.
			b := browser(t)
			readBody(t, oidcserver.Login(t, b, s.URL+"/", oidcserver.Alice, oidcserver.AlicePassword))
			first := b.Jar.Cookies(mustURL(t, s.URL))
			second := login(oidcserver.Alice, oidcserver.AlicePassword)
			bobs := login(oidcserver.Bob, oidcserver.BobPassword)
			if sub := profileSub(t, s, first); sub != "alice@example.com" {
				t.Fatalf("the profile's sub is %q, want the email claim", sub)
			}

			// The IdP calls the proxy before it answers the browser.
			readBody(t, oidcserver.Logout(t, b, idp.Issuer+"/session/end"))
			for name, cookies := range map[string][]*http.Cookie{"alice's first": first, "alice's second": second} {
				if code := userinfo(t, s, cookies); code != http.StatusUnauthorized {
					t.Errorf("%s session after the IdP's back-channel logout: userinfo %d, want 401", name, code)
				}
			}
			if code := userinfo(t, s, bobs); code != http.StatusOK {
				t.Errorf("bob's session: userinfo %d, want 200", code)
			}
		})
	}
}
