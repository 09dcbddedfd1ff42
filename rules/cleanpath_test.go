package rules

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestCleanPathRefuses(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
	}{
		{"empty path is refused", "", errNotAbsolute},
		{"relative path is refused", "a/b", errNotAbsolute},
		{"asterisk form is refused", "*", errNotAbsolute},
		{"truncated escape is refused", "/a%2", errBadEscape},
		{"percent at the end is refused", "/a%", errBadEscape},
		{"non-hex escape is refused", "/a%zz", errBadEscape},
		{"encoded slash is refused", "/a%2Fb", errEncodedSlash},
		{"lower-case encoded slash is refused", "/a%2fb", errEncodedSlash},
		{"raw backslash is refused", `/a\b`, errBackslash},
		{"encoded backslash is refused", "/a%5Cb", errBackslash},
		{"lower-case encoded backslash is refused", "/a%5cb", errBackslash},
		{"encoded NUL is refused", "/a%00b", errControl},
		{"raw NUL is refused", "/a\x00b", errControl},
		{"encoded newline is refused", "/a%0Ab", errControl},
		{"raw tab is refused", "/a\tb", errControl},
		{"encoded DEL is refused", "/a%7Fb", errControl},
		{"raw DEL is refused", "/a\x7fb", errControl},
		{"raw semicolon is refused", "/a;jsessionid=1", errSemicolon},
		{"encoded semicolon is refused", "/a%3Bb", errSemicolon},
		{"raw hash is refused", "/a#b", errFragment},
		{"raw question mark is refused", "/a?b=1", errFragment},
		{"overlong dot is refused", "/a/%C0%AE%C0%AE/b", errInvalidUnicode},
		{"overlong slash is refused", "/a%C0%AFb", errInvalidUnicode},
		{"lone continuation byte is refused", "/a%80", errInvalidUnicode},
		{"encoded surrogate is refused", "/%ED%A0%80", errInvalidUnicode},
		{"double-encoded dot is refused", "/a/%252e%252e/b", errDoubleEscape},
		{"double-encoded slash is refused", "/a%252Fb", errDoubleEscape},
		{"percent built from escapes is refused", "/a%25%32%65", errDoubleEscape},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CleanPath(tt.in)
			if err != tt.want {
				t.Fatalf("CleanPath(%q) = %q, %v; want error %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestCleanPathNormalizes(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"root stays root", "/", "/"},
		{"clean path is unchanged", "/api/tasks/1", "/api/tasks/1"},
		{"trailing slash is kept", "/a/b/", "/a/b/"},
		{"runs of slashes collapse", "//a///b//", "/a/b/"},
		{"leading double slash collapses", "//evil.example/x", "/evil.example/x"},
		{"dot segment is removed", "/a/./b", "/a/b"},
		{"trailing dot keeps a trailing slash", "/a/.", "/a/"},
		{"dot-dot removes the previous segment", "/a/b/../c", "/a/c"},
		{"trailing dot-dot names the parent directory", "/a/b/..", "/a/"},
		{"dot-dot never climbs above root", "/..", "/"},
		{"many dot-dots stop at root", "/a/../../../b", "/b"},
		{"dot-dot at root with slash", "/../", "/"},
		{"encoded dots are resolved", "/public/%2e%2E/secret", "/secret"},
		{"encoded single dot is resolved", "/a/%2e/b", "/a/b"},
		{"dots inside a name are not segments", "/a/..b/c.", "/a/..b/c."},
		{"three dots are a name", "/a/.../b", "/a/.../b"},
		{"escapes are decoded", "/a%20b/%41", "/a b/A"},
		{"encoded question mark is a literal", "/a%3Fb", "/a?b"},
		{"encoded hash is a literal", "/a%23b", "/a#b"},
		{"lone encoded percent is a literal", "/100%25", "/100%"},
		{"encoded percent not followed by hex is a literal", "/50%25off", "/50%off"},
		{"valid UTF-8 is decoded", "/caf%C3%A9", "/café"},
		{"raw UTF-8 is kept", "/café", "/café"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CleanPath(tt.in)
			if err != nil || got != tt.want {
				t.Fatalf("CleanPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestBypassAttempts sends the classic path confusion attacks through the
// same steps as the proxy (request line parsed by net/http, EscapedPath,
// CleanPath, Match) against a bypass rule for /public/: each must be refused
// or land on a path that the bypass rule does not cover.
func TestBypassAttempts(t *testing.T) {
	set := mustCompile(t, []Config{
		{Name: "public", PathPrefix: "/public/", Action: Bypass},
	}, Authenticate)
	targets := map[string]string{
		"dot-dot after the prefix":                "/public/../secret",
		"encoded dot-dot after the prefix":        "/public/%2e%2e/secret",
		"upper-case encoded dot-dot":              "/public/%2E%2E/secret",
		"mixed encoded dot-dot":                   "/public/.%2e/secret",
		"encoded slashes around dot-dot":          "/public%2F..%2Fsecret",
		"tomcat path parameter":                   "/public/..;/secret",
		"backslash after dot-dot":                 "/public/..%5Csecret",
		"raw backslash after dot-dot":             `/public/..\secret`,
		"double slash before the prefix":          "//public/../secret",
		"double-encoded dot-dot":                  "/public/%252e%252e/secret",
		"overlong encoded dot-dot":                "/public/%C0%AE%C0%AE/secret",
		"absolute-form target with dot-dot":       "http://example.com/public/../secret",
		"absolute-form target with encoded dots":  "http://example.com/public/%2e%2e/secret",
		"dot-dot with trailing slash":             "/public/../secret/",
		"nested dot-dot":                          "/public/a/../../secret",
		"dot segment then dot-dot":                "/public/./../secret",
		"semicolon inside the prefix":             "/public;x=1/../secret",
		"encoded NUL truncation":                  "/public/%00/../../secret",
		"prefix without its slash then dot-dot":   "/public/..",
		"encoded dot-dot at the end of the path":  "/public/%2e%2e",
		"encoded dot-dot then slash":              "/public/%2e%2e/",
		"encoded single dots walking back around": "/public/%2e/%2e%2e/secret",
	}
	for name, target := range targets {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest("GET", target, nil)
			p, err := CleanPath(r.URL.EscapedPath())
			if err != nil {
				return // refused: the proxy answers 400
			}
			rule := set.Match(NewRequest(r, p, netip.MustParseAddr("192.0.2.1")))
			if rule.Action == Bypass {
				t.Fatalf("%q normalized to %q and matched bypass rule %q", target, p, rule.Name)
			}
		})
	}
}
