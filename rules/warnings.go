package rules

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/portcullis-proxy/portcullis/idp"
)

// Warnings lists what in the set is valid but may not do what was meant,
// each keyed `rules[i]` or `default_action`: a rule that never matches
// because an earlier one takes every request it would, and a bypass that
// makes every path public, by rule or by default. It says only what it is
// sure of: an earlier rule with headers, sources, when or a path_regex is
// taken to leave requests to the rules after it, and a bypass with headers,
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
// rule whose conditions are a path (exact or prefix) and methods is read
// for that, by asking its own matcher about l's exact path or prefix: what
// headers, sources, when or a path_regex leave is not worked out.
func (r *Rule) covers(l *Rule) bool {
	if !r.onlyPathsAndMethods() || r.pathRegex != nil {
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
	if r.onEveryPath() {
		return true
	}
	// Every path that starts with l's prefix starts with r's exactly when
	// l's prefix does; r's exact path takes no prefix's every path.
	switch {
	case l.path != "":
		return r.matchesPath(l.path)
	case l.prefix != "":
		return r.path == "" && r.matchesPath(l.prefix)
	case l.pathRegex != nil:
		// Every match of l's regex starts with its literal prefix, and is
		// it when the regex is that literal alone.
		lit, whole := l.pathRegex.LiteralPrefix()
		if whole {
			return r.matchesPath(lit)
		}
		return r.path == "" && r.matchesPath(lit)
	}
	return false // l takes every path, r only some
}

// onlyPathsAndMethods reports whether r has no condition besides its path
// and methods: no headers, sources or when.
func (r *Rule) onlyPathsAndMethods() bool {
	return len(r.headers) == 0 && len(r.sources) == 0 && r.when == nil
}

// onEveryPath reports whether r's path condition takes every path: it has
// none, or the prefix "/" that every normalized path starts with.
func (r *Rule) onEveryPath() bool {
	return r.path == "" && r.pathRegex == nil && r.matchesPath("/")
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
