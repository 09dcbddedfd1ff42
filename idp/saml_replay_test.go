package idp

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// quiet is a logger for replay caches whose warnings a test does not read.
var quiet = slog.New(slog.DiscardHandler)

func TestReplayCacheRefusesReplaysAfterAFlood(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	c := newReplayCache(10)
	victimExpiry := now.Add(5 * time.Minute)
	if err := c.use("victim", victimExpiry, now, log); err != nil {
		t.Fatalf("the victim's assertion: %v", err)
	}
	// Posted later, but issued before the flood: it expires before its
	// assertions do.
	pendingExpiry := now.Add(5*time.Minute + time.Second)
	// Anyone with an account can post valid assertions of their own. Twice
	// the bound forgets unexpired ones.
	for i := range 20 {
		now = now.Add(time.Second)
		if err := c.use(fmt.Sprint("flood-", i), now.Add(5*time.Minute+time.Second), now, log); err != nil {
			t.Fatalf("the flood's assertion %d: %v", i, err)
		}
	}
	now = now.Add(time.Second)

	if err := c.use("victim", victimExpiry, now, log); !errors.Is(err, errReplay) {
		t.Errorf("the victim's assertion replayed after a flood: %v, want errReplay", err)
	}
	if err := c.use("pending", pendingExpiry, now, log); !errors.Is(err, errReplayForgotten) {
		t.Errorf("an assertion expiring before the ones forgotten: %v, want errReplayForgotten (fail closed)", err)
	}
	if err := c.use("fresh", now.Add(5*time.Minute+time.Second), now, log); err != nil {
		t.Errorf("an assertion issued after the flood: %v", err)
	}
	if c.len() > 10 {
		t.Errorf("len %d, want at most the bound 10", c.len())
	}
	if n := strings.Count(logged.String(), "replay cache full"); n != 1 {
		t.Errorf("%d warnings about the flood, want one (once a minute):\n%s", n, &logged)
	}
}
