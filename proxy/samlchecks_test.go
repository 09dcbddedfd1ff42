package proxy

import (
	"context"
	"encoding/base64"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// SAML responses are checked a few at a time per replica: with every check
// slot taken, a response waits its turn, then is answered 503 with
// Retry-After (499 if its client left), and its login state is given back,
// so that the same answer, posted again once a slot is free, logs in.
func TestSAMLResponsesWaitForACheckSlot(t *testing.T) {
	idpSrv := samlserver.Start(t, samlserver.Options{Users: []samlserver.User{
		{Name: "alice", Password: "alice-pw", Email: "alice@example.com"},
	}})
	h := newTestHandler(t, minimal+`    - id: corp
      protocol: SAML
      entity_id: `+idpSrv.EntityID()+`
      x509_cert: `+base64.StdEncoding.EncodeToString(idpSrv.Certificate.Raw)+`
      sso_url: `+idpSrv.SSOURL()+`
`)
	md, err := h.providers["corp"].impl.(metadataServer).Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if err := idpSrv.AddServiceProviderXML(md); err != nil {
		t.Fatal(err)
	}
	// alice's browser starts a login at the proxy and brings back the
	// IdP's answer, not yet posted to the ACS.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "https://cvat.example.com/.portcullis/login/corp?rd=/tasks", nil))
	flowCookies := rec.Result().Cookies()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := browser.Get(rec.Header().Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	fields := samlPageFields(t, resp)
	resp, err = browser.PostForm(resp.Request.URL.String(), url.Values{"user": {"alice"}, "password": {"alice-pw"},
		"SAMLRequest": {fields["SAMLRequest"]}, "RelayState": {fields["RelayState"]}})
	if err != nil {
		t.Fatal(err)
	}
	answer := samlPageFields(t, resp)
	if answer["SAMLResponse"] == "" {
		t.Fatal("the IdP answered with no SAMLResponse")
	}
	post := func(ctx context.Context) *httptest.ResponseRecorder {
		form := url.Values{"SAMLResponse": {answer["SAMLResponse"]}, "RelayState": {answer["RelayState"]}}
		r := httptest.NewRequestWithContext(ctx, "POST", "https://cvat.example.com/.portcullis/saml/corp/acs", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for _, c := range flowCookies {
			r.AddCookie(c)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec
	}

	// Checks in flight hold every slot.
	h.samlChecks.wait = 10 * time.Millisecond
	for range cap(h.samlChecks.slots) {
		h.samlChecks.slots <- struct{}{}
	}
	rec = post(context.Background())
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != retryAfter {
		t.Fatalf("with every check slot taken: %d, Retry-After %q, want 503 with Retry-After %s\n%s",
			rec.Code, rec.Header().Get("Retry-After"), retryAfter, rec.Body)
	}
	// Its client gone while it waits, a response is left unchecked.
	h.samlChecks.wait = time.Hour
	gone, leave := context.WithCancel(context.Background())
	leave()
	if rec = post(gone); rec.Code != statusClientClosed {
		t.Fatalf("its client gone while waiting for a check slot: %d, want %d", rec.Code, statusClientClosed)
	}

	for range cap(h.samlChecks.slots) {
		h.samlChecks.give()
	}
	rec = post(context.Background())
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://cvat.example.com/tasks" {
		t.Fatalf("posted again with the slots free: %d to %q, want the login to go on to /tasks\n%s",
			rec.Code, rec.Header().Get("Location"), rec.Body)
	}
	if len(h.samlChecks.slots) != 0 {
		t.Errorf("%d check slots still taken after the login", len(h.samlChecks.slots))
	}
}

var (
	samlInputRe = regexp.MustCompile(`<input[^>]*\bname="([^"]+)"[^>]*>`)
	samlValueRe = regexp.MustCompile(`\bvalue="([^"]*)"`)
)

// samlPageFields returns the named inputs of the IdP's page in resp.
func samlPageFields(t *testing.T, resp *http.Response) map[string]string {
	t.Helper()
	defer resp.Body.Close()
	page, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("IdP %s: status %d: %s", resp.Request.URL, resp.StatusCode, page)
	}
	out := map[string]string{}
	for _, m := range samlInputRe.FindAllStringSubmatch(string(page), -1) {
		if v := samlValueRe.FindStringSubmatch(m[0]); v != nil {
			out[m[1]] = html.UnescapeString(v[1])
		} else {
			out[m[1]] = ""
		}
	}
	return out
}
