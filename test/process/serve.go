package process

import (
	"net"
	"sync"
	"testing"
)

// Serve listens on a loopback port until the test ends and hands each
// connection to handle, in a goroutine of its own; it returns the address.
// A connection handle leaves open stays open until the test ends (a server
// that takes connections and never answers: handle does nothing), when
// Serve closes it and the listener.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("serve: %v", err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  sync.WaitGroup
	)
	done.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			done.Go(func() { handle(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		done.Wait()
	})
	return ln.Addr().String()
}
