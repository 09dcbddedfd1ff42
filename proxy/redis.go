package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
)

// With session.store redis, what must hold across replicas lives in one
// Redis: the sessions themselves (so a logout, a back-channel logout or an
// operator's revoke ends a session on every replica at once), the used
// login states, the SAML assertion IDs seen, the jti of logout tokens, the
// failed-login counts, and the outcome of each refresh (so a rotating
// refresh token is spent once). With the cookie store all of these live in
// each process's memory.

// Store names of session.store.
const (
	storeCookie = "cookie"
	storeRedis  = "redis"
)

// Bounds of the single-use marks kept in memory (cookie store). Each has its
// own, so that a flood of SAML logins cannot make logout tokens refused.
const (
	// maxLogoutTokens bounds the jti of back-channel logout tokens.
	maxLogoutTokens = 100_000
	// maxAssertions bounds the IDs of SAML assertions, of every SAML IdP.
	maxAssertions = 100_000
)

// redisCloseDelay is how long a Redis connection replaced by a reload stays
// open for requests still running on the old Handler.
const redisCloseDelay = time.Minute

// newSessionStore builds the store session.store names. The Redis connection
// of prev is taken over when session.redis did not change, so a reload does
// not reconnect.
func (h *Handler) newSessionStore(cfg *Config, prev *Handler) (session.Store, error) {
	if cfg.Session.Store != storeRedis {
		return session.NewCookieStore(h.cookies)
	}
	if prev != nil && prev.redis != nil && reflect.DeepEqual(prev.cfg.Session.Redis, cfg.Session.Redis) {
		h.redis = prev.redis
	} else {
		r, err := session.DialRedis(cfg.Session.Redis)
		if err != nil {
			return nil, err
		}
		h.redis = r
	}
	return session.NewRedisStore(h.cookies, h.redis)
}

// shareThroughRedis points what replicas must share at Redis when the
// session store is there, and back at this process's memory otherwise. The
// memory parts carry over a reload: it runs after inherit, which took over
// the failed-login counts, and takes the used logout tokens and SAML
// assertions of prev when prev kept them in memory too.
func (h *Handler) shareThroughRedis(prev *Handler) {
	local := localLimits(h.passwords.limits)
	if h.redis == nil {
		h.passwords.limits = local
		if prev != nil && prev.redis == nil {
			h.logoutTokens, h.assertions = prev.logoutTokens, prev.assertions
			return
		}
		h.logoutTokens = session.NewMemoryMarks(maxLogoutTokens, "used logout tokens", h.log)
		h.assertions = session.NewMemoryMarks(maxAssertions, "used SAML assertions", h.log)
		return
	}
	h.flows.ShareUsedStates(h.redis)
	h.passwords.limits = newSharedLimits(h.redis, local, h.cookies.Keys[0])
	h.logoutTokens = h.redis
	h.assertions = h.redis
}

// releaseRedis closes h's Redis connection, after a delay for requests still
// running on h, unless keep (the Handler replacing h) took it over.
func (h *Handler) releaseRedis(keep *Handler) {
	if h.redis == nil || (keep != nil && keep.redis == h.redis) {
		return
	}
	r := h.redis
	time.AfterFunc(redisCloseDelay, func() { r.Close() })
}

// sessionPinger is a session store that lives elsewhere and can be asked
// whether it answers (Redis).
type sessionPinger interface {
	Ping(ctx context.Context) error
}

// readyTimeout bounds the store's answer to a readiness check.
const readyTimeout = 2 * time.Second

// storeProblem is why the session store cannot be used now; "" when it can
// (or is the cookie store, which is always there).
func (h *Handler) storeProblem() string {
	p, ok := h.sessions.(sessionPinger)
	if !ok {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := p.Ping(ctx); err != nil {
		if f := session.FaultOf(err); f.Hint != "" {
			return err.Error() + " (" + f.Reason + ": " + f.Hint + ")"
		}
		return err.Error()
	}
	return ""
}

// storeFault are the log attributes that say why the session store failed
// with err: its reason and, when it can tell, what to change.
func storeFault(err error) []slog.Attr {
	f := session.FaultOf(err)
	attrs := []slog.Attr{slog.String("reason", f.Reason)}
	if f.Hint != "" {
		attrs = append(attrs, slog.String("hint", f.Hint))
	}
	return attrs
}

// refreshShared runs refreshAtIdP for s, on one replica at a time when the
// sessions are in Redis: the others wait for its outcome and use it, so that
// a rotating refresh token is spent once. ran says whether this replica asked
// the IdP (and should count it). c is the refresh in rf that runs it, which
// a shutdown waits for while this replica holds its lock in Redis.
func (h *Handler) refreshShared(ctx context.Context, rf *refresher, impl idp.Refresher, s *session.Session, c *refreshCall) (*session.Session, string, bool) {
	rs, ok := h.sessions.(*session.RedisStore)
	if !ok {
		next, result := h.refreshAtIdP(ctx, impl, s)
		return next, result, true
	}
	result := ""
	out, ran, err := rs.RefreshOnce(ctx, s, refreshMemory, min(h.refresher.every, refreshMemory), func() session.RefreshOutcome {
		if !rf.hold(c) {
			// The process stops and would not write what the IdP
			// answers: the IdP is not asked, and the lock lapses as
			// an abandoned refresh's does.
			result = refreshError
			return session.RefreshOutcome{Session: s, Kept: true, Abandoned: true}
		}
		next, res := h.refreshAtIdP(ctx, impl, s)
		result = res
		// Kept: the IdP could not be asked, and the session is s itself.
		kept := next == s
		// Given up on at shutdown before the IdP answered, which it may
		// yet do, spending the session's refresh token: released, the
		// lock would let another replica spend it again at once, and an
		// IdP that detects reuse would then revoke the grant, the new
		// token too. It lapses (75 s) after the IdP's bound (a minute).
		abandoned := kept && errors.Is(context.Cause(ctx), errRefreshAbandoned)
		return session.RefreshOutcome{Session: next, Kept: kept, Abandoned: abandoned}
	})
	switch {
	case ran:
		if err != nil {
			h.log.Warn("refresh: outcome not shared with other replicas", "idp", s.Profile.IdP, "err", err)
		}
		return out.Session, result, true
	case err != nil && errors.Is(context.Cause(ctx), errRefreshAbandoned):
		// Waiting for another replica's refresh at shutdown: its
		// outcome is that replica's to write.
		return s, refreshError, false
	case err != nil:
		h.log.Warn("refresh: Redis not available; keeping the session for now", "idp", s.Profile.IdP, "err", err)
		return s, refreshError, false
	case out.Kept:
		return s, refreshError, false
	case out.Session == nil:
		return nil, refreshRefused, false
	}
	return out.Session, refreshSuccess, false
}

// failureLimits are the failed-login limits checkPassword applies. An
// attempt is counted as a failure before it is made (take), and given back
// when it turns out not to be one.
type failureLimits interface {
	// wait is how long k must wait before its next attempt; 0 when it may
	// be made now. It counts nothing.
	wait(k loginKeys, now time.Time) time.Duration
	// take counts an attempt of k against each of its keys, or, when one
	// of them has no attempt left, none: then it returns how long to wait.
	// The keys it returns, with what it counted, are for giveBack and
	// succeeded.
	take(k loginKeys, now time.Time) (loginKeys, time.Duration)
	// giveBack returns the attempt take counted: the directory could not
	// check the password.
	giveBack(k loginKeys, now time.Time)
	// succeeded forgets the username's and the account's failures (or
	// the device cookie's), and gives the address its attempt back.
	succeeded(k loginKeys, now time.Time)
}

var (
	_ failureLimits = (*loginLimits)(nil)
	_ failureLimits = (*sharedLimits)(nil)
)

// localLimits is the in-memory part of l.
func localLimits(l failureLimits) *loginLimits {
	switch l := l.(type) {
	case *loginLimits:
		return l
	case *sharedLimits:
		return l.local
	}
	return newLoginLimits()
}

// sharedLimits count failed logins in Redis, over all replicas: a username,
// an account or a device cookie may fail userFailureBurst times and an
// address addrFailureBurst times in a window of failureWindow that starts
// with the first failure. Failures are counted in memory too, so that a replica
// never limits less than it would alone, and keeps limiting while Redis is
// away.
type sharedLimits struct {
	redis *session.Redis
	local *loginLimits
	names []byte // keys the hash that names the counts (limitName)
}

// newSharedLimits counts in r and in local; sessionKey is the first of
// session.keys, which every replica shares.
func newSharedLimits(r *session.Redis, local *loginLimits, sessionKey []byte) *sharedLimits {
	return &sharedLimits{redis: r, local: local, names: session.NameKey(sessionKey, "failed-login")}
}

// sharedKey is a Redis key of the limits, with its burst.
type sharedKey struct {
	key   string
	burst int64
}

// sharedKeys are the Redis keys of k's keys that are set, each named by
// limitName: no key name holds a client address, a username or a DN.
func (l *sharedLimits) sharedKeys(k loginKeys) []sharedKey {
	var keys []sharedKey
	if k.user != "" {
		keys = append(keys, sharedKey{l.limitName("user", k.user), userFailureBurst})
	}
	if k.account != "" {
		keys = append(keys, sharedKey{l.limitName("account", k.account), userFailureBurst})
	}
	if k.legacyAccount != "" {
		keys = append(keys, sharedKey{l.limitName("account", k.legacyAccount), userFailureBurst})
	}
	if k.device != "" {
		keys = append(keys, sharedKey{l.limitName("device", k.device), userFailureBurst})
	}
	if k.addr != "" {
		keys = append(keys, sharedKey{l.limitName("addr", k.addr), addrFailureBurst})
	}
	return keys
}

// limitName stands for a limit's key in its Redis key name (session.KeyName:
// all 2^32 IPv4 addresses hash in minutes, so the hash is keyed). The counts
// live failureWindow, so that the names change with the first session key
// only starts them over (while a rotation rolls out, replicas with the old
// first key and those with the new count apart).
func (l *sharedLimits) limitName(kind, key string) string {
	return kind + ":" + session.KeyName(l.names, kind, key)
}

// wait is the longest wait of k's keys, in memory and in Redis.
func (l *sharedLimits) wait(k loginKeys, now time.Time) time.Duration {
	return max(l.local.wait(k, now), l.redisWait(l.sharedKeys(k)))
}

// redisWait is how long the longest window of those of keys that have
// used up their attempts still lasts.
func (l *sharedLimits) redisWait(keys []sharedKey) time.Duration {
	var wait time.Duration
	for _, s := range keys {
		n, left, err := l.redis.Failures(context.Background(), s.key)
		if err == nil && n >= s.burst {
			wait = max(wait, left)
		}
	}
	return wait
}

// take counts the attempt in memory, then in Redis key by key, each in one
// atomic step; when a key has no attempt left, what was counted is given
// back. A key Redis cannot count is left to the memory's count. The keys
// it returns carry the Redis counts it made.
func (l *sharedLimits) take(k loginKeys, now time.Time) (loginKeys, time.Duration) {
	keys := l.sharedKeys(k)
	if _, wait := l.local.take(k, now); wait > 0 {
		return k, max(wait, l.redisWait(keys))
	}
	ctx := context.Background()
	k.taken = nil
	for i, s := range keys {
		a, wait, err := l.redis.TakeAttempt(ctx, s.key, s.burst, failureWindow)
		if err != nil {
			continue
		}
		if a.Taken() {
			k.taken = append(k.taken, a)
			continue
		}
		for _, c := range k.taken {
			_ = l.redis.GiveBack(ctx, c)
		}
		k.taken = nil
		l.local.giveBack(k, now)
		return k, max(wait, l.redisWait(keys[i+1:]))
	}
	return k, 0
}

// giveBack returns the attempt take counted in memory and, each in its
// own window, in Redis.
func (l *sharedLimits) giveBack(k loginKeys, now time.Time) {
	l.local.giveBack(k, now)
	for _, a := range k.taken {
		_ = l.redis.GiveBack(context.Background(), a)
	}
}

func (l *sharedLimits) succeeded(k loginKeys, now time.Time) {
	l.local.succeeded(k, now)
	ctx := context.Background()
	if k.addr != "" {
		addr := l.limitName("addr", k.addr)
		for _, a := range k.taken {
			if a.Key() == addr {
				_ = l.redis.GiveBack(ctx, a)
			}
		}
	}
	k.addr = ""
	for _, s := range l.sharedKeys(k) {
		_ = l.redis.ForgetFailures(ctx, s.key, k.taken...)
	}
}

// ErrSessionsNeedRedis is OpenSessions' answer for the cookie store, whose
// sessions live in browsers: there is nothing to list or revoke.
var ErrSessionsNeedRedis = errors.New("session.store is cookie: sessions live in the browsers and cannot be listed or revoked; this needs session.store: redis")

// OpenSessions connects to the Redis session store cfg names, for operators'
// tools (portcullis sessions). The caller closes it with Redis().Close().
func OpenSessions(cfg *Config) (*session.RedisStore, error) {
	if cfg.Session.Store != storeRedis {
		return nil, ErrSessionsNeedRedis
	}
	c, err := compile(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	r, err := session.DialRedis(cfg.Session.Redis)
	if err != nil {
		return nil, fmt.Errorf("session.redis: %w", err)
	}
	st, err := session.NewRedisStore(c.sessionOptions(nil), r)
	if err != nil {
		r.Close()
		return nil, err
	}
	return st, nil
}
