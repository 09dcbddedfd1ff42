package idp

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/crewjam/saml"
	"github.com/crewjam/saml/samlsp"
)

// staticIdPMetadata builds IdP metadata from x509_cert and sso_url, for IdPs
// configured without a metadata URL.
func staticIdPMetadata(c Config) (*saml.EntityDescriptor, error) {
	cert, err := parseCertificate(c.X509Cert)
	if err != nil {
		return nil, fmt.Errorf("x509_cert: %w", err)
	}
	var slo []saml.Endpoint
	if c.SLOURL != "" {
		slo = []saml.Endpoint{{Binding: saml.HTTPRedirectBinding, Location: c.SLOURL}}
	}
	return &saml.EntityDescriptor{
		EntityID: c.EntityID,
		IDPSSODescriptors: []saml.IDPSSODescriptor{{
			SSODescriptor: saml.SSODescriptor{SingleLogoutServices: slo, RoleDescriptor: saml.RoleDescriptor{
				ProtocolSupportEnumeration: "urn:oasis:names:tc:SAML:2.0:protocol",
				KeyDescriptors: []saml.KeyDescriptor{{
					Use: "signing",
					KeyInfo: saml.KeyInfo{X509Data: saml.X509Data{X509Certificates: []saml.X509Certificate{
						{Data: base64.StdEncoding.EncodeToString(cert.Raw)},
					}}},
				}},
			}},
			SingleSignOnServices: []saml.Endpoint{{Binding: saml.HTTPRedirectBinding, Location: c.SSOURL}},
		}},
	}, nil
}

// refreshLoop fetches the IdP metadata again every timing.refresh, or every
// timing.retry after a failure, until ctx ends. A failed fetch keeps the last
// good copy.
func (p *SAMLProvider) refreshLoop(ctx context.Context) {
	for {
		wait := p.timing.refresh
		if p.lastErr.Load() != nil {
			wait = p.timing.retry
		}
		// From the last fetch: one a reload carried over counts.
		wait -= time.Since(time.Unix(0, p.fetched.Load()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := p.refreshMetadata(ctx); err != nil {
			if p.current.Load() != nil {
				p.log.Warn("saml: refreshing IdP metadata failed; keeping the last good copy", "err", err)
			} else {
				p.log.Warn("saml: fetching IdP metadata failed", "err", err)
			}
		}
	}
}

// refreshMetadata fetches metadata_url once and, if it is usable, makes it
// current.
func (p *SAMLProvider) refreshMetadata(ctx context.Context) error {
	md, err := p.fetchMetadata(ctx)
	p.fetched.Store(time.Now().UnixNano())
	if err != nil {
		p.lastErr.Store(&err)
		return fmt.Errorf("saml %s: fetch metadata: %w", p.cfg.ID, err)
	}
	p.setIdPMetadata(md)
	p.lastErr.Store(nil)
	return nil
}

func (p *SAMLProvider) fetchMetadata(ctx context.Context) (*saml.EntityDescriptor, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timing.fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.MetadataURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	// An https metadata_url may redirect; the rule for the URL holds for
	// where the metadata really came from.
	if err := checkMetadataScheme(resp.Request.URL.String()); err != nil {
		return nil, fmt.Errorf("redirected to %s: %w", resp.Request.URL.Redacted(), err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	data, err := readBounded(resp.Body, maxMetadata)
	if err != nil {
		return nil, err
	}
	return parseIdPMetadata(data, p.cfg.EntityID)
}

// parseIdPMetadata finds the IdP entity entityID in an EntityDescriptor or a
// federation's EntitiesDescriptor (crewjam/saml's samlsp, which also carries
// the federation's validUntil down to it) and checks it has what logins need.
func parseIdPMetadata(data []byte, entityID string) (*saml.EntityDescriptor, error) {
	md, err := samlsp.ParseMetadataByEntityID(data, entityID)
	if err != nil {
		// Name the entity the document holds, for the likely typo.
		if other, err2 := samlsp.ParseMetadata(data); err2 == nil {
			return nil, fmt.Errorf("no entity %q in the metadata (found %q): check entity_id", entityID, other.EntityID)
		}
		return nil, err
	}
	if len(md.IDPSSODescriptors) == 0 {
		return nil, fmt.Errorf("entity %q has no IDPSSODescriptor", entityID)
	}
	if until := metadataExpiry(md); !until.IsZero() && until.Before(time.Now()) {
		return nil, fmt.Errorf("metadata expired at %s", until.Format(time.RFC3339))
	}
	hasRedirect, hasCert := false, false
	for _, d := range md.IDPSSODescriptors {
		for _, e := range d.SingleSignOnServices {
			if e.Binding != saml.HTTPRedirectBinding {
				continue
			}
			// crewjam/saml takes an http(s) URL without a host, which a
			// browser reads as one of the host after the slashes.
			if err := checkHTTPURL("Location", e.Location); err != nil {
				return nil, fmt.Errorf("the IdP's SingleSignOnService over HTTP-Redirect: %w", err)
			}
			hasRedirect = true
		}
		for _, k := range d.KeyDescriptors {
			if k.Use == "" || k.Use == "signing" {
				hasCert = hasCert || len(k.KeyInfo.X509Data.X509Certificates) > 0
			}
		}
	}
	if !hasRedirect {
		return nil, errors.New("the IdP offers no SingleSignOnService with the HTTP-Redirect binding")
	}
	if !hasCert {
		return nil, errors.New("the IdP metadata has no signing certificate")
	}
	return md, nil
}

// metadataExpiry is when md stops being relied on (zero: never): the
// earliest validUntil of the entity (its federation's included) and of its
// IDPSSODescriptors, each of which makes crewjam/saml, with
// RejectExpiredIDPMetadata, refuse every response once it has passed.
func metadataExpiry(md *saml.EntityDescriptor) time.Time {
	until := md.ValidUntil
	for _, d := range md.IDPSSODescriptors {
		if v := d.ValidUntil; v != nil && !v.IsZero() && (until.IsZero() || v.Before(until)) {
			until = *v
		}
	}
	return until
}
