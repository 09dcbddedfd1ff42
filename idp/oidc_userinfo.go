package idp

import (
	"context"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// maxUserinfo bounds an OIDC userinfo answer, as the token endpoint's
// (x/oauth2) and a plain OAuth2 IdP's userinfo answer are bounded: go-oidc
// reads it whole, however long, and its claims become the profile.
const maxUserinfo = 1 << 20

// userinfo asks the IdP's userinfo endpoint with token, reading at most
// maxUserinfo bytes of its answer.
func (p *oidcProvider) userinfo(ctx context.Context, d discovered, token *oauth2.Token) (*oidc.UserInfo, error) {
	bounded := *p.client
	bounded.Transport = boundedAnswers{next: p.client.Transport, max: maxUserinfo}
	return d.provider.UserInfo(oidc.ClientContext(ctx, &bounded), oauth2.StaticTokenSource(token))
}
