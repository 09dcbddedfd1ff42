package idp

import (
	"errors"
	"testing"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// TestOIDCLoginKeepsTheIDTokenOnlyForSingleSignOut: a session keeps the ID
// token only when its logout will send it back (single_sign_out); without,
// only its sub, which a back-channel logout and the next refresh check.
func TestOIDCLoginKeepsTheIDTokenOnlyForSingleSignOut(t *testing.T) {
	for _, sso := range []bool{false, true} {
		h := newOIDCHarness(t, oidcserver.Options{}, Config{SingleSignOut: sso}, false)
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
