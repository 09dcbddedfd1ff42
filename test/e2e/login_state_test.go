package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// loginStateConfig has an OIDC and a SAML IdP, whose login states differ:
// SAML's answer is a cross-site POST, which needs SameSite=None cookies.
const loginStateConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [SESSION_KEY]
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups]
    - id: corp
      protocol: SAML
      entity_id: ENTITY_ID
      metadata_url: METADATA_URL
role_mapping:
  roles: [admin, user]
  default: user
attribute_pass:
  headers:
    X-Email: email
`

// hostileImages is how many <img> tags another site's page points at each
// IdP's login start: more than the 8 login states a browser may hold.
const hostileImages = 12

// hostileSite serves, on another loopback address than the proxy's (so
// another site), a page that loads images from the proxy's login starts,
// hostileImages for each IdP in idps, one after the other; its title says
// "loaded" once each has loaded or failed. It also links to the login at
// the first of idps (#sign-in), as a portal does.
func hostileSite(t *testing.T, proxyURL string, idps ...string) string {
	t.Helper()
	var srcs []string
	for _, id := range idps {
		for i := range hostileImages {
			srcs = append(srcs, fmt.Sprintf("%s/.portcullis/login/%s?rd=/x%d", proxyURL, id, i))
		}
	}
	list, err := json.Marshal(srcs)
	if err != nil {
		t.Fatal(err)
	}
	page := `<!doctype html><title>loading</title><a id="sign-in" href="` + proxyURL + `/.portcullis/login/` + idps[0] + `?rd=/projects">Sign in</a><script>
const srcs = ` + string(list) + `;
let i = 0;
function next() {
  if (i === srcs.length) { document.title = "loaded"; return; }
  const img = new Image();
  img.onload = img.onerror = next;
  img.src = srcs[i++];
}
next();
</script>`
	return anotherSitesPage(t, page)
}

// anotherSitesPage serves page on another loopback address than the
// proxy's, so on another site, and returns its URL.
func anotherSitesPage(t *testing.T, page string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(page))
	})}}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// loginStateCookies are the names of the proxy's login-state cookies the
// browser holds for u.
func loginStateCookies(u string) chromedp.Action[[]string] {
	return func(ctx context.Context, target *chromedp.Target) ([]string, error) {
		res, err := cdp.Call(ctx, target, network.GetCookies, network.GetCookiesParams{URLs: []string{u}})
		if err != nil {
			return nil, err
		}
		var names []string
		for _, c := range res.Cookies {
			if strings.Contains(c.Name, "_login_") {
				names = append(names, c.Name+" (SameSite="+string(c.SameSite)+")")
			}
		}
		return names, nil
	}
}

// thirdPartyCookiesAllowed is a Chromium profile that sends and takes the
// cookies of other sites than the page's, as Chrome's default settings do
// (Firefox partitions them by the page's site, Safari blocks them); a new
// headless Chromium blocks them ("UserPreferences"), and so hides what
// another site's page can do to a Chrome user.
func thirdPartyCookiesAllowed(t *testing.T) chromedp.ExecAllocatorOption {
	t.Helper()
	profile := t.TempDir()
	if err := os.MkdirAll(filepath.Join(profile, "Default"), 0o755); err != nil {
		t.Fatal(err)
	}
	prefs := `{"profile": {"cookie_controls_mode": 0, "block_third_party_cookies": false}}`
	if err := os.WriteFile(filepath.Join(profile, "Default", "Preferences"), []byte(prefs), 0o644); err != nil {
		t.Fatal(err)
	}
	return chromedp.UserDataDir(profile)
}

// TestAnotherSitesImagesDoNotEvictALoginInChromium has a user part way
// through a login, at the IdP's form, when a page of another site that
// points a few dozen <img> tags at the proxy's login starts opens in
// another tab. A browser holds 8 login states at most: had each image
// started a login, the user's own would have been expired, and their
// sign-in refused when the IdP sends them back. Chromium says the images
// are another site's subresources (Sec-Fetch-Site, Sec-Fetch-Dest), so the
// proxy starts no login for them, and the user's finishes.
func TestAnotherSitesImagesDoNotEvictALoginInChromium(t *testing.T) {
	s := listenTLS(t)
	oidcIdP := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{s.URL + "/.portcullis/oidc/company/callback"}})
	samlIdP := samlserver.Start(t, samlserver.Options{Users: []samlserver.User{samlAlice}})
	s.start(t, strings.NewReplacer("ISSUER", oidcIdP.Issuer, "ENTITY_ID", samlIdP.EntityID(),
		"METADATA_URL", samlIdP.MetadataURL()).Replace(loginStateConfig))
	rec := httptest.NewRecorder()
	s.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/.portcullis/saml/corp/metadata", nil))
	if err := samlIdP.AddServiceProviderXML(rec.Body.Bytes()); err != nil {
		t.Fatal(err)
	}
	hostile := hostileSite(t, s.URL, "company", "corp")
	// The proxy's certificate is self-signed.
	browser := newChromium(t, chromedp.Flag("ignore-certificate-errors", true), thirdPartyCookiesAllowed(t))

	type idpForm struct{ userField, submit, user, password string }
	forms := map[string]idpForm{
		"company": {`input[name="username"]`, `button[name="login"]`, oidcserver.Alice, oidcserver.AlicePassword},
		"corp":    {`input[name="user"]`, `input[type="submit"]`, samlAlice.Name, samlAlice.Password},
	}
	signIn := func(t *testing.T, tab context.Context, id string) {
		t.Helper()
		f := forms[id]
		step(t, tab, "sign in at the IdP",
			chromedp.SendKeys(chromedp.CSS(f.userField), f.user),
			chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), f.password),
			chromedp.Click(chromedp.CSS(f.submit)),
			chromedp.WaitVisible(chromedp.CSS(`#email, [role="alert"]`))) // the application, or a refusal
		if loc := value(t, tab, "read the location", chromedp.Location()); loc != s.URL+"/projects" {
			body := value(t, tab, "read the page", chromedp.Text(chromedp.CSS(`body`)))
			t.Fatalf("the login ended at %s, want %s/projects:\n%s", loc, s.URL, body)
		}
		if email := value(t, tab, "read the email", chromedp.Text(chromedp.CSS(`#email`))); email != "alice@example.com" {
			t.Errorf("the echo page shows %q", email)
		}
	}

	for _, id := range []string{"company", "corp"} {
		t.Run("a login at "+id, func(t *testing.T) {
			tab := newTab(t, browser)
			step(t, tab, "start the login", chromedp.Navigate(s.URL+"/.portcullis/login/"+id+"?rd=/projects"),
				chromedp.WaitVisible(chromedp.CSS(`input[name="password"]`)))
			own := value(t, tab, "read the login states", loginStateCookies(s.URL))
			if len(own) != 1 {
				t.Fatalf("the login's start left login states %q, want one", own)
			}
			refusedBefore := s.metric(t, `portcullis_requests_total{code="403",decision="forbidden"}`)

			other, cancel := chromedp.NewContext(tab) // another tab of the same browser context
			t.Cleanup(cancel)
			if err := chromedp.Do(other); err != nil { // opens it, for as long as the test
				t.Fatalf("open another tab: %v", err)
			}
			step(t, other, "open the other site's page", chromedp.Navigate(hostile))
			value(t, other, "wait for its images", chromedp.Poll[bool](`document.title === "loaded"`))
			if held := value(t, tab, "read the login states", loginStateCookies(s.URL)); len(held) != 1 || held[0] != own[0] {
				t.Errorf("after the other site's page the browser holds login states %q, want only its own %q", held, own)
			}
			if n := s.metric(t, `portcullis_requests_total{code="403",decision="forbidden"}`) - max(refusedBefore, 0); n != 2*hostileImages {
				t.Errorf("the proxy refused %v of the page's %d images: Chromium did not say they were another site's", n, 2*hostileImages)
			}
			signIn(t, tab, id)
		})
	}

	t.Run("a link on the other site still starts a login", func(t *testing.T) {
		tab := newTab(t, browser)
		step(t, tab, "open the other site's page", chromedp.Navigate(hostile))
		value(t, tab, "wait for its images", chromedp.Poll[bool](`document.title === "loaded"`))
		step(t, tab, "follow its link to sign in", chromedp.Click(chromedp.CSS(`#sign-in`)),
			chromedp.WaitVisible(chromedp.CSS(`input[name="password"]`)))
		signIn(t, tab, "company")
	})
}

// TestSAMLAnswerFromAnotherSiteOverHTTPIsNamedInChromium: a SAML IdP on
// another site (127.0.0.2) posts its answer to a proxy on plain http, as in
// a development set-up with the IdP in a container of its own. Chromium
// withholds the login's state cookie from that cross-site POST: it is
// SameSite=Lax, since browsers refuse SameSite=None without Secure, which
// needs https. The login cannot finish; the log says why and what to
// change, rather than the list of causes for a cookie that did not come
// back, and the user is told it is not their doing.
// TestLogoutFromAnotherSiteIsAskedInChromium: a link on another site to
// the proxy's logout does not sign the user out (logout CSRF); the page it
// opens asks, and its button signs out, at the IdP too (single_sign_out).
// That answer goes on to the IdP, another origin, which the page's
// Content-Security-Policy must let a form's redirect reach.
func TestLogoutFromAnotherSiteIsAskedInChromium(t *testing.T) {
	s := listen(t)
	idp := oidcserver.Start(t, oidcserver.Options{
		RedirectURIs:           []string{s.URL + "/.portcullis/oidc/company/callback"},
		PostLogoutRedirectURIs: []string{s.URL + "/.portcullis/logout/done"},
	})
	s.start(t, strings.NewReplacer("ISSUER", idp.Issuer, "  refresh: 1s\n", "").Replace(refreshConfig))
	other := anotherSitesPage(t, `<!doctype html><title>elsewhere</title><a id="out" href="`+s.URL+`/.portcullis/logout?rd=/projects">Sign out</a>`)
	tab := newTab(t, newChromium(t))
	signedIn := func(what string) {
		t.Helper()
		step(t, tab, what, chromedp.Navigate(s.URL+"/projects"), chromedp.WaitVisible(chromedp.CSS(`strong#email, input[name="password"]`)))
		if loc := value(t, tab, "read the location", chromedp.Location()); loc != s.URL+"/projects" {
			t.Fatalf("%s: the browser is at %s, want the application at %s/projects", what, loc, s.URL)
		}
	}
	askedToSignOut := func() {
		t.Helper()
		step(t, tab, "follow another site's link to the logout", chromedp.Navigate(other), chromedp.Click(chromedp.CSS(`#out`)),
			chromedp.WaitVisible(chromedp.CSS(`h1`)))
		if h1 := value(t, tab, "read the heading", chromedp.Text(chromedp.CSS(`h1`))); h1 != "Sign out?" {
			t.Fatalf("another site's link to the logout opened a page headed %q, want the question Sign out?", h1)
		}
	}

	step(t, tab, "open the application", chromedp.Navigate(s.URL+"/projects"))
	step(t, tab, "log in at the IdP",
		chromedp.WaitVisible(chromedp.CSS(`input[name="password"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="username"]`), oidcserver.Alice),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), oidcserver.AlicePassword),
		chromedp.Click(chromedp.CSS(`button[name="login"]`)),
		chromedp.WaitVisible(chromedp.CSS(`strong#email`)))
	askedToSignOut()
	signedIn("open the application again")

	askedToSignOut()
	step(t, tab, "sign out with the page's button", chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button[name="logout"]`))) // the IdP's own "sign out?"
	if loc := value(t, tab, "read the location", chromedp.Location()); !strings.HasPrefix(loc, idp.Issuer+"/") {
		t.Fatalf("the sign-out went to %s, want the IdP's end-session page at %s", loc, idp.Issuer)
	}
	step(t, tab, "confirm at the IdP", chromedp.Click(chromedp.CSS(`button[name="logout"]`)),
		chromedp.WaitVisible(chromedp.CSS(`input[name="password"]`)))
	if loc := value(t, tab, "read the location", chromedp.Location()); !strings.HasPrefix(loc, idp.Issuer+"/") {
		t.Errorf("after the sign-out the browser is at %s, want the IdP's login (rd /projects needs a new login)", loc)
	}
}

// TestLDAPFormPostedByAnotherSiteIsRefusedInChromium: another site's page
// holds a copy of the LDAP form, which a user is led to submit. Chromium
// says the post is cross-site, a top-level one; the proxy checks no
// password and shows no form of its own with the username that site chose.
func TestLDAPFormPostedByAnotherSiteIsRefusedInChromium(t *testing.T) {
	s, _ := ldapStack(t)
	other := anotherSitesPage(t, `<!doctype html><title>elsewhere</title><form method="post" action="`+s.URL+`/.portcullis/ldap/corp-ldap">`+
		`<input name="username" value="mallory"><input name="password" value="guess"><button id="go">Sign in</button></form>`)
	tab := newTab(t, newChromium(t))
	step(t, tab, "submit another site's copy of the form", chromedp.Navigate(other), chromedp.Click(chromedp.CSS(`#go`)),
		chromedp.WaitVisible(chromedp.CSS(`h1`)))
	page := value(t, tab, "read the page", chromedp.OuterHTML(chromedp.CSS(`html`)))
	if h1 := value(t, tab, "read the heading", chromedp.Text(chromedp.CSS(`h1`))); h1 != "Sign-in not started" || strings.Contains(page, "mallory") {
		t.Errorf("another site's post of the LDAP form got a page headed %q, want Sign-in not started, without the username it chose:\n%s", h1, page)
	}
}

func TestSAMLAnswerFromAnotherSiteOverHTTPIsNamedInChromium(t *testing.T) {
	s := listen(t)
	samlIdP := samlserver.Start(t, samlserver.Options{Users: []samlserver.User{samlAlice}, Addr: "127.0.0.2:0"})
	logs := s.startLogged(t, strings.NewReplacer("ENTITY_ID", samlIdP.EntityID(),
		"IDP_SOURCE", "metadata_url: "+samlIdP.MetadataURL()).Replace(samlConfig))
	rec := httptest.NewRecorder()
	s.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/.portcullis/saml/corp/metadata", nil))
	if err := samlIdP.AddServiceProviderXML(rec.Body.Bytes()); err != nil {
		t.Fatal(err)
	}

	tab := newTab(t, newChromium(t))
	step(t, tab, "start the login", chromedp.Navigate(s.URL+"/.portcullis/login/corp?rd=/projects"),
		chromedp.WaitVisible(chromedp.CSS(`input[name="password"]`)))
	step(t, tab, "sign in at the IdP",
		chromedp.SendKeys(chromedp.CSS(`input[name="user"]`), samlAlice.Name),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), samlAlice.Password),
		chromedp.Click(chromedp.CSS(`input[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#email, [role="alert"]`))) // the application, or a refusal
	page := value(t, tab, "read the page", chromedp.Text(chromedp.CSS(`body`)))
	if loc := value(t, tab, "read the location", chromedp.Location()); loc != s.URL+"/.portcullis/saml/corp/acs" {
		t.Fatalf("the login ended at %s, want the ACS's refusal:\n%s", loc, page)
	}
	if !strings.Contains(page, "not with your account") {
		t.Errorf("the page does not tell the user that the set-up is at fault:\n%s", page)
	}
	lines := logs.find(t, map[string]any{"log": "audit", "event": "login_failed"})
	if len(lines) != 1 {
		t.Fatalf("%d login_failed lines, want 1", len(lines))
	}
	hint, _ := lines[0]["hint"].(string)
	for _, want := range []string{"another site", "SameSite", "https", "same host"} {
		if lines[0]["reason"] != "state_cookie_missing" || !strings.Contains(hint, want) {
			t.Errorf("login_failed line %v: want reason state_cookie_missing and a hint with %q", lines[0], want)
		}
	}
}
