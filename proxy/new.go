package proxy

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
)

// New builds the proxy cfg describes. Identity providers that need the
// network (discovery, metadata) keep trying in the background until ctx ends;
// until then /readyz says which one is missing and logins to it answer 503.
func New(ctx context.Context, cfg *Config, log *slog.Logger) (*Handler, error) {
	return build(ctx, cfg, log, nil, nil)
}

// build is New; on a reload, prev is the Handler being replaced, and the new
// one takes over its metrics, session revocations, used login states and
// the providers whose configuration did not change (reload.go). idpTransport
// carries the requests to the IdPs (nil: http.DefaultTransport); tests put
// a network that fails on cue in between, without touching the global.
func build(ctx context.Context, cfg *Config, log *slog.Logger, prev *Handler, idpTransport http.RoundTripper) (h *Handler, err error) {
	c, err := compile(cfg, log)
	if err != nil {
		return nil, err
	}
	h = &Handler{
		passwords: newPasswordLogins(),
		authz:     newSessionAuthz(),
		compiled:  c,
		providers: map[string]*provider{},
		pages:     newPages(cfg.Pages, cfg.Server.AuthPrefix, log),
		refresher: newRefresher(cfg.Session.Refresh),
		metrics:   newMetrics(),
		log:       log,
		now:       time.Now,
		idpStop:   map[string]context.CancelFunc{},

		idpTransport: idpTransport,
	}
	h.pause = h.sleepUntil
	h.samlChecks = newCheckSlots()
	if prev != nil {
		h.metrics = prev.metrics // one registry for the life of the process
	}
	h.metrics.known(cfg)
	h.ruleSeries = h.metrics.rules(c.rules)
	h.accessLogs = newAccessLogs(log, c.rules)
	h.cookies = c.sessionOptions(log) // log: the bounded sets' flood warnings
	for _, w := range Warnings(cfg) { // what `portcullis check` prints
		log.Warn("config warning", "key", w.Key, "warning", w.Message)
	}
	if h.sessions, err = h.newSessionStore(cfg, prev); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	h.flows = session.NewFlows(h.cookies)
	h.devices = session.NewDevices(h.cookies)
	h.inherit(prev)
	h.shareThroughRedis(prev) // session.store redis: what replicas must share (redis.go)

	opts := idp.Options{
		PublicURL:  c.publicURL,
		AuthPrefix: cfg.Server.AuthPrefix,
		HTTPClient: idpClient(idpTransport),
		Logger:     log,
		PKCE:       *cfg.SSO.EnablePKCE,
		Replay:     h.assertions,
	}
	defer func() {
		if err != nil {
			h.stopProviders(prev) // those this build started, not those it took over
			h.releaseRedis(prev)
		}
	}()
	for _, ic := range cfg.SSO.IdentityProviders {
		impl, err := h.startProvider(ctx, ic, opts, prev)
		if err != nil {
			return nil, fmt.Errorf("sso.identity_providers %s: %w", ic.ID, err)
		}
		p := &provider{cfg: ic, impl: impl, pace: newFailurePace()}
		if prev != nil && prev.providers[ic.ID] != nil && prev.providers[ic.ID].impl == impl {
			p.pace = prev.providers[ic.ID].pace // the same directory: what was learnt of it holds
		}
		h.providers[ic.ID] = p
		h.order = append(h.order, p)
	}
	if h.transport, h.upstreamCAs, err = upstreamTransport(cfg.Upstream, prev); err != nil {
		return nil, err
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
	return adminMux(h.metrics.registry, h.Ready)
}

// Ready lists what keeps the proxy from serving logins, by IdP id, and a
// session store that does not answer (Redis); empty when it is ready.
func (h *Handler) Ready() map[string]string {
	problems := map[string]string{}
	if problem := h.storeProblem(); problem != "" {
		problems["session store"] = problem
	}
	for _, p := range h.order {
		if err := p.impl.Ready(); err != nil {
			problems["idp "+p.cfg.ID] = err.Error()
			if setup, ok := errors.AsType[*idp.SetupError](err); ok {
				// Not the IdP being away: what to change, for the operator.
				problems["idp "+p.cfg.ID] += " (" + setup.Reason + ": " + setup.Hint + ")"
			}
		}
	}
	return problems
}

func slogErrorLog(log *slog.Logger) *log.Logger {
	return slog.NewLogLogger(log.Handler(), slog.LevelWarn)
}
