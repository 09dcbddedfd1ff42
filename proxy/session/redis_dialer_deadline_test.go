package session

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// A handshake with a port that takes the connection and never answers (a
// plain Redis waiting for a line end) is given up after
// redisHandshakeTimeout even when the caller's context has no deadline:
// go-redis dials with its own, but a dial that hung would hold a pool slot
// and its caller forever.
func TestRedisHandshakeEndsWithoutADeadlineOfTheCaller(t *testing.T) {
	silent := process.Serve(t, func(net.Conn) {}) // takes connections, never answers
	c := RedisConfig{URL: "rediss://" + silent + "/0"}
	tc, err := c.tlsConfig()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		conn, err := redisDialer(tc, &handshakes{})(context.Background(), "tcp", silent)
		if conn != nil {
			conn.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if f := FaultOf(err); f.Reason != "redis_tls_mismatch" {
			t.Errorf("FaultOf(%v) = %+v, want redis_tls_mismatch", err, f)
		}
	case <-time.After(time.Minute): // a guard against a hang, far above redisHandshakeTimeout
		t.Fatal("the handshake with a port that never answers was not given up")
	}
}

// The one PING that tells whether a Redis that asked for a client
// certificate took the connection without one leaves no deadline on the
// connection: go-redis keeps it in its pool for later commands.
func TestRedisConnectionServesAfterTheCertificateCheck(t *testing.T) {
	srv := redisserver.StartWith(t, redisserver.Options{TLS: true, Args: []string{"--tls-auth-clients", "optional"}})
	c := RedisConfig{URL: srv.URL, TLS: RedisTLS{CAFile: srv.CAFile}}
	tc, err := c.tlsConfig()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := redisDialer(tc, &handshakes{})(context.Background(), "tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	time.Sleep(redisHandshakeTimeout + 500*time.Millisecond) // past the check's deadline
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		t.Fatalf("PING on the pooled connection: %v", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "+PONG\r\n" {
		t.Fatalf("PING on the pooled connection: %q, %v", line, err)
	}
}
