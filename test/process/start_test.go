package process

import (
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestStartWaitsUntilReady(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	calls := 0
	done, err := Start(cmd, func() bool { calls++; return calls == 3 }, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if calls != 3 {
		t.Errorf("ready asked %d times, want until it said yes (3)", calls)
	}
	select {
	case <-done:
		t.Fatal("done closed while the process runs")
	default:
	}
	cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("done not closed after the process was killed")
	}
}

func TestStartFailsWhenTheProcessExitsFirst(t *testing.T) {
	_, err := Start(exec.Command("false"), func() bool { return false }, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("got %v, want that it exited first", err)
	}
}

func TestStartKillsAProcessNeverReady(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	_, err := Start(cmd, func() bool { return false }, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "not ready after 100ms") {
		t.Fatalf("got %v, want not ready", err)
	}
	if cmd.ProcessState == nil {
		t.Fatal("the process was left running")
	}
}

func TestAccepts(t *testing.T) {
	if !Accepts(Serve(t, func(c net.Conn) { c.Close() }))() {
		t.Error("Accepts said no to a listening server")
	}
	if Accepts("127.0.0.1:" + strconv.Itoa(FreePort(t)))() {
		t.Error("Accepts said yes where nothing listens")
	}
}
