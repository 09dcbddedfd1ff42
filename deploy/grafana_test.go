package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy"
	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/testcert"
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
	return metricNames(metricsPage(t))
}

// metricNames are the metric names a /metrics page lists.
func metricNames(page string) map[string]bool {
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

// tlsMetricsPage is what the admin listener of a proxy serving TLS (with
// `portcullis serve`'s Serve) lists: the certificate's expiry besides the rest.
func tlsMetricsPage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	testcert.New(t, "127.0.0.1", time.Now().Add(30*24*time.Hour)).Write(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	admin := fmt.Sprintf("127.0.0.1:%d", process.FreePort(t))
	yaml := strings.Replace(dashboardConfig, "server: {", fmt.Sprintf(
		"server: {listen: \"127.0.0.1:%d\", admin_listen: %q, tls: {cert_file: %q, key_file: %q}, ",
		process.FreePort(t), admin, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")), 1)
	cfg, err := proxy.ParseConfig([]byte(yaml), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- proxy.Serve(ctx, cfg, slog.New(slog.DiscardHandler), time.Second) }()
	defer func() { cancel(); <-done }()
	for {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err == nil {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			return string(body)
		}
		select {
		case err := <-done:
			t.Fatalf("serve with TLS ended: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
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
	for name := range metricNames(tlsMetricsPage(t)) {
		exposed[name] = true // the certificate's expiry: only with server.tls
	}
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

// dashboardPanel is what TestGrafanaQueriesMeanWhatTheyShow reads of a panel.
type dashboardPanel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
		Overrides []struct {
			Matcher struct {
				ID      string `json:"id"`
				Options string `json:"options"`
			} `json:"matcher"`
			Properties []struct {
				ID    string `json:"id"`
				Value any    `json:"value"`
			} `json:"properties"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
	Options struct {
		TextMode string `json:"textMode"`
	} `json:"options"`
	Targets []struct {
		RefID        string `json:"refId"`
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
}

// unit is the unit Grafana shows the target refID's series in: an override
// by query, else the panel's.
func (p dashboardPanel) unit(refID string) string {
	for _, o := range p.FieldConfig.Overrides {
		if o.Matcher.ID == "byFrameRefID" && o.Matcher.Options == refID {
			for _, prop := range o.Properties {
				if prop.ID == "unit" {
					return fmt.Sprint(prop.Value)
				}
			}
		}
	}
	return p.FieldConfig.Defaults.Unit
}

var (
	// outerGrouping is an expression's outermost aggregation: what labels
	// its series keep (none without by).
	outerGrouping = regexp.MustCompile(`^(histogram_quantile\([0-9.]+, )?(?:[0-9.]+ \* )?(?:sum|max|min|avg|count)(?: by \(([^)]*)\))? ?\(`)
	legendLabel   = regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`)
	quantileOf    = regexp.MustCompile(`histogram_quantile\([0-9.]+, sum by \(([^)]*)\) \(rate\(([a-z_]+)\{`)
	variableUse   = regexp.MustCompile(`\$\{?(\w+)\}?`)
)

// The dashboard's queries were run by hand against a real Prometheus (1 s
// scrapes) of a proxy under a known workload; what such a run showed wrong
// and the JSON alone can tell is held here: histogram_quantile over
// buckets summed by le, no increase over a window that changes with the
// zoom, legends naming labels the query keeps, the unit of what is
// charted, and the version shown by its name.
func TestGrafanaQueriesMeanWhatTheyShow(t *testing.T) {
	raw, err := os.ReadFile("grafana/portcullis.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []dashboardPanel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
	for _, v := range dash.Templating.List {
		defined[v.Name] = true
	}
	for _, p := range dash.Panels {
		for _, q := range p.Targets {
			where := fmt.Sprintf("panel %q query %s", p.Title, q.RefID)
			for _, m := range variableUse.FindAllStringSubmatch(q.Expr, -1) {
				if !defined[m[1]] {
					t.Errorf("%s uses $%s, which the dashboard does not define", where, m[1])
				}
			}
			if strings.Contains(q.Expr, "histogram_quantile(") {
				m := quantileOf.FindStringSubmatch(q.Expr)
				if m == nil || !slices.Contains(strings.Split(strings.ReplaceAll(m[1], " ", ""), ","), "le") {
					t.Errorf("%s: histogram_quantile needs the buckets' rates summed by le (and what the legend names): %s", where, q.Expr)
				} else if strings.HasSuffix(m[2], "_seconds_bucket") && p.unit(q.RefID) != "s" {
					t.Errorf("%s: a quantile of %s is in seconds, the panel says %q", where, m[2], p.unit(q.RefID))
				}
			}
			// A count over $__rate_interval, drawn at every $__interval,
			// counts each event in several points, as many as the zoom
			// makes (4 at a 1 s step in the lab).
			if regexp.MustCompile(`increase\([^\[]*\[\$__(rate_)?interval\]`).MatchString(q.Expr) {
				t.Errorf("%s: increase over $__rate_interval counts an event at several points, more the closer the zoom; chart rate (× 60 for per minute): %s", where, q.Expr)
			}
			switch unit := p.unit(q.RefID); {
			case strings.Contains(q.Expr, "_bytes") && unit != "bytes":
				t.Errorf("%s charts bytes in unit %q", where, unit)
			case strings.Contains(q.Expr, ") / ") && unit != "percentunit":
				t.Errorf("%s charts a ratio (0 to 1) in unit %q, want percentunit", where, unit)
			case strings.HasPrefix(q.Expr, "60 * ") && unit != "opm":
				t.Errorf("%s charts a rate per minute in unit %q, want opm", where, unit)
			}
			if labels := legendLabel.FindAllStringSubmatch(q.LegendFormat, -1); len(labels) > 0 {
				m := outerGrouping.FindStringSubmatch(q.Expr)
				if m == nil {
					t.Errorf("%s: the test cannot tell what labels %q keeps for its legend %q", where, q.Expr, q.LegendFormat)
					continue
				}
				kept := strings.Split(strings.ReplaceAll(m[2], " ", ""), ",")
				for _, l := range labels {
					if !slices.Contains(kept, l[1]) || (m[1] != "" && l[1] == "le") {
						t.Errorf("%s: the legend names {{%s}}, which the query's series do not have (by %q)", where, l[1], m[2])
					}
				}
			}
			if p.Type == "stat" && strings.Contains(q.Expr, "build_info") && p.Options.TextMode != "name" {
				t.Errorf("panel %q shows build_info's value, always 1; textMode name shows the version", p.Title)
			}
		}
	}
}
