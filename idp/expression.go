package idp

import (
	"errors"
	"fmt"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// Every expression in the configuration (role_mapping's `when`,
// attribute_pass's headers, a rule's `when` and `allow_if`) is an expr-lang
// program over a Profile, alone or, for rules, embedded beside the request.
// They are compiled here, beside the type whose expr tags name what they
// read, so that the packages that own those keys compile them alike: one set
// of options, one way of reporting a mistake.

// CompileExpr compiles src, an expression from the configuration, over env
// (a Profile, or a type that embeds one) with the caller's opts (expr.AsBool
// for a condition). Its error is one line, as ExprMessage writes it, for the
// caller to prefix with the key.
func CompileExpr(src string, env any, opts ...expr.Option) (*vm.Program, error) {
	prog, err := expr.Compile(src, append([]expr.Option{expr.Env(env)}, opts...)...)
	if err != nil {
		return nil, errors.New(ExprMessage(err))
	}
	return prog, nil
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
