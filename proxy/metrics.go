package proxy

import (
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/portcullis-proxy/portcullis/rules"
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

	// The series every request feeds, resolved from their labels ahead of
	// time: hashing label values on every request showed in profiles.
	byDecision [len(decisions)]decisionSeries
	codesMu    sync.Mutex // serializes replacing a decisionSeries' codes
}

// decisions are the values of the decision label, in the order of
// decisionIndex.
var decisions = [...]string{decisionBypass, decisionAuthenticated, decisionRedirect, decisionUnauthorized,
	decisionForbidden, decisionDenied, decisionInternal}

func decisionIndex(decision string) int {
	switch decision {
	case decisionBypass:
		return 0
	case decisionAuthenticated:
		return 1
	case decisionRedirect:
		return 2
	case decisionUnauthorized:
		return 3
	case decisionForbidden:
		return 4
	case decisionDenied:
		return 5
	}
	return 6 // decisionInternal
}

// decisionSeries are the series of one decision: its duration histogram, and
// its requests_total counter of each status code seen, in a short list that
// is replaced, never changed, when a code is first seen. (An array indexed
// by code held 1,000 pointers per decision, 56 KB that every garbage
// collection scanned.)
type decisionSeries struct {
	duration prometheus.Observer
	codes    atomic.Pointer[[]codeCounter]
}

type codeCounter struct {
	code    int
	counter prometheus.Counter
}

// maxCodesListed bounds the list; codes past it are looked up by label.
const maxCodesListed = 32

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
	for i, d := range decisions {
		m.byDecision[i].duration = m.duration.WithLabelValues(d)
	}
	// The server errors start at zero too: a series that its first event
	// creates shows no increase to rate() until its second, so an error
	// ratio or a 5xx alert would miss a process's first errors of each
	// kind (the proxy's own 502/503/504, the application's 500).
	for _, d := range []string{decisionBypass, decisionAuthenticated, decisionInternal} {
		for _, code := range []string{"500", "502", "503", "504"} {
			m.requests.WithLabelValues(d, code)
		}
	}
	// So do the other decisions' answers, with the codes each answers
	// with (a rate of 401s, 403s or 429s, and the dashboard's panels by
	// decision and code): a redirect to the login (302) or on from the
	// email or LDAP form (303); no session or Basic credentials refused
	// (401), Basic auth past the failure limits (429); allow_if or the
	// login's admission refusing the user (403); a deny rule (403), a
	// method, path or trailer refused (400), the login form past the
	// failure limits (429). Eight series, the same for every process.
	for _, s := range []struct {
		decision string
		codes    []string
	}{
		{decisionRedirect, []string{"302", "303"}},
		{decisionUnauthorized, []string{"401", "429"}},
		{decisionForbidden, []string{"403"}},
		{decisionDenied, []string{"400", "403", "429"}},
	} {
		for _, code := range s.codes {
			m.requests.WithLabelValues(s.decision, code)
		}
	}
	m.registry.MustRegister(m.requests, m.duration, m.upstreamErrors, m.logins, m.loginDuration,
		m.refreshes, m.ruleMatches, m.reloads, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// known creates the series of every configured IdP at zero (rules does the
// rules'), so a
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
}

func (m *metrics) observe(decision string, code int, d time.Duration) {
	series := &m.byDecision[decisionIndex(decision)]
	series.duration.Observe(d.Seconds())
	if list := series.codes.Load(); list != nil {
		for _, cc := range *list {
			if cc.code == code {
				cc.counter.Inc()
				return
			}
		}
	}
	counter := m.requests.WithLabelValues(decision, strconv.Itoa(code))
	counter.Inc()
	m.codesMu.Lock()
	defer m.codesMu.Unlock()
	var list []codeCounter
	if old := series.codes.Load(); old != nil {
		if slices.ContainsFunc(*old, func(cc codeCounter) bool { return cc.code == code }) || len(*old) >= maxCodesListed {
			return // another request listed it meanwhile, or the list is full
		}
		list = slices.Clone(*old)
	}
	list = append(list, codeCounter{code, counter})
	series.codes.Store(&list)
}

// ruleSeries are the rule_matches_total counters of a rule set, by
// ruleSlot; the rare "error" rule's is looked up by label.
type ruleSeries struct {
	bySlot []prometheus.Counter
	vec    *prometheus.CounterVec
}

// rules resolves the series of set's rules and its default, creating them
// at zero.
func (m *metrics) rules(set *rules.Set) *ruleSeries {
	rs := &ruleSeries{vec: m.ruleMatches}
	for _, r := range slotted(set) {
		rs.bySlot = append(rs.bySlot, m.ruleMatches.WithLabelValues(r.Name))
	}
	return rs
}

// matched counts a request matched by r.
func (rs *ruleSeries) matched(r *rules.Rule) {
	if slot := ruleSlot(r, len(rs.bySlot)-1); slot < len(rs.bySlot) {
		rs.bySlot[slot].Inc()
		return
	}
	rs.vec.WithLabelValues(r.Name).Inc()
}

// slotted are set's rules and its default, by ruleSlot.
func slotted(set *rules.Set) []*rules.Rule {
	return slices.Concat(set.Rules(), []*rules.Rule{set.Default()})
}

// ruleSlot numbers every rule a rules.Set with n configured rules returns:
// those by their index, then the default (n), then the error rule (n+1).
func ruleSlot(r *rules.Rule, n int) int {
	switch {
	case r.Index >= 0 && r.Index < n:
		return r.Index
	case r.Index < 0 && r.Name == "default":
		return n
	}
	return n + 1
}

// certificateExpiry adds tls_certificate_expiry_timestamp_seconds, read
// from notAfter at every scrape. Only a proxy that serves TLS has it: a zero
// would read as a certificate long expired.
func (m *metrics) certificateExpiry(notAfter func() time.Time) {
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "portcullis",
		Name: "tls_certificate_expiry_timestamp_seconds",
		Help: "When the certificate the proxy listener serves expires, in seconds since the Unix epoch."},
		func() float64 { return float64(notAfter().Unix()) }))
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
