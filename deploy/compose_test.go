package deploy

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"

	"github.com/portcullis-proxy/portcullis/proxy"
)

// cvatCompose is the shape of CVAT's own docker-compose.yml that the
// override relies on: traefik publishing 8080 (and 8090 for its dashboard)
// on the `cvat` network, routing by Host to cvat_server and cvat_ui.
const cvatCompose = `
name: cvat
services:
  cvat_server:
    image: cvat/server:${CVAT_VERSION:-dev}
    restart: always
    environment:
      ALLOWED_HOSTS: '*'
      CVAT_REDIS_HOST: cvat_redis
    labels:
      - traefik.enable=true
      - traefik.http.routers.cvat.rule=Host(` + "`${CVAT_HOST:-localhost}`" + `) && PathPrefix(` + "`/api/`" + `)
    networks:
      cvat:
        aliases: [cvat-server]
  cvat_ui:
    image: cvat/ui:${CVAT_VERSION:-dev}
    restart: always
    networks: [cvat]
  cvat_opa:
    image: openpolicyagent/opa:0.63.0
    networks:
      cvat:
        aliases: [opa]
  traefik:
    image: traefik:v3.1
    container_name: traefik
    restart: always
    ports:
      - 8080:8080
      - 8090:8090
    environment:
      CVAT_HOST: ${CVAT_HOST:-localhost}
      DJANGO_LOG_VIEWER_HOST: grafana
      DJANGO_LOG_VIEWER_PORT: 3000
      TRAEFIK_ENTRYPOINTS_web_ADDRESS: :8080
      TRAEFIK_PROVIDERS_DOCKER_EXPOSEDBYDEFAULT: "false"
      TRAEFIK_PROVIDERS_DOCKER_NETWORK: cvat
      TRAEFIK_PROVIDERS_FILE_DIRECTORY: /etc/traefik/rules
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock:ro
      - ./components/analytics/grafana_conf.yml:/etc/traefik/rules/grafana_conf.yml:ro
    networks: [cvat]
  # CVAT's analytics: Grafana with anonymous Admin and no login form, which
  # only traefik's /analytics route (cvatGrafanaConf) guards; ClickHouse and
  # Vector's HTTP source. None publishes a port.
  cvat_grafana:
    image: grafana/grafana-oss:10.1.2
    container_name: cvat_grafana
    environment:
      GF_AUTH_ANONYMOUS_ENABLED: "true"
      GF_AUTH_ANONYMOUS_ORG_ROLE: Admin
      GF_AUTH_DISABLE_LOGIN_FORM: "true"
      GF_SERVER_ROOT_URL: http://${CVAT_HOST:-localhost}/analytics
    networks:
      cvat:
        aliases: [grafana]
  cvat_clickhouse:
    image: clickhouse/clickhouse-server:23.11-alpine
    container_name: cvat_clickhouse
    networks:
      cvat:
        aliases: [clickhouse]
  cvat_vector:
    image: timberio/vector:0.26.0-alpine
    container_name: cvat_vector
    networks:
      cvat:
        aliases: [vector]
networks:
  cvat:
`

// cvatGrafanaConf is CVAT's components/analytics/grafana_conf.yml, a rules
// file of traefik's file provider (Go templates, env): /analytics goes to
// Grafana behind a forward-auth to cvat_server's /analytics view that
// passes only the Cookie and Authorization of the request.
const cvatGrafanaConf = `http:
  routers:
    grafana:
      entryPoints:
      - web
      middlewares:
      - analytics-auth
      - strip-prefix
      service: grafana
      rule: Host(` + "`{{ env \"CVAT_HOST\" }}`" + `) && PathPrefix(` + "`/analytics`" + `)
    grafana_https:
      entryPoints:
      - websecure
      middlewares:
      - analytics-auth
      - strip-prefix
      service: grafana
      tls: {}
      rule: Host(` + "`{{ env \"CVAT_HOST\" }}`" + `) && PathPrefix(` + "`/analytics`" + `)

  middlewares:
    analytics-auth:
      forwardauth:
        address: http://cvat_server:8080/analytics
        authRequestHeaders:
          - "Cookie"
          - "Authorization"

    strip-prefix:
      stripprefix:
        prefixes:
        - /analytics

  services:
    grafana:
      loadBalancer:
        servers:
        - url: http://{{ env "DJANGO_LOG_VIEWER_HOST" }}:{{ env "DJANGO_LOG_VIEWER_PORT" }}
        passHostHeader: false
`

// composeEnv is what the guide puts in CVAT's .env.
var composeEnv = map[string]string{
	"CVAT_HOST":                            "cvat.example.com",
	"CVAT_PUBLIC_URL":                      "https://cvat.example.com",
	"OIDC_ISSUER":                          "https://login.example.com/realms/company",
	"PORTCULLIS_SESSION_KEYS":              "dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE=",
	"PORTCULLIS_IDP_COMPANY_CLIENT_SECRET": "s3cret",
}

// loadCVATWithPortcullis lays out a CVAT checkout as the guide does (CVAT's
// compose file, the override and portcullis.yaml side by side) and loads
// `docker compose -f docker-compose.yml -f docker-compose.header-auth.yml`
// with Compose v2's own loader.
func loadCVATWithPortcullis(t *testing.T, env map[string]string) (*types.Project, string, error) {
	t.Helper()
	return loadCVATCompose(t, env, "docker-compose.yml", "docker-compose.header-auth.yml")
}

// cvatServerless is CVAT's components/serverless/docker-compose.serverless.yml:
// nuclio's dashboard, with the Docker socket and no login, published on 8070
// of every address.
const cvatServerless = `
services:
  nuclio:
    container_name: nuclio
    image: quay.io/nuclio/dashboard:1.15.9-amd64
    restart: always
    networks: [cvat]
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock
    ports:
      - '8070:8070'
  cvat_server:
    environment:
      CVAT_SERVERLESS: 1
    extra_hosts:
      - "host.docker.internal:host-gateway"
`

// loadCVATCompose lays out a CVAT checkout as the guide does (CVAT's compose
// files, the overrides and portcullis.yaml side by side) and loads the files
// named, in that order, as `docker compose -f ... -f ...` would, with
// Compose v2's own loader.
func loadCVATCompose(t *testing.T, env map[string]string, files ...string) (*types.Project, string, error) {
	t.Helper()
	dir := t.TempDir()
	override, err := os.ReadFile("docker-compose.header-auth.yml")
	if err != nil {
		t.Fatal(err)
	}
	serverlessOverride, err := os.ReadFile("docker-compose.header-auth.serverless.yml")
	if err != nil {
		t.Fatal(err)
	}
	profile, err := os.ReadFile("cvat/portcullis.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"serverless", "analytics"} {
		if err := os.MkdirAll(filepath.Join(dir, "components", sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string][]byte{
		"docker-compose.yml":                                  []byte(cvatCompose),
		"components/analytics/grafana_conf.yml":               []byte(cvatGrafanaConf),
		"components/serverless/docker-compose.serverless.yml": []byte(cvatServerless),
		"docker-compose.header-auth.yml":                      override,
		"docker-compose.header-auth.serverless.yml":           serverlessOverride,
		"portcullis.yaml":                                     profile,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	var paths []string
	for _, f := range files {
		paths = append(paths, filepath.Join(dir, f))
	}
	opts, err := cli.NewProjectOptions(paths, cli.WithWorkingDirectory(dir), cli.WithEnv(list), cli.WithName("cvat"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	return p, dir, err
}

func TestComposeOverridePutsPortcullisInFrontOfCVAT(t *testing.T) {
	p, dir, err := loadCVATWithPortcullis(t, composeEnv)
	if err != nil {
		t.Fatalf("compose rejects CVAT's file with the override: %v", err)
	}
	pc, ok := p.Services["portcullis"]
	if !ok {
		t.Fatal("the override adds no portcullis service")
	}

	// Nothing but portcullis is published: traefik lost 8080 and 8090.
	for name, s := range p.Services {
		if name != "portcullis" && len(s.Ports) > 0 {
			t.Errorf("%s still publishes %+v: CVAT must be reachable only through portcullis", name, s.Ports)
		}
	}
	if len(pc.Ports) != 1 || pc.Ports[0].Published != "8080" || pc.Ports[0].Target != 9772 {
		t.Errorf("portcullis should take over host port 8080 for its listener 9772, got %+v", pc.Ports)
	}
	if v := p.Services["cvat_server"].Environment["HEADER_AUTH_ENABLE"]; v == nil || *v == "" {
		t.Error("cvat_server needs HEADER_AUTH_ENABLE set (CVAT enables header auth when it is non-empty)")
	}

	// The mounted config is the CVAT profile, and check accepts it with the
	// environment compose gives the container.
	var config string
	for _, v := range pc.Volumes {
		if v.Target == "/etc/portcullis/portcullis.yaml" {
			config = v.Source
			if !v.ReadOnly {
				t.Error("the config must be mounted read-only")
			}
		}
	}
	if config != filepath.Join(dir, "portcullis.yaml") {
		t.Fatalf("want portcullis.yaml of the CVAT checkout mounted at /etc/portcullis/portcullis.yaml, got %q", config)
	}
	cfg, err := proxy.LoadConfig(config, func(k string) string {
		if v := pc.Environment[k]; v != nil {
			return *v
		}
		return ""
	})
	if err == nil {
		err = proxy.Check(cfg)
	}
	if err != nil {
		t.Fatalf("portcullis check rejects the mounted config with the container's environment:\n%v", err)
	}
	if _, port, _ := net.SplitHostPort(cfg.Server.Listen); port != "9772" {
		t.Errorf("server.listen %q is not the published target 9772", cfg.Server.Listen)
	}

	// The upstream is traefik, on a network portcullis shares, at the port
	// traefik's web entrypoint listens on.
	up, err := url.Parse(cfg.Upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	traefik, ok := p.Services[up.Hostname()]
	if !ok || up.Hostname() != "traefik" {
		t.Fatalf("upstream %s is not CVAT's traefik service", cfg.Upstream.URL)
	}
	if addr := traefik.Environment["TRAEFIK_ENTRYPOINTS_web_ADDRESS"]; addr == nil || *addr != ":"+up.Port() {
		t.Errorf("upstream port %s is not traefik's web entrypoint %v", up.Port(), addr)
	}
	// On that entry point traefik believes portcullis's X-Forwarded-Proto,
	// -Host and -For. By default it replaces them from a sender it does not
	// trust with its own (http, and portcullis's address): CVAT would then
	// build http:// links, the TUS Location that the SDK sends its token to
	// among them, and know no client's address.
	if v := traefik.Environment["TRAEFIK_ENTRYPOINTS_web_FORWARDEDHEADERS_INSECURE"]; v == nil || *v != "true" {
		t.Errorf("traefik's web entrypoint must trust the forwarded headers portcullis sends (TRAEFIK_ENTRYPOINTS_web_FORWARDEDHEADERS_INSECURE=true), has %v", v)
	}
	if _, ok := pc.Networks["cvat"]; !ok {
		t.Errorf("portcullis must join CVAT's network, is on %v", pc.Networks)
	}

	// The container needs nothing writable and no privileges.
	if !pc.ReadOnly || !slices.Equal(pc.CapDrop, []string{"ALL"}) || !slices.Contains(pc.SecurityOpt, "no-new-privileges:true") {
		t.Errorf("portcullis should run read-only, with no capabilities and no-new-privileges: read_only=%v cap_drop=%v security_opt=%v",
			pc.ReadOnly, pc.CapDrop, pc.SecurityOpt)
	}
}

func TestComposeOverrideHostPortIsCVATPort(t *testing.T) {
	env := map[string]string{"CVAT_PORT": "443"}
	for k, v := range composeEnv {
		env[k] = v
	}
	p, _, err := loadCVATWithPortcullis(t, env)
	if err != nil {
		t.Fatal(err)
	}
	if ports := p.Services["portcullis"].Ports; len(ports) != 1 || ports[0].Published != "443" {
		t.Errorf("CVAT_PORT=443 should publish portcullis on 443, got %+v", ports)
	}
}

func TestComposeOverrideRefusesToStartWithoutItsSettings(t *testing.T) {
	for _, missing := range []string{"CVAT_PUBLIC_URL", "OIDC_ISSUER", "PORTCULLIS_SESSION_KEYS", "PORTCULLIS_IDP_COMPANY_CLIENT_SECRET"} {
		t.Run("without "+missing, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range composeEnv {
				if k != missing {
					env[k] = v
				}
			}
			_, _, err := loadCVATWithPortcullis(t, env)
			if err == nil || !strings.Contains(err.Error(), missing) {
				t.Errorf("want an error naming %s, got %v", missing, err)
			}
		})
	}
}

// With CVAT's serverless component, the guide's command line still leaves
// portcullis the only way in from other hosts: nuclio's dashboard (no login,
// the Docker socket, a way onto CVAT's network) stays on the host's loopback.
func TestComposeWithServerlessPublishesOnlyPortcullis(t *testing.T) {
	guide, err := os.ReadFile("../docs/cvat.md")
	if err != nil {
		t.Fatal(err)
	}
	command := regexp.MustCompile(`docker compose((?: -f \S+)+) up -d`)
	var files []string
	for _, m := range command.FindAllSubmatch(guide, -1) {
		if strings.Contains(string(m[1]), "serverless") {
			files = strings.Fields(strings.ReplaceAll(string(m[1]), "-f ", ""))
		}
	}
	if files == nil {
		t.Fatal("docs/cvat.md shows no `docker compose -f ... up -d` with CVAT's serverless component")
	}
	p, _, err := loadCVATCompose(t, composeEnv, files...)
	if err != nil {
		t.Fatalf("compose rejects %v: %v", files, err)
	}
	if _, ok := p.Services["nuclio"]; !ok {
		t.Fatalf("%v has no nuclio service", files)
	}
	for name, s := range p.Services {
		for _, port := range s.Ports {
			if name == "portcullis" {
				continue
			}
			if ip, err := netip.ParseAddr(port.HostIP); err != nil || !ip.IsLoopback() {
				t.Errorf("%s publishes %s:%s on every address: CVAT must be reachable only through portcullis", name, port.HostIP, port.Published)
			}
		}
	}
	if v := p.Services["cvat_server"].Environment["HEADER_AUTH_ENABLE"]; v == nil || *v == "" {
		t.Error("header auth must stay on with the serverless component")
	}
}

// The portcullis service keeps the image's HEALTHCHECK (`docker compose ps`
// shows it healthy once /readyz passes, and another service's
// depends_on: service_healthy can wait for it), and mounts the config where
// that check reads server.admin_listen.
func TestComposeOverrideKeepsTheImageHealthcheck(t *testing.T) {
	p, _, err := loadCVATWithPortcullis(t, composeEnv)
	if err != nil {
		t.Fatal(err)
	}
	pc := p.Services["portcullis"]
	if hc := pc.HealthCheck; hc != nil {
		if hc.Disable || len(hc.Test) == 0 || hc.Test[0] == "NONE" {
			t.Fatalf("the override turns the image's health check off: %+v", hc)
		}
		t.Fatalf("the override replaces the image's health check with %q: keep one, in the Dockerfile", hc.Test)
	}
	stages := parseDockerfile(t, "../Dockerfile")
	_, command := healthcheck(t, stages[len(stages)-1])
	i := slices.Index(command, "--config")
	if i < 0 || i+1 >= len(command) {
		t.Fatalf("the image's HEALTHCHECK %q names no --config", command)
	}
	mounted := false
	for _, v := range pc.Volumes {
		mounted = mounted || v.Target == command[i+1]
	}
	if !mounted {
		t.Errorf("the image's health check reads %s, which the override does not mount (volumes %+v)", command[i+1], pc.Volumes)
	}
}

// serveGrace is how long `portcullis serve` lets requests in flight finish
// after SIGTERM when the image's command names no --grace (its default;
// README, Shutdown).
const serveGrace = 30 * time.Second

// `docker compose stop`, `down` and every `up -d` that recreates portcullis
// send SIGTERM and kill after stop_grace_period, 10 s unless set: uploads
// still in flight would be cut at 10 s, not at serve's --grace.
func TestComposeOverrideLetsRequestsInFlightFinish(t *testing.T) {
	p, _, err := loadCVATWithPortcullis(t, composeEnv)
	if err != nil {
		t.Fatal(err)
	}
	pc := p.Services["portcullis"]
	stages := parseDockerfile(t, "../Dockerfile")
	if cmd := stages[len(stages)-1].last("CMD"); strings.Contains(cmd, "--grace") || slices.Contains(pc.Command, "--grace") {
		t.Fatalf("the command sets --grace (image CMD %s, compose command %q): compare with it, not with serve's default", cmd, pc.Command)
	}
	if pc.StopGracePeriod == nil || time.Duration(*pc.StopGracePeriod) <= serveGrace {
		t.Errorf("stop_grace_period %v: Docker kills portcullis before serve's %s --grace ends", pc.StopGracePeriod, serveGrace)
	}
}

// The override's header shows the lines to put in .env, and the guide passes
// that .env to `docker run --env-file` for `portcullis check`: unlike
// Compose, docker run keeps an inline comment as part of the value
// (docker/cli#4404), so a line copied with one would hand check
// "https://cvat.example.com   # what users open" as public_url.
func TestComposeOverrideEnvSampleHasNoInlineComments(t *testing.T) {
	override, err := os.ReadFile("docker-compose.header-auth.yml")
	if err != nil {
		t.Fatal(err)
	}
	envLine := regexp.MustCompile(`^#\s+([A-Z][A-Z0-9_]*)=(.*)$`)
	seen := 0
	for _, line := range strings.Split(string(override), "\n") {
		m := envLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		seen++
		if strings.Contains(m[2], "#") {
			t.Errorf("the .env sample line for %s carries an inline comment, which docker run --env-file keeps in the value: %q", m[1], line)
		}
	}
	if seen == 0 {
		t.Error("the override's header shows no .env lines")
	}
}

// traefikRules is the part of a traefik file-provider rules file that the
// /analytics route is made of.
type traefikRules struct {
	HTTP struct {
		Routers map[string]struct {
			EntryPoints []string `yaml:"entryPoints"`
			Rule        string   `yaml:"rule"`
			Priority    int      `yaml:"priority"`
			Middlewares []string `yaml:"middlewares"`
			Service     string   `yaml:"service"`
		} `yaml:"routers"`
		Middlewares map[string]map[string]struct {
			Address            string   `yaml:"address"`
			AuthRequestHeaders []string `yaml:"authRequestHeaders"`
		} `yaml:"middlewares"`
		Services map[string]any `yaml:"services"`
	} `yaml:"http"`
}

// forwardAuth is the forward-auth middleware name defines in rules (traefik
// takes forwardAuth and forwardauth alike), if it is one.
func (r traefikRules) forwardAuth(name string) (address string, headers []string, ok bool) {
	for kind, m := range r.HTTP.Middlewares[name] {
		if strings.EqualFold(kind, "forwardAuth") {
			return m.Address, m.AuthRequestHeaders, true
		}
	}
	return "", nil, false
}

// parseTraefikRules reads a rules file as traefik's file provider does once
// its template has run: {{ env "X" }} is traefik's environment variable X.
func parseTraefikRules(t *testing.T, name, content string, env types.MappingWithEquals) traefikRules {
	t.Helper()
	content = regexp.MustCompile(`\{\{ env "(\w+)" \}\}`).ReplaceAllStringFunc(content, func(m string) string {
		k := regexp.MustCompile(`"(\w+)"`).FindStringSubmatch(m)[1]
		if v := env[k]; v != nil {
			return *v
		}
		return ""
	})
	var r traefikRules
	if err := yaml.Unmarshal([]byte(content), &r); err != nil {
		t.Fatalf("%s is no traefik rules file: %v", name, err)
	}
	return r
}

// CVAT's /analytics (its Grafana, anonymous Admin behind traefik) asks
// cvat_server's /analytics view with the identity portcullis sends, not only
// with CVAT's session cookie, which a browser has only once another CVAT
// page has run through header auth (portcullis expires it at every
// sign-in). The override's router wins over CVAT's for the same requests,
// asks the same view (CVAT still decides who sees analytics), and goes on
// through CVAT's own middlewares to CVAT's Grafana service.
func TestComposeOverrideAsksCVATForAnalyticsWithTheIdentity(t *testing.T) {
	p, _, err := loadCVATWithPortcullis(t, composeEnv)
	if err != nil {
		t.Fatal(err)
	}
	traefik := p.Services["traefik"]
	dir := traefik.Environment["TRAEFIK_PROVIDERS_FILE_DIRECTORY"]
	if dir == nil {
		t.Fatal("CVAT's traefik has no rules directory (TRAEFIK_PROVIDERS_FILE_DIRECTORY)")
	}
	cvat := parseTraefikRules(t, "CVAT's grafana_conf.yml", cvatGrafanaConf, traefik.Environment)
	var ours *traefikRules
	for _, c := range traefik.Configs {
		if filepath.Dir(c.Target) != *dir || !strings.HasSuffix(c.Target, ".yml") {
			continue
		}
		cfg, ok := p.Configs[c.Source]
		if !ok || cfg.Content == "" {
			t.Fatalf("traefik's config %s has no inline content in the override", c.Source)
		}
		r := parseTraefikRules(t, c.Source, cfg.Content, traefik.Environment)
		ours = &r
	}
	if ours == nil {
		t.Fatalf("the override gives traefik no rules in %s: /analytics keeps CVAT's forward-auth, which sees only CVAT's session cookie and answers 401 before CVAT's UI has made one", *dir)
	}
	// traefik's file provider reads its directory in name order and keeps
	// the first definition of a name: a router, middleware or service of the
	// override's that CVAT's grafana_conf.yml also names is skipped, with a
	// warning CVAT's traefik does not print at its default log level
	// (ERROR), and /analytics keeps CVAT's forward-auth. (traefik v3.6.12:
	// "HTTP router already configured, skipping", grafana_conf.yml's kept.)
	for name := range ours.HTTP.Routers {
		if _, ok := cvat.HTTP.Routers[name]; ok {
			t.Errorf("router %s is CVAT's too", name)
		}
	}
	for name := range ours.HTTP.Middlewares {
		if _, ok := cvat.HTTP.Middlewares[name]; ok {
			t.Errorf("middleware %s is CVAT's too", name)
		}
	}
	for name := range ours.HTTP.Services {
		if _, ok := cvat.HTTP.Services[name]; ok {
			t.Errorf("service %s is CVAT's too", name)
		}
	}

	theirs := cvat.HTTP.Routers["grafana"]
	found := false
	for name, r := range ours.HTTP.Routers {
		if r.Rule != theirs.Rule {
			continue
		}
		found = true
		if !slices.Equal(r.EntryPoints, theirs.EntryPoints) {
			t.Errorf("router %s is on %v, CVAT's on %v", name, r.EntryPoints, theirs.EntryPoints)
		}
		// traefik's default priority is the rule's length: CVAT's router
		// has the same rule, with any host name (253 bytes at most).
		if r.Priority <= len(strings.Replace(theirs.Rule, "cvat.example.com", strings.Repeat("x", 253), 1)) {
			t.Errorf("router %s has priority %d: CVAT's own router, with the same rule, could win", name, r.Priority)
		}
		if r.Service != theirs.Service {
			t.Errorf("router %s goes to %q, CVAT's to %q", name, r.Service, theirs.Service)
		}
		var auth []string
		var rest []string
		for _, m := range r.Middlewares {
			if address, headers, ok := ours.forwardAuth(m); ok {
				auth = append(auth, m)
				cvatAddress, cvatHeaders, _ := cvat.forwardAuth("analytics-auth")
				if address != cvatAddress {
					t.Errorf("middleware %s asks %s, CVAT's %s", m, address, cvatAddress)
				}
				for _, h := range append(cvatHeaders, "X-Email", "X-Groups") {
					if !slices.Contains(headers, h) {
						t.Errorf("middleware %s does not pass %s to CVAT's /analytics view (it passes %v)", m, h, headers)
					}
				}
				continue
			}
			if _, ok := ours.HTTP.Middlewares[m]; ok {
				t.Errorf("router %s adds middleware %s of its own: it should differ from CVAT's only in what the forward-auth passes", name, m)
			}
			rest = append(rest, m)
		}
		if len(auth) != 1 || r.Middlewares[0] != auth[0] {
			t.Errorf("router %s should ask CVAT first, with one forward-auth: %v", name, r.Middlewares)
		}
		var cvatRest []string
		for _, m := range theirs.Middlewares {
			if _, _, ok := cvat.forwardAuth(m); !ok {
				cvatRest = append(cvatRest, m)
			}
		}
		if !slices.Equal(rest, cvatRest) {
			t.Errorf("router %s goes through %v after its forward-auth, CVAT's through %v", name, rest, cvatRest)
		}
	}
	if !found {
		t.Errorf("no router of the override's takes CVAT's /analytics rule %q", theirs.Rule)
	}
}
