package proxy

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/test/process"
	"github.com/portcullis-proxy/portcullis/test/redisserver"
	"github.com/redis/go-redis/v9"
)

// redisACL is the ACL rule of an ACL user that may do what portcullis
// does and nothing else, as the README's Scaling section gives it: its
// keys only, the commands it sends (the scripts' too: Redis checks those
// against the user as well), none of the channels.
const redisACL = "~portcullis:* resetchannels -@all " +
	"+get +set +del +exists +pttl +pexpire +incr +decr +hmget +hset +zadd +zrange +zrem +zremrangebyscore " +
	"+smembers +srem +eval +evalsha"

// An awkward password: each of @ / % # means something in a URL.
const awkwardPassword = "p@ss/w%rd#1"

// TestRedisDeploymentVariations runs portcullis against the ways operators
// run Redis, each a real redis-server: where Redis can serve, a user logs
// in through the proxy, uses the session and signs out; where it cannot,
// portcullis check says why when the mistake is in the config, and
// otherwise /readyz and the log say why (a stable reason and a hint) while
// requests fail closed with 503.
func TestRedisDeploymentVariations(t *testing.T) {
	type setup struct {
		srv   *redisserver.Server
		block string // the session.redis block, indented 4
	}
	plain := func(t *testing.T, args ...string) *redisserver.Server {
		return redisserver.StartWith(t, redisserver.Options{Args: args})
	}
	// A session cookie that opens on every case's proxy (same keys and
	// public_url): its session is in another Redis, so each proxy asks
	// its own Redis for it.
	elsewhere := newFixtureOf(t, storeInRedis(testConfig, plain(t).URL))
	cookies := loginThroughProxy(t, elsewhere)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) setup
		// check is what portcullis check must say ("" passes it).
		check string
		// reason is why Redis cannot serve, as the log and /readyz give
		// it; "" when a user must be able to log in.
		reason string
		// ready is whether /readyz says ready although Redis cannot
		// serve logins: it reads sessions (a full Redis), or it refuses
		// only a command the readiness check does not send.
		ready bool
		// after checks Redis once a user logged in and out.
		after func(t *testing.T, s setup)
	}{
		{name: "TLS only (rediss://) with a private CA in tls.ca_file", setup: func(t *testing.T) setup {
			srv := redisserver.StartWith(t, redisserver.Options{TLS: true})
			return setup{srv, "    url: " + srv.URL + "\n    tls: {ca_file: " + srv.CAFile + "}\n"}
		}},
		{name: "TLS only with a private CA the system does not trust", reason: "redis_certificate", setup: func(t *testing.T) setup {
			srv := redisserver.StartWith(t, redisserver.Options{TLS: true})
			return setup{srv, "    url: " + srv.URL + "\n"}
		}},
		{name: "TLS requiring a client certificate, given one", setup: func(t *testing.T) setup {
			srv := redisserver.StartWith(t, redisserver.Options{TLS: true, ClientCerts: true})
			return setup{srv, "    url: " + srv.URL + "\n    tls: {ca_file: " + srv.CAFile + ", cert_file: " + srv.ClientCert + ", key_file: " + srv.ClientKey + "}\n"}
		}},
		{name: "TLS requiring a client certificate, given none", reason: "redis_client_certificate", setup: func(t *testing.T) setup {
			srv := redisserver.StartWith(t, redisserver.Options{TLS: true, ClientCerts: true})
			return setup{srv, "    url: " + srv.URL + "\n    tls: {ca_file: " + srv.CAFile + "}\n"}
		}},
		{name: "a client certificate without its key is refused by check", check: "session.redis.tls.key_file: required with tls.cert_file", setup: func(t *testing.T) setup {
			return setup{nil, "    url: rediss://redis:6380/0\n    tls: {cert_file: /etc/portcullis/redis-client.pem}\n"}
		}},
		{name: "rediss:// to a port that speaks plain Redis", reason: "redis_tls_mismatch", setup: func(t *testing.T) setup {
			srv := plain(t)
			return setup{srv, "    url: rediss://" + srv.Addr + "/0\n"}
		}},
		{name: "redis:// to a port that speaks TLS only", reason: "redis_closed", setup: func(t *testing.T) setup {
			srv := redisserver.StartWith(t, redisserver.Options{TLS: true})
			return setup{srv, "    url: redis://" + srv.Addr + "/0\n"}
		}},
		{name: "requirepass with the password in the URL", setup: func(t *testing.T) setup {
			srv := plain(t, "--requirepass", "s3cret")
			return setup{srv, "    url: redis://:s3cret@" + srv.Addr + "/0\n"}
		}},
		{name: "requirepass with a wrong password", reason: "redis_auth", setup: func(t *testing.T) setup {
			srv := plain(t, "--requirepass", "s3cret")
			return setup{srv, "    url: redis://:wrong@" + srv.Addr + "/0\n"}
		}},
		{name: "requirepass given no password", reason: "redis_auth", setup: func(t *testing.T) setup {
			srv := plain(t, "--requirepass", "s3cret")
			return setup{srv, "    url: " + srv.URL + "\n"}
		}},
		{name: "a password with @ / % # percent-encoded in the URL", setup: func(t *testing.T) setup {
			srv := plain(t, "--requirepass", awkwardPassword)
			return setup{srv, "    url: redis://:" + url.PathEscape(awkwardPassword) + "@" + srv.Addr + "/0\n"}
		}},
		{name: "a password with @ / % # written as it is in the URL is refused by check", check: "session.redis.url: does not parse as a URL: a password with / # % ? in it must be percent-encoded", setup: func(t *testing.T) setup {
			return setup{nil, "    url: redis://:" + awkwardPassword + "@redis:6379/0\n"}
		}},
		{name: "a password with @ / % # from ${VAR} inside the URL is refused by check", check: "or set in session.redis.password", setup: func(t *testing.T) setup {
			return setup{nil, "    url: redis://:${TEST_REDIS_PASSWORD}@redis:6379/0\n"}
		}},
		{name: "a password with @ / % # in password, from ${VAR}", setup: func(t *testing.T) setup {
			srv := plain(t, "--requirepass", awkwardPassword)
			t.Setenv("TEST_REDIS_PASSWORD", awkwardPassword)
			return setup{srv, "    url: " + srv.URL + "\n    password: ${TEST_REDIS_PASSWORD}\n"}
		}},
		{name: "an ACL user with just the commands and keys portcullis needs", setup: func(t *testing.T) setup {
			srv := plain(t, aclUser(redisACL)...)
			return setup{srv, "    url: redis://portcullis:pw@" + srv.Addr + "/0\n"}
		}},
		{name: "an ACL user that may not run scripts", reason: "redis_acl", setup: func(t *testing.T) setup {
			srv := plain(t, aclUser(redisACL+" -eval -evalsha")...)
			return setup{srv, "    url: redis://portcullis:pw@" + srv.Addr + "/0\n"}
		}},
		{name: "an ACL user that may run scripts but not a command in them", reason: "redis_acl", ready: true, setup: func(t *testing.T) setup {
			srv := plain(t, aclUser(redisACL+" -hset")...)
			return setup{srv, "    url: redis://portcullis:pw@" + srv.Addr + "/0\n"}
		}},
		{name: "an ACL user whose keys are another prefix's", reason: "redis_acl", setup: func(t *testing.T) setup {
			srv := plain(t, aclUser(strings.Replace(redisACL, "~portcullis:*", "~other:*", 1))...)
			return setup{srv, "    url: redis://portcullis:pw@" + srv.Addr + "/0\n"}
		}},
		{name: "a user in the URL without a password is refused by check", check: "session.redis.url: names a user without a password", setup: func(t *testing.T) setup {
			return setup{nil, "    url: redis://portcullis@redis:6379/0\n"}
		}},
		{name: "database 3", setup: func(t *testing.T) setup {
			srv := plain(t)
			return setup{srv, "    url: redis://" + srv.Addr + "/3\n"}
		}, after: func(t *testing.T, s setup) {
			if n := keyCount(t, s.srv, 3, "*"); n == 0 {
				t.Error("no key in database 3")
			}
			if n := keyCount(t, s.srv, 0, "*"); n != 0 {
				t.Errorf("%d keys in database 0, want none", n)
			}
		}},
		{name: "a key prefix", setup: func(t *testing.T) setup {
			srv := plain(t)
			return setup{srv, "    url: " + srv.URL + "\n    key_prefix: 'tenant-a:'\n"}
		}, after: func(t *testing.T, s setup) {
			all, ours := keyCount(t, s.srv, 0, "*"), keyCount(t, s.srv, 0, "tenant-a:*")
			if ours == 0 || all != ours {
				t.Errorf("%d keys, %d of them under tenant-a:; want some, all under it", all, ours)
			}
		}},
		{name: "a read-only replica given as the URL", reason: "redis_read_only", setup: func(t *testing.T) setup {
			master := plain(t)
			host, port, _ := strings.Cut(master.Addr, ":")
			srv := plain(t, "--replicaof", host, port)
			return setup{srv, "    url: " + srv.URL + "\n"}
		}},
		{name: "a full Redis with noeviction", reason: "redis_full", ready: true, setup: func(t *testing.T) setup {
			srv := plain(t, "--maxmemory", "1", "--maxmemory-policy", "noeviction")
			return setup{srv, "    url: " + srv.URL + "\n"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.setup(t)
			y := strings.Replace(testConfig, "session:\n", "session:\n  store: redis\n  redis:\n"+s.block, 1)
			err := checkYAML(t, strings.Replace(y, "UPSTREAM", "http://127.0.0.1:1", 1), map[string]string{"TEST_REDIS_PASSWORD": awkwardPassword})
			if tc.check != "" {
				if err == nil || !strings.Contains(err.Error(), tc.check) {
					t.Fatalf("check: %v, want %q", err, tc.check)
				}
				if strings.Contains(err.Error(), awkwardPassword) {
					t.Errorf("check shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("check: %v", err)
			}
			f := newFixtureOf(t, y)
			logs := &process.Output{}
			f.h.log = slog.New(slog.NewJSONHandler(logs, nil))
			problem := f.h.Ready()["session store"]
			if tc.reason == "" {
				if problem != "" {
					t.Fatalf("/readyz: %s", problem)
				}
				cookies := loginThroughProxy(t, f)
				resp, got, reached := f.do(t, request("GET", "/tasks", cookies, "Accept", "text/html"))
				if resp.StatusCode != http.StatusOK || !reached || got.Header.Get("X-Email") != "alice@example.com" {
					t.Fatalf("with the session: %d, reached %v as %q", resp.StatusCode, reached, got.Header.Get("X-Email"))
				}
				if resp, _, _ := f.do(t, request("POST", "/.portcullis/logout", cookies, "Accept", "text/html")); resp.StatusCode >= 400 {
					t.Fatalf("sign-out: %d", resp.StatusCode)
				}
				if resp, _, reached := f.do(t, request("GET", "/tasks", cookies)); resp.StatusCode != http.StatusUnauthorized || reached {
					t.Fatalf("after sign-out: %d (reached %v), want 401", resp.StatusCode, reached)
				}
				if tc.after != nil {
					tc.after(t, s)
				}
				return
			}
			if tc.ready != (problem == "") {
				t.Errorf("/readyz problem %q; want ready %v", problem, tc.ready)
			}
			if !tc.ready && !strings.Contains(problem, tc.reason+": ") {
				t.Errorf("/readyz problem %q does not give reason %s with a hint", problem, tc.reason)
			}
			// A login Redis cannot record: 503, not a refusal nor a loop.
			rec := loginAnswer(t, f)
			if rec.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("login: %d, want 503", rec.StatusCode)
			}
			if _, _, reached := f.do(t, request("GET", "/tasks", nil)); reached {
				t.Error("a request without a session reached the upstream")
			}
			// A request with a session cookie: 503 where Redis cannot read
			// sessions, with a line that says why; else sent to log in.
			resp, _, reached := f.do(t, request("GET", "/tasks", cookies, "Accept", "text/html"))
			switch {
			case reached:
				t.Error("a request whose session Redis cannot show reached the upstream")
			case resp.StatusCode == http.StatusServiceUnavailable:
				line := logLine(t, logs.String(), "session store unavailable")
				if line["reason"] != tc.reason || line["hint"] == "" {
					t.Errorf("session store unavailable line: reason %v, hint %q; want %s and a hint", line["reason"], line["hint"], tc.reason)
				}
			case resp.StatusCode != http.StatusFound:
				t.Errorf("a request with a session cookie: %d, want 503, or 302 to log in", resp.StatusCode)
			}
			line := logLine(t, logs.String(), "login_failed")
			if line["reason"] != "session_store" || line["store_reason"] != tc.reason || line["hint"] == "" {
				t.Errorf("login_failed line: reason %v, store_reason %v, hint %q; want session_store, %s and a hint\n%s",
					line["reason"], line["store_reason"], line["hint"], tc.reason, logs)
			}
			if strings.Contains(logs.String(), "s3cret") || strings.Contains(logs.String(), awkwardPassword) {
				t.Errorf("the log shows the password:\n%s", logs)
			}
		})
	}
}

// aclUser are the redis-server arguments that turn its default user off
// and make the user portcullis, password pw, with rules.
func aclUser(rules string) []string {
	return append([]string{"--user", "default", "off", "--user", "portcullis", "on", ">pw"}, strings.Fields(rules)...)
}

// loginThroughProxy signs alice in at the IdP company as a browser would:
// the login start, then the IdP's answer at the callback; it returns the
// cookies the callback set.
func loginThroughProxy(t *testing.T, f *fixture) []*http.Cookie {
	t.Helper()
	resp := loginAnswer(t, f)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("callback: %d, want 302", resp.StatusCode)
	}
	return resp.Cookies()
}

func loginAnswer(t *testing.T, f *fixture) *http.Response {
	t.Helper()
	fake := &signingIn{}
	f.h.providers["company"].impl = fake
	start, _, _ := f.do(t, request("GET", "/.portcullis/login/company", nil))
	if start.StatusCode != http.StatusFound {
		t.Fatalf("login start: %d, want 302", start.StatusCode)
	}
	resp, _, _ := f.do(t, request("GET", "/.portcullis/oidc/company/callback?code=c&state="+fake.state, start.Cookies(), "Accept", "text/html"))
	return resp
}

// logLine is the first JSON line of logs whose msg is msg.
func logLine(t *testing.T, logs, msg string) map[string]any {
	t.Helper()
	for l := range strings.Lines(logs) {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			return m
		}
	}
	t.Fatalf("no %s line in:\n%s", msg, logs)
	return nil
}

// keyCount is how many keys of database db match pattern.
func keyCount(t *testing.T, srv *redisserver.Server, db int, pattern string) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, DB: db})
	defer c.Close()
	keys, err := c.Keys(context.Background(), pattern).Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}
