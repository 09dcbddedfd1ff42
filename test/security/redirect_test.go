package security

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// redirectPayloads generates rd values that try to lead a browser away from
// public_url's origin: scheme tricks, protocol-relative and backslash forms,
// whitespace browsers skip, userinfo, look-alike hosts, encoded and
// double-encoded forms, script schemes and CRLF injection.
func redirectPayloads() []string {
	host := suite.proxy // public_url's host:port
	prefixes := []string{
		"http://", "https://", "HTTP://", "hTtPs://", "//", "///", "////", "/\\", "\\\\", "\\/",
		"/\t/", "/\n/", "/\r\n/", " //", "\t//", "\x00//", "http:", "https:", "http:/", "https:\\\\",
		"http:\\/\\/", "/%2F", "/%5C", "%2F%2F", "/.//", "/./\\", "//\\", "http:/\\/",
	}
	hosts := []string{
		"evil.example", "evil.example/", "evil.example@" + host, host + "@evil.example",
		host + ".evil.example", "evil.example#" + host, "evil.example?" + host, "evil.example\\@" + host,
		"ｅvil.example", "evil。example", "127.0.0.1%00.evil.example", host + "%2F@evil.example",
	}
	var out []string
	for _, p := range prefixes {
		for _, h := range hosts {
			out = append(out, p+h)
		}
	}
	out = append(out,
		"javascript:alert(1)", "JaVaScRiPt:alert(1)", "javascript://%0aalert(1)", "java\tscript:alert(1)",
		"\x01javascript:alert(1)", " javascript:alert(1)", "javascript:/"+host+"/%0aalert(1)",
		"data:text/html,<script>alert(1)</script>", "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
		"vbscript:msgbox(1)", "file:///etc/passwd", "ftp://evil.example/", "mailto:a@evil.example",
		"/\r\nLocation: http://evil.example", "/%0d%0aLocation:%20http://evil.example", "\r\nSet-Cookie: portcullis=x",
		"/x\r\nSet-Cookie: portcullis=evil", "%0d%0aSet-Cookie:portcullis=x", "/x%0aSet-Cookie:a=b",
		"http://"+host+"@evil.example/", "http://evil.example\\@"+host+"/", "http://"+host+":@evil.example/",
		"http://"+host+"%40evil.example/", "http://"+host+".evil.example/", "http://"+host+"\\.evil.example/",
		"https://"+host+"/", "http://"+strings.ToUpper(host)+"/x", "http://user:pw@"+host+"/",
		"http://"+host+"//evil.example", "http://"+host+"/\\evil.example", "http://[::1]:"+portOf(host)+"/",
		"http://0x7f.0.0.1:"+portOf(host)+"/", "http://2130706433:"+portOf(host)+"/", "http://localhost:"+portOf(host)+"/",
		"//%65vil.example", "/%2f%2fevil.example", "%2f%2fevil.example", "%252f%252fevil.example",
		"/%252F%252Fevil.example", url.QueryEscape("//evil.example"), url.QueryEscape(url.QueryEscape("//evil.example")),
		"//evil%E3%80%82example", "//evil.example%E2%80%8B", "/\u2215\u2215evil.example", "/\uff0f\uff0fevil.example",
		"\u2028//evil.example", "//evil.example\u0000", ".evil.example", "evil.example", "@evil.example", ":evil.example",
		"?//evil.example", "#//evil.example", "/"+strings.Repeat("a", 5000), strings.Repeat("/", 50)+"evil.example",
	)
	return out
}

// signInAgain finds the link of a "Sign-in failed" page.
var signInAgain = regexp.MustCompile(`<a[^>]* href="([^"]*)"[^>]*>Sign in again</a>`)

func portOf(hostport string) string { return hostport[strings.LastIndexByte(hostport, ':')+1:] }

// Invariant 6: after login and logout, rd leads only to public_url's origin.
func TestOpenRedirect(t *testing.T) {
	payloads := redirectPayloads()
	if len(payloads) < 200 {
		t.Fatalf("corpus has %d payloads, want at least 200", len(payloads))
	}
	for _, p := range payloads {
		name := strings.ToValidUTF8(p, "?")
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run("logout GET/"+name, func(t *testing.T) {
			r := do(t, rq{target: "/.portcullis/logout?rd=" + url.QueryEscape(p)})
			if r.Status != http.StatusFound {
				t.Fatalf("got %s, want a redirect", fmtReply(r))
			}
			checkLocation(t, r.Header.Get("Location"))
		})
		t.Run("logout POST/"+name, func(t *testing.T) {
			r := do(t, rq{method: "POST", target: "/.portcullis/logout", body: "rd=" + url.QueryEscape(p),
				headers: []string{"Content-Type: application/x-www-form-urlencoded"}})
			if r.Status != http.StatusFound {
				t.Fatalf("got %s, want a redirect", fmtReply(r))
			}
			checkLocation(t, r.Header.Get("Location"))
		})
		t.Run("login/"+name, func(t *testing.T) {
			b := newBrowser(t)
			s := b.get(suite.public + "/.portcullis/login?rd=" + url.QueryEscape(p))
			if s.Status != http.StatusFound {
				t.Fatalf("/login: status %d", s.Status)
			}
			checkLocation(t, s.Location)
			s = b.get(resolve(t, s.Location))
			if s.Status != http.StatusFound || !strings.HasPrefix(s.Location, suite.alpha.issuer+"/") {
				t.Fatalf("/login/alpha: status %d, Location %q", s.Status, s.Location)
			}
			auth, _ := url.Parse(s.Location)
			cb := b.authorize(auth, "bob", "")
			s = b.get(cb.String())
			if s.Status != http.StatusFound || sessionCookie(s.SetCookies) == "" {
				t.Fatalf("callback: status %d, body %q", s.Status, s.Body)
			}
			checkLocation(t, s.Location)
			if !strings.HasPrefix(s.Location, suite.public+"/") {
				t.Errorf("after login Location %q, want an absolute URL on %s", s.Location, suite.public)
			}
		})
		t.Run("login refused at the IdP/"+name, func(t *testing.T) {
			// The page after the IdP's refusal links to a new login
			// towards the refused one's rd.
			b := newBrowser(t)
			s := b.get(suite.public + "/.portcullis/login/alpha?rd=" + url.QueryEscape(p))
			auth, err := url.Parse(s.Location)
			if s.Status != http.StatusFound || err != nil || !strings.HasPrefix(s.Location, suite.alpha.issuer+"/") {
				t.Fatalf("/login/alpha: status %d, Location %q", s.Status, s.Location)
			}
			s = b.get(suite.public + "/.portcullis/oidc/alpha/callback?" + url.Values{"error": {"access_denied"}, "state": {auth.Query().Get("state")}}.Encode())
			link := signInAgain.FindStringSubmatch(s.Body)
			if s.Status != http.StatusForbidden || link == nil {
				t.Fatalf("refusal: status %d, want 403 with a link to sign in again; body %q", s.Status, s.Body)
			}
			again, err := url.Parse(html.UnescapeString(link[1]))
			if err != nil || again.Path != "/.portcullis/login" || again.Host != "" {
				t.Fatalf("the link to sign in again is %q, want the proxy's /login", link[1])
			}
			if rd := again.Query().Get("rd"); rd != "" {
				checkLocation(t, rd)
			}
			s = b.get(suite.public + again.String())
			if s.Status != http.StatusFound {
				t.Fatalf("following %q: status %d", again, s.Status)
			}
			checkLocation(t, s.Location)
		})
	}
}
