package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
	"github.com/portcullis-proxy/portcullis/proxy/jsonlog"
	"github.com/portcullis-proxy/portcullis/rules"
)

// outcome is what one request came to, beyond its decision: serve fills it
// in as it learns the rule and the user, and the access line reports it.
type outcome struct {
	requestID []string    // X-Request-Id, as passed upstream and returned
	rule      *rules.Rule // nil until the rules ran
	idp       string
	user      string
	client    string        // the client address as text, once the rules have it
	req       rules.Request // the request as the rules see it
}

// setUser records who the request is from: the email, else the subject.
func (o *outcome) setUser(p *idp.Profile) {
	o.idp, o.user = p.IdP, userOf(p)
}

func userOf(p *idp.Profile) string {
	if p.Email != "" {
		return p.Email
	}
	return p.Sub
}

// Kinds of log line, in the "log" attribute, so that access and audit lines
// can be routed apart from the proxy's own diagnostics.
const (
	logAccess = "access"
	logAudit  = "audit"
)

// maxLoggedPath bounds the path in a log line; a refused path can be long.
const maxLoggedPath = 512

// logRequest writes the access line of one request. It never logs the query
// (OAuth codes and states travel there), headers or cookies.
func (h *Handler) logRequest(r *http.Request, id, decision string, rec *statusRecorder, o *outcome, end time.Time, d time.Duration) {
	path := r.URL.Path
	if o.rule == nil && o.idp == "" && h.isAuthPath(path) {
		o.idp = h.authPathIdP(path)
	}
	if len(path) > maxLoggedPath {
		path = path[:maxLoggedPath]
	}
	// A refusal by a rule is a security event of its own, besides its access line.
	if (decision == decisionDenied || decision == decisionForbidden) && !h.isAuthPath(r.URL.Path) {
		h.audit(r, slog.LevelWarn, decision,
			slog.String("rule", ruleName(o.rule)), slog.String("idp", o.idp), slog.String("user", o.user),
			slog.String("method", r.Method), slog.String("path", path), slog.Int("status", rec.status()))
	}
	handler := h.accessLogs.handler(o.rule, decision)
	if !handler.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	client := o.client
	if client == "" {
		client = clientText(h.clientAddr(r))
	}
	// Each attribute costs slog's JSON handler as much as the rest of the
	// line: decision and rule are formatted once (accessLogs), and idp and
	// user are left out when there is no user.
	attrs := [9]slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", path),
		slog.Int("status", rec.status()),
		// An integer: slog's JSON handler formats a float64 through
		// json.Marshal (reflection), a quarter of the line's cost.
		slog.Int64("duration_us", d.Microseconds()),
		slog.Int64("bytes", rec.bytes),
		slog.String("request_id", id),
		slog.String("client", client),
	}
	n := 7
	if o.idp != "" {
		attrs[n] = slog.String("idp", o.idp)
		n++
	}
	if o.user != "" {
		attrs[n] = slog.String("user", o.user)
		n++
	}
	// A log line that cannot be written has nowhere to be reported. The
	// line's time is when the request ended.
	if fast, ok := handler.(*jsonlog.Handler); ok {
		_ = fast.HandleAttrs(r.Context(), end, slog.LevelInfo, "request", attrs[:n]...) // the same bytes, without a Record
		return
	}
	line := slog.NewRecord(end, slog.LevelInfo, "request", 0)
	line.AddAttrs(attrs[:n]...)
	// Not Logger.LogAttrs: it would capture the caller's program counter
	// (runtime.Callers) on every request for a source the line never shows.
	_ = handler.Handle(r.Context(), line)
}

func ruleName(r *rules.Rule) string {
	if r == nil {
		return ""
	}
	return r.Name
}

// accessLogs are the handlers of the access lines of one rule set: the log's,
// with "log":"access", "decision" and "rule" formatted once for each rule
// and decision instead of on every line.
type accessLogs struct {
	none   [len(decisions)]slog.Handler   // no rule ran: the proxy's own endpoints, refused paths
	bySlot [][len(decisions)]slog.Handler // by ruleSlot
}

func newAccessLogs(log *slog.Logger, set *rules.Set) *accessLogs {
	base := log.Handler().WithAttrs([]slog.Attr{slog.String("log", logAccess)})
	forRule := func(attrs ...slog.Attr) (hs [len(decisions)]slog.Handler) {
		for i, d := range decisions {
			hs[i] = base.WithAttrs(append([]slog.Attr{slog.String("decision", d)}, attrs...))
		}
		return hs
	}
	a := &accessLogs{none: forRule()}
	for _, r := range slotted(set) {
		a.bySlot = append(a.bySlot, forRule(slog.String("rule", r.Name)))
	}
	a.bySlot = append(a.bySlot, forRule(slog.String("rule", "error")))
	return a
}

func (a *accessLogs) handler(r *rules.Rule, decision string) slog.Handler {
	if r == nil {
		return a.none[decisionIndex(decision)]
	}
	return a.bySlot[ruleSlot(r, len(a.bySlot)-2)][decisionIndex(decision)]
}

// audit writes an audit line: logins and their failures, logouts, refusals.
// Callers pass identities and reasons, never tokens, codes or cookies.
func (h *Handler) audit(r *http.Request, level slog.Level, event string, attrs ...slog.Attr) {
	attrs = append([]slog.Attr{
		slog.String("log", logAudit),
		slog.String("event", event),
		slog.String("request_id", r.Header.Get(requestIDHeader)),
		slog.String("client", clientText(h.clientAddr(r))),
	}, attrs...)
	h.log.LogAttrs(r.Context(), level, event, attrs...)
}

// authPathIdP is the configured IdP a path under the auth prefix is about
// (/login/{idp}, /oidc/{idp}/callback, /saml/{idp}/acs, /ldap/{idp}), or "".
// Only configured ids are returned, so the field stays one of a known few.
func (h *Handler) authPathIdP(path string) string {
	rest := strings.TrimPrefix(path, h.cfg.Server.AuthPrefix+"/")
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 2 {
		return ""
	}
	switch parts[0] {
	case "login", "oidc", "saml", "ldap":
		if _, ok := h.providers[parts[1]]; ok {
			return parts[1]
		}
	}
	return ""
}

// oncePerSecond lets through one diagnostic line a second of a kind that a
// failing dependency (the session store, the upstream) would otherwise write
// with every request, and counts the others for the next line that passes.
// While Redis is away, a proxy at thousands of requests a second wrote as
// many ERROR lines as access lines, all saying the same; each request is
// still in its access line, with its status and request ID.
type oncePerSecond struct {
	mu      sync.Mutex
	next    time.Time
	dropped int
}

// pass reports whether a line may be written at now, and how many lines
// were held back since the last one that was.
func (o *oncePerSecond) pass(now time.Time) (ok bool, heldBack int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if now.Before(o.next) {
		o.dropped++
		return false, 0
	}
	heldBack, o.dropped = o.dropped, 0
	o.next = now.Add(time.Second)
	return true, heldBack
}

// logThrottled writes the line through t: at most one a second, with the
// number held back since the last as "held_back".
func (h *Handler) logThrottled(t *oncePerSecond, level slog.Level, msg string, attrs ...slog.Attr) {
	ok, heldBack := t.pass(h.now())
	if !ok {
		return
	}
	if heldBack > 0 {
		attrs = append(attrs, slog.Int("held_back", heldBack))
	}
	h.log.LogAttrs(context.Background(), level, msg, attrs...)
}
