package session

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/portcullis-proxy/portcullis/idp"
)

// Sealed values of earlier builds must keep opening: after an upgrade users
// stay signed in, and during a rolling update old and new replicas serve the
// same browsers (a cookie sealed by a new replica reaches an old one and
// back, a login started at one finishes at another, Redis holds sessions
// both write). testdata/compat holds, one file per build that added one,
// cookies, Redis values, login-state and device cookies sealed with fixed
// keys at a fixed time, and what each must open to. Files are only ever
// added, never rewritten, so each keeps the layout of the build that made it.
//
// To add the values sealed by today's build (after a change to what is
// sealed, or before a release):
//
//	go test ./proxy/session -run TestSealedCompat -compat-add NAME
//
// writes testdata/compat/NAME.json (it refuses to overwrite one); commit it.

var compatAdd = flag.String("compat-add", "", "write testdata/compat/`NAME`.json with values sealed by this build (see TestSealedCompat)")

// compatAdvice ends every failure of TestSealedCompat.
const compatAdvice = `
A value sealed by an earlier build (testdata/compat/%s) no longer opens as it did: after an upgrade
its users would be signed out or see other data, and during a rolling update old and new replicas
would not understand each other. Either keep reading the old layout (a default or a migration where
wireSession, sealedFlow, wireDevice or idp.Profile/Tokens are decoded), or, if breaking it is
intended, say what users will see in docs/upgrading.md and delete that file in the same commit.
Never rewrite a file in testdata/compat; add today's with -compat-add NAME (see compat_test.go).`

// compatNow is the fixed clock of every value in testdata/compat.
var compatNow = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// compatFile is one build's sealed values.
type compatFile struct {
	About    string            `json:"about"`
	Keys     []string          `json:"keys"` // base64, the first sealed
	Audience string            `json:"audience"`
	Now      time.Time         `json:"now"`
	Cookie   []compatSession   `json:"cookie_sessions"`
	Redis    []compatSession   `json:"redis_sessions"`
	Flows    []compatFlow      `json:"flows"`
	Devices  []compatDevice    `json:"devices"`
	Indexes  map[string]string `json:"redis_index_keys"` // kind value -> key name
}

type compatSession struct {
	Name    string            `json:"name"`
	Cookies []compatCookie    `json:"cookies"`
	Data    string            `json:"redis_d,omitempty"` // the hash's fields, Redis store
	Last    string            `json:"redis_l,omitempty"`
	Want    map[string]string `json:"want"`
}

type compatCookie struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type compatFlow struct {
	Kind   FlowKind          `json:"kind"`
	State  string            `json:"state"`
	Cookie compatCookie      `json:"cookie"`
	Want   map[string]string `json:"want"`
}

type compatDevice struct {
	IdP     string       `json:"idp"`
	User    string       `json:"user"`
	Account string       `json:"account"`
	Cookie  compatCookie `json:"cookie"`
}

// compatSessions are what every build seals: an OIDC login with a refresh
// token, one that keeps its ID token (single_sign_out), a SAML login with
// its NameID, and one with enough groups to be deflated into several cookies.
func compatSessions() map[string]*Session {
	created := compatNow.Add(-time.Hour)
	base := func(id string, p idp.Profile, t idp.Tokens) *Session {
		return &Session{ID: id, Profile: p, Tokens: t, Created: created, Expires: created.Add(12 * time.Hour),
			LastSeen: compatNow.Add(-10 * time.Minute), Refreshed: compatNow.Add(-30 * time.Minute)}
	}
	oidc := idp.Profile{
		IdP: "company", Sub: "u-123", Email: "alice@example.com", EmailVerified: true, Username: "alice",
		FirstName: "Alice", LastName: "Liddell", Name: "Alice Liddell", Groups: []string{"cvat-admins", "staff"},
		Roles: []string{"admin"}, Claims: map[string]any{"tenant": "wonderland", "n": 3.0, "org": map[string]any{"teams": []any{"a", "b"}}},
	}
	saml := idp.Profile{IdP: "corp-saml", Sub: "bob", Email: "bob@example.com", Groups: []string{"annotators"}, Roles: []string{"user"}}
	many := oidc
	many.Groups = nil
	for i := range 300 {
		many.Groups = append(many.Groups, fmt.Sprintf("cn=group-%03d-%x,ou=groups,dc=example,dc=com", i, i*7919))
	}
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"https://idp.example","sub":"u-123","sid":"s-9"}`))
	return map[string]*Session{
		"oidc": base("oidc-session-id-000001", oidc, idp.Tokens{RefreshToken: "rt-1", Sub: "u-123", SID: "s-9", Expiry: compatNow.Add(5 * time.Minute).Unix()}),
		"oidc-id-token": base("oidc-session-id-000002", oidc, idp.Tokens{RefreshToken: "rt-2",
			IDToken: "eyJhbGciOiJSUzI1NiJ9." + payload + ".c2ln", SID: "s-9"}),
		"saml": base("saml-session-id-000003", saml, idp.Tokens{SID: "idx-7",
			NameID: &idp.SAMLNameID{Value: "bob@example.com", Format: "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress", NameQualifier: "https://idp.example"}}),
		"many-groups": base("many-session-id-000004", many, idp.Tokens{RefreshToken: "rt-4", Sub: "u-123"}),
	}
}

// describe is what a test compares of an opened session, in a form of the
// test's own, so that a change to the sealed layout shows here.
func describe(s *Session) map[string]string {
	j := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	t := func(v time.Time) string { return v.UTC().Format(time.RFC3339) }
	p, k := s.Profile, s.Tokens
	groups := j(p.Groups)
	if len(p.Groups) > 10 {
		groups = fmt.Sprintf("%d groups, sha256 %x", len(p.Groups), sha256.Sum256([]byte(groups)))
	}
	return map[string]string{
		"id": s.ID, "idp": p.IdP, "sub": p.Sub, "email": p.Email, "email_verified": fmt.Sprint(p.EmailVerified),
		"username": p.Username, "first_name": p.FirstName, "last_name": p.LastName, "name": p.Name,
		"groups": groups, "roles": j(p.Roles), "claims": j(p.Claims),
		"refresh_token": k.RefreshToken, "id_token": k.IDToken, "subject": k.Subject(), "session_key": k.SessionKey(),
		"token_expiry": fmt.Sprint(k.Expiry), "name_id": j(k.NameID),
		"created": t(s.Created), "expires": t(s.Expires), "last_seen": t(s.LastSeen), "refreshed": t(s.Refreshed),
	}
}

func compatOptions(keys [][]byte, aud string, now time.Time) Options {
	return Options{Keys: keys, Secure: true, Audience: aud, Lifetime: DefaultLifetime, IdleTimeout: DefaultIdleTimeout,
		Now: func() time.Time { return now }}
}

// timeless lifts securecookie's own age check, which reads the machine's
// clock: the values were sealed once, long ago; the stores' checks, which
// read Options.Now, still apply.
func timeless(cs []securecookie.Codec) {
	for _, c := range cs {
		c.(*securecookie.SecureCookie).MaxAge(0)
	}
}

func TestSealedCompat(t *testing.T) {
	dir := filepath.Join("testdata", "compat")
	if *compatAdd != "" {
		writeCompat(t, filepath.Join(dir, *compatAdd+".json"))
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no files in %s (%v): they hold the values earlier builds sealed; restore them from git", dir, err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var cf compatFile
			if err := json.Unmarshal(raw, &cf); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			checkCompat(t, &cf, filepath.Base(file))
		})
	}
}

func checkCompat(t *testing.T, cf *compatFile, file string) {
	t.Helper()
	failed := false
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf(format, args...)
		failed = true
	}
	defer func() {
		if failed {
			t.Errorf(compatAdvice, file)
		}
	}()
	var keys [][]byte
	for _, k := range cf.Keys {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, b)
	}
	o := compatOptions(keys, cf.Audience, cf.Now)

	cs := mustStore(t, o)
	timeless(cs.codecs)
	for _, c := range cf.Cookie {
		s, err := cs.Load(compatRequest(c.Cookies...))
		if err != nil || s == nil {
			fail("cookie store: session %q does not open (err %v)", c.Name, err)
			continue
		}
		compareSession(t, fail, "cookie store", c, s)
	}

	rs, err := NewRedisStore(o, &Redis{prefix: "portcullis:"})
	if err != nil {
		t.Fatal(err)
	}
	timeless(rs.ids)
	timeless(rs.values)
	for _, c := range cf.Redis {
		id, why := rs.cookieID(compatRequest(c.Cookies...))
		if id == "" {
			fail("redis store: the cookie of session %q does not open (%v)", c.Name, why)
			continue
		}
		s, ended := rs.open(id, []any{c.Data, c.Last})
		if s == nil {
			fail("redis store: session %q does not open from its Redis value (ended %v)", c.Name, ended)
			continue
		}
		compareSession(t, fail, "redis store", c, s)
	}
	for what, want := range cf.Indexes {
		if got := compatIndexKeys(rs)[what]; got != want {
			fail("redis store: the index %s is named %q, was %q: a logout at the IdP or `sessions revoke` would not find sessions an earlier build indexed", what, got, want)
		}
	}

	flows := NewFlows(o)
	timeless(flows.codecs)
	for _, f := range cf.Flows {
		got, _, err := flows.Finish(httptest.NewRecorder(), compatRequest(f.Cookie), f.Kind, f.State)
		if err != nil {
			fail("login state (%s) does not finish: %v: a login started on an older replica fails on a newer one", f.Kind, err)
			continue
		}
		for k, v := range describeFlow(got) {
			if w, ok := f.Want[k]; ok && w != v {
				fail("login state (%s): %s is %q, was sealed as %q", f.Kind, k, v, w)
			}
		}
	}

	devices := NewDevices(o)
	timeless(devices.codecs)
	for _, d := range cf.Devices {
		got := devices.Find(compatRequest(d.Cookie), d.IdP, d.User)
		if !got.SignedInTo(d.Account) {
			fail("device cookie of %s at %s is not recognised: its owner would be held to the shared failed-login limits", d.User, d.IdP)
		}
	}
}

func compareSession(t *testing.T, fail func(string, ...any), store string, c compatSession, s *Session) {
	t.Helper()
	got := describe(s)
	keys := make([]string, 0, len(c.Want))
	for k := range c.Want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if got[k] != c.Want[k] {
			fail("%s: session %q opens with %s %q, was sealed with %q", store, c.Name, k, got[k], c.Want[k])
		}
	}
}

func describeFlow(f *idp.Flow) map[string]string {
	return map[string]string{"state": f.State, "idp": f.IdP, "redirect": f.Redirect, "nonce": f.Nonce,
		"verifier": f.Verifier, "request_id": f.RequestID, "created": fmt.Sprint(f.Created)}
}

// compatIndexKeys names the Redis sets that find the sessions of the users
// in compatSessions: every build must name them alike.
func compatIndexKeys(rs *RedisStore) map[string]string {
	return map[string]string{
		"sub company u-123":              rs.subIndex("company", "u-123").key,
		"subject company u-123":          rs.subjectIndex("company", "u-123").key,
		"sid company s-9":                rs.sidIndex("company", "s-9").key,
		"email alice@example.com":        rs.emailIndex("alice@example.com").key,
		"legacy sub company u-123":       rs.subIndex("company", "u-123").legacy,
		"legacy email alice@example.com": rs.emailIndex("alice@example.com").legacy,
	}
}

func compatRequest(cookies ...compatCookie) *http.Request {
	r := httptest.NewRequest("GET", "https://cvat.example.com/", nil)
	for _, c := range cookies {
		r.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	return r
}

// writeCompat seals compatSessions, a login and a logout state and a device
// cookie with this build into file.
func writeCompat(t *testing.T, file string) {
	if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s exists (%v): files in testdata/compat are never rewritten; give -compat-add a new name", file, err)
	}
	keys := [][]byte{key(0x5a), key(0xa5)}
	cf := compatFile{
		About:    "sealed by TestSealedCompat -compat-add; never edit or rewrite (see compat_test.go)",
		Audience: "https://cvat.example.com", Now: compatNow,
	}
	for _, k := range keys {
		cf.Keys = append(cf.Keys, base64.StdEncoding.EncodeToString(k))
	}
	o := compatOptions(keys, cf.Audience, compatNow)
	cs := mustStore(t, o)
	rs, err := NewRedisStore(o, &Redis{prefix: "portcullis:"})
	if err != nil {
		t.Fatal(err)
	}
	sessions := compatSessions()
	names := make([]string, 0, len(sessions))
	for n := range sessions {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		s := sessions[n]
		var cookies []compatCookie
		for _, c := range live(saved(t, cs, s)) {
			cookies = append(cookies, compatCookie{c.Name, c.Value})
		}
		cf.Cookie = append(cf.Cookie, compatSession{Name: n, Cookies: cookies, Want: describe(s)})

		// What Save writes to Redis and the cookie, without a Redis.
		d, err := rs.values[0].Encode(redisValueCodecName, toWire(s, rs.aud))
		if err != nil {
			t.Fatal(err)
		}
		id, err := rs.ids[0].Encode(sessionIDCodecName, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		cf.Redis = append(cf.Redis, compatSession{Name: n, Cookies: []compatCookie{{rs.name, id}},
			Data: d, Last: fmt.Sprint(s.LastSeen.Unix()), Want: describe(s)})
	}
	cf.Indexes = compatIndexKeys(rs)

	flows := NewFlows(o)
	for _, kind := range []FlowKind{LoginFlow, LogoutFlow} {
		f := &idp.Flow{State: NewState(), IdP: "company", Redirect: "https://cvat.example.com/tasks?page=2",
			Nonce: "nonce-1", Verifier: "verifier-1", RequestID: "id-abc", Created: compatNow.Add(-time.Minute).Unix()}
		w := httptest.NewRecorder()
		if err := flows.Start(w, httptest.NewRequest("GET", "https://cvat.example.com/", nil), kind, f, false); err != nil {
			t.Fatal(err)
		}
		c := w.Result().Cookies()[0]
		cf.Flows = append(cf.Flows, compatFlow{Kind: kind, State: f.State, Cookie: compatCookie{c.Name, c.Value}, Want: describeFlow(f)})
	}

	devices := NewDevices(o)
	w := httptest.NewRecorder()
	if err := devices.Issue(w, "/.portcullis/ldap/corp-ldap", "corp-ldap", "alice", "uid=alice,ou=people,dc=example,dc=com"); err != nil {
		t.Fatal(err)
	}
	c := w.Result().Cookies()[0]
	cf.Devices = append(cf.Devices, compatDevice{IdP: "corp-ldap", User: "alice", Account: "uid=alice,ou=people,dc=example,dc=com",
		Cookie: compatCookie{c.Name, c.Value}})

	b, err := json.MarshalIndent(cf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s: commit it", file)
}
