package proxy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// servedStack is a proxy served as Run serves it (serveOn, reloaded from
// its file), its sessions in Redis, its log kept.
type servedStack struct {
	live     *live
	path     string
	log      *process.Output
	adminLn  net.Listener
	stop     context.CancelFunc // SIGTERM
	returned chan error         // what serveOn returned
}

// shutdownReloadConfig keeps its sessions in REDIS_URL; its IdP never
// answers (not ready before a reload nor after it: no fresh problem).
const shutdownReloadConfig = `
server:
  public_url: https://cvat.example.com
upstream:
  url: http://127.0.0.1:1
session:
  keys: [` + testKey + `]
  store: redis
  redis: {url: REDIS_URL}
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: http://127.0.0.1:1/
      client_id: portcullis
`

func startServedStack(t *testing.T, redisURL string) *servedStack {
	t.Helper()
	s := &servedStack{log: &process.Output{}, returned: make(chan error, 1)}
	s.path = filepath.Join(t.TempDir(), "portcullis.yaml")
	s.write(t, redisURL)
	raw, _ := os.ReadFile(s.path)
	cfg, err := ParseConfig(raw, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if s.adminLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	log := slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := build(ctx, cfg, log, nil, nil)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	s.live = newLive(ctx, h, log)
	s.live.src = &configSource{path: s.path, getenv: os.Getenv}
	_, s.live.src.stamp, _ = s.live.src.read()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", s.log)
		}
	})
	go func() { s.returned <- s.live.serveOn(ctx, proxyLn, s.adminLn, time.Second) }()
	return s
}

func (s *servedStack) write(t *testing.T, redisURL string) {
	t.Helper()
	if err := os.WriteFile(s.path, []byte(strings.Replace(shutdownReloadConfig, "REDIS_URL", redisURL, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// awaitServeReturned waits, for a minute at most, for serveOn to return.
func (s *servedStack) awaitServeReturned(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.returned:
		return err
	case <-time.After(time.Minute):
		t.Fatal("serve had not returned after a minute")
		return nil
	}
}

// redisClosed reports whether h's Redis client was closed (not whether
// Redis answers: a client left open to a paused Redis times out instead).
func redisClosed(h *Handler) bool {
	return errors.Is(h.redis.Ping(context.Background()), redis.ErrClosed)
}

// inAwaitReady reports whether a goroutine is in live.awaitReady.
func inAwaitReady() bool {
	buf := make([]byte, 1<<20)
	return bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("proxy.(*live).awaitReady("))
}

// A reload that is waiting for its new Handler to be ready (its Redis,
// paused, does not answer the readiness check) when the shutdown begins
// is waited for, and the Handler it swapped in is the one whose Redis the
// shutdown closes; a reload asked for once the shutdown began builds
// nothing.
func TestShutdownClosesTheHandlerOfAReloadInFlight(t *testing.T) {
	first, second := redisserver.Start(t), redisserver.Start(t)
	s := startServedStack(t, first.URL)
	t.Cleanup(func() { s.stop() })
	prev := s.live.cur.Load()

	second.Pause()
	t.Cleanup(second.Resume)
	s.write(t, second.URL)
	reloaded := make(chan error, 1)
	go func() { reloaded <- s.live.reload("signal") }()
	waitFor(t, "the reload to wait for its new Handler to be ready", inAwaitReady)

	s.stop()
	if err := s.awaitServeReturned(t); err != nil {
		t.Fatalf("serve: %v", err)
	}
	select {
	case err := <-reloaded:
		if err != nil {
			t.Fatalf("the reload begun before the shutdown: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the reload had not returned after a minute")
	}
	next := s.live.cur.Load()
	if next == prev || next.redis == prev.redis {
		t.Fatal("the reload did not swap in a Handler with its own Redis client")
	}
	if !redisClosed(next) {
		t.Error("the Redis client of the Handler the reload swapped in is still open after the shutdown")
	}

	// Once the shutdown began, a reload builds nothing.
	s.write(t, first.URL)
	if err := s.live.reload("signal"); err == nil {
		t.Error("a reload after the shutdown answered no error")
	}
	if s.live.cur.Load() != next {
		t.Error("a reload after the shutdown swapped in a new Handler")
	}
	if !strings.Contains(s.log.String(), "config reload skipped: the process is stopping") {
		t.Error("a reload after the shutdown is not logged as skipped")
	}
}

// A listener that fails ends serve at once, closing what the graceful
// shutdown closes: the Redis client among them; a reload then builds
// nothing.
func TestServeClosesRedisWhenAListenerFails(t *testing.T) {
	srv := redisserver.Start(t)
	s := startServedStack(t, srv.URL)
	t.Cleanup(func() { s.stop() })
	h := s.live.cur.Load()
	s.adminLn.Close()
	if err := s.awaitServeReturned(t); err == nil {
		t.Fatal("serve returned no error after its admin listener closed")
	}
	if !redisClosed(h) {
		t.Error("the Redis client is still open after serve failed")
	}
	if err := s.live.reload("signal"); err == nil || s.live.cur.Load() != h {
		t.Errorf("a reload after serve failed: %v, swapped: %v", err, s.live.cur.Load() != h)
	}
}
