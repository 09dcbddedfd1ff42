package security

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// An OIDC back-channel logout token is accepted only as a compact JWT: the
// endpoint takes posts from anyone, and go-jose, which verifies the
// signature, also reads the JWS JSON serialization and strips whitespace,
// so that anyone holding a token the IdP signed can rewrite it, hiding its
// typ header from the check that keeps another kind of token from passing
// for a logout token. Each rewritten token is refused with 400 and ends
// none of carol's sessions; the token as the IdP signed it then ends them.
func TestBackchannelLogoutTokenMustBeCompact(t *testing.T) {
	carol := sessionOf(newBrowser(t).login("carol"))
	post := func(t *testing.T, token string) reply {
		t.Helper()
		return do(t, rq{method: "POST", target: "/.portcullis/oidc/alpha/backchannel-logout",
			headers: []string{"Content-Type: application/x-www-form-urlencoded"}, body: "logout_token=" + url.QueryEscape(token)})
	}
	logout := func() string { return suite.alpha.logoutToken("logout+jwt", "carol") }
	for _, tc := range []struct {
		name  string
		token func() string
	}{
		{"flattened JWS JSON serialization", func() string { return reshaped(logout(), "json_flattened") }},
		{"general JWS JSON serialization", func() string { return reshaped(logout(), "json_general") }},
		{"an access token (typ at+jwt) in the JSON serialization, its typ out of sight",
			func() string { return reshaped(suite.alpha.logoutToken("at+jwt", "carol"), "json_flattened") }},
		{"JSON serialization after whitespace", func() string { return " \n" + reshaped(logout(), "json_flattened") }},
		{"a space in the payload", func() string { return reshaped(logout(), "whitespace_in_payload") }},
		{"a space before the header", func() string { return " " + logout() }},
		{"a tab in the header", func() string { tok := logout(); return tok[:5] + "\t" + tok[5:] }},
		{"a line break after it", func() string { return logout() + "\r\n" }},
		{"a trailing dot", func() string { return logout() + "." }},
		{"a leading dot", func() string { return "." + logout() }},
		{"a doubled dot", func() string { return strings.Replace(logout(), ".", "..", 1) }},
		{"a fourth part", func() string { tok := logout(); return tok + "." + tok[strings.LastIndexByte(tok, '.')+1:] }},
		{"base64 padding", func() string {
			parts := strings.Split(logout(), ".")
			for i, part := range parts {
				b, err := base64.RawURLEncoding.DecodeString(part)
				if err != nil {
					t.Fatal(err)
				}
				parts[i] = base64.URLEncoding.EncodeToString(b) // a 256-byte signature gets "=="
			}
			return strings.Join(parts, ".")
		}},
		{"the standard base64 alphabet", func() string {
			for {
				// Nearly every token has a - or _ to write as + or /.
				if tok := logout(); strings.ContainsAny(tok, "-_") {
					return strings.NewReplacer("-", "+", "_", "/").Replace(tok)
				}
			}
		}},
		{"JWE-shaped: the signed token encrypted to the IdP's key, five parts", func() string {
			enc, err := jose.NewEncrypter(jose.A128GCM, jose.Recipient{Algorithm: jose.RSA_OAEP_256, Key: &suite.alpha.key.PublicKey},
				(&jose.EncrypterOptions{}).WithContentType("JWT"))
			if err != nil {
				t.Fatal(err)
			}
			obj, err := enc.Encrypt([]byte(logout()))
			if err != nil {
				t.Fatal(err)
			}
			out, err := obj.CompactSerialize()
			if err != nil {
				t.Fatal(err)
			}
			return out
		}},
	} {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			token := tc.token()
			if r := post(t, token); r.Status != http.StatusBadRequest {
				t.Errorf("logout token %q: %s, want 400", token, fmtReply(r))
			}
			if sub := sessionUser(t, carol); sub != "carol" {
				t.Fatalf("after the refused logout token, carol's session is %q, want it alive", sub)
			}
		})
	}
	t.Run("the token as the IdP signed it ends the session (control)", func(t *testing.T) {
		if r := post(t, logout()); r.Status != http.StatusOK {
			t.Fatalf("compact logout token: %s, want 200", fmtReply(r))
		}
		if sub := sessionUser(t, carol); sub != "" {
			t.Errorf("after the IdP's logout token, carol's session is still %q", sub)
		}
	})
}
