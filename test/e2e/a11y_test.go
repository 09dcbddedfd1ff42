package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/emulation"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/crewjam/saml"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// axePath is axe-core's browser bundle, installed by test/run.sh with
// `npm ci` in test/a11y (package.json pins the version).
const axePath = "../a11y/node_modules/axe-core/axe.min.js"

// axeTags are the rules the pages are held to: WCAG 2.0, 2.1 and 2.2 at
// levels A and AA, and Deque's best practices.
var axeTags = []string{"wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa", "best-practice"}

// a11yChooserConfig is a themed chooser with two OIDC providers and an LDAP
// directory. Members of no known group get no role (the denied page), and
// /admin is for admins only (allow_if's 403).
const a11yChooserConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [SESSION_KEY]
sso:
  selection_mode: chooser
  identity_providers:
    - id: alpha
      name: Alpha SSO
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
    - id: beta
      name: Beta SSO
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
    - id: corp-ldap
      name: Corporate directory
      protocol: LDAP
      url: LDAP_URL
      bind_dn: cn=portcullis,ou=services,dc=example,dc=com
      bind_password: LDAP_PASSWORD
      user_search: {base_dn: "dc=example,dc=com", filter: "(&(objectClass=inetOrgPerson)(uid={username}))"}
      group_search: {base_dn: "ou=groups,dc=example,dc=com", filter: "(&(objectClass=groupOfNames)(member={dn}))"}
role_mapping:
  roles: [admin, user]
  default: ""
  rules:
    - role: admin
      when: '"cvat-admins" in groups'
    - role: user
      when: '"workers" in groups'
attribute_pass:
  headers:
    X-Email: email
    X-Groups: 'join(roles, ",")'
rules:
  - name: admin-only
    path_prefix: /admin
    action: authenticate
    allow_if: '"admin" in roles'
pages:
  title: Example Annotation
  accent_color: "#5b2a86"
  logo_url: "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHZpZXdCb3g9IjAgMCA0MCA0MCI+PHJlY3Qgd2lkdGg9IjQwIiBoZWlnaHQ9IjQwIiByeD0iOCIgZmlsbD0iIzViMmE4NiIvPjxwYXRoIGQ9Ik0xMiAyOGwxNi0xNk0xMiAxMmgxNnYxNiIgc3Ryb2tlPSIjZmZmIiBzdHJva2Utd2lkdGg9IjQiIGZpbGw9Im5vbmUiLz48L3N2Zz4="
`

// a11yEmailConfig is the email form with the built-in look, in front of an
// application that is down: /public/ reaches it without a login.
const a11yEmailConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: DEAD_UPSTREAM
session:
  keys: [SESSION_KEY]
sso:
  selection_mode: email_address
  identity_providers:
    - id: alpha
      name: Alpha SSO
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      email_domain: alpha.example
    - id: beta
      name: Beta SSO
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      email_domain: beta.example
rules:
  - name: public
    path_prefix: /public/
    action: bypass
`

// TestPagesAccessible opens every page of the proxy's own that a user can
// reach, in the states they reach it in, in one headless Chromium, and
// checks each with axe-core at WCAG 2.2 AA and best practice, with the
// keyboard, and at 320 CSS px. Then, with JavaScript off, it signs in with
// the chooser and the LDAP form, and submits the email form and the page
// that passes a SAML logout on to the IdP.
func TestPagesAccessible(t *testing.T) {
	axe := axeSource(t)
	chooser, email := listen(t), listen(t)
	var callbacks []string
	for _, s := range []*stack{chooser, email} {
		callbacks = append(callbacks, s.URL+"/.portcullis/oidc/alpha/callback", s.URL+"/.portcullis/oidc/beta/callback")
	}
	idp := oidcserver.Start(t, oidcserver.Options{RedirectURIs: callbacks})
	dir := ldapserver.Start(t, ldapserver.Options{})
	// An application that drops every connection: the proxy answers 502.
	dead := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
	t.Cleanup(dead.Close)
	chooser.start(t, strings.NewReplacer("ISSUER", idp.Issuer, "LDAP_URL", dir.URL, "LDAP_PASSWORD", ldapserver.ServicePassword).Replace(a11yChooserConfig))
	email.start(t, strings.NewReplacer("ISSUER", idp.Issuer, "DEAD_UPSTREAM", dead.URL).Replace(a11yEmailConfig))
	slo, sloIdP := postOnlySLOStack(t)
	chrome := newChromium(t)
	began := time.Now()
	t.Cleanup(func() { t.Logf("pages checked in %s", time.Since(began).Round(time.Millisecond)) })

	ldapForm := chooser.URL + "/.portcullis/ldap/corp-ldap?rd=/projects"
	signInLDAP := func(t *testing.T, tab context.Context, user, password string) {
		t.Helper()
		step(t, tab, "sign in as "+user,
			chromedp.WaitVisible(chromedp.CSS(`#username`)),
			chromedp.SendKeys(chromedp.CSS(`#username`), user),
			chromedp.SendKeys(chromedp.CSS(`#password`), password),
			chromedp.Click(chromedp.CSS(`button[type="submit"]`)))
	}
	pages := []struct {
		name string
		// open brings tab to the page, in the state under test, whose h1
		// is heading.
		open    func(t *testing.T, tab context.Context)
		heading string
		// focus is the accessible name of the field that has the focus
		// when the page opens, and describedBy what a screen reader reads
		// out with it; "" when the page focuses nothing.
		focus, describedBy string
	}{
		{name: "chooser with three IdPs, themed", open: func(t *testing.T, tab context.Context) {
			step(t, tab, "open the application", chromedp.Navigate(chooser.URL+"/projects"),
				chromedp.WaitVisible(chromedp.CSS(`nav a`)))
		}, heading: "Sign in"},
		{name: "LDAP form", open: func(t *testing.T, tab context.Context) {
			step(t, tab, "open the form", chromedp.Navigate(ldapForm), chromedp.WaitVisible(chromedp.CSS(`#username`)))
		}, heading: "Sign in", focus: "Username"},
		{name: "LDAP form after a wrong password", open: func(t *testing.T, tab context.Context) {
			step(t, tab, "open the form", chromedp.Navigate(ldapForm))
			signInLDAP(t, tab, ldapserver.Alice, "wrong")
			step(t, tab, "wait for the error", chromedp.WaitVisible(chromedp.CSS(`#form-error`)))
		}, heading: "Sign in", focus: "Password", describedBy: "Wrong username or password."},
		{name: "LDAP form held back after failed guesses (429)", open: func(t *testing.T, tab context.Context) {
			// Five failures for one username hold it back for a minute.
			c := browser(t)
			for range 5 {
				if resp, _ := openForm(t, c, ldapForm).submit(t, c, "mallory", "guess"); resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("a failed guess: %d, want 401", resp.StatusCode)
				}
			}
			step(t, tab, "open the form", chromedp.Navigate(ldapForm))
			signInLDAP(t, tab, "mallory", "guess")
			step(t, tab, "wait for the page", chromedp.WaitVisible(chromedp.CSS(`.request-id`)))
		}, heading: "Too many attempts"},
		{name: "denied: no role", open: func(t *testing.T, tab context.Context) {
			step(t, tab, "open the form", chromedp.Navigate(ldapForm))
			signInLDAP(t, tab, ldapserver.StarUser, ldapserver.StarUserPassword)
			step(t, tab, "wait for the page", chromedp.WaitVisible(chromedp.CSS(`.reason`)))
		}, heading: "Access denied"},
		{name: "denied: allow_if", open: func(t *testing.T, tab context.Context) {
			step(t, tab, "open the form", chromedp.Navigate(chooser.URL+"/.portcullis/ldap/corp-ldap?rd=/admin"))
			signInLDAP(t, tab, ldapserver.Bob, ldapserver.BobPassword)
			step(t, tab, "wait for the page", chromedp.WaitVisible(chromedp.CSS(`.request-id`)))
		}, heading: "Access denied"},
		{name: "signed out, themed", open: func(t *testing.T, tab context.Context) {
			step(t, tab, "sign out", chromedp.Navigate(chooser.URL+"/.portcullis/logout"),
				chromedp.WaitVisible(chromedp.CSS(`[role="status"]`)))
		}, heading: "Signed out"},
		{name: "sign-out asked by another site", open: func(t *testing.T, tab context.Context) {
			other := anotherSitesPage(t, `<!doctype html><title>elsewhere</title><a id="out" href="`+chooser.URL+`/.portcullis/logout?rd=/projects">Sign out</a>`)
			step(t, tab, "follow another site's link to the logout", chromedp.Navigate(other), chromedp.Click(chromedp.CSS(`#out`)),
				chromedp.WaitVisible(chromedp.CSS(`form`)))
		}, heading: "Sign out?"},
		{name: "email form", open: func(t *testing.T, tab context.Context) {
			step(t, tab, "open the application", chromedp.Navigate(email.URL+"/projects"),
				chromedp.WaitVisible(chromedp.CSS(`#email`)))
		}, heading: "Sign in", focus: "Work email address", describedBy: "Your organisation's sign-in is picked from the part after the @."},
		{name: "email form with an unknown domain", open: func(t *testing.T, tab context.Context) {
			step(t, tab, "submit an unknown domain", chromedp.Navigate(email.URL+"/projects"),
				chromedp.WaitVisible(chromedp.CSS(`#email`)),
				chromedp.SendKeys(chromedp.CSS(`#email`), "dave@externalpartners.onmicrosoft.com"),
				chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
				chromedp.WaitVisible(chromedp.CSS(`#email-error`)))
		}, heading: "Sign in", focus: "Work email address", describedBy: "Your organisation's sign-in is picked from the part after the @. There is no sign-in for the domain externalpartners.onmicrosoft.com. Check the address, or ask your administrator."},
		{name: "failed sign-in with a request ID", open: func(t *testing.T, tab context.Context) {
			step(t, tab, "come back from the IdP unasked", chromedp.Navigate(email.URL+"/.portcullis/oidc/alpha/callback?code=c&state=s"),
				chromedp.WaitVisible(chromedp.CSS(`.request-id`)))
		}, heading: "Sign-in failed"},
		{name: "application down (502)", open: func(t *testing.T, tab context.Context) {
			step(t, tab, "open a public page", chromedp.Navigate(email.URL+"/public/x"),
				chromedp.WaitVisible(chromedp.CSS(`.request-id`)))
		}, heading: "Bad gateway"},
		{name: "SAML single logout answered over HTTP-POST", open: func(t *testing.T, tab context.Context) {
			// The page posts itself on to the IdP: load it with JavaScript
			// off to keep it, then turn JavaScript on for axe.
			noScript(t, tab)
			step(t, tab, "take the IdP's LogoutRequest", chromedp.Navigate(idpLogoutRequest(t, slo, sloIdP)),
				chromedp.WaitVisible(chromedp.CSS(`form`)))
			setScripts(t, tab, true)
		}, heading: "Signing out"},
	}
	for _, p := range pages {
		t.Run(p.name, func(t *testing.T) {
			tab := newTab(t, chrome)
			p.open(t, tab)
			if h1 := value(t, tab, "read the heading", chromedp.Evaluate[string](`document.querySelector("h1")?.textContent ?? ""`)); h1 != p.heading {
				t.Fatalf("the page's h1 is %q, want %q", h1, p.heading)
			}
			if p.focus != "" {
				value(t, tab, "wait for the autofocus", chromedp.Poll[bool](`document.activeElement !== document.body || null`))
				_, name, description := focusedAXNode(t, tab)
				if name != p.focus || description != p.describedBy {
					t.Errorf("the page opens with the focus on %q described as %q; want %q described as %q", name, description, p.focus, p.describedBy)
				}
			}
			checkAxe(t, tab, axe)
			checkKeyboard(t, tab)
			checkStill(t, tab)
			reflows(t, tab, p.name)
		})
	}

	t.Run("the SAML logout answer over HTTP-POST goes on to the IdP by itself", func(t *testing.T) {
		tab := newTab(t, chrome)
		postsTo(t, tab, sloIdP.URL+"/slo", chromedp.Navigate(idpLogoutRequest(t, slo, sloIdP)))
	})

	// Without JavaScript, in the same browser: the pages are plain links
	// and forms, and a user gets through them all the same.
	t.Run("without JavaScript the chooser and the LDAP form sign in", func(t *testing.T) {
		tab := newTab(t, chrome)
		noScript(t, tab)
		step(t, tab, "open the application", chromedp.Navigate(chooser.URL+"/projects"),
			chromedp.WaitVisible(chromedp.CSS(`nav a`)))
		step(t, tab, "pick the directory", chromedp.Click(chromedp.CSS(`a[href^="/.portcullis/login/corp-ldap"]`)))
		signInLDAP(t, tab, ldapserver.Alice, ldapserver.AlicePassword)
		step(t, tab, "wait for the application", chromedp.WaitVisible(chromedp.CSS(`strong#email`)))
		if loc := value(t, tab, "read the location", chromedp.Location()); loc != chooser.URL+"/projects" {
			t.Errorf("signed in without JavaScript, the browser is at %s, want %s/projects", loc, chooser.URL)
		}
		if who := value(t, tab, "read the upstream's view", chromedp.Text(chromedp.CSS(`strong#email`))); who != "alice@example.com" {
			t.Errorf("the upstream saw X-Email %q, want alice@example.com", who)
		}
	})
	t.Run("without JavaScript the email form leads to the IdP", func(t *testing.T) {
		tab := newTab(t, chrome)
		noScript(t, tab)
		step(t, tab, "submit an address at alpha.example", chromedp.Navigate(email.URL+"/projects"),
			chromedp.WaitVisible(chromedp.CSS(`#email`)),
			chromedp.SendKeys(chromedp.CSS(`#email`), "alice@alpha.example"),
			chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(`input[name="password"]`)))
		if loc := value(t, tab, "read the location", chromedp.Location()); !strings.HasPrefix(loc, idp.Issuer+"/") {
			t.Errorf("the email form led to %s, want the IdP's login at %s", loc, idp.Issuer)
		}
	})
	t.Run("without JavaScript the SAML logout answer goes on to the IdP with its button", func(t *testing.T) {
		tab := newTab(t, chrome)
		noScript(t, tab)
		step(t, tab, "take the IdP's LogoutRequest", chromedp.Navigate(idpLogoutRequest(t, slo, sloIdP)),
			chromedp.WaitVisible(chromedp.CSS(`button[type="submit"]`)))
		postsTo(t, tab, sloIdP.URL+"/slo", chromedp.Click(chromedp.CSS(`button[type="submit"]`)))
	})
}

// axeSource is axe-core's script. A missing file fails the test: the
// accessibility checks are part of the suite, not optional.
func axeSource(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(axePath)
	if err != nil {
		abs, _ := filepath.Abs(axePath)
		t.Fatalf("axe-core not found at %s (%v): run test/run.sh, or `npm ci` in test/a11y", abs, err)
	}
	return string(b)
}

// axeViolation is one failed rule and the elements it failed on.
type axeViolation struct {
	ID, Impact, Help string
	Nodes            []struct{ Target, HTML, Summary string }
}

// checkAxe runs axe-core on the page in tab and fails with every violation.
//
// The pages' Content-Security-Policy (script-src falls back to 'none')
// would block axe as a <script>; it runs through Runtime.evaluate instead
// (chromedp.Evaluate), which CSP does not govern. Page.setBypassCSP would
// work too, but it would turn the policy off for the whole page and let
// through what users' browsers refuse (a logo from another origin), so the
// page checked would not be the page users get.
func checkAxe(t *testing.T, tab context.Context, axe string) {
	t.Helper()
	step(t, tab, "load axe-core", chromedp.Evaluate[chromedp.Void](axe))
	tags, _ := json.Marshal(axeTags)
	run := `axe.run(document, {runOnly: {type: "tag", values: ` + string(tags) + `}, resultTypes: ["violations"]})
		.then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
			nodes: v.nodes.map(n => ({target: n.target.map(String).join(" "), html: n.html, summary: n.failureSummary}))})))`
	violations := value(t, tab, "run axe-core", chromedp.Evaluate[[]axeViolation](run, chromedp.EvalAwaitPromise))
	for _, v := range violations {
		for _, n := range v.Nodes {
			t.Errorf("axe %s (%s): %s\n\tat %s: %s\n\t%s", v.ID, v.Impact, v.Help, n.Target, n.HTML, strings.ReplaceAll(n.Summary, "\n", "\n\t"))
		}
	}
}

// checkKeyboard presses Tab through the page in tab from its top: each
// element a user can act on (link, button, field) must come in document
// order, none skipped, and look different while focused (an outline or
// shadow that it lacks otherwise, WCAG 2.4.7). No tabindex may be positive,
// which would reorder them.
func checkKeyboard(t *testing.T, tab context.Context) {
	t.Helper()
	const js = `window.a11y = {
		tabbable: () => [...document.querySelectorAll("a[href], button, input, select, textarea, [tabindex]")]
			.filter(e => e.type !== "hidden" && !e.disabled && e.tabIndex >= 0 && e.getClientRects().length > 0),
		name: e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.textContent.trim() ? ' "' + e.textContent.trim() + '"' : ""),
		// What draws round e: an outline only counts when it shows.
		ring: e => (s => (s.outlineStyle === "none" || parseFloat(s.outlineWidth) === 0 ? "no outline" :
			["outline", s.outlineStyle, s.outlineWidth, s.outlineColor, "offset", s.outlineOffset].join(" ")) +
			", shadow " + s.boxShadow)(getComputedStyle(e)),
	}; [...document.querySelectorAll("[tabindex]")].filter(e => e.tabIndex > 0).map(a11y.name)`
	if positive := value(t, tab, "look for positive tabindex", chromedp.Evaluate[[]string](js)); len(positive) > 0 {
		t.Errorf("tabindex above 0 reorders the keyboard's way through the page: %q", positive)
	}
	// A click on the page's margin takes the focus off any autofocused
	// field and starts the keyboard's way from the top of the document.
	step(t, tab, "click the margin", chromedp.MouseClickXY(2, 2))
	rest := value(t, tab, "read the elements", chromedp.Evaluate[[][]string](
		`a11y.tabbable().map(e => [a11y.name(e), a11y.ring(e)])`))
	for i, want := range rest {
		step(t, tab, "press Tab", chromedp.KeyEvent("\t"))
		got := value(t, tab, "read the focus", chromedp.Evaluate[[]string](
			`(e => [a11y.name(e), a11y.ring(e)])(document.activeElement)`))
		if got[0] != want[0] {
			t.Errorf("Tab %d goes to %s, want %s (document order)", i+1, got[0], want[0])
			return
		}
		if got[1] == want[1] {
			t.Errorf("Tab %d: %s looks the same focused as not (%s)", i+1, got[0], got[1])
		}
	}
}

// checkStill checks that nothing on the page in tab moves: no animation or
// transition, so there is nothing for prefers-reduced-motion to stop
// (WCAG 2.3.3) and nothing that a user cannot pause (2.2.2).
func checkStill(t *testing.T, tab context.Context) {
	t.Helper()
	moving := value(t, tab, "look for motion", chromedp.Evaluate[[]string](
		`[...document.querySelectorAll("*")].filter(e => (s => s.animationName !== "none" || s.transitionDuration.split(",").some(d => parseFloat(d) > 0))(getComputedStyle(e))).map(e => e.tagName.toLowerCase() + (e.className ? "." + e.className : ""))`))
	if len(moving) > 0 {
		t.Errorf("elements that animate or transition: %q", moving)
	}
}

// focusedAXNode is the focused element of the page in tab as the
// accessibility tree gives it to a screen reader: its role, name and
// description. (Accessibility.getFullAXTree's "focused" property lags
// behind autofocus; the node of document.activeElement does not.)
func focusedAXNode(t *testing.T, tab context.Context) (role, name, description string) {
	t.Helper()
	node := value(t, tab, "read the accessibility tree", chromedp.Action[*accessibility.Node](
		func(ctx context.Context, tg *chromedp.Target) (*accessibility.Node, error) {
			obj, err := chromedp.Evaluate[*runtime.RemoteObject](`document.activeElement`)(ctx, tg)
			if err != nil {
				return nil, err
			}
			res, err := chromedp.Call(ctx, accessibility.GetPartialAXTree, accessibility.GetPartialAXTreeParams{ObjectID: obj.ObjectID, FetchRelatives: new(false)})
			if err != nil || len(res.Nodes) == 0 {
				return nil, fmt.Errorf("no accessibility node for the focused element: %v", err)
			}
			return res.Nodes[0], nil
		}))
	text := func(v *accessibility.Value) string {
		var s string
		if v != nil {
			_ = json.Unmarshal(v.Value, &s)
		}
		return s
	}
	return text(node.Role), text(node.Name), text(node.Description)
}

// noScript turns JavaScript off in tab, as a browser with it disabled,
// and checks that a page's script does not run. (The DevTools protocol
// still evaluates the test's expressions: they run synchronously, and
// Emulation.setScriptExecutionDisabled stops the page's own scripts.)
func noScript(t *testing.T, tab context.Context) {
	t.Helper()
	setScripts(t, tab, false)
	step(t, tab, "load a page with a script", chromedp.Navigate(`data:text/html,<title>off</title><script>document.title = "on"</script>`))
	if title := value(t, tab, "read the title", chromedp.Title()); title != "off" {
		t.Fatalf("a page's script ran with JavaScript turned off: the title is %q", title)
	}
}

// postsTo runs trigger in tab and waits until the page that it leads to
// has posted itself on to url (the main frame navigates there).
func postsTo(t *testing.T, tab context.Context, url string, trigger chromedp.Action[chromedp.Void]) {
	t.Helper()
	value(t, tab, "be taken to "+url, chromedp.WaitEvent(cdppage.FrameNavigated, func(e cdppage.EventFrameNavigated) bool {
		return e.Frame.ParentID == "" && strings.HasPrefix(e.Frame.URL, url)
	}, trigger))
}

// setScripts turns the page's JavaScript in tab on or off.
func setScripts(t *testing.T, tab context.Context, on bool) {
	t.Helper()
	step(t, tab, fmt.Sprintf("turn JavaScript on: %v", on), chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: !on})
		return err
	}))
}

// postOnlySLOStack is portcullis with single_sign_out at a SAML IdP whose
// metadata offers single logout over HTTP-POST only, so that the proxy
// answers the IdP's LogoutRequests with a page that posts the answer on.
func postOnlySLOStack(t *testing.T) (*stack, *samlserver.Server) {
	t.Helper()
	idpSrv := samlserver.Start(t, samlserver.Options{})
	resp, err := http.Get(idpSrv.MetadataURL())
	if err != nil {
		t.Fatal(err)
	}
	doc := etree.NewDocument()
	if _, err := doc.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, e := range doc.FindElements("//SingleLogoutService") {
		if e.SelectAttrValue("Binding", "") != saml.HTTPPostBinding {
			e.Parent().RemoveChild(e)
		}
	}
	metadata, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	served := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/samlmetadata+xml")
		w.Write(metadata)
	}))
	t.Cleanup(served.Close)
	s := listen(t)
	s.start(t, strings.NewReplacer("ENTITY_ID", idpSrv.EntityID(),
		"IDP_SOURCE", "metadata_url: "+served.URL+"\n      single_sign_out: true").Replace(samlConfig))
	return s, idpSrv
}

// idpLogoutRequest is a LogoutRequest for alice that the IdP of s signed,
// as the URL at the proxy that its logout page sends the browser to.
func idpLogoutRequest(t *testing.T, s *stack, idpSrv *samlserver.Server) string {
	t.Helper()
	u, err := idpForger(s, idpSrv).MakeRedirectLogoutRequest("alice@example.com", "relay-a11y")
	if err != nil {
		t.Fatal(err)
	}
	return u.String()
}
