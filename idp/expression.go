package idp

import (
	"errors"
	"fmt"
	"reflect"
	"slices"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// Every expression in the configuration (role_mapping's `when`,
// attribute_pass's headers, a rule's `when` and `allow_if`) is an expr-lang
// program over a Profile, alone or, for rules, embedded beside the request.
// They are compiled here, beside the type whose expr tags name what they
// read, so that the packages that own those keys compile them alike: one set
// of options and limits, one way of reporting a mistake.
//
// The limits keep what a request can make an expression cost in proportion
// to the request: a rule runs on requests of anyone, with up to 64 KiB of
// headers. expr's own bounds, which stay, are 10,000 nodes a program
// (conf.DefaultMaxNodes) and a memory budget of 1,000,000 a run
// (conf.DefaultMemoryBudget), which counts the elements of ranges, literals
// and some builtins' results but neither strings nor loops.

// unavailable are the builtins expressions may not call, each with why.
var unavailable = map[string]string{
	// expr checks repeat's size only after building it: a 60 KB header
	// repeated 100,000 times took 6 GB and 20 s, or the process.
	"repeat": "its result is its argument n times over",
	// A string carried through a loop is copied at every element: 300
	// elements of a 60 KB header took 1.6 s.
	"reduce": "a value it carries through the loop can grow at every element; use map, filter, join, sum or count",
	// It compares every element with every one kept: 2.8 s for a 60 KB
	// header of 12,000 distinct items.
	"uniq": "its time grows with the square of the list's length",
}

// CompileExpr compiles src, an expression from the configuration, over env
// (a Profile, or a type that embeds one) with the caller's opts (expr.AsBool
// for a condition), and refuses what could make it costly. clientInput names
// the fields of env that the client writes (rules' request), whose size it
// sets. Its error is one line, as ExprMessage writes it, for the caller to
// prefix with the key.
func CompileExpr(src string, env any, clientInput []string, opts ...expr.Option) (*vm.Program, error) {
	// Disabled builtins are unknown names to expr; the parse says which
	// they are, and why they are refused.
	if tree, err := parser.Parse(src); err == nil {
		if err := refuseUnavailable(tree); err != nil {
			return nil, err
		}
	}
	all := []expr.Option{expr.Env(env)}
	for name := range unavailable {
		all = append(all, expr.DisableBuiltin(name))
	}
	prog, err := expr.Compile(src, append(all, opts...)...)
	if err != nil {
		return nil, errors.New(ExprMessage(err))
	}
	// The rest is judged on the program as the optimizer left it, which is
	// what runs: "a" + "b" is a constant pattern there, and x in 1..5 with
	// an integer x two comparisons.
	if err := refuseCostly(prog, clientInput); err != nil {
		return nil, err
	}
	return prog, nil
}

// maxRange is the most numbers a range may hold: it is built, element by
// element, at every evaluation.
const maxRange = 1000

// refuseCostly refuses what can make prog's cost grow faster than the
// client input it reads (clientInput names the fields of its environment
// that hold it, as rules' request does).
func refuseCostly(prog *vm.Program, clientInput []string) error {
	var first error
	refuse := func(n ast.Node, format string, args ...any) {
		if first == nil { // one problem an expression, as for its other mistakes
			first = exprRefusal(prog.Source(), n, format, args...)
		}
	}
	fromClient := clientVariables(prog.Node(), clientInput)
	walk(prog.Node(), func(n ast.Node) {
		if b, ok := n.(*ast.BuiltinNode); ok {
			refuseCostlyCall(b, fromClient, refuse)
			return
		}
		b, ok := n.(*ast.BinaryNode)
		if !ok {
			return
		}
		switch b.Operator {
		case "matches":
			// expr compiles a constant pattern once; any other at every
			// evaluation, and a pattern from the request is the client's.
			if _, ok := b.Right.(*ast.StringNode); !ok {
				refuse(b, "matches needs a constant pattern: any other is compiled at every evaluation; compare with startsWith, endsWith, contains or ==")
			}
		case "..":
			from, ok1 := b.Left.(*ast.IntegerNode)
			to, ok2 := b.Right.(*ast.IntegerNode)
			switch {
			case !ok1 || !ok2:
				refuse(b, "a range needs integers written out as its bounds")
			case to.Value >= from.Value && uint64(to.Value)-uint64(from.Value) >= maxRange: // exact, even from -2^63
				refuse(b, "a range of more than %d numbers is built at every evaluation; compare with >= and <= instead", maxRange)
			}
		}
	})
	return first
}

// refuseCostlyCall refuses a loop inside a loop; a loop over client input or
// a range that reads anything but its element, since the client sets how
// many elements there are; and builtins whose output one argument multiplies.
func refuseCostlyCall(b *ast.BuiltinNode, fromClient map[string]bool, refuse func(ast.Node, string, ...any)) {
	switch b.Name {
	case "replace":
		// Every match of the old string, "" matching between all runes,
		// becomes the replacement: replace(h, "", h) of a 60 KB header made
		// 3.6 GB.
		if len(b.Arguments) > 2 && !isString(b.Arguments[2]) {
			refuse(b, "replace needs a constant replacement: it is written once for every match")
		}
	case "join":
		if len(b.Arguments) > 1 && !isString(b.Arguments[1]) {
			refuse(b, "join needs a constant separator: it is written once between every two elements")
		}
	case "fromJSON":
		// The only way to nest a value as deep as the client likes (JSON
		// decodes 10,000 levels), and flatten, median and toJSON copy or
		// indent every value once for each level above it: 2.8 s, 0.5 s
		// and 7 s for 64 KiB of one nested 10,000 deep.
		if len(b.Arguments) > 0 && readsClient(b.Arguments[0], fromClient) {
			refuse(b, "fromJSON of %s: the client sets how deep its result nests, and flatten, median or toJSON of it take that depth times its size", clientNames(fromClient))
		}
	}
	bodies := loopBodies(b)
	if len(bodies) == 0 {
		return
	}
	for _, body := range bodies {
		walk(body.node, func(n ast.Node) {
			// Over a list of n elements, a loop inside takes n times as
			// long as alone: two loops over a 60 KB header's 12,000
			// items took 6 s.
			if inner, ok := n.(*ast.BuiltinNode); ok && len(loopBodies(inner)) > 0 {
				refuse(inner, "%s inside %s: a loop inside a loop takes the product of both lists' lengths; loop once (flatten, filter or in first)", loopBodies(inner)[0].name, body.name)
			}
		})
	}
	if !readsClient(b.Arguments[0], fromClient) && !hasRange(b.Arguments[0]) {
		// A list of the profile's or the configuration's: its length is not
		// the client's, but the body works on the client input once for
		// every element.
		for _, body := range bodies {
			refuseRepeatedWork(body, fromClient, refuse)
		}
		return
	}
	for _, body := range bodies {
		own := map[string]bool{} // the body's own variables, set from the element
		walk(body.node, func(n ast.Node) {
			if v, ok := n.(*ast.VariableDeclaratorNode); ok {
				own[v.Name] = true
			}
		})
		walk(body.node, func(n ast.Node) {
			if id, ok := n.(*ast.IdentifierNode); ok && !own[id.Value] {
				refuse(id, "a loop over a range or a list built from %s may read only # and constants, not %s: the client sets how many times it is read", clientNames(fromClient), id.Value)
			}
		})
	}
}

// readsCheaply are the builtins that read client input without building
// anything from it: a loop over the profile's list may call them on the
// request at every element.
var readsCheaply = map[string]bool{
	"len": true, "get": true, "first": true, "last": true, "type": true,
	"hasPrefix": true, "hasSuffix": true, "indexOf": true, "lastIndexOf": true,
	"int": true, "float": true, "abs": true, "ceil": true, "floor": true, "round": true,
}

// refuseRepeatedWork refuses, in the body of a loop over a list that is not
// the client's (the profile's groups, a list written out), what costs the
// size of the client input at every element: a builtin or a method that
// builds from it (split, lower, date, now.Format...), matches on it, or in
// on a list made from it. One user's 1,000 groups over a 64 KiB header took
// 3.2 s for any(groups, {# in split(h, ",")}), 2.2 s with the split in a let
// outside the loop, and 1.7 s for any(groups, {h matches "(a,)+z"}).
// Comparisons (==, startsWith, endsWith, contains) stay: 13 ms for the same.
func refuseRepeatedWork(body loopBody, fromClient map[string]bool, refuse func(ast.Node, string, ...any)) {
	client := clientNames(fromClient)
	walk(body.node, func(n ast.Node) {
		switch n := n.(type) {
		case *ast.BuiltinNode:
			if !readsCheaply[n.Name] && slices.ContainsFunc(n.Arguments, func(a ast.Node) bool { return readsClient(a, fromClient) }) {
				refuse(n, "%s of %s inside %s: it is done again for every element of the list; do it once, outside any loop, or compare with ==, startsWith, endsWith or contains", n.Name, client, body.name)
			}
		case *ast.CallNode:
			// A method of the environment: now.Format(layout) writes its
			// layout out, 280 ms for a 64 KiB one over 1,000 groups.
			if slices.ContainsFunc(n.Arguments, func(a ast.Node) bool { return readsClient(a, fromClient) }) {
				refuse(n, "%s of %s inside %s: it is done again for every element of the list; do it once, outside any loop", methodName(n), client, body.name)
			}
		case *ast.BinaryNode:
			switch {
			case n.Operator == "matches" && readsClient(n.Left, fromClient):
				refuse(n, "matches on %s inside %s: the pattern runs over it again for every element of the list; match once, outside any loop, or compare with ==, startsWith, endsWith or contains", client, body.name)
			case n.Operator == "in" && readsClient(n.Right, fromClient) && !isMap(n.Right):
				refuse(n, "in a list built from %s inside %s: the list is searched again for every element; name one element from %s instead (x in groups)", client, body.name, client)
			}
		}
	})
}

// methodName is the name of the method c calls, as written.
func methodName(c *ast.CallNode) string {
	if m, ok := c.Callee.(*ast.MemberNode); ok {
		if name, ok := m.Property.(*ast.StringNode); ok {
			return name.Value
		}
	}
	return "a call"
}

// loopBody is the body of a loop and the name of the loop as written.
type loopBody struct {
	name string
	node ast.Node
}

// loopBodies returns the bodies of b when it is a loop (all, any, map,
// filter, sortBy, ...): its closures, and the map that the optimizer folds
// into a filter.
func loopBodies(b *ast.BuiltinNode) []loopBody {
	var bodies []loopBody
	for _, arg := range b.Arguments {
		if p, ok := arg.(*ast.PredicateNode); ok {
			bodies = append(bodies, loopBody{b.Name, p.Node})
		}
	}
	if b.Map != nil {
		bodies = append(bodies, loopBody{"map", b.Map})
	}
	return bodies
}

// clientVariables returns the names that hold client input in the program
// under root: clientInput, $env with them, and every variable (let) set from
// one of those. A variable shadowed in a closure counts too: wrongly
// refusing an odd expression is cheap, wrongly accepting one is not.
func clientVariables(root ast.Node, clientInput []string) map[string]bool {
	names := map[string]bool{}
	for _, name := range clientInput {
		names[name] = true
		names["$env"] = true
	}
	var lets []*ast.VariableDeclaratorNode
	walk(root, func(n ast.Node) {
		if v, ok := n.(*ast.VariableDeclaratorNode); ok {
			lets = append(lets, v)
		}
	})
	for changed := true; changed; {
		changed = false
		for _, v := range lets {
			if !names[v.Name] && readsClient(v.Value, names) {
				names[v.Name] = true
				changed = true
			}
		}
	}
	return names
}

// clientNames is how a message names the client input: rules' request.
func clientNames(fromClient map[string]bool) string {
	if fromClient["request"] {
		return "request"
	}
	return "the client"
}

func readsClient(n ast.Node, fromClient map[string]bool) bool {
	found := false
	walk(n, func(n ast.Node) {
		if id, ok := n.(*ast.IdentifierNode); ok && fromClient[id.Value] {
			found = true
		}
	})
	return found
}

func hasRange(n ast.Node) bool {
	found := false
	walk(n, func(n ast.Node) {
		if b, ok := n.(*ast.BinaryNode); ok && b.Operator == ".." {
			found = true
		}
	})
	return found
}

// isMap reports whether n is a map, in which in looks up one key.
func isMap(n ast.Node) bool {
	t := n.Type()
	return t != nil && t.Kind() == reflect.Map
}

func isString(n ast.Node) bool {
	_, ok := n.(*ast.StringNode)
	return ok
}

func refuseUnavailable(tree *parser.Tree) error {
	var found *ast.BuiltinNode
	walk(tree.Node, func(n ast.Node) {
		if b, ok := n.(*ast.BuiltinNode); ok && unavailable[b.Name] != "" && found == nil {
			found = b
		}
	})
	if found == nil {
		return nil
	}
	return exprRefusal(tree.Source, found, "%s is not available: %s", found.Name, unavailable[found.Name])
}

// walk calls fn on every node of the tree under n, including the map body
// that the optimizer folds into a filter.
func walk(n ast.Node, fn func(ast.Node)) {
	ast.Walk(&n, visitor(fn))
}

type visitor func(ast.Node)

func (v visitor) Visit(n *ast.Node) {
	if b, ok := (*n).(*ast.BuiltinNode); ok && b.Map != nil {
		ast.Walk(&b.Map, v)
	}
	v(*n)
}

// exprRefusal is an error at node n of source src, on one line.
func exprRefusal(src file.Source, n ast.Node, format string, args ...any) error {
	fe := (&file.Error{Location: n.Location(), Message: fmt.Sprintf(format, args...)}).Bind(src)
	return errors.New(ExprMessage(fe))
}

// ExprMessage is an expr-lang error on one line with its position, without
// the drawing of the source that expr appends: a config check lists one
// problem a line.
func ExprMessage(err error) string {
	var fe *file.Error
	if errors.As(err, &fe) {
		if fe.Line > 0 {
			return fmt.Sprintf("%s (at %d:%d)", fe.Message, fe.Line, fe.Column+1)
		}
		return fe.Message
	}
	return err.Error()
}

// ReadsClock reports whether a compiled expression calls now(): its value
// then changes from one request to the next, and what it gives a session
// cannot be remembered.
func ReadsClock(prog *vm.Program) bool {
	node := prog.Node()
	v := &clockFinder{}
	ast.Walk(&node, v)
	return v.found
}

type clockFinder struct{ found bool }

func (f *clockFinder) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.BuiltinNode:
		f.found = f.found || n.Name == "now"
	case *ast.CallNode:
		if id, ok := n.Callee.(*ast.IdentifierNode); ok && id.Value == "now" {
			f.found = true
		}
	}
}
