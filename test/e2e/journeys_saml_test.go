package e2e

import (
	"context"
	"html"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// samlJourneyStack is portcullis on https (its login states SameSite=None,
// as in production) with samlConfig and session (lines under session:),
// logging in at idpSrv.
func samlJourneyStack(t *testing.T, idpSrv *samlserver.Server, session string) *stack {
	t.Helper()
	s := listenTLS(t)
	s.start(t, strings.NewReplacer("ENTITY_ID", idpSrv.EntityID(), "IDP_SOURCE", "metadata_url: "+idpSrv.MetadataURL(),
		"  keys: [SESSION_KEY]\n", "  keys: [SESSION_KEY]\n"+session).Replace(samlConfig))
	// The IdP cannot fetch metadata from a self-signed https: it is handed over.
	rec := httptest.NewRecorder()
	s.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/.portcullis/saml/corp/metadata", nil))
	if err := idpSrv.AddServiceProviderXML(rec.Body.Bytes()); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBrowserJourneysSAML walks the journeys of TestBrowserJourneys that
// differ for SAML: its IdP answers with a form the browser posts to the
// ACS, from another site (the IdP is on 127.0.0.2), so the answer comes
// with the login state's SameSite=None cookie and without the session's
// SameSite=Lax one, as in production.
func TestBrowserJourneysSAML(t *testing.T) {
	idpSrv := samlserver.Start(t, samlserver.Options{Users: []samlserver.User{samlAlice, samlBob}, Addr: "127.0.0.2:0"})
	main := samlJourneyStack(t, idpSrv, "")
	short := samlJourneyStack(t, idpSrv, shortSession)
	browser := newChromium(t, chromedp.Flag("ignore-certificate-errors", true)) // the proxy's certificate is self-signed

	atIdP := func(t *testing.T, tab context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		step(t, tab, what, append(actions, chromedp.WaitVisible(chromedp.CSS(`input[name="password"]`)))...)
		if loc := value(t, tab, "read the location", chromedp.Location()); !strings.HasPrefix(loc, idpSrv.SSOURL()) {
			t.Fatalf("%s: the browser is at %s, want the IdP's login at %s", what, loc, idpSrv.SSOURL())
		}
	}
	signIn := func(t *testing.T, tab context.Context, user samlserver.User) {
		t.Helper()
		step(t, tab, "sign in at the IdP as "+user.Name, leaving,
			chromedp.SendKeys(chromedp.CSS(`input[name="user"]`), user.Name),
			chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), user.Password),
			// The IdP's answer posts itself to the ACS: landed or arrived
			// waits for the page after it.
			chromedp.Click(chromedp.CSS(`input[type="submit"]`)))
	}
	// acsPosts records the forms tab posts to the ACS of s, as the IdP's
	// answer page had them.
	acsPosts := func(t *testing.T, tab context.Context, s *stack) func() []url.Values {
		t.Helper()
		var mu sync.Mutex
		var posts []url.Values
		acs := s.URL + "/.portcullis/saml/corp/acs"
		if err := chromedp.Listen(tab, func(ev any) {
			e, ok := ev.(*network.EventRequestWillBeSent)
			if !ok || e.Request.URL != acs || e.Request.Method != "POST" {
				return
			}
			var body []byte
			for _, p := range e.Request.PostDataEntries {
				body = append(body, p.Bytes...)
			}
			form, err := url.ParseQuery(string(body))
			if err != nil {
				return
			}
			mu.Lock()
			posts = append(posts, form)
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
		return func() []url.Values {
			mu.Lock()
			defer mu.Unlock()
			return append([]url.Values(nil), posts...)
		}
	}
	// postFromIdPsSite has tab post form to the ACS of s from a page of
	// another site, as the IdP's answer page does.
	postFromIdPsSite := func(t *testing.T, tab context.Context, s *stack, form url.Values) {
		t.Helper()
		page := `<!doctype html><title>answer</title><form id="answer" method="post" action="` + s.URL + `/.portcullis/saml/corp/acs">`
		for k := range form {
			page += `<input type="hidden" name="` + html.EscapeString(k) + `" value="` + html.EscapeString(form.Get(k)) + `">`
		}
		page += `<button id="send">Continue</button></form>`
		step(t, tab, "open the answer page on the IdP's site", chromedp.Navigate(anotherSitesPage(t, page)))
		step(t, tab, "post the answer to the ACS", leaving, chromedp.Click(chromedp.CSS(`#send`)))
	}
	// atProxy waits for tab to show a page of s, and returns it.
	atProxy := func(t *testing.T, tab context.Context, s *stack) shownPage {
		t.Helper()
		return arrived(t, tab, "a page of "+s.URL, func(loc string) bool { return strings.HasPrefix(loc, s.URL+"/") })
	}
	// upstreamGot counts the requests for path the upstream of s got.
	upstreamGot := func(s *stack, path string) int {
		n := 0
		for _, r := range s.Upstream.Requests() {
			if r.Path == path {
				n++
			}
		}
		return n
	}

	for _, order := range [][2]int{{0, 1}, {1, 0}} {
		t.Run("two tabs start a login; tab "+string(rune('1'+order[0]))+" finishes first", func(t *testing.T) {
			one := newTab(t, browser)
			tabs := []context.Context{one, anotherTab(t, one)}
			paths := []string{"/projects", "/tasks"}
			atIdP(t, tabs[0], "open the projects in tab 1", chromedp.Navigate(main.URL+paths[0]))
			atIdP(t, tabs[1], "open the tasks in tab 2", chromedp.Navigate(main.URL+paths[1]))
			for _, i := range order {
				signIn(t, tabs[i], samlAlice)
				landed(t, tabs[i], main.URL+paths[i], samlAlice.Email)
			}
		})
	}

	t.Run("a deep link with a query", func(t *testing.T) {
		tab := newTab(t, browser)
		atIdP(t, tab, "open a deep link", chromedp.Navigate(main.URL+"/tasks/5?page=2"))
		signIn(t, tab, samlAlice)
		landed(t, tab, main.URL+"/tasks/5?page=2", samlAlice.Email)
	})

	t.Run("back after the login, and the answer posted again", func(t *testing.T) {
		tab := newTab(t, browser)
		posts := acsPosts(t, tab, main)
		atIdP(t, tab, "open the projects", chromedp.Navigate(main.URL+"/projects"))
		signIn(t, tab, samlAlice)
		landed(t, tab, main.URL+"/projects", samlAlice.Email)
		if n := len(posts()); n != 1 {
			t.Fatalf("the browser posted %d answers to the ACS, want 1", n)
		}

		// The ACS answered with a redirect: the page is a GET, and a
		// reload posts nothing.
		step(t, tab, "reload", leaving, chromedp.Reload())
		landed(t, tab, main.URL+"/projects", samlAlice.Email)

		// Back is the IdP's answer page, the result of a POST, which
		// Chromium loads again: its form posts itself to the ACS again,
		// from the IdP's site, without the session's SameSite=Lax cookie.
		step(t, tab, "press back", leaving, chromedp.NavigateBack())
		landed(t, tab, main.URL+"/", samlAlice.Email)
		t.Logf("back after the login: %d posts to the ACS in all", len(posts()))

		// The answer posted again, from the IdP's site, as a reload of its
		// answer page does: refused (its state is used), and the signed-in
		// user goes on to the application.
		postFromIdPsSite(t, tab, main, posts()[0])
		landed(t, tab, main.URL+"/", samlAlice.Email)

		// Without a session, the same answer is refused.
		other := newTab(t, browser)
		postFromIdPsSite(t, other, main, posts()[0])
		if page := atProxy(t, other, main); page.H1 != "Sign-in failed" {
			t.Errorf("a used answer posted by another browser shows %q, want Sign-in failed:\n%s", page.H1, page.Body)
		}
		// Nothing signed it in: the application sends it to the IdP.
		atIdP(t, other, "open the projects", chromedp.Navigate(main.URL+"/projects"))
	})

	t.Run("the session ends; the next link signs in again at the IdP and lands there", func(t *testing.T) {
		tab := newTab(t, browser)
		atIdP(t, tab, "open the tasks", chromedp.Navigate(short.URL+"/tasks"))
		signIn(t, tab, samlAlice)
		landed(t, tab, short.URL+"/tasks", samlAlice.Email)
		value(t, tab, "wait for the session to end", chromedp.Evaluate[bool](
			`(async () => { while ((await fetch("/.portcullis/userinfo")).status !== 401) await new Promise(r => setTimeout(r, 100)); return true })()`,
			chromedp.EvalAwaitPromise))
		step(t, tab, "follow the link to the projects", leaving, chromedp.Click(chromedp.CSS(`#projects`)))
		landed(t, tab, short.URL+"/projects", samlAlice.Email)
	})

	t.Run("sign out in tab 1, then follow a link in tab 2", func(t *testing.T) {
		one := newTab(t, browser)
		atIdP(t, one, "open the projects", chromedp.Navigate(main.URL+"/projects"))
		signIn(t, one, samlAlice)
		landed(t, one, main.URL+"/projects", samlAlice.Email)
		two := anotherTab(t, one)
		step(t, two, "open the tasks in tab 2", chromedp.Navigate(main.URL+"/tasks"))
		landed(t, two, main.URL+"/tasks", samlAlice.Email)
		step(t, one, "sign out", chromedp.Navigate(main.URL+"/.portcullis/logout"))
		if page := atProxy(t, one, main); page.H1 != "Signed out" {
			t.Fatalf("the sign-out shows %q, want Signed out:\n%s", page.H1, page.Body)
		}
		// No single logout: the IdP's session lasts, and signs alice in
		// again at once, through a fresh login.
		before := upstreamGot(main, "/projects")
		step(t, two, "follow the link to the projects in tab 2", leaving, chromedp.Click(chromedp.CSS(`#projects`)))
		landed(t, two, main.URL+"/projects", samlAlice.Email)
		if n := upstreamGot(main, "/projects") - before; n != 1 {
			t.Errorf("the upstream got /projects %d times, want once", n)
		}
	})
}
