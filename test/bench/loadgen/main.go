// Command loadgen drives one URL with a fixed number of keep-alive
// connections for a fixed time and reports requests per second and latency
// percentiles. test/bench/run.sh uses it to compare portcullis with a bare
// reverse proxy under the same load.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// headerFlags collects repeated -H 'Name: value' flags.
type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	target := flag.String("url", "", "URL to GET")
	conns := flag.Int("c", 64, "concurrent keep-alive connections")
	duration := flag.Duration("d", 5*time.Second, "how long to measure")
	warmup := flag.Duration("warmup", 500*time.Millisecond, "load before measuring (connections open, caches warm)")
	status := flag.Int("status", http.StatusOK, "the status every response must have")
	var headers headerFlags
	flag.Var(&headers, "H", "request header 'Name: value' (repeatable)")
	flag.Parse()
	if *target == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -url is required")
		os.Exit(2)
	}
	hdr := http.Header{}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			fmt.Fprintf(os.Stderr, "loadgen: -H %q: want 'Name: value'\n", h)
			os.Exit(2)
		}
		hdr.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns:        *conns,
		MaxIdleConnsPerHost: *conns,
		MaxConnsPerHost:     *conns,
		DisableCompression:  true,
		IdleConnTimeout:     time.Minute,
	}}

	// Each worker keeps its own latencies; nothing is shared on the hot path.
	type result struct {
		latencies []time.Duration
		errors    int
		firstErr  error
		sent      int // with the warmup's, for the CPU cost per request
	}
	results := make([]result, *conns)
	start := time.Now()
	measureFrom, end := start.Add(*warmup), start.Add(*warmup+*duration)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func(res *result) {
			defer wg.Done()
			for {
				t0 := time.Now()
				if t0.After(end) {
					return
				}
				err := get(client, *target, hdr, *status)
				res.sent++
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					res.errors++
					if res.firstErr == nil {
						res.firstErr = err
					}
					continue
				}
				res.latencies = append(res.latencies, time.Since(t0))
			}
		}(&results[i])
	}
	wg.Wait()

	var all []time.Duration
	errors, sent := 0, 0
	for _, r := range results {
		all = append(all, r.latencies...)
		errors += r.errors
		sent += r.sent
		if r.firstErr != nil && errors == r.errors {
			fmt.Fprintln(os.Stderr, "loadgen: first error:", r.firstErr)
		}
	}
	slices.Sort(all)
	fmt.Printf("rps=%.0f p50_ms=%.3f p99_ms=%.3f requests=%d errors=%d sent=%d\n",
		float64(len(all))/duration.Seconds(), ms(percentile(all, 50)), ms(percentile(all, 99)), len(all), errors, sent)
	if errors > 0 {
		os.Exit(1)
	}
}

func get(client *http.Client, target string, hdr http.Header, status int) error {
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	req.Header = hdr.Clone()
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	// Read the body to the end so the connection is reused.
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != status {
		return fmt.Errorf("status %d, want %d", resp.StatusCode, status)
	}
	return nil
}

func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[(len(sorted)-1)*p/100]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
