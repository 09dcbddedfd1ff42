package proxy

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
)

// redirectSeeds are the rd values of TestSafeRedirect and the classic
// open-redirect forms.
var redirectSeeds = []string{
	"", "/", "/tasks?id=1", "/tasks#frag", "https://cvat.example.com/tasks", "HTTPS://CVAT.EXAMPLE.COM/x",
	"//evil.com", "///evil.com", "/\\evil.com", "\\\\evil.com", "https:evil.com", "https:/evil.com",
	"http://cvat.example.com/", "https://evil.com", "https://cvat.example.com.evil.com/",
	"https://cvat.example.com@evil.com/", "https://user:pw@cvat.example.com/", "https://evil.com#@cvat.example.com",
	"/\t/evil.com", "/\n/evil.com", " //evil.com", "javascript:alert(1)", "data:text/html,x", "evil.com",
	"https://cvat.example.com//evil.com", "https://cvаt.example.com/", "/%2F%2Fevil.com", "/%5Cevil.com",
	"http://localhost:8080/x", "http://localhost:8080//evil", "https://cvat.example.com:443/x", "/x?rd=//evil.com",
}

// FuzzSafeRedirect checks SPEC invariant 6 on any rd: the result is always an
// absolute URL on public_url's origin, which a browser reads the same way.
func FuzzSafeRedirect(f *testing.F) {
	for _, s := range redirectSeeds {
		f.Add(s, uint8(0))
		f.Add(s, uint8(1))
	}
	origins := []string{"https://cvat.example.com", "http://localhost:8080", "https://[2001:db8::1]:8443"}
	f.Fuzz(func(t *testing.T, rd string, which uint8) {
		origin := origins[int(which)%len(origins)]
		pub, _ := url.Parse(origin)
		c := &compiled{publicURL: pub}
		got := c.safeRedirect(rd)
		if why := offOrigin(pub, got); why != "" {
			t.Fatalf("safeRedirect(%q) = %q: %s", rd, got, why)
		}
		// A plain path on the origin is where the browser goes back to:
		// a function that sent every login home would pass the check above.
		if _, err := url.Parse(rd); err == nil && plainPath.MatchString(rd) && !strings.HasPrefix(rd, "//") && len(rd) <= 4096 {
			if want := origin + rd; got != want {
				t.Fatalf("safeRedirect(%q) = %q, want %q", rd, got, want)
			}
		}
	})
}

// plainPath is a path-absolute reference of RFC 3986's unreserved and
// sub-delimiter characters, percent-escapes, :, @, / and a query: nothing a
// browser reads otherwise than a server does.
var plainPath = regexp.MustCompile(`^/[A-Za-z0-9._~!$&'()*+,;=:@/%?-]*$`)

// offOrigin says how a browser sent to loc, an absolute URL, could leave
// origin's scheme and host (SPEC invariant 6); "" when it cannot.
func offOrigin(origin *url.URL, loc string) string {
	prefix := origin.Scheme + "://" + origin.Host
	if !strings.HasPrefix(loc, prefix+"/") {
		return "not under " + prefix + "/"
	}
	if strings.HasPrefix(loc[len(prefix):], "//") {
		return "its path starts with //, a browser reads another host"
	}
	for i := 0; i < len(loc); i++ {
		if b := loc[i]; b <= ' ' || b >= 0x7f || b == '\\' {
			return fmt.Sprintf("byte %q, which browsers strip or read as /", b)
		}
	}
	u, err := url.Parse(loc)
	if err != nil || u.Scheme != origin.Scheme || u.Host != origin.Host || u.User != nil || u.Opaque != "" {
		return fmt.Sprintf("it parses as another origin (%v)", err)
	}
	return ""
}

// FuzzParseConfig feeds any bytes to the config loader and, when they load,
// to what `portcullis check` does with them: the full check, the warnings
// (printed whether or not the check passes) and, for a config that checks
// clean, the URLs to register at each IdP. None may panic, and a config that
// checks clean has the keys the proxy relies on.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(strings.Replace(testConfig, "UPSTREAM", "http://127.0.0.1:1", 1)))
	f.Add([]byte("server: {public_url: https://x.example}\nupstream: {url: http://u}\n"))
	f.Add([]byte("a: &a [*a]"))
	f.Add([]byte("rules: &r [{name: x, path_prefix: /a, action: bypass}, *r]"))
	f.Add([]byte("server:\n  public_url: ${URL}\n  listen: ${LISTEN}\n"))
	f.Add([]byte("attribute_pass: {headers: {X-Email: 'email +'}, strip_headers: [Host]}"))
	f.Add([]byte("sso: {identity_providers: [{id: a, protocol: SAML}, {id: a, protocol: LDAP}]}"))
	f.Add([]byte("- 1\n- 2"))
	f.Add([]byte("session: {keys: [\"\"], lifetime: -1h}"))
	// ${VAR}s that expand to nothing, whose problems name them
	// (blameEmptyVars), wherever YAML lets one be written.
	f.Add([]byte("server: {public_url: \"${}\", listen: \"${A}${B}\", auth_prefix: \"${A\"}\n${K}: 1\n"))
	f.Add([]byte("session: {keys: [\"${URL}${UNSET}\", ${UNSET}], lifetime: \"${UNSET}\", client_id: ${UNSET}}"))
	f.Add([]byte("session: {keys: ${UNSET}, store: redis, redis: {url: \"redis://${UNSET}\", sentinel: {password: ${UNSET}}}}"))
	f.Add([]byte("sso: {identity_providers: [{id: my-idp, protocol: OIDC, server_url: \"${UNSET}\", client_id: ${UNSET}}, {id: \"${UNSET}\", client_secret: [${UNSET}]}]}"))
	f.Add([]byte("sso: {identity_providers: [&a {id: a, protocol: LDAP, bind_password: ${UNSET}}, *a]}\nrules: [{name: ${UNSET}, path_regex: \"^/${UNSET}/\", action: deny}]"))
	f.Add([]byte("attribute_pass: {headers: {\"${UNSET}\": \"${UNSET}\", ${K}: email}}\nsession: {\"${UNSET}\": 1h}"))
	getenv := func(name string) string {
		switch name {
		case "URL":
			return "https://env.example"
		case "LISTEN":
			return ":1"
		}
		return os.Getenv("PORTCULLIS_FUZZ_" + name)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 64<<10 {
			return
		}
		cfg, err := ParseConfig(raw, getenv)
		if err != nil {
			if cfg != nil {
				t.Fatalf("ParseConfig returned a config with error %v", err)
			}
			return
		}
		err = Check(cfg)
		Warnings(cfg)
		if err != nil {
			return
		}
		if cfg.Server.PublicURL == "" || cfg.Upstream.URL == "" || len(cfg.Session.Keys) == 0 {
			t.Fatalf("config passed Check without public_url, upstream.url or session keys:\n%s", raw)
		}
		Registrations(cfg)
	})
}
