package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/redis/go-redis/v9"
)

// TestRedisDialWaitsForABusyRedis: Redis shakes hands in TLS on its one
// main thread, so a Redis busy with a slow command (or with the handshakes
// of every replica's pool after a failover) answers a handshake late. The
// dialer must wait for it as go-redis's own did (the dial timeout), not
// give up and come back with another handshake for Redis to do.
func TestRedisDialWaitsForABusyRedis(t *testing.T) {
	srv := redisserver.StartWith(t, redisserver.Options{TLS: true, Args: []string{"--enable-debug-command", "yes"}})
	c := RedisConfig{URL: srv.URL, TLS: RedisTLS{CAFile: srv.CAFile}}
	tc, err := c.tlsConfig()
	if err != nil {
		t.Fatal(err)
	}
	busy := redis.NewClient(&redis.Options{Addr: srv.Addr, TLSConfig: caTLS(t, srv.CAFile)})
	defer busy.Close()
	if err := busy.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("ping: %v", err)
	}
	slept := make(chan error, 1)
	go func() { slept <- busy.Do(context.Background(), "DEBUG", "SLEEP", "1").Err() }()
	// Let Redis take the DEBUG SLEEP before the dial's ClientHello comes.
	time.Sleep(100 * time.Millisecond)

	hs := &handshakes{}
	conn, err := redisDialer(tc, hs)(context.Background(), "tcp", srv.Addr)
	if err != nil {
		t.Errorf("dial a Redis busy for a second: %v", err)
	} else {
		conn.Close()
	}
	if last := hs.last.Load(); last != nil {
		t.Errorf("a handshake that succeeded left a failed one recorded: %v", last)
	}
	if err := <-slept; err != nil {
		t.Fatalf("DEBUG SLEEP: %v", err)
	}
}

// TestRedisHandshakeTimeoutMayBeABusyRedis: a handshake that timed out may
// be a port that speaks plain Redis or a Redis too busy to answer; its hint
// must not send the operator to the URL's scheme alone. And a command that
// only timed out, after such a handshake, is explained by it.
func TestRedisHandshakeTimeoutMayBeABusyRedis(t *testing.T) {
	failed := &errTLSHandshake{addr: "redis:6380", err: context.DeadlineExceeded}
	if f := FaultOf(failed); f.Reason != "redis_tls_mismatch" || !strings.Contains(f.Hint, "too busy") {
		t.Errorf("FaultOf(%v) = %+v; want redis_tls_mismatch, a hint that says Redis may be busy", failed, f)
	}
	hs := &handshakes{}
	if err := hs.explain(context.DeadlineExceeded); err != context.DeadlineExceeded {
		t.Errorf("with no handshake failed: %v", err)
	}
	// A readiness check's 2 s can end before the handshake it waits for
	// (2 s of its own) does: the handshake under way is the cause.
	hs.waiting.Store(&errTLSHandshake{addr: "redis:6380", err: errNoHandshakeAnswer})
	if f := FaultOf(hs.explain(context.DeadlineExceeded)); f.Reason != "redis_tls_mismatch" {
		t.Errorf("a timed-out command while a handshake is under way: %+v, want redis_tls_mismatch", f)
	}
	hs.waiting.Store(nil)
	hs.last.Store(failed)
	if f := FaultOf(hs.explain(context.DeadlineExceeded)); f.Reason != "redis_tls_mismatch" {
		t.Errorf("a timed-out command after a failed handshake: %+v, want redis_tls_mismatch", f)
	}
	if err := errors.New("WRONGPASS invalid username-password pair"); hs.explain(err) != err {
		t.Errorf("an error that is no timeout was changed: %v", hs.explain(err))
	}
}

// TestStalledRedisIsATimeoutWhileOtherDialsAreUnderWay: a command whose own
// deadline passed while Redis took connections and answered nothing is a
// timeout (redis_timeout), also when, at that moment, a dial is under way
// for another command: with many requests at once a stalled Redis's
// connections are replaced as their reads time out, and a dial is nearly
// always under way somewhere, on a starved CPU the longer. The readiness
// check of a busy proxy (TestSignedInRequestsWhileRedisStalls, one run in
// about twenty under load) named such a Redis unreachable: check its host
// and port. A dial under way while none has succeeded lately is still
// what the command may have waited for: an address that drops SYNs.
func TestStalledRedisIsATimeoutWhileOtherDialsAreUnderWay(t *testing.T) {
	hs := &handshakes{}
	hs.succeeded(time.Now())
	hs.dialing.Add(1) // another command's dial
	if f := FaultOf(hs.explain(context.DeadlineExceeded)); f.Reason != "redis_timeout" {
		t.Errorf("a command's deadline while dials succeed and one is under way: %+v, want redis_timeout", f)
	}
	hs.succeeded(time.Now().Add(-redisDialTimeout - time.Second))
	if f := FaultOf(hs.explain(context.DeadlineExceeded)); f.Reason != "redis_unreachable" {
		t.Errorf("a command's deadline while a dial is under way and none succeeded lately: %+v, want redis_unreachable", f)
	}
	hs.dialing.Add(-1)
	if f := FaultOf(hs.explain(context.DeadlineExceeded)); f.Reason != "redis_timeout" {
		t.Errorf("a command's deadline with no dial under way after one succeeded: %+v, want redis_timeout", f)
	}
}

func caTLS(t *testing.T, caFile string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

// TestRedisTimeoutIsNotExplainedByAnOldHandshake: a handshake that failed
// once (with another node, whose certificate another CA signed) says
// nothing of a command that timed out after Redis had answered on its
// pooled connection since: that command met a Redis busy for seconds, a
// timeout (redis_timeout), not a certificate to trust.
func TestRedisTimeoutIsNotExplainedByAnOldHandshake(t *testing.T) {
	srv := redisserver.StartWith(t, redisserver.Options{TLS: true, Args: []string{"--enable-debug-command", "yes"}})
	other := redisserver.StartWith(t, redisserver.Options{TLS: true})
	c := RedisConfig{URL: srv.URL, TLS: RedisTLS{CAFile: srv.CAFile}}
	r, err := DialRedis(c)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	if err := r.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	tc, err := c.tlsConfig()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := redisDialer(tc, r.handshakes)(ctx, "tcp", other.Addr); err == nil {
		t.Fatal("a handshake with a certificate of another CA succeeded")
	}
	// Redis answers on the pooled connection after that failure.
	if err := r.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}

	admin := redis.NewClient(&redis.Options{Addr: srv.Addr, TLSConfig: caTLS(t, srv.CAFile)})
	defer admin.Close()
	if err := admin.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping: %v", err)
	}
	slept := make(chan error, 1)
	go func() { slept <- admin.Do(ctx, "DEBUG", "SLEEP", "2.5").Err() }()
	defer func() { <-slept }()
	time.Sleep(100 * time.Millisecond) // DEBUG SLEEP first

	busyCtx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	_, _, err = r.Failures(busyCtx, "someone")
	if err == nil {
		t.Fatal("a command on a Redis in DEBUG SLEEP succeeded")
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("%v is not ErrUnavailable", err)
	}
	// A timeout, or (when the command had gone on to a new connection)
	// the busy Redis's own handshake under way; never the other node's.
	if f := FaultOf(err); f.Reason != "redis_timeout" && f.Reason != "redis_tls_mismatch" || strings.Contains(err.Error(), other.Addr) {
		t.Errorf("a timeout on a busy Redis: %v\nFaultOf: %+v; want redis_timeout or redis_tls_mismatch, and not the other node's handshake", err, f)
	}
}
