package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/oidcserver"
)

// A login whose IdP stalls (SIGSTOP on oidc-provider: connections taken,
// nothing answered) after the user signed in there, as the proxy exchanges
// the code, is answered as the IdP briefly away: 503 with Retry-After and
// a way to sign in again, not a 502 that tells the user the set-up is
// broken. Once the IdP resumes, signing in again works. The proxy's calls
// to the IdP wait for answer headers 2 s here (idpTimeout's 15 s in
// production: the same timeout error, sooner).
func TestLoginWhoseIdPStallsAtTheTokenEndpointIsARetry(t *testing.T) {
	base, _, op := serveWithOIDC(t, &http.Transport{ResponseHeaderTimeout: 2 * time.Second})

	jar, _ := cookiejar.New(nil)
	stalled := false
	browser := &http.Client{Jar: jar, Timeout: time.Minute, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if strings.HasSuffix(req.URL.Path, "/oidc/company/callback") && !stalled {
			stalled = true
			op.Pause() // the user signed in at the IdP; the proxy has the code to exchange
		}
		return nil
	}}
	resp := oidcserver.Login(t, browser, base+"/.portcullis/login/company?rd=/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var answer struct{ Error, Message string }
	_ = json.Unmarshal(body, &answer)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != retryAfter || answer.Error != "temporarily_unavailable" {
		t.Errorf("callback while the IdP stalls: %d, Retry-After %q: %s; want 503 temporarily_unavailable with Retry-After %s",
			resp.StatusCode, resp.Header.Get("Retry-After"), body, retryAfter)
	}

	op.Resume()
	resp = oidcserver.Login(t, browser, base+"/.portcullis/login/company?rd=/tasks", oidcserver.Alice, oidcserver.AlicePassword)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/tasks" {
		t.Errorf("signing in again once the IdP resumed: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
	}
}
