package idp

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// defaultClaims says which claim fills each profile field when the IdP entry's
// claims map does not name one. Its keys are every profile field a claims map
// may set.
var defaultClaims = map[string]string{
	"sub":            "sub",
	"email":          "email",
	"email_verified": "email_verified",
	"username":       "preferred_username",
	"first_name":     "given_name",
	"last_name":      "family_name",
	"name":           "name",
	"groups":         "groups",
}

// profileFields lists defaultClaims' keys in a stable order, for messages.
func profileFields() string {
	keys := make([]string, 0, len(defaultClaims))
	for k := range defaultClaims {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// claimMapping is the defaults overridden by the configured claims map
// (profile field -> claim name or dotted path).
func claimMapping(configured map[string]string) map[string]string {
	m := make(map[string]string, len(defaultClaims))
	for field, claim := range defaultClaims {
		m[field] = claim
	}
	for field, claim := range configured {
		if claim != "" {
			m[field] = claim
		}
	}
	return m
}

// profile is profileFromClaims for a login at entry c, whose claims mapping
// is mapping, less the missing fields c's IdP never sends (unsentFields).
func (c *Config) profile(claims map[string]any, mapping map[string]string) *Profile {
	p := profileFromClaims(c.ID, claims, mapping)
	for _, field := range c.unsentFields() {
		delete(p.missing, field)
	}
	if len(p.missing) == 0 {
		p.missing = nil
	}
	return p
}

// profileFromClaims fills a profile from claims through mapping (as built by
// claimMapping). Groups may be a list, or a string holding exactly one group
// (no splitting on commas or spaces: group names may contain both).
// email_verified may be a boolean or the string "true". The profile's Claims
// are all of claims.
func profileFromClaims(idpID string, claims map[string]any, mapping map[string]string) *Profile {
	text := func(field string) string {
		v, _ := lookupClaim(claims, mapping[field])
		return claimText(v)
	}
	verified, _ := lookupClaim(claims, mapping["email_verified"])
	groups, _ := lookupClaim(claims, mapping["groups"])
	var missing map[string]string
	for _, field := range missingFields {
		if _, ok := lookupClaim(claims, mapping[field]); !ok {
			if missing == nil {
				missing = map[string]string{}
			}
			missing[field] = mapping[field]
		}
	}
	return &Profile{
		IdP:           idpID,
		Sub:           text("sub"),
		Email:         text("email"),
		EmailVerified: claimBool(verified),
		Username:      text("username"),
		FirstName:     text("first_name"),
		LastName:      text("last_name"),
		Name:          text("name"),
		Groups:        claimList(groups),
		Claims:        claims,
		missing:       missing,
	}
}

// lookupClaim finds a claim by its name or, failing that, by a dotted path
// into nested objects ("realm_access.roles"). The whole name is tried first
// because real claim names contain dots ("https://example.com/roles").
func lookupClaim(claims map[string]any, path string) (any, bool) {
	if path == "" {
		return nil, false
	}
	if v, ok := claims[path]; ok {
		return v, true
	}
	var cur any = claims
	for part := range strings.SplitSeq(path, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// claimText reads a claim as text; numbers (GitHub's numeric user id) are
// written without exponent, other kinds read as empty.
func claimText(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case int64:
		return strconv.FormatInt(v, 10)
	case int:
		return strconv.Itoa(v)
	case bool:
		return strconv.FormatBool(v)
	case fmt.Stringer:
		// json.Number, when a decoder used UseNumber.
		return v.String()
	}
	return ""
}

// claimBool reads a boolean claim, accepting the string "true" (any case)
// that some IdPs send.
func claimBool(v any) bool {
	switch v := v.(type) {
	case bool:
		return v
	case string:
		return strings.EqualFold(strings.TrimSpace(v), "true")
	}
	return false
}

// claimList reads a list claim: a JSON array of scalars, or one string as a
// single element. Empty elements are dropped.
func claimList(v any) []string {
	switch v := v.(type) {
	case string:
		if v = strings.TrimSpace(v); v != "" {
			return []string{v}
		}
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s := claimText(e); s != "" {
				out = append(out, s)
			}
		}
		return out
	case []string:
		out := make([]string, 0, len(v))
		for _, s := range v {
			if s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// MissingHint says what makes this IdP send the claims a Profile's Missing
// names, for the operator's log.
func (c *Config) MissingHint() string {
	if c.Protocol == SAML {
		return "the assertion carries none of these attributes: add the attribute to those the IdP sends this application, " +
			"or name in attribute_mapping one it does send (claims_sent)"
	}
	return "the IdP released no such claim, in the ID token or at userinfo: ask for the scope that releases it " +
		"(scopes: email needs \"email\"; groups need the IdP's own scope or claim setting), or name in claims one it does send (claims_sent)"
}

// MaxClaimDepth is how many levels of objects and arrays an IdP's claims
// may nest: far above any IdP's own (Keycloak's resource_access.CLIENT.roles
// is 3), far below the 10,000 that Go's JSON decoder accepts. Claims are
// sealed into the session, opened at every request, and handed to every
// expression, where expr-lang's builtins (toJSON, flatten) recurse through
// them: at 10,000 levels, each evaluation took seconds.
const MaxClaimDepth = 32

// ClaimsTooDeepError is a login refused, or a refresh's answer, because a
// claim nests objects and arrays more than MaxClaimDepth levels deep.
type ClaimsTooDeepError struct {
	// Claim is the name of the top-level claim that nests too deep.
	Claim string
}

func (e *ClaimsTooDeepError) Error() string {
	return fmt.Sprintf("claim %q nests objects and arrays more than %d levels deep", truncate(e.Claim, 64), MaxClaimDepth)
}

// checkClaimDepth refuses claims of which one nests deeper than
// MaxClaimDepth. It looks no deeper than that, so that its cost is at most
// one step per value of the claims, and nothing for a flat claim.
func checkClaimDepth(claims map[string]any) error {
	deep := ""
	for name, v := range claims {
		// The first such name in order, so that the error is the same
		// whichever order the map gives.
		if (deep == "" || name < deep) && nestsDeeper(v, MaxClaimDepth) {
			deep = name
		}
	}
	if deep == "" {
		return nil
	}
	return &ClaimsTooDeepError{Claim: deep}
}

// nestsDeeper reports whether v, a claim as JSON decodes it, holds objects
// or arrays nested more than levels deep ([] is one level).
func nestsDeeper(v any, levels int) bool {
	switch v := v.(type) {
	case map[string]any:
		if levels == 0 {
			return true
		}
		for _, e := range v {
			if nestsDeeper(e, levels-1) {
				return true
			}
		}
	case []any:
		if levels == 0 {
			return true
		}
		for _, e := range v {
			if nestsDeeper(e, levels-1) {
				return true
			}
		}
	}
	return false
}
