package proxy

import (
	"strconv"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/idp"
)

// The roles remembered per session are bounded in number and in the memory
// their profiles hold, as the attribute pass's identities are: the sessions
// behind them may be long gone, and nothing else forgets them.
func TestSessionAuthzIsBounded(t *testing.T) {
	t.Parallel()
	t.Run("in number", func(t *testing.T) {
		c := newSessionAuthz()
		for i := range authzEntries + 100 {
			c.put(strconv.Itoa(i), &authzEntry{prof: idp.Profile{IdP: "company", Sub: strconv.Itoa(i)}, roles: []string{"user"}})
		}
		if n := len(c.m); n > authzEntries {
			t.Errorf("%d sessions remembered, want at most %d", n, authzEntries)
		}
	})
	t.Run("in the memory their profiles hold", func(t *testing.T) {
		c := newSessionAuthz()
		groups := make([]string, 300) // 300 groups named by their DN
		for i := range groups {
			groups[i] = "cn=group-" + strconv.Itoa(i) + "," + strings.Repeat("ou=unit,", 8) + "dc=example,dc=com"
		}
		for i := range 2000 {
			c.put(strconv.Itoa(i), &authzEntry{prof: idp.Profile{IdP: "company", Sub: strconv.Itoa(i), Groups: groups}})
		}
		if c.bytes > authzBytes {
			t.Errorf("the profiles remembered hold %d bytes, want at most %d", c.bytes, authzBytes)
		}
		huge := idp.Profile{IdP: "company", Sub: "huge", Claims: map[string]any{"blob": strings.Repeat("x", authzBytes/16)}}
		c.put("huge", &authzEntry{prof: huge})
		if _, ok := c.m["huge"]; ok {
			t.Error("a profile of a sixteenth of the bound is remembered, pushing out many others")
		}
	})
}
