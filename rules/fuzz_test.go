package rules

import (
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// pathSeeds are the inputs of TestBypassAttempts and a few ordinary paths.
var pathSeeds = []string{
	"/", "/api/tasks/1", "/a/b/", "//a///b//", "/a/./b/../c", "/..", "/a/b/..",
	"/public/../secret", "/public/%2e%2e/secret", "/public%2F..%2Fsecret",
	"/public/..;/secret", "/public/..%5Csecret", "//public/../secret",
	"/public/%252e%252e/secret", "/public/%C0%AE%C0%AE/secret", "/a%3Fb%23c",
	"/100%25", "/caf%C3%A9", "/a%20b/.%2E/%2e",
}

// escape is what the proxy sends upstream for a cleaned path.
func escape(p string) string { return (&url.URL{Path: p}).EscapedPath() }

func FuzzCleanPath(f *testing.F) {
	for _, s := range pathSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := CleanPath(in)
		if err != nil {
			if out != "" {
				t.Fatalf("CleanPath(%q) returned %q with error %v", in, out, err)
			}
			return
		}
		if !strings.HasPrefix(out, "/") {
			t.Fatalf("CleanPath(%q) = %q: does not start with /", in, out)
		}
		if strings.Contains(out, "//") {
			t.Fatalf("CleanPath(%q) = %q: contains //", in, out)
		}
		if strings.ContainsRune(out, '\\') {
			t.Fatalf("CleanPath(%q) = %q: contains a backslash", in, out)
		}
		if !utf8.ValidString(out) {
			t.Fatalf("CleanPath(%q) = %q: invalid UTF-8", in, out)
		}
		for _, seg := range strings.Split(out, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("CleanPath(%q) = %q: contains a dot segment", in, out)
			}
		}
		for i := 0; i < len(out); i++ {
			if c := out[i]; c < 0x20 || c == 0x7f || c == ';' {
				t.Fatalf("CleanPath(%q) = %q: contains byte %#x", in, out, c)
			}
		}
		// Same segments as the standard library's lexical cleaning.
		if want := path.Clean(out); strings.TrimSuffix(out, "/") != want && out != "/" {
			t.Fatalf("CleanPath(%q) = %q: path.Clean gives %q", in, out, want)
		}
		// What the rules see is what the client asked for: the decoded
		// path, cleaned as the standard library cleans it, keeping a
		// trailing slash (or the directory a final dot segment names).
		if want := referenceClean(in); out != want {
			t.Fatalf("CleanPath(%q) = %q; decoding and path.Clean give %q", in, out, want)
		}
		// Idempotent over the forwarding round trip ...
		again, err := CleanPath(escape(out))
		if err != nil || again != out {
			t.Fatalf("CleanPath(%q) = %q, but CleanPath(%q) = %q, %v", in, out, escape(out), again, err)
		}
		// ... and the upstream decodes exactly the path the rules saw.
		u, err := url.ParseRequestURI(escape(out))
		if err != nil || u.Path != out {
			t.Fatalf("upstream reads %q as %v, %v; rules saw %q", escape(out), u, err, out)
		}
	})
}

// referenceClean is what CleanPath must make of an escaped path it accepts:
// the path decoded once (url.PathUnescape) and cleaned lexically (path.Clean),
// with a trailing slash where the decoded path ends in /, /. or /.. (but for
// the root itself).
func referenceClean(escaped string) string {
	decoded, err := url.PathUnescape(escaped)
	if err != nil {
		return "(PathUnescape: " + err.Error() + ")"
	}
	clean := path.Clean(decoded)
	last := decoded[strings.LastIndexByte(decoded, '/')+1:]
	if clean != "/" && (last == "" || last == "." || last == "..") {
		clean += "/"
	}
	return clean
}

func FuzzMatch(f *testing.F) {
	set, err := Compile([]Config{
		{Name: "api", PathPrefix: "/api/", Headers: map[string]string{"Authorization": "^(Basic|Token|Bearer) "}, Action: Bypass},
		{Name: "public", PathPrefix: "/public/", Action: Bypass},
		{Name: "admin", PathPrefix: "/admin", Action: Authenticate, AllowIf: `"admin" in roles`},
		{Name: "static", PathRegex: `/static/[^/]+\.(js|css)`, Methods: []string{"GET"}, Action: Bypass},
		{Name: "office", Sources: []string{"10.0.0.0/8", "::ffff:172.16.0.0/108"}, Path: "/metrics", Action: Bypass},
		{Name: "debug", When: `request.headers["X-Debug"] == "1" && request.path contains "dbg"`, Action: Deny},
		{Name: "exact", Path: "/exact/é", Action: Deny},
	}, Authenticate, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range pathSeeds {
		f.Add("GET", s, "Bearer x", "10.1.2.3")
		f.Add("POST", s, "", "::ffff:172.16.0.1")
	}
	// Each rule's own conditions, met and just missed.
	for _, s := range [][4]string{
		{"HEAD", "/static/app.js", "", ""}, {"POST", "/static/app.js", "", ""}, {"GET", "/static/a/b.css", "", ""},
		{"GET", "/metrics", "", "::ffff:172.16.0.1"}, {"GET", "/metrics", "", "172.32.0.1"}, {"GET", "/metrics", "", "fe80::1%eth0"},
		{"GET", "/x/dbg", "1", ""}, {"GET", "/api/dbg", "1", ""}, {"GET", "/exact/%C3%A9", "", ""}, {"GET", "/api/x", "bearer x", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, method, target, authz, source string) {
		r := &http.Request{Method: method, URL: &url.URL{Path: target}, Header: http.Header{}}
		if authz != "" {
			r.Header.Set("Authorization", authz)
			r.Header.Set("X-Debug", authz)
		}
		addr, _ := netip.ParseAddr(source)
		// Match must never panic, even on a path nobody cleaned.
		set.Match(NewRequest(r, target, addr))

		p, err := CleanPath(target)
		if err != nil {
			return
		}
		first := set.Match(NewRequest(r, p, addr))
		p2, err := CleanPath(escape(p))
		if err != nil || p2 != p {
			t.Fatalf("round trip of %q gives %q, %v", p, p2, err)
		}
		if second := set.Match(NewRequest(r, p2, addr)); second != first {
			t.Fatalf("%q matched %q, after the round trip %q matched %q", p, first.Name, p2, second.Name)
		}
		// The rule is the first whose conditions, as the configuration
		// states them, hold: a bypass that matched more would let requests
		// through anonymous, a deny that matched less would let them on.
		if want := matchReference(set.Default().Name, method, p, authz, source); first.Name != want {
			t.Fatalf("%s %q (Authorization %q, source %q) matched %q; its conditions say %q", method, p, authz, source, first.Name, want)
		}
	})
}

var (
	matchAuthorization = regexp.MustCompile(`^(Basic|Token|Bearer) `)
	matchStatic        = regexp.MustCompile(`^/static/[^/]+\.(js|css)$`)
	matchOffice        = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12")}
)

// matchReference is the rule of FuzzMatch's set that matches a request
// with the cleaned path p, read from the set's configuration without the
// matcher: each condition as documented (path_prefix a string prefix,
// path_regex anchored at both ends, methods with HEAD for GET, a header
// pattern on its one value, sources on the plain address, IPv4 for
// ::ffff:-mapped), first match wins, else deflt.
func matchReference(deflt, method, p, authz, source string) string {
	addr, _ := netip.ParseAddr(source)
	addr = addr.Unmap().WithZone("")
	office := addr.IsValid() && slices.ContainsFunc(matchOffice, func(n netip.Prefix) bool { return n.Contains(addr) })
	switch {
	case strings.HasPrefix(p, "/api/") && matchAuthorization.MatchString(authz):
		return "api"
	case strings.HasPrefix(p, "/public/"):
		return "public"
	case strings.HasPrefix(p, "/admin"):
		return "admin"
	case matchStatic.MatchString(p) && (method == "GET" || method == "HEAD"):
		return "static"
	case p == "/metrics" && office:
		return "office"
	case authz == "1" && strings.Contains(p, "dbg"):
		return "debug"
	case p == "/exact/é":
		return "exact"
	}
	return deflt
}
