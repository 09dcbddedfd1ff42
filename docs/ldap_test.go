package docs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/proxy"
)

// TestLDAPPageExamples checks that each example of ldap.md (ldap/*.yaml) is
// one `portcullis check` accepts without a warning and appears on the page verbatim.
func TestLDAPPageExamples(t *testing.T) {
	page, err := os.ReadFile("ldap.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range yamlBlock.FindAllSubmatch(page, -1) {
		blocks = append(blocks, string(m[1]))
	}
	for _, name := range []string{"active-directory", "freeipa"} {
		t.Run(name, func(t *testing.T) {
			example := filepath.Join("ldap", name+".yaml")
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
			file, err := os.ReadFile(example)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, b := range blocks {
				found = found || b == string(file)
			}
			if !found {
				t.Errorf("ldap.md has no yaml block that is %s verbatim", example)
			}
			if ic := cfg.SSO.IdentityProviders[0]; !strings.Contains(string(page), "PORTCULLIS_IDP_"+strings.ToUpper(ic.ID)+"_BIND_PASSWORD") {
				t.Errorf("ldap.md does not name the bind password's environment variable for %s", ic.ID)
			}
		})
	}
}
