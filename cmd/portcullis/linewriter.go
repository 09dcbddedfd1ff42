package main

import (
	"io"
	"sync"
)

// maxPendingLog bounds the log lines waiting to be written; past it,
// writers wait, as they would on a slow stderr.
const maxPendingLog = 1 << 20

// LineWriter hands the log lines of `portcullis serve` to stderr from one
// goroutine, so that under load many lines go out in one write(2) instead of
// one system call per request (the access line). Nothing waits on a timer: a
// line is written as soon as the writer goroutine is free, so a line is
// delayed only by the write before it. Close writes what is left.
type LineWriter struct {
	w io.Writer

	mu      sync.Mutex
	drained *sync.Cond // signalled whenever the pending lines were taken
	pending []byte
	closed  bool
	wake    chan struct{} // capacity 1: "there is something to write"
	done    chan struct{} // closed when the goroutine has written everything
}

// NewLineWriter starts writing the lines given to it to w; Close stops it.
func NewLineWriter(w io.Writer) *LineWriter {
	l := &LineWriter{w: w, wake: make(chan struct{}, 1), done: make(chan struct{})}
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
	l.pending = append(l.pending, p...)
	// Under the lock, so that Close cannot have closed wake meanwhile.
	select {
	case l.wake <- struct{}{}:
	default: // already woken; it will take this line with the others
	}
	l.mu.Unlock()
	return len(p), nil
}

func (l *LineWriter) run() {
	defer close(l.done)
	var spare []byte
	for range l.wake {
		l.mu.Lock()
		out := l.pending
		l.pending = spare[:0]
		l.drained.Broadcast()
		l.mu.Unlock()
		if len(out) > 0 {
			// A log line that cannot be written has nowhere to be reported.
			_, _ = l.w.Write(out)
		}
		if cap(out) <= 4*maxPendingLog {
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
