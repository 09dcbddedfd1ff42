package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The sso block of every IdP page (docs/idp/examples) and of the LDAP page
// (docs/ldap) works as the chart's config.sso, as docs/cvat.md tells Helm
// users to take it: the values schema accepts it (a preset entry names no
// protocol), the rendered config passes check with its secrets from the
// Secret, and the install notes print what to register for it.
func TestHelmTakesEveryDocumentedIdPBlock(t *testing.T) {
	var examples []string
	for _, pattern := range []string{"../docs/idp/examples/*.yaml", "../docs/ldap/*.yaml"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		examples = append(examples, files...)
	}
	if len(examples) < 12 {
		t.Fatalf("found only %d documented examples", len(examples))
	}
	for _, example := range examples {
		t.Run(filepath.Base(example), func(t *testing.T) {
			raw, err := os.ReadFile(example)
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				SSO struct {
					IdentityProviders []map[string]any `json:"identity_providers"`
				} `json:"sso"`
			}
			if err := yaml.Unmarshal(raw, &doc); err != nil {
				t.Fatal(err)
			}
			env := map[string]string{"PORTCULLIS_SESSION_KEYS": "dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE="}
			var ids []string
			for _, ic := range doc.SSO.IdentityProviders {
				// Secrets go into the Secret, as the chart requires.
				delete(ic, "client_secret")
				delete(ic, "bind_password")
				id := ic["id"].(string)
				ids = append(ids, id)
				prefix := "PORTCULLIS_IDP_" + strings.ToUpper(strings.ReplaceAll(id, "-", "_"))
				env[prefix+"_CLIENT_SECRET"] = "the-client-secret"
				env[prefix+"_BIND_PASSWORD"] = "the-bind-password"
			}
			values, err := yaml.Marshal(map[string]any{
				"secret": map[string]any{"existingSecret": "cvat-sso"},
				"config": map[string]any{"sso": map[string]any{"identity_providers": doc.SSO.IdentityProviders}},
			})
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(file, values, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := checkConfig(t, render(t, "-f", file), env)
			notes := renderNotes(t, string(values))
			for i, ic := range cfg.SSO.IdentityProviders {
				resolved, err := ic.WithPreset()
				if err != nil {
					t.Fatal(err)
				}
				want := "https://cvat.example.com/.portcullis/oidc/" + ids[i] + "/callback"
				if resolved.Protocol == "LDAP" {
					want = "https://cvat.example.com/.portcullis/ldap/" + ids[i]
				}
				if !strings.Contains(notes, want) {
					t.Errorf("the install notes do not name %s for %s:\n%s", want, ids[i], notes)
				}
				backchannel := strings.Contains(notes, "/oidc/"+ids[i]+"/backchannel-logout")
				if backchannel != (resolved.Protocol == "OIDC") {
					t.Errorf("%s speaks %s, and the notes name a back-channel logout URI: %v", ids[i], resolved.Protocol, backchannel)
				}
			}
		})
	}
}
