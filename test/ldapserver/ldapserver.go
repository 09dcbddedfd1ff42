// Package ldapserver runs a real OpenLDAP slapd (Debian's slapd package) for
// tests, on loopback, with its own configuration directory: an mdb database
// under dc=example,dc=com with the memberof and refint overlays, so that
// users carry memberOf for the groupOfNames groups they are in.
//
// The configuration is built with `slapadd -n 0`; the tree is loaded with
// `ldapadd` against the running server (slapadd would skip the overlays and
// leave memberOf empty).
//
// The default tree (Tree) has:
//
//	cn=portcullis,ou=services  service account (ServiceDN / ServicePassword)
//	uid=alice,ou=people        alice-pw, member of cn=cvat-admins
//	uid=bob,ou=people          bob-pw, member of cn=annotators, which is a member of cn=workers
//	uid=star*user,ou=people    star-pw, a user with a filter metacharacter in its name
//	uid=dup,ou=people          dup-pw, and a second uid=dup under ou=contractors
//
// Anonymous clients can bind and nothing else; bound users read everything
// but passwords. Options add a size limit and the ppolicy overlay.
package ldapserver

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// The directory's suffix and accounts.
const (
	Suffix          = "dc=example,dc=com"
	AdminDN         = "cn=admin," + Suffix
	AdminPassword   = "admin-pw"
	ServiceDN       = "cn=portcullis,ou=services," + Suffix
	ServicePassword = "service-pw"
	PeopleDN        = "ou=people," + Suffix
	GroupsDN        = "ou=groups," + Suffix
	// With Options.PasswordPolicy: where the policies are, and the default.
	PoliciesDN = "ou=policies," + Suffix
	PolicyDN   = "cn=default," + PoliciesDN
)

// Users of the default tree and their passwords.
const (
	Alice            = "alice"
	AlicePassword    = "alice-pw"
	Bob              = "bob"
	BobPassword      = "bob-pw"
	StarUser         = "star*user"
	StarUserPassword = "star-pw"
	Dup              = "dup"
	DupPassword      = "dup-pw"
)

// Options configure the server.
type Options struct {
	// Port to listen on at 127.0.0.1; 0 picks a free one.
	Port int
	// LDIF is the tree to load after the suffix entry; empty means Tree().
	LDIF string
	// TLS makes a CA and a certificate for 127.0.0.1, offers StartTLS on
	// URL and listens for ldaps:// on LDAPSURL too.
	TLS bool
	// Certificate, with TLS, issues the server's certificate from the CA in
	// CAFile instead of one for 127.0.0.1 for a day: another host's, or
	// one already expired, for tests of what a client refuses.
	Certificate func(testing.TB, *testcert.CA) testcert.Pair
	// SizeLimit is the database's olcSizeLimit, which binds every account
	// but the administrator: "size.soft=20 size.hard=20
	// size.prtotal=unlimited" answers at most 20 entries to a plain search
	// and any number to a paged one (RFC 2696), as Active Directory's
	// MaxPageSize does with 1000. Empty keeps slapd's default, 500 for
	// both.
	SizeLimit string
	// PasswordPolicy loads the ppolicy overlay with PolicyDN as the default
	// policy: pwdMustChange, so a password the administrator sets (Modify)
	// must be changed before anything else, and no expiry or lockout.
	// Tests add stricter policies under PoliciesDN and point an entry at
	// one with pwdPolicySubentry.
	PasswordPolicy bool
	// GroupsForServiceOnly lets only the service account read the groups
	// under GroupsDN, as hardened directories do: a search for them bound
	// as a user finds none.
	GroupsForServiceOnly bool
	// IdleTimeout is slapd's olcIdleTimeout: it closes a client's
	// connection after that long without a request (whole seconds; 0
	// keeps slapd's default, never), as directories behind an idle
	// timeout or a firewall do.
	IdleTimeout time.Duration
	// Schemas are more of /etc/ldap/schema's to load after core, cosine
	// and inetorgperson: "nis" for RFC 2307's posixGroup and memberUid.
	Schemas []string
}

// Server is a running slapd.
type Server struct {
	// URL is ldap://127.0.0.1:PORT.
	URL string
	// Port stays the same across Restart.
	Port int
	// StartupTime is how long the first start took, from building the
	// configuration to a loaded tree.
	StartupTime time.Duration
	// With Options.TLS: LDAPSURL is ldaps://127.0.0.1:PORT, and CAFile the
	// PEM file of the CA that signed the server's certificate.
	LDAPSURL string
	CAFile   string
	tlsPort  int

	t    testing.TB
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done <-chan struct{}
	logs *process.Output
}

// Start builds a configuration in a temporary directory, runs slapd and
// loads the tree; slapd stops when the test ends. It fails the test when
// slapd or ldapadd is missing.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	began := time.Now()
	for _, tool := range []string{"slapd", "slapadd", "ldapadd"} {
		if _, err := process.LookPath(tool); err != nil {
			t.Fatalf("ldapserver: %s not found (%v): install Debian's slapd and ldap-utils (test/run.sh does)", tool, err)
		}
	}
	s := &Server{t: t, Port: o.Port, dir: t.TempDir(), logs: &process.Output{}}
	if s.Port == 0 {
		s.Port = process.FreePort(t)
	}
	s.URL = "ldap://127.0.0.1:" + strconv.Itoa(s.Port)

	confDir := filepath.Join(s.dir, "slapd.d")
	for _, d := range []string{confDir, filepath.Join(s.dir, "data")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatalf("ldapserver: %v", err)
		}
	}
	config := configLDIF(s.dir, o.Schemas)
	if o.SizeLimit != "" {
		config = strings.Replace(config, "olcRootDN:", "olcSizeLimit: "+o.SizeLimit+"\nolcRootDN:", 1)
	}
	if o.GroupsForServiceOnly {
		config = strings.Replace(config, "olcAccess: {1}to * by users read by * none",
			"olcAccess: {1}to dn.subtree=\""+GroupsDN+"\" by dn.exact=\""+ServiceDN+"\" read by * none\n"+
				"olcAccess: {2}to * by users read by * none", 1)
	}
	if o.IdleTimeout > 0 {
		config = strings.Replace(config, "olcArgsFile:", fmt.Sprintf("olcIdleTimeout: %d\nolcArgsFile:", int(o.IdleTimeout.Seconds())), 1)
	}
	if o.PasswordPolicy {
		config = strings.Replace(config, "olcModuleLoad: refint\n", "olcModuleLoad: refint\nolcModuleLoad: ppolicy\n", 1) + ppolicyConfigLDIF
	}
	if o.TLS {
		s.tlsPort = process.FreePort(t)
		s.LDAPSURL = "ldaps://127.0.0.1:" + strconv.Itoa(s.tlsPort)
		var certFile, keyFile string
		s.CAFile, certFile, keyFile = writeCertificates(t, s.dir, o.Certificate)
		config = strings.Replace(config, "olcArgsFile:", "olcTLSCertificateFile: "+certFile+"\nolcTLSCertificateKeyFile: "+keyFile+"\nolcArgsFile:", 1)
	}
	ldif := filepath.Join(s.dir, "config.ldif")
	if err := os.WriteFile(ldif, []byte(config), 0o600); err != nil {
		t.Fatalf("ldapserver: %v", err)
	}
	if out, err := command("slapadd", "-n", "0", "-F", confDir, "-l", ldif).CombinedOutput(); err != nil {
		t.Fatalf("ldapserver: slapadd -n 0: %v\n%s", err, out)
	}

	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("ldapserver: slapd output:\n%s", s.logs)
		}
	})
	s.start()

	tree := o.LDIF
	if tree == "" {
		tree = Tree()
	}
	if o.PasswordPolicy {
		// Before the users, so that their passwords start under it.
		tree = policiesLDIF + "\n" + tree
	}
	s.Add(t, suffixLDIF+"\n"+tree)
	s.StartupTime = time.Since(began)
	return s
}

// Add loads entries into the running server with ldapadd, bound as the
// administrator.
func (s *Server) Add(t testing.TB, ldif string) {
	t.Helper()
	Apply(t, "ldapadd", s.URL, AdminDN, AdminPassword, "", ldif)
}

// Modify changes entries in the running server with ldapmodify, bound as
// the administrator: what an administrator's password reset looks like to
// the ppolicy overlay.
func (s *Server) Modify(t testing.TB, ldif string) {
	t.Helper()
	Apply(t, "ldapmodify", s.URL, AdminDN, AdminPassword, "", ldif)
}

// Apply runs tool (ldapadd or ldapmodify, from ldap-utils) on ldif at the
// directory at url, bound as bindDN, trusting only caFile's CA when it is
// not empty: the one way every directory harness here writes entries.
func Apply(t testing.TB, tool, url, bindDN, password, caFile, ldif string) {
	t.Helper()
	cmd := command(tool, "-x", "-H", url, "-D", bindDN, "-w", password)
	if caFile != "" {
		cmd.Env = append(os.Environ(), "LDAPTLS_CACERT="+caFile, "LDAPTLS_REQCERT=demand")
	}
	cmd.Stdin = strings.NewReader(ldif)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s at %s: %v\n%s", tool, url, err, out)
	}
}

// start runs slapd in the foreground and waits until it accepts connections.
func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatalf("ldapserver: already running")
	}
	// -d 0 keeps slapd in the foreground (so the test owns the process) and
	// quiet; errors still reach stderr.
	urls := "ldap://127.0.0.1:" + strconv.Itoa(s.Port) + "/"
	if s.tlsPort != 0 {
		urls += " ldaps://127.0.0.1:" + strconv.Itoa(s.tlsPort) + "/"
	}
	cmd := command("slapd", "-d", "0", "-h", urls, "-F", filepath.Join(s.dir, "slapd.d"))
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	done, err := process.Start(cmd, process.Accepts("127.0.0.1:"+strconv.Itoa(s.Port)), 15*time.Second)
	if err != nil {
		s.t.Fatalf("ldapserver: slapd: %v:\n%s", err, s.logs)
	}
	s.cmd, s.done = cmd, done
}

// Stop ends slapd; connections to it break and new ones are refused. The
// database stays, so Restart brings the same tree back. It is safe to call
// more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts slapd again on the same port with the same tree.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// RequireTLSForBinds makes slapd take passwords over TLS only
// (olcSecurity simple_bind=64): a simple bind with a password over plain
// ldap:// gets confidentialityRequired (13). Set once the tree is loaded,
// which the harness does so.
func (s *Server) RequireTLSForBinds(t testing.TB) {
	t.Helper()
	s.ModifyConfig(t, "dn: cn=config\nchangetype: modify\nreplace: olcSecurity\nolcSecurity: simple_bind=64\n")
}

// ReadableByAnyone lets anonymous clients read the tree (but for
// passwords), as a directory that needs no service account does.
func (s *Server) ReadableByAnyone(t testing.TB) {
	t.Helper()
	s.ModifyConfig(t, "dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nreplace: olcAccess\n"+
		"olcAccess: {0}to attrs=userPassword by anonymous auth by * none\nolcAccess: {1}to * by * read\n")
}

// ModifyConfig applies ldif (changetype: modify records of cn=config) with
// slapmodify while slapd is stopped, and starts it again: cn=config has no
// account to change it over LDAP here.
func (s *Server) ModifyConfig(t testing.TB, ldif string) {
	t.Helper()
	s.Stop()
	file := filepath.Join(s.dir, "modify-config.ldif")
	if err := os.WriteFile(file, []byte(ldif), 0o600); err != nil {
		t.Fatalf("ldapserver: %v", err)
	}
	if out, err := command("slapmodify", "-n", "0", "-F", filepath.Join(s.dir, "slapd.d"), "-l", file).CombinedOutput(); err != nil {
		t.Fatalf("ldapserver: slapmodify -n 0: %v\n%s", err, out)
	}
	s.start()
}

// UserDN is the DN of a user of the default tree under ou=people.
func UserDN(uid string) string { return "uid=" + uid + "," + PeopleDN }

// GroupDN is the DN of a group of the default tree.
func GroupDN(cn string) string { return "cn=" + cn + "," + GroupsDN }

// Tree is the default tree's LDIF (without the suffix entry).
func Tree() string {
	user := func(uid, ou, password, given, sn, mail string) string {
		return fmt.Sprintf(`dn: uid=%s,ou=%s,%s
objectClass: inetOrgPerson
uid: %s
cn: %s %s
givenName: %s
sn: %s
mail: %s
userPassword: %s

`, uid, ou, Suffix, uid, given, sn, given, sn, mail, SSHA(password))
	}
	return `dn: ou=people,` + Suffix + `
objectClass: organizationalUnit
ou: people

dn: ou=contractors,` + Suffix + `
objectClass: organizationalUnit
ou: contractors

dn: ou=groups,` + Suffix + `
objectClass: organizationalUnit
ou: groups

dn: ou=services,` + Suffix + `
objectClass: organizationalUnit
ou: services

dn: ` + ServiceDN + `
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: portcullis
userPassword: ` + SSHA(ServicePassword) + `

` + user(Alice, "people", AlicePassword, "Alice", "Liddell", "alice@example.com") +
		user(Bob, "people", BobPassword, "Bob", "Builder", "bob@example.com") +
		user(StarUser, "people", StarUserPassword, "Star", "User", "star@example.com") +
		user(Dup, "people", DupPassword, "Dup", "One", "dup1@example.com") +
		user(Dup, "contractors", DupPassword, "Dup", "Two", "dup2@example.com") +
		`dn: ` + GroupDN("cvat-admins") + `
objectClass: groupOfNames
cn: cvat-admins
member: ` + UserDN(Alice) + `

dn: ` + GroupDN("annotators") + `
objectClass: groupOfNames
cn: annotators
member: ` + UserDN(Bob) + `

dn: ` + GroupDN("workers") + `
objectClass: groupOfNames
cn: workers
member: ` + GroupDN("annotators") + `
`
}

// SSHA is password hashed as slapd's {SSHA} scheme (salted SHA-1) for a
// userPassword value.
func SSHA(password string) string {
	salt := make([]byte, 8)
	_, _ = rand.Read(salt)
	sum := sha1.Sum(append([]byte(password), salt...))
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(sum[:], salt...))
}

const suffixLDIF = `dn: ` + Suffix + `
objectClass: dcObject
objectClass: organization
dc: example
o: Example
`

// configLDIF is the cn=config tree: schemas, an mdb database with the
// memberof and refint overlays, and access rules that make the service
// account necessary (anonymous clients may only bind).
func configLDIF(dir string, extraSchemas []string) string {
	var schemas strings.Builder
	for _, name := range append([]string{"core", "cosine", "inetorgperson"}, extraSchemas...) {
		fmt.Fprintf(&schemas, "include: file:///etc/ldap/schema/%s.ldif\n\n", name)
	}
	return `dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: ` + filepath.Join(dir, "slapd.pid") + `
olcArgsFile: ` + filepath.Join(dir, "slapd.args") + `

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: memberof
olcModuleLoad: refint

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

` + schemas.String() + `dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcSizeLimit: 500

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcAccess: {0}to * by * none

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcDbDirectory: ` + filepath.Join(dir, "data") + `
olcDbMaxSize: 16777216
olcSuffix: ` + Suffix + `
olcRootDN: ` + AdminDN + `
olcRootPW: ` + AdminPassword + `
olcAccess: {0}to attrs=userPassword by anonymous auth by * none
olcAccess: {1}to * by users read by * none

dn: olcOverlay={0}memberof,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {0}memberof
olcMemberOfRefInt: TRUE
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf

dn: olcOverlay={1}refint,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcRefintConfig
olcOverlay: {1}refint
olcRefintAttribute: memberof member
`
}

// ppolicyConfigLDIF configures the ppolicy overlay (OpenLDAP 2.5 carries
// its schema itself). Lockout stays off: the tests count failures in the
// proxy.
const ppolicyConfigLDIF = `
dn: olcOverlay={2}ppolicy,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {2}ppolicy
olcPPolicyDefault: ` + PolicyDN + `
olcPPolicyHashCleartext: TRUE
olcPPolicyUseLockout: FALSE
`

// policiesLDIF is the default password policy of Options.PasswordPolicy.
const policiesLDIF = `dn: ` + PoliciesDN + `
objectClass: organizationalUnit
ou: policies

dn: ` + PolicyDN + `
objectClass: organizationalRole
objectClass: pwdPolicy
cn: default
pwdAttribute: userPassword
pwdMustChange: TRUE
pwdAllowUserChange: TRUE
`

// command runs a Debian tool found in /usr/sbin even when PATH lacks it.
func command(name string, args ...string) *exec.Cmd {
	path, err := process.LookPath(name)
	if err != nil {
		path = name
	}
	return exec.Command(path, args...)
}
