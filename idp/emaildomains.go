package idp

import (
	"fmt"
	"regexp"
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
//   - split(addr, "@")[1] is company.com for eve@company.com@evil.example;
//   - hasSuffix(addr, s) is addr endsWith s;
//   - addr matches ".+@company[.]com$" is true of eve@evil.example@company.com.
//
// addr is the profile's email, a claim whose name holds "mail"
// (claims.mail, claims?.mail), or either through lower, upper or trim, or
// with a default (??). Each line says what
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
			`write %s matches "^[^@]+@company[.]com$" with your domain`, m, operand(split.Arguments[0]))
	}
	addr, op, text, ok := textTest(n)
	if !ok {
		return ""
	}
	const twoAt = "an address with two @ that mail software may deliver to evil.example (allowed_email_domains refuses it)"
	var example, what, domain, flags string
	switch {
	case op == "matches":
		if strings.HasPrefix(text, "(?i)") {
			flags = "(?i)" // what to write folds case as this did
		}
		// A pattern for one domain that also takes an address with two @
		// before it: ".+@company[.]com$", "@company\\.com$".
		domain = patternDomain(text)
		re, err := regexp.Compile(text)
		if domain == "" || err != nil || !re.MatchString("eve@"+domain) || !re.MatchString("eve@evil.example@"+domain) {
			return ""
		}
		example, what = "eve@evil.example@"+domain, twoAt
	case text == "@":
		return "" // has an address at all: no domain test
	case op == "contains" && strings.HasPrefix(text, "@"):
		domain = text[1:]
		example, what = "eve"+text+".evil.example", "an address at another domain"
	case op == "contains":
		return ""
	case strings.HasPrefix(text, "@"):
		domain = text[1:]
		example, what = "eve@evil.example"+text, twoAt
	case strings.HasPrefix(text, "."):
		// A parent domain's subdomains: only the two @ are wrong, and
		// what to write keeps the subdomains.
		w := fmt.Sprintf("%s: also true of eve@evil.example@x%s, %s", n, text, twoAt)
		if pattern, ok := domainPattern(text[1:]); ok {
			return w + fmt.Sprintf(`; write %s matches "^[^@]+@[^@]+[.]%s$"`, operand(addr), pattern)
		}
		return w + fmt.Sprintf(`; write %s matches "^[^@]+@[^@]+[.]company[.]com$" with your domain`, operand(addr))
	case !strings.Contains(text, "@"):
		domain = text
		example, what = "eve@evil"+text, "an address at another domain"
	default:
		return ""
	}
	w := fmt.Sprintf("%s: also true of %s, %s", n, example, what)
	if pattern, ok := domainPattern(domain); ok {
		return w + fmt.Sprintf(`; write %s matches "%s^[^@]+@%s$"`, operand(addr), flags, pattern)
	}
	return w + fmt.Sprintf(`; write %s matches "^[^@]+@company[.]com$" with your domain`, operand(addr))
}

// textTest reads n as a test of an address's text against a string: addr
// endsWith, contains or matches text, or hasSuffix(addr, text), which is
// endsWith.
func textTest(n ast.Node) (addr ast.Node, op, text string, ok bool) {
	var s ast.Node
	switch n := n.(type) {
	case *ast.BinaryNode:
		addr, op, s = n.Left, n.Operator, n.Right
	case *ast.BuiltinNode:
		if n.Name != "hasSuffix" || len(n.Arguments) != 2 {
			return nil, "", "", false
		}
		addr, op, s = n.Arguments[0], "endsWith", n.Arguments[1]
	default:
		return nil, "", "", false
	}
	str, isStr := s.(*ast.StringNode)
	if !isStr || (op != "endsWith" && op != "contains" && op != "matches") || !isAddress(addr) {
		return nil, "", "", false
	}
	return addr, op, str.Value, true
}

// patternDomain is the one domain a regular expression written to match
// the addresses at it names after its last @, its dots written [.], \. or
// ., ending the pattern or followed by $ or \z only; "" for any other.
func patternDomain(pattern string) string {
	i := strings.LastIndex(pattern, "@")
	if i < 0 {
		return ""
	}
	rest := pattern[i+1:]
	for _, end := range []string{"$", `\z`} {
		rest = strings.TrimSuffix(rest, end)
	}
	rest = strings.NewReplacer("[.]", ".", `\.`, ".").Replace(rest)
	if _, ok := domainPattern(rest); !ok {
		return ""
	}
	return rest
}

// operand is n as the left operand of matches: in parentheses when it is
// itself an operation (claims.mail ?? "").
func operand(n ast.Node) string {
	if _, ok := n.(*ast.BinaryNode); ok {
		return "(" + n.String() + ")"
	}
	return n.String()
}

// isAddress reports whether n reads an email address: the profile's email,
// a claim whose name holds "mail" (claims.mail, claims["email"],
// claims?.mail), or either through lower, upper or trim, or ?? a default.
func isAddress(n ast.Node) bool {
	switch n := n.(type) {
	case *ast.ChainNode:
		return isAddress(n.Node)
	case *ast.BinaryNode:
		return n.Operator == "??" && isAddress(n.Left)
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
