package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// tlsFixture is a proxy serving TLS on loopback from certificate files, as
// portcullis serve runs it: from a config file it can reload.
type tlsFixture struct {
	*reloadFixture
	addr      string
	cert, key string // the certificate files' paths
}

// newTLSFixture serves pair from files in a directory of its own; the
// files are checked every poll (negative: only when the test says).
func newTLSFixture(t *testing.T, pair testcert.Pair, poll time.Duration) *tlsFixture {
	t.Helper()
	dir := t.TempDir()
	tf := &tlsFixture{cert: filepath.Join(dir, "tls.crt"), key: filepath.Join(dir, "tls.key")}
	tf.writePair(t, pair)
	tf.reloadFixture = newReloadFixtureFrom(t, withTLS(testConfig, tf.cert, tf.key))
	tf.live.certPoll = poll
	tf.addr = serveLive(t, tf.live)
	tf.certs(t)
	return tf
}

// withTLS is config y serving TLS from certFile and keyFile.
func withTLS(y, certFile, keyFile string) string {
	y = tlsLine.ReplaceAllString(y, "")
	return strings.Replace(y, "server:\n", "server:\n  tls: {cert_file: "+certFile+", key_file: "+keyFile+"}\n", 1)
}

var tlsLine = regexp.MustCompile(`(?m)^  tls: \{cert_file: .*\n`)

// writePair overwrites the certificate files in place.
func (tf *tlsFixture) writePair(t *testing.T, pair testcert.Pair) {
	t.Helper()
	pair.Write(t, tf.cert, tf.key)
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// served is the common name of the certificate a new connection gets, and
// the protocol it negotiates.
func (tf *tlsFixture) served(t *testing.T) (name, proto string) {
	t.Helper()
	// A fresh tls.Config has no session cache: every connection is a full
	// handshake, never a resumption of one that saw an older certificate.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", tf.addr,
		&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st := conn.ConnectionState()
	return st.PeerCertificates[0].Subject.CommonName, st.NegotiatedProtocol
}

func (tf *tlsFixture) wantServed(t *testing.T, want string) {
	t.Helper()
	if got, _ := tf.served(t); got != want {
		t.Fatalf("a new connection gets the certificate of %q, want %q", got, want)
	}
}

// certs is what the listener serves, once serveOn has loaded it.
func (tf *tlsFixture) certs(t *testing.T) *certificate {
	t.Helper()
	tf.served(t) // serveOn loads the certificate before it serves
	tf.live.mu.Lock()
	defer tf.live.mu.Unlock()
	return tf.live.certs
}

// warnings are the log lines that refused the certificate files.
func (tf *tlsFixture) warnings(t *testing.T) []map[string]any {
	t.Helper()
	return tf.logs.find(t, map[string]any{"msg": "tls certificate not loaded; the one being served stays"})
}

func TestRenewedCertificateIsServedWithoutRestart(t *testing.T) {
	year := time.Now().Add(365 * 24 * time.Hour)
	a, b := testcert.New(t, "a.example", year), testcert.New(t, "b.example", year.Add(24*time.Hour))

	t.Run("files rewritten in place are served from the next check, over HTTP/2 as before", func(t *testing.T) {
		tf := newTLSFixture(t, a, -1)
		if name, proto := tf.served(t); name != "a.example" || proto != "h2" {
			t.Fatalf("served %q over %q, want a.example over h2", name, proto)
		}
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		resp, err := client.Get("https://" + tf.addr + "/public/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET over TLS: %d", resp.StatusCode)
		}

		tf.writePair(t, b)
		if !tf.certs(t).check("poll") {
			t.Fatal("check did not load the rewritten files")
		}
		tf.wantServed(t, "b.example")
		loaded := tf.logs.find(t, map[string]any{"msg": "tls certificate loaded", "trigger": "poll"})
		if len(loaded) != 1 || loaded[0]["subject"] != "CN=b.example" || loaded[0]["cert_file"] != tf.cert ||
			loaded[0]["not_after"] != b.NotAfter.UTC().Format(time.RFC3339) || !strings.Contains(toString(loaded[0]["sans"]), "127.0.0.1") {
			t.Errorf("no info line naming the new certificate: %v", loaded)
		}

		// Touched, not changed: nothing is loaded again.
		now := time.Now().Add(time.Minute)
		os.Chtimes(tf.cert, now, now)
		if tf.certs(t).check("poll") {
			t.Error("files with the same content were loaded again")
		}
	})

	t.Run("a Kubernetes Secret volume's swap of its ..data link is followed", func(t *testing.T) {
		// What the kubelet does: files in a timestamped directory, ..data
		// linking to it, and each file linking through ..data; an update
		// writes a new directory and renames a new link over ..data.
		vol := t.TempDir()
		version := func(name string, pair testcert.Pair) {
			dir := filepath.Join(vol, name)
			os.Mkdir(dir, 0o755)
			writeFile(t, filepath.Join(dir, "tls.crt"), pair.Cert)
			writeFile(t, filepath.Join(dir, "tls.key"), pair.Key)
			if err := os.Symlink(name, filepath.Join(vol, "..data_tmp")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(vol, "..data_tmp"), filepath.Join(vol, "..data")); err != nil {
				t.Fatal(err)
			}
		}
		version("..2026_01_01_00_00_00.1", a)
		for _, f := range []string{"tls.crt", "tls.key"} {
			if err := os.Symlink(filepath.Join("..data", f), filepath.Join(vol, f)); err != nil {
				t.Fatal(err)
			}
		}
		tf := newTLSFixture(t, a, -1)
		tf.write(t, withTLS(tf.yaml, filepath.Join(vol, "tls.crt"), filepath.Join(vol, "tls.key")))
		if err := tf.live.reload("file"); err != nil {
			t.Fatal(err)
		}
		tf.wantServed(t, "a.example")

		version("..2026_03_01_00_00_00.2", b)
		os.RemoveAll(filepath.Join(vol, "..2026_01_01_00_00_00.1"))
		if !tf.certs(t).check("poll") {
			t.Fatal("check did not load the swapped Secret")
		}
		tf.wantServed(t, "b.example")
	})

	t.Run("a pair that does not load keeps the served one, warns naming the files, and is retried once changed", func(t *testing.T) {
		for _, tc := range []struct {
			name      string
			cert, key []byte
			err       string
		}{
			{"the key of another certificate", b.Cert, testcert.New(t, "c.example", year).Key, "private key does not match public key"},
			{"a half-written certificate", b.Cert[:len(b.Cert)/2], b.Key, "failed to find any PEM data in certificate input"},
			{"garbage", []byte("not a certificate\n"), []byte("nor a key\n"), "failed to find any PEM data"},
			{"an empty key file", b.Cert, nil, "failed to find any PEM data in key input"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tf := newTLSFixture(t, a, -1)
				writeFile(t, tf.cert, tc.cert)
				writeFile(t, tf.key, tc.key)
				if tf.certs(t).check("poll") {
					t.Fatal("a broken pair was loaded")
				}
				tf.wantServed(t, "a.example")
				warned := tf.warnings(t)
				if len(warned) != 1 || warned[0]["level"] != "WARN" || warned[0]["cert_file"] != tf.cert ||
					warned[0]["key_file"] != tf.key || !strings.Contains(toString(warned[0]["err"]), tc.err) {
					t.Fatalf("warning lines %v, want one naming the files and %q", warned, tc.err)
				}
				tf.certs(t).check("poll")
				if n := len(tf.warnings(t)); n != 1 {
					t.Errorf("the same broken pair warned %d times", n)
				}
				tf.writePair(t, b)
				if !tf.certs(t).check("poll") {
					t.Fatal("the repaired pair was not loaded")
				}
				tf.wantServed(t, "b.example")
			})
		}
	})

	t.Run("a missing file keeps the served one and warns once", func(t *testing.T) {
		tf := newTLSFixture(t, a, -1)
		os.Remove(tf.key)
		tf.certs(t).check("poll")
		tf.certs(t).check("poll")
		tf.wantServed(t, "a.example")
		warned := tf.warnings(t)
		if len(warned) != 1 || !strings.Contains(toString(warned[0]["err"]), "read key_file") {
			t.Errorf("warning lines %v, want one about key_file", warned)
		}
	})

	t.Run("a reload re-reads the files, even when it refuses the config", func(t *testing.T) {
		tf := newTLSFixture(t, a, -1)
		tf.writePair(t, b)
		if err := tf.live.reload("signal"); err != nil {
			t.Fatal(err)
		}
		tf.wantServed(t, "b.example")

		c := testcert.New(t, "c.example", year)
		tf.writePair(t, c)
		tf.write(t, strings.Replace(tf.yaml, "default: user", "default: nobody", 1))
		if err := tf.live.reload("signal"); err == nil {
			t.Fatal("bad config accepted")
		}
		tf.wantServed(t, "c.example")
		if n := len(tf.logs.find(t, map[string]any{"msg": "tls certificate loaded", "trigger": "signal"})); n != 2 {
			t.Errorf("%d info lines of a certificate loaded on a signal, want 2", n)
		}
	})

	t.Run("a reload that moves cert_file and key_file serves the new files", func(t *testing.T) {
		tf := newTLSFixture(t, a, -1)
		dir := t.TempDir()
		cert, key := filepath.Join(dir, "b.crt"), filepath.Join(dir, "b.Key")
		writeFile(t, cert, b.Cert)
		writeFile(t, key, b.Key)
		tf.write(t, withTLS(tf.yaml, cert, key))
		if err := tf.live.reload("file"); err != nil {
			t.Fatal(err)
		}
		tf.wantServed(t, "b.example")
		if n := len(tf.logs.find(t, map[string]any{"msg": "config reload: server.listen, server.admin_listen and turning server.tls on or off take effect only after a restart"})); n != 0 {
			t.Errorf("moving the certificate files warned that it needs a restart")
		}

		// Turning TLS off needs a restart: the listener keeps its files.
		tf.write(t, tlsLine.ReplaceAllString(tf.yaml, ""))
		tf.live.reload("file")
		tf.wantServed(t, "b.example")
		if n := len(tf.logs.find(t, map[string]any{"msg": "config reload: server.listen, server.admin_listen and turning server.tls on or off take effect only after a restart"})); n != 1 {
			t.Errorf("turning TLS off did not warn that it needs a restart")
		}
	})

	t.Run("the poll finds a renewal by itself", func(t *testing.T) {
		tf := newTLSFixture(t, a, 20*time.Millisecond)
		tf.wantServed(t, "a.example")
		// Written to new files and renamed over the old, as certbot's
		// and most tools' renewals do, so that no poll reads half a file.
		writeFile(t, tf.cert+".new", b.Cert)
		writeFile(t, tf.key+".new", b.Key)
		os.Rename(tf.key+".new", tf.key)
		os.Rename(tf.cert+".new", tf.cert)
		deadline := time.Now().Add(5 * time.Second)
		for got, _ := tf.served(t); got != "b.example"; got, _ = tf.served(t) {
			if time.Now().After(deadline) {
				t.Fatalf("still serving %q 5 s after the renewal", got)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("the expiry metric follows the certificate served", func(t *testing.T) {
		tf := newTLSFixture(t, a, -1)
		tf.certs(t)
		expiry := func() float64 {
			mf := gather(t, tf.live.cur.Load())["portcullis_tls_certificate_expiry_timestamp_seconds"]
			if mf == nil || len(mf.GetMetric()) != 1 {
				t.Fatalf("portcullis_tls_certificate_expiry_timestamp_seconds: %v", mf)
			}
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
		if got := expiry(); got != float64(a.NotAfter.Unix()) {
			t.Errorf("expiry %v, want %v", got, a.NotAfter.Unix())
		}
		tf.writePair(t, b)
		tf.live.reload("signal")
		if got := expiry(); got != float64(b.NotAfter.Unix()) {
			t.Errorf("after the renewal, expiry %v, want %v", got, b.NotAfter.Unix())
		}
	})

	t.Run("an expired certificate is served when it is all there is, never in place of a valid one", func(t *testing.T) {
		expired := testcert.New(t, "expired.example", time.Now().Add(-time.Hour))
		tf := newTLSFixture(t, expired, -1)
		tf.wantServed(t, "expired.example")
		if n := len(tf.logs.find(t, map[string]any{"msg": "tls certificate has expired; serving it until the files hold a valid one"})); n != 1 {
			t.Errorf("%d warnings that the certificate has expired, want 1", n)
		}
		// In place of one expired too, a renewal that came late is taken.
		late := testcert.New(t, "late.example", time.Now().Add(-time.Minute))
		tf.writePair(t, late)
		if !tf.certs(t).check("poll") {
			t.Fatal("an expired certificate did not replace one expired too")
		}
		tf.wantServed(t, "late.example")
		tf.writePair(t, a)
		tf.certs(t).check("poll")
		tf.wantServed(t, "a.example")

		tf.writePair(t, expired)
		if tf.certs(t).check("poll") {
			t.Fatal("an expired certificate replaced a valid one")
		}
		tf.wantServed(t, "a.example")
		if warned := tf.warnings(t); len(warned) != 1 || !strings.Contains(toString(warned[0]["err"]), "expired") {
			t.Errorf("warning lines %v, want one saying the certificate expired", warned)
		}
	})
}

// TestReloadBeforeServingMovesTheCertificate: a reload that moves the
// certificate files while the listener is starting (the watcher runs before
// serveOn) is served from the new files.
func TestReloadBeforeServingMovesTheCertificate(t *testing.T) {
	year := time.Now().Add(365 * 24 * time.Hour)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")
	testcert.New(t, "a.example", year).Write(t, cert, key)
	rf := newReloadFixtureFrom(t, withTLS(testConfig, cert, key))
	rf.live.certPoll = -1

	moved := filepath.Join(dir, "b.crt")
	testcert.New(t, "b.example", year).Write(t, moved, filepath.Join(dir, "b.key"))
	rf.write(t, withTLS(rf.yaml, moved, filepath.Join(dir, "b.key")))

	// A reload in progress as serveOn starts: the listener waits for it.
	// (The pause lets serveOn get as far as it can first.)
	rf.live.mu.Lock()
	tf := &tlsFixture{reloadFixture: rf, addr: serveLive(t, rf.live)}
	time.Sleep(100 * time.Millisecond)
	prev := rf.live.cur.Load()
	next, err := rf.live.build(prev)
	if err != nil {
		rf.live.mu.Unlock()
		t.Fatal(err)
	}
	rf.live.cur.Store(next)
	prev.stopProviders(next)
	rf.live.reloadCertificate(next.cfg.Server.TLS, "test")
	rf.live.mu.Unlock()

	tf.wantServed(t, "b.example")
}

func TestServeRefusesACertificateThatDoesNotLoad(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	a := testcert.New(t, "a.example", time.Now().Add(time.Hour))
	writeFile(t, cert, a.Cert)
	writeFile(t, key, testcert.New(t, "b.example", time.Now().Add(time.Hour)).Key)
	f, _, _ := newLoggedFixture(t, withTLS(testConfig, cert, key))
	proxyLn, _ := net.Listen("tcp", "127.0.0.1:0")
	adminLn, _ := net.Listen("tcp", "127.0.0.1:0")
	err := f.h.serveOn(context.Background(), proxyLn, adminLn, time.Second)
	if err == nil || !strings.Contains(err.Error(), "server.tls") || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("serve with a key of another certificate: %v", err)
	}
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b := &strings.Builder{}
	for _, e := range v.([]any) {
		b.WriteString(e.(string) + " ")
	}
	return b.String()
}
