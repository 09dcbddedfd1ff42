package proxy

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// An identity header longer than application servers take is worth a
// warning when the upstream refuses the request the way they do (gunicorn's
// and nginx's 400 pages, a 431), not at an application's own 400 in JSON
// (an API's validation error), which the user of a raised limit gets at
// every mistyped form: the warning would then blame the header for them.
func TestHeaderTooLongIsWarnedOfOnlyAtAServersRefusal(t *testing.T) {
	for _, tc := range []struct {
		name        string
		status      int
		contentType string
		warned      bool
	}{
		{"gunicorn's 400 page", http.StatusBadRequest, "text/html", true},
		{"431", http.StatusRequestHeaderFieldsTooLarge, "text/html; charset=utf-8", true},
		{"an API's 400 in JSON", http.StatusBadRequest, "application/json", false},
		{"an API's 400 in problem+json", http.StatusBadRequest, "application/problem+json; charset=utf-8", false},
		{"a 431 in JSON (it says the headers are too large, whatever its body)", http.StatusRequestHeaderFieldsTooLarge, "application/json; charset=utf-8", true},
		{"a 200", http.StatusOK, "text/html", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				w.WriteHeader(tc.status)
				io.WriteString(w, "Bad Request")
			}))
			t.Cleanup(up.Close)
			y := strings.Replace(testConfig, "UPSTREAM", up.URL, 1)
			y = strings.Replace(y, `X-Groups: 'join(roles, ",")'`, `X-Groups: 'join(groups, ",")'`, 1)
			h := newTestHandler(t, y)
			var logged lockedBuffer
			h.log = slog.New(slog.NewTextHandler(&logged, nil))
			f := &fixture{h: h, store: h.sessions}
			groups := []string{"annotators"}
			for i := range 1000 {
				groups = append(groups, fmt.Sprintf("team-%04d", i))
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, request("GET", "/tasks", f.login(t, "alice@example.com", groups...)))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want the upstream's %d", rec.Code, tc.status)
			}
			if warned := strings.Contains(logged.String(), "identity header longer than application servers take"); warned != tc.warned {
				t.Fatalf("warned %v, want %v:\n%s", warned, tc.warned, logged.String())
			}
		})
	}
}
