package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/redis/go-redis/v9"
)

// signingIn is a ready IdP that signs alice in at every callback, after
// calling during (which may stop Redis) if it is set.
type signingIn struct {
	state  string
	during func()
}

func (*signingIn) Ready() error { return nil }

func (i *signingIn) LoginURL(f *idp.Flow) (string, error) {
	i.state = f.State
	return "https://idp.example.com/authorize", nil
}

func (i *signingIn) Complete(*http.Request, *idp.Flow) (*idp.Profile, *idp.Tokens, error) {
	if i.during != nil {
		i.during()
	}
	return &idp.Profile{IdP: "company", Sub: "alice", Email: "alice@example.com"}, &idp.Tokens{}, nil
}

// directoryDown is an LDAP directory that cannot be reached.
type directoryDown struct{}

func (directoryDown) Ready() error { return nil }

func (directoryDown) Authenticate(*http.Request, string, string, func(string) error) (*idp.Profile, error) {
	return nil, errors.New("ldap corp-ldap: dial tcp 127.0.0.1:636: connect: connection refused")
}

// redisUnavailable is a Handler whose sessions are in a real Redis, with
// the OIDC IdP company (never reached: not ready), the LDAP IdP corp-ldap
// and a basic_auth rule for it at /legacy/.
type redisUnavailable struct {
	h     *Handler
	redis *redisserver.Server
}

func newRedisUnavailable(t *testing.T) *redisUnavailable {
	t.Helper()
	srv := redisserver.Start(t)
	y := storeInRedis(withLDAP, srv.URL)
	y += "rules:\n  - name: legacy\n    path_prefix: /legacy/\n    action: authenticate\n    basic_auth: corp-ldap\n"
	return &redisUnavailable{h: newTestHandler(t, y), redis: srv}
}

// session saves a session of alice's while Redis is up, and returns its cookies.
func (e *redisUnavailable) session(t *testing.T) []*http.Cookie {
	t.Helper()
	rec := httptest.NewRecorder()
	s := session.New(idp.Profile{IdP: "company", Sub: "alice", Email: "alice@example.com"}, idp.Tokens{}, e.h.cookies)
	if err := e.h.sessions.Save(rec, httptest.NewRequest("GET", "/", nil), s); err != nil {
		t.Fatal(err)
	}
	return rec.Result().Cookies()
}

func (e *redisUnavailable) serve(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, r)
	return rec
}

// backchannelLogout posts a logout token that verifies to one for alice.
func (e *redisUnavailable) backchannelLogout() *httptest.ResponseRecorder {
	p := e.h.providers["company"]
	p.impl = fixedLogoutToken{Provider: p.impl, tok: idp.LogoutToken{Subject: "alice", ID: "jti-1", IssuedAt: time.Now()}}
	r := httptest.NewRequest("POST", "/.portcullis/oidc/company/backchannel-logout",
		strings.NewReader(url.Values{"logout_token": {"signed"}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return e.serve(r)
}

// Every 503 the proxy answers because a dependency is briefly away says
// when to try again (Retry-After, in seconds), the same everywhere: pages
// and JSON, session store, IdP and directory alike.
func TestEvery503SaysWhenToRetry(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(t *testing.T, e *redisUnavailable) *httptest.ResponseRecorder
	}{
		{"a page whose session Redis cannot read", func(t *testing.T, e *redisUnavailable) *httptest.ResponseRecorder {
			cookies := e.session(t)
			e.redis.Stop()
			return e.serve(request("GET", "/tasks", cookies, "Accept", "text/html"))
		}},
		{"userinfo whose session Redis cannot read", func(t *testing.T, e *redisUnavailable) *httptest.ResponseRecorder {
			cookies := e.session(t)
			e.redis.Stop()
			return e.serve(request("GET", "/.portcullis/userinfo", cookies))
		}},
		{"a sign-out Redis cannot record", func(t *testing.T, e *redisUnavailable) *httptest.ResponseRecorder {
			cookies := e.session(t)
			e.redis.Stop()
			return e.serve(request("POST", "/.portcullis/logout", cookies, "Accept", "text/html"))
		}},
		{"a login at an IdP not reached yet", func(t *testing.T, e *redisUnavailable) *httptest.ResponseRecorder {
			return e.serve(request("GET", "/.portcullis/login/company", nil, "Accept", "text/html"))
		}},
		{"a callback whose login state Redis cannot spend", func(t *testing.T, e *redisUnavailable) *httptest.ResponseRecorder {
			fake := &signingIn{}
			e.h.providers["company"].impl = fake
			start := e.serve(request("GET", "/.portcullis/login/company", nil))
			e.redis.Stop()
			return e.serve(request("GET", "/.portcullis/oidc/company/callback?code=c&state="+fake.state, start.Result().Cookies(), "Accept", "text/html"))
		}},
		{"a callback whose session Redis cannot save", func(t *testing.T, e *redisUnavailable) *httptest.ResponseRecorder {
			fake := &signingIn{during: e.redis.Stop}
			e.h.providers["company"].impl = fake
			start := e.serve(request("GET", "/.portcullis/login/company", nil))
			return e.serve(request("GET", "/.portcullis/oidc/company/callback?code=c&state="+fake.state, start.Result().Cookies(), "Accept", "text/html"))
		}},
		{"an LDAP form posted while Redis is away", func(t *testing.T, e *redisUnavailable) *httptest.ResponseRecorder {
			form := openLDAPForm(t, e.h)
			e.redis.Stop()
			return postLDAPForm(t, e.h, form, "alice", "alice-pw")
		}},
		{"an LDAP form posted while the directory is away", func(t *testing.T, e *redisUnavailable) *httptest.ResponseRecorder {
			e.h.providers["corp-ldap"].impl = directoryDown{}
			return postLDAPForm(t, e.h, openLDAPForm(t, e.h), "alice", "alice-pw")
		}},
		{"Basic auth while the directory is away", func(t *testing.T, e *redisUnavailable) *httptest.ResponseRecorder {
			e.h.providers["corp-ldap"].impl = directoryDown{}
			r := request("GET", "/legacy/items", nil)
			r.SetBasicAuth("alice", "alice-pw")
			return e.serve(r)
		}},
		{"a back-channel logout whose token Redis cannot mark used", func(t *testing.T, e *redisUnavailable) *httptest.ResponseRecorder {
			e.redis.Stop()
			return e.backchannelLogout()
		}},
		{"a back-channel logout whose sessions Redis cannot read", func(t *testing.T, e *redisUnavailable) *httptest.ResponseRecorder {
			e.session(t)
			admin := redis.NewClient(&redis.Options{Addr: e.redis.Addr})
			t.Cleanup(func() { admin.Close() })
			if err := admin.Do(context.Background(), "ACL", "SETUSER", "default", "-zrange", "-smembers").Err(); err != nil {
				t.Fatal(err)
			}
			return e.backchannelLogout()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := tc.answer(t, newRedisUnavailable(t))
			if rec.Code != http.StatusServiceUnavailable {
				t.Fatalf("%d, want 503: %s", rec.Code, rec.Body)
			}
			if got := rec.Header().Get("Retry-After"); got != retryAfter {
				t.Errorf("Retry-After %q, want %q", got, retryAfter)
			}
		})
	}
}

// A sign-out that Redis cannot record still signs the browser out: its
// session cookie is expired, as the 503 page says ("You are signed out in
// this browser"), so that the next user of the browser is not the last one.
func TestSignOutRedisCannotRecordStillExpiresTheCookie(t *testing.T) {
	e := newRedisUnavailable(t)
	cookies := e.session(t)
	e.redis.Stop()
	rec := e.serve(request("POST", "/.portcullis/logout", cookies, "Accept", "text/html"))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("%d, want 503: %s", rec.Code, rec.Body)
	}
	for _, c := range cookies {
		expired := false
		for _, set := range rec.Result().Cookies() {
			expired = expired || set.Name == c.Name && set.MaxAge < 0
		}
		if !expired {
			t.Errorf("session cookie %s is not expired: Set-Cookie %q", c.Name, rec.Header().Values("Set-Cookie"))
		}
	}
}
