package ldapserver

import (
	"os/exec"
	"strings"
	"testing"
)

// TestStartLoadsTreeWithMemberOf checks what the provider tests rely on: the
// service account can search, memberOf is filled in by the overlay, and the
// tree survives a restart.
func TestStartLoadsTreeWithMemberOf(t *testing.T) {
	s := Start(t, Options{})
	t.Logf("slapd ready with the tree in %s", s.StartupTime)

	search := func(filter string, attrs ...string) string {
		t.Helper()
		args := append([]string{"-x", "-LLL", "-H", s.URL, "-D", ServiceDN, "-w", ServicePassword, "-b", Suffix, filter}, attrs...)
		out, err := exec.Command("ldapsearch", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ldapsearch %s: %v\n%s", filter, err, out)
		}
		return string(out)
	}
	if out := search("(uid=alice)", "memberOf"); !strings.Contains(out, "memberOf: "+GroupDN("cvat-admins")) {
		t.Errorf("alice has no memberOf cvat-admins:\n%s", out)
	}
	if out := search("(cn=annotators)", "memberOf"); !strings.Contains(out, "memberOf: "+GroupDN("workers")) {
		t.Errorf("annotators has no memberOf workers:\n%s", out)
	}

	s.Restart()
	if out := search("(uid=bob)", "mail"); !strings.Contains(out, "mail: bob@example.com") {
		t.Errorf("bob missing after restart:\n%s", out)
	}
}

// TestAnonymousCannotSearch makes sure the provider tests exercise the
// service account: an anonymous search finds nothing.
func TestAnonymousCannotSearch(t *testing.T) {
	s := Start(t, Options{})
	out, _ := exec.Command("ldapsearch", "-x", "-LLL", "-H", s.URL, "-b", Suffix, "(uid=alice)").CombinedOutput()
	if strings.Contains(string(out), "uid=alice") {
		t.Errorf("anonymous search found alice:\n%s", out)
	}
}

// TestTLS checks StartTLS and ldaps:// with the test CA.
func TestTLS(t *testing.T) {
	s := Start(t, Options{TLS: true})
	for _, args := range [][]string{
		{"-H", s.URL, "-ZZ"},
		{"-H", s.LDAPSURL},
	} {
		cmd := exec.Command("ldapwhoami", append(args, "-x", "-D", ServiceDN, "-w", ServicePassword)...)
		cmd.Env = append(cmd.Environ(), "LDAPTLS_CACERT="+s.CAFile)
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "cn=portcullis") {
			t.Errorf("ldapwhoami %v: %v\n%s", args, err, out)
		}
	}
}
