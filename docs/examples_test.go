// Package docs holds the user documentation; its test checks that every
// identity provider page's configuration example is one `portcullis check`
// accepts, and that the page shows exactly the example file.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/proxy"
)

// exampleEnv stands in for what the examples take from the environment.
var exampleEnv = map[string]string{
	"PUBLIC_URL":             "https://cvat.example.com",
	"PORTCULLIS_SESSION_KEY": "dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE=",
}

var yamlBlock = regexp.MustCompile("(?s)```yaml\n(.*?)```")

func TestIdPPagesHaveCheckedExamples(t *testing.T) {
	pages, err := filepath.Glob("idp/*.md")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"auth0", "azure", "cognito", "github", "gitlab", "google", "huggingface", "keycloak", "oidc", "okta"}
	var got []string
	for _, p := range pages {
		got = append(got, strings.TrimSuffix(filepath.Base(p), ".md"))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("pages = %q, want one per preset and generic OIDC: %q", got, want)
	}
	for _, name := range want {
		t.Run(name, func(t *testing.T) {
			example := filepath.Join("idp", "examples", name+".yaml")
			cfg, err := proxy.LoadConfig(example, func(k string) string { return exampleEnv[k] })
			if err == nil {
				err = proxy.Check(cfg)
			}
			if err != nil {
				t.Fatalf("portcullis check %s:\n%v", example, err)
			}
			if w := proxy.Warnings(cfg); len(w) > 0 {
				t.Errorf("portcullis check %s warns: %v", example, w)
			}
			page, err := os.ReadFile(filepath.Join("idp", name+".md"))
			if err != nil {
				t.Fatal(err)
			}
			file, _ := os.ReadFile(example)
			m := yamlBlock.FindSubmatch(page)
			if m == nil || string(m[1]) != string(file) {
				t.Errorf("the first yaml block of idp/%s.md is not %s verbatim", name, example)
			}
			// The page names the exact redirect URI to register.
			ic := cfg.SSO.IdentityProviders[0]
			callback := "https://cvat.example.com/.portcullis/oidc/" + ic.ID + "/callback"
			if !strings.Contains(string(page), callback) {
				t.Errorf("idp/%s.md does not name the callback URL %s", name, callback)
			}
			// The page's preset is the example's.
			if name != "oidc" && ic.Preset != name {
				t.Errorf("example preset = %q, want %q", ic.Preset, name)
			}
			resolved, err := ic.WithPreset()
			if err != nil {
				t.Fatal(err)
			}
			for _, scope := range resolved.Scopes {
				if !strings.Contains(string(page), scope) {
					t.Errorf("idp/%s.md does not mention the scope %s", name, scope)
				}
			}
		})
	}
}
