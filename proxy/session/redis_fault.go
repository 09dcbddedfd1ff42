package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisFault is why Redis could not serve a command, for the operator: a
// stable Reason for the log line and /readyz, and a Hint that says what to
// change. Redis answers most set-up mistakes (a wrong password, a replica
// given as the master, an ACL that lacks a command) while it answers PING
// and takes connections, so "session store unavailable" alone sends its
// operator looking at the network.
type RedisFault struct {
	Reason, Hint string
}

// errTLSHandshake marks a TLS handshake with Redis that failed (redisDialer).
type errTLSHandshake struct {
	addr string
	err  error
}

func (e *errTLSHandshake) Error() string {
	return "tls handshake with " + e.addr + ": " + e.err.Error()
}
func (e *errTLSHandshake) Unwrap() error { return e.err }

// handshakes keeps the last TLS handshake with Redis that failed, until
// one succeeds or Redis answers a command. A command whose every
// connection attempt failed in its handshake often reports only its own
// deadline; the readiness check then says which handshake failed
// (Redis.Ping). An answer ends it too: go-redis dials only when its pool
// lacks a connection, so a failure (a burst's dial while Redis was busy,
// another node of a Cluster, a Sentinel) could otherwise stay for as long
// as the pooled connections served, and be given as the cause of a
// timeout much later (a busy Redis, read as a certificate to trust).
//
// waiting is a handshake under way: a command can time out before the
// handshake it waited for does (a readiness check's 2 s against the
// handshake's own 2 s), and that handshake, still unanswered, is its cause.
//
// It keeps the connections' dials too: a command that timed out after its
// connection was made met a Redis that took it and did not answer (stalled
// or overloaded: errNoAnswer), not one that nothing answers for (its host
// and port). A connection's read or write deadline says so itself; a
// command's own deadline does when a dial succeeded (dialedAt), none
// failed since (dialFailed) and none is under way (dialing), or dials
// still succeed (dialedAt, within the dial timeout): with many requests at
// once one is nearly always under way for another command. dials counts
// them all: a command with Redis down makes as many as the retries
// configured allow (redisDialerRetries), no more.
type handshakes struct {
	last       atomic.Pointer[errTLSHandshake]
	waiting    atomic.Pointer[errTLSHandshake]
	dialFailed atomic.Pointer[net.OpError]
	dialing    atomic.Int64
	dials      atomic.Int64
	dialedAt   atomic.Int64 // when a dial last succeeded (Unix ns); 0: none has
}

// succeeded records a dial that succeeded at at.
func (hs *handshakes) succeeded(at time.Time) {
	hs.dialedAt.Store(at.UnixNano())
}

// errNoAnswer is a command that timed out on a connection Redis took,
// while no dial failed or was under way: Redis runs and does not answer.
var errNoAnswer = errors.New("Redis took the connection and did not answer in time")

// errNoHandshakeAnswer is a TLS handshake with Redis still unanswered when
// a command that waited for it timed out.
var errNoHandshakeAnswer = errors.New("no answer to the TLS handshake yet")

// answered forgets the failed handshake when err shows that Redis
// answered: no error, or one of Redis's own replies (redis.Nil included).
func (hs *handshakes) answered(err error) {
	var reply redis.Error
	if (err == nil || errors.As(err, &reply)) && hs.last.Load() != nil {
		hs.last.Store(nil)
	}
}

// DialHook, ProcessHook and ProcessPipelineHook make handshakes a
// redis.Hook that sees every command's outcome (answered).
func (hs *handshakes) DialHook(next redis.DialHook) redis.DialHook { return next }

func (hs *handshakes) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		hs.answered(err)
		return err
	}
}

func (hs *handshakes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		hs.answered(err)
		return err
	}
}

// explain is err with the last failed handshake, else one under way,
// added when err, a command's, is a timeout that names none.
func (hs *handshakes) explain(err error) error {
	if err == nil || errors.As(err, new(*errTLSHandshake)) || !isTimeout(err) {
		return err
	}
	if last := hs.last.Load(); last != nil {
		return fmt.Errorf("%w (%w)", err, last)
	}
	if waiting := hs.waiting.Load(); waiting != nil {
		return fmt.Errorf("%w (%w)", err, waiting)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return err
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// A connection's own read or write deadline: it was made.
		return fmt.Errorf("%w (%w)", err, errNoAnswer)
	}
	// The command's deadline: it may have waited for a dial.
	if failed := hs.dialFailed.Load(); failed != nil {
		return fmt.Errorf("%w (%w)", err, failed)
	}
	// A dial under way may be what it waited for (an address that drops
	// SYNs holds a dial until its timeout), unless dials succeed: then
	// it is another command's, one of the many that replace a stalled
	// Redis's connections as their reads time out.
	dialedAt := hs.dialedAt.Load()
	dialedLately := time.Since(time.Unix(0, dialedAt)) < redisDialTimeout
	if dialedAt == 0 || hs.dialing.Load() > 0 && !dialedLately {
		return err
	}
	return fmt.Errorf("%w (%w)", err, errNoAnswer)
}

// FaultOf is the RedisFault of an error of the Redis store; Reason
// "redis_error" with no Hint for one it cannot tell.
func FaultOf(err error) RedisFault {
	msg := err.Error()
	// Redis's own answers start with an upper-case code.
	code := func(c string) bool { return strings.Contains(msg, ": "+c+" ") || strings.HasPrefix(msg, c+" ") }
	var handshake *errTLSHandshake
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var verify *tls.CertificateVerificationError
	switch {
	case code("WRONGPASS") || code("NOAUTH") || strings.Contains(msg, "invalid password"):
		return RedisFault{Reason: "redis_auth", Hint: "Redis refused the credentials (NOAUTH: none were sent): set session.redis.password " +
			"(or PORTCULLIS_REDIS_PASSWORD; a password in the url must be percent-encoded) and, for an ACL user, username"}
	case code("NOPERM") || strings.Contains(msg, "user executing the script can't run"): // the latter: a command inside a script
		return RedisFault{Reason: "redis_acl", Hint: "Redis's ACL does not let this user run a command portcullis sends, or use keys " +
			"under session.redis.key_prefix: give the user the rules in the README (Scaling, ACL user)"}
	case code("READONLY"):
		return RedisFault{Reason: "redis_read_only", Hint: "session.redis.url is a read-only replica: give the master's address, " +
			"or sentinel (which finds the master), or cluster_addrs"}
	case code("OOM"):
		return RedisFault{Reason: "redis_full", Hint: "Redis is at its maxmemory and, with maxmemory-policy noeviction, refuses writes: " +
			"logins and sign-outs fail while sessions already made still work; raise maxmemory (a session takes about 2 KB)"}
	case code("DENIED"):
		return RedisFault{Reason: "redis_protected_mode", Hint: "Redis is in protected mode: it has no password and admits only loopback clients; " +
			"give it a password (requirepass, or an ACL user) and set it here"}
	case errors.As(err, &unknownCA):
		return RedisFault{Reason: "redis_certificate", Hint: "Redis's certificate is signed by a CA this system does not trust (" +
			unknownCA.Cert.Issuer.String() + "): set session.redis.tls.ca_file to that CA's PEM (a managed Redis's provider publishes it)"}
	case errors.As(err, &hostname):
		return RedisFault{Reason: "redis_certificate", Hint: "Redis's certificate is not for the host dialled: set session.redis.tls.server_name " +
			"to a name it is for, or dial that name"}
	case errors.As(err, &verify):
		return RedisFault{Reason: "redis_certificate", Hint: "Redis's certificate is refused (expired, or not for a server): renew it"}
	case errors.Is(err, errNoClientCert) || strings.Contains(msg, "tls: certificate required"):
		return RedisFault{Reason: "redis_client_certificate", Hint: "Redis requires a client certificate (tls-auth-clients): set session.redis.tls.cert_file " +
			"and key_file to one signed by a CA in Redis's tls-ca-cert-file"}
	case errors.As(err, &handshake) && isTimeout(err):
		// redisHandshakeTimeout is short: a busy Redis ends there too.
		return RedisFault{Reason: "redis_tls_mismatch", Hint: "Redis at " + handshake.addr + " took the connection but did not answer " +
			"the TLS handshake in time: that port speaks plain Redis (use redis:// and no tls.enabled, or Redis's tls-port), " +
			"or Redis is too busy to answer (a slow command, a burst of new connections)"}
	case errors.As(err, &handshake):
		return RedisFault{Reason: "redis_tls_mismatch", Hint: "Redis does not answer TLS at " + handshake.addr +
			": that port speaks plain Redis; use redis:// (and no tls.enabled), or Redis's tls-port"}
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		return RedisFault{Reason: "redis_closed", Hint: "Redis closed the connection without answering: a port that serves TLS only " +
			"(managed Redis with in-transit encryption; Azure Cache's 6380) does that to plain connections, so use rediss://; " +
			"or Redis was restarting, or a proxy in between closed it"}
	case errors.Is(err, errNoAnswer):
		return RedisFault{Reason: "redis_timeout", Hint: "Redis took the connection but did not answer within the 1 s read timeout: " +
			"it runs and is stalled or overloaded (a fork for a save or an AOF rewrite, swapping, a paused or migrating VM, " +
			"a slow command or script, CPU throttling); see its LATENCY DOCTOR, SLOWLOG and INFO persistence, and the host's memory and CPU"}
	case errors.Is(err, syscall.ECONNREFUSED) || isDNS(err) || isTimeout(err):
		return RedisFault{Reason: "redis_unreachable", Hint: "nothing answers at session.redis's address: check its host and port, " +
			"that Redis runs, and what lies between (firewall, network policy)"}
	}
	return RedisFault{Reason: "redis_error"}
}

func isDNS(err error) bool {
	var dns *net.DNSError
	return errors.As(err, &dns)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || strings.Contains(err.Error(), "context deadline exceeded")
}
