package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// sameIssuerConfig has two entries for one OIDC client at one issuer, as
// an operator has them who offers one IdP under two names (other scopes, a
// preset beside a generic entry): the IdP knows one client, and one
// back-channel logout URI, company's. wiki is another client of the issuer.
const sameIssuerConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [SESSION_KEY]
  store: STORE
  redis: {url: REDIS_URL}
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
    - id: company-groups
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups]
    - id: wiki
      protocol: OIDC
      server_url: ISSUER
      client_id: wiki
      client_secret: portcullis-secret
role_mapping:
  roles: [user]
  default: user
`

// Two entries for one client at one issuer: a login started at one is
// refused at the other's callback (login state is bound to its entry),
// and the IdP's back-channel logout of a user, sent to the one URI it
// knows, ends the user's sessions at both: the token is addressed to the
// client, which both entries are. The sessions of another client's entry
// (wiki) are not the token's to end.
func TestTwoEntriesForOneOIDCClient(t *testing.T) {
	for _, store := range []string{cookieStore, redisStore} {
		t.Run(store+" store", func(t *testing.T) { twoEntriesForOneOIDCClient(t, store) })
	}
}

func twoEntriesForOneOIDCClient(t *testing.T, store string) {
	s := listen(t)
	op := oidcserver.Start(t, oidcserver.Options{
		RedirectURIs: []string{s.URL + "/.portcullis/oidc/company/callback", s.URL + "/.portcullis/oidc/company-groups/callback"},
		// Without sid, the token names alice by sub: every session of hers.
		BackchannelLogoutURI:        s.URL + "/.portcullis/oidc/company/backchannel-logout",
		BackchannelLogoutWithoutSID: true,
		Clients:                     []oidcserver.Client{{ID: "wiki", RedirectURIs: []string{s.URL + "/.portcullis/oidc/wiki/callback"}}},
	})
	redisURL := "redis://unused:6379"
	if store == redisStore {
		redisURL = redisserver.Start(t).URL
	}
	s.start(t, strings.NewReplacer("ISSUER", op.Issuer, "STORE", store, "REDIS_URL", redisURL).Replace(sameIssuerConfig))

	t.Run("a login started at one entry is refused at the other's callback", func(t *testing.T) {
		b := browser(t)
		b.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
			req.URL.Path = strings.Replace(req.URL.Path, "/oidc/company/callback", "/oidc/company-groups/callback", 1)
			return nil
		}
		resp := oidcserver.Login(t, b, s.URL+"/.portcullis/login/company?rd=/", oidcserver.Alice, oidcserver.AlicePassword)
		body := readBody(t, resp)
		if !strings.HasSuffix(resp.Request.URL.Path, "/oidc/company-groups/callback") || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("company's login finished at company-groups' callback: %d at %s, want 400 there\n%s", resp.StatusCode, resp.Request.URL, body)
		}
		if code := userinfo(t, s, b.Jar.Cookies(mustURL(t, s.URL))); code != http.StatusUnauthorized {
			t.Errorf("after the refused callback: userinfo %d, want 401 (no session)", code)
		}
	})

	t.Run("back-channel logout ends the user's sessions at both entries of the client", func(t *testing.T) {
		sessions := map[string][]*http.Cookie{}
		for _, id := range []string{"wiki", "company", "company-groups"} {
			b := browser(t)
			readBody(t, oidcserver.Login(t, b, s.URL+"/.portcullis/login/"+id+"?rd=/", oidcserver.Alice, oidcserver.AlicePassword))
			sessions[id] = b.Jar.Cookies(mustURL(t, s.URL))
			if code := userinfo(t, s, sessions[id]); code != http.StatusOK {
				t.Fatalf("alice's login at %s: userinfo %d", id, code)
			}
			if id == "company-groups" {
				// The IdP calls company's back-channel URI before it answers.
				readBody(t, oidcserver.Logout(t, b, op.Issuer+"/session/end"))
			}
		}
		want := map[string]int{"company": http.StatusUnauthorized, "company-groups": http.StatusUnauthorized, "wiki": http.StatusOK}
		for id, cookies := range sessions {
			if code := userinfo(t, s, cookies); code != want[id] {
				t.Errorf("alice's session at %s after the IdP's back-channel logout for client portcullis: userinfo %d, want %d", id, code, want[id])
			}
		}
	})
}
