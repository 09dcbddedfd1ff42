package session

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/redis/go-redis/v9"
)

// stallOnce pauses srv (SIGSTOP) as the first command of r whose
// arguments name a key containing keyPart goes out, and resumes it (SIGCONT)
// as go-redis dials again: the command's first try has then timed out,
// unanswered, on its pooled connection, and its retry is on the way. Redis
// then runs the first try, late, before the retry, as a Redis that stalled
// past the read timeout does. The pool must hold an idle connection before
// (a command sent earlier), so that the first try does not dial.
func stallOnce(t *testing.T, r *Redis, srv *redisserver.Server, keyPart string) {
	t.Helper()
	h := &stallHook{srv: srv, keyPart: keyPart}
	r.client.AddHook(h)
	t.Cleanup(srv.Resume)
}

type stallHook struct {
	srv     *redisserver.Server
	keyPart string
	// beforeResume, when set, runs before the resume: what other clients
	// send then reaches Redis after the first try and before the retry.
	beforeResume func()
	mu           sync.Mutex
	paused       bool
	resumed      bool
}

func (h *stallHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		h.mu.Lock()
		if h.paused && !h.resumed {
			h.resumed = true
			if h.beforeResume != nil {
				h.beforeResume()
			}
			h.srv.Resume()
		}
		h.mu.Unlock()
		return next(ctx, network, addr)
	}
}

func (h *stallHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		if !h.paused && strings.Contains(fmt.Sprint(cmd.Args()...), h.keyPart) {
			h.paused = true
			h.srv.Pause()
		}
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *stallHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A login state (SAML assertion ID, logout token) marked used while Redis
// stalled past the read timeout is this login's: go-redis sends the mark
// again on a new connection, and Redis, resumed, runs the first one before
// it. With SETNX the retry was answered "already set", and a valid login
// was refused as a reused state (400 "expired or already used").
func TestMarkOnceSentAgainAfterAStallIsTheCallersOwn(t *testing.T) {
	srv := redisserver.Start(t)
	st := replica(t, srv, testOptions(newClock()))
	if _, err := st.redis.MarkOnce(t.Context(), "warm", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	stallOnce(t, st.redis, srv, "state:stalled")
	first, err := st.redis.MarkOnce(t.Context(), "state:stalled", time.Now().Add(time.Minute))
	if err != nil {
		t.Fatalf("MarkOnce: %v", err) // the retry, after the resume, is answered
	}
	if !first {
		t.Error("a state marked once, its first try answered late, reads as used before")
	}
	again, err := st.redis.MarkOnce(t.Context(), "state:stalled", time.Now().Add(time.Minute))
	if err != nil || again {
		t.Errorf("marked again: %v, %v; want false: it is used", again, err)
	}
}

// A mark given back while Redis stalled past the read timeout is given back
// once: go-redis sends the Unmark again on a new connection, and Redis,
// resumed, runs the first try, then what another replica sent meanwhile
// (the IdP's retry of the logout token, which marks it anew), then the
// retry. With a plain DEL the retry erased that newer mark, and the spent
// token was accepted once more.
func TestUnmarkSentAgainAfterAStallKeepsANewerMark(t *testing.T) {
	srv := redisserver.Start(t)
	a := replica(t, srv, testOptions(newClock())).Redis()
	b := replica(t, srv, testOptions(newClock())).Redis()
	sent := &sentHook{sent: make(chan struct{})}
	b.client.AddHook(sent)
	ctx := t.Context()
	until := time.Now().Add(time.Minute)
	if _, err := b.MarkOnce(ctx, "warm", until); err != nil { // b's pool holds a connection
		t.Fatal(err)
	}
	warm, _, err := a.Claim(ctx, "jti:warm", until)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Unmark(ctx, warm); err != nil { // Redis knows the script: EVALSHA runs it
		t.Fatal(err)
	}
	mark, first, err := a.Claim(ctx, "jti:late", until)
	if err != nil || !first {
		t.Fatalf("Claim = %v, %v; want true", first, err)
	}
	bFirst := make(chan bool, 1)
	a.client.AddHook(&stallHook{srv: srv, keyPart: "once:jti:late", beforeResume: func() {
		sent.armed.Store(true)
		go func() {
			first, err := b.MarkOnce(ctx, "jti:late", until)
			if err != nil {
				t.Errorf("the other replica's MarkOnce: %v", err)
			}
			bFirst <- first
		}()
		<-sent.sent // in Redis's socket, behind the first try
	}})
	t.Cleanup(srv.Resume)
	if err := a.Unmark(ctx, mark); err != nil {
		t.Fatalf("Unmark: %v", err) // the retry, after the resume, is answered
	}
	if !<-bFirst {
		t.Fatal("the other replica's mark, sent after the first try of the Unmark, found the key marked")
	}
	if again, err := b.MarkOnce(ctx, "jti:late", until); err != nil || again {
		t.Errorf("marked once more = %v, %v; want false: the Unmark sent again erased the other replica's mark", again, err)
	}
}

// sentHook closes sent once the next command is written to Redis's
// socket after armed is set.
type sentHook struct {
	armed atomic.Bool
	sent  chan struct{}
}

func (h *sentHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return sentConn{c, h}, nil
	}
}

func (h *sentHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *sentHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

type sentConn struct {
	net.Conn
	h *sentHook
}

func (c sentConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if c.h.armed.CompareAndSwap(true, false) {
		close(c.h.sent)
	}
	return n, err
}

// A refresh whose lock was taken while Redis stalled past the read timeout
// runs at once: the lock, set by its own first try, is its own. With SETNX
// the retry found the lock taken, and every request of the session waited
// for the lock's TTL (20 s) for the refresh that no one was running.
func TestRefreshLockTakenDuringAStallIsTheCallersOwn(t *testing.T) {
	srv := redisserver.Start(t)
	st := replica(t, srv, testOptions(newClock()))
	s := New(testProfile(), idp.Tokens{RefreshToken: "rt-1"}, testOptions(newClock()))
	saveTo(t, st, s)
	loaded, err := st.get(t.Context(), s.ID)
	if err != nil || loaded == nil {
		t.Fatalf("get: %v, %v", loaded, err)
	}
	stallOnce(t, st.redis, srv, "refresh:lock")
	// Well under the lock's TTL, far above a stall's two read timeouts.
	ctx, cancel := context.WithTimeout(t.Context(), refreshLockTTL/2)
	defer cancel()
	out, ran, err := st.RefreshOnce(ctx, loaded, time.Minute, time.Second, func() RefreshOutcome {
		next := *loaded
		next.Tokens.RefreshToken = "rt-2"
		return RefreshOutcome{Session: &next}
	})
	if err != nil || !ran || out.Session == nil || out.Session.Tokens.RefreshToken != "rt-2" {
		t.Errorf("RefreshOnce: ran %v, %+v, %v; want it run here, at once", ran, out, err)
	}
}

// A failed login counted while Redis stalled past the read timeout is
// counted once: go-redis sends the script again on a new connection, and
// Redis, resumed, runs the first try before it. Counted twice, a user was
// refused after fewer wrong passwords than the burst.
func TestFailureCountedDuringAStallCountsOnce(t *testing.T) {
	srv := redisserver.Start(t)
	r := replica(t, srv, testOptions(newClock())).Redis()
	ctx := t.Context()
	if _, _, err := r.TakeAttempt(ctx, "user:warm", 5, time.Minute); err != nil {
		t.Fatal(err)
	}
	stallOnce(t, r, srv, "lim:user:alice")
	a, _, err := r.TakeAttempt(ctx, "user:alice", 5, time.Minute)
	if err != nil || !a.Taken() {
		t.Fatalf("TakeAttempt = %v, %v; want counted (the retry, after the resume, is answered)", a.Taken(), err)
	}
	if n, _, err := r.Failures(ctx, "user:alice"); err != nil || n != 1 {
		t.Errorf("Failures = %d, %v; want 1: one attempt", n, err)
	}
}

// A failure given back while Redis stalled past the read timeout is given
// back once, for the same reason: given back twice, a client had an
// attempt more than the burst.
func TestFailureGivenBackDuringAStallIsGivenBackOnce(t *testing.T) {
	srv := redisserver.Start(t)
	r := replica(t, srv, testOptions(newClock())).Redis()
	ctx := t.Context()
	// Redis knows the script (EVALSHA is answered, not NOSCRIPT).
	warm, _, _ := r.TakeAttempt(ctx, "addr:warm", 5, time.Minute)
	if err := r.GiveBack(ctx, warm); err != nil {
		t.Fatal(err)
	}
	var last Attempt
	for range 3 {
		a, _, err := r.TakeAttempt(ctx, "addr:bob", 5, time.Minute)
		if err != nil || !a.Taken() {
			t.Fatalf("TakeAttempt = %v, %v", a.Taken(), err)
		}
		last = a
	}
	stallOnce(t, r, srv, "lim:addr:bob")
	if err := r.GiveBack(ctx, last); err != nil {
		t.Fatalf("GiveBack: %v", err)
	}
	if n, _, err := r.Failures(ctx, "addr:bob"); err != nil || n != 2 {
		t.Errorf("Failures = %d, %v; want 2: one of 3 given back", n, err)
	}
}

// previousTakeScript is takeScript as replicas before the attempt marks
// run it (25f04a2): during a rolling update they count on the same keys.
var previousTakeScript = redis.NewScript(`
local n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if n >= tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    left = tonumber(ARGV[2])
  end
  return {0, left}
end
redis.call('SET', KEYS[1], 0, 'PX', ARGV[2], 'NX')
redis.call('INCR', KEYS[1])
return {1, redis.call('PTTL', KEYS[1])}
`)

// Replicas of the version before the attempt marks and of this one count
// the same failures in the same window, during a rolling update: the count
// stays a plain number under the same key.
func TestFailureCountsSharedWithThePreviousVersion(t *testing.T) {
	srv := redisserver.Start(t)
	r := replica(t, srv, testOptions(newClock())).Redis()
	ctx := t.Context()
	previous := func() []int64 {
		t.Helper()
		res, err := previousTakeScript.Run(ctx, r.client, []string{r.key("lim", "user:carol")}, 3, time.Minute.Milliseconds()).Int64Slice()
		if err != nil {
			t.Fatalf("previous version's take: %v", err)
		}
		return res
	}
	if res := previous(); res[0] != 1 {
		t.Fatalf("previous version's first take = %v, want counted", res)
	}
	a, _, err := r.TakeAttempt(ctx, "user:carol", 3, time.Minute)
	if err != nil || !a.Taken() {
		t.Fatalf("TakeAttempt = %v, %v", a.Taken(), err)
	}
	if res := previous(); res[0] != 1 {
		t.Fatalf("previous version's second take = %v, want counted", res)
	}
	if n, _, err := r.Failures(ctx, "user:carol"); err != nil || n != 3 {
		t.Errorf("Failures = %d, %v; want 3", n, err)
	}
	if res := previous(); res[0] != 0 || res[1] <= 0 {
		t.Errorf("previous version's fourth take of 3 = %v, want refused with a wait", res)
	}
	if b, wait, err := r.TakeAttempt(ctx, "user:carol", 3, time.Minute); err != nil || b.Taken() || wait <= 0 {
		t.Errorf("a fourth TakeAttempt of 3 = %v, %s, %v; want refused with a wait", b.Taken(), wait, err)
	}
	if err := r.GiveBack(ctx, a); err != nil {
		t.Fatal(err)
	}
	if n, _, err := r.Failures(ctx, "user:carol"); err != nil || n != 2 {
		t.Errorf("Failures after GiveBack = %d, %v; want 2", n, err)
	}
	if res := previous(); res[0] != 1 {
		t.Errorf("previous version's take after the give-back = %v, want counted", res)
	}
}

// A Redis that takes connections and answers nothing (stalled: a long
// fork, swapping, a paused VM) is a timeout (redis_timeout), for commands
// on pooled and new connections and for the readiness check; an address
// where no connection is taken (a full accept queue here, as a firewall
// that drops) stays redis_unreachable: check its host and port.
func TestAStalledRedisIsATimeoutNotAnUnreachableOne(t *testing.T) {
	srv := redisserver.Start(t)
	pooled := replica(t, srv, testOptions(newClock())).Redis()
	if err := pooled.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	fresh := replica(t, srv, testOptions(newClock())).Redis()
	srv.Pause()
	for name, err := range map[string]error{
		"a pooled connection's command": func() error { _, err := pooled.MarkOnce(t.Context(), "x", time.Now().Add(time.Minute)); return err }(),
		"a new connection's command":    func() error { _, err := fresh.MarkOnce(t.Context(), "x", time.Now().Add(time.Minute)); return err }(),
		"the readiness check":           pooled.Ping(t.Context()),
	} {
		if f := FaultOf(err); f.Reason != "redis_timeout" || !strings.Contains(f.Hint, "stalled") {
			t.Errorf("%s: %v: %+v; want redis_timeout", name, err, f)
		}
	}
	srv.Resume()

	l := fullAcceptQueue(t)
	r, err := DialRedis(RedisConfig{URL: "redis://" + l + "/0"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err = r.MarkOnce(ctx, "x", time.Now().Add(time.Minute))
	if f := FaultOf(err); f.Reason != "redis_unreachable" {
		t.Errorf("no connection taken: %v: %+v; want redis_unreachable", err, f)
	}
}

// fullAcceptQueue is the address of a loopback listener that takes no
// more connections: its accept queue (backlog 0) holds one never
// accepted, and the kernel drops the SYNs of the rest, so their dials
// time out.
func fullAcceptQueue(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("the first connection, which fills the queue: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return addr
}
