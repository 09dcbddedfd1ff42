package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/emulation"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// pagesConfig is two OIDC providers behind one portcullis with themed pages.
// Only members of a known group get a role: anyone else is denied.
const pagesConfig = `
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
      scopes: [openid, email, profile, groups]
      email_domain: alpha.example
    - id: beta
      name: Beta SSO
      protocol: OIDC
      server_url: BETA
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups]
      email_domain: beta.example
role_mapping:
  roles: [admin, user]
  default: ""
  rules:
    - role: admin
      when: '"cvat-admins" in groups'
    - role: user
      when: '"annotators" in groups'
attribute_pass:
  headers:
    X-Email: email
pages:
  title: Example Annotation
  accent_color: "#5b2a86"
  logo_url: "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHZpZXdCb3g9IjAgMCA0MCA0MCI+PHJlY3Qgd2lkdGg9IjQwIiBoZWlnaHQ9IjQwIiByeD0iOCIgZmlsbD0iIzViMmE4NiIvPjxwYXRoIGQ9Ik0xMiAyOGwxNi0xNk0xMiAxMmgxNnYxNiIgc3Ryb2tlPSIjZmZmIiBzdHJva2Utd2lkdGg9IjQiIGZpbGw9Im5vbmUiLz48L3N2Zz4="
`

// carol has an account at both IdPs but is in no group the roles know.
var carol = oidcserver.User{Password: "carol-pw", Email: "carol@beta.example", EmailVerified: true, Name: "Carol Outsider", Groups: []string{"visitors"}}

// TestPagesInChromium walks the login pages in headless Chromium: the
// chooser, the email form (with an unknown domain first), the denied page and
// the signed-out page, saving a screenshot of each and checking that each
// reflows to a 320 CSS px wide window.
func TestPagesInChromium(t *testing.T) {
	modes := []string{"chooser", "email_address"}
	stacks := map[string]*stack{}
	var alphaURIs, betaURIs []string
	for _, mode := range modes {
		s := listen(t)
		stacks[mode] = s
		alphaURIs = append(alphaURIs, s.URL+"/.portcullis/oidc/alpha/callback")
		betaURIs = append(betaURIs, s.URL+"/.portcullis/oidc/beta/callback")
	}
	users := map[string]oidcserver.User{"carol": carol}
	alpha := oidcserver.Start(t, oidcserver.Options{RedirectURIs: alphaURIs, ExtraUsers: users})
	beta := oidcserver.Start(t, oidcserver.Options{RedirectURIs: betaURIs, ExtraUsers: users})
	for _, mode := range modes {
		stacks[mode].start(t, strings.NewReplacer("MODE", mode, "ALPHA", alpha.Issuer, "BETA", beta.Issuer).Replace(pagesConfig))
	}
	browser := newChromium(t)
	dir := artifactDir(t)
	t.Logf("screenshots in %s", dir)

	idpLogin := func(t *testing.T, tab context.Context, user, password string) {
		t.Helper()
		step(t, tab, "log in at the IdP as "+user,
			chromedp.WaitVisible(chromedp.CSS(`input[name="password"]`)),
			chromedp.SendKeys(chromedp.CSS(`input[name="username"]`), user),
			chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), password),
			chromedp.Click(chromedp.CSS(`button[name="login"]`)),
		)
	}

	t.Run("pick an IdP on the chooser, then be denied without a role", func(t *testing.T) {
		s := stacks["chooser"]
		tab := newTab(t, browser)
		step(t, tab, "open the application", chromedp.Navigate(s.URL+"/projects"),
			chromedp.WaitVisible(chromedp.CSS(`nav a.button`)))
		if title := value(t, tab, "read the title", chromedp.Title()); title != "Sign in · Example Annotation" {
			t.Errorf("chooser title %q, want the configured pages.title", title)
		}
		buttons := value(t, tab, "read the buttons", chromedp.Evaluate[[]string](
			`[...document.querySelectorAll("nav a.button")].map(a => a.textContent)`))
		if strings.Join(buttons, "|") != "Continue with Alpha SSO|Continue with Beta SSO" {
			t.Errorf("chooser buttons %q", buttons)
		}
		// The keyboard reaches the first button first, and focus is visible.
		step(t, tab, "tab to the first button", chromedp.KeyEvent("\t"))
		focus := value(t, tab, "read the focus", chromedp.Evaluate[[]string](
			`[document.activeElement.textContent, getComputedStyle(document.activeElement).outlineStyle]`))
		if len(focus) != 2 || focus[0] != "Continue with Alpha SSO" || focus[1] != "solid" {
			t.Errorf("after one Tab the focus is on %q, want the first button with a solid outline", focus)
		}
		accent := value(t, tab, "read the button colour", chromedp.Evaluate[string](
			`getComputedStyle(document.querySelector("nav a.button")).backgroundColor`))
		if accent != "rgb(91, 42, 134)" {
			t.Errorf("button colour %q, want the configured accent #5b2a86", accent)
		}
		screenshot(t, tab, dir, "1-chooser.png")
		reflows(t, tab, "the chooser")
		outlinedInForcedColors(t, tab, "the chooser's first button", `nav a.button`)

		step(t, tab, "pick Beta SSO", chromedp.Click(chromedp.CSS(`a[href^="/.portcullis/login/beta"]`)))
		idpLogin(t, tab, "carol", "carol-pw")
		step(t, tab, "wait for the denied page", chromedp.WaitVisible(chromedp.CSS(`.reason`)))
		if h1 := value(t, tab, "read the heading", chromedp.Text(chromedp.CSS(`h1`))); h1 != "Access denied" {
			t.Errorf("heading %q, want Access denied", h1)
		}
		if why := value(t, tab, "read the reason", chromedp.Text(chromedp.CSS(`[role="alert"]`))); !strings.Contains(why, "no role in this application") {
			t.Errorf("denied page says %q, want the reason (no role)", why)
		}
		screenshot(t, tab, dir, "4-denied.png")
		reflows(t, tab, "the denied page")
	})

	t.Run("submit the email form; an unknown domain is explained", func(t *testing.T) {
		s := stacks["email_address"]
		tab := newTab(t, browser)
		step(t, tab, "open the application", chromedp.Navigate(s.URL+"/projects"),
			chromedp.WaitVisible(chromedp.CSS(`#email`)))
		if focused := value(t, tab, "read the focus", chromedp.Evaluate[string](`document.activeElement.id`)); focused != "email" {
			t.Errorf("focus on %q when the form opens, want the email field", focused)
		}
		screenshot(t, tab, dir, "2-email.png")
		reflows(t, tab, "the email form")
		outlinedInForcedColors(t, tab, "the email form's button", `button[type="submit"]`)
		followsFontSize(t, tab, "the email form")

		// A domain as long as many real ones (Entra ID's *.onmicrosoft.com),
		// with no space or hyphen to break the line at.
		step(t, tab, "submit an address at an unknown domain",
			chromedp.SendKeys(chromedp.CSS(`#email`), "dave@externalpartners.onmicrosoft.com"),
			chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#email-error`)))
		if msg := value(t, tab, "read the error", chromedp.Text(chromedp.CSS(`[role="alert"]`))); !strings.Contains(msg, "no sign-in for the domain externalpartners.onmicrosoft.com") {
			t.Errorf("error %q, want the unknown domain named", msg)
		}
		screenshot(t, tab, dir, "3-email-unknown-domain.png")
		reflows(t, tab, "the email form's error")

		step(t, tab, "submit an address at alpha.example",
			chromedp.SetValue(chromedp.CSS(`#email`), "alice@alpha.example"),
			chromedp.Click(chromedp.CSS(`button[type="submit"]`)))
		idpLogin(t, tab, oidcserver.Alice, oidcserver.AlicePassword)
		step(t, tab, "wait for the application", chromedp.WaitVisible(chromedp.CSS(`strong#email`)))
		if loc := value(t, tab, "read the location", chromedp.Location()); loc != s.URL+"/projects" {
			t.Errorf("after the login the browser is at %s, want %s/projects", loc, s.URL)
		}
		if email := value(t, tab, "read the upstream's view", chromedp.Text(chromedp.CSS(`strong#email`))); email != "alice@example.com" {
			t.Errorf("the upstream saw X-Email %q, want alice@example.com", email)
		}

		step(t, tab, "sign out", chromedp.Navigate(s.URL+"/.portcullis/logout"),
			chromedp.WaitVisible(chromedp.CSS(`[role="status"]`)))
		screenshot(t, tab, dir, "5-signed-out.png")
		reflows(t, tab, "the signed-out page")
	})
}

// reflows checks that the page in tab needs no horizontal scrolling in a
// window 320 CSS px wide (WCAG 2.2 1.4.10 Reflow: 1280 px at 400% zoom),
// long words in messages included, then restores the window.
func reflows(t *testing.T, tab context.Context, what string) {
	t.Helper()
	step(t, tab, "narrow the window to 320 px", chromedp.EmulateViewport(320, 640))
	widths := value(t, tab, "read the widths", chromedp.Evaluate[[]int](
		`[document.documentElement.scrollWidth, document.documentElement.clientWidth]`))
	if len(widths) != 2 || widths[0] > widths[1] {
		t.Errorf("%s at 320 px: scrollWidth, clientWidth = %v; it scrolls sideways", what, widths)
	}
	step(t, tab, "restore the window", chromedp.ResetViewport())
}

// outlinedInForcedColors checks that the button sel still shows its edge in
// forced-colors mode (Windows' contrast themes), which drops backgrounds:
// without a border there, a button is a word floating on the page.
func outlinedInForcedColors(t *testing.T, tab context.Context, what, sel string) {
	t.Helper()
	media := func(value string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "forced-colors", Value: value}}})
			return err
		})
	}
	step(t, tab, "turn forced colours on", media("active"))
	border := value(t, tab, "read the border", chromedp.Evaluate[[]string](
		`(s => [s.borderTopStyle, s.borderTopWidth, s.borderTopColor, s.backgroundColor])(getComputedStyle(document.querySelector(`+"`"+sel+"`"+`)))`))
	if len(border) != 4 || border[0] == "none" || border[1] == "0px" || border[2] == border[3] {
		t.Errorf("%s in forced colours: border style, width, colour and background %q; its edge does not show", what, border)
	}
	step(t, tab, "turn forced colours off", media(""))
}

// followsFontSize checks that the page's text grows with the browser's font
// size setting (Chrome's Appearance > Font size, which low-vision users set
// instead of zooming each site), as its rem-sized headings and hints do.
func followsFontSize(t *testing.T, tab context.Context, what string) {
	t.Helper()
	fontSize := func(px int64) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, cdppage.SetFontSizes, cdppage.SetFontSizesParams{FontSizes: &cdppage.FontSizes{Standard: px}})
			return err
		})
	}
	step(t, tab, "set the font size to 32 px", fontSize(32))
	size := value(t, tab, "read the text size", chromedp.Evaluate[string](`getComputedStyle(document.querySelector("label")).fontSize`))
	if size != "32px" {
		t.Errorf("%s with the browser's font size at 32 px: label text is %s, want 32px", what, size)
	}
	step(t, tab, "restore the font size", fontSize(16))
}
