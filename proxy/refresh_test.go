package proxy

import (
	"strconv"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
)

// The refreshes remembered stay bounded when their sessions could not be
// saved, which are remembered until they expire: past refreshEntries, those
// that expired go first, then all.
func TestRefreshRecordIsBoundedWithUnsavedSessions(t *testing.T) {
	rf := newRefresher(time.Second)
	now := time.Unix(1_700_000_000, 0)
	add := func(id string, expires time.Time) {
		s := &session.Session{ID: id, Refreshed: now.Add(-time.Hour), Profile: idp.Profile{Sub: id}}
		c, leader := rf.join(s, now)
		if !leader {
			t.Fatalf("%s: a refresh already remembered", id)
		}
		next := *s
		next.Expires = expires
		rf.finish(id, c, &next, false, now)
		rf.markUnsaved(c, true)
	}
	add("expiring", now.Add(2*time.Minute))
	for i := range refreshEntries - 1 {
		add("s"+strconv.Itoa(i), now.Add(12*time.Hour))
	}
	later := now.Add(5 * time.Minute)
	if c, leader := rf.join(&session.Session{ID: "s1", Refreshed: now.Add(-time.Hour)}, later); leader || c.s == nil {
		t.Errorf("an unsaved session 5 minutes on is not remembered: its old refresh token would be spent again")
	}
	now = later
	add("one more", now.Add(12*time.Hour))
	if _, ok := rf.recent["expiring"]; ok || len(rf.recent) != refreshEntries {
		t.Errorf("%d remembered (the expired one: %v), want %d without the expired one", len(rf.recent), ok, refreshEntries)
	}
	add("and another", now.Add(12*time.Hour))
	if n := len(rf.recent); n > refreshEntries {
		t.Errorf("%d remembered, want at most %d", n, refreshEntries)
	}
}

// A refresh's outcome is forgotten once it no longer answers for its
// session (a minute for one that was saved), not only once refreshEntries
// are held: each kept the renewed session, tokens included, and a proxy
// that ran for days held those of every session refreshed since it
// started, up to the bound, sessions long logged out included.
func TestRefreshRecordForgetsWhatNoLongerAnswers(t *testing.T) {
	rf := newRefresher(time.Minute)
	t0 := time.Unix(1_700_000_000, 0)
	const perHour = 500
	for hour := range 10 {
		now := t0.Add(time.Duration(hour) * time.Hour)
		for i := range perHour {
			s := &session.Session{ID: strconv.Itoa(hour) + "-" + strconv.Itoa(i), Refreshed: now.Add(-time.Hour)}
			c, _ := rf.join(s, now)
			next := *s
			next.Refreshed, next.Expires = now, now.Add(12*time.Hour)
			rf.finish(s.ID, c, &next, false, now)
		}
	}
	if n := len(rf.recent); n > 2*perHour {
		t.Errorf("after 10 hours of %d refreshes an hour, %d remembered, want at most %d (two hours')", perHour, n, 2*perHour)
	}
}
