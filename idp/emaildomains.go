package idp

import (
	"fmt"
	"regexp"
	"regexp/syntax"
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
//     a string with two unquoted @: no address under RFC 5321 and 5322 (an
//     @ in a local part must be quoted), yet some IdPs pass it on, and what
//     their "verified" checked of it is their own reading, so that it says
//     nothing of company.com (oauth2-proxy's GHSA-c5c4-8r6x-56w3 was this
//     test in its domain check);
//   - addr endsWith "company.com" is true of eve@evilcompany.com;
//   - addr contains "@company.com" is true of eve@company.com.evil.example;
//   - split(addr, "@")[1] is company.com for eve@company.com@evil.example,
//     and last(split(addr, "@")), split(addr, "@")[-1] and
//     addr[lastIndexOf(addr, "@")+1:] are company.com for
//     eve@evil.example@company.com;
//   - hasSuffix(addr, s) and addr[-n:] == s are addr endsWith s;
//     indexOf(addr, s) and lastIndexOf(addr, s) find s anywhere in it;
//   - addr matches ".+@company[.]com$" or "@(a|b)[.]com$" is true of
//     eve@evil.example@company.com or eve@evil.example@a.com.
//
// addr is the profile's email, a claim whose name holds "mail"
// (claims.mail, claims?.mail), or either through lower, upper or trim, or
// with a default (??). Each line says what to write instead: addr matches
// "^[^@]+@company[.]com$", or "^[^@]+@([^@]+[.])?company[.]com$" for
// endsWith "company.com", which took the subdomains: what to write takes
// every address at the domain that the test took, in the same case. A
// src that does not parse gives none.
func EmailDomainWarnings(src string) []string {
	tree, err := parser.Parse(src)
	if err != nil {
		return nil
	}
	// A suffix slice compared with a string is judged as endsWith, and
	// then not again on its own.
	judged := map[ast.Node]bool{}
	walk(tree.Node, func(n ast.Node) {
		if b, ok := n.(*ast.BinaryNode); ok && b.Operator == "==" {
			for _, side := range []ast.Node{b.Left, b.Right} {
				if _, ok := suffixSlice(side); ok {
					judged[side] = true
				}
			}
		}
	})
	var warnings []string
	walk(tree.Node, func(n ast.Node) {
		if judged[n] {
			return
		}
		w := emailDomainWarning(n)
		if w != "" && !slices.Contains(warnings, w) {
			warnings = append(warnings, w)
		}
	})
	return warnings
}

// twoAt says what is wrong with an address that has a second @ before the
// domain a test looks for.
const twoAt = "a string with two unquoted @, no address under RFC 5322 (an @ in a local part must be quoted) " +
	"but one that some IdPs pass on, so their verification vouches for nothing at the domain (allowed_email_domains refuses it)"

// emailDomainWarning is EmailDomainWarnings' line for node n, or "".
func emailDomainWarning(n ast.Node) string {
	if addr, last, ok := atPart(n); ok {
		example, which := "eve@company.com@evil.example", "first"
		if last {
			example, which = "eve@evil.example@company.com", "last"
		}
		return fmt.Sprintf("%s: the text after the %s @, not the domain: company.com of %s, %s; "+
			`write %s matches "^[^@]+@company[.]com$" with your domain`, n, which, example, twoAt, operand(addr))
	}
	if b, ok := n.(*ast.BuiltinNode); ok && (b.Name == "indexOf" || b.Name == "lastIndexOf") && len(b.Arguments) == 2 && isAddress(b.Arguments[0]) {
		// indexOf(addr, "@") alone finds the one @ (or checks there is one):
		// what is taken after it is judged where it is taken.
		text, ok := b.Arguments[1].(*ast.StringNode)
		if !ok || !strings.HasPrefix(text.Value, "@") || text.Value == "@" {
			return ""
		}
		domain := text.Value[1:]
		w := fmt.Sprintf("%s: finds %s anywhere in the text, also in eve%s.evil.example, an address at another domain, "+
			"and in eve@evil.example%s, %s", n, text.Value, text.Value, text.Value, twoAt)
		return w + suggestion(b.Arguments[0], "", domain)
	}
	addr, op, text, ok := textTest(n)
	if !ok {
		return ""
	}
	var example, what, domain, flags string
	switch {
	case op == "matches":
		return patternWarning(n, addr, text)
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
		// This took the domain's subdomains too: what to write keeps
		// them, so as to lock out no one it let in.
		w := fmt.Sprintf("%s: also true of eve@evil%s, an address at another domain", n, text)
		if pattern, ok := domainPattern(text); ok {
			return w + fmt.Sprintf(`; write %s matches "^[^@]+@([^@]+[.])?%s$"`, operand(addr), pattern)
		}
		return w + fmt.Sprintf(`; write %s matches "^[^@]+@([^@]+[.])?company[.]com$" with your domain`, operand(addr))
	default:
		return ""
	}
	return fmt.Sprintf("%s: also true of %s, %s", n, example, what) + suggestion(addr, flags, domain)
}

// suggestion is "; write addr matches ..." for the addresses at domain.
func suggestion(addr ast.Node, flags, domain string) string {
	if pattern, ok := domainPattern(domain); ok {
		return fmt.Sprintf(`; write %s matches "%s^[^@]+@%s$"`, operand(addr), flags, pattern)
	}
	return fmt.Sprintf(`; write %s matches "^[^@]+@company[.]com$" with your domain`, operand(addr))
}

// patternWarning is the line for addr matches pattern (node n) when the
// pattern takes an address at some domain and also that address with a
// second @ before it: ".+@company[.]com$", "@company\\.com$",
// "@(a|b)[.]com$". What to write keeps the pattern after its last @, its
// flags and so its case, and puts ^[^@]+ before the @.
func patternWarning(n, addr ast.Node, pattern string) string {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return ""
	}
	flags := ""
	if strings.HasPrefix(pattern, "(?i)") {
		flags = "(?i)" // what to write folds case as this did
	}
	at := lastTopLevelAt(pattern)
	if at < 0 {
		return ""
	}
	rest := pattern[at+1:]
	domain, ok := sampleDomain(flags + rest)
	if !ok || !re.MatchString("eve@"+domain) || !re.MatchString("eve@evil.example@"+domain) {
		return ""
	}
	w := fmt.Sprintf("%s: also true of eve@evil.example@%s, %s", n, domain, twoAt)
	if d := patternDomain(pattern); d != "" {
		return w + suggestion(addr, flags, d)
	}
	if !strings.HasSuffix(rest, "$") && !strings.HasSuffix(rest, `\z`) {
		rest += "$"
	}
	better := flags + "^[^@]+@" + strings.ReplaceAll(rest, `\.`, "[.]")
	// Only what takes the address and not the one with two @, and no
	// other @ after the domain's: else the reader writes it.
	if fixed, err := regexp.Compile(better); err != nil || !fixed.MatchString("eve@"+domain) ||
		fixed.MatchString("eve@evil.example@"+domain) || fixed.MatchString("eve@"+domain+"@evil.example") {
		return w + fmt.Sprintf(`; write %s matches "^[^@]+@company[.]com$" with your domain`, operand(addr))
	}
	return w + fmt.Sprintf(`; write %s matches "%s"`, operand(addr), strings.ReplaceAll(better, `\`, `\\`))
}

// lastTopLevelAt is the index in pattern of its last @ outside any group,
// class or escape, or -1.
func lastTopLevelAt(pattern string) int {
	at, depth, class := -1, 0, false
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; {
		case c == '\\':
			i++
		case class:
			class = c != ']'
		case c == '[':
			class = true
			if strings.HasPrefix(pattern[i+1:], "]") || strings.HasPrefix(pattern[i+1:], "^]") {
				i += strings.Index(pattern[i+1:], "]") + 1 // a ] first is a member
			}
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == '@' && depth == 0:
			at = i
		}
	}
	return at
}

// sampleDomain is a shortest text that the regular expression pattern, the
// part of one after its last @, takes, when that is a domain name: a.com of
// (a|b)[.]com$.
func sampleDomain(pattern string) (string, bool) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return "", false
	}
	var b strings.Builder
	var sample func(re *syntax.Regexp) bool
	sample = func(re *syntax.Regexp) bool {
		switch re.Op {
		case syntax.OpLiteral:
			if re.Flags&syntax.FoldCase != 0 {
				b.WriteString(strings.ToLower(string(re.Rune)))
			} else {
				b.WriteString(string(re.Rune))
			}
		case syntax.OpCharClass:
			r, ok := classSample(re.Rune)
			if !ok {
				return false
			}
			b.WriteRune(r)
		case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
			b.WriteByte('x')
		case syntax.OpCapture, syntax.OpPlus:
			return sample(re.Sub[0])
		case syntax.OpRepeat:
			for range re.Min {
				if !sample(re.Sub[0]) {
					return false
				}
			}
		case syntax.OpConcat:
			for _, sub := range re.Sub {
				if !sample(sub) {
					return false
				}
			}
		case syntax.OpAlternate:
			return sample(re.Sub[0])
		case syntax.OpStar, syntax.OpQuest, syntax.OpEmptyMatch, syntax.OpEndText, syntax.OpEndLine, syntax.OpBeginText, syntax.OpBeginLine:
		default:
			return false
		}
		return true
	}
	if !sample(re) {
		return "", false
	}
	d := b.String()
	if _, ok := domainPattern(d); !ok || !strings.Contains(d, ".") {
		return "", false
	}
	return d, true
}

// classSample is a member of the character class of ranges: a lower-case
// letter, a digit, '.' or '-' when it holds one.
func classSample(ranges []rune) (rune, bool) {
	for _, want := range "abcdefghijklmnopqrstuvwxyz0123456789.-" {
		for i := 0; i+1 < len(ranges); i += 2 {
			if ranges[i] <= want && want <= ranges[i+1] {
				return want, true
			}
		}
	}
	return 0, false
}

// atPart reads n as the text after an @ of the address addr: after the
// first (split(addr, "@")[1], addr[indexOf(addr, "@")+1:]) or the last
// (last(split(addr, "@")), split(addr, "@")[-1],
// addr[lastIndexOf(addr, "@")+1:]).
func atPart(n ast.Node) (addr ast.Node, last, ok bool) {
	switch n := n.(type) {
	case *ast.MemberNode:
		addr, ok := splitAtAt(n.Node)
		if !ok {
			return nil, false, false
		}
		switch i := n.Property.(type) {
		case *ast.IntegerNode:
			return addr, false, i.Value == 1
		case *ast.UnaryNode:
			one, isInt := i.Node.(*ast.IntegerNode)
			return addr, true, i.Operator == "-" && isInt && one.Value == 1
		}
	case *ast.BuiltinNode:
		if n.Name == "last" && len(n.Arguments) == 1 {
			addr, ok := splitAtAt(n.Arguments[0])
			return addr, true, ok
		}
	case *ast.SliceNode:
		from := n.From
		if plus, ok := from.(*ast.BinaryNode); ok && plus.Operator == "+" {
			from = plus.Left
		}
		find, isCall := from.(*ast.BuiltinNode)
		if isCall && isAddress(n.Node) && (find.Name == "indexOf" || find.Name == "lastIndexOf") &&
			len(find.Arguments) == 2 && isAddress(find.Arguments[0]) && isStringValue(find.Arguments[1], "@") {
			return n.Node, find.Name == "lastIndexOf", true
		}
	}
	return nil, false, false
}

// splitAtAt reads n as split(addr, "@").
func splitAtAt(n ast.Node) (ast.Node, bool) {
	split, ok := n.(*ast.BuiltinNode)
	if !ok || split.Name != "split" || len(split.Arguments) != 2 || !isAddress(split.Arguments[0]) || !isStringValue(split.Arguments[1], "@") {
		return nil, false
	}
	return split.Arguments[0], true
}

// suffixSlice reads n as addr[-k:], the last k characters of an address.
func suffixSlice(n ast.Node) (ast.Node, bool) {
	s, ok := n.(*ast.SliceNode)
	if !ok || s.To != nil || !isAddress(s.Node) {
		return nil, false
	}
	minus, ok := s.From.(*ast.UnaryNode)
	if !ok || minus.Operator != "-" {
		return nil, false
	}
	_, isInt := minus.Node.(*ast.IntegerNode)
	return s.Node, isInt
}

// textTest reads n as a test of an address's text against a string: addr
// endsWith, contains or matches text, hasSuffix(addr, text) or
// addr[-k:] == text, which are endsWith.
func textTest(n ast.Node) (addr ast.Node, op, text string, ok bool) {
	var s ast.Node
	switch n := n.(type) {
	case *ast.BinaryNode:
		addr, op, s = n.Left, n.Operator, n.Right
		if op == "==" {
			if _, isStr := addr.(*ast.StringNode); isStr {
				addr, s = s, addr
			}
			a, isSuffix := suffixSlice(addr)
			if !isSuffix {
				return nil, "", "", false
			}
			addr, op = a, "endsWith"
		}
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
