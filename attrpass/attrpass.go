// Package attrpass is the attribute pass: it removes spoofable identity
// headers from client requests and sets the headers, and optionally the
// signed assertion, that tell the upstream who the user is.
package attrpass

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/textproto"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"github.com/portcullis-proxy/portcullis/idp"
)

// Config is the attribute_pass section of the configuration.
type Config struct {
	// Headers maps a header name to an expr-lang expression over the
	// profile (roles included) that gives its value.
	Headers map[string]string `yaml:"headers"`
	// JWT, when set, adds a signed assertion of the user for the upstream.
	JWT *JWTConfig `yaml:"jwt"`
	// StripHeaders are removed from every client request, besides every
	// header named in Headers and JWT.
	StripHeaders []string `yaml:"strip_headers"`
}

// Pass is a compiled attribute pass, safe for concurrent use.
type Pass struct {
	headers []header // sorted by name
	jwt     *signer  // nil without jwt

	// strip holds the normalized form (see normalize) of every header that
	// Strip removes, with the one spelling of it Strip keeps ("": none);
	// minLen, maxLen, first and second let Strip skip most keys at once
	// (second: a browser's Sec-Fetch-* and Sec-Ch-Ua-* pass by it when
	// Ssl-Client-Cert is stripped).
	strip          map[string]string
	minLen, maxLen int
	first          [256]bool // the first bytes of the normalized names
	second         [256]bool // their second bytes
	names          []string

	// ids remembers the identity of recent sessions (identity.go), unless
	// volatile: a header's expression reads the clock.
	ids      *idp.Remembered[*Identity]
	volatile bool
}

// header is one entry of Config.Headers.
type header struct {
	name    string // as configured, for error messages
	key     string // the http.Header key it is set under
	program *vm.Program
}

// Warnings lists what in c is valid but weakens the set-up, with keys
// relative to attribute_pass: an assertion signed with a key generated at
// start, which the upstream cannot verify once the key is another.
func (c Config) Warnings() []idp.Warning {
	if c.JWT == nil || c.JWT.SigningKey != "" || c.JWT.SigningKeyFile != "" {
		return nil
	}
	return []idp.Warning{{Key: "jwt", Message: "no signing_key or signing_key_file: assertions are signed with a key generated at start, " +
		"so they stop verifying after a restart and differ between replicas; configure a key"}}
}

// headersNeverTouched are the headers that frame the request itself: stripping
// or setting them would break or smuggle requests, never pass an attribute.
var headersNeverTouched = []string{"host", "content-length", "transfer-encoding", "connection"}

// Compile checks c and compiles its expressions once. issuer is the JWT
// issuer used when jwt.issuer is empty (the proxy's public_url). Every
// problem is reported, as "key: what is wrong" with keys relative to
// attribute_pass.
func Compile(c Config, issuer string) (*Pass, error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}

	p := &Pass{strip: map[string]string{}, ids: idp.NewRemembered[*Identity](identityEntries, identityBytes)}
	// owner remembers which key first named each normalized header, so a
	// second spelling of the same header is reported against the first.
	owner := map[string]string{}
	claim := func(key, name string) (ok bool) {
		if !ValidName(name) {
			bad(key, "%q is not a valid header name", name)
			return false
		}
		n := normalize(name)
		if slices.Contains(headersNeverTouched, n) {
			bad(key, "%s cannot be stripped or set by the attribute pass", name)
			return false
		}
		if first, dup := owner[n]; dup {
			bad(key, "same header as %s (names match case-insensitively, with _ and . read as -)", first)
			return false
		}
		owner[n] = key
		p.addStrip(name)
		return true
	}

	for _, name := range slices.Sorted(maps.Keys(c.Headers)) {
		key := "headers." + name
		if !claim(key, name) {
			continue
		}
		prog, err := idp.CompileExpr(c.Headers[name], idp.Profile{}, nil)
		if err != nil {
			bad(key, "%v", err)
			continue
		}
		if t := prog.Node().Type(); t != nil && !headerKind(t.Kind()) {
			bad(key, "expression gives %s; want a string, list, bool or number", t)
			continue
		}
		p.headers = append(p.headers, header{name: name, key: textproto.CanonicalMIMEHeaderKey(name), program: prog})
		p.volatile = p.volatile || idp.ReadsClock(prog)
	}

	if c.JWT != nil {
		if c.JWT.Header == "" {
			bad("jwt.header", "required")
		} else {
			claim("jwt.header", c.JWT.Header)
		}
		s, err := newSigner(*c.JWT, issuer)
		if err != nil {
			errs = append(errs, err)
		}
		p.jwt = s
	}

	for i, name := range c.StripHeaders {
		key := fmt.Sprintf("strip_headers[%d]", i)
		if !ValidName(name) {
			bad(key, "%q is not a valid header name", name)
			continue
		}
		if slices.Contains(headersNeverTouched, normalize(name)) {
			bad(key, "%s cannot be stripped or set by the attribute pass", name)
			continue
		}
		// Naming a header twice, or also under headers, is harmless.
		p.addStrip(name)
	}

	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.Sort(p.names)
	return p, nil
}

// AlsoStrip adds headers that Strip removes besides those of the config: the
// proxy's own list of headers no client may set (method overrides, rewritten
// URLs). Call it before the Pass is used.
func (p *Pass) AlsoStrip(names ...string) {
	for _, name := range names {
		p.addStrip(name)
	}
}

// AlsoStripOtherSpellings adds headers whose canonical spelling Strip keeps
// and removes every other (X_Forwarded_Host beside X-Forwarded-Host): the
// forwarding headers, which the reverse proxy replaces or extends under
// their canonical names only, while servers that read _ and . as - (CGI,
// WSGI and ASGI) would take the other spellings for them. Call it after
// AlsoStrip and before the Pass is used.
func (p *Pass) AlsoStripOtherSpellings(names ...string) {
	for _, name := range names {
		n := normalize(name)
		if _, ok := p.strip[n]; ok || n == "" {
			continue // removed in every spelling already
		}
		p.strip[n] = textproto.CanonicalMIMEHeaderKey(name)
		p.index(n)
	}
}

func (p *Pass) addStrip(name string) {
	n := normalize(name)
	if _, ok := p.strip[n]; ok || n == "" {
		return
	}
	p.strip[n] = ""
	p.index(n)
	p.names = append(p.names, textproto.CanonicalMIMEHeaderKey(name))
}

// index lets Strip's quick checks pass the normalized name n.
func (p *Pass) index(n string) {
	p.first[n[0]] = true
	if len(n) > 1 {
		p.second[n[1]] = true
	}
	if p.minLen == 0 || len(n) < p.minLen {
		p.minLen = len(n)
	}
	p.maxLen = max(p.maxLen, len(n))
}

// Strip removes from h every header that the attribute pass sets or that
// strip_headers names, however the client spelled it: case-insensitively and
// with _ and . read as -; of those AlsoStripOtherSpellings adds, every
// spelling but the canonical one. It must run on every client request before
// anything else reads the headers (SPEC security invariant 1).
func (p *Pass) Strip(h http.Header) {
	if len(p.strip) == 0 {
		return
	}
	// Keys are normalized into a stack buffer and looked up with
	// m[string(b)], which Go does without allocating.
	var buf [64]byte
	for k := range h {
		if len(k) < p.minLen || len(k) > p.maxLen || !p.first[fold(k[0])] || len(k) > 1 && !p.second[fold(k[1])] {
			continue
		}
		b := buf[:0]
		for i := 0; i < len(k); i++ {
			b = append(b, fold(k[i]))
		}
		if keep, ok := p.strip[string(b)]; ok && k != keep {
			delete(h, k)
		}
	}
}

// Strips reports whether Strip removes name, in some spelling.
func (p *Pass) Strips(name string) bool {
	_, ok := p.strip[normalize(name)]
	return ok
}

// Names returns every header name Strip removes, sorted, one spelling each.
func (p *Pass) Names() []string {
	return slices.Clone(p.names)
}

// Inject sets on h the configured headers and the assertion JWT for prof,
// whose Roles are already filled in. On error nothing is set, and the
// request must not be forwarded: a value with a control character would let
// the profile forge headers.
//
// A header whose expression gives nil, "" or only spaces and tabs is not
// set: to an upstream that trusts it, an empty identity header is worse than
// none.
func (p *Pass) Inject(h http.Header, prof *idp.Profile) error {
	vals := make([]string, len(p.headers))
	for i, hd := range p.headers {
		v, err := p.value(hd, prof)
		if err != nil {
			return err
		}
		vals[i] = v
	}
	var token string
	if p.jwt != nil {
		var err error
		if token, err = p.jwt.sign(prof); err != nil {
			return err
		}
	}

	for i, hd := range p.headers {
		if vals[i] == "" {
			// Strip already removed any client copy; deleting again keeps
			// Inject safe on its own.
			delete(h, hd.key)
			continue
		}
		h[hd.key] = []string{vals[i]}
	}
	if p.jwt != nil {
		h[p.jwt.key] = []string{token}
	}
	return nil
}

// Values returns what Inject would set for prof, by header key (for
// portcullis explain), the assertion JWT as its claims rather than signed.
// Headers that would not be set are left out.
func (p *Pass) Values(prof *idp.Profile) (map[string]string, error) {
	out := make(map[string]string, len(p.headers)+1)
	for _, hd := range p.headers {
		v, err := p.value(hd, prof)
		if err != nil {
			return nil, err
		}
		if v != "" {
			out[hd.key] = v
		}
	}
	if p.jwt != nil {
		claims, err := p.jwt.describe(prof)
		if err != nil {
			return nil, err
		}
		out[p.jwt.key] = claims
	}
	return out, nil
}

func (p *Pass) value(hd header, prof *idp.Profile) (string, error) {
	out, err := expr.Run(hd.program, prof)
	if err != nil {
		return "", fmt.Errorf("attribute pass: header %s: evaluate: %s", hd.name, idp.ExprMessage(err))
	}
	v, err := format(out)
	if err != nil {
		return "", fmt.Errorf("attribute pass: header %s: %w", hd.name, err)
	}
	if i := strings.IndexFunc(v, isControl); i >= 0 {
		return "", &ValueError{Header: hd.name, Byte: v[i], At: i, Fields: controlFields(prof)}
	}
	// net/http trims spaces and tabs around a header value as it writes it:
	// trimmed here, a value of only whitespace is left unset rather than
	// reaching the upstream as an empty header, and explain shows what is
	// sent.
	return strings.Trim(v, " \t"), nil
}

// ValueError is a header value that the attribute pass refuses to set for
// a profile: it holds a byte that no header value may carry (isControl).
// The profile is then one whose identity cannot be passed to the upstream;
// its values stay out of the message, which names only where the byte is.
type ValueError struct {
	Header string // the header's name, as configured
	Byte   byte   // the first such byte of the value
	At     int    // its offset in the value
	// Fields are the profile's fields that hold such a byte, as
	// expressions name them (email, groups, claims.dept): where the value
	// got it from. Empty when none does (the expression added it).
	Fields []string
}

func (e *ValueError) Error() string {
	msg := fmt.Sprintf("attribute pass: header %s: value has control character %q at byte %d", e.Header, e.Byte, e.At)
	if len(e.Fields) > 0 {
		msg += " (from the profile's " + strings.Join(e.Fields, ", ") + ")"
	}
	return msg
}

// Class names the kind of byte a header cannot carry that the value has,
// with its code, as an operator would look for it at the IdP.
func (e *ValueError) Class() string {
	switch e.Byte {
	case '\r':
		return "a line break (CR, 0x0d)"
	case '\n':
		return "a line break (LF, 0x0a)"
	case 0:
		return "a NUL byte (0x00)"
	case 0x7f:
		return "a control character (DEL, 0x7f)"
	}
	return fmt.Sprintf("a control character (0x%02x)", e.Byte)
}

// controlFields are the fields of prof that hold a byte no header value
// may carry, as expressions name them; claims by their top-level name.
func controlFields(prof *idp.Profile) []string {
	var out []string
	for _, f := range []struct {
		name string
		v    string
	}{{"sub", prof.Sub}, {"email", prof.Email}, {"username", prof.Username},
		{"first_name", prof.FirstName}, {"last_name", prof.LastName}, {"name", prof.Name}} {
		if strings.ContainsFunc(f.v, isControl) {
			out = append(out, f.name)
		}
	}
	if slices.ContainsFunc(prof.Groups, func(g string) bool { return strings.ContainsFunc(g, isControl) }) {
		out = append(out, "groups")
	}
	for _, k := range slices.Sorted(maps.Keys(prof.Claims)) {
		if holdsControl(prof.Claims[k], 0) {
			out = append(out, "claims."+k)
		}
	}
	return out
}

// holdsControl reports whether a claim's value holds a string with a byte
// no header value may carry, looking depth levels down at most.
func holdsControl(v any, depth int) bool {
	if depth > idp.MaxClaimDepth {
		return false
	}
	switch v := v.(type) {
	case string:
		return strings.ContainsFunc(v, isControl)
	case []string:
		return slices.ContainsFunc(v, func(s string) bool { return strings.ContainsFunc(s, isControl) })
	case []any:
		return slices.ContainsFunc(v, func(e any) bool { return holdsControl(e, depth+1) })
	case map[string]any:
		for _, e := range v {
			if holdsControl(e, depth+1) {
				return true
			}
		}
	}
	return false
}

// format turns an expression's result into a header value: strings as they
// are, lists joined with ",", bools and numbers in their usual text.
func format(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case []string:
		return strings.Join(v, ","), nil
	case []any:
		parts := make([]string, 0, len(v))
		for _, e := range v {
			if e == nil {
				continue
			}
			s, ok := scalar(e)
			if !ok {
				return "", fmt.Errorf("list element is %T; want a string, bool or number", e)
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	}
	if s, ok := scalar(v); ok {
		return s, nil
	}
	return "", fmt.Errorf("value is %T; want a string, list, bool or number", v)
}

func scalar(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case float32:
		return strconv.FormatFloat(float64(v), 'f', -1, 32), true
	}
	rv := reflect.ValueOf(v)
	switch {
	case rv.CanInt():
		return strconv.FormatInt(rv.Int(), 10), true
	case rv.CanUint():
		return strconv.FormatUint(rv.Uint(), 10), true
	}
	return "", false
}

// headerKind reports whether an expression whose type is known at compile
// time to be of kind k can give a header value.
func headerKind(k reflect.Kind) bool {
	switch k {
	case reflect.String, reflect.Bool, reflect.Slice, reflect.Array, reflect.Interface,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// isControl reports the characters a header value must never carry: they
// would end the header or the request early (CR, LF) or be cut by the
// upstream (NUL). Tab is allowed, as HTTP allows it.
func isControl(r rune) bool {
	return (r < 0x20 && r != '\t') || r == 0x7f
}

// normalize is how Strip compares header names: lower case, with _ and .
// read as -, since servers such as those behind CGI or nginx treat them
// alike.
func normalize(name string) string {
	b := make([]byte, len(name))
	for i := 0; i < len(name); i++ {
		b[i] = fold(name[i])
	}
	return string(b)
}

func fold(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + ('a' - 'A')
	case c == '_' || c == '.':
		return '-'
	}
	return c
}

// ValidName reports whether name is an HTTP field name (RFC 9110 token).
func ValidName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
