// Package rolemap turns what an identity provider says about a user (an
// idp.Profile) into the upstream application's roles, with expr-lang rules
// compiled once when the configuration is loaded.
package rolemap

import (
	"errors"
	"fmt"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"github.com/portcullis-proxy/portcullis/idp"
)

// Config is the role_mapping section of the configuration.
type Config struct {
	// Roles are every role the upstream knows, highest priority first. With
	// no roles, mapping is disabled and every user passes with no roles.
	Roles []string `yaml:"roles"`
	// Default is the role of a user no rule matches; "" refuses the login.
	Default string `yaml:"default"`
	// HighestOnly keeps only the highest-priority matching role; nil means
	// true, because CVAT takes one role.
	HighestOnly *bool `yaml:"highest_only"`
	// Rules give a role to every user their expression is true for.
	Rules []Rule `yaml:"rules"`
}

// Rule gives Role to every user for whom When, an expr-lang expression over
// the profile (without roles), is true.
type Rule struct {
	Role string `yaml:"role"`
	When string `yaml:"when"`
}

// ErrNoRole means no rule matched and there is no default role: the login
// is refused.
var ErrNoRole = errors.New("no role for this user")

// Mapper is a compiled role mapping, safe for concurrent use.
type Mapper struct {
	roles       []string // priority order
	def         string
	highestOnly bool
	rules       []rule
	readsClock  bool // a rule calls now()
}

type rule struct {
	priority int // index into Mapper.roles
	when     string
	program  *vm.Program
}

// env is what role mapping expressions see: the profile without roles,
// which are what is being computed. Its expr names match idp.Profile's.
type env struct {
	IdP           string         `expr:"idp"`
	Sub           string         `expr:"sub"`
	Email         string         `expr:"email"`
	EmailVerified bool           `expr:"email_verified"`
	Username      string         `expr:"username"`
	FirstName     string         `expr:"first_name"`
	LastName      string         `expr:"last_name"`
	Name          string         `expr:"name"`
	Groups        []string       `expr:"groups"`
	Claims        map[string]any `expr:"claims"`
}

// Compile checks c and compiles its rules. Every problem is reported, as
// "key: what is wrong" with keys relative to role_mapping.
func Compile(c Config) (*Mapper, error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}

	priority := make(map[string]int, len(c.Roles))
	for i, r := range c.Roles {
		if r == "" {
			bad(fmt.Sprintf("roles[%d]", i), "empty role name")
			continue
		}
		if j, dup := priority[r]; dup {
			bad("roles", "duplicate role %q (roles[%d] and roles[%d])", r, j, i)
			continue
		}
		priority[r] = i
	}
	if len(c.Roles) == 0 {
		// Without roles there is nothing to map to; rules or a default
		// would be silently ignored, which is surely a mistake.
		if c.Default != "" || len(c.Rules) > 0 {
			bad("roles", "required when default or rules are set")
		}
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		return &Mapper{}, nil
	}
	if _, ok := priority[c.Default]; c.Default != "" && !ok {
		bad("default", "unknown role %q (not in roles)", c.Default)
	}

	m := &Mapper{roles: c.Roles, def: c.Default, highestOnly: c.HighestOnly == nil || *c.HighestOnly}
	for i, r := range c.Rules {
		key := fmt.Sprintf("rules[%d]", i)
		p, ok := priority[r.Role]
		switch {
		case r.Role == "":
			bad(key+".role", "required")
		case !ok:
			bad(key+".role", "unknown role %q (not in roles)", r.Role)
		}
		if r.When == "" {
			bad(key+".when", "required")
			continue
		}
		prog, err := idp.CompileExpr(r.When, env{}, nil, expr.AsBool())
		if err != nil {
			bad(key+".when", "%v", err)
			continue
		}
		m.rules = append(m.rules, rule{priority: p, when: r.When, program: prog})
		m.readsClock = m.readsClock || idp.ReadsClock(prog)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return m, nil
}

// ReadsClock reports whether a rule calls now(): the roles Map gives a
// profile then change with the time, and are not to be remembered.
func (m *Mapper) ReadsClock() bool { return m.readsClock }

// Map returns p's roles, highest priority first. Every rule that is true for
// p contributes its role; with highest_only only the first is kept; when no
// rule is true the result is the default role, or ErrNoRole without one.
// With no roles configured, mapping is disabled and Map returns nil, nil.
//
// A rule whose evaluation fails at run time (for example claims.dept.name
// when the profile has no dept claim) counts as not matching. Those errors
// are returned, joined with ErrNoRole, only when the login is refused, so the
// log says why; otherwise they are dropped. Rules can avoid them with
// expr-lang's ?. and ?? operators.
func (m *Mapper) Map(p *idp.Profile) ([]string, error) {
	if len(m.roles) == 0 {
		return nil, nil
	}
	e := env{
		IdP: p.IdP, Sub: p.Sub, Email: p.Email, EmailVerified: p.EmailVerified,
		Username: p.Username, FirstName: p.FirstName, LastName: p.LastName,
		Name: p.Name, Groups: p.Groups, Claims: p.Claims,
	}
	matched := make([]bool, len(m.roles))
	var evalErrs []error
	for i, r := range m.rules {
		if matched[r.priority] {
			continue // the role is already given; no need to evaluate
		}
		out, err := expr.Run(r.program, e)
		if err != nil {
			evalErrs = append(evalErrs, fmt.Errorf("rules[%d].when: %s", i, idp.ExprMessage(err)))
			continue
		}
		if b, _ := out.(bool); b {
			matched[r.priority] = true
		}
	}

	var roles []string
	for i, ok := range matched {
		if !ok {
			continue
		}
		roles = append(roles, m.roles[i])
		if m.highestOnly {
			break
		}
	}
	if len(roles) > 0 {
		return roles, nil
	}
	if m.def != "" {
		return []string{m.def}, nil
	}
	return nil, errors.Join(append([]error{ErrNoRole}, evalErrs...)...)
}

// Roles returns the configured roles, highest priority first.
func (m *Mapper) Roles() []string {
	return append([]string(nil), m.roles...)
}
