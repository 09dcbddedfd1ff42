package idp

import (
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// An IdP whose clock runs ahead stamps its ID tokens with an nbf (not
// before) in the future: go-oidc refuses them with a plain error, and the
// login says it is the clocks, by how much, as it does for exp and iat. A
// token that is not the IdP's own is no clock's doing.
func TestOIDCNotBeforeAheadIsClockSkew(t *testing.T) {
	ti := newTestIssuer(t)
	p := ti.provider(t)

	for _, tc := range []struct {
		name   string
		ahead  time.Duration
		forged bool
		reason string // "" for a login that succeeds
		hint   []string
	}{
		{name: "nbf two minutes ahead, within go-oidc's leeway, signs in", ahead: 2 * time.Minute},
		{name: "nbf ten minutes ahead is clock_skew", ahead: 10 * time.Minute, reason: "clock_skew",
			hint: []string{"ahead of this machine's clock", "NTP"}},
		{name: "nbf ten minutes ahead in a token the IdP did not sign is no set-up mistake", ahead: 10 * time.Minute, forged: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var nbf time.Time
			ti.edit = func(c map[string]any) {
				now := time.Now()
				nbf = now.Add(tc.ahead).Truncate(time.Second)
				c["nbf"] = nbf.Unix()
				c["iat"] = now.Unix()
				c["exp"] = now.Add(tc.ahead + 5*time.Minute).Unix()
			}
			if tc.forged {
				other := newTestIssuer(t) // another key, under the same key ID
				ti.key, other.key = other.key, ti.key
				t.Cleanup(func() { ti.key, other.key = other.key, ti.key })
			}
			f := &Flow{State: rand.Text()}
			if _, err := p.LoginURL(f); err != nil {
				t.Fatal(err)
			}
			ti.nonce = f.Nonce
			prof, _, err := p.Complete(httptest.NewRequest(http.MethodGet, "/cb?state="+f.State+"&code=c", nil), f)
			setup, isSetup := errors.AsType[*SetupError](err)
			switch {
			case tc.forged:
				if err == nil || isSetup {
					t.Fatalf("got %+v, %v; want a plain refusal", prof, err)
				}
			case tc.reason == "":
				if err != nil || prof == nil || prof.Sub != "alice" {
					t.Fatalf("got %+v, %v; want alice", prof, err)
				}
			default:
				if !isSetup || setup.Reason != tc.reason {
					t.Fatalf("got %+v, %v; want reason %s", prof, err, tc.reason)
				}
				// By how much: the nbf the IdP set, and this clock's time.
				for _, h := range append(tc.hint, "nbf "+nbf.UTC().Format(time.RFC3339)+", now ") {
					if !strings.Contains(setup.Hint, h) {
						t.Errorf("hint %q does not say %q", setup.Hint, h)
					}
				}
			}
		})
	}
}
