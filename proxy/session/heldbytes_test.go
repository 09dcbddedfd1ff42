package session

import (
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/idp"
)

// TestHeldBytesCountsEveryTokenTheSessionHolds: the opened-session cache is
// bounded by heldBytes, so each string the tokens hold counts in full: the
// refresh token, the ID token where single_sign_out keeps it, the sub kept
// in its place, the IdP session ID and a SAML NameID.
func TestHeldBytesCountsEveryTokenTheSessionHolds(t *testing.T) {
	long := strings.Repeat("x", 10_000)
	empty := heldBytes(&Session{ID: "id"})
	for name, tokens := range map[string]idp.Tokens{
		"refresh token":  {RefreshToken: long},
		"ID token":       {IDToken: long},
		"sub":            {Sub: long},
		"IdP session ID": {SID: long},
		"SAML NameID":    {NameID: &idp.SAMLNameID{Value: long}},
	} {
		if got := heldBytes(&Session{ID: "id", Tokens: tokens}) - empty; got < len(long) {
			t.Errorf("a session whose %s is %d bytes holds %d bytes more than one with no tokens, want at least as many", name, len(long), got)
		}
	}
}
