package session

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/portcullis-proxy/portcullis/idp"
)

// RedisConfig is the `session.redis:` block: where the Redis that replicas
// share lives. Exactly one of URL (one server), Sentinel (a master found
// through Redis Sentinel) and ClusterAddrs (a Redis Cluster) is set.
type RedisConfig struct {
	// URL is one Redis server: redis://[user:password@]host:port/db, or
	// rediss:// for TLS. Env PORTCULLIS_REDIS_URL overrides it.
	URL string `yaml:"url"`
	// Sentinel names the master and the sentinels that know where it is.
	Sentinel RedisSentinel `yaml:"sentinel"`
	// ClusterAddrs are some nodes (host:port) of a Redis Cluster; the rest
	// are discovered.
	ClusterAddrs []string `yaml:"cluster_addrs"`
	// Username and Password authenticate at Redis (ACL user, or the
	// requirepass password with no username); they win over the URL's.
	// Env PORTCULLIS_REDIS_PASSWORD overrides Password.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// DB is the database number with Sentinel (a URL names its own; a
	// cluster has only 0).
	DB int `yaml:"db"`
	// TLS secures the connections; a rediss:// URL turns it on too.
	TLS RedisTLS `yaml:"tls"`
	// KeyPrefix starts every key portcullis writes ("portcullis:" when
	// empty), so that one Redis can serve several deployments.
	KeyPrefix string `yaml:"key_prefix"`
}

// RedisSentinel is `session.redis.sentinel:`.
type RedisSentinel struct {
	MasterName string   `yaml:"master_name"`
	Addrs      []string `yaml:"addrs"`
	// Username is the ACL user the sentinels know portcullis as (env
	// PORTCULLIS_REDIS_SENTINEL_USERNAME); empty for their default user.
	// It needs Password.
	Username string `yaml:"username"`
	// Password authenticates at the sentinels (env
	// PORTCULLIS_REDIS_SENTINEL_PASSWORD); empty when they need none.
	Password string `yaml:"password"`
}

// RedisTLS is `session.redis.tls:`.
type RedisTLS struct {
	// Enabled turns TLS on for Sentinel and Cluster (URLs say rediss://).
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the CAs that sign Redis's certificate;
	// empty means the system's.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name checked in the certificate when it is not
	// the host dialled.
	ServerName string `yaml:"server_name"`
	// CertFile and KeyFile are a client certificate and its key (PEM),
	// for a Redis that requires one (tls-auth-clients yes).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// DefaultRedisKeyPrefix starts every key when session.redis.key_prefix is empty.
const DefaultRedisKeyPrefix = "portcullis:"

// Timeouts of every Redis connection: a Redis that does not answer must turn
// into a 503 quickly, not into requests piling up.
const (
	redisDialTimeout = 2 * time.Second
	redisIOTimeout   = time.Second
	// redisOpTimeout bounds one operation, retries included.
	redisOpTimeout = 3 * time.Second
	// redisHandshakeTimeout bounds a TLS handshake, as go-redis's own
	// dialer bounded it (tls.DialWithDialer within the dial timeout): Redis
	// shakes hands on its one main thread, and a Redis busy with a slow
	// command or every replica reconnecting after a failover must not have
	// its handshakes given up on and started again. A port that speaks
	// plain Redis never answers one; the readiness check names that
	// handshake (handshakes) when its own command only timed out.
	redisHandshakeTimeout = redisDialTimeout
	// go-redis dials 5 times 100 ms apart by default: with Redis down every
	// request would wait about a second for its 503, and with Sentinel
	// (each sentinel, then the master) the whole of redisOpTimeout.
	redisDialerRetries   = 2
	redisDialerRetryWait = 50 * time.Millisecond
	// redisClusterReload is how old a Cluster client's slot map may get
	// before a request has it read again (CLUSTER SLOTS, in the
	// background). go-redis reads it again at once on a MOVED, which a
	// manual failover's old master answers, but not when a master is gone:
	// after its replica was promoted, the slots stayed on the dead master
	// for go-redis's default of 60 s, a minute of 503s past the failover.
	redisClusterReload = time.Second
)

// ApplyEnv applies the environment overrides: PORTCULLIS_REDIS_URL (so a
// deployment can take the whole URL from a secret),
// PORTCULLIS_REDIS_PASSWORD, PORTCULLIS_REDIS_SENTINEL_USERNAME and
// PORTCULLIS_REDIS_SENTINEL_PASSWORD (EnvOverrides), each when set.
func (c *RedisConfig) ApplyEnv(getenv func(string) string) {
	fields := map[string]*string{
		"url":               &c.URL,
		"password":          &c.Password,
		"sentinel.username": &c.Sentinel.Username,
		"sentinel.password": &c.Sentinel.Password,
	}
	for key, name := range c.EnvOverrides() {
		if v := getenv(name); v != "" {
			*fields[key] = v
		}
	}
}

// EnvOverrides names, by key relative to session.redis, the environment
// variable that ApplyEnv takes that key's value from when it is set.
func (c *RedisConfig) EnvOverrides() map[string]string {
	return map[string]string{
		"url":               "PORTCULLIS_REDIS_URL",
		"password":          "PORTCULLIS_REDIS_PASSWORD",
		"sentinel.username": "PORTCULLIS_REDIS_SENTINEL_USERNAME",
		"sentinel.password": "PORTCULLIS_REDIS_SENTINEL_PASSWORD",
	}
}

// Validate returns every problem with c, each as "key: what is wrong" with the
// key relative to session.redis. It reaches nothing on the network.
func (c *RedisConfig) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	modes := 0
	for _, set := range []bool{c.URL != "", c.Sentinel.MasterName != "" || len(c.Sentinel.Addrs) > 0, len(c.ClusterAddrs) > 0} {
		if set {
			modes++
		}
	}
	switch {
	case modes == 0:
		bad("url", `required with session.store redis (redis://host:6379/0, rediss:// for TLS), or set sentinel or cluster_addrs instead`)
	case modes > 1:
		bad("url", "set only one of url, sentinel and cluster_addrs")
	}
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		scheme, rest, _ := strings.Cut(c.URL, "://")
		switch {
		case (err != nil || u.Host == "") && (scheme == "redis" || scheme == "rediss") && strings.Contains(rest, "@"):
			// A password, or a ${VAR} expanded into one, that holds a
			// character a URL gives a meaning to ends the user part early.
			bad("url", "does not parse as a URL: a password with / # %% ? in it must be percent-encoded there (%%2F %%23 %%25 %%3F), "+
				"or set in session.redis.password (or PORTCULLIS_REDIS_PASSWORD) and left out of the url")
		case err != nil || u.Host == "":
			bad("url", "not a redis:// or rediss:// URL")
		case u.Scheme != "redis" && u.Scheme != "rediss":
			bad("url", "scheme %q: want redis:// or rediss:// (TLS); for Sentinel or Cluster use sentinel or cluster_addrs", u.Scheme)
		default:
			if _, err := redis.ParseURL(c.URL); err != nil {
				// go-redis's message may quote the URL; the password must not show.
				bad("url", "%s", strings.ReplaceAll(err.Error(), c.URL, u.Redacted()))
			}
		}
	}
	if c.Sentinel.MasterName != "" || len(c.Sentinel.Addrs) > 0 {
		if c.Sentinel.MasterName == "" {
			bad("sentinel.master_name", "required (the name the sentinels monitor, e.g. mymaster)")
		}
		if len(c.Sentinel.Addrs) == 0 {
			bad("sentinel.addrs", "at least one sentinel host:port is required")
		}
		for i, a := range c.Sentinel.Addrs {
			if !hostPort(a) {
				bad(fmt.Sprintf("sentinel.addrs[%d]", i), "not a host:port address: %q", a)
			}
		}
	}
	// go-redis authenticates only with a password: a user without one is
	// never sent, and the connection is Redis's default user's.
	urlUser, urlPassword := "", ""
	if u, err := url.Parse(c.URL); err == nil && u.User != nil {
		urlUser = u.User.Username()
		urlPassword, _ = u.User.Password()
	}
	switch {
	case c.Username != "" && c.Password == "" && urlPassword == "":
		bad("username", "needs password (or PORTCULLIS_REDIS_PASSWORD, or one in url): a user is only sent with its password")
	case urlUser != "" && c.Username == "" && c.Password == "" && urlPassword == "":
		bad("url", "names a user without a password (redis://user:password@host:port): a user is only sent with its password")
	}
	if c.Sentinel.Username != "" && c.Sentinel.Password == "" {
		// go-redis sends no AUTH without a password: the sentinels would
		// see their default user, never this one.
		bad("sentinel.username", "needs sentinel.password (or PORTCULLIS_REDIS_SENTINEL_PASSWORD): a user is only sent with its password")
	}
	for i, a := range c.ClusterAddrs {
		if !hostPort(a) {
			bad(fmt.Sprintf("cluster_addrs[%d]", i), "not a host:port address: %q", a)
		}
	}
	if c.DB < 0 {
		bad("db", "must be 0 or more, got %d", c.DB)
	}
	if c.DB != 0 && c.URL != "" {
		bad("db", "a url names its database in its path (redis://host:6379/%d)", c.DB)
	}
	if c.DB != 0 && len(c.ClusterAddrs) > 0 {
		bad("db", "a Redis Cluster has only database 0")
	}
	if c.TLS.CAFile != "" {
		if _, _, err := idp.LoadCAFile(c.TLS.CAFile); err != nil {
			bad("tls.ca_file", "%v", err)
		}
	}
	switch {
	case c.TLS.CertFile != "" && c.TLS.KeyFile == "":
		bad("tls.key_file", "required with tls.cert_file (the client certificate's key, PEM)")
	case c.TLS.KeyFile != "" && c.TLS.CertFile == "":
		bad("tls.cert_file", "required with tls.key_file (the client certificate, PEM)")
	case c.TLS.CertFile != "":
		if _, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile); err != nil {
			bad("tls.cert_file", "%v", err)
		}
	}
	if strings.ContainsAny(c.KeyPrefix, " \t\r\n{}") {
		bad("key_prefix", "must not contain spaces or braces, got %q", c.KeyPrefix)
	}
	return errors.Join(errs...)
}

func hostPort(a string) bool {
	host, port, err := net.SplitHostPort(a)
	return err == nil && host != "" && port != ""
}

func (c *RedisConfig) prefix() string {
	if c.KeyPrefix == "" {
		return DefaultRedisKeyPrefix
	}
	return c.KeyPrefix
}

// tlsConfig is the TLS client config c asks for, nil for plain connections.
// Without tls.server_name, each connection checks the certificate against
// the host it dials (every node of a cluster, the master Sentinel names).
func (c *RedisConfig) tlsConfig() (*tls.Config, error) {
	if !c.TLS.Enabled && c.TLS.CAFile == "" && c.TLS.CertFile == "" && !strings.HasPrefix(c.URL, "rediss://") {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLS.ServerName}
	if c.TLS.CAFile != "" {
		pool, _, err := idp.LoadCAFile(c.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		tc.RootCAs = pool
	}
	if c.TLS.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// redisDialer dials a Redis server and, with tc, shakes hands in TLS
// within redisHandshakeTimeout. A handshake that fails says so (FaultOf): a
// rediss:// URL to a port that speaks plain Redis gets no answer at all
// (Redis waits for the end of a line that never comes), which would
// otherwise read as a Redis that is down.
func redisDialer(tc *tls.Config, hs *handshakes) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: redisDialTimeout, KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: 30 * time.Second, Interval: 5 * time.Second, Count: 3,
	}}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		hs.dials.Add(1)
		hs.dialing.Add(1)
		raw, err := d.DialContext(ctx, network, addr)
		hs.dialing.Add(-1)
		var op *net.OpError
		switch {
		case errors.As(err, &op):
			hs.dialFailed.Store(op)
		case err == nil:
			hs.dialFailed.Store(nil)
			hs.succeeded(time.Now())
		}
		if err != nil || tc == nil {
			return raw, err
		}
		cfg := tc.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		asked := false
		if len(cfg.Certificates) == 0 {
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				asked = true
				return &tls.Certificate{}, nil // none: Redis may take that (tls-auth-clients optional)
			}
		}
		ctx, cancel := context.WithTimeout(ctx, redisHandshakeTimeout)
		defer cancel()
		waiting := &errTLSHandshake{addr: addr, err: errNoHandshakeAnswer}
		hs.waiting.Store(waiting)
		defer hs.waiting.CompareAndSwap(waiting, nil)
		conn := tls.Client(raw, cfg)
		if err := conn.HandshakeContext(ctx); err != nil {
			raw.Close()
			failed := &errTLSHandshake{addr: addr, err: err}
			hs.last.Store(failed)
			return nil, failed
		}
		if asked {
			// In TLS 1.3 a server refuses a missing client certificate
			// after the client's side of the handshake is done: the
			// refusal comes with the first answer, as an alert or, as
			// often, a closed connection. One PING tells.
			if err := pingOnce(ctx, conn); err != nil {
				raw.Close()
				failed := &errTLSHandshake{addr: addr, err: fmt.Errorf("%w (%w)", errNoClientCert, err)}
				hs.last.Store(failed)
				return nil, failed
			}
		}
		hs.last.Store(nil)
		return conn, nil
	}
}

// errNoClientCert is a Redis that asked for a client certificate, was
// given none, and did not answer.
var errNoClientCert = errors.New("Redis asked for a client certificate and session.redis.tls.cert_file sets none")

// pingOnce sends PING on a new connection and reads the one line of its
// answer (+PONG, or an error such as NOAUTH: either way Redis took the
// connection), byte by byte so that nothing after it is read.
func pingOnce(ctx context.Context, conn net.Conn) error {
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	b := make([]byte, 1)
	for {
		if _, err := conn.Read(b); err != nil {
			return err
		}
		if b[0] == '\n' {
			return nil
		}
	}
}

// client builds the go-redis client c describes; it connects lazily.
func (c *RedisConfig) client(hs *handshakes) (redis.UniversalClient, error) {
	noMaint := &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	switch {
	case c.URL != "":
		o, err := redis.ParseURL(c.URL)
		if err != nil {
			return nil, fmt.Errorf("parse url: %w", err)
		}
		if o.TLSConfig, err = c.tlsConfig(); err != nil {
			return nil, err
		}
		if c.Username != "" {
			o.Username = c.Username
		}
		if c.Password != "" {
			o.Password = c.Password
		}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout = redisDialTimeout, redisIOTimeout, redisIOTimeout
		// One retry: a Redis whose `timeout` closes idle clients closes one
		// now and then just as a command goes out on it, which then sees
		// EOF; go-redis sends it again on a new connection
		// (redis_idle_test.go). Redis closed it without reading the
		// command, so the command does not run twice.
		o.MaxRetries = 1
		o.DialerRetries, o.DialerRetryTimeout = redisDialerRetries, redisDialerRetryWait
		o.MaintNotificationsConfig = noMaint
		o.Dialer = redisDialer(o.TLSConfig, hs)
		return redis.NewClient(o), nil
	case len(c.ClusterAddrs) > 0:
		tc, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		// Every command goes to the slot's master (ReadOnly, RouteByLatency
		// and RouteRandomly off): a replica lags, and would show a session
		// just revoked or logged out as still there, or miss one just made.
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: c.ClusterAddrs, Username: c.Username, Password: c.Password, TLSConfig: tc,
			DialTimeout: redisDialTimeout, ReadTimeout: redisIOTimeout, WriteTimeout: redisIOTimeout,
			DialerRetries: redisDialerRetries, DialerRetryTimeout: redisDialerRetryWait,
			MaxRetries: 1, MaintNotificationsConfig: noMaint,
			ClusterStateReloadInterval: redisClusterReload, Dialer: redisDialer(tc, hs),
		}), nil
	default:
		tc, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: c.Sentinel.MasterName, SentinelAddrs: c.Sentinel.Addrs,
			SentinelUsername: c.Sentinel.Username, SentinelPassword: c.Sentinel.Password,
			Username: c.Username, Password: c.Password, DB: c.DB, TLSConfig: tc,
			DialTimeout: redisDialTimeout, ReadTimeout: redisIOTimeout, WriteTimeout: redisIOTimeout,
			DialerRetries: redisDialerRetries, DialerRetryTimeout: redisDialerRetryWait,
			MaxRetries: 1, Dialer: redisDialer(tc, hs),
		}), nil
	}
}
