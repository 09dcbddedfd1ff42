package proxy

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestFailureLimiter(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name     string
		failures int
		after    time.Duration
		wantWait time.Duration
	}{
		{"four failures leave an attempt", 4, 0, 0},
		{"the fifth failure holds the key back a minute", 5, 0, time.Minute},
		{"one attempt comes back a minute later", 5, time.Minute, 0},
		{"half a minute later, half a minute to wait", 5, 30 * time.Second, 30 * time.Second},
		{"failing on past the limit does not dig deeper", 9, 0, time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newFailureLimiter(5, 5*time.Minute, 100)
			for range tc.failures {
				l.fail("k", t0)
			}
			if got := l.wait("k", t0.Add(tc.after)); got != tc.wantWait {
				t.Errorf("wait = %s, want %s", got, tc.wantWait)
			}
			if got := l.wait("other", t0); got != 0 {
				t.Errorf("another key waits %s", got)
			}
		})
	}
}

// A key that failed once and then went quiet for a day has the burst back,
// and no more: attempts do not pile up while nobody tries.
func TestFailureLimiterRefillsToTheBurstOnly(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	l := newFailureLimiter(5, 5*time.Minute, 100)
	l.fail("k", t0)
	later := t0.Add(24 * time.Hour)
	for range 5 {
		l.fail("k", later)
	}
	if got := l.wait("k", later); got != time.Minute {
		t.Errorf("after a quiet day and 5 failures, wait = %s, want a minute", got)
	}
}

func TestFailureLimiterIsBounded(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	l := newFailureLimiter(5, 5*time.Minute, 100)
	for i := range 1000 {
		l.fail(string(rune('a'+i%26))+string(rune(i)), t0)
	}
	if n := len(l.buckets); n > 100 {
		t.Errorf("%d buckets, want at most 100", n)
	}
	// Refilled buckets go first: after the window, the old keys are gone.
	l.fail("new", t0.Add(10*time.Minute))
	for range 200 {
		l.fail("new2", t0.Add(10*time.Minute))
	}
	if n := len(l.buckets); n > 2 {
		t.Errorf("%d buckets after the window, want the 2 recent ones", n)
	}
}

// A key whose bucket has refilled is forgotten long before the limiter is
// full: a full bucket is the same as none, and a proxy that ran for weeks
// kept every username and address that had ever failed, up to the bound.
func TestFailureLimiterForgetsRefilledKeys(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	l := newFailureLimiter(5, 5*time.Minute, 50_000)
	for day := range 10 {
		now := t0.Add(time.Duration(day) * 24 * time.Hour)
		for i := range 2000 {
			l.fail(fmt.Sprintf("day%d-user%d", day, i), now)
		}
	}
	if n := len(l.buckets); n > 2*2000 {
		t.Errorf("after 10 days of 2000 failing usernames a day, %d buckets, want at most 4000 (two days')", n)
	}
	if l.wait("day9-user1", t0.Add(9*24*time.Hour)) != 0 || l.level(l.buckets[limitKeyOf("day9-user1")], t0.Add(9*24*time.Hour)) != 4 {
		t.Error("a key that failed today is forgotten")
	}
}

func TestLoginLimits(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	l := newLoginLimits()
	a := netip.MustParseAddr("192.0.2.1")
	for i := range 5 {
		l.take(attemptKeys("corp", "Bob ", netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})), t0)
	}
	if l.wait(attemptKeys("corp", "bob", a), t0) == 0 {
		t.Errorf("bob (any case, any address) is not held back after 5 failures")
	}
	if l.wait(attemptKeys("other-idp", "bob", a), t0) != 0 {
		t.Errorf("bob at another IdP is held back")
	}
	l.succeeded(attemptKeys("corp", "BOB", netip.Addr{}), t0)
	if l.wait(attemptKeys("corp", "bob", a), t0) != 0 {
		t.Errorf("a success did not clear bob's failures")
	}

	// Failures count against the account the directory found too, so that
	// its other spellings (mail for uid) are held back once it is found.
	dn := "uid=carol,ou=people,dc=example,dc=com"
	for i := range 5 {
		k := attemptKeys("corp", "carol", netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}))
		k.account = accountLimitKey(dn)
		l.take(k, t0)
	}
	if l.wait(attemptKeys("corp", "carol@example.com", a), t0) != 0 {
		t.Errorf("another spelling is held back before its account is known")
	}
	if l.wait(loginKeys{account: accountLimitKey("UID=Carol,ou=people,dc=example,dc=com")}, t0) == 0 {
		t.Errorf("carol's account (its DN in any case) is not held back after 5 failures")
	}
	k := attemptKeys("corp", "carol@example.com", a)
	k.account = accountLimitKey(dn)
	l.succeeded(k, t0)
	if l.wait(loginKeys{account: accountLimitKey(dn)}, t0) != 0 {
		t.Errorf("a success under another spelling did not clear the account's failures")
	}

	// A success gives the address back the attempt it took, and no more:
	// one password the client knows does not reset its guesses at others.
	spray := netip.MustParseAddr("192.0.2.50")
	for i := range 19 {
		l.take(attemptKeys("corp", "guess"+string(rune('a'+i)), spray), t0)
	}
	known := attemptKeys("corp", "mallory", spray)
	l.take(known, t0)
	l.succeeded(known, t0)
	l.take(attemptKeys("corp", "guesst", spray), t0)
	if l.wait(attemptKeys("corp", "guessu", spray), t0) == 0 {
		t.Errorf("an address is not held back after 20 failures with a success among them")
	}

	// A login whose device cookie vouches for the username is counted
	// against the client's address all the same: device cookies, each with
	// attempts of its own, do not buy an address fresh guesses.
	trusted := netip.MustParseAddr("192.0.2.80")
	for i := range 20 {
		l.take(trustedKeys("corp", fmt.Sprintf("nonce-%d", i), trusted), t0)
	}
	if l.wait(attemptKeys("corp", "dave", trusted), t0) == 0 {
		t.Errorf("an address is not held back after 20 failures of logins with device cookies")
	}

	// One IPv6 host has its /64.
	v6a, v6b := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")
	for i := range 20 {
		l.take(attemptKeys("corp", "user"+string(rune('a'+i)), v6a), t0)
	}
	if l.wait(attemptKeys("corp", "alice", v6b), t0) == 0 {
		t.Errorf("another address of the same /64 is not held back")
	}
	if l.wait(attemptKeys("corp", "alice", netip.MustParseAddr("2001:db8:1:3::1")), t0) != 0 {
		t.Errorf("another /64 is held back")
	}
}

func TestUserKeyReadsSpellingsAsTheDirectoryDoes(t *testing.T) {
	tests := []struct {
		name     string
		username string
		same     string // the spelling it must share a key with
		want     bool
	}{
		{"case and surrounding space are ignored", "  BoB ", "bob", true},
		{"full-width letters read as ASCII", "ｂob", "bob", true},
		{"full-width capitals read as ASCII", "ＢＯＢ", "bob", true},
		{"mathematical bold letters read as ASCII", "𝐛ob", "bob", true},
		{"circled letters read as ASCII", "ⓑob", "bob", true},
		{"other spaces at either end are ignored", "\u3000bob\u00a0", "bob", true},
		{"runs of inner spaces read as one", "bob \u2003\u00a0builder", "bob builder", true},
		{"invisible format characters are dropped", "b\u200bo\u00adb\ufeff", "bob", true},
		{"case folding goes beyond ToLower", "STRASSE", "straße", true},
		{"half-width katakana reads as hiragana", "ｱﾘｽ", "ありす", true},
		{"a longer name is another user", "bobby", "bob", false},
		{"inner space still separates", "bob builder", "bobbuilder", false},
		{"accents are not dropped", "böb", "bob", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := userKey("corp", tt.username) == userKey("corp", tt.same); got != tt.want {
				t.Errorf("userKey(%q) == userKey(%q): %v, want %v (%q, %q)", tt.username, tt.same, got, tt.want,
					userKey("corp", tt.username), userKey("corp", tt.same))
			}
		})
	}
	shared := newSharedLimits(nil, nil, make([]byte, 32))
	if shared.sharedKeys(attemptKeys("corp", "ＢＯＢ", netip.Addr{}))[0] != shared.sharedKeys(attemptKeys("corp", "bob", netip.Addr{}))[0] {
		t.Error("the Redis limits keep ＢＯＢ apart from bob")
	}
	if long := strings.Repeat("ﷺ", 10_000); len(userKey("corp", long)) > 20*maxUserKeyBytes {
		t.Errorf("a %d-byte username has a %d-byte key", len(long), len(userKey("corp", long)))
	}
}

// A limiter's entries take the same memory whatever their key: a
// username's key is cut to maxUserKeyBytes before it is normalized, but
// NFKC makes 18 characters of some single ones (U+FDFA), and a limiter
// full of such names, which need no account, held 34 times what one of
// plain names did (about 3 KB an entry, against 100 bytes).
func TestFailureLimiterMemoryDoesNotGrowWithTheKey(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	const keys = 5000
	l := newFailureLimiter(userFailureBurst, failureWindow, keys)
	before := liveHeap()
	for i := range keys {
		l.fail(userKey("corp-ldap", fmt.Sprintf("%08d", i)+strings.Repeat("\uFDFA", 82)), t0)
	}
	each := (int64(liveHeap()) - int64(before)) / keys
	runtime.KeepAlive(l)
	t.Logf("%d usernames of %d-byte keys: %d bytes each", keys, len(userKey("corp-ldap", strings.Repeat("\uFDFA", 85))), each)
	if each > 1<<10 {
		t.Errorf("%d usernames of 256 bytes held %d bytes each, want no more than a plain one's (about 100)", keys, each)
	}
}

// The sweep forgets only buckets that have refilled: one that forgot a key
// still short of a full bucket, even by a second's worth, would give a
// guesser attempts back early. Keys short by various amounts stay through
// sweeps of thousands of new keys, each with the attempts it had before.
func TestFailureLimiterSweepKeepsWhatHasNotRefilled(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	now := t0.Add(time.Hour)
	l := newFailureLimiter(5, 5*time.Minute, 50_000)
	held := map[string]float64{}
	for i := range 300 {
		// n failures refill in n minutes: the last one a second to n
		// minutes less a second ago.
		n := 1 + i%5
		ago := time.Duration(1+i%(n*60-1)) * time.Second
		if i < 5 {
			ago = time.Duration(n)*time.Minute - time.Second
		}
		key := fmt.Sprint("held-", i)
		for range n {
			l.fail(key, now.Add(-ago))
		}
		held[key] = l.level(l.buckets[limitKeyOf(key)], now)
	}
	for i := range 5 * minSweep {
		l.fail(fmt.Sprint("new-", i), now)
	}
	if l.sweepAt <= minSweep {
		t.Fatalf("no sweep ran (sweepAt %d)", l.sweepAt)
	}
	for key, level := range held {
		b := l.buckets[limitKeyOf(key)]
		if b == nil {
			t.Errorf("%s, %.3f attempts of 5, forgotten before it refilled", key, level)
		} else if got := l.level(b, now); got != level {
			t.Errorf("%s has %.3f attempts after the sweeps, %.3f before", key, got, level)
		}
	}
}

// take checks and counts under the limiters' locks: of many attempts made
// at once, the burst and no more get through.
func TestLoginLimitsLetTheBurstThroughWhenAttemptsComeAtOnce(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	keys := attemptKeys("corp", "bob", netip.MustParseAddr("192.0.2.1"))
	for round := range 3000 {
		l := newLoginLimits()
		var through atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 16 {
			wg.Go(func() {
				<-start
				if _, wait := l.take(keys, t0); wait == 0 {
					through.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if n := through.Load(); n != userFailureBurst {
			t.Fatalf("round %d: %d of 16 attempts made at once got through, want %d", round, n, userFailureBurst)
		}
	}
}
