package rolemap

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/portcullis-proxy/portcullis/idp"
)

// cvatYAML is the role mapping of the CVAT deployment, as a user writes it.
const cvatYAML = `
roles: [admin, business, user, worker]
default: user
rules:
  - role: admin
    when: '"cvat-admins" in groups'
  - role: business
    when: email endsWith "@company.com" && email_verified
  - role: worker
    when: claims.department == "annotation"
  - role: admin
    when: claims.org?.name == "root"
`

func compileYAML(t *testing.T, src string, edit func(*Config)) *Mapper {
	t.Helper()
	var c Config
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatalf("decode config: %v", err)
	}
	if edit != nil {
		edit(&c)
	}
	m, err := Compile(c)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return m
}

func TestMapCVAT(t *testing.T) {
	tests := []struct {
		name      string
		profile   idp.Profile
		allRoles  bool // highest_only: false
		wantRoles []string
	}{
		{
			name:      "member of cvat-admins is admin",
			profile:   idp.Profile{Groups: []string{"staff", "cvat-admins"}},
			wantRoles: []string{"admin"},
		},
		{
			name:      "verified company email is business",
			profile:   idp.Profile{Email: "ann@company.com", EmailVerified: true},
			wantRoles: []string{"business"},
		},
		{
			name:      "unverified company email gets the default role",
			profile:   idp.Profile{Email: "ann@company.com"},
			wantRoles: []string{"user"},
		},
		{
			name:      "admin with company email keeps only the highest role",
			profile:   idp.Profile{Email: "ann@company.com", EmailVerified: true, Groups: []string{"cvat-admins"}},
			wantRoles: []string{"admin"},
		},
		{
			name:      "without highest_only every matching role is kept in priority order",
			profile:   idp.Profile{Email: "ann@company.com", EmailVerified: true, Groups: []string{"cvat-admins"}, Claims: map[string]any{"department": "annotation"}},
			allRoles:  true,
			wantRoles: []string{"admin", "business", "worker"},
		},
		{
			name:      "role given by two rules appears once",
			profile:   idp.Profile{Groups: []string{"cvat-admins"}, Claims: map[string]any{"org": map[string]any{"name": "root"}}},
			allRoles:  true,
			wantRoles: []string{"admin"},
		},
		{
			name:      "claims-based rule gives worker",
			profile:   idp.Profile{Claims: map[string]any{"department": "annotation"}},
			wantRoles: []string{"worker"},
		},
		{
			name:      "nested claim read with ?. gives admin",
			profile:   idp.Profile{Claims: map[string]any{"org": map[string]any{"name": "root"}}},
			wantRoles: []string{"admin"},
		},
		{
			name:      "user no rule matches gets the default role",
			profile:   idp.Profile{Email: "bob@example.org", Groups: []string{"staff"}},
			wantRoles: []string{"user"},
		},
		{
			name:      "profile with no groups and no claims gets the default role",
			profile:   idp.Profile{Sub: "123"},
			wantRoles: []string{"user"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := compileYAML(t, cvatYAML, func(c *Config) {
				if tt.allRoles {
					c.HighestOnly = new(bool)
				}
			})
			got, err := m.Map(&tt.profile)
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			if !slices.Equal(got, tt.wantRoles) {
				t.Errorf("Map = %q, want %q", got, tt.wantRoles)
			}
		})
	}
}

func TestMapRefusalAndRuntimeErrors(t *testing.T) {
	tests := []struct {
		name      string
		config    string
		profile   idp.Profile
		wantRoles []string
		wantErr   []string // substrings; ErrNoRole is checked with errors.Is
	}{
		{
			name:    "no matching rule and no default refuses the login",
			config:  "roles: [admin]\nrules: [{role: admin, when: '\"x\" in groups'}]",
			profile: idp.Profile{Groups: []string{"y"}},
			wantErr: []string{"no role"},
		},
		{
			name:      "rule failing at run time counts as not matching",
			config:    "roles: [admin, user]\ndefault: user\nrules: [{role: admin, when: 'claims.org.name == \"root\"'}]",
			profile:   idp.Profile{},
			wantRoles: []string{"user"},
		},
		{
			name:      "rule failing at run time does not hide a later match",
			config:    "roles: [admin, user]\nrules: [{role: admin, when: 'claims.org.name == \"root\"'}, {role: user, when: 'sub != \"\"'}]",
			profile:   idp.Profile{Sub: "1"},
			wantRoles: []string{"user"},
		},
		{
			name:    "refusal reports the runtime error with the rule's key",
			config:  "roles: [admin]\nrules: [{role: admin, when: 'claims.org.name == \"root\"'}]",
			profile: idp.Profile{},
			wantErr: []string{"no role", "rules[0].when: cannot fetch name from <nil>"},
		},
		{
			name:      "no roles configured disables mapping",
			config:    "{}",
			profile:   idp.Profile{Groups: []string{"cvat-admins"}},
			wantRoles: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := compileYAML(t, tt.config, nil)
			got, err := m.Map(&tt.profile)
			if len(tt.wantErr) > 0 {
				if !errors.Is(err, ErrNoRole) {
					t.Fatalf("Map error = %v, want ErrNoRole", err)
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("Map error %q does not contain %q", err, want)
					}
				}
				if got != nil {
					t.Errorf("Map roles = %q with an error, want none", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			if !slices.Equal(got, tt.wantRoles) {
				t.Errorf("Map = %q, want %q", got, tt.wantRoles)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name   string
		config Config
		want   []string // every line must appear in the joined error
	}{
		{
			name:   "roles is not visible inside role_mapping",
			config: Config{Roles: []string{"admin"}, Rules: []Rule{{Role: "admin", When: `"x" in groups`}, {Role: "admin", When: `"x" in roles`}}},
			want:   []string{"rules[1].when: unknown name roles (at 1:8)"},
		},
		{
			name:   "misspelt profile field is a compile error",
			config: Config{Roles: []string{"admin"}, Rules: []Rule{{Role: "admin", When: `emial == "a@b.c"`}}},
			want:   []string{"rules[0].when: unknown name emial"},
		},
		{
			name:   "expression that is not a bool is refused",
			config: Config{Roles: []string{"admin"}, Rules: []Rule{{Role: "admin", When: `email`}}},
			want:   []string{"rules[0].when: expected bool, but got string"},
		},
		{
			name:   "syntax error is refused",
			config: Config{Roles: []string{"admin"}, Rules: []Rule{{Role: "admin", When: `"x" in (groups`}}},
			want:   []string{"rules[0].when: "},
		},
		{
			name:   "empty when is refused",
			config: Config{Roles: []string{"admin"}, Rules: []Rule{{Role: "admin"}}},
			want:   []string{"rules[0].when: required"},
		},
		{
			name:   "default outside roles is refused",
			config: Config{Roles: []string{"admin"}, Default: "x"},
			want:   []string{`default: unknown role "x"`},
		},
		{
			name:   "rule role outside roles is refused",
			config: Config{Roles: []string{"admin"}, Rules: []Rule{{Role: "boss", When: "true"}}},
			want:   []string{`rules[0].role: unknown role "boss"`},
		},
		{
			name:   "rule without a role is refused",
			config: Config{Roles: []string{"admin"}, Rules: []Rule{{When: "true"}}},
			want:   []string{`rules[0].role: required`},
		},
		{
			name:   "duplicate role is refused",
			config: Config{Roles: []string{"admin", "user", "admin"}},
			want:   []string{`roles: duplicate role "admin" (roles[0] and roles[2])`},
		},
		{
			name:   "empty role name is refused",
			config: Config{Roles: []string{"admin", ""}},
			want:   []string{`roles[1]: empty role name`},
		},
		{
			name:   "rules without roles are refused",
			config: Config{Rules: []Rule{{Role: "admin", When: "true"}}},
			want:   []string{`roles: required when default or rules are set`},
		},
		{
			name:   "a default without roles is refused: mapping would be off and the default never given",
			config: Config{Default: "user"},
			want:   []string{`roles: required when default or rules are set`},
		},
		{
			name: "every problem is reported at once",
			config: Config{Roles: []string{"admin", "admin"}, Default: "x", Rules: []Rule{
				{Role: "boss", When: "true"}, {Role: "admin", When: `"x" in roles`},
			}},
			want: []string{`roles: duplicate role "admin"`, `default: unknown role "x"`, `rules[0].role: unknown role "boss"`, `rules[1].when: unknown name roles`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Compile(tt.config)
			if err == nil {
				t.Fatalf("Compile succeeded, want errors %q", tt.want)
			}
			if m != nil {
				t.Errorf("Compile returned a mapper with an error")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("Compile error has %d lines, want %d: %q", len(lines), len(tt.want), err)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Compile error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestHighestOnlyDefaultsToTrue(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"highest_only absent keeps one role", "", []string{"admin"}},
		{"highest_only true keeps one role", "highest_only: true\n", []string{"admin"}},
		{"highest_only false keeps every role", "highest_only: false\n", []string{"admin", "user"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := compileYAML(t, tt.yaml+"roles: [admin, user]\nrules: [{role: user, when: 'true'}, {role: admin, when: 'true'}]", nil)
			got, err := m.Map(&idp.Profile{})
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Map = %q, want %q", got, tt.want)
			}
		})
	}
}
