package session

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// The readiness check tries what logins need of Redis, a write and a
// script, as portcullis's ACL user: an ACL that refuses either is not
// ready, and says which step and why, though Redis answers PING.
func TestRedisPingTriesTheWriteAndTheScript(t *testing.T) {
	for _, tc := range []struct {
		name, denied, step string
	}{
		{"an ACL without DEL", "-del", "redis: write:"},
		{"an ACL without scripts", "-evalsha -eval", "redis: script:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acl := append([]string{"--user", "portcullis", "on", ">portcullis-pw", "~*", "+@all"}, strings.Fields(tc.denied)...)
			srv := redisserver.StartWith(t, redisserver.Options{Args: acl})
			r, err := DialRedis(RedisConfig{URL: srv.URL, Username: "portcullis", Password: "portcullis-pw"})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			err = r.Ping(context.Background())
			if err == nil || !strings.HasPrefix(err.Error(), tc.step) {
				t.Fatalf("Ping: %v, want an error of %q", err, tc.step)
			}
			if f := FaultOf(err); f.Reason != "redis_acl" {
				t.Errorf("FaultOf(%v) = %+v, want redis_acl", err, f)
			}
		})
	}
}

// A handshake that itself timed out is its own explanation: an older
// failed handshake (another node's certificate) must not be given as its
// cause, which would send the operator to a CA file for a busy Redis.
func TestHandshakeTimeoutIsNotExplainedByAnotherHandshake(t *testing.T) {
	hs := &handshakes{}
	hs.last.Store(&errTLSHandshake{addr: "10.0.0.2:6379", err: x509.UnknownAuthorityError{}})
	timedOut := error(&errTLSHandshake{addr: "10.0.0.1:6379", err: context.DeadlineExceeded})
	if got := hs.explain(timedOut); got != timedOut {
		t.Errorf("explain(%v) = %v, want it unchanged", timedOut, got)
	}
}

// A command that only timed out, after a TLS handshake failed, is
// explained by that handshake, in the readiness check's error and in the
// store's: go-redis often reports the command's own deadline alone, and a
// timeout sends the operator to look for a Redis that is down. The server
// here takes connections and never answers, as a busy one does.
func TestRedisTimeoutIsExplainedByTheFailedHandshake(t *testing.T) {
	silent := process.Serve(t, func(net.Conn) {}) // takes connections, never answers
	r, err := DialRedis(RedisConfig{URL: "redis://" + silent + "/0"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	block, _ := pem.Decode(testcert.NewCA(t, "another CA").PEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	r.handshakes.last.Store(&errTLSHandshake{addr: "redis-2:6380", err: x509.UnknownAuthorityError{Cert: cert}})
	ctx := context.Background()
	errs := map[string]error{"Ping": r.Ping(ctx)}
	_, errs["MarkOnce"] = r.MarkOnce(ctx, "k", time.Now().Add(time.Minute))
	for op, err := range errs {
		if f := FaultOf(err); err == nil || !strings.Contains(err.Error(), "tls handshake with redis-2:6380") || f.Reason != "redis_certificate" {
			t.Errorf("%s: %v (%+v), want the timeout explained by the failed handshake", op, err, f)
		}
	}
}
