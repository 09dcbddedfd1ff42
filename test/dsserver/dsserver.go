// Package dsserver runs a real 389 Directory Server (Debian's 389-ds-base
// package: ns-slapd, the directory of Red Hat Directory Server and FreeIPA)
// for tests, on loopback, in a temporary directory, in the foreground.
//
// It does what dscreate does for an instance, without dscreate: dscreate
// finds instances only under /etc/dirsrv, which only root and the dirsrv
// user may write (given other paths, it writes the instance there and then
// fails: "Instance failed to install, does not exist when expected"), and
// starts them through systemd or as daemons. The configuration (dse.ldif) is
// the package's own template, /usr/share/dirsrv/data/template-dse.ldif,
// with the temporary directory's paths; ns-slapd runs as the current user
// (root or not) with -d 0, which keeps it in the foreground so the test owns
// the process. Then, over LDAP as the directory manager, it adds the
// backend for dc=example,dc=com and the tree: 389 builds a backend's
// database only when the backend is added to a running server.
//
// The memberOf plugin is on (memberOfGroupAttr: member, 389's default, as
// FreeIPA has it): users carry memberOf for the groupOfNames groups they
// are in, directly or through other groups. Per-entry password policies
// are on (nsslapd-pwpolicy-local): an entry's pwdpolicysubentry names a
// passwordpolicy entry, as `dsconf localpwp adduser` makes.
//
// With Options.TLS it serves ldaps:// and StartTLS with a certificate from
// a test CA, put into the NSS database 389 reads certificates from.
//
// The default tree is test/ldapserver's Tree, with the same accounts and
// passwords. Anonymous clients can bind and nothing else; bound users read
// everything but passwords.
package dsserver

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// The directory's suffix and administrator (389's "directory manager",
// here named as test/ldapserver names its rootdn).
const (
	Suffix        = ldapserver.Suffix
	AdminDN       = ldapserver.AdminDN
	AdminPassword = ldapserver.AdminPassword
	// PoliciesDN is where password policies go: the container that
	// `dsconf localpwp` makes for the entries under ou=people.
	PoliciesDN = "cn=nsPwPolicyContainer," + ldapserver.PeopleDN
)

// Where Debian's 389-ds-base puts what an instance is made from.
const (
	templateDSE = "/usr/share/dirsrv/data/template-dse.ldif"
)

// Options configure the server.
type Options struct {
	// Port to listen on at 127.0.0.1; 0 picks a free one.
	Port int
	// LDIF is the tree to load after the suffix entry; empty means
	// ldapserver.Tree().
	LDIF string
	// TLS makes a CA and a certificate for 127.0.0.1, offers StartTLS on
	// URL and listens for ldaps:// on LDAPSURL too. 389 reads its
	// certificates from an NSS database only (it can write PEM files out of
	// one, nsslapd-extract-pemfiles, but not read them), so the pair goes
	// in with certutil and pk12util (Debian's libnss3-tools, which
	// 389-ds-base brings through python3-lib389) and openssl.
	TLS bool
	// SizeLimit, when not 0, is nsslapd-sizelimit: the most entries one
	// search answers to anyone but the directory manager (389's default
	// is 2000).
	SizeLimit int
}

// Server is a running ns-slapd.
type Server struct {
	// URL is ldap://127.0.0.1:PORT.
	URL  string
	Port int
	// StartupTime is how long Start took, from writing the configuration
	// to a loaded tree.
	StartupTime time.Duration
	// With Options.TLS: LDAPSURL is ldaps://127.0.0.1:PORT, and CAFile the
	// PEM file of the CA that signed the server's certificate.
	LDAPSURL string
	CAFile   string

	t    testing.TB
	dir  string
	name string // the instance's, as ns-slapd reads it from its configuration directory
	mu   sync.Mutex
	cmd  *exec.Cmd
	done <-chan struct{}
	logs *process.Output
}

// Start makes an instance in a temporary directory, runs ns-slapd and
// loads the tree; ns-slapd is killed when the test ends. It fails the test
// when 389-ds-base or ldapadd is missing.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	began := time.Now()
	slapd, err := process.LookPath("ns-slapd")
	if err != nil {
		t.Fatalf("dsserver: %v: install Debian's 389-ds-base (test/run.sh does)", err)
	}
	if _, err := process.LookPath("ldapadd"); err != nil {
		t.Fatalf("dsserver: %v: install Debian's ldap-utils (test/run.sh does)", err)
	}
	s := &Server{t: t, Port: o.Port, dir: t.TempDir(), logs: &process.Output{}}
	if s.Port == 0 {
		s.Port = process.FreePort(t)
	}
	s.URL = "ldap://127.0.0.1:" + strconv.Itoa(s.Port)
	securePort := 0
	if o.TLS {
		securePort = process.FreePort(t)
		s.LDAPSURL = "ldaps://127.0.0.1:" + strconv.Itoa(securePort)
	}
	// ns-slapd names a POSIX semaphore (/dev/shm/sem.NAME.stats, its SNMP
	// counters) after its configuration directory, machine-wide: two
	// instances of one name share it, and one that another user left
	// behind (a killed root run's) keeps a non-root ns-slapd from
	// starting, with nothing in its log.
	s.name = fmt.Sprintf("slapd-portcullis-%d-%d", os.Getpid(), s.Port)
	s.writeInstance(t, securePort, o.SizeLimit)
	if o.TLS {
		s.writeCertificates(t)
	}

	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			errors, _ := os.ReadFile(filepath.Join(s.dir, "log", "errors"))
			t.Logf("dsserver: ns-slapd output:\n%s\nerrors log:\n%s", s.logs, errors)
		}
	})
	s.start(slapd)

	tree := o.LDIF
	if tree == "" {
		tree = ldapserver.Tree()
	}
	s.Add(t, backendLDIF+"\n"+suffixLDIF+"\n"+tree)
	s.StartupTime = time.Since(began)
	return s
}

// writeInstance lays out the instance's directories and writes its
// dse.ldif from 389's template, as dscreate does.
func (s *Server) writeInstance(t testing.TB, securePort, sizeLimit int) {
	t.Helper()
	path := func(name string) string { return filepath.Join(s.dir, name) }
	for _, d := range []string{s.name + "/schema", "db", "log", "run", "lock", "bak", "ldif", "tmp"} {
		if err := os.MkdirAll(path(d), 0o700); err != nil {
			t.Fatalf("dsserver: %v", err)
		}
	}
	// The instance's own schema directory holds what an administrator
	// adds (99user.ldif, empty): ns-slapd reads the standard schema from
	// /usr/share/dirsrv/schema itself. dscreate copies 99user.ldif,
	// certmap.conf (client certificates) and slapd-collations.conf
	// (language-tagged matching rules) from /etc/dirsrv, which only root
	// and the dirsrv user may read; the instance does without the other two.
	if err := os.WriteFile(path(s.name+"/schema/99user.ldif"), []byte("dn: cn=schema\n"), 0o600); err != nil {
		t.Fatalf("dsserver: %v", err)
	}
	template, err := os.ReadFile(templateDSE)
	if err != nil {
		t.Fatalf("dsserver: %v (is 389-ds-base installed?)", err)
	}
	// ns-slapd switches to nsslapd-localuser when it starts as root; the
	// current user, root or not, owns the temporary directory.
	u, err := user.Current()
	if err != nil {
		t.Fatalf("dsserver: current user: %v", err)
	}
	dse := strings.NewReplacer(
		"%schema_dir%", path(s.name+"/schema"),
		"%lock_dir%", path("lock"),
		"%tmp_dir%", path("tmp"),
		"%cert_dir%", path(s.name),
		"%ldif_dir%", path("ldif"),
		"%bak_dir%", path("bak"),
		"%run_dir%", path("run"),
		"%inst_dir%", s.dir,
		"%log_dir%", path("log"),
		"%config_dir%", path(s.name),
		"%db_dir%", path("db"),
		"%db_home_dir%", path("db"),
		"%db_lib%", "mdb",
		"%fqdn%", "localhost",
		"%ds_port%", strconv.Itoa(s.Port),
		"%ds_user%", u.Username,
		"%rootdn%", AdminDN,
		"%ds_passwd%", ldapserver.SSHA(AdminPassword),
		"%ds_suffix%", Suffix,
		// No LDAPI socket: its path would have to fit a sockaddr_un, and
		// everything goes over the TCP port.
		"%ldapi_enabled%", "off",
		"%ldapi%", path("run/ldapi"),
		"%ldapi_autobind%", "off",
	).Replace(string(template))
	if left := placeholder.FindString(dse); left != "" {
		t.Fatalf("dsserver: %s has a placeholder this package does not fill: %s", templateDSE, left)
	}
	dse, err = editEntry(dse, "cn=MemberOf Plugin,cn=plugins,cn=config", "nsslapd-pluginenabled: off", "nsslapd-pluginenabled: on")
	if err == nil {
		dse, err = editEntry(dse, "cn=config", "nsslapd-rootdn: ", "nsslapd-pwpolicy-local: on\nnsslapd-rootdn: ")
	}
	if err == nil && securePort != 0 {
		// The template's cn=RSA,cn=encryption already names the
		// certificate Server-Cert in the internal token.
		dse, err = editEntry(dse, "cn=config", "nsslapd-rootdn: ",
			"nsslapd-security: on\nnsslapd-securePort: "+strconv.Itoa(securePort)+"\nnsslapd-rootdn: ")
	}
	if err == nil && sizeLimit != 0 {
		dse, err = editEntry(dse, "cn=config", "nsslapd-rootdn: ", "nsslapd-sizelimit: "+strconv.Itoa(sizeLimit)+"\nnsslapd-rootdn: ")
	}
	if err != nil {
		t.Fatalf("dsserver: %s: %v", templateDSE, err)
	}
	if err := os.WriteFile(path(s.name+"/dse.ldif"), []byte(dse), 0o600); err != nil {
		t.Fatalf("dsserver: %v", err)
	}
}

// writeCertificates makes a CA and a certificate for 127.0.0.1 signed by
// it, writes the CA as CAFile, and puts both into an NSS database in the
// instance's nsslapd-certdir: the CA trusted, the certificate with its key
// as Server-Cert, the name the template's cn=RSA,cn=encryption gives. The
// database has no password, so ns-slapd needs no pin.txt.
func (s *Server) writeCertificates(t testing.TB) {
	t.Helper()
	ca := testcert.NewCA(t, "dsserver test CA")
	pair := ca.Issue(t, "127.0.0.1", time.Now().Add(24*time.Hour))
	s.CAFile = filepath.Join(s.dir, "ca.pem")
	certFile, keyFile, p12 := filepath.Join(s.dir, "server.pem"), filepath.Join(s.dir, "server.key"), filepath.Join(s.dir, "server.p12")
	if err := os.WriteFile(s.CAFile, ca.PEM, 0o600); err != nil {
		t.Fatalf("dsserver: %v", err)
	}
	pair.Write(t, certFile, keyFile)
	certDir := filepath.Join(s.dir, s.name)
	// pk12util takes a key only inside PKCS #12, with a password: an
	// empty one is read differently by openssl and NSS.
	const p12Password = "dsserver"
	for _, args := range [][]string{
		{"certutil", "-N", "-d", certDir, "--empty-password"},
		{"certutil", "-A", "-d", certDir, "-n", "dsserver test CA", "-t", "CT,,", "-i", s.CAFile},
		{"openssl", "pkcs12", "-export", "-in", certFile, "-inkey", keyFile, "-name", "Server-Cert", "-out", p12, "-passout", "pass:" + p12Password},
		{"pk12util", "-i", p12, "-d", certDir, "-W", p12Password},
	} {
		path, err := process.LookPath(args[0])
		if err != nil {
			t.Fatalf("dsserver: %v: install Debian's libnss3-tools and openssl (389-ds-base brings both)", err)
		}
		if out, err := exec.Command(path, args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("dsserver: %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// placeholder is a value of template-dse.ldif to fill in: %ds_port%.
var placeholder = regexp.MustCompile(`%[a-z_]+%`)

// editEntry replaces old with new in the entry dn of an LDIF, once; old
// is compared without regard to case, as the template spells attribute
// names either way.
func editEntry(ldif, dn, old, new string) (string, error) {
	entries := strings.Split(ldif, "\n\n")
	for i, e := range entries {
		if !strings.HasPrefix(strings.TrimLeft(e, "\n"), "dn: "+dn+"\n") {
			continue
		}
		at := strings.Index(strings.ToLower(e), strings.ToLower(old))
		if at < 0 {
			return "", fmt.Errorf("entry %s has no %q", dn, old)
		}
		entries[i] = e[:at] + new + e[at+len(old):]
		return strings.Join(entries, "\n\n"), nil
	}
	return "", fmt.Errorf("no entry %s", dn)
}

// Add loads entries into the running server with ldapadd, bound as the
// directory manager.
func (s *Server) Add(t testing.TB, ldif string) {
	t.Helper()
	s.ldap(t, "ldapadd", ldif)
}

// Modify changes entries in the running server with ldapmodify, bound as
// the directory manager: what an administrator's password reset looks
// like to the password policy.
func (s *Server) Modify(t testing.TB, ldif string) {
	t.Helper()
	s.ldap(t, "ldapmodify", ldif)
}

func (s *Server) ldap(t testing.TB, tool, ldif string) {
	t.Helper()
	ldapserver.Apply(t, tool, s.URL, AdminDN, AdminPassword, "", ldif)
}

// start runs ns-slapd and waits until it accepts connections.
func (s *Server) start(slapd string) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	// -d 0 keeps ns-slapd in the foreground, its debug output off; it
	// logs to the instance's log directory.
	cmd := exec.Command(slapd, "-D", filepath.Join(s.dir, s.name), "-i", filepath.Join(s.dir, "run", "slapd.pid"), "-d", "0")
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	done, err := process.Start(cmd, process.Accepts("127.0.0.1:"+strconv.Itoa(s.Port)), 30*time.Second)
	if err != nil {
		s.t.Fatalf("dsserver: ns-slapd: %v; errors log in %s:\n%s", err, filepath.Join(s.dir, "log", "errors"), s.logs)
	}
	s.cmd, s.done = cmd, done
}

// Stop ends ns-slapd. It is safe to call more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	// SIGTERM: ns-slapd shuts down in some 150 ms and removes its
	// semaphore, which SIGKILL would leave in /dev/shm.
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		_ = os.Remove("/dev/shm/sem." + s.name + ".stats")
	}
	s.cmd = nil
}

// backendLDIF is the database for Suffix: a backend, and the mapping tree
// entry that sends operations under Suffix to it.
const backendLDIF = `dn: cn=userRoot,cn=ldbm database,cn=plugins,cn=config
objectClass: top
objectClass: extensibleObject
objectClass: nsBackendInstance
cn: userRoot
nsslapd-suffix: ` + Suffix + `

dn: cn="` + Suffix + `",cn=mapping tree,cn=config
objectClass: top
objectClass: extensibleObject
objectClass: nsMappingTree
cn: ` + Suffix + `
nsslapd-state: backend
nsslapd-backend: userRoot
`

// suffixLDIF is the suffix entry, with the access rule: 389 grants nothing
// to anyone but the directory manager without one.
const suffixLDIF = `dn: ` + Suffix + `
objectClass: dcObject
objectClass: organization
dc: example
o: Example
aci: (targetattr != "userPassword")(version 3.0; acl "bound users read all but passwords"; allow (read, search, compare) userdn = "ldap:///all";)
`
