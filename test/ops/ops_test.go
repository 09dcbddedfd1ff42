package ops

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/echo"
)

// load drives requests at a proxy until stopped: bypassed and
// authenticated ones, on kept-alive and on fresh connections, and /readyz.
type load struct {
	stopc    chan struct{}
	wg       sync.WaitGroup
	ok       atomic.Int64
	mu       sync.Mutex
	failures []string
}

func startLoad(t *testing.T, p *proc, cookie *http.Cookie) *load {
	t.Helper()
	l := &load{stopc: make(chan struct{})}
	run := func(target string, fresh bool, auth bool) {
		defer l.wg.Done()
		tr := &http.Transport{DisableKeepAlives: fresh}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		for {
			select {
			case <-l.stopc:
				return
			default:
			}
			req, _ := http.NewRequest("GET", target, nil)
			req.Header.Set("Accept", "application/json")
			if auth {
				req.AddCookie(cookie)
			}
			resp, err := c.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			switch {
			case err != nil:
				l.fail(fmt.Sprintf("GET %s: %v", target, err))
			case resp.StatusCode/100 != 2:
				l.fail(fmt.Sprintf("GET %s: %d", target, resp.StatusCode))
			default:
				l.ok.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	l.wg.Add(4)
	go run(p.URL+"/public/x", false, false)
	go run(p.URL+"/tasks", false, true)
	go run(p.URL+"/tasks", true, true)
	go run(p.Admin+"/readyz", true, false) // readiness must not flap during a reload
	return l
}

func (l *load) fail(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, msg)
}

// stop ends the load and fails the test on any failed request.
func (l *load) stop(t *testing.T) {
	t.Helper()
	close(l.stopc)
	l.wg.Wait()
	if len(l.failures) > 0 {
		t.Errorf("%d failed requests during reloads (of %d); first: %v", len(l.failures), l.ok.Load(), l.failures[:min(5, len(l.failures))])
	}
	if l.ok.Load() < 50 {
		t.Errorf("only %d requests succeeded: the load did not run", l.ok.Load())
	}
}

// version asks through the proxy which X-Version the upstream gets now.
func version(t *testing.T, p *proc, cookie *http.Cookie) string {
	t.Helper()
	req, _ := http.NewRequest("GET", p.URL+"/tasks", nil)
	req.Header.Set("Accept", "application/json")
	req.AddCookie(cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got echo.Request
	json.NewDecoder(resp.Body).Decode(&got)
	return got.Header.Get("X-Version")
}

func TestReloadUnderLoadFailsNoRequest(t *testing.T) {
	upSrv := httptest.NewServer(echo.New())
	t.Cleanup(upSrv.Close)
	issuer := fakeIssuer(t)
	cases := []struct {
		name    string
		args    []string
		trigger func(t *testing.T, p *proc)
	}{
		{"by SIGHUP", []string{"--watch-interval", "0"}, func(t *testing.T, p *proc) { p.signal(t, syscall.SIGHUP) }},
		{"by rewriting the file", []string{"--watch-interval", "200ms"}, func(t *testing.T, p *proc) {}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newProc(t, map[string]string{"UPSTREAM": upSrv.URL, "ISSUER": issuer})
			p.start(t, tc.args...)
			eventually(t, 10*time.Second, "ready", func() bool { code, _ := p.ready(t); return code == 200 })
			cookie := mintCookie(t, sessionKey, "alice@example.com")
			l := startLoad(t, p, cookie)

			p.write(t, map[string]string{"VERSION": "two"})
			tc.trigger(t, p)
			eventually(t, 5*time.Second, "new attribute_pass applied", func() bool { return version(t, p, cookie) == "two" })

			// Key rotation: a new first key; the old cookie keeps working.
			p.write(t, map[string]string{"KEYS": newKey + ", " + sessionKey, "VERSION": "three"})
			tc.trigger(t, p)
			eventually(t, 5*time.Second, "rotated keys applied", func() bool { return version(t, p, cookie) == "three" })

			p.writeRaw(t, "server: {public_url: not-a-url}\nrules: [{name: x, path: /x, action: explode}]\n")
			tc.trigger(t, p)
			eventually(t, 5*time.Second, "bad config counted", func() bool {
				return p.metric(t, `portcullis_config_reloads_total{result="failure"}`) == 1
			})
			time.Sleep(300 * time.Millisecond) // the old config keeps serving under load
			l.stop(t)

			if got := p.metric(t, `portcullis_config_reloads_total{result="success"}`); got != 2 {
				t.Errorf("config_reloads_total{result=success} = %v, want 2", got)
			}
			log := p.Log.String()
			if !strings.Contains(log, "config reload refused") || !strings.Contains(log, "server.public_url") ||
				!strings.Contains(log, "rules[0].action") {
				t.Errorf("refused reload not logged with every problem:\n%s", log)
			}
			if version(t, p, cookie) != "three" {
				t.Errorf("after a refused reload the last good config no longer serves")
			}
		})
	}
}

func TestShutdownLetsASlowUploadFinish(t *testing.T) {
	started := make(chan struct{})
	var once sync.Once
	upSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var first [1]byte
		n, _ := io.ReadFull(r.Body, first[:])
		once.Do(func() { close(started) })
		rest, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, int64(n)+rest)
	}))
	t.Cleanup(upSrv.Close)
	p := newProc(t, map[string]string{"UPSTREAM": upSrv.URL})
	p.start(t, "--grace", "10s")

	const chunk, chunks = 32 << 10, 15
	pr, pw := io.Pipe()
	go func() {
		b := make([]byte, chunk)
		for i := 0; i < chunks; i++ {
			if _, err := pw.Write(b); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		pw.Close()
	}()
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Post(p.URL+"/public/upload", "application/octet-stream", pr)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{status: resp.StatusCode, body: string(b)}
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the upload never reached the upstream")
	}
	p.signal(t, sigterm)
	eventually(t, 2*time.Second, "stops accepting new connections", func() bool { return connRefused(p.vars["LISTEN"]) })
	r := <-done
	if r.err != nil || r.status != 200 || r.body != strconv.Itoa(chunk*chunks) {
		t.Fatalf("upload during shutdown: %v, status %d, upstream got %s bytes, want %d", r.err, r.status, r.body, chunk*chunks)
	}
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

func TestShutdownClosesWebSocketsAtTheEndOfGrace(t *testing.T) {
	upSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw.Reader) // echo
	}))
	t.Cleanup(upSrv.Close)
	p := newProc(t, map[string]string{"UPSTREAM": upSrv.URL})
	const grace = time.Second
	p.start(t, "--grace", grace.String())

	conn, err := netDial(p.vars["LISTEN"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /public/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", err, resp)
	}
	fmt.Fprint(conn, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("echo over the WebSocket: %q %v", line, err)
	}

	start := time.Now()
	p.signal(t, sigterm)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = br.ReadByte()
	held := time.Since(start)
	if err == nil || isTimeout(err) {
		t.Fatalf("WebSocket still open %s after SIGTERM with --grace %s: %v", held, grace, err)
	}
	if held < grace-200*time.Millisecond {
		t.Errorf("WebSocket closed after %s, before the grace period of %s ended", held, grace)
	}
	if code := p.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

func TestUpstreamStoppedAnswers502AndCounts(t *testing.T) {
	upSrv := httptest.NewServer(echo.New())
	p := newProc(t, map[string]string{"UPSTREAM": upSrv.URL})
	p.start(t)
	get := func(accept string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", p.URL+"/public/x", nil)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	if resp, _ := get("application/json"); resp.StatusCode != 200 {
		t.Fatalf("upstream up: %d", resp.StatusCode)
	}
	upSrv.Close()
	cases := []struct{ accept, wantType, wantBody string }{
		{"application/json", "application/json", `"error":"bad_gateway"`},
		{"text/html", "text/html", "Bad gateway"},
	}
	for _, tc := range cases {
		resp, body := get(tc.accept)
		if resp.StatusCode != http.StatusBadGateway || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.wantType) ||
			!strings.Contains(body, tc.wantBody) {
			t.Errorf("Accept %s with the upstream stopped: %d %s %q", tc.accept, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
	if got := p.metric(t, "portcullis_upstream_errors_total"); got != 2 {
		t.Errorf("upstream_errors_total = %v, want 2", got)
	}
	if got := p.metric(t, `portcullis_requests_total{code="502",decision="bypass"}`); got != 2 {
		t.Errorf(`requests_total{code="502",decision="bypass"} = %v, want 2`, got)
	}
}

// serve runs the garbage collector at 200 % unless the operator sets GOGC
// (issue 6), as its Go collector metrics show.
func TestServeGCTargetAndGOGC(t *testing.T) {
	for _, c := range []struct {
		env  string
		want float64
	}{
		{"GOGC=", 200},
		{"GOGC=100", 100},
		{"GOGC=50", 50},
	} {
		t.Run(c.env, func(t *testing.T) {
			p := newProc(t, nil)
			p.Env = []string{c.env}
			p.start(t)
			if got := p.metric(t, "go_gc_gogc_percent"); got != c.want {
				t.Errorf("%s: go_gc_gogc_percent = %v, want %v", c.env, got, c.want)
			}
		})
	}
}

// At start, portcullis serve logs for each IdP the URLs to register there,
// as oauth2-proxy logs its redirect URL: a redirect URI the IdP lacks stops
// the login at the IdP's error page, and nothing of it reaches this log.
func TestServeLogsTheURLsToRegister(t *testing.T) {
	p := newProc(t, map[string]string{"ISSUER": fakeIssuer(t)})
	p.start(t)
	want := `"msg":"identity provider","idp":"company","protocol":"OIDC","redirect_uri":"` + p.URL + `/.portcullis/oidc/company/callback",` +
		`"backchannel_logout_uri":"` + p.URL + `/.portcullis/oidc/company/backchannel-logout"`
	eventually(t, 10*time.Second, "the URLs to register in the log", func() bool {
		return strings.Contains(p.Log.String(), want)
	})
}
