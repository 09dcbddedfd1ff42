package idp

import (
	"fmt"
	"slices"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
)

// EmailDomainWarnings returns a line for each test in src, an expression
// from the configuration, that finds an email address's domain in its text
// rather than after its one @, as allowed_email_domains does (Admit):
//
//   - addr endsWith "@company.com" is true of eve@evil.example@company.com,
//     an address with two @ that mail software may deliver to evil.example,
//     so that an IdP's "verified" says nothing of company.com
//     (oauth2-proxy's GHSA-c5c4-8r6x-56w3 was this test in its domain check);
//   - addr endsWith "company.com" is true of eve@evilcompany.com;
//   - addr contains "@company.com" is true of eve@company.com.evil.example;
//   - split(addr, "@")[1] is company.com for eve@company.com@evil.example.
//
// addr is the profile's email, a claim whose name holds "mail"
// (claims.mail), or either through lower, upper or trim. Each line says what
// to write instead: addr matches "^[^@]+@company[.]com$". A src that does
// not parse gives none.
func EmailDomainWarnings(src string) []string {
	tree, err := parser.Parse(src)
	if err != nil {
		return nil
	}
	var warnings []string
	walk(tree.Node, func(n ast.Node) {
		w := emailDomainWarning(n)
		if w != "" && !slices.Contains(warnings, w) {
			warnings = append(warnings, w)
		}
	})
	return warnings
}

// emailDomainWarning is EmailDomainWarnings' line for node n, or "".
func emailDomainWarning(n ast.Node) string {
	if m, ok := n.(*ast.MemberNode); ok {
		split, ok := m.Node.(*ast.BuiltinNode)
		index, isInt := m.Property.(*ast.IntegerNode)
		if !ok || !isInt || index.Value != 1 || split.Name != "split" || len(split.Arguments) != 2 ||
			!isAddress(split.Arguments[0]) || !isStringValue(split.Arguments[1], "@") {
			return ""
		}
		return fmt.Sprintf("%s: the text after the first @, not the domain of an address with two "+
			"(company.com of eve@company.com@evil.example, which mail software may deliver to evil.example); "+
			`write email matches "^[^@]+@company[.]com$" with your domain`, m)
	}
	b, ok := n.(*ast.BinaryNode)
	if !ok || (b.Operator != "endsWith" && b.Operator != "contains") || !isAddress(b.Left) {
		return ""
	}
	s, ok := b.Right.(*ast.StringNode)
	if !ok {
		return ""
	}
	text := s.Value
	var example, what, domain string
	switch {
	case b.Operator == "contains" && strings.HasPrefix(text, "@"):
		domain = text[1:]
		example, what = "eve"+text+".evil.example", "an address at another domain"
	case b.Operator == "contains":
		return ""
	case strings.HasPrefix(text, "@"):
		domain = text[1:]
		example, what = "eve@evil.example"+text, "an address with two @ that mail software may deliver to evil.example (allowed_email_domains refuses it)"
	case strings.HasPrefix(text, "."):
		// A parent domain and its subdomains: only the two @ are wrong.
		example, what = "eve@evil.example@x"+text, "an address with two @ that mail software may deliver to evil.example (allowed_email_domains refuses it)"
	case !strings.Contains(text, "@"):
		domain = text
		example, what = "eve@evil"+text, "an address at another domain"
	default:
		return ""
	}
	w := fmt.Sprintf("%s: also true of %s, %s", b, example, what)
	if pattern, ok := domainPattern(domain); ok {
		return w + fmt.Sprintf(`; write %s matches "^[^@]+@%s$"`, b.Left, pattern)
	}
	return w + fmt.Sprintf(`; write %s matches "^[^@]+@company[.]com$" with your domain`, b.Left)
}

// isAddress reports whether n reads an email address: the profile's email,
// a claim whose name holds "mail" (claims.mail, claims["email"]), or either
// through lower, upper or trim.
func isAddress(n ast.Node) bool {
	switch n := n.(type) {
	case *ast.BuiltinNode:
		return (n.Name == "lower" || n.Name == "upper" || n.Name == "trim") && len(n.Arguments) > 0 && isAddress(n.Arguments[0])
	case *ast.MemberNode:
		name, ok := n.Property.(*ast.StringNode)
		return isField(n, "email") || ok && isField(n.Node, "claims") && strings.Contains(strings.ToLower(name.Value), "mail")
	}
	return isField(n, "email")
}

// isStringValue reports whether n is the string literal s.
func isStringValue(n ast.Node, s string) bool {
	str, ok := n.(*ast.StringNode)
	return ok && str.Value == s
}

// domainPattern is domain as a regular expression that matches it alone,
// its dots written [.] as the docs write them (no backslash to double in an
// expression's string); false for a domain with any other character than
// ASCII letters, digits, '-' and '.'.
func domainPattern(domain string) (string, bool) {
	if domain == "" || strings.Trim(domain, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") != "" {
		return "", false
	}
	return strings.ReplaceAll(domain, ".", "[.]"), true
}
