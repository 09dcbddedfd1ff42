package main

import (
	"io"
	"sync"
	"time"
)

// maxPendingLog bounds the log lines waiting to be written; past it,
// writers wait, as they would on a slow stderr.
const maxPendingLog = 1 << 20

// Batches: the writer takes the lines waiting batchDelay after the first of
// them arrived, or as soon as batchBytes are waiting, whichever comes first.
// Under load that is one write(2), and one wakeup of the writer, per
// batchBytes of access lines instead of per few lines; a line is delayed by
// at most batchDelay.
const (
	batchDelay = 50 * time.Millisecond
	batchBytes = 32 << 10
)

// LineWriter hands the log lines of `portcullis serve` to stderr from one
// goroutine, in batches, so that the access line of each request does not
// cost a system call. Close writes what is left.
type LineWriter struct {
	w     io.Writer
	delay time.Duration // batchDelay, but in tests

	mu      sync.Mutex
	drained *sync.Cond // signalled whenever the pending lines were taken
	pending []byte
	closed  bool
	wake    chan struct{} // capacity 1: "lines are waiting"
	full    chan struct{} // capacity 1: "batchBytes are waiting, or Close"
	done    chan struct{} // closed when the goroutine has written everything
}

// NewLineWriter starts writing the lines given to it to w; Close stops it.
func NewLineWriter(w io.Writer) *LineWriter { return newLineWriter(w, batchDelay) }

func newLineWriter(w io.Writer, delay time.Duration) *LineWriter {
	l := &LineWriter{w: w, delay: delay, wake: make(chan struct{}, 1), full: make(chan struct{}, 1), done: make(chan struct{})}
	l.drained = sync.NewCond(&l.mu)
	go l.run()
	return l
}

// Write queues p, which slog hands over as one whole line, and returns at
// once unless maxPendingLog bytes are already waiting.
func (l *LineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	for len(l.pending) >= maxPendingLog && !l.closed {
		l.drained.Wait()
	}
	if l.closed {
		l.mu.Unlock()
		<-l.done // after the lines queued before Close
		return l.w.Write(p)
	}
	first := len(l.pending) == 0
	l.pending = append(l.pending, p...)
	// Under the lock, so that Close cannot have closed wake meanwhile.
	if first {
		notify(l.wake)
	}
	if len(l.pending) >= batchBytes {
		notify(l.full)
	}
	l.mu.Unlock()
	return len(p), nil
}

// notify sends on a channel of capacity 1 unless a signal is already waiting.
func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (l *LineWriter) run() {
	defer close(l.done)
	var spare []byte
	timer := time.NewTimer(l.delay)
	timer.Stop()
	for range l.wake {
		timer.Reset(l.delay)
		select {
		case <-timer.C:
		case <-l.full:
			timer.Stop()
		}
		l.mu.Lock()
		out := l.pending
		l.pending = spare[:0]
		l.drained.Broadcast()
		l.mu.Unlock()
		spare = nil // it is the queue's now, whatever becomes of out
		if len(out) > 0 {
			// A log line that cannot be written has nowhere to be reported.
			_, _ = l.w.Write(out)
		}
		if cap(out) <= 2*batchBytes { // a burst's larger buffer is left to the GC, not kept live
			spare = out
		}
	}
}

// Close writes every line still waiting; lines written after it go straight
// to the underlying writer.
func (l *LineWriter) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.drained.Broadcast()
	close(l.wake)
	close(l.full) // a batch being filled is written now
	l.mu.Unlock()
	<-l.done
	// Lines queued between the goroutine's last turn and closed being set.
	l.mu.Lock()
	rest := l.pending
	l.pending = nil
	l.mu.Unlock()
	if len(rest) > 0 {
		_, err := l.w.Write(rest)
		return err
	}
	return nil
}
