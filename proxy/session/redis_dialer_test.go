package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/redis/go-redis/v9"
)

// TestRedisHandshakeTimeoutMayBeABusyRedis: Redis shakes hands in TLS on
// its one main thread, so a Redis busy with a slow command (or with the
// handshakes of every replica's pool after a failover) answers a handshake
// late, past redisHandshakeTimeout. Its hint must not send the operator to
// the URL's scheme alone, as it did ("that port speaks plain Redis").
func TestRedisHandshakeTimeoutMayBeABusyRedis(t *testing.T) {
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
	go func() { slept <- busy.Do(context.Background(), "DEBUG", "SLEEP", "1.3").Err() }()
	// Let Redis take the DEBUG SLEEP before the dial's ClientHello comes.
	time.Sleep(100 * time.Millisecond)

	conn, err := redisDialer(tc)(context.Background(), "tcp", srv.Addr)
	if err == nil {
		conn.Close()
	} else if f := FaultOf(err); !strings.Contains(f.Hint, "too busy") {
		t.Errorf("dial a Redis busy for about a second: %v; hint %q does not say Redis may be busy", err, f.Hint)
	}
	if err := <-slept; err != nil {
		t.Fatalf("DEBUG SLEEP: %v", err)
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
