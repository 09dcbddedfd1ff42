package session

import (
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

// An Unmark that runs once more after another caller marked the key anew
// (a DEL go-redis sent again, or one a stalled Redis ran late) gives back
// its own mark only: the newer one stays, and the key is not accepted a
// third time. With a plain delete it was, and a spent logout token or
// login state could be used once more.
func TestLateUnmarkKeepsANewerMark(t *testing.T) {
	srv := redisserver.Start(t)
	for name, m := range map[string]OnceMarker{
		"redis":  replica(t, srv, testOptions(newClock())).Redis(),
		"memory": NewMemoryMarks(100, "test", quiet),
	} {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			until := time.Now().Add(time.Minute)
			a, first, err := m.Claim(ctx, "jti:x", until)
			if err != nil || !first {
				t.Fatalf("A's Claim = %v, %v; want true", first, err)
			}
			if err := m.Unmark(ctx, a); err != nil {
				t.Fatal(err)
			}
			if _, first, err := m.Claim(ctx, "jti:x", until); err != nil || !first {
				t.Fatalf("B's Claim after A's Unmark = %v, %v; want true", first, err)
			}
			if err := m.Unmark(ctx, a); err != nil { // A's, once more
				t.Fatal(err)
			}
			if _, first, err := m.Claim(ctx, "jti:x", until); err != nil || first {
				t.Errorf("C's Claim = %v, %v; want false: A's late Unmark erased B's mark", first, err)
			}
			if err := m.Unmark(ctx, Mark{}); err != nil {
				t.Errorf("Unmark of the zero Mark: %v", err)
			}
			if _, first, _ := m.Claim(ctx, "jti:x", until); first {
				t.Error("the zero Mark gave back B's mark")
			}
		})
	}
}

// In a rolling update, a key that a replica of a version before tokens
// marked (SETNX of "1"), once this replica's mark was gone, holds no token
// of this replica's: its late Unmark keeps it. (An older replica's Unmark
// is a plain DEL still, of whatever mark the key holds.)
func TestLateUnmarkKeepsAnOlderReplicasMark(t *testing.T) {
	srv := redisserver.Start(t)
	r := replica(t, srv, testOptions(newClock())).Redis()
	ctx := t.Context()
	until := time.Now().Add(time.Minute)
	mark, first, err := r.Claim(ctx, "state:s", until)
	if err != nil || !first {
		t.Fatalf("Claim = %v, %v; want true", first, err)
	}
	key := r.key("once", "state:s")
	if err := r.client.Del(ctx, key).Err(); err != nil { // an older replica's Unmark, or the first try of ours
		t.Fatal(err)
	}
	if ok, err := r.client.SetNX(ctx, key, "1", time.Minute).Result(); err != nil || !ok {
		t.Fatalf("the older replica's SETNX = %v, %v", ok, err)
	}
	if err := r.Unmark(ctx, mark); err != nil {
		t.Fatal(err)
	}
	if v, err := r.client.Get(ctx, key).Result(); err != nil || v != "1" {
		t.Errorf("the older replica's mark after a late Unmark = %q, %v; want it kept", v, err)
	}
}

// A login state given back late (Release) keeps a later finish of the same
// state, in memory as in Redis: the answer posted again, accepted once the
// first one's failure gave the state back, stays single use.
func TestLateReleaseKeepsALaterFinish(t *testing.T) {
	srv := redisserver.Start(t)
	c := newClock()
	for name, shared := range map[string]OnceMarker{
		"redis":  replica(t, srv, testOptions(c)).Redis(),
		"memory": nil,
	} {
		t.Run(name, func(t *testing.T) {
			f := NewFlows(testOptions(c))
			if shared != nil {
				f.ShareUsedStates(shared)
			}
			state := NewState()
			cookie := started(t, f, state)
			_, first, err := f.Finish(httptest.NewRecorder(), request(cookie), LoginFlow, state)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Release(t.Context(), first); err != nil {
				t.Fatal(err)
			}
			if _, _, err := f.Finish(httptest.NewRecorder(), request(cookie), LoginFlow, state); err != nil {
				t.Fatalf("the answer posted again, after the release: %v", err)
			}
			if err := f.Release(t.Context(), first); err != nil { // the first one's, once more
				t.Fatal(err)
			}
			if _, _, err := f.Finish(httptest.NewRecorder(), request(cookie), LoginFlow, state); !errors.Is(err, ErrFlowReused) {
				t.Errorf("a third finish after a late release: %v, want %v", err, ErrFlowReused)
			}
		})
	}
}
