package docs

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/portcullis-proxy/portcullis/idp"
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
// as a start would) and returns what puts the test's copies in their place,
// and a session key in the place of the README's placeholder for one.
func guideFiles(t *testing.T) *strings.Replacer {
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "saml-sp.crt"), filepath.Join(dir, "saml-sp.key")
	testcert.New(t, "portcullis-saml-sp", time.Now().AddDate(10, 0, 0)).Write(t, crt, key)
	pages := filepath.Join(dir, "pages")
	if err := os.Mkdir(pages, 0o755); err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(
		"/etc/portcullis/saml-sp.crt", crt, "/etc/portcullis/saml-sp.key", key,
		// Any certificate and P-256 key do for these.
		"/etc/portcullis/tls/tls.crt", crt, "/etc/portcullis/tls/tls.key", key,
		"/etc/portcullis/redis-ca.crt", crt, "/etc/portcullis/assertion.pem", key,
		"/etc/portcullis/pages", pages,
		`"<base64 32 bytes>"`, `"`+guideEnv["PORTCULLIS_SESSION_KEY"]+`"`)
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

// Every yaml block of the README, SECURITY.md and docs/ that is
// portcullis configuration passes `portcullis check` without a warning:
// whole configurations (those of docs/*.md are also TestGuideConfigsPassCheck's,
// the IdP pages' first TestIdPPagesHaveCheckedExamples'), and the pieces
// shown beside them (a `session:` or `rules:` block, an IdP entry, keys of
// one), which are checked in the page's first whole configuration
// (deploy/cvat/portcullis.yaml for a page without one) as a reader would
// paste them there: a key misspelt in a piece is an unknown key (a piece
// none of whose keys is one is taken for another file's). Blocks of other
// files (Helm values, CVAT's chart) are left to deploy/'s tests.
func TestEveryConfigBlockPassesCheck(t *testing.T) {
	pages := userPages(t)
	profile, err := os.ReadFile("../deploy/cvat/portcullis.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files := guideFiles(t)
	top, entry := yamlKeys(reflect.TypeFor[proxy.Config]()), yamlKeys(reflect.TypeFor[idp.Config]())
	checked := map[string]int{}
	for _, page := range pages {
		text, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		var base map[string]any
		for i, m := range guideYAML.FindAllSubmatch(text, -1) {
			block := []byte(files.Replace(string(m[1])))
			where := fmt.Sprintf("%s yaml block %d", page, i+1)
			var doc any
			if err := yaml.Unmarshal(block, &doc); err != nil {
				t.Errorf("%s is not YAML: %v", where, err)
				continue
			}
			config, kind := configOf(doc, base, top, entry)
			if kind == "" {
				continue // not portcullis configuration
			}
			if kind == "whole" && base == nil {
				base = config
			}
			if config == nil { // a piece before any whole configuration
				var profileDoc map[string]any
				if err := yaml.Unmarshal(profile, &profileDoc); err != nil {
					t.Fatal(err)
				}
				config, _ = configOf(doc, profileDoc, top, entry)
			}
			checked[kind]++
			merged, err := yaml.Marshal(config)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := proxy.ParseConfig(merged, func(k string) string { return guideEnv[k] })
			if err == nil {
				err = proxy.Check(cfg)
			}
			if err != nil {
				t.Errorf("portcullis check rejects %s (a %s):\n%v\n%s", where, kind, err, m[1])
				continue
			}
			if w := proxy.Warnings(cfg); len(w) > 0 {
				t.Errorf("portcullis check warns of %s (a %s): %v", where, kind, w)
			}
		}
	}
	// The README alone shows a whole configuration and two pieces; the
	// guides at least an IdP entry, keys of one and a rules block.
	if checked["whole"] < 10 || checked["piece"] < 3 || checked["IdP entry"] < 1 || checked["piece of an IdP entry"] < 1 {
		t.Errorf("checked only %v: does guideYAML still find the blocks?", checked)
	}
}

// configOf is the configuration that the yaml block doc gives and the kind
// of block it is: a whole configuration (with identity providers); a piece
// of one (top-level keys), merged into base; an IdP entry, or a list of
// them, put into base's in place of the entry with its id, or after them;
// or keys of an entry, merged into base's first. Another document gives
// kind "", and a piece when base is nil gives a nil configuration.
func configOf(doc any, base map[string]any, top, entry map[string]bool) (map[string]any, string) {
	switch d := doc.(type) {
	case map[string]any:
		switch {
		case hasAnyKey(d, top):
			if sso, ok := d["sso"].(map[string]any); ok && sso["identity_providers"] != nil {
				return d, "whole"
			}
			if base == nil {
				return nil, "piece"
			}
			return merge(clone(base), d), "piece"
		case hasAnyKey(d, entry):
			if base == nil {
				return nil, "piece of an IdP entry"
			}
			c := clone(base)
			idps := c["sso"].(map[string]any)["identity_providers"].([]any)
			idps[0] = merge(idps[0].(map[string]any), d)
			return c, "piece of an IdP entry"
		}
	case []any:
		for _, e := range d {
			if m, ok := e.(map[string]any); !ok || !hasAnyKey(m, entry) {
				return nil, ""
			}
		}
		if base == nil {
			return nil, "IdP entry"
		}
		c := clone(base)
		sso := c["sso"].(map[string]any)
		idps := sso["identity_providers"].([]any)
	entries:
		for _, e := range d {
			for i, have := range idps {
				if have.(map[string]any)["id"] == e.(map[string]any)["id"] {
					idps[i] = e
					continue entries
				}
			}
			idps = append(idps, e)
		}
		sso["identity_providers"] = idps
		return c, "IdP entry"
	}
	return nil, ""
}

// yamlKeys are the keys a mapping decoded into struct type t takes.
func yamlKeys(t reflect.Type) map[string]bool {
	keys := map[string]bool{}
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			keys[name] = true
		}
	}
	return keys
}

func hasAnyKey(m map[string]any, keys map[string]bool) bool {
	for k := range m {
		if keys[k] {
			return true
		}
	}
	return false
}

// merge puts the keys of piece into into, mappings key by key and anything
// else (a list, a value) whole, and returns into.
func merge(into, piece map[string]any) map[string]any {
	for k, v := range piece {
		sub, isMap := v.(map[string]any)
		have, hadMap := into[k].(map[string]any)
		if isMap && hadMap {
			into[k] = merge(have, sub)
		} else {
			into[k] = v
		}
	}
	return into
}

// clone copies the mappings and lists of a decoded YAML document.
func clone[T any](v T) T {
	var out any
	switch x := any(v).(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = clone(e)
		}
		out = m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = clone(e)
		}
		out = l
	default:
		return v
	}
	return out.(T)
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

// A reader can follow the guides: on every page of docs/ (the IdP pages
// among them), every relative link leads to a file of the repository, and
// every link with an anchor, in the page or into another page, to a heading
// there (ldap.md and saml.md link to their own sections by name, and a
// renamed heading would leave those links dead).
func TestGuideLinksResolve(t *testing.T) {
	var pages []string
	for _, pattern := range []string{"*.md", "idp/*.md"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, m...)
	}
	headings := map[string]map[string]bool{}
	anchorsOf := func(page string) map[string]bool {
		if a, ok := headings[page]; ok {
			return a
		}
		text, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		a := map[string]bool{}
		for _, h := range heading.FindAllSubmatch(text, -1) {
			a[anchor(string(h[1]))] = true
		}
		headings[page] = a
		return a
	}
	for _, page := range pages {
		text, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllSubmatch(text, -1) {
			target := string(m[1])
			if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") {
				continue
			}
			path, fragment, _ := strings.Cut(target, "#")
			linked := page
			if path != "" {
				linked = filepath.Join(filepath.Dir(page), path)
				if _, err := os.Stat(linked); err != nil {
					t.Errorf("%s links to %s, which does not exist", page, target)
					continue
				}
			}
			if fragment != "" && strings.HasSuffix(linked, ".md") && !anchorsOf(linked)[fragment] {
				t.Errorf("%s links to %s, and #%s is no heading of %s", page, target, fragment, linked)
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

// The README's quick start runs the CVAT profile as it is, so it says how to
// give each of the profile's IdPs the client ID the IdP assigned: the profile
// writes a placeholder (cvat), and most IdPs (Okta, Entra ID, Google, Auth0,
// Cognito) make up their own, which the IdP refuses on its own error page.
func TestREADMEQuickStartSetsTheProfilesClientID(t *testing.T) {
	cfg, err := proxy.LoadConfig("../deploy/cvat/portcullis.yaml", func(k string) string { return guideEnv[k] })
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, quickStart, _ := strings.Cut(string(readme), "## Quick start")
	quickStart, _, _ = strings.Cut(quickStart, "\n## ")
	for _, ic := range cfg.SSO.IdentityProviders {
		env := "PORTCULLIS_IDP_" + strings.ToUpper(strings.ReplaceAll(ic.ID, "-", "_")) + "_CLIENT_ID"
		if !strings.Contains(quickStart, env) {
			t.Errorf("README's Quick start does not say how to set %s (the profile's client_id is %q)", env, ic.ClientID)
		}
	}
}

// configKeyPath is a key path in backquotes, as the pages write them in
// prose: `session.keys`, `upstream.timeouts.idle`, `role_mapping.rules[].when`.
var configKeyPath = regexp.MustCompile("`([a-z_]+(?:\\[[0-9]*\\])?(?:\\.[a-z_]+(?:\\[[0-9]*\\])?)+)`")

// Every key path the README, SECURITY.md and the guides name in prose is
// one the configuration has: a path whose first key is a configuration key
// with keys under it (server, session, user_search, attribute_mapping…)
// must be a path of proxy.Config from the top or from some key down
// (`user_search.filter` is an IdP entry's), a map's keys being any. A key
// renamed in the code and not on a page, or misspelt on one
// (`session.idle_timout`), fails here; YAML blocks are
// TestEveryConfigBlockPassesCheck's.
func TestConfigKeysInProseExist(t *testing.T) {
	paths, parents := map[string]bool{}, map[string]bool{}
	configPaths(reflect.TypeFor[proxy.Config](), "", paths, parents)
	pages := userPages(t)
	checked := 0
	for _, page := range pages {
		text, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range configKeyPath.FindAllSubmatchIndex(text, -1) {
			path := string(text[m[2]:m[3]])
			keys := strings.Split(listIndex.ReplaceAllString(path, ""), ".")
			if !parents[keys[0]] {
				continue // not a configuration path: a claim, a file name, an expression
			}
			checked++
			if !hasKeyPath(paths, keys) {
				line := 1 + strings.Count(string(text[:m[2]]), "\n")
				t.Errorf("%s:%d names `%s`, which is no key path of the configuration", page, line, path)
			}
		}
	}
	// The README alone names over a hundred.
	if checked < 100 {
		t.Errorf("checked only %d key paths: does configKeyPath still find them?", checked)
	}
}

var listIndex = regexp.MustCompile(`\[[0-9]*\]`)

// configPaths adds to paths every key path of the YAML that decodes into t
// under prefix (a map's keys as "*"), and to parents every key with keys
// under it.
func configPaths(t reflect.Type, prefix string, paths, parents map[string]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Map:
		paths[prefix+".*"] = true
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if opts == "inline" {
				configPaths(f.Type, prefix, paths, parents)
				continue
			}
			if name == "" || name == "-" {
				continue
			}
			p := strings.TrimPrefix(prefix+"."+name, ".")
			paths[p] = true
			ft := f.Type
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct || ft.Kind() == reflect.Map {
				parents[name] = true
			}
			configPaths(f.Type, p, paths, parents)
		}
	}
}

// hasKeyPath reports whether keys are a path of paths from some key down:
// the keys of a path in order, a "*" taking any one and what follows.
func hasKeyPath(paths map[string]bool, keys []string) bool {
	for p := range paths {
		full := strings.Split(p, ".")
	starts:
		for start, k := range full {
			if k == "*" {
				continue
			}
			for j, want := range keys {
				switch {
				case start+j >= len(full):
					continue starts
				case full[start+j] == "*":
					return true
				case full[start+j] != want:
					continue starts
				}
			}
			return true
		}
	}
	return false
}

// userPages are the pages an operator reads configuration from: the README,
// SECURITY.md and the guides.
func userPages(t *testing.T) []string {
	t.Helper()
	var pages []string
	for _, pattern := range []string{"../README.md", "../SECURITY.md", "*.md", "idp/*.md"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, m...)
	}
	return pages
}
