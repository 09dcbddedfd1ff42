package idp

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// filterTemplates are user_search and group_search filters as directories
// want them: equality, presence and substrings around the placeholders,
// Active Directory's in-chain match, and both placeholders in one filter.
var filterTemplates = []string{
	"(&(objectClass=inetOrgPerson)(uid={username}))",
	"(|(uid={username})(mail={username})(userPrincipalName={username}@corp.example))",
	"(&(objectClass=user)(sAMAccountName={username})(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
	"(cn=*{username}*)",
	"(member={dn})",
	"(member:1.2.840.113556.1.4.1941:={dn})",
	"(&(objectClass=groupOfNames)(|(member={dn})(memberUid={username})))",
}

// FuzzFillFilter checks that no username (one acceptableUsername lets
// through to the directory) and no DN changes what a configured filter
// asks: filled in, it compiles to the filter the template is, each
// assertion value holding the username and DN byte for byte, as if they
// were plain words. An injection (a parenthesis, a star, a backslash, NUL)
// would add a clause, turn equality into presence or substrings, or
// change a value.
func FuzzFillFilter(f *testing.F) {
	for i := range filterTemplates {
		for _, s := range [][2]string{
			{"alice", "uid=alice,ou=people,dc=example,dc=org"},
			{"*", "cn=a*(b),dc=x"},
			{"*)(uid=*", `cn=x\,y,dc=x`},
			{"alice)(|(uid=*", "cn=zoë,dc=x"},
			{`a\2a`, `cn=\2a`},
			{"{dn}", "{username}"},
			{"zoë\u00a0x", "cn=\u2028"},
		} {
			f.Add(uint8(i), s[0], s[1])
		}
	}
	const userMark, dnMark = "PORTCULLISUSER", "PORTCULLISDN"
	f.Fuzz(func(t *testing.T, which uint8, username, dn string) {
		if !acceptableUsername(username) || !utf8.ValidString(dn) {
			return // the login refuses such a username; DNs are UTF-8 (RFC 4514)
		}
		template := filterTemplates[int(which)%len(filterTemplates)]
		want, err := ldap.CompileFilter(strings.NewReplacer(placeholderUsername, userMark, placeholderDN, dnMark).Replace(template))
		if err != nil {
			t.Fatalf("template %q: %v", template, err)
		}
		filled := fillFilter(template, username, dn)
		got, err := ldap.CompileFilter(filled)
		if err != nil {
			t.Fatalf("fillFilter(%q, %q, %q) = %q, which does not compile: %v", template, username, dn, filled, err)
		}
		values := strings.NewReplacer(userMark, username, dnMark, dn)
		if why := sameFilter(want, got, values); why != "" {
			t.Fatalf("fillFilter(%q, %q, %q) = %q: %s", template, username, dn, filled, why)
		}
	})
}

// sameFilter compares a compiled filter got with want, the template's with
// marks for the placeholders, whose values become what values makes of
// them; "" when they ask the same.
func sameFilter(want, got *ber.Packet, values *strings.Replacer) string {
	if want.ClassType != got.ClassType || want.TagType != got.TagType || want.Tag != got.Tag {
		return fmt.Sprintf("%s (tag %d) where the template has %s (tag %d)", ldap.FilterMap[uint64(got.Tag)], got.Tag, ldap.FilterMap[uint64(want.Tag)], want.Tag)
	}
	if len(want.Children) != len(got.Children) {
		return "another number of clauses or parts than the template's"
	}
	if len(want.Children) == 0 {
		if w, g := values.Replace(want.Data.String()), got.Data.String(); w != g {
			return "value " + strconv.Quote(g) + ", want " + strconv.Quote(w)
		}
	}
	for i := range want.Children {
		if why := sameFilter(want.Children[i], got.Children[i], values); why != "" {
			return why
		}
	}
	return ""
}
