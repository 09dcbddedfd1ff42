package proxy

import (
	"bytes"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// A login's answer is measured as a front proxy reads it, status line and
// headers: at nginx's default buffer of 4 KiB and under, nothing is said;
// past it, once a process.
func TestWarnLargeLoginAnswer(t *testing.T) {
	var log bytes.Buffer
	h := &Handler{log: slog.New(slog.NewTextHandler(&log, nil))}
	answer := func(cookieBytes int) http.Header {
		return http.Header{
			"Location":   {"/tasks"},
			"Set-Cookie": {"__Host-portcullis=" + strings.Repeat("a", cookieBytes)},
		}
	}
	// The headers' own bytes besides the cookie's value: the names, ": ",
	// line ends, the cookie's name, Location, and what Go's server adds.
	fixed := answerOverhead + len("Location: /tasks\r\n") + len("Set-Cookie: __Host-portcullis=\r\n")
	warnings := func() int { return strings.Count(log.String(), "larger than a front proxy's default buffer") }

	h.warnLargeLoginAnswer(answer(frontHeaderBuffer-fixed), "corp")
	if n := warnings(); n != 0 {
		t.Fatalf("an answer of exactly %d bytes warned %d times, want none:\n%s", frontHeaderBuffer, n, log.String())
	}
	h.warnLargeLoginAnswer(answer(frontHeaderBuffer-fixed+1), "corp")
	// Of those, the Set-Cookie values: what session.store: redis shrinks.
	cookieBytes := len("__Host-portcullis=") + frontHeaderBuffer - fixed + 1
	if n := warnings(); n != 1 || !strings.Contains(log.String(), "header_bytes=4097") || !strings.Contains(log.String(), "idp=corp") ||
		!strings.Contains(log.String(), "set_cookie_bytes="+strconv.Itoa(cookieBytes)+" ") {
		t.Fatalf("an answer of %d bytes warned %d times, want once with its size and IdP:\n%s", frontHeaderBuffer+1, n, log.String())
	}
	h.warnLargeLoginAnswer(answer(3*frontHeaderBuffer), "corp")
	if n := warnings(); n != 1 {
		t.Errorf("a second large answer warned again (%d lines), want once a process", n)
	}
}
