package session

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
)

// started starts a login flow for state and returns its cookie.
func started(t *testing.T, f *Flows, state string) *http.Cookie {
	t.Helper()
	w := httptest.NewRecorder()
	if err := f.Start(w, nil, LoginFlow, &idp.Flow{State: state, IdP: "company", Redirect: "https://cvat.example.com/tasks", Nonce: "n", Verifier: "v"}, false); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return w.Result().Cookies()[0]
}

func TestFlowRoundTrip(t *testing.T) {
	c := newClock()
	f := NewFlows(testOptions(c))
	state := NewState()
	cookie := started(t, f, state)
	c.Advance(9 * time.Minute)
	w := httptest.NewRecorder()
	flow, _, err := f.Finish(w, request(cookie), LoginFlow, state)
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	want := idp.Flow{State: state, IdP: "company", Redirect: "https://cvat.example.com/tasks", Nonce: "n", Verifier: "v", Created: c.t.Add(-9 * time.Minute).Unix()}
	if *flow != want {
		t.Errorf("flow %+v, want %+v", *flow, want)
	}
	cleared := w.Result().Cookies()
	if len(cleared) != 1 || cleared[0].Name != cookie.Name || cleared[0].MaxAge >= 0 {
		t.Errorf("Finish set %q, want the flow cookie cleared", w.Header().Values("Set-Cookie"))
	}
}

func TestFinishRefuses(t *testing.T) {
	tests := []struct {
		name string
		// finish prepares a browser with a started login and returns the
		// request and state the IdP's answer carries.
		finish func(t *testing.T, f *Flows, c *clock) (*http.Request, string)
		want   error
	}{
		{"a second Finish with the same cookie", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			state := NewState()
			cookie := started(t, f, state)
			if _, _, err := f.Finish(httptest.NewRecorder(), request(cookie), LoginFlow, state); err != nil {
				t.Fatalf("first Finish: %v", err)
			}
			return request(cookie), state
		}, ErrFlowReused},
		{"a state that no login in this browser started", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			return request(started(t, f, NewState())), NewState()
		}, ErrFlowMissing},
		{"a state sharing the cookie name's 8 characters but not the rest", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			state := NewState()
			other := state[:8] + NewState()[8:]
			return request(started(t, f, state)), other
		}, ErrFlowInvalid},
		{"a login older than ten minutes", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			state := NewState()
			cookie := started(t, f, state)
			c.Advance(10*time.Minute + time.Second)
			return request(cookie), state
		}, ErrFlowExpired},
		{"a login exactly ten minutes old", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			state := NewState()
			cookie := started(t, f, state)
			c.Advance(FlowLifetime)
			return request(cookie), state
		}, ErrFlowExpired},
		{"more values under the flow cookie's name than are read, the login's among them", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			// Another site of the domain can add values under the name but
			// not remove the browser's: with more than are read, which one
			// is the browser's cannot be told.
			state := NewState()
			cookie := started(t, f, state)
			cookies := []*http.Cookie{cookie}
			for i := range maxValuesPerName {
				cookies = append(cookies, &http.Cookie{Name: cookie.Name, Value: fmt.Sprintf("tossed%d", i)})
			}
			return request(cookies...), state
		}, ErrFlowInvalid},
		{"the flow cookie under its name in other case", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			// Cookie names are case-sensitive (RFC 6265): a name in other
			// case is another cookie, one that another site of the domain
			// can set (__HOST-… has no __Host- guarantees in browsers that
			// check prefixes case-sensitively).
			state := NewState()
			cookie := started(t, f, state)
			cookie.Name = strings.ToUpper(cookie.Name)
			return request(cookie), state
		}, ErrFlowMissing},
		{"a state too short to be one of ours", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			return request(), "abc"
		}, ErrFlowInvalid},
		{"a state with characters outside URL-safe base64", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			return request(), "abcdefgh;ijklmnop=qrs"
		}, ErrFlowInvalid},
		{"a tampered flow cookie", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			state := NewState()
			cookie := started(t, f, state)
			cookie.Value = cookie.Value[:len(cookie.Value)-4] + "AAAA"
			return request(cookie), state
		}, ErrFlowUnopened},
		{"a flow cookie sealed with another key", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			state := NewState()
			return request(started(t, NewFlows(testOptions(c, key(9))), state)), state
		}, ErrFlowUnopened},
		{"a session cookie presented as the flow cookie", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			st := mustStore(t, f.opts)
			sc := saved(t, st, New(testProfile(), idp.Tokens{}, f.opts))[0]
			state := NewState()
			return request(&http.Cookie{Name: f.CookieName(state), Value: sc.Value}), state
		}, ErrFlowUnopened},
		{"a logout's flow finished as a login", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			state := NewState()
			w := httptest.NewRecorder()
			if err := f.Start(w, nil, LogoutFlow, &idp.Flow{State: state, IdP: "company"}, false); err != nil {
				t.Fatal(err)
			}
			return request(w.Result().Cookies()...), state
		}, ErrFlowOtherKind},
		{"a flow sealed before flows had kinds (an update during a login)", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			state := NewState()
			sealed, err := f.codecs[0].Encode(flowCodecName, &idp.Flow{State: state, IdP: "company", Created: c.Now().Unix()})
			if err != nil {
				t.Fatal(err)
			}
			return request(&http.Cookie{Name: f.CookieName(state), Value: sealed}), state
		}, ErrFlowOtherKind},
		{"two flow cookies for the same state that both open", func(t *testing.T, f *Flows, c *clock) (*http.Request, string) {
			state := NewState()
			a := started(t, f, state)
			c.Advance(time.Second)
			b := started(t, f, state)
			return request(a, b), state
		}, ErrFlowInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			c := newClock()
			f := NewFlows(testOptions(c))
			r, state := tt.finish(t, f, c)
			w := httptest.NewRecorder()
			flow, _, err := f.Finish(w, r, LoginFlow, state)
			if flow != nil || !errors.Is(err, tt.want) {
				t.Errorf("Finish = %+v, %v; want nil, %v", flow, err, tt.want)
			}
			// The flow cookie that came with a refused answer is spent all
			// the same, but for one of another kind, left for its own step.
			named := func(c *http.Cookie) bool { return c.Name == f.CookieName(state) }
			carried := validState(state) && slices.ContainsFunc(r.Cookies(), named)
			expired := slices.ContainsFunc(w.Result().Cookies(), func(c *http.Cookie) bool { return named(c) && c.MaxAge < 0 })
			if want := carried && tt.want != ErrFlowOtherKind; expired != want {
				t.Errorf("Finish expired the flow cookie: %v, want %v (Set-Cookie %q)", expired, want, w.Header().Values("Set-Cookie"))
			}
			// Only a cookie that opens with no key says so: the proxy
			// blames other replicas' keys for it.
			if errors.Is(err, ErrFlowUnopened) != (tt.want == ErrFlowUnopened) {
				t.Errorf("Finish = %v; want ErrFlowUnopened: %v", err, tt.want == ErrFlowUnopened)
			}
		})
	}
}

// A flow finished as another kind is refused, and left as it was for the
// endpoint it is for: its cookie stays, its state unused.
func TestFlowOfAnotherKindIsLeftForItsOwnStep(t *testing.T) {
	for _, kinds := range [][2]FlowKind{{LoginFlow, LogoutFlow}, {LogoutFlow, LoginFlow}} {
		started, other := kinds[0], kinds[1]
		t.Run("a "+string(started)+" finished as a "+string(other), func(t *testing.T) {
			f := NewFlows(testOptions(newClock()))
			state := NewState()
			w := httptest.NewRecorder()
			if err := f.Start(w, nil, started, &idp.Flow{State: state, IdP: "company"}, false); err != nil {
				t.Fatal(err)
			}
			cookie := w.Result().Cookies()[0]
			w = httptest.NewRecorder()
			if flow, _, err := f.Finish(w, request(cookie), other, state); flow != nil || !errors.Is(err, ErrFlowOtherKind) || !errors.Is(err, ErrFlowInvalid) {
				t.Errorf("Finish as a %s = %+v, %v; want nil, ErrFlowOtherKind", other, flow, err)
			}
			if set := w.Header().Values("Set-Cookie"); len(set) != 0 {
				t.Errorf("Finish as a %s set %q, want the flow cookie left alone", other, set)
			}
			if flow, _, err := f.Finish(httptest.NewRecorder(), request(cookie), started, state); err != nil || flow.State != state {
				t.Errorf("Finish as a %s afterwards = %+v, %v; want the flow", started, flow, err)
			}
		})
	}
}

func TestFlowsInTwoTabs(t *testing.T) {
	c := newClock()
	f := NewFlows(testOptions(c))
	first, second := NewState(), NewState()
	a, b := started(t, f, first), started(t, f, second)
	if a.Name == b.Name {
		t.Fatalf("both logins use cookie %q", a.Name)
	}
	for _, state := range []string{second, first} {
		flow, _, err := f.Finish(httptest.NewRecorder(), request(a, b), LoginFlow, state)
		if err != nil || flow.State != state {
			t.Errorf("Finish(%s) = %+v, %v", state, flow, err)
		}
	}
}

// A browser holds at most maxOpenFlows unfinished logins: the login that
// finds that many login cookies already there expires them all before it
// sets its own, and one fewer are left alone.
func TestStartExpiresTheOpenFlowsOnceThereAreEight(t *testing.T) {
	f := NewFlows(testOptions(newClock()))
	for _, open := range []int{maxOpenFlows - 1, maxOpenFlows} {
		var held []*http.Cookie
		for range open {
			held = append(held, started(t, f, NewState()))
		}
		w := httptest.NewRecorder()
		if err := f.Start(w, request(held...), LoginFlow, &idp.Flow{State: NewState(), IdP: "company"}, false); err != nil {
			t.Fatalf("Start: %v", err)
		}
		expired := 0
		for _, c := range w.Result().Cookies() {
			if c.MaxAge < 0 {
				expired++
			}
		}
		want := 0
		if open == maxOpenFlows {
			want = open
		}
		if expired != want {
			t.Errorf("a login started beside %d open ones expired %d of them, want %d", open, expired, want)
		}
	}
}

func TestFlowWithGarbageNextToIt(t *testing.T) {
	c := newClock()
	f := NewFlows(testOptions(c))
	state := NewState()
	cookie := started(t, f, state)
	tossed := &http.Cookie{Name: cookie.Name, Value: "Zm9vYmFy"}
	if flow, _, err := f.Finish(httptest.NewRecorder(), request(tossed, cookie), LoginFlow, state); err != nil || flow.State != state {
		t.Errorf("Finish = %+v, %v; want the flow that opens", flow, err)
	}
}

func TestStartRefusesAFlowWithoutState(t *testing.T) {
	f := NewFlows(testOptions(newClock()))
	for _, state := range []string{"", "short", "not/url+safe/base64=="} {
		if err := f.Start(httptest.NewRecorder(), nil, LoginFlow, &idp.Flow{State: state}, false); !errors.Is(err, ErrFlowInvalid) {
			t.Errorf("Start with state %q: %v, want %v", state, err, ErrFlowInvalid)
		}
	}
}

// A flow whose page to go back to is kilobytes long would be sealed into a
// cookie that browsers drop (its name and value over 4096 bytes), or not be
// sealed at all: either way the login could not finish. Start says so with
// ErrFlowTooLarge, for the caller to start it again with less, and sets
// nothing; every flow it does set fits, and opens again.
func TestStartRefusesAFlowTooLargeForACookie(t *testing.T) {
	f := NewFlows(testOptions(newClock()))
	var fits, refused int
	for n := 1500; n <= 3000; n++ {
		state := NewState()
		rd := "https://cvat.example.com/tasks?q=" + strings.Repeat("e", n)
		w := httptest.NewRecorder()
		err := f.Start(w, nil, LoginFlow, &idp.Flow{State: state, IdP: "company", Redirect: rd, Nonce: NewState(), Verifier: NewState() + NewState()}, false)
		set := w.Result().Cookies()
		switch {
		case errors.Is(err, ErrFlowTooLarge):
			refused++
			if len(set) != 0 {
				t.Fatalf("redirect of %d: refused, but set %q", len(rd), w.Header().Values("Set-Cookie"))
			}
		case err != nil:
			t.Fatalf("redirect of %d: %v, want nil or %v", len(rd), err, ErrFlowTooLarge)
		default:
			fits++
			if len(set) != 1 || len(set[0].Name)+len(set[0].Value) > 4096 {
				t.Fatalf("redirect of %d: set %d cookies, the first %d bytes of name and value; want one of at most 4096", len(rd), len(set), len(set[0].Name)+len(set[0].Value))
			}
			flow, _, err := f.Finish(httptest.NewRecorder(), request(set[0]), LoginFlow, state)
			if err != nil || flow.Redirect != rd {
				t.Fatalf("redirect of %d: Finish = %v; want the flow back", len(rd), err)
			}
		}
	}
	if fits == 0 || refused == 0 {
		t.Errorf("%d redirects fit and %d were refused; want some of each", fits, refused)
	}
}

func TestFlowsInheritUsedStatesAcrossReload(t *testing.T) {
	c := newClock()
	before := NewFlows(testOptions(c))
	state := NewState()
	cookie := started(t, before, state)
	if _, _, err := before.Finish(httptest.NewRecorder(), request(cookie), LoginFlow, state); err != nil {
		t.Fatal(err)
	}
	after := NewFlows(testOptions(c))
	after.Inherit(before)
	if _, _, err := after.Finish(httptest.NewRecorder(), request(cookie), LoginFlow, state); !errors.Is(err, ErrFlowReused) {
		t.Errorf("Finish after reload: %v, want %v", err, ErrFlowReused)
	}
}

func TestUsedStatesStaySingleUseUnderAFlood(t *testing.T) {
	c := newClock()
	f := NewFlows(testOptions(c))
	f.used = newExpiringSet(10, "used login states", quiet)
	victim := NewState()
	victimCookie := started(t, f, victim)
	if _, _, err := f.Finish(httptest.NewRecorder(), request(victimCookie), LoginFlow, victim); err != nil {
		t.Fatalf("the victim's Finish: %v", err)
	}
	c.Advance(time.Second)
	pending := NewState()
	pendingCookie := started(t, f, pending)
	c.Advance(time.Second)
	// Anyone can finish logins without an account: the state is used before
	// the IdP's answer is checked. Twice the bound forgets unexpired states.
	for range 20 {
		c.Advance(time.Second)
		s := NewState()
		if _, _, err := f.Finish(httptest.NewRecorder(), request(started(t, f, s)), LoginFlow, s); err != nil {
			t.Fatalf("the flood's Finish: %v", err)
		}
	}
	c.Advance(time.Second)
	fresh := NewState()
	freshCookie := started(t, f, fresh)

	if _, _, err := f.Finish(httptest.NewRecorder(), request(victimCookie), LoginFlow, victim); !errors.Is(err, ErrFlowForgotten) {
		t.Errorf("the victim's used state again: %v, want %v", err, ErrFlowForgotten)
	}
	if _, _, err := f.Finish(httptest.NewRecorder(), request(pendingCookie), LoginFlow, pending); !errors.Is(err, ErrFlowForgotten) {
		t.Errorf("a login started before the flood: %v, want %v (fail closed)", err, ErrFlowForgotten)
	}
	if _, _, err := f.Finish(httptest.NewRecorder(), request(freshCookie), LoginFlow, fresh); err != nil {
		t.Errorf("a login started after the flood: %v", err)
	}
}

// A login whose answer failed gives its state back (Release): junk callbacks,
// which anyone can send, then cannot fill the set of used states and push
// logins in progress, or those finished before, past its watermark. The
// entries they leave behind are not kept for long either.
func TestReleasedStatesDoNotFillTheUsedSet(t *testing.T) {
	c := newClock()
	f := NewFlows(testOptions(c))
	const bound = 10
	f.used = newExpiringSet(bound, "used login states", quiet)
	pending := NewState()
	pendingCookie := started(t, f, pending)
	done := NewState()
	doneCookie := started(t, f, done)
	if _, _, err := f.Finish(httptest.NewRecorder(), request(doneCookie), LoginFlow, done); err != nil {
		t.Fatal(err)
	}
	most := 0
	for range 20 * bound {
		c.Advance(time.Second)
		s := NewState()
		_, mark, err := f.Finish(httptest.NewRecorder(), request(started(t, f, s)), LoginFlow, s)
		if err != nil {
			t.Fatalf("the flood's Finish: %v", err)
		}
		if err := f.Release(t.Context(), mark); err != nil {
			t.Fatal(err)
		}
		most = max(most, len(f.used.order))
	}
	if _, _, err := f.Finish(httptest.NewRecorder(), request(doneCookie), LoginFlow, done); !errors.Is(err, ErrFlowReused) {
		t.Errorf("a login finished before a flood of failed answers, again: %v, want %v", err, ErrFlowReused)
	}
	if _, _, err := f.Finish(httptest.NewRecorder(), request(pendingCookie), LoginFlow, pending); err != nil {
		t.Errorf("a login started before a flood of failed answers: %v", err)
	}
	if _, _, err := f.Finish(httptest.NewRecorder(), request(pendingCookie), LoginFlow, pending); !errors.Is(err, ErrFlowReused) {
		t.Errorf("the same login again, not released: %v, want %v", err, ErrFlowReused)
	}
	if most > 2*bound+staleSlack {
		t.Errorf("%d failed answers left up to %d entries for %d states, want at most %d", 20*bound, most, bound, 2*bound+staleSlack)
	}
}
