package proxy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// withRedis is minimal with session.store redis and the given session.redis block.
func withRedis(block string) string {
	return strings.Replace(minimal, "session:\n", "session:\n  store: redis\n  redis:\n"+block, 1)
}

// storeInRedis is cfg with its sessions kept in the Redis server at url.
func storeInRedis(cfg, url string) string {
	return strings.Replace(cfg, "session:\n", "session:\n  store: redis\n  redis: {url: "+url+"}\n", 1)
}

func TestRedisConfig(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, block, want string // want "" accepts
	}{
		{"a redis:// URL is accepted", "    url: redis://redis:6379/0\n", ""},
		{"a rediss:// URL (TLS) with a password is accepted", "    url: rediss://:secret@redis.example.com:6380/2\n", ""},
		{"Sentinel is accepted", "    sentinel:\n      master_name: mymaster\n      addrs: [s1:26379, s2:26379]\n    db: 1\n", ""},
		{"Cluster is accepted", "    cluster_addrs: [n1:6379, n2:6379]\n    tls: {enabled: true}\n", ""},
		{"no address at all is refused", "    key_prefix: x\n", "session.redis.url: required with session.store redis"},
		{"two modes at once are refused", "    url: redis://r:6379\n    cluster_addrs: [n1:6379]\n", "session.redis.url: set only one of"},
		{"another scheme is refused", "    url: http://redis:6379\n", `session.redis.url: scheme "http"`},
		{"a bad database number is refused", "    url: redis://redis:6379/zero\n", "session.redis.url: redis: invalid database number"},
		{"the password does not show in the error", "    url: redis://:hunter2@redis:6379/zero\n", "session.redis.url:"},
		{"Sentinel without a master name is refused", "    sentinel:\n      addrs: [s1:26379]\n", "session.redis.sentinel.master_name: required"},
		{"a Sentinel ACL user with its password is accepted", "    sentinel:\n      master_name: m\n      addrs: [s1:26379]\n      username: portcullis\n      password: pw\n", ""},
		{"a Sentinel ACL user without a password is refused", "    sentinel:\n      master_name: m\n      addrs: [s1:26379]\n      username: portcullis\n",
			"session.redis.sentinel.username: needs sentinel.password (or PORTCULLIS_REDIS_SENTINEL_PASSWORD)"},
		{"an ACL user with its password is accepted", "    url: redis://r:6379\n    username: portcullis\n    password: pw\n", ""},
		{"an ACL user with the URL's password is accepted", "    url: redis://:pw@r:6379\n    username: portcullis\n", ""},
		{"an ACL user in the URL with its password is accepted", "    url: redis://portcullis:pw@r:6379\n", ""},
		{"an ACL user without a password is refused", "    url: redis://r:6379\n    username: portcullis\n",
			"session.redis.username: needs password (or PORTCULLIS_REDIS_PASSWORD, or one in url)"},
		{"an ACL user in the URL without a password is refused", "    url: redis://portcullis@r:6379\n",
			"session.redis.url: names a user without a password"},
		{"a Cluster ACL user without a password is refused", "    cluster_addrs: [n1:6379]\n    username: portcullis\n",
			"session.redis.username: needs password"},
		{"a sentinel address without a port is refused", "    sentinel:\n      master_name: m\n      addrs: [s1]\n", "session.redis.sentinel.addrs[0]: not a host:port"},
		{"a cluster address without a port is refused", "    cluster_addrs: [n1]\n", "session.redis.cluster_addrs[0]: not a host:port"},
		{"a database with a cluster is refused", "    cluster_addrs: [n1:6379]\n    db: 3\n", "session.redis.db: a Redis Cluster has only database 0"},
		{"an unreadable CA file is refused", "    url: rediss://r:6379\n    tls: {ca_file: /nonexistent/ca.pem}\n", "session.redis.tls.ca_file: read:"},
		{"a CA file with no certificate is refused", "    url: rediss://r:6379\n    tls: {ca_file: " + ca + "}\n", "session.redis.tls.ca_file:"},
		{"a typo in the block is refused", "    ur: redis://r:6379\n", "session.redis.ur: unknown key"},
		{"a URL without a host is refused, not read as localhost", "    url: redis://\n", "session.redis.url: not a redis:// or rediss:// URL"},
		{"a client certificate without its key is refused", "    url: rediss://r:6380\n    tls: {cert_file: /etc/portcullis/redis-client.pem}\n",
			"session.redis.tls.key_file: required with tls.cert_file"},
		{"an unreadable client certificate is refused", "    url: rediss://r:6380\n    tls: {cert_file: /nonexistent/c.pem, key_file: /nonexistent/c.key}\n",
			"session.redis.tls.cert_file: open /nonexistent/c.pem"},
		{"a password with / # % unencoded in the URL is refused, saying to encode it", "    url: 'redis://:hunter2/#%x@r:6379/0'\n",
			"session.redis.url: does not parse as a URL: a password with / # % ? in it must be percent-encoded"},
		{"Sentinel without addresses is refused", "    sentinel:\n      master_name: mymaster\n", "session.redis.sentinel.addrs: at least one sentinel host:port is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkYAML(t, withRedis(tc.block), nil)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "hunter2"):
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

func TestRedisPasswordsFromTheEnvironment(t *testing.T) {
	cfg, err := ParseConfig([]byte(withRedis("    url: redis://redis:6379/0\n    password: from-file\n    sentinel: {password: ''}\n")), func(k string) string {
		return map[string]string{
			"PORTCULLIS_REDIS_URL":               "rediss://redis.internal:6380/1",
			"PORTCULLIS_REDIS_PASSWORD":          "from-env",
			"PORTCULLIS_REDIS_SENTINEL_USERNAME": "sentinel-user-env",
			"PORTCULLIS_REDIS_SENTINEL_PASSWORD": "sentinel-env",
		}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Session.Redis; r.URL != "rediss://redis.internal:6380/1" || r.Password != "from-env" ||
		r.Sentinel.Username != "sentinel-user-env" || r.Sentinel.Password != "sentinel-env" {
		t.Errorf("url %q, password %q, sentinel username %q and password %q: want the environment's",
			r.URL, r.Password, r.Sentinel.Username, r.Sentinel.Password)
	}
}

func TestOpenSessionsNeedsRedis(t *testing.T) {
	cfg, err := ParseConfig([]byte(minimal), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSessions(cfg); err != ErrSessionsNeedRedis {
		t.Errorf("OpenSessions with the cookie store: %v, want ErrSessionsNeedRedis", err)
	}
}
