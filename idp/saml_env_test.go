package idp

import (
	"context"
	"html"
	"io"
	"log/slog"
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

// samlEnv is a real SAML IdP (samlidp) and a provider registered with it.
type samlEnv struct {
	idp *samlserver.Server
	p   *SAMLProvider
	// browsers are one per user, each with its own cookies (IdP session).
	browsers map[string]*http.Client
}

var samlUsers = []samlserver.User{
	{Name: "alice", Password: "alice-pw", Email: "alice@example.com", GivenName: "Alice", Surname: "Liddell",
		CommonName: "Alice Liddell", Groups: []string{"cvat-admins", "staff"}},
	{Name: "bob", Password: "bob-pw", Email: "bob@example.com", GivenName: "Bob", Surname: "Builder"},
	// The victim's address is a prefix of this one: a comment after
	// "alice@example.com" in its NameID must not log in as alice.
	{Name: "mallory", Password: "mallory-pw", Email: "alice@example.com.evil.com", Groups: []string{"staff"}},
}

func samlTestOptions() Options {
	return Options{
		PublicURL:  &url.URL{Scheme: "https", Host: "portcullis.test"},
		AuthPrefix: "/.portcullis",
		Logger:     slog.New(slog.DiscardHandler),
		Replay:     &memoryMarks{},
	}
}

// newSAMLEnv starts an IdP with samlUsers and a provider for it (metadata_url
// form unless edit changes the config), registered at the IdP.
func newSAMLEnv(t *testing.T, edit func(*Config)) *samlEnv {
	t.Helper()
	return newSAMLEnvWith(t, samlserver.Options{Users: samlUsers}, edit)
}

// newSAMLEnvWith is newSAMLEnv with an IdP started with opts.
func newSAMLEnvWith(t *testing.T, opts samlserver.Options, edit func(*Config)) *samlEnv {
	t.Helper()
	srv := samlserver.Start(t, opts)
	c := Config{
		ID:          "corp",
		Protocol:    SAML,
		EntityID:    srv.EntityID(),
		MetadataURL: srv.MetadataURL(),
		AttributeMapping: map[string]string{
			"groups": samlserver.GroupsAttribute,
			"name":   "cn",
		},
	}
	if edit != nil {
		edit(&c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p, err := newSAMLProvider(ctx, c, samlTestOptions(), defaultSAMLTiming)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Ready(); err != nil {
		t.Fatal(err)
	}
	md, err := p.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddServiceProviderXML(md); err != nil {
		t.Fatal(err)
	}
	return &samlEnv{idp: srv, p: p, browsers: map[string]*http.Client{}}
}

// samlACSPost is what the browser posts to the ACS.
type samlACSPost struct {
	SAMLResponse string
	RelayState   string
}

// request builds the ACS request the proxy would hand to Complete.
func (a samlACSPost) request() *http.Request {
	form := url.Values{"SAMLResponse": {a.SAMLResponse}, "RelayState": {a.RelayState}}
	r := httptest.NewRequest(http.MethodPost, "https://portcullis.test/.portcullis/saml/corp/acs", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

// login drives the browser part of an SP-initiated login as user: follow the
// login URL to the IdP, fill in its form, and take the auto-POST form that
// would go to the ACS.
func (e *samlEnv) login(t *testing.T, user, password string) (*Flow, samlACSPost) {
	t.Helper()
	f := &Flow{State: "state-" + user + "-" + samlRandom(t), IdP: "corp", Created: time.Now().Unix()}
	u, err := e.p.LoginURL(f)
	if err != nil {
		t.Fatal(err)
	}
	if f.RequestID == "" {
		t.Fatal("LoginURL did not set Flow.RequestID")
	}
	return f, e.browse(t, u, user, password)
}

// browse GETs u at the IdP, logs in if it shows its form, and returns the
// response form bound for the ACS.
func (e *samlEnv) browse(t *testing.T, u, user, password string) samlACSPost {
	t.Helper()
	browser := e.browsers[user]
	if browser == nil {
		jar, _ := cookiejar.New(nil)
		browser = &http.Client{Jar: jar, Timeout: 10 * time.Second}
		e.browsers[user] = browser
	}
	resp, err := browser.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	page := samlReadPage(t, resp)
	fields := samlFormFields(page)
	if _, ok := fields["password"]; ok {
		// The login form has no action: it posts back to the page's URL.
		form := url.Values{"user": {user}, "password": {password}}
		for _, name := range []string{"SAMLRequest", "RelayState"} {
			form.Set(name, fields[name])
		}
		resp, err = browser.PostForm(resp.Request.URL.String(), form)
		if err != nil {
			t.Fatal(err)
		}
		page = samlReadPage(t, resp)
		fields = samlFormFields(page)
	}
	if fields["SAMLResponse"] == "" {
		t.Fatalf("IdP did not answer with a SAMLResponse form:\n%s", page)
	}
	if action := samlFormAction(page); action != "https://portcullis.test/.portcullis/saml/corp/acs" {
		t.Fatalf("response form posts to %q, want the ACS", action)
	}
	return samlACSPost{SAMLResponse: fields["SAMLResponse"], RelayState: fields["RelayState"]}
}

func samlReadPage(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("IdP %s: status %d: %s", resp.Request.URL, resp.StatusCode, b)
	}
	return string(b)
}

var (
	samlInputRe  = regexp.MustCompile(`<input[^>]*\bname="([^"]+)"[^>]*>`)
	samlValueRe  = regexp.MustCompile(`\bvalue="([^"]*)"`)
	samlActionRe = regexp.MustCompile(`<form[^>]*\baction="([^"]*)"`)
)

// samlFormFields returns the named inputs of page with their values.
func samlFormFields(page string) map[string]string {
	out := map[string]string{}
	for _, m := range samlInputRe.FindAllStringSubmatch(page, -1) {
		v := ""
		if vm := samlValueRe.FindStringSubmatch(m[0]); vm != nil {
			v = html.UnescapeString(vm[1])
		}
		out[m[1]] = v
	}
	return out
}

func samlFormAction(page string) string {
	if m := samlActionRe.FindStringSubmatch(page); m != nil {
		return html.UnescapeString(m[1])
	}
	return ""
}

func samlRandom(t *testing.T) string {
	t.Helper()
	return strings.ReplaceAll(time.Now().Format("150405.000000000"), ".", "")
}
