package session

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
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
			st.RevokeUser(ctx, "company", User{Sub: "alice"}, tt.sid("alice"), c.Now())
			c.Advance(time.Second)
			older := login("bob", "bob-sid")
			c.Advance(time.Second)
			for i := range 100 { // ten times the bound: unexpired records are forgotten
				who := fmt.Sprint("mallory-", i)
				st.RevokeUser(ctx, "company", User{Sub: who}, tt.sid(who), c.Now())
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

// reloaded is the store a reload that triples session.lifetime builds after
// old (made with o), and the options it makes sessions with.
func reloaded(t *testing.T, old *CookieStore, o Options) (*CookieStore, Options) {
	t.Helper()
	o.Lifetime *= 3
	st := mustStore(t, o)
	st.Inherit(old)
	return st, o
}

func TestUserRevocationsLastAsLongAsALengthenedLifetime(t *testing.T) {
	tests := []struct {
		name    string
		sid     func(who string) string // the IdP session a logout names; "" ends the whole user
		viaPrev bool                    // the logout reaches the store the reload replaced (a request still in flight)
	}{
		{"a logout of a whole user", func(string) string { return "" }, false},
		{"a logout of an IdP session", func(who string) string { return who + "-sid" }, false},
		{"a logout of a whole user in flight on the old store", func(string) string { return "" }, true},
		{"a logout of an IdP session in flight on the old store", func(who string) string { return who + "-sid" }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c := newClock()
			o := testOptions(c)
			o.IdleTimeout = 0 // sessions here idle for longer than a lifetime
			old := mustStore(t, o)
			st, longer := reloaded(t, old, o)
			login := func(sid string) []*http.Cookie {
				p := testProfile()
				p.Sub = "alice"
				return saved(t, st, New(p, idp.Tokens{SID: sid}, longer))
			}
			revoker := st
			if tt.viaPrev {
				revoker = old
			}

			victim := login(tt.sid("alice"))
			c.Advance(time.Second)
			revoker.RevokeUser(ctx, "company", User{Sub: "alice"}, tt.sid("alice"), c.Now())
			c.Advance(time.Second)
			newer := login(tt.sid("alice-again"))
			// Past the end of the record under the old lifetime, within the
			// victim's; another logout sweeps what has expired.
			c.Advance(o.Lifetime)
			st.RevokeUser(ctx, "company", User{Sub: "mallory"}, tt.sid("mallory"), c.Now())

			if load(t, st, request(victim...)) != nil {
				t.Error("a session made under the longer lifetime opens again once the old lifetime has passed since its user's logout")
			}
			if load(t, st, request(newer...)) == nil {
				t.Error("a session made after the logout does not open")
			}
		})
	}
}

func TestUserRevocationsBeforeAReloadThatLengthensTheLifetime(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	o := testOptions(c)
	old := mustStore(t, o)
	old.users.subs = newExpiringSet(10, "test", quiet)
	login := func(st *CookieStore, o Options, sub string) []*http.Cookie {
		p := testProfile()
		p.Sub = sub
		return saved(t, st, New(p, idp.Tokens{}, o))
	}

	victim := login(old, o, "alice")
	older := login(old, o, "bob")
	c.Advance(time.Second)
	for i := range 100 { // ten times the bound: unexpired records are forgotten
		old.RevokeUser(ctx, "company", User{Sub: fmt.Sprint("mallory-", i)}, "", c.Now())
	}
	c.Advance(time.Second)
	old.RevokeUser(ctx, "company", User{Sub: "alice"}, "", c.Now()) // the newest record: kept
	c.Advance(time.Second)
	st, longer := reloaded(t, old, o)
	newer := login(st, longer, "alice")

	if load(t, st, request(victim...)) != nil {
		t.Error("a session of a user logged out before the reload opens after it")
	}
	if load(t, st, request(older...)) != nil {
		t.Error("a session as old as the records forgotten before the reload (under a flood) opens after it")
	}
	if load(t, st, request(newer...)) == nil {
		t.Error("a session made after the reload does not open")
	}
}

// TestUserRevocationsLengthenWhileInUse is for the race detector: the old
// store's requests in flight use the records while a reload lengthens them.
func TestUserRevocationsLengthenWhileInUse(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	o := testOptions(c)
	old := mustStore(t, o)
	cookies := saved(t, old, New(testProfile(), idp.Tokens{}, o))
	old.RevokeUser(ctx, "company", User{Sub: "someone"}, "", c.Now())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 100 {
			old.RevokeUser(ctx, "company", User{Sub: fmt.Sprint("user-", i)}, "", c.Now())
			old.Load(request(cookies...))
		}
	}()
	reloaded(t, old, o)
	<-done
}

// TestUserRevocationsWarnInTheStoresLog: the warning that a flood of
// back-channel logouts made the store forget records goes to
// Options.Logger, the proxy's log, as the other sets' warnings do.
func TestUserRevocationsWarnInTheStoresLog(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	o := testOptions(c)
	var logged bytes.Buffer
	o.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	st := mustStore(t, o)
	for i := range maxUserRevocations + 1 {
		st.RevokeUser(ctx, "company", User{}, fmt.Sprint("sid-", i), c.Now())
	}
	if !strings.Contains(logged.String(), "memory bound reached") || !strings.Contains(logged.String(), "IdP sessions logged out") {
		t.Errorf("no warning about the forgotten records in the store's log:\n%s", logged.String())
	}
}

// idToken is an ID token as a session keeps it, naming sub; its signature
// was checked at login and is not again.
func idToken(sub string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(`{"iss":"https://idp.example","sub":"`+sub+`"}`)) + ".c2ln"
}

// A logout from the IdP names the user as the IdP does: a logout token the
// ID token's sub, a SAML LogoutRequest the NameID. Both stores find the
// sessions by it (User.Subject), whatever the IdP entry maps the profile's
// sub to, and by the profile's sub (User.Sub), which the proxy knows from
// the browser's session or where sub is not mapped. The two are names from
// different lists: neither is looked for among the other, where one user's
// name can be another's.
func TestRevokeUserFindsSessionsByTheIdPsSubject(t *testing.T) {
	srv := redisserver.Start(t)
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store+" store", func(t *testing.T) {
			c := newClock()
			o := testOptions(c)
			var st interface {
				Store
				RevokeUser(ctx context.Context, idp string, who User, sid string, before time.Time) (int, error)
			}
			st = mustStore(t, o)
			if store == "redis" {
				st = replica(t, srv, o)
			}
			login := func(idpID, sub string, tokens idp.Tokens) []*http.Cookie {
				p := testProfile()
				p.IdP, p.Sub = idpID, sub
				return saveTo(t, st, New(p, tokens, o))
			}
			nameID := func(v string) idp.Tokens { return idp.Tokens{NameID: &idp.SAMLNameID{Value: v}} }
			// claims: {sub: email}; attribute_mapping.uid; GitHub.
			oidc := login("company", "alice@example.com", idp.Tokens{IDToken: idToken("00u1"), RefreshToken: "r"})
			collides := login("company", "00u1", idp.Tokens{IDToken: idToken("00u9")}) // a mapped sub that is alice's at the IdP
			saml := login("corp", "alice", idp.Tokens{NameID: &idp.SAMLNameID{Value: "alice@example.com"}, SID: "idx-1"})
			// Made before single_sign_out, so with no NameID: alice's, and
			// that of a user whose uid is alice's NameID.
			older := login("corp", "alice", idp.Tokens{})
			stranger := login("corp", "alice@example.com", idp.Tokens{})
			mallorys := login("corp", "bob@example.com", nameID("mallory@example.com"))
			bobs := login("corp", "bob", nameID("bob@example.com"))
			oauth2 := login("gh", "123", idp.Tokens{RefreshToken: "r"})
			alive := func(name string, cookies []*http.Cookie, want bool) {
				t.Helper()
				if got := loadFrom(t, st, cookies) != nil; got != want {
					t.Errorf("%s: session opens %v, want %v", name, got, want)
				}
			}
			ctx := context.Background()

			st.RevokeUser(ctx, "company", User{Subject: "alice@example.com"}, "", c.Now())
			alive("alice's OIDC session after a logout naming her profile's sub as the IdP's subject", oidc, true)
			st.RevokeUser(ctx, "company", User{Subject: "00u1"}, "", c.Now())
			alive("alice's OIDC session after a logout naming her ID token's sub", oidc, false)
			alive("the session whose profile's sub is that sub", collides, true)
			st.RevokeUser(ctx, "corp", User{Subject: "alice@example.com"}, "", c.Now())
			alive("alice's SAML session after a logout naming her NameID", saml, false)
			alive("a session made before single_sign_out whose profile's sub is that NameID", stranger, true)
			alive("alice's session made before single_sign_out", older, true)
			st.RevokeUser(ctx, "corp", User{Sub: "alice"}, "", c.Now())
			alive("alice's session made before single_sign_out after a logout naming her sub", older, false)
			st.RevokeUser(ctx, "corp", User{Subject: "mallory@example.com", Sub: "bob@example.com"}, "", c.Now())
			alive("mallory's session after a logout naming her NameID and her sub", mallorys, false)
			alive("the session of bob, whose NameID is mallory's sub", bobs, true)
			st.RevokeUser(ctx, "gh", User{Subject: "123"}, "", c.Now())
			alive("an OAuth2 session after a logout naming its profile's sub as the IdP's subject", oauth2, true)
			st.RevokeUser(ctx, "gh", User{Sub: "123"}, "", c.Now())
			alive("an OAuth2 session after a logout naming its profile's sub", oauth2, false)
		})
	}
}
