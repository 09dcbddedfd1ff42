package e2e

// The front proxies operators put before portcullis, set up the way they
// set them up: Debian's nginx, HAProxy, Caddy 2 and Apache httpd 2.4,
// terminating TLS on loopback with portcullis on plain http behind them,
// each with its defaults except the lines every guide tells operators to
// write (the forwarded headers, WebSocket's Upgrade). Through each, a browser logs in at the real
// oidc-provider over HTTP/1.1 and over HTTP/2, reaches the upstream, calls
// the API with its own credentials and logs out; a user with many groups
// brings a session of several cookie chunks; a WebSocket and a
// Server-Sent Events stream pass; and the client address that sources
// rules and allow_if see is the one the front saw, never one a client
// wrote into X-Forwarded-For.

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// Where Debian's packages put the fronts (test/run.sh installs them).
const (
	nginxPath   = "/usr/sbin/nginx"
	haproxyPath = "/usr/sbin/haproxy"
	caddyPath   = "/usr/bin/caddy"
	apachePath  = "/usr/sbin/apache2"
	// apacheModules is where apache2-bin puts the modules a configuration
	// loads by absolute path.
	apacheModules = "/usr/lib/apache2/modules"
)

// frontConfig is the proxy behind a front: public_url is the front's https
// origin, and TRUSTED is the server.trusted_proxies line of a row.
const frontConfig = `
server:
  public_url: PUBLIC_URL
TRUSTED
upstream:
  url: UPSTREAM_URL
session:
  keys: [SESSION_KEY]
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups]SINGLE_SIGN_OUT
attribute_pass:
  headers:
    X-Email: email
rules:
  - name: cvat-api-credentials
    path_prefix: /api/
    headers: {Authorization: '^(Basic|Token|Bearer) '}
    action: bypass
  - name: office-only
    path_prefix: /office/
    sources: [127.0.0.2/32]
    action: authenticate
  - name: office-elsewhere
    path_prefix: /office/
    action: deny
  - name: lab
    path_prefix: /lab/
    action: authenticate
    allow_if: 'request.source == "127.0.0.2"'
default_action: authenticate
`

// frontStack is portcullis behind one front, with the oidc-provider and
// an upstream that serves the echo page, an event stream and a WebSocket.
type frontStack struct {
	*stack
	Public string // the front's origin, https://localhost:PORT
	CA     *x509.CertPool
	Front  *process.Output // the front's stderr
	Log    *process.Output // portcullis's log
	Sizes  *headerSizes    // of the headers between the front and portcullis
	// release ends the upstream's open event streams.
	release chan struct{}
}

type frontKind struct {
	name  string
	start func(t *testing.T, dir, listen, backend string, pair testcert.Pair, extra string) *process.Output
}

var fronts = []frontKind{{"nginx", startNginx}, {"haproxy", startHAProxy}, {"caddy", startCaddy}, {"apache", startApache}}

// startFront runs portcullis (trusted says whether it trusts loopback's
// 127.0.0.1, the front's address) behind the front f, which is configured
// with its usual lines plus extra, and users at the provider.
// frontEntry is what a front's stack signs in with: the IdP's users besides
// alice and bob, and whether the IdP entry has single_sign_out (whose
// sessions keep the ID token).
type frontEntry struct {
	users         map[string]oidcserver.User
	singleSignOut bool
}

func startFront(t *testing.T, f frontKind, trusted bool, extra string, entry frontEntry) *frontStack {
	t.Helper()
	s := listen(t)
	release := make(chan struct{})
	var ended sync.Once
	endStreams := func() { ended.Do(func() { close(release) }) }
	t.Cleanup(endStreams)
	s.upURL = upstreamApp(t, s, release)

	dir := t.TempDir()
	ca := testcert.NewCA(t, "front CA")
	pair := ca.Issue(t, "localhost", time.Now().Add(24*time.Hour))
	listenAddr := "127.0.0.1:" + strconv.Itoa(process.FreePort(t))
	public := "https://localhost:" + strings.TrimPrefix(listenAddr, "127.0.0.1:")
	backend := s.ln.Addr().String()
	s.URL = public

	idp := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{public + "/.portcullis/oidc/company/callback"}, ExtraUsers: entry.users})
	trust := ""
	if trusted {
		trust = "  trusted_proxies: [127.0.0.1/32]"
	}
	sso := ""
	if entry.singleSignOut {
		sso = "\n      single_sign_out: true"
	}
	cfg := strings.NewReplacer("ISSUER", idp.Issuer, "TRUSTED", trust, "SINGLE_SIGN_OUT", sso).Replace(frontConfig)
	log := &process.Output{}
	s.serve(t, cfg, slogText(log))
	s.waitReady(t)
	sizes := &headerSizes{}
	s.handOver(t, &http.Server{Handler: sizes.wrap(s.Handler), ReadHeaderTimeout: 10 * time.Second})

	front := f.start(t, dir, listenAddr, backend, pair, extra)
	// The upstream's open event streams end before the front stops (the
	// cleanups run last first): an Apache child that proxies one does not
	// stop when its parent tells it to.
	t.Cleanup(endStreams)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s stderr:\n%s\nportcullis log:\n%s", f.name, front, log)
		}
	})
	return &frontStack{stack: s, Public: public, CA: pool, Front: front, Log: log, Sizes: sizes, release: release}
}

// upstreamApp serves /events (one event, then the stream stays open until
// release; X-Accel-Buffering: no when the query says accel=no), /personal
// (a page that greets the user, with a Last-Modified and no
// Cache-Control) and /ws (a WebSocket that greets the user and echoes a
// line); anything else is the echo upstream.
func upstreamApp(t *testing.T, s *stack, release chan struct{}) string {
	mux := http.NewServeMux()
	mux.Handle("/", s.Upstream)
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("accel") == "no" {
			w.Header().Set("X-Accel-Buffering", "no")
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		fmt.Fprintf(w, "data: hello %s\n\n", r.Header.Get("X-Email"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/personal", func(w http.ResponseWriter, r *http.Request) {
		// A page for one user with a validator and no word on caching, as
		// many applications serve them: caches may keep it heuristically.
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Last-Modified", time.Now().Add(-24*time.Hour).UTC().Format(http.TimeFormat))
		fmt.Fprintf(w, "<p>hello %s</p>", r.Header.Get("X-Email"))
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "not an upgrade: Upgrade="+r.Header.Get("Upgrade")+" Connection="+r.Header.Get("Connection"), http.StatusBadRequest)
			return
		}
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		// Sec-WebSocket-Accept as RFC 6455 4.2.2 makes it: HAProxy answers
		// 502 for a 101 without it.
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\nhello " + r.Header.Get("X-Email") + "\n")
		rw.Flush()
		line, err := rw.ReadString('\n')
		if err == nil {
			rw.WriteString("echo " + line)
			rw.Flush()
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// startNginx runs nginx in the foreground, one process, with its defaults
// but for the lines of every "nginx in front of an app" guide, and extra
// in its server block (what extra has before a line "---", in its http
// block).
func startNginx(t *testing.T, dir, listen, backend string, pair testcert.Pair, extra string) *process.Output {
	t.Helper()
	if _, err := os.Stat(nginxPath); err != nil {
		t.Fatalf("nginx not found (%v): run the tests with test/run.sh, which installs Debian's nginx-light", err)
	}
	pair.Write(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	conf := `
events {}
http {
  access_log off;
  client_body_temp_path DIR/body;
  proxy_temp_path DIR/proxy;
  fastcgi_temp_path DIR/fastcgi;
  uwsgi_temp_path DIR/uwsgi;
  scgi_temp_path DIR/scgi;
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
HTTPEXTRA
  server {
    listen LISTEN ssl http2;
    server_name localhost;
    ssl_certificate DIR/cert.pem;
    ssl_certificate_key DIR/key.pem;
EXTRA
    location / {
      proxy_pass http://BACKEND;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
HOSTLINE
    }
  }
}
`
	// A location's proxy_set_header lines replace the server's, so the
	// Host line is the location's, and dropped when a row is about
	// nginx's default ($proxy_host, the backend's address).
	host := "      proxy_set_header Host $host;"
	if strings.Contains(extra, "proxy_set_header Host $proxy_host;") {
		host, extra = "", strings.ReplaceAll(extra, "proxy_set_header Host $proxy_host;", "")
	}
	// What extra has before a line "---" goes in the http block, which
	// alone takes some directives (proxy_cache_path).
	httpExtra := ""
	if before, after, ok := strings.Cut(extra, "\n---\n"); ok {
		httpExtra, extra = before, after
	}
	conf = strings.NewReplacer("DIR", dir, "LISTEN", listen, "BACKEND", backend, "HTTPEXTRA", httpExtra, "EXTRA", extra, "HOSTLINE", host).Replace(conf)
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return runFront(t, listen, nil, nil, nginxPath, "-e", "stderr", "-p", dir, "-c", file,
		"-g", "daemon off; master_process off; pid "+dir+"/nginx.pid; error_log stderr;")
}

// startHAProxy runs HAProxy in the foreground with the timeouts every
// configuration needs, option forwardfor and X-Forwarded-Proto, and extra
// in its global section.
func startHAProxy(t *testing.T, dir, listen, backend string, pair testcert.Pair, extra string) *process.Output {
	t.Helper()
	if _, err := os.Stat(haproxyPath); err != nil {
		t.Fatalf("haproxy not found (%v): run the tests with test/run.sh, which installs Debian's haproxy", err)
	}
	pem := filepath.Join(dir, "site.pem")
	if err := os.WriteFile(pem, append(append([]byte{}, pair.Cert...), pair.Key...), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := `
global
  log stderr format raw local0
EXTRAGLOBAL
defaults
  mode http
  log global
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout tunnel 1h
  option forwardfor
  option httplog
frontend public
  bind LISTEN ssl crt PEM alpn h2,http/1.1
  http-request set-header X-Forwarded-Proto https
  default_backend portcullis
backend portcullis
  server portcullis BACKEND
`
	conf = strings.NewReplacer("LISTEN", listen, "PEM", pem, "BACKEND", backend, "EXTRAGLOBAL", extra).Replace(conf)
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return runFront(t, listen, nil, nil, haproxyPath, "-f", file, "-db")
}

// startCaddy runs Caddy 2 as its docs and self-hosting guides set it up: a
// site https://localhost:PORT with the test's certificate and
// reverse_proxy to portcullis, extra in the site block. It is kept to its
// listener: no admin endpoint, no HTTP-to-HTTPS redirect server on :80
// (auto_https disable_redirects; off would do too, as the tls line names
// the certificate, but what guides leave on stays on), HTTP/3 off (2.6
// listens on UDP for it by default, on the same port number, which a
// parallel test may hold), and its data and autosaved config in dir.
func startCaddy(t *testing.T, dir, listen, backend string, pair testcert.Pair, extra string) *process.Output {
	t.Helper()
	if _, err := os.Stat(caddyPath); err != nil {
		t.Fatalf("caddy not found (%v): run the tests with test/run.sh, which installs Debian's caddy", err)
	}
	pair.Write(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	conf := `{
	admin off
	auto_https disable_redirects
	servers {
		protocols h1 h2
	}
}

https://localhost:PORT {
	bind 127.0.0.1
	tls DIR/cert.pem DIR/key.pem
	reverse_proxy BACKEND
EXTRA
}
`
	_, port, _ := net.SplitHostPort(listen)
	conf = strings.NewReplacer("DIR", dir, "PORT", port, "BACKEND", backend, "EXTRA", extra).Replace(conf)
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + dir, "XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
	// Killed, not stopped: Caddy's graceful stop waits for the open event
	// streams, with no grace period by default.
	return runFront(t, listen, nil, env, caddyPath, "run", "--config", file, "--adapter", "caddyfile")
}

// startApache runs Apache httpd 2.4 in the foreground from a configuration
// of its own (none of Debian's /etc/apache2), with its defaults but for
// the lines every guide writes: ProxyPass with upgrade=websocket (mod_proxy_http
// tunnels the WebSocket itself since 2.4.47, no mod_proxy_wstunnel),
// ProxyPassReverse, ProxyPreserveHost and X-Forwarded-Proto; extra goes in
// the server's configuration. Its error log is its stderr, read as nginx's
// is, and everything else it writes is in dir.
func startApache(t *testing.T, dir, listen, backend string, pair testcert.Pair, extra string) *process.Output {
	t.Helper()
	if _, err := os.Stat(apachePath); err != nil {
		t.Fatalf("apache2 not found (%v): run the tests with test/run.sh, which installs Debian's apache2-bin", err)
	}
	pair.Write(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	conf := `
ServerRoot DIR
ServerName localhost
PidFile DIR/apache2.pid
DefaultRuntimeDir DIR
ErrorLog /dev/stderr
USER
LoadModule mpm_event_module MODULES/mod_mpm_event.so
LoadModule authz_core_module MODULES/mod_authz_core.so
LoadModule socache_shmcb_module MODULES/mod_socache_shmcb.so
LoadModule ssl_module MODULES/mod_ssl.so
LoadModule http2_module MODULES/mod_http2.so
LoadModule headers_module MODULES/mod_headers.so
LoadModule proxy_module MODULES/mod_proxy.so
LoadModule proxy_http_module MODULES/mod_proxy_http.so
Listen LISTEN https
SSLSessionCache shmcb:DIR/ssl_scache(512000)
Protocols h2 http/1.1
EXTRA
<VirtualHost LISTEN>
  ServerName localhost
  SSLEngine on
  SSLCertificateFile DIR/cert.pem
  SSLCertificateKeyFile DIR/key.pem
  ProxyPass / http://BACKEND/ upgrade=websocket
  ProxyPassReverse / http://BACKEND/
  ProxyPreserveHost On
  RequestHeader set X-Forwarded-Proto https
</VirtualHost>
`
	conf = strings.NewReplacer("DIR", dir, "MODULES", apacheModules, "LISTEN", listen, "BACKEND", backend, "EXTRA", extra, "USER", apacheUser(t)).Replace(conf)
	file := filepath.Join(dir, "apache2.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return runFront(t, listen, stopApache, []string{}, apachePath, "-f", file, "-DFOREGROUND")
}

// stopApache stops Apache's parent with SIGTERM, so that it frees the
// semaphores and shared memory a killed parent would leave behind. A child
// whose WebSocket tunnel's client closed just as the signal came (about one
// run in twenty here) is left running by its parent for 9 s, three SIGTERMs
// then a SIGKILL apart: after a second, its children are killed, and the
// parent exits.
func stopApache(p *os.Process, exited <-chan struct{}) {
	p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return
	case <-time.After(time.Second):
	}
	children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.Pid, p.Pid))
	for _, f := range strings.Fields(string(children)) {
		if pid, err := strconv.Atoi(f); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// apacheUser is the User and Group lines of an Apache run as root: it
// refuses User root, and its default, #-1, is no user (its children log
// AH02155 "couldn't determine user name from uid 4294967295"), so the
// children run as www-data, or nobody where there is no www-data. Run as
// another user, Apache cannot change users and needs no lines.
func apacheUser(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return ""
	}
	u, err := user.Lookup("www-data")
	if err != nil {
		if u, err = user.Lookup("nobody"); err != nil {
			t.Fatalf("Apache as root needs a user to run its children as: neither www-data nor nobody: %v", err)
		}
	}
	return "User #" + u.Uid + "\nGroup #" + u.Gid
}

// runFront starts the front and waits until it accepts connections on
// listen, or fails the test when it exits first. At the end of the test
// stop ends the front (kill, when nil); env, when not nil, is the front's
// whole environment.
func runFront(t *testing.T, listen string, stop func(p *os.Process, exited <-chan struct{}), env []string, path string, args ...string) *process.Output {
	t.Helper()
	out := &process.Output{}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = env
	exited, err := process.Start(cmd, process.Accepts(listen), 20*time.Second)
	if err != nil {
		t.Fatalf("%s, to listen on %s: %v:\n%s", path, listen, err, out)
	}
	t.Cleanup(func() {
		if stop == nil {
			cmd.Process.Kill()
			<-exited
			return
		}
		stop(cmd.Process, exited)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s still running 10 s after it was told to stop: killed; it wrote:\n%s", path, out)
			cmd.Process.Kill()
			<-exited
		}
	})
	return out
}

// client is a browser reaching the front: it trusts the test CA, dials
// localhost as 127.0.0.1 from source (127.0.0.2 when the row needs the
// client told apart from the front), speaks HTTP/2 when h2, keeps cookies
// and asks for HTML.
func (fs *frontStack) client(t *testing.T, h2 bool, source string) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: fs.CA},
		ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if rest, ok := strings.CutPrefix(addr, "localhost:"); ok {
				addr = "127.0.0.1:" + rest
			}
			return d.DialContext(ctx, network, addr)
		},
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Jar: jar, Transport: acceptHTML{tr}, Timeout: 30 * time.Second}
}

// login signs user in through the front at /tasks and returns the final
// response (its body read).
func (fs *frontStack) login(t *testing.T, c *http.Client, user, password string) (*http.Response, string) {
	t.Helper()
	resp := oidcserver.Login(t, c, fs.Public+"/tasks", user, password)
	return resp, readBody(t, resp)
}

func TestFrontProxyVariations(t *testing.T) {
	for _, f := range fronts {
		for _, h2 := range []bool{false, true} {
			proto := map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2]
			t.Run(f.name+"/TLS at the front, "+proto+": login, upstream, API bypass, logout", func(t *testing.T) {
				fs := startFront(t, f, true, "", frontEntry{})
				c := fs.client(t, h2, "")
				resp, body := fs.login(t, c, oidcserver.Alice, oidcserver.AlicePassword)
				if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Echo") != "1" {
					t.Fatalf("after login: %s %d, want the upstream's page; body:\n%s", resp.Request.URL, resp.StatusCode, body)
				}
				if want := 1 + btoi(h2); resp.ProtoMajor != want {
					t.Errorf("the front answered over HTTP/%d, want HTTP/%d", resp.ProtoMajor, want)
				}
				if got := resp.Request.URL.String(); got != fs.Public+"/tasks" {
					t.Errorf("landed on %s, want %s/tasks", got, fs.Public)
				}
				got, _ := fs.Upstream.Last()
				if e := got.Header.Get("X-Email"); e != "alice@example.com" {
					t.Errorf("upstream X-Email = %q, want alice@example.com", e)
				}
				if h := got.Host; h != strings.TrimPrefix(fs.Public, "https://") {
					t.Errorf("upstream Host = %q, want public_url's", h)
				}
				if p := got.Header.Get("X-Forwarded-Proto"); p != "https" {
					t.Errorf("upstream X-Forwarded-Proto = %q, want https", p)
				}

				req, _ := http.NewRequest("GET", fs.Public+"/api/tasks", nil)
				req.SetBasicAuth("cvat-user", "secret")
				api, err := fs.client(t, h2, "").Do(req)
				if err != nil {
					t.Fatal(err)
				}
				readBody(t, api)
				if got, _ := fs.Upstream.Last(); api.StatusCode != http.StatusOK || got.Header.Get("Authorization") == "" || got.Header.Get("X-Email") != "" {
					t.Errorf("Basic API call: status %d, upstream Authorization %q X-Email %q; want 200, the caller's, none", api.StatusCode, got.Header.Get("Authorization"), got.Header.Get("X-Email"))
				}

				out := oidcserver.Logout(t, c, fs.Public+"/.portcullis/logout")
				readBody(t, out)
				after, err := noRedirect(c).Get(fs.Public + "/tasks")
				if err != nil {
					t.Fatal(err)
				}
				readBody(t, after)
				if after.StatusCode != http.StatusFound || !strings.Contains(after.Header.Get("Location"), "/.portcullis/login") {
					t.Errorf("after logout: %d to %q, want a redirect to the login", after.StatusCode, after.Header.Get("Location"))
				}
			})
		}
	}
}

// The client address that sources rules and allow_if see, behind each
// front: with the front trusted, the client's as the front saw it
// (127.0.0.2 or 127.0.0.3, the front being 127.0.0.1), whatever
// X-Forwarded-For the client wrote, since the front appends to it (or,
// Caddy, replaces it); without trusted_proxies, the front's own.
// Sign-in works either way: portcullis builds every URL from public_url,
// never from Host or X-Forwarded-Proto, so nginx's default Host (the
// backend's address) changes nothing either.
func TestFrontProxyClientAddress(t *testing.T) {
	for _, f := range fronts {
		for _, trusted := range []bool{true, false} {
			name := map[bool]string{true: "trusted", false: "not in trusted_proxies"}[trusted]
			t.Run(f.name+"/"+name, func(t *testing.T) {
				extra := ""
				if f.name == "nginx" && !trusted {
					extra = "proxy_set_header Host $proxy_host;" // and nginx's default Host, too
				}
				fs := startFront(t, f, trusted, extra, frontEntry{})
				office := fs.client(t, false, "127.0.0.2")
				resp, body := fs.login(t, office, oidcserver.Alice, oidcserver.AlicePassword)
				if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Echo") != "1" {
					t.Fatalf("login from 127.0.0.2: %d, want the upstream's page: %.300s", resp.StatusCode, body)
				}
				if got, _ := fs.Upstream.Last(); got.Host != strings.TrimPrefix(fs.Public, "https://") {
					t.Errorf("upstream Host = %q, want public_url's", got.Host)
				}
				home := fs.client(t, false, "127.0.0.3")
				if resp, body := fs.login(t, home, oidcserver.Alice, oidcserver.AlicePassword); resp.StatusCode != http.StatusOK {
					t.Fatalf("login from 127.0.0.3: %d: %.300s", resp.StatusCode, body)
				}
				get := func(c *http.Client, path, xff string) int {
					req, _ := http.NewRequest("GET", fs.Public+path, nil)
					if xff != "" {
						req.Header.Set("X-Forwarded-For", xff)
					}
					resp, err := noRedirect(c).Do(req)
					if err != nil {
						t.Fatal(err)
					}
					readBody(t, resp)
					return resp.StatusCode
				}
				allowed := map[bool]int{true: http.StatusOK, false: http.StatusForbidden}
				for _, tc := range []struct {
					from   string
					c      *http.Client
					xff    string
					office bool // whether the source is 127.0.0.2
				}{
					{"127.0.0.2", office, "", trusted},
					{"127.0.0.2 claiming 203.0.113.9", office, "203.0.113.9", trusted},
					{"127.0.0.3 claiming 127.0.0.2", home, "127.0.0.2", false},
					{"127.0.0.3 claiming 127.0.0.2, 10.0.0.1", home, "127.0.0.2, 10.0.0.1", false},
				} {
					if got, want := get(tc.c, "/office/report", tc.xff), allowed[tc.office]; got != want {
						t.Errorf("from %s: sources rule answered %d, want %d", tc.from, got, want)
					}
					if got, want := get(tc.c, "/lab/run", tc.xff), allowed[tc.office]; got != want {
						t.Errorf("from %s: allow_if on request.source answered %d, want %d", tc.from, got, want)
					}
				}
				// The X-Forwarded-For that portcullis received, as it passes
				// it on with the front's address after it: Caddy, which
				// trusts no proxy before it unless told to, replaces the
				// client's with the address it saw; the others append to it.
				// Untrusted, the front's list is dropped.
				want := "127.0.0.2, 127.0.0.3, 127.0.0.1"
				if f.name == "caddy" {
					want = "127.0.0.3, 127.0.0.1"
				}
				if !trusted {
					want = "127.0.0.1"
				}
				if code := get(home, "/tasks", "127.0.0.2"); code != http.StatusOK {
					t.Fatalf("from 127.0.0.3: /tasks answered %d", code)
				}
				if got, _ := fs.Upstream.Last(); got.Header.Get("X-Forwarded-For") != want {
					t.Errorf("from 127.0.0.3 claiming 127.0.0.2: upstream X-Forwarded-For = %q, want %q", got.Header.Get("X-Forwarded-For"), want)
				}
			})
		}
	}
}

// A WebSocket and an event stream through each front, signed in: the
// WebSocket with nginx's usual Upgrade and Connection lines (Apache's
// ProxyPass upgrade=websocket); the event stream reaches the client while
// it is still open, through nginx (whose proxy_buffering holds a response
// until its buffers fill or it ends) when the application sends
// X-Accel-Buffering: no, which portcullis passes on, and through the
// others as it is.
func TestFrontProxyStreams(t *testing.T) {
	for _, f := range fronts {
		t.Run(f.name, func(t *testing.T) {
			fs := startFront(t, f, true, "", frontEntry{})
			c := fs.client(t, false, "")
			if resp, body := fs.login(t, c, oidcserver.Alice, oidcserver.AlicePassword); resp.StatusCode != http.StatusOK {
				t.Fatalf("login: %d: %.300s", resp.StatusCode, body)
			}
			u := mustURL(t, fs.Public)
			var cookies []string
			for _, ck := range c.Jar.Cookies(u) {
				cookies = append(cookies, ck.String())
			}

			conn, err := tls.Dial("tcp", "127.0.0.1:"+u.Port(), &tls.Config{RootCAs: fs.CA, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: %s\r\n\r\n", u.Host, strings.Join(cookies, "; "))
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("WebSocket: %v", err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
				t.Fatalf("WebSocket: %d, want 101: %s", resp.StatusCode, b)
			}
			if hello, err := br.ReadString('\n'); err != nil || hello != "hello alice@example.com\n" {
				t.Fatalf("WebSocket greeting %q, %v; want the user's", hello, err)
			}
			fmt.Fprintf(conn, "ping\n")
			if echo, err := br.ReadString('\n'); err != nil || echo != "echo ping\n" {
				t.Fatalf("WebSocket echo %q, %v", echo, err)
			}

			path := "/events"
			if f.name == "nginx" {
				path += "?accel=no"
			}
			req, _ := http.NewRequest("GET", fs.Public+path, nil)
			req.Header.Set("Accept", "text/event-stream")
			events, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer events.Body.Close()
			// The upstream holds the stream open until the test ends: the
			// event can only come through a front that does not hold it.
			line, err := bufio.NewReader(events.Body).ReadString('\n')
			if err != nil || line != "data: hello alice@example.com\n" {
				t.Fatalf("event stream (%d): %q, %v; want the first event while the stream is open", events.StatusCode, line, err)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// slogText is portcullis's log as text into out, from Info up.
func slogText(out io.Writer) slog.Handler {
	return slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelInfo})
}

// headerSizes records, behind the front, the bytes of the Set-Cookie lines
// of the login's callback answer and of the Cookie line of the requests
// after it, as the front receives and sends them.
type headerSizes struct {
	mu        sync.Mutex
	setCookie int // the callback's Set-Cookie lines, "Set-Cookie: " and CRLF included
	headers   int // all of the callback's header lines
	cookie    int // the largest Cookie line of a request, "Cookie: " and CRLF included
}

func (hs *headerSizes) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs.mu.Lock()
		for _, v := range r.Header.Values("Cookie") {
			hs.cookie = max(hs.cookie, len("Cookie: ")+len(v)+2)
		}
		hs.mu.Unlock()
		next.ServeHTTP(w, r)
		if strings.Contains(r.URL.Path, "/oidc/company/callback") {
			hs.mu.Lock()
			defer hs.mu.Unlock()
			hs.setCookie, hs.headers = 0, 0
			for name, vs := range w.Header() {
				for _, v := range vs {
					n := len(name) + 2 + len(v) + 2
					hs.headers += n
					if name == "Set-Cookie" {
						hs.setCookie += n
					}
				}
			}
		}
	})
}

// groupNames are n group names as Active Directory (via LDAP or SAML)
// writes them, or as Entra ID's groups claim does (object IDs), which
// deflate poorly.
func groupNames(n int, guid bool) []string {
	out := make([]string, n)
	for i := range out {
		if guid {
			out[i] = fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", uint32(i)*2654435761, i*40503%65536, i*977%4096, i*331%4096, uint64(i)*11400714819323198485>>16)
		} else {
			out[i] = fmt.Sprintf("CN=Engineering Team %03d,OU=Groups,OU=Corp,DC=example,DC=com", i)
		}
	}
	return out
}

// The settings docs/troubleshooting.md gives for sessions of several
// cookie chunks: nginx's buffer for the response's headers and its limit
// on a request header line, HAProxy's buffer for all headers of a message,
// Apache httpd's limit on a request header field (over HTTP/2 too, where it
// joins the cookie fields into one). Caddy needs none.
const (
	nginxLargeSessions = `
    proxy_buffer_size 32k;
    proxy_buffers 8 32k;
    proxy_busy_buffers_size 64k;
    large_client_header_buffers 4 32k;
`
	haproxyLargeSessions = "  tune.bufsize 32768"
	apacheLargeSessions  = "LimitRequestFieldSize 32768"
)

// A user with many groups signs in through each front: with the front's
// defaults, the sessions whose login answer's headers pass its buffer sign
// in, and the larger ones fail there (a 502 the front's log names) or on
// the next request, whose Cookie line nginx over HTTP/1.1 and Apache over
// either protocol refuse past their limit, and portcullis's log says which
// settings to raise; Caddy's defaults pass the largest session; with the
// settings troubleshooting.md gives, every size signs in and stays signed
// in. Group
// names as Active Directory writes them deflate well; Entra ID's object
// IDs do not. Each login measures the callback's Set-Cookie lines and the
// Cookie line sent after it. The IdP puts the groups in the ID token too,
// as Entra ID and Keycloak's group mapper do, which sessions keep only for
// an entry with single_sign_out.
func TestFrontProxySessionSizes(t *testing.T) {
	counts := []int{0, 10, 50, 200, 500}
	users := map[string]oidcserver.User{}
	for _, guid := range []bool{false, true} {
		for _, n := range counts {
			name := fmt.Sprintf("ad%d", n)
			if guid {
				name = fmt.Sprintf("guid%d", n)
			}
			users[name] = oidcserver.User{Password: "pw", Email: name + "@example.com", Groups: groupNames(n, guid)}
		}
	}
	all := slices.Sorted(maps.Keys(users))
	// About the largest session the cookie store holds (8 cookies, 31 KB
	// of Set-Cookie; 790 of these groups are refused as session_too_large),
	// for which troubleshooting.md says its settings suffice.
	users["guid760"] = oidcserver.User{Password: "pw", Email: "guid760@example.com", Groups: groupNames(760, true)}
	largest := append(slices.Clone(all), "guid760")
	cases := []struct {
		front kindName
		name  string
		extra string
		// singleSignOut keeps the ID token, and the groups in it, in the
		// session.
		singleSignOut bool
		users         []string
		// fails are the users whose login the front answers with 502, and
		// tooBig the line its log has then.
		fails  []string
		tooBig string
		// refused are the users whose first request with the session
		// the front refuses over HTTP/1.1 (400), and refusal the words of
		// its page; refusalH2, the words of its page when it refuses them
		// over HTTP/2 too (431), "" where HTTP/2 lets them in.
		refused            []string
		refusal, refusalH2 string
	}{
		{front: "nginx", name: "defaults", users: all,
			fails: []string{"ad500", "guid200", "guid500"}, tooBig: "upstream sent too big header"},
		{front: "nginx", name: "defaults, single_sign_out", singleSignOut: true, users: []string{"ad50", "ad200", "guid10", "guid50"},
			fails: []string{"ad200", "guid50"}, tooBig: "upstream sent too big header"},
		{front: "nginx", name: "proxy_buffer_size alone", extra: "    proxy_buffer_size 32k;\n    proxy_buffers 8 32k;\n    proxy_busy_buffers_size 64k;\n", users: []string{"guid50", "guid500"},
			refused: []string{"guid500"}, refusal: "Request Header Or Cookie Too Large"},
		{front: "nginx", name: "troubleshooting.md's settings", extra: nginxLargeSessions, users: largest},
		{front: "haproxy", name: "defaults", users: all,
			fails: []string{"guid500"}, tooBig: " 502 209 - - PH--"},
		{front: "haproxy", name: "troubleshooting.md's settings", extra: haproxyLargeSessions, users: largest},
		{front: "caddy", name: "defaults", users: largest},
		// guid200's Cookie line (8.12–8.13 KB) is some 60 bytes under
		// Apache's 8190: a row that any later byte of session would turn
		// over, for a reason of its own, so the row leaves it out.
		{front: "apache", name: "defaults", users: slices.DeleteFunc(slices.Clone(all), func(u string) bool { return u == "guid200" }),
			refused: []string{"guid500"}, refusal: "Size of a request header field exceeds server limit", refusalH2: "Request Header Fields Too Large"},
		{front: "apache", name: "defaults, single_sign_out", singleSignOut: true, users: []string{"ad200", "ad500", "guid50", "guid200"},
			refused: []string{"ad500", "guid200"}, refusal: "Size of a request header field exceeds server limit", refusalH2: "Request Header Fields Too Large"},
		{front: "apache", name: "troubleshooting.md's settings", extra: apacheLargeSessions, users: largest},
	}
	for _, tc := range cases {
		t.Run(string(tc.front)+"/"+tc.name, func(t *testing.T) {
			fs := startFront(t, tc.front.kind(), true, tc.extra, frontEntry{users, tc.singleSignOut})
			for _, user := range tc.users {
				for _, h2 := range []bool{false, true} {
					c := fs.client(t, h2, "")
					resp, body := fs.login(t, c, user, "pw")
					fs.Sizes.mu.Lock()
					setCookie, headers := fs.Sizes.setCookie, fs.Sizes.headers
					fs.Sizes.setCookie, fs.Sizes.headers, fs.Sizes.cookie = 0, 0, 0
					fs.Sizes.mu.Unlock()
					what := fmt.Sprintf("%s, HTTP/%d: callback's Set-Cookie %d B (headers %d B)", user, 1+btoi(h2), setCookie, headers)
					if slices.Contains(tc.fails, user) {
						if resp.StatusCode != http.StatusBadGateway {
							t.Errorf("%s: login answered %d, want the front's 502", what, resp.StatusCode)
						}
						continue
					}
					// The login ends on the page asked for, the first request
					// with the session's cookies: over HTTP/1.1 one Cookie line,
					// over HTTP/2 one field a cookie, which nginx's limit of a
					// header line does not see.
					if slices.Contains(tc.refused, user) && (!h2 || tc.refusalH2 != "") {
						code, words := http.StatusBadRequest, tc.refusal
						if h2 {
							code, words = http.StatusRequestHeaderFieldsTooLarge, tc.refusalH2
						}
						if resp.StatusCode != code || !strings.Contains(body, words) {
							t.Errorf("%s: the first request with the session answered %d, want the front's %d %q: %.300s", what, resp.StatusCode, code, words, body)
						}
						continue
					}
					if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Echo") != "1" {
						t.Errorf("%s: login answered %d, want the upstream's page: %.200s", what, resp.StatusCode, body)
						continue
					}
					next, err := c.Get(fs.Public + "/tasks")
					if err != nil {
						t.Fatal(err)
					}
					nextBody := readBody(t, next)
					fs.Sizes.mu.Lock()
					cookie := fs.Sizes.cookie
					fs.Sizes.mu.Unlock()
					t.Logf("%s, then Cookie %d B: %d", what, cookie, next.StatusCode)
					if next.StatusCode != http.StatusOK || next.Header.Get("X-Echo") != "1" {
						t.Errorf("%s: the request after the login answered %d, want the upstream's page: %.200s", what, next.StatusCode, nextBody)
					}
				}
			}
			if len(tc.fails) > 0 && !strings.Contains(fs.Front.String(), tc.tooBig) {
				t.Errorf("the front's log does not name the failed logins (%q):\n%s", tc.tooBig, fs.Front)
			}
			// Every row has sessions over 4 KB: portcullis names the
			// settings at the first such login, and only once; it cannot
			// see which front it is behind, so it names them all.
			if n := strings.Count(fs.Log.String(), "larger than a front proxy's default buffer"); n != 1 {
				t.Errorf("portcullis's log warns %d times of an answer larger than nginx's default buffer, want once:\n%s", n, fs.Log)
			}
			for _, setting := range []string{"proxy_buffer_size 32k", "tune.bufsize", "LimitRequestFieldSize 32768"} {
				if !strings.Contains(fs.Log.String(), setting) {
					t.Errorf("portcullis's warning of a large login answer does not name %s:\n%s", setting, fs.Log)
				}
			}
		})
	}
}

type kindName string

func (k kindName) kind() frontKind {
	for _, f := range fronts {
		if f.name == string(k) {
			return f
		}
	}
	panic("no front " + k)
}
