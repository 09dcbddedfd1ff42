package idp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// maxUserinfo bounds an OIDC userinfo answer, as the token endpoint's
// (x/oauth2) and a plain OAuth2 IdP's userinfo answer are bounded: go-oidc
// reads it whole, however long, and its claims become the profile.
const maxUserinfo = 1 << 20

// userinfo asks the IdP's userinfo endpoint with token, reading at most
// maxUserinfo bytes of its answer. An answer that is a signed JWT
// (application/jwt) go-oidc verifies with the IdP's keys; alg is its
// header's alg, for a refusal to name ("" for a JSON answer).
func (p *oidcProvider) userinfo(ctx context.Context, d discovered, token *oauth2.Token) (info *oidc.UserInfo, alg string, err error) {
	seen := &jwtAnswer{next: boundedAnswers{next: p.client.Transport, max: maxUserinfo}}
	bounded := *p.client
	bounded.Transport = seen
	info, err = d.provider.UserInfo(oidc.ClientContext(ctx, &bounded), oauth2.StaticTokenSource(token))
	return info, seen.alg, err
}

// unverifiableUserinfo is the set-up error for a userinfo answer signed
// with alg, which go-oidc does not verify (RFC 9864's Ed25519, HS256):
// every login that needs userinfo fails alike until the IdP's client
// settings change.
func unverifiableUserinfo(alg string, err error) error {
	return setupError("userinfo_signing_alg", fmt.Sprintf("the IdP answers userinfo with a JWT signed %q; this proxy verifies only %s. "+
		"Set the client's userinfo signature algorithm at the IdP to one of them, or to none for plain JSON "+
		"(Keycloak: the client's Advanced tab, \"User info signed response algorithm\")",
		truncate(alg, 32), strings.Join(verifiedAlgs, ", ")), err)
}

// jwtAnswer is a transport that notes the alg of an answer that is a JWT.
// One request at a time: one is made per userinfo call.
type jwtAnswer struct {
	next http.RoundTripper
	alg  string
}

func (j *jwtAnswer) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := j.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/jwt" {
		return resp, nil
	}
	// go-oidc reads the answer whole too; next bounds it.
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	j.alg = jwtAlg(strings.TrimSpace(string(body)))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}
