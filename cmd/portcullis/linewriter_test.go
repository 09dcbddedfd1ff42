package main

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a writer that records every Write call.
type lockedBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	gate   chan struct{} // when set, each Write waits for a value
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	if b.gate != nil {
		<-b.gate
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes++
	return b.buf.Write(p)
}

func TestLineWriterKeepsEveryLineWholeAndInOrder(t *testing.T) {
	var out lockedBuffer
	lw := NewLineWriter(&out)
	const writers, lines = 8, 2000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				fmt.Fprintf(lw, "writer=%d line=%d %s\n", w, i, strings.Repeat("x", i%100))
			}
		}()
	}
	wg.Wait()
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	got := strings.Split(strings.TrimSuffix(out.buf.String(), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines written, want %d", len(got), writers*lines)
	}
	for _, l := range got {
		var w, i int
		var pad string
		if _, err := fmt.Sscanf(l, "writer=%d line=%d %s", &w, &i, &pad); err != nil && i%100 != 0 {
			t.Fatalf("line %q is not whole: %v", l, err)
		}
		if i != next[w] {
			t.Fatalf("writer %d: line %d after line %d", w, i, next[w]-1)
		}
		next[w]++
	}
	if out.writes >= writers*lines {
		t.Errorf("%d writes for %d lines: lines were not batched", out.writes, writers*lines)
	}
}

func TestLineWriterAfterCloseWritesDirectly(t *testing.T) {
	var out lockedBuffer
	lw := NewLineWriter(&out)
	fmt.Fprintln(lw, "before")
	lw.Close()
	fmt.Fprintln(lw, "after")
	if got := out.buf.String(); got != "before\nafter\n" {
		t.Fatalf("got %q, want both lines in order", got)
	}
}

func TestLineWriterMakesWritersWaitWhenTheOutputIsStuck(t *testing.T) {
	out := lockedBuffer{gate: make(chan struct{})}
	lw := NewLineWriter(&out)
	line := strings.Repeat("y", 1023) + "\n"
	// The first batch blocks in the gated Write; the next fills the queue.
	wrote := make(chan int, 1)
	go func() {
		n := 0
		for range 3 * maxPendingLog / len(line) {
			lw.Write([]byte(line))
			n++
		}
		wrote <- n
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case n := <-wrote:
		t.Fatalf("all %d lines queued while the output was stuck; want the writer to wait", n)
	default:
	}
	close(out.gate) // the output moves again
	<-wrote
	lw.Close()
	if got, want := out.buf.Len(), 3*maxPendingLog/len(line)*len(line); got != want {
		t.Fatalf("%d bytes written, want %d", got, want)
	}
}

// waitFor waits until out holds at least n bytes; false after a minute.
func waitFor(out *lockedBuffer, n int) bool {
	for range 60_000 {
		out.mu.Lock()
		got := out.buf.Len()
		out.mu.Unlock()
		if got >= n {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

func TestLineWriterWritesALoneLineAfterTheBatchDelay(t *testing.T) {
	var out lockedBuffer
	lw := newLineWriter(&out, time.Millisecond)
	defer lw.Close()
	fmt.Fprintln(lw, "alone")
	if !waitFor(&out, len("alone\n")) {
		t.Fatalf("a lone line was never written (before Close)")
	}
}

func TestLineWriterWritesAFullBatchWithoutWaitingForTheDelay(t *testing.T) {
	var out lockedBuffer
	lw := newLineWriter(&out, time.Hour)
	defer lw.Close()
	line := strings.Repeat("z", 1023) + "\n"
	for range batchBytes / len(line) {
		lw.Write([]byte(line))
	}
	if !waitFor(&out, batchBytes/len(line)*len(line)) {
		t.Fatalf("a full batch of %d bytes was not written; want it written at once, not after the delay", batchBytes)
	}
}

// steppedWriter holds every Write until the test releases it, and copies
// the bytes only then, as a slow write(2) would read them late.
type steppedWriter struct {
	entered, release chan struct{}
	mu               sync.Mutex
	buf              bytes.Buffer
}

func (s *steppedWriter) Write(p []byte) (int, error) {
	s.entered <- struct{}{}
	<-s.release
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// TestLineWriterNeverQueuesIntoTheBatchBeingWritten: after a burst larger
// than the buffer kept for reuse, the queue must not be handed the buffer
// whose batch is being written; lines queued meanwhile overwrote that batch,
// so some lines were lost and others written twice.
func TestLineWriterNeverQueuesIntoTheBatchBeingWritten(t *testing.T) {
	out := &steppedWriter{entered: make(chan struct{}), release: make(chan struct{})}
	lw := newLineWriter(out, time.Hour) // a batch goes out when full, or at Close
	n := 0
	queue := func(size int) { // numbered lines of 64 bytes, size bytes in all
		for end := n + size/64; n < end; n++ {
			fmt.Fprintf(lw, "line %08d %s\n", n, strings.Repeat("x", 49))
		}
	}
	queue(batchBytes + 64) // a full batch: the writer takes it and is held in Write
	<-out.entered
	queue(3 * batchBytes) // a burst, queued meanwhile
	out.release <- struct{}{}
	<-out.entered          // the burst is being written
	queue(batchBytes + 64) // into the buffer the first batch was written from
	out.release <- struct{}{}
	<-out.entered          // that batch is being written...
	queue(batchBytes + 64) // ...while more lines are queued
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-out.entered:
				out.release <- struct{}{}
			case <-stop:
				return
			}
		}
	}()
	out.release <- struct{}{}
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	got := strings.Split(strings.TrimSuffix(out.buf.String(), "\n"), "\n")
	if len(got) != n {
		t.Errorf("%d lines written, want %d", len(got), n)
	}
	for i, l := range got {
		if want := fmt.Sprintf("line %08d ", i); !strings.HasPrefix(l, want) {
			t.Fatalf("line %d is %.14q, want it to start with %q", i, l, want)
		}
	}
}
