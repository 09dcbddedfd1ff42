package redisserver

import (
	"crypto/rand"
	"encoding/hex"
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

// Failover timings of StartFailover's sentinels: a master that answers no
// PING for failoverDownAfter is down (production: 5 to 30 s, Redis's default
// 30 s, so that a GC pause or a slow network is not a failover), and
// failoverTimeout bounds each step of a failover and spaces the retries of
// one that did not finish (production: 60 to 180 s, default 180 s).
const (
	failoverDownAfter = 500 * time.Millisecond
	failoverTimeout   = 2 * time.Second
)

// Failover is a master, one replica of it and three sentinels that watch
// them with a quorum of two, the smallest deployment that survives the loss
// of the master's machine. Timings are a test's: see failoverDownAfter.
type Failover struct {
	// MasterName is the name the sentinels know the master by.
	MasterName string
	// Sentinels are the sentinels' host:port addresses.
	Sentinels []string
	// Master is the master at the start; Replica the replica the sentinels
	// promote when it is gone.
	Master, Replica *Server
}

// StartFailover runs a Failover on loopback and stops it when the test
// ends. It returns once the replica has synced with the master and every
// sentinel knows the master, the replica and the two other sentinels, so
// that a failover can start at once. The sentinels are told of each other
// in their config files rather than left to find each other (their hello
// messages go every 2 s).
func StartFailover(t testing.TB) *Failover {
	t.Helper()
	// The master syncs the replica through a file in its temp dir: over
	// the socket (the default) it would wait 5 s for more replicas, and
	// count the replica in (for WAIT) only at its first ack, a second on.
	master := startWith(t, "--dir", t.TempDir(), "--repl-diskless-sync", "no")
	host, masterPort, _ := net.SplitHostPort(master.Addr)
	replica := startWith(t, "--dir", t.TempDir(), "--replicaof", host, masterPort, "--repl-diskless-load", "swapdb")
	waitFor(t, "the replica synced with the master", func() (bool, string) {
		out, err := cli(master.Addr, "INFO", "replication")
		return err == nil && strings.Contains(out, "state=online"), out
	})
	_, replicaPort, _ := net.SplitHostPort(replica.Addr)

	f := &Failover{MasterName: "portcullis-failover", Master: master, Replica: replica}
	ports := make([]int, 3)
	ids := make([]string, 3)
	for i := range ports {
		ports[i] = process.FreePort(t)
		id := make([]byte, 20)
		rand.Read(id)
		ids[i] = hex.EncodeToString(id)
		f.Sentinels = append(f.Sentinels, net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i])))
	}
	for i, port := range ports {
		dir := t.TempDir() // a sentinel rewrites its config file
		var text strings.Builder
		fmt.Fprintf(&text, "port %d\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir %s\nsentinel myid %s\n", port, dir, ids[i])
		fmt.Fprintf(&text, "sentinel monitor %s %s %s 2\n", f.MasterName, host, masterPort)
		fmt.Fprintf(&text, "sentinel down-after-milliseconds %s %d\n", f.MasterName, failoverDownAfter.Milliseconds())
		fmt.Fprintf(&text, "sentinel failover-timeout %s %d\n", f.MasterName, failoverTimeout.Milliseconds())
		fmt.Fprintf(&text, "sentinel known-replica %s %s %s\n", f.MasterName, host, replicaPort)
		for j, other := range ports {
			if j != i {
				fmt.Fprintf(&text, "sentinel known-sentinel %s 127.0.0.1 %d %s\n", f.MasterName, other, ids[j])
			}
		}
		conf := filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(conf, []byte(text.String()), 0o600); err != nil {
			t.Fatalf("redisserver: write sentinel.conf: %v", err)
		}
		startProcess(t, fmt.Sprintf("sentinel %d", i), []string{conf, "--sentinel"})
	}
	for _, s := range f.Sentinels {
		waitFor(t, "sentinel "+s+" knows the master, its replica and the other sentinels", func() (bool, string) {
			out, err := cli(s, "SENTINEL", "MASTER", f.MasterName)
			fields := fieldsOf(out)
			return err == nil && fields["ip"] == host && fields["port"] == masterPort &&
				fields["num-slaves"] == "1" && fields["num-other-sentinels"] == "2", out
		})
	}
	return f
}

// WaitReplicated returns once the replica holds every write the master had
// accepted when it was called, failing the test after 10 s. Writes the
// master acknowledged but had not yet sent are what a failover loses.
func (f *Failover) WaitReplicated(t testing.TB) {
	t.Helper()
	// WAIT counts the replicas that have the writes of its own connection:
	// a write first, on the same connection, covers every earlier one.
	host, port, _ := net.SplitHostPort(f.Master.Addr)
	cmd := exec.Command("redis-cli", "-h", host, "-p", port)
	cmd.Stdin = strings.NewReader("SET redisserver:replicated 1\nWAIT 1 10000\n")
	out, err := cmd.CombinedOutput()
	if lines := strings.Fields(string(out)); err != nil || len(lines) != 2 || lines[1] != "1" {
		t.Fatalf("redisserver: SET and WAIT 1 at the master: %v\n%s", err, out)
	}
}

// Promoted reports whether the replica has been made master. The sentinel
// that made it so names it as the master once the replica's INFO confirms
// it (a second on), the others when they hear of it (their hello, every 2 s).
func (f *Failover) Promoted() bool {
	out, err := cli(f.Replica.Addr, "ROLE")
	return err == nil && strings.HasPrefix(out, "master")
}

// fieldsOf reads redis-cli's output of a flat list of names and values
// (SENTINEL MASTER), one per line, into a map.
func fieldsOf(out string) map[string]string {
	lines := strings.Split(out, "\n")
	m := make(map[string]string, len(lines)/2)
	for i := 0; i+1 < len(lines); i += 2 {
		m[strings.TrimSpace(lines[i])] = strings.TrimSpace(lines[i+1])
	}
	return m
}

// SlotOwner is the address of the master of the cluster at addrs that
// serves hash slot, as the first node sees it.
func SlotOwner(t testing.TB, addrs []string, slot int) string {
	t.Helper()
	out, err := cli(addrs[0], "CLUSTER", "NODES")
	if err != nil {
		t.Fatalf("redisserver: CLUSTER NODES: %v\n%s", err, out)
	}
	// <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot or first-last>...
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 {
			continue
		}
		for _, r := range f[8:] {
			first, last, isRange := strings.Cut(r, "-")
			if !isRange {
				last = first
			}
			lo, err1 := strconv.Atoi(first)
			hi, err2 := strconv.Atoi(last)
			if err1 == nil && err2 == nil && lo <= slot && slot <= hi {
				addr, _, _ := strings.Cut(f[1], "@")
				return addr
			}
		}
	}
	t.Fatalf("redisserver: no master serves slot %d:\n%s", slot, out)
	return ""
}

// MoveSlot moves hash slot of the cluster at addrs from the master that
// serves it to the master at to, as redis-cli --cluster reshard moves each
// slot: to imports it, its owner marks it migrating, its keys go over with
// MIGRATE, and every master is told the slot's new owner. between runs once
// the keys have moved and before the owner changes: then the old owner
// sends a client that asks for one of them on to the new with ASK, and
// afterwards with MOVED.
func MoveSlot(t testing.TB, addrs []string, slot int, to string, between func()) {
	t.Helper()
	from := SlotOwner(t, addrs, slot)
	if from == to {
		t.Fatalf("redisserver: slot %d is at %s already", slot, to)
	}
	run := func(addr string, args ...string) string {
		t.Helper()
		out, err := cli(addr, args...)
		if err != nil || strings.HasPrefix(out, "ERR") {
			t.Fatalf("redisserver: %s at %s: %v\n%s", strings.Join(args, " "), addr, err, out)
		}
		return out
	}
	fromID, toID := run(from, "CLUSTER", "MYID"), run(to, "CLUSTER", "MYID")
	s := strconv.Itoa(slot)
	run(to, "CLUSTER", "SETSLOT", s, "IMPORTING", fromID)
	run(from, "CLUSTER", "SETSLOT", s, "MIGRATING", toID)
	host, port, _ := net.SplitHostPort(to)
	for {
		keys := strings.Fields(run(from, "CLUSTER", "GETKEYSINSLOT", s, "100"))
		if len(keys) == 0 {
			break
		}
		run(from, append([]string{"MIGRATE", host, port, "", "0", "5000", "KEYS"}, keys...)...)
	}
	between()
	// The new owner first, as redis-cli does, so that no node sends a
	// client back and forth.
	run(to, "CLUSTER", "SETSLOT", s, "NODE", toID)
	run(from, "CLUSTER", "SETSLOT", s, "NODE", toID)
	for _, a := range addrs {
		if a != to && a != from {
			run(a, "CLUSTER", "SETSLOT", s, "NODE", toID)
		}
	}
}

// clusterNodeTimeout is cluster-node-timeout in StartClusterWithReplicas: a
// master that answers no ping for it is suspected, and once most masters
// suspect it, failed, and its replica is promoted about a second later
// (production: Redis's default 15 s, so that a GC pause or a slow network
// is not a failover).
const clusterNodeTimeout = time.Second

// ReplicatedCluster is a Redis Cluster in which every master has one
// replica, the smallest that survives the loss of a master's machine.
type ReplicatedCluster struct {
	// Addrs are every node's host:port, masters and replicas: the seeds a
	// client is given.
	Addrs []string
	nodes map[string]*Server
}

// StartClusterWithReplicas runs a Redis Cluster of masters masters (at least
// 3), each with one replica, on loopback, and stops it when the test ends.
// It returns once every node sees every other in its role and every replica
// has synced with its master. Timings are a test's: see clusterNodeTimeout.
// Tests that need no failover use StartCluster, which starts in half the
// time.
func StartClusterWithReplicas(t testing.TB, masters int) *ReplicatedCluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("redisserver: a cluster needs at least 3 masters, asked for %d", masters)
	}
	c := &ReplicatedCluster{nodes: map[string]*Server{}}
	for range 2 * masters {
		// Each node syncs its replica through a file in its own temp dir,
		// as in StartFailover: over the socket the master would wait 5 s
		// for more replicas first. An explicit cluster-port: the default,
		// port+10000, may be taken or beyond 65535 for a random free port.
		dir := t.TempDir()
		s := startWith(t, "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(process.FreePort(t)),
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
			"--dir", dir, "--repl-diskless-sync", "no")
		c.Addrs = append(c.Addrs, s.Addr)
		c.nodes[s.Addr] = s
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redisserver: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range c.Addrs {
		waitFor(t, "cluster node "+a+" sees every node in its role", func() (bool, string) {
			info, err := cli(a, "CLUSTER", "INFO")
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false, info
			}
			out, err := cli(a, "CLUSTER", "NODES")
			return err == nil && strings.Count(out, "slave") == masters && strings.Count(out, "master") == masters &&
				!strings.Contains(out, "fail") && !strings.Contains(out, "handshake"), out
		})
		waitFor(t, "cluster node "+a+" is a master or a synced replica", func() (bool, string) {
			out, err := cli(a, "INFO", "replication")
			return err == nil && (strings.Contains(out, "role:master") || strings.Contains(out, "master_link_status:up")), out
		})
	}
	return c
}

// ReplicaOf is the address of the replica of the master at master.
func (c *ReplicatedCluster) ReplicaOf(t testing.TB, master string) string {
	t.Helper()
	id, err := cli(master, "CLUSTER", "MYID")
	if err != nil {
		t.Fatalf("redisserver: CLUSTER MYID at %s: %v\n%s", master, err, id)
	}
	// CLUSTER REPLICAS answers CLUSTER NODES lines: <id> <ip:port@bus> ...
	out, err := cli(master, "CLUSTER", "REPLICAS", id)
	f := strings.Fields(out)
	if err != nil || len(f) < 2 {
		t.Fatalf("redisserver: CLUSTER REPLICAS of %s: %v\n%s", master, err, out)
	}
	addr, _, _ := strings.Cut(f[1], "@")
	return addr
}

// SlotOwner is the address of the master that serves hash slot, as a node
// that is still running sees it.
func (c *ReplicatedCluster) SlotOwner(t testing.TB, slot int) string {
	t.Helper()
	for _, a := range c.Addrs {
		if c.nodes[a].Running() {
			return SlotOwner(t, []string{a}, slot)
		}
	}
	t.Fatal("redisserver: no node of the cluster is running")
	return ""
}

// Failover makes the replica at replica its master's master with CLUSTER
// FAILOVER, as an operator does before maintenance of the master's machine:
// the master stops taking writes, the replica catches up and takes over its
// slots, and the old master becomes its replica. It returns once every node
// names replica as a master and the old one as a replica.
func (c *ReplicatedCluster) Failover(t testing.TB, replica string) {
	t.Helper()
	if out, err := cli(replica, "CLUSTER", "FAILOVER"); err != nil || out != "OK" {
		t.Fatalf("redisserver: CLUSTER FAILOVER at %s: %v\n%s", replica, err, out)
	}
	waitFor(t, replica+" is master", func() (bool, string) {
		return c.Promoted(replica), ""
	})
	for _, a := range c.Addrs {
		waitFor(t, a+" sees "+replica+" as master", func() (bool, string) {
			out, err := cli(a, "CLUSTER", "NODES")
			for _, line := range strings.Split(out, "\n") {
				if f := strings.Fields(line); len(f) > 2 && strings.HasPrefix(f[1], replica+"@") {
					return err == nil && strings.Contains(f[2], "master") && strings.Count(out, "slave") == len(c.Addrs)/2, out
				}
			}
			return false, out
		})
	}
}

// Kill stops the node at addr with SIGKILL, as a crash or the loss of its
// machine would.
func (c *ReplicatedCluster) Kill(addr string) { c.nodes[addr].Stop() }

// Promoted reports whether the node at addr, a replica at the start, is now
// a master.
func (c *ReplicatedCluster) Promoted(addr string) bool {
	out, err := cli(addr, "ROLE")
	return err == nil && strings.HasPrefix(out, "master")
}

// WaitReplicated returns once the replica of the master at master holds
// every write the master had accepted when it was called, failing the test
// after 10 s.
func (c *ReplicatedCluster) WaitReplicated(t testing.TB, master string) {
	t.Helper()
	replica := c.ReplicaOf(t, master)
	offset := func(addr, field string) int64 {
		out, _ := cli(addr, "INFO", "replication")
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		return -1
	}
	want := offset(master, "master_repl_offset")
	waitFor(t, replica+" has the writes of "+master, func() (bool, string) {
		got := offset(replica, "slave_repl_offset")
		return got >= want && want >= 0, fmt.Sprintf("replica at offset %d, master at %d", got, want)
	})
}
