package e2e

// What docs/ldap.md says of Active Directory, made in a real domain
// controller (Samba's, test/adserver) with the docs' configuration as it
// stands: logins by sAMAccountName and by UPN (an alternative suffix, none,
// names with an @), nested groups through
// LDAP_MATCHING_RULE_IN_CHAIN, memberOf, objectGUID as the uid, AD's data
// codes for accounts it refuses, ldaps:// and StartTLS with ca_file,
// plain ldap:// (which AD refuses simple binds over), and basic_auth.

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/adserver"
	"golang.org/x/text/width"
)

const adConfig = `
server:
  public_url: PUBLIC_URL
  trusted_proxies: [127.0.0.1/32]
upstream:
  url: UPSTREAM_URL
session:
  keys: [SESSION_KEY]
sso:
  identity_providers:
IDENTITY_PROVIDERS
role_mapping:
  roles: [admin, user]
  default: user
  rules:
    - role: admin
      when: '"CN=CVAT Admins,CN=Users,DC=ad,DC=example,DC=com" in groups'
attribute_pass:
  headers:
    X-Sub: sub
    X-Username: username
    X-Email: email
    X-Groups: 'join(sort(groups), "|")'
    X-Roles: 'join(roles, ",")'
rules:
  - name: legacy-api
    path_prefix: /legacy/
    basic_auth: ad
    action: authenticate
`

// adEntry is docs/ldap.md's Active Directory entry, named id, at url,
// with extra keys, and its filters replaced when userFilter or
// groupSearch are not empty (groupSearch "-": none, groups from
// memberOf).
func adEntry(id, url, extra, userFilter, groupSearch string) string {
	if userFilter == "" {
		userFilter = "(&(objectCategory=person)(objectClass=user)(|(userPrincipalName={username})(&(sAMAccountName={username})(!(sAMAccountName=*@*)))))"
	}
	switch groupSearch {
	case "":
		groupSearch = fmt.Sprintf("      group_search:\n        base_dn: %q\n        filter: %q\n", adserver.UsersDN,
			"(&(objectClass=group)(member:1.2.840.113556.1.4.1941:={dn}))")
	case "-":
		groupSearch = ""
	}
	return fmt.Sprintf(`    - id: %s
      name: Company account
      protocol: LDAP
      url: %s
%s      bind_dn: %q
      bind_password: %q
      user_search:
        base_dn: %q
        filter: %q
%s      attribute_mapping:
        uid: objectGUID
        username: sAMAccountName
        first_name: givenName
        last_name: sn
        email: mail
        group_name: dn
`, id, url, extra, adserver.ServiceDN, adserver.ServicePassword, adserver.UsersDN, userFilter, groupSearch)
}

// adTree: alice in CVAT Admins, which is in CVAT Users; carol, dave,
// erin and José for the failure limit; logon names (asmith, frank and two
// sAMAccountNames that look like UPNs); the accounts AD refuses with a data code; a computer
// account in CN=Users; and a lockout threshold of 3 for locked only, by a
// fine-grained password policy (the domain's stays 0, so the tests' wrong
// passwords lock nobody else).
func adTree() string {
	const password = "Right-Pass1!"
	never := base64.StdEncoding.EncodeToString(make([]byte, 21)) // logonHours: no hour allowed
	return adserver.User("alice", "Alice-Pass1!", "givenName", "Alice") +
		adserver.User("carol", "Carol-Pass1!") +
		adserver.User("dave", "Dave-Pass1!") +
		adserver.User("erin", "Erin-Pass1!") +
		// José's names in base64, as LDIF takes any beyond ASCII.
		"dn: CN=jose," + adserver.UsersDN + "\nobjectClass: user\nsAMAccountName:: " + base64.StdEncoding.EncodeToString([]byte("José")) +
		"\nuserPrincipalName:: " + base64.StdEncoding.EncodeToString([]byte("José@"+adserver.DNSDomain)) +
		"\nsn: Tester\nunicodePwd:: " + adserver.UnicodePwd("Jose-Pass1!") + "\nuserAccountControl: 512\n\n" +
		adserver.User("mustchange", password, "pwdLastSet", "0") +
		adserver.User("expired", password) +
		adserver.User("hours", password, "logonHours:", never) +
		adserver.User("workstation", password, "userWorkstations", "NOWHERE") +
		adserver.User("disabled", password, "userAccountControl", "514") +
		adserver.User("acctexpired", password, "accountExpires", strconv.FormatInt((time.Now().Add(-48*time.Hour).Unix()+11644473600)*10_000_000, 10)) +
		adserver.User("locked", password) +
		adserver.User("gina", "Gina-Pass1!") +
		// Logon names: asmith's UPN has the forest's alternative suffix
		// and alice's name before it; frank loses his UPN below; two
		// sAMAccountNames (AD allows "@" in them) are asmith's UPN and
		// the UPN frank does not have.
		adserver.User("asmith", "Asmith-Pass1!", "userPrincipalName", "alice@"+altUPNSuffix, "mail", "asmith@"+altUPNSuffix) +
		adserver.User("frank", "Frank-Pass1!") +
		adserver.User("upnlike", password, "sAMAccountName", "alice@"+altUPNSuffix) +
		adserver.User("implicitlike", password, "sAMAccountName", "frank@"+adserver.DNSDomain) +
		// AD's "Last, First" names, and groups whose names need escaping
		// in a DN, one of them nested.
		adserver.User(`Smith\, John`, "John-Pass1!", "sAMAccountName", "jsmith", "userPrincipalName", "jsmith@"+adserver.DNSDomain) +
		"dn: CN=R&D\\, Ops," + adserver.UsersDN + "\nobjectClass: group\nsAMAccountName: rdops\nmember: " + adserver.UserDN(`Smith\, John`) + "\n\n" +
		"dn: CN=Eng (all) #1," + adserver.UsersDN + "\nobjectClass: group\nsAMAccountName: engall\nmember: CN=R&D\\, Ops," + adserver.UsersDN + "\n\n" +
		adserver.Group("CVAT Admins", adserver.UserDN("alice")) +
		adserver.Group("CVAT Users", adserver.GroupDN("CVAT Admins")) +
		// What a joined workstation's account looks like; a computer's
		// class derives from user.
		"dn: CN=WS01," + adserver.UsersDN + "\nobjectClass: computer\nsAMAccountName: WS01$\n" +
		"userAccountControl: 4096\nunicodePwd:: " + adserver.UnicodePwd(password) + "\n\n" +
		"dn: CN=lock-after-3,CN=Password Settings Container,CN=System," + adserver.BaseDN + `
objectClass: msDS-PasswordSettings
msDS-PasswordSettingsPrecedence: 1
msDS-PasswordReversibleEncryptionEnabled: FALSE
msDS-PasswordHistoryLength: 0
msDS-PasswordComplexityEnabled: TRUE
msDS-MinimumPasswordLength: 7
msDS-MinimumPasswordAge: 0
msDS-MaximumPasswordAge: -36288000000000
msDS-LockoutThreshold: 3
msDS-LockoutObservationWindow: -18000000000
msDS-LockoutDuration: -18000000000
msDS-PSOAppliesTo: ` + adserver.UserDN("locked") + "\n\n"
}

// altUPNSuffix is the forest's alternative UPN suffix (uPNSuffixes).
const altUPNSuffix = "corp.example"

func TestLDAPActiveDirectory(t *testing.T) {
	dc := adserver.Start(t)
	// An alternative UPN suffix, as Active Directory Domains and Trusts
	// adds one.
	dc.Modify(t, "dn: CN=Partitions,CN=Configuration,"+adserver.BaseDN+"\nchangetype: modify\nadd: uPNSuffixes\nuPNSuffixes: "+altUPNSuffix+"\n\n")
	dc.Add(t, adTree())
	// AD does not require a UPN: Active Directory Users and Computers
	// leaves it out when the logon name's field is left empty.
	dc.Modify(t, "dn: "+adserver.UserDN("frank")+"\nchangetype: modify\ndelete: userPrincipalName\n\n")
	// The domain's maximum password age is 42 days.
	dc.AgePassword(t, "expired", 100*24*time.Hour)
	t.Logf("Samba AD DC ready at %s in %s (provisioning %s)", dc.Addr, dc.StartupTime.Round(time.Millisecond), dc.ProvisionTime.Round(time.Millisecond))

	startTLS := "      start_tls: true\n      ca_file: " + dc.CAFile + "\n"
	entries := adEntry("ad", dc.URL, startTLS, "", "") +
		adEntry("ad-ldaps", dc.LDAPSURL, "      ca_file: "+dc.CAFile+"\n", "", "") +
		adEntry("ad-memberof", dc.LDAPSURL, "      ca_file: "+dc.CAFile+"\n", "", "-") +
		adEntry("ad-user-class", dc.LDAPSURL, "      ca_file: "+dc.CAFile+"\n", "(&(objectClass=user)(sAMAccountName={username}))", "") +
		adEntry("ad-plain", dc.URL, "", "", "") +
		// Both searches from the domain's root, where a domain controller
		// answers with a continuation reference to CN=Configuration too.
		strings.ReplaceAll(adEntry("ad-root", dc.LDAPSURL, "      ca_file: "+dc.CAFile+"\n", "", ""),
			fmt.Sprintf("base_dn: %q", adserver.UsersDN), fmt.Sprintf("base_dn: %q", adserver.BaseDN))
	// portcullis walks the nesting itself, and names groups by their cn.
	entries += strings.Replace(adEntry("ad-walk", dc.LDAPSURL, "      ca_file: "+dc.CAFile+"\n", "",
		fmt.Sprintf("      group_search:\n        base_dn: %q\n        filter: %q\n", adserver.UsersDN, "(&(objectClass=group)(member={dn}))")),
		"group_name: dn", "group_name: cn", 1)
	config := strings.Replace(adConfig, "IDENTITY_PROVIDERS", entries, 1)
	s := listen(t)
	// Not waiting for every IdP: ad-plain is never ready.
	logs := s.serveLogged(t, config)

	admins, users := adserver.GroupDN("CVAT Admins"), adserver.GroupDN("CVAT Users")
	aliceGUID := dc.GUID(t, "alice")
	const wrong = "Wrong username or password."
	type row struct {
		name, id, user, password string
		// groups is the X-Groups of a login, sorted; nil when refused.
		groups []string
		// says is what the refused form says.
		says string
		// logged is the idp's log line of the check, whose err must
		// contain loggedErr; err is what the login_failed line's must.
		logged, loggedErr, err string
	}
	rows := []row{
		{name: "by sAMAccountName, StartTLS: nested groups by the in-chain rule, Domain Users not among them", id: "ad", user: "alice", password: "Alice-Pass1!",
			groups: []string{admins, users}},
		{name: "by UPN: the same account and username", id: "ad", user: "alice@ad.example.com", password: "Alice-Pass1!",
			groups: []string{admins, users}},
		{name: "ldaps://", id: "ad-ldaps", user: "alice", password: "Alice-Pass1!",
			groups: []string{admins, users}},
		{name: "memberOf: direct groups only, Domain Users not among them", id: "ad-memberof", user: "alice", password: "Alice-Pass1!",
			groups: []string{admins}},
		{name: "base_dn at the domain's root: Samba's reference to CN=Configuration is not followed", id: "ad-root", user: "alice", password: "Alice-Pass1!",
			groups: []string{admins, users}},
		{name: `AD\alice is no username`, id: "ad", user: `AD\alice`, password: "Alice-Pass1!", says: wrong,
			err: "no entry under user_search.base_dn matches"},
		{name: "a wrong password: AD's 52e", id: "ad", user: "alice", password: "wrong", says: wrong,
			logged: "ldap: password refused", loggedErr: "data 52e,", err: "refused the password of CN=alice,"},
		{name: "a computer account is not matched by the docs' filter", id: "ad", user: "WS01$", password: "Right-Pass1!", says: wrong,
			err: "no entry under user_search.base_dn matches"},
		{name: "an expired password (532)", id: "ad", user: "expired", password: "Right-Pass1!", says: "Your password has expired.",
			logged: "ldap: account refused", loggedErr: "data 532,", err: "(532)"},
		{name: "an expired password, wrong: AD says 52e, and the form nothing of the expiry", id: "ad", user: "expired", password: "Wrong-Pass1!", says: wrong,
			logged: "ldap: password refused", loggedErr: "data 52e,", err: "refused the password of CN=expired,"},
		{name: "a password to change at next logon (773)", id: "ad", user: "mustchange", password: "Right-Pass1!",
			says: "Your password must be changed before you can sign in.", logged: "ldap: account refused", loggedErr: "data 773,", err: "(773)"},
		{name: "outside logon hours (530)", id: "ad", user: "hours", password: "Right-Pass1!",
			says: "Your account may not sign in at this time.", logged: "ldap: account refused", loggedErr: "data 530,", err: "(530)"},
		{name: "not from this workstation (531)", id: "ad", user: "workstation", password: "Right-Pass1!",
			says: "Your account may not sign in from here.", logged: "ldap: account refused", loggedErr: "data 531,", err: "(531)"},
		{name: "a disabled account (533)", id: "ad", user: "disabled", password: "Right-Pass1!", says: wrong,
			logged: "ldap: password refused", loggedErr: "data 533,", err: "refused the password of CN=disabled,"},
		{name: "a disabled account, wrong password: AD says 52e", id: "ad", user: "disabled", password: "Wrong-Pass1!", says: wrong,
			logged: "ldap: password refused", loggedErr: "data 52e,", err: "refused the password of CN=disabled,"},
		{name: "outside logon hours, wrong password: AD says 52e", id: "ad", user: "hours", password: "Wrong-Pass1!", says: wrong,
			logged: "ldap: password refused", loggedErr: "data 52e,", err: "refused the password of CN=hours,"},
		{name: "an expired account (701)", id: "ad", user: "acctexpired", password: "Right-Pass1!", says: wrong,
			logged: "ldap: password refused", loggedErr: "data 701,", err: "refused the password of CN=acctexpired,"},
	}
	check := func(t *testing.T, c row, addr string) {
		t.Helper()
		b := fromAddr(browser(t), addr)
		// The directory's lines for this account: rows of other accounts
		// run beside this one.
		logged := map[string]any{"msg": c.logged, "dn": adserver.UserDN(c.user)}
		before := len(logs.find(t, logged))
		form := openForm(t, b, s.URL+"/.portcullis/ldap/"+c.id+"?rd=/tasks")
		resp, body := form.submit(t, b, c.user, c.password)
		if c.groups != nil {
			if resp.StatusCode != http.StatusFound {
				t.Fatalf("login: status %d, want 302 to the page asked for:\n%s", resp.StatusCode, body)
			}
			h := upstreamSees(t, b, s)
			want := []string{aliceGUID, "alice", "alice@ad.example.com", strings.Join(c.groups, "|"), "admin"}
			got := []string{h.Get("X-Sub"), h.Get("X-Username"), h.Get("X-Email"), h.Get("X-Groups"), h.Get("X-Roles")}
			if !slices.Equal(got, want) {
				t.Errorf("upstream saw X-Sub, X-Username, X-Email, X-Groups, X-Roles %q, want %q", got, want)
			}
			return
		}
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, c.says) {
			t.Fatalf("status %d, want 401 with the form saying %q:\n%s", resp.StatusCode, c.says, body)
		}
		line := logs.audit(t, resp, "login_failed")
		if line["reason"] != "invalid_credentials" || !strings.Contains(fmt.Sprint(line["err"]), c.err) {
			t.Errorf("login_failed reason %v, err %q; want invalid_credentials and an err saying %q", line["reason"], line["err"], c.err)
		}
		if c.logged == "" {
			return
		}
		lines := logs.find(t, logged)
		if len(lines) != before+1 {
			t.Fatalf("%d %q lines, want 1 more than the %d before", len(lines), c.logged, before)
		}
		if got := fmt.Sprint(lines[len(lines)-1]["err"]); !strings.Contains(got, c.loggedErr) {
			t.Errorf("%q line's err = %q, want it to say %q", c.logged, got, c.loggedErr)
		}
	}
	t.Run("logins and refusals", func(t *testing.T) {
		// Each account's rows one after the other (check counts its
		// lines), the accounts side by side: most rows wait for the floor.
		var mu sync.Mutex
		accounts := map[string]*sync.Mutex{}
		for i, c := range rows {
			mu.Lock()
			if accounts[c.user] == nil {
				accounts[c.user] = &sync.Mutex{}
			}
			account := accounts[c.user]
			mu.Unlock()
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				account.Lock()
				defer account.Unlock()
				check(t, c, "10.39.1."+strconv.Itoa(i+1))
			})
		}
	})

	t.Run("logon names: an alternative UPN suffix, no UPN, sAMAccountNames that look like UPNs", func(t *testing.T) {
		const password = "Right-Pass1!"
		cases := []struct {
			name, user, password string
			// username is the X-Username of a login; "" when refused,
			// with err what the login_failed line's says.
			username, err string
		}{
			{"asmith by sAMAccountName", "asmith", "Asmith-Pass1!", "asmith", ""},
			{"asmith by her UPN at the alternative suffix, though a sAMAccountName is the same", "alice@corp.example", "Asmith-Pass1!", "asmith", ""},
			{"the UPN in capitals", "ALICE@CORP.EXAMPLE", "Asmith-Pass1!", "asmith", ""},
			{"the UPN's name before the @ is another account's", "alice", "Asmith-Pass1!", "", "refused the password of CN=alice,"},
			{"asmith at the domain's suffix: not her UPN", "asmith@ad.example.com", "Asmith-Pass1!", "", "no entry under user_search.base_dn matches"},
			{"frank, without a UPN, by sAMAccountName", "frank", "Frank-Pass1!", "frank", ""},
			{"frank's implicit UPN is no username", "frank@ad.example.com", "Frank-Pass1!", "", "no entry under user_search.base_dn matches"},
			{"nor the account whose sAMAccountName it is", "frank@ad.example.com", password, "", "no entry under user_search.base_dn matches"},
			{"which signs in by its UPN", "implicitlike@ad.example.com", password, "frank@ad.example.com", ""},
		}
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				b := fromAddr(browser(t), "10.39.10."+strconv.Itoa(i+1))
				form := openForm(t, b, s.URL+"/.portcullis/ldap/ad?rd=/tasks")
				resp, body := form.submit(t, b, c.user, c.password)
				if c.username != "" {
					if resp.StatusCode != http.StatusFound {
						t.Fatalf("status %d, want 302: %s", resp.StatusCode, logs.audit(t, resp, "login_failed")["err"])
					}
					if got := upstreamSees(t, b, s).Get("X-Username"); got != c.username {
						t.Errorf("X-Username %q, want %q", got, c.username)
					}
					return
				}
				if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, wrong) {
					t.Fatalf("status %d, want 401 %q:\n%s", resp.StatusCode, wrong, body)
				}
				if line := logs.audit(t, resp, "login_failed"); !strings.Contains(fmt.Sprint(line["err"]), c.err) {
					t.Errorf("login_failed err %q, want it to say %q", line["err"], c.err)
				}
			})
		}
	})

	t.Run("DNs with escaped characters: a comma in the user's, a comma and a # in the groups'", func(t *testing.T) {
		cases := []struct{ id, groups string }{
			// As Samba writes the DNs: it escapes a # anywhere in a value.
			{"ad", `CN=Eng (all) \#1,` + adserver.UsersDN + `|CN=R&D\, Ops,` + adserver.UsersDN},
			{"ad-walk", "Eng (all) #1|R&D, Ops"},
		}
		for i, c := range cases {
			b := fromAddr(browser(t), "10.39.13."+strconv.Itoa(i+1))
			form := openForm(t, b, s.URL+"/.portcullis/ldap/"+c.id+"?rd=/tasks")
			if resp, _ := form.submit(t, b, "jsmith", "John-Pass1!"); resp.StatusCode != http.StatusFound {
				t.Fatalf("%s: status %d, want 302: %s", c.id, resp.StatusCode, logs.audit(t, resp, "login_failed")["err"])
			}
			if got := upstreamSees(t, b, s).Get("X-Groups"); got != c.groups {
				t.Errorf("%s: X-Groups %q, want %q", c.id, got, c.groups)
			}
		}
	})

	t.Run("the filter without objectCategory=person matches the computer account", func(t *testing.T) {
		// The contrast to the docs' filter above: found, so the
		// directory is asked for its password.
		b := fromAddr(browser(t), "10.39.2.1")
		form := openForm(t, b, s.URL+"/.portcullis/ldap/ad-user-class?rd=/tasks")
		resp, body := form.submit(t, b, "WS01$", "Wrong-Pass1!")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401:\n%s", resp.StatusCode, body)
		}
		if line := logs.audit(t, resp, "login_failed"); !strings.Contains(fmt.Sprint(line["err"]), "refused the password of CN=WS01,") {
			t.Errorf("login_failed err %q, want the computer's entry found and its password refused", line["err"])
		}
	})

	// signIn logs b in as user at IdP ad and out again, which leaves b
	// the device cookie of that login.
	signIn := func(t *testing.T, b *http.Client, user, password string) {
		t.Helper()
		form := openForm(t, b, s.URL+"/.portcullis/ldap/ad?rd=/tasks")
		if resp, body := form.submit(t, b, user, password); resp.StatusCode != http.StatusFound {
			t.Fatalf("%s's login: status %d, want 302:\n%s", user, resp.StatusCode, body)
		}
		resp, err := b.Get(s.URL + "/.portcullis/logout")
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
	}
	// trustedRefusal checks that b, whose device cookie is user's, is
	// refused with user's right password, and that the directory said why.
	trustedRefusal := func(t *testing.T, b *http.Client, user, password, dataCode string) {
		t.Helper()
		form := openForm(t, b, s.URL+"/.portcullis/ldap/ad?rd=/tasks")
		resp, body := form.submit(t, b, user, password)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, wrong) {
			t.Fatalf("%s with the right password and a device cookie: status %d, want 401 %q:\n%s", user, resp.StatusCode, wrong, body)
		}
		if line := logs.audit(t, resp, "login_failed"); line["device"] != "trusted" {
			t.Errorf("login_failed device %v, want trusted: the device cookie was not used", line["device"])
		}
		lines := logs.find(t, map[string]any{"msg": "ldap: password refused", "dn": adserver.UserDN(user)})
		if len(lines) == 0 || !strings.Contains(fmt.Sprint(lines[len(lines)-1]["err"]), "data "+dataCode+",") {
			t.Errorf("no %q line for %s saying data %s", "ldap: password refused", user, dataCode)
		}
	}

	t.Run("a device cookie does not let a disabled account in", func(t *testing.T) {
		b := fromAddr(browser(t), "10.39.11.1")
		signIn(t, b, "gina", "Gina-Pass1!")
		dc.Modify(t, "dn: "+adserver.UserDN("gina")+"\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n\n")
		trustedRefusal(t, b, "gina", "Gina-Pass1!", "533")
	})

	t.Run("a locked account (775), after the policy's 3 wrong passwords", func(t *testing.T) {
		// Its own browser signed in before: its device cookie does not
		// let it in once the directory locked the account.
		own := fromAddr(browser(t), "10.39.3.8")
		signIn(t, own, "locked", "Right-Pass1!")
		for i, p := range []string{"Wrong-1!", "Wrong-2!", "Wrong-3!"} {
			b := fromAddr(browser(t), "10.39.3."+strconv.Itoa(i+1))
			form := openForm(t, b, s.URL+"/.portcullis/ldap/ad?rd=/tasks")
			if resp, body := form.submit(t, b, "locked", p); resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("password %q first: status %d, want 401:\n%s", p, resp.StatusCode, body)
			}
		}
		check(t, row{id: "ad", user: "locked", password: "Right-Pass1!", says: wrong,
			logged: "ldap: password refused", loggedErr: "data 775,", err: "refused the password of CN=locked,"}, "10.39.3.9")
		trustedRefusal(t, own, "locked", "Right-Pass1!", "775")
	})

	t.Run("a UPN at the alternative suffix shares the account's failure limit with its sAMAccountName", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 5 {
			wg.Go(func() {
				b := fromAddr(browser(t), "10.39.12."+strconv.Itoa(i+1))
				form := openForm(t, b, s.URL+"/.portcullis/ldap/ad?rd=/tasks")
				if resp, body := form.submit(t, b, "alice@"+altUPNSuffix, "Wrong-Pass1!"); resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("wrong password %d: status %d, want 401:\n%s", i+1, resp.StatusCode, body)
				}
			})
		}
		wg.Wait()
		binds := len(logs.find(t, map[string]any{"msg": "ldap: password refused", "dn": adserver.UserDN("asmith")}))
		b := fromAddr(browser(t), "10.39.12.9")
		form := openForm(t, b, s.URL+"/.portcullis/ldap/ad?rd=/tasks")
		if resp, body := form.submit(t, b, "asmith", "Asmith-Pass1!"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, wrong) {
			t.Errorf("asmith with the right password: status %d, want 401 %q:\n%s", resp.StatusCode, wrong, body)
		}
		if n := len(logs.find(t, map[string]any{"msg": "ldap: password refused", "dn": adserver.UserDN("asmith")})); binds != 5 || n != binds {
			t.Errorf("%d wrong passwords by the UPN reached the directory, want 5; then %d more as asmith, want none", binds, n-binds)
		}
		// alice, whose name is the UPN's before the @, is another account.
		form = openForm(t, b, s.URL+"/.portcullis/ldap/ad?rd=/tasks")
		if resp, body := form.submit(t, b, "alice", "Alice-Pass1!"); resp.StatusCode != http.StatusFound {
			t.Errorf("alice: status %d, want 302:\n%s", resp.StatusCode, body)
		}
	})

	t.Run("sAMAccountName and UPN share one account's failure limit", func(t *testing.T) {
		for i := range 5 {
			b := fromAddr(browser(t), "10.39.4."+strconv.Itoa(i+1))
			form := openForm(t, b, s.URL+"/.portcullis/ldap/ad?rd=/tasks")
			if resp, body := form.submit(t, b, "carol", "Wrong-Pass1!"); resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("wrong password %d: status %d, want 401:\n%s", i+1, resp.StatusCode, body)
			}
		}
		binds := logs.find(t, map[string]any{"msg": "ldap: password refused"})
		b := fromAddr(browser(t), "10.39.4.9")
		form := openForm(t, b, s.URL+"/.portcullis/ldap/ad?rd=/tasks")
		resp, body := form.submit(t, b, "carol@ad.example.com", "Carol-Pass1!")
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, wrong) {
			t.Fatalf("the UPN with the right password: status %d, want 401 %q:\n%s", resp.StatusCode, wrong, body)
		}
		if after := logs.find(t, map[string]any{"msg": "ldap: password refused"}); len(after) != len(binds) {
			t.Errorf("the held-back UPN's password went to the directory: %v", after[len(after)-1])
		}
		form = openForm(t, b, s.URL+"/.portcullis/ldap/ad?rd=/tasks")
		if resp, body := form.submit(t, b, "carol", "Carol-Pass1!"); resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("sAMAccountName with the right password: status %d, want 429:\n%s", resp.StatusCode, body)
		}
	})

	call := func(user, password string) (*http.Response, string) {
		t.Helper()
		s.Upstream.Reset()
		req, _ := http.NewRequest("GET", s.URL+"/legacy/items", nil)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("X-Forwarded-For", "10.39.6.1")
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	// Every IdP entry above that reaches the domain controller: a second
	// entry for one domain (another DC, ldaps:// beside StartTLS, other
	// groups) is the same accounts.
	reaching := []string{"ad", "ad-ldaps", "ad-memberof", "ad-user-class"}
	t.Run("every spelling Samba matches, at every entry, shares the account's five binds", func(t *testing.T) {
		// Samba finds dave by each of these (case, spaces at either end,
		// the UPN with its suffix in any case); the full-width one and
		// the tab it does not find, and the limits count them as dave.
		spell := func(name string) []string {
			upper := strings.ToUpper(name)
			return []string{name, upper, " " + name, name + " ", name + "@" + adserver.DNSDomain, upper + "@AD.EXAMPLE.COM",
				name + "@AD.example.com ", width.Widen.String(name), name + "\t"}
		}
		type attack struct {
			account, dn string
			spellings   []string
			addr        func(i int) string
		}
		attacks := []attack{
			{"dave, from one address", adserver.UserDN("dave"), spell("dave"), func(int) string { return "10.39.7.1" }},
			{"erin, from a new address each time", adserver.UserDN("erin"), spell("erin"), func(i int) string { return "10.39.8." + strconv.Itoa(i+1) }},
			{"José, from a new address each time", "CN=jose," + adserver.UsersDN, append(spell("José"), "JOSÉ", "josé", "josé@AD.EXAMPLE.COM"),
				func(i int) string { return "10.39.9." + strconv.Itoa(i+1) }},
		}
		refusedBinds := func(dn string) int {
			return len(logs.find(t, map[string]any{"msg": "ldap: password refused", "dn": dn}))
		}
		// At once, a few at a time: each refusal waits for the floor.
		var wg sync.WaitGroup
		slots := make(chan struct{}, 12)
		for _, a := range attacks {
			i := 0
			for _, u := range a.spellings {
				for _, id := range reaching {
					addr := a.addr(i)
					i++
					wg.Go(func() {
						slots <- struct{}{}
						defer func() { <-slots }()
						b := fromAddr(browser(t), addr)
						form := openForm(t, b, s.URL+"/.portcullis/ldap/"+id+"?rd=/tasks")
						if resp, body := form.submit(t, b, u, "Wrong-Pass1!"); resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusTooManyRequests {
							t.Errorf("%s: %q at %s: status %d, want 401 or 429:\n%s", a.account, u, id, resp.StatusCode, body)
						}
					})
				}
			}
		}
		wg.Wait()
		for _, a := range attacks {
			if n := refusedBinds(a.dn); n != 5 {
				t.Errorf("%s: %d spellings at %d entries: %d wrong passwords reached the directory, want 5", a.account, len(a.spellings), len(reaching), n)
			}
		}
		// The right password, spelled anew at an entry it was not tried
		// at, from a new address: held back, as a wrong one.
		before := refusedBinds(adserver.UserDN("dave"))
		b := fromAddr(browser(t), "10.39.7.99")
		form := openForm(t, b, s.URL+"/.portcullis/ldap/ad-user-class?rd=/tasks")
		if resp, body := form.submit(t, b, "Dave@Ad.Example.Com", "Dave-Pass1!"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, wrong) {
			t.Errorf("dave's right password as Dave@Ad.Example.Com: status %d, want 401 %q:\n%s", resp.StatusCode, wrong, body)
		}
		if resp, body := call("ERIN@ad.example.com", "Erin-Pass1!"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("erin's right password by Basic auth as ERIN@ad.example.com: status %d, want 401: %s", resp.StatusCode, body)
		}
		if n := refusedBinds(adserver.UserDN("dave")); n != before {
			t.Errorf("dave's held-back password reached the directory")
		}
	})

	t.Run("plain ldap:// without TLS: the operator is told the directory wants TLS", func(t *testing.T) {
		b := fromAddr(browser(t), "10.39.5.1")
		form := openForm(t, b, s.URL+"/.portcullis/ldap/ad-plain?rd=/tasks")
		resp, body := form.submit(t, b, "alice", "Alice-Pass1!")
		resp.Body = io.NopCloser(strings.NewReader(body))
		line := operatorSees(t, s, logs, resp, http.StatusServiceUnavailable, "not set up right", "directory_requires_tls",
			"ldaps://", "start_tls: true")
		if err := fmt.Sprint(line["err"]); !strings.Contains(err, "bind as service account") {
			t.Errorf("login_failed err %q does not name the step", err)
		}
	})

	t.Run("basic_auth: the right password reaches the upstream as that user", func(t *testing.T) {
		resp, body := call("alice", "Alice-Pass1!")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		got, _ := s.Upstream.Last()
		h := got.Header
		want := []string{aliceGUID, "alice", "alice@ad.example.com", admins + "|" + users, "admin", ""}
		if g := []string{h.Get("X-Sub"), h.Get("X-Username"), h.Get("X-Email"), h.Get("X-Groups"), h.Get("X-Roles"), h.Get("Authorization")}; !slices.Equal(g, want) {
			t.Errorf("upstream saw X-Sub, X-Username, X-Email, X-Groups, X-Roles, Authorization %q, want %q", g, want)
		}
	})
	t.Run("basic_auth: a wrong password gets 401", func(t *testing.T) {
		resp, body := call("alice", "Wrong-Pass1!")
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic realm=") {
			t.Errorf("status %d WWW-Authenticate %q, want 401 asking for Basic credentials: %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
		if _, reached := s.Upstream.Last(); reached {
			t.Errorf("the request reached the upstream")
		}
	})
}
