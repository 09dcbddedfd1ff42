package proxy

import (
	"encoding"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/textproto"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/portcullis-proxy/portcullis/attrpass"
	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/rolemap"
	"github.com/portcullis-proxy/portcullis/rules"
)

// Config is the whole portcullis configuration file. Each package owns the
// part of it that it uses; Config only gathers them.
type Config struct {
	Server        ServerConfig    `yaml:"server"`
	Upstream      UpstreamConfig  `yaml:"upstream"`
	Session       SessionConfig   `yaml:"session"`
	SSO           SSOConfig       `yaml:"sso"`
	RoleMapping   rolemap.Config  `yaml:"role_mapping"`
	AttributePass attrpass.Config `yaml:"attribute_pass"`
	Rules         []rules.Config  `yaml:"rules"`
	DefaultAction rules.Action    `yaml:"default_action"`
	Pages         PagesConfig     `yaml:"pages"`

	// shape are the problems decoding meets, each by its key: keys that no
	// field takes, keys given twice and values of the wrong type. Check
	// reports them with every other problem rather than hiding the rest.
	shape []error
	// undecoded are the keys whose values decoding left empty: a value of
	// the wrong type, or a mapping with a key given twice. What that would
	// cause under the same key is no problem of the file's.
	undecoded []string
	// emptyVars are the ${VAR}s that expanded to nothing, by the key of the
	// value that writes them, less those whose value a PORTCULLIS_*
	// variable replaced (applyEnv): a problem of that key says where its
	// emptiness came from (blameEmptyVars).
	emptyVars map[string][]string
}

// ServerConfig is the `server:` block: listeners and how users reach the proxy.
type ServerConfig struct {
	Listen         string   `yaml:"listen"`
	AdminListen    string   `yaml:"admin_listen"`
	PublicURL      string   `yaml:"public_url"`
	AuthPrefix     string   `yaml:"auth_prefix"`
	TrustedProxies []string `yaml:"trusted_proxies"`
	// TrustedProxyCertificateHeaders are client-certificate headers
	// (clientCertificateHeaders, traefik's) that a proxy in front sets on
	// every request, having removed a client's: kept from trusted_proxies,
	// as spelt canonically, and stripped from every other peer.
	TrustedProxyCertificateHeaders []string  `yaml:"trusted_proxy_certificate_headers"`
	TLS                            TLSConfig `yaml:"tls"`
}

// TLSConfig names the certificate and key the proxy listener serves, if any.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// UpstreamConfig is the `upstream:` block: the application behind the proxy.
type UpstreamConfig struct {
	URL string `yaml:"url"`
	// PreserveHost (the default) gives the upstream public_url's host as
	// Host, what browsers send; false gives it upstream.url's. The client's
	// Host never reaches the upstream.
	PreserveHost *bool            `yaml:"preserve_host"`
	Timeouts     UpstreamTimeouts `yaml:"timeouts"`
	TLS          UpstreamTLS      `yaml:"tls"`
	// LogoutCookies are the application's own session cookies, expired by
	// /logout and at every login so that the next person to sign in in the
	// same browser does not inherit the previous one's session at the
	// application, and
	// dropped from bypassed requests, which the application would
	// otherwise log in from them.
	LogoutCookies []string `yaml:"logout_cookies"`
}

// SessionConfig is the `session:` block.
type SessionConfig struct {
	CookieName  string        `yaml:"cookie_name"`
	Keys        []string      `yaml:"keys"`
	Lifetime    time.Duration `yaml:"lifetime"`
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// Refresh is how often a session's user is confirmed at the IdP with
	// the refresh token the login left (OIDC, OAUTH2); 0 never refreshes.
	Refresh time.Duration `yaml:"refresh"`
	// Store is where sessions live: cookie (in the browser, the default)
	// or redis (shared by replicas; see proxy/redis.go).
	Store string              `yaml:"store"`
	Redis session.RedisConfig `yaml:"redis"`
}

// SSOConfig is the `sso:` block: the identity providers and how one is picked.
type SSOConfig struct {
	SelectionMode     string       `yaml:"selection_mode"`
	EnablePKCE        *bool        `yaml:"enable_pkce"`
	IdentityProviders []idp.Config `yaml:"identity_providers"`
}

// Selection modes of sso.selection_mode.
const (
	SelectChooser      = "chooser"
	SelectEmailAddress = "email_address"
	SelectLowestWeight = "lowest_weight"
)

// LoadConfig reads, expands and decodes the configuration file at path, fills
// in defaults and applies the environment overrides. It fails only when the
// file cannot be read or is not YAML; unknown keys, values of the wrong type
// and every other problem are reported by Check, each as
// "path.to.key: what is wrong".
func LoadConfig(path string, getenv func(string) string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(raw, getenv)
}

// ParseConfig is LoadConfig for a configuration already in memory.
func ParseConfig(raw []byte, getenv func(string) string) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg := &Config{}
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		s := shape{emptyAt: map[*yaml.Node][]string{}, emptyVars: map[string][]string{}}
		expandEnv(root, getenv, s.emptyAt)
		s.walk(root, reflect.TypeOf(cfg).Elem(), "")
		cfg.shape, cfg.undecoded, cfg.emptyVars = s.problems, s.undecoded, s.emptyVars
		// Decoding goes on past a value of the wrong type and leaves its
		// field empty. When the walk named every one by its key, Check
		// reports them with the rest; otherwise (the file itself is a list
		// or a string) the decoder's own error says where.
		var te *yaml.TypeError
		if err := root.Decode(cfg); err != nil && (!errors.As(err, &te) || len(te.Errors) > s.decodeErrors) {
			return nil, errors.Join(append(cfg.blameEmptyVars(cfg.shape, false), fmt.Errorf("config: %w", withoutValues(err)))...)
		}
	}
	cfg.applyDefaults()
	cfg.applyEnv(getenv)
	return cfg, nil
}

// DefaultAdminListen is server.admin_listen when the file does not set it:
// reachable only from the host (or the container) the proxy runs on.
const DefaultAdminListen = "127.0.0.1:9773"

// LoadAdminListen reads only server.admin_listen from the configuration file
// at path, expanded and defaulted as LoadConfig does, for `portcullis health`.
// Nothing else in the file is decoded or checked: a secret that the health
// check's environment lacks, or a mistake elsewhere in the file that a reload
// refused while the proxy keeps serving, must not make the check fail.
func LoadAdminListen(path string, getenv func(string) string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read config: %w", err)
	}
	var doc struct {
		Server struct {
			AdminListen string `yaml:"admin_listen"`
		} `yaml:"server"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return "", fmt.Errorf("config: %w", withoutValues(err))
	}
	addr, _ := expandString(doc.Server.AdminListen, getenv)
	setDefault(&addr, DefaultAdminListen)
	return addr, nil
}

// withoutValues is a decoding error without the values yaml.v3 quotes in it
// ("cannot unmarshal !!str `hunter2` into ..."): a secret in the wrong place,
// `redis: ${REDIS_PASSWORD}` for one, would be printed in full, or its first
// seven characters. The line number still says where the mistake is.
func withoutValues(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, msg := range te.Errors {
		start, end := strings.Index(msg, " `"), strings.LastIndex(msg, "` into ")
		if start >= 0 && end > start {
			msg = msg[:start] + msg[end+1:]
		}
		msgs[i] = msg
	}
	return &yaml.TypeError{Errors: msgs}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${VAR} in every scalar value (not in the YAML text, so a
// secret containing YAML syntax cannot change the document's structure), and
// records in empty the VARs of each scalar that expanded to nothing.
func expandEnv(n *yaml.Node, getenv func(string) string, empty map[*yaml.Node][]string) {
	if n.Kind == yaml.ScalarNode {
		var names []string
		if n.Value, names = expandString(n.Value, getenv); len(names) > 0 {
			empty[n] = names
		}
	}
	for _, c := range n.Content {
		expandEnv(c, getenv, empty)
	}
}

// expandString replaces every ${VAR} in s, and names the VARs that are unset
// or empty: getenv does not tell the two apart.
func expandString(s string, getenv func(string) string) (string, []string) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var empty []string
	return envRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := ref[2 : len(ref)-1]
		v := getenv(name)
		if v == "" && !slices.Contains(empty, name) {
			empty = append(empty, name)
		}
		return v
	}), empty
}

// blameEmptyVars is errs with each problem of a key whose value writes a
// ${VAR} that expanded to nothing saying so, and, when overridable, naming
// the PORTCULLIS_* variable that would set that key instead, if there is
// one: the key alone does not say that the file has a value there, and the
// value quoted, if any, is what is left of it. A problem of a value whose
// variables are all set is left as it is (the value is wrong, not the
// environment), and no value is quoted: only the variables' names.
func (c *Config) blameEmptyVars(errs []error, overridable bool) []error {
	if len(c.emptyVars) == 0 {
		return errs
	}
	var overrides map[string]string
	if overridable {
		overrides = c.envOverrides()
	}
	out := make([]error, len(errs))
	for i, err := range errs {
		out[i] = err
		key, _, ok := strings.Cut(err.Error(), ": ")
		names := c.emptyVars[key]
		if !ok || len(names) == 0 {
			continue
		}
		refs := make([]string, len(names))
		for j, name := range names {
			refs[j] = "${" + name + "}"
		}
		verb := "is"
		if len(refs) > 1 {
			verb = "are"
		}
		note := fmt.Sprintf("the file writes %s, which %s unset or empty", joinAnd(refs), verb)
		for over, name := range overrides {
			if within(key, over) {
				note += " (or set " + name + ")"
			}
		}
		out[i] = fmt.Errorf("%w; %s", err, note)
	}
	return out
}

// joinAnd is list as a sentence says it: "a", "a and b", "a, b and c".
func joinAnd(list []string) string {
	if len(list) < 2 {
		return strings.Join(list, "")
	}
	return strings.Join(list[:len(list)-1], ", ") + " and " + list[len(list)-1]
}

// within reports whether path is key or a key below it (any path, for "").
func within(path, key string) bool {
	return key == "" || path == key || strings.HasPrefix(path, key) && len(path) > len(key) && strings.IndexByte(".[", path[len(key)]) >= 0
}

// shape is what walking the document beside the Go type it decodes into
// finds: every mapping key that no field takes, every key given twice and
// every value of the wrong type, each named by its path, so that mistakes
// fail loudly with their key.
type shape struct {
	problems  []error
	undecoded []string
	// emptyAt are the ${VAR}s of each scalar that expanded to nothing
	// (expandEnv), and emptyVars the same by the path the walk finds each
	// scalar at.
	emptyAt   map[*yaml.Node][]string
	emptyVars map[string][]string
	// decodeErrors counts the problems that yaml.v3's decoder reports too.
	decodeErrors int
}

var durationType = reflect.TypeOf(time.Duration(0))

// walk checks the node n at path, which decodes into t.
func (s *shape) walk(n *yaml.Node, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	// Before the null test, for a value tagged !!null ${VAR}; an unquoted
	// ${VAR} was tagged a string before it expanded, and stays one.
	s.blame(path, n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // empty: the field keeps its zero value
	}
	if decodesItself(t) { // its own rules of shape, which only decoding knows
		if n.Decode(reflect.New(t).Interface()) != nil {
			s.mistype(path, n, t)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			s.mistype(path, n, t)
			return
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		s.keys(n, path, fields, nil, t == reflect.TypeFor[idp.Config]())
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			s.mistype(path, n, t)
			return
		}
		s.keys(n, path, nil, t.Elem(), false)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			s.mistype(path, n, t)
			return
		}
		for i, c := range n.Content {
			elem := fmt.Sprintf("%s[%d]", path, i)
			s.walk(c, t.Elem(), elem)
			if slices.Contains(s.undecoded, elem) {
				// yaml.v3 drops the element, and the ones after it move up:
				// what is checked at rules[2] would be the file's rules[3].
				s.undecoded = append(s.undecoded, path)
			}
		}
	default:
		if n.Kind != yaml.ScalarNode || n.Decode(reflect.New(t).Interface()) != nil {
			s.mistype(path, n, t)
		}
	}
}

var (
	yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// decodesItself reports whether yaml.v3 decodes a t by t's own method, which
// may take a shape the walk would not (a scalar for a struct).
func decodesItself(t reflect.Type) bool {
	pt := reflect.PointerTo(t)
	return pt.Implements(yamlUnmarshaler) || pt.Implements(textUnmarshaler)
}

// blame records that the problems of the key at path are those of a value
// written with the ${VAR}s that n expanded to nothing, if any: n is that
// key's value, or the key itself.
func (s *shape) blame(path string, n *yaml.Node) {
	for _, name := range s.emptyAt[n] {
		if !slices.Contains(s.emptyVars[path], name) {
			s.emptyVars[path] = append(s.emptyVars[path], name)
		}
	}
}

// keys walks the entries of the mapping n: a struct's, whose fields maps
// each key it takes to the type of its value, or, with fields nil, a map's,
// whose every key takes an elem. onEntry is whether n is an
// identity_providers entry, where an unknown key that is another proxy's
// option is pointed at portcullis's differently (foreignKeyHint).
func (s *shape) keys(n *yaml.Node, path string, fields map[string]reflect.Type, elem reflect.Type, onEntry bool) {
	line := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		key := joinKey(path, k.Value)
		// A key written as ${VAR} that expanded to nothing is the key ""
		// of whatever problem it makes.
		s.blame(key, k)
		if first, dup := line[k.Value]; dup {
			// yaml.v3 then decodes none of the mapping.
			s.problems = append(s.problems, fmt.Errorf("%s: given twice (lines %d and %d)", key, first, k.Line))
			s.undecoded = append(s.undecoded, path)
			s.decodeErrors++
			continue
		}
		line[k.Value] = k.Line
		ft, ok := elem, fields == nil
		if !ok {
			ft, ok = fields[k.Value]
		}
		if !ok {
			// Another proxy's option is told where portcullis's
			// is before any key close in spelling.
			if hint := foreignKeyHint(k.Value, onEntry); hint != "" {
				s.problems = append(s.problems, fmt.Errorf("%s: unknown key (%s)", key, hint))
			} else if near := nearestKey(k.Value, fields); near != "" {
				s.problems = append(s.problems, fmt.Errorf("%s: unknown key (%s)", key, nearMissHint(near)))
			} else {
				s.problems = append(s.problems, fmt.Errorf("%s: unknown key", key))
			}
			continue
		}
		s.walk(n.Content[i+1], ft, key)
	}
}

// nearestKey is the one key of fields that key is a slip of the keyboard
// away from (an edit or two, one for a short key: identity_provider for
// identity_providers, clent_id for client_id), or "" when none or several are.
func nearestKey(key string, fields map[string]reflect.Type) string {
	limit := min(2, max(1, len(key)/3))
	near, tie := "", false
	for name := range fields {
		switch d := editDistance(strings.ToLower(key), name); {
		case d > limit:
		case d < limit:
			limit, near, tie = d, name, false
		case near == "":
			near = name
		default:
			tie = true
		}
	}
	if tie {
		return ""
	}
	return near
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	row := make([]int, len(b)+1)
	for j := range row {
		row[j] = j
	}
	for i := 1; i <= len(a); i++ {
		diag := row[0]
		row[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			diag, row[j] = row[j], min(row[j]+1, row[j-1]+1, diag+cost)
		}
	}
	return row[len(b)]
}

// mistype records that the value n at path cannot be decoded into t. It
// says what was wanted and what kind of value was found, never the value: a
// secret in the wrong place would be printed.
func (s *shape) mistype(path string, n *yaml.Node, t reflect.Type) {
	if path == "" {
		return // the whole file: the decoder's error says it
	}
	want := "a single value"
	switch {
	case decodesItself(t):
		want = "in the form this key takes"
	case t == durationType:
		want = "a duration like 90s or 12h"
	case t.Kind() == reflect.Bool:
		want = "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		want = "a whole number"
	case t.Kind() == reflect.Slice:
		want = "a list"
	case t.Kind() == reflect.Map || t.Kind() == reflect.Struct:
		want = "a mapping of keys to values"
	}
	got := "a value"
	switch {
	case n.Kind == yaml.MappingNode:
		got = "a mapping"
	case n.Kind == yaml.SequenceNode:
		got = "a list"
	case n.ShortTag() == "!!str":
		got = "a string"
	case n.ShortTag() == "!!int" || n.ShortTag() == "!!float":
		got = "a number"
	case n.ShortTag() == "!!bool":
		got = "true or false"
	}
	s.problems = append(s.problems, fmt.Errorf("%s: must be %s, got %s", path, want, got))
	s.undecoded = append(s.undecoded, path)
	s.decodeErrors++
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (c *Config) applyDefaults() {
	s := &c.Server
	setDefault(&s.Listen, ":9772")
	setDefault(&s.AdminListen, DefaultAdminListen)
	setDefault(&s.AuthPrefix, "/.portcullis")
	if c.Upstream.PreserveHost == nil {
		c.Upstream.PreserveHost = ptr(true)
	}
	setDefault(&c.Session.CookieName, "portcullis")
	setDefault(&c.Session.Store, "cookie")
	if c.Session.Lifetime == 0 {
		c.Session.Lifetime = 12 * time.Hour
	}
	if c.Session.IdleTimeout == 0 {
		c.Session.IdleTimeout = 2 * time.Hour
	}
	setDefault(&c.SSO.SelectionMode, SelectChooser)
	if c.SSO.EnablePKCE == nil {
		c.SSO.EnablePKCE = ptr(true)
	}
	if c.DefaultAction == "" {
		c.DefaultAction = rules.Authenticate
	}
}

func (c *Config) applyEnv(getenv func(string) string) {
	if keys := getenv("PORTCULLIS_SESSION_KEYS"); keys != "" {
		c.Session.Keys = strings.Split(keys, ",")
	}
	c.Session.Redis.ApplyEnv(getenv)
	for i := range c.SSO.IdentityProviders {
		c.SSO.IdentityProviders[i].ApplyEnv(getenv)
	}
	// A value the environment replaced is no longer the file's: its
	// problems are the variable's value's.
	for key, name := range c.envOverrides() {
		if getenv(name) != "" {
			maps.DeleteFunc(c.emptyVars, func(path string, _ []string) bool { return within(path, key) })
		}
	}
}

// envOverrides names, by key, the PORTCULLIS_* variable that applyEnv takes
// the key's value from when it is set.
func (c *Config) envOverrides() map[string]string {
	out := map[string]string{"session.keys": "PORTCULLIS_SESSION_KEYS"}
	for key, name := range c.Session.Redis.EnvOverrides() {
		out["session.redis."+key] = name
	}
	for i := range c.SSO.IdentityProviders {
		for key, name := range c.SSO.IdentityProviders[i].EnvOverrides() {
			out[fmt.Sprintf("sso.identity_providers[%d].%s", i, key)] = name
		}
	}
	return out
}

func setDefault(field *string, value string) {
	if *field == "" {
		*field = value
	}
}

func ptr[T any](v T) *T { return &v }

// problems gathers configuration errors, each prefixed by the key it concerns.
type problems []error

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// addAll adds every error joined in err (as the packages return them), with
// their keys placed under prefix.
func (p *problems) addAll(prefix string, err error) {
	if err == nil {
		return
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		*p = append(*p, fmt.Errorf("%s%s", prefix, err))
		return
	}
	for _, e := range joined.Unwrap() {
		p.addAll(prefix, e)
	}
}

// except is p without the problems of keys or of any key below them (of
// every key, for ""): a value that decoding left empty is one mistake, and
// what its emptiness causes there (required, at least one) is not another.
func (p problems) except(keys []string) problems {
	var out problems
	for _, e := range p {
		key, _, _ := strings.Cut(e.Error(), ": ")
		if !slices.ContainsFunc(keys, func(undecoded string) bool { return within(key, undecoded) }) {
			out = append(out, e)
		}
	}
	return out
}

// validate checks what belongs to no package: the server, upstream, session
// and sso blocks. The packages' own parts are checked when they compile.
func (c *Config) validate(p *problems) {
	pub, err := url.Parse(c.Server.PublicURL)
	switch {
	case c.Server.PublicURL == "":
		p.add("server.public_url", "required (the origin users see, e.g. https://cvat.example.com)")
	case err != nil || (pub.Scheme != "http" && pub.Scheme != "https") || pub.Host == "":
		p.add("server.public_url", "not an absolute http(s) URL: %q", idp.RedactURL(c.Server.PublicURL))
	case pub.Path != "" && pub.Path != "/" || pub.RawQuery != "" || pub.Fragment != "" || pub.User != nil:
		p.add("server.public_url", "must be an origin only (scheme://host[:port]), got %q", idp.RedactURL(c.Server.PublicURL))
	case !tcpPort(pub.Port()):
		p.add("server.public_url", "port %s is not a TCP port (1-65535)", pub.Port())
	}
	for key, addr := range map[string]string{"server.listen": c.Server.Listen, "server.admin_listen": c.Server.AdminListen} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			p.add(key, "not a host:port address: %q", addr)
		}
	}
	ap := c.Server.AuthPrefix
	if clean, err := rules.CleanPath(ap); err != nil || clean != ap || ap == "/" || strings.HasSuffix(ap, "/") || strings.ContainsAny(ap, "?% ") {
		p.add("server.auth_prefix", "must be a plain path like /.portcullis (leading slash, no trailing slash), got %q", ap)
	}
	for i, s := range c.Server.TrustedProxies {
		if _, err := rules.ParsePrefix(s); err != nil {
			p.add(fmt.Sprintf("server.trusted_proxies[%d]", i), "%v", err)
		}
	}
	for i, name := range c.Server.TrustedProxyCertificateHeaders {
		key := fmt.Sprintf("server.trusted_proxy_certificate_headers[%d]", i)
		switch {
		case !slices.Contains(keepableCertificateHeaders(), textproto.CanonicalMIMEHeaderKey(name)):
			p.add(key, "%q is none of the client-certificate headers portcullis strips (README, Security); only those can be kept from a trusted proxy", name)
		case len(c.Server.TrustedProxies) == 0:
			p.add(key, "kept from server.trusted_proxies only, and there are none")
		}
	}
	if (c.Server.TLS.CertFile == "") != (c.Server.TLS.KeyFile == "") {
		p.add("server.tls", "cert_file and key_file go together")
	}

	up, err := url.Parse(c.Upstream.URL)
	switch {
	case c.Upstream.URL == "":
		p.add("upstream.url", "required (the application behind the proxy, e.g. http://traefik:8080)")
	case err != nil || (up.Scheme != "http" && up.Scheme != "https") || up.Host == "":
		p.add("upstream.url", "not an absolute http(s) URL: %q", idp.RedactURL(c.Upstream.URL))
	case up.User != nil:
		// The reverse proxy would drop them, and the startup line log them.
		p.add("upstream.url", "must not carry credentials (user:password@): they are not sent to the upstream")
	case up.RawQuery != "" || up.ForceQuery:
		// ProxyRequest.SetURL joins it to every request's query, before
		// the client's own: a surprise, and never quoted, as it may be a
		// token.
		p.add("upstream.url", "must not have a query (?…): ReverseProxy puts it before the query of every request sent upstream; give scheme://host[:port][/path]")
	case strings.Contains(c.Upstream.URL, "#"):
		// Past parsing, only a fragment has a literal '#'; an empty one
		// leaves no Fragment to test.
		p.add("upstream.url", "must not have a fragment (#…): it is never sent; give scheme://host[:port][/path]")
	case !tcpPort(up.Port()):
		p.add("upstream.url", "port %s is not a TCP port (1-65535)", up.Port())
	}
	c.Upstream.Timeouts.validate(p)
	c.Upstream.TLS.validate(p, up)
	c.Pages.validate(p)

	for i, name := range c.Upstream.LogoutCookies {
		key := fmt.Sprintf("upstream.logout_cookies[%d]", i)
		switch {
		case !upstreamCookieName.MatchString(name) || len(name) > 128:
			p.add(key, "not a cookie name: %q", name)
		case strings.HasPrefix(strings.TrimPrefix(name, "__Host-"), c.Session.CookieName):
			p.add(key, "%q is portcullis's own cookie (session.cookie_name); logout clears those anyway", name)
		}
	}
	if !cookieName.MatchString(c.Session.CookieName) || len(c.Session.CookieName) > 64 {
		p.add("session.cookie_name", "must be letters, digits, '-' or '_', got %q", c.Session.CookieName)
	}
	if len(c.Session.Keys) == 0 {
		p.add("session.keys", "at least one key is required (make one with `portcullis keys`, or set PORTCULLIS_SESSION_KEYS)")
	}
	for i, k := range c.Session.Keys {
		if _, err := decodeKey(k); err != nil {
			p.add(fmt.Sprintf("session.keys[%d]", i), "%v", err)
		}
	}
	if c.Session.Lifetime < 0 {
		p.add("session.lifetime", "must be a positive duration like 12h, got %s", c.Session.Lifetime)
	}
	if c.Session.IdleTimeout < 0 {
		p.add("session.idle_timeout", "must be a positive duration like 2h, got %s", c.Session.IdleTimeout)
	}
	if c.Session.Refresh < 0 {
		p.add("session.refresh", "must be 0 (off) or a positive duration like 5m, got %s", c.Session.Refresh)
	}
	switch c.Session.Store {
	case storeCookie:
	case storeRedis:
		p.addAll("session.redis.", c.Session.Redis.Validate())
	default:
		p.add("session.store", "unknown store %q (want cookie or redis)", c.Session.Store)
	}

	switch c.SSO.SelectionMode {
	case SelectChooser, SelectEmailAddress, SelectLowestWeight:
	default:
		p.add("sso.selection_mode", "unknown mode %q (want chooser, email_address or lowest_weight)", c.SSO.SelectionMode)
	}
	if len(c.SSO.IdentityProviders) == 0 {
		p.add("sso.identity_providers", "at least one identity provider is required")
	}
	seen := map[string]bool{}
	domains := map[string]string{}
	for i := range c.SSO.IdentityProviders {
		ic := &c.SSO.IdentityProviders[i]
		key := fmt.Sprintf("sso.identity_providers[%d]", i)
		p.addAll(key+".", ic.Validate())
		// A preset entry speaks its preset's protocol (okta OIDC, github
		// OAUTH2); an unknown protocol is a problem of protocol.
		if resolved, err := ic.WithPreset(); err == nil {
			proto := resolved.Protocol
			if ic.SingleSignOut && (proto == idp.OAuth2 || proto == idp.LDAP) {
				p.add(key+".single_sign_out", "only OIDC and SAML providers offer single sign-out (protocol is %s)", proto)
			}
			if ic.AllowIdPInitiated && (proto == idp.OIDC || proto == idp.OAuth2 || proto == idp.LDAP) {
				p.add(key+".allow_idp_initiated", "only SAML providers send logins the user did not start here (protocol is %s)", proto)
			}
		}
		if seen[ic.ID] && ic.ID != "" {
			p.add(key+".id", "duplicate id %q", ic.ID)
		}
		seen[ic.ID] = true
		if c.SSO.SelectionMode == SelectEmailAddress {
			d := strings.ToLower(ic.EmailDomain)
			switch {
			case d == "" && len(c.SSO.IdentityProviders) == 1:
				// Every login goes to the one IdP: there is nothing to pick
				// (selectionKeyWarnings says so of one given).
			case d == "":
				p.add(key+".email_domain", "required when sso.selection_mode is email_address and there is more than one identity provider")
			case !idp.IsDomain(d):
				// No address's domain would ever equal it: every user would
				// be told there is no sign-in for theirs.
				p.add(key+".email_domain", "not a domain name like company.com (got %q)", ic.EmailDomain)
			case domains[d] != "":
				p.add(key+".email_domain", "domain %q already belongs to %s", d, domains[d])
			}
			domains[d] = ic.ID
		}
	}
}

// tcpPort reports whether port, as net/url gives it (digits only, or "" for
// the scheme's default), is one a connection can use: net/url takes any
// number, so that a public_url of :94430 made every redirect and callback
// URL one no browser follows, and an upstream's :0 one no dial reaches.
func tcpPort(port string) bool {
	if port == "" {
		return true
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

// Cookie names are checked by a pattern and a length: a counted repetition
// such as {1,128} compiles to a program of hundreds of instructions that
// stays in the heap, where every garbage collection scans it.
var cookieName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`) // at most 64 bytes

// upstreamCookieName is an RFC 6265 cookie name (a token), at most 128 bytes.
var upstreamCookieName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// decodeKey reads a session key: 32 bytes in standard or URL-safe base64.
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != 32 {
				return nil, fmt.Errorf("must be 32 bytes of base64, got %d bytes (make one with `portcullis keys`)", len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("not base64 (make one with `portcullis keys`)")
}

func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		pfx, err := rules.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, pfx)
	}
	return out, nil
}

// notPublic are the ranges that hold no address a client on the internet
// connects from: private (RFC 1918, RFC 6598's shared space, RFC 4193's
// unique local), loopback and link-local.
var notPublic = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("::1/128"),
}

// trustsThePublic reports whether a trusted_proxies entry takes in public
// addresses by the million: an IPv4 /8 or wider, an IPv6 /16 or wider, not
// all of it private. Nobody's proxies need that many (Cloudflare's widest
// published ranges are /13 and /29), while a cluster's pod CIDR, which
// trusted_proxies lists behind an Ingress, may well be all of 10.0.0.0/8.
func trustsThePublic(p netip.Prefix) bool {
	if p.Addr().Is4() && p.Bits() > 8 || p.Addr().Is6() && p.Bits() > 16 {
		return false
	}
	for _, private := range notPublic {
		if private.Bits() <= p.Bits() && private.Contains(p.Addr()) {
			return false
		}
	}
	return true
}
