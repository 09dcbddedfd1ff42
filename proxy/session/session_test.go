package session

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/portcullis-proxy/portcullis/idp"
)

func TestOptionsName(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"plain http uses the base name", Options{CookieName: "portcullis"}, "portcullis"},
		{"https adds the __Host- prefix", Options{CookieName: "portcullis", Secure: true}, "__Host-portcullis"},
		{"empty base name falls back to the default", Options{}, DefaultCookieName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.opts.Name(); got != tt.want {
				t.Errorf("Name() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestOwns(t *testing.T) {
	tests := []struct {
		cookie string
		secure bool
		want   bool
	}{
		{"portcullis", false, true},
		{"portcullis_1", false, true},
		{"portcullis_7", false, true},
		{"portcullis_12", false, true},
		{"portcullis_login_AbCdEfGh", false, true},
		{"__Host-portcullis", true, true},
		{"__Host-portcullis_3", true, true},
		{"__Host-portcullis_login_AbCdEfGh", true, true},
		{"portcullis_signed_in", false, true},
		{"__Host-portcullis_signed_in", true, true},
		{"portcullis_device", false, true},
		{"__Secure-portcullis_device", true, true},
		{"__Host-portcullis_device", true, true}, // set by hand: still the proxy's
		{"__Secure-portcullis", true, true},
		{"__Host-portcullis", false, true}, // left from an https configuration
		{"portcullis", true, true},         // or tossed without the prefix
		{"csrftoken", false, false},
		{"sessionid", true, false},
		{"portcullisx", false, false},
		{"portcullis_", false, false},
		{"portcullis_x", false, false},
		{"portcullis_123", false, false},
		{"portcullis_signed_inx", false, false},
		{"portcullis_devices", false, false},
		{"__Secure-csrftoken", true, false},
		{"__Secure-__Host-portcullis", true, false},
		{"xportcullis", false, false},
		{"__Host-csrftoken", true, false},
		{"", false, false},
	}
	for _, tt := range tests {
		verb := " is not owned"
		if tt.want {
			verb = " is owned"
		}
		t.Run(tt.cookie+verb, func(t *testing.T) {
			o := Options{CookieName: "portcullis", Secure: tt.secure}
			if got := o.Owns(tt.cookie); got != tt.want {
				t.Errorf("Owns(%q) = %v, want %v", tt.cookie, got, tt.want)
			}
		})
	}
}

func TestOwnsDoesNotAllocate(t *testing.T) {
	o := Options{CookieName: "portcullis", Secure: true}
	if n := testing.AllocsPerRun(100, func() { o.Owns("__Host-portcullis_login_AbCdEfGh"); o.Owns("csrftoken") }); n != 0 {
		t.Errorf("Owns allocates %v times, want 0", n)
	}
}

func TestNewSession(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	a := New(testProfile(), idp.Tokens{RefreshToken: "rt"}, o)
	b := New(testProfile(), idp.Tokens{}, o)
	if a.ID == b.ID || len(a.ID) != 22 || strings.ContainsAny(a.ID, "+/=") {
		t.Errorf("IDs %q and %q: want distinct 22-char URL-safe values", a.ID, b.ID)
	}
	if !a.Created.Equal(c.t) || !a.LastSeen.Equal(c.t) || !a.Expires.Equal(c.t.Add(12*time.Hour)) {
		t.Errorf("times: created %v last seen %v expires %v, want %v, %v, +12h", a.Created, a.LastSeen, a.Expires, c.t, c.t)
	}
	o.Lifetime = 0
	if got := New(testProfile(), idp.Tokens{}, o).Expires; !got.Equal(c.t.Add(DefaultLifetime)) {
		t.Errorf("zero lifetime: expires %v, want now + %v", got, DefaultLifetime)
	}
}

func TestNewState(t *testing.T) {
	a, b := NewState(), NewState()
	if a == b || !validState(a) || len(a) != 22 {
		t.Errorf("NewState gave %q and %q: want distinct 22-char URL-safe values", a, b)
	}
}

func TestCookieAttributes(t *testing.T) {
	tests := []struct {
		name       string
		secure     bool
		wantName   string
		wantSecure bool
	}{
		{"http session cookie has no prefix and no Secure flag", false, "portcullis", false},
		{"https session cookie has the __Host- prefix and Secure flag", true, "__Host-portcullis", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			o := testOptions(c)
			o.Secure = tt.secure
			st := mustStore(t, o)
			s := New(testProfile(), idp.Tokens{}, o)
			c.Advance(2 * time.Hour)
			w := httptest.NewRecorder()
			if err := st.Save(w, request(), s); err != nil {
				t.Fatal(err)
			}
			header := w.Header().Values("Set-Cookie")
			if len(header) != 1 {
				t.Fatalf("Set-Cookie: %q, want one", header)
			}
			got := w.Result().Cookies()[0]
			if got.Name != tt.wantName || got.Secure != tt.wantSecure || !got.HttpOnly ||
				got.SameSite != http.SameSiteLaxMode || got.Path != "/" || got.Domain != "" {
				t.Errorf("cookie %q", header[0])
			}
			if got.MaxAge != int((10 * time.Hour).Seconds()) {
				t.Errorf("Max-Age %d, want the remaining lifetime %d", got.MaxAge, int((10 * time.Hour).Seconds()))
			}

			f := NewFlows(o)
			for _, postedCrossSite := range []bool{false, true} {
				w = httptest.NewRecorder()
				state := NewState()
				if err := f.Start(w, nil, LoginFlow, &idp.Flow{State: state, IdP: "company"}, postedCrossSite); err != nil {
					t.Fatal(err)
				}
				fc := w.Result().Cookies()[0]
				wantSameSite := http.SameSiteLaxMode
				if postedCrossSite && tt.wantSecure {
					wantSameSite = http.SameSiteNoneMode // the SAML ACS is a cross-site POST
				}
				if fc.Name != tt.wantName+"_login_"+state[:8] || fc.Secure != tt.wantSecure || !fc.HttpOnly ||
					fc.SameSite != wantSameSite || fc.Path != "/" || fc.Domain != "" || fc.MaxAge != 600 {
					t.Errorf("flow cookie (answered by a cross-site post: %v) %q", postedCrossSite, w.Header().Get("Set-Cookie"))
				}
				if !o.Owns(fc.Name) || !o.Owns(got.Name) {
					t.Errorf("Owns does not claim %q or %q", got.Name, fc.Name)
				}
			}
		})
	}
}

func TestNewCookieStoreRefusesBadKeys(t *testing.T) {
	tests := []struct {
		name string
		keys [][]byte
	}{
		{"no keys", nil},
		{"a short key", [][]byte{key(1), make([]byte, 16)}},
		{"a long key", [][]byte{make([]byte, 64)}},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			if _, err := NewCookieStore(Options{Keys: tt.keys}); err == nil {
				t.Error("NewCookieStore accepted the keys")
			}
			f := NewFlows(Options{Keys: tt.keys})
			if err := f.Start(httptest.NewRecorder(), nil, LoginFlow, &idp.Flow{State: NewState()}, false); err == nil {
				t.Error("Flows.Start worked with bad keys")
			}
		})
	}
}

func TestSessionRoundTrip(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	st := mustStore(t, o)
	s := New(testProfile(), idp.Tokens{RefreshToken: "rt", IDToken: "it", Expiry: 1234}, o)
	cookies := saved(t, st, s)

	for _, cached := range []bool{true, false} {
		if !cached {
			st.cache = nil // the cookie alone must be enough
		}
		got := load(t, st, request(cookies...))
		if got == nil {
			t.Fatalf("cached=%v: no session", cached)
		}
		if got.ID != s.ID || !reflect.DeepEqual(got.Profile, s.Profile) || got.Tokens != s.Tokens ||
			!got.Created.Equal(s.Created) || !got.Expires.Equal(s.Expires) || !got.LastSeen.Equal(s.LastSeen) {
			t.Errorf("cached=%v: loaded %+v, want %+v", cached, got, s)
		}
	}
}

func TestLoadReturnsACopy(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	st := mustStore(t, o)
	cookies := saved(t, st, New(testProfile(), idp.Tokens{}, o))
	first := load(t, st, request(cookies...))
	first.Profile.Email = "mallory@example.com"
	first.Profile.Roles = append(first.Profile.Roles, "worker")
	first.LastSeen = time.Time{}
	second := load(t, st, request(cookies...))
	if second.Profile.Email != "alice@example.com" || len(second.Profile.Roles) != 1 || second.LastSeen.IsZero() {
		t.Errorf("a change to one loaded session showed in the next: %+v", second)
	}
}

// Every kind of sealed value is kept apart from the others twice over: by
// keys derived from the session keys for its purpose alone, and by a name of
// its own bound into the MAC. Each layer is checked on its own, so that
// losing either one shows.
func TestEveryKindOfSealedValueHasItsOwnKeysAndName(t *testing.T) {
	keys := [][]byte{key(1), key(2)}
	purposes := []string{"session", "login flow", "device", "session id", "redis session"}
	for _, sealedFor := range purposes {
		sealer, err := codecs(keys, sealedFor, time.Hour, 0, securecookie.JSONEncoder{})
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := sealer[0].Encode("a name", "a value")
		if err != nil {
			t.Fatal(err)
		}
		for _, openedFor := range purposes {
			opener, err := codecs(keys, openedFor, time.Hour, 0, securecookie.JSONEncoder{})
			if err != nil {
				t.Fatal(err)
			}
			var got string
			opened := securecookie.DecodeMulti("a name", sealed, &got, opener...) == nil
			if opened != (sealedFor == openedFor) {
				t.Errorf("a value sealed for %q, under the same name, opens for %q: %v", sealedFor, openedFor, opened)
			}
		}
	}
	names := []string{sessionCodecName, flowCodecName, deviceCodecName, sessionIDCodecName, redisValueCodecName}
	for i, a := range names {
		for _, b := range names[i+1:] {
			if a == b {
				t.Errorf("two kinds of sealed value share the name %q", a)
			}
		}
	}
}
