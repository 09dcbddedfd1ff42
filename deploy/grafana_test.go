package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/proxy"
)

// dashboardConfig is the smallest configuration a Handler is built from,
// only to list the metric names its admin listener exposes.
const dashboardConfig = `
server: {public_url: "http://127.0.0.1:1"}
upstream: {url: "http://127.0.0.1:2"}
session: {keys: ["dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE="]}
sso:
  identity_providers:
    - {id: company, protocol: OIDC, server_url: "http://127.0.0.1:3/", client_id: portcullis}
`

// exposedMetrics are the metric names a running proxy's /metrics lists
// (histograms with their _bucket, _sum and _count series).
func exposedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	page := metricsPage(t)
	names := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(page))
	for sc.Scan() {
		// "# TYPE name kind" names families that have no series yet (vectors
		// with no label values seen), which a dashboard may still chart.
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			names[f[2]] = true
			if f[3] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[f[2]+s] = true
				}
			}
		}
	}
	return names
}

// metricsPage is what a running proxy's /metrics serves after one request,
// so that the request series exist too.
func metricsPage(t *testing.T) string {
	t.Helper()
	cfg, err := proxy.ParseConfig([]byte(dashboardConfig), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, err := proxy.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	rec := httptest.NewRecorder()
	h.Admin().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// metricName finds the metric names in a PromQL expression: identifiers
// with the prefixes portcullis exposes.
var metricName = regexp.MustCompile(`\b(?:portcullis|go|process)_[a-zA-Z0-9_:]*`)

func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("grafana/portcullis.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana/portcullis.json is not valid JSON: %v", err)
	}
	exposed := exposedMetrics(t)
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			names := metricName.FindAllString(q.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q uses no portcullis metric", p.Title, q.Expr)
			}
			for _, n := range names {
				used[strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_total")] = true
				if !exposed[n] {
					t.Errorf("panel %q: query uses %s, which /metrics does not expose", p.Title, n)
				}
			}
		}
	}
	// The panels the issue asks for: requests by decision, latency from the
	// histogram, logins by IdP and result, upstream errors, reloads.
	for _, want := range []string{"portcullis_requests", "portcullis_request_duration_seconds", "portcullis_logins",
		"portcullis_upstream_errors", "portcullis_config_reloads"} {
		if !used[want] {
			t.Errorf("no panel charts %s", want)
		}
	}
}
