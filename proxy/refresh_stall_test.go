package proxy

import (
	"context"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// A refresh whose IdP stalls (SIGSTOP on oidc-provider, which rotates
// refresh tokens) does not hold the session's requests for the IdP call's
// bound: they are answered with the session as it was after a short wait.
// The refresh goes on at the IdP meanwhile; when the IdP resumes and
// answers, its renewed tokens are the session's, so the refresh token the
// IdP spent late is not sent again, and the next refresh succeeds. Given
// up on, the IdP ran it on resuming all the same, and the next refresh,
// with the spent token, was refused as reused: the user was signed out.
// With both stores.
func TestRefreshWhoseIdPStallsCarriesOnWhenItResumes(t *testing.T) {
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store, func(t *testing.T) {
			rs := startRotatedStack(t, store, nil)
			via, at, get, h := rs.via, rs.at, rs.get, rs.h
			h.refresher.wait = refreshWait // what this test is about
			succeeded := func() float64 {
				return refreshResults(t, h, refreshSuccess)
			}

			rs.op.Pause()
			at.Add(int64(2 * time.Second)) // the refresh is due
			// The first request starts the refresh and waits for it a
			// little; the next ones, while it is still at the IdP, not
			// longer. A generous ceiling: the short wait is seconds, the
			// IdP call's bound a minute.
			for i := range 3 {
				start := time.Now()
				code := get()
				if took := time.Since(start); took > 10*time.Second {
					t.Errorf("request %d while the IdP stalls took %v: it waited for the IdP", i, took.Round(time.Millisecond))
				}
				if code != http.StatusOK {
					t.Fatalf("request %d while the IdP stalls: %d, want 200 with the session as it was", i, code)
				}
			}
			if n := via.refreshes.Load(); n != 1 {
				t.Fatalf("%d refreshes sent to the IdP while it stalls, want 1", n)
			}

			rs.op.Resume()
			// The IdP answers the refresh; its renewed session reaches the
			// user at a next request, and the refresh after it spends the
			// token the IdP rotated to.
			for deadline := time.Now().Add(20 * time.Second); via.refreshes.Load() < 2; time.Sleep(50 * time.Millisecond) {
				at.Add(int64(500 * time.Millisecond))
				if code := get(); code != http.StatusOK {
					t.Fatalf("after the IdP resumed: %d, want 200: the refresh token it spent late was sent again, and refused", code)
				}
				if time.Now().After(deadline) {
					t.Fatalf("no second refresh in 20 s")
				}
			}
			waitFor(t, "the second refresh to succeed", func() bool { return succeeded() == 2 })
			if code := get(); code != http.StatusOK {
				t.Fatalf("after the second refresh: %d, want 200", code)
			}
			if refused := refreshResults(t, h, refreshRefused); refused != 0 {
				t.Errorf("%v refreshes refused, want 0", refused)
			}
		})
	}
}

// refreshResults is session_refreshes_total{idp="company",result}.
func refreshResults(t *testing.T, h *Handler, result string) float64 {
	t.Helper()
	var m dto.Metric
	if err := h.metrics.refreshes.WithLabelValues("company", result).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// A refresh whose requests all stopped waiting for it before it finished,
// their clients gone, however soon after that it finishes, is written
// where the session lives (Redis) or remembered until a request of the
// session writes it (cookies): nobody else takes it there, and a minute
// later the session from before it would spend the refresh token the IdP
// rotated away, be refused as reused, and the user signed out. The wait is
// a minute here, so that the refresh finishes within it.
func TestRefreshWhoseClientsLeftIsKept(t *testing.T) {
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store, func(t *testing.T) {
			rs := startRotatedStack(t, store, nil)
			rs.h.refresher.wait = time.Minute
			before := rs.stored()
			rs.op.Pause()
			rs.at.Add(int64(2 * time.Second)) // the refresh is due
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if code, err := rs.getCtx(ctx); err == nil {
				t.Fatalf("request while the IdP stalls: %d, want the client to give up", code)
			}
			rs.op.Resume()
			waitFor(t, "the refresh to succeed", func() bool { return refreshResults(t, rs.h, refreshSuccess) == 1 })
			if store == "redis" {
				// Its outcome, shared with the other replicas, lasts a
				// minute by Redis's clock, not the proxy's that the test
				// moves: the session in Redis is to be the renewed one.
				waitFor(t, "the renewed session in Redis", func() bool {
					s := rs.stored()
					return s != nil && s.Tokens.RefreshToken != before.Tokens.RefreshToken
				})
			}

			// Past the refresh's memory for the requests of a page, and due
			// again: the next request carries the session from before it.
			rs.at.Add(int64(2 * time.Minute))
			if code := rs.get(); code != http.StatusOK {
				t.Fatalf("the next request: %d, want 200: the refresh its client left was lost, and the token it spent sent again", code)
			}
			if refused := refreshResults(t, rs.h, refreshRefused); refused != 0 {
				t.Errorf("%v refreshes refused, want 0", refused)
			}
		})
	}
}

// A refresh the IdP refuses when no request waits for it any more ends the
// session in its store at once, as one a request waited for does: not
// only for the requests of the next minute, after which the session, kept
// while the IdP cannot be asked, would be served again.
func TestRefreshRefusedWithNobodyWaitingEndsTheSession(t *testing.T) {
	for _, store := range []string{"cookie", "redis"} {
		t.Run(store, func(t *testing.T) {
			rs := startRotatedStack(t, store, nil)
			rs.h.refresher.wait = 0 // no request waits for the IdP
			rs.op.Restart()         // forgets every token: the refresh is refused
			rs.at.Add(int64(2 * time.Second))
			if code := rs.get(); code != http.StatusOK {
				t.Fatalf("the request that starts the refresh: %d, want 200 with the session as it was", code)
			}
			waitFor(t, "the refresh to be refused", func() bool { return refreshResults(t, rs.h, refreshRefused) == 1 })

			rs.op.Stop() // the IdP cannot be asked: a session would be kept
			rs.at.Add(int64(2 * time.Minute))
			if code := rs.get(); code != http.StatusUnauthorized {
				t.Fatalf("a request two minutes after the IdP refused the refresh, the IdP away: %d, want 401 (the session ended)", code)
			}
		})
	}
}
