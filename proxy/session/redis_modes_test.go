package session

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/redis/go-redis/v9"
)

// modeReplica is one proxy's Redis store on the Redis that c describes.
func modeReplica(t *testing.T, c RedisConfig, o Options) *RedisStore {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	r, err := DialRedis(c)
	if err != nil {
		t.Fatalf("DialRedis: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	st, err := NewRedisStore(o, r)
	if err != nil {
		t.Fatalf("NewRedisStore: %v", err)
	}
	return st
}

// TestRedisStoreOnSentinelAndCluster runs the store's shared behaviour on a
// master found through a real Sentinel and on a real 3-master Cluster, where
// one session's keys (session hash, index sets) land on different slots.
func TestRedisStoreOnSentinelAndCluster(t *testing.T) {
	modes := []struct {
		name    string
		cluster bool
		config  func(t *testing.T) RedisConfig
	}{
		{"sentinel finds the master", false, func(t *testing.T) RedisConfig {
			master, sentinels := redisserver.StartSentinel(t)
			return RedisConfig{Sentinel: RedisSentinel{MasterName: master, Addrs: sentinels}, KeyPrefix: "test:"}
		}},
		{"cluster of three masters", true, func(t *testing.T) RedisConfig {
			return RedisConfig{ClusterAddrs: redisserver.StartCluster(t, 3), KeyPrefix: "test:"}
		}},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			cfg := mode.config(t)
			c := newClock()
			one, two := modeReplica(t, cfg, testOptions(c)), modeReplica(t, cfg, testOptions(c))
			ctx := context.Background()

			t.Run("ping answers", func(t *testing.T) {
				for i, st := range []*RedisStore{one, two} {
					if err := st.Ping(ctx); err != nil {
						t.Errorf("replica %d: Ping: %v", i+1, err)
					}
				}
			})

			t.Run("a session saved on one replica loads on the other and a delete ends it there", func(t *testing.T) {
				s := New(testProfile(), idp.Tokens{RefreshToken: "rt", SID: "idp-session-1"}, testOptions(c))
				cookies := saveTo(t, one, s)
				got := loadFrom(t, two, cookies)
				if got == nil || got.ID != s.ID || got.Profile.Email != "alice@example.com" || got.Tokens.RefreshToken != "rt" {
					t.Fatalf("replica two loaded %+v, want the session replica one saved", got)
				}
				if err := two.Delete(httptest.NewRecorder(), request(cookies...), got); err != nil {
					t.Fatalf("Delete: %v", err)
				}
				if loadFrom(t, one, cookies) != nil {
					t.Error("replica one still has the session replica two deleted")
				}
			})

			t.Run("index operations find and end a user's sessions across slots and keys", func(t *testing.T) {
				// A replica whose session.keys were rotated: its lookups
				// read the sets named under both keys, which lie in other
				// slots than each other.
				rotated := modeReplica(t, cfg, testOptions(c, key(2), key(1)))
				carol := testProfile()
				carol.Sub, carol.Email = "u-carol", "carol@example.com"
				// Several sessions, each with its own sid index, so that the
				// session hashes and index sets spread over the slots; half
				// indexed before the rotation, half after.
				var all [][]*http.Cookie
				for i := range 6 {
					s := New(carol, idp.Tokens{SID: fmt.Sprintf("carol-sid-%d", i)}, testOptions(c))
					all = append(all, saveTo(t, []*RedisStore{one, rotated}[i%2], s))
				}
				if mode.cluster {
					// The test means something only when one user's keys
					// are not all in one slot.
					s := New(carol, idp.Tokens{SID: "carol-sid-0"}, testOptions(c))
					keys := []string{one.sessionKey(s.ID)}
					for _, ix := range rotated.indexes(s) {
						keys = append(keys, ix.sorted()...)
					}
					slots := map[int64]bool{}
					for _, k := range keys {
						slot, err := one.redis.client.ClusterKeySlot(ctx, k).Result()
						if err != nil {
							t.Fatalf("CLUSTER KEYSLOT %s: %v", k, err)
						}
						slots[slot] = true
					}
					if len(slots) < 2 {
						t.Fatalf("keys %q share one slot; the test needs them spread", keys)
					}
				}
				list, err := rotated.ListByEmail(ctx, "Carol@Example.com")
				if err != nil || len(list) != 6 {
					t.Fatalf("ListByEmail = %d sessions, %v; want 6", len(list), err)
				}
				if n, err := rotated.RevokeUser(ctx, "company", User{Sub: carol.Sub}, "carol-sid-0", c.Now()); err != nil || n != 1 {
					t.Fatalf("RevokeUser by sid = %d, %v; want 1", n, err)
				}
				if loadFrom(t, rotated, all[0]) != nil || loadFrom(t, rotated, all[1]) == nil {
					t.Error("revoking carol-sid-0 must end that IdP session's session only")
				}
				if n, err := rotated.RevokeByEmail(ctx, "carol@example.com"); err != nil || n != 5 {
					t.Fatalf("RevokeByEmail = %d, %v; want the 5 left", n, err)
				}
				for i, cs := range all {
					if loadFrom(t, rotated, cs) != nil {
						t.Errorf("session %d outlived RevokeByEmail", i)
					}
				}
				if list, err := rotated.ListByEmail(ctx, "carol@example.com"); err != nil || len(list) != 0 {
					t.Errorf("ListByEmail after revoke = %+v, %v; want none", list, err)
				}
				dave := testProfile()
				dave.Sub, dave.Email = "u-dave", "dave@example.com"
				d := saveTo(t, two, New(dave, idp.Tokens{}, testOptions(c)))
				if n, err := rotated.RevokeUser(ctx, "company", User{Sub: dave.Sub}, "", c.Now()); err != nil || n != 1 || loadFrom(t, two, d) != nil {
					t.Errorf("RevokeUser by sub = %d, %v; want 1 and the session gone", n, err)
				}
				// A logout on the rotated replica ends a session indexed
				// before the rotation, and takes it out of its sets.
				s := New(dave, idp.Tokens{SID: "dave-sid"}, testOptions(c))
				cs := saveTo(t, one, s)
				if err := rotated.Delete(httptest.NewRecorder(), request(cs...), loadFrom(t, rotated, cs)); err != nil {
					t.Fatalf("Delete: %v", err)
				}
				if list, err := rotated.ListByEmail(ctx, dave.Email); err != nil || len(list) != 0 {
					t.Errorf("ListByEmail after the logout = %+v, %v; want none", list, err)
				}
				wantIndexed(t, one, s, 0, "after the logout of its only one")
			})

			t.Run("marks and failure counts are shared", func(t *testing.T) {
				until := c.Now().Add(time.Minute)
				mark, first, err := one.Redis().Claim(ctx, "state-1", until)
				if err != nil || !first {
					t.Fatalf("first Claim = %v, %v; want true", first, err)
				}
				if first, err := two.Redis().MarkOnce(ctx, "state-1", until); err != nil || first {
					t.Errorf("MarkOnce on the other replica = %v, %v; want false", first, err)
				}
				if err := one.Redis().Unmark(ctx, mark); err != nil {
					t.Fatal(err)
				}
				if first, err := two.Redis().MarkOnce(ctx, "state-1", until); err != nil || !first {
					t.Errorf("MarkOnce on the other replica after the Unmark = %v, %v; want true", first, err)
				}
				var taken []Attempt
				for i := 1; i <= 2; i++ {
					a, _, err := []*RedisStore{one, two}[i-1].Redis().TakeAttempt(ctx, "user:carol", 2, time.Minute)
					if err != nil || !a.Taken() {
						t.Fatalf("TakeAttempt %d = %v, %v", i, a.Taken(), err)
					}
					taken = append(taken, a)
				}
				if n, ttl, err := one.Redis().Failures(ctx, "user:carol"); err != nil || n != 2 || ttl <= 0 {
					t.Errorf("Failures = %d, %s, %v; want 2 in a running window", n, ttl, err)
				}
				if a, wait, err := two.Redis().TakeAttempt(ctx, "user:carol", 2, time.Minute); err != nil || a.Taken() || wait <= 0 {
					t.Errorf("a third TakeAttempt of 2 = %v, %s, %v; want refused with a wait", a.Taken(), wait, err)
				}
				// Each attempt's mark lives beside its count (a Cluster: on its node).
				if err := two.Redis().GiveBack(ctx, taken[1]); err != nil {
					t.Errorf("GiveBack: %v", err)
				}
				if n, _, err := one.Redis().Failures(ctx, "user:carol"); err != nil || n != 1 {
					t.Errorf("Failures after a give-back = %d, %v; want 1", n, err)
				}
				if err := one.Redis().ForgetFailures(ctx, "user:carol", taken[0]); err != nil {
					t.Errorf("ForgetFailures: %v", err)
				}
			})

			t.Run("a refresh runs on one replica and the other gets its outcome", func(t *testing.T) {
				s := New(testProfile(), idp.Tokens{RefreshToken: "rt-1"}, testOptions(c))
				saveTo(t, one, s)
				loaded, err := one.get(ctx, s.ID)
				if err != nil || loaded == nil {
					t.Fatalf("get: %v, %v", loaded, err)
				}
				rotate := func() RefreshOutcome {
					next := *loaded
					next.Tokens.RefreshToken = "rt-2"
					return RefreshOutcome{Session: &next}
				}
				if _, ran, err := one.RefreshOnce(ctx, loaded, time.Minute, time.Second, rotate); err != nil || !ran {
					t.Fatalf("first RefreshOnce: ran %v, %v", ran, err)
				}
				out, ran, err := two.RefreshOnce(ctx, loaded, time.Minute, time.Second, rotate)
				if err != nil || ran || out.Session == nil || out.Session.Tokens.RefreshToken != "rt-2" {
					t.Errorf("second RefreshOnce: ran %v, %+v, %v; want the first one's outcome", ran, out, err)
				}
			})

			if !mode.cluster {
				return
			}
			t.Run("a session whose slot moves to another master is found while it moves (ASK) and after (MOVED)", func(t *testing.T) {
				erin := testProfile()
				erin.Sub, erin.Email = "u-erin", "erin@example.com"
				s := New(erin, idp.Tokens{}, testOptions(c))
				cookies := saveTo(t, one, s)
				k := one.sessionKey(s.ID)
				slot, err := one.redis.client.ClusterKeySlot(ctx, k).Result()
				if err != nil {
					t.Fatal(err)
				}
				from := redisserver.SlotOwner(t, cfg.ClusterAddrs, int(slot))
				to := cfg.ClusterAddrs[0]
				if to == from {
					to = cfg.ClusterAddrs[1]
				}
				// The old owner, asked directly, tells which redirection
				// the replicas' clients, whose slot maps still name it, get.
				direct := redis.NewClient(&redis.Options{Addr: from})
				t.Cleanup(func() { direct.Close() })
				redirect := func() string {
					err := direct.HGet(ctx, k, "d").Err()
					if err == nil {
						return ""
					}
					kind, _, _ := strings.Cut(err.Error(), " ")
					return kind
				}
				redisserver.MoveSlot(t, cfg.ClusterAddrs, int(slot), to, func() {
					if got := redirect(); got != "ASK" {
						t.Fatalf("the old owner answers %q for the session in the slot being moved; want ASK", got)
					}
					loaded := loadFrom(t, two, cookies)
					if loaded == nil || loaded.ID != s.ID {
						t.Fatalf("while its slot moves, replica two loaded %+v; want the session", loaded)
					}
					// Saving it again (a refresh) runs the save script
					// where the session now is.
					loaded.Tokens.RefreshToken = "rt-while-moving"
					saveTo(t, two, loaded)
				})
				if got := redirect(); got != "MOVED" {
					t.Fatalf("the old owner answers %q for the session after its slot moved; want MOVED", got)
				}
				if got := loadFrom(t, one, cookies); got == nil || got.Tokens.RefreshToken != "rt-while-moving" {
					t.Fatalf("after the move replica one loaded %+v; want the session as saved during the move", got)
				}
				if n, err := two.RevokeByEmail(ctx, erin.Email); err != nil || n != 1 {
					t.Fatalf("RevokeByEmail after the move = %d, %v; want 1", n, err)
				}
				if loadFrom(t, one, cookies) != nil {
					t.Error("the session outlived its revoke after its slot moved")
				}
			})
		})
	}
}

// TestSentinelWithACL: sentinels whose ACL admits only one user (their
// default user off) are reached as sentinel.username with
// sentinel.password; a password alone is taken for the default user's and
// refused, so Ping tells the two apart.
func TestSentinelWithACL(t *testing.T) {
	master, sentinels := redisserver.StartSentinelWithACL(t, redisserver.SentinelACL{User: "portcullis-sentinel", Password: "s3ntinel-pw"})
	for _, tc := range []struct {
		name     string
		sentinel RedisSentinel
		ok       bool
	}{
		{"the ACL user with its password is let in", RedisSentinel{Username: "portcullis-sentinel", Password: "s3ntinel-pw"}, true},
		{"the password alone is refused", RedisSentinel{Password: "s3ntinel-pw"}, false},
		{"another user is refused", RedisSentinel{Username: "someone", Password: "s3ntinel-pw"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.sentinel
			s.MasterName, s.Addrs = master, sentinels
			c := RedisConfig{Sentinel: s, KeyPrefix: "test:"}
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			r, err := DialRedis(c)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			err = r.Ping(context.Background())
			if tc.ok && err != nil {
				t.Errorf("Ping: %v, want the master found through the sentinel", err)
			}
			if !tc.ok && err == nil {
				t.Error("Ping succeeded; want the sentinel to refuse")
			}
		})
	}
}

// TestUnreachableRedisFailsFast: with nothing listening, a request must get
// its 503 once the few dials the retries configured allow have failed, in
// every mode, not wait out the operation timeout while go-redis keeps
// dialling (5 dials 100 ms apart by default: about a second with a URL or a
// Cluster, the whole 3 s with Sentinel, which asks each sentinel, then the
// master). Counted, not timed: the sentinel mode's 16 dials take about
// 600 ms of waits between them, which a starved CPU stretches towards any
// bound on the time.
func TestUnreachableRedisFailsFast(t *testing.T) {
	nowhere := "127.0.0.1:1"
	// MaxRetries 1: a command is sent at most twice, each time on a
	// connection dialled redisDialerRetries times at most.
	perCommand := int64(2 * redisDialerRetries)
	for _, tc := range []struct {
		name  string
		c     RedisConfig
		dials int64
	}{
		{"url", RedisConfig{URL: "redis://" + nowhere + "/0"}, perCommand},
		// Each dial of the master asks the sentinel first, a command of
		// its own.
		{"sentinel", RedisConfig{Sentinel: RedisSentinel{MasterName: "mymaster", Addrs: []string{nowhere}}}, perCommand * perCommand},
		{"cluster", RedisConfig{ClusterAddrs: []string{nowhere}}, perCommand},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := DialRedis(tc.c)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			start := time.Now()
			_, err = r.MarkOnce(context.Background(), "x", time.Now().Add(time.Minute))
			dials := r.handshakes.dials.Load()
			t.Logf("%d dials, %v", dials, time.Since(start).Round(time.Millisecond))
			if !errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("MarkOnce = %v; want ErrUnavailable once the dials failed, not at the operation's deadline", err)
			}
			if dials > tc.dials {
				t.Errorf("%d dials for one command, want at most %d", dials, tc.dials)
			}
		})
	}
}

// TestRedisClusterFailover moves a session's slot to its master's replica on
// a real Cluster whose masters each have one: first by CLUSTER FAILOVER, as
// an operator does before maintenance, then by killing the new master with
// SIGKILL and letting the cluster promote its replica. Both times the
// proxies' clients learnt the slot map before the failover, so they first
// ask the old master.
func TestRedisClusterFailover(t *testing.T) {
	rc := redisserver.StartClusterWithReplicas(t, 3)
	cfg := RedisConfig{ClusterAddrs: rc.Addrs, KeyPrefix: "test:"}
	c := newClock()
	one, two := modeReplica(t, cfg, testOptions(c)), modeReplica(t, cfg, testOptions(c))
	ctx := context.Background()
	frank := testProfile()
	frank.Sub, frank.Email = "u-frank", "frank@example.com"
	s := New(frank, idp.Tokens{RefreshToken: "rt-1"}, testOptions(c))
	cookies := saveTo(t, one, s)
	if got := loadFrom(t, two, cookies); got == nil || got.ID != s.ID {
		t.Fatalf("replica two loaded %+v before the failover; want the session", got)
	}
	slot, err := one.redis.client.ClusterKeySlot(ctx, one.sessionKey(s.ID)).Result()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a manual failover: the session loads, saves and is revoked on clients that ask the old master", func(t *testing.T) {
		master := rc.SlotOwner(t, int(slot))
		replica := rc.ReplicaOf(t, master)
		rc.Failover(t, replica)
		if owner := rc.SlotOwner(t, int(slot)); owner != replica {
			t.Fatalf("after CLUSTER FAILOVER the session's slot is served by %s; want the replica %s", owner, replica)
		}
		// The old master, which the clients' slot maps still name, sends
		// them on to the new one.
		direct := redis.NewClient(&redis.Options{Addr: master})
		t.Cleanup(func() { direct.Close() })
		if err := direct.HGet(ctx, one.sessionKey(s.ID), "d").Err(); err == nil || !strings.HasPrefix(err.Error(), "MOVED ") {
			t.Fatalf("the old master answers %v for the session after the failover; want MOVED", err)
		}
		got := loadFrom(t, two, cookies)
		if got == nil || got.ID != s.ID || got.Tokens.RefreshToken != "rt-1" {
			t.Fatalf("after the failover replica two loaded %+v; want the session", got)
		}
		got.Tokens.RefreshToken = "rt-2"
		saveTo(t, two, got)
		if got := loadFrom(t, one, cookies); got == nil || got.Tokens.RefreshToken != "rt-2" {
			t.Fatalf("after the failover replica one loaded %+v; want the session as replica two saved it", got)
		}
		if n, err := one.RevokeByEmail(ctx, frank.Email); err != nil || n != 1 {
			t.Fatalf("RevokeByEmail after the failover = %d, %v; want 1", n, err)
		}
		if loadFrom(t, two, cookies) != nil {
			t.Error("the session outlived its revoke after the failover")
		}
	})

	t.Run("the master killed: errors until its replica is promoted, then the same session", func(t *testing.T) {
		s := New(frank, idp.Tokens{RefreshToken: "rt-3"}, testOptions(c))
		cookies := saveTo(t, one, s)
		if got := loadFrom(t, two, cookies); got == nil {
			t.Fatal("replica two does not find the session before the kill")
		}
		slot, err := one.redis.client.ClusterKeySlot(ctx, one.sessionKey(s.ID)).Result()
		if err != nil {
			t.Fatal(err)
		}
		master := rc.SlotOwner(t, int(slot))
		replica := rc.ReplicaOf(t, master)
		rc.WaitReplicated(t, master)
		rc.Kill(master)
		killed := time.Now()

		var promotedAt, backAt, slowest time.Duration
		failed := 0
		for {
			// The cluster promotes the replica about 2 s after the kill,
			// and go-redis learns of it when it reads the slot map again.
			// Generous bounds: a loaded machine is slow at both.
			if promotedAt != 0 && time.Since(killed)-promotedAt > 10*time.Second {
				t.Fatalf("the session did not load for 10 s after the replica was promoted (%s after the kill); %d loads failed",
					promotedAt.Round(10*time.Millisecond), failed)
			}
			if time.Since(killed) > 30*time.Second {
				t.Fatalf("the replica was not promoted within 30 s of the kill (%d loads failed)", failed)
			}
			asked := time.Now()
			got, err := two.Load(request(cookies...))
			took := time.Since(asked)
			if promotedAt == 0 && rc.Promoted(replica) {
				promotedAt = time.Since(killed)
			}
			if err == nil {
				if got == nil || got.ID != s.ID || got.Tokens.RefreshToken != "rt-3" {
					t.Fatalf("after the kill replica two loaded %+v; want the session (never none: it is not lost)", got)
				}
				if !rc.Promoted(replica) {
					t.Fatal("the session loaded before the replica was promoted, with its master dead")
				}
				backAt = time.Since(killed)
				break
			}
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Load with the master dead: %v; want ErrUnavailable (a 503)", err)
			}
			failed++
			slowest = max(slowest, took)
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("master killed: replica promoted within %s, session loaded again after %s; %d loads failed, the slowest in %s",
			promotedAt.Round(10*time.Millisecond), backAt.Round(10*time.Millisecond), failed, slowest.Round(time.Millisecond))
		if failed == 0 {
			t.Error("no load failed with the session's master dead")
		}
		got := loadFrom(t, one, cookies)
		if got == nil || got.ID != s.ID {
			t.Fatalf("after the promotion replica one loaded %+v; want the session", got)
		}
		got.Tokens.RefreshToken = "rt-4"
		saveTo(t, one, got)
		if got := loadFrom(t, two, cookies); got == nil || got.Tokens.RefreshToken != "rt-4" {
			t.Fatalf("after the promotion replica two loaded %+v; want the session as replica one saved it", got)
		}
		if n, err := two.RevokeByEmail(ctx, frank.Email); err != nil || n != 1 {
			t.Fatalf("RevokeByEmail after the promotion = %d, %v; want 1", n, err)
		}
		if loadFrom(t, one, cookies) != nil {
			t.Error("the session outlived its revoke after the promotion")
		}
	})
}
