// Package process holds what the test servers that run as child processes
// (oidc-provider, slapd, redis-server) need alike: a free loopback port to
// start on, and a place for the process's output that tests can read while
// it is still being written.
package process

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// FreePort returns a loopback port that was free a moment ago, for a server
// whose address must be known before it starts.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Output collects a child process's stdout or stderr, written from exec's
// goroutines, so that a failing test can show it.
type Output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

// String is everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}
