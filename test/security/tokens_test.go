package security

import (
	"encoding/base64"
	"strings"
	"testing"
)

// The IdP's tokens stay with the proxy: neither /userinfo, which any script
// on the application's origin can read with the user's cookie, nor the
// upstream gets the access token, the refresh token or the ID token, in
// its answer, its headers or inside the assertion JWT. Pomerium's
// CVE-2024-39315 (GHSA-rrqr-7w59-637v): its user info page (/.pomerium)
// served the session's OAuth2 access and ID tokens, so an XSS in any
// proxied application could take them.
func TestIdPTokensReachNeitherUserinfoNorUpstream(t *testing.T) {
	before := len(suite.alpha.tokensOf("dave")) // -count=N: earlier runs' logins
	cookie := sessionOf(newBrowser(t).login("dave"))
	tokens := suite.alpha.tokensOf("dave")[before:]
	if len(tokens) != 3 {
		t.Fatalf("the IdP issued %d tokens for dave, want an access, an ID and a refresh token", len(tokens))
	}
	// A token whole, or any of an ID token's parts: its payload (the
	// claims, base64) and signature.
	var secrets []string
	for _, tok := range tokens {
		secrets = append(secrets, tok)
		if parts := strings.Split(tok, "."); len(parts) == 3 {
			secrets = append(secrets, parts[1], parts[2])
		}
	}
	leaks := func(where, text string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s carries the IdP's token %.16s…", where, s)
			}
		}
	}

	info := do(t, rq{target: "/.portcullis/userinfo", headers: []string{"Cookie: " + cookie}})
	if info.Status != 200 || !strings.Contains(info.Body, `"email":"dave@example.com"`) {
		t.Fatalf("/userinfo: %s", fmtReply(info))
	}
	leaks("/userinfo's answer", info.Body)
	for name, vs := range info.Header {
		leaks("/userinfo's "+name+" header", strings.Join(vs, "\n"))
	}

	app := do(t, rq{target: "/app/x", headers: []string{"Cookie: " + cookie}})
	if app.Status != 200 || len(app.Upstream) != 1 {
		t.Fatalf("/app/x: %s, %d upstream requests", fmtReply(app), len(app.Upstream))
	}
	leaks("the upstream's request", app.Upstream[0].Raw)
	assertion := app.Upstream[0].Values("X-Portcullis-Assertion")
	if len(assertion) != 1 || strings.Count(assertion[0], ".") != 2 {
		t.Fatalf("upstream's assertion %q, want one JWT", assertion)
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(assertion[0], ".")[1])
	if err != nil {
		t.Fatalf("assertion payload: %v", err)
	}
	leaks("the assertion's claims", string(payload))
}
