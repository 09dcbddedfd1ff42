package proxy

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
)

// keptAliveUpstream is a proxy on loopback whose upstream closes each kept
// connection at the worst moment (staleConnections): just as the next
// request goes out on it, as an application whose keep-alive timeout is
// shorter than upstream.timeouts.idle does once in a while (gunicorn's
// default is 2 s, uvicorn's and Node's 5 s).
type keptAliveUpstream struct {
	base  string
	stale *staleConnections
	logs  *process.Output
	h     *Handler
}

func newKeptAliveUpstream(t *testing.T) *keptAliveUpstream {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" && r.URL.Path == "/public/ws" {
			leakUpstream(w, r)
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %d\n", r.Method, n)
	}))
	t.Cleanup(up.Close)
	y := strings.NewReplacer("UPSTREAM", up.URL, "https://cvat.example.com", "http://127.0.0.1").Replace(testConfig)
	h := newTestHandler(t, y)
	e := &keptAliveUpstream{stale: &staleConnections{}, logs: &process.Output{}, h: h}
	h.transport.DialContext = e.stale.DialContext
	h.log = slog.New(slog.NewJSONHandler(e.logs, nil))
	e.base = newServer(t, h)
	return e
}

// send sends r (a fresh connection each time, as many browsers' would be)
// and returns the status and the body.
func (e *keptAliveUpstream) send(t *testing.T, method, path string, body io.Reader) (int, string) {
	t.Helper()
	r, err := http.NewRequest(method, e.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Accept", "application/json")
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 20 * time.Second}
	resp, err := c.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// warm leaves a connection to the upstream idle in the proxy's pool.
func (e *keptAliveUpstream) warm(t *testing.T) {
	t.Helper()
	if status, body := e.send(t, "GET", "/public/warm", nil); status != http.StatusOK {
		t.Fatalf("warming up: %d %s", status, body)
	}
}

func (e *keptAliveUpstream) lost(t *testing.T, requestLine string) {
	t.Helper()
	if !slices.Contains(e.stale.lostRequests(), requestLine) {
		t.Fatalf("%q never went out on a closed connection (lost: %q): the test tested nothing", requestLine, e.stale.lostRequests())
	}
}

// A request that may be sent twice and that went out on a kept connection
// the application closed is sent again by Go's transport on a new one: the
// client sees the application's answer.
func TestUpstreamClosingAKeptConnectionResendsWhatIsSafeToResend(t *testing.T) {
	for _, method := range []string{"GET", "HEAD"} {
		t.Run(method, func(t *testing.T) {
			e := newKeptAliveUpstream(t)
			e.warm(t)
			if status, body := e.send(t, method, "/public/page", nil); status != http.StatusOK {
				t.Fatalf("%s: %d %s", method, status, body)
			}
			e.lost(t, method+" /public/page HTTP/1.1")
		})
	}
	t.Run("WebSocket upgrade", func(t *testing.T) {
		// An upgrade is pooled apart from other requests (Go dials it as
		// HTTP/1 only), so it meets a kept connection only after an upgrade
		// the application answered without switching.
		e := newKeptAliveUpstream(t)
		upgrade := func(path string) string {
			conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			return resp.Status
		}
		if got := upgrade("/public/not-a-socket"); got != "200 OK" {
			t.Fatalf("upgrade the application refused: %s", got)
		}
		if got := upgrade("/public/ws"); got != "101 Switching Protocols" {
			t.Fatalf("upgrade: %s", got)
		}
		e.lost(t, "GET /public/ws HTTP/1.1")
	})
}

// A request that must not be sent twice (a POST, PUT, PATCH, DELETE) and
// that went out on a kept connection the application closed is not sent
// again: the proxy cannot tell that close from an application that died
// while it was acting on the request, and nginx, Traefik and Caddy do not
// send it again either. The client gets the 502, and the warning says what
// happened and what to change, so that an operator who sees these now and
// then on form posts does not have to guess.
func TestUpstreamClosingAKeptConnectionOnAPostIsExplained(t *testing.T) {
	for _, tc := range []struct {
		name string
		body func() io.Reader
	}{
		{"small body", func() io.Reader { return strings.NewReader("title=report") }},
		{"streamed 4 MiB body", func() io.Reader {
			pr, pw := io.Pipe()
			go func() { pw.Write(make([]byte, 4<<20)); pw.Close() }()
			return pr
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newKeptAliveUpstream(t)
			e.warm(t)
			status, body := e.send(t, "POST", "/public/form", tc.body())
			if status != http.StatusBadGateway {
				t.Fatalf("POST: %d %s, want 502", status, body)
			}
			e.lost(t, "POST /public/form HTTP/1.1")
			checkCounter(t, gather(t, e.h), "portcullis_upstream_errors_total", nil, 1)
			lines := e.logs.String()
			for _, want := range []string{`"msg":"upstream request failed"`, `"method":"POST"`, `"idle_for":`,
				`keep-alive timeout`, `upstream.timeouts.idle (now 1m30s)`} {
				if !strings.Contains(lines, want) {
					t.Errorf("the warning lacks %s:\n%s", want, lines)
				}
			}
		})
	}
}
