package idp

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	"github.com/crewjam/saml/xmlenc"
)

// SAMLProvider logs users in at a SAML 2.0 identity provider: SP-initiated
// logins over the HTTP-Redirect binding, answers at the ACS over HTTP-POST,
// and (when allowed) IdP-initiated logins. It satisfies Provider and
// Redirector.
type SAMLProvider struct {
	cfg  Config
	log  *slog.Logger
	http *http.Client

	// base is the service provider without IdP metadata: it makes the SP
	// metadata, and a copy with the current IdP metadata checks responses.
	base   saml.ServiceProvider
	acsURL url.URL

	// current is the service provider with the last good IdP metadata; nil
	// until metadata was loaded once.
	current atomic.Pointer[saml.ServiceProvider]
	// lastErr is why the last metadata fetch failed (for Ready).
	lastErr atomic.Pointer[error]
	// fetched is when the last metadata fetch ended (Unix nanoseconds).
	fetched atomic.Int64

	replay  ReplayStore // where accepted assertions are recorded (saml_replay.go)
	mapping samlMapping
	timing  samlTiming

	// warnTransient logs once that sub comes from a transient NameID.
	warnTransient sync.Once
}

// samlTiming are the metadata fetch intervals; tests shorten them.
type samlTiming struct {
	// fetchTimeout bounds one metadata fetch.
	fetchTimeout time.Duration
	// refresh is how often good metadata is fetched again.
	refresh time.Duration
	// retry is how soon a failed fetch is tried again.
	retry time.Duration
}

var defaultSAMLTiming = samlTiming{fetchTimeout: 10 * time.Second, refresh: time.Hour, retry: 30 * time.Second}

// Limits on what a browser may post to the ACS.
const (
	// maxSAMLResponse bounds the decoded (and, if deflated, inflated) response.
	maxSAMLResponse = 256 << 10
	// maxMetadata bounds fetched IdP metadata (federation files can be large).
	maxMetadata = 16 << 20
)

func newSAML(ctx context.Context, c Config, o Options) (Provider, error) {
	return newSAMLProvider(ctx, c, o, defaultSAMLTiming)
}

func newSAMLProvider(ctx context.Context, c Config, o Options, timing samlTiming) (*SAMLProvider, error) {
	if errs := c.validateSAML(); len(errs) > 0 {
		return nil, fmt.Errorf("saml %s: config: %w", c.ID, errors.Join(errs...))
	}
	if o.Replay == nil {
		return nil, fmt.Errorf("saml %s: options: Replay is required (where accepted assertions are recorded)", c.ID)
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("idp", c.ID)
	client := o.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: timing.fetchTimeout}
	}

	running, _ := o.Running.(*SAMLProvider)
	var (
		key  crypto.Signer
		cert *x509.Certificate
		err  error
	)
	if c.SPCertFile == "" && running != nil && running.cfg.SPCertFile == "" {
		// The key pair generated at the start stays until a restart: an
		// IdP that took the SP metadata's certificate checks requests
		// with it. None is generated to be dropped (an RSA key costs a
		// reload 150 ms of CPU, a second on a loaded machine).
		key, cert = running.base.Key, running.base.Certificate
	} else {
		key, cert, err = loadSPKeyPair(c) // generated without sp_cert_file: samlWarnings
	}
	if err != nil {
		return nil, fmt.Errorf("saml %s: sp key pair: %w", c.ID, err)
	}

	metadataURL, err := url.Parse(o.CallbackURL("saml", c.ID, "metadata"))
	if err != nil {
		return nil, fmt.Errorf("saml %s: metadata url: %w", c.ID, err)
	}
	acsURL, err := url.Parse(o.CallbackURL("saml", c.ID, "acs"))
	if err != nil {
		return nil, fmt.Errorf("saml %s: acs url: %w", c.ID, err)
	}
	sloURL, err := url.Parse(o.CallbackURL("saml", c.ID, "slo"))
	if err != nil {
		return nil, fmt.Errorf("saml %s: slo url: %w", c.ID, err)
	}
	// The SP metadata lists a SingleLogoutService only with single logout.
	var logoutBindings []string
	if c.SingleSignOut {
		logoutBindings = []string{saml.HTTPRedirectBinding, saml.HTTPPostBinding}
	}

	p := &SAMLProvider{
		cfg:    c,
		log:    log,
		http:   client,
		acsURL: *acsURL,
		base: saml.ServiceProvider{
			EntityID:    metadataURL.String(),
			Key:         key,
			Certificate: cert,
			HTTPClient:  client,
			MetadataURL: *metadataURL,
			AcsURL:      *acsURL,
			// LogoutRequests and LogoutResponses must name it as
			// Destination (saml_logout.go).
			SloURL:         *sloURL,
			LogoutBindings: logoutBindings,
			// Let the IdP pick its configured NameID format; asking for
			// "transient" (crewjam's default) would make sub change per login.
			AuthnNameIDFormat: saml.UnspecifiedNameIDFormat,
			SignatureMethod:   signatureMethod(key),
			// A response must answer the login this browser started;
			// Complete allows an unsolicited one for IdP-initiated logins.
			AllowIDPInitiated: false,
			// checkAudience is the audience rule (at least one
			// AudienceRestriction, and every one names us), crewjam's own
			// since v0.6; ours says which restriction fails.
			ValidateAudienceRestriction: func(*saml.Assertion) error { return nil },
			// A condition crewjam does not know makes the assertion
			// Indeterminate, which SAML core says MUST be refused; the
			// IdPs in docs/saml.md send only AudienceRestriction (and
			// Keycloak, on request, OneTimeUse).
			RejectUnknownConditions: true,
			// SHA-1 signatures and digests are refused: every IdP in
			// docs/saml.md signs with SHA-256 by default or on one setting.
			RejectSHA1Signatures: true,
			// An EncryptedAssertion in CBC mode is decrypted only in a
			// Response whose signature verified first, as the saml-core
			// errata (E93) say relying parties SHOULD: decrypting
			// unauthenticated CBC data is a format oracle (Jager and
			// Somorovsky, 2011). inspectResponse holds its own
			// decryption to the same rule.
			RequireSignedResponseForCBC: true,
			// Metadata past its validUntil (its own, or its federation
			// aggregate's) is not relied on, as SAML metadata says; the
			// last good copy kept through failed refreshes expires too.
			RejectExpiredIDPMetadata: true,
			// The SAML bindings allow 80 bytes of RelayState; the proxy's
			// login state is 22 (session.NewState).
			LimitRelayStateLength: true,
		},
		replay:  o.Replay,
		mapping: newSAMLMapping(c.AttributeMapping),
		timing:  timing,
	}

	if c.MetadataURL == "" {
		md, err := staticIdPMetadata(c)
		if err != nil {
			return nil, fmt.Errorf("saml %s: %w", c.ID, err)
		}
		p.setIdPMetadata(md)
		return p, nil
	}

	if running != nil && running.cfg.MetadataURL == c.MetadataURL && running.cfg.EntityID == c.EntityID {
		if sp := running.current.Load(); sp != nil {
			// The same metadata, fetched again on the running one's
			// schedule: a metadata_url that is away now leaves this one
			// as ready as the running one is.
			p.setIdPMetadata(sp.IDPMetadata)
			p.lastErr.Store(running.lastErr.Load())
			p.fetched.Store(running.fetched.Load())
			go p.refreshLoop(ctx)
			return p, nil
		}
	}
	// The first fetch happens now so that a reachable IdP is ready at once;
	// an unreachable one is retried in the background.
	if err := p.refreshMetadata(ctx); err != nil {
		log.Warn("saml: fetching IdP metadata failed; retrying in the background", "err", err)
	}
	go p.refreshLoop(ctx)
	return p, nil
}

// Ready reports whether IdP metadata has been loaded and has not expired.
func (p *SAMLProvider) Ready() error {
	if sp := p.current.Load(); sp != nil {
		if until := metadataExpiry(sp.IDPMetadata); !until.IsZero() && until.Before(time.Now()) {
			return fmt.Errorf("saml %s: metadata: %w: expired at %s", p.cfg.ID, ErrNotReady, until.Format(time.RFC3339))
		}
		return nil
	}
	if errp := p.lastErr.Load(); errp != nil {
		return fmt.Errorf("saml %s: fetch metadata: %w: %v", p.cfg.ID, ErrNotReady, *errp)
	}
	return fmt.Errorf("saml %s: metadata: %w", p.cfg.ID, ErrNotReady)
}

// LoginURL makes a (signed) AuthnRequest for the HTTP-Redirect binding,
// records its ID in f.RequestID and returns the IdP URL carrying it, with
// f.State as RelayState. Expired metadata starts no login: the response
// would be refused.
func (p *SAMLProvider) LoginURL(f *Flow) (string, error) {
	if err := p.Ready(); err != nil {
		return "", err
	}
	sp := p.current.Load()
	ssoURL := sp.GetSSOBindingLocation(saml.HTTPRedirectBinding)
	req, err := sp.MakeAuthenticationRequest(ssoURL, saml.HTTPRedirectBinding, saml.HTTPPostBinding)
	if err != nil {
		return "", fmt.Errorf("saml %s: make AuthnRequest: %w", p.cfg.ID, err)
	}
	u, err := req.Redirect(f.State, sp)
	if err != nil {
		return "", fmt.Errorf("saml %s: encode AuthnRequest: %w", p.cfg.ID, err)
	}
	f.RequestID = req.ID
	return u.String(), nil
}

// Complete checks the SAMLResponse posted to the ACS and returns the user it
// asserts. f is the login this browser started; nil means the IdP started it
// (accepted only with allow_idp_initiated). Errors are for the log: the
// proxy shows the user a short page.
func (p *SAMLProvider) Complete(r *http.Request, f *Flow) (*Profile, *Tokens, error) {
	id := p.cfg.ID
	sp := p.current.Load()
	if sp == nil {
		return nil, nil, p.Ready()
	}
	if r.Method != http.MethodPost {
		return nil, nil, fmt.Errorf("saml %s: read response: method %s, want POST", id, r.Method)
	}
	if r.PostForm == nil {
		// The proxy limits the body too; this keeps the provider safe alone.
		r.Body = http.MaxBytesReader(nil, r.Body, 2*maxSAMLResponse)
	}
	if err := r.ParseForm(); err != nil {
		return nil, nil, fmt.Errorf("saml %s: read response: %w", id, err)
	}

	var requestIDs []string
	if f == nil {
		if !p.cfg.AllowIdPInitiated {
			return nil, nil, fmt.Errorf("saml %s: check flow: %w", id, errIdPInitiated)
		}
		// An unsolicited response has no InResponseTo; with no request IDs
		// to match, crewjam refuses one that has, since it was meant for a
		// login some browser started.
		unsolicited := *sp
		unsolicited.AllowIDPInitiated = true
		sp = &unsolicited
	} else {
		if f.IdP != "" && f.IdP != id {
			return nil, nil, fmt.Errorf("saml %s: check flow: login was started at %q", id, f.IdP)
		}
		if f.RequestID == "" {
			return nil, nil, fmt.Errorf("saml %s: check flow: no AuthnRequest ID in the login state", id)
		}
		if r.PostForm.Get("RelayState") != f.State {
			return nil, nil, fmt.Errorf("saml %s: check flow: RelayState does not match the login state", id)
		}
		requestIDs = []string{f.RequestID}
	}

	raw, err := decodeSAMLResponse(r.PostForm.Get("SAMLResponse"))
	if err != nil {
		return nil, nil, fmt.Errorf("saml %s: decode response: %w", id, err)
	}
	found, err := inspectResponse(raw, p.decryptionKey(), func(el *etree.Element) (*etree.Element, error) { return verifiedElement(sp, el) })
	if hint := p.encryptionHint(err); hint != "" {
		// What sent it is mostly an IdP set to encrypt; a user encrypting
		// a forgery learns nothing from the hint: nothing was decrypted.
		return nil, nil, setupError("saml_encrypted", hint, fmt.Errorf("saml %s: inspect response: %w", id, err))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("saml %s: inspect response: %w", id, err)
	}
	assertion, err := parseAssertion(sp, raw, requestIDs, p.acsURL)
	if err != nil {
		err = fmt.Errorf("saml %s: verify response: %w", id, err)
		if found.encrypted && !signed(found.response) && !genuineAssertion(sp, found.assertion) {
			// A decrypted assertion that nothing vouches for gets the one
			// plain refusal, whatever else is wrong with it: a set-up
			// error for some would tell whoever sent it something of a
			// plaintext it may not know.
			return nil, nil, err
		}
		return nil, nil, p.samlDiagnose(sp, found.response, found.assertion, err)
	}
	if found.assertion == nil {
		// crewjam returned an assertion that inspectResponse did not see
		// (or left encrypted): refused rather than left unchecked.
		return nil, nil, fmt.Errorf("saml %s: verify response: crewjam/saml found an assertion that inspectResponse did not check", id)
	}
	if err := checkAudience(found.assertion, sp.EntityID); err != nil {
		return nil, nil, p.samlDiagnose(sp, found.response, found.assertion, fmt.Errorf("saml %s: verify response: %w", id, err))
	}
	end := sessionEnd(assertion)
	if !end.IsZero() && end.Sub(time.Now()) < minSAMLSession {
		// The IdP says the session this assertion starts has ended, even
		// read with the clock skew: one made from it would be refused at
		// once, and the browser sent back to the IdP, which answers the
		// same way.
		return nil, nil, fmt.Errorf("saml %s: verify response: the assertion's SessionNotOnOrAfter %s has passed, by more than the %s of clock skew allowed",
			id, end.Add(-saml.MaxClockSkew).UTC().Format(time.RFC3339), saml.MaxClockSkew)
	}
	if err := p.useAssertion(r.Context(), assertion.ID, replayExpiry(assertion)); err != nil {
		return nil, nil, fmt.Errorf("saml %s: replay check: %w", id, err)
	}
	prof, err := p.mapping.profile(id, assertion)
	if err != nil {
		return nil, nil, fmt.Errorf("saml %s: map attributes: %w", id, err)
	}
	if nid := assertion.Subject.NameID; nid != nil && nid.Format == string(saml.TransientNameIDFormat) && !p.mapping.explicit["uid"] {
		p.warnTransient.Do(func() {
			p.log.Warn("saml: the IdP sends a transient NameID, so sub changes on every login; set attribute_mapping.uid or a persistent NameID format at the IdP")
		})
	}
	tokens := p.logoutTokens(assertion)
	if !end.IsZero() {
		if tokens == nil {
			tokens = &Tokens{}
		}
		tokens.SessionEnd = end
	}
	return prof, tokens, nil
}

// minSAMLSession is the least of a session that an assertion's
// SessionNotOnOrAfter may leave: a session's end is kept to the second,
// and its cookie's Max-Age in whole seconds, so one that ends sooner
// cannot be saved.
const minSAMLSession = 2 * time.Second

// sessionEnd is the latest a session made from the assertion may last: the
// earliest SessionNotOnOrAfter of its AuthnStatements, "an upper bound on
// sessions with the subject derived from the enclosing assertion" (SAML
// core 2.7.2), read with the clock skew that its other times are allowed
// (crewjam's MaxClockSkew), as Shibboleth's SP adds its clockSkew to it;
// zero when none has one. Without the skew an IdP whose clock is behind
// this one, or whose session ends just as the proxy's did (the browser's
// cookie goes up to a second early), answers the browser sent back to it
// with its session still, and so with the same bound, which has passed
// here: every try fails until the IdP's session ends.
func sessionEnd(a *saml.Assertion) time.Time {
	var end time.Time
	for _, st := range a.AuthnStatements {
		if st.SessionNotOnOrAfter != nil && !st.SessionNotOnOrAfter.IsZero() && (end.IsZero() || st.SessionNotOnOrAfter.Before(end)) {
			end = *st.SessionNotOnOrAfter
		}
	}
	if end.IsZero() {
		return end
	}
	return end.Add(saml.MaxClockSkew)
}

// decryptionKey is the key that decrypts EncryptedAssertions: sp_key_file's
// when it is RSA. A generated key, another after every restart, is none:
// no IdP can have been given its certificate.
func (p *SAMLProvider) decryptionKey() *rsa.PrivateKey {
	if p.cfg.SPCertFile == "" {
		return nil
	}
	key, _ := p.base.Key.(*rsa.PrivateKey)
	return key
}

// encryptionHint says what to change when err, inspectResponse's, is an
// EncryptedAssertion this entry cannot decrypt; "" for any other err.
func (p *SAMLProvider) encryptionHint(err error) string {
	var alg xmlenc.ErrAlgorithmNotImplemented
	var cbc cbcUnsignedError
	switch {
	case errors.Is(err, errEncryptedAssertion) && p.cfg.SPCertFile == "":
		return "the IdP encrypts its assertions: configure sp_cert_file and sp_key_file (an RSA pair, the same on every replica) " +
			"and give the IdP that certificate to encrypt to, or turn assertion encryption off at the IdP"
	case errors.Is(err, errEncryptedAssertion):
		return "the IdP encrypts its assertions, and sp_key_file holds no RSA key, which decryption needs: " +
			"use an RSA pair for sp_cert_file and sp_key_file, or turn assertion encryption off at the IdP"
	case errors.As(err, &cbc):
		return fmt.Sprintf("the IdP encrypts the assertion with %s, a CBC cipher, without signing the response, and CBC data is decrypted only in a signed response "+
			"(decrypting it unauthenticated lets a sender learn the plaintext): sign the response too (ADFS: Set-AdfsRelyingPartyTrust -SamlResponseSignature MessageAndAssertion; "+
			"Entra ID: signing option \"Sign SAML response and assertion\"; Keycloak: \"Sign documents\"), or encrypt with AES-GCM, or turn assertion encryption off",
			algorithmName(cbc.algorithm))
	case errors.As(err, &alg) && strings.HasSuffix(string(alg), "#rsa-1_5"):
		return "the IdP encrypts the assertion's key with RSA 1.5 (rsa-1_5), which is refused (it is open to padding-oracle attacks): " +
			"set its key encryption (key transport) algorithm to RSA-OAEP"
	case errors.As(err, &alg):
		return fmt.Sprintf("the IdP encrypts the assertion's key with %q, which is not supported: set it to RSA-OAEP", truncate(string(alg), 128))
	case errors.As(err, new(encryptionError)):
		return "the IdP encrypted the assertion to a certificate whose key is not sp_key_file's: give it sp_cert_file's certificate (SHA-256 " +
			fingerprint(base64.StdEncoding.EncodeToString(p.base.Certificate.Raw)) + ") as this application's encryption certificate, or turn assertion encryption off"
	}
	return ""
}

// algorithmName is the fragment of an XML Encryption algorithm URI, as IdP
// consoles name it (aes128-cbc).
func algorithmName(uri string) string {
	return uri[strings.LastIndex(uri, "#")+1:]
}

var errIdPInitiated = errors.New("IdP-initiated login refused (allow_idp_initiated is false)")

// ErrAnswersRequest is in the error of a SAML response refused because its
// InResponseTo names a request that is not this login's: taken as
// IdP-initiated, it is the answer to a login some browser started here.
var ErrAnswersRequest = saml.ErrRequestIDMismatch

// Metadata is the service provider metadata XML to register at the IdP
// (served at {auth_prefix}/saml/{id}/metadata).
func (p *SAMLProvider) Metadata() ([]byte, error) {
	md := p.base.Metadata()
	// No validUntil (crewjam puts one 48h ahead): operators upload a saved
	// copy to IdPs that stop trusting an SP whose metadata has expired
	// (SimpleSAMLphp's converter keeps it as the entry's 'expire',
	// Shibboleth's IdP drops expired metadata), and nothing in it changes
	// unless the configuration does; mod_auth_mellon publishes none either.
	md.ValidUntil, md.CacheDuration = time.Time{}, 0
	for i := range md.SPSSODescriptors {
		d := &md.SPSSODescriptors[i]
		d.ValidUntil, d.CacheDuration = nil, 0
		// Advertise no encryption key: an IdP that reads one (ADFS,
		// Shibboleth) would start encrypting by itself, to a key generated
		// at start without sp_cert_file; an operator who wants encryption
		// gives the IdP sp_cert_file's certificate (decryptionKey).
		var keys []saml.KeyDescriptor
		for _, k := range d.KeyDescriptors {
			if k.Use == "signing" {
				keys = append(keys, k)
			}
		}
		d.KeyDescriptors = keys
		// Only HTTP-POST is served at the ACS; artifacts are not resolved.
		var acs []saml.IndexedEndpoint
		for _, e := range d.AssertionConsumerServices {
			if e.Binding == saml.HTTPPostBinding {
				acs = append(acs, e)
			}
		}
		d.AssertionConsumerServices = acs
	}
	out, err := xml.MarshalIndent(md, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("saml %s: encode sp metadata: %w", p.cfg.ID, err)
	}
	return append([]byte(xml.Header), out...), nil
}

// setIdPMetadata makes md the metadata that logins use from now on.
func (p *SAMLProvider) setIdPMetadata(md *saml.EntityDescriptor) {
	md, leftOut := withUsableLogoutServices(md)
	for _, err := range leftOut {
		p.log.Warn("saml: the IdP metadata's SingleLogoutService is not used: its URL is not an absolute http(s) URL; no single logout over its binding", "err", err)
	}
	sp := p.base
	sp.IDPMetadata = md
	if p.cfg.SingleSignOut && sp.GetSLOBindingLocation(saml.HTTPRedirectBinding) == "" {
		p.log.Warn("saml: single_sign_out is on, but the IdP metadata has no SingleLogoutService with the HTTP-Redirect binding; /logout signs users out here only")
	}
	p.current.Store(&sp)
}

// samlMappingFields are the profile fields attribute_mapping may name.
var samlMappingFields = []string{"uid", "username", "email", "first_name", "last_name", "email_verified", "groups", "name"}

func (c *Config) validateSAML() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.EntityID == "" {
		bad("entity_id", "required (the IdP's entity id, the issuer of its assertions)")
	}
	switch {
	case c.MetadataURL != "":
		if err := checkHTTPURL("metadata_url", c.MetadataURL); err != nil {
			errs = append(errs, err)
		} else if err := checkMetadataScheme(c.MetadataURL); err != nil {
			bad("metadata_url", "%v", err)
		}
		if c.X509Cert != "" {
			bad("x509_cert", "not used with metadata_url: give either metadata_url or x509_cert and sso_url")
		}
		if c.SSOURL != "" {
			bad("sso_url", "not used with metadata_url: give either metadata_url or x509_cert and sso_url")
		}
		if c.SLOURL != "" {
			bad("slo_url", "not used with metadata_url: the metadata's SingleLogoutService is used")
		}
	case c.X509Cert == "" && c.SSOURL == "":
		bad("metadata_url", "required unless x509_cert and sso_url are given")
	default:
		if c.X509Cert == "" {
			bad("x509_cert", "required with sso_url (or give metadata_url instead)")
		} else if _, err := parseCertificate(c.X509Cert); err != nil {
			bad("x509_cert", "%v", err)
		}
		if c.SSOURL == "" {
			bad("sso_url", "required with x509_cert (or give metadata_url instead)")
		} else if err := checkHTTPURL("sso_url", c.SSOURL); err != nil {
			errs = append(errs, err)
		}
		switch {
		case c.SLOURL != "":
			if err := checkHTTPURL("slo_url", c.SLOURL); err != nil {
				errs = append(errs, err)
			}
			if !c.SingleSignOut {
				bad("slo_url", "used only with single_sign_out: true")
			}
		case c.SingleSignOut:
			bad("slo_url", "required with single_sign_out and x509_cert (the IdP's SingleLogoutService, HTTP-Redirect binding), or give metadata_url instead")
		}
	}
	switch {
	case c.SPCertFile != "" && c.SPKeyFile == "":
		bad("sp_key_file", "required with sp_cert_file")
	case c.SPCertFile == "" && c.SPKeyFile != "":
		bad("sp_cert_file", "required with sp_key_file")
	case c.SPCertFile != "":
		if _, _, err := loadSPKeyFiles(c.SPCertFile, c.SPKeyFile); err != nil {
			bad("sp_cert_file", "%v", err)
		}
	}
	fields := make([]string, 0, len(c.AttributeMapping))
	for field := range c.AttributeMapping {
		fields = append(fields, field)
	}
	sort.Strings(fields)
	for _, field := range fields {
		key := "attribute_mapping." + field
		known := false
		for _, f := range samlMappingFields {
			known = known || f == field
		}
		if !known {
			bad(key, "unknown profile field (want one of %s)", strings.Join(samlMappingFields, ", "))
		}
		if strings.TrimSpace(c.AttributeMapping[field]) == "" {
			bad(key, "empty attribute name")
		}
	}
	return errs
}

// checkMetadataScheme refuses metadata over plain http from a host that is
// not loopback: the metadata is the trust anchor (it carries the IdP's
// signing certificate) and is fetched again every hour, so anyone on the
// path could swap in their own certificate.
func checkMetadataScheme(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		return fmt.Errorf("plain http refused outside development: the host %q is not loopback, and the metadata carries the IdP's signing certificate; use https, or give x509_cert and sso_url instead", u.Hostname())
	}
	return nil
}

// checkHTTPURL is checkURL restricted to http and https.
func checkHTTPURL(key, raw string) error {
	if err := checkURL(key, raw, true); err != nil {
		return err
	}
	if u, _ := url.Parse(raw); u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%s: must be an http or https URL: %q", key, RedactURL(raw))
	}
	return nil
}
