package proxy

import (
	"net/http"
	"time"
)

// idpTimeout bounds each call to an IdP: discovery, token, userinfo, keys,
// metadata, GitHub's API.
const idpTimeout = 15 * time.Second

// idpClient is the client of every call the proxy makes to its IdPs, over
// transport (nil: http.DefaultTransport).
func idpClient(transport http.RoundTripper) *http.Client {
	if transport == nil {
		transport = http.DefaultTransport
	}
	return &http.Client{Timeout: idpTimeout, Transport: resendOnClosedConnection{transport}}
}

// resendOnClosedConnection lets Go's transport send a POST to an IdP again,
// on a new connection, when the kept-alive connection it went out on turns
// out to have been closed by the IdP before any answer: an IdP that closes
// idle connections after a few seconds (Node's and Apache httpd's default
// is 5 s) closes one just as the proxy sends the next request on it, when a
// user's callback comes that long after the proxy's last call. Go sends a
// GET again by itself, a POST only when told it is idempotent, by an
// Idempotency-Key entry in its header map; an entry without values is not
// sent (net/http.Transport). The POSTs are the token endpoint's: the code
// of a login, a refresh token. Sending one again when nothing came back is
// safe: Go does it only for a reused connection that failed before the first
// byte of an answer, and an IdP that had redeemed the code or the refresh
// token after all refuses it the second time, as it would have been refused
// without a second try.
type resendOnClosedConnection struct{ next http.RoundTripper }

func (t resendOnClosedConnection) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && r.GetBody != nil {
		if _, ok := r.Header["Idempotency-Key"]; !ok {
			r = r.Clone(r.Context()) // a RoundTripper must not change its request
			r.Header["Idempotency-Key"] = nil
		}
	}
	return t.next.RoundTrip(r)
}
