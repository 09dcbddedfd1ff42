package idp

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/go-ldap/ldap/v3"
)

// A group is only a name, and each IdP says which names its users have. A
// condition that admits users by a group's name admits more than it means
// in two ways that `portcullis check` and serve's log point out:
//
//   - at an IdP whose users create groups themselves under any name still
//     free: GitHub's and Hugging Face's organisations, gitlab.com's top-level
//     groups. A member of the allowed organisation who creates one called
//     cvat-admins is admin by '"cvat-admins" in groups'. Self-hosted GitHub
//     and GitLab (base_url) are left out: whether their users may create
//     organisations is their administrators' setting, which check cannot see.
//   - with several IdPs, at every other IdP that can give that name, when
//     the condition does not say which IdP it means (idp == "company").
//
// The search is sound but simple: it follows && and ||, and gives up (says
// nothing) wherever the condition reads idp in a way it does not follow.

// GroupNameWarnings returns what may admit more users than meant in src, a
// condition over a Profile from the configuration (role_mapping's when, a
// rule's allow_if), given the identity providers configured: one line for
// each group name it admits by, for the caller to prefix with src's key. A
// src that does not parse gives none; compiling it says what is wrong.
func GroupNameWarnings(src string, providers []Config) []string {
	tree, err := parser.Parse(src)
	if err != nil {
		return nil
	}
	var f groupTestFinder
	f.admits(tree.Node, nil)
	reads := 0
	walk(tree.Node, func(n ast.Node) {
		if isField(n, "idp") {
			reads++
		}
	})
	if reads != f.idpTests {
		// idp != "x", a closure over idp...: which IdPs the names are
		// meant for is not known, and a warning could be wrong.
		return nil
	}
	var warnings []string
	for _, t := range f.tests {
		for _, w := range groupWarnings(t, providers) {
			if !slices.Contains(warnings, w) { // a name tested twice
				warnings = append(warnings, w)
			}
		}
	}
	return warnings
}

// groupTest is a group name a condition admits users by, and the IdPs it
// admits them from (nil: any).
type groupTest struct {
	name string
	idps []string
}

// groupTestFinder collects the group tests of a condition.
type groupTestFinder struct {
	tests []groupTest
	// idpTests counts the comparisons of idp the finder followed.
	idpTests int
}

// admits records the group tests that make n true, for users of idps (nil:
// any). It goes only where n is true when they are: through && and ||, not
// under a negation or inside a call.
func (f *groupTestFinder) admits(n ast.Node, idps []string) {
	if _, ok := f.idpTest(n); ok {
		return // on its own, or beside a group test in an ||: restricts nothing
	}
	switch n := n.(type) {
	case *ast.BinaryNode:
		switch n.Operator {
		case "&&", "and":
			var rest []ast.Node
			for _, c := range conjuncts(n) {
				if only, ok := f.idpTest(c); ok {
					idps = restrict(idps, only)
					continue
				}
				rest = append(rest, c)
			}
			for _, c := range rest {
				f.admits(c, idps)
			}
		case "||", "or":
			f.admits(n.Left, idps)
			f.admits(n.Right, idps)
		case "in":
			if s, ok := n.Left.(*ast.StringNode); ok && isField(n.Right, "groups") {
				f.tests = append(f.tests, groupTest{s.Value, idps})
			}
		}
	case *ast.BuiltinNode:
		// any(groups, # == "x"), one(groups, # in ["x", "y"])
		if (n.Name == "any" || n.Name == "one") && len(n.Arguments) == 2 && isField(n.Arguments[0], "groups") {
			if p, ok := n.Arguments[1].(*ast.PredicateNode); ok {
				for _, name := range elementNames(p.Node) {
					f.tests = append(f.tests, groupTest{name, idps})
				}
			}
		}
	}
}

// idpTest returns the IdPs n admits when n is idp == "x" ("x" == idp) or
// idp in ["x", "y"], and counts it as followed.
func (f *groupTestFinder) idpTest(n ast.Node) ([]string, bool) {
	c, ok := idpComparison(n)
	if !ok || c.op == "!=" {
		return nil, false
	}
	f.idpTests++
	if c.ids == nil {
		return []string{}, true // idp in []: no IdP
	}
	return c.ids, true
}

// comparison is a test of idp against IdP ids written out.
type comparison struct {
	op  string // ==, != or in
	ids []string
}

// idpComparison reads n as idp == "x" ("x" == idp), idp != "x" or idp in
// ["x", "y"] (every element a string), the tests of idp that name IdPs.
func idpComparison(n ast.Node) (comparison, bool) {
	b, ok := n.(*ast.BinaryNode)
	if !ok {
		return comparison{}, false
	}
	switch {
	case (b.Operator == "==" || b.Operator == "!=") && isField(b.Left, "idp") && isString(b.Right):
		return comparison{b.Operator, []string{b.Right.(*ast.StringNode).Value}}, true
	case (b.Operator == "==" || b.Operator == "!=") && isField(b.Right, "idp") && isString(b.Left):
		return comparison{b.Operator, []string{b.Left.(*ast.StringNode).Value}}, true
	case b.Operator == "in" && isField(b.Left, "idp"):
		list, ok := b.Right.(*ast.ArrayNode)
		if !ok {
			return comparison{}, false
		}
		var ids []string
		for _, e := range list.Nodes {
			s, ok := e.(*ast.StringNode)
			if !ok {
				return comparison{}, false
			}
			ids = append(ids, s.Value)
		}
		return comparison{"in", ids}, true
	}
	return comparison{}, false
}

// conjuncts are the operands of a chain of &&.
func conjuncts(n ast.Node) []ast.Node {
	if b, ok := n.(*ast.BinaryNode); ok && (b.Operator == "&&" || b.Operator == "and") {
		return append(conjuncts(b.Left), conjuncts(b.Right)...)
	}
	return []ast.Node{n}
}

// restrict is the IdPs of idps (nil: any) that are also in only.
func restrict(idps, only []string) []string {
	if idps == nil {
		return only
	}
	var both []string
	for _, id := range idps {
		if slices.Contains(only, id) {
			both = append(both, id)
		}
	}
	if both == nil {
		both = []string{}
	}
	return both
}

// elementNames are the names a predicate over one group is true for: # ==
// "x", "x" == #, # in ["x", "y"], and those joined by ||.
func elementNames(n ast.Node) []string {
	b, ok := n.(*ast.BinaryNode)
	if !ok {
		return nil
	}
	switch {
	case b.Operator == "||" || b.Operator == "or":
		return append(elementNames(b.Left), elementNames(b.Right)...)
	case b.Operator == "==" && isElement(b.Left) && isString(b.Right):
		return []string{b.Right.(*ast.StringNode).Value}
	case b.Operator == "==" && isElement(b.Right) && isString(b.Left):
		return []string{b.Left.(*ast.StringNode).Value}
	case b.Operator == "in" && isElement(b.Left):
		list, ok := b.Right.(*ast.ArrayNode)
		if !ok {
			return nil
		}
		var names []string
		for _, e := range list.Nodes {
			if s, ok := e.(*ast.StringNode); ok {
				names = append(names, s.Value)
			}
		}
		return names
	}
	return nil
}

// isElement reports whether n is # in a predicate.
func isElement(n ast.Node) bool {
	p, ok := n.(*ast.PointerNode)
	return ok && p.Name == ""
}

// isField reports whether n reads the profile's field name: name, or
// $env.name.
func isField(n ast.Node, name string) bool {
	switch n := n.(type) {
	case *ast.IdentifierNode:
		return n.Value == name
	case *ast.MemberNode:
		env, ok := n.Node.(*ast.IdentifierNode)
		prop, isStr := n.Property.(*ast.StringNode)
		return ok && env.Value == "$env" && isStr && prop.Value == name
	}
	return false
}

// groupWarnings says what t may admit that it does not mean, given the IdPs
// configured.
func groupWarnings(t groupTest, providers []Config) []string {
	var givers []Config // the IdPs t admits from that can give its name
	for _, c := range providers {
		if (t.idps == nil || slices.Contains(t.idps, c.ID)) && namingOf(c).gives(t.name) {
			givers = append(givers, c)
		}
	}
	// Where the name is meant to come from, when one IdP names its groups
	// through its administrators alone.
	var intended *Config
	for i, c := range givers {
		if namingOf(c).anyone == nil {
			intended = &givers[i]
			break
		}
	}
	test := fmt.Sprintf("%q in groups", t.name)
	var warnings []string
	for _, c := range givers {
		anyone := namingOf(c).anyone
		if anyone == nil || !anyone.creatable(t.name) || namedInAdmission(c, t.name) {
			continue
		}
		var fixes []string
		if intended != nil {
			fixes = append(fixes, fmt.Sprintf("write idp == %q && %s", intended.ID, test))
		}
		fixes = append(fixes, anyone.fix)
		warnings = append(warnings, fmt.Sprintf("%s: %s gives %s, and anyone can create %s of that name; %s",
			test, providerLabel(c), anyone.groups, anyone.one, strings.Join(fixes, ", or ")))
	}
	if warnings != nil || len(givers) < 2 || t.idps != nil {
		// idp in ["a", "b"]: the condition names the IdPs it means.
		return warnings
	}
	ids := make([]string, len(givers))
	for i, c := range givers {
		ids[i] = providerLabel(c)
	}
	// The example names the IdP whose own shape of name this is (a GitHub
	// team), if one has, rather than one that could give any name.
	meant := givers[0]
	for _, c := range givers {
		if namingOf(c).shaped {
			meant = c
			break
		}
	}
	return []string{fmt.Sprintf("%s: %s and %s can each give a group of that name, and this admits whoever any of them gives it to; name the one that should, as in idp == %q && %s",
		test, strings.Join(ids[:len(ids)-1], ", "), ids[len(ids)-1], meant.ID, test)}
}

// providerLabel names an IdP entry in a warning: its id, and its preset or
// protocol.
func providerLabel(c Config) string {
	if c.Preset != "" {
		return fmt.Sprintf("%s (preset %s)", c.ID, c.Preset)
	}
	return fmt.Sprintf("%s (%s)", c.ID, c.Protocol)
}

// groupNaming is which group names an IdP can give, and who makes them.
type groupNaming struct {
	gives func(name string) bool
	// shaped is set when the IdP gives only names of its own shape
	// (organisations, teams, group paths), not any name at all.
	shaped bool
	// anyone is set when any user of the IdP can create groups, under any
	// name still free.
	anyone *userGroups
}

// userGroups are groups that any user of an IdP can create.
type userGroups struct {
	groups string // what the IdP gives as groups, as a warning says it
	one    string // one of those any user can create
	fix    string // how to name a group that only its owners make
	// creatable reports whether a group of that name is one any user can
	// create (an organisation), and not inside one (a team).
	creatable func(name string) bool
}

// namedInAdmission reports whether the entry c admits users by the
// organisation name: one the entry already trusts is taken as the
// operator's own. For GitHub that is allowed_organizations and the
// organisations of allowed_teams, which can only mean organisations (a name
// in its allowed_groups may be a group mistaken for one, as in a rule); for
// Hugging Face and GitLab, allowed_groups.
func namedInAdmission(c Config, name string) bool {
	known := c.AllowedGroups
	if c.Preset == PresetGitHub {
		known = slices.Clone(c.AllowedOrganizations)
		for _, team := range c.AllowedTeams {
			org, _, _ := strings.Cut(team, "/")
			known = append(known, org)
		}
	}
	return slices.ContainsFunc(known, func(k string) bool { return strings.EqualFold(k, name) })
}

// The names Hugging Face and GitLab can give: organisation names, group
// paths. A little wider than each site allows: a name one of them cannot
// give is then still taken as one it might. GitHub's are isGitHubOrg's and
// isGitHubTeam's (admission.go).
var (
	hfOrg          = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	gitlabPath     = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)
	gitlabTopGroup = hfOrg // a path of one part
)

// namingOf says which group names the entry c can give, and who makes them.
func namingOf(c Config) groupNaming {
	switch c.Preset {
	case PresetGitHub:
		n := groupNaming{gives: func(name string) bool { return isGitHubOrg(name) || isGitHubTeam(name) }, shaped: true}
		if c.BaseURL == "" {
			n.anyone = &userGroups{
				groups: "its users' organisations as groups", one: "an organisation",
				fix: "name a team (my-org/admins)", creatable: isGitHubOrg,
			}
		}
		return n
	case PresetHuggingFace:
		return groupNaming{gives: hfOrg.MatchString, shaped: true, anyone: &userGroups{
			groups: "its users' organisations as groups", one: "an organisation",
			fix:       "make sure that organisation is yours (check takes one the entry names in allowed_groups as yours)",
			creatable: hfOrg.MatchString,
		}}
	case PresetGitLab:
		n := groupNaming{gives: gitlabPath.MatchString, shaped: true}
		if c.BaseURL == "" {
			n.anyone = &userGroups{
				groups: "its users' groups by path, where a top-level group's is its bare name", one: "a top-level group",
				fix: "name a subgroup (my-group/admins) with claims: {groups: groups_direct}, since groups lists every member of my-group in all its subgroups", creatable: gitlabTopGroup.MatchString,
			}
		}
		return n
	case PresetGoogle:
		if c.Claims["groups"] == "" {
			return groupNaming{gives: func(string) bool { return false }} // Google has no groups claim
		}
	}
	if c.Protocol == LDAP && strings.TrimSpace(c.AttributeMapping["group_name"]) == groupNameDN {
		return groupNaming{gives: isDN, shaped: true} // the group's whole DN
	}
	return groupNaming{gives: func(string) bool { return true }}
}

// isDN reports whether name is a DN, as an LDAP entry with group_name dn
// names its groups.
func isDN(name string) bool {
	dn, err := ldap.ParseDN(name)
	return err == nil && len(dn.RDNs) > 0
}
