package docs

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy"
)

// What the second column of migrating.md's tables may name, each checked
// against what portcullis has: a key path (from the top, or from an
// identity provider entry), with or without `: value`; an endpoint as
// `METHOD /path`; a command as `portcullis VERB`; an environment variable.
var (
	tableKey      = regexp.MustCompile(`^([a-z_]+(?:\[\])?(?:\.[a-z_]+(?:\[\])?)*)(?:: .+)?$`)
	tableEndpoint = regexp.MustCompile(`^(GET|POST) (/\S*)$`)
	tableCommand  = regexp.MustCompile(`^portcullis ([a-z]+)(?: ([a-z]+))?$`)
	tableEnv      = regexp.MustCompile(`^PORTCULLIS_[A-Z_]+$`)
	codeSpan      = regexp.MustCompile("`([^`]+)`")
)

// Every name the migration page gives as portcullis's equivalent of an
// oauth2-proxy or Datawiza option is one portcullis has: a key renamed in
// the code (or misspelt on the page) is no path of proxy.Config or of an
// idp.Config entry; an environment variable changes what the page's example
// loads into; an endpoint is answered by a proxy built from that example,
// and not with the catch-all 404; a command is one of the usage text.
func TestMigratingTablesNameWhatExists(t *testing.T) {
	page, err := os.ReadFile("migrating.md")
	if err != nil {
		t.Fatal(err)
	}
	example := guideYAML.FindSubmatch(page)
	if example == nil || !strings.Contains(string(example[1]), "identity_providers:") {
		t.Fatal("migrating.md has no portcullis configuration for its worked example")
	}
	load := func(env map[string]string) *proxy.Config {
		t.Helper()
		cfg, err := proxy.ParseConfig(example[1], func(k string) string {
			if v, ok := env[k]; ok {
				return v
			}
			return guideEnv[k]
		})
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfg := load(nil)
	if err := proxy.Check(cfg); err != nil {
		t.Fatalf("portcullis check rejects the worked example: %v", err)
	}

	top, entry := map[string]bool{}, map[string]bool{}
	configPaths(reflect.TypeFor[proxy.Config](), "", top, map[string]bool{})
	configPaths(reflect.TypeFor[idp.Config](), "", entry, map[string]bool{})

	// The proxy the endpoints are asked of: the example's, with its
	// sessions in cookies, as the endpoints do not depend on the store.
	served := load(nil)
	served.Session.Store = "cookie"
	h, err := proxy.New(t.Context(), served, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}

	mainGo, err := os.ReadFile("../cmd/portcullis/main.go")
	if err != nil {
		t.Fatal(err)
	}
	// The usage text `portcullis -h` prints: "  portcullis VERB" and, for
	// sessions, "list|revoke".
	commands := map[string][]string{}
	for _, m := range regexp.MustCompile(`(?m)^  portcullis (\w+) *([a-z|]*)`).FindAllSubmatch(mainGo, -1) {
		commands[string(m[1])] = strings.Split(string(m[2]), "|")
	}

	counted := map[string]int{}
	for n, line := range strings.Split(string(page), "\n") {
		cells := strings.Split(line, "|")
		if !strings.HasPrefix(line, "|") || len(cells) < 4 {
			continue
		}
		for _, m := range codeSpan.FindAllStringSubmatch(cells[2], -1) {
			name := m[1]
			where := fmt.Sprintf("migrating.md:%d: `%s`", n+1, name)
			switch {
			case tableEnv.MatchString(name):
				counted["env"]++
				if reflect.DeepEqual(load(map[string]string{name: "migrating-test-value"}), cfg) {
					t.Errorf("%s: the configuration does not read this variable", where)
				}
			case tableEndpoint.MatchString(name):
				counted["endpoint"]++
				e := tableEndpoint.FindStringSubmatch(name)
				path := strings.ReplaceAll(e[2], "{idp}", served.SSO.IdentityProviders[0].ID)
				target := http.Handler(h)
				if !strings.HasPrefix(path, served.Server.AuthPrefix+"/") {
					target = h.Admin()
				}
				r := httptest.NewRequest(e[1], served.Server.PublicURL+path, nil)
				r.Header.Set("Accept", "application/json")
				w := httptest.NewRecorder()
				target.ServeHTTP(w, r)
				if w.Code == http.StatusNotFound || w.Code == http.StatusMethodNotAllowed {
					t.Errorf("%s: portcullis answers %d %s", where, w.Code, strings.TrimSpace(w.Body.String()))
				}
			case tableCommand.MatchString(name):
				counted["command"]++
				c := tableCommand.FindStringSubmatch(name)
				subs, ok := commands[c[1]]
				if !ok || c[2] != "" && !slices.Contains(subs, c[2]) {
					t.Errorf("%s: the usage text has no such command", where)
				}
			case tableKey.MatchString(name):
				counted["key"]++
				keys := strings.Split(strings.ReplaceAll(tableKey.FindStringSubmatch(name)[1], "[]", ""), ".")
				if !isKeyPath(top, keys) && !isKeyPath(entry, keys) {
					t.Errorf("%s is no key path of the configuration, nor of an identity provider entry", where)
				}
			default:
				t.Errorf("%s is neither a key path, an endpoint, a command nor an environment variable", where)
			}
		}
	}
	t.Logf("checked %v", counted)
	// The tables name 70 keys; a pattern that stopped finding them
	// must not pass by checking none.
	if counted["key"] < 60 || counted["endpoint"] < 8 || counted["env"] < 3 || counted["command"] < 2 {
		t.Errorf("checked only %v: do the patterns still find the tables' names?", counted)
	}
}

// isKeyPath reports whether keys, from the root, are a path of paths (as
// configPaths records them, a map's keys as "*").
func isKeyPath(paths map[string]bool, keys []string) bool {
	for i := range keys {
		if paths[strings.Join(keys[:i], ".")+".*"] {
			return true
		}
	}
	return paths[strings.Join(keys, ".")]
}
