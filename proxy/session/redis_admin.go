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
// on the way.
func (st *RedisStore) ListByEmail(ctx context.Context, email string) ([]Info, error) {
	ix := st.emailIndex(email)
	ids, legacy, err := st.indexed(ctx, ix)
	if err != nil {
		return nil, err
	}
	all := append(ids, legacy...)
	sessions, err := st.getAll(ctx, all)
	if err != nil {
		return nil, err
	}
	var out []Info
	var ended, endedLegacy []string
	for i, id := range all {
		s := sessions[i]
		if s == nil {
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
	st.dropIndexed(ctx, ix, ended, endedLegacy) // best effort: a stale entry costs a lookup
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
// nil where get would give nil.
func (st *RedisStore) getAll(ctx context.Context, ids []string) ([]*Session, error) {
	out := make([]*Session, 0, len(ids))
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
			return nil, unavailable("load sessions", err)
		}
		for i, id := range batch {
			s, _ := st.open(id, cmds[i].Val())
			out = append(out, s)
		}
	}
	return out, nil
}
