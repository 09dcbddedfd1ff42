package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// multiConfig is two OIDC providers behind one portcullis; MODE is the
// selection mode.
const multiConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [SESSION_KEY]
sso:
  selection_mode: MODE
  identity_providers:
    - id: alpha
      name: Alpha SSO
      protocol: OIDC
      server_url: ALPHA
      client_id: portcullis
      client_secret: portcullis-secret
      email_domain: alpha.example
      weight: 20
    - id: beta
      name: Beta SSO
      protocol: OIDC
      server_url: BETA
      client_id: portcullis
      client_secret: portcullis-secret
      email_domain: beta.example
      weight: 10
role_mapping:
  roles: [user]
  default: user
attribute_pass:
  headers:
    X-Email: email
`

// multiIdP is one portcullis per selection mode in front of the same two
// real OIDC providers.
type multiIdP struct {
	alpha, beta *oidcserver.Server
	byMode      map[string]*stack
}

func startMultiIdP(t *testing.T, modes ...string) *multiIdP {
	t.Helper()
	m := &multiIdP{byMode: map[string]*stack{}}
	var alphaURIs, betaURIs []string
	for _, mode := range modes {
		s := listen(t)
		m.byMode[mode] = s
		alphaURIs = append(alphaURIs, s.URL+"/.portcullis/oidc/alpha/callback")
		betaURIs = append(betaURIs, s.URL+"/.portcullis/oidc/beta/callback")
	}
	m.alpha = oidcserver.Start(t, oidcserver.Options{RedirectURIs: alphaURIs})
	m.beta = oidcserver.Start(t, oidcserver.Options{RedirectURIs: betaURIs})
	for _, mode := range modes {
		m.byMode[mode].start(t, strings.NewReplacer("MODE", mode, "ALPHA", m.alpha.Issuer, "BETA", m.beta.Issuer).Replace(multiConfig))
	}
	return m
}

// sessionIdP is the IdP the browser's session came from, per /userinfo.
func sessionIdP(t *testing.T, b *http.Client, s *stack) string {
	t.Helper()
	resp, err := b.Get(s.URL + "/.portcullis/userinfo")
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		IdP   string `json:"idp"`
		Email string `json:"email"`
	}
	json.Unmarshal([]byte(readBody(t, resp)), &info)
	return info.IdP
}

var chooserLink = regexp.MustCompile(`<a class="button" href="([^"]+)">Continue with ([^<]+)</a>`)

func TestMultiIdP(t *testing.T) {
	m := startMultiIdP(t, "chooser", "email_address", "lowest_weight")

	t.Run("the chooser lists both IdPs and each login works", func(t *testing.T) {
		s := m.byMode["chooser"]
		resp, err := browser(t).Get(s.URL + "/reports?q=1")
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		links := chooserLink.FindAllStringSubmatch(body, -1)
		if len(links) != 2 || links[0][2] != "Alpha SSO" || links[1][2] != "Beta SSO" {
			t.Fatalf("chooser at %s shows %q, want Alpha SSO and Beta SSO:\n%s", resp.Request.URL, links, body)
		}
		for i, want := range []string{"alpha", "beta"} {
			href := strings.ReplaceAll(links[i][1], "&amp;", "&")
			if !strings.HasPrefix(href, "/.portcullis/login/"+want+"?rd=") {
				t.Errorf("button %d leads to %q, want /.portcullis/login/%s?rd=...", i, href, want)
			}
			b := browser(t)
			resp := oidcserver.Login(t, b, s.URL+href, oidcserver.Alice, oidcserver.AlicePassword)
			readBody(t, resp)
			if resp.StatusCode != http.StatusOK || resp.Request.URL.RequestURI() != "/reports?q=1" {
				t.Errorf("login with %s: status %d at %s, want the page asked for", want, resp.StatusCode, resp.Request.URL)
			}
			if got := sessionIdP(t, b, s); got != want {
				t.Errorf("login with %s: session from %q", want, got)
			}
		}
	})

	t.Run("the email's domain picks the IdP", func(t *testing.T) {
		s := m.byMode["email_address"]
		b := browser(t)
		resp, err := b.Get(s.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); !strings.Contains(body, `<label for="email">`) {
			t.Fatalf("email mode shows no email form at %s:\n%s", resp.Request.URL, body)
		}
		resp, err = noRedirect(b).PostForm(s.URL+"/.portcullis/login", url.Values{"email": {"Carol@Beta.Example"}, "rd": {"/"}})
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/.portcullis/login/beta?rd=%2F" {
			t.Fatalf("email at beta.example: status %d Location %q, want 303 to /.portcullis/login/beta", resp.StatusCode, loc)
		}
		readBody(t, oidcserver.Login(t, b, s.URL+resp.Header.Get("Location"), oidcserver.Bob, oidcserver.BobPassword))
		if got := sessionIdP(t, b, s); got != "beta" {
			t.Errorf("after the email login: session from %q, want beta", got)
		}
	})

	t.Run("an unknown email domain gets a clear message", func(t *testing.T) {
		s := m.byMode["email_address"]
		resp, err := browser(t).PostForm(s.URL+"/.portcullis/login", url.Values{"email": {"dave@nowhere.example"}})
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `role="alert"`) ||
			!strings.Contains(body, "There is no sign-in for the domain nowhere.example") || !strings.Contains(body, `value="dave@nowhere.example"`) {
			t.Fatalf("unknown domain: status %d, want 400 with the message and the address kept:\n%s", resp.StatusCode, body)
		}
	})

	t.Run("login/{idp} works directly whatever the mode", func(t *testing.T) {
		s := m.byMode["email_address"]
		b := browser(t)
		readBody(t, oidcserver.Login(t, b, s.URL+"/.portcullis/login/alpha", oidcserver.Alice, oidcserver.AlicePassword))
		if got := sessionIdP(t, b, s); got != "alpha" {
			t.Errorf("direct login at alpha: session from %q", got)
		}
	})

	t.Run("lowest_weight goes straight to the lightest IdP", func(t *testing.T) {
		s := m.byMode["lowest_weight"]
		resp, err := noRedirect(browser(t)).Get(s.URL + "/.portcullis/login?rd=/x")
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != "/.portcullis/login/beta?rd=%2Fx" {
			t.Fatalf("lowest_weight: status %d Location %q, want beta (weight 10)", resp.StatusCode, loc)
		}
	})

	t.Run("a callback at beta for a login started at alpha is refused", func(t *testing.T) {
		s := m.byMode["chooser"]
		b := browser(t)
		// The browser logs in at alpha but stops before alpha's callback...
		resp := oidcserver.Login(t, beforeCallback(b), s.URL+"/.portcullis/login/alpha", oidcserver.Alice, oidcserver.AlicePassword)
		readBody(t, resp)
		callback := resp.Header.Get("Location")
		if !strings.HasPrefix(callback, s.URL+"/.portcullis/oidc/alpha/callback?") {
			t.Fatalf("alpha redirected to %q, want its callback", callback)
		}
		// ...and the answer is delivered to beta's callback instead.
		resp, err := b.Get(strings.Replace(callback, "/oidc/alpha/", "/oidc/beta/", 1))
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "started somewhere else") {
			t.Fatalf("mixed-up callback: status %d, want 400 'started somewhere else':\n%s", resp.StatusCode, body)
		}
		if got := sessionIdP(t, b, s); got != "" {
			t.Errorf("the mixed-up callback made a session from %q", got)
		}
		// The state was spent: the genuine callback cannot be replayed after it.
		resp, err = b.Get(callback)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("alpha's callback after the refused one: status %d, want 400", resp.StatusCode)
		}
	})
}
