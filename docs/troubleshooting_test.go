package docs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The reasons a login_failed line gives for a set-up mistake, each with a
// row in troubleshooting.md that says what to fix, and each still a word
// the code logs: a reason renamed in one place and not the other fails.
func TestTroubleshootingExplainsEveryReason(t *testing.T) {
	reasons := []string{
		"invalid_client", "unauthorized_client", "token_exchange", "clock_skew",
		"state", "state_cookie_missing", "state_cookie_invalid", "session_cookie_missing", "session_cookie_invalid",
		"session_cookie_malformed",
		"saml_signature", "saml_audience", "saml_acs_url", "saml_issuer", "saml_unsigned", "saml_sha1", "saml_encrypted",
		"saml_idp_initiated", "idp_error", "busy", "another_site",
		"service_bind", "user_search", "group_search", "invalid_credentials", "directory_unavailable",
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
