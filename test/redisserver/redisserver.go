// Package redisserver runs a throwaway redis-server (Debian's redis-server
// package) on loopback for tests: no persistence, so a restart loses every
// key, as a Redis without persistence does when it restarts (but see
// StartPersistent).
package redisserver

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// Server is a running redis-server.
type Server struct {
	// Addr is host:port; it stays the same across Restart.
	Addr string
	// URL is redis://Addr/0, or rediss://Addr/0 when it serves TLS only.
	URL string
	// CAFile is the PEM file of the CA that signed its certificate, when
	// it serves TLS; ClientCert and ClientKey are a pair that CA signed
	// for clients (Options.ClientCerts).
	CAFile, ClientCert, ClientKey string

	t      testing.TB
	port   int
	args   []string    // besides the loopback, no-persistence ones
	tls    *tls.Config // how answers dials it; nil for plain TCP
	mu     sync.Mutex
	cmd    *exec.Cmd
	done   <-chan struct{}
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

// Options are the ways operators run Redis that StartWith sets up; the
// zero value is Start's Redis.
type Options struct {
	// TLS serves TLS only (--port 0 --tls-port), as managed Redis with
	// in-transit encryption does, with a certificate signed by a CA of the
	// test's (CAFile).
	TLS bool
	// ClientCerts makes TLS require a client certificate signed by that
	// CA (--tls-auth-clients yes); ClientCert and ClientKey are one.
	ClientCerts bool
	// Args are more redis-server arguments (--requirepass, --user,
	// --maxmemory, --replicaof…).
	Args []string
}

// StartWith is Start with opts.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	if !opts.TLS {
		return startWith(t, opts.Args...)
	}
	dir := t.TempDir()
	ca := testcert.NewCA(t, "redis test CA")
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "redis.pem"), filepath.Join(dir, "redis.key")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatalf("redisserver: %v", err)
	}
	ca.Issue(t, "localhost", time.Now().Add(time.Hour)).Write(t, certFile, keyFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	tc := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	auth := "no"
	var clientCert, clientKey string
	if opts.ClientCerts {
		auth = "yes"
		clientCert, clientKey = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
		ca.IssueClient(t, "portcullis", time.Now().Add(time.Hour)).Write(t, clientCert, clientKey)
		pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
		if err != nil {
			t.Fatalf("redisserver: %v", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	s := newServer(t, append([]string{"--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", caFile, "--tls-auth-clients", auth}, opts.Args...)...)
	s.tls, s.URL = tc, "rediss://"+s.Addr+"/0"
	s.CAFile, s.ClientCert, s.ClientKey = caFile, clientCert, clientKey
	s.start()
	return s
}

// startWith is Start with more redis-server arguments.
func startWith(t testing.TB, args ...string) *Server {
	t.Helper()
	s := newServer(t, args...)
	s.start()
	return s
}

// newServer is the Server of args on a free port, not started.
func newServer(t testing.TB, args ...string) *Server {
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
	return s
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatalf("redisserver: already running")
	}
	port := []string{"--port", strconv.Itoa(s.port)}
	if s.tls != nil {
		port = []string{"--port", "0", "--tls-port", strconv.Itoa(s.port)}
	}
	cmd := exec.Command("redis-server", append(append(port,
		"--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--protected-mode", "no", "--loglevel", "warning"), s.args...)...)
	cmd.Stdout, cmd.Stderr = &s.output, &s.output
	done, err := process.Start(cmd, s.answers, 10*time.Second)
	if err != nil {
		s.t.Fatalf("redisserver: redis-server: %v:\n%s", err, s.output.String())
	}
	s.cmd, s.done = cmd, done
}

// answers reports whether a PING gets PONG, or the NOAUTH of a Redis
// that wants a password first.
func (s *Server) answers() bool {
	var c net.Conn
	var err error
	if s.tls != nil {
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", s.Addr, s.tls)
	} else {
		c, err = net.DialTimeout("tcp", s.Addr, time.Second)
	}
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
	return string(buf[:n]) == "+PONG\r\n" || string(buf[:n]) == "-NOAUTH"
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

// Pause stops redis-server with SIGSTOP, as a Redis that stalls does (a
// long fork or swap, a frozen VM, a network that drops packets): the
// kernel still takes connections and the bytes sent on them, and nothing
// answers until Resume. The test's end resumes it, whatever it did.
func (s *Server) Pause() {
	s.t.Helper()
	s.signal(syscall.SIGSTOP)
	s.t.Cleanup(s.Resume)
}

// Resume continues a paused redis-server (SIGCONT): it then reads and
// answers, in order, whatever was sent to it meanwhile, on connections
// their clients may have closed. It is safe to call more than once.
func (s *Server) Resume() {
	s.signal(syscall.SIGCONT)
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Errorf("redisserver: %v: %v", sig, err)
	}
}

// Running reports whether redis-server runs (it was not stopped).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}
