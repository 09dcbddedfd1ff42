package attrpass

import (
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
)

func alice() *idp.Profile {
	return &idp.Profile{IdP: "company", Sub: "alice", Email: "alice@example.com",
		Groups: []string{"cvat-admins"}, Roles: []string{"admin"}, Claims: map[string]any{"dept": "r&d"}}
}

func TestForSetsWhatInjectSets(t *testing.T) {
	p := compileYAML(t, cvatYAML)
	for _, tc := range []struct {
		name string
		prof *idp.Profile
	}{
		{"every header has a value", alice()},
		// An empty identity header is worse than none, in For as in Inject.
		{"headers without a value are not set", &idp.Profile{IdP: "company", Sub: "carol"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := http.Header{}
			if err := p.Inject(want, tc.prof); err != nil {
				t.Fatal(err)
			}
			id, err := p.For(tc.name, tc.prof)
			if err != nil {
				t.Fatal(err)
			}
			got := http.Header{}
			id.Set(got)
			for _, k := range []string{"X-Email", "X-Groups"} {
				if got.Get(k) != want.Get(k) {
					t.Errorf("%s = %q, want %q", k, got.Get(k), want.Get(k))
				}
			}
			if got.Get("X-Portcullis-Assertion") == "" || len(got) != len(want) {
				t.Errorf("headers %v, want the same keys as Inject's %v", got, want)
			}
		})
	}
}

func TestForRemembersASessionsIdentity(t *testing.T) {
	p := compileYAML(t, "headers: {X-Email: email, X-Groups: 'join(groups, \",\")'}")
	base := alice()
	first, _ := p.For("session-1", base)
	cases := []struct {
		name string
		prof *idp.Profile
	}{
		{"opened from the same cookie", alice2(base)},
		{"decoded afresh, equal", alice()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The very same header values: the expressions did not run
			// again (a copy decoded afresh may be remembered in a new
			// Identity that shares them).
			if again, _ := p.For("session-1", tc.prof); &again.fields[0] != &first.fields[0] {
				t.Fatalf("the same session with the same profile was computed again")
			}
		})
	}
}

// TestForRemembersTheCopyItWasLastGiven: the identity is first computed at
// the login, from the IdP's profile; every request after it brings the
// profile its cookie decodes to, equal but another copy. Remembered with the
// login's copy, each of those requests compared every claim in depth.
func TestForRemembersTheCopyItWasLastGiven(t *testing.T) {
	p := compileYAML(t, "headers: {X-Email: email, X-Groups: 'join(groups, \",\")'}")
	first, err := p.For("session-1", alice())
	if err != nil {
		t.Fatal(err)
	}
	decoded := alice()
	again, err := p.For("session-1", decoded)
	if err != nil {
		t.Fatal(err)
	}
	if &again.fields[0] != &first.fields[0] {
		t.Fatalf("the identity was computed again for the same profile")
	}
	id, _ := p.ids.Get("session-1")
	if !id.prof.SharesBacking(decoded) {
		t.Fatalf("the identity is still remembered with the login's copy of the profile: every request compares its claims in depth")
	}
	if next, _ := p.For("session-1", alice2(decoded)); next != id {
		t.Fatalf("the next request of the session computed its identity again")
	}
}

// alice2 is a copy of prof sharing its slices and claims, as every request
// of a session opened from the same cookie gets.
func alice2(prof *idp.Profile) *idp.Profile { c := *prof; return &c }

func TestForComputesAgainWhenTheProfileChanged(t *testing.T) {
	p := compileYAML(t, "headers: {X-Email: email, X-Groups: 'join(groups, \",\")', X-Roles: 'join(roles, \",\")'}")
	base := alice()
	if _, err := p.For("session-1", base); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		change func(*idp.Profile)
		header string
		want   string
	}{
		{"a refresh that adds a group", func(p *idp.Profile) { p.Groups = []string{"cvat-admins", "annotators"} }, "X-Groups", "cvat-admins,annotators"},
		{"a new email", func(p *idp.Profile) { p.Email = "alice@new.example.com" }, "X-Email", "alice@new.example.com"},
		{"a refresh that maps other roles", func(p *idp.Profile) { p.Roles = []string{"user"} }, "X-Roles", "user"},
		{"claims that are not the same map", func(p *idp.Profile) { p.Claims = map[string]any{"dept": "r&d"} }, "X-Email", "alice@example.com"},
		{"other claims", func(p *idp.Profile) { p.Claims = map[string]any{"dept": "sales"} }, "X-Email", "alice@example.com"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Each change is made to the identity remembered for base,
			// not to the one the case before left.
			if _, err := p.For("session-1", base); err != nil {
				t.Fatal(err)
			}
			prof := alice2(base)
			tc.change(prof)
			id, err := p.For("session-1", prof)
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{}
			id.Set(h)
			if got := h.Get(tc.header); got != tc.want {
				t.Fatalf("%s = %q, want %q", tc.header, got, tc.want)
			}
			if !id.prof.Same(prof) {
				t.Fatalf("identity remembered for another profile")
			}
		})
	}
}

func TestForNeverRemembersAnExpressionThatReadsTheClock(t *testing.T) {
	for _, expr := range []string{`string(now().UnixNano())`, `email + " " + now().Format("15:04:05.000000000")`} {
		t.Run(expr, func(t *testing.T) {
			p := compileYAML(t, fmt.Sprintf("headers: {X-Seen: '%s'}", expr))
			first, _ := p.For("session-1", alice())
			again, _ := p.For("session-1", alice())
			if first == again {
				t.Fatalf("an identity whose header reads the clock was remembered")
			}
		})
	}
}

func TestForSignsTheAssertionAgainAfterAQuarterOfItsLifetime(t *testing.T) {
	p := compileYAML(t, cvatYAML) // lifetime: the default minute
	now := time.Unix(1_800_000_000, 0)
	p.jwt.now = func() time.Time { return now }
	base := alice()
	token := func() string {
		id, err := p.For("session-1", alice2(base))
		if err != nil {
			t.Fatal(err)
		}
		h := http.Header{}
		id.Set(h)
		return h.Get("X-Portcullis-Assertion")
	}
	first := token()
	now = now.Add(DefaultLifetime/4 - time.Second)
	if token() != first {
		t.Fatalf("assertion signed again before a quarter of its lifetime")
	}
	now = now.Add(time.Second)
	if token() == first {
		t.Fatalf("assertion still reused after a quarter of its lifetime")
	}
}

func TestForIsBounded(t *testing.T) {
	p := compileYAML(t, "headers: {X-Email: email}")
	for i := range identityEntries + 100 {
		if _, err := p.For(fmt.Sprintf("session-%d", i), alice()); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.ids.Len(); n > identityEntries {
		t.Fatalf("%d identities remembered, want at most %d", n, identityEntries)
	}
}

// The identities remembered are bounded in the memory they hold, not only
// in number: each keeps the profile it was computed from and its header
// values, the signed assertion too, and 10,000 of users with 300 groups
// named by their DN held 367 MiB. The sessions behind them may be long
// gone: a login is a new session, and nothing else forgets them.
func TestForBoundsTheMemoryItRemembers(t *testing.T) {
	p := compileYAML(t, cvatYAML)
	before := liveHeap()
	for i := range 2000 {
		prof := alice()
		prof.Sub = fmt.Sprint("user-", i)
		prof.Groups = make([]string, 300)
		for g := range prof.Groups {
			prof.Groups[g] = fmt.Sprintf("cn=group-%d,ou=groups,dc=example,dc=com", g)
		}
		if _, err := p.For(fmt.Sprint("session-", i), prof); err != nil {
			t.Fatal(err)
		}
	}
	held := liveHeap() - before
	runtime.KeepAlive(p)
	t.Logf("%d identities remembered, %d KiB live", p.ids.Len(), held>>10)
	if held > 2*identityBytes {
		t.Errorf("2000 identities of users with 300 groups hold %d KiB, want at most about %d", held>>10, identityBytes>>10)
	}
}

// liveHeap is the bytes of live heap objects, after two collections (the
// second frees what sync.Pools held until the first).
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
