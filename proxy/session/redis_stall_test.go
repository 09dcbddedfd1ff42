package session

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/redis/go-redis/v9"
)

// stallOnce pauses srv (SIGSTOP) as the first command of r whose
// arguments name a key containing keyPart goes out, and resumes it (SIGCONT)
// as go-redis dials again: the command's first try has then timed out,
// unanswered, on its pooled connection, and its retry is on the way. Redis
// then runs the first try, late, before the retry, as a Redis that stalled
// past the read timeout does. The pool must hold an idle connection before
// (a command sent earlier), so that the first try does not dial.
func stallOnce(t *testing.T, r *Redis, srv *redisserver.Server, keyPart string) {
	t.Helper()
	h := &stallHook{srv: srv, keyPart: keyPart}
	r.client.AddHook(h)
	t.Cleanup(srv.Resume)
}

type stallHook struct {
	srv     *redisserver.Server
	keyPart string
	mu      sync.Mutex
	paused  bool
	resumed bool
}

func (h *stallHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		h.mu.Lock()
		if h.paused && !h.resumed {
			h.resumed = true
			h.srv.Resume()
		}
		h.mu.Unlock()
		return next(ctx, network, addr)
	}
}

func (h *stallHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		if !h.paused && strings.Contains(fmt.Sprint(cmd.Args()...), h.keyPart) {
			h.paused = true
			h.srv.Pause()
		}
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *stallHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A login state (SAML assertion ID, logout token) marked used while Redis
// stalled past the read timeout is this login's: go-redis sends the mark
// again on a new connection, and Redis, resumed, runs the first one before
// it. With SETNX the retry was answered "already set", and a valid login
// was refused as a reused state (400 "expired or already used").
func TestMarkOnceSentAgainAfterAStallIsTheCallersOwn(t *testing.T) {
	srv := redisserver.Start(t)
	st := replica(t, srv, testOptions(newClock()))
	if _, err := st.redis.MarkOnce(t.Context(), "warm", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	stallOnce(t, st.redis, srv, "state:stalled")
	first, err := st.redis.MarkOnce(t.Context(), "state:stalled", time.Now().Add(time.Minute))
	if err != nil {
		t.Fatalf("MarkOnce: %v", err) // the retry, after the resume, is answered
	}
	if !first {
		t.Error("a state marked once, its first try answered late, reads as used before")
	}
	again, err := st.redis.MarkOnce(t.Context(), "state:stalled", time.Now().Add(time.Minute))
	if err != nil || again {
		t.Errorf("marked again: %v, %v; want false: it is used", again, err)
	}
}

// A refresh whose lock was taken while Redis stalled past the read timeout
// runs at once: the lock, set by its own first try, is its own. With SETNX
// the retry found the lock taken, and every request of the session waited
// for the lock's TTL (20 s) for the refresh that no one was running.
func TestRefreshLockTakenDuringAStallIsTheCallersOwn(t *testing.T) {
	srv := redisserver.Start(t)
	st := replica(t, srv, testOptions(newClock()))
	s := New(testProfile(), idp.Tokens{RefreshToken: "rt-1"}, testOptions(newClock()))
	saveTo(t, st, s)
	loaded, err := st.get(t.Context(), s.ID)
	if err != nil || loaded == nil {
		t.Fatalf("get: %v, %v", loaded, err)
	}
	stallOnce(t, st.redis, srv, "refresh:lock")
	// Well under the lock's TTL, far above a stall's two read timeouts.
	ctx, cancel := context.WithTimeout(t.Context(), refreshLockTTL/2)
	defer cancel()
	out, ran, err := st.RefreshOnce(ctx, loaded, time.Minute, time.Second, func() RefreshOutcome {
		next := *loaded
		next.Tokens.RefreshToken = "rt-2"
		return RefreshOutcome{Session: &next}
	})
	if err != nil || !ran || out.Session == nil || out.Session.Tokens.RefreshToken != "rt-2" {
		t.Errorf("RefreshOnce: ran %v, %+v, %v; want it run here, at once", ran, out, err)
	}
}
