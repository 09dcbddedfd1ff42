// Command login logs in through portcullis at a real OpenID Connect
// provider (test/oidc/provider.mjs) the way a browser does: it starts the
// login at the proxy, follows the redirects to the provider, posts the user's
// password on its login form, and follows the redirects back to the proxy's
// callback, which sets the session cookie.
//
// It logs in through oauth2-proxy alike, for the benchmark's comparison:
//
//	login -proxy http://ADDR -prefix /oauth2 -start '/oauth2/start?rd=%2F' -cookie-name _oauth2_proxy
//
// With -d 0 it logs in once and prints the session's Cookie header, for the
// load run to send. With -d > 0 it runs -c browsers, each logging in again
// and again with a fresh cookie jar (a full login, password form included),
// and prints how many logins completed per second:
//
//	logins=N logins_s=R p50_ms=A p99_ms=B
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

func main() {
	proxy := flag.String("proxy", "", "the proxy's public URL")
	idpID := flag.String("idp", "bench", "the IdP id to log in at")
	prefix := flag.String("prefix", "/.portcullis", "the proxy's auth_prefix")
	cookieName := flag.String("cookie-name", "portcullis", "the proxy's session cookie name (its chunks NAME_0 to NAME_9 too)")
	start := flag.String("start", "", "the path and query that start a login at the proxy (default PREFIX/login/IDP?rd=%2F)")
	user := flag.String("user", "alice", "username at the IdP")
	password := flag.String("password", "alice-pw", "password at the IdP")
	conc := flag.Int("c", 4, "browsers logging in at once (with -d)")
	duration := flag.Duration("d", 0, "log in repeatedly for this long; 0 logs in once and prints the Cookie header")
	flag.Parse()
	if *start == "" {
		*start = *prefix + "/login/" + *idpID + "?rd=%2F"
	}
	l := &login{proxy: strings.TrimSuffix(*proxy, "/"), start: *start, prefix: *prefix, cookieName: *cookieName,
		form: url.Values{"username": {*user}, "password": {*password}, "login": {"yes"}}}
	var err error
	if *duration <= 0 {
		var header string
		if header, err = l.once(); err == nil {
			fmt.Println(header)
		}
	} else {
		err = l.repeat(*conc, *duration)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "login:", err)
		os.Exit(1)
	}
}

type login struct {
	proxy, start, prefix, cookieName string
	form                             url.Values
}

var loginForm = regexp.MustCompile(`<form method="post" action="(/interaction/[A-Za-z0-9_-]+)"`)

// transport is shared by every browser: connections are reused, as a
// browser reuses its own, while cookies stay per browser.
var transport = &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}

// once is one browser's whole login; it returns the Cookie header of the
// session it got.
func (l *login) once() (string, error) {
	jar, _ := cookiejar.New(nil)
	client := &http.Client{
		Transport:     transport,
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	proxyURL, err := url.Parse(l.proxy)
	if err != nil {
		return "", fmt.Errorf("-proxy: %w", err)
	}
	next := l.proxy + l.start
	method, body := http.MethodGet, url.Values(nil)
	for hop := 0; hop < 20; hop++ {
		resp, err := send(client, method, next, body)
		if err != nil {
			return "", err
		}
		page, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return "", fmt.Errorf("read %s: %w", next, err)
		}
		switch {
		case resp.StatusCode >= 300 && resp.StatusCode < 400:
			loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
			if err != nil {
				return "", fmt.Errorf("redirect from %s: %w", next, err)
			}
			if loc.Host == proxyURL.Host && !strings.HasPrefix(loc.Path, l.prefix+"/") {
				return l.cookieHeader(jar, proxyURL)
			}
			next, method, body = loc.String(), http.MethodGet, nil
		case resp.StatusCode == http.StatusOK:
			m := loginForm.FindSubmatch(page)
			if m == nil || body != nil {
				return "", fmt.Errorf("%s: no login form, or the password was refused", next)
			}
			action, _ := resp.Request.URL.Parse(string(m[1]))
			next, method, body = action.String(), http.MethodPost, l.form
		default:
			return "", fmt.Errorf("%s %s: status %d: %.200s", method, next, resp.StatusCode, page)
		}
	}
	return "", errors.New("too many redirects")
}

func send(client *http.Client, method, target string, form url.Values) (*http.Response, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/html")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, target, err)
	}
	return resp, nil
}

// cookieHeader is the Cookie header of the proxy's session cookies only (the
// IdP's cookies share the host in the jar): NAME, and the chunks of a session
// too big for one cookie, NAME_1... (portcullis) or NAME_0... (oauth2-proxy).
func (l *login) cookieHeader(jar http.CookieJar, proxyURL *url.URL) (string, error) {
	var parts []string
	for _, c := range jar.Cookies(proxyURL) {
		rest, ok := strings.CutPrefix(c.Name, l.cookieName)
		if ok && (rest == "" || len(rest) == 2 && rest[0] == '_' && rest[1] >= '0' && rest[1] <= '9') {
			parts = append(parts, c.Name+"="+c.Value)
		}
	}
	if len(parts) == 0 {
		return "", errors.New("the login ended without a session cookie")
	}
	return strings.Join(parts, "; "), nil
}

// repeat runs conc browsers logging in until d has passed.
func (l *login) repeat(conc int, d time.Duration) error {
	var mu sync.Mutex
	var took []time.Duration
	var first error
	end := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				t0 := time.Now()
				_, err := l.once()
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if err == nil {
					took = append(took, time.Since(t0))
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	elapsed := time.Since(start)
	slices.Sort(took)
	pct := func(p int) float64 {
		if len(took) == 0 {
			return 0
		}
		return float64(took[(len(took)-1)*p/100]) / float64(time.Millisecond)
	}
	fmt.Printf("logins=%d logins_s=%.1f p50_ms=%.1f p99_ms=%.1f\n", len(took), float64(len(took))/elapsed.Seconds(), pct(50), pct(99))
	return nil
}
