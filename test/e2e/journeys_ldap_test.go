package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
)

// TestBrowserJourneysLDAP walks what users do in a browser around the
// proxy's own LDAP login form: a wrong password first, the back button and
// a reload after the login, two tabs with a form each, a form left open
// until its login state is gone, a session that ends under an open page,
// and a bookmark of the form.
func TestBrowserJourneysLDAP(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	t.Setenv("PORTCULLIS_IDP_CORP_LDAP_BIND_PASSWORD", ldapserver.ServicePassword)
	main, short := listen(t), listen(t)
	main.start(t, strings.ReplaceAll(ldapConfig, "LDAP_URL", dir.URL))
	short.start(t, strings.NewReplacer("LDAP_URL", dir.URL, "  keys: [SESSION_KEY]\n", "  keys: [SESSION_KEY]\n"+shortSession).Replace(ldapConfig))
	browser := newChromium(t)
	const form = "/.portcullis/ldap/corp-ldap"

	// atForm waits for the form in tab, at rd, after actions.
	atForm := func(t *testing.T, tab context.Context, s *stack, rd, what string, actions ...chromedp.Action[chromedp.Void]) shownPage {
		t.Helper()
		if len(actions) > 0 { // else the caller's last step left the page, and the next may be here already
			step(t, tab, what, append([]chromedp.Action[chromedp.Void]{leaving}, actions...)...)
		}
		page := arrived(t, tab, "the sign-in form", func(loc string) bool { return strings.HasPrefix(loc, s.URL+form) })
		step(t, tab, "wait for the form", chromedp.WaitVisible(chromedp.CSS(`#password`)))
		if got := value(t, tab, "read the form's rd", chromedp.Value(chromedp.CSS(`input[name="rd"]`))); got != s.URL+rd {
			t.Errorf("the form leads to %q, want %s%s", got, s.URL, rd)
		}
		return page
	}
	signIn := func(t *testing.T, tab context.Context, password string) {
		t.Helper()
		step(t, tab, "sign in as alice", leaving,
			chromedp.SetValue(chromedp.CSS(`#username`), ldapserver.Alice),
			chromedp.SendKeys(chromedp.CSS(`#password`), password),
			chromedp.Click(chromedp.CSS(`button[type="submit"]`)))
	}
	const email = "alice@example.com"

	t.Run("a wrong password, then the right one, lands on the deep link", func(t *testing.T) {
		tab := newTab(t, browser)
		atForm(t, tab, main, "/tasks/5?page=2", "open a deep link", chromedp.Navigate(main.URL+"/tasks/5?page=2"))
		signIn(t, tab, "wrong")
		step(t, tab, "wait for the refusal", chromedp.WaitVisible(chromedp.CSS(`#form-error`)))
		if got := value(t, tab, "read the form's rd", chromedp.Value(chromedp.CSS(`input[name="rd"]`))); got != main.URL+"/tasks/5?page=2" {
			t.Errorf("after a wrong password the form leads to %q", got)
		}
		signIn(t, tab, ldapserver.AlicePassword)
		landed(t, tab, main.URL+"/tasks/5?page=2", email)
	})

	t.Run("reload after the login, and back onto the form", func(t *testing.T) {
		tab := newTab(t, browser)
		atForm(t, tab, main, "/tasks", "open the tasks", chromedp.Navigate(main.URL+"/tasks"))
		signIn(t, tab, ldapserver.AlicePassword)
		landed(t, tab, main.URL+"/tasks", email)
		// The form's answer was a redirect: the page is a GET.
		step(t, tab, "reload", leaving, chromedp.Reload())
		landed(t, tab, main.URL+"/tasks", email)
		// The form's page is no-store: back loads it again, and a browser
		// signed in with the directory goes on to the form's rd.
		step(t, tab, "press back", leaving, chromedp.NavigateBack())
		landed(t, tab, main.URL+"/tasks", email)
	})

	t.Run("reload after a wrong password posts the used form again", func(t *testing.T) {
		tab := newTab(t, browser)
		atForm(t, tab, main, "/tasks", "open the tasks", chromedp.Navigate(main.URL+"/tasks"))
		signIn(t, tab, "wrong")
		step(t, tab, "wait for the refusal", chromedp.WaitVisible(chromedp.CSS(`#form-error`)))
		// The page is the answer to a POST: Chromium posts it again, with
		// the state that post used.
		atForm(t, tab, main, "/tasks", "reload", chromedp.Reload())
		msg := value(t, tab, "read the message", chromedp.Evaluate[string](`(document.querySelector("#form-error") || {}).textContent || ""`))
		t.Logf("reload after a wrong password: %q", msg)
		if !strings.Contains(msg, "expired") {
			t.Errorf("the form posted again says %q, want that it expired", msg)
		}
		signIn(t, tab, ldapserver.AlicePassword)
		landed(t, tab, main.URL+"/tasks", email)
	})

	t.Run("two tabs open the form; tab 1 signs in, then tab 2", func(t *testing.T) {
		one := newTab(t, browser)
		two := anotherTab(t, one)
		atForm(t, one, main, "/projects", "open the projects in tab 1", chromedp.Navigate(main.URL+"/projects"))
		atForm(t, two, main, "/tasks", "open the tasks in tab 2", chromedp.Navigate(main.URL+"/tasks"))
		signIn(t, one, ldapserver.AlicePassword)
		landed(t, one, main.URL+"/projects", email)
		signIn(t, two, ldapserver.AlicePassword)
		landed(t, two, main.URL+"/tasks", email)
	})

	t.Run("the form left open until its login state is gone", func(t *testing.T) {
		tab := newTab(t, browser)
		atForm(t, tab, main, "/tasks", "open the tasks", chromedp.Navigate(main.URL+"/tasks"))
		// The browser drops the login state's cookie at its Max-Age, ten
		// minutes on: dropped here at once.
		step(t, tab, "drop the login state's cookie", chromedp.Func(func(ctx context.Context, target *chromedp.Target) error {
			res, err := cdp.Call(ctx, target, network.GetCookies, network.GetCookiesParams{URLs: []string{main.URL + form}})
			if err != nil {
				return err
			}
			for _, c := range res.Cookies {
				if strings.Contains(c.Name, "_login_") {
					if _, err := cdp.Call(ctx, target, network.DeleteCookies, network.DeleteCookiesParams{Name: c.Name, URL: main.URL + form}); err != nil {
						return err
					}
				}
			}
			return nil
		}))
		signIn(t, tab, ldapserver.AlicePassword)
		page := atForm(t, tab, main, "/tasks", "wait for the answer")
		msg := value(t, tab, "read the message", chromedp.Evaluate[string](`(document.querySelector("#form-error") || {}).textContent || ""`))
		t.Logf("the expired form: %s headed %q: %q", page.Loc, page.H1, msg)
		if !strings.Contains(msg, "expired") {
			t.Errorf("the expired form says %q, want that it expired:\n%s", msg, page.Body)
		}
		signIn(t, tab, ldapserver.AlicePassword)
		landed(t, tab, main.URL+"/tasks", email)
	})

	t.Run("the session ends; the next link shows the form for that page", func(t *testing.T) {
		tab := newTab(t, browser)
		atForm(t, tab, short, "/tasks", "open the tasks", chromedp.Navigate(short.URL+"/tasks"))
		signIn(t, tab, ldapserver.AlicePassword)
		landed(t, tab, short.URL+"/tasks", email)
		value(t, tab, "wait for the session to end", chromedp.Evaluate[bool](
			`(async () => { while ((await fetch("/.portcullis/userinfo")).status !== 401) await new Promise(r => setTimeout(r, 100)); return true })()`,
			chromedp.EvalAwaitPromise))
		page := atForm(t, tab, short, "/projects", "follow the link to the projects", chromedp.Click(chromedp.CSS(`#projects`)))
		t.Logf("after the session ended: %s headed %q: %.200s", page.Loc, page.H1, page.Body)
		signIn(t, tab, ldapserver.AlicePassword)
		landed(t, tab, short.URL+"/projects", email)
	})

	t.Run("a bookmark of the form opened while signed in", func(t *testing.T) {
		tab := newTab(t, browser)
		atForm(t, tab, main, "/projects", "open the projects", chromedp.Navigate(main.URL+"/projects"))
		signIn(t, tab, ldapserver.AlicePassword)
		landed(t, tab, main.URL+"/projects", email)
		step(t, tab, "open the bookmark", chromedp.Navigate(main.URL+form+"?rd=/tasks"))
		landed(t, tab, main.URL+"/tasks", email)
	})
}
