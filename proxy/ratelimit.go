package proxy

import (
	"crypto/sha256"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/portcullis-proxy/portcullis/proxy/session"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// Limits on failed password logins (LDAP forms and Basic auth): a username
// may fail this many times per window, and so may a client address (over
// all usernames). Both refill steadily, one attempt per window/burst. A
// browser's device cookie (session.Devices) has the username's limit, of
// its own.
const (
	userFailureBurst = 5
	addrFailureBurst = 20
	failureWindow    = 5 * time.Minute
	// maxLimitedKeys bounds the memory of each limiter.
	maxLimitedKeys = 50_000
)

// failureLimiter counts failures per key in token buckets: each key may
// fail burst times, and earns one attempt back every per/burst. A full
// bucket is the same as no bucket, so memory holds only keys that failed
// recently.
type failureLimiter struct {
	burst   float64
	refill  time.Duration // time to earn one attempt back
	max     int
	mu      sync.Mutex
	buckets map[limitKey]*bucket
	// sweepAt is how many buckets there are when the refilled ones are
	// next forgotten (minSweep).
	sweepAt int
}

// minSweep is the fewest entries at which a sweep of those gone stale is
// due: refilled buckets here, refresh outcomes (refresh.go) and Basic auth
// checks (ldap.go). Each sweeps again once its entries have doubled since,
// so that sweeping costs each new entry a constant share.
const minSweep = 1024

// limitKey is a key as a failureLimiter keeps it, its SHA-256, so that an
// entry takes the same memory whatever the key: a username's key is cut to
// maxUserKeyBytes before it is normalized, and NFKC makes 18 characters of
// some single ones (U+FDFA): as text, 50,000 usernames that need no account
// held 149 MiB, about 3 KB an entry against 100 bytes now.
type limitKey [sha256.Size]byte

func limitKeyOf(key string) limitKey { return sha256.Sum256([]byte(key)) }

type bucket struct {
	tokens float64
	at     time.Time
}

func newFailureLimiter(burst int, window time.Duration, max int) *failureLimiter {
	return &failureLimiter{burst: float64(burst), refill: window / time.Duration(burst), max: max,
		buckets: map[limitKey]*bucket{}, sweepAt: minSweep}
}

// level is b's tokens at now.
func (l *failureLimiter) level(b *bucket, now time.Time) float64 {
	return min(l.burst, b.tokens+float64(now.Sub(b.at))/float64(l.refill))
}

// wait is how long key must wait before its next attempt; 0 when it may
// try now.
func (l *failureLimiter) wait(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waitLocked(key, now)
}

// waitLocked is wait, with l.mu held.
func (l *failureLimiter) waitLocked(key string, now time.Time) time.Duration {
	b := l.buckets[limitKeyOf(key)]
	if b == nil {
		return 0
	}
	tokens := l.level(b, now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) * float64(l.refill))
}

// fail takes one attempt from key.
func (l *failureLimiter) fail(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failLocked(key, now)
}

// failLocked is fail, with l.mu held.
func (l *failureLimiter) failLocked(key string, now time.Time) {
	k := limitKeyOf(key)
	b := l.buckets[k]
	if b == nil {
		// A full bucket is the same as none; a bucket is not looked at
		// again once it has refilled, so the sweep forgets them, or a
		// proxy that runs for weeks keeps every username and address that
		// ever failed, up to max.
		if len(l.buckets) >= l.sweepAt {
			l.forgetRefilled(now)
			l.sweepAt = max(2*len(l.buckets), minSweep)
		}
		if len(l.buckets) >= l.max {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst}
	} else {
		b.tokens = l.level(b, now)
	}
	b.tokens = max(0, b.tokens-1)
	b.at = now
	l.buckets[k] = b
}

// giveBack returns one attempt to key, taken by fail for an attempt that
// turned out not to be a failure.
func (l *failureLimiter) giveBack(key string, now time.Time) {
	k := limitKeyOf(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[k]
	if b == nil {
		return // forgotten meanwhile (a success, or evicted)
	}
	b.tokens = l.level(b, now) + 1
	b.at = now
	if b.tokens >= l.burst {
		delete(l.buckets, k)
	}
}

// reset forgets key's failures (after it logged in).
func (l *failureLimiter) reset(key string) {
	k := limitKeyOf(key)
	l.mu.Lock()
	delete(l.buckets, k)
	l.mu.Unlock()
}

// evict makes room: first the buckets that have refilled (forgetting them
// changes nothing), then, if every key is still limited (a spray of
// usernames), an arbitrary tenth of them. The per-address limit still
// holds such a spray back.
func (l *failureLimiter) evict(now time.Time) {
	l.forgetRefilled(now)
	drop := len(l.buckets) - l.max + max(1, l.max/10)
	for k := range l.buckets {
		if drop <= 0 {
			break
		}
		delete(l.buckets, k)
		drop--
	}
}

// forgetRefilled forgets the buckets that have refilled.
func (l *failureLimiter) forgetRefilled(now time.Time) {
	for k, b := range l.buckets {
		if l.level(b, now) >= l.burst {
			delete(l.buckets, k)
		}
	}
}

// loginLimits are the failure limits of password logins: per username (at
// one IdP), per directory account, per device cookie and per client
// address.
type loginLimits struct {
	users    *failureLimiter
	accounts *failureLimiter
	devices  *failureLimiter
	addrs    *failureLimiter
}

func newLoginLimits() *loginLimits {
	return &loginLimits{
		users:    newFailureLimiter(userFailureBurst, failureWindow, maxLimitedKeys),
		accounts: newFailureLimiter(userFailureBurst, failureWindow, maxLimitedKeys),
		devices:  newFailureLimiter(userFailureBurst, failureWindow, maxLimitedKeys),
		addrs:    newFailureLimiter(addrFailureBurst, failureWindow, maxLimitedKeys),
	}
}

// loginKeys are what one password login is counted against. An empty key
// is not counted: the account is known only once the directory found it,
// and is asked about on its own then (checkPassword). A login from a
// browser whose device cookie vouches for the username is counted against
// the cookie and the client, not the username and the account
// (trustedKeys).
type loginKeys struct {
	user    string // userKey
	account string // accountLimitKey
	// legacyAccount is the account's key as builds before 453e932
	// counted it in Redis (accountKey, by IdP and DN): counted and read
	// beside account, so that during a rolling update from such a build
	// an account's failures hold at replicas of both versions. Memory
	// counts account only. It can go when no supported build predates
	// 453e932.
	legacyAccount string
	device        string // deviceKey
	addr          string // addrKey
	// taken are the counts in Redis that take made (sharedLimits), for
	// giveBack and succeeded to settle in their own windows.
	taken []session.Attempt
}

// attemptKeys are the keys of a login as username from addr at an IdP,
// before the directory has found the account.
func attemptKeys(idpID, username string, addr netip.Addr) loginKeys {
	return loginKeys{user: userKey(idpID, username), addr: addrKey(addr)}
}

// trustedKeys are the keys of a login from addr by a browser whose device
// cookie, with this nonce, vouches for the username at IdP idpID: the
// cookie's own count, in place of the username's and the account's that
// every other client shares (OWASP counts the two apart), and the client's
// as for any login.
func trustedKeys(idpID, nonce string, addr netip.Addr) loginKeys {
	return loginKeys{device: deviceKey(idpID, nonce), addr: addrKey(addr)}
}

// deviceKey identifies a device cookie by its nonce, at an IdP.
func deviceKey(idpID, nonce string) string {
	return idpID + "\x00" + nonce
}

// accountKey identifies a directory account at an IdP, as a device cookie
// names the account its login signed in to: the DN of its entry, as the
// directory returned it, in lower case (DNs compare without case).
func accountKey(idpID, dn string) string {
	return idpID + "\x00" + strings.ToLower(dn)
}

// accountLimitKey is what an account's failures are counted against: its
// DN in lower case, at every IdP. Every spelling of a username that finds
// the entry (uid or mail, sAMAccountName or userPrincipalName) shares it,
// whatever userKey makes of them, and so does every IdP entry that reaches
// the directory: two entries for one domain (one per domain controller,
// ldaps:// beside StartTLS, other groups) each had five guesses of their
// own at every account, 19 binds to one account from 4 entries against
// Samba, where 5 were promised. Accounts of two directories with one DN
// share a limit; that only holds back more.
func accountLimitKey(dn string) string {
	return strings.ToLower(dn)
}

// accountAttemptKeys are what a login is counted against once the
// directory found its account, dn, at IdP idpID.
func accountAttemptKeys(idpID, dn string) loginKeys {
	return loginKeys{account: accountLimitKey(dn), legacyAccount: accountKey(idpID, dn)}
}

// maxUserKeyBytes is as long a username as the LDAP provider checks at all;
// only that much of a longer one, never an account, goes into its key.
const maxUserKeyBytes = 256

// userKey identifies a username at an IdP the way directories compare
// them, so that no other spelling of one account gets failures of its own:
// compatibility forms (full-width, mathematical, circled letters, other
// spaces) read as what they stand for (NFKC), case is folded, invisible
// format characters are dropped, katakana reads as hiragana (Active
// Directory ignores kana type), and runs of spaces read as one, none at
// either end. Names it merges that the directory keeps apart only share a
// limit; names it kept apart that the directory merges would be a bypass.
// The Redis limits (redis.go) hash the same key.
func userKey(idpID, username string) string {
	if len(username) > maxUserKeyBytes {
		username = strings.ToValidUTF8(username[:maxUserKeyBytes], "")
	}
	// A Caser keeps state: one per call.
	name := norm.NFKC.String(cases.Fold().String(norm.NFKC.String(username)))
	var b strings.Builder
	b.Grow(len(name))
	space := false
	for _, r := range name {
		switch {
		case unicode.IsSpace(r):
			space = b.Len() > 0
			continue
		case unicode.In(r, unicode.Cf, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point):
			continue
		case 'ァ' <= r && r <= 'ヶ':
			r -= 'ァ' - 'ぁ'
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return idpID + "\x00" + b.String()
}

// addrKey identifies a client: its IPv4 address, or its IPv6 /64 (one
// host usually has the whole /64). Clients whose address is unknown (a
// trusted proxy forwarded one that does not parse) share one key, so that
// made-up addresses never buy fresh attempts.
func addrKey(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	if a.Is6() && !a.Is4In6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.Unmap().String()
}

// wait is how long the attempt must wait before it may be made: the longest
// wait of its keys; 0 when it may be made now.
func (l *loginLimits) wait(k loginKeys, now time.Time) time.Duration {
	var wait time.Duration
	for _, c := range l.counters(k) {
		wait = max(wait, c.limiter.wait(c.key, now))
	}
	return wait
}

// take reserves an attempt before it is made: it counts it as a failure
// against each of k's keys at once, unless one of them has no attempt left;
// then it takes none and returns the longest wait. Checking and counting
// under one lock is what keeps simultaneous attempts from all passing the
// check before any failure is counted. The keys it returns are k's.
func (l *loginLimits) take(k loginKeys, now time.Time) (loginKeys, time.Duration) {
	cs := l.counters(k)
	// counters keeps one order (users, accounts, devices, addrs): no two
	// takes wait for each other's locks.
	for _, c := range cs {
		c.limiter.mu.Lock()
	}
	defer func() {
		for _, c := range cs {
			c.limiter.mu.Unlock()
		}
	}()
	var wait time.Duration
	for _, c := range cs {
		wait = max(wait, c.limiter.waitLocked(c.key, now))
	}
	if wait > 0 {
		return k, wait
	}
	for _, c := range cs {
		c.limiter.failLocked(c.key, now)
	}
	return k, 0
}

// giveBack returns the attempt take counted against k: it was not a
// failure (the directory could not be asked).
func (l *loginLimits) giveBack(k loginKeys, now time.Time) {
	for _, c := range l.counters(k) {
		c.limiter.giveBack(c.key, now)
	}
}

// succeeded forgets the failures of the username and the account, or of
// the device cookie; the address gets back the attempt take counted but
// keeps its earlier failures, so that one known password does not reset a
// spray against others.
func (l *loginLimits) succeeded(k loginKeys, now time.Time) {
	l.addrs.giveBack(k.addr, now)
	k.addr = ""
	for _, c := range l.counters(k) {
		c.limiter.reset(c.key)
	}
}

type counter struct {
	limiter *failureLimiter
	key     string
}

// counters are k's keys with their limiters, the empty ones left out.
func (l *loginLimits) counters(k loginKeys) []counter {
	all := [4]counter{{l.users, k.user}, {l.accounts, k.account}, {l.devices, k.device}, {l.addrs, k.addr}}
	set := all[:0]
	for _, c := range all {
		if c.key != "" {
			set = append(set, c)
		}
	}
	return set
}
