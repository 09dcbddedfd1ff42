package proxy

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
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
	k.account = accountKey("corp", "uid=dave,dc=example,dc=com")
	for range userFailureBurst {
		one.take(k, now)
	}
	if wait := two.wait(loginKeys{account: k.account}, now); wait <= 0 {
		t.Error("another replica lets dave's account try again at once")
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
