// Command stream sends one large upload to, or reads one large download
// from, a proxy in front of test/bench/upstream, and reports the rate and
// how much the proxy's resident memory grew meanwhile (sampled from
// /proc/PID/status every few milliseconds). test/bench/run.sh uses it for
// the 1 GiB streaming comparison of portcullis and a bare reverse proxy.
//
// Output, one line: mib_s=R rss_before_mib=A rss_peak_mib=B rss_growth_mib=C
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/portcullis-proxy/portcullis/test/process"
)

// headerFlags collects repeated -H 'Name: value' flags.
type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	base := flag.String("url", "", "the proxy's base URL (http://host:port)")
	mode := flag.String("mode", "download", "upload or download")
	size := flag.Int64("bytes", 1<<30, "bytes to send or receive")
	pid := flag.Int("pid", 0, "the proxy's process ID, for its memory")
	var headers headerFlags
	flag.Var(&headers, "H", "request header 'Name: value' (repeatable)")
	flag.Parse()
	if err := run(*base, *mode, *size, *pid, headers); err != nil {
		fmt.Fprintln(os.Stderr, "stream:", err)
		os.Exit(1)
	}
}

func run(base, mode string, size int64, pid int, headers []string) error {
	var req *http.Request
	var err error
	switch mode {
	case "upload":
		req, err = http.NewRequest(http.MethodPost, base+"/upload", &pattern{left: size})
		if err == nil {
			req.ContentLength = size
		}
	case "download":
		req, err = http.NewRequest(http.MethodGet, base+"/download?bytes="+strconv.FormatInt(size, 10), nil)
	default:
		return fmt.Errorf("-mode %q: want upload or download", mode)
	}
	if err != nil {
		return err
	}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("-H %q: want 'Name: value'", h)
		}
		req.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}

	before, err := process.RSS(pid)
	if err != nil {
		return err
	}
	var peak atomic.Int64
	peak.Store(before)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if v, err := process.RSS(pid); err == nil && v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	}()

	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", mode, err)
	}
	n, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 64<<10))
	resp.Body.Close()
	elapsed := time.Since(start)
	close(stop)
	<-sampled
	if err != nil {
		return fmt.Errorf("%s: read response: %w", mode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", mode, resp.StatusCode)
	}
	if mode == "download" && n != size {
		return fmt.Errorf("download: got %d bytes, want %d", n, size)
	}
	const mib = 1 << 20
	fmt.Printf("mib_s=%.1f rss_before_mib=%.1f rss_peak_mib=%.1f rss_growth_mib=%.1f\n",
		float64(size)/mib/elapsed.Seconds(), float64(before)/mib, float64(peak.Load())/mib, float64(peak.Load()-before)/mib)
	return nil
}

// pattern is an upload body of left bytes that costs no memory.
type pattern struct{ left int64 }

var chunk = bytes.Repeat([]byte("z"), 64<<10)

func (p *pattern) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	n := copy(b, chunk[:min(int64(len(chunk)), p.left)])
	p.left -= int64(n)
	return n, nil
}
