package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
)

// outcome is what one request came to, beyond its decision: serve fills it
// in as it learns the rule and the user, and the access line reports it.
type outcome struct {
	requestID []string // X-Request-Id, as passed upstream and returned
	rule      string
	idp       string
	user      string
	client    string // the client address as text, once the rules have it
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
	if o.rule == "" && o.idp == "" && h.isAuthPath(path) {
		o.idp = h.authPathIdP(path)
	}
	if len(path) > maxLoggedPath {
		path = path[:maxLoggedPath]
	}
	// A refusal by a rule is a security event of its own, besides its access line.
	if (decision == decisionDenied || decision == decisionForbidden) && !h.isAuthPath(r.URL.Path) {
		h.audit(r, slog.LevelWarn, decision,
			slog.String("rule", o.rule), slog.String("idp", o.idp), slog.String("user", o.user),
			slog.String("method", r.Method), slog.String("path", path), slog.Int("status", rec.status()))
	}
	if !h.accessLog.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	client := o.client
	if client == "" {
		client = h.clientAddr(r).String()
	}
	h.accessLine(r.Context(), end,
		slog.String("method", r.Method),
		slog.String("path", path),
		slog.Int("status", rec.status()),
		slog.String("decision", decision),
		slog.String("rule", o.rule),
		slog.String("idp", o.idp),
		slog.String("user", o.user),
		// An integer: slog's JSON handler formats a float64 through
		// json.Marshal (reflection), a quarter of the line's cost.
		slog.Int64("duration_us", d.Microseconds()),
		slog.Int64("bytes", rec.bytes),
		slog.String("request_id", id),
		slog.String("client", client),
	)
}

// accessLog is the handler of access lines: the log's, with "log":"access"
// formatted once instead of on every line.
func accessLog(log *slog.Logger) slog.Handler {
	return log.Handler().WithAttrs([]slog.Attr{slog.String("log", logAccess)})
}

// accessLine hands the access line to the access log's handler as a record
// with no source position: Logger.LogAttrs would capture the caller's program
// counter (runtime.Callers) on every request for a source the line never
// shows. The line's time is when the request ended, as measured for its
// duration.
func (h *Handler) accessLine(ctx context.Context, end time.Time, attrs ...slog.Attr) {
	rec := slog.NewRecord(end, slog.LevelInfo, "request", 0)
	rec.AddAttrs(attrs...)
	_ = h.accessLog.Handle(ctx, rec) // a log line that cannot be written has nowhere to be reported
}

// audit writes an audit line: logins and their failures, logouts, refusals.
// Callers pass identities and reasons, never tokens, codes or cookies.
func (h *Handler) audit(r *http.Request, level slog.Level, event string, attrs ...slog.Attr) {
	attrs = append([]slog.Attr{
		slog.String("log", logAudit),
		slog.String("event", event),
		slog.String("request_id", r.Header.Get(requestIDHeader)),
		slog.String("client", h.clientAddr(r).String()),
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
