package deploy

import (
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// cvatChartValues is the part of CVAT's Helm chart values that docs/cvat.md
// sets.
type cvatChartValues struct {
	CVAT struct {
		Backend struct {
			Server struct {
				AdditionalEnv []struct{ Name, Value string } `json:"additionalEnv"`
			} `json:"server"`
		} `json:"backend"`
	} `json:"cvat"`
	Traefik struct {
		Enabled *bool `json:"enabled"`
		Service struct {
			Type string `json:"type"`
		} `json:"service"`
		Ports struct {
			Web struct {
				ForwardedHeaders struct {
					Insecure bool `json:"insecure"`
				} `json:"forwardedHeaders"`
			} `json:"web"`
		} `json:"ports"`
	} `json:"traefik"`
	Ingress struct {
		Enabled  bool   `json:"enabled"`
		Hostname string `json:"hostname"`
	} `json:"ingress"`
}

// The values docs/cvat.md gives CVAT's own chart do what the guide says.
// What CVAT's chart does with them was read from cvat-ai/cvat's helm-chart
// (Chart.yaml 2.56.1) and rendered: values.yaml has traefik.enabled false,
// and without it the traefik subchart renders nothing (no cvat-traefik
// Service for upstream.url, no pods for the NetworkPolicy), while
// templates/ingress.yaml, with no ingressClassName then, is left to whatever
// default ingress controller the cluster has; the Ingress routes only
// ingress.hostname, so that must be the host portcullis sends (public_url's,
// upstream.preserve_host); templates/cvat_backend/server/deployment.yml puts
// cvat.backend.server.additionalEnv on the server container.
func TestGuideValuesForCVATsChart(t *testing.T) {
	guide, err := os.ReadFile("../docs/cvat.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(# cvat-values.yaml\n.*?)```").FindSubmatch(guide)
	if m == nil {
		t.Fatal("docs/cvat.md has no yaml block starting with # cvat-values.yaml")
	}
	var v cvatChartValues
	if err := yaml.UnmarshalStrict(m[1], &v); err != nil {
		t.Fatalf("the guide's values for CVAT's chart: %v", err)
	}
	if v.Traefik.Enabled == nil || !*v.Traefik.Enabled {
		t.Error("traefik.enabled must be true: CVAT's chart leaves its traefik out by default")
	}
	if v.Traefik.Service.Type != "ClusterIP" {
		t.Errorf("traefik.service.type is %q, want ClusterIP", v.Traefik.Service.Type)
	}
	if !v.Traefik.Ports.Web.ForwardedHeaders.Insecure {
		t.Error("traefik.ports.web.forwardedHeaders.insecure must be true, or CVAT sees http and portcullis's address")
	}
	headerAuth := false
	for _, e := range v.CVAT.Backend.Server.AdditionalEnv {
		headerAuth = headerAuth || e.Name == "HEADER_AUTH_ENABLE" && e.Value != ""
	}
	if !headerAuth {
		t.Error("cvat.backend.server.additionalEnv must set HEADER_AUTH_ENABLE (CVAT turns header auth on when it is non-empty)")
	}

	var pv struct {
		Config struct {
			Server struct {
				PublicURL string `json:"public_url"`
			} `json:"server"`
			Upstream struct {
				PreserveHost *bool `json:"preserve_host"`
			} `json:"upstream"`
		} `json:"config"`
	}
	raw, err := os.ReadFile(guideValues(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &pv); err != nil {
		t.Fatal(err)
	}
	if pv.Config.Upstream.PreserveHost != nil && !*pv.Config.Upstream.PreserveHost {
		t.Fatal("the guide's portcullis values turn preserve_host off: traefik would get upstream.url's host")
	}
	public, err := url.Parse(pv.Config.Server.PublicURL)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Ingress.Enabled || v.Ingress.Hostname != public.Hostname() {
		t.Errorf("ingress.enabled %v, ingress.hostname %q: traefik routes only that host, and portcullis sends %q",
			v.Ingress.Enabled, v.Ingress.Hostname, public.Hostname())
	}
}

// With a CVAT NetworkPolicy on, the notes say how to see that its selector
// takes CVAT's pods (one that matches no pod, as the server's default does
// on CVAT charts with one backend Deployment, protects nothing, silently), and
// which host CVAT's chart must route.
func TestHelmNotesShowWhatTheCVATPoliciesSelect(t *testing.T) {
	raw, err := os.ReadFile(guideValues(t))
	if err != nil {
		t.Fatal(err)
	}
	notes := renderNotes(t, string(raw))
	for _, want := range []string{
		"kubectl -n cvat get pods -l app.kubernetes.io/name=traefik",
		"kubectl -n cvat get pods -l app=cvat-app,component=server,tier=backend",
		"kubectl -n cvat get pods -l app=cvat-app,tier=opa",
		"ingress.hostname: cvat.example.com",
		"traefik.enabled: true",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, notes)
		}
	}

	// A selector with expressions reads as kubectl takes it.
	notes = renderNotes(t, `
networkPolicy:
  cvatServer:
    enabled: true
    namespace: cvat
    podSelector:
      matchLabels: {app: cvat-app, component: null, tier: null}
      matchExpressions:
        - {key: tier, operator: In, values: [backend, api]}
        - {key: component, operator: NotIn, values: [worker]}
        - {key: release, operator: Exists}
        - {key: canary, operator: DoesNotExist}
`)
	if want := "kubectl -n cvat get pods -l 'app=cvat-app,tier in (backend,api),component notin (worker),release,!canary'"; !strings.Contains(notes, want) {
		t.Errorf("NOTES.txt lacks %q:\n%s", want, notes)
	}
	if strings.Contains(notes, "only portcullis reaches it") {
		t.Errorf("traefik's policy is off: nothing of it to check:\n%s", notes)
	}
}
