package session

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// A Redis whose `timeout` closes idle clients (Azure Cache for Redis after
// 10 minutes; here 1 s) has closed the proxy's kept connections when the
// next request comes after a quiet spell: the session of that request loads
// and a login's session saves, with no 503. go-redis checks a kept
// connection before it uses it, and leaves one Redis closed.
func TestRedisIdleTimeoutClosingKeptConnectionsFailsNoRequest(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	st := replica(t, srv, testOptions(c))
	ctx := context.Background()
	if err := st.redis.client.ConfigSet(ctx, "timeout", "1").Err(); err != nil {
		t.Fatal(err)
	}
	cookies := saveTo(t, st, New(testProfile(), idp.Tokens{}, testOptions(c)))

	idleClosed(t, srv)
	if loadFrom(t, st, cookies) == nil {
		t.Error("the session did not load on the first request after Redis closed the idle connections")
	}
	idleClosed(t, srv)
	fresh := saveTo(t, st, New(testProfile(), idp.Tokens{}, testOptions(c)))
	if loadFrom(t, st, fresh) == nil {
		t.Error("a session saved after Redis closed the idle connections does not load")
	}
}

// idleClosed waits until Redis closed every idle connection: it then
// counts only the client that asks.
func idleClosed(t *testing.T, srv *redisserver.Server) {
	t.Helper()
	watch := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer watch.Close()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		info, err := watch.Info(context.Background(), "clients").Result()
		if err == nil && strings.Contains(info, "connected_clients:1\r\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis did not close the idle connections: %v %s", err, info)
		}
	}
}

// closingAtTheWorstMoment makes Redis's idle close come at the worst
// moment: once closeIdle is called, the next command on each connection
// open then is written just as Redis's close arrives, and sees EOF instead
// of an answer. (go-redis's check of a kept connection cannot see a close
// that has not arrived yet.)
type closingAtTheWorstMoment struct {
	mu    sync.Mutex
	conns []*closingConn
	lost  atomic.Int64 // commands written on a closed connection
}

func (d *closingAtTheWorstMoment) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c := &closingConn{Conn: conn, d: d}
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
		return c, nil
	}
}

func (*closingAtTheWorstMoment) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (*closingAtTheWorstMoment) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// closeIdle is Redis closing every connection it has now.
func (d *closingAtTheWorstMoment) closeIdle() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.closing.Store(true)
	}
	d.conns = nil
}

type closingConn struct {
	net.Conn
	d       *closingAtTheWorstMoment
	closing atomic.Bool // Redis closed it; its close is on the way
	closed  atomic.Bool // the close arrived
}

func (c *closingConn) Write(p []byte) (int, error) {
	if c.closing.Load() && c.closed.CompareAndSwap(false, true) {
		c.d.lost.Add(1)
		c.Conn.Close()
	}
	if c.closed.Load() {
		return len(p), nil // into the socket's buffer, before the close was seen
	}
	return c.Conn.Write(p)
}

func (c *closingConn) Read(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, io.EOF
	}
	return c.Conn.Read(p)
}

// SetDeadline, SetReadDeadline and SetWriteDeadline on a connection whose
// close arrived succeed, as they do on a socket the peer closed.
func (c *closingConn) SetDeadline(t time.Time) error { return c.deadline(c.Conn.SetDeadline, t) }
func (c *closingConn) SetReadDeadline(t time.Time) error {
	return c.deadline(c.Conn.SetReadDeadline, t)
}
func (c *closingConn) SetWriteDeadline(t time.Time) error {
	return c.deadline(c.Conn.SetWriteDeadline, t)
}

func (c *closingConn) deadline(set func(time.Time) error, t time.Time) error {
	if c.closed.Load() {
		return nil
	}
	return set(t)
}

// When Redis's close of an idle connection crosses the next command on it,
// go-redis sends the command again on a new connection (session.redis
// leaves it one retry): the session loads, a login's saves.
func TestRedisClosingAKeptConnectionAsACommandGoesOutFailsNoRequest(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	st := replica(t, srv, testOptions(c))
	fault := &closingAtTheWorstMoment{}
	st.redis.client.AddHook(fault)
	cookies := saveTo(t, st, New(testProfile(), idp.Tokens{}, testOptions(c)))

	fault.closeIdle()
	if loadFrom(t, st, cookies) == nil {
		t.Error("the session did not load")
	}
	fault.closeIdle()
	fresh := saveTo(t, st, New(testProfile(), idp.Tokens{}, testOptions(c)))
	if loadFrom(t, st, fresh) == nil {
		t.Error("the session saved then does not load")
	}
	if n := fault.lost.Load(); n < 2 {
		t.Fatalf("%d commands went out on a closed connection, want 2: the test tested nothing", n)
	}
}
