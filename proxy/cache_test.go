package proxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
)

// A shared cache in front (nginx's proxy_cache, Apache's mod_cache, a CDN)
// keys by URL and cannot tell a session cookie from any other: the proxy's
// own answers are no-store, and the upstream's answers to a signed-in user
// are private unless the upstream said they may be shared.
func TestSharedCachesKeepNoAnswerForOneUser(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		for _, v := range r.URL.Query()["cc"] {
			w.Header().Add("Cache-Control", v)
		}
		for _, f := range r.URL.Query()["field"] {
			name, v, _ := strings.Cut(f, ":")
			w.Header().Add(name, v)
		}
		if r.URL.Query().Has("cookie") {
			w.Header().Add("Set-Cookie", "app=1")
		}
		w.Write([]byte("hello " + r.Header.Get("X-Email")))
	})
	up := httptest.NewServer(mux)
	t.Cleanup(up.Close)
	y := strings.Replace(testConfig, "UPSTREAM", up.URL, 1)
	y = strings.Replace(y, "session:\n", "session:\n  idle_timeout: 1h\n", 1)
	h := newTestHandler(t, y)
	f := &fixture{h: h, store: h.sessions}
	alice := f.login(t, "alice@example.com")
	// A session last seen minutes ago is renewed (Touch): its cookie rides
	// on the upstream's answer.
	stale := session.New(idp.Profile{IdP: "company", Sub: "bob", Email: "bob@example.com", Roles: []string{"user"}}, idp.Tokens{}, h.cookies)
	stale.LastSeen = stale.LastSeen.Add(-10 * time.Minute)
	rec := httptest.NewRecorder()
	if err := h.sessions.Save(rec, httptest.NewRequest("GET", "/", nil), stale); err != nil {
		t.Fatal(err)
	}
	bob := rec.Result().Cookies()

	for _, tc := range []struct {
		name    string
		r       *http.Request
		want    string
		renewed bool // the answer sets the session cookie (renewed, or cleared)
		// fields are other headers the answer must carry, as they must
		// read ("" for none): those that shared caches obey instead of
		// Cache-Control.
		fields map[string]string
	}{
		{"the redirect of a browser without a session to the login", request("GET", "/tasks", nil, "Accept", "text/html"), "no-store", false, nil},
		{"the login's redirect to the one IdP", request("GET", "/.portcullis/login?rd=/tasks", nil, "Accept", "text/html"), "no-store", false, nil},
		{"a path under auth_prefix that is none of its endpoints", request("GET", "/.portcullis/nothing", alice), "no-store", false, nil},
		{"userinfo", request("GET", "/.portcullis/userinfo", alice), "no-store", false, nil},
		{"jwks.json, the same for everyone", request("GET", "/.portcullis/jwks.json", nil), "public, max-age=300", false, nil},
		{"the 401 of a script", request("GET", "/tasks", nil), "no-store", false, nil},
		{"the 403 of allow_if", request("GET", "/admin", alice, "Accept", "text/html"), "no-store", false, nil},
		{"an upstream answer without a word on caching", request("GET", "/tasks", alice), "private", false, nil},
		{"an upstream answer with max-age only", request("GET", "/tasks?cc=max-age%3D600", alice), "private, max-age=600", false, nil},
		{"an upstream answer with no-cache", request("GET", "/tasks?cc=no-cache", alice), "private, no-cache", false, nil},
		{"an upstream answer the upstream calls public", request("GET", "/tasks?cc=public,+max-age%3D600", alice), "public, max-age=600", false, nil},
		{"an upstream answer with s-maxage", request("GET", "/tasks?cc=S-Maxage%3D60", alice), "S-Maxage=60", false, nil},
		{"an upstream answer already private", request("GET", "/tasks?cc=private,+max-age%3D60", alice), "private, max-age=60", false, nil},
		{"an upstream answer with no-store", request("GET", "/tasks?cc=no-store", alice), "no-store", false, nil},
		{"an upstream answer that sets a cookie, called public", request("GET", "/tasks?cc=public,+max-age%3D600&cookie", alice), "private, max-age=600", false, nil},
		{"an upstream answer that carries a renewed session, called public", request("GET", "/tasks?cc=public&cc=s-maxage%3D60,+max-age%3D600,+immutable", bob), "private, max-age=600, immutable", true, nil},
		{"an upstream answer private only for its Set-Cookie field, which lets shared caches keep the rest", request("GET", `/tasks?cc=private="Set-Cookie",+max-age%3D600`, alice), "private, max-age=600", false, nil},
		{"an upstream answer with a comma in a quoted value, that sets a cookie", request("GET", `/tasks?cc=private="Set-Cookie,+Set-Cookie2",+max-age%3D60&cookie`, alice), "private, max-age=60", false, nil},
		{"an upstream answer with a comma in a quoted value", request("GET", `/tasks?cc=no-cache="Set-Cookie,+public",+max-age%3D60`, alice), `private, no-cache="Set-Cookie, public", max-age=60`, false, nil},
		{"an upstream answer with public only inside a quoted value", request("GET", `/tasks?cc=community="a,public,b"`, alice), `private, community="a,public,b"`, false, nil},
		{"an upstream answer with a malformed no-store=, which a cache reading the grammar ignores", request("GET", "/tasks?cc=no-store%3D", alice), "private, no-store=", false, nil},
		{"an upstream answer with public after a no-break space, which a cache reading the grammar ignores", request("GET", "/tasks?cc=%C2%A0public", alice), "private, \u00a0public", false, nil},
		{"an upstream answer with private after a no-break space, which a cache reading the grammar ignores", request("GET", "/tasks?cc=%C2%A0private,+max-age%3D60", alice), "private, \u00a0private, max-age=60", false, nil},
		{"an upstream answer with Surrogate-Control for ESI only, which turns Varnish from Cache-Control", request("GET", `/tasks?field=Surrogate-Control:content%3D"ESI/1.0"`, alice), "private", false,
			map[string]string{"Surrogate-Control": `no-store, content="ESI/1.0"`}},
		{"an upstream answer private by its own word, with Surrogate-Control for ESI only", request("GET", `/tasks?cc=private&field=Surrogate-Control:content%3D"ESI/1.0"`, alice), "private", false,
			map[string]string{"Surrogate-Control": `no-store, content="ESI/1.0"`}},
		{"an upstream answer whose Surrogate-Control gives surrogates a lifetime", request("GET", `/tasks?field=Surrogate-Control:max-age%3D60,+content%3D"ESI/1.0"`, alice), "private", false,
			map[string]string{"Surrogate-Control": `max-age=60, content="ESI/1.0"`}},
		{"an upstream answer whose Surrogate-Control gives surrogates a lifetime, that sets a cookie", request("GET", `/tasks?field=Surrogate-Control:max-age%3D60,+content%3D"ESI/1.0"&cookie`, alice), "private", false,
			map[string]string{"Surrogate-Control": `no-store, content="ESI/1.0"`}},
		{"an upstream answer whose CDN-Cache-Control gives CDNs a lifetime", request("GET", "/tasks?field=CDN-Cache-Control:max-age%3D600", alice), "private", false,
			map[string]string{"CDN-Cache-Control": "max-age=600"}},
		{"an upstream answer whose CDN-Cache-Control says nothing of storing", request("GET", "/tasks?field=Cloudflare-CDN-Cache-Control:stale-if-error%3D60", alice), "private", false,
			map[string]string{"Cloudflare-CDN-Cache-Control": "private, stale-if-error=60"}},
		{"an upstream answer that carries a renewed session, with CDN-Cache-Control public", request("GET", "/tasks?field=CDN-Cache-Control:public,+max-age%3D600", bob), "private", true,
			map[string]string{"CDN-Cache-Control": "private, max-age=600"}},
		{"a bypassed answer is the upstream's", request("GET", "/public/x", nil), "", false, nil},
		// Last: it ends alice's session, and clears its cookie.
		{"the logout's redirect", request("POST", "/.portcullis/logout?rd=/bye", alice, "Accept", "text/html"), "no-store", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, tc.r)
			if got := strings.Join(rec.Header()["Cache-Control"], ", "); got != tc.want {
				t.Errorf("%d: Cache-Control %q, want %q", rec.Code, got, tc.want)
			}
			renewed := false
			for _, c := range rec.Result().Cookies() {
				renewed = renewed || c.Name == h.cfg.Session.CookieName || strings.HasPrefix(c.Name, "__Host-"+h.cfg.Session.CookieName)
			}
			if renewed != tc.renewed {
				t.Errorf("session cookie set: %v, want %v", renewed, tc.renewed)
			}
			for name, want := range tc.fields {
				if got := strings.Join(rec.Header()[http.CanonicalHeaderKey(name)], ", "); got != want {
					t.Errorf("%s %q, want %q", name, got, want)
				}
			}
		})
	}
}
