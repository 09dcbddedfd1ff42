package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Serve runs the proxy and admin listeners until ctx ends, then shuts them
// down, letting requests in flight finish for up to grace.
func Serve(ctx context.Context, cfg *Config, log *slog.Logger, grace time.Duration) error {
	h, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	proxyLn, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("server.listen: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.Server.AdminListen)
	if err != nil {
		proxyLn.Close()
		return fmt.Errorf("server.admin_listen: %w", err)
	}
	return h.serveOn(ctx, proxyLn, adminLn, grace)
}

// serveOn serves on listeners already open (tests and the demo pick free ports).
func (h *Handler) serveOn(ctx context.Context, proxyLn, adminLn net.Listener, grace time.Duration) error {
	errLog := slogErrorLog(h.log)
	public := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
	}
	admin := &http.Server{Handler: h.Admin(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: errLog}
	errc := make(chan error, 2)
	tls := h.cfg.Server.TLS
	go func() {
		if tls.CertFile != "" {
			errc <- public.ServeTLS(proxyLn, tls.CertFile, tls.KeyFile)
			return
		}
		errc <- public.Serve(proxyLn)
	}()
	go func() { errc <- admin.Serve(adminLn) }()
	h.log.Info("portcullis serving", "listen", proxyLn.Addr().String(), "admin", adminLn.Addr().String(),
		"public_url", h.cfg.Server.PublicURL, "upstream", h.cfg.Upstream.URL, "version", Version())

	select {
	case err := <-errc:
		public.Close()
		admin.Close()
		return err
	case <-ctx.Done():
	}
	h.log.Info("shutting down", "grace", grace)
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := public.Shutdown(sctx)
	admin.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		h.log.Warn("grace period over; closing remaining connections")
		public.Close()
	}
	return nil
}
