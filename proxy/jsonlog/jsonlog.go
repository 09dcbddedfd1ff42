// Package jsonlog is the log handler of `portcullis serve --log-format json`:
// a slog.Handler that writes what slog.NewJSONHandler writes, byte for byte,
// in a fifth of the time for the attributes the proxy logs.
//
// It exists for the access line, which portcullis writes for every request.
// slog's JSON handler is general: every attribute is resolved, checked for
// ReplaceAttr, groups and sources, and formatted under a recover. The profile
// of a bypassed request (issue 6) puts that generality at a tenth of the
// proxy's CPU. This handler formats strings, integers, booleans, durations and
// times itself and hands every other record, whole, to slog's own handler, so
// the two can never disagree about a line: the differential fuzz test holds
// them to the same bytes.
package jsonlog

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Handler writes JSON log lines. Build it with New.
type Handler struct {
	out   *output
	level slog.Leveler
	attrs []byte       // the WithAttrs attributes, formatted: `,"key":value` each
	slow  slog.Handler // slog's JSON handler with the same attributes
}

// output is the writer all handlers derived from one New share: one Write
// at a time, as slog's handlers do, whichever of the two formatted the line.
type output struct {
	mu sync.Mutex
	w  io.Writer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.w.Write(p)
}

// New returns a handler that writes to w what slog.NewJSONHandler(w, opts)
// would. Options this handler does not implement (AddSource, ReplaceAttr)
// get slog's handler itself.
func New(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	if opts == nil {
		opts = &slog.HandlerOptions{}
	}
	if opts.AddSource || opts.ReplaceAttr != nil {
		return slog.NewJSONHandler(w, opts)
	}
	out := &output{w: w}
	level := opts.Level
	if level == nil {
		level = slog.LevelInfo
	}
	return &Handler{out: out, level: level, slow: slog.NewJSONHandler(out, opts)}
}

// Enabled reports whether the handler writes records at level l.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// WithAttrs returns a handler that writes attrs on every line, formatted once.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	slow := h.slow.WithAttrs(attrs)
	formatted := append([]byte(nil), h.attrs...)
	for _, a := range attrs {
		var ok bool
		if formatted, ok = appendAttr(formatted, a); !ok {
			return slow // an attribute only slog formats: every line is slog's
		}
	}
	return &Handler{out: h.out, level: h.level, attrs: formatted, slow: slow}
}

// WithGroup returns slog's handler: groups are not on the access line's path.
func (h *Handler) WithGroup(name string) slog.Handler {
	return h.slow.WithGroup(name)
}

// maxKeptBuffer bounds the buffers kept for reuse, as slog bounds its own:
// one long line must not pin its buffer for the life of the process.
const maxKeptBuffer = 16 << 10

var buffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Handle writes r as one line. A record with an attribute this handler does
// not format (a float, a group, an error, any other value) is slog's to write.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	bp := buffers.Get().(*[]byte)
	defer putBuffer(bp)
	b, ok := h.appendHead((*bp)[:0], r.Time, r.Level, r.Message)
	if ok {
		r.Attrs(func(a slog.Attr) bool {
			b, ok = appendAttr(b, a)
			return ok
		})
	}
	if !ok {
		return h.slow.Handle(ctx, r)
	}
	return h.writeLine(bp, b)
}

// HandleAttrs writes what Handle writes for the record
// slog.NewRecord(t, level, msg, 0) with attrs added, without the record: a
// Record holds five attributes and copies the rest to a slice it allocates,
// only for Handle to read them back. The access line (seven to nine
// attributes, on every request) comes this way.
func (h *Handler) HandleAttrs(ctx context.Context, t time.Time, level slog.Level, msg string, attrs ...slog.Attr) error {
	bp := buffers.Get().(*[]byte)
	defer putBuffer(bp)
	b, ok := h.appendHead((*bp)[:0], t, level, msg)
	for i := 0; ok && i < len(attrs); i++ {
		b, ok = appendAttr(b, attrs[i])
	}
	if !ok {
		r := slog.NewRecord(t, level, msg, 0)
		r.AddAttrs(attrs...)
		return h.slow.Handle(ctx, r)
	}
	return h.writeLine(bp, b)
}

// writeLine ends the line b and writes it; b, grown or not, goes back to the
// pool in bp.
func (h *Handler) writeLine(bp *[]byte, b []byte) error {
	b = append(b, "}\n"...)
	*bp = b
	_, err := h.out.Write(b)
	return err
}

func putBuffer(bp *[]byte) {
	if cap(*bp) <= maxKeptBuffer {
		buffers.Put(bp)
	}
}

// appendHead appends a line's start: `{"time":…,"level":…,"msg":…` and the
// WithAttrs attributes. It reports false for a time only slog writes.
func (h *Handler) appendHead(b []byte, t time.Time, level slog.Level, msg string) ([]byte, bool) {
	b = append(b, '{')
	if !t.IsZero() {
		var ok bool
		if b, ok = appendTime(append(b, `"time":`...), t.Round(0)); !ok {
			return b, false
		}
		b = append(b, ',')
	}
	b = appendString(append(b, `"level":`...), level.String())
	b = appendString(append(b, `,"msg":`...), msg)
	return append(b, h.attrs...), true
}

// appendAttr appends `,"key":value`, or reports that the value's kind is
// slog's to format.
func appendAttr(b []byte, a slog.Attr) ([]byte, bool) {
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		return appendString(appendKey(b, a.Key), v.String()), true
	case slog.KindInt64:
		return strconv.AppendInt(appendKey(b, a.Key), v.Int64(), 10), true
	case slog.KindUint64:
		return strconv.AppendUint(appendKey(b, a.Key), v.Uint64(), 10), true
	case slog.KindBool:
		return strconv.AppendBool(appendKey(b, a.Key), v.Bool()), true
	case slog.KindDuration:
		return strconv.AppendInt(appendKey(b, a.Key), int64(v.Duration()), 10), true // as json.Marshal does
	case slog.KindTime:
		return appendTime(appendKey(b, a.Key), v.Time())
	}
	// Floats (slog formats them through json.Marshal), groups, LogValuers,
	// errors and any other value, and the empty Attr slog leaves out.
	return b, false
}

func appendKey(b []byte, key string) []byte {
	return append(appendString(append(b, ','), key), ':')
}

// appendTime appends t as RFC 3339 with nanoseconds, in quotes. slog reports
// a year outside 0–9999 as an error on the line; that line is slog's.
func appendTime(b []byte, t time.Time) ([]byte, bool) {
	if y := t.Year(); y < 0 || y >= 10000 {
		return b, false
	}
	b = t.AppendFormat(append(b, '"'), time.RFC3339Nano)
	return append(b, '"'), true
}

// appendString appends s as a JSON string, escaped as slog escapes it:
// quote, backslash and control characters; invalid UTF-8 as U+FFFD; and
// U+2028 and U+2029, which JavaScript reads as line ends. HTML characters
// are not escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	i := 0
	for i < len(s) && s[i] < utf8.RuneSelf && plain[s[i]] {
		i++
	}
	if i == len(s) { // the usual case: nothing to escape
		return append(append(b, s...), '"')
	}
	b = append(b, s[:i]...)
	start := i
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if plain[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(append(b, s[start:i]...), `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(append(b, s[start:]...), '"')
}

const hex = "0123456789abcdef"

// plain holds the ASCII bytes a JSON string carries as they are: all but the
// control characters below space, the quote and the backslash. (DEL passes,
// as in slog.)
var plain = func() (t [utf8.RuneSelf]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()
