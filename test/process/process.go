// Package process holds what the test servers that run as child processes
// (oidc-provider, slapd, ns-slapd, redis-server, the front proxies) need
// alike: a free loopback port to start on, their program found where
// Debian puts it, a start that waits until they serve, and a place for the
// process's output that tests can read while it is still being written;
// and the resident memory of a process, which the security suite and the
// load run's commands measure.
package process

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FreePort returns a loopback port that was free a moment ago, for a server
// whose address must be known before it starts. It is taken below the
// kernel's ephemeral range, where no outgoing connection gets its source
// port: a port from there (the kernel's pick for ":0") was once taken by a
// client connection between FreePort and the server's start (EADDRINUSE).
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	return port
}

// FreeAddr is FreePort as 127.0.0.1:port, for a caller with no test to
// fail (TestMain).
func FreeAddr() (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(port), nil
}

func freePort() (int, error) {
	low := ephemeralLow()
	for range 100 {
		port := freePortBase + rand.IntN(low-freePortBase)
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			l.Close()
			return port, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freePortBase is where FreePort's ports start: above the fixed ports the
// demo and the load run use (9772, 197xx, 198xx).
const freePortBase = 20000

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default: 32768).
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > freePortBase+1000 {
				low = n
			}
		}
	}
	return low
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

// Awaits reports whether s has been written, waiting up to limit for it:
// a child's log line comes through its pipe on its own time, and may
// arrive after the answer it explains.
func (o *Output) Awaits(s string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for !strings.Contains(o.String(), s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// RSS is the resident memory of process pid in bytes (0 when pid is 0).
func RSS(pid int) (int64, error) {
	if pid == 0 {
		return 0, nil
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
