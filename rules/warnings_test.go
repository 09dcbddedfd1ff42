package rules

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestWarningsOfPathRegexRules: a rule shadowed by an earlier one is warned
// of when a path_regex is on either side, where what the regex matches is
// sure without working out regex inclusion: a rule with no path condition
// or path_prefix / first; the same path_regex twice; a path_regex that is a
// literal (a path) or a literal then .* (a prefix), whatever anchors it
// repeats; a later path_regex every match of which starts with an earlier
// prefix. Everything else is not read, and not warned of: a false warning
// would have an operator reorder rules that work.
func TestWarningsOfPathRegexRules(t *testing.T) {
	git := `/repo/[^/]+\.git/(info/refs|git-upload-pack)`
	for _, tc := range []struct {
		name  string
		rules []Config
		want  []string // each rules[i]: the start of its warning
	}{
		// Warned of.
		{"a rule with no path condition takes a path_regex after it", []Config{
			{Name: "everyone", Action: Authenticate},
			{Name: "git", PathRegex: git, Action: Bypass},
		}, []string{"rules[1]: never matches: rules[0] (everyone)"}},
		{"path_prefix / takes a path_regex after it", []Config{
			{Name: "root", PathPrefix: "/", Action: Authenticate},
			{Name: "git", PathRegex: git, Action: Bypass},
		}, []string{"rules[1]: never matches: rules[0] (root)"}},
		{"the same path_regex twice", []Config{
			{Name: "git", PathRegex: git, Action: Authenticate},
			{Name: "git-reads", PathRegex: git, Methods: []string{"GET"}, Action: Bypass},
		}, []string{"rules[1]: never matches: rules[0] (git)"}},
		{"^/api/.* under path_prefix /api/", []Config{
			{Name: "api", PathPrefix: "/api/", Action: Authenticate},
			{Name: "api-any", PathRegex: `^/api/.*`, Action: Bypass},
		}, []string{"rules[1]: never matches: rules[0] (api)"}},
		{`\A/api/v[0-9]+/.*\z under path_prefix /api/`, []Config{
			{Name: "api", PathPrefix: "/api/", Action: Authenticate},
			{Name: "api-versions", PathRegex: `\A/api/v[0-9]+/.*\z`, Action: Deny},
		}, []string{"rules[1]: never matches: rules[0] (api)"}},
		{"a path_regex that is a literal then .* is a prefix", []Config{
			{Name: "api", PathRegex: `/api/.*`, Action: Authenticate},
			{Name: "users", Path: "/api/users", Action: Deny},
			{Name: "admin", PathPrefix: "/api/admin/", Action: Deny},
			{Name: "versions", PathRegex: `^/api/v[0-9]+$`, Action: Deny},
		}, []string{
			"rules[1]: never matches: rules[0] (api)",
			"rules[2]: never matches: rules[0] (api)",
			"rules[3]: never matches: rules[0] (api)",
		}},
		{"and so with . matching line breaks", []Config{
			{Name: "api", PathRegex: `(?s)^/api/.*$`, Action: Authenticate},
			{Name: "users", PathPrefix: "/api/users/", Action: Deny},
		}, []string{"rules[1]: never matches: rules[0] (api)"}},
		{"a path_regex that is a literal is a path", []Config{
			{Name: "health", PathRegex: `^/health$`, Action: Bypass},
			{Name: "health-get", Path: "/health", Methods: []string{"GET"}, Action: Deny},
			{Name: "health-again", PathRegex: `/health`, Action: Deny},
		}, []string{
			"rules[1]: never matches: rules[0] (health)",
			"rules[2]: never matches: rules[0] (health)",
		}},
		{"a path_regex of every path", []Config{
			{Name: "everything", PathRegex: `/.*`, Action: Authenticate},
			{Name: "api", PathPrefix: "/api/", Action: Bypass},
		}, []string{"rules[1]: never matches: rules[0] (everything)"}},
		{"a bypass with a path_regex of every path is public", []Config{
			{Name: "public", PathRegex: `.*`, Action: Bypass},
		}, []string{"rules[0]: bypass on every path"}},

		// Not warned of.
		{"a path_regex that also matches the prefix's parent", []Config{
			{Name: "api", PathPrefix: "/api/", Action: Authenticate},
			{Name: "api-or-root", PathRegex: `/api|/api/.*`, Action: Deny},
		}, nil},
		{"a path_regex that ignores case", []Config{
			{Name: "api", PathPrefix: "/api/", Action: Authenticate},
			{Name: "api-any-case", PathRegex: `(?i)/api/.*`, Action: Deny},
		}, nil},
		{"an earlier path_regex that is no path or prefix", []Config{
			{Name: "api-or-docs", PathRegex: `/(api|docs)/.*`, Action: Authenticate},
			{Name: "users", Path: "/api/users", Action: Deny},
		}, nil},
		{"an earlier literal then .+ leaves the literal itself", []Config{
			{Name: "below-api", PathRegex: `/api/.+`, Action: Authenticate},
			{Name: "api", PathPrefix: "/api/", Action: Deny},
		}, nil},
		{"an earlier path_regex with something after its .*", []Config{
			{Name: "edits", PathRegex: `/api/.*/edit`, Action: Deny},
			{Name: "task-edit", Path: "/api/tasks/edit", Action: Authenticate},
		}, nil},
		{"an earlier path_regex that matches no path", []Config{
			{Name: "nothing", PathRegex: `()`, Action: Deny},
			{Name: "root", Path: "/", Action: Authenticate},
		}, nil},
		{"the same path_regex, the first with headers", []Config{
			{Name: "git-credentials", PathRegex: git, Headers: map[string]string{"Authorization": "^Basic "}, Action: Bypass},
			{Name: "git", PathRegex: git, Action: Authenticate},
		}, nil},
		{"the same path_regex, the first for fewer methods", []Config{
			{Name: "git-writes", PathRegex: git, Methods: []string{"POST"}, Action: Deny},
			{Name: "git", PathRegex: git, Action: Authenticate},
		}, nil},
		{"an exact path leaves a path_regex below it", []Config{
			{Name: "api-root", Path: "/api", Action: Bypass},
			{Name: "api", PathRegex: `/api/.*`, Action: Authenticate},
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustCompile(t, tc.rules, Authenticate)
			var got []string
			for _, w := range s.Warnings() {
				got = append(got, w.Key+": "+w.Message)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("warning %q; want %q...", got[i], tc.want[i])
				}
			}
			checkShadowsHold(t, s)
		})
	}
}

// checkShadowsHold checks each warning of a rule shadowed by another on
// paths made of the rules' own paths, prefixes and regex literals and what
// may follow them: wherever the later rule matches, the earlier one does.
func checkShadowsHold(t *testing.T, s *Set) {
	t.Helper()
	var paths []string
	for _, r := range s.Rules() {
		for _, base := range []string{r.path, r.prefix, r.Config.PathRegex, strings.Trim(r.Config.PathRegex, `^$\Az`)} {
			for _, tail := range []string{"", "/", "x", "/x", "/users", "/v1/", "/x/edit", "/info/refs"} {
				paths = append(paths, base+tail, "/"+base+tail)
			}
		}
	}
	paths = append(paths, "/", "/API/x", "/repo/a.git/info/refs", "/api/v12")
	for i, r := range s.Rules() {
		by := s.shadowing(i)
		if by == nil {
			continue
		}
		for _, p := range paths {
			for _, m := range slices.Concat(r.methods, []string{"GET"}) {
				req := &Request{Method: m, Path: p}
				if l, _ := r.matches(req, s.now()); l {
					if e, _ := by.matches(req, s.now()); !e {
						t.Errorf("%s: rules[%d] matches %s %q, which rules[%d] does not", fmt.Sprint(r.Name), i, m, p, by.Index)
					}
				}
			}
		}
	}
}

// FuzzShadowWarningsHold compiles two rules, each with a path, path_prefix
// or path_regex (by kind, kinds%9) and maybe methods (the first's by
// kinds/9, the second's by get too), and checks that when the second is
// warned of as shadowed by the first, no request the second matches
// escapes the first: among the paths tried are the fuzzer's, and the
// fuzzer's after each rule's own condition, each with GET, POST and HEAD.
func FuzzShadowWarningsHold(f *testing.F) {
	for _, s := range [][2]string{
		{"/api/", `^/api/.*`}, {`/api/.*`, "/api/users"}, {`/.*`, "/x"}, {`.*`, `/a|/b`}, {`^/health$`, "/health"},
		{`(?s)/api/.*`, `\A/api/v[0-9]+/.*\z`}, {`/api/.+`, "/api/"}, {`(?i)/api/.*`, "/API/x"}, {`()`, "/"},
		{`/a\x{D800}.*`, `/a\x{FFFD}`}, {`/a(?m)^.*`, "/a/b"}, {`/é.*`, "/é/x"},
	} {
		for kinds := range uint8(9) {
			f.Add(kinds, s[0], s[1], false, "x")
		}
		for _, methods := range []uint8{1, 2, 4} {
			f.Add(9*methods+7, s[0], s[1], methods == 1, "x") // a prefix, then a regex
		}
	}
	f.Fuzz(func(t *testing.T, kinds uint8, first, second string, get bool, path string) {
		rule := func(name string, kind uint8, cond string) Config {
			c := Config{Name: name, Action: Deny}
			switch kind % 3 {
			case 0:
				c.Path = cond
			case 1:
				c.PathPrefix = cond
			case 2:
				c.PathRegex = cond
			}
			return c
		}
		a, b := rule("a", kinds, first), rule("b", kinds/3, second)
		if get {
			b.Methods = []string{"GET"}
		}
		if methods := kinds / 9; methods&1 != 0 {
			a.Methods = []string{"GET", "HEAD"}
		} else if methods&2 != 0 {
			a.Methods = []string{"POST"}
		} else if methods&4 != 0 {
			b.Methods = append(b.Methods, "POST")
		}
		s, err := Compile([]Config{a, b}, Authenticate, nil)
		if err != nil || s.shadowing(1) == nil {
			return
		}
		lit, _ := regexPaths(second)
		for _, p := range []string{path, "/" + path, first + path, second + path, lit + path} {
			clean, err := CleanPath(escape(p))
			if err != nil {
				continue
			}
			for _, m := range []string{"GET", "POST", "HEAD"} {
				req := &Request{Method: m, Path: clean}
				if ok, _ := s.rules[1].matches(req, s.now()); !ok {
					continue
				}
				if ok, _ := s.rules[0].matches(req, s.now()); !ok {
					t.Fatalf("rules %+v and %+v: the second is warned of as never matching, yet it matches %s %q and the first does not", a, b, m, clean)
				}
			}
		}
	})
}

// TestWarningOfPathRegexWrittenUnanchored: path_regex is anchored at both
// ends, so a regex written for a matcher that finds it anywhere (oauth2-proxy's
// skip_auth_regex = ["^/api/"]) matches one path where it was meant for
// many. check warns where that is sure: the regex is a literal path not
// ended with $, or starts with ^ and has no end: neither $ nor a .* or .+
// that takes whatever follows. A regex that says where it ends, or that is
// no literal and has no ^, is not warned of.
func TestWarningOfPathRegexWrittenUnanchored(t *testing.T) {
	for _, tc := range []struct {
		regex, want string
	}{
		// Warned of.
		{`^/api/`, "rules[0].path_regex: ^/api/ matches only the path /api/ itself: path_regex is anchored at both ends; for every path that starts with it, path_prefix: /api/ (or append .*); for that path alone, path: /api/"},
		{`/api/`, "rules[0].path_regex: /api/ matches only the path /api/ itself"},
		{`/healthz`, "rules[0].path_regex: /healthz matches only the path /healthz itself"},
		{`\A/metrics`, `rules[0].path_regex: \A/metrics matches only the path /metrics itself`},
		{`^/api/v[0-9]+/`, "rules[0].path_regex: ^/api/v[0-9]+/ matches a path only as a whole, none that goes on after it: path_regex is anchored at both ends; for the paths that start with a match, append .*; to say it ends there, end it with $"},
		{`^/(api|static)/`, "rules[0].path_regex: ^/(api|static)/ matches a path only as a whole"},
		{`(?i)^/api/`, "rules[0].path_regex: (?i)^/api/ matches a path only as a whole"},
		{`(?m)^/api/v[0-9]+/`, "rules[0].path_regex: (?m)^/api/v[0-9]+/ matches a path only as a whole"},

		// Not warned of.
		{`^/health$`, ""},
		{`/api/$`, ""},
		{`\A/health\z`, ""},
		{`^/api/.*`, ""},
		{`^/api/.+`, ""},
		{`^/api/(.*)`, ""},
		{`^/api(/.*)?`, ""},
		{`^/(api/.*|docs)`, ""},
		{`/api/.*`, ""},
		{`^/api/[\s\S]*`, ""},
		{`^/api/[\d\D]+`, ""},
		{`^/api/[^\n]*`, ""},
		{`/static/[^/]+\.(js|css)`, ""},
		{`/api|/api/.*`, ""},
		{`()`, ""},
		{`(?m)^/api/$`, ""},
		// Written after a ^ as well, but may mean to end where they end.
		{`^/static/.*\.(js|css)`, ""},
		{`^/api/v1/users/[0-9]+`, ""},
		{`^/health/?`, ""},
		{`^/repo\.git/(info/refs|git-upload-pack)`, ""},
		{`^`, ""},
		{`\A`, ""},
		{`.*`, ""},
	} {
		t.Run(tc.regex, func(t *testing.T) {
			s := mustCompile(t, []Config{{Name: "r", PathRegex: tc.regex, Action: Deny}}, Authenticate)
			var got []string
			for _, w := range s.Warnings() {
				got = append(got, w.Key+": "+w.Message)
			}
			switch {
			case tc.want == "" && len(got) > 0:
				t.Errorf("warnings %q; want none", got)
			case tc.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tc.want)):
				t.Errorf("warnings %q; want one that starts %q", got, tc.want)
			}
			// What the warning says the regex matches is what the rule does.
			if m := regexp.MustCompile(`only the path (\S+) itself`).FindStringSubmatch(tc.want); m != nil {
				for _, p := range []string{m[1], m[1] + "x", m[1] + "/x"} {
					ok, _ := s.rules[0].matches(&Request{Method: "GET", Path: p}, s.now())
					if ok != (p == m[1]) {
						t.Errorf("%s matches %s: %v", tc.regex, p, ok)
					}
				}
			}
		})
	}
}

// FuzzUnanchoredRegexWarningHolds compiles a rule with the fuzzer's
// path_regex and reads its warnings, which must not panic whatever the
// regex (check, serve's start and every reload read them), and when the
// regex is warned of as matching only one path, the rule matches that path
// and neither one that goes on after it nor one under it.
func FuzzUnanchoredRegexWarningHolds(f *testing.F) {
	for _, re := range []string{`^/api/`, `/api/`, `\A/metrics`, `^/api/v[0-9]+/`, `(?i)^/API/`, `^`, `$`, `^$`, `\A`,
		`(?s).*`, `^(|/x)`, `[^/]*`, `^/é`, `^^/a`, `/a^`, `(^/a)`, `^/api/[\s\S]*`, `^/api/[^\n]*`, `^/a(?m)$`,
		`^((((/a))))`, `^/x{2,}`, `^\b/a`, `/api/[a]`, `\/api\/`, `^/static/.*\.(js|css)`, `^/a\x{D800}`} {
		f.Add(re)
	}
	only := regexp.MustCompile(`^\S+ matches only the path (.*) itself: `)
	f.Fuzz(func(t *testing.T, re string) {
		s, err := Compile([]Config{{Name: "r", PathRegex: re, Action: Deny}}, Authenticate, nil)
		if err != nil {
			return
		}
		for _, w := range s.Warnings() {
			m := only.FindStringSubmatch(w.Message)
			if w.Key != "rules[0].path_regex" || m == nil {
				continue
			}
			for _, p := range []string{m[1], m[1] + "x", m[1] + "/x"} {
				if ok, _ := s.rules[0].matches(&Request{Method: "GET", Path: p}, s.now()); ok != (p == m[1]) {
					t.Fatalf("%q is warned of as matching only %q, yet matching %q is %v", re, m[1], p, ok)
				}
			}
		}
	})
}
