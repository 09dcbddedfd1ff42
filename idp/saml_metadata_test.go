package idp

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crewjam/saml"

	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/samlserver"
)

// flakyMetadata serves the IdP's metadata until broken is set, then 500s.
type flakyMetadata struct {
	broken atomic.Bool
	hits   atomic.Int32
	body   atomic.Pointer[[]byte]
}

func (m *flakyMetadata) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.hits.Add(1)
	if m.broken.Load() {
		http.Error(w, "down for maintenance", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/samlmetadata+xml")
	w.Write(*m.body.Load())
}

func fetchBody(t *testing.T, u string) []byte {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSAMLMetadataRefreshKeepsLastGoodCopy(t *testing.T) {
	srv := samlserver.Start(t, samlserver.Options{Users: samlUsers})
	md := &flakyMetadata{}
	body := fetchBody(t, srv.MetadataURL())
	md.body.Store(&body)
	hs := httptest.NewServer(md)
	t.Cleanup(hs.Close)

	c := Config{ID: "corp", Protocol: SAML, EntityID: srv.EntityID(), MetadataURL: hs.URL}
	fast := samlTiming{fetchTimeout: time.Second, refresh: 20 * time.Millisecond, retry: 20 * time.Millisecond}
	p, err := newSAMLProvider(t.Context(), c, samlTestOptions(), fast)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Ready(); err != nil {
		t.Fatalf("not ready after a good first fetch: %v", err)
	}
	// fetched waits until n more fetches have begun since it was called:
	// those that began before, served as the metadata was then, have
	// finished with all but the last (one fetch at a time). A refresh in
	// flight while the test looked would otherwise replace the metadata
	// after it, or clear the error after the test saw the new copy.
	fetched := func(what string, n int32) {
		t.Helper()
		hits := md.hits.Load()
		waitFor(t, what, func() bool { return md.hits.Load() >= hits+n })
	}

	md.broken.Store(true)
	fetched("a failed refresh", 2)
	good := p.current.Load()
	fetched("failed refreshes", 3)
	if err := p.Ready(); err != nil {
		t.Errorf("a failed refresh made the provider unready: %v", err)
	}
	if p.current.Load() != good {
		t.Errorf("a failed refresh replaced the metadata")
	}
	if p.lastErr.Load() == nil {
		t.Errorf("the failed refresh was not recorded")
	}
	if _, err := p.LoginURL(&Flow{State: "s"}); err != nil {
		t.Errorf("login with the last good metadata failed: %v", err)
	}

	md.broken.Store(false)
	fetched("a successful refresh", 2)
	if p.current.Load() == good {
		t.Errorf("a successful refresh kept the old copy")
	}
	if p.lastErr.Load() != nil {
		t.Errorf("the error stayed after a successful refresh")
	}
}

func TestSAMLMetadataUnreachableAtStart(t *testing.T) {
	srv := samlserver.Start(t, samlserver.Options{})
	md := &flakyMetadata{}
	body := fetchBody(t, srv.MetadataURL())
	md.body.Store(&body)
	md.broken.Store(true)
	hs := httptest.NewServer(md)
	t.Cleanup(hs.Close)

	c := Config{ID: "corp", Protocol: SAML, EntityID: srv.EntityID(), MetadataURL: hs.URL}
	fast := samlTiming{fetchTimeout: time.Second, refresh: time.Hour, retry: 20 * time.Millisecond}
	p, err := newSAMLProvider(t.Context(), c, samlTestOptions(), fast)
	if err != nil {
		t.Fatalf("an unreachable IdP must not fail the start: %v", err)
	}
	if err := p.Ready(); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Ready = %v, want ErrNotReady", err)
	}
	if _, err := p.LoginURL(&Flow{State: "s"}); !errors.Is(err, ErrNotReady) {
		t.Errorf("LoginURL = %v, want ErrNotReady", err)
	}
	if _, _, err := p.Complete(httptest.NewRequest(http.MethodPost, "/acs", nil), &Flow{}); !errors.Is(err, ErrNotReady) {
		t.Errorf("Complete = %v, want ErrNotReady", err)
	}
	md.broken.Store(false)
	waitFor(t, "the background retry", func() bool { return p.Ready() == nil })
}

// redirectingIdP answers as idp.example.com would: /md redirects to
// location, which serves body.
type redirectingIdP struct {
	location string
	body     []byte
}

func (r redirectingIdP) RoundTrip(req *http.Request) (*http.Response, error) {
	resp := &http.Response{Request: req, Header: http.Header{}, Body: http.NoBody, StatusCode: http.StatusFound}
	if req.URL.String() == r.location {
		resp.StatusCode, resp.Body = http.StatusOK, io.NopCloser(bytes.NewReader(r.body))
	} else {
		resp.Header.Set("Location", r.location)
	}
	return resp, nil
}

func TestSAMLMetadataRedirect(t *testing.T) {
	srv := samlserver.Start(t, samlserver.Options{})
	body := fetchBody(t, srv.MetadataURL())
	tests := []struct {
		name     string
		location string
		wantErr  string
	}{
		{"redirect to another https URL is followed", "https://idp.example.com/saml/metadata", ""},
		{"redirect from https to plain http is refused", "http://idp.example.com/saml/metadata", "plain http refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{ID: "corp", Protocol: SAML, EntityID: srv.EntityID(), MetadataURL: "https://idp.example.com/md"}
			o := samlTestOptions()
			o.HTTPClient = &http.Client{Transport: redirectingIdP{location: tc.location, body: body}}
			timing := samlTiming{fetchTimeout: time.Second, refresh: time.Hour, retry: time.Hour}
			p, err := newSAMLProvider(t.Context(), c, o, timing)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Ready()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Ready = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Ready = %v, want an error about %q", err, tc.wantErr)
			}
		})
	}
}

// Metadata past its validUntil is not relied on, even as the copy kept
// through failed refreshes. crewjam/saml refuses every response once an
// IDPSSODescriptor's own validUntil has passed too, so Ready must say so
// then as well, or /readyz stays green and every login started fails at the
// ACS.
func TestSAMLExpiredMetadataIsNotReliedOn(t *testing.T) {
	past := time.Now().Add(-time.Minute)
	for _, tc := range []struct {
		name   string
		expire func(md *saml.EntityDescriptor)
	}{
		{"the entity's validUntil", func(md *saml.EntityDescriptor) { md.ValidUntil = past }},
		{"an IDPSSODescriptor's validUntil", func(md *saml.EntityDescriptor) {
			md.IDPSSODescriptors = slices.Clone(md.IDPSSODescriptors)
			md.IDPSSODescriptors[0].ValidUntil = &past
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSAMLEnv(t, nil)
			// A login started while the metadata was good.
			f, post := e.login(t, "alice", "alice-pw")

			md := *e.p.current.Load().IDPMetadata
			tc.expire(&md)
			e.p.setIdPMetadata(&md)

			if err := e.p.Ready(); !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "expired") {
				t.Errorf("Ready = %v, want not ready: expired", err)
			}
			if _, err := e.p.LoginURL(&Flow{State: "s"}); err == nil {
				t.Error("a login started with expired metadata")
			}
			if _, _, err := e.p.Complete(post.request(), f); err == nil || !strings.Contains(err.Error(), "expired") {
				t.Errorf("response checked against expired metadata: err = %v", err)
			}
		})
	}
}

// ssoLocations finds the Location of each SingleSignOnService in metadata.
var ssoLocations = regexp.MustCompile(`(<SingleSignOnService [^>]*Location=")[^"]*"`)

// keysWithoutUse is metadata with the use attribute of every KeyDescriptor
// left out, and those for encryption only dropped.
func keysWithoutUse(t *testing.T, md string) string {
	t.Helper()
	out := regexp.MustCompile(`(?s)<KeyDescriptor use="encryption">.*?</KeyDescriptor>`).ReplaceAllString(md, "")
	out = strings.ReplaceAll(out, `<KeyDescriptor use="signing">`, "<KeyDescriptor>")
	if strings.Contains(out, "use=") || !strings.Contains(out, "<KeyDescriptor>") {
		t.Fatalf("metadata's KeyDescriptors are not as expected:\n%s", md)
	}
	return out
}

func TestParseIdPMetadata(t *testing.T) {
	srv := samlserver.Start(t, samlserver.Options{})
	real := string(fetchBody(t, srv.MetadataURL()))
	strip := func(s, from, to string) string {
		i, j := strings.Index(s, from), strings.Index(s, to)
		if i < 0 || j < 0 {
			t.Fatalf("metadata lacks %s…%s", from, to)
		}
		return s[:i] + s[j+len(to):]
	}
	federation := `<EntitiesDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata">` +
		`<EntityDescriptor entityID="https://someone-else.example"><IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"/></EntityDescriptor>` +
		strings.TrimPrefix(real, `<?xml version="1.0" encoding="UTF-8"?>`) + `</EntitiesDescriptor>`
	tests := []struct {
		name     string
		data     string
		entityID string
		wantErr  string
	}{
		{"the IdP's own metadata is accepted", real, srv.EntityID(), ""},
		{"the entity is found inside a federation's EntitiesDescriptor", federation, srv.EntityID(), ""},
		{"a federation's validUntil that has passed expires the entity in it",
			strings.Replace(federation, "<EntitiesDescriptor ", `<EntitiesDescriptor validUntil="2020-01-01T00:00:00Z" `, 1), srv.EntityID(), "expired"},
		{"an IDPSSODescriptor whose validUntil has passed is refused",
			strings.Replace(real, "<IDPSSODescriptor ", `<IDPSSODescriptor validUntil="2020-01-01T00:00:00Z" `, 1), srv.EntityID(), "expired"},
		{"an entity that is no IdP is named as such",
			`<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://sp.example"><SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"/></EntityDescriptor>`,
			"https://sp.example", `entity "https://sp.example" has no IDPSSODescriptor`},
		{"metadata for another entity id is refused", real, "https://sso.company.com", "check entity_id"},
		{"metadata without a signing certificate is refused", strip(real, "<KeyDescriptor", "</KeyDescriptor>"), srv.EntityID(), "signing certificate"},
		// A KeyDescriptor without use is for signing and encryption both
		// (SAML metadata 2.4.1.1), as many IdPs publish it.
		{"a certificate without use is a signing certificate", keysWithoutUse(t, real), srv.EntityID(), ""},
		{"metadata without an HTTP-Redirect SSO endpoint is refused",
			strings.ReplaceAll(real, "HTTP-Redirect", "HTTP-Artifact"), srv.EntityID(), "HTTP-Redirect"},
		{"a document that is not SAML metadata is refused", "<html>oops</html>", srv.EntityID(), "EntityDescriptor"},
		// crewjam/saml takes an http(s) URL without a host, which a browser
		// reads as one of the host after the slashes: every login would be
		// sent there with its AuthnRequest.
		{"an SSO endpoint whose URL has no host is refused",
			ssoLocations.ReplaceAllString(real, `${1}https:///evil.example/sso"`), srv.EntityID(), "SingleSignOnService"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			md, err := parseIdPMetadata([]byte(tc.data), tc.entityID)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if md.EntityID != tc.entityID {
					t.Errorf("picked %q", md.EntityID)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one about %q", err, tc.wantErr)
			}
		})
	}
}

// IdP metadata is read up to 16 MiB (federation files are large), and a
// document larger is refused as such: here the IdP's own metadata with
// spaces after its root element, which would parse if it were cut.
func TestSAMLMetadataIsBounded(t *testing.T) {
	srv := samlserver.Start(t, samlserver.Options{})
	body := fetchBody(t, srv.MetadataURL())
	for _, tc := range []struct {
		name    string
		size    int
		refused bool
	}{
		{"metadata of 15 MiB loads", 15 << 20, false},
		{"metadata of 17 MiB is refused", 17 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			padded := append(slices.Clip(body), bytes.Repeat([]byte(" "), tc.size-len(body))...)
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(padded) }))
			t.Cleanup(hs.Close)
			c := Config{ID: "corp", Protocol: SAML, EntityID: srv.EntityID(), MetadataURL: hs.URL}
			p, err := newSAMLProvider(t.Context(), c, samlTestOptions(), defaultSAMLTiming)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Ready()
			switch {
			case tc.refused && (err == nil || !strings.Contains(err.Error(), "larger than 16777216 bytes")):
				t.Errorf("Ready = %v; want the metadata refused as larger than 16 MiB", err)
			case !tc.refused && err != nil:
				t.Errorf("Ready = %v; want the metadata loaded", err)
			}
		})
	}
}

// Metadata is taken only from a 200 answer: a server that answers 503 with
// a document (a cache's stale copy, a maintenance page that happens to be
// the old metadata) leaves the provider not ready, saying so.
func TestSAMLMetadataOnlyFromA200(t *testing.T) {
	srv := samlserver.Start(t, samlserver.Options{})
	body := fetchBody(t, srv.MetadataURL())
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/samlmetadata+xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write(body)
	}))
	t.Cleanup(hs.Close)
	c := Config{ID: "corp", Protocol: SAML, EntityID: srv.EntityID(), MetadataURL: hs.URL}
	p, err := newSAMLProvider(t.Context(), c, samlTestOptions(), samlTiming{fetchTimeout: time.Second, refresh: time.Hour, retry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.refreshMetadata(t.Context()); err == nil || !strings.Contains(err.Error(), "status 503") {
		t.Errorf("refreshMetadata = %v; want it refused for status 503", err)
	}
	if err := p.Ready(); !errors.Is(err, ErrNotReady) {
		t.Errorf("Ready = %v, want ErrNotReady", err)
	}
}

// stallingMetadata serves good metadata until stalled: then it takes each
// request and answers nothing (an IdP that hangs), until the client gives
// up.
type stallingMetadata struct {
	stalled atomic.Bool
	hits    atomic.Int32
	body    []byte
}

func (m *stallingMetadata) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.hits.Add(1)
	if m.stalled.Load() {
		<-r.Context().Done()
		return
	}
	w.Header().Set("Content-Type", "application/samlmetadata+xml")
	w.Write(m.body)
}

// A metadata_url that takes connections and answers nothing is given up on
// after fetchTimeout, at the start (the provider starts, not ready, and
// says why) and at a refresh (the last good copy is kept, and logins go
// on with it), and the log says which.
func TestSAMLMetadataURLThatStalls(t *testing.T) {
	srv := samlserver.Start(t, samlserver.Options{})
	md := &stallingMetadata{body: fetchBody(t, srv.MetadataURL())}
	hs := httptest.NewServer(md)
	t.Cleanup(hs.Close)
	c := Config{ID: "corp", Protocol: SAML, EntityID: srv.EntityID(), MetadataURL: hs.URL}
	bound := 300 * time.Millisecond

	t.Run("at the start", func(t *testing.T) {
		md.stalled.Store(true)
		logs := &process.Output{}
		o := samlTestOptions()
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
		asked := time.Now()
		p, err := newSAMLProvider(t.Context(), c, o, samlTiming{fetchTimeout: bound, refresh: time.Hour, retry: time.Hour})
		if err != nil {
			t.Fatalf("a stalled IdP must not fail the start: %v", err)
		}
		t.Logf("start gave up after %v", time.Since(asked).Round(time.Millisecond))
		if err := p.Ready(); !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "fetch metadata") {
			t.Errorf("Ready = %v; want ErrNotReady saying the fetch failed", err)
		}
		if !strings.Contains(logs.String(), "fetching IdP metadata failed; retrying in the background") ||
			!strings.Contains(logs.String(), "Timeout") && !strings.Contains(logs.String(), "deadline") {
			t.Errorf("log:\n%s\nwant the failed fetch and its timeout", logs.String())
		}
	})

	t.Run("at a refresh", func(t *testing.T) {
		md.stalled.Store(false)
		logs := &process.Output{}
		o := samlTestOptions()
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
		p, err := newSAMLProvider(t.Context(), c, o, samlTiming{fetchTimeout: bound, refresh: 20 * time.Millisecond, retry: 20 * time.Millisecond})
		if err != nil || p.Ready() != nil {
			t.Fatalf("start: %v, %v", err, p.Ready())
		}
		good := p.current.Load()
		md.stalled.Store(true)
		hits := md.hits.Load()
		waitFor(t, "two refreshes given up on", func() bool {
			return md.hits.Load() >= hits+3 && strings.Count(logs.String(), "keeping the last good copy") >= 2
		})
		if err := p.Ready(); err != nil {
			t.Errorf("stalled refreshes made the provider unready: %v", err)
		}
		if p.current.Load() != good {
			t.Error("a stalled refresh replaced the metadata")
		}
		if _, err := p.LoginURL(&Flow{State: "s"}); err != nil {
			t.Errorf("login with the last good metadata: %v", err)
		}
		if line := logs.String(); !strings.Contains(line, "Timeout") && !strings.Contains(line, "deadline") {
			t.Errorf("log:\n%s\nwant the refresh's timeout", line)
		}
	})
}
