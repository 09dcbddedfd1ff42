package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// ldapFormURL is where corp-ldap's form is, at ldapProxyConfig's public_url.
var ldapFormURL, _ = url.Parse("https://cvat.example.com/.portcullis/ldap/corp-ldap")

// formBrowser is a browser at addr that signs in with corp-ldap's form: it
// keeps the cookies the proxy sets as a browser would (Path, Secure,
// Max-Age) and sends back those that apply to the form.
type formBrowser struct {
	addr string
	jar  *cookiejar.Jar
}

func newFormBrowser(addr string) *formBrowser {
	jar, _ := cookiejar.New(nil)
	return &formBrowser{addr: addr, jar: jar}
}

// signIn opens the form at h and posts it as username, and returns the
// status of the answer.
func (b *formBrowser) signIn(t *testing.T, h *Handler, username, password string) int {
	t.Helper()
	f := openLDAPForm(t, h)
	b.jar.SetCookies(ldapFormURL, f.cookies)
	f.cookies = b.jar.Cookies(ldapFormURL)
	rec := postLDAPFormFrom(t, h, f, b.addr, username, password)
	b.jar.SetCookies(ldapFormURL, rec.Result().Cookies())
	return rec.Code
}

// deviceCookie is the device cookie b holds for the form, or nil.
func (b *formBrowser) deviceCookie(h *Handler) *http.Cookie {
	for _, c := range b.jar.Cookies(ldapFormURL) {
		if c.Name == h.cookies.DeviceName() {
			return c
		}
	}
	return nil
}

// holding is a new browser at addr that holds c as its device cookie.
func holding(addr string, c *http.Cookie) *formBrowser {
	b := newFormBrowser(addr)
	b.jar.SetCookies(ldapFormURL, []*http.Cookie{{Name: c.Name, Value: c.Value, Path: ldapFormURL.Path, Secure: true}})
	return b
}

// ldapDeviceHandler is the proxy of ldapProxyConfig in front of upstream,
// at dir, on a clock that stands until the test moves it, answering
// refusals at once.
func ldapDeviceHandler(t *testing.T, dir, upstream string) (*Handler, *time.Time) {
	t.Helper()
	h := newTestHandler(t, ldapProxyConfig(dir, upstream))
	now := time.Now()
	h.now = func() time.Time { return now }
	h.pause = func(context.Context, time.Time) {}
	return h, &now
}

// Anyone who knows a username could keep its user from signing in with the
// form, the right password included: five failed guesses, then one each
// minute, take every attempt the username's limit gives back. A browser
// that signed in as the user before carries a device cookie, and its
// logins are counted against that cookie instead: under an hour of such an
// attack, the right password tried every ten minutes gets in from the
// user's own browser each time. A new browser is still held back, as
// before (the proxy cannot tell it from the attacker's).
func TestLDAPDeviceCookieOutlastsAnAttackOnTheUsername(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	h, now := ldapDeviceHandler(t, dir.URL, upstream.URL)
	t0 := *now
	at := func(d time.Duration) { *now = t0.Add(d) }

	own := newFormBrowser("198.51.100.10")
	if code := own.signIn(t, h, ldapserver.Alice, ldapserver.AlicePassword); code != http.StatusFound {
		t.Fatalf("alice's first sign-in: %d, want 302", code)
	}
	attacker := newFormBrowser("203.0.113.66")
	const tries = 6
	ownIn, newIn := 0, 0
	for minute := range 60 {
		at(time.Duration(minute) * time.Minute)
		guesses := 1
		if minute == 0 {
			guesses = userFailureBurst
		}
		for range guesses {
			if code := attacker.signIn(t, h, ldapserver.Alice, "guess"); code != http.StatusUnauthorized && code != http.StatusTooManyRequests {
				t.Fatalf("attacker's guess at minute %d: %d", minute, code)
			}
		}
		if minute%10 != 5 {
			continue
		}
		at(time.Duration(minute)*time.Minute + 30*time.Second)
		if own.signIn(t, h, ldapserver.Alice, ldapserver.AlicePassword) == http.StatusFound {
			ownIn++
		}
		if newFormBrowser("198.51.100.11").signIn(t, h, ldapserver.Alice, ldapserver.AlicePassword) == http.StatusFound {
			newIn++
		}
	}
	t.Logf("under the attack, the right password got in %d of %d times from alice's browser, %d of %d from new browsers",
		ownIn, tries, newIn, tries)
	if ownIn != tries {
		t.Errorf("alice's own browser got in %d of %d times, want every time", ownIn, tries)
	}
	if newIn != 0 {
		t.Errorf("a new browser got in %d of %d times while alice's username is held back, want none", newIn, tries)
	}
}

// A device cookie vouches only for the username at the IdP it was issued
// for, sealed with these session keys for this deployment, and while it
// lasts: any other is no exemption from the username's limit.
func TestLDAPDeviceCookieVouchesOnlyForItsUser(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	h, _ := ldapDeviceHandler(t, dir.URL, upstream.URL)

	alice, bob := newFormBrowser("198.51.100.20"), newFormBrowser("198.51.100.21")
	if alice.signIn(t, h, ldapserver.Alice, ldapserver.AlicePassword) != http.StatusFound ||
		bob.signIn(t, h, ldapserver.Bob, ldapserver.BobPassword) != http.StatusFound {
		t.Fatal("alice and bob could not sign in")
	}
	aliceCookie := alice.deviceCookie(h)
	if aliceCookie == nil || bob.deviceCookie(h) == nil {
		t.Fatal("a sign-in with the form set no device cookie")
	}
	attacker := newFormBrowser("203.0.113.67")
	for range userFailureBurst {
		attacker.signIn(t, h, ldapserver.Alice, "guess")
	}

	// sealed is a device cookie for alice at corp-ldap made by a proxy
	// with o, which names IdP idpID and the account dn.
	sealed := func(o session.Options, idpID, dn string) *http.Cookie {
		rec := httptest.NewRecorder()
		if err := session.NewDevices(o).Issue(rec, ldapFormURL.Path, idpID, userKey("corp-ldap", ldapserver.Alice), accountKey("corp-ldap", dn)); err != nil {
			t.Fatal(err)
		}
		return rec.Result().Cookies()[0]
	}
	otherKeys := h.cookies
	otherKeys.Keys = [][]byte{[]byte(strings.Repeat("k", session.KeySize))}
	otherDeployment := h.cookies
	otherDeployment.Audience = "https://other.example.com"
	longAgo := h.cookies
	longAgo.Now = func() time.Time { return time.Now().Add(-session.DeviceLifetime - time.Minute) }
	tampered := *aliceCookie
	tampered.Value = tampered.Value[:len(tampered.Value)/2] + "A" + tampered.Value[len(tampered.Value)/2+1:]
	if tampered.Value == aliceCookie.Value {
		tampered.Value = tampered.Value[:len(tampered.Value)/2] + "B" + tampered.Value[len(tampered.Value)/2+1:]
	}
	for _, tc := range []struct {
		name   string
		cookie *http.Cookie
	}{
		{"bob's device cookie", bob.deviceCookie(h)},
		{"a made-up value", &http.Cookie{Name: h.cookies.DeviceName(), Value: "MTcwMDAwMDAwMHxhbGljZXx4eHh4"}},
		{"alice's device cookie altered", &tampered},
		{"alice's, sealed with other session keys", sealed(otherKeys, "corp-ldap", ldapserver.UserDN(ldapserver.Alice))},
		{"alice's, sealed for another public_url", sealed(otherDeployment, "corp-ldap", ldapserver.UserDN(ldapserver.Alice))},
		{"alice's, for another IdP", sealed(h.cookies, "other-ldap", ldapserver.UserDN(ldapserver.Alice))},
		{"alice's, expired", sealed(longAgo, "corp-ldap", ldapserver.UserDN(ldapserver.Alice))},
	} {
		t.Run(tc.name+" is no exemption", func(t *testing.T) {
			if code := holding("198.51.100.22", tc.cookie).signIn(t, h, ldapserver.Alice, ldapserver.AlicePassword); code != http.StatusTooManyRequests {
				t.Errorf("alice's password with %s while her username is held back: %d, want 429", tc.name, code)
			}
		})
	}
	// A cookie for her username from a login to another account is counted
	// as for any client once the directory found hers: refused as a wrong
	// password, with no bind.
	before := binds(h)
	if code := holding("198.51.100.23", sealed(h.cookies, "corp-ldap", ldapserver.UserDN(ldapserver.Bob))).signIn(t, h,
		ldapserver.Alice, ldapserver.AlicePassword); code != http.StatusUnauthorized || binds(h) != before {
		t.Errorf("alice's password with a cookie for her username from a login to bob's account: %d, %d binds; want 401, none",
			code, binds(h)-before)
	}
	// Basic auth clients keep no cookies: one sent anyway vouches for nothing.
	r := request("GET", "/legacy/api", []*http.Cookie{aliceCookie})
	r.SetBasicAuth(ldapserver.Alice, ldapserver.AlicePassword)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != http.StatusTooManyRequests {
		t.Errorf("alice's Basic credentials with her device cookie while her username is held back: %d, want 429", rec.Code)
	}
	if code := alice.signIn(t, h, ldapserver.Alice, ldapserver.AlicePassword); code != http.StatusFound {
		t.Errorf("alice's password from her own browser: %d, want 302", code)
	}
}

// A device cookie has an attempt budget of its own, the username's size:
// someone who stole one gets its five guesses, not counted as the
// username's, and then it counts for nothing (OWASP's lockout list): the
// guesses after those are the username's, held back with everyone else's.
func TestLDAPStolenDeviceCookieGetsOnlyItsOwnAttempts(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	h, now := ldapDeviceHandler(t, dir.URL, upstream.URL)

	alice := newFormBrowser("198.51.100.30")
	if alice.signIn(t, h, ldapserver.Alice, ldapserver.AlicePassword) != http.StatusFound {
		t.Fatal("alice could not sign in")
	}
	thief := holding("203.0.113.68", alice.deviceCookie(h))
	for i := range userFailureBurst {
		if code := thief.signIn(t, h, ldapserver.Alice, "guess"); code != http.StatusUnauthorized {
			t.Fatalf("guess %d with the stolen cookie: %d, want 401", i+1, code)
		}
	}
	// Those were the cookie's: the username has all its attempts.
	if wait := h.passwords.limits.wait(attemptKeys("corp-ldap", ldapserver.Alice, netip.MustParseAddr("203.0.113.69")), *now); wait != 0 {
		t.Errorf("after the stolen cookie's guesses alice's username waits %s, want its attempts untouched", wait)
	}
	before := binds(h)
	for i := range userFailureBurst {
		if code := thief.signIn(t, h, ldapserver.Alice, "guess"); code != http.StatusUnauthorized {
			t.Fatalf("guess %d after the cookie's ran out: %d, want 401, counted as the username's", i+1, code)
		}
	}
	if code := thief.signIn(t, h, ldapserver.Alice, ldapserver.AlicePassword); code != http.StatusTooManyRequests {
		t.Errorf("the right password with the stolen cookie after %d guesses: %d, want 429", 2*userFailureBurst, code)
	}
	if n := binds(h) - before; n != userFailureBurst {
		t.Errorf("%d binds after the cookie's attempts ran out, want the username's %d", n, userFailureBurst)
	}
}

// A device cookie vouches for the account its login signed in to, not
// for every username that reads as its username: the limits fold ß into ss
// and katakana into hiragana, as Active Directory does, but OpenLDAP keeps
// jürgen.strauß and jürgen.strauss apart, two people. Mallory, the second,
// signs in to her own account as often as she likes, and each sign-in
// leaves a cookie with five attempts of its own that named her username:
// had it vouched for the victim's spelling too, it would have skipped the
// victim's account limit, and each new cookie would have bought five more
// guesses at the victim's password (4 cookies: 20 binds). Those guesses
// are counted as anyone's, against the username and the victim's account,
// and held back with them.
func TestLDAPDeviceCookieVouchesOnlyForTheAccountItSignedInTo(t *testing.T) {
	const (
		victim, victimPassword     = "jürgen.strauß", "victim-pw"
		attacker, attackerPassword = "jürgen.strauss", "attacker-pw"
		cookies                    = 4
	)
	if userKey("corp-ldap", victim) != userKey("corp-ldap", attacker) {
		t.Fatalf("the limits read %q and %q apart; the test needs two usernames they read as one", victim, attacker)
	}
	dir := ldapserver.Start(t, ldapserver.Options{})
	var people strings.Builder
	for i, u := range [][2]string{{victim, victimPassword}, {attacker, attackerPassword}} {
		fmt.Fprintf(&people, "dn: cn=person%d,%s\nobjectClass: inetOrgPerson\ncn: person%d\nsn: Strauss\nuid: %s\nuserPassword: %s\n\n",
			i, ldapserver.PeopleDN, i, u[0], ldapserver.SSHA(u[1]))
	}
	dir.Add(t, people.String())
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	srv := redisserver.Start(t)
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store, func(t *testing.T) {
			cfg := ldapProxyConfig(dir.URL, upstream.URL)
			if store == "redis" {
				cfg = storeInRedis(cfg, srv.URL)
			}
			h := newTestHandler(t, cfg)
			quickFailures(h)
			var held []*formBrowser
			for i := range cookies + 1 {
				b := newFormBrowser(fmt.Sprintf("203.0.113.%d", 80+i))
				if code := b.signIn(t, h, attacker, attackerPassword); code != http.StatusFound || b.deviceCookie(h) == nil {
					t.Fatalf("mallory's sign-in %d to her own account: %d, or no device cookie", i+1, code)
				}
				held = append(held, b)
			}
			before := binds(h)
			for _, b := range held[:cookies] {
				for range userFailureBurst {
					if code := b.signIn(t, h, victim, "guess"); code != http.StatusUnauthorized && code != http.StatusTooManyRequests {
						t.Fatalf("a guess at the victim's password: %d", code)
					}
				}
				if code := b.signIn(t, h, victim, victimPassword); code == http.StatusFound {
					t.Errorf("the victim's password with mallory's device cookie, after her guesses: %d, want refused", code)
				}
			}
			if n := binds(h) - before; n != userFailureBurst {
				t.Errorf("%d guesses at the victim's password reached the directory with %d of mallory's device cookies, want the victim's %d",
					n, cookies, userFailureBurst)
			}
			// Those guesses were counted against the username too, as any
			// client's are: a browser with no device cookie is held back
			// by its count before the directory is asked.
			if code := newFormBrowser("203.0.113.99").signIn(t, h, victim, victimPassword); code != http.StatusTooManyRequests {
				t.Errorf("the victim's username from a browser without a device cookie, after guesses with mallory's: %d, want 429 (the username's count)", code)
			}
			// Her cookies still vouch for her own account, held back now
			// by her username's count.
			if code := held[cookies].signIn(t, h, attacker, attackerPassword); code != http.StatusFound {
				t.Errorf("mallory's own password from a browser of hers that guessed nothing: %d, want 302", code)
			}
		})
	}
}

// The device cookie is one of the proxy's own (SPEC invariant 3): browsers
// send it only to the form's path, HttpOnly, Secure and SameSite=Strict,
// and one sent anyway (kept under another path by a browser, or set by
// another site of the domain) is taken out of what the upstream gets.
func TestLDAPDeviceCookieNeverReachesTheUpstream(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	up := echo.New()
	upstream := httptest.NewServer(up)
	defer upstream.Close()
	h, _ := ldapDeviceHandler(t, dir.URL, upstream.URL)

	f := openLDAPForm(t, h)
	rec := postLDAPForm(t, h, f, ldapserver.Alice, ldapserver.AlicePassword)
	if rec.Code != http.StatusFound {
		t.Fatalf("sign-in: %d", rec.Code)
	}
	var device *http.Cookie
	var others []*http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == "__Secure-portcullis_device" {
			device = c
		} else if c.MaxAge >= 0 {
			others = append(others, c)
		}
	}
	if device == nil {
		t.Fatalf("no __Secure-portcullis_device cookie among %v", rec.Result().Cookies())
	}
	if device.Path != "/.portcullis/ldap/corp-ldap" || !device.HttpOnly || !device.Secure || device.SameSite != http.SameSiteStrictMode ||
		device.MaxAge != int(session.DeviceLifetime/time.Second) {
		t.Errorf("device cookie %s; want Path=/.portcullis/ldap/corp-ldap, HttpOnly, Secure, SameSite=Strict, Max-Age a year", device)
	}
	b := newFormBrowser("198.51.100.40")
	b.jar.SetCookies(ldapFormURL, rec.Result().Cookies())
	app, _ := url.Parse("https://cvat.example.com/tasks")
	for _, c := range b.jar.Cookies(app) {
		if c.Name == device.Name {
			t.Errorf("a browser sends the device cookie to %s", app)
		}
	}

	r := request("GET", "/tasks", append(others, &http.Cookie{Name: device.Name, Value: device.Value},
		&http.Cookie{Name: "portcullis_device", Value: device.Value}, &http.Cookie{Name: "csrftoken", Value: "app"}))
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	got, ok := up.Last()
	if !ok {
		t.Fatalf("the signed-in request did not reach the upstream: %d", rec.Code)
	}
	if c := strings.Join(got.Header.Values("Cookie"), "; "); strings.Contains(c, "_device") || c != "csrftoken=app" {
		t.Errorf("upstream Cookie = %q, want only the application's", c)
	}
}

// With session.store redis, a device cookie's count is shared by the
// replicas, like the username's: a browser whose device cookie vouches for
// alice gets in at either replica while her username is held back at
// both, and a stolen cookie's five guesses spread over the two replicas
// use it up, where each replica alone would have seen fewer.
func TestLDAPDeviceCookieAcrossReplicas(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	srv := redisserver.Start(t)
	cfg := storeInRedis(ldapProxyConfig(dir.URL, upstream.URL), srv.URL)
	hs := quickReplicas(t, cfg, 2)

	alice, stolen := newFormBrowser("198.51.100.50"), newFormBrowser("198.51.100.51")
	if alice.signIn(t, hs[0], ldapserver.Alice, ldapserver.AlicePassword) != http.StatusFound ||
		stolen.signIn(t, hs[1], ldapserver.Alice, ldapserver.AlicePassword) != http.StatusFound {
		t.Fatal("alice could not sign in")
	}
	attacker := newFormBrowser("203.0.113.70")
	for i := range userFailureBurst {
		attacker.signIn(t, hs[i%2], ldapserver.Alice, "guess")
	}
	if code := newFormBrowser("198.51.100.52").signIn(t, hs[0], ldapserver.Alice, ldapserver.AlicePassword); code != http.StatusTooManyRequests {
		t.Fatalf("a new browser while alice's username is held back at both replicas: %d, want 429", code)
	}

	thief := holding("203.0.113.71", stolen.deviceCookie(hs[1]))
	for i := range userFailureBurst {
		if code := thief.signIn(t, hs[i%2], ldapserver.Alice, "guess"); code != http.StatusUnauthorized {
			t.Fatalf("guess %d with the stolen cookie: %d, want 401", i+1, code)
		}
	}
	for i, h := range hs {
		if code := thief.signIn(t, h, ldapserver.Alice, ldapserver.AlicePassword); code != http.StatusTooManyRequests {
			t.Errorf("the stolen cookie at replica %d after its five guesses over both: %d, want 429 (the username's limit)", i+1, code)
		}
	}
	for i, h := range hs {
		if code := alice.signIn(t, h, ldapserver.Alice, ldapserver.AlicePassword); code != http.StatusFound {
			t.Errorf("alice's own browser at replica %d: %d, want 302", i+1, code)
		}
	}
}

// Guesses sent at once with one stolen device cookie get no more binds
// than sent one after the other: the cookie's attempts, then the
// username's. trustedAttempt reads the cookie's count before take counts
// it, so that many find its last attempt left; take lets one through and
// refuses the others (429), counted nowhere. Those that find none left
// are the username's, held back with everyone's. (How many go each way
// depends on the order they come in: always 10 and 6 binds here, but at
// least the cookie's attempts.)
func TestLDAPStolenDeviceCookieGuessesAtOnceAreLimited(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	for _, tc := range []struct {
		name     string
		redis    bool
		replicas int
		used     int // the cookie's attempts used before
	}{
		{"one replica", false, 1, 0},
		{"one replica, the cookie's last attempt left", false, 1, userFailureBurst - 1},
		{"two replicas sharing Redis", true, 2, 0},
		{"two replicas sharing Redis, the cookie's last attempt left", true, 2, userFailureBurst - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ldapProxyConfig(dir.URL, upstream.URL)
			if tc.redis {
				srv := redisserver.Start(t)
				cfg = storeInRedis(cfg, srv.URL)
			}
			hs := quickReplicas(t, cfg, tc.replicas)
			alice := newFormBrowser("198.51.100.90")
			if alice.signIn(t, hs[0], ldapserver.Alice, ldapserver.AlicePassword) != http.StatusFound {
				t.Fatal("alice could not sign in")
			}
			stolen := alice.deviceCookie(hs[0])
			thief := holding("203.0.113.90", stolen)
			for range tc.used {
				thief.signIn(t, hs[0], ldapserver.Alice, "guess")
			}
			// From as many addresses, so that no address's limit holds
			// them back.
			var reqs []*http.Request
			for i := range concurrentGuesses {
				f := openLDAPForm(t, hs[i%len(hs)])
				f.cookies = append(f.cookies, &http.Cookie{Name: stolen.Name, Value: stolen.Value})
				form := url.Values{"username": {ldapserver.Alice}, "password": {fmt.Sprint("guess-", i)}, "state": {f.state}}
				r := httptest.NewRequest("POST", "/.portcullis/ldap/corp-ldap", strings.NewReader(form.Encode()))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r.RemoteAddr = fmt.Sprintf("198.18.0.%d:40000", i+1)
				for _, c := range f.cookies {
					r.AddCookie(c)
				}
				reqs = append(reqs, r)
			}
			before := binds(hs...)
			codes := guessAtOnce(t, reqs, hs)
			n := binds(hs...) - before
			most := userFailureBurst - tc.used + userFailureBurst
			t.Logf("%d guesses at once with one stolen cookie (%d of its attempts used): %d binds, answers %v", concurrentGuesses, tc.used, n, codes)
			if n < int64(userFailureBurst-tc.used) || n > int64(most) ||
				codes[http.StatusUnauthorized] != int(n) || codes[http.StatusTooManyRequests] != concurrentGuesses-int(n) {
				t.Errorf("%d binds, answers %v; want at most %d binds (the cookie's attempts left and the username's), "+
					"a 401 for each and the rest 429", n, codes, most)
			}
		})
	}
}
