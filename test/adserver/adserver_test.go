package adserver

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDomainController checks what the e2e tests rely on, on one domain
// controller (provisioning is the slow part): the service account reads
// over ldaps:// and StartTLS with CAFile alone, a simple bind over plain
// ldap:// is refused, the in-chain rule finds nested groups, and
// AgePassword makes a password expired.
func TestDomainController(t *testing.T) {
	s := Start(t)
	t.Logf("samba ready at %s in %s (provisioning %s)", s.Addr, s.StartupTime.Round(time.Millisecond), s.ProvisionTime.Round(time.Millisecond))
	s.Add(t, User("ann", "Ann-Pass1!")+User("old", "Old-Pass1!")+
		Group("inner", UserDN("ann"))+Group("outer", GroupDN("inner")))

	run := func(tool string, args ...string) (string, error) {
		cmd := exec.Command(tool, args...)
		cmd.Env = append(cmd.Environ(), "LDAPTLS_CACERT="+s.CAFile, "LDAPTLS_REQCERT=demand")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	search := func(t *testing.T, server []string, filter string, attrs ...string) string {
		t.Helper()
		args := append(append(server, "-x", "-LLL", "-D", ServiceDN, "-w", ServicePassword, "-b", UsersDN, filter), attrs...)
		out, err := run("ldapsearch", args...)
		if err != nil {
			t.Fatalf("ldapsearch %s: %v\n%s", strings.Join(server, " "), err, out)
		}
		return out
	}
	t.Run("the service account reads over ldaps:// and StartTLS", func(t *testing.T) {
		for _, server := range [][]string{{"-H", s.LDAPSURL}, {"-H", s.URL, "-ZZ"}} {
			if out := search(t, server, "(sAMAccountName=ann)", "userPrincipalName"); !strings.Contains(out, "userPrincipalName: ann@ad.example.com") {
				t.Errorf("%s: no ann@ad.example.com:\n%s", strings.Join(server, " "), out)
			}
		}
	})
	t.Run("a simple bind over plain ldap:// is refused", func(t *testing.T) {
		out, err := run("ldapwhoami", "-x", "-H", s.URL, "-D", ServiceDN, "-w", ServicePassword)
		if err == nil || !strings.Contains(out, "Strong(er) authentication required (8)") {
			t.Errorf("ldapwhoami over ldap://: %v, want strong(er) authentication required:\n%s", err, out)
		}
	})
	t.Run("the in-chain rule finds nested groups", func(t *testing.T) {
		out := search(t, []string{"-H", s.LDAPSURL}, "(member:1.2.840.113556.1.4.1941:="+UserDN("ann")+")", "dn")
		if !strings.Contains(out, "dn: "+GroupDN("inner")) || !strings.Contains(out, "dn: "+GroupDN("outer")) {
			t.Errorf("in-chain search for ann lacks inner or outer:\n%s", out)
		}
	})
	t.Run("AgePassword expires a password: data 532", func(t *testing.T) {
		s.AgePassword(t, "old", 100*24*time.Hour)
		out, err := run("ldapwhoami", "-x", "-H", s.LDAPSURL, "-D", UserDN("old"), "-w", "Old-Pass1!")
		if err == nil || !strings.Contains(out, "data 532,") {
			t.Errorf("bind as old: %v, want data 532:\n%s", err, out)
		}
	})
}
