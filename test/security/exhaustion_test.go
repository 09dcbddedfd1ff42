package security

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowloris dribbles a request head one header a second, starting with the
// suite, and reports how long the proxy kept the connection open. Run from
// TestMain so that its ten seconds overlap the rest of the suite.
var slowloris = make(chan time.Duration, 1)

func startSlowloris() {
	c, err := net.Dial("tcp", suite.proxy)
	if err != nil {
		slowloris <- -1
		return
	}
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c) // returns when the proxy closes the connection
		close(closed)
	}()
	go func() {
		defer c.Close()
		fmt.Fprintf(c, "GET /public/x HTTP/1.1\r\nHost: %s\r\n", suite.proxy)
		for i := 0; ; i++ {
			select {
			case <-closed:
				slowloris <- time.Since(start)
				return
			case <-time.After(time.Second):
			}
			if time.Since(start) > 30*time.Second {
				slowloris <- time.Since(start)
				return
			}
			fmt.Fprintf(c, "X-Slow-%d: %d\r\n", i, i)
		}
	}()
}

// healthy asserts the proxy still answers an ordinary request promptly.
func healthy(t *testing.T) {
	t.Helper()
	start := time.Now()
	r := do(t, rq{target: "/public/health"})
	if r.Status != 200 || len(r.Upstream) != 1 {
		t.Errorf("ordinary request: %s", fmtReply(r))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("ordinary request took %v", d)
	}
}

// bigBody sends a head announcing size bytes of body (or chunked when size is
// negative) to target, then streams body until the proxy answers or closes.
// It returns the answer, how long it took and how much body went out.
func bigBody(t *testing.T, method, target string, size int64, headers ...string) (reply, time.Duration, int64) {
	t.Helper()
	c := dial(t, "")
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	framing := fmt.Sprintf("Content-Length: %d", size)
	if size < 0 {
		framing = "Transfer-Encoding: chunked"
	}
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\n%s\r\n", method, target, suite.proxy, framing)
	for _, h := range headers {
		io.WriteString(c, h+"\r\n")
	}
	io.WriteString(c, "\r\n")
	start := time.Now()
	var sent int64
	var mu sync.Mutex
	stop := make(chan struct{})
	go func() {
		piece := []byte("rd=" + strings.Repeat("a", 64<<10-3))
		if size < 0 {
			piece = []byte(fmt.Sprintf("%x\r\n%s\r\n", 64<<10, strings.Repeat("a", 64<<10)))
		}
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := c.Write(piece)
			mu.Lock()
			sent += int64(n)
			mu.Unlock()
			if err != nil || (size >= 0 && sent >= size) {
				return
			}
		}
	}()
	r := readReply(bufio.NewReader(c), method)
	d := time.Since(start)
	close(stop)
	mu.Lock()
	defer mu.Unlock()
	return r, d, sent
}

// The proxy keeps serving, and its memory stays bounded, under request
// floods, oversized heads and bodies, and slow clients.
func TestResourceExhaustion(t *testing.T) {
	rssBefore := proxyRSS(t)

	for _, tc := range []struct {
		name string
		head string
	}{
		{"one 2 MB header", "X-Big: " + strings.Repeat("a", 2<<20) + "\r\n"},
		{"2 MB of small headers", strings.Repeat("X-A: b\r\n", 2<<20/8)},
		{"2 MB cookie", "Cookie: portcullis=" + strings.Repeat("A", 2<<20) + "\r\n"},
		{"2 MB request-target", ""},
	} {
		t.Run(tc.name+" is refused with 431 or a closed connection", func(t *testing.T) {
			c := dial(t, "")
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			target := "/app/x"
			if tc.head == "" {
				target = "/public/" + strings.Repeat("a", 2<<20)
			}
			go fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", target, suite.proxy, tc.head)
			r := readReply(bufio.NewReader(c), "GET")
			if r.Err == nil && r.Status != http.StatusRequestHeaderFieldsTooLarge && r.Status != http.StatusRequestURITooLong {
				t.Errorf("status %d, want 431", r.Status)
			}
			healthy(t)
		})
	}

	for _, tc := range []struct {
		method, target string
		size           int64
	}{
		{"POST", "/.portcullis/login", 50 << 20},
		{"POST", "/.portcullis/login", -1},
		{"POST", "/.portcullis/logout", 50 << 20},
		{"POST", "/.portcullis/logout", -1},
		{"POST", "/.portcullis/saml/alpha/acs", 50 << 20},
		{"POST", "/.portcullis/oidc/alpha/callback", 50 << 20},
		{"POST", "/.portcullis/userinfo", 50 << 20},
		{"POST", "/.portcullis/login/alpha", 50 << 20},
		{"PUT", "/.portcullis/nope", 50 << 20},
		{"POST", "/app/upload", 50 << 20},
		{"POST", "/admin/upload", -1},
	} {
		framing := "Content-Length"
		if tc.size < 0 {
			framing = "chunked"
		}
		t.Run(fmt.Sprintf("huge %s body to %s %s is cut short", framing, tc.method, tc.target), func(t *testing.T) {
			r, d, sent := bigBody(t, tc.method, tc.target, tc.size, "Accept: application/json")
			if r.Err != nil {
				t.Fatalf("no answer after %v and %d bytes: %v", d, sent, r.Err)
			}
			if r.Status < 400 {
				t.Errorf("status %d, want a refusal", r.Status)
			}
			if d > 3*time.Second || sent > 20<<20 {
				t.Errorf("answered after %v and %d bytes of body; want it refused without reading the body", d, sent)
			}
		})
	}
	healthy(t)

	t.Run("many parallel logins and callbacks while serving", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan string, 1000)
		for i := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				target := "/.portcullis/login/alpha?rd=/x" + fmt.Sprint(i)
				if i%2 == 1 {
					target = "/.portcullis/oidc/alpha/callback?state=AAAAAAAAAAAAAAAAAAAAAA&code=x"
				}
				c, err := net.DialTimeout("tcp", suite.proxy, 5*time.Second)
				if err != nil {
					errs <- err.Error()
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(15 * time.Second))
				fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, suite.proxy)
				r := readReply(bufio.NewReader(c), "GET")
				if r.Err != nil || (r.Status != 302 && r.Status != 400) {
					errs <- fmt.Sprintf("%s: %s", target, fmtReply(r))
				}
			}()
		}
		healthy(t)
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	})

	t.Run("many idle connections do not block service", func(t *testing.T) {
		var conns []net.Conn
		for range 300 {
			c, err := net.Dial("tcp", suite.proxy)
			if err != nil {
				break
			}
			conns = append(conns, c)
		}
		healthy(t)
		for _, c := range conns {
			c.Close()
		}
	})

	rssAfter := proxyRSS(t)
	t.Logf("proxy RSS %d KiB before, %d KiB after", rssBefore, rssAfter)
	if rssAfter-rssBefore > 200<<10 {
		t.Errorf("proxy RSS grew from %d KiB to %d KiB", rssBefore, rssAfter)
	}
}

// A client dribbling its request head is cut off by the header timeout (10s).
// The connection was opened by TestMain; this test is parallel so that it
// runs last, when most of those seconds have passed during the other tests.
func TestResourceExhaustionSlowloris(t *testing.T) {
	t.Parallel()
	d := <-slowloris
	slowloris <- d // for a rerun with -count
	if d < 0 {
		t.Fatal("could not connect")
	}
	if d > 12*time.Second {
		t.Errorf("a head dribbled one header a second kept its connection for %v; want it closed after about 10s", d)
	}
	t.Logf("slowloris connection closed after %v", d.Round(100*time.Millisecond))
}
