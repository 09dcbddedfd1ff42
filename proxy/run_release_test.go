package proxy

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// runUntilItFails builds the Handler of shutdownReloadConfig, its sessions
// at srv, with server written into the file's server section, runs it as
// Run does (reloaded from the file), and returns the Handler once run
// failed. The context of run does not end before the test does: whatever
// run leaves running stays.
func runUntilItFails(t *testing.T, srv *redisserver.Server, server string) (*Handler, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "portcullis.yaml")
	yaml := strings.Replace(shutdownReloadConfig, "REDIS_URL", srv.URL, 1)
	yaml = strings.Replace(yaml, "server:\n", "server:\n"+server, 1)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig([]byte(yaml), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	out := &process.Output{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", out)
		}
	})
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h, err := New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	err = run(ctx, h, ServeOptions{Log: log, ConfigPath: path})
	if err == nil {
		t.Fatal("run returned no error")
	}
	return h, err
}

// running reports whether a goroutine is in fn ("proxy.(*live).watch(").
func running(fn string) bool {
	buf := make([]byte, 1<<20)
	return bytes.Contains(buf[:runtime.Stack(buf, true)], []byte(fn))
}

// assertReleased fails the test when run left h's Redis client open or
// its configuration watcher running.
func assertReleased(t *testing.T, h *Handler) {
	t.Helper()
	if !redisClosed(h) {
		t.Error("the Redis client is still open after run returned")
	}
	if running("proxy.(*live).watch(") {
		t.Error("the configuration watcher is still running after run returned")
	}
}

// Run whose listen address is taken returns the error and leaves nothing
// open or running: not the Handler's Redis client, not the watcher of its
// configuration file.
func TestRunReleasesTheHandlerWhenListenFails(t *testing.T) {
	srv := redisserver.Start(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	h, err := runUntilItFails(t, srv, "  listen: "+busy.Addr().String()+"\n  admin_listen: 127.0.0.1:0\n")
	if !strings.Contains(err.Error(), "server.listen") {
		t.Errorf("Run: %v, want the server.listen error", err)
	}
	assertReleased(t, h)
}

// Run whose certificate (server.tls) cannot be loaded returns the error
// and leaves nothing open or running either.
func TestRunReleasesTheHandlerWhenTheCertificateFails(t *testing.T) {
	srv := redisserver.Start(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, f := range []string{cert, key} {
		if err := os.WriteFile(f, []byte("not PEM\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h, err := runUntilItFails(t, srv, "  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n"+
		"  tls: {cert_file: "+cert+", key_file: "+key+"}\n")
	if !strings.Contains(err.Error(), "server.tls") {
		t.Errorf("run: %v, want the certificate's error", err)
	}
	assertReleased(t, h)
}

// A listener that fails ends serve at once, and with it the watcher of the
// certificate files (server.tls), although the context of serve goes on.
func TestServeStopsTheCertificateWatcherWhenAListenerFails(t *testing.T) {
	srv := redisserver.Start(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testcert.New(t, "cvat.example.com", time.Now().Add(24*time.Hour)).Write(t, cert, key)
	yaml := strings.Replace(shutdownReloadConfig, "REDIS_URL", srv.URL, 1)
	yaml = strings.Replace(yaml, "server:\n", "server:\n  tls: {cert_file: "+cert+", key_file: "+key+"}\n", 1)
	cfg, err := ParseConfig([]byte(yaml), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h, err := New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	returned := make(chan error, 1)
	go func() { returned <- h.serveOn(ctx, proxyLn, adminLn, time.Second) }()
	const watch = "proxy.(*certificate).watch("
	waitFor(t, "the certificate watcher to start", func() bool { return running(watch) })
	adminLn.Close()
	select {
	case err := <-returned:
		if err == nil {
			t.Fatal("serve returned no error after its admin listener closed")
		}
	case <-time.After(time.Minute):
		t.Fatal("serve had not returned after a minute")
	}
	if running(watch) {
		t.Error("the certificate watcher is still running after serve returned")
	}
}
