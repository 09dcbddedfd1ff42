package idp

import (
	"fmt"
	"slices"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
)

// UnknownIdPWarnings returns a line for each id that src, an expression from
// the configuration, compares idp with (idp == "x", idp != "x", idp in
// ["x", ...], wherever they stand in it) and that none of providers has:
// such a test is never true (always, with !=), which compiling cannot see,
// since idp is any string to it. A src that does not parse gives none, and
// so does an empty providers, which is a problem of its own.
func UnknownIdPWarnings(src string, providers []Config) []string {
	tree, err := parser.Parse(src)
	if err != nil || len(providers) == 0 {
		return nil
	}
	var configured []string
	for _, c := range providers {
		configured = append(configured, c.ID)
	}
	// idp not in [...] parses as a negation of idp in [...].
	negated := map[ast.Node]bool{}
	walk(tree.Node, func(n ast.Node) {
		if u, ok := n.(*ast.UnaryNode); ok && (u.Operator == "not" || u.Operator == "!") {
			negated[u.Node] = true
		}
	})
	var warnings []string
	walk(tree.Node, func(n ast.Node) {
		c, ok := idpComparison(n)
		if !ok {
			return
		}
		if c.op == "in" && negated[n] {
			c.op = "not in"
		}
		for _, id := range c.ids {
			if slices.Contains(configured, id) {
				continue
			}
			w := fmt.Sprintf("%s: no identity provider has the id %q (the ids are %s), so this is %s",
				c, id, strings.Join(configured, ", "), unknownIdPOutcome[c.op])
			if !slices.Contains(warnings, w) { // the same test twice
				warnings = append(warnings, w)
			}
		}
	})
	return warnings
}

// unknownIdPOutcome is what a comparison of idp with an id no IdP has
// gives, by its operator.
var unknownIdPOutcome = map[string]string{"==": "never true", "!=": "always true", "in": "never true of it", "not in": "always true of it"}

// String writes c as a condition would: idp == "x", idp in ["x", "y"],
// idp not in ["x"].
func (c comparison) String() string {
	if c.op != "in" && c.op != "not in" {
		return fmt.Sprintf("idp %s %q", c.op, c.ids[0])
	}
	quoted := make([]string, len(c.ids))
	for i, id := range c.ids {
		quoted[i] = fmt.Sprintf("%q", id)
	}
	return "idp " + c.op + " [" + strings.Join(quoted, ", ") + "]"
}
