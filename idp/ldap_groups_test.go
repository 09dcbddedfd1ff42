package idp

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/portcullis-proxy/portcullis/test/ldapserver"
	"github.com/portcullis-proxy/portcullis/test/process"
)

// newLoggedLDAP is newTestLDAP with the provider's log lines kept.
func newLoggedLDAP(t *testing.T, c Config) (*LDAPProvider, *process.Output) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	logs := &process.Output{}
	p, err := newLDAPProvider(ctx, c, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))}, testLDAPTiming)
	if err != nil {
		t.Fatalf("newLDAPProvider: %v", err)
	}
	return p, logs
}

// userInGroups is the LDIF of a user uid (password uid-pw) who is a direct
// member of n groupOfNames named uid-0 .. uid-(n-1).
func userInGroups(uid string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "dn: %s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\nuserPassword: %s\n\n",
		ldapserver.UserDN(uid), uid, uid, uid, ldapserver.SSHA(uid+"-pw"))
	for i := range n {
		fmt.Fprintf(&b, "dn: cn=%s-%d,%s\nobjectClass: groupOfNames\ncn: %s-%d\nmember: %s\n\n",
			uid, i, ldapserver.GroupsDN, uid, i, ldapserver.UserDN(uid))
	}
	return b.String()
}

// TestLDAPGroupsArePaged logs in users in many groups at a directory that
// answers a plain search with at most 20 entries and pages past that, as
// Active Directory does at its MaxPageSize (1000): every group arrives, up
// to maxGroups; a list cut at maxGroups or by the directory's limit is
// logged with the user and the count.
func TestLDAPGroupsArePaged(t *testing.T) {
	const pageLimit = 20
	srv := ldapserver.Start(t, ldapserver.Options{
		SizeLimit: fmt.Sprintf("size.soft=%d size.hard=%d size.prtotal=unlimited", pageLimit, pageLimit),
	})
	srv.Add(t, userInGroups("carol", 45)+userInGroups("dave", maxGroups+1))
	r := httptest.NewRequest("POST", "/", nil)

	t.Run("a user in more groups than a page gets them all", func(t *testing.T) {
		p, logs := newLoggedLDAP(t, ldapTestConfig(srv.URL))
		prof, err := p.Authenticate(r, "carol", "carol-pw", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(prof.Groups) != 45 {
			t.Errorf("%d groups, want 45 (the directory answers %d at once)", len(prof.Groups), pageLimit)
		}
		if strings.Contains(logs.String(), "group list cut") {
			t.Errorf("a whole list is logged as cut:\n%s", logs)
		}
	})

	t.Run("a user in more than maxGroups groups gets maxGroups, and the log says so", func(t *testing.T) {
		for _, source := range []string{"group_search", "memberOf"} {
			c := ldapTestConfig(srv.URL)
			if source == "memberOf" {
				c.GroupSearch = Search{}
			}
			p, logs := newLoggedLDAP(t, c)
			prof, err := p.Authenticate(r, "dave", "dave-pw", nil)
			if err != nil {
				t.Fatalf("%s: %v", source, err)
			}
			if len(prof.Groups) != maxGroups {
				t.Errorf("%s: %d groups, want %d", source, len(prof.Groups), maxGroups)
			}
			if n := len(prof.Claims["memberOf"].([]string)); n != maxGroups {
				t.Errorf("%s: claims.memberOf has %d values, want %d", source, n, maxGroups)
			}
			line := logs.String()
			for _, want := range []string{"level=WARN", "group list cut", "username=dave", "groups=" + strconv.Itoa(maxGroups), "more groups than the"} {
				if !strings.Contains(line, want) {
					t.Errorf("%s: log has no %q:\n%s", source, want, line)
				}
			}
		}
	})

	t.Run("a directory that refuses our page size is searched without paging", func(t *testing.T) {
		// OpenLDAP answers a page larger than size.pr with adminLimitExceeded.
		small := ldapserver.Start(t, ldapserver.Options{SizeLimit: "size.pr=10 size.prtotal=unlimited"})
		small.Add(t, userInGroups("carol", 45))
		p, logs := newLoggedLDAP(t, ldapTestConfig(small.URL))
		prof, err := p.Authenticate(r, "carol", "carol-pw", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(prof.Groups) != 45 || strings.Contains(logs.String(), "group list cut") {
			t.Errorf("%d groups, want 45 within the plain size limit (500), uncut:\n%s", len(prof.Groups), logs)
		}
	})

	t.Run("a directory that limits paged searches too cuts the list, and the log says so", func(t *testing.T) {
		strict := ldapserver.Start(t, ldapserver.Options{SizeLimit: fmt.Sprintf("size.soft=%d size.hard=%d", pageLimit, pageLimit)})
		strict.Add(t, userInGroups("carol", 45))
		p, logs := newLoggedLDAP(t, ldapTestConfig(strict.URL))
		prof, err := p.Authenticate(r, "carol", "carol-pw", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(prof.Groups) != pageLimit {
			t.Errorf("%d groups, want the %d the directory allows", len(prof.Groups), pageLimit)
		}
		line := logs.String()
		for _, want := range []string{"level=WARN", "group list cut", "username=carol", "groups=" + strconv.Itoa(pageLimit), "size limit"} {
			if !strings.Contains(line, want) {
				t.Errorf("log has no %q:\n%s", want, line)
			}
		}
	})
}

// Active Directory answers memberOf with more values than its MaxValRange
// (1500) as memberOf;range=0-1499, and no plain memberOf; a smaller
// MaxValRange leaves fewer in the first range. Those values are the
// groups (at most maxGroups), and claims.memberOf, and a list that is not
// whole is logged.
func TestLDAPRangedMemberOf(t *testing.T) {
	dns := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("CN=Group %d,OU=Groups,DC=ad,DC=example,DC=com", i)
		}
		return out
	}
	tests := []struct {
		name      string
		attribute string
		values    int
		want      int
		wantWhy   string // in the warning; "" for none
	}{
		{"AD's default range (1500) is cut at maxGroups", "memberOf;range=0-1499", 1500, maxGroups, "more groups than the"},
		{"a range smaller than maxGroups is read and logged as partial", "memberOf;range=0-499", 500, 500, "in ranges"},
		{"the last range (ending in *) is whole", "memberOf;range=0-*", 30, 30, ""},
		{"the range option is matched case-insensitively", "memberOf;Range=0-99", 100, 100, "in ranges"},
		{"a plain memberOf is whole", "memberOf", 30, 30, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ldapTestConfig("ldap://127.0.0.1:1")
			c.GroupSearch = Search{}
			c.AttributeMapping = map[string]string{"group_name": "dn"}
			p, logs := newLoggedLDAP(t, c)
			entry := ldap.NewEntry("CN=Erin,CN=Users,DC=ad,DC=example,DC=com", map[string][]string{
				"sAMAccountName": {"erin"}, tc.attribute: dns(tc.values),
			})
			groups, err := p.groups(nil, entry, "erin")
			if err != nil {
				t.Fatal(err)
			}
			if len(groups) != tc.want {
				t.Errorf("%d groups, want %d", len(groups), tc.want)
			}
			prof := p.mapping.profile("ad", entry, "erin", groups)
			if got, ok := prof.Claims["memberOf"].([]string); !ok || len(got) != tc.want {
				t.Errorf("claims.memberOf %d values (%T), want %d", len(got), prof.Claims["memberOf"], tc.want)
			}
			if _, ok := prof.Claims[tc.attribute]; ok && tc.attribute != "memberOf" {
				t.Errorf("claims carry %q; want it under memberOf", tc.attribute)
			}
			line := logs.String()
			switch {
			case tc.wantWhy == "" && strings.Contains(line, "group list cut"):
				t.Errorf("a whole list is logged as cut:\n%s", line)
			case tc.wantWhy != "" && !(strings.Contains(line, "group list cut") && strings.Contains(line, "username=erin") &&
				strings.Contains(line, "groups="+strconv.Itoa(tc.want)) && strings.Contains(line, tc.wantWhy)):
				t.Errorf("log does not name erin, %d groups and %q:\n%s", tc.want, tc.wantWhy, line)
			}
		})
	}
}

// userInChain is the LDIF of a user uid (password uid-pw) who is a member
// of group uid-0, which is a member of uid-1, and so on up to uid-(n-1).
func userInChain(uid string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "dn: %s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\nuserPassword: %s\n\n",
		ldapserver.UserDN(uid), uid, uid, uid, ldapserver.SSHA(uid+"-pw"))
	member := ldapserver.UserDN(uid)
	for i := range n {
		dn := fmt.Sprintf("cn=%s-%d,%s", uid, i, ldapserver.GroupsDN)
		fmt.Fprintf(&b, "dn: %s\nobjectClass: groupOfNames\ncn: %s-%d\nmember: %s\n\n", dn, uid, i, member)
		member = dn
	}
	return b.String()
}

// TestLDAPGroupNestingDepth: nesting is followed maxGroupDepth levels; a
// list that stops there while deeper groups exist is logged as cut, and one
// whose nesting ends exactly there is not.
func TestLDAPGroupNestingDepth(t *testing.T) {
	srv := ldapserver.Start(t, ldapserver.Options{})
	srv.Add(t, userInChain("erin", maxGroupDepth)+userInChain("frank", maxGroupDepth+2))
	r := httptest.NewRequest("POST", "/", nil)
	for _, tc := range []struct {
		user string
		cut  bool
	}{{"erin", false}, {"frank", true}} {
		p, logs := newLoggedLDAP(t, ldapTestConfig(srv.URL))
		prof, err := p.Authenticate(r, tc.user, tc.user+"-pw", nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.user, err)
		}
		if len(prof.Groups) != maxGroupDepth {
			t.Errorf("%s: %d groups, want the %d levels followed", tc.user, len(prof.Groups), maxGroupDepth)
		}
		logged := strings.Contains(logs.String(), "group list cut")
		if logged != tc.cut {
			t.Errorf("%s: cut logged %v, want %v:\n%s", tc.user, logged, tc.cut, logs)
		}
		if tc.cut && !strings.Contains(logs.String(), "nested more than") {
			t.Errorf("%s: the log does not say why:\n%s", tc.user, logs)
		}
	}
}
