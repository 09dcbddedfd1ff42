package rules

import (
	"fmt"
	"net/http"
	"regexp/syntax"
	"strings"

	"github.com/portcullis-proxy/portcullis/idp"
)

// Warnings lists what in the set is valid but may not do what was meant,
// each keyed `rules[i]`, `rules[i].path_regex` or `default_action`: a rule
// that never matches because an earlier one takes every request it would,
// a path_regex written as if it were not anchored at its end
// (unanchoredRegexWarning), and a bypass that makes every path public, by
// rule or by default. It says only what it is
// sure of: an earlier rule with headers, sources or when, or a path_regex
// that is not a path, a prefix or the later rule's own (covers), is taken
// to leave requests to the rules after it, and a bypass with headers,
// sources or when to be limited to what was meant.
func (s *Set) Warnings() []idp.Warning {
	var out []idp.Warning
	takesAll := false // some rule matches every request: the default never applies
	for i, r := range s.rules {
		key := fmt.Sprintf("rules[%d]", i)
		if by := s.shadowing(i); by != nil {
			out = append(out, idp.Warning{Key: key, Message: fmt.Sprintf("never matches: rules[%d] (%s) comes first and takes every request this rule would (the first rule that matches wins); move this rule above it, or remove it", by.Index, by.Name)})
			continue
		}
		if r.pathRegex != nil {
			if msg := unanchoredRegexWarning(r.Config.PathRegex); msg != "" {
				out = append(out, idp.Warning{Key: key + ".path_regex", Message: msg})
			}
		}
		if r.Action == Bypass && r.public() {
			out = append(out, idp.Warning{Key: key, Message: "bypass on every path with no headers, sources or when: " + r.publicScope() + " reaches the upstream without a login or identity headers; if only part of the application is public, narrow this rule with path_prefix, or with headers that only credentials carry"})
		}
		takesAll = takesAll || r.onlyPathsAndMethods() && r.onEveryPath() && len(r.methods) == 0
	}
	if s.deflt.Action == Bypass && !takesAll {
		out = append(out, idp.Warning{Key: "default_action", Message: "bypass: every request that no rule takes reaches the upstream without a login or identity headers; if only some paths are public, set authenticate and bypass those paths by rule"})
	}
	return out
}

// shadowing returns the first rule before rules[i] that matches every
// request rules[i] does, or nil.
func (s *Set) shadowing(i int) *Rule {
	for _, r := range s.rules[:i] {
		if r.covers(s.rules[i]) {
			return r
		}
	}
	return nil
}

// covers reports whether r matches every request that l matches. Only a
// rule whose conditions are a path and methods is read for that, and only
// what is sure of their paths: a path or path_prefix, a path_regex that
// reads as one (regexPaths), and a path_regex the same as l's. What
// headers, sources, when or another path_regex leave is not worked out.
func (r *Rule) covers(l *Rule) bool {
	if !r.onlyPathsAndMethods() {
		return false
	}
	if len(r.methods) > 0 {
		if len(l.methods) == 0 {
			return false
		}
		for _, m := range l.methods {
			if !contains(r.methods, m) {
				return false
			}
		}
	}
	if r.pathRegex != nil && l.pathRegex != nil && r.Config.PathRegex == l.Config.PathRegex {
		return true
	}
	takes, ok := r.pathCondition()
	if !ok {
		return false
	}
	if takes.everyPath() {
		return true
	}
	// Every path that starts with l's prefix starts with r's exactly when
	// l's prefix does; r's exact path takes no prefix's every path.
	lit, exact := l.pathBound()
	if exact {
		return takes.matches(lit)
	}
	return takes.path == "" && strings.HasPrefix(lit, takes.prefix)
}

// pathCondition is the paths a rule's path condition takes: exactly path,
// when it is not "", else every path that starts with prefix.
type pathCondition struct {
	path, prefix string
}

func (c pathCondition) matches(path string) bool {
	if c.path != "" {
		return path == c.path
	}
	return strings.HasPrefix(path, c.prefix)
}

// everyPath reports whether c takes every normalized path, each of which
// starts with /.
func (c pathCondition) everyPath() bool {
	return c.path == "" && (c.prefix == "" || c.prefix == "/")
}

// pathCondition is r's path condition as a path or a prefix; false for a
// path_regex that is neither (regexPaths).
func (r *Rule) pathCondition() (pathCondition, bool) {
	switch {
	case r.path != "":
		return pathCondition{path: r.path}, true
	case r.pathRegex != nil:
		lit, kind := regexPaths(r.Config.PathRegex)
		switch {
		case kind == regexExact && lit != "": // "" is no path: it takes none
			return pathCondition{path: lit}, true
		case kind == regexPrefix:
			return pathCondition{prefix: lit}, true
		}
		return pathCondition{}, false
	}
	return pathCondition{prefix: r.prefix}, true
}

// pathBound is what every path l takes is: exactly lit, or one that starts
// with lit.
func (l *Rule) pathBound() (lit string, exact bool) {
	switch {
	case l.path != "":
		return l.path, true
	case l.pathRegex != nil:
		lit, kind := regexPaths(l.Config.PathRegex)
		return lit, kind == regexExact
	}
	return l.prefix, false
}

// regexKind is what regexPaths found a path_regex to be.
type regexKind int

const (
	regexOther  regexKind = iota // only: every match starts with the literal
	regexExact                   // the literal alone
	regexPrefix                  // every path that starts with the literal
)

// regexPaths reads a path_regex as rules compile it, anchored at both
// ends: the literal that every path it matches starts with, and whether it
// matches that path alone (the regex is the literal) or every path that
// starts with it (the literal, then .*: normalized paths hold no control
// character, so no line break that . would not match). Anchors at the
// start (^, \A) are read as the compiled regex's own; a literal that
// ignores case ends the literal.
func regexPaths(src string) (lit string, kind regexKind) {
	re, err := syntax.Parse(`^(?:`+src+`)$`, syntax.Perl) // as compileRule compiles it
	if err != nil {
		return "", regexOther
	}
	parts := concatenation(re.Simplify(), nil)
	for len(parts) > 0 && (parts[0].Op == syntax.OpBeginText || parts[0].Op == syntax.OpBeginLine) {
		parts = parts[1:]
	}
	for n := len(parts); n > 0 && (parts[n-1].Op == syntax.OpEndText || parts[n-1].Op == syntax.OpEndLine); n-- {
		parts = parts[:n-1]
	}
	var b strings.Builder
	for len(parts) > 0 && parts[0].Op == syntax.OpLiteral && parts[0].Flags&syntax.FoldCase == 0 {
		for _, r := range parts[0].Rune {
			if !literalRune(r) {
				return b.String(), regexOther
			}
			b.WriteRune(r)
		}
		parts = parts[1:]
	}
	switch {
	case len(parts) == 0:
		return b.String(), regexExact
	case len(parts) == 1 && parts[0].Op == syntax.OpStar &&
		(parts[0].Sub[0].Op == syntax.OpAnyChar || parts[0].Sub[0].Op == syntax.OpAnyCharNotNL):
		return b.String(), regexPrefix
	}
	return b.String(), regexOther
}

// unanchoredRegexWarning says what a path_regex matches when it reads as
// written for a matcher that finds it anywhere in the path (oauth2-proxy's
// skip_auth_regex: ^/api/ for every path under /api/), where rules anchor
// it at both ends; "" when it does not. It is said only where that is sure:
// a literal path (then it matches that path alone), or a regex that starts
// with ^ and ends with a / (endsAtASlash). A regex that ends with $ says
// where it ends, and one with no ^ that is no literal may well mean to be
// anchored.
func unanchoredRegexWarning(src string) string {
	re, err := syntax.Parse(src, syntax.Perl)
	if err != nil {
		return ""
	}
	parts := concatenation(re.Simplify(), nil)
	if len(parts) == 0 {
		return ""
	}
	if last := parts[len(parts)-1].Op; last == syntax.OpEndText || last == syntax.OpEndLine {
		return ""
	}
	const anchored = "path_regex is anchored at both ends"
	if lit, kind := regexPaths(src); kind == regexExact && lit != "" {
		return fmt.Sprintf("%s matches only the path %s itself: %s; for every path that starts with it, path_prefix: %s (or append .*); for that path alone, path: %s", src, lit, anchored, lit, lit)
	}
	if first := parts[0].Op; len(parts) > 1 && (first == syntax.OpBeginText || first == syntax.OpBeginLine) && endsAtASlash(parts[len(parts)-1]) {
		return fmt.Sprintf("%s matches a path only as a whole, none that goes on after it: %s; for the paths that start with a match, append .*; to say it ends there, end it with $", src, anchored)
	}
	return ""
}

// endsAtASlash reports whether re, the end of a regex, is a literal that
// ends with /: written after a ^, that reads as a prefix of paths (^/api/,
// ^/api/v[0-9]+/), and an anchored one takes none of them. A regex that
// ends otherwise (\.(js|css), [0-9]+, /?) may well mean to end there.
func endsAtASlash(re *syntax.Regexp) bool {
	return re.Op == syntax.OpLiteral && len(re.Rune) > 0 && re.Rune[len(re.Rune)-1] == '/'
}

// concatenation appends to out the parts re is a concatenation of, nested
// concatenations flattened.
func concatenation(re *syntax.Regexp, out []*syntax.Regexp) []*syntax.Regexp {
	if re.Op != syntax.OpConcat {
		return append(out, re)
	}
	for _, sub := range re.Sub {
		out = concatenation(sub, out)
	}
	return out
}

// onlyPathsAndMethods reports whether r has no condition besides its path
// and methods: no headers, sources or when.
func (r *Rule) onlyPathsAndMethods() bool {
	return len(r.headers) == 0 && len(r.sources) == 0 && r.when == nil
}

// onEveryPath reports whether r's path condition takes every path: it has
// none, the prefix "/" that every normalized path starts with, or a
// path_regex that reads as one of those (.*, /.*).
func (r *Rule) onEveryPath() bool {
	c, ok := r.pathCondition()
	return ok && c.everyPath()
}

// public reports whether r, were it a bypass, would let anyone's requests
// for any path through: nothing limits it to credentials, a network or a
// part of the application. Methods do not, but for CORS preflights
// (OPTIONS), which carry no credentials and no application data.
func (r *Rule) public() bool {
	if !r.onlyPathsAndMethods() || !r.onEveryPath() {
		return false
	}
	if len(r.methods) == 0 {
		return true
	}
	for _, m := range r.methods {
		if m != http.MethodOptions {
			return true
		}
	}
	return false
}

// publicScope says which requests a public bypass takes.
func (r *Rule) publicScope() string {
	scope := "every request"
	if len(r.methods) > 0 {
		scope = "every " + strings.Join(r.methods, " or ") + " request"
	}
	if r.Index > 0 {
		scope += " that no rule above it takes"
	}
	return scope
}
