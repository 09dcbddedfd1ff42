// Package redisserver runs a throwaway redis-server (Debian's redis-server
// package) on loopback for tests: no persistence, so a restart loses every
// key, as a Redis without persistence does when it restarts (but see
// StartPersistent).
package redisserver

import (
	"net"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
)

// Server is a running redis-server.
type Server struct {
	// Addr is host:port; it stays the same across Restart.
	Addr string
	// URL is redis://Addr/0.
	URL string

	t      testing.TB
	port   int
	args   []string // besides the loopback, no-persistence ones
	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	output process.Output
}

// Start runs redis-server on a free loopback port and stops it when the test
// ends. It fails the test when redis-server is not installed.
func Start(t testing.TB) *Server {
	t.Helper()
	return startWith(t)
}

// StartPersistent is Start with an append-only file in a temporary directory,
// written through at every write (appendfsync always): a Stop, which kills
// redis-server as a crash would, and a Start or Restart bring every key
// back, as for a Redis with persistence that restarts after a crash.
func StartPersistent(t testing.TB) *Server {
	t.Helper()
	return startWith(t, "--dir", t.TempDir(), "--appendonly", "yes", "--appendfsync", "always")
}

// startWith is Start with more redis-server arguments.
func startWith(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redisserver: redis-server is not installed (apt-get install redis-server): %v", err)
	}
	s := &Server{t: t, port: process.FreePort(t), args: args}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	s.URL = "redis://" + s.Addr + "/0"
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("redisserver: output:\n%s", s.output.String())
		}
	})
	s.start()
	return s
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatalf("redisserver: already running")
	}
	cmd := exec.Command("redis-server", append([]string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--protected-mode", "no", "--loglevel", "warning"}, s.args...)...)
	cmd.Stdout, cmd.Stderr = &s.output, &s.output
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("redisserver: start: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !s.answers() {
		select {
		case <-done:
			s.t.Fatalf("redisserver: redis-server exited at start:\n%s", s.output.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			s.t.Fatalf("redisserver: not answering after 10s:\n%s", s.output.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd, s.done = cmd, done
}

// answers reports whether a PING gets PONG.
func (s *Server) answers() bool {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	buf := make([]byte, 7)
	n, _ := c.Read(buf)
	return string(buf[:n]) == "+PONG\r\n"
}

// Stop kills redis-server with SIGKILL, as a crash or an OOM kill would:
// every key is lost, and its clients' connections are reset. It is safe to
// call more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart stops redis-server and starts it again on the same port: empty,
// unless it was started with StartPersistent.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Start again after Stop, on the same port: empty, unless it was started
// with StartPersistent.
func (s *Server) Start() {
	s.t.Helper()
	s.start()
}

// Running reports whether redis-server runs (it was not stopped).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}
