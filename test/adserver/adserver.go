// Package adserver runs a real Active Directory domain controller for
// tests: Samba's (Debian's samba, samba-ad-dc and samba-ad-provision
// packages), provisioned in a temporary directory and run in the
// foreground, its LDAP server only.
//
// Samba has no setting for its LDAP ports: it always listens on 389 and
// 636. So each server gets an address of its own on loopback, a random
// 127.x.y.z (Linux answers for all of 127.0.0.0/8; Samba's `interfaces`
// must be given the /8 to accept one no interface is configured with).
// Ports under 1024 need root: as another user Start runs samba through
// `sudo -n`, and fails the test saying so when that is not allowed.
//
// Provisioning (samba-tool domain provision) takes some 7 seconds, the
// rest well under one: start one server per test binary and share it
// between subtests.
//
// The domain is AD.EXAMPLE.COM (NetBIOS AD), its naming context
// DC=ad,DC=example,DC=com. Start adds a service account (ServiceDN) that
// reads users and groups, as any authenticated user may in AD. The server
// serves ldaps:// and StartTLS with a certificate from a test CA for its
// address; like a real domain controller (and Windows Server 2025's
// default), it refuses simple binds over plain ldap:// (`ldap server
// require strong auth`, on by default).
package adserver

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// The domain, its administrator and the service account Start adds.
const (
	Realm           = "AD.EXAMPLE.COM"
	DNSDomain       = "ad.example.com"
	NetBIOSDomain   = "AD"
	BaseDN          = "DC=ad,DC=example,DC=com"
	UsersDN         = "CN=Users," + BaseDN
	AdminDN         = "CN=Administrator," + UsersDN
	AdminPassword   = "Passw0rd!Admin1"
	ServiceDN       = "CN=cvat_bind," + UsersDN
	ServicePassword = "SuperSecurePassword^21"
)

// Server is a running Samba domain controller.
type Server struct {
	// Addr is the loopback address it listens on, at 389 and 636.
	Addr string
	// URL is ldap://ADDR (StartTLS offered), LDAPSURL ldaps://ADDR, and
	// CAFile the PEM file of the CA that signed the server's certificate.
	URL, LDAPSURL, CAFile string
	// ProvisionTime is how long samba-tool domain provision took, and
	// StartupTime the whole of Start.
	ProvisionTime, StartupTime time.Duration

	dir  string
	sudo bool
	mu   sync.Mutex
	cmd  *exec.Cmd
	done <-chan struct{}
	logs *process.Output
}

// Start provisions a domain in a temporary directory, runs samba on a
// random loopback address and adds the service account; samba is stopped
// when the test ends. It fails the test when Samba's packages are
// missing, or when samba cannot be run as root.
func Start(t testing.TB) *Server {
	t.Helper()
	began := time.Now()
	samba, err := process.LookPath("samba")
	if err != nil {
		t.Fatalf("adserver: %v: install Debian's samba-ad-dc (test/run.sh does)", err)
	}
	tool, err := process.LookPath("samba-tool")
	if err != nil {
		t.Fatalf("adserver: %v: install Debian's samba and samba-ad-provision (test/run.sh does)", err)
	}
	if _, err := process.LookPath("ldapadd"); err != nil {
		t.Fatalf("adserver: %v: install Debian's ldap-utils (test/run.sh does)", err)
	}
	s := &Server{dir: t.TempDir(), logs: &process.Output{}, sudo: os.Geteuid() != 0}
	if s.sudo {
		// Samba listens on 389 and 636 whatever it is told.
		if out, err := exec.Command("sudo", "-n", samba, "--version").CombinedOutput(); err != nil {
			t.Fatalf("adserver: samba must listen on ports 389 and 636, which only root may, and `sudo -n %s` "+
				"is not allowed for uid %d (%v: %s): run the tests as root, or let this user run %s with sudo without a password",
				samba, os.Geteuid(), err, strings.TrimSpace(string(out)), samba)
		}
	}
	s.Addr = freeLoopback(t)
	s.URL, s.LDAPSURL = "ldap://"+s.Addr, "ldaps://"+s.Addr

	provisioned := time.Now()
	dc := filepath.Join(s.dir, "dc")
	// Provisioning chowns the sysvol share to root: as root too.
	provision := s.command(tool, "domain", "provision", "--targetdir="+dc,
		"--realm="+Realm, "--domain="+NetBIOSDomain, "--adminpass="+AdminPassword,
		"--server-role=dc", "--dns-backend=NONE", "--use-rfc2307", "--host-ip="+s.Addr,
		"--option=interfaces="+s.Addr+"/8", "--option=bind interfaces only=yes",
		"--option=server services=ldap")
	if out, err := provision.CombinedOutput(); err != nil {
		t.Fatalf("adserver: samba-tool domain provision: %v\n%s", err, out)
	}
	s.ProvisionTime = time.Since(provisioned)
	if s.sudo {
		// writeTLS edits it.
		conf := filepath.Join(dc, "etc", "smb.conf")
		if out, err := s.command("chown", fmt.Sprint(os.Geteuid()), conf).CombinedOutput(); err != nil {
			t.Fatalf("adserver: chown %s: %v: %s", conf, err, out)
		}
	}
	s.writeTLS(t)

	t.Cleanup(func() {
		s.Stop()
		if s.sudo {
			// Files samba made as root would make t.TempDir's removal fail.
			_ = s.command("chown", "-R", fmt.Sprint(os.Geteuid()), s.dir).Run()
		}
		if t.Failed() {
			t.Logf("adserver: samba output:\n%s", s.logs)
		}
	})
	s.start(t, samba)
	s.Add(t, User("cvat_bind", ServicePassword))
	s.StartupTime = time.Since(began)
	return s
}

// command is name run as root: through `sudo -n` when the tests are not.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	if s.sudo {
		return exec.Command("sudo", append([]string{"-n", name}, args...)...)
	}
	return exec.Command(name, args...)
}

// freeLoopback picks a 127.x.y.z nobody listens on at 389.
func freeLoopback(t testing.TB) string {
	t.Helper()
	for range 20 {
		addr := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254))
		if !process.Accepts(net.JoinHostPort(addr, "389"))() {
			return addr
		}
	}
	t.Fatal("adserver: no free loopback address in 20 tries")
	return ""
}

// writeTLS makes the server's certificate for Addr, signed by a test CA,
// and points smb.conf at it (Samba's own is for its host name, without
// SANs), with samba's pid file and log inside the directory too.
func (s *Server) writeTLS(t testing.TB) {
	t.Helper()
	ca := testcert.NewCA(t, "adserver test CA")
	pair := ca.IssueOnlyFor(t, s.Addr, time.Now().Add(24*time.Hour))
	s.CAFile = filepath.Join(s.dir, "ca.pem")
	certFile, keyFile := filepath.Join(s.dir, "server.pem"), filepath.Join(s.dir, "server.key")
	if err := os.WriteFile(s.CAFile, ca.PEM, 0o600); err != nil {
		t.Fatalf("adserver: %v", err)
	}
	pair.Write(t, certFile, keyFile)
	if s.sudo {
		// Samba refuses a key file that is not its own user's.
		if out, err := s.command("chown", "0", keyFile).CombinedOutput(); err != nil {
			t.Fatalf("adserver: sudo -n chown 0 %s: %v: %s", keyFile, err, out)
		}
	}
	conf := filepath.Join(s.dir, "dc", "etc", "smb.conf")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatalf("adserver: %v", err)
	}
	extra := strings.Join([]string{
		"\ttls enabled = yes",
		"\ttls certfile = " + certFile,
		"\ttls keyfile = " + keyFile,
		"\ttls cafile = " + s.CAFile,
		// Defaults under /run/samba and /var/log/samba: another samba
		// (another test binary's) would share them.
		"\tpid directory = " + filepath.Join(s.dir, "dc"),
		"\tlog file = " + filepath.Join(s.dir, "dc", "samba.log"),
	}, "\n")
	text, ok := strings.CutPrefix(string(b), "# Global parameters\n[global]\n")
	if !ok {
		t.Fatalf("adserver: %s does not start with its [global] section:\n%s", conf, b)
	}
	if err := os.WriteFile(conf, []byte("# Global parameters\n[global]\n"+extra+"\n"+text), 0o600); err != nil {
		t.Fatalf("adserver: %v", err)
	}
}

// start runs samba and waits until it accepts connections at 389 and 636.
func (s *Server) start(t testing.TB, samba string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	// -i: in the foreground, logging to stdout; -M single: one process,
	// which SIGTERM ends.
	cmd := s.command(samba, "-i", "-M", "single", "-s", filepath.Join(s.dir, "dc", "etc", "smb.conf"))
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	ldap, ldaps := process.Accepts(net.JoinHostPort(s.Addr, "389")), process.Accepts(net.JoinHostPort(s.Addr, "636"))
	done, err := process.Start(cmd, func() bool { return ldap() && ldaps() }, 30*time.Second)
	if err != nil {
		t.Fatalf("adserver: samba: %v\n%s", err, s.logs)
	}
	s.cmd, s.done = cmd, done
}

// Stop ends samba. It is safe to call more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	// sudo passes SIGTERM on to samba.
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Add adds entries with ldapadd over ldaps://, bound as the
// administrator: AD takes a password (unicodePwd) over an encrypted
// connection only.
func (s *Server) Add(t testing.TB, ldif string) {
	t.Helper()
	s.ldap(t, "ldapadd", ldif)
}

// Modify changes entries with ldapmodify, as Add.
func (s *Server) Modify(t testing.TB, ldif string) {
	t.Helper()
	s.ldap(t, "ldapmodify", ldif)
}

func (s *Server) ldap(t testing.TB, tool, ldif string) {
	t.Helper()
	ldapserver.Apply(t, tool, s.LDAPSURL, AdminDN, AdminPassword, s.CAFile, ldif)
}

// AgePassword makes the password of the account named sAMAccountName
// look set age ago (pwdLastSet), so that the domain's maximum password age
// (42 days) can have passed. AD lets nobody set pwdLastSet to anything but
// 0 (must change) or -1 (now), Samba neither, even with the relax control:
// this writes the domain partition's database itself, with Samba's Python
// ldb module and none of Samba's modules, which samba reads afresh.
func (s *Server) AgePassword(t testing.TB, sAMAccountName string, age time.Duration) {
	t.Helper()
	// Debian's samba-tool runs /usr/bin/python3, whose ldb module
	// python3-ldb is; a python3 earlier in PATH may not have it.
	python, err := process.LookPath("python3")
	if _, statErr := os.Stat("/usr/bin/python3"); statErr == nil {
		python, err = "/usr/bin/python3", nil
	}
	if err != nil {
		t.Fatalf("adserver: %v", err)
	}
	// Windows file time: 100 ns since 1601.
	set := (time.Now().Add(-age).Unix() + 11644473600) * 10_000_000
	partition := filepath.Join(s.dir, "dc", "private", "sam.ldb.d", strings.ToUpper(BaseDN)+".ldb")
	script := `import ldb, sys
db = ldb.Ldb(sys.argv[1], options=["modules:"])
found = db.search(base="", expression="(sAMAccountName=%s)" % sys.argv[2], attrs=["pwdLastSet"])
if len(found) != 1:
    sys.exit("%d entries with sAMAccountName %s" % (len(found), sys.argv[2]))
m = ldb.Message(found[0].dn)
m["pwdLastSet"] = ldb.MessageElement(sys.argv[3], ldb.FLAG_MOD_REPLACE, "pwdLastSet")
db.modify(m)
`
	if out, err := s.command(python, "-c", script, partition, sAMAccountName, fmt.Sprint(set)).CombinedOutput(); err != nil {
		t.Fatalf("adserver: set pwdLastSet of %s: %v\n%s", sAMAccountName, err, out)
	}
}

// UserDN is the DN User gives the account name.
func UserDN(name string) string { return "CN=" + name + "," + UsersDN }

// GroupDN is the DN Group gives the group name.
func GroupDN(name string) string { return "CN=" + name + "," + UsersDN }

// User is the LDIF of an enabled user account under CN=Users, as Active
// Directory Users and Computers makes one: CN and sAMAccountName name,
// UPN name@ad.example.com, mail the same, sn Tester, the password given;
// attrs (name, value pairs) replace those or are added.
func User(name, password string, attrs ...string) string {
	a := []string{"objectClass", "user", "sAMAccountName", name, "userPrincipalName", name + "@" + DNSDomain,
		"mail", name + "@" + DNSDomain, "sn", "Tester",
		"unicodePwd:", UnicodePwd(password), "userAccountControl", "512"}
	for i := 0; i+1 < len(attrs); i += 2 {
		if at := slices.Index(a, attrs[i]); at >= 0 && at%2 == 0 {
			a[at+1] = attrs[i+1]
		} else {
			a = append(a, attrs[i], attrs[i+1])
		}
	}
	return entry(UserDN(name), a...)
}

// Group is the LDIF of a global security group under CN=Users with members
// (DNs).
func Group(name string, members ...string) string {
	a := []string{"objectClass", "group", "sAMAccountName", name}
	for _, m := range members {
		a = append(a, "member", m)
	}
	return entry(GroupDN(name), a...)
}

// UnicodePwd is password as AD's unicodePwd takes it, base64 for LDIF: in
// double quotes, UTF-16LE.
func UnicodePwd(password string) string {
	units := utf16.Encode([]rune(`"` + password + `"`))
	b := make([]byte, 0, 2*len(units))
	for _, u := range units {
		b = append(b, byte(u), byte(u>>8))
	}
	return base64.StdEncoding.EncodeToString(b)
}

// entry writes one LDIF entry; an attribute name ending in ":" takes a
// value already in base64.
func entry(dn string, attrs ...string) string {
	var b strings.Builder
	b.WriteString("dn: " + dn + "\n")
	for i := 0; i+1 < len(attrs); i += 2 {
		b.WriteString(attrs[i] + ": " + attrs[i+1] + "\n")
	}
	b.WriteString("\n")
	return b.String()
}

// GUID is the objectGUID of the account named sAMAccountName as Windows'
// tools show it, as `samba-tool user show` prints it: read from the
// database, not over LDAP, to check what an LDAP client makes of the
// attribute's bytes against.
func (s *Server) GUID(t testing.TB, sAMAccountName string) string {
	t.Helper()
	tool, err := process.LookPath("samba-tool")
	if err != nil {
		t.Fatalf("adserver: %v", err)
	}
	out, err := s.command(tool, "user", "show", sAMAccountName, "--attributes=objectGUID", "-H", filepath.Join(s.dir, "dc", "private", "sam.ldb")).CombinedOutput()
	if err != nil {
		t.Fatalf("adserver: samba-tool user show %s: %v\n%s", sAMAccountName, err, out)
	}
	// "dn: CN=…\nobjectGUID: 3f40d051-472c-4c00-b0fe-0407219769d2"
	_, guid, ok := strings.Cut(string(out), "objectGUID: ")
	if !ok {
		t.Fatalf("adserver: samba-tool user show %s printed no objectGUID:\n%s", sAMAccountName, out)
	}
	return strings.TrimSpace(guid)
}
