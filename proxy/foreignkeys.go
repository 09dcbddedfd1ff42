package proxy

import (
	"slices"
	"strings"
)

// An operator who comes from another proxy writes its names for its
// options, and check refuses them as unknown keys; it then says what does
// their work here (docs/migrating.md's tables, shortened), rather than
// guess a key close in spelling. Above all for the options that limit who
// signs in: the guess must be portcullis's admission key, never one that
// admits anyone. oauth2-proxy's email_domains is one letter from
// email_domain, which only picks the IdP under sso.selection_mode
// email_address, and following that guess gave a configuration that passed
// check and let in every user of the IdP.

// foreignKey is one option of other proxies, by the names they give it,
// and what says where portcullis's is, or that it has none.
type foreignKey struct {
	// names are compared folded, as foreignName folds the key written.
	names []string
	// onEntry ends the message for a key written on an identity_providers
	// entry, elsewhere for one written anywhere else. Keys are named from
	// the top, but an entry's own on an entry.
	onEntry, elsewhere string
}

const (
	groupsOnEntry = "did you mean allowed_groups? It admits members of any group it lists, named as the IdP sends them"
	noUserList    = "portcullis keeps no list of users: admit by email domain or group on each identity provider (allowed_email_domains, allowed_groups), or name users in a condition, a rule's allow_if or a role_mapping rule's when with role_mapping.default \"\" (whom no rule gives a role is refused at login): 'email_verified && email in [\"ana@company.com\"]'"
	idpRoles      = "an IdP's roles are admitted as groups: map their claim with claims.groups (attribute_mapping.groups on SAML and LDAP), then list them in allowed_groups; portcullis's own roles come from role_mapping, and a rule requires one with allow_if: '\"admin\" in roles'"
	googleGroups  = "Google sends no groups (a Workspace's groups are in its Directory API), so none can be checked here: list the Workspace's domains in allowed_email_domains"
	domainsHere   = "who may sign in is set on each identity provider: allowed_email_domains on its sso.identity_providers entry; an entry's email_domain only picks the IdP, and admits anyone"
)

// foreignKeys are first the options that limit who signs in: oauth2-proxy's
// (email_domains, allowed_groups, github_org, github_team, github_users,
// google_group, gitlab_group, keycloak_groups, allowed_roles,
// authenticated_emails_file), Pomerium's (allowed_domains, allowed_users,
// allowed_groups), Vouch's (domains), and portcullis's own admission keys
// written off an entry; then oauth2-proxy's other options that an operator
// is likely to paste, by its config file's names.
var foreignKeys = []foreignKey{
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

	// oauth2-proxy's other options.
	everywhere("did you mean session.keys? 32 random bytes in base64, which the command portcullis keys makes; a list: the first seals, all open",
		"cookie_secret"),
	everywhere("did you mean session.lifetime? Default 12h (oauth2-proxy's 168h); session.idle_timeout, default 2h, ends an unused session sooner",
		"cookie_expire"),
	everywhere("did you mean session.refresh? It re-confirms the user with the refresh token; 0 is off",
		"cookie_refresh"),
	everywhere("did you mean session.cookie_name?", "cookie_name"),
	everywhere("no equivalent: the cookie is host-only, on /: one portcullis per origin, no session shared across subdomains",
		"cookie_domains", "cookie_path"),
	everywhere("no equivalent: the cookie is Secure when server.public_url is https", "cookie_secure"),
	everywhere("no equivalent: the cookie is always SameSite=Lax and HttpOnly", "cookie_samesite", "cookie_httponly"),
	everywhere("did you mean session.store? redis, set up in session.redis", "session_store_type"),
	everywhere("did you mean session.redis.url? rediss:// for TLS", "redis_connection_url"),
	everywhere("did you mean session.redis.password?", "redis_password"),
	everywhere("did you mean upstream.url? One upstream: to route by path, put a router behind portcullis",
		"upstreams"),
	everywhere("did you mean upstream.preserve_host?", "pass_host_header"),
	everywhere("a rule with rules[].action: bypass and a path_prefix, or a path_regex, which is anchored at both ends (^/api/ becomes /api/.*)",
		"skip_auth_routes", "skip_auth_regex"),
	everywhere("a rule with rules[].methods: [OPTIONS] and rules[].action: bypass, and no path", "skip_auth_preflight"),
	everywhere("a rule with rules[].sources and rules[].action: bypass", "trusted_ips"),
	entryKey("server_url", "The issuer: discovery starts from it", "oidc_issuer_url", "issuer_url"),
	entryKey("claims.groups", "A dotted path reaches a nested claim", "oidc_groups_claim", "groups_claim"),
	entryKey("claims.email", "A dotted path reaches a nested claim", "oidc_email_claim", "email_claim"),
	entryKey("client_secret", "There is no secret file: write ${VAR} in the value, or set PORTCULLIS_IDP_<ID>_CLIENT_SECRET",
		"client_secret_file"),
	{names: []string{"provider"},
		onEntry:   "did you mean protocol? OIDC, OAUTH2, SAML or LDAP; or preset, for a known IdP (google, github, gitlab, keycloak, azure, okta, auth0, cognito, huggingface)",
		elsewhere: "each identity provider is an sso.identity_providers entry, with its protocol or preset"},
	everywhere("not configured: it is server.public_url, server.auth_prefix, then /oidc/<id>/callback, and portcullis check prints it; register that at the IdP",
		"redirect_url", "redirect_uri"),
	everywhere("did you mean server.auth_prefix?", "proxy_prefix"),
	everywhere("did you mean server.listen? One listener, with TLS when server.tls.cert_file and server.tls.key_file are set",
		"http_address", "https_address"),
	everywhere("did you mean server.tls.cert_file?", "tls_cert_file"),
	everywhere("did you mean server.tls.key_file?", "tls_key_file"),
	everywhere("did you mean server.admin_listen? It serves /metrics, /healthz and /readyz", "metrics_address"),
	everywhere("did you mean server.trusted_proxies? The CIDRs whose X-Forwarded-For is believed; X-Real-IP and the like are never read",
		"reverse_proxy", "real_client_ip_header", "trusted_proxy_ips"),
	// oauth2-proxy verified the JWT and admitted its user like a session's:
	// the rule a migration would write instead lets any token through.
	everywhere("no equivalent: portcullis verifies no bearer token. A rule with rules[].headers {Authorization: '^Bearer '} and rules[].action: bypass passes every token, forged or expired, with no identity headers: only for an application that verifies the token itself",
		"skip_jwt_bearer_tokens", "extra_jwt_issuers"),
	everywhere("nothing to set: with one identity provider, the login goes straight to it", "skip_provider_button"),
	everywhere("attribute_pass.headers: no header is sent unless named there, each with an expression (X-Forwarded-Email: email)",
		"pass_user_headers", "pass_basic_auth", "prefer_email_to_user", "inject_request_headers"),
	everywhere("no equivalent: response headers for nginx's subrequests, a mode portcullis has not: it proxies, and sends what attribute_pass.headers names",
		"set_xauthrequest", "set_authorization_header", "set_basic_auth"),
	everywhere("no equivalent: the IdP's tokens never reach the upstream; attribute_pass.jwt sends a signed assertion instead",
		"pass_access_token", "pass_authorization_header"),
}

// everywhere is a foreignKey whose message is the same wherever it is
// written: it names a key off the entries, from the top, or none.
func everywhere(message string, names ...string) foreignKey {
	return foreignKey{names: names, onEntry: message, elsewhere: message}
}

// entryKey is a foreignKey for an identity_providers entry's key, and
// what else the message says of it on an entry; written elsewhere, only
// where the key goes.
func entryKey(key, more string, names ...string) foreignKey {
	return foreignKey{names: names,
		onEntry:   "did you mean " + key + "? " + more,
		elsewhere: key + " on each sso.identity_providers entry"}
}

// foreignName folds a key as the names of foreignKeys are: lower case,
// without '_' and '-', and without a final 's', so that a config file's
// email_domains, a flag's email-domain and a camel-cased emailDomains are
// one name.
func foreignName(key string) string {
	name := strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(key))
	return strings.TrimSuffix(name, "s")
}

// foreignKeyHint says, for an unknown key that is another proxy's option,
// or one of portcullis's admission keys off an entry, what does its work
// instead; "" for any other key. onEntry is whether the key is written on
// an identity_providers entry.
func foreignKeyHint(key string, onEntry bool) string {
	name := foreignName(key)
	for _, f := range foreignKeys {
		switch {
		case !slices.ContainsFunc(f.names, func(n string) bool { return foreignName(n) == name }):
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
