package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// TestFaultOf: each error the Redis store can meet gets its reason, and an
// error that fits two cases gets the first that says what to change: a
// failed handshake says why it failed (a certificate, a client certificate
// Redis asked for) before "not TLS at all", and a handshake that timed out
// is not "nothing answers".
func TestFaultOf(t *testing.T) {
	block, _ := pem.Decode(testcert.NewCA(t, "managed Redis CA").PEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	command := func(answer string) error {
		return fmt.Errorf("redis: write: %w: %w", ErrUnavailable, errors.New(answer))
	}
	handshake := func(err error) error {
		return fmt.Errorf("redis: write: %w", &errTLSHandshake{addr: "redis:6380", err: err})
	}
	verify := func(err error) error {
		return handshake(&tls.CertificateVerificationError{UnverifiedCertificates: []*x509.Certificate{cert}, Err: err})
	}
	dial := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	tests := []struct {
		name   string
		err    error
		reason string
		hint   string // a part of the hint
	}{
		{"a wrong password", command("WRONGPASS invalid username-password pair or user is disabled."), "redis_auth", "session.redis.password"},
		{"no password", command("NOAUTH Authentication required."), "redis_auth", "NOAUTH"},
		{"a Redis before 6's wrong password", command("ERR invalid password"), "redis_auth", "session.redis.password"},
		{"Redis's answer alone", errors.New("NOAUTH Authentication required."), "redis_auth", "NOAUTH"},
		{"an ACL refusal", command("NOPERM User portcullis has no permissions to run the 'evalsha' command"), "redis_acl", "ACL"},
		{"an ACL refusal inside a script", command("ERR The user executing the script can't run this command or subcommand script: ..."), "redis_acl", "ACL"},
		{"a replica", command("READONLY You can't write against a read only replica."), "redis_read_only", "master"},
		{"a full Redis", command("OOM command not allowed when used memory > 'maxmemory'."), "redis_full", "maxmemory"},
		{"protected mode", command("DENIED Redis is running in protected mode because protected mode is enabled"), "redis_protected_mode", "requirepass"},
		{"a CA not trusted", verify(x509.UnknownAuthorityError{Cert: cert}), "redis_certificate", "managed Redis CA"},
		{"another host's certificate", verify(x509.HostnameError{Certificate: cert, Host: "redis.internal"}), "redis_certificate", "server_name"},
		{"an expired certificate", verify(x509.CertificateInvalidError{Cert: cert, Reason: x509.Expired}), "redis_certificate", "renew"},
		{"a client certificate asked for, the connection then closed", handshake(fmt.Errorf("%w (%w)", errNoClientCert, io.EOF)), "redis_client_certificate", "cert_file"},
		{"a client certificate asked for, the connection then reset", handshake(fmt.Errorf("%w (%w)", errNoClientCert, syscall.ECONNRESET)), "redis_client_certificate", "cert_file"},
		{"a client certificate refused with an alert", command("remote error: tls: certificate required"), "redis_client_certificate", "cert_file"},
		{"a handshake that timed out", handshake(os.ErrDeadlineExceeded), "redis_tls_mismatch", "too busy"},
		// A code is Redis's when it leads the answer, not when the text
		// names it: a proxy in front of Redis that lacks Cluster's
		// READONLY command is no read-only replica.
		{"an answer that names a code inside its text", command("ERR unknown command 'READONLY', with args beginning with: "), "redis_error", ""},
		// A deadline that reached us as text only (an error wrapped with
		// %v on its way) is a timeout still.
		{"a handshake that timed out, said in text only", handshake(errors.New("read tcp 10.0.0.1:6380: context deadline exceeded")), "redis_tls_mismatch", "too busy"},
		{"a handshake with a plain port that closed", handshake(io.EOF), "redis_tls_mismatch", "does not answer TLS"},
		{"a plain connection to a TLS port closed", fmt.Errorf("redis: write: %w", io.EOF), "redis_closed", "rediss://"},
		{"a plain connection to a TLS port reset", fmt.Errorf("redis: write: %w", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), "redis_closed", "rediss://"},
		{"nothing listening", dial(syscall.ECONNREFUSED), "redis_unreachable", "host and port"},
		{"a host name that does not resolve", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "redis.internal", IsNotFound: true}}, "redis_unreachable", "host and port"},
		{"a command that timed out", fmt.Errorf("redis: write: %w", context.DeadlineExceeded), "redis_unreachable", "host and port"},
		{"a command that timed out on a connection Redis took", fmt.Errorf("redis: write: %w (%w)", os.ErrDeadlineExceeded, errNoAnswer), "redis_timeout", "stalled"},
		{"an answer it cannot tell", command("ERR unknown command 'FOO'"), "redis_error", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := FaultOf(tc.err)
			if f.Reason != tc.reason || !strings.Contains(f.Hint, tc.hint) || (tc.hint == "") != (f.Hint == "") {
				t.Errorf("FaultOf(%v) = %+v; want reason %s, a hint with %q", tc.err, f, tc.reason, tc.hint)
			}
		})
	}
}

// TestRedisDialerKeepsTheLastFailedHandshake: the readiness check explains
// a command that only timed out with the last handshake that failed, and
// only until one succeeds: a Redis that came back is not explained by a
// failure of before.
func TestRedisDialerKeepsTheLastFailedHandshake(t *testing.T) {
	srv := redisserver.StartWith(t, redisserver.Options{TLS: true})
	c := RedisConfig{URL: srv.URL, TLS: RedisTLS{CAFile: srv.CAFile}}
	tc, err := c.tlsConfig()
	if err != nil {
		t.Fatal(err)
	}
	// A port that takes the connection and closes it, as a proxy in
	// between may.
	closing := process.Serve(t, func(c net.Conn) { c.Close() })
	hs := &handshakes{}
	dial := redisDialer(tc, hs)
	if conn, err := dial(context.Background(), "tcp", closing); err == nil {
		conn.Close()
		t.Fatal("a handshake with a port that closed succeeded")
	}
	if last := hs.last.Load(); last == nil || last.addr != closing {
		t.Fatalf("the failed handshake was not kept: %v", last)
	}
	conn, err := dial(context.Background(), "tcp", srv.Addr)
	if err != nil {
		t.Fatalf("dial the TLS Redis: %v", err)
	}
	conn.Close()
	if last := hs.last.Load(); last != nil {
		t.Errorf("a handshake that succeeded left a failed one kept: %v", last)
	}
}

// TestRedisDialerClientCertificateAskedFor: a Redis that asks for a client
// certificate and is given none either takes the connection
// (tls-auth-clients optional), which must then serve commands, or, in TLS
// 1.3, refuses it only after the handshake, often by closing it: the dial
// must tell that refusal, not hand go-redis a connection that reads as a
// Redis that went away.
func TestRedisDialerClientCertificateAskedFor(t *testing.T) {
	t.Run("optional: the connection serves", func(t *testing.T) {
		srv := redisserver.StartWith(t, redisserver.Options{TLS: true, Args: []string{"--tls-auth-clients", "optional"}})
		r, err := DialRedis(RedisConfig{URL: srv.URL, TLS: RedisTLS{CAFile: srv.CAFile}})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if err := r.Ping(context.Background()); err != nil {
			t.Errorf("a Redis that takes no client certificate: %v", err)
		}
	})
	t.Run("required, refused by closing: said at the dial", func(t *testing.T) {
		pair := testcert.New(t, "127.0.0.1", time.Now().Add(time.Hour))
		cert, err := tls.X509KeyPair(pair.Cert, pair.Key)
		if err != nil {
			t.Fatal(err)
		}
		addr := process.Serve(t, func(c net.Conn) {
			defer c.Close()
			s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS13})
			_ = s.SetDeadline(time.Now().Add(10 * time.Second))
			if s.Handshake() == nil && len(s.ConnectionState().PeerCertificates) == 0 {
				return // no alert: a closed connection
			}
			io.Copy(io.Discard, s)
		})
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pair.Cert)
		hs := &handshakes{}
		conn, err := redisDialer(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, hs)(context.Background(), "tcp", addr)
		if err == nil {
			conn.Close()
			t.Fatal("the dial took a connection the server closed for want of a client certificate")
		}
		if f := FaultOf(err); f.Reason != "redis_client_certificate" {
			t.Errorf("FaultOf(%v) = %+v, want redis_client_certificate", err, f)
		}
	})
}
