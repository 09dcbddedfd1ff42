// Package oidcserver runs a real OpenID Connect provider (test/oidc/provider.mjs,
// npm oidc-provider v9) for tests, and drives its login form like a browser.
//
// The provider knows two users: alice (password alice-pw, alice@example.com,
// groups cvat-admins and annotators) and bob (bob-pw, bob@example.com, group
// annotators). It releases the scopes openid, email, profile, groups and
// offline_access; refresh tokens need prompt=consent with offline_access, as
// the OpenID Connect spec asks, and are rotated on use.
package oidcserver

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
)

// Built-in users and their passwords.
const (
	Alice         = "alice"
	AlicePassword = "alice-pw"
	Bob           = "bob"
	BobPassword   = "bob-pw"
)

// Options configure the provider and its one client.
type Options struct {
	// Port to listen on at 127.0.0.1; 0 picks a free one.
	Port int
	// ClientID defaults to "portcullis".
	ClientID string
	// ClientSecret defaults to "portcullis-secret"; set PublicClient for none.
	ClientSecret string
	// PublicClient registers the client with no secret
	// (token_endpoint_auth_method none, which implies PKCE).
	PublicClient bool
	// RedirectURIs the client may use; at least one is required.
	RedirectURIs []string
	// PostLogoutRedirectURIs the client may use at the end_session endpoint.
	PostLogoutRedirectURIs []string
	// BackchannelLogoutURI, when set, receives logout tokens.
	BackchannelLogoutURI string
	// BackchannelLogoutWithoutSID registers the client without
	// backchannel_logout_session_required: neither its ID tokens nor its
	// logout tokens carry sid, and a logout token names the user by sub
	// alone (OIDC Back-Channel Logout 1.0, 2.4).
	BackchannelLogoutWithoutSID bool
	// ConformIDTokenClaims keeps the ID token down to sub and protocol claims,
	// so that email, groups and the like come only from userinfo
	// (oidc-provider's default). The zero value puts them in the ID token too.
	ConformIDTokenClaims bool
	// AuthMethod is client_secret_basic (default) or client_secret_post.
	AuthMethod string
	// PKCERequired refuses authorization requests without a code challenge.
	PKCERequired bool
	// ExtraUsers are added to (or replace) the built-in users.
	ExtraUsers map[string]User
	// ClockSkew runs the provider's clock this far ahead of the machine's
	// (negative: behind), as an IdP without NTP does: the iat and exp of its
	// ID tokens are off by as much. Whole seconds.
	ClockSkew time.Duration
	// IDTokenTTL is how long its ID tokens live (whole seconds); zero is
	// oidc-provider's hour.
	IDTokenTTL time.Duration
	// SigningAlgs are the algorithms the provider holds a signing key for,
	// among RS256, PS256, ES256 and EdDSA (an Ed25519 key, which also signs
	// for the fully-specified alg Ed25519); nil is RS256 alone. A client
	// picks one with Client.Metadata's id_token_signed_response_alg.
	SigningAlgs []string
	// Clients are registered beside the one the fields above describe,
	// with the same secret and authentication method.
	Clients []Client
	// IssuerTrailingSlash names the issuer with a trailing slash
	// (http://127.0.0.1:PORT/), as some IdPs spell theirs.
	IssuerTrailingSlash bool
	// AMR and ACR are what every login says of how the user authenticated
	// (RFC 8176 values such as "pwd", and an acr): its ID tokens, and
	// those of its refreshes, carry them as amr and acr. Empty: neither.
	AMR []string
	ACR string
	// ClientAuthUnauthorized answers a client authentication the token
	// endpoint does not accept (a wrong secret, an unknown client, the
	// other auth method) with 403 unauthorized_client, as Glewlwyd 2.7
	// does, instead of RFC 6749's 401 invalid_client.
	ClientAuthUnauthorized bool
	// CodeRefusedAsInvalidCode answers a code the token endpoint does not
	// take (made up, spent, expired) with 403 invalid_code, as Glewlwyd
	// 2.7 does, instead of RFC 6749's 400 invalid_grant.
	CodeRefusedAsInvalidCode bool
	// NoRPInitiatedLogout turns RP-Initiated Logout off: the discovery
	// document names no end_session_endpoint, as Authelia 4.38's and
	// Google's do not.
	NoRPInitiatedLogout bool
	// RefreshRefusedAsInvalidRequest answers a refresh token the token
	// endpoint does not take (spent, expired, made up) with 400
	// invalid_request, as Dex does, instead of RFC 6749's invalid_grant.
	RefreshRefusedAsInvalidRequest bool
}

// Client is one more client at the provider, registered the way a real
// IdP's administrator might have set it up.
type Client struct {
	// ID is its client_id.
	ID string
	// RedirectURIs it may use; at least one.
	RedirectURIs []string
	// Metadata is more client metadata (OpenID Connect Dynamic Client
	// Registration 2), e.g. id_token_signed_response_alg: ES256,
	// userinfo_signed_response_alg: RS256 (userinfo as a signed JWT,
	// application/jwt) or subject_type: pairwise.
	Metadata map[string]any
	// UserinfoOnly are claims kept out of this client's ID tokens and
	// released at userinfo alone, as a Keycloak mapper with "add to ID
	// token" off does.
	UserinfoOnly []string
	// RefreshTokens is when this client gets a refresh token: "" with
	// offline_access alone (oidc-provider's default, and OIDC Core 11's),
	// "always" at every code exchange (Okta, Keycloak), "never".
	RefreshTokens string
	// ReuseRefreshTokens answers a refresh with the same refresh token
	// instead of rotating it (as Keycloak and Entra ID do by default).
	ReuseRefreshTokens bool
	// RefreshWithoutIDToken answers a refresh with access and refresh
	// tokens and no ID token (Glewlwyd 2.7), as OIDC Core 12.2 allows.
	RefreshWithoutIDToken bool
}

// MarshalJSON writes c as --clients reads it: metadata, with the
// provider's behaviour as x_ keys.
func (c Client) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	for k, v := range c.Metadata {
		m[k] = v
	}
	m["client_id"], m["redirect_uris"] = c.ID, c.RedirectURIs
	if len(c.UserinfoOnly) > 0 {
		m["x_userinfo_only"] = c.UserinfoOnly
	}
	if c.RefreshTokens != "" {
		m["x_refresh_tokens"] = c.RefreshTokens
	}
	if c.ReuseRefreshTokens {
		m["x_rotate_refresh_tokens"] = false
	}
	if c.RefreshWithoutIDToken {
		m["x_refresh_id_token"] = false
	}
	return json.Marshal(m)
}

// User is one account at the provider. Extra claims may hold anything that
// marshals to JSON (nested objects, a string instead of a list of groups);
// they are released with the profile scope.
type User struct {
	Password      string         `json:"password"`
	Sub           string         `json:"sub,omitempty"`
	Email         string         `json:"email,omitempty"`
	EmailVerified any            `json:"email_verified,omitempty"`
	Name          string         `json:"name,omitempty"`
	GivenName     string         `json:"given_name,omitempty"`
	FamilyName    string         `json:"family_name,omitempty"`
	Groups        any            `json:"groups,omitempty"`
	Extra         map[string]any `json:"-"`
}

// MarshalJSON flattens Extra next to the standard claims.
func (u User) MarshalJSON() ([]byte, error) {
	type plain User
	b, err := json.Marshal(plain(u))
	if err != nil || len(u.Extra) == 0 {
		return b, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range u.Extra {
		m[k] = v
	}
	return json.Marshal(m)
}

// Server is a running provider.
type Server struct {
	// Issuer is the provider's issuer URL, e.g. http://127.0.0.1:41234.
	Issuer string
	// Port is the port it listens on; it stays the same across Restart.
	Port int
	// ClientID and ClientSecret are the registered client's credentials.
	ClientID     string
	ClientSecret string
	// StartupTime is how long the last start took until READY.
	StartupTime time.Duration

	t    testing.TB
	args []string
	jwks string // the signing keys' file, kept across restarts

	mu     sync.Mutex
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *process.Output
	done   chan struct{}
}

// Start runs the provider and stops it when the test ends. It fails the test
// when node or test/oidc/node_modules is missing.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	root := repoRoot(t)
	script := filepath.Join(root, "test", "oidc", "provider.mjs")
	if _, err := os.Stat(filepath.Join(root, "test", "oidc", "node_modules", "oidc-provider")); err != nil {
		t.Fatalf("oidcserver: test/oidc/node_modules/oidc-provider is missing; run: cd test/oidc && npm ci")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("oidcserver: node is not installed (need Node.js 20 or later): %v", err)
	}
	if len(o.RedirectURIs) == 0 {
		t.Fatalf("oidcserver: Options.RedirectURIs is empty")
	}

	s := &Server{t: t, Port: o.Port, ClientID: o.ClientID, ClientSecret: o.ClientSecret}
	if s.ClientID == "" {
		s.ClientID = "portcullis"
	}
	if s.ClientSecret == "" && !o.PublicClient {
		s.ClientSecret = "portcullis-secret"
	}
	if o.PublicClient {
		s.ClientSecret = ""
	}
	if s.Port == 0 {
		s.Port = FreePort(t)
	}
	dir := t.TempDir()
	args := []string{script,
		"--watch-stdin",
		"--port", strconv.Itoa(s.Port),
		"--client-id", s.ClientID,
		"--client-secret", s.ClientSecret,
		"--conform-id-token-claims", strconv.FormatBool(o.ConformIDTokenClaims),
		"--pkce-required", strconv.FormatBool(o.PKCERequired),
		// The signing keys outlive a restart, so old tokens still verify.
		"--jwks", filepath.Join(dir, "jwks.json"),
	}
	s.jwks = filepath.Join(dir, "jwks.json")
	if o.AuthMethod != "" {
		args = append(args, "--auth-method", o.AuthMethod)
	}
	if o.ClockSkew != 0 {
		// One argument: parseArgs takes a negative value for another flag.
		args = append(args, "--clock-skew="+strconv.Itoa(int(o.ClockSkew/time.Second)))
	}
	if o.IDTokenTTL != 0 {
		args = append(args, "--id-token-ttl", strconv.Itoa(int(o.IDTokenTTL/time.Second)))
	}
	for _, u := range o.RedirectURIs {
		args = append(args, "--redirect-uri", u)
	}
	for _, u := range o.PostLogoutRedirectURIs {
		args = append(args, "--post-logout-redirect-uri", u)
	}
	if o.BackchannelLogoutURI != "" {
		args = append(args, "--backchannel-logout-uri", o.BackchannelLogoutURI)
	}
	if o.BackchannelLogoutWithoutSID {
		args = append(args, "--backchannel-logout-session-required", "false")
	}
	if len(o.SigningAlgs) > 0 {
		args = append(args, "--signing-algs", strings.Join(o.SigningAlgs, ","))
	}
	if o.IssuerTrailingSlash {
		args = append(args, "--issuer-trailing-slash")
	}
	if len(o.AMR) > 0 {
		args = append(args, "--amr", strings.Join(o.AMR, ","))
	}
	if o.ACR != "" {
		args = append(args, "--acr", o.ACR)
	}
	if o.ClientAuthUnauthorized {
		args = append(args, "--client-auth-error", "unauthorized_client")
	}
	if o.CodeRefusedAsInvalidCode {
		args = append(args, "--code-error", "invalid_code")
	}
	if o.NoRPInitiatedLogout {
		args = append(args, "--rp-initiated-logout", "false")
	}
	if o.RefreshRefusedAsInvalidRequest {
		args = append(args, "--refresh-error", "invalid_request")
	}
	if len(o.Clients) > 0 {
		b, err := json.Marshal(o.Clients)
		if err != nil {
			t.Fatalf("oidcserver: marshal clients: %v", err)
		}
		file := filepath.Join(dir, "clients.json")
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatalf("oidcserver: write clients: %v", err)
		}
		args = append(args, "--clients", file)
	}
	if len(o.ExtraUsers) > 0 {
		b, err := json.Marshal(o.ExtraUsers)
		if err != nil {
			t.Fatalf("oidcserver: marshal users: %v", err)
		}
		file := filepath.Join(dir, "users.json")
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatalf("oidcserver: write users: %v", err)
		}
		args = append(args, "--users", file)
	}
	s.args = args

	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("oidcserver: provider stderr:\n%s", s.stderr)
		}
	})
	s.start()
	return s
}

// start runs the node process and waits for its READY line. A provider
// that is neither ready nor gone after readyTimeout is killed and started
// once more: it is ready in a third of a second here, and once in a CI run
// under load one printed nothing for 30 s.
func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatalf("oidcserver: already running")
	}
	for attempt := 1; ; attempt++ {
		err := s.launch()
		if err == nil {
			return
		}
		if !errors.Is(err, errSilent) || attempt == 2 {
			s.t.Fatalf("oidcserver: %v:\n%s", err, s.stderr)
		}
		s.t.Logf("oidcserver: %v; starting it again. Its stderr:\n%s", err, s.stderr)
	}
}

// readyTimeout is how long a start waits for the READY line.
const readyTimeout = 30 * time.Second

// errSilent is a provider that neither got ready nor exited in time.
var errSilent = fmt.Errorf("provider not ready after %s", readyTimeout)

// launch is one start of the node process; s.mu is held.
func (s *Server) launch() error {
	began := time.Now()
	cmd := exec.Command("node", s.args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	// Node exits when this pipe closes, so a crashed test leaves no provider behind.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if s.stderr == nil {
		s.stderr = &process.Output{}
	}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start node: %w", err)
	}

	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if issuer, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				ready <- issuer
			}
		}
		close(ready)
	}()
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()

	select {
	case issuer, ok := <-ready:
		if !ok {
			<-done
			return errors.New("provider exited before it was ready")
		}
		s.Issuer = issuer
	case <-time.After(readyTimeout):
		_ = cmd.Process.Kill()
		<-done
		return errSilent
	}
	s.StartupTime = time.Since(began)
	s.cmd, s.stdin, s.done = cmd, stdin, done
	return nil
}

// Stop ends the provider; its sessions, codes and tokens are lost. It is safe
// to call more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.stdin.Close()
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Pause stops the provider with SIGSTOP, as an IdP that stalls does (a
// frozen VM, a long garbage collection): the kernel still takes
// connections and requests, and nothing answers until Resume. The test's
// end resumes it, whatever it did.
func (s *Server) Pause() {
	s.t.Helper()
	s.signal(syscall.SIGSTOP)
	s.t.Cleanup(s.Resume)
}

// Resume continues a paused provider (SIGCONT). It is safe to call more
// than once.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Errorf("oidcserver: %v: %v", sig, err)
	}
}

// Restart stops the provider and starts it again on the same port with the
// same signing keys (but none of its sessions or tokens).
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// RotateKeys restarts the provider with a new signing key (a new kid), as an
// IdP rotating its keys does; tokens it signs from then on carry the new kid.
func (s *Server) RotateKeys() {
	s.t.Helper()
	s.Stop()
	if err := os.Remove(s.jwks); err != nil {
		s.t.Fatalf("oidcserver: rotate keys: %v", err)
	}
	s.start()
}

// RotateKeysInPlace rotates the provider's signing keys without a
// restart, as Keycloak, Entra ID, Okta and Hydra do: a new key (a new kid)
// for each signing algorithm signs from now on, and the keys before stay
// published after it. Unlike RotateKeys, its sessions are kept: the
// logout token of a session begun before is signed with the new key. It
// returns the new keys' kids.
func (s *Server) RotateKeysInPlace(t testing.TB) []string {
	t.Helper()
	resp := post(t, http.DefaultClient, strings.TrimSuffix(s.Issuer, "/")+"/test/rotate-keys", url.Values{})
	defer resp.Body.Close()
	var v struct{ Kids []string }
	if err := json.NewDecoder(resp.Body).Decode(&v); resp.StatusCode != http.StatusOK || err != nil || len(v.Kids) == 0 {
		t.Fatalf("oidcserver: rotate keys: %d %v %v", resp.StatusCode, err, v.Kids)
	}
	return v.Kids
}

// RotateKeysKeepingKids rotates the provider's signing keys without a
// restart, as RotateKeysInPlace does, but each new key takes the kid of the
// key it replaces, which is no longer published: an IdP whose
// administrator configured a constant kid. It returns the kids, unchanged.
func (s *Server) RotateKeysKeepingKids(t testing.TB) []string {
	t.Helper()
	resp := post(t, http.DefaultClient, strings.TrimSuffix(s.Issuer, "/")+"/test/rotate-keys?keep_kid=1", url.Values{})
	defer resp.Body.Close()
	var v struct{ Kids []string }
	if err := json.NewDecoder(resp.Body).Decode(&v); resp.StatusCode != http.StatusOK || err != nil || len(v.Kids) == 0 {
		t.Fatalf("oidcserver: rotate keys keeping their kids: %d %v %v", resp.StatusCode, err, v.Kids)
	}
	return v.Kids
}

// RotateKeysTo rotates the provider's signing key, without a restart, to a
// key of alg (RS256, PS256 or ES256) alone, as ORY Hydra does when its ID
// token key set gets a key of another algorithm: every client's ID tokens
// and logout tokens are signed with it from now on, its discovery document
// lists alg beside the algorithms before, and the keys before stay
// published. It returns the new key's kid.
func (s *Server) RotateKeysTo(t testing.TB, alg string) string {
	t.Helper()
	resp := post(t, http.DefaultClient, strings.TrimSuffix(s.Issuer, "/")+"/test/rotate-keys?alg="+url.QueryEscape(alg), url.Values{})
	defer resp.Body.Close()
	var v struct{ Kids []string }
	if err := json.NewDecoder(resp.Body).Decode(&v); resp.StatusCode != http.StatusOK || err != nil || len(v.Kids) != 1 {
		t.Fatalf("oidcserver: rotate keys to %s: %d %v %v", alg, resp.StatusCode, err, v.Kids)
	}
	return v.Kids[0]
}

// TokenRequests is how many requests the token endpoint received since the
// provider last started: code exchanges and refreshes, answered or
// refused. It is counted by the provider, so that a test can tell how often
// a client asked without wrapping the client's transport.
func (s *Server) TokenRequests(t testing.TB) int {
	t.Helper()
	resp, body := get(t, http.DefaultClient, strings.TrimSuffix(s.Issuer, "/")+"/test/token-requests")
	var v struct{ Count int }
	if err := json.Unmarshal(body, &v); resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("oidcserver: token requests: %d %v: %s", resp.StatusCode, err, body)
	}
	return v.Count
}

// FreePort returns a loopback port that was free a moment ago, for a provider
// whose URL must be known before it starts.
func FreePort(t testing.TB) int { return process.FreePort(t) }

// Login is a browser logging in: it GETs startURL (following redirects with
// client's cookie jar), and when that lands on the provider's login form it
// posts user and password there and follows the redirects again. It returns
// the final response, whose body the caller must close: the redirect URI's
// page on success, the login form again (status 200) when the password is
// wrong, or wherever startURL led if the provider already had a session.
func Login(t testing.TB, client *http.Client, startURL, user, password string) *http.Response {
	t.Helper()
	return submitLogin(t, client, startURL, url.Values{"username": {user}, "password": {password}, "login": {"yes"}})
}

// Cancel is a browser that reaches the login form and presses Cancel: the
// provider answers the redirect URI with error=access_denied.
func Cancel(t testing.TB, client *http.Client, startURL string) *http.Response {
	t.Helper()
	return submitLogin(t, client, startURL, url.Values{"abort": {"yes"}})
}

// Logout follows startURL (typically the proxy's logout, or the provider's
// end_session URL) and confirms the provider's "sign out?" page if it shows
// one; it returns the final response.
func Logout(t testing.TB, client *http.Client, startURL string) *http.Response {
	t.Helper()
	resp, body := get(t, client, startURL)
	m := logoutForm.FindSubmatch(body)
	if m == nil {
		return resp
	}
	action := resolve(t, resp.Request.URL, string(m[1]))
	form := url.Values{"xsrf": {string(m[2])}, "logout": {"yes"}}
	return post(t, client, action, form)
}

var (
	loginForm  = regexp.MustCompile(`<form method="post" action="(/interaction/[A-Za-z0-9_-]+)"`)
	logoutForm = regexp.MustCompile(`(?s)<form[^>]*id="op.logoutForm"[^>]*action="([^"]+)"[^>]*>.*?name="xsrf" value="([^"]+)"`)
)

func submitLogin(t testing.TB, client *http.Client, startURL string, form url.Values) *http.Response {
	t.Helper()
	if client.Jar == nil {
		t.Fatalf("oidcserver: the http.Client needs a cookie jar to log in")
	}
	resp, body := get(t, client, startURL)
	m := loginForm.FindSubmatch(body)
	if m == nil {
		return resp
	}
	return post(t, client, resolve(t, resp.Request.URL, string(m[1])), form)
}

// get returns the final response with its body read into memory and replaced,
// so the caller can both inspect and return it.
func get(t testing.TB, client *http.Client, u string) (*http.Response, []byte) {
	t.Helper()
	resp, err := client.Get(u)
	if err != nil {
		t.Fatalf("oidcserver: GET %s: %v", u, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("oidcserver: read %s: %v", u, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, body
}

func post(t testing.TB, client *http.Client, u string, form url.Values) *http.Response {
	t.Helper()
	resp, err := client.PostForm(u, form)
	if err != nil {
		t.Fatalf("oidcserver: POST %s: %v", u, err)
	}
	return resp
}

func resolve(t testing.TB, base *url.URL, ref string) string {
	t.Helper()
	u, err := base.Parse(strings.ReplaceAll(ref, "&amp;", "&"))
	if err != nil {
		t.Fatalf("oidcserver: form action %q: %v", ref, err)
	}
	return u.String()
}

// repoRoot finds the checkout this package lives in: from its source file, or
// failing that (a -trimpath build) from the working directory upwards.
func repoRoot(t testing.TB) string {
	t.Helper()
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "test", "oidc", "provider.mjs")); err == nil {
				return d
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	t.Fatalf("oidcserver: cannot find test/oidc/provider.mjs above %v", starts)
	return ""
}
