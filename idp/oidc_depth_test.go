package idp

import (
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// An IdP's claim nested 100 levels deep (an attribute a user may edit, a
// mapper gone wrong) refuses the login, and ends the session at a refresh,
// before it reaches the session and the expressions.
func TestOIDCClaimNestedTooDeep(t *testing.T) {
	ti := newTestIssuer(t)
	p := ti.provider(t)
	ti.edit = func(c map[string]any) { c["profile_data"] = nestedClaim(100) }

	t.Run("at login", func(t *testing.T) {
		f := &Flow{State: rand.Text()}
		if _, err := p.LoginURL(f); err != nil {
			t.Fatal(err)
		}
		ti.nonce = f.Nonce
		prof, _, err := p.Complete(httptest.NewRequest(http.MethodGet, "/cb?state="+f.State+"&code=c", nil), f)
		if deep, ok := errors.AsType[*ClaimsTooDeepError](err); !ok || deep.Claim != "profile_data" {
			t.Fatalf("got %+v, %v; want the login refused for claim profile_data", prof, err)
		}
	})
	t.Run("at refresh", func(t *testing.T) {
		ti.nonce = ""
		prof, _, err := p.Refresh(t.Context(), &Tokens{RefreshToken: "rt", IDToken: fakeJWT(`{"sub":"alice"}`)})
		if _, ok := errors.AsType[*ClaimsTooDeepError](err); !ok || !errors.Is(err, ErrRefreshRefused) {
			t.Fatalf("got %+v, %v; want the refresh refused (the session ends) for the claim's depth", prof, err)
		}
	})
}
