package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/session"
)

// A configuration reload builds a whole new Handler next to the running one
// and swaps it in only when it is complete; nothing is changed in place.
//
// What carries over from the old Handler: the metrics registry (one for the
// process), the revoked session IDs, and the used login states, logout
// tokens and SAML assertions (so a reload never makes a logged-out cookie or
// anything used once valid again), and every identity provider whose entry,
// public_url, auth_prefix and enable_pkce are unchanged (its discovery, keys
// and metadata, so its readiness does not flap), and the upstream transport
// while upstream.timeouts is unchanged (its connections).
// Providers that are new or changed start afresh, but a changed one takes
// over what was discovered or fetched from where it still fetches from
// (idp.Options.Running), so it is as ready as the one it replaces. The swap
// waits up to readyWait for those still not ready, then happens anyway (an
// IdP that is down is the IdP's problem, not the configuration's, and
// /readyz says so).

// readyWait bounds how long a reload waits for new or changed IdPs.
const readyWait = 5 * time.Second

// defaultPoll is how often the configuration file is checked for changes.
const defaultPoll = time.Second

// ServeOptions say how Run serves, and where reloads read the configuration.
type ServeOptions struct {
	// Log receives every log line, the access and audit lines included.
	Log *slog.Logger
	// Grace is how long requests in flight (uploads, WebSockets) may take to
	// finish once ctx ends.
	Grace time.Duration
	// ConfigPath is the file the configuration came from; a reload re-reads
	// it. Empty means the configuration is never reloaded.
	ConfigPath string
	// Getenv expands ${VAR} in a reloaded file; nil means os.Getenv.
	Getenv func(string) string
	// Reload asks for a reload with every value it delivers (SIGHUP).
	Reload <-chan os.Signal
	// PollInterval is how often ConfigPath is checked for a change of its
	// content (0: every second; negative: never).
	PollInterval time.Duration
	// CertPollInterval is how often the files server.tls names are checked
	// for a renewed certificate (0: every 30 seconds; negative: only on a
	// reload).
	CertPollInterval time.Duration
}

// Run serves the proxy cfg describes on its listeners until ctx ends, then
// shuts down gracefully (serve.go). With ConfigPath set, it reloads the
// configuration on every value from Reload and whenever the file changes.
func Run(ctx context.Context, cfg *Config, o ServeOptions) error {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	h, err := New(ctx, cfg, o.Log)
	if err != nil {
		return err
	}
	return run(ctx, h, o)
}

// run is Run once h is built: whatever it returns, h's providers, Redis
// client and transport are closed, and the configuration watcher it starts
// has ended.
func run(ctx context.Context, h *Handler, o ServeOptions) error {
	l := newLive(ctx, h, o.Log)
	l.certPoll = o.CertPollInterval
	if o.ConfigPath != "" {
		l.src = &configSource{path: o.ConfigPath, getenv: o.Getenv}
		if l.src.getenv == nil {
			l.src.getenv = os.Getenv
		}
		// What was loaded is the baseline: only a later change reloads.
		if _, stamp, err := l.src.read(); err == nil {
			l.src.stamp = stamp
		}
	}
	proxyLn, adminLn, err := listen(h.cfg)
	if err != nil {
		// Nothing was served: no refresh to abandon, no reload to wait for.
		l.closeLast(nil)
		return err
	}
	if l.src != nil {
		// Until serveOn returns, not until ctx ends: serveOn returns early
		// when a listener fails or the certificate cannot be loaded, and a
		// process that embeds the proxy (the tests, the demo) goes on.
		// A reload it started has ended by then (closeLast), and every
		// later one is refused at once (draining).
		wctx, stop := context.WithCancel(ctx)
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			l.watch(wctx, o.Reload, o.PollInterval)
		}()
		defer func() {
			stop()
			<-watched
		}()
	}
	return l.serveOn(ctx, proxyLn, adminLn, o.Grace)
}

// live is what the listeners serve: the current Handler, swapped atomically
// by a reload. A request runs to its end on the Handler it started on.
type live struct {
	cur      atomic.Pointer[Handler]
	draining atomic.Bool // set at shutdown; /readyz then answers 503
	ctx      context.Context
	log      *slog.Logger
	registry *prometheus.Registry

	certPoll time.Duration // ServeOptions.CertPollInterval

	mu    sync.Mutex // one reload at a time
	src   *configSource
	certs *certificate // what the proxy listener serves, set by serveOn; nil without server.tls
}

func newLive(ctx context.Context, h *Handler, log *slog.Logger) *live {
	l := &live{ctx: ctx, log: log, registry: h.metrics.registry}
	l.cur.Store(h)
	return l
}

func (l *live) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.cur.Load().ServeHTTP(w, r)
}

// admin serves /metrics, /healthz and /readyz for whichever Handler is current.
func (l *live) admin() http.Handler {
	return adminMux(l.registry, func() map[string]string {
		if l.draining.Load() {
			return map[string]string{"server": "shutting down"}
		}
		return l.cur.Load().Ready()
	})
}

// adminMux is the admin listener's handler; ready lists what is missing.
func adminMux(reg *prometheus.Registry, ready func() map[string]string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if problems := ready(); len(problems) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "problems": problems})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	return mux
}

// watch reloads on every signal and whenever the file's content changes.
func (l *live) watch(ctx context.Context, signals <-chan os.Signal, poll time.Duration) {
	if poll == 0 {
		poll = defaultPoll
	}
	var tick <-chan time.Time
	if poll > 0 {
		t := time.NewTicker(poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-signals:
			l.reload("signal")
		case <-tick:
			if l.src.changed() {
				l.reload("file")
			}
		}
	}
}

// reload loads, validates and builds the configuration file's current
// content completely, then swaps it in. A configuration with any problem is
// refused and the running one keeps serving.
func (l *live) reload(trigger string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.draining.Load() || l.ctx.Err() != nil {
		// Whatever it built would start providers for nothing, and
		// the shutdown closes the Handler live now (closeLast).
		l.log.Info("config reload skipped: the process is stopping", "trigger", trigger)
		return errStopping
	}
	prev := l.cur.Load()
	start := time.Now()
	next, err := l.build(prev)
	if err != nil {
		prev.metrics.reloaded("failure")
		l.log.Error("config reload refused; the running configuration stays",
			"trigger", trigger, "path", l.src.path, "problems", problemList(err))
		// A SIGHUP after a renewal still serves the new certificate.
		if l.certs != nil {
			l.certs.check(trigger)
		}
		return err
	}
	waited := l.awaitReady(next, prev)
	l.cur.Store(next)
	prev.stopProviders(next)
	prev.releaseRedis(next)
	prev.releaseTransport(next)
	prev.metrics.reloaded("success")
	l.log.Info("config reloaded", "trigger", trigger, "path", l.src.path,
		"duration_seconds", time.Since(start).Seconds(), "waited_for_idps", waited)
	l.reloadCertificate(next.cfg.Server.TLS, trigger)
	return nil
}

// errStopping is the answer of a reload asked for once the shutdown began.
var errStopping = errors.New("config reload skipped: the process is stopping")

// reloadCertificate checks the certificate files on a reload, at the paths
// files names now. Turning TLS on or off takes a restart: until then the
// listener serves what it started with.
func (l *live) reloadCertificate(files TLSConfig, trigger string) {
	switch {
	case l.certs == nil:
	case files.CertFile == "":
		l.certs.check(trigger)
	default:
		l.certs.follow(files, trigger)
	}
}

func (l *live) build(prev *Handler) (*Handler, error) {
	raw, stamp, err := l.src.read()
	if err != nil {
		return nil, err
	}
	l.src.stamp = stamp // refused or not, this content is not tried again until it changes
	cfg, err := ParseConfig(raw, l.src.getenv)
	if err != nil {
		return nil, err
	}
	next, err := build(l.ctx, cfg, l.log, prev, prev.idpTransport)
	// Only a configuration that is taken has anything to take effect: a
	// refused one's listen may be no more than what a mistake left empty.
	if err == nil && restartOnly(prev.cfg, cfg) {
		l.log.Warn("config reload: server.listen, server.admin_listen and turning server.tls on or off take effect only after a restart")
	}
	return next, err
}

func restartOnly(old, cur *Config) bool {
	return old.Server.Listen != cur.Server.Listen || old.Server.AdminListen != cur.Server.AdminListen ||
		(old.Server.TLS.CertFile == "") != (cur.Server.TLS.CertFile == "")
}

// awaitReady waits, up to readyWait, until next has no readiness problem
// that prev did not have, and reports whether it had to wait.
func (l *live) awaitReady(next, prev *Handler) bool {
	deadline := time.Now().Add(readyWait)
	waited := false
	for {
		fresh := freshProblems(next.Ready(), prev.Ready())
		if len(fresh) == 0 {
			return waited
		}
		if time.Now().After(deadline) {
			l.log.Warn("config reload: swapping in although some identity providers are not ready yet", "problems", fresh)
			return waited
		}
		waited = true
		select {
		case <-l.ctx.Done():
			return waited
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freshProblems(next, prev map[string]string) map[string]string {
	fresh := map[string]string{}
	for k, v := range next {
		if _, old := prev[k]; !old {
			fresh[k] = v
		}
	}
	return fresh
}

// problemList is every problem joined in err, one string each.
func problemList(err error) []string {
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		return []string{err.Error()}
	}
	var out []string
	for _, e := range joined.Unwrap() {
		out = append(out, problemList(e)...)
	}
	return out
}

// configSource is the configuration file a reload reads.
type configSource struct {
	path   string
	getenv func(string) string
	stamp  fileStamp // of the content last read
	// unread is the last failure to read the file that changed reported,
	// so that a file gone missing (a ConfigMap key renamed) or unreadable
	// is refused, logged and counted once, not at every poll, nor never.
	unread string
}

// fileStamp tells one version of the file from another: size and mtime are
// cheap to poll; the hash decides, so a touch alone reloads nothing.
type fileStamp struct {
	mod  time.Time
	size int64
	sum  [sha256.Size]byte
}

func (s *configSource) read() ([]byte, fileStamp, error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("read config: %w", err)
	}
	raw, err := os.ReadFile(s.path)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("read config: %w", err)
	}
	return raw, fileStamp{mod: fi.ModTime(), size: fi.Size(), sum: sha256.Sum256(raw)}, nil
}

// changed reports whether the file's content differs from what was last
// read, or the file cannot be read for a new reason: the reload that follows
// reports why.
func (s *configSource) changed() bool {
	fi, err := os.Stat(s.path)
	if err == nil && fi.ModTime().Equal(s.stamp.mod) && fi.Size() == s.stamp.size {
		s.unread = ""
		return false
	}
	var raw []byte
	if err == nil {
		raw, err = os.ReadFile(s.path)
	}
	if err != nil {
		if err.Error() == s.unread {
			return false
		}
		s.unread = err.Error()
		return true
	}
	s.unread = ""
	if sha256.Sum256(raw) == s.stamp.sum {
		s.stamp.mod, s.stamp.size = fi.ModTime(), fi.Size()
		return false
	}
	return true
}

// inherit takes over from prev, the Handler a reload replaces, the state
// that must outlive it: revoked sessions, used login states, failed-login
// limits, the SAML check slots, the cookie names it and those before it
// used, and refreshes in flight or just finished, under a new
// session.refresh too (a rotating refresh token must not be spent again by
// a request that arrives at the new Handler with the old cookie: the IdP
// refuses it as reused, and the session ends).
func (h *Handler) inherit(prev *Handler) {
	if prev == nil {
		return
	}
	h.refresher.refreshCalls = prev.refresher.refreshCalls
	for _, o := range append(prev.formerCookies, prev.cookies) {
		if o.CookieName != h.cookies.CookieName &&
			!slices.ContainsFunc(h.formerCookies, func(f session.Options) bool { return f.CookieName == o.CookieName }) {
			h.formerCookies = append(h.formerCookies, session.Options{CookieName: o.CookieName})
		}
	}
	// Failed-login counts outlive a reload, or a reload would reset an
	// attacker's budget. The Basic auth cache does not: it holds profiles
	// checked under the old config.
	h.passwords.limits = prev.passwords.limits
	// Both Handlers check responses while the old one finishes its
	// requests: one set of slots bounds them together.
	h.samlChecks = prev.samlChecks
	if cs, ok := h.sessions.(*session.CookieStore); ok {
		if old, ok := prev.sessions.(*session.CookieStore); ok {
			cs.Inherit(old)
		}
	}
	h.flows.Inherit(prev.flows)
	h.keepStripping(prev)
}

// keepStripping keeps removing from client requests every header prev
// removed (set by attribute_pass, or in strip_headers) that this
// configuration does not: a reload that renames X-Email to X-User-Email
// must not start letting clients send X-Email to an upstream that may still
// trust it. A restart forgets them, so each is a warning naming the key to
// put it in.
func (h *Handler) keepStripping(prev *Handler) {
	for _, name := range prev.pass.Names() {
		if h.pass.Strips(name) {
			continue
		}
		h.pass.AlsoStrip(name)
		h.log.Warn("attribute_pass: a header the configuration before the reload set or stripped is no longer in it; "+
			"still removed from client requests until the process restarts, then passed to the upstream as the client sent it: "+
			"if the upstream may trust it, add it to attribute_pass.strip_headers",
			"header", name)
	}
}

// startProvider returns prev's provider for ic when nothing it was built
// from changed, else starts a new one whose background work (discovery,
// metadata refresh) lasts until stopProviders ends it. A new one takes over
// what prev's provider of the same id discovered or fetched from where it
// does too (idp.Options.Running): a changed name or scope must not make
// logins 503 until an IdP that is away answers again.
func (h *Handler) startProvider(ctx context.Context, ic idp.Config, opts idp.Options, prev *Handler) (idp.Provider, error) {
	if prev != nil {
		if p, ok := prev.providers[ic.ID]; ok && reflect.DeepEqual(p.cfg, ic) &&
			prev.publicURL.String() == h.publicURL.String() &&
			prev.cfg.Server.AuthPrefix == h.cfg.Server.AuthPrefix &&
			*prev.cfg.SSO.EnablePKCE == *h.cfg.SSO.EnablePKCE &&
			prev.assertions == h.assertions { // a SAML provider records assertions there

			h.idpStop[ic.ID] = prev.idpStop[ic.ID]
			return p.impl, nil
		}
	}
	if prev != nil && prev.providers[ic.ID] != nil {
		// What it fetched from the IdP, where this entry fetches from too.
		opts.Running = prev.providers[ic.ID].impl
	}
	pctx, cancel := context.WithCancel(ctx)
	impl, err := idp.New(pctx, ic, opts)
	if err != nil {
		cancel()
		return nil, err
	}
	h.idpStop[ic.ID] = cancel
	return impl, nil
}

// stopProviders ends the background work of h's providers, except those
// keep (the Handler that replaced h) took over.
func (h *Handler) stopProviders(keep *Handler) {
	for id, stop := range h.idpStop {
		if keep != nil && h.providers[id] != nil && keep.providers[id] != nil &&
			keep.providers[id].impl == h.providers[id].impl {
			continue
		}
		stop()
	}
}

// reloaded counts a reload by its result: success or failure.
func (m *metrics) reloaded(result string) { m.reloads.WithLabelValues(result).Inc() }
