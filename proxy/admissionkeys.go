package proxy

import (
	"slices"
	"strings"
)

// An operator who comes from another proxy writes its names for the options
// that limit who signs in, and check refuses them as unknown keys. The guess
// it then offers must be portcullis's admission key, never a key close in
// spelling that admits anyone: oauth2-proxy's email_domains is one letter
// from email_domain, which only picks the IdP under sso.selection_mode
// email_address, and following that guess gave a configuration that passed
// check and let in every user of the IdP.

// foreignAdmission is one kind of admission option of other proxies, by the
// names they give it, and what says where portcullis's is.
type foreignAdmission struct {
	// names are folded as admissionName folds the key written.
	names []string
	// onEntry ends the message for a key written on an identity_providers
	// entry, elsewhere for one written anywhere else.
	onEntry, elsewhere string
}

const (
	groupsOnEntry = "did you mean allowed_groups? It admits members of any group it lists, named as the IdP sends them"
	noUserList    = "portcullis keeps no list of users: admit by email domain or group on each identity provider (allowed_email_domains, allowed_groups), or name users in a condition, a rule's allow_if or a role_mapping rule's when with role_mapping.default \"\" (whom no rule gives a role is refused at login): 'email_verified && email in [\"ana@company.com\"]'"
	idpRoles      = "an IdP's roles are admitted as groups: map their claim with claims.groups (attribute_mapping.groups on SAML and LDAP), then list them in allowed_groups; portcullis's own roles come from role_mapping, and a rule requires one with allow_if: '\"admin\" in roles'"
	googleGroups  = "Google sends no groups (a Workspace's groups are in its Directory API), so none can be checked here: list the Workspace's domains in allowed_email_domains"
	domainsHere   = "who may sign in is set on each identity provider: allowed_email_domains on its sso.identity_providers entry; an entry's email_domain only picks the IdP, and admits anyone"
)

// foreignAdmissions are oauth2-proxy's (email_domains, allowed_groups,
// github_org, github_team, github_users, google_group, gitlab_group,
// keycloak_groups, allowed_roles, authenticated_emails_file), Pomerium's
// (allowed_domains, allowed_users, allowed_groups), Vouch's (domains), and
// portcullis's own admission keys written off an entry.
var foreignAdmissions = []foreignAdmission{
	{names: []string{"emaildomain", "alloweddomain", "allowedemaildomain"},
		onEntry:   "did you mean allowed_email_domains? It admits only verified addresses at the domains it lists; email_domain only picks this IdP when sso.selection_mode is email_address, and admits anyone",
		elsewhere: domainsHere},
	// On an entry, domain is a key, and domains one letter from it: the
	// okta, auth0 or cognito tenant's address, which admits anyone.
	{names: []string{"domain"},
		onEntry:   "to limit who signs in by email domain: allowed_email_domains; domain is only where an okta, auth0 or cognito tenant is",
		elsewhere: domainsHere},
	{names: []string{"allowedgroup", "group", "gitlabgroup", "keycloakgroup"},
		onEntry:   groupsOnEntry,
		elsewhere: "who may sign in is set on each identity provider: allowed_groups on its sso.identity_providers entry; a rule admits by group with allow_if: '\"staff\" in groups'"},
	{names: []string{"googlegroup"},
		onEntry:   googleGroups,
		elsewhere: googleGroups + " on the preset google entry"},
	{names: []string{"githuborg", "githuborganization", "allowedorganization", "allowedorg"},
		onEntry:   "did you mean allowed_organizations? (preset github)",
		elsewhere: "who may sign in is set on each identity provider: allowed_organizations on the preset github entry"},
	{names: []string{"githubteam", "allowedteam"},
		onEntry:   `did you mean allowed_teams? Each is "org/team-slug" (preset github)`,
		elsewhere: `who may sign in is set on each identity provider: allowed_teams on the preset github entry, each "org/team-slug"`},
	{names: []string{"requireverifiedemail"},
		onEntry:   "did you mean require_verified_email?",
		elsewhere: "require_verified_email goes on each sso.identity_providers entry"},
	{names: []string{"alloweduser", "allowedemail", "authenticatedemailsfile", "githubuser"},
		onEntry: noUserList, elsewhere: noUserList},
	{names: []string{"allowedrole"}, onEntry: idpRoles, elsewhere: idpRoles},
}

// admissionName folds a key as the names of foreignAdmissions are: lower
// case, without '_' and '-', and without a final 's', so that a config
// file's email_domains, a flag's email-domain and a camel-cased emailDomains
// are one name.
func admissionName(key string) string {
	name := strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(key))
	return strings.TrimSuffix(name, "s")
}

// admissionHint says, for an unknown key that is another proxy's admission
// option, or one of portcullis's off an entry, what limits who signs in
// instead; "" for any other key. onEntry is whether the key is written on
// an identity_providers entry.
func admissionHint(key string, onEntry bool) string {
	name := admissionName(key)
	for _, f := range foreignAdmissions {
		switch {
		case !slices.Contains(f.names, name):
		case onEntry:
			return f.onEntry
		default:
			return f.elsewhere
		}
	}
	return ""
}

// nearMissHint is what the guess of a key close in spelling says beyond its
// name: email_domain limits no one, whatever it was taken for.
func nearMissHint(near string) string {
	if near == "email_domain" {
		return "did you mean email_domain? It only picks this IdP when sso.selection_mode is email_address, and admits anyone; to limit who signs in use allowed_email_domains"
	}
	return "did you mean " + near + "?"
}
