package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The reasons a login_failed line gives for a set-up mistake, each with a
// row in troubleshooting.md that says what to fix, and each still a word
// the code logs: a reason renamed in one place and not the other fails.
func TestTroubleshootingExplainsEveryReason(t *testing.T) {
	reasons := []string{
		"invalid_client", "unauthorized_client", "token_exchange", "clock_skew", "id_token_signing_alg",
		"userinfo_signing_alg",
		"state", "state_cookie_missing", "state_cookie_invalid", "session_cookie_missing", "session_cookie_invalid",
		"session_cookie_malformed",
		"saml_signature", "saml_audience", "saml_acs_url", "saml_issuer", "saml_unsigned", "saml_sha1", "saml_encrypted",
		"saml_idp_initiated", "idp_error", "busy", "another_site", "identity_unpassable",
		"service_bind", "user_search", "group_search", "directory_certificate", "invalid_credentials", "directory_unavailable",
		"idp_unavailable",
	}
	page, err := os.ReadFile("troubleshooting.md")
	if err != nil {
		t.Fatal(err)
	}
	var code strings.Builder
	for _, dir := range []string{"../idp", "../proxy"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			code.Write(b)
		}
	}
	for _, r := range reasons {
		if !strings.Contains(string(page), "`"+r+"`") {
			t.Errorf("troubleshooting.md has no row for reason %s", r)
		}
		if !strings.Contains(code.String(), `"`+r+`"`) {
			t.Errorf("no code logs reason %s any more: rename it here and in troubleshooting.md", r)
		}
	}
}

// Every reason the code can log (see loggedReasons) is named, in
// backquotes, by troubleshooting.md or the README, so that an operator
// who meets one in a log line finds what it means: a reason added to the
// code and to no page fails here.
func TestEveryLoggedReasonIsDocumented(t *testing.T) {
	var pages strings.Builder
	for _, p := range []string{"troubleshooting.md", "../README.md"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		pages.Write(b)
	}
	found := loggedReasons(t, "../idp", "../proxy", "../proxy/session", "../cmd/portcullis")
	// The scan must still find the reasons it found when written (35): a
	// change to how the code passes them must not make this pass by
	// finding none.
	if len(found) < 30 {
		t.Fatalf("found only %d reasons in the code: %v", len(found), found)
	}
	for _, r := range slices.Sorted(maps.Keys(found)) {
		if !strings.Contains(pages.String(), "`"+r+"`") {
			t.Errorf("%s logs reason %q, which neither troubleshooting.md nor the README names", found[r], r)
		}
	}
}

// reasonWord is a stable reason: lower case, digits and underscores. A
// `reason` that is a sentence (an admission refusal shown to the user, the
// debug lines of the cookie store) is no word for an alert to match.
var reasonWord = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// loggedReasons are the string constants, by where the first one is, that
// the non-test Go files of dirs give as a log line's reason: the value
// after a "reason" key in a call (slog.String("reason", …) and key-value
// pairs), the argument for a parameter named reason of a function declared
// there (loginFailed, samlLogoutRefused, setupError…), a Reason or reason
// field in a composite literal, and a value assigned to a variable named
// reason. Reasons computed otherwise (the OAuth error code an IdP sends,
// the config key of an LDAP search) are TestTroubleshootingExplainsEveryReason's.
func loggedReasons(t *testing.T, dirs ...string) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	var files []*ast.File
	for _, dir := range dirs {
		names, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, name, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
	}
	reasonParam := map[string]int{} // function name -> index of its reason parameter
	for _, f := range files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok {
				continue
			}
			i := 0
			for _, field := range fd.Type.Params.List {
				for _, n := range field.Names {
					if n.Name == "reason" {
						reasonParam[fd.Name.Name] = i
					}
					i++
				}
				if len(field.Names) == 0 {
					i++
				}
			}
		}
	}
	found := map[string]string{}
	note := func(e ast.Expr) {
		lit, ok := e.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return
		}
		s, err := strconv.Unquote(lit.Value)
		if err == nil && reasonWord.MatchString(s) && found[s] == "" {
			found[s] = fset.Position(lit.Pos()).String()
		}
	}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				name := ""
				switch fn := n.Fun.(type) {
				case *ast.Ident:
					name = fn.Name
				case *ast.SelectorExpr:
					name = fn.Sel.Name
				}
				if i, ok := reasonParam[name]; ok && i < len(n.Args) {
					note(n.Args[i])
				}
				for i, a := range n.Args[:max(len(n.Args)-1, 0)] {
					if lit, ok := a.(*ast.BasicLit); ok && lit.Value == `"reason"` {
						note(n.Args[i+1])
					}
				}
			case *ast.KeyValueExpr:
				if id, ok := n.Key.(*ast.Ident); ok && strings.EqualFold(id.Name, "reason") {
					note(n.Value)
				}
			case *ast.AssignStmt:
				for i, l := range n.Lhs {
					if id, ok := l.(*ast.Ident); ok && id.Name == "reason" && len(n.Rhs) == len(n.Lhs) {
						note(n.Rhs[i])
					}
				}
			}
			return true
		})
	}
	return found
}
