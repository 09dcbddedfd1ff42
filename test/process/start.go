package process

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Start runs cmd and waits, for up to timeout, until ready reports that it
// serves. It returns a channel closed once the process has exited (its
// Wait done): the caller stops it, or learns that it died. A process that
// exits first, or is not ready in time (then killed), is an error that
// says which; its output is wherever cmd writes it.
func Start(cmd *exec.Cmd, ready func() bool, timeout time.Duration) (<-chan struct{}, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	for deadline := time.Now().Add(timeout); !ready(); {
		select {
		case <-done:
			return nil, fmt.Errorf("exited before it was ready (%v)", cmd.ProcessState)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return nil, fmt.Errorf("not ready after %v", timeout)
		}
	}
	return done, nil
}

// Accepts is a Start's ready for a server that serves once it accepts
// connections at addr.
func Accepts(addr string) func() bool {
	return func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
}

// LookPath finds a Debian package's program, in /usr/sbin too when PATH
// lacks it (slapd, ns-slapd and nginx are there, and a non-root PATH often
// has no sbin).
func LookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not in PATH, /usr/sbin or /usr/bin", name)
}
