package e2e

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/portcullis-proxy/portcullis/cmd/portcullis/demo"
	"github.com/portcullis-proxy/portcullis/test/process"
)

// runningDemo is `portcullis demo` running in the test process.
type runningDemo struct {
	*demo.Info
	out *process.Output
}

// startDemo runs the demo on free ports until the test ends; the test fails
// if it does not stop cleanly then.
func startDemo(t *testing.T) *runningDemo {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *demo.Info, 1)
	done := make(chan error, 1)
	out := &process.Output{}
	start := time.Now()
	go func() {
		done <- demo.Run(ctx, demo.Options{
			Listen: "127.0.0.1:0",
			Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
			Ready:  func(info *demo.Info) { ready <- info },
		}, out)
	}()
	var info *demo.Info
	select {
	case info = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("demo.Run returned before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("the demo was not ready after 30s")
	}
	t.Logf("demo ready in %s (demo.Run measured %s)", time.Since(start).Round(time.Millisecond), info.Startup.Round(time.Millisecond))
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("demo.Run after Ctrl-C: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the demo did not stop within 10s of its context ending")
		}
	})
	return &runningDemo{Info: info, out: out}
}

// user returns the demo account called name.
func (d *runningDemo) user(t *testing.T, name string) demo.User {
	t.Helper()
	for _, u := range d.Users {
		if u.Name == name {
			return u
		}
	}
	t.Fatalf("the demo has no user %q (users: %+v)", name, d.Users)
	return demo.User{}
}

func TestDemoPrintsHowToUseIt(t *testing.T) {
	d := startDemo(t)
	out := d.out.String()
	t.Logf("the demo printed:\n%s", out)
	want := []string{
		"Open " + d.URL + "/ ",
		"curl -H 'Authorization: Token demo' " + d.URL + "/api/server/about",
		"Press Ctrl-C to stop.",
	}
	if len(d.Users) != 2 {
		t.Fatalf("the demo has %d users, want an admin and an annotator", len(d.Users))
	}
	for _, u := range d.Users {
		if u.Password == "" {
			t.Errorf("user %s has no password", u.Name)
		}
		want = append(want, u.Name, u.Password, u.Email, u.Role)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("the demo's output lacks %q", w)
		}
	}
	if strings.Contains(out, "keys: [") {
		t.Errorf("the demo printed its configuration (with the session key) without being asked")
	}
}

func TestDemoLogsUsersInWithTheirRoles(t *testing.T) {
	d := startDemo(t)
	for _, tc := range []struct {
		name, user, role string
	}{
		{"the admin is passed on as admin", "admin", "admin"},
		{"the annotator is passed on as user", "annotator", "user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := d.user(t, tc.user)
			if u.Role != tc.role {
				t.Errorf("the demo announces role %q for %s, want %q", u.Role, u.Name, tc.role)
			}
			b := browser(t)
			resp := samlLogin(t, b, d.IdPURL+"/sso", d.URL+"/", u.Name, u.Password)
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusOK || resp.Request.URL.String() != d.URL+"/" {
				t.Fatalf("after login: status %d at %s, want the echo page at %s/", resp.StatusCode, resp.Request.URL, d.URL)
			}
			for _, want := range []string{`<strong id="email">` + u.Email + `</strong>`, `<strong id="role">` + tc.role + `</strong>`} {
				if !strings.Contains(body, want) {
					t.Errorf("the echo page lacks %s:\n%s", want, body)
				}
			}
			got, _ := d.Upstream.Last()
			if got.Header.Get("X-Email") != u.Email || got.Header.Get("X-Groups") != tc.role {
				t.Errorf("upstream got X-Email %q X-Groups %q, want %s and %s",
					got.Header.Get("X-Email"), got.Header.Get("X-Groups"), u.Email, tc.role)
			}
			// The session's subject is the IdP's stable username, not a
			// NameID that changes on every login.
			info, err := b.Get(d.URL + "/.portcullis/userinfo")
			if err != nil {
				t.Fatal(err)
			}
			var prof struct {
				Sub string `json:"sub"`
			}
			json.Unmarshal([]byte(readBody(t, info)), &prof)
			if prof.Sub != u.Name {
				t.Errorf("session sub = %q, want the username %q", prof.Sub, u.Name)
			}
		})
	}

	t.Run("the annotator gets 403 on /admin", func(t *testing.T) {
		u := d.user(t, "annotator")
		before := len(d.Upstream.Requests())
		resp := samlLogin(t, browser(t), d.IdPURL+"/sso", d.URL+"/admin", u.Name, u.Password)
		readBody(t, resp)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("annotator on /admin: status %d, want 403", resp.StatusCode)
		}
		if n := len(d.Upstream.Requests()) - before; n != 0 {
			t.Errorf("the upstream saw %d requests, want none", n)
		}
	})
}

func TestDemoCurlLineShowsTheBypass(t *testing.T) {
	d := startDemo(t)
	for _, tc := range []struct {
		name          string
		authorization string
		status        int
		reachUpstream bool
	}{
		{"an API call with a token passes through with no identity", "Token demo", http.StatusOK, true},
		{"an API call with basic credentials passes through with no identity", "Basic ZGVtbzpkZW1v", http.StatusOK, true},
		{"an API call without credentials gets 401", "", http.StatusUnauthorized, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d.Upstream.Reset()
			// What curl sends: no Accept: text/html, so no login redirect.
			req, _ := http.NewRequest(http.MethodGet, d.URL+"/api/server/about", nil)
			req.Header.Set("Accept", "*/*")
			if tc.authorization != "" {
				req.Header.Set("Authorization", tc.authorization)
			}
			req.Header.Set("X-Email", "spoofed@evil.example")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			got, reached := d.Upstream.Last()
			if reached != tc.reachUpstream {
				t.Fatalf("reached the upstream: %v, want %v", reached, tc.reachUpstream)
			}
			if !reached {
				return
			}
			var echoed struct {
				Headers http.Header `json:"headers"`
			}
			if err := json.Unmarshal([]byte(body), &echoed); err != nil {
				t.Fatalf("the upstream's answer is not the echo JSON: %v\n%s", err, body)
			}
			if echoed.Headers.Get("Authorization") != tc.authorization {
				t.Errorf("upstream Authorization = %q, want the caller's %q", echoed.Headers.Get("Authorization"), tc.authorization)
			}
			if e, g := got.Header.Get("X-Email"), got.Header.Get("X-Groups"); e != "" || g != "" {
				t.Errorf("bypassed call reached the upstream with X-Email %q X-Groups %q, want none", e, g)
			}
		})
	}
}

func TestDemoStopsCleanly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *demo.Info, 1)
	done := make(chan error, 1)
	out := &process.Output{}
	go func() {
		done <- demo.Run(ctx, demo.Options{Listen: "127.0.0.1:0", Ready: func(i *demo.Info) { ready <- i }}, out)
	}()
	var info *demo.Info
	select {
	case info = <-ready:
	case err := <-done:
		t.Fatalf("demo.Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not ready after 30s")
	}
	cancel() // what Ctrl-C does to the command's context
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo.Run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the demo did not stop within 10s")
	}
	if !strings.HasSuffix(out.String(), "portcullis demo stopped.\n") {
		t.Errorf("the demo did not say it stopped; output ends %q", out.String()[max(0, len(out.String())-80):])
	}
	for name, u := range map[string]string{"proxy": info.URL, "identity provider": info.IdPURL, "upstream": info.UpstreamURL, "admin": info.AdminURL} {
		addr := strings.TrimPrefix(u, "http://")
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("the %s still accepts connections at %s after the demo stopped", name, addr)
		}
	}
}

func TestDemoRefusesABusyAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = demo.Run(t.Context(), demo.Options{Listen: ln.Addr().String()}, &process.Output{})
	if err == nil || !strings.Contains(err.Error(), "--listen") {
		t.Fatalf("demo on a busy address: %v, want an error that suggests --listen", err)
	}
}

// TestDemoInChromium is the README's first command as a user meets it: open
// the URL, log in at the demo IdP, see the echo page with the right email
// and role.
func TestDemoInChromium(t *testing.T) {
	start := time.Now()
	d := startDemo(t)
	browserCtx := newChromium(t)
	artifacts := artifactDir(t)
	for _, tc := range []struct{ user, role string }{
		{"admin", "admin"},
		{"annotator", "user"},
	} {
		t.Run(tc.user+" sees role "+tc.role, func(t *testing.T) {
			u := d.user(t, tc.user)
			tab := newTab(t, browserCtx)
			loginStart := time.Now()
			step(t, tab, "open the demo", chromedp.Navigate(d.URL+"/"))
			if loc := value(t, tab, "read the location", chromedp.Location()); !strings.HasPrefix(loc, d.IdPURL+"/sso?") {
				t.Fatalf("opening %s/ led to %s, want the demo IdP's login form at %s/sso", d.URL, loc, d.IdPURL)
			}
			step(t, tab, "wait for the IdP's login form", chromedp.WaitVisible(chromedp.CSS(`input[name="user"]`)))
			screenshot(t, tab, artifacts, "idp-login-"+tc.user+".png")
			step(t, tab, "log in at the IdP",
				chromedp.SendKeys(chromedp.CSS(`input[name="user"]`), u.Name),
				chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), u.Password),
				chromedp.Click(chromedp.CSS(`input[type="submit"]`)),
				// The IdP's answer page posts itself to the ACS, which
				// redirects to the page first asked for.
				chromedp.WaitVisible(chromedp.CSS(`#email`)),
			)
			t.Logf("%s: open, log in, land on the echo page: %s", tc.user, time.Since(loginStart).Round(time.Millisecond))
			screenshot(t, tab, artifacts, "echo-"+tc.user+".png")
			if loc := value(t, tab, "read the location", chromedp.Location()); loc != d.URL+"/" {
				t.Errorf("landed on %s, want %s/", loc, d.URL)
			}
			if email := value(t, tab, "read the email", chromedp.Text(chromedp.CSS(`#email`))); email != u.Email {
				t.Errorf("the echo page shows email %q, want %q", email, u.Email)
			}
			if role := value(t, tab, "read the role", chromedp.Text(chromedp.CSS(`#role`))); role != tc.role {
				t.Errorf("the echo page shows role %q, want %q", role, tc.role)
			}
		})
	}
	t.Logf("browser test: %s in all (demo start, chromium start, two logins)", time.Since(start).Round(time.Millisecond))
}
