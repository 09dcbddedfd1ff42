package session

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
)

func TestKeyRotation(t *testing.T) {
	c := newClock()
	oldKey, newKey := key(1), key(2)
	before := mustStore(t, testOptions(c, oldKey))
	during := mustStore(t, testOptions(c, newKey, oldKey))
	onlyNew := mustStore(t, testOptions(c, newKey))
	onlyOld := mustStore(t, testOptions(c, oldKey))

	sealedWithOld := saved(t, before, New(testProfile(), idp.Tokens{}, testOptions(c)))
	sealedWithNew := saved(t, during, New(testProfile(), idp.Tokens{}, testOptions(c)))
	tests := []struct {
		name    string
		store   *CookieStore
		cookies []*http.Cookie
		want    bool
	}{
		{"a cookie sealed with the old key still opens after a new key is added", during, sealedWithOld, true},
		{"the first key seals: a store with only the new key opens it", onlyNew, sealedWithNew, true},
		{"the first key seals: a store with only the old key does not open it", onlyOld, sealedWithNew, false},
		{"once the old key is removed its cookies are no session", onlyNew, sealedWithOld, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := load(t, tt.store, request(tt.cookies...)); (got != nil) != tt.want {
				t.Errorf("session %v, want one: %v", got, tt.want)
			}
		})
	}
}

// TestLoadRefuses covers SPEC invariant 5: whatever is wrong with the cookie,
// the request simply has no session, and Load reports no error.
func TestLoadRefuses(t *testing.T) {
	tamper := func(f func(string) string) func(t *testing.T, st *CookieStore, c *clock, s *Session) []*http.Cookie {
		return func(t *testing.T, st *CookieStore, c *clock, s *Session) []*http.Cookie {
			cookies := saved(t, st, s)
			cookies[0].Value = f(cookies[0].Value)
			return cookies
		}
	}
	flip := func(i int) func(string) string {
		return func(v string) string {
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			b := []byte(v)
			i := (i + len(b)) % len(b)
			for b[i] == '=' {
				i--
			}
			// Flip the top bit of the letter's six: a decoder may ignore
			// the low bits of the last letter, never the top one.
			b[i] = alphabet[strings.IndexByte(alphabet, b[i])^0b100000]
			return string(b)
		}
	}
	tests := []struct {
		name    string
		cookies func(t *testing.T, st *CookieStore, c *clock, s *Session) []*http.Cookie
	}{
		{"a cookie sealed with an unknown key", func(t *testing.T, st *CookieStore, c *clock, s *Session) []*http.Cookie {
			return saved(t, mustStore(t, testOptions(c, key(9))), s)
		}},
		{"a flipped byte at the start", tamper(flip(0))},
		{"a flipped byte in the middle", tamper(func(v string) string { return flip(len(v) / 2)(v) })},
		{"a flipped byte at the end", tamper(flip(-3))},
		{"a truncated cookie", tamper(func(v string) string { return v[:len(v)-10] })},
		{"a cookie cut in half", tamper(func(v string) string { return v[:len(v)/2] })},
		{"an empty-looking cookie", tamper(func(string) string { return "x" })},
		{"a cookie with a forged chunk marker", tamper(func(v string) string { return "2~" + v })},
		{"a head claiming more chunks than there can be, every chunk name present", func(t *testing.T, st *CookieStore, c *clock, s *Session) []*http.Cookie {
			cookies := []*http.Cookie{{Name: st.opts.Name(), Value: "9~" + saved(t, st, s)[0].Value}}
			for i := 1; i <= maxChunks; i++ {
				cookies = append(cookies, &http.Cookie{Name: chunkName(st.opts.Name(), i), Value: "x"})
			}
			return cookies
		}},
		{"a session past its lifetime", func(t *testing.T, st *CookieStore, c *clock, s *Session) []*http.Cookie {
			cookies := saved(t, st, s)
			// Keep it active so only the lifetime ends it.
			for range 13 {
				c.Advance(time.Hour)
				w := httptest.NewRecorder()
				r := request(cookies...)
				if got := load(t, st, r); got != nil {
					if err := st.Touch(w, r, got); err != nil {
						t.Fatal(err)
					}
					if set := live(w.Result().Cookies()); len(set) > 0 {
						cookies = set
					}
				}
			}
			return cookies
		}},
		{"a session idle for longer than the idle timeout", func(t *testing.T, st *CookieStore, c *clock, s *Session) []*http.Cookie {
			cookies := saved(t, st, s)
			c.Advance(2*time.Hour + time.Second)
			return cookies
		}},
		{"a session revoked by Delete, replayed", func(t *testing.T, st *CookieStore, c *clock, s *Session) []*http.Cookie {
			cookies := saved(t, st, s)
			if load(t, st, request(cookies...)) == nil {
				t.Fatal("no session before Delete")
			}
			if err := st.Delete(httptest.NewRecorder(), request(cookies...), s); err != nil {
				t.Fatal(err)
			}
			return cookies
		}},
		{"a login flow cookie presented as the session cookie", func(t *testing.T, st *CookieStore, c *clock, s *Session) []*http.Cookie {
			w := httptest.NewRecorder()
			if err := NewFlows(st.opts).Start(w, nil, LoginFlow, &idp.Flow{State: NewState(), IdP: "company"}, false); err != nil {
				t.Fatal(err)
			}
			return []*http.Cookie{{Name: st.opts.Name(), Value: w.Result().Cookies()[0].Value}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is no session", func(t *testing.T) {
			c := newClock()
			o := testOptions(c)
			st := mustStore(t, o)
			cookies := tt.cookies(t, st, c, New(testProfile(), idp.Tokens{}, o))
			for _, cached := range []string{"cached", "cold"} {
				if cached == "cold" {
					st.cache = nil
				}
				s, err := st.Load(request(cookies...))
				if s != nil || err != nil {
					t.Errorf("%s: Load = %v, %v; want nil, nil", cached, s, err)
				}
			}
		})
	}
}

func TestShortenedLifetimeAppliesToExistingSessions(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	cookies := saved(t, mustStore(t, o), New(testProfile(), idp.Tokens{}, o))
	c.Advance(90 * time.Minute)
	o.Lifetime = time.Hour
	if got := load(t, mustStore(t, o), request(cookies...)); got != nil {
		t.Errorf("a session older than the new lifetime still loads")
	}
}

func TestTouch(t *testing.T) {
	tests := []struct {
		name      string
		idle      time.Duration
		after     time.Duration
		wantWrite bool
	}{
		{"a request soon after the last write writes nothing", 2 * time.Hour, 30 * time.Second, false},
		{"a request a minute after the last write re-seals", 2 * time.Hour, time.Minute, true},
		{"a short idle timeout re-seals after a tenth of it", 5 * time.Minute, 31 * time.Second, true},
		{"a short idle timeout writes nothing before a tenth of it", 5 * time.Minute, 29 * time.Second, false},
		{"no idle timeout never writes", 0, 6 * time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			o := testOptions(c)
			o.IdleTimeout = tt.idle
			st := mustStore(t, o)
			cookies := saved(t, st, New(testProfile(), idp.Tokens{}, o))
			c.Advance(tt.after)
			r := request(cookies...)
			s := load(t, st, r)
			if s == nil {
				t.Fatal("no session")
			}
			w := httptest.NewRecorder()
			if err := st.Touch(w, r, s); err != nil {
				t.Fatal(err)
			}
			written := w.Result().Cookies()
			if (len(written) > 0) != tt.wantWrite {
				t.Fatalf("Touch wrote %d cookies, want writes: %v", len(written), tt.wantWrite)
			}
			if tt.wantWrite {
				got := load(t, st, request(written...))
				if got == nil || !got.LastSeen.Equal(c.t) {
					t.Errorf("re-sealed session %+v, want LastSeen %v", got, c.t)
				}
			}
		})
	}
}

func TestActiveSessionOutlivesIdleTimeout(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	st := mustStore(t, o)
	cookies := saved(t, st, New(testProfile(), idp.Tokens{}, o))
	for i := range 6 {
		c.Advance(time.Hour + 30*time.Minute)
		r := request(cookies...)
		s := load(t, st, r)
		if s == nil {
			t.Fatalf("after %d active periods: no session", i+1)
		}
		w := httptest.NewRecorder()
		if err := st.Touch(w, r, s); err != nil {
			t.Fatal(err)
		}
		cookies = w.Result().Cookies()
	}
}

// bigProfile has n groups with random names, which compress poorly: the
// worst case for the cookie's size.
func bigProfile(n int) idp.Profile {
	p := testProfile()
	p.Groups = nil
	rnd := rand.New(rand.NewChaCha8([32]byte{}))
	for range n {
		var b [24]byte
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		p.Groups = append(p.Groups, "team-"+base64.RawURLEncoding.EncodeToString(b[:]))
	}
	return p
}

func TestChunkedSession(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	o.Secure = true
	st := mustStore(t, o)
	s := New(bigProfile(300), idp.Tokens{RefreshToken: strings.Repeat("r", 900), IDToken: strings.Repeat("i", 1200)}, o)
	w := httptest.NewRecorder()
	if err := st.Save(w, request(), s); err != nil {
		t.Fatal(err)
	}
	header := w.Header().Values("Set-Cookie")
	if len(header) < 3 {
		t.Fatalf("%d cookies for 300 groups, want it chunked over at least 3", len(header))
	}
	for _, h := range header {
		if len(h) >= 4096 {
			t.Errorf("Set-Cookie of %d bytes, want < 4096: %.60s...", len(h), h)
		}
	}
	cookies := w.Result().Cookies()
	for i, ck := range cookies {
		if ck.Name != chunkName("__Host-portcullis", i) || !o.Owns(ck.Name) {
			t.Errorf("chunk %d is named %q", i, ck.Name)
		}
	}

	t.Run("a chunked session round trips, cached and cold", func(t *testing.T) {
		for _, st := range []*CookieStore{st, mustStore(t, o)} {
			got := load(t, st, request(cookies...))
			if got == nil || got.ID != s.ID || len(got.Profile.Groups) != 300 || got.Tokens != s.Tokens {
				t.Fatalf("loaded %+v", got)
			}
		}
	})
	t.Run("chunks in another order still round trip", func(t *testing.T) {
		reversed := make([]*http.Cookie, len(cookies))
		for i, ck := range cookies {
			reversed[len(cookies)-1-i] = ck
		}
		if load(t, mustStore(t, o), request(reversed...)) == nil {
			t.Error("no session")
		}
	})
	t.Run("a missing chunk is no session", func(t *testing.T) {
		for skip := range cookies {
			var partial []*http.Cookie
			for i, ck := range cookies {
				if i != skip {
					partial = append(partial, ck)
				}
			}
			if got := load(t, mustStore(t, o), request(partial...)); got != nil {
				t.Errorf("without chunk %d: a session", skip)
			}
		}
	})
	t.Run("swapped chunk values are no session", func(t *testing.T) {
		swapped := []*http.Cookie{cookies[0], {Name: cookies[1].Name, Value: cookies[2].Value}, {Name: cookies[2].Name, Value: cookies[1].Value}}
		swapped = append(swapped, cookies[3:]...)
		if got := load(t, mustStore(t, o), request(swapped...)); got != nil {
			t.Error("a session")
		}
	})
	t.Run("a smaller session clears the leftover chunks", func(t *testing.T) {
		w := httptest.NewRecorder()
		s.Profile = testProfile()
		if err := st.Save(w, request(cookies...), s); err != nil {
			t.Fatal(err)
		}
		set := w.Result().Cookies()
		if len(set) != len(cookies) || set[0].MaxAge <= 0 {
			t.Fatalf("Set-Cookie %q", w.Header().Values("Set-Cookie"))
		}
		for _, ck := range set[1:] {
			if ck.MaxAge >= 0 {
				t.Errorf("leftover chunk %q not cleared", ck.Name)
			}
		}
		if got := load(t, mustStore(t, o), request(set[0])); got == nil || len(got.Profile.Groups) != 2 {
			t.Errorf("loaded %+v", got)
		}
	})
	t.Run("Delete clears every chunk present", func(t *testing.T) {
		w := httptest.NewRecorder()
		if err := st.Delete(w, request(cookies...), s); err != nil {
			t.Fatal(err)
		}
		cleared := w.Result().Cookies()
		if len(cleared) != len(cookies) {
			t.Fatalf("cleared %d cookies, want %d", len(cleared), len(cookies))
		}
		for i, ck := range cleared {
			if ck.Name != cookies[i].Name || ck.MaxAge >= 0 || !ck.Secure || ck.Path != "/" {
				t.Errorf("clearing cookie %d: %+v", i, ck)
			}
		}
	})
}

func TestSaveRefusesASessionTooLargeForTheChunks(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	st := mustStore(t, o)
	w := httptest.NewRecorder()
	err := st.Save(w, request(), New(bigProfile(1000), idp.Tokens{}, o))
	if err == nil || len(w.Header().Values("Set-Cookie")) != 0 {
		t.Errorf("Save = %v with %d cookies; want an error and none", err, len(w.Header().Values("Set-Cookie")))
	}
}

// Save takes a session exactly as far as its cookies carry it: every
// session it saves opens again, the largest in all maxChunks cookies, and
// the first that would need one more is refused as too large.
func TestSaveTakesOnlySessionsItsCookiesCarry(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	st := mustStore(t, o)
	most := 0
	for n := 100; ; n += 10 {
		w := httptest.NewRecorder()
		err := st.Save(w, request(), New(bigProfile(n), idp.Tokens{}, o))
		if errors.Is(err, ErrTooLarge) {
			if set := w.Header().Values("Set-Cookie"); len(set) != 0 {
				t.Errorf("%d groups: refused, yet %d cookies set", n, len(set))
			}
			break
		}
		if err != nil {
			t.Fatalf("%d groups: %v", n, err)
		}
		cookies := w.Result().Cookies()
		most = max(most, len(cookies))
		if got := load(t, mustStore(t, o), request(cookies...)); got == nil || len(got.Profile.Groups) != n {
			t.Fatalf("a session of %d groups saved in %d cookies does not open again", n, len(cookies))
		}
	}
	if most != maxChunks {
		t.Errorf("the largest session saved took %d cookies, want all %d", most, maxChunks)
	}
}

func TestSaveRefusesExpiredOrAnonymousSession(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	st := mustStore(t, o)
	expired := New(testProfile(), idp.Tokens{}, o)
	c.Advance(13 * time.Hour)
	for name, s := range map[string]*Session{"expired": expired, "nil": nil, "no ID": {}} {
		if err := st.Save(httptest.NewRecorder(), request(), s); err == nil {
			t.Errorf("%s session: Save succeeded", name)
		}
	}
}

// TestDuplicateCookies covers cookie tossing: the request has a session only
// when exactly one combination of the values present opens.
func TestDuplicateCookies(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	st := mustStore(t, o)
	alice := saved(t, st, New(testProfile(), idp.Tokens{}, o))
	mallory := saved(t, st, New(idp.Profile{IdP: "company", Sub: "mallory"}, idp.Tokens{}, o))
	big := saved(t, st, New(bigProfile(100), idp.Tokens{}, o))
	garbage := func(name string) *http.Cookie { return &http.Cookie{Name: name, Value: strings.Repeat("Zm9v", 30)} }
	var hundreds []*http.Cookie
	for i := range 300 {
		hundreds = append(hundreds, &http.Cookie{Name: fmt.Sprintf("portcullis_%d", 1+i%7), Value: fmt.Sprintf("v%d", i)})
	}
	tests := []struct {
		name    string
		cookies []*http.Cookie
		wantSub string // "" for no session
	}{
		{"two sessions under the same name are no session", append(append([]*http.Cookie{}, alice...), mallory...), ""},
		{"the same value twice is one session", append(append([]*http.Cookie{}, alice...), alice...), "u-123"},
		{"a session next to a tossed garbage value still opens", append([]*http.Cookie{garbage("portcullis")}, alice...), "u-123"},
		{"a chunked session with a tossed garbage chunk still opens", append([]*http.Cookie{garbage(big[1].Name)}, big...), "u-123"},
		{"four values of one name are no session", append([]*http.Cookie{garbage("portcullis"), {Name: "portcullis", Value: "b"}, {Name: "portcullis", Value: "c"}}, alice...), ""},
		{"hundreds of chunk cookies are no session", append(append([]*http.Cookie{}, alice...), hundreds...), ""},
		{"more combinations of tossed chunks than are tried are no session, though one opens", append([]*http.Cookie{
			{Name: big[0].Name, Value: "a"}, {Name: big[0].Name, Value: "b"}, {Name: big[1].Name, Value: "c"}, {Name: big[1].Name, Value: "d"}}, big...), ""},
		{"unrelated cookies around the session are ignored", append([]*http.Cookie{{Name: "csrftoken", Value: "x"}, {Name: "portcullis_99", Value: "y"}}, alice...), "u-123"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := load(t, mustStore(t, o), request(tt.cookies...))
			if tt.wantSub == "" && got != nil {
				t.Errorf("a session for %q", got.Profile.Sub)
			}
			if tt.wantSub != "" && (got == nil || got.Profile.Sub != tt.wantSub) {
				t.Errorf("session %+v, want %q's", got, tt.wantSub)
			}
		})
	}
}

func TestCookiesAcrossSeveralHeaderLines(t *testing.T) {
	// HTTP/2 may send each cookie in its own Cookie header field.
	c := newClock()
	o := testOptions(c)
	st := mustStore(t, o)
	cookies := saved(t, st, New(bigProfile(100), idp.Tokens{}, o))
	r := httptest.NewRequest("GET", "/", nil)
	for _, ck := range cookies {
		r.Header.Add("Cookie", ck.Name+"="+ck.Value)
	}
	if load(t, mustStore(t, o), r) == nil {
		t.Error("no session")
	}
}

func TestDeleteDropsTheCachedSession(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	st := mustStore(t, o)
	s := New(testProfile(), idp.Tokens{}, o)
	cookies := saved(t, st, s)
	if load(t, st, request(cookies...)) == nil {
		t.Fatal("no session")
	}
	if err := st.Delete(httptest.NewRecorder(), request(cookies...), s); err != nil {
		t.Fatal(err)
	}
	if n := len(st.cache.entries); n != 0 {
		t.Errorf("%d cache entries left after Delete", n)
	}
	if !st.revoked.Has(s.ID, s.Expires, c.t) {
		t.Error("ID not revoked")
	}
	c.Advance(12*time.Hour + time.Second)
	if st.revoked.Has(s.ID, s.Expires, c.t) {
		t.Error("revocation outlives the session")
	}
}

func TestDeleteWithoutSessionClearsTheCookie(t *testing.T) {
	c := newClock()
	st := mustStore(t, testOptions(c))
	w := httptest.NewRecorder()
	if err := st.Delete(w, request(), nil); err != nil {
		t.Fatal(err)
	}
	if got := w.Result().Cookies(); len(got) != 1 || got[0].Name != "portcullis" || got[0].MaxAge >= 0 {
		t.Errorf("Set-Cookie %q", w.Header().Values("Set-Cookie"))
	}
}

func TestLoadWithoutCookiesDoesNotAllocate(t *testing.T) {
	st := mustStore(t, testOptions(newClock()))
	r := request(&http.Cookie{Name: "csrftoken", Value: "abc"}, &http.Cookie{Name: "sessionid", Value: "def"})
	if n := testing.AllocsPerRun(100, func() { st.Load(r) }); n != 0 {
		t.Errorf("Load without a session cookie allocates %v times, want 0", n)
	}
}

func TestConcurrentRequestsShareTheStore(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	o.Now = nil // the fake clock is not safe for concurrent use; real time is
	st := mustStore(t, o)
	cookies := saved(t, st, New(testProfile(), idp.Tokens{}, o))
	done := make(chan bool)
	for range 8 {
		go func() {
			ok := true
			for range 200 {
				r := request(cookies...)
				s, err := st.Load(r)
				if s == nil || err != nil {
					ok = false
					break
				}
				s.LastSeen = s.LastSeen.Add(-time.Hour) // force a re-seal
				s.Profile.Roles = append(s.Profile.Roles, "worker")
				if st.Touch(httptest.NewRecorder(), r, s) != nil {
					ok = false
				}
			}
			done <- ok
		}()
	}
	for range 8 {
		if !<-done {
			t.Error("a concurrent Load found no session or Touch failed")
		}
	}
}

func TestInheritKeepsRevocationsAcrossReload(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	before := mustStore(t, o)
	s := New(testProfile(), idp.Tokens{}, o)
	cookies := saved(t, before, s)
	if err := before.Delete(httptest.NewRecorder(), request(cookies...), s); err != nil {
		t.Fatal(err)
	}
	after := mustStore(t, o)
	after.Inherit(before)
	if load(t, after, request(cookies...)) != nil {
		t.Error("a cookie logged out before the reload opens after it")
	}
}

func TestRevocationsSurviveAFloodOfLogouts(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	st := mustStore(t, o)
	st.revoked = newExpiringSet(10, "revoked sessions", quiet)
	victim := New(testProfile(), idp.Tokens{}, o)
	victimCookies := saved(t, st, victim)
	if err := st.Delete(httptest.NewRecorder(), request(victimCookies...), victim); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Second)
	older := New(testProfile(), idp.Tokens{}, o)
	olderCookies := saved(t, st, older)
	c.Advance(time.Second)
	p := testProfile()
	p.Sub = "mallory"
	for range 20 { // twice the bound: unexpired revocations are forgotten
		st.Delete(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), New(p, idp.Tokens{}, o))
	}
	c.Advance(time.Second)
	newer := New(testProfile(), idp.Tokens{}, o)
	newerCookies := saved(t, st, newer)

	if load(t, st, request(victimCookies...)) != nil {
		t.Error("a copied cookie of a logged-out session opens again after a flood of logouts")
	}
	if load(t, st, request(olderCookies...)) != nil {
		t.Error("a session expiring before the revocations forgotten still opens (fail closed: it must log in again)")
	}
	if load(t, st, request(newerCookies...)) == nil {
		t.Error("a session newer than the flood does not open")
	}
}

// Absent tells a cookie that opens to a session that has ended (the user
// may simply sign in again) from one that is not there, is no sealed value,
// or is sealed with other keys.
func TestCookieStoreAbsentTellsAnEndedSessionFromAnUnreadableCookie(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	st := mustStore(t, o)
	other := mustStore(t, testOptions(c, key(2)))
	for _, tc := range []struct {
		name  string
		setUp func() []*http.Cookie
		want  Absence
	}{
		{"no session cookie", func() []*http.Cookie { return nil }, NoCookie},
		{"a value that is not a session", func() []*http.Cookie {
			return []*http.Cookie{{Name: "portcullis", Value: "bm90IGEgc2Vzc2lvbg"}}
		}, Malformed},
		{"a session cut short", func() []*http.Cookie {
			cookies := saved(t, st, New(testProfile(), idp.Tokens{}, o))
			cookies[0].Value = cookies[0].Value[:len(cookies[0].Value)-8]
			return cookies
		}, Malformed},
		{"a session sealed with other keys", func() []*http.Cookie { return saved(t, other, New(testProfile(), idp.Tokens{}, o)) }, Unopened},
		{"signed out", func() []*http.Cookie {
			cookies := saved(t, st, New(testProfile(), idp.Tokens{}, o))
			r := request(cookies...)
			if err := st.Delete(httptest.NewRecorder(), r, load(t, st, r)); err != nil {
				t.Fatal(err)
			}
			return cookies
		}, Ended},
		{"ended by a back-channel logout", func() []*http.Cookie {
			s := New(testProfile(), idp.Tokens{}, o)
			cookies := saved(t, st, s)
			c.Advance(time.Second)
			if _, err := st.RevokeUser(context.Background(), s.Profile.IdP, User{Sub: s.Profile.Sub}, "", c.Now()); err != nil {
				t.Fatal(err)
			}
			return cookies
		}, Ended},
		{"idle too long", func() []*http.Cookie {
			cookies := saved(t, st, New(testProfile(), idp.Tokens{}, o))
			c.Advance(o.IdleTimeout + time.Second)
			return cookies
		}, Ended},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why, err := st.Absent(request(tc.setUp()...))
			if err != nil || why != tc.want {
				t.Errorf("Absent = %v, %v; want %v", why, err, tc.want)
			}
		})
	}
}

// A value the keys open is a session only in this layout (wire version) and
// with an ID, as Save seals them: any other sealed value, from a version
// with another layout, is no session rather than a misread one, and one
// without an ID could never be revoked.
func TestSealedValueOfAnotherLayoutOrWithoutIDIsNoSession(t *testing.T) {
	o := testOptions(newClock())
	st := mustStore(t, o)
	for _, tc := range []struct {
		name  string
		edit  func(*wireSession)
		opens bool
	}{
		{"as Save seals it", func(*wireSession) {}, true},
		{"another layout", func(w *wireSession) { w.V = wireVersion + 1 }, false},
		{"no ID", func(w *wireSession) { w.ID = "" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := toWire(New(testProfile(), idp.Tokens{}, o), st.aud)
			tc.edit(&w)
			sealed, err := st.sealer.Encode(sessionCodecName, w)
			if err != nil {
				t.Fatal(err)
			}
			if s := load(t, st, request(&http.Cookie{Name: st.name, Value: sealed})); (s != nil) != tc.opens {
				t.Errorf("Load gave a session: %v, want %v", s != nil, tc.opens)
			}
		})
	}
}

// A cookie is read under the name a browser stores it by: net/http and RFC
// 6265 trim spaces and tabs around a cookie pair and its name, nothing
// else. A name led by another Unicode space (a no-break space, NEL, an
// ideographic space) is another cookie to the browser, one that a sibling
// subdomain or a script can set where the __Host- prefix lets nobody set
// the session's: read as the session, the login state or the device
// cookie, it was a way around that prefix (a session of the attacker's,
// a login state bound to another browser). Spaces and tabs around a pair
// are read through, as net/http reads them.
func TestCookieNamesAreReadAsBrowsersSendThem(t *testing.T) {
	c := newClock()
	o := testOptions(c)
	o.Secure = true // __Host-portcullis
	st := mustStore(t, o)
	session := saved(t, st, New(testProfile(), idp.Tokens{}, o))[0]
	flows := NewFlows(o)
	devices := NewDevices(o)
	device := issued(t, devices, "corp\x00alice")
	for _, tc := range []struct {
		name  string
		pair  func(name, value string) string // a Cookie line with the cookie name=value in it
		reads bool
	}{
		{"as sent", func(n, v string) string { return n + "=" + v }, true},
		{"among others", func(n, v string) string { return "a=1; " + n + "=" + v + "; b=2" }, true},
		{"spaces and tabs around the pair and its name", func(n, v string) string { return "a=1;\t " + n + " \t=" + v + " ; b=2" }, true},
		{"a no-break space before the name", func(n, v string) string { return "a=1; \u00a0" + n + "=" + v }, false},
		{"a no-break space before the name, first", func(n, v string) string { return "\u00a0" + n + "=" + v }, false},
		{"NEL before the name", func(n, v string) string { return "\u0085" + n + "=" + v }, false},
		{"an ideographic space before the name", func(n, v string) string { return "a=1;\u3000" + n + "=" + v }, false},
		{"a line separator before the name", func(n, v string) string { return "\u2028" + n + "=" + v }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Cookie", tc.pair(session.Name, session.Value))
			if got := load(t, mustStore(t, o), r); (got != nil) != tc.reads {
				t.Errorf("session cookie in %q: a session %v, want %v", r.Header.Get("Cookie"), got != nil, tc.reads)
			}
			state := NewState()
			flow := started(t, flows, state)
			r = httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Cookie", tc.pair(flow.Name, flow.Value))
			if _, _, err := flows.Finish(httptest.NewRecorder(), r, LoginFlow, state); (err == nil) != tc.reads {
				t.Errorf("login state cookie in %q: %v, want it read %v", r.Header.Get("Cookie"), err, tc.reads)
			}
			r = httptest.NewRequest("POST", "/.portcullis/ldap/corp", nil)
			r.Header.Set("Cookie", tc.pair(o.DeviceName(), device))
			if got := devices.Find(r, "corp", "corp\x00alice"); (got.Nonce != "") != tc.reads {
				t.Errorf("device cookie in %q: nonce %q, want it read %v", r.Header.Get("Cookie"), got.Nonce, tc.reads)
			}
		})
	}
}
