package deploy

import (
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
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
	business := map[string]any{"sub": "4", "email": "b@example.com", "groups": []any{"cvat-business"}}
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
		{"cvat-business is business (CVAT before 2.22.0 has it)", "GET", "/api/tasks", nil, business, "authenticated", "business"},
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

// cvatRoles are the global roles CVAT has had since 2.22.0, which removed
// business (https://github.com/cvat-ai/cvat/pull/8607, CHANGELOG 2.22.0).
var cvatRoles = []string{"admin", "user", "worker"}

// docs/cvat.md's roles table is the profile's role_mapping: a row for each
// rule's group with its role, and the default for people in none of them.
// A role current CVAT no longer has says which CVAT has it.
func TestCVATGuideRolesTableIsTheProfiles(t *testing.T) {
	cfg, err := proxy.LoadConfig("cvat/portcullis.yaml", func(k string) string { return exampleEnv[k] })
	if err != nil {
		t.Fatal(err)
	}
	guide, err := os.ReadFile("../docs/cvat.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(guide), "| IdP group | CVAT role |\n|---|---|\n")
	if !ok {
		t.Fatal("docs/cvat.md has no | IdP group | CVAT role | table")
	}
	rows := map[string]string{}
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 2 {
			t.Fatalf("roles table row %q does not have two cells", line)
		}
		rows[strings.TrimSpace(cells[0])] = strings.TrimSpace(cells[1])
	}
	check := func(group, role string) {
		cell, ok := rows[group]
		if !ok {
			t.Errorf("the roles table has no row for %s (role %s)", group, role)
			return
		}
		if f := strings.Fields(cell); len(f) == 0 || f[0] != role {
			t.Errorf("the roles table gives %s %q, the profile %s", group, cell, role)
		}
		if !slices.Contains(cvatRoles, role) && !strings.Contains(cell, "before 2.22.0") {
			t.Errorf("the roles table gives %s %q: CVAT 2.22.0 removed %s, and the row should say which CVAT has it (\"before 2.22.0\")", group, cell, role)
		}
	}
	inGroups := regexp.MustCompile(`^"([^"]+)" in groups$`)
	for _, r := range cfg.RoleMapping.Rules {
		m := inGroups.FindStringSubmatch(r.When)
		if m == nil {
			t.Errorf("rule for %s is not one group (%s): the roles table cannot show it", r.Role, r.When)
			continue
		}
		check("`"+m[1]+"`", r.Role)
	}
	check("none of these", cfg.RoleMapping.Default)
	if len(rows) != len(cfg.RoleMapping.Rules)+1 {
		t.Errorf("the roles table has %d rows, the profile %d rules and a default", len(rows), len(cfg.RoleMapping.Rules))
	}
}
