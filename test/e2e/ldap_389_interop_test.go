package e2e

// What docs/ldap.md says of 389 Directory Server (Red Hat Directory
// Server, FreeIPA's directory), made in a real one (test/dsserver): its
// memberOf plugin, groupOfUniqueNames groups found by uniqueMember, and its
// password policy's answers to a bind (inactivated and locked accounts,
// expired passwords, grace logins, passwords to change after a reset, an
// expiry warning), over ldaps:// and StartTLS with the CA from ca_file, to
// API callers with Basic credentials (basic_auth), and for a user in more
// groups than the directory's size limit. A user signs in with the form,
// or is refused with what the form and the log say.

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/dsserver"
	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/testcert"
)

// ds389Tree is what the test adds to test/ldapserver's tree: per-user
// password policies (as `dsconf localpwp adduser` makes them), the users
// under them, an inactivated user, and groupOfUniqueNames groups, one a
// member of the other.
func ds389Tree() string {
	policy := func(cn string, attrs ...string) string {
		return ldif("cn="+cn+","+dsserver.PoliciesDN, append([]string{"objectClass", "ldapsubentry", "objectClass", "passwordpolicy", "cn", cn}, attrs...)...)
	}
	user := func(uid, policyCN string, attrs ...string) string {
		a := []string{"objectClass", "inetOrgPerson", "uid", uid, "cn", uid, "sn", "Tester", "mail", uid + "@example.com", "userPassword", ldapserver.SSHA(uid + "-pw")}
		if policyCN != "" {
			a = append(a, "pwdpolicysubentry", "cn="+policyCN+","+dsserver.PoliciesDN)
		}
		return ldif(ldapserver.UserDN(uid), append(a, attrs...)...)
	}
	return ldif(dsserver.PoliciesDN, "objectClass", "nsContainer", "cn", "nsPwPolicyContainer") +
		policy("lockout", "passwordLockout", "on", "passwordMaxFailure", "3", "passwordLockoutDuration", "3600", "passwordResetFailureCount", "3600") +
		policy("expiry", "passwordExp", "on", "passwordMaxAge", "8640000", "passwordWarning", "864000", "passwordGraceLimit", "0") +
		policy("grace", "passwordExp", "on", "passwordMaxAge", "8640000", "passwordGraceLimit", "3") +
		policy("mustchange", "passwordMustChange", "on") +
		user("inactive", "", "nsAccountLock", "TRUE") +
		user("locked", "lockout") +
		user("expired", "expiry") +
		user("warned", "expiry") +
		user("graced", "grace") +
		user("reset", "mustchange") +
		user("apilocked", "lockout") +
		ldif(ldapserver.GroupDN("reviewers"), "objectClass", "groupOfUniqueNames", "cn", "reviewers", "uniqueMember", ldapserver.UserDN(ldapserver.Alice)) +
		ldif(ldapserver.GroupDN("senior-reviewers"), "objectClass", "groupOfUniqueNames", "cn", "senior-reviewers", "uniqueMember", ldapserver.GroupDN("reviewers")) +
		user("joiner", "") + joinerGroups()
}

// ds389SizeLimit is the instance's nsslapd-sizelimit, below the groups
// joiner is in and below portcullis's page of 500.
const ds389SizeLimit = 50

// joinerGroups puts joiner in 60 groupOfNames groups, more than
// ds389SizeLimit.
func joinerGroups() string {
	var b strings.Builder
	for _, cn := range joinerGroupNames() {
		b.WriteString(ldif(ldapserver.GroupDN(cn), "objectClass", "groupOfNames", "cn", cn, "member", ldapserver.UserDN("joiner")))
	}
	return b.String()
}

func joinerGroupNames() []string {
	names := make([]string, 60)
	for i := range names {
		names[i] = fmt.Sprintf("joined-%02d", i)
	}
	return names
}

func TestLDAP389DirectoryServer(t *testing.T) {
	dir := dsserver.Start(t, dsserver.Options{TLS: true, SizeLimit: ds389SizeLimit})
	dir.Add(t, ds389Tree())
	// Expiry is the administrator's doing here: passwordExpirationTime in
	// the past (expired, graced) or within passwordWarning (warned). An
	// administrator's new password for reset must be changed
	// (passwordMustChange).
	expires := func(uid string, at time.Time) string {
		return fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: passwordExpirationTime\npasswordExpirationTime: %s\n\n",
			ldapserver.UserDN(uid), at.UTC().Format("20060102150405Z"))
	}
	dir.Modify(t, expires("expired", time.Now().Add(-time.Hour))+expires("graced", time.Now().Add(-time.Hour))+
		expires("warned", time.Now().Add(24*time.Hour))+
		"dn: "+ldapserver.UserDN("reset")+"\nchangetype: modify\nreplace: userPassword\nuserPassword: reset-pw\n")
	t.Logf("389 Directory Server started with the tree in %s", dir.StartupTime.Round(time.Millisecond))

	// A CA file that holds another CA than the one that signed 389's
	// certificate.
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(otherCA, testcert.NewCA(t, "another CA").PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	byUID := "(&(objectClass=inetOrgPerson)(uid={username}))"
	groupSearch := func(filter string) string {
		return fmt.Sprintf("      group_search: {base_dn: %q, filter: %q}\n", ldapserver.GroupsDN, filter)
	}
	entries := ldapInteropEntry("ds389", dir.URL, byUID, "") +
		ldapInteropEntry("ds389-unique", dir.URL, byUID, groupSearch("(&(objectClass=groupOfUniqueNames)(uniqueMember={dn}))")) +
		ldapInteropEntry("ds389-groups", dir.URL, byUID, groupSearch("(&(objectClass=groupOfNames)(member={dn}))")) +
		ldapInteropEntry("ds389-ldaps", dir.LDAPSURL, byUID, "      ca_file: "+dir.CAFile+"\n") +
		ldapInteropEntry("ds389-starttls", dir.URL, byUID, "      start_tls: true\n      ca_file: "+dir.CAFile+"\n") +
		ldapInteropEntry("ds389-ldaps-other-ca", dir.LDAPSURL, byUID, "      ca_file: "+otherCA+"\n") +
		ldapInteropEntry("ds389-starttls-other-ca", dir.URL, byUID, "      start_tls: true\n      ca_file: "+otherCA+"\n")
	config := strings.Replace(ldapInteropConfig, "IDENTITY_PROVIDERS", entries, 1) + `rules:
  - name: legacy-api
    path_prefix: /legacy/
    basic_auth: ds389
    action: authenticate
`
	s := listen(t)
	// Not waiting for every IdP: the two of another CA are never ready.
	logs := s.serveLogged(t, config)

	const wrong = "Wrong username or password."
	const expired = "Your password has expired."
	type row struct {
		name, id, user, password string
		// before are passwords tried (and refused) first.
		before []string
		// groups is the X-Groups of a login; empty when refused.
		groups []string
		// unlogged is a log message the row must not add.
		unlogged string
		// says is what the refused form says.
		says string
		// logged is the idp's log line of the check, with fields that
		// must contain the values given.
		logged string
		fields map[string]string
		// err is what the login_failed line's err must contain.
		err string
	}
	rows := []row{
		{name: "a good login: groups from memberOf, nested ones too", id: "ds389", user: "bob", password: ldapserver.BobPassword,
			groups: []string{"annotators", "workers"}},
		{name: "a good login: groupOfUniqueNames by uniqueMember, nesting walked", id: "ds389-unique", user: "alice", password: ldapserver.AlicePassword,
			groups: []string{"reviewers", "senior-reviewers"}},
		{name: "a wrong password", id: "ds389", user: "alice", password: "wrong", says: wrong,
			logged: "ldap: password refused", fields: map[string]string{"err": "Invalid Credentials"}, err: "refused the password of uid=alice,"},
		{name: "a user who does not exist: the same answer", id: "ds389", user: "mallory", password: "mallory-pw", says: wrong,
			err: "no entry under user_search.base_dn matches"},
		{name: "an inactivated account (nsAccountLock), right password", id: "ds389", user: "inactive", password: "inactive-pw", says: wrong,
			logged: "ldap: password refused", fields: map[string]string{"err": "Account inactivated"}, err: "refused the password of uid=inactive,"},
		{name: "an account locked after passwordMaxFailure wrong passwords, right password", id: "ds389", user: "locked", password: "locked-pw",
			before: []string{"wrong-1", "wrong-2", "wrong-3"}, says: wrong,
			logged: "ldap: password refused", fields: map[string]string{"err": "Exceed password retry limit"}, err: "refused the password of uid=locked,"},
		{name: "an expired password", id: "ds389", user: "expired", password: "expired-pw", says: expired,
			logged: "ldap: account refused", fields: map[string]string{"policy": "Password expired"}, err: "passwordExpired"},
		{name: "an expired password, wrong: nothing said of the expiry", id: "ds389", user: "expired", password: "wrong", says: wrong,
			logged: "ldap: password refused", fields: map[string]string{"err": "Invalid Credentials"}, err: "refused the password of uid=expired,"},
		{name: "a grace login", id: "ds389", user: "graced", password: "graced-pw", says: expired,
			logged: "ldap: account refused", fields: map[string]string{"policy": "Grace: 2"}, err: "graceAuthNsRemaining"},
		{name: "a password an administrator reset (passwordMustChange)", id: "ds389", user: "reset", password: "reset-pw",
			says:   "Your password was reset and must be changed before you can sign in.",
			logged: "ldap: account refused", fields: map[string]string{"policy": "Password must be changed"}, err: "changeAfterReset"},
		{name: "an expiry warning: signs in, and the log says so", id: "ds389", user: "warned", password: "warned-pw",
			groups: []string{}, logged: "ldap: password expires soon", fields: map[string]string{"dn": "uid=warned,"}},
		{name: "ldaps://, the certificate checked against ca_file", id: "ds389-ldaps", user: "bob", password: ldapserver.BobPassword,
			groups: []string{"annotators", "workers"}},
		{name: "StartTLS, the certificate checked against ca_file", id: "ds389-starttls", user: "bob", password: ldapserver.BobPassword,
			groups: []string{"annotators", "workers"}},
		{name: "more groups than nsslapd-sizelimit, from memberOf: all of them", id: "ds389", user: "joiner", password: "joiner-pw",
			groups: joinerGroupNames()},
		// 389 applies nsslapd-sizelimit to each page of a paged search:
		// a page of 500, or of 50, ends at 50 with sizeLimitExceeded;
		// pages of 49 do not.
		{name: "more groups than nsslapd-sizelimit, by group_search: all of them, in pages the size the directory allows", id: "ds389-groups",
			user: "joiner", password: "joiner-pw", groups: joinerGroupNames(), unlogged: "ldap: group list cut; rules may miss groups the user is in"},
	}
	for i, c := range rows {
		t.Run(c.name, func(t *testing.T) {
			b := fromAddr(browser(t), "10.38.9."+strconv.Itoa(i+1))
			for _, p := range c.before {
				form := openForm(t, b, s.URL+"/.portcullis/ldap/"+c.id+"?rd=/tasks")
				if resp, body := form.submit(t, b, c.user, p); resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("password %q first: status %d, want 401:\n%s", p, resp.StatusCode, body)
				}
			}
			before := len(logs.find(t, map[string]any{"msg": c.logged}))
			unloggedBefore := len(logs.find(t, map[string]any{"msg": c.unlogged}))
			form := openForm(t, b, s.URL+"/.portcullis/ldap/"+c.id+"?rd=/tasks")
			resp, body := form.submit(t, b, c.user, c.password)
			if c.groups != nil {
				if resp.StatusCode != http.StatusFound {
					t.Fatalf("login: status %d, want 302 to the page asked for:\n%s", resp.StatusCode, body)
				}
				h := upstreamSees(t, b, s)
				want := []string{c.user, c.user + "@example.com", strings.Join(c.groups, "|")}
				got := []string{h.Get("X-Username"), h.Get("X-Email"), h.Get("X-Groups")}
				if !slices.Equal(got, want) {
					t.Errorf("upstream saw X-Username, X-Email, X-Groups %q, want %q", got, want)
				}
			} else {
				if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, c.says) {
					t.Fatalf("status %d, want 401 with the form saying %q:\n%s", resp.StatusCode, c.says, body)
				}
				line := logs.audit(t, resp, "login_failed")
				if line["reason"] != "invalid_credentials" || !strings.Contains(fmt.Sprint(line["err"]), c.err) {
					t.Errorf("login_failed reason %v, err %q; want invalid_credentials and an err saying %q", line["reason"], line["err"], c.err)
				}
			}
			if c.unlogged != "" {
				if lines := logs.find(t, map[string]any{"msg": c.unlogged}); len(lines) != unloggedBefore {
					t.Errorf("logged %q: %v", c.unlogged, lines[len(lines)-1])
				}
			}
			if c.logged == "" {
				return
			}
			lines := logs.find(t, map[string]any{"msg": c.logged})
			if len(lines) != before+1 {
				t.Fatalf("%d %q lines, want 1 more than the %d before", len(lines), c.logged, before)
			}
			line := lines[len(lines)-1]
			for k, v := range c.fields {
				if !strings.Contains(fmt.Sprint(line[k]), v) {
					t.Errorf("%q line's %s = %q, want it to say %q", c.logged, k, line[k], v)
				}
			}
			t.Logf("%q line: %v", c.logged, line)
		})
	}

	// A certificate signed by another CA than ca_file's: refused at the
	// TLS handshake (ldaps://) or at StartTLS, as a set-up mistake.
	for _, c := range []struct{ id, step string }{
		{"ds389-ldaps-other-ca", "tls handshake with 127.0.0.1:"},
		{"ds389-starttls-other-ca", "starttls with 127.0.0.1:"},
	} {
		t.Run(c.id+": refused at the "+strings.TrimSuffix(c.step, " with 127.0.0.1:"), func(t *testing.T) {
			b := fromAddr(browser(t), "10.38.10.1")
			form := openForm(t, b, s.URL+"/.portcullis/ldap/"+c.id+"?rd=/tasks")
			resp, body := form.submit(t, b, "bob", ldapserver.BobPassword)
			resp.Body = io.NopCloser(strings.NewReader(body))
			line := operatorSees(t, s, logs, resp, http.StatusServiceUnavailable, "not set up right", "directory_certificate",
				"ca_file "+strconv.Quote(otherCA)+" does not hold the CA", `issuer "CN=dsserver test CA"`)
			if err := fmt.Sprint(line["err"]); !strings.Contains(err, c.step) {
				t.Errorf("login_failed err %q does not name the step %q", err, c.step)
			}
		})
	}

	call := func(addr, user, password string) (*http.Response, string) {
		t.Helper()
		s.Upstream.Reset()
		req, _ := http.NewRequest("GET", s.URL+"/legacy/items", nil)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("X-Forwarded-For", addr)
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	refused := func(t *testing.T, resp *http.Response, body string) {
		t.Helper()
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic realm=") {
			t.Errorf("status %d WWW-Authenticate %q, want 401 asking for Basic credentials: %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
		if _, reached := s.Upstream.Last(); reached {
			t.Errorf("the request reached the upstream")
		}
	}
	t.Run("basic_auth: the right password reaches the upstream as that user", func(t *testing.T) {
		resp, body := call("10.38.11.1", "bob", ldapserver.BobPassword)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		got, _ := s.Upstream.Last()
		want := []string{"bob", "bob@example.com", "annotators|workers", ""}
		if h := got.Header; !slices.Equal([]string{h.Get("X-Username"), h.Get("X-Email"), h.Get("X-Groups"), h.Get("Authorization")}, want) {
			t.Errorf("upstream saw X-Username, X-Email, X-Groups, Authorization %q, want %q", []string{h.Get("X-Username"), h.Get("X-Email"), h.Get("X-Groups"), h.Get("Authorization")}, want)
		}
	})
	for _, c := range []struct{ name, user, password string }{
		{"a wrong password", "alice", "wrong"},
		{"an inactivated account (nsAccountLock), right password", "inactive", "inactive-pw"},
		{"an expired password, right", "expired", "expired-pw"},
	} {
		t.Run("basic_auth: "+c.name+" gets 401", func(t *testing.T) {
			resp, body := call("10.38.11.2", c.user, c.password)
			refused(t, resp, body)
		})
	}
	t.Run("basic_auth: wrong passwords count towards 389's lockout; then the right one gets 401", func(t *testing.T) {
		for i, p := range []string{"wrong-1", "wrong-2", "wrong-3"} {
			resp, body := call("10.38.12."+strconv.Itoa(i+1), "apilocked", p)
			refused(t, resp, body)
		}
		before := len(logs.find(t, map[string]any{"msg": "ldap: password refused"}))
		resp, body := call("10.38.12.9", "apilocked", "apilocked-pw")
		refused(t, resp, body)
		lines := logs.find(t, map[string]any{"msg": "ldap: password refused"})
		if len(lines) != before+1 || !strings.Contains(fmt.Sprint(lines[len(lines)-1]["err"]), "Exceed password retry limit") {
			t.Errorf("want one more \"ldap: password refused\" line saying \"Exceed password retry limit\"; the last of %d: %v", len(lines), lines[len(lines)-1])
		}
	})
}
