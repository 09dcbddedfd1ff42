package session

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// userRevocations are the ends of whole users' sessions that the cookie store
// has been told of (OIDC back-channel logout): every session of a user at an
// IdP created up to a time, and every session of an IdP session (sid). They
// live in this process's memory: with the cookie store a back-channel logout
// reaches only the replica the IdP called.
type userRevocations struct {
	n  atomic.Int64 // entries; 0 lets valid skip the lock
	mu sync.RWMutex
	// subs maps idp\x00sub to the time up to which its sessions are ended.
	subs map[string]time.Time
	// sids maps idp\x00sid to when the revocation may be forgotten.
	sids map[string]time.Time
	// keep is how long an entry matters: the longest a session lives.
	keep time.Duration
}

// maxUserRevocations bounds each map; beyond it the oldest entries go.
const maxUserRevocations = 100_000

func newUserRevocations(keep time.Duration) *userRevocations {
	return &userRevocations{subs: map[string]time.Time{}, sids: map[string]time.Time{}, keep: keep}
}

// add ends the sessions of sid (when set), else all of sub's created up to
// before.
func (u *userRevocations) add(idp, sub, sid string, before, now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sweep(now)
	if sid != "" {
		u.sids[idp+"\x00"+sid] = now.Add(u.keep)
	} else {
		k := idp + "\x00" + sub
		if before.After(u.subs[k]) {
			u.subs[k] = before
		}
	}
	u.n.Store(int64(len(u.subs) + len(u.sids)))
}

// sweep forgets entries no session they could end is still alive for, and
// makes room when a map is full.
func (u *userRevocations) sweep(now time.Time) {
	for k, t := range u.subs {
		if now.Sub(t) > u.keep || len(u.subs) >= maxUserRevocations {
			delete(u.subs, k)
		}
	}
	for k, t := range u.sids {
		if now.After(t) || len(u.sids) >= maxUserRevocations {
			delete(u.sids, k)
		}
	}
}

// ended reports whether s was ended by a revocation of its user or its IdP
// session.
func (u *userRevocations) ended(s *Session) bool {
	if u.n.Load() == 0 {
		return false
	}
	u.mu.RLock()
	defer u.mu.RUnlock()
	if s.Tokens.SID != "" {
		if _, ok := u.sids[s.Profile.IdP+"\x00"+s.Tokens.SID]; ok {
			return true
		}
	}
	before, ok := u.subs[s.Profile.IdP+"\x00"+s.Profile.Sub]
	return ok && !s.Created.After(before)
}

// RevokeUser ends, in this process, the sessions of the IdP session sid at
// idp when sid is set, else every session of sub at idp created up to before.
// The store cannot count them (they live in browsers): it returns 0.
func (st *CookieStore) RevokeUser(_ context.Context, idp, sub, sid string, before time.Time) (int, error) {
	st.users.add(idp, sub, sid, before, st.opts.now())
	return 0, nil
}

// RevokeUser ends every session of the IdP session sid at idp when sid is
// set, else every session of sub at idp, on every replica, and returns how
// many there were.
func (st *RedisStore) RevokeUser(ctx context.Context, idp, sub, sid string, _ time.Time) (int, error) {
	index := st.subIndex(idp, sub)
	if sid != "" {
		index = st.sidIndex(idp, sid)
	}
	return st.endIndexed(ctx, index)
}

// endIndexed ends every session the index set names and returns how many
// were still there.
func (st *RedisStore) endIndexed(ctx context.Context, index string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
	defer cancel()
	ids, err := st.redis.client.SMembers(ctx, index).Result()
	if err != nil {
		return 0, unavailable("read index", err)
	}
	n := 0
	for _, id := range ids {
		there, err := st.end(ctx, id)
		if err != nil {
			return n, err
		}
		if there {
			n++
		}
	}
	if len(ids) > 0 {
		// Only the IDs read: a session indexed meanwhile stays findable.
		members := make([]any, len(ids))
		for i, id := range ids {
			members[i] = id
		}
		if err := st.redis.client.SRem(ctx, index, members...).Err(); err != nil {
			return n, unavailable("update index", err)
		}
	}
	return n, nil
}
