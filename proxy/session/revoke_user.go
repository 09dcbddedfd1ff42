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
	// subs remembers a user (subKey or subjectKey) until before+keep: the
	// user's sessions created up to before are ended.
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

// User names a user's sessions at an IdP, for RevokeUser: by the IdP's
// own name for the user (Tokens.Subject), by the profile's sub, or both.
// The two are names from different lists wherever the IdP entry maps the
// profile's sub to another claim or attribute (one user's email can be
// another's NameID at the IdP), so each ends only the sessions named so.
type User struct {
	// Subject ends the sessions whose tokens name this subject (a logout
	// token's sub, a SAML LogoutRequest's NameID); "" none.
	Subject string
	// Sub ends the sessions whose profile's sub it is; "" none.
	Sub string
}

// subKey and subjectKey name a user's record: by the profile's sub, by
// the IdP's subject. An IdP's id holds neither \x00 nor \x01.
func subKey(idp, sub string) string         { return idp + "\x00" + sub }
func subjectKey(idp, subject string) string { return idp + "\x01" + subject }

// add ends the sessions of sid (when set), else all of who's created up to
// before.
func (u *userRevocations) add(idp string, who User, sid string, before, now time.Time) {
	u.added.Store(true)
	u.mu.RLock()
	defer u.mu.RUnlock()
	if sid != "" {
		u.sids.Add(idp+"\x00"+sid, now.Add(u.keep), now)
		return
	}
	// Add keeps the later of two ends for the same user.
	if who.Subject != "" {
		u.subs.Add(subjectKey(idp, who.Subject), before.Add(u.keep), now)
	}
	if who.Sub != "" {
		u.subs.Add(subKey(idp, who.Sub), before.Add(u.keep), now)
	}
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
	// Only sessions the cookie store opened are asked about (valid), and
	// it worked out their subject then.
	if subject := s.openedSubject; subject != "" {
		if until, ok, forgotten := u.subs.lookup(subjectKey(s.Profile.IdP, subject), end); (ok && !end.After(until)) || forgotten {
			return true
		}
	}
	until, ok, forgotten := u.subs.lookup(subKey(s.Profile.IdP, s.Profile.Sub), end)
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
// Tokens.SessionKey) at idp when sid is set, else every session of who at
// idp created up to before.
// The store cannot count them (they live in browsers): it returns 0.
func (st *CookieStore) RevokeUser(_ context.Context, idp string, who User, sid string, before time.Time) (int, error) {
	st.users.add(idp, who, sid, before, st.opts.now())
	return 0, nil
}

// RevokeUser ends every session of the IdP session sid (a
// Tokens.SessionKey) at idp when sid is set, else every session of who at
// idp, on every replica, and returns how many there were.
func (st *RedisStore) RevokeUser(ctx context.Context, idp string, who User, sid string, _ time.Time) (int, error) {
	var ixs []index
	switch {
	case sid != "":
		ixs = append(ixs, st.sidIndex(idp, sid))
	default:
		if who.Subject != "" {
			ixs = append(ixs, st.subjectIndex(idp, who.Subject))
		}
		if who.Sub != "" {
			ixs = append(ixs, st.subIndex(idp, who.Sub))
		}
	}
	return st.endIndexed(ctx, ixs...)
}

// endIndexed ends every session the indexes name and returns how many were
// still there. It takes three round trips however many sessions and
// indexes there are (read, end, drop from the indexes): a back-channel
// logout waits on it.
func (st *RedisStore) endIndexed(ctx context.Context, ixs ...index) (int, error) {
	if len(ixs) == 0 {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
	defer cancel()
	found, err := st.indexed(ctx, ixs)
	if err != nil {
		return 0, err
	}
	var all []string
	for _, f := range found {
		all = append(append(all, f.ids...), f.legacy...)
	}
	slices.Sort(all)
	n, err := st.endAll(ctx, slices.Compact(all))
	if err != nil {
		return n, err
	}
	// Only the IDs read: a session indexed meanwhile stays findable.
	if err := st.dropIndexed(ctx, ixs, found); err != nil {
		return n, st.redis.unavailable("update index", err)
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
		return n, st.redis.unavailable("delete", err)
	}
	return n, nil
}

// indexedIDs are the session IDs one index names: in its sorted sets, and
// in its legacy set.
type indexedIDs struct {
	ids, legacy []string
}

// indexed reads the session IDs each index names, in its sorted sets under
// every session key and in its legacy set (if it has one), in one round
// trip whatever the number of indexes and keys. An ID in several sets of
// one index is returned once for it.
func (st *RedisStore) indexed(ctx context.Context, ixs []index) ([]indexedIDs, error) {
	zr := make([][]*redis.StringSliceCmd, len(ixs))
	sm := make([]*redis.StringSliceCmd, len(ixs))
	_, err := st.redis.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, ix := range ixs {
			for _, name := range ix.sorted() {
				zr[i] = append(zr[i], p.ZRange(ctx, name, 0, -1))
			}
			if ix.legacy != "" {
				sm[i] = p.SMembers(ctx, ix.legacy)
			}
		}
		return nil
	})
	if err != nil {
		return nil, st.redis.unavailable("read index", err)
	}
	found := make([]indexedIDs, len(ixs))
	for i := range ixs {
		seen := map[string]bool{}
		for _, z := range zr[i] {
			for _, id := range z.Val() {
				if !seen[id] {
					seen[id] = true
					found[i].ids = append(found[i].ids, id)
				}
			}
		}
		if sm[i] != nil {
			found[i].legacy = sm[i].Val()
		}
	}
	return found, nil
}

// dropIndexed removes from each index what indexed found in it: the ids
// from its sorted sets (from each: a session may be in the sets of two
// keys) and legacy from its legacy set.
func (st *RedisStore) dropIndexed(ctx context.Context, ixs []index, found []indexedIDs) error {
	if !slices.ContainsFunc(found, func(f indexedIDs) bool { return len(f.ids) > 0 || len(f.legacy) > 0 }) {
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
		for i, ix := range ixs {
			if ids := found[i].ids; len(ids) > 0 {
				for _, name := range ix.sorted() {
					p.ZRem(ctx, name, members(ids)...)
				}
			}
			if legacy := found[i].legacy; len(legacy) > 0 {
				p.SRem(ctx, ix.legacy, members(legacy)...)
			}
		}
		return nil
	})
	return err
}
