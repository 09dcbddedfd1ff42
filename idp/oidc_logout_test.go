package idp

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
	"github.com/portcullis-proxy/portcullis/test/process"
)

// An entry with single_sign_out whose IdP's discovery document names no
// end_session_endpoint (Authelia 4.38, Google) says so once discovery
// succeeded, as a SAML entry does of metadata without a
// SingleLogoutService: its sign-outs end the session here only, and the
// IdP's session signs the user in again at once. Before, the log said so
// only at each sign-out, after users had been told they signed out.
func TestOIDCSingleSignOutWithoutEndSessionEndpointIsLoggedAtDiscovery(t *testing.T) {
	const warning = "no end_session_endpoint"
	for _, tc := range []struct {
		name          string
		endSession    bool
		singleSignOut bool
		warned        bool
	}{
		{"single_sign_out at an IdP without end_session_endpoint", false, true, true},
		{"single_sign_out at an IdP with end_session_endpoint", true, true, false},
		{"no single_sign_out at an IdP without end_session_endpoint", false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			public := callbackCatcher(t)
			o := testOptions(public.URL, true)
			logs := &process.Output{}
			o.Logger = slog.New(slog.NewTextHandler(logs, nil))
			srv := oidcserver.Start(t, oidcserver.Options{
				RedirectURIs:        []string{o.CallbackURL("oidc", testIdP, "callback")},
				NoRPInitiatedLogout: !tc.endSession,
			})
			c := Config{ID: testIdP, Protocol: OIDC, ServerURL: srv.Issuer, ClientID: srv.ClientID,
				ClientSecret: srv.ClientSecret, SingleSignOut: tc.singleSignOut}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			p := startOIDC(t, c, o)
			waitReady(t, p, 10*time.Second)

			u, err := p.LogoutURL(&Tokens{}, o.CallbackURL("logout", "done"), &Flow{State: "logout-state"})
			if err != nil || (u != "") != tc.endSession {
				t.Fatalf("LogoutURL = %q, %v; want an end-session URL: %v", u, err, tc.endSession)
			}
			if got := strings.Contains(logs.String(), warning); got != tc.warned {
				t.Errorf("log %q: a line with %q: %v, want %v", logs.String(), warning, got, tc.warned)
			}
		})
	}
}
