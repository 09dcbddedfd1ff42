package session

import (
	"context"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// Info describes one stored session for operators (portcullis sessions list).
type Info struct {
	ID       string
	IdP      string
	Sub      string
	Email    string
	Created  time.Time
	Expires  time.Time
	LastSeen time.Time
}

// ListByEmail returns the live sessions of the user with this email (at any
// IdP), oldest first. Index entries of sessions that have ended are dropped
// on the way; not those of sessions there that do not open here, which
// another deployment sharing the keys and key_prefix (or a replica not yet
// given a changed public_url) may still open and have to revoke.
func (st *RedisStore) ListByEmail(ctx context.Context, email string) ([]Info, error) {
	ix := st.emailIndex(email)
	found, err := st.indexed(ctx, []index{ix})
	if err != nil {
		return nil, err
	}
	ids, legacy := found[0].ids, found[0].legacy
	all := append(ids, legacy...)
	sessions, gone, err := st.getAll(ctx, all)
	if err != nil {
		return nil, err
	}
	var out []Info
	var ended, endedLegacy []string
	for i, id := range all {
		s := sessions[i]
		if s == nil {
			if !gone[i] {
				continue
			}
			if i < len(ids) {
				ended = append(ended, id)
			} else {
				endedLegacy = append(endedLegacy, id)
			}
			continue
		}
		out = append(out, Info{
			ID: s.ID, IdP: s.Profile.IdP, Sub: s.Profile.Sub, Email: s.Profile.Email,
			Created: s.Created, Expires: s.Expires, LastSeen: s.LastSeen,
		})
	}
	st.dropIndexed(ctx, []index{ix}, []indexedIDs{{ended, endedLegacy}}) // best effort: a stale entry costs a lookup
	slices.SortFunc(out, func(a, b Info) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// RevokeByEmail ends every session of the user with this email, on every
// replica, and returns how many there were.
func (st *RedisStore) RevokeByEmail(ctx context.Context, email string) (int, error) {
	return st.endIndexed(ctx, st.emailIndex(email))
}

// getBatch is how many sessions getAll reads in one round trip: a user
// with hundreds of sessions (a script that logs in often) is listed in a
// few round trips, each well within redisOpTimeout.
const getBatch = 100

// getAll reads the sessions ids name, getBatch to a pipeline; an entry is
// nil where get would give nil, and gone where the session is not in Redis
// or has ended.
func (st *RedisStore) getAll(ctx context.Context, ids []string) (_ []*Session, gone []bool, _ error) {
	out := make([]*Session, 0, len(ids))
	gone = make([]bool, 0, len(ids))
	cmds := make([]*redis.SliceCmd, 0, min(len(ids), getBatch))
	for batch := range slices.Chunk(ids, getBatch) {
		cmds = cmds[:0]
		opCtx, cancel := context.WithTimeout(ctx, redisOpTimeout)
		_, err := st.redis.client.Pipelined(opCtx, func(p redis.Pipeliner) error {
			for _, id := range batch {
				cmds = append(cmds, p.HMGet(opCtx, st.sessionKey(id), "d", "l"))
			}
			return nil
		})
		cancel()
		if err != nil {
			return nil, nil, st.redis.unavailable("load sessions", err)
		}
		for i, id := range batch {
			vals := cmds[i].Val()
			s, ended := st.open(id, vals)
			out = append(out, s)
			gone = append(gone, ended || vals[0] == nil)
		}
	}
	return out, gone, nil
}
