package proxy

// TestUpstreamVariations puts real servers shaped like the applications
// portcullis sits in front of behind it (CVAT's Django, behind traefik or
// not; a Node server, whose HTTP stack differs from Go's) and checks what
// the application and the browser get, with a session and on a bypassed
// API call.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/testcert"
)

const publicOrigin = "https://cvat.example.com"

// djangoApp is an upstream that reads requests as Django does with CVAT's
// settings: SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https"),
// USE_X_FORWARDED_HOST as set, and the CSRF middleware's checks of a POST
// (Origin, else for https the Referer, against the scheme and host it
// believes; the csrftoken cookie against X-CSRFToken).
type djangoApp struct {
	useForwardedHost bool
	prefix           string // where the app is mounted (FORCE_SCRIPT_NAME)
}

func (d djangoApp) host(r *http.Request) string {
	if h := r.Header.Get("X-Forwarded-Host"); d.useForwardedHost && h != "" {
		return h
	}
	return r.Host
}

func (d djangoApp) origin(r *http.Request) string {
	scheme := "http"
	if r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + d.host(r)
}

func (d djangoApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimPrefix(r.URL.Path, d.prefix) {
	case "/":
		http.SetCookie(w, &http.Cookie{Name: "csrftoken", Value: "tok123", Path: "/", SameSite: http.SameSiteLaxMode, Secure: true})
		http.SetCookie(w, &http.Cookie{Name: "sessionid", Value: "app-session", Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: true})
		http.SetCookie(w, &http.Cookie{Name: "django_language", Value: "de", Path: "/", Domain: "cvat.example.com", SameSite: http.SameSiteStrictMode})
		http.SetCookie(w, &http.Cookie{Name: "api_pref", Value: "v2", Path: "/api/"})
		http.SetCookie(w, &http.Cookie{Name: "portcullis_theme", Value: "dark", Path: "/"})
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self' "+strings.Repeat("'sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' ", 300))
		fmt.Fprintf(w, "home %s/api/docs", d.origin(r))
	case "/cookies":
		var names []string
		for _, c := range r.Cookies() {
			names = append(names, c.Name+"="+c.Value)
		}
		io.WriteString(w, strings.Join(names, "; "))
	case "/api/cookies":
		var names []string
		for _, c := range r.Cookies() {
			names = append(names, c.Name+"="+c.Value)
		}
		io.WriteString(w, strings.Join(names, "; "))
	case "/tasks/create":
		// django.middleware.csrf.CsrfViewMiddleware (Django 4+).
		good := d.origin(r)
		if o := r.Header.Get("Origin"); o != "" {
			if o != good {
				http.Error(w, "CSRF Failed: Origin checking failed - "+o+" does not match any trusted origins.", http.StatusForbidden)
				return
			}
		} else if strings.HasPrefix(good, "https:") {
			ref, err := url.Parse(r.Header.Get("Referer"))
			if err != nil || ref.Scheme != "https" || ref.Host != d.host(r) {
				http.Error(w, "CSRF Failed: Referer checking failed", http.StatusForbidden)
				return
			}
		}
		c, err := r.Cookie("csrftoken")
		if err != nil || c.Value != r.Header.Get("X-CSRFToken") {
			http.Error(w, "CSRF Failed: CSRF token missing.", http.StatusForbidden)
			return
		}
		// redirect(request.build_absolute_uri(...)), as views that build
		// the next URL absolute do.
		http.Redirect(w, r, d.origin(r)+"/tasks/1", http.StatusFound)
	case "/auth/login":
		http.Redirect(w, r, "/auth/login/?next=/", http.StatusFound) // relative, as Django's redirect()
	case "/internal-redirect":
		// An app that names its own address, as it knows it.
		http.Redirect(w, r, "http://"+r.Host+d.prefix+"/next", http.StatusFound)
	case "/api/basic":
		w.Header().Set("WWW-Authenticate", `Basic realm="api"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"detail":"Invalid username/password."}`)
	case "/forbidden":
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, "<h1>403 Forbidden (the app's)</h1>")
	case "/crash":
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, "<h1>Server Error (500) (the app's)</h1>")
	case "/not-modified":
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, "fresh")
	case "/no-content":
		w.WriteHeader(http.StatusNoContent)
	case "/gzip":
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Type", "application/json")
		w.Write(gzipped)
	case "/close-delimited":
		// An HTTP/1.0-style response: no Content-Length, no chunking; the
		// end of the body is the end of the connection.
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
		brw.WriteString(strings.Repeat("x", 100000))
		brw.Flush()
	case "/path":
		io.WriteString(w, r.URL.Path)
	default:
		http.NotFound(w, r)
	}
}

var gzipped = func() []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(bytes.Repeat([]byte(`{"id":1}`), 1000))
	zw.Close()
	return b.Bytes()
}()

// nodeApp is a Node http server (Node's own HTTP stack: chunked by
// default, keepAliveTimeout 5 s, 'checkContinue', 'upgrade'), printing its
// port on stdout.
const nodeApp = `
const http = require('http');
let release;
const server = http.createServer((req, res) => {
  if (req.url === '/events') {
    res.writeHead(200, {'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache'});
    res.write('data: first\n\n');
    release = () => { res.end('data: last\n\n'); };
  } else if (req.url === '/release') {
    if (release) release();
    res.end('released');
  } else if (req.url === '/chunked') {
    res.writeHead(200, {'Content-Type': 'text/plain', 'Trailer': 'X-Checksum'});
    let all = '';
    for (let i = 0; i < 5; i++) { const s = 'part ' + i + '\n'; all += s; res.write(s); }
    res.addTrailers({'X-Checksum': require('crypto').createHash('sha256').update(all).digest('hex')});
    res.end();
  } else {
    let n = 0;
    req.on('data', (c) => { n += c.length; });
    req.on('end', () => res.end(req.method + ' ' + req.url + ' ' + n + ' ' + (req.headers['x-email'] || '-')));
  }
});
server.on('checkContinue', (req, res) => {
  if (req.url === '/api/too-big') {
    res.writeHead(413, {'Content-Type': 'text/plain', 'Connection': 'close'});
    res.end('too big');
    return;
  }
  res.writeContinue();
  server.emit('request', req, res);
});
server.on('upgrade', (req, socket) => {
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n' + 'hello ' + (req.headers['x-email'] || '-') + '\n');
  socket.pipe(socket);
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
`

// startNode runs nodeApp and returns its URL.
func startNode(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("node", "-e", nodeApp)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	port, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("node's port: %v", err)
	}
	return "http://127.0.0.1:" + strings.TrimSpace(port)
}

// interopProxy runs the proxy of testConfig in front of upstreamURL, with
// extra lines added to the upstream block, and returns its address.
func interopProxy(t *testing.T, upstreamURL, upstreamExtra string) (*fixture, string) {
	t.Helper()
	y := strings.Replace(testConfig, "UPSTREAM", upstreamURL, 1)
	y = strings.Replace(y, "  logout_cookies:", upstreamExtra+"  logout_cookies:", 1)
	h := newTestHandler(t, y)
	f := &fixture{h: h, store: h.sessions}
	return f, f.serve(t)
}

// toProxy sends a browser's requests for public_url to the proxy's plain
// listener, so that the cookie jar sees https://cvat.example.com.
type toProxy struct {
	addr string
	next http.RoundTripper
}

func (p toProxy) RoundTrip(r *http.Request) (*http.Response, error) {
	out := r.Clone(r.Context())
	out.URL.Scheme, out.URL.Host, out.Host = "http", p.addr, r.URL.Host
	resp, err := p.next.RoundTrip(out)
	if resp != nil {
		resp.Request = r
	}
	return resp, err
}

// browserFor is a browser at public_url through the proxy at addr, signed
// in with cookies (none: signed out); it follows no redirects.
func browserFor(t *testing.T, addr string, cookies []*http.Cookie) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	jar.SetCookies(mustParse(t, publicOrigin+"/"), cookies)
	return &http.Client{
		Jar:           jar,
		Transport:     toProxy{addr, &http.Transport{DisableCompression: true, ExpectContinueTimeout: 5 * time.Second}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func send(t *testing.T, c *http.Client, method, path string, body io.Reader, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, publicOrigin+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, string(b)
}

func TestUpstreamVariations(t *testing.T) {
	// CVAT's Django, behind the proxy with each preserve_host, and with
	// USE_X_FORWARDED_HOST (CVAT's setting) or without.
	for _, tc := range []struct {
		name             string
		preserveHost     bool
		useForwardedHost bool
		csrfPasses       bool // Django's CSRF check of the page's POST
	}{
		{"preserve_host true, USE_X_FORWARDED_HOST", true, true, true},
		{"preserve_host true, Host alone", true, false, true},
		{"preserve_host false, USE_X_FORWARDED_HOST", false, true, true},
		// Django then believes upstream.url's host is its own: the
		// browser's Origin cannot match (CSRF_TRUSTED_ORIGINS would).
		{"preserve_host false, Host alone", false, false, false},
	} {
		t.Run("django "+tc.name, func(t *testing.T) {
			app := httptest.NewServer(djangoApp{useForwardedHost: tc.useForwardedHost})
			t.Cleanup(app.Close)
			f, addr := interopProxy(t, app.URL, fmt.Sprintf("  preserve_host: %v\n", tc.preserveHost))
			b := browserFor(t, addr, f.login(t, "alice@example.com"))

			resp, body := send(t, b, "GET", "/", nil)
			if resp.StatusCode != 200 {
				t.Fatalf("GET / = %d %q", resp.StatusCode, body)
			}
			wantOrigin := publicOrigin
			if !tc.preserveHost && !tc.useForwardedHost {
				wantOrigin = strings.Replace(app.URL, "http:", "https:", 1) // X-Forwarded-Proto's scheme
			}
			if body != "home "+wantOrigin+"/api/docs" {
				t.Errorf("absolute URL the app built: %q, want it at %s", body, wantOrigin)
			}
			if got := len(resp.Header.Get("Content-Security-Policy")); got < 15000 {
				t.Errorf("Content-Security-Policy of %d bytes reached the browser, want the app's 15 kB", got)
			}
			if got := len(resp.Header.Values("Set-Cookie")); got != 5 {
				t.Errorf("%d Set-Cookie reached the browser, want the app's 5: %q", got, resp.Header.Values("Set-Cookie"))
			}
			_, cookies := send(t, b, "GET", "/cookies", nil)
			for _, want := range []string{"csrftoken=tok123", "sessionid=app-session", "django_language=de", "portcullis_theme=dark"} {
				if !strings.Contains(cookies, want) {
					t.Errorf("app got cookies %q, want %s among them", cookies, want)
				}
			}
			if strings.Contains(cookies, "__Host-portcullis") || strings.Contains(cookies, "api_pref") {
				t.Errorf("app got cookies %q: the proxy's own, or one for another path", cookies)
			}
			_, cookies = send(t, b, "GET", "/api/cookies", nil)
			if !strings.Contains(cookies, "api_pref=v2") {
				t.Errorf("app got cookies %q at /api/, want api_pref=v2 (its Path)", cookies)
			}

			// The page's form POST, as a browser sends it: Origin and
			// Referer are the page's, the CSRF token from the cookie.
			resp, body = send(t, b, "POST", "/tasks/create", strings.NewReader("name=t"),
				"Origin", publicOrigin, "Referer", publicOrigin+"/tasks", "X-CSRFToken", "tok123",
				"Content-Type", "application/x-www-form-urlencoded")
			if tc.csrfPasses {
				if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != publicOrigin+"/tasks/1" {
					t.Errorf("POST /tasks/create = %d Location %q %q, want 302 to %s/tasks/1", resp.StatusCode, resp.Header.Get("Location"), body, publicOrigin)
				}
			} else if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Origin checking failed") {
				t.Errorf("POST /tasks/create = %d %q, want Django's own 403", resp.StatusCode, body)
			}
			resp, _ = send(t, b, "GET", "/auth/login", nil)
			if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/auth/login/?next=/" {
				t.Errorf("relative redirect: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
			}
		})
	}

	t.Run("app's own responses", func(t *testing.T) {
		app := httptest.NewServer(djangoApp{useForwardedHost: true})
		t.Cleanup(app.Close)
		f, addr := interopProxy(t, app.URL, "")
		b := browserFor(t, addr, f.login(t, "alice@example.com"))
		api := browserFor(t, addr, nil)

		resp, body := send(t, api, "GET", "/api/basic", nil, "Authorization", "Basic YWxpY2U6d3Jvbmc=")
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Basic realm="api"` || body != `{"detail":"Invalid username/password."}` {
			t.Errorf("bypassed Basic call: %d WWW-Authenticate %q body %q, want the app's 401", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
		for path, want := range map[string]string{"/forbidden": "<h1>403 Forbidden (the app's)</h1>", "/crash": "<h1>Server Error (500) (the app's)</h1>"} {
			if _, body := send(t, b, "GET", path, nil); body != want {
				t.Errorf("GET %s: body %q, want the app's %q", path, body, want)
			}
		}
		resp, body = send(t, b, "GET", "/no-content", nil)
		if resp.StatusCode != 204 || body != "" {
			t.Errorf("204: %d %q", resp.StatusCode, body)
		}
		resp, body = send(t, b, "GET", "/not-modified", nil, "If-None-Match", `"v1"`)
		if resp.StatusCode != 304 || body != "" || resp.Header.Get("ETag") != `"v1"` {
			t.Errorf("304: %d %q ETag %q", resp.StatusCode, body, resp.Header.Get("ETag"))
		}
		resp, body = send(t, b, "HEAD", "/not-modified", nil)
		if resp.StatusCode != 200 || body != "" {
			t.Errorf("HEAD: %d %q", resp.StatusCode, body)
		}
		resp, body = send(t, b, "GET", "/gzip", nil, "Accept-Encoding", "gzip")
		if resp.Header.Get("Content-Encoding") != "gzip" || body != string(gzipped) {
			t.Errorf("gzip: Content-Encoding %q, %d bytes, want the app's %d bytes untouched", resp.Header.Get("Content-Encoding"), len(body), len(gzipped))
		}
		resp, body = send(t, b, "GET", "/close-delimited", nil)
		if resp.StatusCode != 200 || len(body) != 100000 {
			t.Errorf("close-delimited: %d, %d bytes, want 100000", resp.StatusCode, len(body))
		}
	})

	t.Run("redirect to the app's internal address", func(t *testing.T) {
		app := httptest.NewServer(djangoApp{prefix: "/cvat"})
		t.Cleanup(app.Close)
		f, addr := interopProxy(t, app.URL+"/cvat", "  preserve_host: false\n")
		b := browserFor(t, addr, f.login(t, "alice@example.com"))
		if _, body := send(t, b, "GET", "/path", nil); body != "/cvat/path" {
			t.Errorf("path prefix: the app got %q, want /cvat/path", body)
		}
		// nginx's proxy_redirect default turns upstream.url into
		// public_url in Location: the browser cannot reach the app's
		// address.
		resp, _ := send(t, b, "GET", "/internal-redirect", nil)
		if got := resp.Header.Get("Location"); got != publicOrigin+"/next" {
			t.Errorf("Location %q, want %s/next", got, publicOrigin)
		}
	})

	t.Run("https upstream with a private CA", func(t *testing.T) {
		app := httptest.NewTLSServer(djangoApp{useForwardedHost: true})
		t.Cleanup(app.Close)
		ca := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: app.Certificate().Raw}), 0o600); err != nil {
			t.Fatal(err)
		}
		// Without the CA, the system's: the proxy cannot verify the app,
		// and says which key trusts its CA.
		h := newTestHandler(t, strings.Replace(testConfig, "UPSTREAM", app.URL, 1))
		var logged lockedBuffer
		h.log = slog.New(slog.NewTextHandler(&logged, nil))
		f := &fixture{h: h, store: h.sessions}
		if resp, _ := send(t, browserFor(t, f.serve(t), f.login(t, "alice@example.com")), "GET", "/", nil); resp.StatusCode != http.StatusBadGateway {
			t.Errorf("GET / without upstream.tls.ca_file = %d, want 502", resp.StatusCode)
		}
		if !strings.Contains(logged.String(), "set upstream.tls.ca_file") {
			t.Errorf("the upstream failure's log line has no hint of upstream.tls.ca_file: %s", logged.String())
		}
		f, addr := interopProxy(t, app.URL, "  tls: {ca_file: "+ca+"}\n")
		b := browserFor(t, addr, f.login(t, "alice@example.com"))
		if resp, body := send(t, b, "GET", "/", nil); resp.StatusCode != 200 || body != "home "+publicOrigin+"/api/docs" {
			t.Errorf("GET / = %d %q", resp.StatusCode, body)
		}
	})

	t.Run("node", func(t *testing.T) {
		app := startNode(t)
		f, addr := interopProxy(t, app, "")
		b := browserFor(t, addr, f.login(t, "alice@example.com"))
		api := browserFor(t, addr, nil)

		// Server-Sent Events: the first event arrives while the app holds
		// the response open; a buffering proxy would hold it back.
		req, _ := http.NewRequest("GET", publicOrigin+"/events", nil)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := b.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		line, err := br.ReadString('\n')
		if err != nil || line != "data: first\n" {
			t.Fatalf("first event: %q %v", line, err)
		}
		if _, body := send(t, b, "GET", "/release", nil); body != "released" {
			t.Fatalf("release: %q", body)
		}
		rest, _ := io.ReadAll(br)
		resp.Body.Close()
		if string(rest) != "\ndata: last\n\n" {
			t.Errorf("rest of the stream: %q", rest)
		}

		resp, body := send(t, b, "GET", "/chunked", nil)
		sum := sha256.Sum256([]byte(body))
		if got := resp.Trailer.Get("X-Checksum"); got != hex.EncodeToString(sum[:]) {
			t.Errorf("chunked with a trailer: X-Checksum %q over %q", got, body)
		}

		upload := bytes.Repeat([]byte("0123456789"), 100000)
		resp, body = send(t, b, "PUT", "/upload", bytes.NewReader(upload), "Expect", "100-continue")
		if resp.StatusCode != 200 || body != "PUT /upload 1000000 alice@example.com" {
			t.Errorf("100-continue upload: %d %q", resp.StatusCode, body)
		}
		resp, body = send(t, api, "PUT", "/api/too-big", bytes.NewReader(upload), "Expect", "100-continue", "Authorization", "Token abc")
		if resp.StatusCode != 413 || body != "too big" {
			t.Errorf("upload the app refuses before its body: %d %q", resp.StatusCode, body)
		}

		resp2, conn, br2 := rawRequest(t, addr, "/ws", append(webSocketHeaders, "Cookie: "+cookieHeader(f.login(t, "bob@example.com")))...)
		if resp2.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("WebSocket: %d", resp2.StatusCode)
		}
		if line, err := br2.ReadString('\n'); err != nil || line != "hello bob@example.com\n" {
			t.Fatalf("WebSocket greeting: %q %v", line, err)
		}
		io.WriteString(conn, "ping\n")
		if line, err := br2.ReadString('\n'); err != nil || line != "ping\n" {
			t.Errorf("WebSocket echo: %q %v", line, err)
		}
	})
}

func TestPublicLocation(t *testing.T) {
	f, _ := interopProxy(t, "http://cvat-server:8080/cvat", "")
	for loc, want := range map[string]string{
		"http://cvat-server:8080/cvat/tasks?id=1": publicOrigin + "/tasks?id=1",
		"HTTP://CVAT-SERVER:8080/cvat/":           publicOrigin + "/",
		"http://cvat-server:8080/cvat":            publicOrigin + "/",
		"http://cvat-server:8080/cvat?next=/":     publicOrigin + "/?next=/",
		"http://cvat-server:8080/cvatx":           "http://cvat-server:8080/cvatx",
		"http://cvat-server:8080/other":           "http://cvat-server:8080/other",
		"http://cvat-server:80801/cvat/":          "http://cvat-server:80801/cvat/",
		"https://cvat-server:8080/cvat/":          "https://cvat-server:8080/cvat/",
		"http://cvat-server.evil:8080/cvat/":      "http://cvat-server.evil:8080/cvat/",
		"/cvat/next":                              "/cvat/next",
		"https://idp.example.com/authorize":       "https://idp.example.com/authorize",
	} {
		resp := &http.Response{Header: http.Header{"Location": {loc}}}
		f.h.modifyResponse(resp)
		if got := resp.Header.Get("Location"); got != want {
			t.Errorf("Location %q reached the browser as %q, want %q", loc, got, want)
		}
	}
}

// lockedBuffer is a log's output, written by the server's goroutines and
// read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPublicLocationUpstreamPathWithSlash: an upstream.url written with a
// trailing slash (http://app:8080/cvat/) is cut as the same path without it,
// so that the application's redirect to its root (…/cvat) and to a query on
// it reach public_url too; a fragment passes as a query does.
func TestPublicLocationUpstreamPathWithSlash(t *testing.T) {
	f, _ := interopProxy(t, "http://cvat-server:8080/cvat/", "")
	for loc, want := range map[string]string{
		"http://cvat-server:8080/cvat/tasks":  publicOrigin + "/tasks",
		"http://cvat-server:8080/cvat":        publicOrigin + "/",
		"http://cvat-server:8080/cvat?next=/": publicOrigin + "/?next=/",
		"http://cvat-server:8080/cvat#top":    publicOrigin + "/#top",
		"http://cvat-server:8080/cvatx":       "http://cvat-server:8080/cvatx",
	} {
		resp := &http.Response{Header: http.Header{"Location": {loc}}}
		f.h.modifyResponse(resp)
		if got := resp.Header.Get("Location"); got != want {
			t.Errorf("Location %q reached the browser as %q, want %q", loc, got, want)
		}
	}
}

// TestUpstreamTransportAcrossReload: a reload keeps the upstream transport
// (and its open connections) only when upstream.timeouts and the CAs of
// upstream.tls.ca_file are what they were; a renewed CA file, one added or
// one taken away, or other timeouts, get a transport of their own, which
// trusts the file's CAs or the system's.
func TestUpstreamTransportAcrossReload(t *testing.T) {
	dir := t.TempDir()
	write := func(name, cn string) string {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, testcert.NewCA(t, cn).PEM, 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	caFile, renewed := write("ca.pem", "app CA"), write("renewed.pem", "app CA 2")
	sameBytes := filepath.Join(dir, "copy.pem")
	if b, err := os.ReadFile(caFile); err != nil || os.WriteFile(sameBytes, b, 0o600) != nil {
		t.Fatal(err)
	}
	up := func(ca string, idle time.Duration) UpstreamConfig {
		return UpstreamConfig{TLS: UpstreamTLS{CAFile: ca}, Timeouts: UpstreamTimeouts{Idle: idle}}
	}
	tests := []struct {
		name       string
		before, at UpstreamConfig
		kept       bool
	}{
		{"nothing changed", up("", 0), up("", 0), true},
		{"the same CA file", up(caFile, 0), up(caFile, 0), true},
		{"another file with the same CAs", up(caFile, 0), up(sameBytes, 0), true},
		{"the timeouts' defaults written out", up("", 0), up("", 90*time.Second), true},
		{"a renewed CA", up(caFile, 0), up(renewed, 0), false},
		{"a CA file added", up("", 0), up(caFile, 0), false},
		{"the CA file taken away", up(caFile, 0), up("", 0), false},
		{"another idle timeout", up(caFile, 0), up(caFile, time.Minute), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			first, pem, err := upstreamTransport(tc.before, nil)
			if err != nil {
				t.Fatal(err)
			}
			prev := &Handler{compiled: &compiled{cfg: &Config{Upstream: tc.before}}, transport: first, upstreamCAs: pem}
			next, _, err := upstreamTransport(tc.at, prev)
			if err != nil {
				t.Fatal(err)
			}
			if (next == first) != tc.kept {
				t.Fatalf("transport kept: %v, want %v", next == first, tc.kept)
			}
			if trusts := next.TLSClientConfig != nil && next.TLSClientConfig.RootCAs != nil; trusts != (tc.at.TLS.CAFile != "") {
				t.Errorf("the transport trusts a CA file's CAs: %v, want %v", trusts, tc.at.TLS.CAFile != "")
			}
		})
	}
}
