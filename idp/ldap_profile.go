package idp

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// ldapDefaultAttributes are the attributes tried, in order, for a profile
// field that attribute_mapping does not name: OpenLDAP and FreeIPA names
// first, then Active Directory's. uid falls back to the entry's DN.
var ldapDefaultAttributes = map[string][]string{
	"uid":        {"entryUUID", "ipaUniqueID", "objectGUID"},
	"username":   {"uid", "sAMAccountName"},
	"email":      {"mail"},
	"first_name": {"givenName"},
	"last_name":  {"sn"},
	"name":       {"displayName", "cn"},
	"groups":     {"memberOf"},
}

// ldapMapping turns a user entry and its groups into a Profile per
// attribute_mapping.
type ldapMapping struct {
	fields    map[string][]string
	groupName string // groupNameCN or groupNameDN
}

func newLDAPMapping(configured map[string]string) ldapMapping {
	m := ldapMapping{fields: map[string][]string{}, groupName: groupNameCN}
	for field, names := range ldapDefaultAttributes {
		m.fields[field] = names
	}
	for field, name := range configured {
		name = strings.TrimSpace(name)
		if field == "group_name" {
			m.groupName = name
			continue
		}
		m.fields[field] = []string{name}
	}
	return m
}

// attributes are what the user search asks for.
func (m ldapMapping) attributes() []string {
	var out []string
	for _, names := range m.fields {
		for _, n := range names {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out
}

// first is the first value of the first attribute present for field.
func (m ldapMapping) first(e *ldap.Entry, field string) string {
	for _, name := range m.fields[field] {
		if strings.EqualFold(name, "objectGUID") {
			if raw := e.GetEqualFoldRawAttributeValue(name); len(raw) == 16 {
				return formatGUID(raw)
			}
			continue
		}
		if v := strings.TrimSpace(e.GetEqualFoldAttributeValue(name)); v != "" {
			return v
		}
	}
	return ""
}

// memberOf is the group DNs listed in the user entry itself, at most
// maxGroups of them, and why the list is incomplete ("" when it is not).
func (m ldapMapping) memberOf(e *ldap.Entry) ([]string, string) {
	for _, name := range m.fields["groups"] {
		v, partial := attributeValues(e, name)
		switch {
		case len(v) > maxGroups:
			return v[:maxGroups], groupsCapReason
		case partial:
			return v, "the directory sent " + name + " in ranges (Active Directory: more values than its MaxValRange); only the first is read"
		case len(v) > 0:
			return v, ""
		}
	}
	return nil, ""
}

// attributeValues is the values of attribute name in e. Active Directory
// answers an attribute with more values than its MaxValRange policy (1500
// by default) as "name;range=0-1499" with the first values, leaving name
// itself out; partial says the range holds only some (its end is not *).
func attributeValues(e *ldap.Entry, name string) (values []string, partial bool) {
	if v := e.GetEqualFoldAttributeValues(name); len(v) > 0 {
		return v, false
	}
	for _, a := range e.Attributes {
		base, high, ok := valueRange(a.Name)
		if ok && strings.EqualFold(base, name) {
			return a.Values, high != "*"
		}
	}
	return nil, false
}

// valueRange splits an attribute description with Active Directory's range
// option ("memberOf;range=0-1499") into the attribute's name and the
// range's end ("1499", or "*" for the last values).
func valueRange(description string) (name, high string, ok bool) {
	name, options, found := strings.Cut(description, ";")
	if !found {
		return description, "", false
	}
	for _, opt := range strings.Split(options, ";") {
		if len(opt) > len("range=") && strings.EqualFold(opt[:len("range=")], "range=") {
			_, high, ok = strings.Cut(opt[len("range="):], "-")
			return name, high, ok
		}
	}
	return description, "", false
}

// LDAPProfile builds the profile c's LDAP provider would make at a login
// from the user entry dn with attrs, its attributes, reading its group DNs
// from the groups attribute (memberOf) as a login does without
// group_search: what `portcullis explain --claims` shows for an LDAP entry.
// Of attrs it reads only what a login asks the directory for (attributes):
// an entry exported whole has more, which no session's claims hold.
// c has its preset applied.
func LDAPProfile(c Config, dn string, attrs map[string][]string) *Profile {
	m := newLDAPMapping(c.AttributeMapping)
	e := ldap.NewEntry(dn, attrs)
	asked := m.attributes()
	e.Attributes = slices.DeleteFunc(e.Attributes, func(a *ldap.EntryAttribute) bool {
		name, _, _ := valueRange(a.Name) // AD answers memberOf as memberOf;range=0-1499
		return !slices.ContainsFunc(asked, func(n string) bool { return strings.EqualFold(n, name) })
	})
	groupDNs, _ := m.memberOf(e)
	return m.profile(c.ID, e, "", groupDNs)
}

// profile builds the user's profile. typed is the username as the user
// typed it, the username of last resort.
func (m ldapMapping) profile(idpID string, e *ldap.Entry, typed string, groupDNs []string) *Profile {
	p := &Profile{
		IdP:       idpID,
		Sub:       m.first(e, "uid"),
		Email:     m.first(e, "email"),
		Username:  m.username(e, typed),
		FirstName: m.first(e, "first_name"),
		LastName:  m.first(e, "last_name"),
		Name:      m.first(e, "name"),
		Claims:    map[string]any{"dn": e.DN},
	}
	// The directory is the authority on its own entries: the address it
	// holds counts as verified (docs/ldap.md says when not to rely on that).
	p.EmailVerified = p.Email != ""
	if p.Sub == "" {
		// No stable id attribute: the DN is unique, though it changes when
		// the entry is renamed or moved.
		p.Sub = e.DN
	}
	if p.Name == "" {
		p.Name = strings.TrimSpace(p.FirstName + " " + p.LastName)
	}
	for _, a := range e.Attributes {
		if strings.EqualFold(a.Name, "objectGUID") || isPasswordAttribute(a.Name) || len(a.Values) == 0 {
			continue
		}
		name, values := a.Name, a.Values
		if base, _, ranged := valueRange(name); ranged {
			name = base // AD's memberOf;range=0-1499 is claims.memberOf
		}
		if slices.ContainsFunc(m.fields["groups"], func(g string) bool { return strings.EqualFold(g, name) }) {
			// The groups attribute is as long as the group list may be, so
			// that the session still fits a cookie.
			values = values[:min(len(values), maxGroups)]
		}
		if len(values) == 1 {
			p.Claims[name] = values[0]
		} else {
			p.Claims[name] = slices.Clone(values)
		}
	}
	p.Groups = m.groupNames(groupDNs)
	return p
}

// username is the user's username: the entry's attribute_mapping.username
// (uid, sAMAccountName), else typed, what the user typed.
func (m ldapMapping) username(e *ldap.Entry, typed string) string {
	if u := m.first(e, "username"); u != "" {
		return u
	}
	return strings.TrimSpace(typed)
}

// groupNames names groups per attribute_mapping.group_name, without
// duplicates, in the order found.
func (m ldapMapping) groupNames(dns []string) []string {
	var out []string
	for _, dn := range dns {
		name := dn
		if m.groupName == groupNameCN {
			name = rdnValue(dn)
		}
		if name != "" && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// rdnValue is the value of a DN's first RDN ("cvat-admins" for
// cn=cvat-admins,ou=groups,dc=example,dc=com), or "" when dn does not parse.
func rdnValue(dn string) string {
	parsed, err := ldap.ParseDN(dn)
	if err != nil || len(parsed.RDNs) == 0 || len(parsed.RDNs[0].Attributes) == 0 {
		return ""
	}
	return parsed.RDNs[0].Attributes[0].Value
}

// formatGUID writes an Active Directory objectGUID the way AD tools show
// it: the first three groups are little-endian.
func formatGUID(b []byte) string {
	le := func(s []byte) string {
		r := slices.Clone(s)
		slices.Reverse(r)
		return hex.EncodeToString(r)
	}
	return fmt.Sprintf("%s-%s-%s-%s-%s", le(b[0:4]), le(b[4:6]), le(b[6:8]), hex.EncodeToString(b[8:10]), hex.EncodeToString(b[10:16]))
}
