package proxy

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
)

// New builds the proxy cfg describes. Identity providers that need the
// network (discovery, metadata) keep trying in the background until ctx ends;
// until then /readyz says which one is missing and logins to it answer 503.
func New(ctx context.Context, cfg *Config, log *slog.Logger) (*Handler, error) {
	c, err := compile(cfg, log)
	if err != nil {
		return nil, err
	}
	h := &Handler{
		compiled:  c,
		providers: map[string]*provider{},
		pages:     newPages("portcullis", cfg.Server.AuthPrefix, log),
		metrics:   newMetrics(),
		log:       log,
		now:       time.Now,
	}
	h.cookies = session.Options{
		CookieName:  cfg.Session.CookieName,
		Keys:        c.keys,
		Secure:      c.publicURL.Scheme == "https",
		Lifetime:    cfg.Session.Lifetime,
		IdleTimeout: cfg.Session.IdleTimeout,
	}
	if !h.cookies.Secure {
		if !isLoopback(c.publicURL.Hostname()) {
			log.Warn("server.public_url is plain http: session cookies are sent unencrypted; use https outside development", "public_url", cfg.Server.PublicURL)
		}
	}
	if h.sessions, err = session.NewCookieStore(h.cookies); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	h.flows = session.NewFlows(h.cookies)

	opts := idp.Options{
		PublicURL:  c.publicURL,
		AuthPrefix: cfg.Server.AuthPrefix,
		HTTPClient: &http.Client{Timeout: 15 * time.Second},
		Logger:     log,
		PKCE:       *cfg.SSO.EnablePKCE,
	}
	for _, ic := range cfg.SSO.IdentityProviders {
		impl, err := idp.New(ctx, ic, opts)
		if err != nil {
			return nil, fmt.Errorf("sso.identity_providers %s: %w", ic.ID, err)
		}
		p := &provider{cfg: ic, impl: impl}
		h.providers[ic.ID] = p
		h.order = append(h.order, p)
	}
	h.upstream = h.newUpstream()
	h.auth = h.authRoutes()
	return h, nil
}

func isLoopback(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Admin is the handler of the admin listener: /metrics, /healthz, /readyz.
func (h *Handler) Admin() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		problems := h.Ready()
		if len(problems) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "problems": problems})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	return mux
}

// Ready lists what keeps the proxy from serving logins, by IdP id; empty
// when it is ready.
func (h *Handler) Ready() map[string]string {
	problems := map[string]string{}
	for _, p := range h.order {
		if err := p.impl.Ready(); err != nil {
			problems["idp "+p.cfg.ID] = err.Error()
		}
	}
	return problems
}

func slogErrorLog(log *slog.Logger) *log.Logger {
	return slog.NewLogLogger(log.Handler(), slog.LevelWarn)
}
