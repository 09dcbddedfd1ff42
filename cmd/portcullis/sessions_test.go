package main

import (
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy"
	"github.com/portcullis-proxy/portcullis/proxy/session"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
)

func TestSessionsListAndRevoke(t *testing.T) {
	srv := redisserver.Start(t)
	cfgYAML := strings.Replace(validConfig, "session:\n", "session:\n  store: redis\n  redis: {url: "+srv.URL+"}\n", 1)
	path := writeFile(t, "portcullis.yaml", cfgYAML)

	// Two logins of alice and one of bob, as the proxy would save them.
	st := openSessions(t, path)
	var ids []string
	for _, email := range []string{"alice@example.com", "alice@example.com", "bob@example.com"} {
		s := session.New(idp.Profile{IdP: "company", Sub: email, Email: email}, idp.Tokens{}, session.Options{})
		if err := st.Save(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), s); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}

	code, out, errOut := runCLI("sessions", "list", "--user", "Alice@Example.com", "--config", path)
	if code != 0 || strings.Count(out, "alice@example.com") != 2 || !strings.Contains(out, ids[0][:8]) || strings.Contains(out, ids[0]) || strings.Contains(out, "bob") {
		t.Errorf("list: exit %d\n%s%s\nwant alice's two sessions by ID prefix", code, out, errOut)
	}
	code, out, _ = runCLI("sessions", "revoke", "--config", path, "--user", "alice@example.com")
	if code != 0 || !strings.Contains(out, "revoked 2 session(s)") {
		t.Errorf("revoke: exit %d, %q; want 2 revoked", code, out)
	}
	if code, out, _ = runCLI("sessions", "list", "--user", "alice@example.com", "--config", path); code != 0 || !strings.Contains(out, "no sessions") {
		t.Errorf("list after revoke: exit %d, %q; want none", code, out)
	}
	if code, out, _ = runCLI("sessions", "list", "--user", "bob@example.com", "--config", path); code != 0 || !strings.Contains(out, ids[2][:8]) {
		t.Errorf("bob's session must stay: exit %d, %q", code, out)
	}

	srv.Stop()
	if code, _, errOut = runCLI("sessions", "list", "--user", "bob@example.com", "--config", path); code != 1 || !strings.Contains(errOut, "unavailable") {
		t.Errorf("Redis down: exit %d, %q; want 1 and the reason", code, errOut)
	}
}

func TestSessionsRefusals(t *testing.T) {
	cookieConfig := writeFile(t, "portcullis.yaml", validConfig)
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		inStderr string
	}{
		{"the cookie store has no sessions to list", []string{"sessions", "list", "--user", "a@b.c", "--config", cookieConfig}, 1, "needs session.store: redis"},
		{"the cookie store has no sessions to revoke", []string{"sessions", "revoke", "--user", "a@b.c", "--config", cookieConfig}, 1, "needs session.store: redis"},
		{"no verb", []string{"sessions"}, 2, "usage: portcullis sessions"},
		{"an unknown verb", []string{"sessions", "purge", "--user", "a@b.c"}, 2, "usage: portcullis sessions"},
		{"no user", []string{"sessions", "list", "--config", cookieConfig}, 2, "usage: portcullis sessions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.inStderr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.inStderr)
			}
		})
	}
}

// TestSessionsRevokeAfterAKeyRotation: the proxy's sessions made before a
// new key was put first are still found by the command run with the
// rotated keys.
func TestSessionsRevokeAfterAKeyRotation(t *testing.T) {
	srv := redisserver.Start(t)
	cfgYAML := strings.Replace(validConfig, "session:\n", "session:\n  store: redis\n  redis: {url: "+srv.URL+"}\n", 1)
	before := writeFile(t, "before.yaml", cfgYAML)
	newKey := "bmV3LXNlc3Npb24ta2V5LTMyLWJ5dGVzLWxvbmchISE=" // 32 bytes
	rotated := writeFile(t, "rotated.yaml", strings.Replace(cfgYAML, "keys: ["+testKey+"]", "keys: ["+newKey+", "+testKey+"]", 1))

	st := openSessions(t, before)
	s := session.New(idp.Profile{IdP: "company", Sub: "alice", Email: "alice@example.com"}, idp.Tokens{}, session.Options{})
	if err := st.Save(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), s); err != nil {
		t.Fatal(err)
	}

	if code, out, errOut := runCLI("sessions", "list", "--user", "alice@example.com", "--config", rotated); code != 0 || !strings.Contains(out, s.ID[:8]) {
		t.Errorf("list with the rotated keys: exit %d\n%s%s\nwant the session made before the rotation", code, out, errOut)
	}
	if code, out, errOut := runCLI("sessions", "revoke", "--user", "alice@example.com", "--config", rotated); code != 0 || !strings.Contains(out, "revoked 1 session(s)") {
		t.Errorf("revoke with the rotated keys: exit %d, %q %q; want 1 revoked", code, out, errOut)
	}
	if code, out, _ := runCLI("sessions", "list", "--user", "alice@example.com", "--config", before); code != 0 || !strings.Contains(out, "no sessions") {
		t.Errorf("list after the revoke: exit %d, %q; want none", code, out)
	}
}

// openSessions opens the Redis session store of the config at path, as the
// sessions command does, closed when the test ends.
func openSessions(t *testing.T, path string) *session.RedisStore {
	t.Helper()
	cfg, err := proxy.LoadConfig(path, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	st, err := proxy.OpenSessions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Redis().Close() })
	return st
}
