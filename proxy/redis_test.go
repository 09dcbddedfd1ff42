package proxy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/redis/go-redis/v9"
)

func TestFailedLoginLimitsHoldAcrossReplicas(t *testing.T) {
	srv := redisserver.Start(t)
	replica := func() *sharedLimits {
		r, err := session.DialRedis(session.RedisConfig{URL: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return newSharedLimits(r, newLoginLimits(), make([]byte, 32))
	}
	one, two := replica(), replica()
	now := time.Now()
	addr := netip.MustParseAddr("192.0.2.7")

	for range userFailureBurst {
		one.take(attemptKeys("corp", "Alice", addr), now)
	}
	if wait := two.wait(attemptKeys("corp", "alice ", netip.MustParseAddr("198.51.100.1")), now); wait <= 0 || wait > failureWindow {
		t.Errorf("another replica lets alice try again at once (wait %s); want up to %s", wait, failureWindow)
	}
	if wait := two.wait(attemptKeys("corp", "bob", netip.MustParseAddr("198.51.100.1")), now); wait != 0 {
		t.Errorf("bob waits %s for alice's failures", wait)
	}
	two.succeeded(attemptKeys("corp", "alice", netip.Addr{}), now)
	if wait := two.wait(attemptKeys("corp", "alice", netip.MustParseAddr("198.51.100.1")), now); wait != 0 {
		t.Errorf("after a success alice still waits %s on the replica that saw it", wait)
	}

	// The account the directory found is shared too.
	k := attemptKeys("corp", "dave", addr)
	k.account = accountLimitKey("uid=dave,dc=example,dc=com")
	for range userFailureBurst {
		one.take(k, now)
	}
	if wait := two.wait(loginKeys{account: k.account}, now); wait <= 0 {
		t.Error("another replica lets dave's account try again at once")
	}

	// During a rolling update from a build before accounts were counted by
	// their DN alone (453e932), replicas of both versions see each other's
	// failures of an account: the older named the count by IdP and DN.
	erin := "uid=erin,dc=example,dc=com"
	for range userFailureBurst {
		one.take(loginKeys{account: accountKey("corp", erin)}, now) // as the older build counted
	}
	if wait := two.wait(accountAttemptKeys("corp", erin), now); wait <= 0 {
		t.Error("a replica lets erin's account try again at once after an older replica counted its failures")
	}
	fred := "uid=fred,dc=example,dc=com"
	for range userFailureBurst {
		two.take(accountAttemptKeys("corp", fred), now)
	}
	if wait := one.wait(loginKeys{account: accountKey("corp", fred)}, now); wait <= 0 {
		t.Error("an older replica lets fred's account try again at once after a newer one counted its failures")
	}

	// Without Redis each replica still limits what it saw itself.
	for range userFailureBurst {
		one.take(attemptKeys("corp", "carol", addr), now)
	}
	srv.Stop()
	if wait := one.wait(attemptKeys("corp", "carol", addr), now); wait <= 0 {
		t.Error("with Redis down the replica that saw the failures lets carol try again")
	}
}

func TestReloadKeepsTheRedisConnection(t *testing.T) {
	srv := redisserver.Start(t)
	parse := func(prefix string) *Config {
		cfg, err := ParseConfig([]byte(withRedis("    url: "+srv.URL+"\n    key_prefix: '"+prefix+"'\n")), func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)
	first, err := New(ctx, parse("a:"), log)
	if err != nil {
		t.Fatal(err)
	}
	same, err := build(ctx, parse("a:"), log, first, nil)
	if err != nil {
		t.Fatal(err)
	}
	if same.redis != first.redis || same.providers["company"].impl != first.providers["company"].impl {
		t.Error("a reload with the same session.redis must keep the connection and the providers")
	}
	changed, err := build(ctx, parse("b:"), log, same, nil)
	if err != nil {
		t.Fatal(err)
	}
	if changed.redis == same.redis || changed.providers["company"].impl == same.providers["company"].impl {
		t.Error("a reload with another session.redis must connect anew and restart the providers (SAML records assertions there)")
	}
	if problems := changed.Ready(); problems["session store"] != "" {
		t.Errorf("session store not ready: %s", problems["session store"])
	}
}

// A client that goes away while the proxy reads its session from Redis
// (it closed its side of the connection, which cancels the request) is no
// sign that Redis failed: it is logged 499, as Basic auth's client that
// leaves, not answered 503 with "session store unavailable" at ERROR,
// which anyone could make the proxy log and count as decision internal
// by half-closing connections (FuzzServeHTTP found it).
func TestClientGoneWhileLoadingItsRedisSessionIsNoStoreFailure(t *testing.T) {
	srv := redisserver.Start(t)
	f := newFixtureOf(t, storeInRedis(testConfig, srv.URL))
	logs := &process.Output{}
	f.h.log = slog.New(slog.NewTextHandler(logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	resp, _, reached := f.do(t, request("GET", "/tasks", f.login(t, "bob@example.com")).WithContext(ctx))
	if reached || resp.StatusCode != statusClientClosed {
		t.Errorf("%d (reached the upstream: %v), want 499", resp.StatusCode, reached)
	}
	if strings.Contains(logs.String(), "session store unavailable") {
		t.Errorf("logged as Redis failing:\n%s", logs)
	}
	// The same at /userinfo, which answers a store failure itself.
	resp, _, _ = f.do(t, request("GET", "/.portcullis/userinfo", f.login(t, "bob@example.com")).WithContext(ctx))
	if resp.StatusCode != statusClientClosed {
		t.Errorf("/userinfo: %d, want 499", resp.StatusCode)
	}
}

// The failed-login counts replicas share in Redis, seen from a second
// replica whose memory has counted nothing: what it does, it does because
// of what Redis holds. Each case has a Redis of its own.
func TestSharedFailedLoginLimits(t *testing.T) {
	addr := netip.MustParseAddr("192.0.2.7")
	elsewhere := netip.MustParseAddr("198.51.100.1")
	// spray fails n different usernames from a, as a password sprayer does.
	spray := func(l *sharedLimits, a netip.Addr, n int, now time.Time) {
		for i := range n {
			l.take(attemptKeys("corp", fmt.Sprint("user", i), a), now)
		}
	}
	type env struct {
		srv     *redisserver.Server
		admin   *redis.Client
		replica func(sessionKey byte) *sharedLimits
		now     time.Time
	}
	// limitKey is the Redis key of a limit, as l names it.
	limitKey := func(l *sharedLimits, kind, key string) string {
		return session.DefaultRedisKeyPrefix + "lim:" + l.limitName(kind, key)
	}
	tests := []struct {
		name string
		run  func(t *testing.T, e env)
	}{
		{"an address's failures hold it back at every replica", func(t *testing.T, e env) {
			one, two := e.replica(0), e.replica(0)
			spray(one, addr, addrFailureBurst, e.now)
			if wait := two.wait(attemptKeys("corp", "newcomer", addr), e.now); wait <= 0 {
				t.Errorf("another replica lets the address that failed %d times try a new username at once", addrFailureBurst)
			}
			if wait := two.wait(attemptKeys("corp", "newcomer", elsewhere), e.now); wait != 0 {
				t.Errorf("another address waits %s for this one's failures", wait)
			}
		}},
		{"a success from an address gives back its own attempt, not the address's failures", func(t *testing.T, e env) {
			one, two := e.replica(0), e.replica(0)
			spray(one, addr, addrFailureBurst-1, e.now)
			k, _ := one.take(attemptKeys("corp", "mallory", addr), e.now)
			one.succeeded(k, e.now) // the sprayer's own account, signed in to between guesses
			if _, wait := two.take(attemptKeys("corp", "victim1", addr), e.now); wait != 0 {
				t.Fatalf("the address's last attempt refused after a success gave one back (wait %s)", wait)
			}
			if _, wait := two.take(attemptKeys("corp", "victim2", addr), e.now); wait <= 0 {
				t.Errorf("a success wiped the address's %d failures: one more guess let through", addrFailureBurst-1)
			}
		}},
		{"an attempt the address's limit refuses is not counted against the username", func(t *testing.T, e env) {
			one, two := e.replica(0), e.replica(0)
			spray(one, addr, addrFailureBurst, e.now)
			for i := range userFailureBurst {
				if _, wait := two.take(attemptKeys("corp", "alice", addr), e.now); wait <= 0 {
					t.Fatalf("attempt %d as alice from the held-back address let through", i+1)
				}
			}
			if _, wait := two.take(attemptKeys("corp", "alice", elsewhere), e.now); wait != 0 {
				t.Errorf("alice is held back (%s) by attempts her username never got: a held-back address locks out whom it names", wait)
			}
		}},
		{"a replica whose memory holds a username back says how long Redis holds it", func(t *testing.T, e env) {
			one := e.replica(0)
			for range userFailureBurst {
				one.take(attemptKeys("corp", "alice", addr), e.now)
			}
			// Memory earns an attempt back every failureWindow/userFailureBurst;
			// the shared window lasts failureWindow from the first failure.
			if _, wait := one.take(attemptKeys("corp", "alice", addr), e.now); wait <= failureWindow/2 {
				t.Errorf("Retry-After %s, want the shared window's %s", wait, failureWindow)
			}
		}},
		{"a refusal says how long the longest of its limits lasts", func(t *testing.T, e env) {
			one, two := e.replica(0), e.replica(0)
			for range userFailureBurst {
				one.take(attemptKeys("corp", "alice", elsewhere), e.now)
			}
			spray(one, addr, addrFailureBurst, e.now)
			// alice's window began four minutes before the address's.
			if err := e.admin.PExpire(t.Context(), limitKey(one, "user", userKey("corp", "alice")), time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			if _, wait := two.take(attemptKeys("corp", "alice", addr), e.now); wait <= 2*time.Minute {
				t.Errorf("Retry-After %s: the username's window, not the address's that lasts %s more", wait, failureWindow-time.Minute)
			}
		}},
		{"a window lasts failureWindow from the first failure, under names that hold no username or address", func(t *testing.T, e env) {
			one := e.replica(0)
			k := attemptKeys("corp", "alice", addr)
			k.account = accountLimitKey("uid=alice,dc=example,dc=com")
			one.take(k, e.now)
			keys, err := e.admin.Keys(t.Context(), "*").Result()
			if err != nil {
				t.Fatal(err)
			}
			// Each count, and the mark of the attempt counted in it.
			if len(keys) != 6 {
				t.Fatalf("Redis keys %q, want the username's, the account's and the address's, and a mark of the attempt in each", keys)
			}
			for _, key := range keys {
				if strings.Contains(key, "alice") || strings.Contains(key, addr.String()) {
					t.Errorf("Redis key %q names the user or the address", key)
				}
				ttl, err := e.admin.PTTL(t.Context(), key).Result()
				if err != nil {
					t.Fatal(err)
				}
				if ttl <= failureWindow-30*time.Second || ttl > failureWindow {
					t.Errorf("%s lives %s, want %s", key, ttl, failureWindow)
				}
			}
		}},
		{"a success leaves nothing behind: its counts are forgotten and given back, with their attempts' marks", func(t *testing.T, e env) {
			one := e.replica(0)
			k := attemptKeys("corp", "alice", addr)
			k.account = accountLimitKey("uid=alice,dc=example,dc=com")
			k, _ = one.take(k, e.now)
			one.succeeded(k, e.now)
			if keys, err := e.admin.Keys(t.Context(), "*").Result(); err != nil || len(keys) != 0 {
				t.Errorf("Redis keys %q, %v; want none", keys, err)
			}
		}},
		{"the names of the counts are keyed by the session key, so that no one reading Redis can hash every address to find them", func(t *testing.T, e env) {
			one, other := e.replica(0), e.replica(1)
			if a, b := limitKey(one, "addr", addrKey(addr)), limitKey(other, "addr", addrKey(addr)); a == b {
				t.Errorf("the address's key is %s under either session key", a)
			}
		}},
		{"with Redis down each replica limits what it sees itself, and no more", func(t *testing.T, e env) {
			one := e.replica(0)
			e.srv.Stop()
			for i := range userFailureBurst {
				if _, wait := one.take(attemptKeys("corp", "erin", addr), e.now); wait != 0 {
					t.Fatalf("attempt %d while Redis is down refused (wait %s): an outage of Redis locks everyone out", i+1, wait)
				}
			}
			if _, wait := one.take(attemptKeys("corp", "erin", addr), e.now); wait <= 0 {
				t.Errorf("attempt %d while Redis is down let through", userFailureBurst+1)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The replicas are the README's ACL user: whatever the limits
			// write, that user may.
			srv := redisserver.StartWith(t, redisserver.Options{Args: append(aclUser(redisACL), "--user", "admin", "on", ">adm", "~*", "+@all")})
			admin := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "admin", Password: "adm"})
			t.Cleanup(func() { admin.Close() })
			replica := func(sessionKey byte) *sharedLimits {
				r, err := session.DialRedis(session.RedisConfig{URL: "redis://portcullis:pw@" + srv.Addr + "/0"})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close() })
				return newSharedLimits(r, newLoginLimits(), bytes.Repeat([]byte{sessionKey}, 32))
			}
			tc.run(t, env{srv: srv, admin: admin, replica: replica, now: time.Now()})
		})
	}
}
