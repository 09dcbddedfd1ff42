package session

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/securecookie"
	"github.com/redis/go-redis/v9"
)

// RedisStore keeps sessions in Redis, shared by every replica: the cookie
// holds only the session ID, sealed with the session keys (a guessed or
// altered ID opens nothing), and the session itself lives in Redis, sealed
// with the same keys, under a TTL that is its absolute lifetime cut short by
// the idle timeout. A logout deletes it, which every replica sees at once;
// so does the end of a user's sessions by OIDC back-channel logout or by an
// operator (portcullis sessions revoke).
//
// Each session is a hash: d is the sealed session, l the last activity (Unix
// seconds), which Touch updates without re-sealing. Indexes by user (IdP and
// the IdP's subject), by the IdP's session ID (sid) and by email find a user's sessions:
// sorted sets of session IDs scored by when each session expires at the
// latest, named by a keyed hash of what they index (KeyName) so that no
// email, subject or IdP session ID can be found in key names. Adding to one
// drops the sessions that have expired, and a logout removes its session,
// so an index holds about as many sessions as its user has live; readers
// still skip any that have ended.
type RedisStore struct {
	opts   Options
	aud    string // opts.audienceTag()
	name   string
	ids    []securecookie.Codec // the session ID in the cookie
	values []securecookie.Codec // the session in Redis
	redis  *Redis
	// names key the hash that names the index sets, one per session key
	// (the first is the first key's): KeyName.
	names [][]byte
	// cache maps the hash of a sealed value read from Redis to the session
	// it opens to: Redis is asked on every request (so an ended session
	// ends everywhere at once), but decryption and decoding happen once
	// per saved value.
	cache *openedCache
	// openedIDs are the session IDs that sealed cookie values opened to,
	// so that a session's requests check the seal of its cookie once, not
	// every time (cookieID).
	openedIDs *openedIDs
}

var _ Store = (*RedisStore)(nil)

const (
	// sessionIDCodecName and redisValueCodecName are bound into the seals of
	// the cookie and of the value in Redis.
	sessionIDCodecName  = "portcullis session id"
	redisValueCodecName = "portcullis redis session"
	// maxRedisValue bounds a sealed session in Redis (many groups fit).
	maxRedisValue = 1 << 20
	// indexSlack keeps an index set a little longer than the sessions in it.
	indexSlack = time.Minute
)

// EndedKept is how long the Redis store remembers a session it ended
// (logout, back-channel logout, revoke), after the session itself is gone:
// longer than the proxy's login-loop window and its slack for clocks, so
// that a browser sent to sign in again just after is known to have lost
// its session for no fault of its cookie (Absent).
const EndedKept = 3 * time.Minute

// NewRedisStore builds the Redis session store on r; it fails when the keys
// are missing or not KeySize bytes long. It reaches nothing on the network.
func NewRedisStore(o Options, r *Redis) (*RedisStore, error) {
	if err := checkKeys(o.Keys); err != nil {
		return nil, fmt.Errorf("session redis store: %w", err)
	}
	ids, err := codecs(o.Keys, "session id", o.lifetime(), 1024, securecookie.JSONEncoder{})
	if err != nil {
		return nil, fmt.Errorf("session redis store: %w", err)
	}
	values, err := codecs(o.Keys, "redis session", o.lifetime(), maxRedisValue, compactJSON{})
	if err != nil {
		return nil, fmt.Errorf("session redis store: %w", err)
	}
	return &RedisStore{
		opts: o, aud: o.audienceTag(), name: o.Name(), ids: ids, values: values, redis: r,
		names:     indexNameKeys(o.Keys),
		cache:     newOpenedCache(cacheEntries, cacheBytes),
		openedIDs: &openedIDs{max: cacheEntries, m: map[string]string{}},
	}, nil
}

// Redis is the connection the store keeps its sessions in.
func (st *RedisStore) Redis() *Redis { return st.redis }

// Ping checks that Redis answers, for readiness.
func (st *RedisStore) Ping(ctx context.Context) error { return st.redis.Ping(ctx) }

func (st *RedisStore) sessionKey(id string) string { return st.redis.key("s", id) }

// endedKey marks, for EndedKept, that session id was ended here.
func (st *RedisStore) endedKey(id string) string { return st.redis.key("ended", id) }

// subIndex finds the sessions whose profile's sub at idp is sub.
func (st *RedisStore) subIndex(idp, sub string) index {
	return st.indexOf("sub", idp+"\x00"+sub, st.redis.key("idx", "sub", idp, sub))
}

// subjectIndex finds the sessions whose tokens name subject at idp
// (Tokens.Subject). It is younger than the others: no older version wrote
// a legacy set of it.
func (st *RedisStore) subjectIndex(idp, subject string) index {
	return st.indexOf("subject", idp+"\x00"+subject, "")
}

func (st *RedisStore) sidIndex(idp, sid string) index {
	return st.indexOf("sid", idp+"\x00"+sid, st.redis.key("idx", "sid", idp, sid))
}

func (st *RedisStore) emailIndex(email string) index {
	email = strings.ToLower(strings.TrimSpace(email))
	return st.indexOf("email", email, st.redis.key("idx", "email", email))
}

// index names the sorted sets that find some sessions, and the plain set
// that did before (legacy). key, named under the first session key, is the
// only one written. old are the names under the other session keys: a
// rotation puts a new key first, and the sessions indexed under the one
// before stay findable there until they expire, as long as that key stays
// listed (which it must for their cookies to open anyway). legacy is named
// in the clear: replicas of older versions, during a rolling update, still
// add to those, which expire within session.lifetime and a minute of the
// last; "" for an index no older version wrote. Readers take all of them.
type index struct {
	key    string
	old    []string
	legacy string
}

// sorted is every sorted set of ix, the written one first.
func (ix index) sorted() []string { return append([]string{ix.key}, ix.old...) }

// indexOf is the index of kind ("sub", "sid", "email") for value, with
// legacy its plain set.
func (st *RedisStore) indexOf(kind, value, legacy string) index {
	ix := index{legacy: legacy}
	for i, k := range st.names {
		name := st.redis.key("ix", kind, KeyName(k, kind, value))
		if i == 0 {
			ix.key = name
		} else {
			ix.old = append(ix.old, name)
		}
	}
	return ix
}

// indexNameKeys are the NameKeys of the index names under each session key;
// keys listed twice are named once.
func indexNameKeys(keys [][]byte) [][]byte {
	var out [][]byte
	for _, k := range keys {
		derived := NameKey(k, "session index")
		if !slices.ContainsFunc(out, func(o []byte) bool { return hmac.Equal(o, derived) }) {
			out = append(out, derived)
		}
	}
	return out
}

// Load returns the request's session, or nil when it has none: no cookie, a
// cookie that does not open, two cookies that open to different sessions
// (cookie tossing), or a session that has ended or is not in Redis (any
// more). An error, wrapping ErrUnavailable, means Redis did not answer.
func (st *RedisStore) Load(r *http.Request) (*Session, error) {
	id, _ := st.cookieID(r)
	if id == "" {
		return nil, nil
	}
	return st.get(r.Context(), id)
}

// cookieID is the session ID r's session cookie opens to; "" for none, and
// for two cookies that open to different IDs (cookie tossing), with why
// there is none.
func (st *RedisStore) cookieID(r *http.Request) (string, Absence) {
	lines := r.Header["Cookie"]
	if len(lines) == 0 {
		return "", NoCookie
	}
	var j jar
	j.collect(lines, st.name)
	if j.count[0] == 0 {
		return "", NoCookie
	}
	if j.overflow {
		return "", Malformed
	}
	id, why := "", NoCookie
	for _, v := range j.values[0][:j.count[0]] {
		candidate := st.openedIDs.get(v)
		if candidate == "" {
			if securecookie.DecodeMulti(sessionIDCodecName, v, &candidate, st.ids...) != nil || !validState(candidate) {
				why = max(why, unopened(v))
				continue
			}
			st.openedIDs.put(v, candidate)
		}
		if id != "" && candidate != id {
			st.opts.logger().Debug("session: refusing session cookies", "reason", "two different session cookies open")
			return "", Unopened
		}
		id = candidate
	}
	return id, why
}

// Absent is why r has no session. Ended is a session this store ended
// within EndedKept (a logout, a back-channel logout, a revoke, on any
// replica), or one still in Redis past its expiry or idle timeout. A
// session that is simply not in Redis is Unopened, not known to have
// ended: it may be in another Redis (replicas that do not share one), or
// have been removed behind the proxy's back; whether it could have run out
// of time by now is the caller's to judge.
func (st *RedisStore) Absent(r *http.Request) (Absence, error) {
	id, why := st.cookieID(r)
	if id == "" {
		return why, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), redisOpTimeout)
	defer cancel()
	var vals *redis.SliceCmd
	var marked *redis.IntCmd
	_, err := st.redis.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		vals = p.HMGet(ctx, st.sessionKey(id), "d", "l")
		marked = p.Exists(ctx, st.endedKey(id))
		return nil
	})
	if err != nil {
		return NoCookie, st.redis.unavailable("load session", err)
	}
	if _, ended := st.open(id, vals.Val()); ended || marked.Val() > 0 {
		return Ended, nil
	}
	return Unopened, nil
}

// get reads session id from Redis; nil when it is not there or has ended.
func (st *RedisStore) get(ctx context.Context, id string) (*Session, error) {
	ctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
	defer cancel()
	vals, err := st.redis.client.HMGet(ctx, st.sessionKey(id), "d", "l").Result()
	if err != nil {
		return nil, st.redis.unavailable("load session", err)
	}
	s, _ := st.open(id, vals)
	return s, nil
}

// open is session id from the fields d and l of its hash, as HMGET gives
// them; nil when it is not there or has ended, and ended true for the
// latter: it is there, opens, and is past its expiry or idle timeout.
func (st *RedisStore) open(id string, vals []any) (_ *Session, ended bool) {
	sealed, _ := vals[0].(string)
	if sealed == "" {
		return nil, false // gone: logged out, revoked, expired, or Redis lost its data
	}
	key := valueKey(sealed)
	shared := st.cache.get(key)
	if shared != nil && shared.ID != id {
		// The value is another session's, opened before under its own key:
		// copied here by whoever can write to Redis, or an answer meant for
		// another command. The seal names the ID so that it opens nothing.
		return nil, false
	}
	if shared == nil {
		var w wireSession
		if err := securecookie.DecodeMulti(redisValueCodecName, sealed, &w, st.values...); err != nil {
			st.opts.logger().Debug("session: value in redis does not open", "error", err)
			return nil, false
		}
		if !w.opens(st.aud) || w.ID != id {
			return nil, false
		}
		shared = w.session()
		st.cache.put(key, shared, heldBytes(shared), st.opts.now())
	}
	s := *shared
	if last, _ := vals[1].(string); last != "" {
		if sec, err := strconv.ParseInt(last, 10, 64); err == nil && sec > s.LastSeen.Unix() {
			s.LastSeen = time.Unix(sec, 0)
		}
	}
	now := st.opts.now()
	if !now.Before(s.Expires) || !now.Before(s.Created.Add(st.opts.lifetime())) {
		return nil, true
	}
	if idle := st.opts.IdleTimeout; idle > 0 && now.Sub(s.LastSeen) > idle {
		return nil, true
	}
	s.stored = true
	return &s, false
}

// ttl is how long s may stay in Redis from now: to its expiry, or to the
// end of its idle timeout when that comes first.
func (st *RedisStore) ttl(s *Session, now time.Time) time.Duration {
	ttl := s.Expires.Sub(now)
	if lifeEnd := s.Created.Add(st.opts.lifetime()).Sub(now); lifeEnd < ttl {
		ttl = lifeEnd
	}
	if idle := st.opts.IdleTimeout; idle > 0 {
		ttl = min(ttl, idle-now.Sub(s.LastSeen))
	}
	return ttl
}

// saveScript writes a session, but when ARGV[4] is 1 only over one that is
// still there (a refresh must not bring back a session ended meanwhile).
var saveScript = redis.NewScript(`
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'l', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`)

// touchScript records activity on a session that is still there.
var touchScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'l', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`)

// errEnded means a session was ended (on any replica) while a request was
// about to save it again.
var errEnded = errors.New("session has ended")

// Save writes s to Redis and its sealed ID into the session cookie, and
// indexes it by user, IdP session and email; a loaded one is not written at
// all when it has ended meanwhile.
func (st *RedisStore) Save(w http.ResponseWriter, r *http.Request, s *Session) error {
	if s == nil || s.ID == "" {
		return errors.New("save session: no session ID")
	}
	cookie, err := st.ids[0].Encode(sessionIDCodecName, s.ID)
	if err != nil {
		return fmt.Errorf("save session %s: seal id: %w", s.ID, err)
	}
	now := st.opts.now()
	if err := st.put(r.Context(), s, now); err != nil {
		return err
	}
	http.SetCookie(w, sessionCookie(st.opts, st.name, cookie, int(s.Expires.Sub(now)/time.Second)))
	// Chunks left by the cookie store (a switch of session.store) go.
	expireChunks(w, r, st.opts, st.name, 1)
	return nil
}

// SaveRenewed writes s, a session loaded from the store and renewed by a
// refresh that no request waited for, over the one stored: the cookie,
// its ID, stays as it is. A session ended meanwhile is not brought back
// (an error that is not ErrUnavailable).
func (st *RedisStore) SaveRenewed(ctx context.Context, s *Session) error {
	if s == nil || s.ID == "" || !s.stored {
		return errors.New("save renewed session: not a stored session")
	}
	return st.put(ctx, s, st.opts.now())
}

// put writes s to Redis and indexes it (Save).
func (st *RedisStore) put(ctx context.Context, s *Session, now time.Time) error {
	ttl := st.ttl(s, now)
	if ttl <= 0 {
		return fmt.Errorf("save session %s: already expired", s.ID)
	}
	sealed, err := st.values[0].Encode(redisValueCodecName, toWire(s, st.aud))
	if err != nil {
		return fmt.Errorf("save session %s: seal: %w", s.ID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
	defer cancel()
	mustExist := "0"
	if s.stored {
		mustExist = "1"
	}
	saved, err := saveScript.Run(ctx, st.redis.client, []string{st.sessionKey(s.ID)},
		sealed, s.LastSeen.Unix(), ttl.Milliseconds(), mustExist).Int()
	if err != nil {
		return fmt.Errorf("save session %s: %w", s.ID, st.redis.unavailable("write", err))
	}
	if saved == 0 {
		return fmt.Errorf("save session %s: %w", s.ID, errEnded)
	}
	// A loaded session is indexed again (a refresh, every session.refresh):
	// it is now sealed with the first key, and so must be findable under
	// that key's names, or removing the key it was made under from
	// session.keys (a leaked one, before session.lifetime has passed) would
	// leave a session that opens and that no revoke or back-channel logout
	// finds. An email that the refresh changed is indexed too.
	if err := st.index(ctx, s, now); err != nil {
		return fmt.Errorf("save session %s: %w", s.ID, err)
	}
	return nil
}

// index adds a session to the sets that find it by user, IdP session and
// email, under the first key's names, and drops the sessions that have
// expired from those and from the other keys' sets. Each set lives as long
// as the longest-lived session in it. It is one round trip.
func (st *RedisStore) index(ctx context.Context, s *Session, now time.Time) error {
	end := s.Expires.UnixMilli() // no session outlives Expires (get)
	keep := (s.Expires.Sub(now) + indexSlack).Milliseconds()
	// Replicas' clocks differ a little: a session is dropped from its sets
	// only a slack after it expired by this one's.
	ended := now.Add(-indexSlack).UnixMilli()
	_, err := st.redis.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, ix := range st.indexes(s) {
			// One key a script or command: a cluster keeps the sets on
			// other nodes.
			indexScript.Eval(ctx, p, []string{ix.key}, s.ID, end, ended, keep)
			for _, old := range ix.old {
				p.ZRemRangeByScore(ctx, old, "-inf", strconv.FormatInt(ended, 10))
			}
		}
		return nil
	})
	if err != nil {
		return st.redis.unavailable("index session", err)
	}
	return nil
}

// indexScript adds session ARGV[1], which expires at ARGV[2] (Unix ms), to
// the sorted set KEYS[1], drops the sessions that expired by ARGV[3], and
// makes the set live for ARGV[4] ms more, never less than it had left: a
// replica with a shorter session.lifetime (during a rolling update) must not
// cut short the set of a longer-lived session another replica made, or a
// logout at the IdP would not find that session.
var indexScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
	redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1`)

// indexes are the sets that find s: by user (its profile's sub, and the
// IdP's own name for the user, which a logout from the IdP names, when its
// tokens name one), by IdP session and by email. The two by user stay
// apart: where the IdP entry maps sub to another claim or attribute, one
// user's profile sub can be another's name at the IdP. Sessions indexed
// before the IdP's subject was are found by it once a refresh saves them
// again (with a sid or SessionIndex, or by email, they are found as
// before; where sub is not mapped, by their sub too).
func (st *RedisStore) indexes(s *Session) []index {
	ixs := []index{st.subIndex(s.Profile.IdP, s.Profile.Sub)}
	if subject := s.Tokens.Subject(); subject != "" {
		ixs = append(ixs, st.subjectIndex(s.Profile.IdP, subject))
	}
	if sid := s.Tokens.SessionKey(); sid != "" {
		ixs = append(ixs, st.sidIndex(s.Profile.IdP, sid))
	}
	if s.Profile.Email != "" {
		ixs = append(ixs, st.emailIndex(s.Profile.Email))
	}
	return ixs
}

// Delete clears the session cookie and deletes s from Redis, which ends it on
// every replica. s may be nil to only clear the cookie.
func (st *RedisStore) Delete(w http.ResponseWriter, r *http.Request, s *Session) error {
	http.SetCookie(w, sessionCookie(st.opts, st.name, "", -1))
	expireChunks(w, r, st.opts, st.name, 1)
	if s == nil || s.ID == "" {
		return nil
	}
	ctx := context.Background()
	if r != nil {
		ctx = r.Context()
	}
	if _, err := st.end(ctx, s.ID); err != nil {
		return fmt.Errorf("delete session %s: %w", s.ID, err)
	}
	// Best effort: an index entry left behind goes when it expires.
	st.unindex(ctx, s)
	return nil
}

// unindex removes s from the sets that find it, under every key's names:
// it may have been indexed under a key that was first before a rotation.
func (st *RedisStore) unindex(ctx context.Context, s *Session) {
	ctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
	defer cancel()
	st.redis.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, ix := range st.indexes(s) {
			for _, name := range ix.sorted() {
				p.ZRem(ctx, name, s.ID)
			}
		}
		return nil
	})
}

// end deletes session id and its cached value, and marks it ended for
// EndedKept; it reports whether it was there.
func (st *RedisStore) end(ctx context.Context, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
	defer cancel()
	n, err := st.endAll(ctx, []string{id})
	return n > 0, err
}

// Touch records activity on s for the idle timeout: it moves the session's
// expiry in Redis, and only when LastSeen is older than min(idle/10, 1m), so
// most requests write nothing. The cookie does not change.
func (st *RedisStore) Touch(w http.ResponseWriter, r *http.Request, s *Session) error {
	idle := st.opts.IdleTimeout
	if idle <= 0 || s == nil {
		return nil
	}
	now := st.opts.now()
	if now.Sub(s.LastSeen) < min(idle/10, time.Minute) {
		return nil
	}
	s.LastSeen = now.Truncate(time.Second)
	ttl := st.ttl(s, now)
	if ttl <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), redisOpTimeout)
	defer cancel()
	if err := touchScript.Run(ctx, st.redis.client, []string{st.sessionKey(s.ID)}, s.LastSeen.Unix(), ttl.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("touch session %s: %w", s.ID, st.redis.unavailable("write", err))
	}
	return nil
}

// openedIDs maps a sealed session cookie value to the session ID it opened
// to: checking the seal (HMAC, AES, JSON) was a fifth of the proxy's CPU
// and 17 of its 79 allocations on every request of a Redis session
// (BenchmarkSessions/redis). Only values that opened are kept; the
// session itself is asked of Redis on every request all the same, and a
// seal's own age is no bound a session is not held to there (its expiry,
// session.lifetime). Each store has its own, so a key taken out of
// session.keys by a reload opens nothing it remembered. Bounded like the
// opened sessions; beyond it, values are forgotten at random and checked
// again.
type openedIDs struct {
	mu  sync.RWMutex
	max int
	m   map[string]string
}

// get is the ID value opened to, "" when it is not remembered.
func (o *openedIDs) get(value string) string {
	o.mu.RLock()
	id := o.m[value]
	o.mu.RUnlock()
	return id
}

// put remembers that value opened to id.
func (o *openedIDs) put(value, id string) {
	if len(value) > 1024 {
		return // longer than any the codec accepts; kept out of memory all the same
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for k := range o.m {
		if len(o.m) < o.max {
			break
		}
		delete(o.m, k) // map order: at random
	}
	// A copy: value is part of the request's Cookie header.
	o.m[strings.Clone(value)] = id
}
