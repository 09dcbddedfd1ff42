package proxy

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// cacheControlSeeds are Cache-Control values as upstreams send them, and
// the forms RFC 9111's grammar allows that a comma split misreads: quoted
// strings with commas, qualified private and no-cache.
var cacheControlSeeds = []string{
	"", "max-age=600", "no-cache", "public, max-age=600", "S-Maxage=60", "private, max-age=60", "no-store",
	"public\ns-maxage=60, max-age=600, immutable", "must-revalidate", "max-age=0, must-revalidate",
	`private="Set-Cookie"`, `no-cache="Set-Cookie", max-age=600`, `private="X-Email, X-User", max-age=600`,
	`community="a,public,b", max-age=600`, `x="no-store,private", max-age=60`, `x="a\",public"`,
	"public =1", ",,public,,", "PUBLIC", "no-store=1", "private=X-Email, max-age=600",
}

// FuzzKeepFromSharedCaches checks keepFromSharedCaches against Cache-Control
// read as RFC 9111 has a cache read it (quoted strings and all): a shared
// cache may store its answer only when the upstream said it may, with
// public or s-maxage (what RFC 9111 3.5 asks of answers to requests with
// Authorization, which the session cookie stands in for); never when it
// carries a Set-Cookie, the upstream's or the renewed session's; and every
// other directive the upstream sent reaches the browser as it was sent.
func FuzzKeepFromSharedCaches(f *testing.F) {
	for _, s := range cacheControlSeeds {
		f.Add(s, false, false)
		f.Add(s, true, false)
		f.Add(s, false, true)
	}
	f.Fuzz(func(t *testing.T, cc string, upstreamCookie, renewed bool) {
		for i := 0; i < len(cc); i++ {
			if c := cc[i]; c < ' ' && c != '\t' && c != '\n' || c == 0x7f {
				return // no header value carries it: the transport refuses the answer
			}
		}
		for line := range strings.SplitSeq(cc, "\n") {
			if !quotesEnd(line) {
				return // a quoted string left open at the end of its field line: no upstream sends one
			}
		}
		h := http.Header{}
		if cc != "" {
			h["Cache-Control"] = strings.Split(cc, "\n")
		}
		if upstreamCookie {
			h["Set-Cookie"] = []string{"app=1"}
		}
		in := ccDirectives(h["Cache-Control"])
		keepFromSharedCaches(h, renewed)
		out := ccDirectives(h["Cache-Control"])
		if len(h["Cache-Control"]) == 0 {
			t.Fatalf("Cache-Control %q: the answer has none left", cc)
		}
		kept := func(d ccDirective) bool {
			return d.name != "public" && d.name != "s-maxage" && d.name != "private"
		}
		// What the upstream said reaches the browser, public, s-maxage and
		// private aside, which the proxy may tighten.
		for _, d := range in {
			if kept(d) && !slices.Contains(out, d) {
				t.Fatalf("Cache-Control %q became %q: %s=%q is lost", cc, h["Cache-Control"], d.name, d.value)
			}
		}
		for _, d := range out {
			if kept(d) && !slices.Contains(in, d) {
				t.Fatalf("Cache-Control %q became %q: %s=%q is new", cc, h["Cache-Control"], d.name, d.value)
			}
		}
		if upstreamCookie || renewed {
			for _, d := range out {
				if d.name == "public" || d.name == "s-maxage" {
					t.Fatalf("Cache-Control %q with a Set-Cookie became %q: it still has %s", cc, h["Cache-Control"], d.name)
				}
			}
			if !privateToShared(out) {
				t.Fatalf("Cache-Control %q with a Set-Cookie became %q: a shared cache may store it", cc, h["Cache-Control"])
			}
			return
		}
		if !privateToShared(out) && !sharedAllowed(in) {
			t.Fatalf("Cache-Control %q became %q: a shared cache may store it, which the upstream never allowed", cc, h["Cache-Control"])
		}
	})
}

// ccDirective is one cache directive: its name, lower case, and its
// argument, unquoted; quoted says the argument was a quoted string.
type ccDirective struct {
	name, value string
	quoted      bool
}

// ccDirectives reads Cache-Control field lines, combined into one as a
// cache may (RFC 9110 5.3), by RFC 9110's list and RFC 9111's
// cache-directive grammar, as an oracle: elements that do not follow it
// are left out, as a cache that follows the grammar ignores them.
func ccDirectives(lines []string) []ccDirective {
	var ds []ccDirective
	if len(lines) > 0 {
		for _, el := range splitList(strings.Join(lines, ", ")) {
			el = strings.Trim(el, " \t")
			n := 0
			for n < len(el) && isTchar(el[n]) {
				n++
			}
			if n == 0 {
				continue
			}
			d := ccDirective{name: strings.ToLower(el[:n])}
			switch rest := el[n:]; {
			case rest == "":
			case rest[0] != '=':
				continue
			case len(rest) > 1 && rest[1] == '"':
				v, ok := unquote(rest[1:])
				if !ok {
					continue
				}
				d.value, d.quoted = v, true
			default:
				v := rest[1:]
				if v == "" || strings.IndexFunc(v, func(r rune) bool { return r > 0x7f || !isTchar(byte(r)) }) >= 0 {
					continue
				}
				d.value = v
			}
			ds = append(ds, d)
		}
	}
	return ds
}

// splitList splits a field line at the commas outside quoted strings.
func splitList(s string) []string {
	var els []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			els = append(els, s[start:i])
			start = i + 1
		}
	}
	return append(els, s[start:])
}

// quotesEnd reports whether every quoted string of a field line ends
// within it.
func quotesEnd(line string) bool {
	quoted := false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		}
	}
	return !quoted
}

// unquote reads s, all of it, as one quoted-string.
func unquote(s string) (string, bool) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return "", false
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		switch s[i] {
		case '\\':
			i++
			if i == len(s)-1 {
				return "", false // the closing quote is escaped
			}
		case '"':
			return "", false
		}
		b.WriteByte(s[i])
	}
	return b.String(), true
}

func isTchar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// privateToShared reports whether a shared cache may store no answer with
// these directives: an unqualified private (a qualified one keeps only the
// fields it names out, RFC 9111 5.2.2.7), or no-store.
func privateToShared(ds []ccDirective) bool {
	return slices.ContainsFunc(ds, func(d ccDirective) bool {
		return d.name == "private" && d.value == "" && !d.quoted || d.name == "no-store"
	})
}

// sharedAllowed reports whether the directives let a shared cache store an
// answer to a request with credentials (RFC 9111 3.5): public or s-maxage.
func sharedAllowed(ds []ccDirective) bool {
	return slices.ContainsFunc(ds, func(d ccDirective) bool { return d.name == "public" || d.name == "s-maxage" })
}
