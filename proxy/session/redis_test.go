package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// replica is one proxy's Redis store: replicas share a Redis and the keys.
func replica(t *testing.T, srv *redisserver.Server, o Options) *RedisStore {
	t.Helper()
	return modeReplica(t, RedisConfig{URL: srv.URL, KeyPrefix: "test:"}, o)
}

// saveTo saves s with st and returns the cookies the browser keeps.
func saveTo(t *testing.T, st Store, s *Session) []*http.Cookie {
	t.Helper()
	w := httptest.NewRecorder()
	if err := st.Save(w, httptest.NewRequest("GET", "/", nil), s); err != nil {
		t.Fatalf("Save: %v", err)
	}
	return live(w.Result().Cookies())
}

func loadFrom(t *testing.T, st Store, cookies []*http.Cookie) *Session {
	t.Helper()
	s, err := st.Load(request(cookies...))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

func pttl(t *testing.T, st *RedisStore, id string) time.Duration {
	t.Helper()
	d, err := st.redis.client.PTTL(context.Background(), st.sessionKey(id)).Result()
	if err != nil {
		t.Fatalf("PTTL: %v", err)
	}
	return d
}

func TestRedisStoreRoundTripAcrossReplicas(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	one, two := replica(t, srv, testOptions(c)), replica(t, srv, testOptions(c))
	p := testProfile()
	p.Groups = make([]string, 500) // a session far too big for cookies
	for i := range p.Groups {
		p.Groups[i] = strings.Repeat("g", 40)
	}
	s := New(p, idp.Tokens{RefreshToken: "rt", IDToken: "it", SID: "idp-session-1"}, testOptions(c))
	cookies := saveTo(t, one, s)

	if len(cookies) != 1 || len(cookies[0].Value) > 200 {
		t.Fatalf("cookies %d, first %d bytes: want one small cookie with the sealed ID", len(cookies), len(cookies[0].Value))
	}
	if strings.Contains(cookies[0].Value, s.ID) {
		t.Errorf("the cookie carries the session ID in the clear")
	}
	got := loadFrom(t, two, cookies)
	if got == nil {
		t.Fatal("another replica does not find the session")
	}
	if got.ID != s.ID || got.Profile.Email != p.Email || len(got.Profile.Groups) != 500 || got.Tokens != s.Tokens || !got.Created.Equal(s.Created) {
		t.Errorf("loaded %+v, want the saved session", got)
	}
	raw, _ := one.redis.client.HGet(context.Background(), one.sessionKey(s.ID), "d").Result()
	if raw == "" || strings.Contains(raw, "alice@example.com") || strings.Contains(raw, "idp-session-1") {
		t.Errorf("the session is readable in Redis: %.80s", raw)
	}
}

func TestRedisStoreRefuses(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	st := replica(t, srv, testOptions(c))
	otherKeys := replica(t, srv, testOptions(c, key(9)))
	s := New(testProfile(), idp.Tokens{}, testOptions(c))
	cookies := saveTo(t, st, s)
	cookieStore := mustStore(t, testOptions(c))
	sealedAsCookieSession := saved(t, cookieStore, New(testProfile(), idp.Tokens{}, testOptions(c)))
	other := saveTo(t, st, New(testProfile(), idp.Tokens{}, testOptions(c)))

	tests := []struct {
		name    string
		store   *RedisStore
		cookies []*http.Cookie
	}{
		{"the bare session ID (a guess) is no session", st, []*http.Cookie{{Name: "portcullis", Value: s.ID}}},
		{"an altered cookie is no session", st, []*http.Cookie{{Name: "portcullis", Value: cookies[0].Value[:20] + "A" + cookies[0].Value[21:]}}},
		{"a cookie sealed with other keys is no session", otherKeys, cookies},
		{"a cookie store's session cookie is no session", st, sealedAsCookieSession},
		{"two cookies opening to different sessions are no session", st, append(append([]*http.Cookie{}, cookies...), other...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := loadFrom(t, tt.store, tt.cookies); got != nil {
				t.Errorf("got session %s, want none", got.ID)
			}
		})
	}
}

// A sealed session names its ID, so that a value read from under another
// session's key opens nothing: one copied there by whoever can write to
// Redis, or an answer go-redis gave to the wrong command (out-of-order
// replies after a timeout, GHSA-92cp-5422-2mw7). That holds when the value
// was opened before and sits in the store's cache, as every active user's does.
func TestRedisStoreRefusesASessionUnderAnotherID(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	st := replica(t, srv, testOptions(c))
	alice := New(testProfile(), idp.Tokens{}, testOptions(c))
	aliceCookies := saveTo(t, st, alice)
	mallory := New(idp.Profile{IdP: "corp", Sub: "mallory", Email: "mallory@example.com"}, idp.Tokens{}, testOptions(c))
	malloryCookies := saveTo(t, st, mallory)

	for _, opened := range []bool{false, true} {
		if opened && loadFrom(t, st, aliceCookies) == nil { // alice's value is now in the cache
			t.Fatal("alice's session does not load")
		}
		ctx := context.Background()
		sealed, err := st.redis.client.HGet(ctx, st.sessionKey(alice.ID), "d").Result()
		if err != nil {
			t.Fatal(err)
		}
		if err := st.redis.client.HSet(ctx, st.sessionKey(mallory.ID), "d", sealed).Err(); err != nil {
			t.Fatal(err)
		}
		if got := loadFrom(t, st, malloryCookies); got != nil {
			t.Errorf("alice's value opened before %v: mallory's cookie loads session %s (%s), want none", opened, got.ID, got.Profile.Email)
		}
	}
}

func TestRedisStoreLifetimeAndIdleTimeout(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	o := testOptions(c)
	st := replica(t, srv, o)

	s := New(testProfile(), idp.Tokens{}, o)
	cookies := saveTo(t, st, s)
	if d := pttl(t, st, s.ID); d > o.IdleTimeout || d < o.IdleTimeout-5*time.Second {
		t.Errorf("TTL after save = %s, want the idle timeout %s", d, o.IdleTimeout)
	}

	// Within min(idle/10, 1m) nothing is written; after it, the expiry moves.
	c.Advance(30 * time.Second)
	loaded := loadFrom(t, st, cookies)
	st.redis.client.PExpire(context.Background(), st.sessionKey(s.ID), time.Hour)
	if err := st.Touch(httptest.NewRecorder(), request(cookies...), loaded); err != nil {
		t.Fatal(err)
	}
	if d := pttl(t, st, s.ID); d > time.Hour {
		t.Errorf("touch within a minute moved the TTL to %s", d)
	}
	c.Advance(time.Minute)
	loaded = loadFrom(t, st, cookies)
	if err := st.Touch(httptest.NewRecorder(), request(cookies...), loaded); err != nil {
		t.Fatal(err)
	}
	if d := pttl(t, st, s.ID); d < o.IdleTimeout-5*time.Second {
		t.Errorf("TTL after touch = %s, want the idle timeout again", d)
	}
	if got := loadFrom(t, st, cookies); got == nil || !got.LastSeen.Equal(c.Now()) {
		t.Errorf("LastSeen after touch = %v, want %v", got, c.Now())
	}

	c.Advance(o.IdleTimeout + time.Second)
	if loadFrom(t, st, cookies) != nil {
		t.Error("a session idle longer than the idle timeout is still there")
	}

	// The absolute lifetime holds however active the session is.
	s2 := New(testProfile(), idp.Tokens{}, o)
	cookies = saveTo(t, st, s2)
	for c.Now().Before(s2.Expires.Add(-time.Hour)) {
		c.Advance(time.Hour)
		got := loadFrom(t, st, cookies)
		if got == nil {
			t.Fatalf("session ended at %s before its lifetime", c.Now().Sub(s2.Created))
		}
		if err := st.Touch(httptest.NewRecorder(), request(cookies...), got); err != nil {
			t.Fatal(err)
		}
		if d := pttl(t, st, s2.ID); d > s2.Expires.Sub(c.Now())+time.Second {
			t.Fatalf("TTL %s goes past the session's expiry in %s", d, s2.Expires.Sub(c.Now()))
		}
	}
	c.Advance(time.Hour)
	if loadFrom(t, st, cookies) != nil {
		t.Error("a session past its lifetime is still there")
	}
}

func TestRedisStoreTTLEndsTheSessionInRedis(t *testing.T) {
	srv := redisserver.Start(t)
	o := Options{Keys: [][]byte{key(1)}, IdleTimeout: time.Second}
	st := replica(t, srv, o)
	s := New(testProfile(), idp.Tokens{}, o)
	cookies := saveTo(t, st, s)
	time.Sleep(1500 * time.Millisecond)
	if n, _ := st.redis.client.Exists(context.Background(), st.sessionKey(s.ID)).Result(); n != 0 {
		t.Error("Redis still holds a session idle past its timeout")
	}
	if loadFrom(t, st, cookies) != nil {
		t.Error("session loaded after its idle timeout")
	}
}

func TestRedisStoreLogoutEndsTheSessionOnEveryReplica(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	one, two := replica(t, srv, testOptions(c)), replica(t, srv, testOptions(c))
	s := New(testProfile(), idp.Tokens{}, testOptions(c))
	cookies := saveTo(t, one, s)
	onTwo := loadFrom(t, two, cookies) // a request in flight on replica two

	w := httptest.NewRecorder()
	if err := one.Delete(w, request(cookies...), loadFrom(t, one, cookies)); err != nil {
		t.Fatal(err)
	}
	if cleared := w.Result().Cookies(); len(cleared) == 0 || cleared[0].MaxAge >= 0 {
		t.Errorf("logout did not clear the cookie: %v", cleared)
	}
	if loadFrom(t, two, cookies) != nil {
		t.Error("the other replica still has the session")
	}
	// Replica two saving the session it had loaded (a refresh) does not
	// bring it back.
	err := two.Save(httptest.NewRecorder(), request(cookies...), onTwo)
	if !errors.Is(err, errEnded) {
		t.Errorf("saving an ended session: %v, want errEnded", err)
	}
	if err := two.Touch(httptest.NewRecorder(), request(cookies...), onTwo); err != nil {
		t.Errorf("touching an ended session: %v", err)
	}
	if loadFrom(t, one, cookies) != nil {
		t.Error("the ended session came back")
	}
}

func TestRedisStoreRevokeUser(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	st := replica(t, srv, testOptions(c))
	alice := testProfile()
	bob := testProfile()
	bob.Sub, bob.Email = "u-456", "bob@example.com"
	a1 := saveTo(t, st, New(alice, idp.Tokens{SID: "sid-1"}, testOptions(c)))
	a2 := saveTo(t, st, New(alice, idp.Tokens{SID: "sid-2"}, testOptions(c)))
	b1 := saveTo(t, st, New(bob, idp.Tokens{SID: "sid-3"}, testOptions(c)))
	ctx := context.Background()

	if n, err := st.RevokeUser(ctx, "company", User{Sub: alice.Sub}, "sid-1", c.Now()); err != nil || n != 1 {
		t.Fatalf("revoke by sid: %d, %v; want 1", n, err)
	}
	if loadFrom(t, st, a1) != nil || loadFrom(t, st, a2) == nil {
		t.Error("revoking sid-1 must end that IdP session's session only")
	}
	if n, err := st.RevokeUser(ctx, "company", User{Sub: alice.Sub}, "", c.Now()); err != nil || n != 1 {
		t.Fatalf("revoke by sub: %d, %v; want the 1 left", n, err)
	}
	if loadFrom(t, st, a2) != nil || loadFrom(t, st, b1) == nil {
		t.Error("revoking alice must end hers and not bob's")
	}
	if n, _ := st.RevokeUser(ctx, "other-idp", User{Sub: bob.Sub}, "", c.Now()); n != 0 || loadFrom(t, st, b1) == nil {
		t.Error("the same sub at another IdP is another user")
	}

	list, err := st.ListByEmail(ctx, "BOB@example.com")
	if err != nil || len(list) != 1 || list[0].Sub != bob.Sub {
		t.Fatalf("ListByEmail = %+v, %v; want bob's one session", list, err)
	}
	if n, err := st.RevokeByEmail(ctx, "bob@example.com"); err != nil || n != 1 || loadFrom(t, st, b1) != nil {
		t.Errorf("RevokeByEmail = %d, %v; want 1 and the session gone", n, err)
	}
}

// TestRedisIndexesLiveAsLongAsTheirLongestSession: during a rolling update
// replicas run with different session.lifetimes; the one with the shorter
// must not shorten the sets that find the longer-lived sessions of the
// other, or a logout at the IdP would miss them.
func TestRedisIndexesLiveAsLongAsTheirLongestSession(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	long, short := testOptions(c), testOptions(c)
	long.Lifetime, short.Lifetime = 12*time.Hour, time.Hour
	old, updated := replica(t, srv, long), replica(t, srv, short)
	alice := testProfile()
	s1 := New(alice, idp.Tokens{SID: "sid-1"}, long)
	saveTo(t, old, s1)
	saveTo(t, updated, New(alice, idp.Tokens{SID: "sid-1"}, short))

	for _, ix := range old.indexes(s1) {
		left, err := old.redis.client.PTTL(context.Background(), ix.key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if left < 12*time.Hour {
			t.Errorf("index %s lives %s more, want at least the 12h of the session in it", ix.key, left)
		}
	}
	// And the other way: the shorter lifetime's session still gets one.
	bob := testProfile()
	bob.Sub, bob.Email = "u-456", "bob@example.com"
	s2 := New(bob, idp.Tokens{}, short)
	saveTo(t, updated, s2)
	if left, err := old.redis.client.PTTL(context.Background(), updated.indexes(s2)[0].key).Result(); err != nil || left <= 0 || left > time.Hour+indexSlack {
		t.Errorf("a new index lives %s (%v), want its session's hour and the slack", left, err)
	}
}

func TestRedisDownIsAnErrorNotASession(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	st := replica(t, srv, testOptions(c))
	cookies := saveTo(t, st, New(testProfile(), idp.Tokens{}, testOptions(c)))
	flows := NewFlows(testOptions(c))
	flows.ShareUsedStates(st.Redis())

	srv.Stop()
	s, err := st.Load(request(cookies...))
	if s != nil || !errors.Is(err, ErrUnavailable) {
		t.Errorf("Load with Redis down = %v, %v; want no session and ErrUnavailable", s, err)
	}
	if err := st.Save(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), New(testProfile(), idp.Tokens{}, testOptions(c))); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Save with Redis down: %v, want ErrUnavailable", err)
	}
	if err := st.Ping(context.Background()); err == nil {
		t.Error("Ping with Redis down succeeded")
	}
	state := NewState()
	w := httptest.NewRecorder()
	if err := flows.Start(w, nil, LoginFlow, &idp.Flow{State: state, IdP: "company"}, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := flows.Finish(httptest.NewRecorder(), request(w.Result().Cookies()...), LoginFlow, state); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Finish with Redis down: %v, want ErrUnavailable (a state that cannot be marked used is refused)", err)
	}

	// Back without its data: the old session is simply gone, new ones work.
	srv.Start()
	if err := st.Ping(context.Background()); err != nil {
		t.Fatalf("Ping after Redis came back: %v", err)
	}
	if s := loadFrom(t, st, cookies); s != nil {
		t.Error("a session Redis lost is still there")
	}
	fresh := saveTo(t, st, New(testProfile(), idp.Tokens{}, testOptions(c)))
	if loadFrom(t, st, fresh) == nil {
		t.Error("a new session does not load after Redis came back")
	}
}

// flowsOnTwoReplicas are the login flows of two replicas that share their
// used states in one Redis; one is the first replica's store.
func flowsOnTwoReplicas(t *testing.T) (one *RedisStore, f1, f2 *Flows) {
	t.Helper()
	srv := redisserver.Start(t)
	c := newClock()
	one, two := replica(t, srv, testOptions(c)), replica(t, srv, testOptions(c))
	f1, f2 = NewFlows(testOptions(c)), NewFlows(testOptions(c))
	f1.ShareUsedStates(one.Redis())
	f2.ShareUsedStates(two.Redis())
	return one, f1, f2
}

func TestSharedUsedStatesAreSingleUseAcrossReplicas(t *testing.T) {
	_, f1, f2 := flowsOnTwoReplicas(t)

	state := NewState()
	w := httptest.NewRecorder()
	if err := f1.Start(w, nil, LoginFlow, &idp.Flow{State: state, IdP: "company"}, false); err != nil {
		t.Fatal(err)
	}
	cookies := w.Result().Cookies()
	if _, _, err := f2.Finish(httptest.NewRecorder(), request(cookies...), LoginFlow, state); err != nil {
		t.Fatalf("finishing on another replica: %v", err)
	}
	if _, _, err := f1.Finish(httptest.NewRecorder(), request(cookies...), LoginFlow, state); !errors.Is(err, ErrFlowReused) {
		t.Errorf("the same state on the first replica: %v, want ErrFlowReused", err)
	}
}

// A state marked used in Redis stays marked as long as its flow could
// still be finished, and a failed login's Release gives it back on every
// replica, as the memory set does for one.
func TestSharedUsedStatesLastTheFlowAndAreReleased(t *testing.T) {
	one, f1, f2 := flowsOnTwoReplicas(t)
	start := func() (string, []*http.Cookie) {
		state := NewState()
		w := httptest.NewRecorder()
		if err := f1.Start(w, nil, LoginFlow, &idp.Flow{State: state, IdP: "company"}, false); err != nil {
			t.Fatal(err)
		}
		return state, w.Result().Cookies()
	}

	state, cookies := start()
	if _, _, err := f1.Finish(httptest.NewRecorder(), request(cookies...), LoginFlow, state); err != nil {
		t.Fatal(err)
	}
	mark := one.redis.key("once", "state:"+state)
	if left, err := one.redis.client.PTTL(context.Background(), mark).Result(); err != nil || left < FlowLifetime-time.Minute {
		t.Errorf("the used state is marked for %s (%v), want about the flow's %s", left, err, FlowLifetime)
	}

	failed, cookies := start()
	_, released, err := f1.Finish(httptest.NewRecorder(), request(cookies...), LoginFlow, failed)
	if err != nil {
		t.Fatal(err)
	}
	if err := f1.Release(context.Background(), released); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f2.Finish(httptest.NewRecorder(), request(cookies...), LoginFlow, failed); err != nil {
		t.Errorf("a released state finished on another replica: %v, want the flow", err)
	}
	if _, _, err := f1.Finish(httptest.NewRecorder(), request(cookies...), LoginFlow, failed); !errors.Is(err, ErrFlowReused) {
		t.Errorf("the same state once more, not released: %v, want ErrFlowReused", err)
	}
}

// A session ends at its own expiry and at its creation plus the store's
// session.lifetime, whichever comes first: a reload that shortens the
// lifetime ends the longer-lived sessions made before it, and one that
// lengthens it does not lengthen them.
func TestSessionsEndAtTheEarlierOfTheirExpiryAndTheLifetime(t *testing.T) {
	c := newClock()
	srv := redisserver.Start(t)
	with := func(lifetime time.Duration) Options {
		o := testOptions(c)
		o.Lifetime, o.IdleTimeout = lifetime, 0
		return o
	}
	for _, st := range bothStores(t, srv) {
		t.Run(st.name, func(t *testing.T) {
			long, short := with(12*time.Hour), with(time.Hour)

			s := New(testProfile(), idp.Tokens{}, long)
			cookies := saveTo(t, st.make(long), s)
			c.Advance(time.Hour - time.Second)
			if loadFrom(t, st.make(short), cookies) == nil {
				t.Fatal("a session within the shortened lifetime does not open")
			}
			c.Advance(time.Second)
			if got := loadFrom(t, st.make(short), cookies); got != nil {
				t.Errorf("a session as old as the shortened lifetime opens (expires %s)", got.Expires.Sub(c.Now()))
			}

			s = New(testProfile(), idp.Tokens{}, short)
			cookies = saveTo(t, st.make(short), s)
			c.Advance(time.Hour - time.Second)
			if loadFrom(t, st.make(long), cookies) == nil {
				t.Fatal("a session before its expiry does not open after the lifetime was lengthened")
			}
			c.Advance(time.Second)
			if loadFrom(t, st.make(long), cookies) != nil {
				t.Error("a session at its expiry opens after the lifetime was lengthened")
			}
		})
	}
}

func TestRedisFailureCounts(t *testing.T) {
	srv := redisserver.Start(t)
	st := replica(t, srv, testOptions(newClock()))
	r, ctx := st.Redis(), context.Background()
	var last Attempt
	for i := 1; i <= 3; i++ {
		a, wait, err := r.TakeAttempt(ctx, "user:alice", 3, time.Minute)
		if err != nil || !a.Taken() || wait != 0 {
			t.Fatalf("attempt %d: taken %v, wait %s, %v; want taken", i, a.Taken(), wait, err)
		}
		last = a
	}
	if n, left, _ := r.Failures(ctx, "user:alice"); n != 3 || left <= 0 || left > time.Minute {
		t.Errorf("Failures = %d in a window of %s more, want 3 within a minute", n, left)
	}
	if a, wait, err := r.TakeAttempt(ctx, "user:alice", 3, time.Minute); err != nil || a.Taken() || wait <= 0 || wait > time.Minute {
		t.Errorf("a fourth attempt of 3: taken %v, wait %s, %v; want refused, with the window's rest to wait", a.Taken(), wait, err)
	}
	if n, _, _ := r.Failures(ctx, "user:alice"); n != 3 {
		t.Errorf("a refused attempt counted: Failures = %d, want 3", n)
	}
	if err := r.GiveBack(ctx, last); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := r.Failures(ctx, "user:alice"); n != 2 {
		t.Errorf("Failures after GiveBack = %d, want 2", n)
	}
	if err := r.ForgetFailures(ctx, "user:alice"); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := r.Failures(ctx, "user:alice"); n != 0 {
		t.Errorf("Failures after Forget = %d, want 0", n)
	}
	// The last failure given back ends the window.
	bob, _, _ := r.TakeAttempt(ctx, "user:bob", 3, time.Minute)
	r.GiveBack(ctx, bob)
	if n, left, _ := r.Failures(ctx, "user:bob"); n != 0 || left != 0 {
		t.Errorf("after the only failure was given back: %d in a window of %s more, want none", n, left)
	}
}

func TestRefreshOnceRunsOnOneReplica(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	replicas := []*RedisStore{replica(t, srv, testOptions(c)), replica(t, srv, testOptions(c)), replica(t, srv, testOptions(c))}
	s := New(testProfile(), idp.Tokens{RefreshToken: "rt-1"}, testOptions(c))
	saveTo(t, replicas[0], s)

	var runs atomic.Int64
	var wg sync.WaitGroup
	outcomes := make([]RefreshOutcome, 30)
	for i := range outcomes {
		wg.Go(func() {
			loaded, _ := replicas[i%3].get(context.Background(), s.ID)
			out, _, err := replicas[i%3].RefreshOnce(context.Background(), loaded, time.Minute, time.Second, func() RefreshOutcome {
				runs.Add(1)
				time.Sleep(100 * time.Millisecond) // the IdP's token endpoint
				next := *loaded
				next.Tokens.RefreshToken = "rt-2"
				return RefreshOutcome{Session: &next}
			})
			if err != nil {
				t.Error(err)
			}
			outcomes[i] = out
		})
	}
	wg.Wait()
	if runs.Load() != 1 {
		t.Errorf("refresh ran %d times, want once", runs.Load())
	}
	for i, out := range outcomes {
		if out.Session == nil || out.Session.Tokens.RefreshToken != "rt-2" {
			t.Errorf("request %d got %+v, want the rotated token", i, out)
		}
	}
}

// A replica that waits for another's refresh looks again within
// refreshPoll at first, for an IdP that answers in a few hundred ms, then
// less and less often, from some 2 s on no more often than every
// 3/4 refreshPollMax and never less often than refreshPollMax, each wait
// drawn at random so that replicas do not look together.
func TestRefreshPollBacksOffWithJitter(t *testing.T) {
	if w := refreshPollJitter(refreshPoll); w < refreshPoll*3/4 || w > refreshPoll {
		t.Errorf("first wait %v, want within [%v, %v]", w, refreshPoll*3/4, refreshPoll)
	}
	d, looks, slowest := refreshPoll, 0, time.Duration(0)
	for ; d < refreshPollMax && looks < 100; looks++ {
		slowest += d
		d = refreshPollGrowth(d)
	}
	if d != refreshPollMax || slowest > 2500*time.Millisecond {
		t.Errorf("the wait reaches %v after %d looks, %v at most, want %v within 2.5 s", d, looks, slowest, refreshPollMax)
	}
	if refreshPollGrowth(refreshPollMax) != refreshPollMax {
		t.Errorf("the wait grows past refreshPollMax: %v", refreshPollGrowth(refreshPollMax))
	}
	seen := map[time.Duration]bool{}
	for range 100 {
		w := refreshPollJitter(refreshPollMax)
		if w < refreshPollMax*3/4 || w > refreshPollMax {
			t.Fatalf("wait %v, want within [%v, %v]", w, refreshPollMax*3/4, refreshPollMax)
		}
		seen[w] = true
	}
	if len(seen) < 50 {
		t.Errorf("%d distinct waits of 100: replicas that began together would look together", len(seen))
	}
}

// A refresh given up on unanswered (Abandoned: the process stops while the
// IdP may still run it) leaves its lock for the lock's lifetime and stores
// no outcome: another replica does not spend the same refresh token until
// then, as when the replica had died mid-refresh. One that panics releases
// it, as before.
func TestRefreshOnceLeavesAnAbandonedRefreshLocked(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	one, two := replica(t, srv, testOptions(c)), replica(t, srv, testOptions(c))
	s := New(testProfile(), idp.Tokens{RefreshToken: "rt-1"}, testOptions(c))
	saveTo(t, one, s)
	loaded, _ := one.get(context.Background(), s.ID)

	out, ran, err := one.RefreshOnce(context.Background(), loaded, time.Minute, time.Second, func() RefreshOutcome {
		return RefreshOutcome{Session: loaded, Kept: true, Abandoned: true}
	})
	if err != nil || !ran || !out.Abandoned {
		t.Fatalf("the abandoned refresh: ran %v, %+v, %v; want it run here and returned as it was", ran, out, err)
	}
	lock := one.redis.key("refresh", "lock", s.ID, strconv.FormatInt(loaded.Refreshed.Unix(), 10))
	if ttl, err := one.redis.client.TTL(context.Background(), lock).Result(); err != nil || ttl <= 0 || ttl > refreshLockTTL {
		t.Errorf("the abandoned refresh's lock lives %v more (%v), want it left to lapse within %v", ttl, err, refreshLockTTL)
	}
	result := one.redis.key("refresh", "result", s.ID, strconv.FormatInt(loaded.Refreshed.Unix(), 10))
	if n, err := one.redis.client.Exists(context.Background(), result).Result(); err != nil || n != 0 {
		t.Errorf("an outcome stored for the abandoned refresh: %d (%v), want none", n, err)
	}
	// The other replica waits for an outcome that does not come, and never
	// runs the refresh itself meanwhile.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, ran, err = two.RefreshOnce(ctx, loaded, time.Minute, time.Second, func() RefreshOutcome {
		t.Error("another replica ran the refresh while the abandoned one's lock held")
		return RefreshOutcome{Kept: true}
	})
	if ran || !errors.Is(err, ErrUnavailable) {
		t.Errorf("another replica, while the abandoned refresh's lock holds: ran %v, %v; want it waiting until it gives up", ran, err)
	}

	// A refresh that panics is no abandoned one: its lock is released.
	c.Advance(time.Second)
	later := New(testProfile(), idp.Tokens{RefreshToken: "rt-1"}, testOptions(c))
	saveTo(t, one, later)
	later, _ = one.get(context.Background(), later.ID)
	func() {
		defer func() { recover() }()
		one.RefreshOnce(context.Background(), later, time.Minute, time.Second, func() RefreshOutcome { panic("a bug") })
	}()
	lock = one.redis.key("refresh", "lock", later.ID, strconv.FormatInt(later.Refreshed.Unix(), 10))
	if n, err := one.redis.client.Exists(context.Background(), lock).Result(); err != nil || n != 0 {
		t.Errorf("the lock of a refresh that panicked is still held: %d (%v)", n, err)
	}
}

func TestCookieStoreRevokeUserIsPerProcess(t *testing.T) {
	c := newClock()
	st := mustStore(t, testOptions(c))
	alice := testProfile()
	before := saved(t, st, New(alice, idp.Tokens{SID: "sid-1"}, testOptions(c)))
	other := saved(t, st, New(alice, idp.Tokens{SID: "sid-2"}, testOptions(c)))
	if _, err := st.RevokeUser(context.Background(), "company", User{Sub: alice.Sub}, "sid-1", c.Now()); err != nil {
		t.Fatal(err)
	}
	if load(t, st, request(before...)) != nil || load(t, st, request(other...)) == nil {
		t.Error("revoking sid-1 must end its session and no other")
	}
	st.RevokeUser(context.Background(), "company", User{Sub: alice.Sub}, "", c.Now())
	if load(t, st, request(other...)) != nil {
		t.Error("revoking the user must end every session created before")
	}
	c.Advance(time.Second)
	after := saved(t, st, New(alice, idp.Tokens{}, testOptions(c)))
	if load(t, st, request(after...)) == nil {
		t.Error("a login after the revocation must work")
	}
	if load(t, mustStore(t, testOptions(c)), request(before...)) == nil {
		t.Error("another process (replica) does not know of the revocation; the test expects it to still open")
	}
}

// wantIndexed checks that each index of s (by user, IdP session and email,
// under st's first key) names want sessions; after says when, for the error.
func wantIndexed(t *testing.T, st *RedisStore, s *Session, want int64, after string) {
	t.Helper()
	for _, ix := range st.indexes(s) {
		n, err := st.redis.client.ZCard(context.Background(), ix.key).Result()
		if err != nil {
			t.Fatalf("ZCARD %s: %v", ix.key, err)
		}
		if n != want {
			t.Errorf("index %s names %d sessions %s, want %d", ix.key, n, after, want)
		}
	}
}

// TestRedisIndexesDoNotGrowWithAnActiveUser: a user who logs in again before
// the last session ended (a script, a CI job with a fresh cookie jar) keeps
// the index sets alive; sessions that have ended or were logged out must
// leave them, or a set grows by one member a login for as long as the user
// stays active.
func TestRedisIndexesDoNotGrowWithAnActiveUser(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	o := testOptions(c)
	o.Lifetime = time.Hour
	st := replica(t, srv, o)
	alice := testProfile()
	var last *Session
	for range 50 {
		last = New(alice, idp.Tokens{SID: "sid-1"}, o)
		saveTo(t, st, last)
		c.Advance(61 * time.Minute) // the session before has ended
	}
	wantIndexed(t, st, last, 1, "after 50 logins one after the other (only the last can still be live)")

	c.Advance(-61 * time.Minute)
	cookies := saveTo(t, st, New(alice, idp.Tokens{SID: "sid-1"}, o))
	s := loadFrom(t, st, cookies)
	if err := st.Delete(httptest.NewRecorder(), request(cookies...), s); err != nil {
		t.Fatal(err)
	}
	wantIndexed(t, st, s, 1, "after a logout (only the one still live)")
}

// TestRedisKeysNameNoUser: key names show in SCAN, MONITOR, SLOWLOG, a
// backup and every console an operator points at Redis; the session itself
// is sealed, and its user's email, subject and IdP session ID must not sit
// beside it, neither in the clear nor as a plain hash, which anyone with a
// list of the company's addresses can compute and look for.
func TestRedisKeysNameNoUser(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	st := replica(t, srv, testOptions(c))
	rotated := replica(t, srv, testOptions(c, key(2), key(1)))
	alice, bob := testProfile(), testProfile()
	bob.Sub, bob.Email = "u-456", "Bob@Example.com"
	saveTo(t, st, New(alice, idp.Tokens{SID: "idp-session-1"}, testOptions(c)))
	saveTo(t, rotated, New(bob, idp.Tokens{SID: "idp-session-2"}, testOptions(c)))

	var secrets []string
	for _, v := range []string{
		alice.Email, alice.Sub, "idp-session-1", bob.Email, bob.Sub, "idp-session-2",
		"company\x00" + alice.Sub, "company\x00idp-session-1", "company\x00" + bob.Sub, "company\x00idp-session-2",
		strings.ToLower(bob.Email),
	} {
		sum := sha256.Sum256([]byte(v))
		secrets = append(secrets, v, hex.EncodeToString(sum[:]), hex.EncodeToString(sum[:16]), hex.EncodeToString(sum[:8]))
	}
	var keys []string
	iter := st.redis.client.Scan(context.Background(), 0, "*", 100).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if len(keys) < 8 { // two sessions and their three indexes each
		t.Fatalf("SCAN found %d keys, want the two sessions and their indexes: %q", len(keys), keys)
	}
	for _, k := range keys {
		for _, secret := range secrets {
			if strings.Contains(strings.ToLower(k), strings.ToLower(secret)) {
				t.Errorf("key %q names %q", k, secret)
			}
		}
	}
}

// TestRedisRevokeFindsSessionsOfOlderReplicas: during a rolling update older
// replicas index sessions in plain sets named in the clear; a logout handled
// by a newer replica must still end those.
func TestRedisRevokeFindsSessionsOfOlderReplicas(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	st := replica(t, srv, testOptions(c))
	ctx := context.Background()
	s := New(testProfile(), idp.Tokens{SID: "sid-1"}, testOptions(c))
	cookies := saveTo(t, st, s)
	for _, ix := range st.indexes(s) { // as an older replica indexed it
		st.redis.client.Del(ctx, ix.key)
		st.redis.client.SAdd(ctx, ix.legacy, s.ID)
	}
	if list, err := st.ListByEmail(ctx, s.Profile.Email); err != nil || len(list) != 1 {
		t.Errorf("ListByEmail = %+v, %v; want the session an older replica indexed", list, err)
	}
	if n, err := st.RevokeUser(ctx, "company", User{Sub: s.Profile.Sub}, "sid-1", c.Now()); err != nil || n != 1 || loadFrom(t, st, cookies) != nil {
		t.Errorf("RevokeUser = %d, %v; want 1 and the session gone", n, err)
	}
}

// TestRedisIndexesAcrossAKeyRotation: a rotation puts a new key first in
// session.keys and keeps the old one listed; the sessions indexed under the
// old first key live on, and every lookup (logout at the IdP by sid or by
// sub, revoke by email, list, logout) must still find them, beside those
// indexed under the new one.
func TestRedisIndexesAcrossAKeyRotation(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	o := testOptions(c)
	o.Lifetime = time.Hour
	rotatedOpts := testOptions(c, key(2), key(1))
	rotatedOpts.Lifetime = time.Hour
	before, rotated := replica(t, srv, o), replica(t, srv, rotatedOpts)
	ctx := context.Background()
	alice := testProfile()
	old := func(sid string) (*Session, []*http.Cookie) {
		s := New(alice, idp.Tokens{SID: sid}, o)
		return s, saveTo(t, before, s)
	}

	_, c1 := old("sid-1")
	if n, err := rotated.RevokeUser(ctx, "company", User{Sub: alice.Sub}, "sid-1", c.Now()); err != nil || n != 1 || loadFrom(t, rotated, c1) != nil {
		t.Errorf("back-channel logout by sid after the rotation: %d, %v; want 1 and the session gone", n, err)
	}
	_, c2 := old("sid-2")
	fresh := saveTo(t, rotated, New(alice, idp.Tokens{SID: "sid-3"}, rotatedOpts))
	if n, err := rotated.RevokeUser(ctx, "company", User{Sub: alice.Sub}, "", c.Now()); err != nil || n != 2 || loadFrom(t, rotated, c2) != nil || loadFrom(t, rotated, fresh) != nil {
		t.Errorf("back-channel logout by sub after the rotation: %d, %v; want the 2 made before and after it", n, err)
	}
	_, c3 := old("sid-4")
	if list, err := rotated.ListByEmail(ctx, alice.Email); err != nil || len(list) != 1 {
		t.Errorf("sessions list after the rotation: %+v, %v; want the one made before it", list, err)
	}
	if n, err := rotated.RevokeByEmail(ctx, alice.Email); err != nil || n != 1 || loadFrom(t, rotated, c3) != nil {
		t.Errorf("sessions revoke --user after the rotation: %d, %v; want 1 and the session gone", n, err)
	}

	// A logout after the rotation takes the session out of the sets it was
	// put in before.
	s5, c5 := old("sid-5")
	if err := rotated.Delete(httptest.NewRecorder(), request(c5...), loadFrom(t, rotated, c5)); err != nil {
		t.Fatal(err)
	}
	for _, ix := range before.indexes(s5) {
		if err := before.redis.client.ZScore(ctx, ix.key, s5.ID).Err(); !errors.Is(err, redis.Nil) {
			t.Errorf("index %s still names the session after its logout (%v)", ix.key, err)
		}
	}

	// Sessions that expired leave the old key's sets on the next login too.
	s6, _ := old("sid-6")
	c.Advance(61 * time.Minute)
	s7 := New(alice, idp.Tokens{SID: "sid-6"}, rotatedOpts)
	saveTo(t, rotated, s7)
	wantIndexed(t, before, s6, 0, "under the old key, all ended, after a login")
	wantIndexed(t, rotated, s7, 1, "under the new key after a login")
}

// TestRedisSessionsOfARemovedKey is what README "Reload without restart"
// says of removing a key from session.keys: the sessions it sealed no
// longer open, and their index entries, no longer read, expire with them;
// a session that was saved again since the rotation (a refresh) is sealed
// with the new key and must stay revocable.
func TestRedisSessionsOfARemovedKey(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	before := replica(t, srv, testOptions(c))
	rotated := replica(t, srv, testOptions(c, key(2), key(1)))
	removed := replica(t, srv, testOptions(c, key(2)))
	ctx := context.Background()
	alice := testProfile()
	idle := New(alice, idp.Tokens{SID: "sid-1"}, testOptions(c))
	idleCookies := saveTo(t, before, idle)
	refreshedCookies := saveTo(t, before, New(alice, idp.Tokens{SID: "sid-2"}, testOptions(c)))

	// A refresh after the rotation saves the session again.
	c.Advance(10 * time.Minute)
	refreshed := loadFrom(t, rotated, refreshedCookies)
	refreshed.Refreshed = c.Now()
	refreshedCookies = saveTo(t, rotated, refreshed)

	if loadFrom(t, removed, idleCookies) != nil {
		t.Error("a session sealed with a key no longer listed opens")
	}
	if loadFrom(t, removed, refreshedCookies) == nil {
		t.Fatal("a session saved again under the new key does not open")
	}
	if list, err := removed.ListByEmail(ctx, alice.Email); err != nil || len(list) != 1 || list[0].ID != refreshed.ID {
		t.Errorf("sessions list = %+v, %v; want only the session refreshed under the new key", list, err)
	}
	if n, err := removed.RevokeUser(ctx, "company", User{Sub: alice.Sub}, "sid-2", c.Now()); err != nil || n != 1 || loadFrom(t, removed, refreshedCookies) != nil {
		t.Errorf("back-channel logout by sid = %d, %v; want the refreshed session ended", n, err)
	}
	for _, ix := range before.indexes(idle) {
		if left, err := before.redis.client.PTTL(ctx, ix.key).Result(); err != nil || left <= 0 || left > testOptions(c).Lifetime+indexSlack {
			t.Errorf("the removed key's index %s lives %s more (%v), want no longer than its session", ix.key, left, err)
		}
	}
}

// roundTrips counts the commands and pipelines a client sends to Redis,
// each one round trip, but for a new connection's handshake (HELLO, CLIENT
// SETINFO), which go-redis sends through the hooks too.
type roundTrips struct{ n atomic.Int64 }

func (*roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "hello" {
			r.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return c.Name() == "client" }) {
			r.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// TestRedisIndexesTakeOneRoundTripWhateverTheKeys: each key in
// session.keys adds names to read at every lookup (a back-channel logout,
// a revoke) and to trim at every login and logout; they go in one pipeline,
// so a rotation does not make a logout at the IdP slower.
func TestRedisIndexesTakeOneRoundTripWhateverTheKeys(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	st := replica(t, srv, testOptions(c, key(3), key(2), key(1)))
	ctx := context.Background()
	var rt roundTrips
	st.redis.client.AddHook(&rt)
	s := New(testProfile(), idp.Tokens{SID: "sid-1"}, testOptions(c))
	for _, step := range []struct {
		name string
		run  func()
	}{
		{"indexing a login", func() { st.index(ctx, s, c.Now()) }},
		{"reading the sessions of a user", func() { st.indexed(ctx, []index{st.subIndex("company", s.Profile.Sub)}) }},
		{"taking a logout out of the indexes", func() { st.unindex(ctx, s) }},
	} {
		rt.n.Store(0)
		step.run()
		if n := rt.n.Load(); n != 1 {
			t.Errorf("%s with three session keys: %d round trips, want 1", step.name, n)
		}
	}
}

// TestRedisRevokeTakesThreeRoundTripsWhateverTheSessions: a back-channel
// logout is an IdP's request waiting on the answer, and a user with many
// sessions (a script that logs in often) must not make it one round trip
// a session.
func TestRedisRevokeTakesThreeRoundTripsWhateverTheSessions(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	before := replica(t, srv, testOptions(c))
	st := replica(t, srv, testOptions(c, key(2), key(1)))
	alice := testProfile()
	for i := range 10 {
		saveTo(t, []*RedisStore{before, st}[i%2], New(alice, idp.Tokens{}, testOptions(c)))
	}
	var rt roundTrips
	st.redis.client.AddHook(&rt)
	n, err := st.RevokeUser(context.Background(), "company", User{Sub: alice.Sub}, "", c.Now())
	if err != nil || n != 10 {
		t.Fatalf("RevokeUser = %d, %v; want 10", n, err)
	}
	// Read the indexes, end the sessions, drop them from the indexes.
	if got := rt.n.Load(); got != 3 {
		t.Errorf("revoking 10 sessions took %d round trips, want 3", got)
	}
}

// A user with hundreds of sessions (a script that logs in often) is listed
// in a few round trips, getBatch sessions each, with the same sessions as
// one read at a time would give: the live ones, oldest first, those that
// ended dropped from the index.
func TestListByEmailReadsSessionsInBatches(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	writer, st := replica(t, srv, testOptions(c)), replica(t, srv, testOptions(c))
	const made, endEvery = 350, 10
	const ended = made / endEvery
	var live []*Session
	for i := range made {
		s := New(testProfile(), idp.Tokens{}, testOptions(c))
		saveTo(t, writer, s)
		if i%endEvery == 0 {
			// Gone as an expired session goes, still in the index.
			if err := writer.redis.client.Del(context.Background(), writer.sessionKey(s.ID)).Err(); err != nil {
				t.Fatal(err)
			}
		} else {
			live = append(live, s)
		}
		c.Advance(time.Second)
	}
	trips := &roundTrips{}
	st.redis.client.AddHook(trips)
	ctx := context.Background()

	for _, want := range []int64{
		1 + (made+getBatch-1)/getBatch + 1,       // the index, the sessions, the ended ones dropped
		1 + (made-ended+getBatch-1)/getBatch + 0, // nothing left to drop
	} {
		trips.n.Store(0)
		list, err := st.ListByEmail(ctx, "alice@example.com")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d sessions listed in %d round trips", len(list), trips.n.Load())
		if n := trips.n.Load(); n != want {
			t.Errorf("%d round trips, want %d", n, want)
		}
		if len(list) != len(live) {
			t.Fatalf("%d sessions listed, want the %d live ones", len(list), len(live))
		}
		for i, s := range live {
			got := list[i]
			if got.ID != s.ID || got.IdP != s.Profile.IdP || got.Sub != s.Profile.Sub || got.Email != s.Profile.Email ||
				!got.Created.Equal(s.Created) || !got.Expires.Equal(s.Expires) || !got.LastSeen.Equal(s.LastSeen) {
				t.Fatalf("session %d listed as %+v, want %s created %s", i, got, s.ID, s.Created)
			}
		}
	}
}

// An attempt given back after its window ended (a login that took the
// last moments of one window and finished in the next) is not taken from
// the next window's count: that would give a client who times its own
// good logins to a window's end more attempts in the next.
func TestRedisGiveBackStaysInItsWindow(t *testing.T) {
	srv := redisserver.Start(t)
	st := replica(t, srv, testOptions(newClock()))
	r, ctx := st.Redis(), context.Background()
	const window = 300 * time.Millisecond
	first, _, err := r.TakeAttempt(ctx, "addr:x", 3, window)
	if err != nil || !first.Taken() {
		t.Fatalf("first attempt: %v, %v", first.Taken(), err)
	}
	for {
		if n, _, _ := r.Failures(ctx, "addr:x"); n == 0 {
			break // its window ended
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range 3 {
		if a, _, err := r.TakeAttempt(ctx, "addr:x", 3, window); err != nil || !a.Taken() {
			t.Fatalf("attempt %d of the next window: %v, %v", i+1, a.Taken(), err)
		}
	}
	if err := r.GiveBack(ctx, first); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := r.Failures(ctx, "addr:x"); n != 3 {
		t.Errorf("the next window's failures after the give-back of an earlier one's: %d, want 3", n)
	}
}

// Ended is known on every replica for a session any of them ended, for
// EndedKept, and for one still in Redis past its idle timeout; a session
// this Redis never had (replicas on different Redis servers) is not known
// to have ended: Unopened, as a cookie sealed with other keys.
func TestRedisStoreEndedIsKnownOnEveryReplica(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	o := testOptions(c)
	one, two := replica(t, srv, o), replica(t, srv, o)
	elsewhere := replica(t, redisserver.Start(t), o)
	for _, tc := range []struct {
		name  string
		setUp func() []*http.Cookie
		want  Absence
	}{
		{"no session cookie", func() []*http.Cookie { return nil }, NoCookie},
		{"a value that is not a session", func() []*http.Cookie {
			return []*http.Cookie{{Name: "portcullis", Value: "bm90IGEgc2Vzc2lvbg"}}
		}, Malformed},
		{"a session ID sealed with other keys", func() []*http.Cookie {
			return saveTo(t, replica(t, srv, testOptions(c, key(2))), New(testProfile(), idp.Tokens{}, o))
		}, Unopened},
		{"a session in another Redis", func() []*http.Cookie { return saveTo(t, elsewhere, New(testProfile(), idp.Tokens{}, o)) }, Unopened},
		{"signed out on the other replica", func() []*http.Cookie {
			cookies := saveTo(t, one, New(testProfile(), idp.Tokens{}, o))
			if err := two.Delete(httptest.NewRecorder(), request(cookies...), loadFrom(t, two, cookies)); err != nil {
				t.Fatal(err)
			}
			return cookies
		}, Ended},
		{"ended by a back-channel logout on the other replica", func() []*http.Cookie {
			p := testProfile()
			p.Sub = "u-backchannel"
			cookies := saveTo(t, one, New(p, idp.Tokens{}, o))
			if n, err := two.RevokeUser(context.Background(), p.IdP, User{Sub: p.Sub}, "", c.Now()); n != 1 || err != nil {
				t.Fatalf("RevokeUser: %d, %v", n, err)
			}
			return cookies
		}, Ended},
		{"idle too long, still in Redis", func() []*http.Cookie {
			cookies := saveTo(t, one, New(testProfile(), idp.Tokens{}, o))
			c.Advance(o.IdleTimeout + time.Second) // the fake clock: Redis's TTL has not run
			return cookies
		}, Ended},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why, err := one.Absent(request(tc.setUp()...))
			if err != nil || why != tc.want {
				t.Errorf("Absent = %v, %v; want %v", why, err, tc.want)
			}
		})
	}

	// The mark of an ended session lasts EndedKept, no longer.
	s := New(testProfile(), idp.Tokens{}, o)
	cookies := saveTo(t, one, s)
	if err := one.Delete(httptest.NewRecorder(), request(cookies...), s); err != nil {
		t.Fatal(err)
	}
	if ttl, err := one.redis.client.PTTL(context.Background(), one.endedKey(s.ID)).Result(); err != nil || ttl <= EndedKept-time.Minute || ttl > EndedKept {
		t.Errorf("the ended mark lives %s (%v), want %s", ttl, err, EndedKept)
	}
}

// A Redis at its maxmemory with noeviction refuses writes but still
// deletes: a logout, a back-channel logout or a revoke ends the sessions
// and says so, though the mark that tells Absent they ended (a write) is
// refused.
func TestRedisEndsSessionsWhenRedisIsFull(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	o := testOptions(c)
	st := replica(t, srv, o)
	ctx := context.Background()
	full := func(t *testing.T) {
		t.Helper()
		if err := st.redis.client.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.redis.client.ConfigSet(ctx, "maxmemory", "0") })
		if err := st.redis.client.Set(ctx, "test:probe", "x", 0).Err(); err == nil || !strings.Contains(err.Error(), "OOM") {
			t.Fatalf("a write to the full Redis: %v, want OOM", err)
		}
	}
	for _, tc := range []struct {
		name string
		end  func(s *Session, cookies []*http.Cookie) error
	}{
		{"logout", func(s *Session, cookies []*http.Cookie) error {
			return st.Delete(httptest.NewRecorder(), request(cookies...), s)
		}},
		{"back-channel logout", func(s *Session, _ []*http.Cookie) error {
			n, err := st.RevokeUser(ctx, s.Profile.IdP, User{Sub: s.Profile.Sub}, "", c.Now())
			if err == nil && n != 1 {
				t.Errorf("RevokeUser ended %d sessions, want 1", n)
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testProfile()
			p.Sub = "u-full-" + tc.name
			s := New(p, idp.Tokens{}, o)
			cookies := saveTo(t, st, s)
			full(t)
			if err := tc.end(s, cookies); err != nil {
				t.Errorf("ending a session at a full Redis: %v, want it ended", err)
			}
			if got := loadFrom(t, st, cookies); got != nil {
				t.Error("the session still opens")
			}
		})
	}
}

// storeKind makes a store of one kind from options.
type storeKind struct {
	name string
	make func(Options) Store
}

// bothStores are the cookie store and the Redis store, whose replicas
// share srv.
func bothStores(t *testing.T, srv *redisserver.Server) []storeKind {
	return []storeKind{
		{"cookie", func(o Options) Store { return mustStore(t, o) }},
		{"redis", func(o Options) Store { return replica(t, srv, o) }},
	}
}

// A session's cookie is opened once: the requests after it read the
// session from Redis and nothing more. Checking its seal every time (HMAC,
// AES, JSON) was 17 allocations and a fifth of the proxy's CPU on each
// request of a Redis session. Counted against what reading the session
// from Redis allocates on its own, so go-redis's share does not matter.
func TestRedisStoreOpensACookieOnce(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	st := replica(t, srv, testOptions(c))
	s := New(testProfile(), idp.Tokens{}, testOptions(c))
	r := request(saveTo(t, st, s)...)
	if got := loadFrom(t, st, r.Cookies()); got == nil || got.ID != s.ID {
		t.Fatalf("loaded %+v, want the session saved", got)
	}
	ctx := context.Background()
	load := testing.AllocsPerRun(50, func() { st.Load(r) })
	read := testing.AllocsPerRun(50, func() { st.get(ctx, s.ID) })
	if load > read+2 {
		t.Errorf("loading the session allocates %v times, reading it from Redis %v: its cookie is opened again at every request", load, read)
	}
	// Another value, another session: each opens to its own.
	other := New(testProfile(), idp.Tokens{}, testOptions(c))
	if got := loadFrom(t, st, saveTo(t, st, other)); got == nil || got.ID != other.ID {
		t.Fatalf("loaded %+v, want the other session", got)
	}
	if got := loadFrom(t, st, r.Cookies()); got == nil || got.ID != s.ID {
		t.Fatalf("loaded %+v, want the first session", got)
	}
}
