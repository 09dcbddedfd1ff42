package dsserver

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
)

// TestStartLoadsTreeWithMemberOf checks what the e2e tests rely on: the
// service account can search, and the memberOf plugin fills memberOf in,
// through nested groups too (bob is in annotators, which is in workers).
func TestStartLoadsTreeWithMemberOf(t *testing.T) {
	s := Start(t, Options{})
	t.Logf("ns-slapd ready with the tree in %s", s.StartupTime)

	search := func(filter string, attrs ...string) string {
		t.Helper()
		args := append([]string{"-x", "-LLL", "-H", s.URL, "-D", ldapserver.ServiceDN, "-w", ldapserver.ServicePassword, "-b", Suffix, filter}, attrs...)
		out, err := exec.Command("ldapsearch", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ldapsearch %s: %v\n%s", filter, err, out)
		}
		return string(out)
	}
	if out := search("(uid=alice)", "memberOf"); !strings.Contains(out, "memberOf: "+ldapserver.GroupDN("cvat-admins")) {
		t.Errorf("alice has no memberOf cvat-admins:\n%s", out)
	}
	if out := search("(uid=bob)", "memberOf"); !strings.Contains(out, "memberOf: "+ldapserver.GroupDN("annotators")) ||
		!strings.Contains(out, "memberOf: "+ldapserver.GroupDN("workers")) {
		t.Errorf("bob's memberOf lacks annotators or workers:\n%s", out)
	}
}

// TestAnonymousCannotSearch makes sure the e2e tests exercise the service
// account: an anonymous search finds nothing.
func TestAnonymousCannotSearch(t *testing.T) {
	s := Start(t, Options{})
	out, _ := exec.Command("ldapsearch", "-x", "-LLL", "-H", s.URL, "-b", Suffix, "(uid=alice)").CombinedOutput()
	if strings.Contains(string(out), "uid=alice") {
		t.Errorf("anonymous search found alice:\n%s", out)
	}
}

// TestTLSServesLDAPSAndStartTLS checks that ns-slapd took the certificate
// from its NSS database: ldapsearch, trusting CAFile alone, reads over
// ldaps:// and after StartTLS.
func TestTLSServesLDAPSAndStartTLS(t *testing.T) {
	s := Start(t, Options{TLS: true})
	for _, args := range [][]string{{"-H", s.LDAPSURL}, {"-H", s.URL, "-ZZ"}} {
		cmd := exec.Command("ldapsearch", append(args, "-x", "-LLL", "-D", ldapserver.ServiceDN, "-w", ldapserver.ServicePassword, "-b", Suffix, "(uid=alice)", "uid")...)
		cmd.Env = append(cmd.Environ(), "LDAPTLS_CACERT="+s.CAFile, "LDAPTLS_REQCERT=demand")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "uid: alice") {
			t.Errorf("ldapsearch %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
