package session

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/idp"
)

// typicalTokens are the size of a real OIDC login's tokens: an ID token JWT
// of about 1 KB and an opaque refresh token.
func typicalTokens() idp.Tokens {
	return idp.Tokens{
		RefreshToken: strings.Repeat("8xLOxBtZp8", 20),
		IDToken:      "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ." + strings.Repeat("eyJpc3MiOiJodHRwczovL2xvZ2lu", 24) + "." + strings.Repeat("Qm9iIGFuZCBBbGljZQ", 19),
		Expiry:       1893456000,
	}
}

func TestTypicalSessionFitsOneCookie(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	p := testProfile()
	for i := range 100 {
		p.Groups = append(p.Groups, "cn=project-"+strings.Repeat("x", i%7)+"-annotators,ou=groups,dc=example,dc=com")
	}
	cookies := saved(t, mustStore(t, o), New(p, typicalTokens(), o))
	if len(cookies) != 1 {
		t.Errorf("a session with 100 directory groups and OIDC tokens takes %d cookies, want 1", len(cookies))
	}
}

// BenchmarkLoad measures what every authenticated request pays to find its
// session: cold opens the cookie (HMAC, AES, inflate, JSON); cached finds it
// by the value's hash.
func BenchmarkLoad(b *testing.B) {
	for _, size := range []struct {
		name   string
		groups int
	}{{"typical", 0}, {"chunked", 300}} {
		c := newClock()
		o := testOptions(c)
		p := testProfile()
		if size.groups > 0 {
			p = bigProfile(size.groups)
		}
		st := mustStore(b, o)
		w := httptest.NewRecorder()
		if err := st.Save(w, nil, New(p, typicalTokens(), o)); err != nil {
			b.Fatal(err)
		}
		r := request(w.Result().Cookies()...)
		r.AddCookie(&http.Cookie{Name: "csrftoken", Value: "Yx8Xq0bQ5iF3"})
		for _, mode := range []string{"cold", "cached"} {
			b.Run(size.name+"/"+mode, func(b *testing.B) {
				if mode == "cold" {
					st.cache = nil
				} else {
					st.cache = newOpenedCache(cacheEntries, cacheBytes)
				}
				b.ReportAllocs()
				for b.Loop() {
					if s, _ := st.Load(r); s == nil {
						b.Fatal("no session")
					}
				}
			})
		}
	}
}
