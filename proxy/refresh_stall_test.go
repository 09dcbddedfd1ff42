package proxy

import (
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
