package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// pod is a pod as a NetworkPolicy sees it: its namespace and labels.
type pod struct {
	namespace string
	labels    map[string]string
}

// The pods of the guide's cluster: portcullis's release cvat-sso in namespace
// cvat-sso (render's), CVAT's chart as release cvat in namespace cvat, with
// the labels CVAT's chart and its traefik subchart give them: read from
// cvat-ai/cvat helm-chart 2.56.1's templates/cvat_backend/server,
// worker_export, cvat_frontend and cvat_opa deployment.yml (rendered; the
// app.kubernetes.io/version, managed-by and helm.sh/chart labels left out)
// and traefik-helm-chart's templates/_helpers.tpl (traefik.labelselector).
var (
	portcullisPod = pod{"cvat-sso", map[string]string{"app.kubernetes.io/name": "portcullis", "app.kubernetes.io/instance": "cvat-sso"}}
	traefikPod    = pod{"cvat", map[string]string{"app.kubernetes.io/name": "traefik", "app.kubernetes.io/instance": "cvat-cvat"}}
	cvatServerPod = pod{"cvat", map[string]string{"app": "cvat-app", "tier": "backend", "component": "server", "app.kubernetes.io/name": "cvat", "app.kubernetes.io/instance": "cvat"}}
	cvatOPAPod    = pod{"cvat", map[string]string{"app": "cvat-app", "tier": "opa", "app.kubernetes.io/name": "cvat", "app.kubernetes.io/instance": "cvat"}}
	cvatWorkerPod = pod{"cvat", map[string]string{"app": "cvat-app", "tier": "backend", "component": "worker-export", "app.kubernetes.io/name": "cvat", "app.kubernetes.io/instance": "cvat"}}
	cvatUIPod     = pod{"cvat", map[string]string{"app": "cvat-app", "tier": "frontend", "app.kubernetes.io/name": "cvat", "app.kubernetes.io/instance": "cvat"}}
	otherAppPod   = pod{"default", map[string]string{"run": "probe"}}
)

// selects reports whether selector matches set; a nil selector matches
// nothing, an empty one everything.
func selects(t *testing.T, selector *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	if selector == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		t.Fatalf("label selector %+v: %v", selector, err)
	}
	return s.Matches(labels.Set(set))
}

// admits evaluates Kubernetes' NetworkPolicy rules for a connection from
// `from` to `to` on any port: a pod no Ingress policy selects takes
// everything; a selected pod takes what one of its policies' rules admits.
// Namespaces carry only their kubernetes.io/metadata.name label.
func admits(t *testing.T, policies []networkingv1.NetworkPolicy, from, to pod) bool {
	t.Helper()
	return admitsOn(t, policies, from, to, "")
}

// admitsOn is admits for a connection to the container port named port;
// "" stands for a rule that names no ports.
func admitsOn(t *testing.T, policies []networkingv1.NetworkPolicy, from, to pod, port string) bool {
	t.Helper()
	isolated := false
	for _, np := range policies {
		if np.Namespace != to.namespace || !selects(t, &np.Spec.PodSelector, to.labels) {
			continue
		}
		ingress := len(np.Spec.PolicyTypes) == 0
		for _, pt := range np.Spec.PolicyTypes {
			ingress = ingress || pt == networkingv1.PolicyTypeIngress
		}
		if !ingress {
			continue
		}
		isolated = true
		for _, rule := range np.Spec.Ingress {
			if !rulePorts(rule, port) {
				continue
			}
			if len(rule.From) == 0 {
				return true
			}
			for _, peer := range rule.From {
				nsLabels := map[string]string{"kubernetes.io/metadata.name": from.namespace}
				switch {
				case peer.IPBlock != nil:
					// Node or external addresses, never a pod here.
				case peer.NamespaceSelector == nil:
					if from.namespace == np.Namespace && selects(t, peer.PodSelector, from.labels) {
						return true
					}
				case peer.PodSelector == nil:
					if selects(t, peer.NamespaceSelector, nsLabels) {
						return true
					}
				default:
					if selects(t, peer.NamespaceSelector, nsLabels) && selects(t, peer.PodSelector, from.labels) {
						return true
					}
				}
			}
		}
	}
	return !isolated
}

// rulePorts reports whether rule applies to the container port named port.
func rulePorts(rule networkingv1.NetworkPolicyIngressRule, port string) bool {
	if len(rule.Ports) == 0 {
		return true
	}
	for _, p := range rule.Ports {
		if p.Port != nil && p.Port.String() == port {
			return true
		}
	}
	return false
}

// With the guide's values, CVAT is reachable only through portcullis:
// neither traefik nor CVAT's server pods (whose own ClusterIP Service is
// cvat-backend-service:8080) answer another pod that could send its own
// X-Email, while the path portcullis → traefik → server, and CVAT's OPA
// loading its rules from the server, keep working.
func TestHelmGuideValuesLeaveOnlyPortcullisInFrontOfCVAT(t *testing.T) {
	policies := render(t, "-f", guideValues(t)).networkPolicies
	for _, c := range []struct {
		name     string
		from, to pod
		want     bool
	}{
		{"portcullis reaches traefik", portcullisPod, traefikPod, true},
		{"traefik reaches CVAT's server", traefikPod, cvatServerPod, true},
		{"CVAT's OPA loads its rules from the server", cvatOPAPod, cvatServerPod, true},
		{"traefik reaches CVAT's UI", traefikPod, cvatUIPod, true},
		{"CVAT's server asks its OPA", cvatServerPod, cvatOPAPod, true},
		{"another app's pod cannot reach traefik", otherAppPod, traefikPod, false},
		{"another app's pod cannot reach CVAT's server past traefik", otherAppPod, cvatServerPod, false},
		{"a pod in CVAT's namespace cannot reach traefik", cvatWorkerPod, traefikPod, false},
		{"a pod in CVAT's namespace cannot reach the server past traefik", cvatWorkerPod, cvatServerPod, false},
		{"portcullis does not reach the server past traefik", portcullisPod, cvatServerPod, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := admits(t, policies, c.from, c.to); got != c.want {
				t.Errorf("admitted: %v, want %v (policies: %+v)", got, c.want, policies)
			}
		})
	}
}

// Either policy can be turned on alone, and each is off by default.
func TestHelmCVATServerPolicy(t *testing.T) {
	m := render(t, "--set", "networkPolicy.cvatServer.enabled=true")
	np := one(t, "NetworkPolicy", m.networkPolicies)
	if np.Namespace != "cvat-sso" {
		t.Errorf("with no namespace set, the policy goes into the release's namespace, got %q", np.Namespace)
	}
	m = render(t, "--set", "networkPolicy.cvatServer.enabled=true,networkPolicy.cvatTraefik.namespace=cvat")
	if np := one(t, "NetworkPolicy", m.networkPolicies); np.Namespace != "cvat" {
		t.Errorf("the server's policy follows cvatTraefik.namespace, got %q", np.Namespace)
	}
	m = render(t, "--set", "networkPolicy.cvatServer.enabled=true,networkPolicy.cvatServer.namespace=cvat2,networkPolicy.cvatTraefik.namespace=cvat")
	np = one(t, "NetworkPolicy", m.networkPolicies)
	if np.Namespace != "cvat2" {
		t.Errorf("networkPolicy.cvatServer.namespace wins, got %q", np.Namespace)
	}
	if server := (pod{"cvat2", cvatServerPod.labels}); admits(t, m.networkPolicies, pod{"cvat2", otherAppPod.labels}, server) ||
		!admits(t, m.networkPolicies, pod{"cvat2", traefikPod.labels}, server) {
		t.Errorf("the policy should admit traefik's pods and no other to CVAT's server: %+v", np.Spec)
	}
	// An ingress rule with no peers admits every pod: the chart refuses it.
	for _, from := range []string{"null", "{}"} {
		_, err := runHelm(t, "template", "x", chartDir, "--set", "networkPolicy.cvatServer.enabled=true,networkPolicy.cvatServer.from="+from)
		if err == nil || !strings.Contains(err.Error(), "networkPolicy.cvatServer.from") {
			t.Errorf("from=%s: want an error naming networkPolicy.cvatServer.from, got %v", from, err)
		}
	}
}

// The helm test pod (tests.image, busybox by default) is no portcullis pod:
// no selector that stands for portcullis's pods may take it. Otherwise the
// traefik NetworkPolicy admits it to CVAT's traefik, where any X-Email is
// believed, the PodDisruptionBudget and the HPA count it as a replica, and
// the anti-affinity keeps replicas off its node.
func TestHelmTestPodIsNoPortcullisPod(t *testing.T) {
	m := render(t,
		"-f", chartDir+"/values-ha.yaml",
		"--set", "networkPolicy.cvatTraefik.enabled=true,networkPolicy.cvatTraefik.namespace=cvat",
		"--set", "podAntiAffinity=hard",
	)
	d := one(t, "Deployment", m.deployments)
	test := pod{"cvat-sso", one(t, "helm test Pod", m.pods).Labels}
	replica := pod{"cvat-sso", d.Spec.Template.Labels}

	selectors := map[string]*metav1.LabelSelector{"the Deployment's selector": d.Spec.Selector}
	for _, svc := range m.services {
		selectors["Service "+svc.Name] = &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}
	}
	for _, pdb := range m.pdbs {
		selectors["PodDisruptionBudget "+pdb.Name] = pdb.Spec.Selector
	}
	for _, term := range d.Spec.Template.Spec.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
		selectors["the anti-affinity"] = term.LabelSelector
	}
	for what, sel := range selectors {
		if !selects(t, sel, replica.labels) {
			t.Errorf("%s does not select portcullis's pods", what)
		}
		if selects(t, sel, test.labels) {
			t.Errorf("%s selects the helm test pod (labels %v)", what, test.labels)
		}
	}
	if !admits(t, m.networkPolicies, replica, traefikPod) {
		t.Error("portcullis's pods must reach CVAT's traefik")
	}
	if admits(t, m.networkPolicies, test, traefikPod) {
		t.Error("the helm test pod reaches CVAT's traefik")
	}
}

// networkPolicy.portcullis isolates portcullis's own pods: behind an Ingress
// whose controller's pod CIDR is config.server.trusted_proxies (in most
// clusters every pod's), any other pod could otherwise set the X-Forwarded-For
// that `sources` rules, logs and LDAP's limits read, and every pod could
// read /metrics and /readyz. The proxy port takes only `from`, the admin port
// only `adminFrom` and the helm test pod.
func TestHelmPortcullisPolicy(t *testing.T) {
	const values = `
networkPolicy:
  portcullis:
    enabled: true
    from:
      - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}
        podSelector: {matchLabels: {app.kubernetes.io/name: ingress-nginx}}
    adminFrom:
      - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
`
	file := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(file, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	m := render(t, "-f", file)
	// Like the chart's other objects it names no namespace: helm puts it
	// in the release's, render's cvat-sso.
	if np := one(t, "NetworkPolicy", m.networkPolicies); np.Namespace != "" {
		t.Errorf("the policy belongs in the release's namespace, got %q", np.Namespace)
	}
	m.networkPolicies[0].Namespace = "cvat-sso"
	controller := pod{"ingress-nginx", map[string]string{"app.kubernetes.io/name": "ingress-nginx"}}
	prometheus := pod{"monitoring", map[string]string{"app.kubernetes.io/name": "prometheus"}}
	helmTest := pod{"cvat-sso", one(t, "helm test Pod", m.pods).Labels}
	for _, c := range []struct {
		name string
		from pod
		port string
		want bool
	}{
		{"the ingress controller reaches the proxy", controller, "http", true},
		{"the ingress controller does not reach the admin port", controller, "admin", false},
		{"Prometheus scrapes the admin port", prometheus, "admin", true},
		{"Prometheus does not reach the proxy", prometheus, "http", false},
		{"the helm test pod reaches the admin port", helmTest, "admin", true},
		{"another app's pod cannot send its own X-Forwarded-For", otherAppPod, "http", false},
		{"another app's pod cannot read /metrics", otherAppPod, "admin", false},
		{"CVAT's traefik cannot call portcullis", traefikPod, "http", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := admitsOn(t, m.networkPolicies, c.from, portcullisPod, c.port); got != c.want {
				t.Errorf("admitted: %v, want %v (policies: %+v)", got, c.want, m.networkPolicies)
			}
		})
	}
	if len(render(t).networkPolicies) != 0 {
		t.Error("the policy is off by default")
	}
	// A rule with no peers admits every pod: the chart refuses it.
	for _, from := range []string{"null", "{}"} {
		_, err := runHelm(t, "template", "x", chartDir, "--set", "networkPolicy.portcullis.enabled=true,networkPolicy.portcullis.from="+from)
		if err == nil || !strings.Contains(err.Error(), "networkPolicy.portcullis.from") {
			t.Errorf("from=%s: want an error naming networkPolicy.portcullis.from, got %v", from, err)
		}
	}
}
