// Command idle opens many keep-alive connections to a proxy, sends one
// request on each, and leaves them all open and idle, then reports how much
// the proxy's resident memory grew per connection. test/bench/run.sh uses it
// for the 10,000 idle connections comparison of portcullis and a bare
// reverse proxy.
//
// Output, one line: conns=N rss_before_mib=A rss_after_mib=B kib_per_conn=C
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
)

// headerFlags collects repeated -H 'Name: value' flags.
type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	addr := flag.String("addr", "", "the proxy's host:port")
	path := flag.String("path", "/", "path each connection requests once")
	n := flag.Int("n", 10000, "connections to hold open")
	parallel := flag.Int("parallel", 32, "connections opened at a time")
	settle := flag.Duration("settle", 2*time.Second, "wait with every connection idle before reading the proxy's memory")
	pid := flag.Int("pid", 0, "the proxy's process ID, for its memory")
	var headers headerFlags
	flag.Var(&headers, "H", "request header 'Name: value' (repeatable)")
	flag.Parse()
	if err := run(*addr, *path, *n, *parallel, *settle, *pid, headers); err != nil {
		fmt.Fprintln(os.Stderr, "idle:", err)
		os.Exit(1)
	}
}

func run(addr, path string, n, parallel int, settle time.Duration, pid int, headers []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", path, addr)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	request := b.String()

	// Warm up the proxy (its pools, its upstream connections) on a few
	// connections it then closes, so that the baseline is a proxy that has
	// served requests, not a fresh one.
	warm, err := open(addr, request, 200, parallel)
	closeAll(warm)
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	time.Sleep(settle)
	before, err := process.RSS(pid)
	if err != nil {
		return err
	}
	conns, err := open(addr, request, n, parallel)
	defer closeAll(conns)
	if err != nil {
		return err
	}
	time.Sleep(settle)
	after, err := process.RSS(pid)
	if err != nil {
		return err
	}
	// Every connection must still be open: the proxy may not have dropped
	// them to save memory.
	alive := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && isTimeout(err) {
			alive++
		}
	}
	if alive != n {
		return fmt.Errorf("%d of %d connections still open after %s idle", alive, n, settle)
	}
	const mib = 1 << 20
	fmt.Printf("conns=%d rss_before_mib=%.1f rss_after_mib=%.1f kib_per_conn=%.1f\n",
		n, float64(before)/mib, float64(after)/mib, float64(after-before)/1024/float64(n))
	return nil
}

// open makes n connections, each of which has sent request and read its
// whole answer.
func open(addr, request string, n, parallel int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conns[i], errs[i] = exchange(addr, request)
		}()
	}
	wg.Wait()
	var opened []net.Conn
	var first error
	for i, c := range conns {
		if c != nil {
			opened = append(opened, c)
		}
		if errs[i] != nil && first == nil {
			first = errs[i]
		}
	}
	return opened, first
}

func exchange(addr, request string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 1024), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
