package security

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// field is one header line exactly as the upstream received it.
type field struct{ Name, Value string }

// seen is one request as it reached the upstream: its request line and every
// header line in order, unparsed, plus the trailer and body size.
type seen struct {
	Method, Target, Proto string
	Fields                []field
	Trailer               []field
	BodyBytes             int64
	Raw                   string // the head, byte for byte
}

// Values returns the values of every header line whose name, lower-cased and
// with _ and . read as -, is name: all the spellings an upstream might merge.
func (s seen) Values(name string) []string {
	want := normName(name)
	var out []string
	for _, f := range s.Fields {
		if normName(f.Name) == want {
			out = append(out, f.Value)
		}
	}
	return out
}

// Path is the request-target's path, percent-decoded as an upstream router
// would read it; ok is false when it cannot be decoded.
func (s seen) Path() (string, bool) {
	raw := s.Target
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	p, err := url.PathUnescape(raw)
	return p, err == nil
}

func normName(n string) string {
	return strings.ToLower(strings.NewReplacer("_", "-", ".", "-").Replace(n))
}

// upstream is a raw HTTP/1.1 server that records every request head it gets.
// It answers 200, except:
//   - .../abort: promises 1000 bytes, sends 10 and closes (an upstream that dies mid-response);
//   - any request with an Upgrade header: 101, as an h2c or WebSocket capable
//     server would, so a forwarded upgrade shows up as a 101 at the client.
type upstream struct {
	ln   net.Listener
	addr string

	mu   sync.Mutex
	reqs []seen
}

func startUpstream() *upstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	u := &upstream{ln: ln, addr: ln.Addr().String()}
	go u.serve()
	return u
}

func (u *upstream) close() { u.ln.Close() }

func (u *upstream) serve() {
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		go u.conn(c)
	}
}

func (u *upstream) conn(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(time.Minute))
		s, err := readSeen(br)
		if err != nil {
			return
		}
		u.mu.Lock()
		u.reqs = append(u.reqs, s)
		u.mu.Unlock()
		switch {
		case strings.HasSuffix(s.Target, "/abort"):
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n0123456789")
			return
		case len(s.Values("Upgrade")) > 0:
			fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", s.Values("Upgrade")[0])
			io.WriteString(c, "UPSTREAM-TUNNEL-OPEN")
			return
		}
		body := "upstream ok " + s.Target
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Upstream: 1\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
}

// readSeen reads one request from br: the head line by line as sent, then
// the body as its framing says (so that a second request smuggled into a
// body would show up as a request of its own).
func readSeen(br *bufio.Reader) (seen, error) {
	var s seen
	var raw strings.Builder
	line, err := br.ReadString('\n')
	if err != nil {
		return s, err
	}
	raw.WriteString(line)
	parts := strings.SplitN(strings.TrimRight(line, "\r\n"), " ", 3)
	if len(parts) != 3 {
		return s, fmt.Errorf("bad request line %q", line)
	}
	s.Method, s.Target, s.Proto = parts[0], parts[1], parts[2]
	s.Fields, err = readFields(br, &raw)
	if err != nil {
		return s, err
	}
	s.Raw = raw.String()

	var te, cl []string
	for _, f := range s.Fields {
		switch strings.ToLower(f.Name) {
		case "transfer-encoding":
			te = append(te, f.Value)
		case "content-length":
			cl = append(cl, f.Value)
		}
	}
	switch {
	case len(te) > 0:
		n, err := io.Copy(io.Discard, httputil.NewChunkedReader(br))
		if err != nil {
			return s, err
		}
		s.BodyBytes = n
		if s.Trailer, err = readFields(br, &raw); err != nil {
			return s, err
		}
	case len(cl) > 0:
		n, err := strconv.ParseInt(cl[0], 10, 64)
		if err != nil {
			return s, err
		}
		s.BodyBytes, err = io.CopyN(io.Discard, br, n)
		if err != nil {
			return s, err
		}
	}
	return s, nil
}

func readFields(br *bufio.Reader, raw *strings.Builder) ([]field, error) {
	var fields []field
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		raw.WriteString(line)
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return fields, nil
		}
		name, value, _ := strings.Cut(line, ":")
		fields = append(fields, field{Name: name, Value: strings.TrimSpace(value)})
	}
}

// withProbe returns the requests that carried X-Probe: id.
func (u *upstream) withProbe(id string) []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []seen
	for _, s := range u.reqs {
		for _, v := range s.Values("X-Probe") {
			if v == id {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

// count is how many requests the upstream has seen in all.
func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

// since returns the requests seen after the first n.
func (u *upstream) since(n int) []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.reqs[n:]...)
}
