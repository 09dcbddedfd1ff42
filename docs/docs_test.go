package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/portcullis-proxy/portcullis/proxy"
	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// guideEnv stands in for what the guides' examples take from the environment.
var guideEnv = map[string]string{
	"PUBLIC_URL":             "https://cvat.example.com",
	"CVAT_PUBLIC_URL":        "https://cvat.example.com",
	"OIDC_ISSUER":            "https://login.example.com/",
	"PORTCULLIS_SESSION_KEY": "dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE=",
}

// guideFiles writes the files the guides' examples name (check loads them,
// as a start would) and returns what puts the test's copies in their place.
func guideFiles(t *testing.T) *strings.Replacer {
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "saml-sp.crt"), filepath.Join(dir, "saml-sp.key")
	testcert.New(t, "portcullis-saml-sp", time.Now().AddDate(10, 0, 0)).Write(t, crt, key)
	return strings.NewReplacer("/etc/portcullis/saml-sp.crt", crt, "/etc/portcullis/saml-sp.key", key)
}

var guideYAML = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// Every portcullis configuration shown on a page of docs/ (a yaml block with
// identity_providers) is one `portcullis check` accepts without a warning. Helm values (a
// top-level `config:`) are rendered and checked by deploy/helm_test.go.
func TestGuideConfigsPassCheck(t *testing.T) {
	pages, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	files := guideFiles(t)
	checked := 0
	for _, page := range pages {
		text, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range guideYAML.FindAllSubmatch(text, -1) {
			block := m[1]
			if !strings.Contains(string(block), "identity_providers:") {
				continue
			}
			var top map[string]any
			if err := yaml.Unmarshal(block, &top); err != nil {
				t.Errorf("%s yaml block %d is not YAML: %v", page, i+1, err)
				continue
			}
			if _, helmValues := top["config"]; helmValues {
				continue
			}
			checked++
			cfg, err := proxy.ParseConfig([]byte(files.Replace(string(block))), func(k string) string { return guideEnv[k] })
			if err == nil {
				err = proxy.Check(cfg)
			}
			if err != nil {
				t.Errorf("portcullis check rejects %s yaml block %d:\n%v\n%s", page, i+1, err, block)
				continue
			}
			// A guide's rules are ones to copy: none admits more than meant.
			if w := proxy.Warnings(cfg); len(w) > 0 {
				t.Errorf("portcullis check warns of %s yaml block %d: %v", page, i+1, w)
			}
		}
	}
	// recipes.md alone has three; a broken pattern must not pass by finding none.
	if checked < 3 {
		t.Errorf("found only %d configurations in docs/*.md", checked)
	}
}

var (
	mdLink  = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	heading = regexp.MustCompile(`(?m)^#+ (.+)$`)
)

// anchor is GitHub's id for a heading: lower case, spaces as '-', and only
// letters, digits, '-' and '_' kept.
func anchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}

// A reader can follow the CVAT guide and the recipes: every relative link
// leads to a file of the repository (the IdP pages among them) and every
// in-page link to a heading.
func TestGuideLinksResolve(t *testing.T) {
	for _, page := range []string{"cvat.md", "recipes.md"} {
		text, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		anchors := map[string]bool{}
		for _, h := range heading.FindAllSubmatch(text, -1) {
			anchors[anchor(string(h[1]))] = true
		}
		for _, m := range mdLink.FindAllSubmatch(text, -1) {
			target := string(m[1])
			switch {
			case strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://"):
			case strings.HasPrefix(target, "#"):
				if !anchors[target[1:]] {
					t.Errorf("%s links to #%s, which is no heading of the page", page, target[1:])
				}
			default:
				path, _, _ := strings.Cut(target, "#")
				if _, err := os.Stat(filepath.Join(filepath.Dir(page), path)); err != nil {
					t.Errorf("%s links to %s, which does not exist", page, target)
				}
			}
		}
	}
}

// The guide names the redirect URI that the CVAT profile's IdP needs.
func TestCVATGuideNamesTheProfilesCallback(t *testing.T) {
	cfg, err := proxy.LoadConfig("../deploy/cvat/portcullis.yaml", func(k string) string { return guideEnv[k] })
	if err != nil {
		t.Fatal(err)
	}
	guide, err := os.ReadFile("cvat.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, ic := range cfg.SSO.IdentityProviders {
		callback := "https://cvat.example.com" + cfg.Server.AuthPrefix + "/oidc/" + ic.ID + "/callback"
		if !strings.Contains(string(guide), callback) {
			t.Errorf("cvat.md does not name %s", callback)
		}
		env := "PORTCULLIS_IDP_" + strings.ToUpper(strings.ReplaceAll(ic.ID, "-", "_")) + "_CLIENT_SECRET"
		if !strings.Contains(string(guide), env) {
			t.Errorf("cvat.md does not say how to set %s", env)
		}
	}
}
