package deploy

import (
	"net/netip"
	"testing"

	"github.com/portcullis-proxy/portcullis/proxy"
)

// The CVAT profile's decisions, as `portcullis explain` shows them: what
// passes untouched, what needs a session, and what CVAT receives.
func TestCVATProfileDecisions(t *testing.T) {
	cfg, err := proxy.LoadConfig("cvat/portcullis.yaml", func(k string) string { return exampleEnv[k] })
	if err != nil {
		t.Fatal(err)
	}
	// The claims the IdP sends, read through the profile's claim mapping.
	annotator := map[string]any{"sub": "1", "email": "ann@example.com", "groups": []any{"annotators"}}
	admin := map[string]any{"sub": "2", "email": "root@example.com", "groups": []any{"cvat-admins", "cvat-workers"}}
	worker := map[string]any{"sub": "3", "email": "w@example.com", "groups": []any{"cvat-workers"}}
	for _, c := range []struct {
		name, method, target string
		headers              map[string]string
		claims               map[string]any
		decision             string
		groups               string // X-Groups CVAT gets, when authenticated
	}{
		{"the SDK's token passes untouched", "GET", "/api/tasks", map[string]string{"Authorization": "Token abc"}, nil, "bypass", ""},
		{"the CLI's basic auth passes untouched", "POST", "/api/tasks", map[string]string{"Authorization": "Basic dTpw"}, nil, "bypass", ""},
		{"an access token passes untouched", "GET", "/api/projects", map[string]string{"Authorization": "Bearer xyz"}, nil, "bypass", ""},
		{"a token outside /api/ needs a session", "GET", "/admin/", map[string]string{"Authorization": "Token abc"}, nil, "unauthorized", ""},
		{"an unknown scheme needs a session", "GET", "/api/tasks", map[string]string{"Authorization": "Digest x"}, nil, "unauthorized", ""},
		{"the health check is public", "GET", "/api/server/health/?format=json", nil, nil, "bypass", ""},
		{"the health check is public for HEAD", "HEAD", "/api/server/health/", nil, nil, "bypass", ""},
		{"a write to the health path needs a session", "POST", "/api/server/health/", nil, nil, "unauthorized", ""},
		{"a path below the health check needs a session", "GET", "/api/server/health/x", nil, nil, "unauthorized", ""},
		{"a signed URL without a session needs one", "GET", "/api/tasks/1/annotations?sign=abc&action=download", nil, nil, "unauthorized", ""},
		{"a page load without a session goes to the IdP", "GET", "/tasks", map[string]string{"Accept": "text/html"}, nil, "redirect", ""},
		{"the UI's XHR without a session gets 401", "GET", "/api/users/self", map[string]string{"Accept": "application/json", "X-Requested-With": "XMLHttpRequest"}, nil, "unauthorized", ""},
		{"a signed URL with a session reaches CVAT", "GET", "/api/tasks/1/annotations?sign=abc", nil, annotator, "authenticated", "user"},
		{"a user without CVAT groups is a user", "GET", "/api/tasks", nil, annotator, "authenticated", "user"},
		{"the highest role wins", "GET", "/api/tasks", nil, admin, "authenticated", "admin"},
		{"a worker is a worker", "GET", "/api/jobs", nil, worker, "authenticated", "worker"},
		{"Django's admin is for CVAT admins", "GET", "/admin/", nil, admin, "authenticated", "admin"},
		{"Django's admin refuses others", "GET", "/admin/", nil, worker, "forbidden", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var lines []string
			for k, v := range c.headers {
				lines = append(lines, k+": "+v)
			}
			r, err := proxy.ExplainRequest(cfg, c.method, "https://cvat.example.com"+c.target, lines)
			if err != nil {
				t.Fatal(err)
			}
			e, err := proxy.Explain(cfg, r, netip.MustParseAddr("203.0.113.7"), c.claims, "company")
			if err != nil {
				t.Fatal(err)
			}
			if e.Decision != c.decision {
				t.Fatalf("decision %s (rule %s: %s), want %s", e.Decision, e.Rule, e.Reason, c.decision)
			}
			if c.decision == "authenticated" {
				if e.Headers["X-Email"] != c.claims["email"] || e.Headers["X-Groups"] != c.groups {
					t.Errorf("CVAT gets X-Email %q X-Groups %q, want %q %q", e.Headers["X-Email"], e.Headers["X-Groups"], c.claims["email"], c.groups)
				}
			}
		})
	}
}
