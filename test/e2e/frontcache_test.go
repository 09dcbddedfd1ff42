package e2e

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// A caching front, set up as the guides copied most often set it up:
// nginx's proxy_cache with a plain proxy_cache_valid, which keeps every
// 200 and 302 that says nothing about caching for ten minutes, and
// Apache's mod_cache_disk enabled for the whole site, which keeps an
// answer with a Last-Modified for a tenth of its age. Both key by URL
// alone. Through them, alice signs in and reads her page twice (a cached
// redirect to the login would loop her sign-in); then a visitor without a
// session is sent to sign in, and bob gets his own page, not alice's.
func TestFrontCacheKeepsNoPageOfOneUserForAnother(t *testing.T) {
	for _, tc := range []struct {
		front string
		extra func(t *testing.T) string
	}{
		{"nginx", func(t *testing.T) string {
			return "proxy_cache_path " + t.TempDir() + " keys_zone=pages:1m;\n---\n" +
				"proxy_cache pages;\nproxy_cache_valid 200 302 10m;\nadd_header X-Cache-Status $upstream_cache_status always;\n"
		}},
		{"apache", func(t *testing.T) string {
			// Apache's children (www-data) write the cache: t.TempDir is
			// the test's user's alone.
			dir, err := os.MkdirTemp("", "apache-cache-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			return "LoadModule cache_module " + apacheModules + "/mod_cache.so\n" +
				"LoadModule cache_disk_module " + apacheModules + "/mod_cache_disk.so\n" +
				"CacheRoot " + dir + "\nCacheEnable disk /\nCacheHeader on\n"
		}},
	} {
		t.Run(tc.front, func(t *testing.T) {
			fs := startFront(t, kindName(tc.front).kind(), true, tc.extra(t), frontEntry{})
			page := func(c *http.Client) (*http.Response, string) {
				t.Helper()
				resp, err := noRedirect(c).Get(fs.Public + "/personal")
				if err != nil {
					t.Fatal(err)
				}
				return resp, readBody(t, resp)
			}

			alice := fs.client(t, false, "")
			readBody(t, oidcserver.Login(t, alice, fs.Public+"/personal", oidcserver.Alice, oidcserver.AlicePassword))
			for range 2 {
				if resp, body := page(alice); resp.StatusCode != http.StatusOK || !strings.Contains(body, "hello alice@example.com") {
					t.Fatalf("alice: %d %q, want her page", resp.StatusCode, body)
				}
			}

			resp, body := page(fs.client(t, false, ""))
			if resp.StatusCode != http.StatusFound || !strings.Contains(resp.Header.Get("Location"), "/.portcullis/login") {
				t.Errorf("without a session: %d %q (cache: %s%s), want a redirect to the login", resp.StatusCode, body, resp.Header.Get("X-Cache-Status"), resp.Header.Get("X-Cache"))
			}

			bob := fs.client(t, false, "")
			readBody(t, oidcserver.Login(t, bob, fs.Public+"/tasks", oidcserver.Bob, oidcserver.BobPassword))
			if resp, body := page(bob); !strings.Contains(body, "hello bob@example.com") {
				t.Errorf("bob: %d %q (cache: %s%s), want his own page", resp.StatusCode, body, resp.Header.Get("X-Cache-Status"), resp.Header.Get("X-Cache"))
			}
		})
	}
}
