// Package ops tests portcullis as operators run it: the built binary as its
// own process, reloaded by SIGHUP and by rewriting its file under load, shut
// down by SIGTERM during uploads and WebSockets, with its IdP and upstream
// stopped under it.
package ops

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/process"
)

// binary is the portcullis binary TestMain builds.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "portcullis-ops")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "portcullis")
	build := exec.Command("go", "build", "-o", binary, "../../cmd/portcullis")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build portcullis:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sessionKey and newKey are session keys (32 bytes, base64).
const (
	sessionKey = "dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE="
	newKey     = "c2Vjb25kLXNlc3Npb24ta2V5LTMyLWJ5dGVzLWxvbmc="
)

// baseConfig is a CVAT-like profile; LISTEN, ADMIN, UPSTREAM, ISSUER, KEYS
// and VERSION are filled in per test.
const baseConfig = `
server:
  listen: LISTEN
  admin_listen: ADMIN
  public_url: http://LISTEN
upstream:
  url: UPSTREAM
session:
  keys: [KEYS]
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: portcullis-secret
      scopes: [openid, email, profile, groups]
attribute_pass:
  headers:
    X-Email: email
    X-Version: '"VERSION"'
rules:
  - name: public
    path_prefix: /public/
    action: bypass
default_action: authenticate
`

// proc is one running portcullis process.
type proc struct {
	URL, Admin string
	Config     string // the config file
	Log        *process.Output
	Env        []string // added to the test's environment
	cmd        *exec.Cmd
	done       chan struct{}
	exitCode   int
	vars       map[string]string
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(process.FreePort(t))
}

// newProc prepares a process whose config is baseConfig with vars; LISTEN
// and ADMIN get free loopback addresses unless vars set them.
func newProc(t *testing.T, vars map[string]string) *proc {
	t.Helper()
	p := &proc{vars: map[string]string{"LISTEN": freeAddr(t), "ADMIN": freeAddr(t), "KEYS": sessionKey, "VERSION": "one",
		"ISSUER": "http://127.0.0.1:1/", "UPSTREAM": "http://127.0.0.1:1"}}
	for k, v := range vars {
		p.vars[k] = v
	}
	p.URL, p.Admin = "http://"+p.vars["LISTEN"], "http://"+p.vars["ADMIN"]
	p.Config = filepath.Join(t.TempDir(), "portcullis.yaml")
	p.write(t, nil)
	return p
}

// write rewrites the config file with vars changed, atomically (rename),
// as configuration management tools and Kubernetes do.
func (p *proc) write(t *testing.T, vars map[string]string) {
	t.Helper()
	for k, v := range vars {
		p.vars[k] = v
	}
	p.writeRaw(t, p.text())
}

// text is baseConfig with p's vars.
func (p *proc) text() string {
	text := baseConfig
	for k, v := range p.vars {
		text = strings.ReplaceAll(text, k, v)
	}
	return text
}

func (p *proc) writeRaw(t *testing.T, text string) {
	t.Helper()
	tmp := p.Config + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p.Config); err != nil {
		t.Fatal(err)
	}
}

// start runs the binary and waits until its admin listener answers.
func (p *proc) start(t *testing.T, args ...string) {
	t.Helper()
	p.Log = &process.Output{}
	p.cmd = exec.Command(binary, append([]string{"serve", "--config", p.Config}, args...)...)
	p.cmd.Stderr = p.Log
	p.cmd.Stdout = p.Log
	p.cmd.Env = append(os.Environ(), p.Env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() {
		p.cmd.Wait()
		p.exitCode = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("portcullis log:\n%s", p.Log)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(p.Admin + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-p.done:
			t.Fatalf("portcullis exited early (%d):\n%s", p.exitCode, p.Log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("portcullis not up after 10s:\n%s", p.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.exitCode
	case <-time.After(limit):
		t.Fatalf("portcullis still running %s after the signal", limit)
		return -1
	}
}

// metric returns the value of one series on /metrics (the line whose name
// and labels start with series), or -1 when there is none.
func (p *proc) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get(p.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, series)), 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return v
		}
	}
	return -1
}

// ready returns /readyz's status and body.
func (p *proc) ready(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get(p.Admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(body)
}

// eventually polls cond every 50ms until it holds or limit passes.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mintCookie makes the session cookie a login would, sealed with key.
func mintCookie(t *testing.T, key string, email string) *http.Cookie {
	t.Helper()
	k := mustDecode(t, key)
	opts := session.Options{CookieName: "portcullis", Keys: [][]byte{k}}
	store, err := session.NewCookieStore(opts)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	p := idp.Profile{IdP: "company", Sub: email, Email: email, Roles: []string{"user"}}
	if err := store.Save(rec, httptest.NewRequest("GET", "/", nil), session.New(p, idp.Tokens{}, opts)); err != nil {
		t.Fatal(err)
	}
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("minted %d cookies, want 1", len(cookies))
	}
	return cookies[0]
}

// openSession opens a session cookie of p as p does, to learn the tokens
// it holds.
func openSession(t *testing.T, p *proc, cookies []*http.Cookie) *session.Session {
	t.Helper()
	cfg, err := proxy.LoadConfig(p.Config, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	o, err := proxy.SessionOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	store, err := session.NewCookieStore(o)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/", nil)
	for _, c := range cookies {
		r.AddCookie(c)
	}
	s, err := store.Load(r)
	if err != nil || s == nil {
		t.Fatalf("session cookie does not open: %v", err)
	}
	return s
}

func mustDecode(t *testing.T, key string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeIssuer serves just enough of OIDC discovery for the proxy to call
// the IdP ready; nobody logs in there.
func fakeIssuer(t *testing.T) string {
	t.Helper()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":"%[1]s/auth","token_endpoint":"%[1]s/token","jwks_uri":"%[1]s/jwks","userinfo_endpoint":"%[1]s/me","id_token_signing_alg_values_supported":["RS256"],"response_types_supported":["code"],"subject_types_supported":["public"]}`, srv.URL)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// connRefused reports whether nothing accepts connections at addr.
func connRefused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return true
}

var sigterm = syscall.SIGTERM

// jwtPattern finds anything shaped like a JWT in a log.
var jwtPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.`)

func netDial(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 2*time.Second) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
