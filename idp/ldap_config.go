package idp

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// Placeholders in user_search.filter and group_search.filter. Their values
// are always escaped (ldap.EscapeFilter) before they go into a filter.
const (
	placeholderUsername = "{username}"
	placeholderDN       = "{dn}"
)

// inChainOID is Active Directory's LDAP_MATCHING_RULE_IN_CHAIN: a group
// search with (member:1.2.840.113556.1.4.1941:={dn}) returns nested groups
// too, so portcullis does not walk the nesting itself.
const inChainOID = "1.2.840.113556.1.4.1941"

// ldapMappingFields are the keys attribute_mapping may have for LDAP:
// profile fields named by a directory attribute, and group_name.
var ldapMappingFields = []string{"uid", "username", "email", "first_name", "last_name", "name", "groups", "group_name"}

// Group names as attribute_mapping.group_name chooses them.
const (
	groupNameCN = "cn" // the value of the group's first RDN: "cvat-admins"
	groupNameDN = "dn" // the group's whole DN, as the directory returns it
)

var attributeName = regexp.MustCompile(`^(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)(?:;[A-Za-z0-9-]+)*$`)

func (c *Config) validateLDAP() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}

	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		bad("url", "required (ldap://host[:port] or ldaps://host[:port])")
	case err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "":
		bad("url", "must be ldap://host[:port] or ldaps://host[:port], got %q", RedactURL(c.URL))
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil || u.Fragment != "":
		bad("url", "must be only scheme://host[:port] (put the base DN in user_search.base_dn, the service account in bind_dn and bind_password), got %q", RedactURL(c.URL))
	default:
		tls := u.Scheme == "ldaps" || c.StartTLS
		if u.Scheme == "ldaps" && c.StartTLS {
			bad("start_tls", "not used with ldaps:// (that connection is TLS from the start); use ldap:// with start_tls, or ldaps:// alone")
		}
		if c.InsecureSkipVerify && !isLoopbackHost(u.Hostname()) {
			bad("insecure_skip_verify", "refused outside development: the url host %q is not loopback; give the directory's CA in ca_file instead", u.Hostname())
		}
		if !tls && (c.CAFile != "" || c.InsecureSkipVerify) {
			key := "ca_file"
			if c.CAFile == "" {
				key = "insecure_skip_verify"
			}
			bad(key, "only used with ldaps:// or start_tls: true")
		}
	}
	if c.CAFile != "" {
		if _, _, err := LoadCAFile(c.CAFile); err != nil {
			bad("ca_file", "%v", err)
		}
	}

	switch {
	case c.BindDN == "" && c.BindPassword != "":
		bad("bind_dn", "required with bind_password")
	case c.BindDN != "":
		if _, err := ldap.ParseDN(c.BindDN); err != nil {
			bad("bind_dn", "not a DN: %v", err)
		}
		if c.BindPassword == "" {
			bad("bind_password", "required with bind_dn (or set %s)", c.envName("BIND_PASSWORD"))
		}
	}

	checkDN := func(key, dn string) {
		if dn == "" {
			bad(key, "required")
		} else if _, err := ldap.ParseDN(dn); err != nil {
			bad(key, "not a DN: %v", err)
		}
	}
	checkDN("user_search.base_dn", c.UserSearch.BaseDN)
	errs = append(errs, checkFilter("user_search.filter", c.UserSearch.Filter, true, placeholderUsername)...)
	if c.GroupSearch.BaseDN != "" || c.GroupSearch.Filter != "" {
		checkDN("group_search.base_dn", c.GroupSearch.BaseDN)
		errs = append(errs, checkFilter("group_search.filter", c.GroupSearch.Filter, false, placeholderDN, placeholderUsername)...)
	}

	fields := make([]string, 0, len(c.AttributeMapping))
	for field := range c.AttributeMapping {
		fields = append(fields, field)
	}
	sort.Strings(fields)
	for _, field := range fields {
		key, value := "attribute_mapping."+field, strings.TrimSpace(c.AttributeMapping[field])
		switch {
		case !slices.Contains(ldapMappingFields, field):
			bad(key, "unknown key (want one of %s)", strings.Join(ldapMappingFields, ", "))
		case field == "group_name":
			if value != groupNameCN && value != groupNameDN {
				bad(key, "must be cn (the group's name) or dn (its whole DN), got %q", value)
			}
		case value == "":
			bad(key, "empty attribute name")
		case !attributeName.MatchString(value):
			bad(key, "not an LDAP attribute name: %q", value)
		case isPasswordAttribute(value):
			bad(key, "%s holds the account's password (or its hash): a profile field goes upstream in headers and into the session", value)
		}
	}
	return errs
}

// passwordAttributes hold an account's password or a hash of it, in
// OpenLDAP, 389-ds, FreeIPA, Samba and Active Directory. A directory whose
// ACLs let the service account read them would hand them to whatever
// attribute_mapping names them (a copy-paste mistake, or a test of what the
// directory returns), and so to the upstream. 389 Directory Server's
// passwordHistory (with passwordHistory on) holds the hashes of earlier
// passwords, and an ACI that leaves out userPassword only (389's older
// default, "Enable anonymous access", in template-baseacis.ldif) gave them
// to anyone who asked.
var passwordAttributes = []string{"userPassword", "authPassword", "unicodePwd", "sambaNTPassword", "sambaLMPassword", "ntPwdHistory", "lmPwdHistory", "supplementalCredentials", "userPKCS12", "krbPrincipalKey", "passwordHistory"}

// isPasswordAttribute reports whether the attribute name (options like
// ";binary" aside) is one of passwordAttributes, in any case.
func isPasswordAttribute(name string) bool {
	name, _, _ = strings.Cut(name, ";")
	return slices.ContainsFunc(passwordAttributes, func(p string) bool { return strings.EqualFold(p, name) })
}

// djangoUser is django-auth-ldap's placeholder for the username, which
// filters copied from a Django project (CVAT's LDAP guide) carry.
const djangoUser = "%(user)s"

// checkFilter checks that filter compiles with its placeholders filled in,
// uses only the placeholders allowed, and (when required) the first one.
func checkFilter(key, filter string, required bool, allowed ...string) []error {
	if filter == "" {
		return []error{fmt.Errorf("%s: required, e.g. %s", key, exampleFilter(allowed[0]))}
	}
	var errs []error
	django := ""
	if strings.Contains(filter, djangoUser) {
		django = ": django-auth-ldap's " + djangoUser + " is " + placeholderUsername + " here"
	}
	if required && !strings.Contains(filter, allowed[0]) {
		errs = append(errs, fmt.Errorf("%s: must contain %s, e.g. %s%s", key, allowed[0], exampleFilter(allowed[0]), django))
	}
	if !required && !slices.ContainsFunc(allowed, func(p string) bool { return strings.Contains(filter, p) }) {
		errs = append(errs, fmt.Errorf("%s: must contain %s, e.g. %s%s", key, strings.Join(allowed, " or "), exampleFilter(allowed[0]), django))
	}
	for _, m := range regexp.MustCompile(`\{[a-z_]*\}`).FindAllString(filter, -1) {
		if !slices.Contains(allowed, m) {
			errs = append(errs, fmt.Errorf("%s: unknown placeholder %s (want %s)", key, m, strings.Join(allowed, " or ")))
		}
	}
	// The Django placeholder is said above; its parentheses would make the
	// filter look broken as well.
	filled := strings.ReplaceAll(filter, djangoUser, "x")
	for _, p := range allowed {
		filled = strings.ReplaceAll(filled, p, "x")
	}
	if _, err := ldap.CompileFilter(filled); err != nil {
		errs = append(errs, fmt.Errorf("%s: not a valid LDAP filter: %v", key, err))
	}
	return errs
}

func exampleFilter(placeholder string) string {
	if placeholder == placeholderDN {
		return "(member={dn})"
	}
	return "(uid={username})"
}

// envName is the environment variable that overrides one of this
// provider's secrets (see ApplyEnv).
func (c *Config) envName(secret string) string {
	return "PORTCULLIS_IDP_" + strings.ToUpper(strings.ReplaceAll(c.ID, "-", "_")) + "_" + secret
}

// LoadCAFile reads a PEM bundle of CA certificates that a server's
// certificate must chain to (an LDAP directory's, Redis's, the upstream's),
// and its bytes, so that a reload can tell whether it changed.
func LoadCAFile(path string) (*x509.CertPool, []byte, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, pem, nil
}

// ldapWarnings: plain ldap:// off loopback sends every password a user
// types, and the service account's, in clear (tlsConfig gives none then).
func (c *Config) ldapWarnings() []Warning {
	u, err := url.Parse(c.URL)
	if err != nil || u.Scheme != "ldap" || c.StartTLS || isLoopbackHost(u.Hostname()) {
		return nil
	}
	return []Warning{{"url", "plain ldap:// without start_tls: passwords cross the network unencrypted; use ldaps:// or start_tls: true outside development"}}
}

// isLoopbackHost reports whether host names this machine only: development.
func isLoopbackHost(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
