package e2e

// What docs/ldap.md says of 389 Directory Server (Red Hat Directory
// Server, FreeIPA's directory), made in a real one (test/dsserver): its
// memberOf plugin, groupOfUniqueNames groups found by uniqueMember, and its
// password policy's answers to a bind (inactivated and locked accounts,
// expired passwords, grace logins, passwords to change after a reset, an
// expiry warning). A user signs in with the form, or is refused with what
// the form and the log say.

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/dsserver"
	"github.com/portcullis-proxy/portcullis/test/ldapserver"
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
		ldif(ldapserver.GroupDN("reviewers"), "objectClass", "groupOfUniqueNames", "cn", "reviewers", "uniqueMember", ldapserver.UserDN(ldapserver.Alice)) +
		ldif(ldapserver.GroupDN("senior-reviewers"), "objectClass", "groupOfUniqueNames", "cn", "senior-reviewers", "uniqueMember", ldapserver.GroupDN("reviewers"))
}

func TestLDAP389DirectoryServer(t *testing.T) {
	dir := dsserver.Start(t, dsserver.Options{})
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

	byUID := "(&(objectClass=inetOrgPerson)(uid={username}))"
	entries := ldapInteropEntry("ds389", dir.URL, byUID, "") +
		ldapInteropEntry("ds389-unique", dir.URL, byUID, fmt.Sprintf("      group_search: {base_dn: %q, filter: %q}\n",
			ldapserver.GroupsDN, "(&(objectClass=groupOfUniqueNames)(uniqueMember={dn}))"))
	s := listen(t)
	logs := s.startLogged(t, strings.Replace(ldapInteropConfig, "IDENTITY_PROVIDERS", entries, 1))

	const wrong = "Wrong username or password."
	const expired = "Your password has expired."
	type row struct {
		name, id, user, password string
		// before are passwords tried (and refused) first.
		before []string
		// groups is the X-Groups of a login; empty when refused.
		groups []string
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
}
