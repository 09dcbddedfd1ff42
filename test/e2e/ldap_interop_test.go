package e2e

// The ways real directories are set up, made in the real slapd: users found
// by uid, mail, cn or either of two, deep below the base; groups from the
// memberof overlay, groupOfNames, groupOfUniqueNames and RFC 2307
// posixGroups; DNs with the characters RFC 4514 escapes; usernames typed in
// another case; entries with two mail values or none; StartTLS and ldaps://.
// Each is an entry of one portcullis in front of one slapd: a user signs in
// with the form and reaches the upstream as the directory names them, with
// its groups; or the login is refused with a reason and a hint the operator
// can act on.

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
)

// ldapInteropConfig is the proxy in front of every directory entry of the
// test (IDENTITY_PROVIDERS), passing what the profile holds.
const ldapInteropConfig = `
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
      when: '"cvat-admins" in groups'
attribute_pass:
  headers:
    X-Username: username
    X-Email: email
    X-Groups: 'join(sort(groups), "|")'
    X-Roles: 'join(roles, ",")'
`

// The extra tree: users deep below the base and with DNs that need
// escaping, and groups of every kind under ou=teams.
const (
	teamsDN = "ou=teams," + ldapserver.Suffix
	annDN   = "uid=ann,ou=lab,ou=research,ou=staff," + ldapserver.Suffix
	// The special DNs, as RFC 4514 writes them.
	commaDN    = `cn=Smith\, John,ou=people,` + ldapserver.Suffix
	plusDN     = `cn=Multi+uid=multi,ou=people,` + ldapserver.Suffix
	quoteDN    = `cn=Dara \"Q\" O'Brien,ou=people,` + ldapserver.Suffix
	hashDN     = `cn=\#hash,ou=people,` + ldapserver.Suffix
	unicodeDN  = `cn=Renée Dupré,ou=people,` + ldapserver.Suffix
	trailingDN = `cn=trail\ ,ou=people,` + ldapserver.Suffix
	// patPassword has spaces (one at the end) and characters beyond ASCII.
	patPassword = "pâss wörd 🔑 "
)

// ldif writes one entry; values that LDIF cannot carry as they are
// (beyond ASCII, a leading or trailing space, a leading colon) are
// base64, as ldapadd wants them.
func ldif(dn string, attrs ...string) string {
	line := func(name, value string) string {
		safe := value == "" || (value[0] != ' ' && value[0] != ':' && value[0] != '<' && value[len(value)-1] != ' ')
		for _, r := range value {
			safe = safe && r < utf8.RuneSelf && r >= ' '
		}
		if safe {
			return name + ": " + value + "\n"
		}
		return name + ":: " + base64.StdEncoding.EncodeToString([]byte(value)) + "\n"
	}
	out := line("dn", dn)
	for i := 0; i+1 < len(attrs); i += 2 {
		out += line(attrs[i], attrs[i+1])
	}
	return out + "\n"
}

// person is an inetOrgPerson entry; mails may be none.
func person(dn, uid, cn, password string, mails ...string) string {
	attrs := []string{"objectClass", "inetOrgPerson", "uid", uid, "cn", cn, "sn", "Tester", "userPassword", ldapserver.SSHA(password)}
	for _, m := range mails {
		attrs = append(attrs, "mail", m)
	}
	return ldif(dn, attrs...)
}

func ldapInteropTree() string {
	ou := func(dn, name string) string { return ldif(dn, "objectClass", "organizationalUnit", "ou", name) }
	special := []string{commaDN, plusDN, quoteDN, hashDN, unicodeDN, trailingDN}
	tree := ou("ou=staff,"+ldapserver.Suffix, "staff") +
		ou("ou=research,ou=staff,"+ldapserver.Suffix, "research") +
		ou("ou=lab,ou=research,ou=staff,"+ldapserver.Suffix, "lab") +
		ou(teamsDN, "teams") +
		person(annDN, "ann", "Ann Other", "ann-pw", "ann@example.com") +
		person("uid=pat,ou=people,"+ldapserver.Suffix, "pat", "Pat Tester", patPassword, "pat@example.com") +
		person("uid=twomail,ou=people,"+ldapserver.Suffix, "twomail", "Two Mail", "twomail-pw", "first@example.com", "second@example.com") +
		person("uid=nomail,ou=people,"+ldapserver.Suffix, "nomail", "No Mail", "nomail-pw") +
		person(`uid=par(en)\5cslash,ou=people,`+ldapserver.Suffix, `par(en)\slash`, "Meta Chars", "meta-pw", "meta@example.com") +
		person(commaDN, "smithj", "Smith, John", "comma-pw", "smithj@example.com") +
		person(plusDN, "multi", "Multi", "plus-pw", "multi@example.com") +
		person(quoteDN, "dara", `Dara "Q" O'Brien`, "quote-pw", "dara@example.com") +
		person(hashDN, "hash", "#hash", "hash-pw", "hash@example.com") +
		person(unicodeDN, "renee", "Renée Dupré", "unicode-pw", "renee@example.com") +
		person(trailingDN, "trail", "trail ", "trailing-pw", "trail@example.com")
	members := func(attr string, dns ...string) []string {
		var out []string
		for _, dn := range dns {
			out = append(out, attr, dn)
		}
		return out
	}
	tree += ldif(`cn=annotators\, senior,`+teamsDN, append([]string{"objectClass", "groupOfNames", "cn", "annotators, senior"}, members("member", annDN)...)...) +
		ldif(`cn=équipe,`+teamsDN, append([]string{"objectClass", "groupOfNames", "cn", "équipe"}, members("member", annDN, "uid=pat,ou=people,"+ldapserver.Suffix)...)...) +
		ldif(`cn=dn-testers,`+teamsDN, append([]string{"objectClass", "groupOfNames", "cn", "dn-testers"}, members("member", special...)...)...) +
		ldif(`cn=reviewers,`+teamsDN, append([]string{"objectClass", "groupOfUniqueNames", "cn", "reviewers"}, members("uniqueMember", append([]string{annDN}, special...)...)...)...) +
		ldif(`cn=labelers,`+teamsDN, "objectClass", "posixGroup", "cn", "labelers", "gidNumber", "5000", "memberUid", "ann", "memberUid", "pat")
	return tree
}

// ldapInteropEntry is a directory entry of the proxy: id, at url, with
// the user search filter, and extra keys (indented as entry keys).
func ldapInteropEntry(id, url, userFilter, extra string) string {
	return fmt.Sprintf(`    - id: %s
      protocol: LDAP
      url: %s
      bind_dn: %s
      bind_password: %s
      user_search: {base_dn: %q, filter: %q}
%s`, id, url, ldapserver.ServiceDN, ldapserver.ServicePassword, ldapserver.Suffix, userFilter, extra)
}

func TestLDAPDirectoryVariationsLogIn(t *testing.T) {
	dir := ldapserver.Start(t, ldapserver.Options{TLS: true, Schemas: []string{"nis"}})
	dir.Add(t, ldapInteropTree())

	groupSearch := func(filter string) string {
		return fmt.Sprintf("      group_search: {base_dn: %q, filter: %q}\n", teamsDN, filter)
	}
	caFile := "      ca_file: " + dir.CAFile + "\n"
	byUID := "(&(objectClass=inetOrgPerson)(uid={username}))"
	entries := []string{
		ldapInteropEntry("by-uid", dir.URL, byUID, ""),
		ldapInteropEntry("by-mail", dir.URL, "(mail={username})", ""),
		ldapInteropEntry("by-cn", dir.URL, "(&(objectClass=inetOrgPerson)(cn={username}))", ""),
		ldapInteropEntry("by-uid-or-mail", dir.URL, "(|(uid={username})(mail={username}))", ""),
		strings.Replace(ldapInteropEntry("base-spelled", dir.URL, byUID, ""),
			strconv.Quote(ldapserver.Suffix), `"DC=Example,  dc=COM"`, 1),
		ldapInteropEntry("group-of-names", dir.URL, byUID, groupSearch("(&(objectClass=groupOfNames)(member={dn}))")),
		ldapInteropEntry("unique-names", dir.URL, byUID, groupSearch("(&(objectClass=groupOfUniqueNames)(uniqueMember={dn}))")),
		ldapInteropEntry("posix", dir.URL, "(|(uid={username})(mail={username}))", groupSearch("(&(objectClass=posixGroup)(memberUid={username}))")),
		ldapInteropEntry("mapping-case", dir.URL, byUID, "      attribute_mapping: {email: MAIL, groups: MemberOf}\n"),
		ldapInteropEntry("start-tls", dir.URL, byUID, "      start_tls: true\n"+caFile),
		ldapInteropEntry("ldaps", dir.LDAPSURL, byUID, caFile),
		ldapInteropEntry("ldaps-unknown-ca", dir.LDAPSURL, byUID, ""),
	}
	config := strings.Replace(ldapInteropConfig, "IDENTITY_PROVIDERS", strings.Join(entries, ""), 1)
	s := listen(t)
	// Not waiting for every IdP: ldaps-unknown-ca is never ready.
	logs := s.serveLogged(t, config)

	ann := []string{"annotators, senior", "équipe"} // her groupOfNames groups
	dnTesters := []string{"dn-testers"}
	type row struct {
		name, id, user, password string
		// username and email are the X-Username and X-Email wanted; groups
		// the X-Groups, sorted.
		username, email string
		groups          []string
		// refused: the form answers "wrong username or password".
		refused bool
		// failReason, when set, is the login_failed reason expected instead
		// of a login, with hints that the line's hint must mention.
		failReason string
		hints      []string
	}
	rows := []row{
		{name: "by uid, deep below the base (memberOf)", id: "by-uid", user: "ann", password: "ann-pw", username: "ann", email: "ann@example.com", groups: ann},
		{name: "by uid typed in another case: the directory's uid", id: "by-uid", user: "ANN", password: "ann-pw", username: "ann", email: "ann@example.com", groups: ann},
		{name: "by mail", id: "by-mail", user: "ann@example.com", password: "ann-pw", username: "ann", email: "ann@example.com", groups: ann},
		{name: "by mail in another case: the directory's mail", id: "by-mail", user: "Ann@Example.COM", password: "ann-pw", username: "ann", email: "ann@example.com", groups: ann},
		{name: "by cn", id: "by-cn", user: "Ann Other", password: "ann-pw", username: "ann", email: "ann@example.com", groups: ann},
		{name: "by cn with a comma", id: "by-cn", user: "Smith, John", password: "comma-pw", username: "smithj", email: "smithj@example.com", groups: dnTesters},
		{name: "by uid or mail, uid", id: "by-uid-or-mail", user: "ann", password: "ann-pw", username: "ann", email: "ann@example.com", groups: ann},
		{name: "by uid or mail, mail", id: "by-uid-or-mail", user: "ann@example.com", password: "ann-pw", username: "ann", email: "ann@example.com", groups: ann},
		{name: "base DN in other case and spacing", id: "base-spelled", user: "ann", password: "ann-pw", username: "ann", email: "ann@example.com", groups: ann},
		{name: "groupOfNames by {dn}", id: "group-of-names", user: "ann", password: "ann-pw", username: "ann", email: "ann@example.com", groups: ann},
		{name: "groupOfUniqueNames by {dn}", id: "unique-names", user: "ann", password: "ann-pw", username: "ann", email: "ann@example.com", groups: []string{"reviewers"}},
		{name: "posixGroup by memberUid", id: "posix", user: "ann", password: "ann-pw", username: "ann", email: "ann@example.com", groups: []string{"labelers"}},
		{name: "posixGroup by memberUid, uid typed in another case", id: "posix", user: "ANN", password: "ann-pw", username: "ann", email: "ann@example.com", groups: []string{"labelers"}},
		{name: "posixGroup by memberUid, signed in by mail", id: "posix", user: "ann@example.com", password: "ann-pw", username: "ann", email: "ann@example.com", groups: []string{"labelers"}},
		{name: "attribute_mapping names in other case", id: "mapping-case", user: "ann", password: "ann-pw", username: "ann", email: "ann@example.com", groups: ann},
		{name: "a password with spaces and beyond ASCII", id: "by-uid", user: "pat", password: patPassword, username: "pat", email: "pat@example.com", groups: []string{"équipe"}},
		{name: "the same password without its trailing space is refused", id: "by-uid", user: "pat", password: strings.TrimSpace(patPassword), refused: true},
		{name: "an empty password is refused", id: "by-uid", user: "pat", password: "", refused: true},
		{name: "filter metacharacters and a backslash in the uid", id: "by-uid", user: `par(en)\slash`, password: "meta-pw", username: `par(en)\slash`, email: "meta@example.com"},
		{name: "two mail values: the first", id: "by-uid", user: "twomail", password: "twomail-pw", username: "twomail", email: "first@example.com"},
		{name: "two mail values, signed in by the second: the first", id: "by-mail", user: "second@example.com", password: "twomail-pw", username: "twomail", email: "first@example.com"},
		{name: "no mail", id: "by-uid", user: "nomail", password: "nomail-pw", username: "nomail", email: ""},
		{name: "StartTLS", id: "start-tls", user: "ann", password: "ann-pw", username: "ann", email: "ann@example.com", groups: ann},
		{name: "ldaps://", id: "ldaps", user: "ann", password: "ann-pw", username: "ann", email: "ann@example.com", groups: ann},
		{name: "ldaps:// with a certificate the system does not trust", id: "ldaps-unknown-ca", user: "ann", password: "ann-pw",
			failReason: "directory_certificate", hints: []string{"signed by a CA this system does not trust", `issuer "CN=ldapserver test CA"`, "set ca_file"}},
	}
	// Users whose DN needs escaping: they bind with the DN the search
	// found, and {dn} goes into the group filters escaped.
	for _, u := range []struct{ what, uid, password string }{
		{"a comma", "smithj", "comma-pw"},
		{"a multi-valued RDN", "multi", "plus-pw"},
		{"quotes", "dara", "quote-pw"},
		{"a leading #", "hash", "hash-pw"},
		{"letters beyond ASCII", "renee", "unicode-pw"},
		{"an escaped trailing space", "trail", "trailing-pw"},
	} {
		for _, g := range []struct{ id, how, group string }{
			{"by-uid", "memberOf", "dn-testers"},
			{"group-of-names", "groupOfNames by {dn}", "dn-testers"},
			{"unique-names", "groupOfUniqueNames by {dn}", "reviewers"},
		} {
			rows = append(rows, row{name: "a DN with " + u.what + ", " + g.how, id: g.id, user: u.uid, password: u.password,
				username: u.uid, email: u.uid + "@example.com", groups: []string{g.group}})
		}
	}
	for i, c := range rows {
		t.Run(c.name, func(t *testing.T) {
			b := fromAddr(browser(t), "10.9."+strconv.Itoa(i/200)+"."+strconv.Itoa(i%200+1))
			form := openForm(t, b, s.URL+"/.portcullis/ldap/"+c.id+"?rd=/tasks")
			resp, body := form.submit(t, b, c.user, c.password)
			switch {
			case c.failReason != "":
				resp.Body = io.NopCloser(strings.NewReader(body))
				operatorSees(t, s, logs, resp, http.StatusServiceUnavailable, "not set up right", c.failReason, c.hints...)
				return
			case c.refused:
				if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Wrong username or password.") {
					t.Fatalf("status %d, want 401 with the form's message:\n%s", resp.StatusCode, body)
				}
				return
			}
			if resp.StatusCode != http.StatusFound {
				t.Fatalf("login: status %d, want 302 to the page asked for:\n%s", resp.StatusCode, body)
			}
			h := upstreamSees(t, b, s)
			want := []string{c.username, c.email, strings.Join(c.groups, "|")}
			got := []string{h.Get("X-Username"), h.Get("X-Email"), h.Get("X-Groups")}
			if !slices.Equal(got, want) {
				t.Errorf("upstream saw X-Username, X-Email, X-Groups %q, want %q", got, want)
			}
		})
	}
}
