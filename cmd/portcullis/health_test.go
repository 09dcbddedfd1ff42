package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy"
	"github.com/portcullis-proxy/portcullis/test/process"
)

// notReady is what the admin listener answers on /readyz while an IdP's
// discovery has not succeeded.
const notReady = `{"problems":{"idp company":"discovery: dial tcp 127.0.0.1:1: connect: connection refused"},"status":"not ready"}` + "\n"

// adminStub is an admin listener on loopback that answers each path with the
// status given (404 for any other), and /readyz's failures with notReady.
func adminStub(t *testing.T, status map[string]int) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, ok := status[r.URL.Path]
		switch {
		case !ok:
			http.NotFound(w, r)
		case code == http.StatusFound:
			http.Redirect(w, r, "/elsewhere", code)
		case code == 0: // never answers
			<-r.Context().Done()
		case code != http.StatusOK && r.URL.Path == "/readyz":
			w.WriteHeader(code)
			io.WriteString(w, notReady)
		default:
			w.WriteHeader(code)
			io.WriteString(w, `{"status":"ok"}`)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// hostPort is a test server's address as server.admin_listen gives it.
func hostPort(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

// oneLineOn says whether out is exactly one line that contains every want.
func oneLineOn(out string, want ...string) bool {
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
		return false
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			return false
		}
	}
	return true
}

func TestHealthAnswers(t *testing.T) {
	ready := adminStub(t, map[string]int{"/healthz": 200, "/readyz": 200})
	starting := adminStub(t, map[string]int{"/healthz": 200, "/readyz": 503})
	broken := adminStub(t, map[string]int{"/healthz": 500, "/readyz": 503})
	redirecting := adminStub(t, map[string]int{"/readyz": http.StatusFound})
	silent := adminStub(t, map[string]int{"/readyz": 0})
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout []string // all on one line, when not nil
		stderr []string // all on one line, when not nil
	}{
		{"a ready proxy exits 0 and says so", []string{"--url", ready.URL},
			0, []string{"GET " + ready.URL + "/readyz: 200 OK"}, nil},
		{"a proxy that is not ready exits 1 with the status and what is missing", []string{"--url", starting.URL},
			1, nil, []string{"portcullis health: GET " + starting.URL + "/readyz: 503 Service Unavailable", `"idp company":"discovery: dial tcp`}},
		{"--live asks /healthz, which answers 200 before the proxy is ready", []string{"--url", starting.URL, "--live"},
			0, []string{"GET " + starting.URL + "/healthz: 200 OK"}, nil},
		{"--live fails when /healthz does", []string{"--url", broken.URL, "--live"},
			1, nil, []string{"/healthz: 500 Internal Server Error"}},
		{"a trailing slash on --url is the same listener", []string{"--url", ready.URL + "/"},
			0, []string{ready.URL + "/readyz: 200 OK"}, nil},
		{"nothing listening exits 1 with the dial error", []string{"--url", closed.URL},
			1, nil, []string{"portcullis health: ", closed.URL + "/readyz", "connection refused"}},
		{"a redirect is a failure, not followed", []string{"--url", redirecting.URL},
			1, nil, []string{"/readyz: 302 Found"}},
		{"a listener that never answers fails after --timeout", []string{"--url", silent.URL, "--timeout", "200ms"},
			1, nil, []string{"portcullis health: ", "Timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			code, stdout, stderr := runCLI(append([]string{"health"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.code, stdout, stderr)
			}
			if tc.stdout != nil && !oneLineOn(stdout, tc.stdout...) || tc.stdout == nil && stdout != "" {
				t.Errorf("stdout %q, want one line with %q", stdout, tc.stdout)
			}
			if tc.stderr != nil && !oneLineOn(stderr, tc.stderr...) || tc.stderr == nil && stderr != "" {
				t.Errorf("stderr %q, want one line with %q", stderr, tc.stderr)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("took %s", took)
			}
		})
	}
}

// The address is server.admin_listen of the file that serve and check read:
// --config, then $PORTCULLIS_CONFIG, then ./portcullis.yaml.
func TestHealthFindsTheAdminListenerInTheConfig(t *testing.T) {
	ready := adminStub(t, map[string]int{"/healthz": 200, "/readyz": 200})
	withAdmin := func(addr string) string {
		return strings.Replace(validConfig, "server:\n", "server:\n  admin_listen: \""+addr+"\"\n", 1)
	}
	good := writeFile(t, "good.yaml", withAdmin(hostPort(ready)))
	// Nothing listens where this one points.
	elsewhere := writeFile(t, "elsewhere.yaml", withAdmin("127.0.0.1:1"))
	for _, tc := range []struct {
		name string
		args []string
		env  string // $PORTCULLIS_CONFIG
		cwd  string // ./portcullis.yaml, when not empty
		code int
	}{
		{"--config names the file", []string{"--config", good}, "", "", 0},
		{"--config wins over $PORTCULLIS_CONFIG", []string{"--config", good}, elsewhere, "", 0},
		{"$PORTCULLIS_CONFIG names the file", nil, good, "", 0},
		{"$PORTCULLIS_CONFIG wins over ./portcullis.yaml", nil, elsewhere, withAdmin(hostPort(ready)), 1},
		{"without either, ./portcullis.yaml is read", nil, "", withAdmin(hostPort(ready)), 0},
		{"--url is used without reading the config", []string{"--url", ready.URL}, elsewhere, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			configLookup(t, tc.env, tc.cwd)
			code, stdout, stderr := runCLI(append([]string{"health"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.code, stdout, stderr)
			}
		})
	}
}

// The health check reads server.admin_listen and nothing else: the image
// runs it with the container's environment, but an exec probe or an
// operator's shell may lack the secrets, and a file that a reload refused
// leaves the proxy serving the configuration it had.
func TestHealthNeedsOnlyTheAdminAddress(t *testing.T) {
	ready := adminStub(t, map[string]int{"/healthz": 200, "/readyz": 200})
	cvat, err := os.ReadFile("../../deploy/cvat/portcullis.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const cvatAdmin = `admin_listen: "127.0.0.1:9773"`
	if !strings.Contains(string(cvat), cvatAdmin) {
		t.Fatalf("deploy/cvat/portcullis.yaml has no %s line to replace", cvatAdmin)
	}
	for _, tc := range []struct {
		name string
		yaml string
		env  map[string]string
	}{
		{
			name: "the CVAT profile without any of its ${VAR} secrets",
			yaml: strings.Replace(string(cvat), cvatAdmin, `admin_listen: "`+hostPort(ready)+`"`, 1),
		},
		{
			name: "admin_listen from ${VAR}, the rest of the file undecodable",
			yaml: "server:\n  admin_listen: ${ADMIN}\n  colour: blue\nsession:\n  lifetime: soon\n  keys: ${PORTCULLIS_KEYS}\n",
			env:  map[string]string{"ADMIN": hostPort(ready)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"CVAT_PUBLIC_URL", "OIDC_ISSUER", "PORTCULLIS_SESSION_KEY", "PORTCULLIS_SESSION_KEYS", "PORTCULLIS_IDP_COMPANY_CLIENT_SECRET"} {
				t.Setenv(k, "")
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			path := writeFile(t, "portcullis.yaml", tc.yaml)
			if code, _, _ := runCLI("check", "--config", path); code != 1 {
				t.Fatalf("check accepts the file (exit %d): the case tests nothing", code)
			}
			code, stdout, stderr := runCLI("health", "--config", path)
			if code != 0 || !oneLineOn(stdout, ready.URL+"/readyz: 200 OK") {
				t.Fatalf("exit %d stdout %q stderr %q; want 0 and the ready answer", code, stdout, stderr)
			}
		})
	}
}

// A wildcard admin address is dialled on loopback, where it also listens.
func TestHealthDialsAWildcardAdminAddressOnLoopback(t *testing.T) {
	for _, tc := range []struct{ listen, dial string }{
		{":9773", "127.0.0.1:9773"},
		{"0.0.0.0:9773", "127.0.0.1:9773"},
		{"[::]:9773", "127.0.0.1:9773"},
		{"127.0.0.1:9773", "127.0.0.1:9773"},
		{"[::1]:9773", "[::1]:9773"},
		{"10.1.2.3:9773", "10.1.2.3:9773"},
		{"admin.internal:9773", "admin.internal:9773"},
	} {
		if got, err := adminDialAddress(tc.listen); err != nil || got != tc.dial {
			t.Errorf("admin_listen %q: dial %q (%v), want %q", tc.listen, got, err, tc.dial)
		}
	}

	// End to end: an admin listener on 127.0.0.1 is found from each
	// wildcard spelling of its port, and the answer names the address dialled.
	ready := adminStub(t, map[string]int{"/healthz": 200, "/readyz": 200})
	_, port, _ := net.SplitHostPort(hostPort(ready))
	for _, listen := range []string{":" + port, "0.0.0.0:" + port, "[::]:" + port} {
		t.Run(listen, func(t *testing.T) {
			path := writeFile(t, "portcullis.yaml", "server:\n  admin_listen: \""+listen+"\"\n")
			code, stdout, stderr := runCLI("health", "--config", path)
			if code != 0 || !oneLineOn(stdout, "GET http://127.0.0.1:"+port+"/readyz: 200 OK") {
				t.Fatalf("exit %d stdout %q stderr %q; want 0, dialled on 127.0.0.1", code, stdout, stderr)
			}
		})
	}
}

// Against the proxy itself: with its IdP unreachable it is alive but not
// ready, and health says which IdP is missing.
func TestHealthAgainstARunningProxy(t *testing.T) {
	admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(process.FreePort(t)))
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(process.FreePort(t)))
	path := writeFile(t, "portcullis.yaml", strings.Replace(validConfig, "server:\n",
		"server:\n  listen: \""+listen+"\"\n  admin_listen: \""+admin+"\"\n", 1))
	cfg, err := loadChecked(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- proxy.Run(ctx, cfg, proxy.ServeOptions{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy.Run: %v", err)
		}
	}()

	var code int
	var stdout, stderr string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if code, stdout, stderr = runCLI("health", "--config", path, "--live"); code == 0 {
			break
		}
	}
	if code != 0 || !oneLineOn(stdout, "GET http://"+admin+"/healthz: 200 OK") {
		t.Fatalf("--live: exit %d stdout %q stderr %q; want 0", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI("health", "--config", path)
	if code != 1 || !oneLineOn(stderr, "GET http://"+admin+"/readyz: 503 Service Unavailable", "idp company") {
		t.Fatalf("exit %d stdout %q stderr %q; want 1 and the IdP that is missing", code, stdout, stderr)
	}
}

func TestHealthUsageAndConfigErrors(t *testing.T) {
	noPort := writeFile(t, "portcullis.yaml", "server:\n  admin_listen: localhost\n")
	notYAML := writeFile(t, "broken.yaml", "server: [\n")
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		inStderr string
	}{
		{"an argument", []string{"--url", "http://127.0.0.1:9773", "now"}, 2, "usage: portcullis health"},
		{"--url without a scheme", []string{"--url", "127.0.0.1:9773"}, 2, "want the admin listener as http://HOST:PORT"},
		{"--url with a path", []string{"--url", "http://127.0.0.1:9773/readyz"}, 2, "--live picks /healthz"},
		{"a timeout of zero", []string{"--url", "http://127.0.0.1:9773", "--timeout", "0s"}, 2, "usage: portcullis health"},
		{"an unknown flag", []string{"--ready"}, 2, "-ready"},
		{"a missing config file", []string{"--config", noPort + ".nope"}, 1, "read config"},
		{"a config that is not YAML", []string{"--config", notYAML}, 1, "broken.yaml: config: "},
		{"an admin_listen without a port", []string{"--config", noPort}, 1, `server.admin_listen: not a host:port address: "localhost"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(append([]string{"health"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.inStderr) {
				t.Errorf("exit %d stdout %q stderr %q; want %d and %q", code, stdout, stderr, tc.code, tc.inStderr)
			}
		})
	}
}

func TestHelpListsHealth(t *testing.T) {
	_, stdout, _ := runCLI("help")
	if !strings.Contains(stdout, "portcullis health  [--config FILE | --url http://HOST:PORT] [--live] [--timeout 3s]") {
		t.Errorf("usage lacks the health command:\n%s", stdout)
	}
}
