package session

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
)

// clock is a settable time source for Options.Now.
type clock struct{ t time.Time }

func (c *clock) Now() time.Time          { return c.t }
func (c *clock) Advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func key(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func testOptions(c *clock, keys ...[]byte) Options {
	if len(keys) == 0 {
		keys = [][]byte{key(1)}
	}
	return Options{
		CookieName:  "portcullis",
		Keys:        keys,
		Lifetime:    12 * time.Hour,
		IdleTimeout: 2 * time.Hour,
		Now:         c.Now,
	}
}

func mustStore(t testing.TB, o Options) *CookieStore {
	t.Helper()
	st, err := NewCookieStore(o)
	if err != nil {
		t.Fatalf("NewCookieStore: %v", err)
	}
	return st
}

func testProfile() idp.Profile {
	return idp.Profile{
		IdP: "company", Sub: "u-123", Email: "alice@example.com", EmailVerified: true,
		Username: "alice", Name: "Alice Liddell", Groups: []string{"cvat-admins", "staff"},
		Roles: []string{"admin"}, Claims: map[string]any{"tenant": "wonderland"},
	}
}

// saved returns the cookies Save sets for s.
func saved(t testing.TB, st *CookieStore, s *Session) []*http.Cookie {
	t.Helper()
	w := httptest.NewRecorder()
	if err := st.Save(w, httptest.NewRequest("GET", "/", nil), s); err != nil {
		t.Fatalf("Save: %v", err)
	}
	return w.Result().Cookies()
}

// request is a request carrying cookies, as a browser sends them.
func request(cookies ...*http.Cookie) *http.Request {
	r := httptest.NewRequest("GET", "/", nil)
	for _, c := range cookies {
		r.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	return r
}

// live drops the cookies a response deletes, as a browser would.
func live(cookies []*http.Cookie) []*http.Cookie {
	var out []*http.Cookie
	for _, c := range cookies {
		if c.MaxAge >= 0 {
			out = append(out, c)
		}
	}
	return out
}

func load(t testing.TB, st *CookieStore, r *http.Request) *Session {
	t.Helper()
	s, err := st.Load(r)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}
