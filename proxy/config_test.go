package proxy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// minimal is a valid configuration; each case below breaks one thing in it.
const minimal = `
server:
  public_url: https://cvat.example.com
upstream:
  url: http://traefik:8080
session:
  keys: [` + testKey + `]
sso:
  identity_providers:
    - id: company
      protocol: OIDC
      server_url: https://login.example.com/
      client_id: portcullis
`

func checkYAML(t *testing.T, yaml string, env map[string]string) error {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml), func(k string) string { return env[k] })
	if err != nil {
		return err
	}
	return Check(cfg)
}

// An unknown key is only said to be a misspelling of a known one when it is
// close to one: a key of another block, or another product's, is not.
func TestUnknownKeyGuessesOnlyNearMisses(t *testing.T) {
	for _, key := range []string{"colour", "cookie_domain", "secret", "keyz_backup"} {
		err := checkYAML(t, strings.Replace(minimal, "session:\n", "session:\n  "+key+": x\n", 1), nil)
		if err == nil || !strings.Contains(err.Error(), "session."+key+": unknown key") {
			t.Fatalf("%s: got %v, want it named an unknown key", key, err)
		}
		if strings.Contains(err.Error(), "did you mean") {
			t.Errorf("%s: %v; want no guess", key, err)
		}
	}
}

func TestMinimalConfigIsValid(t *testing.T) {
	if err := checkYAML(t, minimal, nil); err != nil {
		t.Fatal(err)
	}
}

// TestCheckNamesTheKey: `portcullis check` reports each class of mistake
// with the key it concerns.
func TestCheckNamesTheKey(t *testing.T) {
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"unknown top-level key", "server:", "sever:\n  listen: x\nserver:", "sever: unknown key (did you mean server?)"},
		{"typo in an IdP key", "client_id: portcullis", "clent_id: portcullis", "sso.identity_providers[0].clent_id: unknown key (did you mean client_id?)"},
		{"a singular for a plural", "identity_providers:", "identity_provider:", "sso.identity_provider: unknown key (did you mean identity_providers?)"},
		{"missing public_url", "public_url: https://cvat.example.com", "listen: \":9772\"", "server.public_url: required"},
		{"public_url with a path", "https://cvat.example.com", "https://cvat.example.com/app", "server.public_url: must be an origin"},
		{"missing upstream", "url: http://traefik:8080", "preserve_host: true", "upstream.url: required"},
		{"short session key", testKey, "c2hvcnQ=", "session.keys[0]: must be 32 bytes"},
		{"session key not base64", testKey, "not base64!", "session.keys[0]: not base64"},
		{"long session key", testKey, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v", "session.keys[0]: must be 32 bytes of base64, got 48"},
		{"duplicate IdP id", "      client_id: portcullis\n", "      client_id: portcullis\n    - id: company\n      protocol: OIDC\n      server_url: https://x.example.com/\n      client_id: y\n", "sso.identity_providers[1].id: duplicate id"},
		{"claim name of only spaces", "client_id: portcullis", "client_id: portcullis\n      claims: {groups: \"  \"}", "sso.identity_providers[0].claims.groups: empty claim name"},
		{"upstream url with a query", "url: http://traefik:8080", "url: http://traefik:8080/?token=s3cret", "upstream.url: must not have a query (?…): ReverseProxy puts it before the query of every request sent upstream; give scheme://host[:port][/path]"},
		{"upstream url with an empty query", "url: http://traefik:8080", "url: http://traefik:8080/?", "upstream.url: must not have a query (?…)"},
		{"upstream url with a fragment", "url: http://traefik:8080", "url: http://traefik:8080/#app", "upstream.url: must not have a fragment (#…): it is never sent; give scheme://host[:port][/path]"},
		{"upstream url with an empty fragment", "url: http://traefik:8080", "url: http://traefik:8080/#", "upstream.url: must not have a fragment (#…)"},
		{"unknown protocol", "protocol: OIDC", "protocol: KERBEROS", "sso.identity_providers[0].protocol: unknown protocol"},
		{"bad IdP id", "id: company", "id: Company SSO", "sso.identity_providers[0].id:"},
		{"unknown selection mode", "sso:\n", "sso:\n  selection_mode: random\n", "sso.selection_mode: unknown mode"},
		{"bad regex", "", "rules:\n  - name: r\n    path_regex: '(unclosed'\n    action: bypass\n", "rules[0].path_regex:"},
		{"unknown action", "", "rules:\n  - name: r\n    path: /x\n    action: allow\n", "rules[0].action:"},
		{"typo in allow_if", "", "rules:\n  - name: r\n    path: /x\n    action: authenticate\n    allow_if: '\"admin\" in rolez'\n", "rules[0].allow_if:"},
		{"typo in a role rule", "", "role_mapping:\n  roles: [admin, user]\n  default: user\n  rules:\n    - role: admin\n      when: '\"a\" in grups'\n", "role_mapping.rules[0].when:"},
		{"typo in a header expression", "", "attribute_pass:\n  headers:\n    X-Email: emial\n", "attribute_pass.headers.X-Email:"},
		{"repeat in a rule's when", "", "rules:\n  - name: r\n    action: deny\n    when: 'repeat(request.headers[\"X-A\"], 100000) != \"\"'\n", "rules[0].when: repeat is not available"},
		{"matches with a pattern from the request in allow_if", "", "rules:\n  - name: r\n    action: authenticate\n    allow_if: 'request.path matches request.headers[\"X-P\"]'\n", "rules[0].allow_if: matches needs a constant pattern"},
		{"large range in a role rule", "", "role_mapping:\n  roles: [admin, user]\n  default: user\n  rules:\n    - role: admin\n      when: 'claims.uid in 1000..60000'\n", "role_mapping.rules[0].when: a range of more than 1000 numbers"},
		{"loop inside a loop in a header expression", "", "attribute_pass:\n  headers:\n    X-Teams: 'join(map(claims.orgs, {join(map(#.teams, {#.name}), \",\")}), \",\")'\n", "attribute_pass.headers.X-Teams: map inside map: a loop inside a loop"},
		{"loop over a header that reads the request in a rule's when", "", "rules:\n  - name: r\n    action: deny\n    when: 'any(split(request.headers[\"X-A\"], \",\"), {request.path contains #})'\n", "rules[0].when: a loop over a range or a list built from request may read only # and constants, not request"},
		{"fromJSON of a header in allow_if", "", "rules:\n  - name: r\n    action: authenticate\n    allow_if: 'len(flatten(fromJSON(request.headers[\"X-A\"]))) > 0'\n", "rules[0].allow_if: fromJSON of request"},
		{"split of a header in a loop over the groups in a rule's when", "", "rules:\n  - name: r\n    action: deny\n    when: 'any(groups, {# in split(request.headers[\"X-Teams\"], \",\")})'\n", "rules[0].when: split of request inside any"},
		{"replace with a replacement from the request in allow_if", "", "rules:\n  - name: r\n    action: authenticate\n    allow_if: 'replace(request.path, \"\", request.path) != \"\"'\n", "rules[0].allow_if: replace needs a constant replacement"},
		{"bad CIDR", "", "rules:\n  - name: r\n    sources: [10.0.0.0/33]\n    action: deny\n", "rules[0].sources"},
		{"bad trusted proxy", "server:\n", "server:\n  trusted_proxies: [nope]\n", "server.trusted_proxies[0]: not a CIDR or IP address"},
		{"negative session lifetime", "session:\n", "session:\n  lifetime: -1h\n", "session.lifetime: must be a positive duration"},
		{"negative idle timeout", "session:\n", "session:\n  idle_timeout: -1h\n", "session.idle_timeout: must be a positive duration"},
		{"second bad trusted proxy", "server:\n", "server:\n  trusted_proxies: [nope, 10.0.0.0/33]\n", "server.trusted_proxies[1]: not a CIDR or IP address"},
		{"an identity header kept from a trusted proxy", "server:\n", "server:\n  trusted_proxies: [10.0.0.0/8]\n  trusted_proxy_certificate_headers: [X-Email]\n",
			`server.trusted_proxy_certificate_headers[0]: "X-Email" is none of the client-certificate headers portcullis strips`},
		{"a certificate header kept without trusted proxies", "server:\n", "server:\n  trusted_proxy_certificate_headers: [X-Forwarded-Client-Cert]\n",
			"server.trusted_proxy_certificate_headers[0]: kept from server.trusted_proxies only, and there are none"},
		{"bad logout cookie", "url: http://traefik:8080", "url: http://traefik:8080\n  logout_cookies: [\"bad name\"]", "upstream.logout_cookies[0]: not a cookie name"},
		{"logout cookie that is the session's", "url: http://traefik:8080", "url: http://traefik:8080\n  logout_cookies: [__Host-portcullis_1]", `upstream.logout_cookies[0]: "__Host-portcullis_1" is portcullis's own cookie`},
		{"certificate without its key", "server:\n", "server:\n  tls: {cert_file: /etc/tls/tls.crt}\n", "server.tls: cert_file and key_file go together"},
		{"key without its certificate", "server:\n", "server:\n  tls: {key_file: /etc/tls/tls.key}\n", "server.tls: cert_file and key_file go together"},
		{"logout cookie name too long", "url: http://traefik:8080", "url: http://traefik:8080\n  logout_cookies: [" + strings.Repeat("c", 129) + "]", "upstream.logout_cookies[0]: not a cookie name"},
		{"session cookie name too long", "session:\n", "session:\n  cookie_name: " + strings.Repeat("c", 65) + "\n", "session.cookie_name: must be"},
		{"IdP id too long", "id: company", "id: " + strings.Repeat("c", 64), "sso.identity_providers[0].id:"},
		{"bad default action", "", "default_action: maybe\n", "default_action:"},
		{"redis store without an address", "session:\n", "session:\n  store: redis\n", "session.redis.url: required"},
		{"unknown session store", "session:\n", "session:\n  store: memcached\n", "session.store: unknown store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := minimal
			if tc.old == "" {
				yaml += tc.new
			} else {
				if !strings.Contains(yaml, tc.old) {
					t.Fatalf("test case: %q not in the config", tc.old)
				}
				yaml = strings.Replace(yaml, tc.old, tc.new, 1)
			}
			err := checkYAML(t, yaml, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant a problem containing %q", err, tc.want)
			}
		})
	}
}

func TestCheckReportsEveryProblem(t *testing.T) {
	yaml := strings.NewReplacer("public_url: https://cvat.example.com", "", "url: http://traefik:8080", "url: nope", "protocol: OIDC", "protocol: X").Replace(minimal)
	err := checkYAML(t, yaml, nil)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"server.public_url", "upstream.url", "sso.identity_providers[0].protocol"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %s in:\n%v", want, err)
		}
	}
}

// TestCheckListsEachMistakeAlone: each mistake in the server, upstream,
// session and sso blocks is refused with its key, and is the one problem
// listed: the whole output is compared, so that a check dropped, a key
// misnamed or a problem that hides behind another all show.
func TestCheckListsEachMistakeAlone(t *testing.T) {
	ldap := strings.Replace(plainLDAP, "URL", "ldaps://ad.example.com", 1)
	for _, tc := range []struct {
		name, old, new string
		want           []string
	}{
		{"public_url without a host", "https://cvat.example.com", "https://",
			[]string{`server.public_url: not an absolute http(s) URL: "https://"`}},
		{"public_url with a query", "https://cvat.example.com", "https://cvat.example.com?tenant=a",
			[]string{`server.public_url: must be an origin only (scheme://host[:port]), got "https://cvat.example.com?tenant=a"`}},
		{"public_url with a fragment", "https://cvat.example.com", "'https://cvat.example.com#top'",
			[]string{`server.public_url: must be an origin only (scheme://host[:port]), got "https://cvat.example.com#top"`}},
		{"public_url with a port past 65535", "https://cvat.example.com", "https://cvat.example.com:94430",
			[]string{`server.public_url: port 94430 is not a TCP port (1-65535)`}},
		{"upstream.url with port 0", "url: http://traefik:8080", "url: http://traefik:0",
			[]string{`upstream.url: port 0 is not a TCP port (1-65535)`}},
		{"listen without a colon", "server:\n", "server:\n  listen: \"9772\"\n",
			[]string{`server.listen: not a host:port address: "9772"`}},
		{"admin_listen without a colon", "server:\n", "server:\n  admin_listen: \"9773\"\n",
			[]string{`server.admin_listen: not a host:port address: "9773"`}},
		{"auth_prefix /", "server:\n", "server:\n  auth_prefix: /\n",
			[]string{`server.auth_prefix: must be a plain path like /.portcullis (leading slash, no trailing slash), got "/"`}},
		{"auth_prefix with a trailing slash", "server:\n", "server:\n  auth_prefix: /.portcullis/\n",
			[]string{`server.auth_prefix: must be a plain path like /.portcullis (leading slash, no trailing slash), got "/.portcullis/"`}},
		{"auth_prefix with a space", "server:\n", "server:\n  auth_prefix: /.port cullis\n",
			[]string{`server.auth_prefix: must be a plain path like /.portcullis (leading slash, no trailing slash), got "/.port cullis"`}},
		{"auth_prefix that is not clean", "server:\n", "server:\n  auth_prefix: /sso/../.portcullis\n",
			[]string{`server.auth_prefix: must be a plain path like /.portcullis (leading slash, no trailing slash), got "/sso/../.portcullis"`}},
		{"upstream.url without a host", "url: http://traefik:8080", "url: http://",
			[]string{`upstream.url: not an absolute http(s) URL: "http://"`}},
		// A CA file on plain http would be read and never used: the
		// operator meant https, or a file of no use.
		{"upstream.tls.ca_file on an http upstream", "url: http://traefik:8080", "url: http://traefik:8080\n  tls: {ca_file: /nonexistent/ca.pem}",
			[]string{"upstream.tls.ca_file: only for an https upstream.url: the connections to http://traefik:8080 are plain http"}},
		{"no session key", "keys: [" + testKey + "]", "keys: []",
			[]string{"session.keys: at least one key is required (make one with `portcullis keys`, or set PORTCULLIS_SESSION_KEYS)"}},
		{"no identity provider", "sso:\n  identity_providers:\n    - id: company\n      protocol: OIDC\n      server_url: https://login.example.com/\n      client_id: portcullis\n", "sso:\n  identity_providers: []\n",
			[]string{"sso.identity_providers: at least one identity provider is required"}},
		{"single_sign_out on LDAP", "      client_id: portcullis\n", ldap + "      single_sign_out: true\n",
			[]string{"sso.identity_providers[1].single_sign_out: only OIDC and SAML providers offer single sign-out (protocol is LDAP)"}},
		{"allow_idp_initiated on LDAP", "      client_id: portcullis\n", ldap + "      allow_idp_initiated: true\n",
			[]string{"sso.identity_providers[1].allow_idp_initiated: only SAML providers send logins the user did not start here (protocol is LDAP)"}},
		{"email_address mode without an email_domain on one of two IdPs", "sso:\n  identity_providers:\n",
			"sso:\n  selection_mode: email_address\n  identity_providers:\n    - id: partner\n      protocol: OIDC\n      server_url: https://login.partner.example/\n      client_id: portcullis\n      email_domain: partner.example\n",
			[]string{"sso.identity_providers[1].email_domain: required when sso.selection_mode is email_address and there is more than one identity provider"}},
		{"email_domain that is an address", "sso:\n  identity_providers:\n    - id: company\n",
			"sso:\n  selection_mode: email_address\n  identity_providers:\n    - id: company\n      email_domain: '@company.com'\n",
			[]string{`sso.identity_providers[0].email_domain: not a domain name like company.com (got "@company.com")`}},
		{"email_domain that is a wildcard", "sso:\n  identity_providers:\n    - id: company\n",
			"sso:\n  selection_mode: email_address\n  identity_providers:\n    - id: company\n      email_domain: '*.company.com'\n",
			[]string{`sso.identity_providers[0].email_domain: not a domain name like company.com (got "*.company.com")`}},
		{"one email_domain for two IdPs, written in another case", "sso:\n  identity_providers:\n    - id: company\n",
			"sso:\n  selection_mode: email_address\n  identity_providers:\n    - id: partner\n      protocol: OIDC\n      server_url: https://login.partner.example/\n      client_id: portcullis\n      email_domain: Company.COM\n    - id: company\n      email_domain: company.com\n",
			[]string{`sso.identity_providers[1].email_domain: domain "company.com" already belongs to partner`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(minimal, tc.old) {
				t.Fatalf("test case: %q not in the config", tc.old)
			}
			var got []string
			if err := checkYAML(t, strings.Replace(minimal, tc.old, tc.new, 1), nil); err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("problems:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func TestEnvironment(t *testing.T) {
	yaml := strings.Replace(minimal, "client_id: portcullis", "client_id: ${CLIENT}\n      client_secret: from-file", 1)
	yaml = strings.Replace(yaml, "keys: ["+testKey+"]", "keys: [\"${NOPE}\"]", 1)
	env := map[string]string{
		"CLIENT":                               "from-env",
		"PORTCULLIS_SESSION_KEYS":              testKey,
		"PORTCULLIS_IDP_COMPANY_CLIENT_SECRET": "secret-from-env",
	}
	cfg, err := ParseConfig([]byte(yaml), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(cfg); err != nil {
		t.Fatal(err)
	}
	ic := cfg.SSO.IdentityProviders[0]
	if ic.ClientID != "from-env" || ic.ClientSecret != "secret-from-env" || cfg.Session.Keys[0] != testKey {
		t.Fatalf("client_id %q client_secret %q keys %q", ic.ClientID, ic.ClientSecret, cfg.Session.Keys)
	}
}

// TestCheckNamesAnEmptyVariable: a value that is empty, or cut short,
// because a ${VAR} it writes expanded to nothing says so, whatever key and
// problem it is, and with the PORTCULLIS_* variable that would set it
// where there is one; a value whose variables are all set is not blamed on
// the environment, nor is one the PORTCULLIS_* variable set instead. Every
// problem of the file is compared, so that an unchanged text shows too.
func TestCheckNamesAnEmptyVariable(t *testing.T) {
	for _, tc := range []struct {
		name, old, new string
		env            map[string]string
		want           []string
	}{
		{"an unset variable for a required URL", "https://cvat.example.com", `"${PUBLIC_URL}"`, nil,
			[]string{"server.public_url: required (the origin users see, e.g. https://cvat.example.com); the file writes ${PUBLIC_URL}, which is unset or empty"}},
		{"an unquoted one, which YAML reads as no value", "https://cvat.example.com", "${PUBLIC_URL}", nil,
			[]string{"server.public_url: required (the origin users see, e.g. https://cvat.example.com); the file writes ${PUBLIC_URL}, which is unset or empty"}},
		{"an empty variable that leaves a URL without its host", "https://cvat.example.com", "https://${HOST}", map[string]string{"HOST": ""},
			[]string{`server.public_url: not an absolute http(s) URL: "https://"; the file writes ${HOST}, which is unset or empty`}},
		{"only the unset one of two", "https://cvat.example.com", "${SCHEME}://${HOST}", map[string]string{"SCHEME": "https"},
			[]string{`server.public_url: not an absolute http(s) URL: "https://"; the file writes ${HOST}, which is unset or empty`}},
		{"two unset", "https://cvat.example.com", "${SCHEME}://${HOST}", nil,
			[]string{`server.public_url: not an absolute http(s) URL: "://"; the file writes ${SCHEME} and ${HOST}, which are unset or empty`}},
		{"three unset", "https://cvat.example.com", "${SCHEME}://${HOST}:${PORT}", nil,
			[]string{`server.public_url: not an absolute http(s) URL: "://:"; the file writes ${SCHEME}, ${HOST} and ${PORT}, which are unset or empty`}},
		{"one unset written twice, named once", "https://cvat.example.com", "https://${HOST}${HOST}", nil,
			[]string{`server.public_url: not an absolute http(s) URL: "https://"; the file writes ${HOST}, which is unset or empty`}},
		{"a set variable with a wrong value is the value's problem", "https://cvat.example.com", "${PUBLIC_URL}", map[string]string{"PUBLIC_URL": "https://cvat.example.com/app"},
			[]string{`server.public_url: must be an origin only (scheme://host[:port]), got "https://cvat.example.com/app"`}},
		{"an IdP's required key, which its PORTCULLIS_IDP_ variable could set", "client_id: portcullis", "client_id: ${CLIENT_ID}", nil,
			[]string{"sso.identity_providers[0].client_id: required; the file writes ${CLIENT_ID}, which is unset or empty (or set PORTCULLIS_IDP_COMPANY_CLIENT_ID)"}},
		// PORTCULLIS_IDP__CLIENT_ID would set nothing: the entry is refused.
		{"an IdP's required key on an entry whose id is no id names no variable", "id: company\n      protocol: OIDC\n      server_url: https://login.example.com/\n      client_id: portcullis", "id: \"${IDP_ID}\"\n      protocol: OIDC\n      server_url: https://login.example.com/\n      client_id: ${CLIENT_ID}", nil,
			[]string{`sso.identity_providers[0].id: must be 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit (got ""); the file writes ${IDP_ID}, which is unset or empty`, "sso.identity_providers[0].client_id: required; the file writes ${CLIENT_ID}, which is unset or empty"}},
		{"a session key, which PORTCULLIS_SESSION_KEYS could set", "keys: [" + testKey + "]", `keys: ["${SESSION_KEY}"]`, nil,
			[]string{"session.keys[0]: must be 32 bytes of base64, got 0 bytes (make one with `portcullis keys`); the file writes ${SESSION_KEY}, which is unset or empty (or set PORTCULLIS_SESSION_KEYS)"}},
		{"a list written as a variable, a string whatever PORTCULLIS_SESSION_KEYS says", "keys: [" + testKey + "]", "keys: ${SESSION_KEYS}", nil,
			[]string{"session.keys: must be a list, got a string; the file writes ${SESSION_KEYS}, which is unset or empty"}},
		{"a session key that PORTCULLIS_SESSION_KEYS replaced is not the file's", "keys: [" + testKey + "]", `keys: ["${SESSION_KEY}"]`, map[string]string{"PORTCULLIS_SESSION_KEYS": "c2hvcnQ="},
			[]string{"session.keys[0]: must be 32 bytes of base64, got 5 bytes (make one with `portcullis keys`)"}},
		{"a value of the wrong type", "session:\n", "session:\n  lifetime: \"${LIFETIME}\"\n", nil,
			[]string{"session.lifetime: must be a duration like 90s or 12h, got a string; the file writes ${LIFETIME}, which is unset or empty"}},
		{"a value of the wrong type beside a key given twice, which the decoder stops at", "session:\n", "session:\n  lifetime: \"${LIFETIME}\"\n  idle_timeout: 1h\n  idle_timeout: 2h\n", nil,
			[]string{"session.lifetime: must be a duration like 90s or 12h, got a string; the file writes ${LIFETIME}, which is unset or empty", "session.idle_timeout: given twice (lines 8 and 9)"}},
		// yaml.v3 merges <<, which the walk takes for an unknown key, so
		// the decoder finds a mistake more than the walk: ParseConfig
		// returns its error beside the walk's problems.
		{"a value of the wrong type where the decoder finds more mistakes than the walk", "session:\n", "session:\n  <<: {lifetime: 1}\n  idle_timeout: \"${IDLE}\"\n", nil,
			[]string{"session.<<: unknown key", "session.idle_timeout: must be a duration like 90s or 12h, got a string; the file writes ${IDLE}, which is unset or empty", "config: yaml: unmarshal errors:", "  line 8: cannot unmarshal !!str into time.Duration", "  line 7: cannot unmarshal !!int into time.Duration"}},
		// A mapping key written as ${VAR} is the key "" when it expands to
		// nothing, which says little by itself.
		{"a header name written as an unset variable", "session:\n", "attribute_pass:\n  headers: {\"${EMAIL_HEADER}\": email}\nsession:\n", nil,
			[]string{`attribute_pass.headers.: "" is not a valid header name; the file writes ${EMAIL_HEADER}, which is unset or empty`}},
		{"a header name and its expression both written as unset variables", "session:\n", "attribute_pass:\n  headers: {\"${EMAIL_HEADER}\": \"${EXPR}\"}\nsession:\n", nil,
			[]string{`attribute_pass.headers.: "" is not a valid header name; the file writes ${EMAIL_HEADER} and ${EXPR}, which are unset or empty`}},
		{"two header names written as unset variables", "session:\n", "attribute_pass:\n  headers: {\"${A}\": email, \"${B}\": username}\nsession:\n", nil,
			[]string{"attribute_pass.headers.: given twice (lines 7 and 7); the file writes ${A} and ${B}, which are unset or empty"}},
		{"a key of a block written as an unset variable", "session:\n", "session:\n  \"${SESSION_KEY_NAME}\": 12h\n", nil,
			[]string{"session.: unknown key; the file writes ${SESSION_KEY_NAME}, which is unset or empty"}},
		{"a redis key, which PORTCULLIS_REDIS_URL could set", "session:\n", "session:\n  store: redis\n  redis: {url: \"${REDIS_URL}\"}\n", nil,
			[]string{"session.redis.url: required with session.store redis (redis://host:6379/0, rediss:// for TLS), or set sentinel or cluster_addrs instead; the file writes ${REDIS_URL}, which is unset or empty (or set PORTCULLIS_REDIS_URL)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(minimal, tc.old) {
				t.Fatalf("test case: %q not in the config", tc.old)
			}
			var got []string
			if err := checkYAML(t, strings.Replace(minimal, tc.old, tc.new, 1), tc.env); err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("problems:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// Valid choices that no other test's configuration makes: each must check
// clean.
func TestCheckAccepts(t *testing.T) {
	for _, tc := range []struct {
		name, old, new string
		env            map[string]string
	}{
		{name: "selection_mode lowest_weight", old: "sso:\n", new: "sso:\n  selection_mode: lowest_weight\n"},
		{name: "public_url on the highest port, upstream.url on the lowest", old: "https://cvat.example.com\nupstream:\n  url: http://traefik:8080",
			new: "https://cvat.example.com:65535\nupstream:\n  url: http://traefik:1"},
		{name: "upstream.url with a path, which prefixes every request's", old: "url: http://traefik:8080", new: "url: http://traefik:8080/app"},
		{name: "PORTCULLIS_SESSION_KEYS written with a space after each comma", old: "keys: [" + testKey + "]", new: "keys: []",
			env: map[string]string{"PORTCULLIS_SESSION_KEYS": testKey + ", " + testKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkYAML(t, strings.Replace(minimal, tc.old, tc.new, 1), tc.env); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestEnvironmentCannotInjectYAML(t *testing.T) {
	yaml := strings.Replace(minimal, "client_id: portcullis", "client_id: ${CLIENT}", 1)
	cfg, err := ParseConfig([]byte(yaml), func(k string) string {
		if k == "CLIENT" {
			return "x\n      client_secret: injected"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SSO.IdentityProviders[0].ClientSecret != "" {
		t.Fatal("an environment value changed the document's structure")
	}
}

// A configuration whose aliases would expand to 9^10 header names (a YAML
// "billion laughs") is refused as it is written, without expanding them.
func TestAliasesAreNotExpanded(t *testing.T) {
	var b strings.Builder
	b.WriteString(`x0: &x0 ["a","a","a","a","a","a","a","a","a"]` + "\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "x%d: &x%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*x%d,", i-1), 9), ","))
	}
	b.WriteString("attribute_pass: {strip_headers: *x9}\n")
	err := checkYAML(t, minimal+b.String(), nil)
	if err == nil || !strings.Contains(err.Error(), "attribute_pass.strip_headers[0]: must be a single value") {
		t.Fatalf("error %v, want strip_headers' elements refused as lists", err)
	}
	if n := strings.Count(err.Error(), "\n"); n > 100 {
		t.Errorf("%d problems reported: the aliases were expanded", n)
	}
}

// TestDecodeErrorsQuoteNoValues: a value of the wrong type is reported by
// its key, never quoted, since it may be a secret put in the wrong place.
func TestDecodeErrorsQuoteNoValues(t *testing.T) {
	for _, tc := range []struct{ name, old, new, want string }{
		{"a password where the redis block goes", "session:\n", "session:\n  redis: ${REDIS_PASSWORD}\n", "session.redis: must be a mapping of keys to values, got a string"},
		{"a session key where the list goes", "keys: [" + testKey + "]", "keys: ${KEY}", "session.keys: must be a list, got a string"},
		{"a session key for the whole file", minimal, "${KEY}", "cannot unmarshal !!str into proxy.Config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"REDIS_PASSWORD": "hunter2", "KEY": testKey}
			err := checkYAML(t, strings.Replace(minimal, tc.old, tc.new, 1), env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			for _, secret := range []string{"hunter2", testKey[:7]} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error shows the value %q: %v", secret, err)
				}
			}
		})
	}
}

// TestValuesOfTheWrongType: a value decoding cannot take is named by its
// key, hides no other problem, and the emptiness it leaves is no second one
// (session.keys is not also "required").
func TestValuesOfTheWrongType(t *testing.T) {
	for _, tc := range []struct {
		name, old, new string
		want           []string
	}{
		{"a list where a string goes", "url: http://traefik:8080", "url: [http://traefik:8080]",
			[]string{"upstream.url: must be a single value, got a list"}},
		{"a word where a duration goes", "session:\n", "session:\n  lifetime: soon\n",
			[]string{"session.lifetime: must be a duration like 90s or 12h, got a string"}},
		{"a number where true or false goes", "sso:\n", "sso:\n  enable_pkce: 2\n",
			[]string{"sso.enable_pkce: must be true or false, got a number"}},
		{"a list where a mapping goes", "client_id: portcullis", "client_id: portcullis\n      claims: [email]",
			[]string{"sso.identity_providers[0].claims: must be a mapping of keys to values, got a list"}},
		{"a key given twice", "client_id: portcullis", "client_id: portcullis\n      client_id: again",
			[]string{"sso.identity_providers[0].client_id: given twice (lines 13 and 14)"}},
		{"an entry of a list", "    - id: company", "    - [company]\n    - id: company",
			[]string{"sso.identity_providers[0]: must be a mapping of keys to values, got a list"}},
		{"next to a key whose name begins with its own", "sso:\n", "attribute_pass:\n  headers:\n    X-Email: [email]\n    X-Email-Verified: emial_verified\nsso:\n",
			[]string{"attribute_pass.headers.X-Email: must be a single value, got a list", "attribute_pass.headers.X-Email-Verified: unknown name emial_verified (at 1:1)"}},
		{"an entry of a list, before an entry with a mistake that would be named by the wrong index", "    - id: company\n      protocol: OIDC\n      server_url: https://login.example.com/\n      client_id: portcullis\n",
			"    - [partner]\n    - id: company\n      protocol: OIDC\n      server_url: https://login.example.com/\n      client_id: portcullis\n    - id: partner\n      protocol: KERBEROS\n",
			[]string{"sso.identity_providers[0]: must be a mapping of keys to values, got a list"}},
		{"a top-level key given twice, which leaves the whole file undecoded", "sso:\n", "upstream:\n  url: http://app:8080\nsso:\n",
			[]string{"upstream: given twice (lines 4 and 8)"}},
		{"with every other problem", "keys: [" + testKey + "]\n", "keys: " + testKey + "\n  lifetime: 12 hours\n" + "  store: memcached\n",
			[]string{"session.keys: must be a list, got a string", "session.lifetime: must be a duration like 90s or 12h, got a string", `session.store: unknown store "memcached" (want cookie or redis)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(minimal, tc.old) {
				t.Fatalf("test case: %q not in the config", tc.old)
			}
			err := checkYAML(t, strings.Replace(minimal, tc.old, tc.new, 1), nil)
			if err == nil {
				t.Fatal("no error")
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, tc.want) {
				t.Errorf("problems:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// scalarStruct is a struct that decodes itself from a scalar, as time.Time
// does: the walk must leave its shape to its own method.
type scalarStruct struct{ a, b string }

func (v *scalarStruct) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	var ok bool
	if v.a, v.b, ok = strings.Cut(s, ","); !ok {
		return errors.New("want a,b")
	}
	return nil
}

func TestShapeLeavesTypesThatDecodeThemselvesToThem(t *testing.T) {
	type doc struct {
		Pair  scalarStruct `yaml:"pair"`
		Since time.Time    `yaml:"since"`
	}
	for _, tc := range []struct{ yaml, want string }{
		{"pair: x,y\nsince: 2026-12-04T18:00:00Z", ""},
		{"pair: xy", "pair: must be in the form this key takes, got a string"},
		{"since: [1]", "since: must be in the form this key takes, got a list"},
	} {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(tc.yaml), &n); err != nil {
			t.Fatal(err)
		}
		var s shape
		s.walk(n.Content[0], reflect.TypeFor[doc](), "")
		if got := fmt.Sprint(errors.Join(s.problems...)); tc.want == "" && len(s.problems) > 0 || tc.want != "" && got != tc.want {
			t.Errorf("%q: problems %v, want %q", tc.yaml, s.problems, tc.want)
		}
	}
}

// TestCheckQuotesNoPasswordOfAURL: a URL with credentials in it is refused or
// quoted with them masked, and credentials in upstream.url, which the upstream
// would never get, are refused rather than dropped (and logged at start).
func TestCheckQuotesNoPasswordOfAURL(t *testing.T) {
	ldap := `      client_id: portcullis
    - id: corp
      protocol: LDAP
      url: URL
      bind_dn: cn=svc,dc=example,dc=com
      bind_password: x
      user_search: {base_dn: "dc=example,dc=com", filter: "(uid={username})"}
`
	for _, tc := range []struct{ name, old, new, want string }{
		{"upstream.url with credentials", "url: http://traefik:8080", "url: http://svc:s3cret@traefik:8080", "upstream.url: must not carry credentials"},
		{"upstream.url with credentials and no scheme", "url: http://traefik:8080", "url: svc:s3cret@traefik:8080", "upstream.url: not an absolute http(s) URL"},
		{"public_url with credentials", "https://cvat.example.com", "https://svc:s3cret@cvat.example.com", "server.public_url: must be an origin only"},
		{"an LDAP url with the bind password", "      client_id: portcullis\n", strings.Replace(ldap, "URL", "ldap://cn=admin:s3cret@ad.example.com", 1), `sso.identity_providers[1].url: must be only scheme://host[:port]`},
		{"an OIDC server_url with credentials and no scheme", "https://login.example.com/", "svc:s3cret@login.example.com", "sso.identity_providers[0].server_url: not an absolute http(s) URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkYAML(t, strings.Replace(minimal, tc.old, tc.new, 1), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant a problem containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the problem shows the password: %v", err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := ParseConfig([]byte(minimal), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Listen != ":9772" || cfg.Server.AdminListen != "127.0.0.1:9773" || cfg.Server.AuthPrefix != "/.portcullis" ||
		cfg.Session.CookieName != "portcullis" || cfg.Session.Store != "cookie" || !*cfg.Upstream.PreserveHost ||
		cfg.SSO.SelectionMode != "chooser" || !*cfg.SSO.EnablePKCE || cfg.DefaultAction != "authenticate" {
		t.Fatalf("defaults: %+v", cfg)
	}
}

// TestLoadAdminListen: `portcullis health` finds the admin listener where
// serve listens, from a file that LoadConfig may refuse as a whole.
func TestLoadAdminListen(t *testing.T) {
	env := map[string]string{"ADMIN": "0.0.0.0:9999"}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct{ name, yaml, want string }{
		{"the default", minimal, "127.0.0.1:9773"},
		{"as written", strings.Replace(minimal, "server:\n", "server:\n  admin_listen: \":9773\"\n", 1), ":9773"},
		{"expanded from the environment", strings.Replace(minimal, "server:\n", "server:\n  admin_listen: ${ADMIN}\n", 1), "0.0.0.0:9999"},
		{"an empty file", "", "127.0.0.1:9773"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "portcullis.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := LoadAdminListen(path, getenv)
			if err != nil || got != tc.want {
				t.Fatalf("LoadAdminListen: %q, %v; want %q", got, err, tc.want)
			}
			cfg, err := LoadConfig(path, getenv)
			if err != nil || cfg.Server.AdminListen != got {
				t.Fatalf("LoadConfig reads server.admin_listen %q (%v), LoadAdminListen %q", cfg.Server.AdminListen, err, got)
			}
		})
	}

	// The rest of the file is not decoded: here the check fails.
	path := filepath.Join(t.TempDir(), "portcullis.yaml")
	if err := os.WriteFile(path, []byte("server:\n  admin_listen: ${ADMIN}\n  trusted_proxies: ${PROXIES}\nsession: {lifetime: soon}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err := LoadConfig(path, getenv); err == nil && Check(cfg) == nil {
		t.Fatal("the file checks clean: the case tests nothing")
	}
	if got, err := LoadAdminListen(path, getenv); err != nil || got != "0.0.0.0:9999" {
		t.Fatalf("LoadAdminListen: %q, %v; want 0.0.0.0:9999", got, err)
	}
}

// startUpWarnings are entries that valid configurations may have and that
// weaken them outside development: each test case adds one to minimal.
const (
	plainLDAP = `      client_id: portcullis
    - id: corp
      protocol: LDAP
      url: URL
      bind_dn: cn=svc,dc=example,dc=com
      bind_password: x
      user_search: {base_dn: "dc=example,dc=com", filter: "(uid={username})"}
`
	samlEntry = `      client_id: portcullis
    - id: corp
      protocol: SAML
      entity_id: https://sso.example.com
      metadata_url: https://sso.example.com/saml/metadata
`
)

// TestWarningsOfWhatWeakensASetUp: what serve used to log only at start (a
// plain-http public_url, plain ldap://, a SAML key or an assertion key
// generated at start) is a Warning, keyed, so that check prints it too; the
// same set-ups in development (loopback) or with the key given are not.
func TestWarningsOfWhatWeakensASetUp(t *testing.T) {
	for _, tc := range []struct {
		name, old, new string
		want           []Warning
	}{
		{name: "https public_url, OIDC IdP: nothing"},
		{"a plain-http public_url", "https://cvat.example.com", "http://cvat.example.com",
			[]Warning{{"server.public_url", "plain http: session cookies are sent unencrypted; use https outside development"}}},
		{"a plain-http public_url on loopback is development", "https://cvat.example.com", "http://127.0.0.1:9772", nil},
		{"a plain-http public_url on localhost is development", "https://cvat.example.com", "http://localhost:9772", nil},
		{"plain ldap:// to a remote directory", "      client_id: portcullis\n", strings.Replace(plainLDAP, "URL", "ldap://ad.example.com", 1),
			[]Warning{{"sso.identity_providers[1].url", "plain ldap:// without start_tls: passwords cross the network unencrypted; use ldaps:// or start_tls: true outside development"}}},
		{"ldap:// with start_tls", "      client_id: portcullis\n", strings.Replace(plainLDAP, "URL", "ldap://ad.example.com\n      start_tls: true", 1), nil},
		{"ldaps://", "      client_id: portcullis\n", strings.Replace(plainLDAP, "URL", "ldaps://ad.example.com", 1), nil},
		{"plain ldap:// on loopback is development", "      client_id: portcullis\n", strings.Replace(plainLDAP, "URL", "ldap://127.0.0.1:3389", 1), nil},
		{"a SAML IdP without sp_cert_file", "      client_id: portcullis\n", samlEntry,
			[]Warning{{"sso.identity_providers[1].sp_cert_file", "not set: AuthnRequests are signed with a key generated at start, which changes on every restart and differs between replicas; configure sp_cert_file and sp_key_file when the IdP checks request signatures or more than one replica runs"}}},
		{"a SAML IdP with its key pair", "      client_id: portcullis\n", samlEntry + "      sp_cert_file: /etc/portcullis/sp.crt\n      sp_key_file: /etc/portcullis/sp.key\n", nil},
		{"an assertion without a signing key", "https://login.example.com/\n      client_id: portcullis\n", "https://login.example.com/\n      client_id: portcullis\nattribute_pass:\n  jwt: {header: X-Portcullis-Assertion}\n",
			[]Warning{{"attribute_pass.jwt", "no signing_key or signing_key_file: assertions are signed with a key generated at start, so they stop verifying after a restart and differ between replicas; configure a key"}}},
		{"an assertion with signing_key_file", "https://login.example.com/\n      client_id: portcullis\n", "https://login.example.com/\n      client_id: portcullis\nattribute_pass:\n  jwt: {header: X-Portcullis-Assertion, signing_key_file: /etc/portcullis/assertion.pem}\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(strings.Replace(minimal, tc.old, tc.new, 1)), func(string) string { return "" })
			if err != nil {
				t.Fatal(err)
			}
			if got := Warnings(cfg); !slices.Equal(got, tc.want) {
				t.Errorf("warnings:\n%v\nwant:\n%v", got, tc.want)
			}
		})
	}
}

// A comparison of idp with an id no IdP has is warned of in every
// expression over the profile, keyed by it: it never holds, and nothing
// else would say so.
func TestWarningsOfAnUnknownIdP(t *testing.T) {
	config := minimal + `role_mapping:
  roles: [admin, user]
  default: user
  rules:
    - role: admin
      when: 'idp == "compnay" && "cvat-admins" in groups'
attribute_pass:
  headers:
    X-Source: 'idp in ["company", "partner"] ? "sso" : "other"'
rules:
  - name: staff
    path_prefix: /staff/
    when: 'idp != "Company"'
    action: deny
  - name: admin
    path_prefix: /admin/
    action: authenticate
    allow_if: 'idp == "company" && "admin" in roles'
`
	cfg, err := ParseConfig([]byte(config), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(cfg); err != nil {
		t.Fatalf("the configuration is valid, only mistaken: %v", err)
	}
	want := []Warning{
		{"role_mapping.rules[0].when", `idp == "compnay": no identity provider has the id "compnay" (the ids are company), so this is never true`},
		{"attribute_pass.headers.X-Source", `idp in ["company", "partner"]: no identity provider has the id "partner" (the ids are company), so this is never true of it`},
		{"rules[0].when", `idp != "Company": no identity provider has the id "Company" (the ids are company), so this is always true`},
	}
	if got := Warnings(cfg); !slices.Equal(got, want) {
		t.Errorf("warnings:\n%v\nwant:\n%v", got, want)
	}
}

// A condition that finds an email address's domain in its text, as
// email endsWith "@company.com" does, is warned of in every expression over
// the profile, keyed by it: it is true of eve@evil.example@company.com,
// a string with two unquoted @ (no address under RFC 5322, yet some IdPs
// pass one on) that allowed_email_domains refuses (oauth2-proxy's GHSA-c5c4-8r6x-56w3, the
// same test in its domain check); contains and split(email, "@")[1] take
// others' domains too. The matches the warnings suggest, which docs/cvat.md
// and docs/ldap.md write, are no warning.
func TestWarningsOfEmailDomainsReadFromText(t *testing.T) {
	config := minimal + `role_mapping:
  roles: [admin, business, user]
  default: user
  rules:
    - role: admin
      when: 'email_verified && email endsWith "@company.com"'
    - role: business
      when: 'email matches "^[^@]+@contractor[.]example$" || claims.mail matches "^[^@]+@research[.]example[.]com$"'
attribute_pass:
  headers:
    X-Partner: 'lower(email) endsWith "partner.example" ? "yes" : "no"'
rules:
  - name: staff
    path_prefix: /staff/
    action: authenticate
    allow_if: 'split(email, "@")[1] == "company.com"'
  - name: research
    path_prefix: /research/
    action: authenticate
    when: 'claims.mail contains "@research.example.com"'
`
	cfg, err := ParseConfig([]byte(config), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(cfg); err != nil {
		t.Fatalf("the configuration is valid, only mistaken: %v", err)
	}
	want := []Warning{
		{"role_mapping.rules[0].when", `email endsWith "@company.com": also true of eve@evil.example@company.com, a string with two unquoted @, no address under RFC 5322 (an @ in a local part must be quoted) but one that some IdPs pass on, so their verification vouches for nothing at the domain (allowed_email_domains refuses it); write email matches "^[^@]+@company[.]com$"`},
		{"attribute_pass.headers.X-Partner", `lower(email) endsWith "partner.example": also true of eve@evilpartner.example, an address at another domain; write lower(email) matches "^[^@]+@([^@]+[.])?partner[.]example$"`},
		{"rules[0].allow_if", `split(email, "@")[1]: the text after the first @, not the domain: company.com of eve@company.com@evil.example, a string with two unquoted @, no address under RFC 5322 (an @ in a local part must be quoted) but one that some IdPs pass on, so their verification vouches for nothing at the domain (allowed_email_domains refuses it); write email matches "^[^@]+@company[.]com$" with your domain`},
		{"rules[1].when", `claims.mail contains "@research.example.com": also true of eve@research.example.com.evil.example, an address at another domain; write claims.mail matches "^[^@]+@research[.]example[.]com$"`},
	}
	if got := Warnings(cfg); !slices.Equal(got, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(warningLines(got), "\n"), strings.Join(warningLines(want), "\n"))
	}
}

// A rule's allow_if that admits by a group's name is warned of as
// role_mapping's when is: both decide who gets in.
func TestWarningsOfGroupNamesInAllowIf(t *testing.T) {
	config := strings.Replace(minimal, "      client_id: portcullis\n", "      client_id: portcullis\n    - id: github\n      preset: github\n      client_id: gh\n", 1) + `rules:
  - name: admin
    path_prefix: /admin/
    action: authenticate
    allow_if: '"cvat-admins" in groups'
`
	cfg, err := ParseConfig([]byte(config), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(cfg); err != nil {
		t.Fatalf("the configuration is valid: %v", err)
	}
	got := Warnings(cfg)
	if len(got) == 0 || got[0].Key != "rules[0].allow_if" || !strings.HasPrefix(got[0].Message, `"cvat-admins" in groups: github (preset github) gives its users' organisations as groups`) {
		t.Errorf("warnings:\n%s\nwant rules[0].allow_if warned of as a group name github's users can take", strings.Join(warningLines(got), "\n"))
	}
}

// What a reviewer of the rules would point out is a warning keyed by the
// rule: one that an earlier rule leaves nothing to match, a bypass of every
// path, and a trusted proxy range that takes in public addresses by the
// million. Nothing in the shipped examples is one of these: each case that
// wants no warning is a pattern they use.
func TestWarningsOfRulesAndTrustedProxies(t *testing.T) {
	shadowed := func(key string, by int, name string) Warning {
		return Warning{key, fmt.Sprintf("never matches: rules[%d] (%s) comes first and takes every request this rule would (the first rule that matches wins); move this rule above it, or remove it", by, name)}
	}
	public := func(key, scope string) Warning {
		return Warning{key, "bypass on every path with no headers, sources or when: " + scope + " reaches the upstream without a login or identity headers; if only part of the application is public, narrow this rule with path_prefix, or with headers that only credentials carry"}
	}
	trusted := func(key, cidr string) Warning {
		return Warning{key, cidr + " includes public addresses: any client that connects from one is taken for a proxy, and its X-Forwarded-For sets the client address that sources rules, the logs and LDAP's failed-login limit see; list only your proxies' own addresses or ranges"}
	}
	bypassDefault := Warning{"default_action", "bypass: every request that no rule takes reaches the upstream without a login or identity headers; if only some paths are public, set authenticate and bypass those paths by rule"}
	for _, tc := range []struct {
		name, yaml string
		want       []Warning
	}{
		// Shadowed rules.
		{"a prefix leaves nothing to a longer prefix after it", `rules:
  - {name: api, path_prefix: /api/, action: authenticate}
  - {name: api-admin, path_prefix: /api/admin, action: deny}
`, []Warning{shadowed("rules[1]", 0, "api")}},
		{"a prefix leaves nothing to an exact path under it", `rules:
  - {name: api, path_prefix: /api/, action: authenticate}
  - {name: users, path: /api/users, action: deny}
`, []Warning{shadowed("rules[1]", 0, "api")}},
		{"the same exact path twice", `rules:
  - {name: health, path: /health, action: bypass}
  - {name: health-again, path: /health, methods: [GET], action: deny}
`, []Warning{shadowed("rules[1]", 0, "health")}},
		{"a prefix leaves nothing to a path_regex whose every match starts with it", `rules:
  - {name: api, path_prefix: /api/, action: authenticate}
  - {name: versions, path_regex: '/api/v[0-9]+/admin', action: deny}
`, []Warning{shadowed("rules[1]", 0, "api")}},
		{"a rule with no conditions leaves nothing to any rule after it", `rules:
  - {name: everyone, action: authenticate, allow_if: '"staff" in groups'}
  - {name: admin, path_prefix: /admin, action: authenticate}
  - {name: api, path_prefix: /api/, action: deny}
`, []Warning{shadowed("rules[1]", 0, "everyone"), shadowed("rules[2]", 0, "everyone")}},
		{"methods that include the later rule's, written in any case", `rules:
  - {name: api-writes, path_prefix: /api/, methods: [post, PUT, DELETE], action: deny}
  - {name: api-admin-delete, path_prefix: /api/admin/, methods: [DELETE], action: authenticate}
`, []Warning{shadowed("rules[1]", 0, "api-writes")}},
		{"methods leave the later rule's other methods", `rules:
  - {name: api-writes, path_prefix: /api/, methods: [POST], action: deny}
  - {name: api-admin-reads, path_prefix: /api/admin/, methods: [GET, POST], action: authenticate}
  - {name: api-admin, path_prefix: /api/admin/, action: authenticate}
`, nil},
		{"headers leave the requests without them (CVAT's credentials rule)", `rules:
  - name: cvat-api-credentials
    path_prefix: /api/
    headers: {Authorization: '^(Basic|Token|Bearer) '}
    action: bypass
  - {name: cvat-health, path: /api/server/health/, methods: [GET, HEAD], action: bypass}
`, nil},
		{"sources leave the other clients", `rules:
  - {name: office, path_prefix: /admin, sources: [10.0.0.0/8], action: authenticate}
  - {name: admin, path_prefix: /admin/users, action: deny}
`, nil},
		{"when leaves what it is false of", `rules:
  - {name: hours, path_prefix: /admin, when: 'now.Hour() < 8', action: deny}
  - {name: admin, path_prefix: /admin/users, action: authenticate}
`, nil},
		{"a longer prefix first leaves the shorter its other paths", `rules:
  - {name: api-admin, path_prefix: /api/admin, action: deny}
  - {name: api, path_prefix: /api/, action: authenticate}
`, nil},
		{"/admin/ leaves /admin", `rules:
  - {name: admin-tree, path_prefix: /admin/, action: deny}
  - {name: admin, path: /admin, action: authenticate}
`, nil},
		{"an exact path leaves the paths below it to a prefix", `rules:
  - {name: api-root, path: /api, action: bypass}
  - {name: api, path_prefix: /api, action: authenticate}
`, nil},
		{"a path_regex first that is no path or prefix is not read for what it takes", `rules:
  - {name: api-or-docs, path_regex: '/(api|docs)/.*', action: authenticate}
  - {name: api, path: /api/x, action: deny}
`, nil},
		{"a path_regex first that is a prefix leaves nothing to a path under it", `rules:
  - {name: everything, path_regex: '/.*', action: authenticate}
  - {name: api, path: /api/x, action: deny}
`, []Warning{shadowed("rules[1]", 0, "everything")}},
		{"a prefix leaves nothing to a path_regex anchored again under it", `rules:
  - {name: api, path_prefix: /api/, action: authenticate}
  - {name: api-any, path_regex: '^/api/.*$', action: deny}
`, []Warning{shadowed("rules[1]", 0, "api")}},

		// Bypass of every path.
		{"bypass with path_prefix /", `rules:
  - {name: public, path_prefix: /, action: bypass}
`, []Warning{public("rules[0]", "every request")}},
		{"bypass with no conditions, after the private parts", `rules:
  - {name: private, path_prefix: /private/, action: authenticate}
  - {name: public, action: bypass}
`, []Warning{public("rules[1]", "every request that no rule above it takes")}},
		{"bypass of reads on every path", `rules:
  - {name: read-only, methods: [GET, HEAD], action: bypass}
`, []Warning{public("rules[0]", "every GET or HEAD request")}},
		{"bypass of writes on every path", `rules:
  - {name: webhooks, methods: [POST], action: bypass}
`, []Warning{public("rules[0]", "every POST request")}},
		{"bypass of CORS preflights on every path", `rules:
  - {name: preflight, methods: [OPTIONS], action: bypass}
`, nil},
		{"bypass of requests with credentials on every path (Gitea)", `rules:
  - {name: gitea-credentials, headers: {Authorization: '^(Basic|token|Bearer) '}, action: bypass}
`, nil},
		{"bypass after a rule that takes every request is warned of as never matching", `rules:
  - {name: everyone, action: authenticate}
  - {name: public, action: bypass}
`, []Warning{shadowed("rules[1]", 0, "everyone")}},
		{"default_action bypass", `rules:
  - {name: private, path_prefix: /private/, action: authenticate}
default_action: bypass
`, []Warning{bypassDefault}},
		{"default_action bypass after a rule that takes every request never applies", `rules:
  - {name: everyone, action: authenticate}
default_action: bypass
`, nil},

		// Trusted proxies.
		{"every IPv4 and IPv6 address trusted", `server:
  trusted_proxies: [0.0.0.0/0, "::/0"]
`, []Warning{trusted("server.trusted_proxies[0]", "0.0.0.0/0"), trusted("server.trusted_proxies[1]", "::/0")}},
		{"half of IPv4, an /8 of public space, all of global IPv6", `server:
  trusted_proxies: [128.0.0.0/1, 52.0.0.0/8, "2000::/3"]
`, []Warning{trusted("server.trusted_proxies[0]", "128.0.0.0/1"), trusted("server.trusted_proxies[1]", "52.0.0.0/8"), trusted("server.trusted_proxies[2]", "2000::/3")}},
		{"private ranges, however wide (a cluster's pod CIDR)", `server:
  trusted_proxies: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 127.0.0.0/8, "fc00::/7"]
`, nil},
		{"a public IPv4 /9 and IPv6 /17 are narrower than any client on the internet", `server:
  trusted_proxies: [52.0.0.0/9, "2a00::/17"]
`, nil},
		{"a public IPv6 /16", `server:
  trusted_proxies: ["2a00::/16"]
`, []Warning{trusted("server.trusted_proxies[0]", "2a00::/16")}},
		{"a CDN's published ranges", `server:
  trusted_proxies: [173.245.48.0/20, 104.16.0.0/13, 203.0.113.9, "2a06:98c0::/29", "2606:4700::/32"]
`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config := minimal + tc.yaml
			if strings.HasPrefix(tc.yaml, "server:\n") {
				config = strings.Replace(minimal, "server:\n", tc.yaml, 1)
			}
			cfg, err := ParseConfig([]byte(config), func(string) string { return "" })
			if err != nil {
				t.Fatal(err)
			}
			if err := Check(cfg); err != nil {
				t.Fatalf("the configuration is valid: %v", err)
			}
			if got := Warnings(cfg); !slices.Equal(got, tc.want) {
				t.Errorf("warnings:\n%v\nwant:\n%v", strings.Join(warningLines(got), "\n"), strings.Join(warningLines(tc.want), "\n"))
			}
		})
	}
}

func warningLines(ws []Warning) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.String())
	}
	return out
}

// A SAML IdP answers with a POST from its own pages to the ACS; over plain
// http the login's cookie is Lax (browsers refuse None without Secure), so
// a browser withholds it from that POST when the IdP is on another site,
// and every SP-initiated login fails with state_cookie_missing. check says
// so before the first login does. A site is the scheme and the registrable
// domain (Chromium's schemeful same-site), or the whole host for an IP
// address or a name with no registrable domain (localhost).
func TestWarningOfSAMLAnswersFromAnotherSiteOverPlainHTTP(t *testing.T) {
	saml := func(public, idpURL string) string {
		key := "metadata_url"
		if strings.HasSuffix(idpURL, "/saml/sso") {
			key = "sso_url"
		}
		return strings.Replace(minimal, "https://cvat.example.com", public, 1) + `    - id: corp
      protocol: SAML
      entity_id: https://sso.example.com
      ` + key + `: ` + idpURL + `
      sp_cert_file: /etc/portcullis/sp.crt
      sp_key_file: /etc/portcullis/sp.key
`
	}
	crossSite := func(key, idpSite string) []Warning {
		return []Warning{{"sso.identity_providers[1]." + key, "this SAML IdP's pages are on another site (" + idpSite + ") than server.public_url, which is plain http: " +
			"browsers send the login's cookie with the IdP's answer, a POST from its site, only when the cookie is SameSite=None, which they accept only with Secure, over https; " +
			"so every login started here fails with state_cookie_missing. Serve the proxy on https, or, in development, put the IdP on the proxy's host (another port is fine)"}}
	}
	plainHTTP := Warning{"server.public_url", "plain http: session cookies are sent unencrypted; use https outside development"}
	for _, tc := range []struct {
		name, config string
		want         []Warning
	}{
		{"https public_url: the cookie is SameSite=None", saml("https://cvat.example.com", "https://sso.example.org/saml/metadata"), nil},
		{"both on 127.0.0.1, other ports (the demo)", saml("http://127.0.0.1:9772", "http://127.0.0.1:9774/metadata"), nil},
		{"both on localhost", saml("http://localhost:9772", "http://localhost:8080/realms/cvat/protocol/saml/descriptor"), nil},
		{"localhost and 127.0.0.1 are two sites", saml("http://localhost:9772", "http://127.0.0.1:8080/metadata"), crossSite("metadata_url", "http://127.0.0.1")},
		{"another registrable domain", saml("http://127.0.0.1:9772", "http://sso.example.org/saml/sso"), crossSite("sso_url", "http://example.org")},
		{"a sibling subdomain over http is the same site", saml("http://cvat.example.com", "http://sso.example.com/saml/metadata"), []Warning{plainHTTP}},
		{"the same domain over https is another site (schemeful)", saml("http://cvat.example.com", "https://sso.example.com/saml/metadata"), append([]Warning{plainHTTP}, crossSite("metadata_url", "https://example.com")...)},
		{"subdomains under a public suffix are sites of their own", saml("http://cvat.github.io", "http://sso.github.io/saml/metadata"), append([]Warning{plainHTTP}, crossSite("metadata_url", "http://sso.github.io")...)},
		{"names under localhost are sites of their own", saml("http://cvat.localhost:9772", "http://keycloak.localhost:8080/metadata"), crossSite("metadata_url", "http://keycloak.localhost")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tc.config), func(string) string { return "" })
			if err != nil {
				t.Fatal(err)
			}
			if got := Warnings(cfg); !slices.Equal(got, tc.want) {
				t.Errorf("warnings:\n%v\nwant:\n%v", got, tc.want)
			}
		})
	}
}

// TestIdPEntryKeysItDoesNotRead: a key that the entry it is written on does
// not read (another protocol's, another preset's) is said by check, keyed:
// as a warning where the entry works without it, and refused where its
// being ignored lets users sign in whom it was written to keep out.
func TestIdPEntryKeysItDoesNotRead(t *testing.T) {
	const (
		oidc   = "protocol: OIDC\n      server_url: https://login.example.com/\n      client_id: portcullis\n"
		oauth2 = "protocol: OAUTH2\n      auth_url: https://login.example.com/authorize\n      token_url: https://login.example.com/token\n      userinfo_url: https://login.example.com/userinfo\n      client_id: portcullis\n"
		saml   = "protocol: SAML\n      entity_id: https://sso.example.com\n      metadata_url: https://sso.example.com/saml/metadata\n      sp_cert_file: ../idp/testdata/saml-fuzz-sp.crt\n      sp_key_file: ../idp/testdata/saml-fuzz-sp.key\n"
		ldap   = "protocol: LDAP\n      url: ldaps://ad.example.com\n      user_search: {base_dn: \"dc=example,dc=com\", filter: \"(uid={username})\"}\n"
		key    = "sso.identity_providers[0]."
	)
	for _, tc := range []struct {
		name, entry        string
		problems, warnings []string
	}{
		{name: "an OIDC entry with its own keys: nothing", entry: oidc + "      client_secret: s\n      scopes: [openid, email]\n      token_auth_method: client_secret_post\n      claims: {groups: roles}\n"},
		{name: "a SAML entry with its own keys: nothing", entry: saml + "      attribute_mapping: {email: mail}\n"},
		{name: "an LDAP entry with its own keys: nothing", entry: ldap + "      attribute_mapping: {groups: memberOf}\n"},
		{name: "preset keys where the preset reads them: nothing", entry: "preset: okta\n      domain: acme.okta.com\n      authorization_server: default\n      client_id: portcullis\n"},
		{name: "cognito's region with its pool: nothing", entry: "preset: cognito\n      region: us-east-1\n      user_pool_id: us-east-1_AbC123xyz\n      client_id: portcullis\n"},
		{name: "github's own endpoints and scopes: nothing", entry: "preset: github\n      base_url: https://github.example.com\n      scopes: [read:user]\n      client_id: portcullis\n"},
		{name: "client_secret on SAML", entry: saml + "      client_secret: s\n",
			warnings: []string{key + "client_secret: ignored: a SAML entry does not read it (OIDC and OAUTH2 entries do)"}},
		{name: "claims on SAML say where SAML maps attributes", entry: saml + "      claims: {groups: roles}\n",
			warnings: []string{key + "claims: ignored: a SAML entry does not read it (OIDC and OAUTH2 entries do); SAML and LDAP entries map attributes with attribute_mapping"}},
		{name: "the OIDC client's keys on LDAP, each", entry: ldap + "      client_id: x\n      scopes: [openid]\n      token_auth_method: client_secret_basic\n",
			warnings: []string{
				key + "client_id: ignored: an LDAP entry does not read it (OIDC and OAUTH2 entries do)",
				key + "scopes: ignored: an LDAP entry does not read it (OIDC and OAUTH2 entries do)",
				key + "token_auth_method: ignored: an LDAP entry does not read it (OIDC and OAUTH2 entries do)",
			}},
		{name: "SAML's keys on OIDC", entry: oidc + "      entity_id: https://sso.example.com\n      metadata_url: https://sso.example.com/md\n      x509_cert: x\n      sso_url: https://sso.example.com/sso\n      slo_url: https://sso.example.com/slo\n      sp_cert_file: /x\n      sp_key_file: /y\n",
			warnings: []string{
				key + "entity_id: ignored: an OIDC entry does not read it (SAML entries do)",
				key + "metadata_url: ignored: an OIDC entry does not read it (SAML entries do)",
				key + "x509_cert: ignored: an OIDC entry does not read it (SAML entries do)",
				key + "sso_url: ignored: an OIDC entry does not read it (SAML entries do)",
				key + "slo_url: ignored: an OIDC entry does not read it (SAML entries do)",
				key + "sp_cert_file: ignored: an OIDC entry does not read it (SAML entries do)",
				key + "sp_key_file: ignored: an OIDC entry does not read it (SAML entries do)",
			}},
		{name: "attribute_mapping on OAUTH2 says where OAUTH2 maps claims", entry: oauth2 + "      attribute_mapping: {email: mail}\n",
			warnings: []string{key + "attribute_mapping: ignored: an OAUTH2 entry does not read it (SAML and LDAP entries do); OIDC and OAUTH2 entries map claims with claims"}},
		{name: "LDAP's keys on SAML", entry: saml + "      url: ldaps://ad.example.com\n      bind_dn: cn=x\n      bind_password: p\n      start_tls: true\n      ca_file: /ca.pem\n      insecure_skip_verify: true\n      user_search: {base_dn: \"dc=x\"}\n      group_search: {filter: \"(member={dn})\"}\n",
			warnings: []string{
				key + "url: ignored: a SAML entry does not read it (LDAP entries do)",
				key + "bind_dn: ignored: a SAML entry does not read it (LDAP entries do)",
				key + "bind_password: ignored: a SAML entry does not read it (LDAP entries do)",
				key + "start_tls: ignored: a SAML entry does not read it (LDAP entries do)",
				key + "ca_file: ignored: a SAML entry does not read it (LDAP entries do)",
				key + "insecure_skip_verify: ignored: a SAML entry does not read it (LDAP entries do)",
				key + "user_search: ignored: a SAML entry does not read it (LDAP entries do)",
				key + "group_search: ignored: a SAML entry does not read it (LDAP entries do)",
			}},
		{name: "server_url on OAUTH2", entry: oauth2 + "      server_url: https://login.example.com/\n",
			warnings: []string{key + "server_url: ignored: an OAUTH2 entry does not read it (OIDC entries do)"}},
		{name: "OAUTH2's endpoints on OIDC, which discovers them", entry: oidc + "      auth_url: https://login.example.com/a\n      token_url: https://login.example.com/t\n      userinfo_url: https://login.example.com/u\n",
			warnings: []string{
				key + "auth_url: ignored: an OIDC entry does not read it (OAUTH2 entries do)",
				key + "token_url: ignored: an OIDC entry does not read it (OAUTH2 entries do)",
				key + "userinfo_url: ignored: an OIDC entry does not read it (OAUTH2 entries do)",
			}},
		{name: "preset keys on an entry without a preset", entry: oidc + "      tenant: 72f988bf-86f1-41af-91ab-2d7cd011db47\n      base_url: https://login.example.com\n      domain: login.example.com\n      region: us-east-1\n      user_pool_id: us-east-1_AbC123xyz\n      authorization_server: default\n",
			warnings: []string{
				key + "base_url: ignored: an OIDC entry without a preset does not read it (presets github, gitlab and azure do)",
				key + "domain: ignored: an OIDC entry without a preset does not read it (presets okta, auth0 and cognito over OAUTH2 do)",
				key + "tenant: ignored: an OIDC entry without a preset does not read it (preset azure does)",
				key + "region: ignored: an OIDC entry without a preset does not read it (preset cognito over OIDC does)",
				key + "user_pool_id: ignored: an OIDC entry without a preset does not read it (preset cognito over OIDC does)",
				key + "authorization_server: ignored: an OIDC entry without a preset does not read it (preset okta does)",
			}},
		{name: "another preset's key", entry: "preset: okta\n      domain: acme.okta.com\n      tenant: 72f988bf-86f1-41af-91ab-2d7cd011db47\n      client_id: portcullis\n",
			warnings: []string{key + "tenant: ignored: an entry of preset okta does not read it (preset azure does)"}},
		{name: "cognito's domain beside its pool", entry: "preset: cognito\n      domain: acme.auth.us-east-1.amazoncognito.com\n      user_pool_id: us-east-1_AbC123xyz\n      client_id: portcullis\n",
			warnings: []string{key + "domain: ignored: an entry of preset cognito over OIDC does not read it (presets okta, auth0 and cognito over OAUTH2 do)"}},
		{name: "domain on google is refused: it keeps no one out", entry: "preset: google\n      domain: company.com\n      client_id: portcullis\n",
			problems: []string{key + "domain: not read by preset google: any Google account would sign in, whatever its domain; to admit only your Workspace's addresses, list its domains in allowed_email_domains"}},
		{name: "allowed_groups on google is refused: Google sends no groups", entry: "preset: google\n      client_id: portcullis\n      allowed_groups: [staff@company.com]\n",
			problems: []string{key + "allowed_groups: admits no one: Google sends no groups (a Workspace's groups are in its Cloud Identity and Admin SDK Directory APIs, which portcullis does not call); to admit only your Workspace, list its domains in allowed_email_domains, or admit by its hd claim in a condition: claims.hd == \"company.com\""}},
		{name: "allowed_groups on google with claims.groups mapped is taken", entry: "preset: google\n      client_id: portcullis\n      claims: {groups: hd}\n      allowed_groups: [company.com]\n"},
		{name: "allowed_groups on cognito's hosted UI is refused: its userInfo has no groups", entry: "preset: cognito\n      domain: acme.auth.us-east-1.amazoncognito.com\n      client_id: portcullis\n      allowed_groups: [staff]\n",
			problems: []string{key + "allowed_groups: admits no one: an entry of preset cognito with domain alone speaks OAUTH2 and reads the user from userInfo, which has no groups; give user_pool_id (and region) instead, to read cognito:groups from the ID token"}},
		{name: "allowed_groups on cognito's user pool is taken", entry: "preset: cognito\n      user_pool_id: us-east-1_AbC123xyz\n      client_id: portcullis\n      allowed_groups: [staff]\n"},
		{name: "allowed_groups on huggingface is taken: groups are its orgs", entry: "preset: huggingface\n      client_id: portcullis\n      allowed_groups: [cvat-ai]\n"},
		{name: "allowed_groups on auth0 is taken: an Action adds a groups claim", entry: "preset: auth0\n      domain: acme.us.auth0.com\n      client_id: portcullis\n      allowed_groups: [staff]\n"},
		{name: "domain on github is refused: users would sign in at github.com", entry: "preset: github\n      domain: github.example.com\n      client_id: portcullis\n",
			problems: []string{key + "domain: not read by preset github: users would sign in at github.com, where anyone can take an organization or team name; GitHub Enterprise's address is base_url"}},
		{name: "server_url on github is refused: users would sign in at github.com", entry: "preset: github\n      server_url: https://github.example.com\n      client_id: portcullis\n",
			problems: []string{key + "server_url: not read by preset github: users would sign in at github.com, where anyone can take an organization or team name; GitHub Enterprise's address is base_url"}},
		{name: "domain on gitlab is refused: users would sign in at gitlab.com", entry: "preset: gitlab\n      domain: gitlab.example.com\n      client_id: portcullis\n",
			problems: []string{key + "domain: not read by preset gitlab: users would sign in at gitlab.com, where anyone can take a group name; a self-managed GitLab's address is base_url"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := strings.Replace(minimal, "protocol: OIDC\n      server_url: https://login.example.com/\n      client_id: portcullis\n", tc.entry, 1)
			cfg, err := ParseConfig([]byte(yaml), func(string) string { return "" })
			if err != nil {
				t.Fatal(err)
			}
			var problems []string
			if err := Check(cfg); err != nil {
				problems = strings.Split(err.Error(), "\n")
			}
			if !slices.Equal(problems, tc.problems) {
				t.Errorf("problems:\n  %s\nwant:\n  %s", strings.Join(problems, "\n  "), strings.Join(tc.problems, "\n  "))
			}
			if got := warningLines(Warnings(cfg)); !slices.Equal(got, tc.warnings) {
				t.Errorf("warnings:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.warnings, "\n  "))
			}
		})
	}
}

// TestUnknownAdmissionKeysPointToAdmission: an option that another proxy
// (oauth2-proxy, Pomerium, Vouch) limits who signs in with, written here, is
// an unknown key whose message names what limits sign-in in portcullis, on
// an IdP entry and wherever else it is written; never a key close in
// spelling that admits anyone (email_domain, domain).
func TestUnknownAdmissionKeysPointToAdmission(t *testing.T) {
	const (
		entry     = "entry"
		rule      = "rule"
		entryKey  = "sso.identity_providers[0]."
		domainsOn = "did you mean allowed_email_domains? It admits only verified addresses at the domains it lists; email_domain only picks this IdP when sso.selection_mode is email_address, and admits anyone"
		domainsAt = "who may sign in is set on each identity provider: allowed_email_domains on its sso.identity_providers entry; an entry's email_domain only picks the IdP, and admits anyone"
		groupsAt  = "who may sign in is set on each identity provider: allowed_groups on its sso.identity_providers entry; a rule admits by group with allow_if: '\"staff\" in groups'"
		users     = "portcullis keeps no list of users: admit by email domain or group on each identity provider (allowed_email_domains, allowed_groups), or name users in a condition, a rule's allow_if or a role_mapping rule's when with role_mapping.default \"\" (whom no rule gives a role is refused at login): 'email_verified && email in [\"ana@company.com\"]'"
		roles     = "an IdP's roles are admitted as groups: map their claim with claims.groups (attribute_mapping.groups on SAML and LDAP), then list them in allowed_groups; portcullis's own roles come from role_mapping, and a rule requires one with allow_if: '\"admin\" in roles'"
		google    = "Google sends no groups (a Workspace's groups are in its Directory API), so none can be checked here: list the Workspace's domains in allowed_email_domains"
	)
	for _, tc := range []struct {
		name, where, key, want string
	}{
		{"oauth2-proxy's email_domains on an entry", entry, "email_domains", domainsOn},
		{"oauth2-proxy's flag spelling on an entry", entry, "email-domain", domainsOn},
		{"camel case on an entry", entry, "emailDomains", domainsOn},
		{"Pomerium's allowed_domains on an entry", entry, "allowed_domains", domainsOn},
		{"Vouch's domains on an entry", entry, "domains", "to limit who signs in by email domain: allowed_email_domains; domain is only where an okta, auth0 or cognito tenant is"},
		{"email_domains at the top", "", "email_domains", domainsAt},
		{"email_domain at the top", "", "email_domain", domainsAt},
		{"email_domain in sso", "sso", "email_domain", domainsAt},
		{"allowed_email_domains in sso", "sso", "allowed_email_domains", domainsAt},
		{"allowed_domains in a rule", rule, "allowed_domains", domainsAt},
		{"allowed_groups at the top", "", "allowed_groups", groupsAt},
		{"allowed_groups in sso", "sso", "allowed_groups", groupsAt},
		{"allowed_groups in a rule", rule, "allowed_groups", groupsAt},
		{"groups on an entry", entry, "groups", "did you mean allowed_groups? It admits members of any group it lists, named as the IdP sends them"},
		{"oauth2-proxy's gitlab_group on an entry", entry, "gitlab_group", "did you mean allowed_groups? It admits members of any group it lists, named as the IdP sends them"},
		{"oauth2-proxy's keycloak_groups on an entry", entry, "keycloak_groups", "did you mean allowed_groups? It admits members of any group it lists, named as the IdP sends them"},
		{"oauth2-proxy's google_group on an entry", entry, "google_group", google},
		{"oauth2-proxy's google_groups at the top", "", "google_groups", google + " on the preset google entry"},
		{"oauth2-proxy's github_org on an entry", entry, "github_org", "did you mean allowed_organizations? (preset github)"},
		{"oauth2-proxy's github_org at the top", "", "github_org", "who may sign in is set on each identity provider: allowed_organizations on the preset github entry"},
		{"oauth2-proxy's github_team on an entry", entry, "github_team", `did you mean allowed_teams? Each is "org/team-slug" (preset github)`},
		{"allowed_teams in sso", "sso", "allowed_teams", `who may sign in is set on each identity provider: allowed_teams on the preset github entry, each "org/team-slug"`},
		{"require_verified_email in sso", "sso", "require_verified_email", "require_verified_email goes on each sso.identity_providers entry"},
		{"Pomerium's allowed_users on an entry", entry, "allowed_users", users},
		{"Pomerium's allowed_users in a rule", rule, "allowed_users", users},
		{"allowed_emails at the top", "", "allowed_emails", users},
		{"oauth2-proxy's authenticated_emails_file at the top", "", "authenticated_emails_file", users},
		{"oauth2-proxy's github_users on an entry", entry, "github_users", users},
		{"oauth2-proxy's allowed_roles on an entry", entry, "allowed_roles", roles},
		{"allowed_role in a rule", rule, "allowed_role", roles},
		// A slip of the keyboard near email_domain is still guessed, and
		// the guess says what it does not do.
		{"a misspelt email_domain", entry, "emial_domain", "did you mean email_domain? It only picks this IdP when sso.selection_mode is email_address, and admits anyone; to limit who signs in use allowed_email_domains"},
		{"mail_domains, close to email_domain", entry, "mail_domains", "did you mean email_domain? It only picks this IdP when sso.selection_mode is email_address, and admits anyone; to limit who signs in use allowed_email_domains"},
		{"a singular of an admission key", entry, "allowed_email_domain", domainsOn},
		{"a misspelt admission key is still guessed", entry, "alowed_groups", "did you mean allowed_groups?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml, key := withKeyAt(tc.where, tc.key)
			err := checkYAML(t, yaml, nil)
			want := key + ": unknown key (" + tc.want + ")"
			if err == nil || err.Error() != want {
				t.Errorf("got  %v\nwant %s", err, want)
			}
		})
	}
}

// withKeyAt is minimal with key written where: "entry" (its IdP entry),
// "rule" (a rule), "sso", "session", or "" (the top), and the path check
// names it by.
func withKeyAt(where, key string) (yaml, path string) {
	switch where {
	case "entry":
		return strings.Replace(minimal, "      client_id: portcullis\n", "      client_id: portcullis\n      "+key+": [company.com]\n", 1),
			"sso.identity_providers[0]." + key
	case "rule":
		return minimal + "rules:\n  - name: r\n    action: authenticate\n    " + key + ": [company.com]\n", "rules[0]." + key
	case "sso", "session":
		return strings.Replace(minimal, where+":\n", where+":\n  "+key+": [company.com]\n", 1), where + "." + key
	}
	return key + ": [company.com]\n" + minimal, key
}

// TestUnknownOAuth2ProxyKeysPointToTheirEquivalent: an oauth2-proxy option
// pasted into the YAML, as its config file spells it (or as its flag, or
// camel-cased as its alpha config), is an unknown key whose message starts
// with the key that does its work here, from the top, or says there is
// none; an entry's key is named as on the entry where it is written there,
// and placed on an entry where it is written elsewhere.
func TestUnknownOAuth2ProxyKeysPointToTheirEquivalent(t *testing.T) {
	for _, tc := range []struct {
		where, key, want string
	}{
		{"", "cookie_secret", "did you mean session.keys? "},
		{"session", "cookie_secret", "did you mean session.keys? "},
		{"", "cookie-secret", "did you mean session.keys? "},
		{"", "cookieSecret", "did you mean session.keys? "},
		{"entry", "cookie_secret", "did you mean session.keys? "},
		{"", "cookie_expire", "did you mean session.lifetime? "},
		{"", "cookie_refresh", "did you mean session.refresh? "},
		{"", "cookie_name", "did you mean session.cookie_name?"},
		{"", "cookie_domain", "no equivalent: "},
		{"session", "cookie_domains", "no equivalent: "},
		{"", "cookie_samesite", "no equivalent: "},
		{"", "cookie_secure", "no equivalent: "},
		{"", "session_store_type", "did you mean session.store? "},
		{"", "redis_connection_url", "did you mean session.redis.url? "},
		{"", "upstreams", "did you mean upstream.url? "},
		{"", "skip_auth_routes", "a rule with rules[].action: bypass"},
		{"", "skip_auth_regex", "a rule with rules[].action: bypass"},
		{"", "skip-auth-route", "a rule with rules[].action: bypass"},
		{"", "skip_auth_preflight", "a rule with rules[].methods: [OPTIONS]"},
		{"entry", "oidc_issuer_url", "did you mean server_url?"},
		{"", "oidc_issuer_url", "server_url on each sso.identity_providers entry"},
		{"entry", "oidc_groups_claim", "did you mean claims.groups?"},
		{"entry", "groupsClaim", "did you mean claims.groups?"},
		{"", "oidc_groups_claim", "claims.groups on each sso.identity_providers entry"},
		{"entry", "oidc_email_claim", "did you mean claims.email?"},
		{"entry", "redirect_url", "not configured: "},
		{"", "redirect_url", "not configured: "},
		{"entry", "provider", "did you mean protocol? "},
		{"", "provider", "each identity provider is an sso.identity_providers entry"},
		{"sso", "providers", "each identity provider is an sso.identity_providers entry"},
		{"", "http_address", "did you mean server.listen? "},
		{"", "reverse_proxy", "did you mean server.trusted_proxies? "},
		{"", "trusted_proxy_ips", "did you mean server.trusted_proxies? "},
		{"", "skip_jwt_bearer_tokens", "no equivalent: portcullis verifies no bearer token"},
		{"", "skip-jwt-bearer-tokens", "no equivalent: portcullis verifies no bearer token"},
		{"", "set_xauthrequest", "no equivalent: "},
		{"", "pass_access_token", "no equivalent: "},
	} {
		t.Run(tc.where+" "+tc.key, func(t *testing.T) {
			yaml, key := withKeyAt(tc.where, tc.key)
			err := checkYAML(t, yaml, nil)
			want := key + ": unknown key (" + tc.want
			if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("got  %v\nwant %s…)", err, want)
			}
		})
	}
}

// TestForeignKeyHintsNameKeysThatExist: every key a hint for another
// proxy's option names is one portcullis has, from the top, on an
// identity_providers entry, or on a rule, so that renaming a key fails here
// rather than leave check pointing at nothing. The names are the hints'
// words joined by '.' or '_' (a key's segments are words) and the key a
// "did you mean" names.
func TestForeignKeyHintsNameKeysThatExist(t *testing.T) {
	// Words of that shape that are not keys: a value of sso.selection_mode
	// and a profile field in an example condition; and what is quoted
	// (a condition's strings: "ana@company.com") is not read.
	notKeys := []string{"email_address", "email_verified"}
	named := regexp.MustCompile(`[a-z]+(?:(?:\[\])?[._][a-z]+)+|did you mean ([a-z]+)\?`)
	quoted := regexp.MustCompile(`"[^"]*"`)
	checked := 0
	for _, f := range foreignKeys {
		hints := []string{f.onEntry}
		if f.elsewhere != f.onEntry {
			hints = append(hints, f.elsewhere)
		}
		for _, hint := range hints {
			for _, m := range named.FindAllStringSubmatch(quoted.ReplaceAllString(hint, ""), -1) {
				name := m[0]
				if m[1] != "" {
					name = m[1]
				}
				if slices.Contains(notKeys, name) {
					continue
				}
				checked++
				if !isKey(name) && !isKey("sso.identity_providers[]."+name) && !isKey("rules[]."+name) {
					t.Errorf("%s names %s, which is no key (hint: %s)", f.names[0], name, hint)
				}
			}
		}
	}
	if checked < 60 {
		t.Errorf("checked only %d names: does the pattern still find them?", checked)
	}
}

// isKey reports whether path ("a.b[].c") is a key of the configuration,
// as check's own walk of a document with only that key, set to null, finds.
func isKey(path string) bool {
	leaf := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
	segs := strings.Split(path, ".")
	for i := len(segs) - 1; i >= 0; i-- {
		name, list := strings.CutSuffix(segs[i], "[]")
		if list {
			leaf = &yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{leaf}}
		}
		leaf = &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: name}, leaf}}
	}
	s := &shape{}
	s.walk(leaf, reflect.TypeFor[Config](), "")
	return len(s.problems) == 0
}

// TestWarningOfSelectionKeysTheModeDoesNotRead: email_domain and weight
// only pick the IdP, each in its own sso.selection_mode; in any other they
// do nothing, and check says so (email_domain above all, which an operator
// may have written to limit who signs in).
func TestWarningOfSelectionKeysTheModeDoesNotRead(t *testing.T) {
	const second = "    - id: partner\n      protocol: OIDC\n      server_url: https://login.partner.example/\n      client_id: portcullis\n"
	for _, tc := range []struct {
		name, mode, keys string
		alone            bool // the one identity provider
		warnings         []string
	}{
		{name: "email_domain under email_address: nothing", mode: "email_address", keys: "      email_domain: company.com\n"},
		{name: "weight under lowest_weight: nothing", mode: "lowest_weight", keys: "      weight: 10\n"},
		{name: "neither key under chooser: nothing", mode: "chooser"},
		{name: "email_domain under the default mode", keys: "      email_domain: company.com\n",
			warnings: []string{"sso.identity_providers[0].email_domain: ignored: only sso.selection_mode email_address reads it, to pick the IdP by the address a user types (the mode is chooser); to limit who signs in use allowed_email_domains"}},
		{name: "email_domain under lowest_weight", mode: "lowest_weight", keys: "      email_domain: company.com\n",
			warnings: []string{"sso.identity_providers[0].email_domain: ignored: only sso.selection_mode email_address reads it, to pick the IdP by the address a user types (the mode is lowest_weight); to limit who signs in use allowed_email_domains"}},
		{name: "weight under chooser", mode: "chooser", keys: "      weight: 10\n",
			warnings: []string{"sso.identity_providers[0].weight: ignored: only sso.selection_mode lowest_weight reads it, to send every login to the entry of lowest weight (the mode is chooser)"}},
		{name: "weight under email_address", mode: "email_address", keys: "      email_domain: company.com\n      weight: 10\n",
			warnings: []string{"sso.identity_providers[0].weight: ignored: only sso.selection_mode lowest_weight reads it, to send every login to the entry of lowest weight (the mode is email_address)"}},
		// With one IdP every login goes to it: GET /login shows no form.
		{name: "email_address with one IdP and no email_domain: nothing", mode: "email_address", alone: true},
		{name: "email_domain under email_address with one IdP", mode: "email_address", alone: true, keys: "      email_domain: company.com\n",
			warnings: []string{"sso.identity_providers[0].email_domain: ignored: with one identity provider every login goes to it, whatever the address (sso.selection_mode email_address asks for none); to limit who signs in use allowed_email_domains"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := strings.Replace(minimal, "      client_id: portcullis\n", "      client_id: portcullis\n"+tc.keys, 1)
			second := second
			if tc.mode == "email_address" {
				second += "      email_domain: partner.example\n"
			}
			if !tc.alone {
				yaml += second
			}
			if tc.mode != "" {
				yaml = strings.Replace(yaml, "sso:\n", "sso:\n  selection_mode: "+tc.mode+"\n", 1)
			}
			cfg, err := ParseConfig([]byte(yaml), func(string) string { return "" })
			if err != nil {
				t.Fatal(err)
			}
			if err := Check(cfg); err != nil {
				t.Fatal(err)
			}
			if got := warningLines(Warnings(cfg)); !slices.Equal(got, tc.warnings) {
				t.Errorf("warnings:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.warnings, "\n  "))
			}
		})
	}
}

// TestPromptIsCheckedUnderItsEntry: an entry's prompt is refused and warned
// of under the key the file has, sso.identity_providers[N].prompt.
func TestPromptIsCheckedUnderItsEntry(t *testing.T) {
	entry := func(keys string) string {
		return strings.Replace(minimal, "      client_id: portcullis\n", "      client_id: portcullis\n"+keys, 1)
	}
	for _, tc := range []struct {
		name, yaml, problem string
		warnings            []string
	}{
		{name: "omit without offline_access: valid and quiet", yaml: entry("      prompt: omit\n")},
		{name: "none is refused", yaml: entry("      prompt: none\n"),
			problem: "sso.identity_providers[0].prompt: none is refused: the IdP then shows no page and fails the login of every user who has no session there (login_required), which no sign-in here can get past; to send no prompt parameter, write omit"},
		{name: "an unknown value is refused", yaml: entry("      prompt: force\n"),
			problem: `sso.identity_providers[0].prompt: unknown value "force" (want auto, omit, or a space-separated list of login, consent and select_account)`},
		{name: "omit with offline_access at an IdP that may not need consent: valid and quiet", yaml: entry("      prompt: omit\n      scopes: [openid, email, offline_access]\n")},
		{name: "google without consent with offline_access is warned of",
			yaml: strings.Replace(strings.Replace(minimal, "      protocol: OIDC\n      server_url: https://login.example.com/\n", "      preset: google\n", 1),
				"      client_id: portcullis\n", "      client_id: portcullis\n      scopes: [openid, email, profile, offline_access]\n      prompt: select_account\n", 1),
			warnings: []string{"sso.identity_providers[0].prompt: with offline_access in scopes and no consent in prompt, Google issues a refresh token only at a user's first consent to this client: " +
				"sessions of later sign-ins last session.lifetime unrefreshed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tc.yaml), func(string) string { return "" })
			if err != nil {
				t.Fatal(err)
			}
			err = Check(cfg)
			if got := fmt.Sprint(err); tc.problem == "" && err != nil || tc.problem != "" && got != tc.problem {
				t.Errorf("Check() = %v\nwant %q", err, tc.problem)
			}
			if got := warningLines(Warnings(cfg)); !slices.Equal(got, tc.warnings) {
				t.Errorf("warnings:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.warnings, "\n  "))
			}
		})
	}
}
