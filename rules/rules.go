// Package rules decides what the proxy does with a request before any login:
// it matches the request (normalized path, method, headers, client address,
// an optional expression) against an ordered list of rules and returns the
// first that matches, or the default. It also owns CleanPath, the path
// normalization that makes the path a rule sees the path the upstream gets.
package rules

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/portcullis-proxy/portcullis/idp"
)

// Action is what a matched rule does with a request.
type Action string

// The actions a rule can take.
const (
	// Bypass forwards the request untouched, with no identity headers.
	Bypass Action = "bypass"
	// Authenticate requires a session (or a login), then allow_if.
	Authenticate Action = "authenticate"
	// Deny refuses the request with 403.
	Deny Action = "deny"
)

// Config is one entry of the top-level `rules:` list. Every matcher that is
// set must match; a rule with none matches every request.
type Config struct {
	// Name identifies the rule in logs and in the rule_matches_total metric.
	Name string `yaml:"name"`
	// Path matches the normalized path exactly.
	Path string `yaml:"path"`
	// PathPrefix matches normalized paths that start with it (plain string
	// prefix: /admin also matches /administrator; write /admin/ if that
	// matters).
	PathPrefix string `yaml:"path_prefix"`
	// PathRegex matches the whole normalized path (compiled as ^(?:re)$).
	PathRegex string `yaml:"path_regex"`
	// Methods lists the request methods the rule applies to; GET brings HEAD
	// with it, which applications answer with their GET handler.
	Methods []string `yaml:"methods"`
	// Headers maps a header name to a regex (unanchored) that its value must
	// match; the header must be present exactly once.
	Headers map[string]string `yaml:"headers"`
	// Sources lists client CIDRs; a bare IP means that one address.
	Sources []string `yaml:"sources"`
	// When is an expression over Env (request and now; the profile is empty
	// since no login has happened yet) that must be true.
	When string `yaml:"when"`
	// Action is what happens to a matching request.
	Action Action `yaml:"action"`
	// AllowIf is an expression over Env evaluated after login on an
	// authenticate rule; false answers 403.
	AllowIf string `yaml:"allow_if"`
	// BasicAuth names an LDAP identity provider: on this authenticate rule,
	// a request with Authorization: Basic is let in by checking those
	// credentials there instead of by a session. The proxy checks that the
	// provider exists and is LDAP.
	BasicAuth string `yaml:"basic_auth"`
}

// Rule is a compiled rule, as Match returns it.
type Rule struct {
	// Name is the configured name; "default" for the default action and
	// "error" when a `when` expression failed (see Set.Match).
	Name   string
	Action Action
	// Index is the position in the configured list, -1 for the built-in
	// rules.
	Index int
	// Config is the configuration the rule was compiled from.
	Config Config

	path, prefix string
	pathRegex    *regexp.Regexp
	methods      []string
	headers      []headerMatcher
	sources      []netip.Prefix
	when         *program
	allowIf      *program
}

type headerMatcher struct {
	name  string // canonical
	value valueMatcher
}

// program is a compiled expression and whether it reads request.headers.
type program struct {
	prog        *vm.Program
	needHeaders bool
}

// Set is a compiled, ordered list of rules with a default. It is safe for
// concurrent use.
type Set struct {
	rules []*Rule
	deflt *Rule
	now   func() time.Time
	log   *slog.Logger // where Match reports failing expressions
}

// errorRule is what Match returns when a `when` expression fails at run
// time: the request is refused rather than let through to later rules.
var errorRule = &Rule{Name: "error", Action: Deny, Index: -1}

var validName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// Compile checks and compiles the `rules:` list and `default_action` (empty
// means authenticate). The error joins every problem found, each as
// `rules[i].key: what is wrong` or `default_action: what is wrong`. Match
// reports `when` expressions that fail at run time to log.
func Compile(list []Config, defaultAction Action, log *slog.Logger) (*Set, error) {
	var errs []error
	if defaultAction == "" {
		defaultAction = Authenticate
	}
	if !validAction(defaultAction) {
		errs = append(errs, fmt.Errorf("default_action: unknown action %q (want bypass, authenticate or deny)", defaultAction))
	}
	s := &Set{
		deflt: &Rule{Name: "default", Action: defaultAction, Index: -1},
		now:   time.Now,
		log:   log,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	seen := map[string]int{}
	for i, c := range list {
		key := fmt.Sprintf("rules[%d]", i)
		r, err := compileRule(key, c)
		if err != nil {
			errs = append(errs, err)
		}
		switch {
		case c.Name == "":
			// compileRule reported it.
		case c.Name == "default" || c.Name == "error":
			errs = append(errs, fmt.Errorf("%s.name: %q is reserved for the built-in rule", key, c.Name))
		default:
			if j, dup := seen[c.Name]; dup {
				errs = append(errs, fmt.Errorf("%s.name: %q is already the name of rules[%d]", key, c.Name, j))
			} else {
				seen[c.Name] = i
			}
		}
		r.Index = i
		s.rules = append(s.rules, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// compileRule compiles one rule; it returns a rule even with errors, so that
// every problem of the list gets reported.
func compileRule(key string, c Config) (*Rule, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", key, field, fmt.Sprintf(format, args...)))
	}
	r := &Rule{Name: c.Name, Action: c.Action, Config: c, path: c.Path, prefix: c.PathPrefix}

	switch {
	case c.Name == "":
		bad("name", "required (it labels the rule in logs and metrics)")
	case !validName.MatchString(c.Name):
		bad("name", "%q may contain only letters, digits, _, . and -", c.Name)
	}
	switch {
	case c.Action == "":
		bad("action", "required (bypass, authenticate or deny)")
	case !validAction(c.Action):
		bad("action", "unknown action %q (want bypass, authenticate or deny)", c.Action)
	}

	pathKinds := 0
	for _, p := range []struct{ field, value string }{{"path", c.Path}, {"path_prefix", c.PathPrefix}} {
		if p.value == "" {
			continue
		}
		pathKinds++
		if err := checkRulePath(p.value); err != nil {
			bad(p.field, "%v", err)
		}
	}
	if c.PathRegex != "" {
		pathKinds++
		re, err := regexp.Compile(`^(?:` + c.PathRegex + `)$`)
		if err != nil {
			bad("path_regex", "%v", err)
		}
		r.pathRegex = re
	}
	if pathKinds > 1 {
		errs = append(errs, fmt.Errorf("%s: set only one of path, path_prefix and path_regex", key))
	}

	for j, m := range c.Methods {
		m = strings.ToUpper(strings.TrimSpace(m))
		if !isToken(m) {
			bad(fmt.Sprintf("methods[%d]", j), "%q is not an HTTP method", c.Methods[j])
			continue
		}
		r.methods = append(r.methods, m)
	}
	if contains(r.methods, http.MethodGet) && !contains(r.methods, http.MethodHead) {
		// HEAD is GET without the body, and applications answer it with
		// their GET handler (Go's ServeMux matches a GET pattern to HEAD
		// too; Django, Rails and Express route it so): a rule for GET
		// that let HEAD fall through to another decision would give the
		// same handler two.
		r.methods = append(r.methods, http.MethodHead)
	}

	for _, name := range slices.Sorted(maps.Keys(c.Headers)) {
		field := "headers." + name
		if name == "" {
			bad("headers", "empty header name")
			continue
		}
		if !isToken(name) {
			bad(field, "%q is not a valid header name", name)
			continue
		}
		re, err := regexp.Compile(c.Headers[name])
		if err != nil {
			bad(field, "%v", err)
			continue
		}
		r.headers = append(r.headers, headerMatcher{name: http.CanonicalHeaderKey(name), value: newValueMatcher(re)})
	}

	for j, src := range c.Sources {
		p, err := ParsePrefix(src)
		if err != nil {
			bad(fmt.Sprintf("sources[%d]", j), "%v", err)
			continue
		}
		r.sources = append(r.sources, p)
	}

	if c.When != "" {
		p, err := compileExpr(c.When)
		if err != nil {
			bad("when", "%v", err)
		}
		r.when = p
	}
	if c.AllowIf != "" {
		if c.Action == Bypass || c.Action == Deny {
			bad("allow_if", "only an authenticate rule has a login to check (action is %s)", c.Action)
		}
		p, err := compileExpr(c.AllowIf)
		if err != nil {
			bad("allow_if", "%v", err)
		}
		r.allowIf = p
	}
	if c.BasicAuth != "" && c.Action != Authenticate && c.Action != "" {
		bad("basic_auth", "only an authenticate rule checks credentials (action is %s)", c.Action)
	}
	return r, errors.Join(errs...)
}

func validAction(a Action) bool {
	return a == Bypass || a == Authenticate || a == Deny
}

// checkRulePath refuses a configured path that no normalized request path
// could ever equal or start with.
func checkRulePath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return errors.New("must start with /")
	}
	clean, err := CleanPath((&url.URL{Path: p}).EscapedPath())
	if err != nil {
		return fmt.Errorf("can never match: %w", err)
	}
	if clean != p {
		return fmt.Errorf("can never match: requests are normalized first; write %q", clean)
	}
	return nil
}

// ParsePrefix reads a CIDR, or a bare address as a one-address prefix, in
// the unmapped form that request addresses are compared in: for `sources`,
// and the proxy's server.trusted_proxies.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, fmt.Errorf("not a CIDR or IP address: %q", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return p, fmt.Errorf("not a CIDR or IP address: %q", s)
		}
		if a.Zone() != "" {
			return p, fmt.Errorf("%q: zones are not supported", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	p = p.Masked()
	// ::ffff:10.0.0.0/104 is written for IPv4 clients; requests carry them
	// unmapped, so the prefix must be unmapped too.
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p, nil
}

// compileExpr compiles a boolean expression over Env.
func compileExpr(src string) (*program, error) {
	prog, err := idp.CompileExpr(src, Env{}, []string{"request"}, expr.AsBool())
	if err != nil {
		return nil, err
	}
	node := prog.Node()
	v := &headerUse{}
	ast.Walk(&node, v)
	return &program{prog: prog, needHeaders: v.needed()}, nil
}

// headerUse finds out whether an expression may read request.headers: it
// does when it names request.headers, or uses `request` in any way other
// than reading one of its other fields (toJSON(request), let r = request).
type headerUse struct {
	requests, otherFields int
}

func (h *headerUse) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		if n.Value == "request" {
			h.requests++
		}
	case *ast.MemberNode:
		id, ok := n.Node.(*ast.IdentifierNode)
		if !ok || id.Value != "request" {
			return
		}
		if prop, ok := n.Property.(*ast.StringNode); ok && prop.Value != "headers" {
			h.otherFields++
		}
	}
}

func (h *headerUse) needed() bool { return h.requests != h.otherFields }

// vms reuses expression machines across requests.
var vms = sync.Pool{New: func() any { return &vm.VM{} }}

// run evaluates p against env.
func (p *program) run(env *Env) (bool, error) {
	if p.needHeaders && env.Request != nil {
		env.Request.fillHeaders()
	}
	m := vms.Get().(*vm.VM)
	out, err := m.Run(p.prog, env)
	vms.Put(m)
	if err != nil {
		return false, err
	}
	ok, _ := out.(bool)
	return ok, nil
}

// Match returns the first rule that matches req, or the default rule when
// none does; never nil. A `when` expression that fails at run time refuses
// the request: Match logs the error and returns a deny rule named "error".
func (s *Set) Match(req *Request) *Rule {
	r, err := s.Evaluate(req, s.now())
	if err != nil {
		s.log.Error("rules: when expression failed; denying the request",
			"rule", r.Name, "method", req.Method, "path", req.Path, "at", FailedAt(err))
		return errorRule
	}
	return r
}

// FailedAt is what a log line says of a `when` or `allow_if` expression that
// failed at run time: where in it the failure was, not what it was. expr's
// message shows the values it failed on (`invalid operation: int(Basic
// c2Vj…)`), and request headers carry credentials, which no log line may.
// `portcullis explain` shows the whole error for a request the operator
// writes down.
func FailedAt(err error) string {
	var fe *file.Error
	if errors.As(err, &fe) && fe.Snippet != "" {
		return fmt.Sprintf("line %d, column %d:%s", fe.Line, fe.Column, fe.Snippet)
	}
	return "see portcullis explain"
}

// Evaluate is Match at a given time, returning the error of a failing `when`
// expression together with the rule it belongs to (for `portcullis explain`).
func (s *Set) Evaluate(req *Request, now time.Time) (*Rule, error) {
	for _, r := range s.rules {
		ok, err := r.matches(req, now)
		if err != nil {
			return r, fmt.Errorf("rule %s: when: %w", r.Name, err)
		}
		if ok {
			return r, nil
		}
	}
	return s.deflt, nil
}

// Rules returns the compiled rules in order, without the default.
func (s *Set) Rules() []*Rule { return s.rules }

// Default returns the rule that Match returns when no rule matches.
func (s *Set) Default() *Rule { return s.deflt }

// matches checks the cheap matchers first and the expression last.
func (r *Rule) matches(req *Request, now time.Time) (bool, error) {
	if !r.matchesPath(req.Path) {
		return false, nil
	}
	if len(r.methods) > 0 && !contains(r.methods, req.Method) {
		return false, nil
	}
	if len(r.sources) > 0 && !r.sourceMatches(req.addr) {
		return false, nil
	}
	for _, h := range r.headers {
		// Exactly one value under the canonical key: two Authorization
		// headers may be read differently by the upstream, and a key that
		// net/http did not canonicalize never came from the wire as that
		// header.
		values := req.header[h.name]
		if len(values) != 1 || !h.value.MatchString(values[0]) {
			return false, nil
		}
	}
	if r.when == nil {
		return true, nil
	}
	return r.when.run(&Env{Request: req, Now: now})
}

// matchesPath reports whether r's path, path_prefix or path_regex (the one
// it has, if any) matches the normalized path.
func (r *Rule) matchesPath(path string) bool {
	return (r.path == "" || path == r.path) &&
		(r.prefix == "" || strings.HasPrefix(path, r.prefix)) &&
		(r.pathRegex == nil || r.pathRegex.MatchString(path))
}

func (r *Rule) sourceMatches(addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	for _, p := range r.sources {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Allow evaluates the rule's allow_if against the logged-in user p and the
// request at time now; true when the rule has none. An error means the
// expression failed at run time, and the request must be refused.
func (r *Rule) Allow(p *idp.Profile, req *Request, now time.Time) (bool, error) {
	if r.allowIf == nil {
		return true, nil // and no Env to build: most rules have no allow_if
	}
	ok, err := r.allowIf.run(&Env{Profile: *p, Request: req, Now: now})
	if err != nil {
		return false, fmt.Errorf("rule %s: allow_if: %w", r.Name, err)
	}
	return ok, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// isToken reports whether s is a non-empty RFC 9110 token (method or header
// name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}
