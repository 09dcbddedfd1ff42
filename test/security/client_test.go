package security

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// rq is one hand-written request. Host, X-Probe and Connection: close are
// added unless the case sets them itself (noHost leaves Host out entirely).
type rq struct {
	method  string // GET when empty
	target  string
	proto   string   // HTTP/1.1 when empty
	headers []string // "Name: value" lines, written exactly as given
	body    string
	from    string // local IP to connect from; 127.0.0.2 is a trusted proxy
	noHost  bool
	raw     string // when set, sent instead of everything above (plus nothing)
}

// reply is the proxy's answer and what reached the upstream because of it.
type reply struct {
	Status   int
	Header   http.Header
	Body     string
	Err      error  // no complete answer (closed, truncated, timed out)
	Upstream []seen // requests that reached the upstream carrying this probe
	Probe    string
}

var probes atomic.Int64

// newProbe is a unique X-Probe value tying an upstream request to its case.
func newProbe() string { return fmt.Sprintf("p%d", probes.Add(1)) }

func (r rq) bytes(probe string) string {
	if r.raw != "" {
		return r.raw
	}
	method, proto := r.method, r.proto
	if method == "" {
		method = "GET"
	}
	if proto == "" {
		proto = "HTTP/1.1"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s\r\n", method, r.target, proto)
	has := func(name string) bool {
		for _, h := range r.headers {
			if n, _, _ := strings.Cut(h, ":"); strings.EqualFold(strings.TrimSpace(n), name) {
				return true
			}
		}
		return false
	}
	if !r.noHost && !has("Host") {
		fmt.Fprintf(&b, "Host: %s\r\n", suite.proxy)
	}
	fmt.Fprintf(&b, "X-Probe: %s\r\n", probe)
	if !has("Connection") {
		b.WriteString("Connection: close\r\n")
	}
	if r.body != "" && !has("Content-Length") && !has("Transfer-Encoding") {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(r.body))
	}
	for _, h := range r.headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(r.body)
	return b.String()
}

// dial opens a connection to the proxy, from the given local IP if any.
func dial(t *testing.T, from string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", suite.proxy)
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	return c
}

// do sends r on a fresh connection and reads one answer.
func do(t *testing.T, r rq) reply {
	t.Helper()
	probe := newProbe()
	c := dial(t, r.from)
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, r.bytes(probe)); err != nil {
		return reply{Err: err, Probe: probe}
	}
	out := readReply(bufio.NewReader(c), r.method)
	out.Probe = probe
	out.Upstream = suite.upstream.withProbe(probe)
	return out
}

// readReply reads one response; Err is set when it is not complete.
func readReply(br *bufio.Reader, method string) reply {
	req := &http.Request{Method: method}
	if method == "" {
		req.Method = "GET"
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return reply{Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: string(body), Err: err}
}

// refusedCleanly checks an answer that must not have reached the upstream.
func refusedCleanly(t *testing.T, r reply, what string) {
	t.Helper()
	if len(r.Upstream) > 0 {
		t.Errorf("%s: reached the upstream as %q", what, r.Upstream[0].Raw)
	}
	if r.Err == nil && r.Status < 300 {
		t.Errorf("%s: status %d, want a refusal", what, r.Status)
	}
	if r.Header.Get("X-Upstream") != "" {
		t.Errorf("%s: the answer came from the upstream", what)
	}
}

// fmtReply is a reply for error messages.
func fmtReply(r reply) string {
	if r.Err != nil {
		return fmt.Sprintf("error %v", r.Err)
	}
	return fmt.Sprintf("%d %q", r.Status, tail(r.Body, 300))
}
