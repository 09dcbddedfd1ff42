package e2e

// The ways real IdPs are set up, produced by the real oidc-provider rather
// than by its defaults: ID tokens signed with ES256, PS256 or EdDSA
// (Keycloak, Okta), userinfo as a signed JWT (Keycloak), pairwise subjects,
// claims released at userinfo alone, email_verified as a string, refresh
// tokens reused or issued without offline_access, an issuer spelled with a
// trailing slash. Each is a client of one of two providers, behind one
// portcullis: a user signs in, reaches the upstream as themself, and stays
// signed in across two refreshes; or, where portcullis cannot follow the
// IdP, the login fails with a reason and a hint the operator can act on.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// interopConfig is the proxy in front of every IdP entry of a test
// (IDENTITY_PROVIDERS), refreshing sessions every second.
const interopConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [SESSION_KEY]
  refresh: 1s
sso:
  identity_providers:
IDENTITY_PROVIDERS
role_mapping:
  roles: [admin, user]
  default: user
  rules:
    - role: admin
      when: '"cvat-admins" in groups'
attribute_pass:
  headers:
    X-Sub: sub
    X-Email: email
    X-Email-Verified: email_verified
    X-Roles: 'join(roles, ",")'
`

// interopCase is one IdP set-up: a client at the provider and the proxy's
// entry for it, which share the id.
type interopCase struct {
	name   string
	id     string
	client oidcserver.Client
	// serverURL overrides the provider's issuer as server_url.
	serverURL string
	// scopes default to openid, email, profile, groups and offline_access.
	scopes   string
	user     string
	password string
	// pairwise: the sub is the IdP's per-client name of the user, not the
	// username.
	pairwise bool
	// refreshes says the session is refreshed at every interval; false:
	// the login left no refresh token, and the session lasts unrefreshed.
	refreshes bool
	// idTokenAlg is the alg of the ID tokens the session keeps; "" is RS256.
	idTokenAlg string
	// userinfoJWT: the IdP answers userinfo with a signed JWT
	// (application/jwt), not JSON.
	userinfoJWT bool
	// failReason, when set, is the login_failed reason expected instead
	// of a login, with hints that the line's hint must mention.
	failReason string
	hints      []string
}

// interopEntry is c's entry under sso.identity_providers.
func interopEntry(c interopCase, issuer string) string {
	serverURL, scopes := issuer, "[openid, email, profile, groups, offline_access]"
	if c.serverURL != "" {
		serverURL = c.serverURL
	}
	if c.scopes != "" {
		scopes = c.scopes
	}
	// single_sign_out: the session keeps the ID token, whose alg the
	// tests read.
	return fmt.Sprintf(`    - id: %s
      protocol: OIDC
      server_url: %s
      client_id: %s
      client_secret: portcullis-secret
      scopes: %s
      single_sign_out: true
`, c.id, serverURL, c.id, scopes)
}

func TestOIDCProviderVariationsLogIn(t *testing.T) {
	s := listen(t)
	callback := func(id string) []string { return []string{s.URL + "/.portcullis/oidc/" + id + "/callback"} }
	// dora's IdP sends email_verified as the string "true" and her one
	// group as a string, not a list (Keycloak's user attributes, ADFS).
	dora := oidcserver.User{Password: "dora-pw", Email: "dora@example.com", EmailVerified: "true", Groups: "cvat-admins"}
	alice := func(c interopCase) interopCase {
		if c.user == "" {
			c.user, c.password = oidcserver.Alice, oidcserver.AlicePassword
		}
		return c
	}
	withAlg := func(alg string) map[string]any { return map[string]any{"id_token_signed_response_alg": alg} }

	// One provider holds a key for each algorithm; each client picks its own.
	main := []interopCase{
		{name: "ID tokens signed RS256 (the default)", id: "rs256", refreshes: true},
		{name: "ID tokens signed ES256 (Keycloak, Okta)", id: "es256", idTokenAlg: "ES256", client: oidcserver.Client{Metadata: withAlg("ES256")}, refreshes: true},
		{name: "ID tokens signed PS256 (Keycloak)", id: "ps256", idTokenAlg: "PS256", client: oidcserver.Client{Metadata: withAlg("PS256")}, refreshes: true},
		{name: "ID tokens signed EdDSA", id: "eddsa", idTokenAlg: "EdDSA", client: oidcserver.Client{Metadata: withAlg("EdDSA")}, refreshes: true},
		{name: "ID tokens signed Ed25519 (RFC 9864's name) are refused, naming the algorithm", id: "ed25519",
			client:     oidcserver.Client{Metadata: withAlg("Ed25519")},
			failReason: "id_token_signing_alg", hints: []string{`"Ed25519"`, "RS256", "ES256", "EdDSA"}},
		{name: "ID tokens signed HS256 with the client secret are refused, naming the algorithm", id: "hs256",
			client:     oidcserver.Client{Metadata: withAlg("HS256")},
			failReason: "id_token_signing_alg", hints: []string{`"HS256"`, "RS256"}},
		{name: "userinfo a JWT signed RS256, email and groups only there (Keycloak)", id: "jwt-userinfo", refreshes: true, userinfoJWT: true,
			client: oidcserver.Client{Metadata: map[string]any{"userinfo_signed_response_alg": "RS256"},
				UserinfoOnly: []string{"email", "email_verified", "groups"}}},
		{name: "userinfo a JWT signed ES256, ID tokens ES256", id: "jwt-userinfo-es256", refreshes: true, userinfoJWT: true, idTokenAlg: "ES256",
			client: oidcserver.Client{Metadata: map[string]any{"userinfo_signed_response_alg": "ES256", "id_token_signed_response_alg": "ES256"},
				UserinfoOnly: []string{"groups"}}},
		{name: "userinfo a JWT signed Ed25519 (RFC 9864's name) is refused, naming the algorithm", id: "jwt-userinfo-ed25519",
			client:     oidcserver.Client{Metadata: map[string]any{"userinfo_signed_response_alg": "Ed25519"}, UserinfoOnly: []string{"groups"}},
			failReason: "userinfo_signing_alg", hints: []string{`"Ed25519"`, "RS256", "EdDSA"}},
		{name: "pairwise subjects", id: "pairwise", pairwise: true, refreshes: true,
			client: oidcserver.Client{Metadata: map[string]any{"subject_type": "pairwise"}, UserinfoOnly: []string{"groups"}}},
		{name: `groups only at userinfo, one group as a string, email_verified the string "true"`, id: "shapes", refreshes: true,
			user: "dora", password: "dora-pw", client: oidcserver.Client{UserinfoOnly: []string{"groups", "email_verified"}}},
		{name: "refresh tokens reused, not rotated (Keycloak, Entra ID)", id: "reuse", refreshes: true,
			client: oidcserver.Client{ReuseRefreshTokens: true}},
		{name: "refresh tokens issued without offline_access (Okta, Keycloak)", id: "always", refreshes: true,
			scopes: "[openid, email, profile, groups]", client: oidcserver.Client{RefreshTokens: "always"}},
		{name: "no refresh token without offline_access: the session lasts unrefreshed", id: "no-offline",
			scopes: "[openid, email, profile, groups]"},
	}
	// The other spells its issuer with a trailing slash.
	slashed := []interopCase{
		{name: "issuer with a trailing slash, server_url without", id: "slash", refreshes: true},
		{name: "issuer with a trailing slash, server_url with it", id: "slash-exact", refreshes: true},
	}

	var clients []oidcserver.Client
	for i, c := range main[1:] {
		c.client.ID, c.client.RedirectURIs = c.id, callback(c.id)
		main[i+1].client = c.client
		clients = append(clients, c.client)
	}
	// Issuer without the slash that server_url has, on the same provider.
	main = append(main, interopCase{name: "issuer without a trailing slash, server_url with one", id: "no-slash", refreshes: true,
		client: oidcserver.Client{ID: "no-slash", RedirectURIs: callback("no-slash")}})
	clients = append(clients, main[len(main)-1].client)
	first := oidcserver.Start(t, oidcserver.Options{
		ClientID: main[0].id, RedirectURIs: callback(main[0].id),
		SigningAlgs: []string{"RS256", "PS256", "ES256", "EdDSA"},
		Clients:     clients,
		ExtraUsers:  map[string]oidcserver.User{"dora": dora},
	})
	main[len(main)-1].serverURL = first.Issuer + "/"
	second := oidcserver.Start(t, oidcserver.Options{
		ClientID: slashed[0].id, RedirectURIs: callback(slashed[0].id),
		Clients:             []oidcserver.Client{{ID: slashed[1].id, RedirectURIs: callback(slashed[1].id)}},
		IssuerTrailingSlash: true,
	})
	if !strings.HasSuffix(second.Issuer, "/") {
		t.Fatalf("issuer %q has no trailing slash", second.Issuer)
	}
	slashed[0].serverURL = strings.TrimSuffix(second.Issuer, "/")

	var entries strings.Builder
	for _, c := range main {
		entries.WriteString(interopEntry(c, first.Issuer))
	}
	for _, c := range slashed {
		entries.WriteString(interopEntry(c, second.Issuer))
	}
	config := strings.Replace(interopConfig, "IDENTITY_PROVIDERS", entries.String(), 1)
	logs := s.startLogged(t, config)

	for _, c := range append(main, slashed...) {
		c = alice(c)
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := browser(t)
			resp := oidcserver.Login(t, b, s.URL+"/.portcullis/login/"+c.id+"?rd=/tasks", c.user, c.password)
			if !interopLoginEnded(t, s, logs, b, resp, "/.portcullis/oidc/"+c.id+"/callback", c.failReason, c.hints) {
				return
			}
			sub := interopIdentity(t, c, upstreamSees(t, b, s), "")
			login := interopSession(t, s, config, b)
			// Two refreshes: the second spends the refresh token the first
			// left, rotated or reused.
			for i := 1; i <= 2; i++ {
				before := interopSession(t, s, config, b)
				time.Sleep(1100 * time.Millisecond) // past session.refresh
				interopIdentity(t, c, upstreamSees(t, b, s), sub)
				if c.refreshes {
					// Renewed in the answer, or, from an IdP slower
					// than a request waits (3 s), in one that follows.
					eventually(t, fmt.Sprintf("refresh %d to reach the browser", i), func() bool {
						if interopSession(t, s, config, b).Refreshed.After(before.Refreshed) {
							return true
						}
						interopIdentity(t, c, upstreamSees(t, b, s), sub)
						return false
					})
				}
				got := s.metric(t, `portcullis_session_refreshes_total{idp="`+c.id+`",result="success"}`)
				switch {
				case c.refreshes && got < float64(i):
					t.Errorf("after %d refresh intervals, %v successful refreshes, want at least %d", i, got, i)
				case !c.refreshes && got > 0:
					t.Errorf("%v refreshes of a session that has no refresh token", got)
				}
			}
			for _, result := range []string{"refused", "error"} {
				if got := s.metric(t, `portcullis_session_refreshes_total{idp="`+c.id+`",result="`+result+`"}`); got > 0 {
					t.Errorf("session_refreshes_total{result=%q} = %v, want none", result, got)
				}
			}

			// What the IdP did, read from what the session keeps: the alg
			// of its ID tokens, and the refresh token rotated or reused.
			now := interopSession(t, s, config, b)
			want := c.idTokenAlg
			if want == "" {
				want = "RS256"
			}
			if got := jwtAlg(t, now.Tokens.IDToken); got != want {
				t.Errorf("the session's ID token is signed %s, want %s", got, want)
			}
			switch rotated := now.Tokens.RefreshToken != login.Tokens.RefreshToken; {
			case c.refreshes && c.client.ReuseRefreshTokens && rotated:
				t.Errorf("the refresh token changed, though the IdP reuses it")
			case c.refreshes && !c.client.ReuseRefreshTokens && !rotated:
				t.Errorf("the refresh token is the login's, though the IdP rotated it twice")
			case !c.refreshes && now.Tokens.RefreshToken != "":
				t.Errorf("the session holds a refresh token, though the IdP issued none")
			}
			if c.userinfoJWT {
				// Spends the session's refresh token: last.
				if ct := userinfoType(t, strings.TrimSuffix(first.Issuer, "/"), c.id, now.Tokens.RefreshToken); ct != "application/jwt" {
					t.Errorf("the IdP answers userinfo as %q, want application/jwt", ct)
				}
			}
		})
	}
}

// interopLoginEnded checks where a login of an interop case ended, resp
// being the browser's last answer: a case that names failReason was
// refused at answeredAt (the callback or ACS) with the set-up page, the
// log line of that reason and its hints, and no session; it returns false
// then, and the test has nothing more to check. Any other case ended at
// the upstream's page, signed in.
func interopLoginEnded(t *testing.T, s *stack, logs *operatorLog, b *http.Client, resp *http.Response, answeredAt, failReason string, hints []string) bool {
	t.Helper()
	if failReason != "" {
		if resp.Request.URL.Path != answeredAt {
			t.Fatalf("the login ended at %s, want %s's page", resp.Request.URL, answeredAt)
		}
		operatorSees(t, s, logs, resp, http.StatusBadGateway, setupPage, failReason, hints...)
		if code := userinfo(t, s, b.Jar.Cookies(mustURL(t, s.URL))); code != http.StatusUnauthorized {
			t.Errorf("after the refused login, /userinfo answered %d, want 401", code)
		}
		return false
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK || resp.Header.Get("X-Echo") != "1" {
		t.Fatalf("after login: status %d at %s, want the upstream's page; body:\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	return true
}

// upstreamSees is a script's request with b's session, and the headers the
// upstream got for it.
func upstreamSees(t *testing.T, b *http.Client, s *stack) http.Header {
	t.Helper()
	req, _ := http.NewRequest("GET", s.URL+"/tasks", nil)
	req.Header.Set("Accept", "application/json")
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	var got echo.Request
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil {
		t.Fatalf("status %d, want the upstream's answer; body:\n%s", resp.StatusCode, body)
	}
	return got.Header
}

var pairwiseSub = regexp.MustCompile(`^[0-9a-f]{64}$`)

// interopIdentity checks the identity headers of c's user and returns
// the sub, which must be sub when that is set (the same user after a
// refresh).
func interopIdentity(t *testing.T, c interopCase, h http.Header, sub string) string {
	t.Helper()
	email := c.user + "@example.com"
	got := h.Get("X-Sub")
	switch {
	case c.pairwise && !pairwiseSub.MatchString(got):
		t.Errorf("X-Sub = %q, want the IdP's pairwise name of %s", got, c.user)
	case !c.pairwise && got != c.user:
		t.Errorf("X-Sub = %q, want %s", got, c.user)
	case sub != "" && got != sub:
		t.Errorf("X-Sub = %q after a refresh, %q before", got, sub)
	}
	if e, v, r := h.Get("X-Email"), h.Get("X-Email-Verified"), h.Get("X-Roles"); e != email || v != "true" || r != "admin" {
		t.Errorf("X-Email %q, X-Email-Verified %q, X-Roles %q; want %s, true, admin", e, v, r, email)
	}
	return got
}

// interopSession opens b's session cookie as the proxy running config
// does, to read the tokens it keeps.
func interopSession(t *testing.T, s *stack, config string, b *http.Client) *session.Session {
	t.Helper()
	config = strings.NewReplacer("PUBLIC_URL", s.URL, "UPSTREAM_URL", s.upURL, "SESSION_KEY", sessionKey).Replace(config)
	cfg, err := proxy.ParseConfig([]byte(config), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	o, err := proxy.SessionOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	store, err := session.NewCookieStore(o)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/", nil)
	for _, c := range b.Jar.Cookies(mustURL(t, s.URL)) {
		r.AddCookie(c)
	}
	sess, err := store.Load(r)
	if err != nil || sess == nil {
		t.Fatalf("session cookie does not open: %v", err)
	}
	return sess
}

// jwtAlg is the alg in the header of the compact JWT raw.
func jwtAlg(t *testing.T, raw string) string {
	t.Helper()
	header, err := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[0])
	var h struct{ Alg string }
	if err != nil || json.Unmarshal(header, &h) != nil {
		t.Fatalf("not a JWT: %.40q", raw)
	}
	return h.Alg
}

// userinfoType is the media type of the IdP's userinfo answer to client
// id, with an access token got for refreshToken.
func userinfoType(t *testing.T, issuer, id, refreshToken string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", issuer+"/token", strings.NewReader(url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, "portcullis-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &tok) != nil {
		t.Fatalf("refresh at the IdP: status %d: %s", resp.StatusCode, body)
	}
	req, _ = http.NewRequest("GET", issuer+"/me", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("userinfo at the IdP: status %d", resp.StatusCode)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return mt
}
