package redisserver

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
)

// StartSentinel runs a master (a Server) and one sentinel monitoring it on
// loopback, and stops both when the test ends. It returns the name the
// sentinel knows the master by and the sentinel's address, once the
// sentinel names the master.
func StartSentinel(t testing.TB) (masterName string, sentinelAddrs []string) {
	t.Helper()
	return StartSentinelWithACL(t, SentinelACL{})
}

// SentinelACL is who a sentinel lets in: with a User, its default user is
// off and clients must authenticate as User with Password (ACL rules in
// sentinel.conf, which sentinels take since Redis 6.2).
type SentinelACL struct {
	User, Password string
}

// StartSentinelWithACL is StartSentinel with a sentinel that admits only
// acl.User (none: anyone).
func StartSentinelWithACL(t testing.TB, acl SentinelACL) (masterName string, sentinelAddrs []string) {
	t.Helper()
	master := Start(t)
	masterName = "portcullis-test"
	dir := t.TempDir()
	port := process.FreePort(t)
	conf := filepath.Join(dir, "sentinel.conf")
	// A sentinel rewrites its config file, so it lives in the temp dir.
	host, masterPort, _ := net.SplitHostPort(master.Addr)
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir %s\n"+
		"sentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %s 5000\n",
		port, dir, masterName, host, masterPort, masterName)
	var auth []string
	if acl.User != "" {
		// go-redis asks for the master and its replicas and subscribes to
		// the failover events: all commands and channels.
		text += fmt.Sprintf("user default off\nuser %s on >%s allchannels +@all\n", acl.User, acl.Password)
		auth = []string{"--user", acl.User, "--pass", acl.Password, "--no-auth-warning"}
	}
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatalf("redisserver: write sentinel.conf: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	startProcess(t, "sentinel", []string{conf, "--sentinel"})
	waitFor(t, "sentinel knows the master", func() (bool, string) {
		out, err := cli(addr, append(auth, "SENTINEL", "get-master-addr-by-name", masterName)...)
		f := strings.Fields(out)
		return err == nil && len(f) == 2 && f[0] == host && f[1] == masterPort, out
	})
	return masterName, []string{addr}
}

// StartCluster runs n redis-server nodes with cluster mode on loopback,
// joins them into one Redis Cluster of n masters without replicas (n is at
// least 3) and stops them when the test ends. It returns the nodes'
// addresses once every node reports cluster_state:ok.
func StartCluster(t testing.TB, n int) []string {
	t.Helper()
	if n < 3 {
		t.Fatalf("redisserver: a cluster needs at least 3 masters, asked for %d", n)
	}
	dir := t.TempDir()
	addrs := make([]string, n)
	for i := range addrs {
		port, busPort := process.FreePort(t), process.FreePort(t)
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		// An explicit cluster-port: the default, port+10000, may be taken
		// or beyond 65535 for a random free port.
		startProcess(t, fmt.Sprintf("cluster node %d", i), []string{
			"--port", strconv.Itoa(port), "--cluster-port", strconv.Itoa(busPort), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i)),
			"--cluster-node-timeout", "5000", "--dir", dir,
			"--save", "", "--appendonly", "no", "--daemonize", "no",
			"--protected-mode", "no", "--loglevel", "warning",
		})
		waitFor(t, "cluster node "+addrs[i]+" answers", func() (bool, string) {
			out, err := cli(addrs[i], "PING")
			return err == nil && out == "PONG", out
		})
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redisserver: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		waitFor(t, "cluster state ok at "+a, func() (bool, string) {
			out, err := cli(a, "CLUSTER", "INFO")
			return err == nil && strings.Contains(out, "cluster_state:ok"), out
		})
	}
	return addrs
}

// startProcess runs redis-server with args until the test ends, and shows
// its output when the test failed.
func startProcess(t testing.TB, what string, args []string) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redisserver: redis-server is not installed (apt-get install redis-server): %v", err)
	}
	var output process.Output
	cmd := exec.Command("redis-server", args...)
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		t.Fatalf("redisserver: start %s: %v", what, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("redisserver: %s output:\n%s", what, output.String())
		}
	})
}

// waitFor polls ready for up to 10 s and fails the test with ready's last
// answer when it never holds.
func waitFor(t testing.TB, what string, ready func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, last := ready()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redisserver: waited 10s for: %s; last answer:\n%s", what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cli runs one command with redis-cli against addr and returns its trimmed
// output.
func cli(addr string, args ...string) (string, error) {
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
