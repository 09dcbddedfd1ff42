package deploy

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/portcullis-proxy/portcullis/proxy"
)

const chartDir = "../charts/portcullis"

// helmBinary finds helm on PATH or where `go install` puts it. A missing helm
// fails the test: test/run.sh installs it.
func helmBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "helm")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("helm not found on PATH or in $(go env GOPATH)/bin: go install helm.sh/helm/v3/cmd/helm@v3.22.0 (test/run.sh does)")
	return ""
}

// runHelm runs helm with its cache, config and data in temp dirs and no
// cluster, and returns stdout; stderr goes into the error.
func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(helmBinary(t), args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor the
// chart renders; decoding it strictly catches a field the CRD does not have.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// manifests are the objects one `helm template` renders, decoded strictly
// into their Kubernetes API types.
type manifests struct {
	deployments     []appsv1.Deployment
	services        []corev1.Service
	configMaps      []corev1.ConfigMap
	secrets         []corev1.Secret
	serviceAccounts []corev1.ServiceAccount
	pods            []corev1.Pod
	ingresses       []networkingv1.Ingress
	networkPolicies []networkingv1.NetworkPolicy
	hpas            []autoscalingv2.HorizontalPodAutoscaler
	pdbs            []policyv1.PodDisruptionBudget
	serviceMonitors []serviceMonitor
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// render runs helm template on the chart (release "cvat-sso" in namespace
// "cvat-sso") and decodes every document strictly.
func render(t *testing.T, args ...string) manifests {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", "cvat-sso", chartDir, "--namespace", "cvat-sso"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var m manifests
	for _, doc := range docSeparator.Split(out, -1) {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("rendered document is not YAML: %v\n%s", err, doc)
		}
		if meta.Kind == "" {
			continue // only comments
		}
		var target any
		switch meta.APIVersion + " " + meta.Kind {
		case "apps/v1 Deployment":
			m.deployments = append(m.deployments, appsv1.Deployment{})
			target = &m.deployments[len(m.deployments)-1]
		case "v1 Service":
			m.services = append(m.services, corev1.Service{})
			target = &m.services[len(m.services)-1]
		case "v1 ConfigMap":
			m.configMaps = append(m.configMaps, corev1.ConfigMap{})
			target = &m.configMaps[len(m.configMaps)-1]
		case "v1 Secret":
			m.secrets = append(m.secrets, corev1.Secret{})
			target = &m.secrets[len(m.secrets)-1]
		case "v1 ServiceAccount":
			m.serviceAccounts = append(m.serviceAccounts, corev1.ServiceAccount{})
			target = &m.serviceAccounts[len(m.serviceAccounts)-1]
		case "v1 Pod":
			m.pods = append(m.pods, corev1.Pod{})
			target = &m.pods[len(m.pods)-1]
		case "networking.k8s.io/v1 Ingress":
			m.ingresses = append(m.ingresses, networkingv1.Ingress{})
			target = &m.ingresses[len(m.ingresses)-1]
		case "networking.k8s.io/v1 NetworkPolicy":
			m.networkPolicies = append(m.networkPolicies, networkingv1.NetworkPolicy{})
			target = &m.networkPolicies[len(m.networkPolicies)-1]
		case "autoscaling/v2 HorizontalPodAutoscaler":
			m.hpas = append(m.hpas, autoscalingv2.HorizontalPodAutoscaler{})
			target = &m.hpas[len(m.hpas)-1]
		case "policy/v1 PodDisruptionBudget":
			m.pdbs = append(m.pdbs, policyv1.PodDisruptionBudget{})
			target = &m.pdbs[len(m.pdbs)-1]
		case "monitoring.coreos.com/v1 ServiceMonitor":
			m.serviceMonitors = append(m.serviceMonitors, serviceMonitor{})
			target = &m.serviceMonitors[len(m.serviceMonitors)-1]
		default:
			t.Fatalf("the chart renders %s %s, which this test does not know", meta.APIVersion, meta.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), target); err != nil {
			t.Fatalf("%s does not decode strictly: %v\n%s", meta.Kind, err, doc)
		}
	}
	return m
}

// one returns the only element of list, failing unless there is exactly one.
func one[T any](t *testing.T, what string, list []T) *T {
	t.Helper()
	if len(list) != 1 {
		t.Fatalf("want exactly one %s, got %d", what, len(list))
	}
	return &list[0]
}

// containerPort returns the port of the container's port named name.
func containerPort(t *testing.T, c *corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, name)
	return 0
}

// podEnv is the environment the container would get from the rendered
// Secret (envFrom), as the chart's Secret gives it.
func podEnv(t *testing.T, m manifests) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, s := range m.secrets {
		for k, v := range s.Data {
			env[k] = string(v)
		}
	}
	return env
}

// checkConfig asserts that the ConfigMap holds a config `portcullis check`
// accepts with env, listening where the probes and Services look.
func checkConfig(t *testing.T, m manifests, env map[string]string) *proxy.Config {
	t.Helper()
	cm := one(t, "ConfigMap", m.configMaps)
	raw, ok := cm.Data["portcullis.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no portcullis.yaml", cm.Name)
	}
	cfg, err := proxy.ParseConfig([]byte(raw), func(k string) string { return env[k] })
	if err == nil {
		err = proxy.Check(cfg)
	}
	if err != nil {
		t.Fatalf("portcullis check rejects the rendered config:\n%v\n%s", err, raw)
	}
	c := &one(t, "Deployment", m.deployments).Spec.Template.Spec.Containers[0]
	for _, l := range []struct{ key, addr, port string }{
		{"server.listen", cfg.Server.Listen, "http"},
		{"server.admin_listen", cfg.Server.AdminListen, "admin"},
	} {
		host, port, err := net.SplitHostPort(l.addr)
		if err != nil {
			t.Fatalf("%s: %v", l.key, err)
		}
		if host != "" && host != "0.0.0.0" && host != "::" {
			t.Errorf("%s = %q: the probes and Services cannot reach it from outside the pod", l.key, l.addr)
		}
		if want := fmt.Sprint(containerPort(t, c, l.port)); port != want {
			t.Errorf("%s listens on port %s, the container's %s port is %s", l.key, port, l.port, want)
		}
	}
	return cfg
}

// checkDeployment asserts what every rendering must keep: the probes, the
// hardened security context, resources, and secrets from envFrom.
func checkDeployment(t *testing.T, m manifests, secretName string) {
	t.Helper()
	d := one(t, "Deployment", m.deployments)
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := &pod.Containers[0]
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET, got %+v", p.name, p.probe)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "admin" {
			t.Errorf("%s probe: want GET %s on port admin, got %s on %s", p.name, p.path, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String())
		}
	}
	psc, sc := pod.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil {
		t.Fatal("pod and container security contexts must be set")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod must run as a non-root user: %+v", psc)
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccomp profile: want RuntimeDefault, got %+v", psc.SeccompProfile)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("container root filesystem must be read-only")
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("container must set runAsNonRoot")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("container must set allowPrivilegeEscalation: false")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("container must drop ALL capabilities and add none: %+v", sc.Capabilities)
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("container needs cpu and memory requests and a memory limit: %+v", c.Resources)
	}
	if got := gomemlimit(c); got == nil || got.ResourceFieldRef == nil || got.ResourceFieldRef.Resource != "limits.memory" {
		t.Errorf("GOMEMLIMIT must come from the memory limit, got %+v", got)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("portcullis needs no service account token: automountServiceAccountToken must be false")
	}
	// --grace follows terminationGracePeriodSeconds and the preStop sleep:
	// TestHelmPodKeepsServingWhileItLeavesTheEndpoints.
	if len(c.Args) != 5 || !slices.Equal(c.Args[:4], []string{"serve", "--config", "/etc/portcullis/portcullis.yaml", "--grace"}) {
		t.Errorf("container args: %q", c.Args)
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].SecretRef == nil || c.EnvFrom[0].SecretRef.Name != secretName {
		t.Errorf("want the environment from Secret %s, got %+v", secretName, c.EnvFrom)
	}
	if d.Spec.Template.Annotations["checksum/config"] == "" {
		t.Error("pod template has no checksum/config annotation")
	}
	if !reflect.DeepEqual(d.Spec.Selector.MatchLabels, subset(d.Spec.Template.Labels, d.Spec.Selector.MatchLabels)) {
		t.Errorf("selector %v does not select the pod labels %v", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
	}

	// The admin Service and the helm test pod reach the admin port.
	var admin *corev1.Service
	for i := range m.services {
		if m.services[i].Spec.Ports[0].Name == "admin" {
			admin = &m.services[i]
		}
	}
	if admin == nil || admin.Spec.Type != corev1.ServiceTypeClusterIP || admin.Spec.Ports[0].TargetPort.String() != "admin" {
		t.Fatalf("want a ClusterIP Service for the admin port, got %+v", admin)
	}
	test := one(t, "helm test Pod", m.pods)
	if test.Annotations["helm.sh/hook"] != "test" {
		t.Errorf("test pod is not a helm test hook: %v", test.Annotations)
	}
	url := fmt.Sprintf("http://%s:%d/healthz", admin.Name, admin.Spec.Ports[0].Port)
	if cmd := test.Spec.Containers[0].Command; !slices.Contains(cmd, url) {
		t.Errorf("test pod should fetch %s, runs %q", url, cmd)
	}
}

// subset returns the entries of labels whose keys are in keys.
func subset(labels, keys map[string]string) map[string]string {
	out := map[string]string{}
	for k := range keys {
		if v, ok := labels[k]; ok {
			out[k] = v
		}
	}
	return out
}

func TestHelmLint(t *testing.T) {
	for _, values := range [][]string{nil, {"-f", chartDir + "/values-ha.yaml"}} {
		if out, err := runHelm(t, append([]string{"lint", "--strict", chartDir}, values...)...); err != nil {
			t.Errorf("%v\n%s", err, out)
		}
	}
}

func TestHelmDefaultValues(t *testing.T) {
	m := render(t)
	checkDeployment(t, m, "cvat-sso-portcullis")
	secret := one(t, "Secret", m.secrets)
	key, err := base64.StdEncoding.DecodeString(string(secret.Data["PORTCULLIS_SESSION_KEYS"]))
	if err != nil || len(key) != 32 {
		t.Errorf("the generated session key should be base64 of 32 bytes, got %q", secret.Data["PORTCULLIS_SESSION_KEYS"])
	}
	checkConfig(t, m, podEnv(t, m))
	if d := one(t, "Deployment", m.deployments); d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("default replicas: want 1, got %v", d.Spec.Replicas)
	}
	if n := len(m.ingresses) + len(m.hpas) + len(m.pdbs) + len(m.serviceMonitors) + len(m.networkPolicies); n != 0 {
		t.Errorf("optional objects must be off by default, %d rendered", n)
	}
}

func TestHelmHAValues(t *testing.T) {
	m := render(t, "-f", chartDir+"/values-ha.yaml")
	checkDeployment(t, m, "cvat-sso-portcullis")
	env := podEnv(t, m)
	env["PORTCULLIS_REDIS_URL"] = "rediss://:secret@redis:6379/0" // from the operator's portcullis-redis Secret
	if cfg := checkConfig(t, m, env); cfg.Session.Store != "redis" {
		t.Errorf("HA values: session.store = %q, want redis (shared logout and login state across replicas)", cfg.Session.Store)
	}
	d := one(t, "Deployment", m.deployments)
	if d.Spec.Replicas != nil {
		t.Errorf("with the HPA on, the Deployment must leave replicas to it, got %d", *d.Spec.Replicas)
	}
	hpa := one(t, "HorizontalPodAutoscaler", m.hpas)
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas != 3 || hpa.Spec.ScaleTargetRef.Name != d.Name {
		t.Errorf("HPA: want min 3 replicas of %s, got %+v", d.Name, hpa.Spec)
	}
	pdb := one(t, "PodDisruptionBudget", m.pdbs)
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 2 ||
		!reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("PDB: want minAvailable 2 over the Deployment's pods, got %+v", pdb.Spec)
	}
	aff := d.Spec.Template.Spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Fatalf("HA pods need anti-affinity, got %+v", aff)
	}
	term := aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
	if term.TopologyKey != "kubernetes.io/hostname" || !reflect.DeepEqual(term.LabelSelector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("anti-affinity should spread the Deployment's pods over nodes, got %+v", term)
	}
	var redis *corev1.EnvVar
	for i, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "PORTCULLIS_REDIS_URL" {
			redis = &d.Spec.Template.Spec.Containers[0].Env[i]
		}
	}
	if redis == nil || redis.ValueFrom == nil || redis.ValueFrom.SecretKeyRef == nil ||
		redis.ValueFrom.SecretKeyRef.Name != "portcullis-redis" ||
		(redis.ValueFrom.SecretKeyRef.Optional != nil && *redis.ValueFrom.SecretKeyRef.Optional) {
		t.Errorf("the Redis URL should come from the (required) portcullis-redis Secret, got %+v", redis)
	}
}

func TestHelmEveryOption(t *testing.T) {
	m := render(t,
		"--set", "secret.existingSecret=cvat-sso-secrets",
		"--set", "ingress.enabled=true,ingress.className=nginx",
		"--set", "serviceMonitor.enabled=true",
		"--set", "networkPolicy.cvatTraefik.enabled=true,networkPolicy.cvatTraefik.namespace=cvat",
		"--set", "networkPolicy.cvatServer.enabled=true",
		"--set", "podAntiAffinity=hard",
	)
	checkDeployment(t, m, "cvat-sso-secrets")
	if len(m.secrets) != 0 {
		t.Errorf("with an existing Secret the chart must create none, got %d", len(m.secrets))
	}
	d := one(t, "Deployment", m.deployments)
	if _, ok := d.Spec.Template.Annotations["checksum/secret"]; ok {
		t.Error("checksum/secret of a Secret the chart does not render means nothing")
	}
	// The config itself is the same; an existing Secret gives the same keys.
	checkConfig(t, m, map[string]string{
		"PORTCULLIS_SESSION_KEYS":              "dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE=",
		"PORTCULLIS_IDP_COMPANY_CLIENT_SECRET": "s3cret",
	})

	ing := one(t, "Ingress", m.ingresses)
	backend := ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service
	if backend.Name != "cvat-sso-portcullis" || backend.Port.Name != "http" {
		t.Errorf("Ingress should send to the proxy's http port, got %+v", backend)
	}
	sm := one(t, "ServiceMonitor", m.serviceMonitors)
	if sm.Spec.Selector.MatchLabels["app.kubernetes.io/component"] != "admin" || sm.Spec.Endpoints[0].Port != "admin" || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor should scrape /metrics on the admin Service, got %+v", sm.Spec)
	}

	if len(m.networkPolicies) != 2 {
		t.Fatalf("want the traefik and the CVAT server NetworkPolicies, got %d", len(m.networkPolicies))
	}
	np := &m.networkPolicies[0]
	if np.Name != "cvat-sso-portcullis-cvat-traefik" {
		np = &m.networkPolicies[1]
	}
	if np.Namespace != "cvat" || np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "traefik" {
		t.Errorf("the policy must select CVAT's traefik pods in CVAT's namespace, got %s %+v", np.Namespace, np.Spec.PodSelector)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) || len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 {
		t.Fatalf("the policy must allow exactly one ingress peer, got %+v", np.Spec)
	}
	peer := np.Spec.Ingress[0].From[0]
	if peer.PodSelector == nil || !reflect.DeepEqual(peer.PodSelector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("the only peer must be portcullis's pods, got %+v", peer.PodSelector)
	}
	if peer.NamespaceSelector == nil || peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "cvat-sso" {
		t.Errorf("portcullis runs in another namespace than CVAT: the peer needs its namespace, got %+v", peer.NamespaceSelector)
	}
	if aff := d.Spec.Template.Spec.Affinity; aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Errorf("podAntiAffinity=hard should require one pod per node, got %+v", aff)
	}
}

// gomemlimit is where the container's GOMEMLIMIT comes from, or nil.
func gomemlimit(c *corev1.Container) *corev1.EnvVarSource {
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			if e.ValueFrom == nil {
				return &corev1.EnvVarSource{}
			}
			return e.ValueFrom
		}
	}
	return nil
}

// portcullis collects garbage at GOGC=200 unless told otherwise; in a pod
// with a memory limit the collector's soft limit is that limit.
func TestHelmGOMEMLIMITFollowsTheMemoryLimit(t *testing.T) {
	m := render(t, "--set", "resources.limits=null", "--set", "extraEnv[0].name=TZ,extraEnv[0].value=UTC")
	c := &one(t, "Deployment", m.deployments).Spec.Template.Spec.Containers[0]
	if got := gomemlimit(c); got != nil {
		t.Errorf("no memory limit, no GOMEMLIMIT: got %+v", got)
	}
	m = render(t, "--set", "extraEnv[0].name=TZ,extraEnv[0].value=UTC")
	c = &one(t, "Deployment", m.deployments).Spec.Template.Spec.Containers[0]
	if got := gomemlimit(c); got == nil || got.ResourceFieldRef == nil {
		t.Errorf("GOMEMLIMIT must come from the memory limit next to extraEnv, got %+v", got)
	}
	if len(c.Env) != 2 || c.Env[1].Name != "TZ" {
		t.Errorf("extraEnv must follow GOMEMLIMIT, so that it can override it: %+v", c.Env)
	}
}

func TestHelmSecretsBecomeEnvironment(t *testing.T) {
	m := render(t,
		"--set", "secret.sessionKeys={dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE=,b2xkLXNlc3Npb24ta2V5LTMyLWJ5dGVzLWxvbmchISE=}",
		"--set", "secret.clientSecrets.corp-oidc=s3cret",
		"--set", "secret.env.PORTCULLIS_IDP_CORP_LDAP_BIND_PASSWORD=b1nd",
	)
	env := podEnv(t, m)
	want := map[string]string{
		"PORTCULLIS_SESSION_KEYS":                "dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE=,b2xkLXNlc3Npb24ta2V5LTMyLWJ5dGVzLWxvbmchISE=",
		"PORTCULLIS_IDP_CORP_OIDC_CLIENT_SECRET": "s3cret",
		"PORTCULLIS_IDP_CORP_LDAP_BIND_PASSWORD": "b1nd",
	}
	if !reflect.DeepEqual(env, want) {
		t.Errorf("Secret data:\n got %v\nwant %v", env, want)
	}
	cfg := checkConfig(t, m, env)
	if len(cfg.Session.Keys) != 2 {
		t.Errorf("both session keys should reach the config, got %d", len(cfg.Session.Keys))
	}
}

func TestHelmConfigChangeRollsPods(t *testing.T) {
	checksums := func(args ...string) (config, secret string) {
		a := one(t, "Deployment", render(t, append(args, "--set", "secret.sessionKeys={dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE=}")...).deployments).Spec.Template.Annotations
		return a["checksum/config"], a["checksum/secret"]
	}
	baseConfig, baseSecret := checksums()
	for _, c := range []struct {
		name                     string
		set                      string
		configMoves, secretMoves bool
	}{
		{"a config change changes checksum/config", "config.session.lifetime=8h", true, false},
		{"a client secret change changes checksum/secret", "secret.clientSecrets.company=new", false, true},
		{"a replica count change changes neither", "replicaCount=2", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			config, secret := checksums("--set", c.set)
			if (config != baseConfig) != c.configMoves || (secret != baseSecret) != c.secretMoves {
				t.Errorf("checksum/config moved: %v (want %v); checksum/secret moved: %v (want %v)",
					config != baseConfig, c.configMoves, secret != baseSecret, c.secretMoves)
			}
		})
	}
}

func TestHelmSchemaRejectsMistakes(t *testing.T) {
	for _, c := range []struct{ name, set, says string }{
		{"a misspelt top-level value", "replicaCont=2", "replicaCont"},
		{"a public_url that is not an origin", "config.server.public_url=https://cvat.example.com/app", "public_url"},
		{"an unknown protocol", "config.sso.identity_providers[0].protocol=CAS", "protocol"},
		{"an unknown preset", "config.sso.identity_providers[0].id=company,config.sso.identity_providers[0].preset=gitea", "preset"},
		{"neither protocol nor preset", "config.sso.identity_providers[0].id=company", "missing property 'preset'"},
		{"an anti-affinity that is not soft or hard", "podAntiAffinity=always", "podAntiAffinity"},
		// Kubernetes wants objects in these lists; a string fails only at
		// apply, or (a volume mount without a path) when the pod is made.
		{"an image pull secret as a bare name", "imagePullSecrets={regcred}", "/imagePullSecrets/0"},
		{"an extra variable as NAME", "extraEnv={TZ}", "/extraEnv/0"},
		{"an extra variable without a name", "extraEnv[0].value=UTC", "/extraEnv/0"},
		{"an extra volume as a name", "extraVolumes={tls}", "/extraVolumes/0"},
		{"an extra volume mount without its path", "extraVolumeMounts[0].name=tls", "/extraVolumeMounts/0"},
		{"a toleration as a string", "tolerations={dedicated}", "/tolerations/0"},
		{"a topology spread constraint as a string", "topologySpreadConstraints={zone}", "/topologySpreadConstraints/0"},
		{"an Ingress TLS entry as a Secret name", "ingress.tls={cvat-tls}", "/ingress/tls/0"},
		{"another peer of traefik as a CIDR", "networkPolicy.cvatTraefik.extraFrom={10.0.0.0/8}", "/networkPolicy/cvatTraefik/extraFrom/0"},
		// Names go into many places of the manifests unquoted: only what
		// Kubernetes takes as a name, so that none adds YAML of its own
		// (TestHelmStringValuesStayValues has the free-form values).
		{"a service account name that adds hostPID", "serviceAccount.create=false,serviceAccount.name=sa\n      hostPID: true", "/serviceAccount/name"},
		{"an existing Secret's name that adds a field", "secret.existingSecret=s\n                optional: true", "/secret/existingSecret"},
		{"a fullnameOverride that adds a namespace", "fullnameOverride=x\n  namespace: kube-system", "/fullnameOverride"},
		{"a nameOverride that is no name", "nameOverride=Portcullis Proxy", "/nameOverride"},
		// (helm names another value's path for a key that fails
		// propertyNames, so these look for the key itself.)
		{"a client secret's IdP id that adds a variable", "secret.clientSecrets.a: b\n  EVIL=x", "invalid propertyName 'a: b"},
		{"a client secret's IdP id that no IdP can have", "secret.clientSecrets.Corp_LDAP=x", "invalid propertyName 'Corp_LDAP'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := runHelm(t, "template", "x", chartDir, "--set", c.set)
			// What helm says, after the command line runHelm puts first.
			says := ""
			if err != nil {
				_, says, _ = strings.Cut(err.Error(), "\n")
			}
			if !strings.Contains(says, c.says) {
				t.Errorf("want an error naming %s, got %v", c.says, err)
			}
		})
	}
}

// The chart's default config is the CVAT profile: the same rules, roles and
// headers as deploy/cvat/portcullis.yaml, so the two never drift apart.
func TestHelmDefaultConfigIsTheCVATProfile(t *testing.T) {
	m := render(t)
	chart := checkConfig(t, m, podEnv(t, m))
	profile, err := proxy.LoadConfig("cvat/portcullis.yaml", func(k string) string { return exampleEnv[k] })
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []struct {
		name        string
		chart, prof any
	}{
		{"rules", chart.Rules, profile.Rules},
		{"role_mapping", chart.RoleMapping, profile.RoleMapping},
		{"attribute_pass", chart.AttributePass, profile.AttributePass},
		{"default_action", chart.DefaultAction, profile.DefaultAction},
	} {
		if !reflect.DeepEqual(part.chart, part.prof) {
			t.Errorf("%s differs between values.yaml and deploy/cvat/portcullis.yaml:\nchart   %+v\nprofile %+v", part.name, part.chart, part.prof)
		}
	}
}

// The notes name the URLs to register at each IdP, and warn about what is
// left open.
func TestHelmNotesPrintCallbackURLs(t *testing.T) {
	notes := renderNotes(t, `
config:
  server:
    public_url: https://cvat.example.com/
  sso:
    identity_providers:
      - {id: company, protocol: OIDC, server_url: "https://login.example.com/", client_id: cvat}
      - {id: github, protocol: OAUTH2, preset: github, client_id: abc}
      - {id: corp-saml, protocol: SAML, entity_id: "https://sso.example.com", metadata_url: "https://sso.example.com/md"}
      - {id: slo-saml, protocol: SAML, entity_id: "https://sso.example.com", metadata_url: "https://sso.example.com/md", single_sign_out: true}
      - {id: corp-ldap, protocol: LDAP, url: "ldap://ad.example.com"}
`)
	for _, want := range []string{
		"https://cvat.example.com/.portcullis/oidc/company/callback",
		"https://cvat.example.com/.portcullis/oidc/github/callback",
		"https://cvat.example.com/.portcullis/saml/corp-saml/acs",
		"https://cvat.example.com/.portcullis/saml/corp-saml/metadata",
		"https://cvat.example.com/.portcullis/saml/slo-saml/slo",
		"https://cvat.example.com/.portcullis/ldap/corp-ldap",
		"WARNING: networkPolicy.cvatTraefik.enabled is false",
		"WARNING: networkPolicy.cvatServer.enabled is false",
		// A generated key survives only renders that read the cluster.
		"The session key was generated",
		"Argo CD",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, notes)
		}
	}
	if strings.Contains(notes, "corp-saml/slo") {
		t.Errorf("an entry without single_sign_out has no SLO URL to register:\n%s", notes)
	}
	if strings.Contains(notes, "//.portcullis") {
		t.Errorf("a public_url with a trailing slash must not double it:\n%s", notes)
	}
}

// The values of docs/cvat.md's Helm section render, and the config they give
// passes check with the Secret the guide creates.
func TestHelmGuideValues(t *testing.T) {
	r := render(t, "-f", guideValues(t))
	checkDeployment(t, r, "cvat-sso")
	cfg := checkConfig(t, r, map[string]string{
		"PORTCULLIS_SESSION_KEYS":              "dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE=",
		"PORTCULLIS_IDP_COMPANY_CLIENT_SECRET": "the-client-secret",
	})
	if cfg.Upstream.URL != "http://cvat-traefik.cvat.svc:80" || cfg.Server.PublicURL != "https://cvat.example.com" {
		t.Errorf("the guide's config: upstream %s, public_url %s", cfg.Upstream.URL, cfg.Server.PublicURL)
	}
	if len(r.networkPolicies) != 2 {
		t.Errorf("the guide should turn on both NetworkPolicies (traefik's and CVAT's server's), got %d", len(r.networkPolicies))
	}
	for _, np := range r.networkPolicies {
		if np.Namespace != "cvat" {
			t.Errorf("the guide's NetworkPolicy %s should be in CVAT's namespace, is in %q", np.Name, np.Namespace)
		}
	}
	if len(r.secrets) != 0 {
		t.Error("the guide creates the Secret itself; the chart must not")
	}
}

// guideValues writes the values of docs/cvat.md's Helm section (its yaml block
// that starts with # portcullis-values.yaml) to a file and returns its path.
func guideValues(t *testing.T) string {
	t.Helper()
	guide, err := os.ReadFile("../docs/cvat.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(# portcullis-values.yaml\n.*?)```").FindSubmatch(guide)
	if m == nil {
		t.Fatal("docs/cvat.md has no yaml block starting with # portcullis-values.yaml")
	}
	values := filepath.Join(t.TempDir(), "portcullis-values.yaml")
	if err := os.WriteFile(values, m[1], 0o600); err != nil {
		t.Fatal(err)
	}
	return values
}

// A secret written into values.config would land in the ConfigMap, which
// more people and tools may read than Secrets: the chart refuses it, naming
// the key and never the value, and takes a ${VARIABLE} the Secret sets.
func TestHelmRefusesSecretsInTheConfigMap(t *testing.T) {
	const secret = "hunter2-do-not-print"
	idp := func(extra string) string {
		return "config:\n  sso:\n    identity_providers:\n      - {id: corp, protocol: LDAP, url: \"ldap://ad.example.com\"" + extra + "}\n"
	}
	for _, c := range []struct {
		name, values, key string // key "" means the chart must render it
	}{
		{"a client secret", idp(", client_secret: " + secret), "config.sso.identity_providers[0].client_secret"},
		{"an LDAP bind password", idp(", bind_password: " + secret), "config.sso.identity_providers[0].bind_password"},
		{"a session key", "config:\n  session:\n    keys: [" + secret + "]\n", "config.session.keys[0]"},
		{"a Redis password", "config:\n  session:\n    redis: {password: " + secret + "}\n", "config.session.redis.password"},
		{"a Sentinel password", "config:\n  session:\n    redis: {sentinel: {password: " + secret + "}}\n", "config.session.redis.sentinel.password"},
		{"a password in the Redis URL", "config:\n  session:\n    redis: {url: \"rediss://user:" + secret + "@redis:6379/0\"}\n", "config.session.redis.url"},
		{"the assertion's signing key", "config:\n  attribute_pass:\n    jwt: {signing_key: " + secret + "}\n", "config.attribute_pass.jwt.signing_key"},
		{"a client secret from the environment", idp(", client_secret: \"${CORP_SECRET}\", bind_password: \"${BIND}\""), ""},
		{"session keys from the environment", "config:\n  session:\n    keys: [\"${PORTCULLIS_SESSION_KEY}\"]\n", ""},
		{"a Redis URL from the environment", "config:\n  session:\n    redis: {url: \"${PORTCULLIS_REDIS_URL}\"}\n", ""},
		{"a Redis URL with its password from the environment", "config:\n  session:\n    redis: {url: \"rediss://:${REDIS_PASSWORD}@redis:6379/0\"}\n", ""},
		{"a Redis URL without a password", "config:\n  session:\n    redis: {url: \"redis://redis:6379/0\"}\n", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			values := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(values, []byte(c.values), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := runHelm(t, "template", "x", chartDir, "-f", values)
			switch {
			case c.key == "" && err != nil:
				t.Errorf("want it rendered, got %v", err)
			case c.key != "" && (err == nil || !strings.Contains(err.Error(), c.key)):
				t.Errorf("want an error naming %s, got %v", c.key, err)
			case strings.Contains(out, secret) || (err != nil && strings.Contains(err.Error(), secret)):
				t.Errorf("the secret reached the output or the error")
			}
		})
	}
}

// servesTLS reports why the rendering cannot answer users of an https
// public_url over TLS, or "" when it can: an Ingress with TLS for the host in
// front, or portcullis itself with server.tls, its certificate and key in a
// Secret volume mounted beside (not below) the config's mount, behind a
// Service on 443.
func servesTLS(t *testing.T, m manifests, cfg *proxy.Config) string {
	t.Helper()
	pub, err := url.Parse(cfg.Server.PublicURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, ing := range m.ingresses {
		for _, tls := range ing.Spec.TLS {
			if slices.Contains(tls.Hosts, pub.Hostname()) && tls.SecretName != "" {
				return ""
			}
		}
	}
	if cfg.Server.TLS.CertFile == "" {
		return "neither an Ingress with TLS for " + pub.Hostname() + " nor config.server.tls"
	}
	pod := one(t, "Deployment", m.deployments).Spec.Template.Spec
	c := pod.Containers[0]
	secretVolumes := map[string]bool{}
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			secretVolumes[v.Name] = true
		}
	}
	below := func(path, dir string) bool { return strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/") }
	for _, file := range []string{cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile} {
		mounted := false
		for _, vm := range c.VolumeMounts {
			mounted = mounted || (secretVolumes[vm.Name] && below(file, vm.MountPath))
		}
		if !mounted {
			return file + " is not in a Secret volume the container mounts"
		}
	}
	// A ConfigMap volume is read-only: the runtime cannot make a mount
	// point inside it, and the pod would not start.
	for _, config := range c.VolumeMounts {
		for _, other := range c.VolumeMounts {
			if config.Name == "config" && below(other.MountPath, config.MountPath) {
				return fmt.Sprintf("%s is mounted below the config's read-only mount %s", other.MountPath, config.MountPath)
			}
		}
	}
	for _, svc := range m.services {
		if svc.Spec.Ports[0].Name == "http" && svc.Spec.Ports[0].Port != 443 {
			return fmt.Sprintf("the proxy's Service %s answers TLS on port %d, not 443", svc.Name, svc.Spec.Ports[0].Port)
		}
	}
	return ""
}

// The guide's users open https://cvat.example.com: its values must answer
// that origin over TLS, or the operator is left to switch public_url to
// http:// and send the session cookie in clear text.
func TestHelmGuideValuesServeTheHTTPSOrigin(t *testing.T) {
	r := render(t, "-f", guideValues(t))
	cfg := checkConfig(t, r, map[string]string{
		"PORTCULLIS_SESSION_KEYS":              "dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE=",
		"PORTCULLIS_IDP_COMPANY_CLIENT_SECRET": "the-client-secret",
	})
	if !strings.HasPrefix(cfg.Server.PublicURL, "https://") {
		t.Fatalf("the guide's public_url %s is not https", cfg.Server.PublicURL)
	}
	if why := servesTLS(t, r, cfg); why != "" {
		t.Errorf("users of %s get no TLS: %s", cfg.Server.PublicURL, why)
	}
	// The alternative the guide names: an Ingress with TLS in front.
	ingress := render(t, "--set", "ingress.enabled=true,ingress.tls[0].secretName=cvat-tls,ingress.tls[0].hosts[0]=cvat.example.com")
	if why := servesTLS(t, ingress, checkConfig(t, ingress, podEnv(t, ingress))); why != "" {
		t.Errorf("an Ingress with TLS should count: %s", why)
	}
	plain := render(t)
	if why := servesTLS(t, plain, checkConfig(t, plain, podEnv(t, plain))); why == "" {
		t.Error("the default values serve plain HTTP on port 80: servesTLS must say so")
	}
}

// A PodDisruptionBudget that keeps every replica up lets no pod be evicted:
// a node drain (a cluster upgrade) would wait for ever. The chart refuses it.
func TestHelmPodDisruptionBudgetLeavesAPodEvictable(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"one replica that must stay up", []string{"--set", "podDisruptionBudget.enabled=true"}, false},
		{"two replicas that must both stay up", []string{"--set", "podDisruptionBudget.enabled=true,replicaCount=2,podDisruptionBudget.minAvailable=2"}, false},
		{"the HPA's minimum that must all stay up", []string{"--set", "podDisruptionBudget.enabled=true,autoscaling.enabled=true,autoscaling.minReplicas=2,podDisruptionBudget.minAvailable=2"}, false},
		{"one of two replicas", []string{"--set", "podDisruptionBudget.enabled=true,replicaCount=2"}, true},
		{"a percentage", []string{"--set", "podDisruptionBudget.enabled=true,replicaCount=2,podDisruptionBudget.minAvailable=50%"}, true},
		// Kubernetes rounds a percentage up: half of one replica is that one.
		{"half of one replica", []string{"--set", "podDisruptionBudget.enabled=true,podDisruptionBudget.minAvailable=50%"}, false},
		{"all replicas as a percentage", []string{"--set", "podDisruptionBudget.enabled=true,replicaCount=3,podDisruptionBudget.minAvailable=100%"}, false},
		{"a count written as a string", []string{"--set", "podDisruptionBudget.enabled=true", "--set-string", "podDisruptionBudget.minAvailable=1"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := runHelm(t, append([]string{"template", "x", chartDir}, c.args...)...)
			if c.ok && err != nil {
				t.Errorf("want it rendered, got %v", err)
			}
			// What helm says, after the command line runHelm puts first.
			says := ""
			if err != nil {
				_, says, _ = strings.Cut(err.Error(), "\n")
			}
			if !c.ok && !strings.Contains(says, "podDisruptionBudget.minAvailable") {
				t.Errorf("want an error naming podDisruptionBudget.minAvailable, got %v", err)
			}
		})
	}
}

// renderNotes renders NOTES.txt with values (YAML) and the chart's
// defaults. NOTES.txt is rendered only by install, which wants a cluster; in
// a copy of the chart, a template that wraps NOTES.txt in a YAML string lets
// helm template render it.
func renderNotes(t *testing.T, values string, args ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "portcullis")
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	notesTxt, err := os.ReadFile(filepath.Join(dir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	wrapper := "{{- define \"test.notes\" }}" + string(notesTxt) + "{{- end }}\n" +
		"kind: Notes\ntext: {{ include \"test.notes\" . | toJson }}\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "notes-rendered.yaml"), []byte(wrapper), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(file, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runHelm(t, append([]string{"template", "cvat-sso", dir, "-f", file, "--show-only", "templates/notes-rendered.yaml"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var rendered struct{ Text string }
	if err := yaml.Unmarshal([]byte(out), &rendered); err != nil {
		t.Fatal(err)
	}
	return rendered.Text
}

// Several replicas that each generate a key at start do not agree: a SAML IdP
// checks AuthnRequests (or encrypts assertions) for one replica's key, and
// the upstream verifies the assertion JWT against one replica's JWKS. The
// notes name what to configure.
func TestHelmNotesWarnAboutKeysEachReplicaGenerates(t *testing.T) {
	const values = `
config:
  sso:
    identity_providers:
      - {id: corp-saml, protocol: SAML, entity_id: "https://sso.example.com", metadata_url: "https://sso.example.com/md"}
      - {id: keyed-saml, protocol: SAML, entity_id: "https://sso.example.com", metadata_url: "https://sso.example.com/md", sp_cert_file: /k/c.pem, sp_key_file: /k/k.pem}
  attribute_pass:
    headers: {X-Email: email}
    jwt: {header: X-Portcullis-Assertion}
`
	ha := renderNotes(t, values, "-f", chartDir+"/values-ha.yaml")
	for _, want := range []string{"SAML IdP corp-saml has no sp_cert_file", "attribute_pass.jwt has no signing_key_file"} {
		if !strings.Contains(ha, want) {
			t.Errorf("several replicas: the notes lack %q:\n%s", want, ha)
		}
	}
	if strings.Contains(ha, "SAML IdP keyed-saml") {
		t.Errorf("an IdP with its SP key configured needs no warning:\n%s", ha)
	}
	if one := renderNotes(t, values); strings.Contains(one, "sp_cert_file") || strings.Contains(one, "signing_key_file") {
		t.Errorf("one replica: nothing to warn about:\n%s", one)
	}
}

// graceArg is the --grace the container's serve runs with.
func graceArg(t *testing.T, c *corev1.Container) time.Duration {
	t.Helper()
	i := slices.Index(c.Args, "--grace")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("container args have no --grace: %q", c.Args)
	}
	d, err := time.ParseDuration(c.Args[i+1])
	if err != nil {
		t.Fatalf("--grace %q: %v", c.Args[i+1], err)
	}
	return d
}

// portcullis refuses new connections as soon as it gets SIGTERM, while
// kube-proxy, load balancers and ingress controllers go on sending new ones
// to the pod for a moment after it starts terminating: without a pause
// before SIGTERM, every rollout answers some requests with 502. The pause
// (a preStop sleep; the image has no shell for `sleep`), serve's --grace
// and a margin fit in terminationGracePeriodSeconds, after which the
// kubelet kills.
func TestHelmPodKeepsServingWhileItLeavesTheEndpoints(t *testing.T) {
	for _, c := range []struct {
		name        string
		args        []string
		sleep       int64 // 0: no preStop
		graceSecond int64
	}{
		{"a cluster with the preStop sleep action", []string{"--kube-version", "1.31.0"}, 5, 30},
		{"a longer sleep leaves less grace", []string{"--kube-version", "1.31.0", "--set", "preStopSleepSeconds=10"}, 10, 25},
		{"no sleep when turned off", []string{"--kube-version", "1.31.0", "--set", "preStopSleepSeconds=0"}, 0, 35},
		{"no sleep before Kubernetes 1.30, which lacks the action", []string{"--kube-version", "1.29.4"}, 0, 35},
	} {
		t.Run(c.name, func(t *testing.T) {
			pod := one(t, "Deployment", render(t, c.args...).deployments).Spec.Template.Spec
			ctr := &pod.Containers[0]
			var sleep int64
			if l := ctr.Lifecycle; l != nil && l.PreStop != nil {
				if l.PreStop.Sleep == nil || l.PreStop.Exec != nil || l.PreStop.HTTPGet != nil || l.PreStop.TCPSocket != nil {
					t.Fatalf("preStop must be a sleep action (distroless has no shell): %+v", l.PreStop)
				}
				sleep = l.PreStop.Sleep.Seconds
			}
			if sleep != c.sleep {
				t.Errorf("preStop sleep: got %d s, want %d s", sleep, c.sleep)
			}
			grace := graceArg(t, ctr)
			if grace != time.Duration(c.graceSecond)*time.Second {
				t.Errorf("--grace: got %s, want %ds", grace, c.graceSecond)
			}
			if pod.TerminationGracePeriodSeconds == nil || time.Duration(*pod.TerminationGracePeriodSeconds-sleep)*time.Second < grace+5*time.Second {
				t.Errorf("terminationGracePeriodSeconds %v leaves no margin after a %d s sleep and --grace %s", pod.TerminationGracePeriodSeconds, sleep, grace)
			}
		})
	}
	if _, err := runHelm(t, "template", "x", chartDir, "--kube-version", "1.31.0", "--set", "terminationGracePeriodSeconds=10,preStopSleepSeconds=5"); err == nil || !strings.Contains(err.Error(), "terminationGracePeriodSeconds") {
		t.Errorf("a grace period the sleep uses up should be refused naming terminationGracePeriodSeconds, got %v", err)
	}
}

// Behind a LoadBalancer Service with Kubernetes' default external traffic
// policy (Cluster), a node forwards with its own address as the source:
// portcullis would log every user as a node, match `sources` rules against
// nodes, and count LDAP's failed logins per address for everybody behind one
// node together. The guide's Service keeps the client's address (Local); a
// ClusterIP Service has no external traffic policy, and Kubernetes refuses one.
func TestHelmServiceKeepsTheClientAddress(t *testing.T) {
	r := render(t, "-f", guideValues(t))
	var proxySvc *corev1.Service
	for i := range r.services {
		if r.services[i].Spec.Ports[0].Name == "http" {
			proxySvc = &r.services[i]
		}
	}
	if proxySvc == nil {
		t.Fatal("no Service for the proxy's http port")
	}
	if proxySvc.Spec.Type == corev1.ServiceTypeLoadBalancer && proxySvc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("the guide's LoadBalancer Service %s has externalTrafficPolicy %q: portcullis sees a node's address instead of the client's", proxySvc.Name, proxySvc.Spec.ExternalTrafficPolicy)
	}
	for _, svc := range render(t).services {
		if svc.Spec.ExternalTrafficPolicy != "" {
			t.Errorf("the default ClusterIP Service %s must set no externalTrafficPolicy, has %q", svc.Name, svc.Spec.ExternalTrafficPolicy)
		}
	}
	if _, err := runHelm(t, "template", "x", chartDir, "--set", "service.externalTrafficPolicy=Local"); err == nil || !strings.Contains(err.Error(), "service.externalTrafficPolicy") {
		t.Errorf("a ClusterIP Service with an external traffic policy should be refused naming service.externalTrafficPolicy, got %v", err)
	}
}

// dns1035Label is what Kubernetes takes as a Service's name.
var dns1035Label = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)

// Helm takes release names of up to 53 characters; the chart's names must
// still be ones Kubernetes takes, and the test pod and the notes must name
// the admin Service it really has.
func TestHelmNamesFitTheLongestReleaseName(t *testing.T) {
	release := strings.Repeat("r", 53)
	out, err := runHelm(t, "template", release, chartDir)
	if err != nil {
		t.Fatal(err)
	}
	var admin string
	seen := map[string]bool{}
	for _, doc := range docSeparator.Split(out, -1) {
		var obj struct {
			Kind     string            `json:"kind"`
			Metadata metav1.ObjectMeta `json:"metadata"`
			Spec     corev1.ServiceSpec
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil || obj.Kind == "" {
			continue
		}
		if id := obj.Kind + " " + obj.Metadata.Name; seen[id] {
			t.Errorf("two objects are %s", id)
		} else {
			seen[id] = true
		}
		if len(obj.Metadata.Name) > 253 {
			t.Errorf("%s %s: name longer than 253 characters", obj.Kind, obj.Metadata.Name)
		}
		if obj.Kind == "Service" {
			if len(obj.Metadata.Name) > 63 || !dns1035Label.MatchString(obj.Metadata.Name) {
				t.Errorf("Service %q (%d characters) is no DNS-1035 label of at most 63", obj.Metadata.Name, len(obj.Metadata.Name))
			}
			if obj.Metadata.Labels["app.kubernetes.io/component"] == "admin" {
				admin = obj.Metadata.Name
			}
		}
		for k, v := range obj.Metadata.Labels {
			if len(v) > 63 {
				t.Errorf("%s %s: label %s is longer than 63 characters", obj.Kind, obj.Metadata.Name, k)
			}
		}
	}
	if admin == "" {
		t.Fatal("no admin Service")
	}
	if !strings.Contains(out, "http://"+admin+":9773/healthz") {
		t.Errorf("the helm test pod does not fetch /healthz from the admin Service %s", admin)
	}
	if notes := renderNotes(t, "{}"); !strings.Contains(notes, "svc/cvat-sso-portcullis-admin ") {
		t.Errorf("the notes port-forward another Service than the admin one:\n%s", notes)
	}
}

// Private keys reach the pod in Secret volumes (server.tls, a SAML IdP's
// sp_key_file, the assertion's signing_key_file), often with a mode that
// only their owner reads (defaultMode: 0400), and the kubelet makes them
// root's: portcullis, running as 65532, could not read them and would not
// start. With the pod's fsGroup set to the group portcullis runs as, the
// kubelet gives those files that group and adds its read bit.
func TestHelmPodReadsKeysFromSecretVolumes(t *testing.T) {
	for _, args := range [][]string{nil, {"-f", chartDir + "/values-ha.yaml"}, {"-f", guideValues(t)}} {
		psc := one(t, "Deployment", render(t, args...).deployments).Spec.Template.Spec.SecurityContext
		if psc == nil || psc.FSGroup == nil || psc.RunAsGroup == nil || *psc.FSGroup != *psc.RunAsGroup {
			t.Errorf("values %v: the pod's fsGroup must be the group portcullis runs as, got %+v", args, psc)
		}
	}
}

// A value is data, never YAML: a newline or a quote in a string value, by
// mistake or from whoever fills in values through a form or a pipeline,
// stays in that value (and fails where Kubernetes checks it) instead of
// adding fields next to it, such as hostNetwork or hostPID to the pod, a
// defaultBackend to the Ingress or a namespace to a NetworkPolicy.
func TestHelmStringValuesStayValues(t *testing.T) {
	for _, c := range []struct {
		name, values, want string
		got                func(m manifests) string
	}{
		{"priorityClassName", "priorityClassName: \"x\\n      hostNetwork: true\"\n",
			"x\n      hostNetwork: true",
			func(m manifests) string { return m.deployments[0].Spec.Template.Spec.PriorityClassName }},
		{"image.repository", "image: {repository: \"evil\\\"\\n          stdin: true\\n          workingDir: \\\"/\", tag: \"1\"}\n",
			"evil\"\n          stdin: true\n          workingDir: \"/:1",
			func(m manifests) string { return m.deployments[0].Spec.Template.Spec.Containers[0].Image }},
		{"ingress.className", "ingress: {enabled: true, className: \"nginx\\n  defaultBackend: {service: {name: evil, port: {number: 80}}}\"}\n",
			"nginx\n  defaultBackend: {service: {name: evil, port: {number: 80}}}",
			func(m manifests) string { return *m.ingresses[0].Spec.IngressClassName }},
		{"an ingress path", "ingress: {enabled: true, hosts: [{host: cvat.example.com, paths: [{path: \"/\\n            pathType: Exact\\n            x: 1\", pathType: Prefix}]}]}\n",
			"/\n            pathType: Exact\n            x: 1",
			func(m manifests) string { return m.ingresses[0].Spec.Rules[0].HTTP.Paths[0].Path }},
		{"networkPolicy.cvatTraefik.namespace", "networkPolicy: {cvatTraefik: {enabled: true, namespace: \"cvat\\n  annotations: {a: b}\"}}\n",
			"cvat\n  annotations: {a: b}",
			func(m manifests) string { return m.networkPolicies[0].Namespace }},
		{"networkPolicy.cvatServer.namespace", "networkPolicy: {cvatServer: {enabled: true, namespace: \"cvat\\n  annotations: {a: b}\"}}\n",
			"cvat\n  annotations: {a: b}",
			func(m manifests) string { return m.networkPolicies[0].Namespace }},
		{"serviceMonitor.interval", "serviceMonitor: {enabled: true, interval: \"30s\\n      scheme: http\"}\n",
			"30s\n      scheme: http",
			func(m manifests) string { return m.serviceMonitors[0].Spec.Endpoints[0].Interval }},
		{"tests.image", "tests: {image: \"busybox\\n      command: [sh, -c, id]\"}\n",
			"busybox\n      command: [sh, -c, id]",
			func(m manifests) string { return m.pods[0].Spec.Containers[0].Image }},
	} {
		t.Run(c.name, func(t *testing.T) {
			values := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(values, []byte(c.values), 0o600); err != nil {
				t.Fatal(err)
			}
			m := render(t, "-f", values)
			if got := c.got(m); got != c.want {
				t.Errorf("rendered as %q, want the whole value %q: the rest became YAML of its own", got, c.want)
			}
		})
	}
}
