package idp

import (
	"context"
	"fmt"
	"io"
	"net/http"

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

// boundedAnswers is a transport whose answers' bodies fail to read past
// max bytes, rather than end there: cut short, an answer could still parse.
type boundedAnswers struct {
	next http.RoundTripper // nil: http.DefaultTransport
	max  int64
}

func (b boundedAnswers) RoundTrip(r *http.Request) (*http.Response, error) {
	next := b.next
	if next == nil {
		next = http.DefaultTransport
	}
	resp, err := next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &boundedBody{ReadCloser: resp.Body, left: b.max, max: b.max}
	return resp, nil
}

// boundedBody is an answer's body that fails once more than left bytes come.
type boundedBody struct {
	io.ReadCloser
	left, max int64
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, fmt.Errorf("the answer is larger than %d bytes", b.max)
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, fmt.Errorf("the answer is larger than %d bytes", b.max)
	}
	return n, err
}
