package deploy

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// There is no Docker engine here: these tests lint what the image relies on
// and run the Dockerfile's build step with the local Go toolchain.

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// stage is one FROM ... section of the Dockerfile.
type stage struct {
	from, name   string
	instructions []instruction
}

// last returns the arguments of the stage's last instruction cmd, or "".
func (s stage) last(cmd string) string {
	for i := len(s.instructions) - 1; i >= 0; i-- {
		if s.instructions[i].cmd == cmd {
			return s.instructions[i].args
		}
	}
	return ""
}

func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []stage
	var line string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		text := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(text, "#") || (text == "" && line == "") {
			continue
		}
		if strings.HasSuffix(text, "\\") {
			line += strings.TrimSuffix(text, "\\") + " "
			continue
		}
		line += text
		cmd, args, _ := strings.Cut(line, " ")
		line = ""
		in := instruction{strings.ToUpper(cmd), strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			fields := strings.Fields(in.args)
			st := stage{from: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				st.name = fields[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("%s before the first FROM", in.cmd)
		}
		stages[len(stages)-1].instructions = append(stages[len(stages)-1].instructions, in)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

// goBuild finds the builder stage's `go build` and returns its environment
// assignments and arguments (shell words, quotes removed).
func goBuild(t *testing.T, st stage) (env, args []string) {
	t.Helper()
	for _, in := range st.instructions {
		if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
			continue
		}
		words := shellWords(in.args)
		i := slices.Index(words, "go")
		return words[:i], words[i+2:]
	}
	t.Fatalf("stage %s has no RUN ... go build", st.name)
	return nil, nil
}

// shellWords splits a simple shell command: spaces separate words, double
// quotes group them. Enough for the Dockerfile's one build line.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	quoted, inWord := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

func TestDockerfileEssentials(t *testing.T) {
	stages := parseDockerfile(t, "../Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stage(s)", len(stages))
	}
	builder, final := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(builder.from, "golang:1.26") || builder.name == "" {
		t.Errorf("the first stage should be a named golang:1.26 builder, got FROM %s AS %q", builder.from, builder.name)
	}
	// distroless/static carries CA certificates and tzdata and nothing else.
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") {
		t.Errorf("the image should be distroless/static (CA certificates, no shell), got %s", final.from)
	}
	if copyFrom := final.last("COPY"); !strings.HasPrefix(copyFrom, "--from="+builder.name+" ") {
		t.Errorf("the image should copy only the binary from the builder, got COPY %s", copyFrom)
	}
	if user := final.last("USER"); user != "65532:65532" {
		t.Errorf("USER: want the numeric non-root 65532:65532 (runAsNonRoot checks it), got %q", user)
	}
	if expose := strings.Fields(final.last("EXPOSE")); !slices.Equal(expose, []string{"9772", "9773"}) {
		t.Errorf("EXPOSE: want 9772 9773, got %v", expose)
	}
	entrypoint, cmd := final.last("ENTRYPOINT"), final.last("CMD")
	if entrypoint != `["/usr/local/bin/portcullis"]` || cmd != `["serve", "--config", "/etc/portcullis/portcullis.yaml"]` {
		t.Errorf("the default command should be portcullis serve --config /etc/portcullis/portcullis.yaml in exec form, got ENTRYPOINT %s CMD %s", entrypoint, cmd)
	}
	if final.last("RUN") != "" {
		t.Error("the final stage runs nothing: distroless has no shell")
	}
	checkHealthcheck(t, final)

	env, args := goBuild(t, builder)
	if !slices.Contains(env, "CGO_ENABLED=0") {
		t.Errorf("the build must be static (CGO_ENABLED=0), env %v", env)
	}
	if !slices.Contains(args, "-trimpath") {
		t.Errorf("the build should use -trimpath, args %v", args)
	}
	i := slices.Index(args, "-ldflags")
	if i < 0 || args[i+1] != "-s -w -X github.com/portcullis-proxy/portcullis/proxy.version=${VERSION}" {
		t.Errorf("-ldflags should strip and set proxy.version, args %v", args)
	}

	// The package built is the README's local build.
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	local := regexp.MustCompile(`(?m)^go build -o portcullis (\S+)$`).FindSubmatch(readme)
	if local == nil {
		t.Fatal("README.md has no `go build -o portcullis ./cmd/...` line to compare with")
	}
	if pkg := args[len(args)-1]; pkg != string(local[1]) {
		t.Errorf("the Dockerfile builds %s, the README %s", pkg, local[1])
	}
}

// healthcheck is the final stage's HEALTHCHECK: its options and its command
// in exec form (distroless has no shell to run the shell form).
func healthcheck(t *testing.T, final stage) (opts map[string]string, command []string) {
	t.Helper()
	hc := final.last("HEALTHCHECK")
	flags, exec, ok := strings.Cut(hc, " CMD ")
	if !ok {
		t.Fatalf("the image needs a HEALTHCHECK ... CMD [...] (compose's depends_on: service_healthy waits on it), got HEALTHCHECK %q", hc)
	}
	if err := json.Unmarshal([]byte(exec), &command); err != nil {
		t.Fatalf("HEALTHCHECK CMD %s: want the exec form, a JSON array (no shell): %v", exec, err)
	}
	opts = map[string]string{}
	for _, f := range strings.Fields(flags) {
		name, value, _ := strings.Cut(f, "=")
		opts[name] = value
	}
	return opts, command
}

// The HEALTHCHECK runs `portcullis health` on the file the default command
// serves, gives the proxy time to discover its IdPs (/readyz waits for
// them), and lets the command's own timeout fire first, so that its one-line
// answer, not Docker's "exceeded timeout", lands in the health log.
func checkHealthcheck(t *testing.T, final stage) {
	t.Helper()
	opts, command := healthcheck(t, final)
	var entrypoint, cmd []string
	json.Unmarshal([]byte(final.last("ENTRYPOINT")), &entrypoint)
	json.Unmarshal([]byte(final.last("CMD")), &cmd)
	want := append(slices.Clone(entrypoint), "health")
	if i := slices.Index(cmd, "--config"); i >= 0 && i+1 < len(cmd) {
		want = append(want, "--config", cmd[i+1])
	}
	if !slices.Equal(command, want) {
		t.Errorf("HEALTHCHECK CMD %q, want %q: portcullis health on the config the default command serves", command, want)
	}
	duration := func(name string) time.Duration {
		d, err := time.ParseDuration(opts[name])
		if err != nil {
			t.Errorf("HEALTHCHECK %s=%q: %v", name, opts[name], err)
		}
		return d
	}
	if d := duration("--start-period"); d < 30*time.Second {
		t.Errorf("HEALTHCHECK --start-period=%s: /readyz waits for IdP discovery, give it at least 30s", d)
	}
	if d := duration("--timeout"); d <= 3*time.Second {
		t.Errorf("HEALTHCHECK --timeout=%s: must exceed portcullis health's own --timeout (3s)", d)
	}
	if d := duration("--interval"); d <= 0 || d > 30*time.Second {
		t.Errorf("HEALTHCHECK --interval=%s: compose waits an interval before the first check; at most 30s", d)
	}
}

// The Dockerfile's build command, run here: it compiles, the binary is
// static and stripped, and `version` reports the VERSION build argument.
func TestDockerfileBuildStep(t *testing.T) {
	env, args := goBuild(t, parseDockerfile(t, "../Dockerfile")[0])
	out := filepath.Join(t.TempDir(), "portcullis")
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "${VERSION}", "v9.8.7-test")
		if i > 0 && args[i-1] == "-o" {
			args[i] = out
		}
	}
	cmd := exec.Command("go", append([]string{"build"}, args...)...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", args, err, b)
	}

	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary is dynamically linked (%v): distroless/static cannot run it", p.Type)
		}
	}
	if f.Section(".symtab") != nil {
		t.Error("the binary keeps its symbol table: -s was lost")
	}

	version, err := exec.Command(out, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(version), "v9.8.7-test") {
		t.Errorf("portcullis version should report the VERSION build argument, got %q (%v)", version, err)
	}

	// The HEALTHCHECK's command, run with this binary against an admin
	// listener that is ready and one that is not: exit 0 and 1, which is all
	// Docker reads.
	stages := parseDockerfile(t, "../Dockerfile")
	_, command := healthcheck(t, stages[len(stages)-1])
	if len(command) < 2 {
		t.Fatalf("HEALTHCHECK CMD %q runs no command", command)
	}
	for _, tc := range []struct {
		name  string
		ready int
		code  int
	}{{"a ready proxy", http.StatusOK, 0}, {"a proxy that is not ready", http.StatusServiceUnavailable, 1}} {
		admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/readyz" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(tc.ready)
		}))
		config := filepath.Join(t.TempDir(), "portcullis.yaml")
		// The CVAT profile's secrets are not in this environment, as they
		// need not be in a health check's.
		profile, err := os.ReadFile("cvat/portcullis.yaml")
		if err != nil {
			t.Fatal(err)
		}
		const cvatAdmin = `admin_listen: "127.0.0.1:9773"`
		if !strings.Contains(string(profile), cvatAdmin) {
			t.Fatalf("cvat/portcullis.yaml has no %s line to point at the test's admin listener", cvatAdmin)
		}
		profile = []byte(strings.Replace(string(profile), cvatAdmin, `admin_listen: "`+strings.TrimPrefix(admin.URL, "http://")+`"`, 1))
		if err := os.WriteFile(config, profile, 0o600); err != nil {
			t.Fatal(err)
		}
		args := slices.Clone(command[1:])
		if i := slices.Index(args, "--config"); i >= 0 && i+1 < len(args) {
			args[i+1] = config
		}
		hc := exec.Command(out, args...)
		hc.Env = []string{}
		b, err := hc.CombinedOutput()
		admin.Close()
		code := -1
		if hc.ProcessState != nil {
			code = hc.ProcessState.ExitCode()
		}
		if code != tc.code {
			t.Errorf("HEALTHCHECK %q against %s: exit %d (%v), want %d\n%s", args, tc.name, code, err, tc.code, b)
		}
	}
}

// .dockerignore keeps the build context small; it must not hide a package
// the binary is built from.
func TestDockerignoreKeepsEverySourcePackage(t *testing.T) {
	patterns := dockerignorePatterns(t)
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "../cmd/portcullis").Output()
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum"}
	for _, dir := range strings.Fields(string(out)) {
		if rel, err := filepath.Rel(root, dir); err == nil && !strings.HasPrefix(rel, "..") {
			needed = append(needed, rel)
		}
	}
	for _, path := range needed {
		for _, p := range patterns {
			p = strings.TrimPrefix(p, "**/")
			if ok, _ := filepath.Match(p, path); ok || path == p || strings.HasPrefix(path, p+"/") || strings.Contains("/"+path+"/", "/"+p+"/") {
				t.Errorf(".dockerignore pattern %q drops %s, which the binary needs", p, path)
			}
		}
	}
}

// dockerignorePatterns are the patterns of the repository's .dockerignore.
func dockerignorePatterns(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(raw), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	return patterns
}

// dockerignored reports whether a .dockerignore pattern list leaves path
// (relative, slash-separated) out of the build context: Docker matches a
// pattern against the whole path from the context's root ("/x" is "x"),
// "**/" standing for any number of directories, and a match of a parent
// directory leaves out everything below it.
func dockerignored(patterns []string, path string) bool {
	for _, p := range patterns {
		p = strings.TrimPrefix(p, "/")
		for dir := path; dir != "."; dir = filepath.Dir(dir) {
			if ok, _ := filepath.Match(p, dir); ok {
				return true
			}
			if rest, ok := strings.CutPrefix(p, "**/"); ok {
				if m, _ := filepath.Match(rest, filepath.Base(dir)); m {
					return true
				}
			}
		}
	}
	return false
}

// The README's Install builds the binary into the checkout (go build -o
// portcullis ./cmd/portcullis), where the README's docker build then runs:
// tens of MB the image builds again anyway stay out of the context.
func TestDockerignoreLeavesOutTheLocalBuild(t *testing.T) {
	patterns := dockerignorePatterns(t)
	if !dockerignored(patterns, "portcullis") {
		t.Errorf("the binary that go build -o portcullis leaves in the checkout would be sent in the build context")
	}
	for _, path := range []string{"cmd/portcullis/main.go", "cmd/portcullis/demo/demo.go"} {
		if dockerignored(patterns, path) {
			t.Errorf("%s is needed by the build but ignored", path)
		}
	}
}

// The README runs the image with portcullis.env and portcullis.yaml from the
// checkout the image is built in: secrets there, and keys and certificates
// anywhere in it, must stay out of the build context, whose builder-stage
// layers a `--cache-to ...,mode=max` build pushes to a registry.
func TestDockerignoreKeepsOperatorSecretsOut(t *testing.T) {
	patterns := dockerignorePatterns(t)
	for _, path := range []string{".env", "portcullis.env", "portcullis.yaml", "tls.key", "certs/tls.key", "certs/tls.crt", "saml/sp.pem", "proxy.test"} {
		if !dockerignored(patterns, path) {
			t.Errorf("%s would be sent in the build context", path)
		}
	}
	for _, path := range []string{"go.mod", "cmd/portcullis/main.go", "proxy/pages/chooser.html"} {
		if dockerignored(patterns, path) {
			t.Errorf("%s is needed by the build but ignored", path)
		}
	}
}
