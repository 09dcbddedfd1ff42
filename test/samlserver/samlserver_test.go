package samlserver

import (
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/crewjam/saml"
)

func TestServer(t *testing.T) {
	s := Start(t, Options{Users: []User{{Name: "alice", Password: "pw", Email: "alice@example.com", Groups: []string{"g"}}}})

	t.Run("metadata names the entity id and the SSO URL", func(t *testing.T) {
		resp, err := http.Get(s.MetadataURL())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var md saml.EntityDescriptor
		if err := xml.NewDecoder(resp.Body).Decode(&md); err != nil {
			t.Fatal(err)
		}
		if md.EntityID != s.EntityID() || len(md.IDPSSODescriptors) != 1 ||
			md.IDPSSODescriptors[0].SingleSignOnServices[0].Location != s.SSOURL() {
			t.Errorf("metadata %+v", md)
		}
	})

	t.Run("a service provider registers from its metadata URL", func(t *testing.T) {
		sp := &saml.ServiceProvider{
			EntityID: "https://sp.example/metadata",
			AcsURL:   url.URL{Scheme: "https", Host: "sp.example", Path: "/acs"},
		}
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			xml.NewEncoder(w).Encode(sp.Metadata())
		}))
		defer hs.Close()
		if err := s.AddServiceProviderURL(t.Context(), hs.URL); err != nil {
			t.Fatal(err)
		}
		if _, err := s.IDP.GetServiceProvider(nil, sp.EntityID); err != nil {
			t.Fatalf("service provider not registered: %v", err)
		}
	})

	t.Run("metadata without an entity id is refused", func(t *testing.T) {
		if err := s.AddServiceProviderXML([]byte(`<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata"/>`)); err == nil {
			t.Fatal("accepted")
		}
	})

	t.Run("a wrong password shows the form again", func(t *testing.T) {
		if err := s.AddShortcut("sp", "https://sp.example/metadata", ""); err != nil {
			t.Fatal(err)
		}
		resp, err := http.PostForm(s.URL+"/login/sp", url.Values{"user": {"alice"}, "password": {"wrong"}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), "Invalid username or password") || strings.Contains(string(body), "SAMLResponse") {
			t.Errorf("wrong password: %s", body)
		}
	})

	t.Run("the right password answers the service provider", func(t *testing.T) {
		resp, err := http.PostForm(s.URL+"/login/sp", url.Values{"user": {"alice"}, "password": {"pw"}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), `name="SAMLResponse"`) || !strings.Contains(string(body), "https://sp.example/acs") {
			t.Errorf("no response form: %s", body)
		}
	})

	t.Run("Close stops the server", func(t *testing.T) {
		s2, err := New(Options{})
		if err != nil {
			t.Fatal(err)
		}
		s2.Close()
		if _, err := http.Get(s2.MetadataURL()); err == nil {
			t.Error("still serving after Close")
		}
	})
}
