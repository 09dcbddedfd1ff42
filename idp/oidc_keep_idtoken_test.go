package idp

import (
	"errors"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// TestOIDCLoginKeepsTheIDTokenOnlyForSingleSignOut: a session keeps the ID
// token only when its logout will send it back (single_sign_out); without,
// only its sub, which a back-channel logout and the next refresh check, and
// its sid.
func TestOIDCLoginKeepsTheIDTokenOnlyForSingleSignOut(t *testing.T) {
	for _, sso := range []bool{false, true} {
		// A client with a back-channel logout URI gets ID tokens with sid.
		h := newOIDCHarness(t, oidcserver.Options{BackchannelLogoutURI: "http://127.0.0.1:1/backchannel"}, Config{SingleSignOut: sso}, false)
		f, cb := h.login(t, oidcserver.Alice, oidcserver.AlicePassword)
		_, tokens, err := h.provider.Complete(cb, f)
		if err != nil {
			t.Fatalf("single_sign_out %v: Complete: %v", sso, err)
		}
		kept := tokens.IDToken != ""
		if kept != sso || tokens.Subject() != oidcserver.Alice {
			t.Errorf("single_sign_out %v: tokens %+v; want the ID token kept %v and alice's sub", sso, tokens, sso)
		}
		if !sso && tokens.Sub != oidcserver.Alice {
			t.Errorf("tokens %+v: want alice's sub in place of the ID token", tokens)
		}
		// The sid is read from the ID token before it is dropped: a
		// back-channel logout by sid finds the session either way.
		if tokens.SID == "" {
			t.Errorf("single_sign_out %v: tokens %+v; want the ID token's sid", sso, tokens)
		}
	}
}

// TestOIDCRefreshKeepsTheIDTokenOnlyForSingleSignOut: a refresh keeps its
// ID token as a login does, from a session of either kind (one from before
// the ID token was dropped has the ID token and no sub), and checks the
// refreshed ID token's sub against either.
func TestOIDCRefreshKeepsTheIDTokenOnlyForSingleSignOut(t *testing.T) {
	ti := newTestIssuer(t)
	p := ti.provider(t)
	sessions := map[string]func(sub string) *Tokens{
		"ID token kept": func(sub string) *Tokens {
			return &Tokens{RefreshToken: "rt", IDToken: fakeJWT(`{"sub":"` + sub + `"}`)}
		},
		"only its sub": func(sub string) *Tokens { return &Tokens{RefreshToken: "rt", Sub: sub} },
	}
	for name, session := range sessions {
		for _, sso := range []bool{false, true} {
			p.cfg.SingleSignOut = sso
			_, next, err := p.Refresh(t.Context(), session("alice"))
			if err != nil {
				t.Fatalf("%s, single_sign_out %v: Refresh: %v", name, sso, err)
			}
			if kept := next.IDToken != ""; kept != sso || next.Subject() != "alice" || (sso && next.Sub != "") {
				t.Errorf("%s, single_sign_out %v: tokens after the refresh %+v; want the new ID token kept %v and alice's sub, once", name, sso, next, sso)
			}
			_, _, err = p.Refresh(t.Context(), session("bob"))
			if !errors.Is(err, ErrRefreshRefused) {
				t.Errorf("%s, single_sign_out %v: a session of bob refreshed with alice's ID token: %v, want ErrRefreshRefused", name, sso, err)
			}
		}
	}
}

// TestOIDCRefreshWithoutAnIDTokenKeepsTheSub: an IdP may answer a refresh
// with no ID token (OpenID Connect Core 12.2 makes it optional). The
// session then keeps its sub, which userinfo's answer is checked against,
// and one made before the ID token was dropped loses its ID token all the
// same, keeping its sub.
func TestOIDCRefreshWithoutAnIDTokenKeepsTheSub(t *testing.T) {
	sessions := map[string]func() *Tokens{
		"only its sub":  func() *Tokens { return &Tokens{RefreshToken: "rt", Sub: "alice", SID: "s1"} },
		"ID token kept": func() *Tokens { return &Tokens{RefreshToken: "rt", IDToken: fakeJWT(`{"sub":"alice"}`), SID: "s1"} },
	}
	answers := []struct {
		name     string
		userinfo map[string]any
	}{
		{"userinfo of the same subject", map[string]any{"sub": "alice", "email": "alice@example.com"}},
		{"no userinfo endpoint", nil},
	}
	for _, answer := range answers {
		ti := newTestIssuer(t)
		ti.reshape = func(string) string { return "" } // no id_token in the token response
		ti.userinfo = answer.userinfo
		p := ti.provider(t)
		for name, session := range sessions {
			_, next, err := p.Refresh(t.Context(), session())
			if err != nil {
				t.Fatalf("%s, %s: Refresh: %v", answer.name, name, err)
			}
			if next.IDToken != "" || next.Sub != "alice" || next.SID != "s1" {
				t.Errorf("%s, %s: tokens after the refresh %+v; want alice's sub and sid, no ID token (no single_sign_out)", answer.name, name, next)
			}
		}
	}

	ti := newTestIssuer(t)
	ti.reshape = func(string) string { return "" }
	ti.userinfo = map[string]any{"sub": "mallory", "email": "mallory@example.com"}
	p := ti.provider(t)
	for name, session := range sessions {
		prof, _, err := p.Refresh(t.Context(), session())
		if !errors.Is(err, ErrRefreshRefused) || !strings.Contains(err.Error(), `userinfo names subject "mallory"`) {
			t.Errorf("%s: userinfo about mallory at a refresh of alice's session: %+v, %v; want ErrRefreshRefused naming userinfo's subject", name, prof, err)
		}
	}
}
