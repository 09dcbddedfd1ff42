package session

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrUnavailable marks errors of a store that cannot answer (Redis down): the
// request is answered 503, never let through and never treated as logged out.
var ErrUnavailable = errors.New("session store unavailable")

// NameKey derives from a session key the key that names Redis keys made
// for purpose ("session index", "failed-login"): what they stand for (an
// email, a subject, a client address, a username) must not show in key
// names, which SCAN, MONITOR, SLOWLOG, backups and managed-Redis consoles
// show while the values are sealed. Every replica and the sessions command
// hold the session keys, so nothing else needs to be configured or shared.
func NameKey(sessionKey []byte, purpose string) []byte {
	m := hmac.New(sha256.New, sessionKey)
	m.Write([]byte("portcullis " + purpose + " names"))
	return m.Sum(nil)
}

// KeyName stands for value, of kind, in a Redis key name: an HMAC under
// nameKey (NameKey). It is keyed because a plain hash is undone by hashing
// a list of the company's addresses, every IPv4 address, or the subjects an
// IdP hands out in sequence, and looking for the results; kind is hashed
// too, so that an email and a subject of the same text differ.
func KeyName(nameKey []byte, kind, value string) string {
	m := hmac.New(sha256.New, nameKey)
	m.Write([]byte(kind + "\x00" + value))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// Redis is the connection to the Redis that replicas share. Besides the
// sessions of the Redis store, it keeps what must hold across replicas: the
// marks of single-use values (login states, SAML assertions, logout tokens)
// and the failed-login counts. It is safe for concurrent use.
type Redis struct {
	client     redis.UniversalClient
	prefix     string
	handshakes *handshakes // the last TLS handshake that failed, for Ping
}

// DialRedis builds the connection c describes. It connects lazily and
// reconnects by itself, so it succeeds while Redis is down; Ping tells.
func DialRedis(c RedisConfig) (*Redis, error) {
	hs := &handshakes{}
	client, err := c.client(hs)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	client.AddHook(hs)
	return &Redis{client: client, prefix: c.prefix(), handshakes: hs}, nil
}

// Close closes the connections.
func (r *Redis) Close() error {
	return r.client.Close()
}

// readyScript is the readiness check's script: it reads its key and writes
// nothing, so that a full Redis (which still serves the sessions made) is
// not taken for one that cannot serve.
var readyScript = redis.NewScript(`return redis.call('EXISTS', KEYS[1])`)

// Ping checks, for readiness, that Redis answers and takes what portcullis
// sends: a write (DEL, which a read-only replica refuses and a full Redis
// takes) and a script, on a key under the prefix, as the user portcullis
// is (an ACL that lacks those or the prefix's keys refuses them). Redis
// answers PING in each of those cases, while no login can succeed.
func (r *Redis) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
	defer cancel()
	key := r.key("ready")
	if err := r.client.Del(ctx, key).Err(); err != nil {
		return fmt.Errorf("redis: write: %w", r.handshakes.explain(err))
	}
	if err := readyScript.Run(ctx, r.client, []string{key}).Err(); err != nil {
		return fmt.Errorf("redis: script: %w", r.handshakes.explain(err))
	}
	return nil
}

// key is the Redis key of parts under the prefix, e.g. "portcullis:s:ID".
func (r *Redis) key(parts ...string) string {
	return r.prefix + strings.Join(parts, ":")
}

// unavailable wraps an error of Redis as ErrUnavailable, with the step,
// and with the last failed TLS handshake when err only timed out (handshakes).
func (r *Redis) unavailable(step string, err error) error {
	return fmt.Errorf("redis: %s: %w: %w", step, ErrUnavailable, r.handshakes.explain(err))
}

// MarkOnce records key until the given time and reports whether it was new:
// false means it was already recorded, by this replica or another. It is the
// single-use check of login states, SAML assertion IDs and logout tokens.
func (r *Redis) MarkOnce(ctx context.Context, key string, until time.Time) (bool, error) {
	_, first, err := r.Claim(ctx, key, until)
	return first, err
}

// Claim records key until the given time as MarkOnce does and, when it was
// new, returns the Mark that gives it back (Unmark): the random token this
// caller set there, which no other caller's mark of the key holds.
func (r *Redis) Claim(ctx context.Context, key string, until time.Time) (Mark, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
	defer cancel()
	ttl := max(time.Until(until), time.Second)
	token := rand.Text()
	first, err := r.setOnce(ctx, r.key("once", key), token, ttl)
	if err != nil {
		return Mark{}, false, r.unavailable("mark used", err)
	}
	if !first {
		return Mark{}, false, nil
	}
	return Mark{key: key, token: token}, true, nil
}

// setOnceScript sets KEYS[1] to ARGV[1] for ARGV[2] ms unless it is set,
// and returns 1 when it set it or found ARGV[1] there already, else 0.
var setOnceScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return 1 end
if v then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)

// setOnce sets key to token, unique to the caller, for ttl unless key is
// set, and reports whether this caller set it. It is SETNX made safe to
// send twice: go-redis sends a command again on a new connection when the
// first timed out (MaxRetries), and a Redis that stalled past the read
// timeout (SIGSTOP, a frozen VM, a long fork) runs the first one when it
// resumes, before the second. SETNX would then answer the second "taken",
// by the caller itself: a login state spent by its own login, a refresh
// lock held by the replica that waits for it.
func (r *Redis) setOnce(ctx context.Context, key, token string, ttl time.Duration) (bool, error) {
	n, err := setOnceScript.Run(ctx, r.client, []string{key}, token, max(ttl.Milliseconds(), 1)).Int64()
	return n == 1, err
}

// Unmark forgets m's key if it still holds m's token, so that it may be
// marked again. A plain DEL, sent again by go-redis after a timeout or run
// late by a Redis that stalled, would also delete the mark another request
// set once this one was gone (the IdP's retry of a logout token), and let
// the key be used once more. A key an older replica set with SETNX holds
// no token of this caller's and is kept; older replicas still DEL.
func (r *Redis) Unmark(ctx context.Context, m Mark) error {
	if m.token == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
	defer cancel()
	if err := releaseScript.Run(ctx, r.client, []string{r.key("once", m.key)}, m.token).Err(); err != nil {
		return r.unavailable("unmark", err)
	}
	return nil
}

// takeScript counts a failure of KEYS[1] unless it has ARGV[1] already in
// its window, which starts with its first failure and lasts ARGV[2] ms. It
// returns {1, ms the window still lasts} when it counted, or {0, ms the
// window still lasts}: the check and the count are one step, however many
// replicas ask at once. KEYS[2] marks the attempt it counted, for the
// window: the same attempt sent again (attemptMark) is answered as counted
// and not counted again. KEYS[1] stays the plain count that replicas of
// versions before the marks read and write.
var takeScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {1, redis.call('PTTL', KEYS[1])}
end
local n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if n >= tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    left = tonumber(ARGV[2])
  end
  return {0, left}
end
redis.call('SET', KEYS[1], 0, 'PX', ARGV[2], 'NX')
redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], 1, 'PX', ARGV[2])
return {1, redis.call('PTTL', KEYS[1])}
`)

// giveBackScript takes back the failure of KEYS[1] that KEYS[2] marks, if
// the mark is still there (a give-back sent again finds it gone) and the
// window lasts no more than ARGV[1] ms: longer means that the window of
// the failure ended and this one began after it. The last failure ends the
// window.
var giveBackScript = redis.NewScript(`
if redis.call('DEL', KEYS[2]) == 0 then
  return 0
end
local n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if n == 0 or redis.call('PTTL', KEYS[1]) > tonumber(ARGV[1]) then
  return 0
end
if n <= 1 then
  redis.call('DEL', KEYS[1])
else
  redis.call('DECR', KEYS[1])
end
return 0
`)

// attemptMark is the key that marks one attempt counted against the
// count countKey (takeScript), named by token, which the attempt alone
// knows. go-redis sends a command again on a new connection when the first
// try timed out (MaxRetries), and a Redis that stalled past the read
// timeout runs the first try when it resumes, before the second: with a
// plain count, one wrong password was counted twice, and a give-back given
// twice. The count's name is the mark's hash tag, so that a Cluster keeps
// both on one node; key_prefix has no braces (RedisConfig.Validate) and
// the mark starts with it, as the README's ACL rule wants.
func (r *Redis) attemptMark(countKey, token string) string {
	return r.prefix + "{" + countKey + "}:attempt:" + token
}

// Attempt is a failure TakeAttempt counted, which GiveBack takes back if it
// turns out not to be one. The zero Attempt counted nothing.
type Attempt struct {
	key    string    // as the caller named it
	token  string    // names its mark (attemptMark)
	ends   time.Time // its window's end, on this process's clock
	window time.Duration
}

// Taken reports whether a counted a failure.
func (a Attempt) Taken() bool { return a.key != "" }

// Key is the key a counted against.
func (a Attempt) Key() string { return a.key }

// TakeAttempt counts a failure of key before the attempt is made, unless key
// has burst failures already in its current window (which starts with its
// first failure and lasts window): then it counts nothing and says how long
// the window still lasts. Replicas asking at once never count more than
// burst, and an attempt is counted once however often go-redis sends it.
// key goes into a key name as it is (under "lim:"): the caller keeps user
// data out of it.
func (r *Redis) TakeAttempt(ctx context.Context, key string, burst int64, window time.Duration) (Attempt, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
	defer cancel()
	asked := time.Now()
	count, token := r.key("lim", key), rand.Text()
	res, err := takeScript.Run(ctx, r.client, []string{count, r.attemptMark(count, token)}, burst, window.Milliseconds()).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("answer %v", res)
	}
	if err != nil {
		return Attempt{}, 0, r.unavailable("take attempt", err)
	}
	left := time.Duration(res[1]) * time.Millisecond
	if res[0] != 1 {
		return Attempt{}, left, nil
	}
	return Attempt{key: key, token: token, ends: asked.Add(left), window: window}, 0, nil
}

// GiveBack takes back a failure TakeAttempt counted for an attempt that
// was not one (it succeeded, or could not be made), once however often
// go-redis sends it. A failure whose window has ended is not taken from
// the next one's count: a client that timed its good logins to a window's
// end would get attempts in the next.
func (r *Redis) GiveBack(ctx context.Context, a Attempt) error {
	if !a.Taken() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
	defer cancel()
	// A window that began after a's ended lasts until at least a whole
	// window after a's end; half of one tells them apart whatever the
	// round trips took.
	most := time.Until(a.ends) + a.window/2
	if most < 0 {
		return nil
	}
	count := r.key("lim", a.key)
	if err := giveBackScript.Run(ctx, r.client, []string{count, r.attemptMark(count, a.token)}, most.Milliseconds()).Err(); err != nil {
		return r.unavailable("give back attempt", err)
	}
	return nil
}

// Failures returns key's failures in its current window and how long the
// window still lasts; 0, 0 when there is none.
func (r *Redis) Failures(ctx context.Context, key string) (int64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
	defer cancel()
	k := r.key("lim", key)
	var get *redis.StringCmd
	var ttl *redis.DurationCmd
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, k)
		ttl = p.PTTL(ctx, k)
		return nil
	})
	if errors.Is(err, redis.Nil) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, r.unavailable("read failures", err)
	}
	n, err := get.Int64()
	if err != nil {
		return 0, 0, nil // not ours to read: as if none
	}
	return n, max(ttl.Val(), 0), nil
}

// ForgetFailures clears key's failures, and the marks of those of taken
// that were counted against it (which would otherwise stay for their
// window).
func (r *Redis) ForgetFailures(ctx context.Context, key string, taken ...Attempt) error {
	ctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
	defer cancel()
	count := r.key("lim", key)
	keys := []string{count}
	for _, a := range taken {
		if a.key == key && a.token != "" {
			keys = append(keys, r.attemptMark(count, a.token))
		}
	}
	if err := r.client.Del(ctx, keys...).Err(); err != nil {
		return r.unavailable("forget failures", err)
	}
	return nil
}
