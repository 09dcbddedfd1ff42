// Package security is a black-box attack suite: it builds the real portcullis
// binary, runs it with a real configuration in front of a recording upstream
// and two small OIDC providers whose keys it controls, and attacks it over raw
// TCP with requests Go's own client would never send. Assertions are on the
// proxy's answers and on exactly what reached the upstream.
package security

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
)

// sessionKey is the proxy's session key in the suite's config.
const sessionKey = "c2VjdXJpdHktc3VpdGUtc2Vzc2lvbi1rZXktMzJieXQ="

// suite is the running system under attack, shared by every test.
var suite struct {
	bin      string // the portcullis binary
	proxy    string // host:port of the proxy listener
	public   string // the proxy's public_url
	admin    string // host:port of the admin listener
	upstream *upstream
	alpha    *oidcIdP // the IdP /login picks (lowest weight)
	beta     *oidcIdP // a second IdP, for cross-IdP attacks
	cmd      *exec.Cmd
	logPath  string
}

// configTemplate is the proxy's configuration: the CVAT-style profile with a
// bypass rule under /public/, an allow_if rule on /admin, a source rule, a
// deny rule, the assertion JWT, and three IdPs (the third never reachable).
const configTemplate = `
server:
  listen: PROXY
  admin_listen: ADMIN
  public_url: PUBLIC
  trusted_proxies: [127.0.0.2/32]
upstream:
  url: UPSTREAM
session:
  keys: [SESSIONKEY]
  lifetime: 1h
sso:
  selection_mode: lowest_weight
  identity_providers:
    - id: alpha
      name: Alpha SSO
      protocol: OIDC
      weight: 1
      server_url: ALPHA
      client_id: portcullis
      client_secret: alpha-secret
      scopes: [openid, email, profile]
    - id: beta
      name: Beta SSO
      protocol: OIDC
      weight: 2
      server_url: BETA
      client_id: portcullis
      client_secret: beta-secret
    - id: down
      name: Unreachable SSO
      protocol: OIDC
      weight: 3
      server_url: DOWN
      client_id: portcullis
      client_secret: down-secret
role_mapping:
  roles: [admin, user]
  default: user
  rules:
    - role: admin
      when: '"admins" in groups'
attribute_pass:
  headers:
    X-Email: email
    X-Groups: 'join(roles, ",")'
  jwt:
    header: X-Portcullis-Assertion
  strip_headers: [X-Forwarded-User, X-Remote-User]
rules:
  - name: api-credentials
    path_prefix: /api/
    headers: {Authorization: '^(Basic|Token|Bearer) '}
    action: bypass
  - name: public
    path_prefix: /public/
    action: bypass
  - name: internal
    path_prefix: /internal/
    sources: [10.0.0.0/8]
    action: bypass
  - name: admin-only
    path_prefix: /admin
    action: authenticate
    allow_if: '"admin" in roles'
  - name: blocked
    path_prefix: /blocked
    action: deny
default_action: authenticate
`

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "security suite:", err)
		if suite.logPath != "" {
			if b, rerr := os.ReadFile(suite.logPath); rerr == nil {
				fmt.Fprintf(os.Stderr, "--- proxy log ---\n%s\n", tail(string(b), 4000))
			}
		}
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "portcullis-security-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)

	suite.bin = filepath.Join(dir, "portcullis")
	build := exec.Command("go", "build", "-o", suite.bin, "./cmd/portcullis")
	build.Dir = moduleRoot()
	if out, err := build.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("go build ./cmd/portcullis: %v\n%s", err, out)
	}

	suite.upstream = startUpstream()
	defer suite.upstream.close()
	suite.alpha = startIdP("alpha")
	defer suite.alpha.close()
	suite.beta = startIdP("beta")
	defer suite.beta.close()

	suite.proxy, suite.admin = freeAddr(), freeAddr()
	suite.public = "http://" + suite.proxy
	cfg := strings.NewReplacer(
		"PROXY", suite.proxy, "ADMIN", suite.admin, "PUBLIC", suite.public,
		"UPSTREAM", "http://"+suite.upstream.addr, "SESSIONKEY", sessionKey,
		"ALPHA", suite.alpha.issuer, "BETA", suite.beta.issuer, "DOWN", "http://"+freeAddr(),
	).Replace(configTemplate)
	cfgPath := filepath.Join(dir, "portcullis.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return 0, err
	}
	suite.logPath = filepath.Join(dir, "proxy.log")
	logf, err := os.Create(suite.logPath)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	suite.cmd = exec.Command(suite.bin, "serve", "--config", cfgPath, "--log-format", "text", "--log-level", "warn", "--grace", "1s")
	suite.cmd.Stdout, suite.cmd.Stderr = logf, logf
	suite.cmd.Env = append(os.Environ(), "PORTCULLIS_CONFIG=")
	// If the test binary dies (a -timeout panic), the proxy dies with it.
	suite.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := suite.cmd.Start(); err != nil {
		return 0, fmt.Errorf("start portcullis: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- suite.cmd.Wait() }()
	defer func() {
		suite.cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			suite.cmd.Process.Kill()
			<-exited
		}
	}()
	if err := waitReady(exited); err != nil {
		return 0, err
	}
	startSlowloris()
	return m.Run(), nil
}

// waitReady waits until the proxy answers /readyz with only the unreachable
// IdP missing.
func waitReady(exited <-chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("portcullis exited during start: %v", err)
		default:
		}
		resp, err := http.Get("http://" + suite.admin + "/readyz")
		if err == nil {
			var body struct {
				Problems map[string]string `json:"problems"`
			}
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			_, downMissing := body.Problems["idp down"]
			if len(body.Problems) == 1 && downMissing {
				return nil
			}
			last = fmt.Sprint(body.Problems)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("portcullis not ready after 30s: %s", last)
}

// moduleRoot is the repository root: two levels up from this package.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// freeAddr is a loopback address for a server to take, below the kernel's
// ephemeral range (process.FreePort): one from ":0" can be taken by a
// client connection before the server starts.
func freeAddr() string {
	addr, err := process.FreeAddr()
	if err != nil {
		panic(err)
	}
	return addr
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// proxyRSS is the resident memory of the proxy process, in KiB.
func proxyRSS(t *testing.T) int {
	t.Helper()
	b, err := process.RSS(suite.cmd.Process.Pid)
	if err != nil {
		t.Fatalf("read proxy memory: %v", err)
	}
	return int(b >> 10)
}
