package attrpass

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/portcullis-proxy/portcullis/idp"
)

// cvatYAML is the attribute pass of the CVAT deployment, as a user writes it.
const cvatYAML = `
headers:
  X-Email: email
  X-Groups: 'join(roles, ",")'
jwt:
  header: X-Portcullis-Assertion
strip_headers: [X-Forwarded-User]
`

func compileYAML(t testing.TB, src string) *Pass {
	t.Helper()
	var c Config
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatalf("decode config: %v", err)
	}
	p, err := Compile(c, "https://cvat.example.com")
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p
}

func TestStrip(t *testing.T) {
	p := compileYAML(t, cvatYAML)
	tests := []struct {
		name     string
		key      string // the http.Header map key, as a server may leave it
		stripped bool
	}{
		{"canonical X-Email is stripped", "X-Email", true},
		{"lower-case x-email under a non-canonical key is stripped", "x-email", true},
		{"upper-case X-EMAIL is stripped", "X-EMAIL", true},
		{"underscore variant x_email is stripped", "x_email", true},
		{"underscore variant X_EMAIL is stripped", "X_EMAIL", true},
		{"dot variant X.Email is stripped", "X.Email", true},
		{"X-Groups is stripped", "X-Groups", true},
		{"underscore variant x_groups is stripped", "x_groups", true},
		{"JWT header is stripped", "X-Portcullis-Assertion", true},
		{"mixed variant of the JWT header is stripped", "x_portcullis.ASSERTION", true},
		{"strip_headers entry is stripped", "X-Forwarded-User", true},
		{"underscore variant of a strip_headers entry is stripped", "x_forwarded_user", true},
		{"longer name sharing a prefix is kept", "X-Emails", false},
		{"shorter name is kept", "X-Emai", false},
		{"unrelated Authorization is kept", "Authorization", false},
		{"unrelated Cookie is kept", "Cookie", false},
		{"unrelated X-Forwarded-For is kept", "X-Forwarded-For", false},
		{"name without the dash is kept", "XEmail", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{tt.key: {"spoofed"}, "Accept": {"*/*"}}
			p.Strip(h)
			if _, present := h[tt.key]; present == tt.stripped {
				t.Errorf("after Strip, %q present = %v, want %v", tt.key, present, !tt.stripped)
			}
			if h.Get("Accept") != "*/*" {
				t.Errorf("Strip removed Accept")
			}
		})
	}
}

// Strip's quick length check spans every name it removes, whichever was
// added first: a name shorter than the first one (strip_headers, or the
// proxy's own list added after the config's) is removed too.
func TestStripShortNameAddedAfterALongOne(t *testing.T) {
	p := compileYAML(t, "headers:\n  X-Auth-Request-Email: email\nstrip_headers: [X-Id]\n")
	p.AlsoStrip("Client-Ip")
	h := http.Header{"X-Auth-Request-Email": {"spoofed"}, "X-Id": {"spoofed"}, "Client-Ip": {"spoofed"}}
	p.Strip(h)
	if len(h) != 0 {
		t.Errorf("after Strip: %v, want every spoofed header removed", h)
	}
}

// TestStripOverHTTP sends spoofed headers on the wire to a real Go server, so
// the test does not depend on assumptions about how net/http keys them.
func TestStripOverHTTP(t *testing.T) {
	p := compileYAML(t, cvatYAML)
	got := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.Strip(r.Header)
		got <- r.Header
	}))
	defer srv.Close()

	spoofed := []string{"X-Email", "x-email", "X_Email", "x_email", "X.Email", "X-EMAIL",
		"x_groups", "X-Portcullis-Assertion", "x_portcullis_assertion", "X-Forwarded-User", "X_Forwarded_User"}
	var req bytes.Buffer
	req.WriteString("GET / HTTP/1.1\r\nHost: example\r\nConnection: close\r\nX-Keep: yes\r\n")
	for _, name := range spoofed {
		req.WriteString(name + ": evil@example.com\r\n")
	}
	req.WriteString("\r\n")

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write(req.Bytes()); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	h := <-got
	for k, v := range h {
		if slices.Contains(v, "evil@example.com") {
			t.Errorf("header %q survived Strip", k)
		}
	}
	if h.Get("X-Keep") != "yes" {
		t.Errorf("unrelated X-Keep was removed: %v", h)
	}
}

func TestStripDoesNotAllocate(t *testing.T) {
	p := compileYAML(t, cvatYAML)
	h := http.Header{
		"Accept": {"text/html"}, "Accept-Encoding": {"gzip"}, "Cookie": {"a=b"},
		"User-Agent": {"Mozilla/5.0"}, "X-Forwarded-For": {"10.0.0.1"}, "x_custom_header": {"1"},
		"A-Very-Long-Header-Name-That-Is-Longer-Than-Any-Configured-One-By-Far-Really": {"x"},
	}
	if n := testing.AllocsPerRun(100, func() { p.Strip(h) }); n != 0 {
		t.Errorf("Strip allocates %v times per request with nothing to strip, want 0", n)
	}
	if len(h) != 7 {
		t.Errorf("Strip removed unrelated headers: %v", h)
	}
}

func TestNames(t *testing.T) {
	p := compileYAML(t, cvatYAML+"\n")
	want := []string{"X-Email", "X-Forwarded-User", "X-Groups", "X-Portcullis-Assertion"}
	if got := p.Names(); !slices.Equal(got, want) {
		t.Errorf("Names = %q, want %q", got, want)
	}
}

func TestInjectCVAT(t *testing.T) {
	p := compileYAML(t, cvatYAML)
	tests := []struct {
		name       string
		profile    idp.Profile
		wantEmail  string
		wantGroups string
	}{
		{"admin gets email and one role", idp.Profile{Sub: "1", Email: "ann@company.com", Roles: []string{"admin"}}, "ann@company.com", "admin"},
		{"several roles are joined with commas", idp.Profile{Sub: "2", Email: "bob@company.com", Roles: []string{"business", "user"}}, "bob@company.com", "business,user"},
		{"no email and no roles set neither header", idp.Profile{Sub: "3"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Inject is safe on its own, without Strip first: it replaces
			// or removes a client's copy of every header it owns.
			h := http.Header{"Accept": {"*/*"}, "X-Email": {"spoofed"}, "X-Groups": {"spoofed"}}
			if err := p.Inject(h, &tt.profile); err != nil {
				t.Fatalf("Inject: %v", err)
			}
			for key, want := range map[string]string{"X-Email": tt.wantEmail, "X-Groups": tt.wantGroups} {
				got, set := h[key]
				switch {
				case want == "" && set:
					t.Errorf("%s = %q, want it unset", key, got)
				case want != "" && !slices.Equal(got, []string{want}):
					t.Errorf("%s = %q, want %q", key, got, want)
				}
			}
			if h.Get("X-Portcullis-Assertion") == "" {
				t.Errorf("no assertion set")
			}
			if h.Get("Accept") != "*/*" {
				t.Errorf("Inject changed Accept")
			}
		})
	}
}

func TestInjectFormatsValues(t *testing.T) {
	prof := &idp.Profile{
		Sub: "s", Email: "ann@company.com", EmailVerified: true, Name: "Ann\tLee",
		Groups: []string{"staff", "cvat-admins"}, Roles: []string{"admin"},
		Claims: map[string]any{
			"uid": float64(1234), "ratio": 0.5, "list": []any{"a", float64(1), true, nil},
			"empty": "", "blank": " \t ", "padded": " ann ", "nested": []any{[]any{"x"}}, "obj": map[string]any{"a": "b"},
		},
	}
	tests := []struct {
		name string
		expr string
		want string // "" means the header is not set
	}{
		{"string is passed as is", "email", "ann@company.com"},
		{"list of strings is joined with commas", "groups", "staff,cvat-admins"},
		{"bool is true or false", "email_verified", "true"},
		{"false bool is set", "!email_verified", "false"},
		{"whole-number claim has no decimals", "claims.uid", "1234"},
		{"fractional claim keeps its decimals", "claims.ratio", "0.5"},
		{"int result is formatted", "len(groups)", "2"},
		{"list claim is joined, nil elements skipped", "claims.list", "a,1,true"},
		{"tab inside a value is allowed", "name", "Ann\tLee"},
		{"missing claim leaves the header unset", "claims.missing", ""},
		{"empty string leaves the header unset", "claims.empty", ""},
		{"whitespace-only value leaves the header unset", "claims.blank", ""},
		{"surrounding whitespace is trimmed, as net/http sends it", "claims.padded", "ann"},
		{"empty profile field leaves the header unset", "username", ""},
		{"expression can build a value", `sub + "@" + idp`, "s@"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(Config{Headers: map[string]string{"X-Value": tt.expr}}, "https://x")
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			h := http.Header{}
			if err := p.Inject(h, prof); err != nil {
				t.Fatalf("Inject: %v", err)
			}
			got, set := h["X-Value"]
			if tt.want == "" {
				if set {
					t.Errorf("X-Value = %q, want it unset", got)
				}
				return
			}
			if !slices.Equal(got, []string{tt.want}) {
				t.Errorf("X-Value = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestInjectRefusesUnsafeValues(t *testing.T) {
	tests := []struct {
		name    string
		profile idp.Profile
		expr    string
		wantErr string
	}{
		{"CR LF in a value is refused", idp.Profile{Username: "ann\r\nX-Admin: 1"}, "username", `header X-Value: value has control character '\r'`},
		{"bare LF in a value is refused", idp.Profile{Name: "a\nb"}, "name", `control character '\n'`},
		{"NUL in a value is refused", idp.Profile{Username: "a\x00b"}, "username", `control character '\x00'`},
		{"DEL in a value is refused", idp.Profile{Username: "a\x7fb"}, "username", `control character '\x7f'`},
		{"CR inside a list element is refused", idp.Profile{Groups: []string{"ok", "bad\r"}}, "groups", `control character '\r'`},
		{"nested list is refused", idp.Profile{Claims: map[string]any{"n": []any{[]any{"x"}}}}, "claims.n", "list element is []interface {}"},
		{"object claim is refused", idp.Profile{Claims: map[string]any{"o": map[string]any{"a": "b"}}}, "claims.o", "value is map[string]interface {}"},
		{"runtime error is refused", idp.Profile{}, "claims.org.name", "header X-Value: evaluate: cannot fetch name from <nil>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(Config{
				Headers: map[string]string{"X-Value": tt.expr, "X-Email": "email", "X-Sub": `"s"`},
				JWT:     &JWTConfig{Header: "X-Assertion"},
			}, "https://x")
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			h := http.Header{"Accept": {"*/*"}}
			err = p.Inject(h, &tt.profile)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Inject error = %v, want one containing %q", err, tt.wantErr)
			}
			if len(h) != 1 {
				t.Errorf("Inject set headers despite the error: %v", h)
			}
			if _, err := p.Values(&tt.profile); err == nil {
				t.Errorf("Values succeeded where Inject failed")
			}
		})
	}
}

func TestValuesMatchesInject(t *testing.T) {
	p := compileYAML(t, cvatYAML)
	prof := &idp.Profile{Sub: "1", Email: "ann@company.com", Roles: []string{"admin", "user"}}
	vals, err := p.Values(prof)
	if err != nil {
		t.Fatalf("Values: %v", err)
	}
	h := http.Header{}
	if err := p.Inject(h, prof); err != nil {
		t.Fatalf("Inject: %v", err)
	}
	if len(vals) != len(h) {
		t.Errorf("Values has %d headers, Inject set %d: %v vs %v", len(vals), len(h), vals, h)
	}
	for k, v := range vals {
		if k == "X-Portcullis-Assertion" {
			if h.Get(k) == "" || v == "" {
				t.Errorf("assertion missing from Values or Inject")
			}
			continue // signed at a different moment
		}
		if h.Get(k) != v {
			t.Errorf("%s: Values %q, Inject %q", k, v, h.Get(k))
		}
	}
}

func TestInjectConcurrently(t *testing.T) {
	p := compileYAML(t, cvatYAML)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prof := &idp.Profile{Sub: "s", Email: "a@b.c", Roles: []string{"user"}}
			for range 20 {
				h := http.Header{"x_email": {"spoof"}}
				p.Strip(h)
				if err := p.Inject(h, prof); err != nil {
					t.Errorf("goroutine %d: Inject: %v", i, err)
					return
				}
				if h.Get("X-Email") != "a@b.c" || len(h) != 3 {
					t.Errorf("goroutine %d: headers %v", i, h)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name   string
		config Config
		want   []string // every line must appear in the joined error
	}{
		{
			name:   "header name with a space is refused, naming the key",
			config: Config{Headers: map[string]string{"X Bad": "email"}},
			want:   []string{`headers.X Bad: "X Bad" is not a valid header name`},
		},
		{
			name:   "header name with a colon is refused",
			config: Config{Headers: map[string]string{"X-Email:": "email"}},
			want:   []string{`headers.X-Email:: "X-Email:" is not a valid header name`},
		},
		{
			name:   "unknown profile field is refused, naming the key",
			config: Config{Headers: map[string]string{"X-Email": "emial"}},
			want:   []string{"headers.X-Email: unknown name emial (at 1:1)"},
		},
		{
			name:   "syntax error is refused",
			config: Config{Headers: map[string]string{"X-Groups": `join(roles, ","`}},
			want:   []string{"headers.X-Groups: "},
		},
		{
			name:   "expression giving an object is refused",
			config: Config{Headers: map[string]string{"X-Claims": "claims"}},
			want:   []string{"headers.X-Claims: expression gives map[string]interface {}; want a string, list, bool or number"},
		},
		{
			name:   "two spellings of one header are refused",
			config: Config{Headers: map[string]string{"X-Email": "email", "x_email": "email"}},
			want:   []string{"headers.x_email: same header as headers.X-Email"},
		},
		{
			name:   "framing header is refused",
			config: Config{Headers: map[string]string{"Host": `"evil"`}, StripHeaders: []string{"content_length"}},
			want:   []string{"headers.Host: Host cannot be stripped or set", "strip_headers[0]: content_length cannot be stripped or set"},
		},
		{
			name:   "invalid strip_headers entry is refused",
			config: Config{StripHeaders: []string{"X-Forwarded-User", "X User"}},
			want:   []string{`strip_headers[1]: "X User" is not a valid header name`},
		},
		{
			name:   "jwt without header is refused",
			config: Config{JWT: &JWTConfig{}},
			want:   []string{"jwt.header: required"},
		},
		{
			name:   "jwt header that is also in headers is refused",
			config: Config{Headers: map[string]string{"X-Assertion": "email"}, JWT: &JWTConfig{Header: "x-assertion"}},
			want:   []string{"jwt.header: same header as headers.X-Assertion"},
		},
		{
			name:   "signing key that is not PEM is refused",
			config: Config{JWT: &JWTConfig{Header: "X-A", SigningKey: "not a key"}},
			want:   []string{"jwt.signing_key: no PEM block found"},
		},
		{
			name:   "signing key on the wrong curve is refused",
			config: Config{JWT: &JWTConfig{Header: "X-A", SigningKey: p384PEM(t)}},
			want:   []string{"jwt.signing_key: curve P-384; want P-256"},
		},
		{
			name:   "signing key that is not EC is refused",
			config: Config{JWT: &JWTConfig{Header: "X-A", SigningKey: ed25519PEM(t)}},
			want:   []string{"jwt.signing_key: ed25519.PrivateKey key; want an EC P-256 key"},
		},
		{
			name:   "certificate instead of a key is refused",
			config: Config{JWT: &JWTConfig{Header: "X-A", SigningKey: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}},
			want:   []string{`jwt.signing_key: PEM block is "CERTIFICATE"`},
		},
		{
			name:   "missing key file is refused",
			config: Config{JWT: &JWTConfig{Header: "X-A", SigningKeyFile: "/nonexistent/key.pem"}},
			want:   []string{"jwt.signing_key_file: read: open /nonexistent/key.pem"},
		},
		{
			name:   "key inline and in a file is refused",
			config: Config{JWT: &JWTConfig{Header: "X-A", SigningKey: p256PEM(t, false), SigningKeyFile: "/k.pem"}},
			want:   []string{"jwt.signing_key: set either signing_key or signing_key_file, not both"},
		},
		{
			name:   "negative lifetime is refused",
			config: Config{JWT: &JWTConfig{Header: "X-A", SigningKey: p256PEM(t, false), Lifetime: -1}},
			want:   []string{"jwt.lifetime: must be positive"},
		},
		{
			name: "every problem is reported at once",
			config: Config{
				Headers:      map[string]string{"X Bad": "email", "X-Email": "emial"},
				JWT:          &JWTConfig{SigningKey: "junk"},
				StripHeaders: []string{""},
			},
			want: []string{"headers.X Bad: ", "headers.X-Email: unknown name emial", "jwt.header: required", "jwt.signing_key: no PEM block found", `strip_headers[0]: "" is not a valid header name`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(tt.config, "https://cvat.example.com")
			if err == nil {
				t.Fatalf("Compile succeeded, want errors %q", tt.want)
			}
			if p != nil {
				t.Errorf("Compile returned a Pass with an error")
			}
			if lines := strings.Split(err.Error(), "\n"); len(lines) != len(tt.want) {
				t.Errorf("Compile error has %d lines, want %d: %q", len(lines), len(tt.want), err)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Compile error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestEmptyConfigStripsAndInjectsNothing(t *testing.T) {
	p, err := Compile(Config{}, "")
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	h := http.Header{"X-Email": {"x"}}
	p.Strip(h)
	if err := p.Inject(h, &idp.Profile{Email: "a@b.c"}); err != nil {
		t.Fatalf("Inject: %v", err)
	}
	if len(h) != 1 || h.Get("X-Email") != "x" {
		t.Errorf("headers changed: %v", h)
	}
	if len(p.Names()) != 0 {
		t.Errorf("Names = %q, want none", p.Names())
	}
}

func BenchmarkStrip(b *testing.B) {
	p := compileYAML(b, cvatYAML)
	h := http.Header{"Accept": {"text/html"}, "Cookie": {"a=b"}, "User-Agent": {"x"}, "X-Forwarded-For": {"1"}}
	b.ReportAllocs()
	for b.Loop() {
		p.Strip(h)
	}
}

func BenchmarkInject(b *testing.B) {
	prof := &idp.Profile{IdP: "company", Sub: "1", Email: "ann@company.com", Groups: []string{"staff"}, Roles: []string{"admin"}}
	for _, bc := range []struct{ name, yaml string }{
		{"headers", "headers: {X-Email: email, X-Groups: 'join(roles, \",\")'}"},
		{"headers+jwt", cvatYAML},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := compileYAML(b, bc.yaml)
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Inject(http.Header{}, prof); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestStripLongName(t *testing.T) {
	long := "X-" + strings.Repeat("Very-Long-Name-", 6) + "User" // longer than Strip's stack buffer
	p, err := Compile(Config{StripHeaders: []string{long}}, "https://x")
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	spoofed := strings.ReplaceAll(strings.ToLower(long), "-", "_")
	h := http.Header{spoofed: {"evil"}, "Accept": {"*/*"}}
	p.Strip(h)
	if _, present := h[spoofed]; present || len(h) != 1 {
		t.Errorf("after Strip headers = %v, want only Accept", h)
	}
}

// A value no header can carry is a ValueError that names the header, the
// kind of byte and the profile fields that hold one, never the value.
func TestValueErrorNamesWhereTheByteIs(t *testing.T) {
	tests := []struct {
		name       string
		profile    idp.Profile
		expr       string
		wantFields []string
		wantClass  string
	}{
		{"CR LF in the email", idp.Profile{Email: "a@b.c\r\nX-Admin: 1"}, "email", []string{"email"}, "a line break (CR, 0x0d)"},
		{"NUL in the name and a claim", idp.Profile{Name: "a\x00b", Claims: map[string]any{"name": "a\x00b", "ok": "fine"}}, "name", []string{"name", "claims.name"}, "a NUL byte (0x00)"},
		{"ESC in a nested claim", idp.Profile{Claims: map[string]any{"org": map[string]any{"dept": []any{"R&D\x1b"}}}}, "claims.org.dept", []string{"claims.org"}, "a control character (0x1b)"},
		{"LF in a group", idp.Profile{Groups: []string{"ok", "bad\n"}}, "groups", []string{"groups"}, "a line break (LF, 0x0a)"},
		{"the expression's own LF", idp.Profile{Email: "a@b.c"}, `email + "\n"`, nil, "a line break (LF, 0x0a)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(Config{Headers: map[string]string{"X-Value": tt.expr}}, "https://x")
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.For("s", &tt.profile)
			bad, ok := errors.AsType[*ValueError](err)
			if !ok {
				t.Fatalf("For error = %v, want a *ValueError", err)
			}
			if bad.Header != "X-Value" || !slices.Equal(bad.Fields, tt.wantFields) || bad.Class() != tt.wantClass {
				t.Errorf("header %s, fields %v, class %q; want X-Value, %v, %q", bad.Header, bad.Fields, bad.Class(), tt.wantFields, tt.wantClass)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\r\n\x00\x1b") || strings.Contains(msg, "R&D") || strings.Contains(msg, "X-Admin") {
				t.Errorf("message %q carries the value", msg)
			}
		})
	}
}
