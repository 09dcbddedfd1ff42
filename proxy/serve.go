package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Serve runs the proxy and admin listeners until ctx ends, then shuts them
// down, letting requests in flight finish for up to grace. It never reloads
// the configuration; Run does.
func Serve(ctx context.Context, cfg *Config, log *slog.Logger, grace time.Duration) error {
	return Run(ctx, cfg, ServeOptions{Log: log, Grace: grace})
}

// newPublicServer is the server of the public listener, serving handler:
// how it reads requests is how explain reads the one it describes
// (readRequest).
func newPublicServer(handler http.Handler, errLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
		// OPTIONS * comes to the handler, which refuses it as no path,
		// rather than net/http's 200: nothing is answered but by the
		// pipeline.
		DisableGeneralOptionsHandler: true,
	}
}

func listen(cfg *Config) (proxyLn, adminLn net.Listener, err error) {
	proxyLn, err = net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("server.listen: %w", err)
	}
	adminLn, err = net.Listen("tcp", cfg.Server.AdminListen)
	if err != nil {
		proxyLn.Close()
		return nil, nil, fmt.Errorf("server.admin_listen: %w", err)
	}
	return proxyLn, adminLn, nil
}

// serveOn serves h on listeners already open (tests and the demo pick free ports).
func (h *Handler) serveOn(ctx context.Context, proxyLn, adminLn net.Listener, grace time.Duration) error {
	return newLive(ctx, h, h.log).serveOn(ctx, proxyLn, adminLn, grace)
}

// serveOn runs the public and admin servers until ctx ends, then shuts down:
// /readyz turns 503, the public listener stops accepting, requests in flight
// (long uploads too) finish, refreshes whose outcome only this process can
// write to Redis finish, and connections taken over by a protocol switch
// (WebSockets), which http.Server no longer tracks, are given until the end
// of the grace period and then closed. Every refresh still running is then
// abandoned.
func (l *live) serveOn(ctx context.Context, proxyLn, adminLn net.Listener, grace time.Duration) error {
	h := l.cur.Load()
	errLog := slogErrorLog(l.log)
	conns := &connSet{m: map[*trackedConn]struct{}{}}
	public := newPublicServer(l, errLog)
	// Handlers find the set of hijacked connections in every request's
	// context (statusRecorder.Hijack).
	public.BaseContext = func(net.Listener) context.Context {
		return context.WithValue(context.Background(), connSetKey{}, conns)
	}
	admin := &http.Server{
		Handler:           l.admin(),
		ReadHeaderTimeout: 5 * time.Second,
		// It shares the process's descriptors with the public listener.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       errLog,
	}
	if h.cfg.Server.TLS.CertFile != "" {
		// Under the reload lock, from the configuration live now: a reload
		// that finished since h was read (one at start) may have moved the
		// files, and found no certificate to make follow them.
		l.mu.Lock()
		certs, err := loadCertificate(l.cur.Load().cfg.Server.TLS, l.log)
		l.certs = certs
		l.mu.Unlock()
		if err != nil {
			proxyLn.Close()
			adminLn.Close()
			// Nothing was served: no refresh to abandon. A reload the
			// watcher of Run began is waited for, and every later one
			// refused, as at any other end.
			l.draining.Store(true)
			l.closeLast(nil)
			return err
		}
		h.metrics.certificateExpiry(certs.notAfter)
		// Until serveOn returns, which a failed listener makes sooner
		// than ctx ends.
		wctx, stop := context.WithCancel(ctx)
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			certs.watch(wctx, l.certPoll)
		}()
		defer func() {
			stop()
			<-watched
		}()
		// ServeTLS without files adds to this what it always did (HTTP/2
		// and HTTP/1.1 by ALPN); only where the certificate comes from
		// differs.
		public.TLSConfig = &tls.Config{GetCertificate: certs.GetCertificate}
	}
	errc := make(chan error, 2)
	go func() {
		if public.TLSConfig != nil {
			errc <- public.ServeTLS(proxyLn, "", "")
			return
		}
		errc <- public.Serve(proxyLn)
	}()
	go func() { errc <- admin.Serve(adminLn) }()
	l.log.Info("portcullis serving", "listen", proxyLn.Addr().String(), "admin", adminLn.Addr().String(),
		"public_url", h.cfg.Server.PublicURL, "upstream", h.cfg.Upstream.URL, "version", Version())
	for _, r := range Registrations(h.cfg) {
		// The URLs each IdP must have registered, exactly: one it lacks
		// stops the login at the IdP, where nothing reaches this log.
		attrs := []any{"idp", r.IdP, "protocol", r.Protocol}
		for _, u := range r.URLs {
			attrs = append(attrs, u.Key, u.URL)
		}
		l.log.Info("identity provider", attrs...)
	}

	select {
	case err := <-errc:
		// Fatal: nothing waits, but what the graceful path closes is
		// closed, and every refresh still running is abandoned.
		l.draining.Store(true)
		public.Close()
		admin.Close()
		conns.closeAll()
		done, cancel := context.WithCancel(context.Background())
		cancel()
		l.closeLast(done)
		return err
	case <-ctx.Done():
	}
	l.draining.Store(true)
	l.log.Info("shutting down", "grace", grace.String())
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := public.Shutdown(sctx); errors.Is(err, context.DeadlineExceeded) {
		l.log.Warn("grace period over; closing remaining connections")
		public.Close()
	}
	// Before Redis closes: a refresh the IdP answers late has spent the
	// session's refresh token, and the renewed session is to reach Redis,
	// which no other replica can do (refreshCalls.stop). Reloads handed
	// the refreshes on, so the Handler live now has them all.
	if n := l.cur.Load().refresher.stop(sctx); n > 0 {
		l.log.Warn("grace period over; abandoning session refreshes not finished, their refresh locks left to lapse: "+
			"an IdP that runs them all the same and rotates refresh tokens refuses those sessions' next refresh",
			"refreshes", n)
	}
	if n := conns.wait(sctx); n > 0 {
		l.log.Warn("grace period over; closing upgraded connections (WebSockets)", "connections", n)
	}
	conns.closeAll()
	admin.Close()
	l.closeLast(nil)
	l.log.Info("portcullis stopped")
	return nil
}

// closeLast closes what the last Handler holds: its providers' background
// work, its idle upstream connections and its Redis connection, after
// abandoning the refreshes still running when refreshes is not nil (a
// context already over: nothing is waited for). draining is set: a reload
// still running is waited for, so that the Handler it swaps in is the one
// closed, and every later one refuses (reload). It waits at most for what
// is left of that reload once the context of Run ended: build, and one
// readiness round of awaitReady (the two Redis pings, readyTimeout each).
func (l *live) closeLast(refreshes context.Context) {
	l.mu.Lock()
	h := l.cur.Load()
	l.mu.Unlock()
	if refreshes != nil {
		h.refresher.stop(refreshes)
	}
	h.stopProviders(nil)
	h.releaseTransport(nil)
	// The requests are over; a process that embeds the proxy (the tests)
	// would otherwise keep the connections to Redis after every Run.
	if h.redis != nil {
		h.redis.Close()
	}
}

// connSet is every connection of the public listener that a handler took
// over from http.Server (WebSockets, through statusRecorder.Hijack) and that
// is still open: http.Server.Shutdown does not wait for them, nor close them.
type connSet struct {
	mu sync.Mutex
	m  map[*trackedConn]struct{}
}

func (s *connSet) add(c *trackedConn) {
	s.mu.Lock()
	s.m[c] = struct{}{}
	s.mu.Unlock()
}

func (s *connSet) remove(c *trackedConn) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

func (s *connSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// wait waits until every connection has closed or ctx ends, and returns how
// many are still open.
func (s *connSet) wait(ctx context.Context) int {
	for {
		n := s.len()
		if n == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return n
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	open := make([]*trackedConn, 0, len(s.m))
	for c := range s.m {
		open = append(open, c)
	}
	s.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
}

// connSetKey is the context key of the public server's connSet.
type connSetKey struct{}

// trackedConn is a hijacked connection that leaves its set when closed, by
// whoever closes it: the reverse proxy after a WebSocket ends, or closeAll.
// Only hijacked connections are wrapped: every other connection's reads and
// writes go to the socket without an extra call.
type trackedConn struct {
	net.Conn
	set  *connSet
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.set.remove(c) })
	return c.Conn.Close()
}
