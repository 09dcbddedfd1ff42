package idp

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// AdmissionError is a login that the IdP accepted and this entry's admission
// rules refuse. Reason is written for the user and safe to show on the 403
// page (it names nothing the configuration keeps secret); Rule is the
// configuration key that refused, for logs and metrics. Hint, when set, is
// for the operator alone: what to change at the IdP or in the entry.
type AdmissionError struct {
	Rule   string
	Reason string
	Hint   string
}

func (e *AdmissionError) Error() string {
	return fmt.Sprintf("refused by %s: %s", e.Rule, e.Reason)
}

// Admit applies the entry's admission rules to a profile its IdP produced:
// allowed_email_domains, require_verified_email, allowed_groups, and for
// GitHub allowed_organizations and allowed_teams. Every rule configured must
// pass; it returns nil or an *AdmissionError. The proxy calls it right after
// Complete (or Authenticate), for every protocol, and keeps the profile it
// admitted: with trust_email, Admit first marks the email verified.
//
//   - allowed_email_domains: the part after the last "@" of the email, compared
//     with each listed domain exactly, ignoring the case of ASCII letters only
//     (SameDomain): subdomains do not count (list sub.example.com too to
//     admit it), and a domain with any other character never matches. The
//     part before it must be a local part: not empty, and without another
//     "@" (a@evil.example@example.com is refused, whatever its domain). The
//     email must also be verified (email_verified): a domain says who may
//     sign in only if the IdP vouches that the address is the user's. No
//     email is refused.
//   - always, unless trust_email: an email that the IdP says in so many words
//     is not verified (saysUnverified) refuses the login, as oauth2-proxy
//     does: the address would go upstream (CVAT's X-Email) as the user's
//     name. An IdP that says nothing either way is believed.
//   - require_verified_email: the email must be present and email_verified
//     true (the rule of CVAT's BasicAuthenticationEx).
//   - allowed_groups: the user is in at least one listed group (exact,
//     case-sensitive names, as the IdP sends them).
//   - allowed_organizations / allowed_teams (preset github): the user is in at
//     least one listed organisation or "org/team-slug"; either list admits.
//     GitHub names are compared ignoring the case of ASCII letters.
func (c *Config) Admit(p *Profile) error {
	if c.TrustEmail && p.Email != "" {
		p.EmailVerified = true
	} else if p.EmailVerified && c.Protocol != LDAP && !c.saidVerified(p) {
		// A session's profile, admitted at its login under trust_email
		// by a configuration since reloaded without it: verified as a
		// login now would have it, by the IdP's word only (at a login,
		// the provider read the same claim the same way).
		p.EmailVerified = false
	}
	if c.saysUnverified(p) {
		return c.unverified("email_verified", p)
	}
	if len(c.AllowedEmailDomains) > 0 {
		local, domain, ok := cutLast(p.Email, "@")
		if !ok || domain == "" {
			return &AdmissionError{Rule: "allowed_email_domains",
				Reason: "Your account has no email address, and only some email domains may sign in here."}
		}
		if !slices.ContainsFunc(c.AllowedEmailDomains, func(d string) bool { return SameDomain(d, domain) }) {
			return &AdmissionError{Rule: "allowed_email_domains",
				Reason: fmt.Sprintf("Email addresses at %s are not allowed to sign in here.", lowerASCII(domain))}
		}
		if local == "" || strings.Contains(local, "@") {
			// a@evil.example@company.com is at no one domain: mail
			// software reads it as one at either (source routes, the
			// % hack), so the mail that verified it may have gone to
			// evil.example (GHSA-c5c4-8r6x-56w3).
			return &AdmissionError{Rule: "allowed_email_domains",
				Reason: "The email address of your account is not one email address at one domain (it has more than one @, or nothing before it), so its domain cannot be checked here."}
		}
		if !p.EmailVerified {
			return c.unverified("allowed_email_domains", p)
		}
	}
	if c.RequireVerifiedEmail && (p.Email == "" || !p.EmailVerified) {
		return c.unverified("require_verified_email", p)
	}
	if len(c.AllowedGroups) > 0 && !slices.ContainsFunc(p.Groups, func(g string) bool { return slices.Contains(c.AllowedGroups, g) }) {
		return &AdmissionError{Rule: "allowed_groups",
			Reason: "You are not a member of a group that may sign in here."}
	}
	if len(c.AllowedOrganizations)+len(c.AllowedTeams) > 0 {
		allowed := append(slices.Clone(c.AllowedOrganizations), c.AllowedTeams...)
		member := slices.ContainsFunc(p.Groups, func(g string) bool {
			return slices.ContainsFunc(allowed, func(a string) bool { return equalFoldASCII(a, g) })
		})
		if !member {
			rule := "allowed_organizations"
			if len(c.AllowedOrganizations) == 0 {
				rule = "allowed_teams"
			}
			return &AdmissionError{Rule: rule,
				Reason: fmt.Sprintf("You are not a member of an organization or team on %s that may sign in here. If you are, an organization owner may have to approve this application first; for an organization that uses single sign-on, sign in to it on %s first, then here again.", c.DisplayName(), c.DisplayName())}
		}
	}
	return nil
}

// saysUnverified reports whether p's IdP said that p's email is not
// verified: p has an email, not verified, and the claim (or SAML attribute)
// that email_verified is read from is there. LDAP never says so.
func (c *Config) saysUnverified(p *Profile) bool {
	if p.Email == "" || p.EmailVerified {
		return false
	}
	_, said := c.verifiedClaim(p)
	return said
}

// saidVerified reports whether p's claims hold the IdP's word that the
// email is verified, read as a login reads it: a claim that is true
// (claimBool), a SAML attribute whose first value strconv.ParseBool reads
// as true.
func (c *Config) saidVerified(p *Profile) bool {
	v, said := c.verifiedClaim(p) // the claim its preset names (verifiedFrom)
	if !said {
		return false
	}
	if c.Protocol != SAML {
		return claimBool(v)
	}
	switch list := v.(type) {
	case []any:
		if len(list) > 0 {
			v = list[0]
		}
	case []string:
		if len(list) > 0 {
			v = list[0]
		}
	}
	text, _ := v.(string)
	verified, _ := strconv.ParseBool(strings.ToLower(strings.TrimSpace(text)))
	return verified
}

// verifiedClaim is the claim (or SAML attribute) that p's email_verified
// is read from, and whether it is there. LDAP has none.
func (c *Config) verifiedClaim(p *Profile) (any, bool) {
	if c.Protocol == LDAP {
		return nil, false
	}
	return lookupClaim(p.Claims, c.verifiedFrom())
}

// verifiedFrom names the claim (or SAML attribute) that email_verified is
// read from; "" for a SAML entry that maps none.
func (c *Config) verifiedFrom() string {
	if c.Protocol == SAML {
		return strings.TrimSpace(c.AttributeMapping["email_verified"]) // as newSAMLMapping reads it
	}
	// The proxy keeps the entry as configured; the provider read the
	// claim its preset names (azure: xms_edov), and so must admission:
	// read as email_verified, Entra ID's xms_edov: false went unseen.
	if resolved, err := c.WithPreset(); err == nil {
		return claimMapping(resolved.Claims)["email_verified"]
	}
	return claimMapping(c.Claims)["email_verified"]
}

// unverified is rule's refusal of p, whose email is not verified: it tells
// the user what to do. When the IdP did not say either way (LemonLDAP::NG
// and ADFS send no email_verified unless told to), there is nothing for the
// user to verify: the reason says the IdP did not say, and the hint tells
// the operator which claim to have it send, or trust_email.
func (c *Config) unverified(rule string, p *Profile) *AdmissionError {
	if reason := c.azureUnverifiedReason(p); reason != "" {
		return &AdmissionError{Rule: rule, Reason: reason}
	}
	if _, said := c.verifiedClaim(p); !said && p.Email != "" && c.Protocol != LDAP {
		hint := fmt.Sprintf("the IdP sent no %q claim, so no address it sends counts as verified: have it send the claim "+
			"(true for a verified address) to this client", c.verifiedFrom())
		if c.Protocol == SAML {
			hint = fmt.Sprintf("the IdP sent no %q attribute, so no address it sends counts as verified: have it send one "+
				"(true for a verified address)", c.verifiedFrom())
			if c.verifiedFrom() == "" {
				hint = "no address a SAML IdP sends counts as verified unless attribute_mapping.email_verified names an attribute it sends"
			}
		}
		return &AdmissionError{Rule: rule,
			Reason: fmt.Sprintf("%s did not say whether your email address is verified, which signing in here requires. Ask the administrator of this application.", c.DisplayName()),
			Hint:   hint + ", or set trust_email: true if only the IdP's administrators set its users' addresses"}
	}
	return &AdmissionError{Rule: rule,
		Reason: fmt.Sprintf("Your email address is not verified at %s. Verify it there, then sign in again.", c.DisplayName())}
}

// SameDomain reports whether two domain names are the same: equal byte for
// byte but for the case of ASCII letters. Any other byte must be equal and
// ASCII, so a name with a non-ASCII character never matches: Unicode case
// folding (strings.EqualFold) would make "\u212Aompany.com" (Kelvin sign)
// the same as "kompany.com" and "\u017F\u017Fo.com" (long s) the same as
// "sso.com", names that are not the ones listed. Internationalized domains
// are compared in their ASCII (punycode) form.
func SameDomain(a, b string) bool {
	return equalFoldASCII(a, b)
}

// equalFoldASCII is strings.EqualFold for ASCII only: any byte outside
// ASCII makes the strings different.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x >= 0x80 || y >= 0x80 || lowerByte(x) != lowerByte(y) {
			return false
		}
	}
	return true
}

func lowerByte(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}

// lowerASCII lowers the ASCII letters of s and leaves every other byte as
// it is (strings.ToLower would turn the Kelvin sign into "k").
func lowerASCII(s string) string {
	b := []byte(s)
	for i := range b {
		b[i] = lowerByte(b[i])
	}
	return string(b)
}

func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// Names are checked by a pattern and lengths: counted repetitions such as
// {0,61} compile to programs of hundreds of instructions that stay in the
// heap, where every garbage collection scans them.
var (
	emailDomain    = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?\.)+[a-zA-Z]{2,}$`) // labels of at most 63 bytes
	githubOrgName  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]*$`)                                // at most 39 bytes
	githubTeamName = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9-]*)/[A-Za-z0-9_.-]+$`)              // an organization, then a slug
)

// maxGitHubLogin is the length of the longest GitHub login.
const maxGitHubLogin = 39

// IsDomain reports whether d is a domain name as email addresses have it
// (example.com: no @, no wildcard, no trailing dot), the form that
// allowed_email_domains and email_domain must take to match any address.
func IsDomain(d string) bool {
	if !emailDomain.MatchString(d) {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if len(label) > 63 {
			return false
		}
	}
	return true
}

func isGitHubOrg(o string) bool {
	return githubOrgName.MatchString(o) && len(o) <= maxGitHubLogin
}

func isGitHubTeam(t string) bool {
	m := githubTeamName.FindStringSubmatch(t)
	return m != nil && len(m[1]) <= maxGitHubLogin
}

// validateAdmission checks the admission keys.
func (c *Config) validateAdmission() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	for i, d := range c.AllowedEmailDomains {
		key := fmt.Sprintf("allowed_email_domains[%d]", i)
		switch {
		case strings.HasPrefix(d, "*.") || strings.HasPrefix(d, "."):
			bad(key, "wildcards are not supported; list each domain, subdomains included (got %q)", d)
		case strings.Contains(d, "@"):
			bad(key, "a domain, not an email address (got %q)", d)
		case !IsDomain(d):
			bad(key, "not a domain name like example.com (got %q)", d)
		}
	}
	for i, g := range c.AllowedGroups {
		if g == "" {
			bad(fmt.Sprintf("allowed_groups[%d]", i), "empty group name")
		}
	}
	if len(c.AllowedOrganizations)+len(c.AllowedTeams) > 0 && c.Preset != PresetGitHub {
		key := "allowed_organizations"
		if len(c.AllowedOrganizations) == 0 {
			key = "allowed_teams"
		}
		bad(key, "only for preset github (use allowed_groups with other providers)")
	}
	for i, o := range c.AllowedOrganizations {
		if !isGitHubOrg(o) {
			bad(fmt.Sprintf("allowed_organizations[%d]", i), "not a GitHub organization login (got %q)", o)
		}
	}
	for i, t := range c.AllowedTeams {
		if !isGitHubTeam(t) {
			bad(fmt.Sprintf("allowed_teams[%d]", i), `must be "org/team-slug" (got %q)`, t)
		}
	}
	_, samlVerified := c.AttributeMapping["email_verified"]
	if c.Protocol == SAML && !samlVerified && !c.TrustEmail {
		// Nothing else makes a SAML user's email verified: these would
		// refuse everyone.
		const never = "admits no one: a SAML user's email counts as verified only with attribute_mapping.email_verified (an attribute the IdP sends) or trust_email: true"
		if len(c.AllowedEmailDomains) > 0 {
			bad("allowed_email_domains", never)
		}
		if c.RequireVerifiedEmail {
			bad("require_verified_email", never)
		}
	}
	if c.TrustEmail && c.Protocol == LDAP {
		bad("trust_email", "not for LDAP: an address from the directory always counts as verified")
	}
	return errs
}
