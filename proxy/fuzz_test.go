package proxy

import (
	"net/url"
	"os"
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
		if !strings.HasPrefix(got, origin+"/") {
			t.Fatalf("safeRedirect(%q) = %q: not under %s/", rd, got, origin)
		}
		rest := got[len(origin):]
		if strings.HasPrefix(rest, "//") {
			t.Fatalf("safeRedirect(%q) = %q: path starts with //, a browser reads another host", rd, got)
		}
		for i := 0; i < len(got); i++ {
			if b := got[i]; b <= ' ' || b >= 0x7f || b == '\\' {
				t.Fatalf("safeRedirect(%q) = %q: byte %q that browsers strip or read as /", rd, got, b)
			}
		}
		u, err := url.Parse(got)
		if err != nil || u.Scheme != pub.Scheme || u.Host != pub.Host || u.User != nil || u.Opaque != "" {
			t.Fatalf("safeRedirect(%q) = %q: parses as another origin (%v)", rd, got, err)
		}
	})
}

// FuzzParseConfig feeds any bytes to the config loader and, when they load,
// to the full check: neither may panic, and a config that checks clean has
// the keys the proxy relies on.
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
		if Check(cfg) == nil && (cfg.Server.PublicURL == "" || cfg.Upstream.URL == "" || len(cfg.Session.Keys) == 0) {
			t.Fatalf("config passed Check without public_url, upstream.url or session keys:\n%s", raw)
		}
	})
}
