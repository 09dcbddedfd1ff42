package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// These tests run the Handler on a real listener (serveOn, as portcullis
// serve does) because WebSocket upgrades and streaming need a real
// connection: a ResponseRecorder can neither be hijacked nor flushed to a
// reader while the handler still runs.

// serve runs f's handler on loopback until the test ends and returns its
// address.
func (f *fixture) serve(t testing.TB) string {
	t.Helper()
	return serveLive(t, newLive(t.Context(), f.h, f.h.log))
}

// serveLive runs l on loopback listeners until the test ends and returns
// the proxy listener's address.
func serveLive(t testing.TB, l *live) string {
	t.Helper()
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveLiveOn(t, l, proxyLn)
}

// serveLiveOn is serveLive on the proxy listener proxyLn.
func serveLiveOn(t testing.TB, l *live, proxyLn net.Listener) string {
	t.Helper()
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.serveOn(ctx, proxyLn, adminLn, time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return proxyLn.Addr().String()
}

// useUpstream points f's proxy at a test server running upstream instead
// of the echo server.
func (f *fixture) useUpstream(t *testing.T, upstream http.Handler) {
	t.Helper()
	srv := httptest.NewServer(upstream)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	f.h.upstreamURL = u
}

func cookieHeader(cookies []*http.Cookie) string {
	parts := make([]string, len(cookies))
	for i, c := range cookies {
		parts[i] = c.Name + "=" + c.Value
	}
	return strings.Join(parts, "; ")
}

// switcher is an upstream that switches protocols whenever asked to, to
// whatever protocol it is asked for, then greets and echoes every byte.
// It accepts an h2c upgrade as readily as a WebSocket one, so only the
// proxy stands between a client and an h2c connection.
type switcher struct {
	mu   sync.Mutex
	seen []http.Header
}

const greeting = "hello from upstream\n"

func (s *switcher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.seen = append(s.seen, r.Header.Clone())
	s.mu.Unlock()
	proto, _, _ := strings.Cut(r.Header.Get("Upgrade"), ",")
	if proto == "" {
		io.WriteString(w, "no upgrade asked for\n")
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n%s", strings.TrimSpace(proto), greeting)
	if brw.Flush() != nil {
		return
	}
	io.Copy(conn, brw.Reader)
}

func (s *switcher) requests() []http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]http.Header(nil), s.seen...)
}

// rawRequest sends a GET for path with the given header lines on a new
// connection to addr and reads the response head. The connection stays open
// for what follows a 101.
func rawRequest(t *testing.T, addr, path string, headers ...string) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: cvat.example.com\r\n", path)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return resp, conn, br
}

var webSocketHeaders = []string{
	"Connection: Upgrade",
	"Upgrade: websocket",
	"Sec-WebSocket-Version: 13",
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
}

// A WebSocket upgrade with a session passes, the upstream learns who the
// user is, and bytes flow both ways over the switched connection.
func TestWebSocketUpgradeWithSessionPasses(t *testing.T) {
	f := newFixture(t)
	up := &switcher{}
	f.useUpstream(t, up)
	addr := f.serve(t)
	alice := f.login(t, "alice@example.com", "cvat-admins")

	resp, conn, br := rawRequest(t, addr, "/ws/notifications", append(webSocketHeaders, "Cookie: "+cookieHeader(alice)+"; csrftoken=app")...)
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		t.Fatalf("status %d Upgrade %q, want 101 websocket", resp.StatusCode, resp.Header.Get("Upgrade"))
	}
	// Upstream to client, before the client has sent anything.
	line, err := br.ReadString('\n')
	if err != nil || line != greeting {
		t.Fatalf("read greeting: %q %v", line, err)
	}
	// Client to upstream and back: more than any buffer along the way holds.
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	werr := make(chan error, 1)
	go func() { _, err := conn.Write(payload); werr <- err }()
	echoed := make([]byte, len(payload))
	if _, err := io.ReadFull(br, echoed); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(echoed, payload) {
		t.Fatal("echoed bytes differ from the bytes sent")
	}

	seen := up.requests()
	if len(seen) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(seen))
	}
	if got := seen[0].Get("X-Email"); got != "alice@example.com" {
		t.Errorf("upstream X-Email = %q, want alice@example.com", got)
	}
	if c := seen[0].Get("Cookie"); strings.Contains(c, "portcullis") || !strings.Contains(c, "csrftoken=app") {
		t.Errorf("upstream Cookie = %q, want the application's cookie only", c)
	}
}

// The Upgrade token is case-insensitive (RFC 9110 7.8): a client that spells
// it WebSocket gets its connection, as one that spells it websocket does.
func TestWebSocketUpgradeTokenInAnyCase(t *testing.T) {
	f := newFixture(t)
	f.useUpstream(t, &switcher{})
	addr := f.serve(t)
	alice := f.login(t, "alice@example.com", "cvat-admins")
	headers := slices.Clone(webSocketHeaders)
	headers[slices.Index(headers, "Upgrade: websocket")] = "Upgrade: WebSocket"
	resp, _, _ := rawRequest(t, addr, "/ws/notifications", append(headers, "Cookie: "+cookieHeader(alice))...)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
}

// An upgrade is a request like any other: it needs what its rule needs, and
// a refused one never reaches the upstream.
func TestWebSocketUpgradeFollowsTheRules(t *testing.T) {
	f := newFixture(t)
	up := &switcher{}
	f.useUpstream(t, up)
	addr := f.serve(t)
	bob := f.login(t, "bob@example.com")
	for _, tc := range []struct {
		name     string
		path     string
		headers  []string
		status   int
		reached  bool
		identity string // X-Email the upstream must see
	}{
		{"without a session the upgrade is refused", "/ws", nil, http.StatusUnauthorized, false, ""},
		{"with a tampered session the upgrade is refused", "/ws", []string{"Cookie: __Host-portcullis=bm9wZQ"}, http.StatusUnauthorized, false, ""},
		{"a non-admin cannot upgrade on an admin route", "/admin/ws", []string{"Cookie: " + cookieHeader(bob)}, http.StatusForbidden, false, ""},
		{"a deny rule refuses the upgrade", "/blocked", []string{"Cookie: " + cookieHeader(bob)}, http.StatusForbidden, false, ""},
		{"a user upgrades on an ordinary route", "/ws", []string{"Cookie: " + cookieHeader(bob)}, http.StatusSwitchingProtocols, true, "bob@example.com"},
		{"an API client with its own token upgrades with no identity", "/api/ws", []string{"Authorization: Token abc", "X-Email: evil@example.com"}, http.StatusSwitchingProtocols, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(up.requests())
			resp, _, _ := rawRequest(t, addr, tc.path, append(webSocketHeaders, tc.headers...)...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			seen := up.requests()[before:]
			if reached := len(seen) > 0; reached != tc.reached {
				t.Fatalf("reached upstream %v, want %v", reached, tc.reached)
			}
			if tc.reached && seen[0].Get("X-Email") != tc.identity {
				t.Errorf("upstream X-Email = %q, want %q", seen[0].Get("X-Email"), tc.identity)
			}
		})
	}
}

// An h2c upgrade would hand the client a connection to the upstream on which
// later requests skip the proxy's checks: it never switches, in any spelling,
// even though this upstream would accept it.
func TestH2CUpgradeNeverSwitches(t *testing.T) {
	f := newFixture(t)
	up := &switcher{}
	f.useUpstream(t, up)
	addr := f.serve(t)
	alice := f.login(t, "alice@example.com", "cvat-admins")
	settings := "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"
	for _, tc := range []struct {
		name    string
		path    string
		headers []string
	}{
		{"h2c with a session", "/tasks", []string{"Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", settings}},
		{"upper-case H2C", "/tasks", []string{"Connection: Upgrade, HTTP2-Settings", "Upgrade: H2C", settings}},
		{"h2c listed before websocket", "/tasks", []string{"Connection: Upgrade", "Upgrade: h2c, websocket", settings}},
		{"h2c listed after websocket", "/tasks", []string{"Connection: Upgrade", "Upgrade: websocket, h2c", settings}},
		{"h2c on a second Upgrade line", "/tasks", []string{"Connection: Upgrade", "Upgrade: h2c", "Upgrade: websocket", settings}},
		{"h2c on a bypassed route", "/api/tasks", []string{"Authorization: Basic YTpi", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", settings}},
		{"h2c on a public route", "/public/app.js", []string{"Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", settings}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(up.requests())
			resp, _, _ := rawRequest(t, addr, tc.path, append(tc.headers, "Cookie: "+cookieHeader(alice))...)
			if resp.StatusCode == http.StatusSwitchingProtocols {
				t.Fatalf("switched protocols to %q", resp.Header.Get("Upgrade"))
			}
			for _, h := range up.requests()[before:] {
				for _, name := range []string{"Upgrade", "Http2-Settings"} {
					if v := h.Values(name); len(v) > 0 {
						t.Errorf("upstream got %s: %q", name, v)
					}
				}
			}
		})
	}
}

const streamSize = 64 << 20

// pattern is the deterministic content streamed in 1 MiB pieces.
var pattern = func() []byte {
	b := make([]byte, 1<<20)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}()

func expectedSum() [sha256.Size]byte {
	h := sha256.New()
	for range streamSize / len(pattern) {
		h.Write(pattern)
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// A large upload streams through: the upstream starts receiving while the
// client is still sending, and gets every byte. The client holds back all
// but the first MiB until the upstream reports it has bytes, so a proxy that
// buffered the body would never let this finish.
func TestUploadStreamsToTheUpstream(t *testing.T) {
	f := newFixture(t)
	firstBytes := make(chan struct{})
	type result struct {
		n     int64
		sum   [sha256.Size]byte
		email string
	}
	got := make(chan result, 1)
	f.useUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		buf := make([]byte, 32<<10)
		n, err := r.Body.Read(buf)
		if n == 0 {
			http.Error(w, fmt.Sprintf("no first bytes: %v", err), http.StatusBadRequest)
			return
		}
		close(firstBytes)
		h.Write(buf[:n])
		rest, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- result{int64(n) + rest, [sha256.Size]byte(h.Sum(nil)), r.Header.Get("X-Email")}
	}))
	addr := f.serve(t)

	body, pw := io.Pipe()
	go func() {
		pw.Write(pattern)
		select {
		case <-firstBytes:
		case <-time.After(5 * time.Second):
			pw.CloseWithError(errors.New("the upstream received nothing while the client was still sending"))
			return
		}
		for range streamSize/len(pattern) - 1 {
			if _, err := pw.Write(pattern); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, err := http.NewRequest("POST", "http://"+addr+"/tasks/1/data", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Cookie", cookieHeader(f.login(t, "alice@example.com")))
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	r := <-got
	if r.n != streamSize || r.sum != expectedSum() {
		t.Fatalf("upstream got %d bytes (content intact: %v), want %d", r.n, r.sum == expectedSum(), streamSize)
	}
	if r.email != "alice@example.com" {
		t.Errorf("upstream X-Email = %q, want alice@example.com", r.email)
	}
}

// A large download streams to the client: the client reads its first bytes
// while the upstream is still writing, and gets every byte. The upstream
// holds back all but the first MiB until the client reports it has bytes, so
// a proxy that buffered the response would never let this finish.
func TestDownloadStreamsToTheClient(t *testing.T) {
	for _, tc := range []struct {
		name          string
		contentLength bool
	}{
		{"with Content-Length", true},
		{"chunked", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			clientHasBytes := make(chan struct{})
			var upstreamDone atomic.Bool
			f.useUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer upstreamDone.Store(true)
				if tc.contentLength {
					w.Header().Set("Content-Length", fmt.Sprint(streamSize))
				}
				w.Write(pattern)
				http.NewResponseController(w).Flush()
				select {
				case <-clientHasBytes:
				case <-time.After(5 * time.Second):
					return // the client never saw the first MiB: give up, truncated
				}
				for range streamSize/len(pattern) - 1 {
					if _, err := w.Write(pattern); err != nil {
						return
					}
				}
			}))
			addr := f.serve(t)

			req, err := http.NewRequest("GET", "http://"+addr+"/tasks/1/data", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Cookie", cookieHeader(f.login(t, "alice@example.com")))
			client := &http.Client{Transport: &http.Transport{}}
			t.Cleanup(client.CloseIdleConnections)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			h := sha256.New()
			first := make([]byte, 64<<10)
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatalf("read first bytes: %v", err)
			}
			if upstreamDone.Load() {
				t.Fatal("the first bytes arrived only after the upstream had finished")
			}
			close(clientHasBytes)
			h.Write(first)
			rest, err := io.Copy(h, resp.Body)
			if err != nil {
				t.Fatalf("read the rest: %v", err)
			}
			if n := int64(len(first)) + rest; n != streamSize || [sha256.Size]byte(h.Sum(nil)) != expectedSum() {
				t.Fatalf("client got %d bytes, want %d intact", n, streamSize)
			}
		})
	}
}
