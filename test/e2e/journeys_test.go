package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// journeysConfig is one OIDC IdP that ends its own session at sign-out
// (so that another user can sign in next), with SESSION lines for the
// session's lifetimes.
const journeysConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [SESSION_KEY]
SESSION
sso:
  identity_providers:
    - id: company
      name: Company SSO
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups]
      single_sign_out: true
role_mapping:
  roles: [admin, user]
  default: user
  rules:
    - role: admin
      when: '"cvat-admins" in groups'
attribute_pass:
  headers:
    X-Email: email
    X-Groups: 'join(roles, ",")'
`

// shortSession is a session that ends four seconds after the login, so that
// a journey can have it end under a user's open page. The cookie's Max-Age
// is rounded down from the session's end, so the browser keeps it about
// three seconds: the page after the login must come within that, which a
// loaded machine may miss by more than the one second that 2s would leave
// (the LDAP journey would then show its form, where the IdPs sign in again).
const shortSession = "  lifetime: 4s\n"

// TestBrowserJourneys walks, in one headless Chromium, what users do in a
// browser around a sign-in: several tabs, deep links, the back button,
// bookmarks, a session that ends under an open page, signing out and in as
// someone else, and an IdP that says no. Each journey is a fresh browser
// context (a private window); each checks the page the user lands on and
// the identity the upstream saw.
func TestBrowserJourneys(t *testing.T) {
	main, short, chooser := listen(t), listen(t), listen(t)
	alpha := oidcserver.Start(t, oidcserver.Options{
		RedirectURIs: []string{main.URL + "/.portcullis/oidc/company/callback", short.URL + "/.portcullis/oidc/company/callback",
			chooser.URL + "/.portcullis/oidc/alpha/callback"},
		PostLogoutRedirectURIs: []string{main.URL + "/.portcullis/logout/done", short.URL + "/.portcullis/logout/done"},
	})
	beta := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{chooser.URL + "/.portcullis/oidc/beta/callback"}})
	main.start(t, strings.NewReplacer("ISSUER", alpha.Issuer, "SESSION\n", "").Replace(journeysConfig))
	short.start(t, strings.NewReplacer("ISSUER", alpha.Issuer, "SESSION\n", shortSession).Replace(journeysConfig))
	chooser.start(t, strings.NewReplacer("MODE", "chooser", "ALPHA", alpha.Issuer, "BETA", beta.Issuer).Replace(pagesConfig))
	browser := newChromium(t)

	atIdP := func(t *testing.T, tab context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		step(t, tab, what, append(actions, chromedp.WaitVisible(chromedp.CSS(`input[name="password"]`)))...)
	}
	signIn := func(t *testing.T, tab context.Context, user, password string) {
		t.Helper()
		step(t, tab, "sign in at the IdP as "+user,
			chromedp.WaitVisible(chromedp.CSS(`input[name="password"]`)),
			chromedp.SendKeys(chromedp.CSS(`input[name="username"]`), user),
			chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), password),
			chromedp.Click(chromedp.CSS(`button[name="login"]`)),
			// Until the next page is in, the IdP's form is: the heading of
			// a page without it is the application's, or the proxy's.
			chromedp.WaitVisible(chromedp.CSS(`body:not(:has(form[action^="/interaction/"])) h1`)))
	}
	t.Run("two tabs start a login; tab 1 finishes first, then tab 2", func(t *testing.T) {
		one := newTab(t, browser)
		two := anotherTab(t, one)
		atIdP(t, one, "open the projects in tab 1", chromedp.Navigate(main.URL+"/projects"))
		atIdP(t, two, "open the tasks in tab 2", chromedp.Navigate(main.URL+"/tasks"))
		signIn(t, one, oidcserver.Alice, oidcserver.AlicePassword)
		landed(t, one, main.URL+"/projects", "alice@example.com")
		signIn(t, two, oidcserver.Alice, oidcserver.AlicePassword)
		landed(t, two, main.URL+"/tasks", "alice@example.com")
	})

	t.Run("two tabs start a login; tab 2 finishes first, then tab 1", func(t *testing.T) {
		one := newTab(t, browser)
		two := anotherTab(t, one)
		atIdP(t, one, "open the projects in tab 1", chromedp.Navigate(main.URL+"/projects"))
		atIdP(t, two, "open the tasks in tab 2", chromedp.Navigate(main.URL+"/tasks"))
		signIn(t, two, oidcserver.Alice, oidcserver.AlicePassword)
		landed(t, two, main.URL+"/tasks", "alice@example.com")
		signIn(t, one, oidcserver.Alice, oidcserver.AlicePassword)
		landed(t, one, main.URL+"/projects", "alice@example.com")
	})

	t.Run("a deep link with a query and a fragment", func(t *testing.T) {
		tab := newTab(t, browser)
		atIdP(t, tab, "open a deep link", chromedp.Navigate(main.URL+"/tasks/5?page=2#frame=10"))
		t.Logf("at the IdP's form the browser is at %s", value(t, tab, "read the location", chromedp.Location()))
		signIn(t, tab, oidcserver.Alice, oidcserver.AlicePassword)
		// The IdP's form is a POST, a new navigation: the fragment, which
		// no server ever saw, is gone (README: Deep links).
		landed(t, tab, main.URL+"/tasks/5?page=2", "alice@example.com")
		var got []string
		for _, r := range main.Upstream.Requests() {
			if strings.HasPrefix(r.Path, "/tasks/5") {
				got = append(got, r.RequestURI)
			}
		}
		if len(got) != 1 || got[0] != "/tasks/5?page=2" {
			t.Errorf("the upstream got %q, want /tasks/5?page=2 once", got)
		}
	})

	t.Run("back after the login, and the callback loaded again", func(t *testing.T) {
		tab := newTab(t, browser)
		callback := lastRequest(t, tab, main.URL+"/.portcullis/oidc/company/callback?")
		atIdP(t, tab, "open the projects", chromedp.Navigate(main.URL+"/projects"))
		signIn(t, tab, oidcserver.Alice, oidcserver.AlicePassword)
		landed(t, tab, main.URL+"/projects", "alice@example.com")
		cb := callback()
		if cb == "" {
			t.Fatal("the browser went through no callback")
		}

		step(t, tab, "press back", chromedp.NavigateBack())
		loc := value(t, tab, "read the location", chromedp.Location())
		h1, body := heading(t, tab)
		t.Logf("back after the login: %s, headed %q: %.200s", loc, h1, body)

		// The login that used this answer's state is done: the signed-in
		// user goes on to the application (public_url's root), not to an
		// error about it.
		step(t, tab, "load the callback again", chromedp.Navigate(cb))
		landed(t, tab, main.URL+"/", "alice@example.com")
	})

	t.Run("a bookmark of the login while signed in", func(t *testing.T) {
		tab := newTab(t, browser)
		atIdP(t, tab, "open the projects", chromedp.Navigate(main.URL+"/projects"))
		signIn(t, tab, oidcserver.Alice, oidcserver.AlicePassword)
		landed(t, tab, main.URL+"/projects", "alice@example.com")
		step(t, tab, "open the bookmark", chromedp.Navigate(main.URL+"/.portcullis/login?rd=/tasks"))
		landed(t, tab, main.URL+"/tasks", "alice@example.com")
	})

	t.Run("a bookmark of the IdP's sign-in opened later, signed in", func(t *testing.T) {
		tab := newTab(t, browser)
		authorize := lastRequest(t, tab, alpha.Issuer+"/auth?")
		atIdP(t, tab, "open the projects", chromedp.Navigate(main.URL+"/projects"))
		bookmark := authorize()
		signIn(t, tab, oidcserver.Alice, oidcserver.AlicePassword)
		landed(t, tab, main.URL+"/projects", "alice@example.com")
		// The IdP remembers alice and answers at once, with the state of
		// the login that is long done.
		step(t, tab, "open the bookmark of the IdP's sign-in", chromedp.Navigate(bookmark))
		landed(t, tab, main.URL+"/", "alice@example.com")
	})

	t.Run("sign out in tab 1, then follow a link in tab 2", func(t *testing.T) {
		one := newTab(t, browser)
		atIdP(t, one, "open the projects", chromedp.Navigate(main.URL+"/projects"))
		signIn(t, one, oidcserver.Alice, oidcserver.AlicePassword)
		landed(t, one, main.URL+"/projects", "alice@example.com")
		two := anotherTab(t, one)
		step(t, two, "open the tasks in tab 2", chromedp.Navigate(main.URL+"/tasks"))
		landed(t, two, main.URL+"/tasks", "alice@example.com")
		signOut(t, one, main.URL)
		atIdP(t, two, "follow the link to the projects in tab 2", chromedp.Click(chromedp.CSS(`#projects`)))
	})

	t.Run("sign in as alice, sign out, sign in as bob", func(t *testing.T) {
		tab := newTab(t, browser)
		atIdP(t, tab, "open the projects", chromedp.Navigate(main.URL+"/projects"))
		signIn(t, tab, oidcserver.Alice, oidcserver.AlicePassword)
		landed(t, tab, main.URL+"/projects", "alice@example.com")
		signOut(t, tab, main.URL)
		atIdP(t, tab, "open the projects again", chromedp.Navigate(main.URL+"/projects"))
		signIn(t, tab, oidcserver.Bob, oidcserver.BobPassword)
		landed(t, tab, main.URL+"/projects", "bob@example.com")
		got, _ := main.Upstream.Last()
		if g := got.Header.Get("X-Groups"); g != "user" {
			t.Errorf("bob's request carried X-Groups %q, want user", g)
		}
		if c := got.Header.Get("Cookie"); strings.Contains(c, "portcullis") {
			t.Errorf("bob's request carried the proxy's cookies: %q", c)
		}
	})

	t.Run("on the chooser pick one IdP, go back, pick the other", func(t *testing.T) {
		tab := newTab(t, browser)
		step(t, tab, "open the projects", chromedp.Navigate(chooser.URL+"/projects"),
			chromedp.WaitVisible(chromedp.CSS(`nav a.button`)))
		atIdP(t, tab, "pick Alpha SSO", chromedp.Click(chromedp.CSS(`a[href^="/.portcullis/login/alpha"]`)))
		step(t, tab, "press back", chromedp.NavigateBack(), chromedp.WaitVisible(chromedp.CSS(`nav a.button`)))
		atIdP(t, tab, "pick Beta SSO", chromedp.Click(chromedp.CSS(`a[href^="/.portcullis/login/beta"]`)))
		if loc := value(t, tab, "read the location", chromedp.Location()); !strings.HasPrefix(loc, beta.Issuer+"/") {
			t.Fatalf("picking Beta SSO led to %s, want Beta's sign-in at %s", loc, beta.Issuer)
		}
		signIn(t, tab, oidcserver.Alice, oidcserver.AlicePassword)
		landed(t, tab, chooser.URL+"/projects", "alice@example.com")
	})

	t.Run("cancel at the IdP, then sign in again", func(t *testing.T) {
		tab := newTab(t, browser)
		atIdP(t, tab, "open the projects", chromedp.Navigate(main.URL+"/projects"))
		step(t, tab, "press Cancel at the IdP", chromedp.Click(chromedp.CSS(`button[name="abort"]`)),
			chromedp.WaitVisible(chromedp.CSS(`[role="alert"]`)))
		h1, body := heading(t, tab)
		if h1 != "Sign-in failed" || !strings.Contains(body, "cancelled") {
			t.Errorf("after Cancel the page is headed %q, want Sign-in failed saying it was cancelled:\n%s", h1, body)
		}
		atIdP(t, tab, "follow the page's link to sign in again", chromedp.Click(chromedp.CSS(`main a[href*="/login"]`)))
		signIn(t, tab, oidcserver.Alice, oidcserver.AlicePassword)
		landed(t, tab, main.URL+"/projects", "alice@example.com")
	})

	// expire signs in to short and waits, in the page, until the session has
	// ended (its userinfo answers 401).
	expire := func(t *testing.T, tab context.Context, path string) {
		t.Helper()
		atIdP(t, tab, "open "+path, chromedp.Navigate(short.URL+path))
		signIn(t, tab, oidcserver.Alice, oidcserver.AlicePassword)
		landed(t, tab, short.URL+path, "alice@example.com")
		value(t, tab, "wait for the session to end", chromedp.Evaluate[bool](
			`(async () => { while ((await fetch("/.portcullis/userinfo")).status !== 401) await new Promise(r => setTimeout(r, 100)); return true })()`,
			chromedp.EvalAwaitPromise))
	}

	t.Run("the session ends; the next link signs in again at once", func(t *testing.T) {
		tab := newTab(t, browser)
		expire(t, tab, "/tasks")
		step(t, tab, "follow the link to the projects", chromedp.Click(chromedp.CSS(`#projects`)))
		landed(t, tab, short.URL+"/projects", "alice@example.com")
	})

	t.Run("the session ends; a script's fetch gets 401 JSON", func(t *testing.T) {
		tab := newTab(t, browser)
		expire(t, tab, "/tasks")
		seen := value(t, tab, "fetch the projects", chromedp.Evaluate[map[string]any](
			`fetch("/projects").then(async r => ({status: r.status, redirected: r.redirected, type: r.headers.get("content-type"), body: await r.json()}))`,
			chromedp.EvalAsValue, chromedp.EvalAwaitPromise))
		t.Logf("the page's fetch saw %v", seen)
		body, _ := seen["body"].(map[string]any)
		if seen["status"] != 401.0 || seen["redirected"] != false || body["error"] != "unauthorized" {
			t.Errorf("the page's fetch saw %v, want 401 with the JSON error, not redirected", seen)
		}
	})

	t.Run("the session ends; a form is posted", func(t *testing.T) {
		tab := newTab(t, browser)
		expire(t, tab, "/tasks")
		// SPEC.md: only a GET or HEAD navigation is redirected to the
		// login; a post without a session is refused with 401 JSON, and
		// never reaches the upstream. A redirect would turn the post into
		// a GET and drop what was sent without a word.
		step(t, tab, "post the page's form", chromedp.Click(chromedp.CSS(`#post`)),
			chromedp.WaitVisible(chromedp.CSS(`body pre`)))
		body := value(t, tab, "read the answer", chromedp.Text(chromedp.CSS(`body pre`)))
		if !strings.Contains(body, `"error":"unauthorized"`) {
			t.Errorf("posting after the session ended shows %q, want the 401 JSON", body)
		}
		for _, r := range short.Upstream.Requests() {
			if r.Method == "POST" {
				t.Errorf("the upstream got the post without a session: %+v", r)
			}
		}
		step(t, tab, "open the page with the form again", chromedp.Navigate(short.URL+"/tasks"))
		landed(t, tab, short.URL+"/tasks", "alice@example.com")
	})
}

// anotherTab opens a second tab in tab's browser context (same cookies).
func anotherTab(t *testing.T, tab context.Context) context.Context {
	t.Helper()
	other, cancel := chromedp.NewContext(tab)
	t.Cleanup(cancel)
	if err := chromedp.Do(other); err != nil {
		t.Fatalf("open another tab: %v", err)
	}
	return other
}

// landed checks that tab shows the application at want (a URL) as email.
func landed(t *testing.T, tab context.Context, want, email string) {
	t.Helper()
	page := arrived(t, tab, "the application at "+want, func(loc string) bool { return loc == want })
	if page.H1 != "Echo upstream" {
		t.Fatalf("at %s the browser shows %q, want the application:\n%s", page.Loc, page.H1, page.Body)
	}
	if page.Email != email {
		t.Errorf("at %s the upstream saw X-Email %q, want %q", page.Loc, page.Email, email)
	}
}

// shownPage is what a tab shows: its location, heading, the email the echo
// upstream shows (if it is the upstream's) and its text.
type shownPage struct{ Loc, H1, Email, Body string }

// arrived waits, up to stepTimeout, for tab to show a loaded page with a
// heading at a location that at accepts, and not one that leaving marked,
// and returns it; what is what the test waits for, for the failure. A
// click or a login that goes on through the IdP and back by redirects
// leaves the page it started from, or one on the way, in the tab for a
// while, and a heading read in one document can be another's location:
// the page is read in one go.
func arrived(t *testing.T, tab context.Context, what string, at func(loc string) bool) shownPage {
	t.Helper()
	var page shownPage
	deadline := time.Now().Add(stepTimeout)
	for {
		ctx, cancel := context.WithTimeout(tab, stepTimeout)
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(document.readyState !== "complete" || window.journeyLeft ? {} : {
			Loc: location.href, H1: (document.querySelector("h1") || {}).textContent || "",
			Email: (document.querySelector("strong#email") || {}).textContent || "", Body: document.body.innerText})`))
		cancel()
		// An error is a document going away under the read: read again.
		if err == nil && json.Unmarshal([]byte(raw), &page) == nil && page.H1 != "" && at(page.Loc) {
			return page
		}
		if time.Now().After(deadline) {
			t.Fatalf("the browser shows %s headed %q, want %s:\n%s", page.Loc, page.H1, what, page.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leaving marks the page a tab shows as one that the next actions leave:
// arrived waits for another.
var leaving = chromedp.Func(func(ctx context.Context, target *chromedp.Target) error {
	_, err := chromedp.Evaluate[bool](`window.journeyLeft = true`)(ctx, target)
	return err
})

// heading is the heading of the page tab shows ("" for none) and its text.
func heading(t *testing.T, tab context.Context) (string, string) {
	t.Helper()
	step(t, tab, "wait for a page", chromedp.WaitVisible(chromedp.CSS(`body`)))
	h1 := value(t, tab, "read the heading", chromedp.Evaluate[string](`(document.querySelector("h1") || {}).textContent || ""`))
	return h1, value(t, tab, "read the page", chromedp.Text(chromedp.CSS(`body`)))
}

// lastRequest records the URLs tab requests that start with prefix; the
// func it returns gives the last one so far, "" before there is one.
func lastRequest(t *testing.T, tab context.Context, prefix string) func() string {
	t.Helper()
	var mu sync.Mutex
	var last string
	if err := chromedp.Listen(tab, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok && strings.HasPrefix(e.Request.URL, prefix) {
			mu.Lock()
			last = e.Request.URL
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

// signOut signs tab out at public, at the IdP too (single_sign_out).
func signOut(t *testing.T, tab context.Context, public string) {
	t.Helper()
	step(t, tab, "sign out", chromedp.Navigate(public+"/.portcullis/logout"),
		chromedp.WaitVisible(chromedp.CSS(`button[name="logout"]`))) // the IdP's own "sign out?"
	step(t, tab, "confirm at the IdP", chromedp.Click(chromedp.CSS(`button[name="logout"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[role="status"]`)))
}
