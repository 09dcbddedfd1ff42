package session

import (
	"context"
	"slices"
	"time"
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
	var out []Info
	var ended, endedLegacy []string
	for i, id := range append(ids, legacy...) {
		s, err := st.get(ctx, id)
		if err != nil {
			return nil, err
		}
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
