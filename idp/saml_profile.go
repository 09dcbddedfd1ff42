package idp

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/crewjam/saml"
)

// samlDefaultAttributes are the attribute names (Name or FriendlyName) tried,
// in order, for a profile field that attribute_mapping does not name: the
// usual LDAP/eduPerson names, their OIDs, and the claim URIs of Azure AD,
// ADFS and Auth0 (whose SAML add-on and ADFS's "Group" claim type send
// groups as http://schemas.xmlsoap.org/claims/Group). uid has none (it
// defaults to the NameID) and neither has email_verified (false unless
// mapped).
var samlDefaultAttributes = map[string][]string{
	"email": {"email", "mail", "emailAddress",
		"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
		"urn:oid:0.9.2342.19200300.100.1.3"},
	"username": {"username", "uid", "urn:oid:0.9.2342.19200300.100.1.1",
		"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
		"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"},
	"first_name": {"first_name", "firstName", "givenName", "urn:oid:2.5.4.42",
		"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname"},
	"last_name": {"last_name", "lastName", "sn", "surname", "urn:oid:2.5.4.4",
		"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname"},
	"name": {"displayName", "cn", "urn:oid:2.16.840.1.113730.3.1.241", "urn:oid:2.5.4.3",
		"http://schemas.microsoft.com/identity/claims/displayname"},
	"groups": {"groups", "memberOf",
		entraGroupsClaim, "http://schemas.xmlsoap.org/claims/Group"},
}

// samlMapping turns an assertion into a Profile per attribute_mapping.
type samlMapping struct {
	// fields maps a profile field to the attribute names tried for it.
	fields map[string][]string
	// explicit marks the fields attribute_mapping names.
	explicit map[string]bool
}

func newSAMLMapping(configured map[string]string) samlMapping {
	m := samlMapping{fields: map[string][]string{}, explicit: map[string]bool{}}
	for field, names := range samlDefaultAttributes {
		m.fields[field] = names
	}
	for field, name := range configured {
		m.fields[field] = []string{strings.TrimSpace(name)}
		m.explicit[field] = true
	}
	return m
}

// samlAttributes are an assertion's attribute values by Name and by
// FriendlyName.
type samlAttributes struct {
	byName     map[string][]string
	byFriendly map[string][]string
	order      []string
}

func collectAttributes(a *saml.Assertion) samlAttributes {
	attrs := samlAttributes{byName: map[string][]string{}, byFriendly: map[string][]string{}}
	for _, stmt := range a.AttributeStatements {
		for _, attr := range stmt.Attributes {
			var values []string
			for _, v := range attr.Values {
				value := v.Value
				if value == "" && v.NameID != nil {
					value = v.NameID.Value
				}
				values = append(values, value)
			}
			// Some IdPs repeat an attribute instead of listing its values.
			if _, ok := attrs.byName[attr.Name]; !ok {
				attrs.order = append(attrs.order, attr.Name)
			}
			attrs.byName[attr.Name] = append(attrs.byName[attr.Name], values...)
			if attr.FriendlyName != "" {
				attrs.byFriendly[attr.FriendlyName] = append(attrs.byFriendly[attr.FriendlyName], values...)
			}
		}
	}
	return attrs
}

// lookup returns the values of the first of names present, by Name first.
func (s samlAttributes) lookup(names []string) ([]string, bool) {
	for _, n := range names {
		if v, ok := s.byName[n]; ok {
			return v, true
		}
		if v, ok := s.byFriendly[n]; ok {
			return v, true
		}
	}
	return nil, false
}

// claims are every attribute, by Name and (where it does not collide) by
// FriendlyName: one value as a string, several as a list.
func (s samlAttributes) claims() map[string]any {
	out := make(map[string]any, len(s.byName)+len(s.byFriendly))
	claim := func(values []string) any {
		if len(values) == 1 {
			return values[0]
		}
		return append([]string{}, values...)
	}
	for name, values := range s.byName {
		out[name] = claim(values)
	}
	for name, values := range s.byFriendly {
		if _, taken := out[name]; !taken {
			out[name] = claim(values)
		}
	}
	return out
}

// SAMLProfile builds the profile c's SAML provider would make at a login
// from an assertion with attrs, its attributes by Name, and its NameID: what
// `portcullis explain --claims` shows for a SAML entry. c has its preset
// applied.
func SAMLProfile(c Config, attrs map[string][]string, nameID string) (*Profile, error) {
	a := &saml.Assertion{Subject: &saml.Subject{NameID: &saml.NameID{Value: nameID}}}
	var stmt saml.AttributeStatement
	for _, name := range slices.Sorted(maps.Keys(attrs)) {
		attr := saml.Attribute{Name: name}
		for _, v := range attrs[name] {
			attr.Values = append(attr.Values, saml.AttributeValue{Value: v})
		}
		stmt.Attributes = append(stmt.Attributes, attr)
	}
	a.AttributeStatements = []saml.AttributeStatement{stmt}
	m := newSAMLMapping(c.AttributeMapping)
	return m.profile(c.ID, a)
}

func (m *samlMapping) profile(idpID string, a *saml.Assertion) (*Profile, error) {
	attrs := collectAttributes(a)
	first := func(field string) (string, bool) {
		v, ok := attrs.lookup(m.fields[field])
		if !ok || len(v) == 0 {
			return "", false
		}
		return strings.TrimSpace(v[0]), true
	}

	p := &Profile{IdP: idpID, Claims: attrs.claims()}
	if sub, ok := first("uid"); ok && sub != "" {
		p.Sub = sub
	} else if m.explicit["uid"] {
		return nil, fmt.Errorf("attribute %q (attribute_mapping.uid) missing or empty", m.fields["uid"][0])
	} else if a.Subject != nil && a.Subject.NameID != nil {
		p.Sub = strings.TrimSpace(a.Subject.NameID.Value)
	}
	if p.Sub == "" {
		return nil, fmt.Errorf("assertion has no NameID and attribute_mapping.uid is not set")
	}
	p.Email, _ = first("email")
	p.Username, _ = first("username")
	p.FirstName, _ = first("first_name")
	p.LastName, _ = first("last_name")
	p.Name, _ = first("name")
	if p.Name == "" {
		p.Name = strings.TrimSpace(p.FirstName + " " + p.LastName)
	}
	if v, ok := first("email_verified"); ok {
		p.EmailVerified, _ = strconv.ParseBool(strings.ToLower(v))
	}
	groups, ok := attrs.lookup(m.fields["groups"])
	if _, overage := attrs.byName[entraGroupsOverage]; !ok && overage && slices.Contains(m.fields["groups"], entraGroupsClaim) {
		// As for Entra ID over OIDC (azureClaims): without its groups the
		// user would silently get the default role.
		return nil, &AdmissionError{Rule: "groups", Reason: entraOverageMessage}
	}
	if ok {
		for _, g := range groups {
			if g = strings.TrimSpace(g); g != "" {
				p.Groups = append(p.Groups, g)
			}
		}
	}
	for _, field := range missingFields {
		if _, ok := attrs.lookup(m.fields[field]); !ok {
			if p.missing == nil {
				p.missing = map[string]string{}
			}
			p.missing[field] = strings.Join(m.fields[field], " or ")
		}
	}
	return p, nil
}
