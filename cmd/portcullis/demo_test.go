package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemoCommandRunsUntilCtrlC runs `portcullis demo` as a user would, reads
// the URL it prints, makes the curl call it suggests, and stops it with
// Ctrl-C (SIGINT to this process, which the command catches).
func TestDemoCommandRunsUntilCtrlC(t *testing.T) {
	stdoutR, stdoutW := io.Pipe()
	var stderr strings.Builder
	code := make(chan int, 1)
	go func() {
		code <- run([]string{"demo", "--listen", "127.0.0.1:0", "--log-level", "warn"}, stdoutW, &stderr)
		stdoutW.Close()
	}()

	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdoutR)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var printed []string
	openRe := regexp.MustCompile(`^Open (http://127\.0\.0\.1:\d+)/ `)
	url := ""
	deadline := time.After(30 * time.Second)
	for !strings.Contains(strings.Join(printed, "\n"), "Press Ctrl-C to stop.") {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the demo exited before it was ready (code %d); stderr:\n%s\nstdout:\n%s", <-code, stderr.String(), strings.Join(printed, "\n"))
			}
			printed = append(printed, line)
			if m := openRe.FindStringSubmatch(line); m != nil {
				url = m[1]
			}
		case <-deadline:
			t.Fatalf("the demo printed no 'Press Ctrl-C' line within 30s:\n%s", strings.Join(printed, "\n"))
		}
	}
	if url == "" {
		t.Fatalf("the demo printed no 'Open URL' line:\n%s", strings.Join(printed, "\n"))
	}

	// The curl line it prints: a token call passes through to the upstream.
	req, _ := http.NewRequest(http.MethodGet, url+"/api/server/about", nil)
	req.Header.Set("Authorization", "Token demo")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Echo") != "1" {
		t.Errorf("curl -H 'Authorization: Token demo' %s/api/server/about: status %d, want 200 from the echo upstream", url, resp.StatusCode)
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit code after Ctrl-C: %d, want 0; stderr:\n%s", c, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the demo did not stop within 10s of Ctrl-C")
	}
	for line := range lines {
		printed = append(printed, line)
	}
	if last := printed[len(printed)-1]; last != "portcullis demo stopped." {
		t.Errorf("last line %q, want the demo to say it stopped", last)
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "http://"), time.Second); err == nil {
		c.Close()
		t.Errorf("the proxy still accepts connections at %s after Ctrl-C", url)
	}
	if stderr.Len() > 0 {
		t.Errorf("the demo logged warnings or errors:\n%s", stderr.String())
	}
}

func TestDemoCommandRejectsArguments(t *testing.T) {
	var stdout, stderr strings.Builder
	if c := run([]string{"demo", "extra"}, &stdout, &stderr); c != 2 {
		t.Errorf("portcullis demo extra: exit %d, want 2 (usage)", c)
	}
	if !strings.Contains(stderr.String(), `unexpected argument "extra"`) {
		t.Errorf("stderr %q does not name the unexpected argument", stderr.String())
	}
}
