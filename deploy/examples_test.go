// Package deploy holds the deployment files (compose, Helm values, example
// configurations); its test checks that every example configuration is one
// `portcullis check` accepts.
package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/proxy"
)

// exampleEnv stands in for the secrets and URLs the examples take from the
// environment.
var exampleEnv = map[string]string{
	"CVAT_PUBLIC_URL":        "https://cvat.example.com",
	"PORTCULLIS_SESSION_KEY": "dGVzdC1zZXNzaW9uLWtleS0zMi1ieXRlcy1sb25nISE=",
	"OIDC_ISSUER":            "https://login.example.com/",
}

func TestExampleConfigsPassCheck(t *testing.T) {
	files, err := filepath.Glob("*/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var configs []string
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), "identity_providers:") {
			configs = append(configs, f)
		}
	}
	if len(configs) == 0 {
		t.Fatal("no example configurations found")
	}
	for _, f := range configs {
		t.Run(f, func(t *testing.T) {
			cfg, err := proxy.LoadConfig(f, func(k string) string { return exampleEnv[k] })
			if err == nil {
				err = proxy.Check(cfg)
			}
			if err != nil {
				t.Fatalf("portcullis check %s:\n%v", f, err)
			}
			if w := proxy.Warnings(cfg); len(w) > 0 {
				t.Errorf("portcullis check %s warns: %v", f, w)
			}
		})
	}
}
