package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

func TestZZMeasureStolenCookieBurst(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	for _, tc := range []struct {
		name     string
		redis    bool
		replicas int
		preUsed  int
	}{{"memory", false, 1, 0}, {"memory, 4 used", false, 1, 4}, {"redis x2", true, 2, 0}, {"redis x2, 4 used", true, 2, 4}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ldapProxyConfig(dir.URL, upstream.URL)
			if tc.redis {
				srv := redisserver.Start(t)
				cfg = strings.Replace(cfg, "session:\n", "session:\n  store: redis\n  redis: {url: "+srv.URL+"}\n", 1)
			}
			var hs []*Handler
			for range tc.replicas {
				h := newTestHandler(t, cfg)
				quickFailures(h)
				hs = append(hs, h)
			}
			alice := newFormBrowser("198.51.100.9")
			if alice.signIn(t, hs[0], ldapserver.Alice, ldapserver.AlicePassword) != http.StatusFound {
				t.Fatal("no sign in")
			}
			c := alice.deviceCookie(hs[0])
			t.Logf("device cookie: %s, %d bytes", c.Name, len(c.Name)+len(c.Value))
			thief := holding("203.0.113.9", c)
			for range tc.preUsed {
				thief.signIn(t, hs[0], ldapserver.Alice, "pre")
			}
			var reqs []*http.Request
			for i := range concurrentGuesses {
				h := hs[i%len(hs)]
				f := openLDAPForm(t, h)
				form := url.Values{"username": {ldapserver.Alice}, "password": {fmt.Sprintf("g%d", i)}, "state": {f.state}}
				r := httptest.NewRequest("POST", "/.portcullis/ldap/corp-ldap", strings.NewReader(form.Encode()))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r.RemoteAddr = fmt.Sprintf("198.18.%d.%d:40000", i/200, i%200+1)
				for _, fc := range f.cookies {
					r.AddCookie(fc)
				}
				r.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
				reqs = append(reqs, r)
			}
			before := binds(hs...)
			codes := guessAtOnce(t, reqs, hs)
			t.Logf("%s: %d at once with one stolen cookie (%d attempts already used): %d binds, %v", tc.name, concurrentGuesses, tc.preUsed, binds(hs...)-before, codes)
		})
	}
}
