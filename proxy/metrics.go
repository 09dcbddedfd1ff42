package proxy

import (
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the Prometheus series in SPEC.md. Labels stay bounded: rule
// names and IdP ids from the config, never paths or users.
type metrics struct {
	registry       *prometheus.Registry
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	upstreamErrors prometheus.Counter
	logins         *prometheus.CounterVec
	loginDuration  *prometheus.HistogramVec
	refreshes      *prometheus.CounterVec
	ruleMatches    *prometheus.CounterVec
	reloads        *prometheus.CounterVec

	// The series every request feeds, resolved from their labels once
	// (hashing the label values on every request showed in profiles).
	requestSeries  sync.Map // requestLabels -> prometheus.Counter
	durationSeries sync.Map // decision -> prometheus.Observer
	ruleSeries     sync.Map // rule name -> prometheus.Counter
}

type requestLabels struct {
	decision string
	code     int
}

func newMetrics() *metrics {
	const ns = "portcullis"
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "requests_total",
			Help: "Requests answered, by decision and status code."}, []string{"decision", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "request_duration_seconds",
			Help: "Time to answer a request, by decision.", Buckets: prometheus.DefBuckets}, []string{"decision"}),
		upstreamErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "upstream_errors_total",
			Help: "Requests the upstream did not answer."}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "logins_total",
			Help: "Logins completed or refused, by IdP and result."}, []string{"idp", "result"}),
		loginDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "login_duration_seconds",
			Help: "Time from the IdP's answer to a session, by IdP.", Buckets: prometheus.DefBuckets}, []string{"idp"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "session_refreshes_total",
			Help: "Session refreshes at the IdP, by IdP and result."}, []string{"idp", "result"}),
		ruleMatches: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rule_matches_total",
			Help: "Requests matched, by rule name."}, []string{"rule"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "config_reloads_total",
			Help: "Configuration reloads, by result."}, []string{"result"}),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "build_info",
		Help: "Always 1; the version label says which build runs."}, []string{"version"})
	build.WithLabelValues(Version()).Set(1)
	for _, result := range []string{"success", "failure"} {
		m.reloads.WithLabelValues(result) // present from the start, so rates and alerts see 0, not nothing
	}
	m.registry.MustRegister(m.requests, m.duration, m.upstreamErrors, m.logins, m.loginDuration,
		m.refreshes, m.ruleMatches, m.reloads, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// known creates the series of every configured IdP and rule at zero, so a
// dashboard or an alert sees 0 rather than nothing before the first event.
func (m *metrics) known(cfg *Config) {
	for _, ic := range cfg.SSO.IdentityProviders {
		for _, result := range []string{"success", "failure", "denied", "rate_limited"} {
			m.logins.WithLabelValues(ic.ID, result)
		}
		for _, result := range []string{"success", "refused", "error"} {
			m.refreshes.WithLabelValues(ic.ID, result)
		}
		m.loginDuration.WithLabelValues(ic.ID)
	}
	for _, rc := range cfg.Rules {
		m.ruleMatches.WithLabelValues(rc.Name)
	}
	m.ruleMatches.WithLabelValues("default")
}

func (m *metrics) observe(decision string, code int, d time.Duration) {
	key := requestLabels{decision, code}
	c, ok := m.requestSeries.Load(key)
	if !ok {
		c, _ = m.requestSeries.LoadOrStore(key, m.requests.WithLabelValues(decision, strconv.Itoa(code)))
	}
	c.(prometheus.Counter).Inc()
	o, ok := m.durationSeries.Load(decision)
	if !ok {
		o, _ = m.durationSeries.LoadOrStore(decision, m.duration.WithLabelValues(decision))
	}
	o.(prometheus.Observer).Observe(d.Seconds())
}

func (m *metrics) ruleMatched(rule string) {
	c, ok := m.ruleSeries.Load(rule)
	if !ok {
		c, _ = m.ruleSeries.LoadOrStore(rule, m.ruleMatches.WithLabelValues(rule))
	}
	c.(prometheus.Counter).Inc()
}

func (m *metrics) login(idp, result string, d time.Duration) {
	m.logins.WithLabelValues(idp, result).Inc()
	if result == "success" {
		m.loginDuration.WithLabelValues(idp).Observe(d.Seconds())
	}
}

// version is set at build time with -ldflags "-X ...proxy.version=v1.2.3".
var version = ""

// Version is the version of this build: the linker-set one, else the module
// version, else "devel".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
