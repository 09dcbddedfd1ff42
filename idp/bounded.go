package idp

import (
	"fmt"
	"io"
	"net/http"
)

// boundedAnswers is a transport whose answers' bodies fail to read past
// max bytes, rather than end there: cut short, an answer could still parse.
// It bounds what go-oidc reads whole (userinfo, the JWKS, and the body of
// any answer but 200, which it quotes in its error).
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

// readBounded reads an IdP's answer whole, failing as boundedBody does once
// it is longer than max bytes: every answer the package reads itself
// (OAuth2 userinfo, GitHub's API, SAML metadata) is bounded as go-oidc's
// are, refused past its bound, never cut there.
func readBounded(body io.ReadCloser, max int64) ([]byte, error) {
	return io.ReadAll(&boundedBody{ReadCloser: body, left: max, max: max})
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
