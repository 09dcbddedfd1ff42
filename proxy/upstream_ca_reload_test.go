package proxy

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// TestUpstreamCAFileAtReload: upstream.tls.ca_file is read again at every
// reload, the config file unchanged (a renewed CA is trusted after a
// SIGHUP); a file that holds no certificate is refused, naming the key,
// and the running transport keeps serving; a request in flight when the
// transport is replaced finishes on the old one.
func TestUpstreamCAFileAtReload(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	app := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/public/slow" {
			close(arrived)
			<-release
		}
		w.Write([]byte("app"))
	}))
	t.Cleanup(app.Close)
	appCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: app.Certificate().Raw})
	otherCA := testcert.NewCA(t, "another CA").PEM
	ca := filepath.Join(t.TempDir(), "ca.pem")
	writeCA := func(b []byte) {
		t.Helper()
		if err := os.WriteFile(ca, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCA(otherCA)
	y := strings.Replace(testConfig, "UPSTREAM", app.URL, 1)
	y = strings.Replace(y, "  logout_cookies:", "  tls: {ca_file: "+ca+"}\n  logout_cookies:", 1)
	rf := newReloadFixtureFrom(t, y)
	if resp := rf.get(t, "/public/x", nil); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("with a CA that did not sign the app's certificate: %d, want 502", resp.StatusCode)
	}

	writeCA(appCA)
	if err := rf.live.reload("signal"); err != nil {
		t.Fatal(err)
	}
	if resp := rf.get(t, "/public/x", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("after the CA file changed and a reload: %d, want 200", resp.StatusCode)
	}

	writeCA([]byte("not a certificate\n"))
	err := rf.live.reload("signal")
	if err == nil || !strings.Contains(err.Error(), "upstream.tls.ca_file") {
		t.Fatalf("a CA file with no certificate: reload error %v, want one naming upstream.tls.ca_file", err)
	}
	if resp := rf.get(t, "/public/x", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("after a refused reload: %d, want 200 from the running configuration", resp.StatusCode)
	}

	slow := make(chan int, 1)
	go func() { slow <- rf.get(t, "/public/slow", nil).StatusCode }()
	<-arrived
	writeCA(append(append([]byte{}, appCA...), otherCA...))
	before := rf.live.cur.Load().transport
	if err := rf.live.reload("signal"); err != nil {
		t.Fatal(err)
	}
	if rf.live.cur.Load().transport == before {
		t.Fatal("the CA file changed and the reload kept the transport that trusts the old one")
	}
	close(release)
	if code := <-slow; code != http.StatusOK {
		t.Errorf("a request in flight across the transport's replacement: %d, want 200", code)
	}
}

// upstreamTransport reads upstream.tls.ca_file itself (the check read it
// before, and it may have gone or changed since): one it cannot read is
// an error naming the key, never the system's CAs trusted in its place.
func TestUpstreamTransportRefusesAnUnreadableCAFile(t *testing.T) {
	c := UpstreamConfig{TLS: UpstreamTLS{CAFile: filepath.Join(t.TempDir(), "gone.pem")}}
	tr, _, err := upstreamTransport(c, nil)
	if err == nil || !strings.Contains(err.Error(), "upstream.tls.ca_file") {
		t.Fatalf("upstreamTransport: %v, %v; want an error of upstream.tls.ca_file", tr, err)
	}
}
