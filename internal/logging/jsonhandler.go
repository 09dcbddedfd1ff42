// Package logging is where the log lines of `portcullis serve` go: slog's
// JSON format, written cheaper for the access line of every request, and
// handed to stderr in batches from one goroutine.
package logging

import (
	"context"
	"io"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// NewJSONHandler returns a handler that writes exactly what
// slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}) writes, cheaper
// for the lines `portcullis serve` writes most: the access line of every
// request, a flat record of strings and numbers. Such records are formatted
// in one pass into a pooled buffer; every other record (groups, values of
// any other kind, LogValuers, times, floats JSON cannot hold) goes to the
// standard handler it wraps, which also does WithGroup. The output is one
// Write per line, as the standard handler's is.
func NewJSONHandler(w io.Writer, level slog.Leveler) slog.Handler {
	return &jsonHandler{w: w, level: level, std: slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}), flat: true}
}

// jsonHandler is NewJSONHandler's handler.
type jsonHandler struct {
	w     io.Writer
	level slog.Leveler
	std   slog.Handler // the same output, with the same attrs
	// prefix holds the attrs of WithAttrs, formatted (",\"k\":v..."); flat
	// is false when one of them needs the standard handler.
	prefix []byte
	flat   bool
}

func (h *jsonHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *jsonHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	out := &jsonHandler{w: h.w, level: h.level, std: h.std.WithAttrs(attrs), flat: h.flat}
	if out.flat {
		b := append([]byte(nil), h.prefix...)
		for _, a := range attrs {
			var ok bool
			if b, ok = appendAttr(b, a); !ok {
				out.flat = false
				break
			}
		}
		out.prefix = b
	}
	return out
}

func (h *jsonHandler) WithGroup(name string) slog.Handler {
	return h.std.WithGroup(name) // groups are rare here: the standard handler does them
}

var lineBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func (h *jsonHandler) Handle(ctx context.Context, r slog.Record) error {
	if !h.flat {
		return h.std.Handle(ctx, r)
	}
	bp := lineBuffers.Get().(*[]byte)
	b := (*bp)[:0]
	defer func() {
		if cap(b) <= 64<<10 {
			*bp = b
			lineBuffers.Put(bp)
		}
	}()
	b = append(b, '{')
	if !r.Time.IsZero() {
		t := r.Time.Round(0)
		if y := t.Year(); y < 0 || y >= 10000 {
			return h.std.Handle(ctx, r)
		}
		b = append(b, `"time":"`...)
		b = t.AppendFormat(b, time.RFC3339Nano)
		b = append(b, `",`...)
	}
	b = append(b, `"level":`...)
	b = appendString(b, r.Level.String())
	b = append(b, `,"msg":`...)
	b = appendString(b, r.Message)
	b = append(b, h.prefix...)
	ok := true
	r.Attrs(func(a slog.Attr) bool {
		b, ok = appendAttr(b, a)
		return ok
	})
	if !ok {
		return h.std.Handle(ctx, r)
	}
	b = append(b, "}\n"...)
	_, err := h.w.Write(b)
	return err
}

// appendAttr appends `,"key":value` for the kinds formatted here; ok is
// false for any other (the caller hands the record to slog's handler).
// Empty attrs are skipped, as slog does.
func appendAttr(b []byte, a slog.Attr) ([]byte, bool) {
	if a.Equal(slog.Attr{}) {
		return b, true
	}
	b = append(b, ',')
	b = appendString(b, a.Key)
	b = append(b, ':')
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		return appendString(b, v.String()), true
	case slog.KindInt64:
		return strconv.AppendInt(b, v.Int64(), 10), true
	case slog.KindUint64:
		return strconv.AppendUint(b, v.Uint64(), 10), true
	case slog.KindBool:
		return strconv.AppendBool(b, v.Bool()), true
	case slog.KindDuration:
		return strconv.AppendInt(b, int64(v.Duration()), 10), true
	case slog.KindFloat64:
		return appendFloat(b, v.Float64())
	}
	return b, false
}

// appendFloat formats f as encoding/json does (slog's JSON handler calls
// it for floats); NaN and infinities are not JSON.
func appendFloat(b []byte, f float64) ([]byte, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, false
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 becomes e-9, as encoding/json writes it.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, true
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaped as slog's JSON handler
// escapes it: quotes, backslashes and control characters, invalid UTF-8 as
// U+FFFD, U+2028 and U+2029; HTML characters stay as they are.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
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
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
