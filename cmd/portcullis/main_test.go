package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/samlserver"
	"github.com/portcullis-proxy/portcullis/test/testcert"
)

const testKey = "dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE="

// validConfig is the CVAT profile; its IdP is never reached by check or explain.
const validConfig = `
server:
  public_url: https://cvat.example.com
upstream:
  url: http://traefik:8080
session:
  keys: [` + testKey + `]
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: http://127.0.0.1:1/
      client_id: portcullis
role_mapping:
  roles: [admin, business, user, worker]
  default: user
  rules:
    - role: admin
      when: '"cvat-admins" in groups'
attribute_pass:
  headers:
    X-Email: email
    X-Groups: 'join(roles, ",")'
  strip_headers: [X-Forwarded-User]
rules:
  - name: cvat-api-credentials
    path_prefix: /api/
    headers: {Authorization: '^(Basic|Token|Bearer) '}
    action: bypass
  - name: public
    path_prefix: /public/
    action: bypass
  - name: admin-only
    path_prefix: /admin
    action: authenticate
    allow_if: '"admin" in roles'
  - name: debug-level
    path_prefix: /debug/
    when: 'int(request.headers["X-Debug-Level"]) > 2'
    action: deny
`

// brokenConfig has one mistake of each kind that check must name.
const brokenConfig = `
server:
  listen: ":9772"
  colour: blue
upstream:
  url: http://traefik:8080
session:
  keys: [c2hvcnQ=]
  lifetime: 12 hours
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: https://login.example.com/
      client_id: portcullis
attribute_pass:
  headers:
    X-Email: emial
rules:
  - name: r
    path_regex: '(unclosed'
    action: bypass
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCLI runs the command line as main would and returns its exit code and output.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCheckValidConfigIsOK(t *testing.T) {
	path := writeFile(t, "portcullis.yaml", validConfig)
	code, stdout, stderr := runCLI("check", "--config", path)
	if code != 0 || !strings.Contains(stdout, "ok") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and ok", code, stdout, stderr)
	}
}

// TestCheckLoadsTheTLSPair: check refuses what serve would refuse at start,
// a server.tls pair that does not load, and lists it with the other problems.
func TestCheckLoadsTheTLSPair(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	withTLS := strings.Replace(validConfig, "server:\n", "server:\n  tls: {cert_file: "+cert+", key_file: "+key+"}\n", 1)
	path := writeFile(t, "portcullis.yaml", withTLS)
	if code, _, stderr := runCLI("check", "--config", path); code != 1 || !strings.Contains(stderr, "  server.tls: read cert_file: ") {
		t.Fatalf("no files: exit %d, stderr %q; want 1 and server.tls named", code, stderr)
	}

	other := testcert.New(t, "other.example.com", time.Now().Add(time.Hour))
	testcert.New(t, "cvat.example.com", time.Now().Add(time.Hour)).Write(t, cert, key)
	if code, stdout, stderr := runCLI("check", "--config", path); code != 0 {
		t.Fatalf("a good pair: exit %d, stdout %q, stderr %q; want 0", code, stdout, stderr)
	}

	other.Write(t, filepath.Join(dir, "unused.crt"), key) // the key of another certificate
	broken := writeFile(t, "broken.yaml", strings.Replace(withTLS, "url: http://traefik:8080", "url: traefik\n  colour: blue", 1))
	code, _, stderr := runCLI("check", "--config", broken)
	if code != 1 || !strings.Contains(stderr, "\n  server.tls: load key pair: ") || !strings.Contains(stderr, "\n  upstream.url: ") || !strings.Contains(stderr, "\n  upstream.colour: ") {
		t.Fatalf("a mismatched pair, a bad url and an unknown key: exit %d, stderr %q; want 1 and both listed, one a line", code, stderr)
	}
}

// explainShows runs explain on config with args and checks that its output
// has every line of want, in that order, and none of not.
func explainShows(t *testing.T, config string, args, want, not []string) {
	t.Helper()
	code, stdout, stderr := runCLI(append([]string{"explain", "--config", config}, args...)...)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	rest := stdout
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("output lacks %q (in order):\n%s", w, stdout)
		}
		rest = rest[i+len(w):]
	}
	for _, n := range not {
		if strings.Contains(stdout, n) {
			t.Errorf("output has %q:\n%s", n, stdout)
		}
	}
}

var problemLine = regexp.MustCompile(`^[A-Za-z0-9_.\[\]-]+: \S.*$`)

// TestCheckNamesTheUnsetVariables: the CVAT profile run where its
// variables are not set (the walkthrough's `env -i … check`) says which
// ${VAR} each empty value came from, in check and at serve's start alike.
func TestCheckNamesTheUnsetVariables(t *testing.T) {
	for _, name := range []string{"CVAT_PUBLIC_URL", "OIDC_ISSUER", "PORTCULLIS_SESSION_KEY", "PORTCULLIS_SESSION_KEYS", "PORTCULLIS_IDP_COMPANY_CLIENT_ID"} {
		t.Setenv(name, "")
	}
	want := []string{
		"../../deploy/cvat/portcullis.yaml: configuration has problems:",
		"  server.public_url: required (the origin users see, e.g. https://cvat.example.com); the file writes ${CVAT_PUBLIC_URL}, which is unset or empty",
		"  session.keys[0]: must be 32 bytes of base64, got 0 bytes (make one with `portcullis keys`); the file writes ${PORTCULLIS_SESSION_KEY}, which is unset or empty (or set PORTCULLIS_SESSION_KEYS)",
		"  sso.identity_providers[0].server_url: required; the file writes ${OIDC_ISSUER}, which is unset or empty",
	}
	for _, cmd := range []string{"check", "serve"} {
		code, _, stderr := runCLI(cmd, "--config", "../../deploy/cvat/portcullis.yaml")
		if got := strings.Split(strings.TrimSpace(stderr), "\n"); code != 1 || !slices.Equal(got, want) {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant 1 and\n%s", cmd, code, stderr, strings.Join(want, "\n"))
		}
	}
}

// Every mistake is reported, each on a line of its own that starts with the
// key it concerns: an unknown key does not hide the others.
func TestCheckListsEveryProblemByKey(t *testing.T) {
	path := writeFile(t, "portcullis.yaml", brokenConfig)
	code, stdout, stderr := runCLI("check", "--config", path)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stdout %q stderr %q", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	var found []string
	for _, l := range lines[1:] { // the first line names the file
		l = strings.TrimSpace(l)
		if !problemLine.MatchString(l) {
			t.Errorf("line %q is not `path.to.key: what is wrong`", l)
		}
		found = append(found, l)
	}
	for _, want := range []string{
		"server.colour: unknown key",
		"server.public_url: required",
		"session.keys[0]: must be 32 bytes",
		"session.lifetime: must be a duration",
		"rules[0].path_regex: ",
		"attribute_pass.headers.X-Email: ",
	} {
		n := 0
		for _, l := range found {
			if strings.HasPrefix(l, want) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d lines start with %q, want 1; output:\n%s", n, want, stderr)
		}
	}
	if len(found) != 6 {
		t.Errorf("%d problems listed, want 6:\n%s", len(found), stderr)
	}
}

// configLookup sets $PORTCULLIS_CONFIG to env and moves the test into a
// directory of its own, with a portcullis.yaml of cwd when cwd is not empty.
func configLookup(t *testing.T, env, cwd string) {
	t.Helper()
	t.Setenv("PORTCULLIS_CONFIG", env)
	dir := t.TempDir()
	if cwd != "" {
		if err := os.WriteFile(filepath.Join(dir, "portcullis.yaml"), []byte(cwd), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
}

func TestConfigFileDefaults(t *testing.T) {
	good := writeFile(t, "good.yaml", validConfig)
	bad := writeFile(t, "bad.yaml", brokenConfig)
	for _, tc := range []struct {
		name   string
		env    string
		cwd    string // a portcullis.yaml there, when not empty
		code   int
		stdout string
	}{
		{"$PORTCULLIS_CONFIG names the file", good, "", 0, good + ": ok"},
		{"$PORTCULLIS_CONFIG naming a broken file fails", bad, "", 1, ""},
		{"$PORTCULLIS_CONFIG wins over ./portcullis.yaml", bad, validConfig, 1, ""},
		{"without $PORTCULLIS_CONFIG ./portcullis.yaml is read", "", validConfig, 0, "portcullis.yaml: ok"},
		{"without either the default file is missing", "", "", 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			configLookup(t, tc.env, tc.cwd)
			code, stdout, stderr := runCLI("check")
			if first, _, _ := strings.Cut(stdout, "\n"); code != tc.code || first != tc.stdout {
				t.Fatalf("exit %d stdout %q (stderr %q), want %d %q", code, stdout, stderr, tc.code, tc.stdout)
			}
		})
	}
}

// check lists, after "ok", the URLs to enter at each IdP, exactly as the
// IdP must have them: a redirect URI it lacks stops the login at the IdP,
// where the proxy never hears of it.
func TestCheckPrintsTheURLsToRegister(t *testing.T) {
	config := writeFile(t, "portcullis.yaml", strings.Replace(validConfig, "      client_id: portcullis\n", `      client_id: portcullis
      single_sign_out: true
    - id: github
      preset: github
      client_id: gh
    - id: corp
      protocol: SAML
      entity_id: https://sso.example.com
      metadata_url: https://sso.example.com/metadata
    - id: corp-ldap
      protocol: LDAP
      url: ldaps://ad.example.com
      user_search: {base_dn: "dc=example,dc=com", filter: "(uid={username})"}
`, 1))
	code, stdout, stderr := runCLI("check", "--config", config)
	if code != 0 {
		t.Fatalf("check: exit %d: %s", code, stderr)
	}
	want := []string{
		config + ": ok",
		"  company (OIDC):", "    redirect URI (callback URL):", "      https://cvat.example.com/.portcullis/oidc/company/callback",
		"    post-logout redirect URI:", "      https://cvat.example.com/.portcullis/logout/done",
		"    back-channel logout URI (optional):", "      https://cvat.example.com/.portcullis/oidc/company/backchannel-logout",
		"  github (OAUTH2):", "    redirect URI (callback URL):", "      https://cvat.example.com/.portcullis/oidc/github/callback",
		"  corp (SAML):", "    ACS URL (Reply URL, single sign-on URL):", "      https://cvat.example.com/.portcullis/saml/corp/acs",
		"    SP entity ID (Audience URI) and metadata URL:", "      https://cvat.example.com/.portcullis/saml/corp/metadata",
		"  corp-ldap (LDAP): nothing to register",
	}
	lines := strings.Split(stdout, "\n")
	i := 0
	for _, line := range lines {
		if i < len(want) && line == want[i] {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("check's output lacks %q (or has it out of order):\n%s", want[i], stdout)
	}
}

// withGitHub is validConfig with a GitHub IdP beside the company's, and an
// allow_if that names a group: its rules name groups that a GitHub user can
// take by creating an organisation.
func withGitHub() string {
	config := strings.Replace(validConfig, "      client_id: portcullis\n", `      client_id: portcullis
    - id: github
      preset: github
      client_id: gh
      allowed_organizations: [my-org]
`, 1)
	return strings.Replace(config, `allow_if: '"admin" in roles'`, `allow_if: '"admin" in roles || "ops" in groups'`, 1)
}

// check warns, on stderr and naming the key, of a condition that admits by
// a group name that a GitHub user can take, and still passes: the
// configuration is valid, and may be meant.
func TestCheckWarnsOfGroupNamesAnyoneCanTake(t *testing.T) {
	config := writeFile(t, "portcullis.yaml", withGitHub())
	code, stdout, stderr := runCLI("check", "--config", config)
	if first, _, _ := strings.Cut(stdout, "\n"); code != 0 || first != config+": ok" {
		t.Fatalf("exit %d, stdout %q; want 0 and %q first: warnings do not fail the check", code, stdout, config+": ok")
	}
	want := []string{
		config + `: warning: role_mapping.rules[0].when: "cvat-admins" in groups: github (preset github) gives its users' organisations as groups, and anyone can create an organisation of that name; write idp == "company" && "cvat-admins" in groups, or name a team (my-org/admins)`,
		config + `: warning: rules[2].allow_if: "ops" in groups: github (preset github) gives its users' organisations as groups, and anyone can create an organisation of that name; write idp == "company" && "ops" in groups, or name a team (my-org/admins)`,
	}
	if got := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"); !slices.Equal(got, want) {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, strings.Join(want, "\n"))
	}
	if strings.Contains(stdout, "warning") {
		t.Errorf("a warning on stdout, among the URLs to register:\n%s", stdout)
	}

	fixed := strings.Replace(withGitHub(), `when: '"cvat-admins" in groups'`, `when: 'idp == "company" && "cvat-admins" in groups'`, 1)
	fixed = strings.Replace(fixed, `"ops" in groups`, `"my-org/ops" in groups && idp == "github"`, 1)
	if code, _, stderr := runCLI("check", "--config", writeFile(t, "fixed.yaml", fixed)); code != 0 || stderr != "" {
		t.Errorf("the rules restricted to one IdP: exit %d, stderr %q; want 0 and nothing", code, stderr)
	}

	broken := writeFile(t, "broken.yaml", strings.Replace(withGitHub(), "url: http://traefik:8080", "url: traefik", 1))
	code, _, stderr = runCLI("check", "--config", broken)
	if code != 1 || !strings.Contains(stderr, "\n  upstream.url: ") || !strings.Contains(stderr, broken+`: warning: role_mapping.rules[0].when: "cvat-admins" in groups`) {
		t.Errorf("a problem and a warning: exit %d, stderr %q; want 1, the problem and the warning", code, stderr)
	}
}

// check prints what serve warned of only in its log at start, so that an
// operator who checks before deploying sees it: here a plain-http
// public_url and an assertion signed with a key generated at start.
func TestCheckWarnsOfWhatServeLogsAtStart(t *testing.T) {
	config := strings.Replace(validConfig, "https://cvat.example.com", "http://cvat.example.com", 1)
	config = strings.Replace(config, "  strip_headers:", "  jwt: {header: X-Portcullis-Assertion}\n  strip_headers:", 1)
	config = strings.Replace(config, `when: '"cvat-admins" in groups'`, `when: 'idp == "company" && "cvat-admins" in groups'`, 1)
	path := writeFile(t, "portcullis.yaml", config)
	code, stdout, stderr := runCLI("check", "--config", path)
	if first, _, _ := strings.Cut(stdout, "\n"); code != 0 || first != path+": ok" {
		t.Fatalf("exit %d, stdout %q; want 0 and %q first", code, stdout, path+": ok")
	}
	want := []string{
		path + ": warning: server.public_url: plain http: session cookies are sent unencrypted; use https outside development",
		path + ": warning: attribute_pass.jwt: no signing_key or signing_key_file: assertions are signed with a key generated at start, so they stop verifying after a restart and differ between replicas; configure a key",
	}
	if got := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"); !slices.Equal(got, want) {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, strings.Join(want, "\n"))
	}
}

// check warns of a condition that compares idp with an id no IdP has: it
// never matches, and nothing else says so.
func TestCheckWarnsOfAnUnknownIdP(t *testing.T) {
	path := writeFile(t, "portcullis.yaml", strings.Replace(withGitHub(), `when: '"cvat-admins" in groups'`, `when: 'idp == "compnay" && "cvat-admins" in groups'`, 1))
	code, _, stderr := runCLI("check", "--config", path)
	want := path + `: warning: role_mapping.rules[0].when: idp == "compnay": no identity provider has the id "compnay" (the ids are company, github), so this is never true` + "\n"
	if code != 0 || !strings.HasPrefix(stderr, want) {
		t.Errorf("exit %d, stderr:\n%s\nwant 0, and first:\n%s", code, stderr, want)
	}
}

func TestExplain(t *testing.T) {
	config := writeFile(t, "portcullis.yaml", validConfig)
	admin := writeFile(t, "admin.json", `{"sub": "a1", "email": "alice@example.com", "groups": ["cvat-admins"]}`)
	user := writeFile(t, "user.json", `{"sub": "b1", "email": "bob@example.com", "groups": ["staff"]}`)
	noGroups := writeFile(t, "no-groups.json", `{"sub": "c1", "email": "carol@example.com"}`)
	otherNames := writeFile(t, "other-names.json", `{"sub": "d1", "mail": "dave@example.com", "memberOf": ["cvat-admins"]}`)
	null := writeFile(t, "null.json", "null")
	for _, tc := range []struct {
		name string
		args []string
		want []string // lines of the output, in order
		not  []string // substrings that must not appear
	}{
		{
			name: "API call with Basic credentials is bypassed",
			args: []string{"GET", "https://cvat.example.com/api/tasks", "-H", "Authorization: Basic YTpi"},
			want: []string{"rule:      cvat-api-credentials (bypass)", "decision:  bypass"},
			not:  []string{"headers:"},
		},
		{
			name: "-H before METHOD URL works the same",
			args: []string{"-H", "Authorization: Basic YTpi", "GET", "https://cvat.example.com/api/tasks"},
			want: []string{"rule:      cvat-api-credentials (bypass)", "decision:  bypass"},
		},
		{
			name: "-H between METHOD and URL works the same",
			args: []string{"GET", "-H", "Authorization: Token abc", "https://cvat.example.com/api/tasks"},
			want: []string{"rule:      cvat-api-credentials (bypass)", "decision:  bypass"},
		},
		{
			name: "API call without credentials needs a session",
			args: []string{"GET", "https://cvat.example.com/api/tasks"},
			want: []string{"rule:      default (authenticate)", "decision:  unauthorized"},
		},
		{
			name: "browser GET without claims is redirected to log in",
			args: []string{"GET", "https://cvat.example.com/tasks", "-H", "Accept: text/html"},
			want: []string{"rule:      default (authenticate)", "decision:  redirect", "/.portcullis/login"},
		},
		{
			name: "admin claims give role admin and its identity headers",
			args: []string{"--claims", admin, "GET", "https://cvat.example.com/tasks"},
			want: []string{"decision:  authenticated", "roles:     admin", "headers:", "  X-Email: alice@example.com", "  X-Groups: admin"},
		},
		{
			name: "claims the mapping needs and the file lacks are named, with what to do, as a login's line does",
			args: []string{"--claims", noGroups, "GET", "https://cvat.example.com/admin/users"},
			want: []string{"decision:  forbidden", "missing:   groups (claim groups)", "hint:      the IdP released no such claim", "scope"},
			not:  []string{"email (claim"},
		},
		{
			name: "claims sent under other names than the mapping's are missing too",
			args: []string{"--claims", otherNames, "GET", "https://cvat.example.com/tasks"},
			want: []string{"decision:  authenticated", "missing:   email (claim email), groups (claim groups)", "hint:"},
		},
		{
			name: "nothing is missing when the file has every claim",
			args: []string{"--claims", admin, "GET", "https://cvat.example.com/tasks"},
			want: []string{"decision:  authenticated"},
			not:  []string{"missing:", "hint:"},
		},
		{
			name: "--claims after the URL works the same",
			args: []string{"GET", "https://cvat.example.com/tasks", "--claims", admin},
			want: []string{"decision:  authenticated", "roles:     admin"},
		},
		{
			name: "admin passes allow_if",
			args: []string{"--claims", admin, "GET", "https://cvat.example.com/admin/users"},
			want: []string{"rule:      admin-only (authenticate)", "decision:  authenticated", "roles:     admin"},
		},
		{
			name: "non-admin on an allow_if route is forbidden",
			args: []string{"--claims", user, "GET", "https://cvat.example.com/admin/users"},
			want: []string{"rule:      admin-only (authenticate)", "decision:  forbidden", "allow_if", "roles:     user"},
			not:  []string{"X-Email"},
		},
		{
			name: "a failing when expression refuses the request, and explain says why",
			args: []string{"GET", "https://cvat.example.com/debug/x", "-H", "X-Debug-Level: high"},
			want: []string{"rule:      error (deny)", "decision:  denied", "when expression failed", "int(high)"},
		},
		{
			name: "encoded slash climbing out of a bypass prefix is refused",
			args: []string{"GET", "https://cvat.example.com/public/..%2fsecret"},
			want: []string{"decision:  denied", "refused"},
			not:  []string{"rule:", "bypass"},
		},
		{
			name: "dot segments are resolved before the rules see the path",
			args: []string{"GET", "https://cvat.example.com/public/../secret"},
			want: []string{"path:      /secret", "rule:      default (authenticate)"},
		},
		{
			name: "spoofed identity header in underscore spelling is stripped",
			args: []string{"--claims", admin, "GET", "https://cvat.example.com/tasks", "-H", "X_Email: evil@example.com", "-H", "X-Forwarded-User: root"},
			want: []string{"stripped:", "decision:  authenticated", "  X-Email: alice@example.com"},
			not:  []string{"evil@example.com"},
		},
		{
			name: "a bare path is a request to public_url",
			args: []string{"GET", "/api/tasks", "-H", "Authorization: Bearer x"},
			want: []string{"request:   GET https://cvat.example.com/api/tasks", "decision:  bypass"},
		},
		{
			name: "a -H name padded with spaces is read without them",
			args: []string{"GET", "/api/tasks", "-H", " Authorization : Bearer x"},
			want: []string{"rule:      cvat-api-credentials (bypass)", "decision:  bypass"},
		},
		{
			name: "a claims file of null is a user with no claims, not no user",
			args: []string{"--claims", null, "GET", "/tasks"},
			want: []string{"decision:  forbidden", "the login would be refused"},
			not:  []string{"give --claims"},
		},
		{
			name: "a lower-case method is refused with 400, as the proxy does",
			args: []string{"delete", "/tasks"},
			want: []string{"request:   delete https://cvat.example.com/tasks", "decision:  denied", "400", "lower-case"},
			not:  []string{"rule:", "path:"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			explainShows(t, config, tc.args, tc.want, tc.not)
		})
	}
}

// A bare path is printed as the URL it is a request to, whether public_url
// ends in a slash or not.
func TestExplainPrintsABarePathAsAURLOfPublicURL(t *testing.T) {
	config := writeFile(t, "portcullis.yaml", strings.Replace(validConfig, "public_url: https://cvat.example.com\n", "public_url: https://cvat.example.com/\n", 1))
	explainShows(t, config, []string{"GET", "/api/tasks", "-H", "Authorization: Bearer x"},
		[]string{"request:   GET https://cvat.example.com/api/tasks", "decision:  bypass"}, nil)
}

// TestExplainReadsTheRequestAsServeDoes: explain describes the request
// serve would get from the same bytes: the client a trusted proxy names in
// X-Forwarded-For, the Host header, the proxy's own X-Request-Id, the
// session cookie --claims stands for (which a Connection header can drop),
// and refusals of net/http's server. Each case is one that explain told
// otherwise than serve did (FuzzExplainAgreesWithServe).
func TestExplainReadsTheRequestAsServeDoes(t *testing.T) {
	config := writeFile(t, "portcullis.yaml", strings.Replace(strings.Replace(validConfig,
		"  public_url: https://cvat.example.com\n", "  public_url: https://cvat.example.com\n  trusted_proxies: [10.0.0.0/8]\n", 1),
		"\nrules:\n", `
rules:
  - {name: office, path_prefix: /internal/, sources: [192.0.2.0/24], action: bypass}
  - {name: internal, path_prefix: /internal/, action: deny}
  - {name: admin-host, when: 'request.host == "admin.example.com"', action: deny}
  - {name: traced, path_prefix: /traced/, headers: {X-Request-Id: '.'}, action: bypass}
  - {name: host-header, path_prefix: /hosts/, when: '"Host" in request.headers', action: deny}
`, 1))
	admin := writeFile(t, "admin.json", `{"sub": "a1", "email": "alice@example.com", "groups": ["cvat-admins"]}`)
	for _, tc := range []struct {
		name      string
		args      []string
		want, not []string
	}{
		{"a trusted proxy's X-Forwarded-For names the client",
			[]string{"--source", "10.0.0.5", "GET", "/internal/x", "-H", "X-Forwarded-For: 192.0.2.7"},
			[]string{"rule:      office (bypass)"}, nil},
		{"a trusted proxy's X-Forwarded-For, in the mapped form",
			[]string{"--source", "::ffff:10.0.0.5", "GET", "/internal/x", "-H", "X-Forwarded-For: ::ffff:192.0.2.7"},
			[]string{"rule:      office (bypass)"}, nil},
		{"another client's X-Forwarded-For is not believed",
			[]string{"--source", "203.0.113.9", "GET", "/internal/x", "-H", "X-Forwarded-For: 192.0.2.7"},
			[]string{"rule:      internal (deny)"}, nil},
		{"the Host header is the request's host",
			[]string{"GET", "/tasks", "-H", "Host: admin.example.com"},
			[]string{"rule:      admin-host (deny)"}, nil},
		{"an absolute URL's host is the request's host",
			[]string{"GET", "https://admin.example.com/tasks"},
			[]string{"rule:      admin-host (deny)"}, nil},
		{"the Host header is no header the rules see, as net/http's server takes it out",
			[]string{"GET", "/hosts/x", "-H", "Host: cvat.example.com"},
			[]string{"rule:      default (authenticate)"}, nil},
		{"the rules see the request's ID the proxy sets",
			[]string{"GET", "/traced/x"},
			[]string{"rule:      traced (bypass)"}, nil},
		{"a Connection header naming Cookie drops the session's cookie",
			[]string{"--claims", admin, "GET", "/tasks", "-H", "Connection: Cookie"},
			[]string{"stripped:  Cookie", "decision:  unauthorized", "drops the session's cookie"},
			[]string{"X-Email"}},
		{"with claims and no Connection header, the session is there",
			[]string{"--claims", admin, "GET", "/tasks", "-H", "Connection: keep-alive"},
			[]string{"decision:  authenticated", "  X-Email: alice@example.com"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			explainShows(t, config, tc.args, tc.want, tc.not)
		})
	}
	// Each refusal says why: net/http's server gives the reason for some
	// (an invalid header name) and none for others (two Host headers, a
	// header line its reader refuses), which explain then names.
	for _, tc := range []struct {
		name, why string
		args      []string
	}{
		{"two Host headers", "too many Host headers", []string{"GET", "/tasks", "-H", "Host: cvat.example.com", "-H", "Host: admin.example.com"}},
		{"a space in a header name", "invalid header name", []string{"GET", "/tasks", "-H", "X Email: evil@example.com"}},
		{"a control character in a header value", "malformed MIME header line", []string{"GET", "/tasks", "-H", "X-Debug: a\x00b"}},
	} {
		t.Run("serve's server refuses "+tc.name+", and so does explain", func(t *testing.T) {
			code, stdout, stderr := runCLI(append([]string{"explain", "--config", config}, tc.args...)...)
			want := "portcullis explain: the proxy's server refuses the request: 400 Bad Request: " + tc.why + "\n"
			if code != 2 || stderr != want {
				t.Errorf("exit %d, stderr %q, stdout:\n%s\nwant 2 and %q", code, stderr, stdout, want)
			}
		})
	}
}

// explain --claims for a SAML entry reads the file as the assertion's
// attributes, by the names crewjam's samlidp (test/samlserver) sends, through
// attribute_mapping and its defaults, as the login does; and names a missing
// one as an attribute.
func TestExplainReadsSAMLAttributes(t *testing.T) {
	config := writeFile(t, "portcullis.yaml", strings.Replace(validConfig, "    - id: company\n", `    - id: corp
      protocol: SAML
      entity_id: https://sso.example.com/metadata
      metadata_url: https://sso.example.com/metadata
      attribute_mapping: {groups: `+samlserver.GroupsAttribute+`}
    - id: company
`, 1))
	admin := writeFile(t, "alice.json", `{
  "NameID": "alice@example.com",
  "urn:oid:0.9.2342.19200300.100.1.1": "alice",
  "urn:oid:0.9.2342.19200300.100.1.3": "alice@example.com",
  "urn:oid:1.3.6.1.4.1.5923.1.1.1.1": ["member", "cvat-admins"],
  "`+samlserver.GroupsAttribute+`": ["cvat-admins"]
}`)
	explainShows(t, config, []string{"--idp", "corp", "--claims", admin, "GET", "/admin/users"},
		[]string{"rule:      admin-only (authenticate)", "decision:  authenticated", "roles:     admin", "  X-Email: alice@example.com", "  X-Groups: admin"},
		[]string{"missing:"})

	noGroups := writeFile(t, "bob.json", `{"urn:oid:0.9.2342.19200300.100.1.3": "bob@example.com", "memberOf": ["cvat-admins"]}`)
	explainShows(t, config, []string{"--idp", "corp", "--claims", noGroups, "GET", "/tasks"},
		[]string{"decision:  authenticated", "roles:     user", "missing:   groups (attribute groups)", "hint:      the assertion carries none of these attributes", "  X-Email: bob@example.com"},
		[]string{"(claim "})

	number := writeFile(t, "carol.json", `{"groups": ["cvat-admins", 7]}`)
	if code, _, stderr := runCLI("explain", "--config", config, "--idp", "corp", "--claims", number, "GET", "/tasks"); code != 1 || !strings.Contains(stderr, `attribute "groups": want a string or a list of strings`) {
		t.Errorf("a number among the attributes: exit %d, stderr %q; want 1 naming the attribute", code, stderr)
	}
}

// TestExplainPrintsNoSignedAssertion: explain shows the assertion JWT's
// claims, never a signed token, which would work as a credential of whoever
// the claims file names for the assertion's lifetime.
func TestExplainPrintsNoSignedAssertion(t *testing.T) {
	config := writeFile(t, "portcullis.yaml", strings.Replace(validConfig, "  strip_headers:", "  jwt: {header: X-Portcullis-Assertion, lifetime: 1h}\n  strip_headers:", 1))
	admin := writeFile(t, "admin.json", `{"sub": "a1", "email": "alice@example.com", "groups": ["cvat-admins"]}`)
	code, stdout, stderr := runCLI("explain", "--config", config, "--claims", admin, "GET", "/tasks")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	for _, want := range []string{"  X-Portcullis-Assertion: ", `"sub":"a1"`, `"roles":["admin"]`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if jws := regexp.MustCompile(`[\w-]+\.[\w-]+\.[\w-]{20,}`).FindString(stdout); jws != "" {
		t.Errorf("output has a signed token %q:\n%s", jws, stdout)
	}
	// serve reuses a session's assertion for a quarter of its lifetime
	// (attrpass.Pass.Identity): the output must not say it signs one per request.
	if strings.Contains(stdout, "each request") {
		t.Errorf("output says the assertion is signed on each request:\n%s", stdout)
	}
}

// The header a client spoofed is named in the stripped list, however spelled.
func TestExplainNamesStrippedHeaders(t *testing.T) {
	config := writeFile(t, "portcullis.yaml", validConfig)
	code, stdout, stderr := runCLI("explain", "--config", config, "GET", "/tasks", "-H", "X_Email: evil@example.com", "-H", "X-HTTP-Method-Override: DELETE", "-H", "Accept: */*")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var stripped string
	for _, l := range strings.Split(stdout, "\n") {
		if s, ok := strings.CutPrefix(l, "stripped:"); ok {
			stripped = strings.ToLower(s)
		}
	}
	for _, name := range []string{"x_email", "x-http-method-override"} {
		if !strings.Contains(stripped, name) {
			t.Errorf("stripped list %q lacks %s:\n%s", stripped, name, stdout)
		}
	}
	if strings.Contains(stripped, "accept") {
		t.Errorf("stripped list %q names Accept, which is not stripped", stripped)
	}
}

func TestExplainUsageErrors(t *testing.T) {
	config := writeFile(t, "portcullis.yaml", validConfig)
	broken := writeFile(t, "broken.yaml", brokenConfig)
	notJSON := writeFile(t, "claims.json", "{not json")
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"no URL", []string{"--config", config, "GET"}, 2},
		{"too many arguments", []string{"--config", config, "GET", "/a", "/b"}, 2},
		{"header without a colon", []string{"--config", config, "GET", "/a", "-H", "NoColon"}, 2},
		{"claims file is not JSON", []string{"--config", config, "--claims", notJSON, "GET", "/a"}, 2},
		{"claims file is missing", []string{"--config", config, "--claims", notJSON + ".nope", "GET", "/a"}, 2},
		{"URL without scheme or leading slash", []string{"--config", config, "GET", "cvat.example.com/a"}, 2},
		{"bad source address", []string{"--config", config, "--source", "nope", "GET", "/a"}, 2},
		{"unknown flag", []string{"--config", config, "--frob", "GET", "/a"}, 2},
		{"a flag after -- is an argument", []string{"--config", config, "--", "GET", "/a", "-H", "X-A: b"}, 2},
		{"broken config", []string{"--config", broken, "GET", "/a"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(append([]string{"explain"}, tc.args...)...)
			if code != tc.code || stderr == "" {
				t.Fatalf("exit %d stderr %q (stdout %q), want %d and a message", code, stderr, stdout, tc.code)
			}
		})
	}
}

// explain refuses a configuration that check refuses, with the same
// problems by key: it does not explain what serve would never run.
func TestExplainRefusesABrokenConfigAsCheckDoes(t *testing.T) {
	broken := writeFile(t, "broken.yaml", brokenConfig)
	_, _, checked := runCLI("check", "--config", broken)
	_, problems, ok := strings.Cut(checked, broken+": configuration has problems:\n")
	if !ok {
		t.Fatalf("check's stderr has no problems: %q", checked)
	}
	code, stdout, stderr := runCLI("explain", "--config", broken, "GET", "/a")
	if want := broken + ": configuration has problems:\n" + problems; code != 1 || stdout != "" || stderr != want {
		t.Errorf("explain: exit %d, stdout %q, stderr:\n%s\nwant 1, nothing and check's problems:\n%s", code, stdout, stderr, want)
	}
}

// An --idp or a --claims file that explain cannot use is the command's
// mistake, not the configuration's: the message must not send the reader
// to a file that check accepts.
func TestExplainBlamesTheArgumentNotTheConfig(t *testing.T) {
	config := writeFile(t, "portcullis.yaml", strings.Replace(validConfig, "    - id: company\n", `    - id: corp
      protocol: SAML
      entity_id: https://sso.example.com/metadata
      metadata_url: https://sso.example.com/metadata
    - id: company
`, 1))
	claims := writeFile(t, "ann.json", `{"sub": "1", "email": "ann@example.com"}`)
	number := writeFile(t, "carol.json", `{"groups": ["cvat-admins", 7]}`)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"an --idp no entry has", []string{"--idp", "nope", "--claims", claims}, `--idp: no identity provider with id "nope"`},
		{"a SAML attribute that is a number", []string{"--idp", "corp", "--claims", number}, `attribute "groups": want a string or a list of strings`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"explain", "--config", config}, tc.args...), "GET", "/tasks")
			code, _, stderr := runCLI(args...)
			if code != 1 || !strings.HasPrefix(stderr, "portcullis explain: ") || !strings.Contains(stderr, tc.want) ||
				strings.Contains(stderr, "configuration has problems") {
				t.Errorf("exit %d, stderr %q; want 1 and `portcullis explain: …%s`, not a configuration problem", code, stderr, tc.want)
			}
		})
	}
}

func TestKeysAreFresh32ByteKeys(t *testing.T) {
	var keys []string
	for range 2 {
		code, stdout, _ := runCLI("keys")
		key := strings.TrimSpace(stdout)
		if code != 0 || len(key) != 44 {
			t.Fatalf("exit %d key %q (%d chars), want 0 and 44 chars", code, key, len(key))
		}
		raw, err := base64.StdEncoding.DecodeString(key)
		if err != nil || len(raw) != 32 {
			t.Fatalf("key %q decodes to %d bytes (%v), want 32", key, len(raw), err)
		}
		keys = append(keys, key)
	}
	if keys[0] == keys[1] {
		t.Fatalf("two calls gave the same key %q", keys[0])
	}
}

// A key from `portcullis keys` is accepted by check.
func TestKeysAreAcceptedByCheck(t *testing.T) {
	_, key, _ := runCLI("keys")
	path := writeFile(t, "portcullis.yaml", strings.Replace(validConfig, testKey, strings.TrimSpace(key), 1))
	if code, _, stderr := runCLI("check", "--config", path); code != 0 {
		t.Fatalf("check of a fresh key: exit %d %s", code, stderr)
	}
}

func TestVersionAndUsage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string // prefix
		stderr string // substring
	}{
		{"version names the program", []string{"version"}, 0, "portcullis ", ""},
		{"--version names the program", []string{"--version"}, 0, "portcullis ", ""},
		{"help prints usage", []string{"help"}, 0, "portcullis — ", ""},
		{"unknown command is a usage error", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"no command is a usage error", nil, 2, "", "Usage:"},
		{"unknown flag of check is a usage error", []string{"check", "--nope"}, 2, "", "-nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(tc.args...)
			if code != tc.code || !strings.HasPrefix(stdout, tc.stdout) || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d stdout %q stderr %q; want %d, stdout starting %q, stderr with %q", code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

func TestGCTarget(t *testing.T) {
	cases := []struct {
		name string
		gogc string
		want int
	}{
		{"without GOGC, serve collects at 200 %", "", gcPercent},
		{"an operator's GOGC is left alone", "50", 100},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			old := debug.SetGCPercent(100) // the test binary's own, restored below
			defer debug.SetGCPercent(old)
			tuneGC(func(k string) string {
				if k == "GOGC" {
					return c.gogc
				}
				return ""
			})
			if got := debug.SetGCPercent(100); got != c.want {
				t.Errorf("GC percent %d, want %d", got, c.want)
			}
		})
	}
}

// Every command of the usage text has its row in the README's command table.
func TestEveryCommandIsInTheREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(readme), "\n## Command line\n")
	table, _, _ = strings.Cut(table, "\n## ")
	verbs := regexp.MustCompile(`(?m)^  portcullis (\w+)`).FindAllStringSubmatch(usage, -1)
	if len(verbs) < 8 {
		t.Fatalf("the usage text lists %d commands:\n%s", len(verbs), usage)
	}
	for _, v := range verbs {
		if !strings.Contains(table, "| `portcullis "+v[1]) {
			t.Errorf("README's Command line table has no row for `portcullis %s`", v[1])
		}
	}
}

// Every flag a command takes is in its usage line and in its row of the
// README's command table, as `-h` lists them.
func TestEveryFlagIsInTheUsageAndTheREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	flagLine := regexp.MustCompile(`(?m)^  -(\S+)`)
	for _, args := range [][]string{{"serve"}, {"check"}, {"explain"}, {"demo"}, {"sessions", "list"}, {"sessions", "revoke"}, {"health"}} {
		verb := args[0]
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			_, _, help := runCLI(append(args, "-h")...)
			flags := flagLine.FindAllStringSubmatch(help, -1)
			if len(flags) == 0 {
				t.Fatalf("`portcullis %s -h` lists no flags:\n%s", strings.Join(args, " "), help)
			}
			// The usage lines of the command: from its own to the next command's.
			_, usageLines, _ := strings.Cut(usage, "\n  portcullis "+verb+" ")
			usageLines, _, _ = strings.Cut(usageLines, "\n  portcullis ")
			var row string
			for line := range strings.SplitSeq(string(readme), "\n") {
				if strings.HasPrefix(line, "| `portcullis "+verb) {
					row = line
				}
			}
			for _, f := range flags {
				spelt := "--" + f[1]
				if len(f[1]) == 1 {
					spelt = "-" + f[1]
				}
				if !strings.Contains(usageLines, spelt) {
					t.Errorf("the usage text of `portcullis %s` does not name %s", verb, spelt)
				}
				if !strings.Contains(row, spelt) {
					t.Errorf("README's row for `portcullis %s` does not name %s", verb, spelt)
				}
			}
		})
	}
}

// Every command's -h says that --config defaults to $PORTCULLIS_CONFIG
// before portcullis.yaml, as the usage text and the README do, and what
// $PORTCULLIS_CONFIG is when it is set: flag's own "(default …)" named only
// the value the default had, portcullis.yaml with the variable unset.
func TestConfigFlagHelpNamesTheEnvironment(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"", "  -config FILE\n    \tconfiguration FILE (default $PORTCULLIS_CONFIG, else portcullis.yaml)\n"},
		{"/etc/portcullis/portcullis.yaml", "  -config FILE\n    \tconfiguration FILE (default $PORTCULLIS_CONFIG, else portcullis.yaml; $PORTCULLIS_CONFIG is \"/etc/portcullis/portcullis.yaml\")\n"},
	} {
		t.Setenv("PORTCULLIS_CONFIG", tc.env)
		for _, args := range [][]string{{"serve"}, {"check"}, {"explain"}, {"sessions", "list"}, {"health"}} {
			if _, _, help := runCLI(append(args, "-h")...); !strings.Contains(help, tc.want) {
				t.Errorf("PORTCULLIS_CONFIG=%q portcullis %s -h:\n%s\nwant\n%s", tc.env, strings.Join(args, " "), help, tc.want)
			}
		}
	}
}

// documentedCommand is a portcullis command line as the pages write one, in
// a code block or in backquotes, in a shell or a Dockerfile comment: the
// verb, then the rest of the line or of the code span (`\|` is a table
// cell's escaped `|`, a usage line's "or").
var documentedCommand = regexp.MustCompile("portcullis(?::local)? (serve|check|explain|demo|keys|version|health|sessions(?: list| revoke)?)\\b((?:[^`\n|]|\\\\\\|)*)")

// A flag a command line of the pages gives (the README, SECURITY.md, the
// guides, the Dockerfile and the compose files) is one the command takes,
// as its -h lists them: TestEveryFlagIsInTheUsageAndTheREADME finds every
// flag in the README, this the converse, a flag renamed or taken away in
// the code and still on a page.
func TestDocumentedFlagsExist(t *testing.T) {
	var pages []string
	for _, pattern := range []string{"../../README.md", "../../SECURITY.md", "../../docs/*.md", "../../docs/idp/*.md",
		"../../Dockerfile", "../../deploy/*.yml", "../../charts/portcullis/templates/NOTES.txt", "../../charts/portcullis/values.yaml"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, m...)
	}
	flagLine := regexp.MustCompile(`(?m)^  -(\S+)`)
	takes := map[string]map[string]bool{}
	flagsOf := func(verb string) map[string]bool {
		if f, ok := takes[verb]; ok {
			return f
		}
		f := map[string]bool{}
		if verb != "keys" && verb != "version" {
			_, _, help := runCLI(append(strings.Fields(verb), "-h")...)
			for _, m := range flagLine.FindAllStringSubmatch(help, -1) {
				f[m[1]] = true
			}
			if len(f) == 0 {
				t.Fatalf("`portcullis %s -h` lists no flags:\n%s", verb, help)
			}
		}
		takes[verb] = f
		return f
	}
	given := regexp.MustCompile(`(?:^|[\s\[])--?([A-Za-z][\w-]*)`)
	checked := 0
	for _, page := range pages {
		text, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range documentedCommand.FindAllSubmatchIndex(text, -1) {
			verb, rest := string(text[m[2]:m[3]]), string(text[m[4]:m[5]])
			if verb == "sessions" {
				verb = "sessions list" // list and revoke take the same flags
			}
			for _, f := range given.FindAllStringSubmatch(rest, -1) {
				checked++
				if !flagsOf(verb)[f[1]] {
					line := 1 + bytes.Count(text[:m[2]], []byte("\n"))
					t.Errorf("%s:%d: `portcullis %s` takes no flag %s:\n%s", page, line, verb, strings.TrimLeft(f[0], " \t\n["), text[m[0]:m[1]])
				}
			}
		}
	}
	if checked < 20 {
		t.Errorf("checked only %d flags: does documentedCommand still find the command lines?", checked)
	}
}

// README's Install names the Go that go.mod requires: an older one refuses
// to build the module (GOTOOLCHAIN=local) or downloads another first.
func TestREADMENamesTheGoOfGoMod(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	if want := "Go " + string(m[1]) + " or later"; !strings.Contains(string(readme), want) {
		t.Errorf("README's Install does not say %q", want)
	}
}

// A basic_auth rule checks Authorization: Basic at its LDAP IdP instead of
// asking for a session (docs/ldap.md): explain says so, and with claims it
// reads them as that IdP's, whichever IdP comes first.
func TestExplainBasicAuthRule(t *testing.T) {
	// The OIDC IdP, first, reads groups from another claim than the
	// directory's entry does.
	ldapIdP := `      client_id: portcullis
      claims: {groups: oidc_groups}
    - id: ad
      protocol: LDAP
      url: ldaps://ad.example.com
      user_search: {base_dn: "DC=example,DC=com", filter: "(sAMAccountName={username})"}
`
	basicRule := `
rules:
  - name: legacy-api
    path_prefix: /legacy/api/
    basic_auth: ad
    action: authenticate
`
	config := writeFile(t, "portcullis.yaml", strings.Replace(strings.Replace(validConfig,
		"      client_id: portcullis\n", ldapIdP, 1), "\nrules:\n", basicRule, 1))
	// The LDAP IdP's groups are directory groups, mapped as for a form login:
	// the file is the user's entry, its groups the DNs in memberOf.
	ldapAdmin := writeFile(t, "ldap.json", `{"dn": "CN=Alice,OU=Staff,DC=example,DC=com", "sAMAccountName": "alice", "mail": "alice@example.com", "memberOf": ["CN=cvat-admins,OU=Groups,DC=example,DC=com"]}`)
	for _, tc := range []struct {
		name string
		args []string
		want []string
		not  []string
	}{
		{
			name: "Basic credentials are checked at the directory, not a session",
			args: []string{"GET", "/legacy/api/x", "-H", "Authorization: Basic YTpi"},
			want: []string{"rule:      legacy-api (authenticate)", "decision:  unauthorized", "checked at LDAP IdP ad", "401"},
			not:  []string{"needs a session"},
		},
		{
			name: "without Basic credentials the rule needs a session",
			args: []string{"GET", "/legacy/api/x"},
			want: []string{"rule:      legacy-api (authenticate)", "decision:  unauthorized", "needs a session"},
		},
		{
			name: "claims go through the basic_auth IdP to the identity headers",
			args: []string{"--claims", ldapAdmin, "GET", "/legacy/api/x", "-H", "Authorization: Basic YTpi"},
			want: []string{"decision:  authenticated", "Authorization", "roles:     admin", "  X-Email: alice@example.com"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			explainShows(t, config, tc.args, tc.want, tc.not)
		})
	}
}
