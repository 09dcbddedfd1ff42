package session

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
)

func TestUserRevocationsSurviveAFloodOfLogouts(t *testing.T) {
	tests := []struct {
		name string
		sid  func(who string) string // the IdP session a logout names; "" ends the whole user
	}{
		{"logouts of whole users", func(string) string { return "" }},
		{"logouts of IdP sessions", func(who string) string { return who + "-sid" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c := newClock()
			o := testOptions(c)
			st := mustStore(t, o)
			st.users.subs = newExpiringSet(10, "test", quiet)
			st.users.sids = newExpiringSet(10, "test", quiet)
			login := func(sub, sid string) []*http.Cookie {
				p := testProfile()
				p.Sub = sub
				return saved(t, st, New(p, idp.Tokens{SID: sid}, o))
			}

			victim := login("alice", "alice-sid")
			st.RevokeUser(ctx, "company", "alice", tt.sid("alice"), c.Now())
			c.Advance(time.Second)
			older := login("bob", "bob-sid")
			c.Advance(time.Second)
			for i := range 100 { // ten times the bound: unexpired records are forgotten
				who := fmt.Sprint("mallory-", i)
				st.RevokeUser(ctx, "company", who, tt.sid(who), c.Now())
			}
			c.Advance(time.Second)
			newer := login("alice", "alice-sid-2")

			if load(t, st, request(victim...)) != nil {
				t.Error("a session of a user logged out at the IdP opens again after a flood of logouts")
			}
			if load(t, st, request(older...)) != nil {
				t.Error("a session as old as the records forgotten still opens (fail closed: it must log in again)")
			}
			if load(t, st, request(newer...)) == nil {
				t.Error("a session newer than the flood does not open")
			}
		})
	}
}
