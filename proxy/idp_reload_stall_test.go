package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy/jsonlog"
	"github.com/portcullis-proxy/portcullis/test/echo"
	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// stallReloadStack is a proxy served on a loopback listener as serve runs
// it, from a configuration file that tests rewrite and reload, its log kept.
type stallReloadStack struct {
	live *live
	logs *logBuffer
	path string
	base string
}

// startStallReloadStack serves yaml on ln (PUBLIC_URL replaced by its
// origin) with idpTransport under the proxy's IdP calls.
func startStallReloadStack(t *testing.T, ln net.Listener, yaml string, idpTransport http.RoundTripper) *stallReloadStack {
	t.Helper()
	s := &stallReloadStack{logs: &logBuffer{}, base: "http://" + ln.Addr().String()}
	s.path = filepath.Join(t.TempDir(), "portcullis.yaml")
	s.write(t, yaml)
	cfg, err := ParseConfig([]byte(strings.ReplaceAll(yaml, "PUBLIC_URL", s.base)), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(jsonlog.New(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := build(t.Context(), cfg, log, nil, idpTransport)
	if err != nil {
		t.Fatal(err)
	}
	s.live = newLive(t.Context(), h, log)
	s.live.src = &configSource{path: s.path, getenv: os.Getenv}
	_, s.live.src.stamp, _ = s.live.src.read()
	srv := &http.Server{Handler: s.live, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *stallReloadStack) write(t *testing.T, yaml string) {
	t.Helper()
	if err := os.WriteFile(s.path, []byte(strings.ReplaceAll(yaml, "PUBLIC_URL", s.base)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reload rewrites the file as yaml and reloads it, as SIGHUP does, and
// says how long the reload took.
func (s *stallReloadStack) reload(t *testing.T, yaml string) time.Duration {
	t.Helper()
	s.write(t, yaml)
	start := time.Now()
	if err := s.live.reload("signal"); err != nil {
		t.Fatalf("reload: %v", err)
	}
	return time.Since(start)
}

// readyz is what the admin listener's /readyz answers now.
func (s *stallReloadStack) readyz() (int, string) {
	rec := httptest.NewRecorder()
	s.live.admin().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	return rec.Code, rec.Body.String()
}

// startLogin asks the proxy to start a login at IdP id, as a browser
// does, and returns the answer without following it.
func (s *stallReloadStack) startLogin(t *testing.T, id string) *http.Response {
	t.Helper()
	return s.startLoginWith(t, &http.Client{Timeout: 10 * time.Second}, id)
}

// startLoginWith is startLogin by browser, which keeps the login state.
func (s *stallReloadStack) startLoginWith(t *testing.T, browser *http.Client, id string) *http.Response {
	t.Helper()
	c := *browser
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequest("GET", s.base+"/.portcullis/login/"+id+"?rd=/tasks", nil)
	req.Header.Set("Accept", "text/html")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

const stalledOIDCConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [` + testKey + `]
sso:
  identity_providers:
    - id: company
      NAME
      protocol: OIDC
      server_url: ISSUER
      client_id: portcullis
      client_secret: SECRET
      scopes: [SCOPES]
rules:
  - name: public
    path_prefix: /publicMORE
    action: bypass
`

// A reload while the OIDC provider stalls (oidc-provider stopped with
// SIGSTOP: connections taken, nothing answered) neither waits for it nor
// takes away what the proxy had discovered of it: one that leaves the
// entry alone, and one that changes its display name and scopes, each take
// effect at once; logins start at the IdP as before (not 503 until
// discovery succeeds again), the session made before goes on, /readyz stays
// ready and each reload counts as a success. A new client secret takes
// effect: once the IdP answers again, a login with it is what the IdP sees.
func TestReloadWhileTheOIDCProviderStalls(t *testing.T) {
	up := httptest.NewServer(echo.New())
	t.Cleanup(up.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0") // the redirect URI is registered at the IdP's start
	if err != nil {
		t.Fatal(err)
	}
	op := oidcserver.Start(t, oidcserver.Options{RedirectURIs: []string{"http://" + ln.Addr().String() + "/.portcullis/oidc/company/callback"}})
	config := func(name, scopes, secret, public string) string {
		return strings.NewReplacer("UPSTREAM_URL", up.URL, "ISSUER", op.Issuer, "NAME", name, "SCOPES", scopes,
			"SECRET", secret, "MORE", public).Replace(stalledOIDCConfig)
	}
	first := config("name: Company SSO", "openid, email, profile, groups", "portcullis-secret", "")
	s := startStallReloadStack(t, ln, first, &http.Transport{ResponseHeaderTimeout: 2 * time.Second})
	waitFor(t, "the proxy to be ready", func() bool { return len(s.live.cur.Load().Ready()) == 0 })

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: time.Minute}
	resp := oidcserver.Login(t, browser, s.base+"/.portcullis/login/company?rd=/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/tasks" {
		t.Fatalf("login: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	signedIn := func(when string) {
		t.Helper()
		req, _ := http.NewRequest("GET", s.base+"/tasks", nil)
		req.Header.Set("Accept", "application/json")
		resp, err := browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: the session made before: %d, want 200", when, resp.StatusCode)
		}
	}
	loginStarts := func(when, scope string) {
		t.Helper()
		resp := s.startLogin(t, "company")
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc.String(), op.Issuer) {
			t.Errorf("%s: a login starts with %d to %q, want 302 to the IdP", when, resp.StatusCode, loc)
		} else if got := loc.Query().Get("scope"); got != scope {
			t.Errorf("%s: the login asks for scope %q, want %q", when, got, scope)
		}
	}
	ready := func(when string) {
		t.Helper()
		if code, body := s.readyz(); code != http.StatusOK {
			t.Errorf("%s: /readyz %d %s, want 200", when, code, body)
		}
	}

	op.Pause()
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			op.Resume()
		}
	})
	before := s.live.cur.Load().providers["company"].impl
	took := s.reload(t, config("name: Company SSO", "openid, email, profile, groups", "portcullis-secret", "/x"))
	t.Logf("a reload that leaves the stalled IdP's entry alone took %v", took.Round(time.Millisecond))
	if s.live.cur.Load().providers["company"].impl != before {
		t.Error("a reload that left the IdP's entry alone replaced its provider")
	}
	loginStarts("after a reload that left the entry alone", "openid email profile groups")
	signedIn("after a reload that left the entry alone")
	ready("after a reload that left the entry alone")

	took = s.reload(t, config("name: Company SSO (new)", "openid, email, groups", "portcullis-secret", "/x"))
	t.Logf("a reload that changes the stalled IdP's name and scopes took %v", took.Round(time.Millisecond))
	if took > readyWait/2 {
		t.Errorf("a reload that changed the stalled IdP's entry took %v: it waited for discovery", took.Round(time.Millisecond))
	}
	loginStarts("after a reload that changed the name and scopes", "openid email groups")
	signedIn("after a reload that changed the name and scopes")
	ready("after a reload that changed the name and scopes")
	checkCounter(t, gather(t, s.live.cur.Load()), "portcullis_config_reloads_total", map[string]string{"result": "success"}, 2)
	if lines := s.logs.find(t, map[string]any{"msg": "config reloaded", "waited_for_idps": true}); len(lines) != 0 {
		t.Errorf("a reload waited for the stalled IdP: %v", lines)
	}

	// A new client secret is what the IdP sees at the next login: the
	// IdP refuses it (it knows the old one).
	s.reload(t, config("name: Company SSO (new)", "openid, email, groups", "wrong-secret", "/x"))
	op.Resume()
	resumed = true
	resp = oidcserver.Login(t, browser, s.base+"/.portcullis/login/company?rd=/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK && resp.Request.URL.Path == "/tasks" {
		t.Errorf("a login after the client secret changed to one the IdP does not know went through: %s", body)
	}
	if lines := s.logs.find(t, map[string]any{"msg": "login_failed", "reason": "invalid_client"}); len(lines) != 1 {
		t.Errorf("%d login_failed lines saying invalid_client, want 1: the new client secret was not what the IdP saw", len(lines))
	}
}

// stallingMetadata serves an IdP's metadata, or, once stalled, takes the
// request and answers nothing until the client gives up.
type stallingMetadata struct {
	stalled atomic.Bool
	body    []byte
	release chan struct{}
}

func (m *stallingMetadata) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if m.stalled.Load() {
		select {
		case <-r.Context().Done():
		case <-m.release:
		}
		return
	}
	w.Header().Set("Content-Type", "application/samlmetadata+xml")
	w.Write(m.body)
}

const stalledSAMLConfig = `
server:
  public_url: PUBLIC_URL
upstream:
  url: UPSTREAM_URL
session:
  keys: [` + testKey + `]
sso:
  identity_providers:
    - id: corp
      name: NAME
      protocol: SAML
      entity_id: ENTITY
      metadata_url: METADATA
`

// A reload while the SAML IdP's metadata_url stalls (it takes the
// connection and answers nothing) and its sign-in page does not: one that
// changes the entry (its display name) takes effect at once with the
// metadata fetched before, which the running provider was ready with; it
// neither waits for the fetch nor makes logins 503 until a retry fetches
// it. The SP key pair generated at the start stays, as the IdP knows it.
func TestReloadWhileTheSAMLMetadataURLStalls(t *testing.T) {
	up := httptest.NewServer(echo.New())
	t.Cleanup(up.Close)
	idpSrv := samlserver.Start(t, samlserver.Options{Users: []samlserver.User{{
		Name: "alice", Password: "alice-pw", Email: "alice@example.com",
	}}})
	resp, err := http.Get(idpSrv.MetadataURL())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	md := &stallingMetadata{body: body, release: make(chan struct{})}
	mdSrv := httptest.NewServer(md)
	t.Cleanup(mdSrv.Close)
	t.Cleanup(func() { close(md.release) })
	config := func(name string) string {
		return strings.NewReplacer("UPSTREAM_URL", up.URL, "ENTITY", idpSrv.EntityID(), "METADATA", mdSrv.URL,
			"NAME", name).Replace(stalledSAMLConfig)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := startStallReloadStack(t, ln, config("Corp"), nil)
	if problems := s.live.cur.Load().Ready(); len(problems) != 0 {
		t.Fatalf("not ready at the start: %v", problems)
	}
	spMetadata := func() []byte {
		t.Helper()
		resp, err := http.Get(s.base + "/.portcullis/saml/corp/metadata")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	registered := spMetadata()
	if err := idpSrv.AddServiceProviderXML(registered); err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	login := func(when string) {
		t.Helper()
		resp := s.startLoginWith(t, browser, "corp")
		if resp.StatusCode != http.StatusFound {
			t.Errorf("%s: a login starts with %d, want 302 to the IdP", when, resp.StatusCode)
			return
		}
		acs := signInAtSAMLIdP(t, resp.Header.Get("Location"), "alice", "alice-pw")
		resp, err := browser.PostForm(s.base+"/.portcullis/saml/corp/acs", acs)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/tasks" {
			t.Errorf("%s: the login ends with %d at %s, want 200 at /tasks", when, resp.StatusCode, resp.Request.URL)
		}
	}
	login("before the metadata_url stalls")

	md.stalled.Store(true)
	before := s.live.cur.Load().providers["corp"].impl
	s.reload(t, config("Corp")+"rules:\n  - {name: public, path_prefix: /public, action: bypass}\n")
	if s.live.cur.Load().providers["corp"].impl != before {
		t.Error("a reload that left the IdP's entry alone replaced its provider")
	}
	took := s.reload(t, config("Corp (new)"))
	t.Logf("a reload that changes the SAML IdP's name while its metadata_url stalls took %v", took.Round(time.Millisecond))
	if took > readyWait/2 {
		t.Errorf("the reload took %v: it waited for the stalled metadata_url", took.Round(time.Millisecond))
	}
	if code, body := s.readyz(); code != http.StatusOK {
		t.Errorf("after the reload: /readyz %d %s, want 200", code, body)
	}
	if !bytes.Equal(spMetadata(), registered) {
		t.Error("the reload changed the SP metadata (its generated key pair): an IdP that checks request signatures refuses them")
	}
	login("after the reload, the metadata_url still stalled")
	checkCounter(t, gather(t, s.live.cur.Load()), "portcullis_config_reloads_total", map[string]string{"result": "success"}, 2)
}
