package rules

import (
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode/utf8"
)

// valueMatcher answers whether a header value matches a rule's pattern.
// Most header patterns are an anchored choice of literal words, like CVAT's
// `^(Basic|Token|Bearer) `; for those it compares prefixes instead of
// running the regexp, which profiles of the bypass path showed as its
// largest step. Every other pattern runs as a regexp.
type valueMatcher struct {
	re       *regexp.Regexp
	prefixes []string // when not nil: the value matches iff it starts with one of them
}

func newValueMatcher(re *regexp.Regexp) valueMatcher {
	prefixes, ok := literalPrefixes(re.String())
	if !ok {
		return valueMatcher{re: re}
	}
	return valueMatcher{re: re, prefixes: prefixes}
}

func (m valueMatcher) MatchString(v string) bool {
	if m.prefixes == nil {
		return m.re.MatchString(v)
	}
	for _, p := range m.prefixes {
		if strings.HasPrefix(v, p) {
			return true
		}
	}
	return false
}

// maxPrefixes bounds the literal strings a pattern may expand to before it
// is left to the regexp.
const maxPrefixes = 16

// literalPrefixes returns the strings P such that, for every s,
// regexp.MatchString(pattern, s) is true exactly when s starts with one of P.
// That holds when the pattern is anchored at the start of the text (`^` or
// `\A`, without (?m)) and then a finite set of case-sensitive literal
// strings: a regexp without `$` matches wherever the text goes on. ok is
// false for every other pattern.
func literalPrefixes(pattern string) (prefixes []string, ok bool) {
	re, err := syntax.Parse(pattern, syntax.Perl) // as regexp.Compile parses it
	if err != nil {
		return nil, false
	}
	re = re.Simplify()
	if re.Op != syntax.OpConcat || len(re.Sub) < 2 || re.Sub[0].Op != syntax.OpBeginText {
		return nil, false
	}
	// What follows the anchor, as one concatenation.
	return literals(&syntax.Regexp{Op: syntax.OpConcat, Sub: re.Sub[1:]})
}

// literals is the finite set of strings re matches exactly, if it is one.
func literals(re *syntax.Regexp) ([]string, bool) {
	switch re.Op {
	case syntax.OpEmptyMatch:
		return []string{""}, true
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			return nil, false
		}
		for _, r := range re.Rune {
			if !literalRune(r) {
				return nil, false
			}
		}
		return []string{string(re.Rune)}, true
	case syntax.OpCharClass:
		var words []string
		for i := 0; i+1 < len(re.Rune); i += 2 {
			for r := re.Rune[i]; r <= re.Rune[i+1]; r++ {
				if !literalRune(r) || len(words) == maxPrefixes {
					return nil, false
				}
				words = append(words, string(r))
			}
		}
		return words, len(words) > 0
	case syntax.OpCapture:
		return literals(re.Sub[0])
	case syntax.OpConcat:
		words := []string{""}
		for _, sub := range re.Sub {
			next, ok := literals(sub)
			if !ok {
				return nil, false
			}
			if words, ok = concat(words, next); !ok {
				return nil, false
			}
		}
		return words, true
	case syntax.OpAlternate:
		var words []string
		for _, sub := range re.Sub {
			next, ok := literals(sub)
			if !ok || len(words)+len(next) > maxPrefixes {
				return nil, false
			}
			words = append(words, next...)
		}
		return words, true
	}
	return nil, false
}

// literalRune reports whether r can be compared as the bytes of
// string(r). The regexp reads an invalid byte as U+FFFD, which a byte prefix
// would not; and a surrogate, which no UTF-8 text holds, so that the regexp
// never matches it, converts to U+FFFD's bytes, which a value may hold.
func literalRune(r rune) bool {
	return r != utf8.RuneError && utf8.ValidRune(r)
}

// concat is every a followed by every b, if there are not too many.
func concat(a, b []string) ([]string, bool) {
	if len(a)*len(b) > maxPrefixes {
		return nil, false
	}
	out := make([]string, 0, len(a)*len(b))
	for _, x := range a {
		for _, y := range b {
			out = append(out, x+y)
		}
	}
	return out, true
}
