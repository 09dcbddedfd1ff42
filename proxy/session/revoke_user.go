package session

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// userRevocations are the ends of whole users' sessions that the cookie store
// has been told of (OIDC back-channel logout): every session of a user at an
// IdP created up to a time, and every session of an IdP session (sid). They
// live in this process's memory: with the cookie store a back-channel logout
// reaches only the replica the IdP called.
//
// Each record is kept until the last session it can end has expired: keep
// (the longest a session lives) after the time it ends sessions up to. keep
// is the longest session.lifetime the records have served under: a reload
// carries them over (CookieStore.Inherit), and one that lengthens the
// lifetime lengthens keep and moves every record that much later (lengthen),
// so that sessions made under the longer lifetime stay covered. A shorter
// lifetime leaves keep as it is; records then outlive what they can end,
// which costs only memory. Both sets are bounded; when one has to forget a
// record before then, it refuses every session that such a record could
// have ended (see expiringSet), so a flood of logouts makes older sessions
// log in again rather than letting a logged-out one open.
type userRevocations struct {
	added atomic.Bool // set by the first add; false lets ended skip the locks
	// mu makes keep and the records' times change together. The store a
	// reload replaces and its successor share this value, so requests still
	// in flight on the old Handler add and check records while Inherit
	// lengthens keep: add and ended hold mu shared, lengthen alone, so none
	// of them pairs a time made with one keep with a time made with the
	// other. It is taken before a set's own lock.
	mu sync.RWMutex
	// subs remembers idp\x00sub until before+keep: its sessions created up
	// to before are ended. sub is the IdP's own subject (idpSubject).
	subs *expiringSet
	// sids remembers idp\x00sid until the logout+keep: its sessions are
	// ended. sid is a session's Tokens.SessionKey.
	sids *expiringSet
	// keep is how long a record matters: the longest a session lives.
	keep time.Duration
}

// maxUserRevocations bounds each set; beyond it the records closest to
// expiring are forgotten, and sessions no newer than them refused.
const maxUserRevocations = 100_000

// newUserRevocations keeps records for keep; log receives the sets'
// warnings when a flood makes them forget records early.
func newUserRevocations(keep time.Duration, log *slog.Logger) *userRevocations {
	return &userRevocations{
		subs: newExpiringSet(maxUserRevocations, "users logged out at their IdP", log),
		sids: newExpiringSet(maxUserRevocations, "IdP sessions logged out", log),
		keep: keep,
	}
}

// add ends the sessions of sid (when set), else all of sub's created up to
// before.
func (u *userRevocations) add(idp, sub, sid string, before, now time.Time) {
	u.added.Store(true)
	u.mu.RLock()
	defer u.mu.RUnlock()
	if sid != "" {
		u.sids.Add(idp+"\x00"+sid, now.Add(u.keep), now)
		return
	}
	// Add keeps the later of two ends for the same user.
	u.subs.Add(idp+"\x00"+sub, before.Add(u.keep), now)
}

// ended reports whether s was ended by a revocation of its user or its IdP
// session, or may have been by one forgotten early.
func (u *userRevocations) ended(s *Session) bool {
	if !u.added.Load() {
		return false
	}
	u.mu.RLock()
	defer u.mu.RUnlock()
	// A record ends sessions created up to its time, which all expire by
	// that time plus keep: a session is compared by the same measure.
	end := s.Created.Add(u.keep)
	if sid := s.Tokens.SessionKey(); sid != "" {
		if _, ok, forgotten := u.sids.lookup(s.Profile.IdP+"\x00"+sid, end); ok || forgotten {
			return true
		}
	}
	sub := s.openedSubject
	if sub == "" {
		sub = s.idpSubject()
	}
	until, ok, forgotten := u.subs.lookup(s.Profile.IdP+"\x00"+sub, end)
	return (ok && !end.After(until)) || forgotten
}

// lengthen makes the records last for sessions that live up to lifetime
// (a reload's session.lifetime) when that is longer than keep. Every record,
// and each set's time of the records it forgot early, moves as much later
// as keep does: ended compares a session's creation plus keep with them, so
// which sessions a record ends stays exactly the same. A reload refused
// after Inherit leaves keep longer, as harmless as a shorter lifetime.
func (u *userRevocations) lengthen(lifetime time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if d := lifetime - u.keep; d > 0 {
		u.subs.postpone(d)
		u.sids.postpone(d)
		u.keep = lifetime
	}
}

// RevokeUser ends, in this process, the sessions of the IdP session sid (a
// Tokens.SessionKey) at idp when sid is set, else every session of sub (the
// IdP's subject, Tokens.Subject, or the profile's sub for sessions whose
// tokens name none) at idp created up to before.
// The store cannot count them (they live in browsers): it returns 0.
func (st *CookieStore) RevokeUser(_ context.Context, idp, sub, sid string, before time.Time) (int, error) {
	st.users.add(idp, sub, sid, before, st.opts.now())
	return 0, nil
}

// RevokeUser ends every session of the IdP session sid (a
// Tokens.SessionKey) at idp when sid is set, else every session of sub (as
// for CookieStore.RevokeUser) at idp, on every replica, and returns how
// many there were.
func (st *RedisStore) RevokeUser(ctx context.Context, idp, sub, sid string, _ time.Time) (int, error) {
	ix := st.subIndex(idp, sub)
	if sid != "" {
		ix = st.sidIndex(idp, sid)
	}
	return st.endIndexed(ctx, ix)
}

// endIndexed ends every session the index names and returns how many were
// still there. It takes three round trips however many sessions there are
// (read, end, drop from the index): a back-channel logout waits on it.
func (st *RedisStore) endIndexed(ctx context.Context, ix index) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
	defer cancel()
	ids, legacy, err := st.indexed(ctx, ix)
	if err != nil {
		return 0, err
	}
	n, err := st.endAll(ctx, append(slices.Clip(ids), legacy...))
	if err != nil {
		return n, err
	}
	// Only the IDs read: a session indexed meanwhile stays findable.
	if err := st.dropIndexed(ctx, ix, ids, legacy); err != nil {
		return n, unavailable("update index", err)
	}
	return n, nil
}

// endAll deletes the sessions ids and their cached values, and marks them
// ended for EndedKept (Absent), in one round trip, and returns how many were
// there. Only a delete that failed is an error: the mark is a note for the
// login-loop page, and a Redis that refuses writes (full, under noeviction)
// still deletes. Each mark goes before its delete, so that whoever sees the
// session gone sees the mark too.
func (st *RedisStore) endAll(ctx context.Context, ids []string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	dels := make([]*redis.IntCmd, len(ids))
	st.redis.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			p.Set(ctx, st.endedKey(id), "", EndedKept)
			dels[i] = p.Del(ctx, st.sessionKey(id))
		}
		return nil
	})
	n := 0
	var err error
	for i, d := range dels {
		if d.Err() != nil {
			err = cmp.Or(err, d.Err())
			continue
		}
		st.cache.drop(ids[i])
		n += int(d.Val())
	}
	if err != nil {
		return n, unavailable("delete", err)
	}
	return n, nil
}

// indexed reads the session IDs the index names, in its sorted sets under
// every session key and in its legacy set, in one round trip whatever the
// number of keys. An ID in several sets is returned once.
func (st *RedisStore) indexed(ctx context.Context, ix index) (ids, legacy []string, err error) {
	names := ix.sorted()
	zr := make([]*redis.StringSliceCmd, len(names))
	var sm *redis.StringSliceCmd
	_, err = st.redis.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, name := range names {
			zr[i] = p.ZRange(ctx, name, 0, -1)
		}
		sm = p.SMembers(ctx, ix.legacy)
		return nil
	})
	if err != nil {
		return nil, nil, unavailable("read index", err)
	}
	seen := map[string]bool{}
	for _, z := range zr {
		for _, id := range z.Val() {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	return ids, sm.Val(), nil
}

// dropIndexed removes ids from the index's sorted sets (from each: a
// session may be in the sets of two keys) and legacy from its legacy set.
func (st *RedisStore) dropIndexed(ctx context.Context, ix index, ids, legacy []string) error {
	if len(ids) == 0 && len(legacy) == 0 {
		return nil
	}
	members := func(ids []string) []any {
		m := make([]any, len(ids))
		for i, id := range ids {
			m[i] = id
		}
		return m
	}
	_, err := st.redis.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(ids) > 0 {
			for _, name := range ix.sorted() {
				p.ZRem(ctx, name, members(ids)...)
			}
		}
		if len(legacy) > 0 {
			p.SRem(ctx, ix.legacy, members(legacy)...)
		}
		return nil
	})
	return err
}
