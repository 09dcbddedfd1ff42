package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
	"testing/slogtest"
	"time"
)

// TestJSONHandlerWritesWhatSlogWrites logs the same records through
// both handlers and wants the same bytes.
func TestJSONHandlerWritesWhatSlogWrites(t *testing.T) {
	at := time.Date(2026, 11, 23, 14, 25, 38, 123456789, time.FixedZone("x", 3600))
	cases := []struct {
		name  string
		with  []slog.Attr
		group string
		msg   string
		level slog.Level
		attrs []slog.Attr
	}{
		{name: "an access line", msg: "request", attrs: []slog.Attr{
			slog.String("log", "access"), slog.String("method", "GET"), slog.String("path", "/tasks/7"),
			slog.Int("status", 200), slog.String("decision", "authenticated"), slog.String("rule", "default"),
			slog.String("idp", "company"), slog.String("user", "alice@example.com"),
			slog.Float64("duration_seconds", 0.001234567), slog.Int64("bytes", 512),
			slog.String("request_id", "0123456789abcdef0123456789abcdef"), slog.String("client", "203.0.113.7")}},
		{name: "strings that need escaping", msg: "quote \" backslash \\ newline \n tab \t cr \r nul \x00 del \x7f", attrs: []slog.Attr{
			slog.String("path", "/a<b>&c/\u2028\u2029/é/日本"), slog.String("bad utf-8", "a\xffb\xc3"),
			slog.String("key \"quoted\"", "v"), slog.String("", "empty key")}},
		{name: "numbers as encoding/json writes them", msg: "n", level: slog.LevelWarn, attrs: []slog.Attr{
			slog.Float64("zero", 0), slog.Float64("small", 1e-7), slog.Float64("tiny", 5e-324), slog.Float64("big", 1e21),
			slog.Float64("int", 3), slog.Float64("neg", -0.5), slog.Float64("fraction", 1.0/3),
			slog.Int64("min", math.MinInt64), slog.Uint64("max", math.MaxUint64), slog.Bool("yes", true),
			slog.Duration("took", 1500*time.Millisecond)}},
		{name: "attrs given With before the record's", with: []slog.Attr{slog.String("idp", "company"), slog.Int("n", 1)},
			msg: "login", level: slog.LevelError, attrs: []slog.Attr{slog.String("reason", "state")}},
		{name: "values left to slog: error, list, time, group", msg: "mixed", attrs: []slog.Attr{
			slog.Any("err", errors.New("exchange code: <bad>")), slog.Any("roles", []string{"admin", "user"}),
			slog.Time("at", at), slog.Group("g", slog.String("k", "v")), slog.Float64("nan", math.NaN())}},
		{name: "a With attr left to slog", with: []slog.Attr{slog.Any("roles", []string{"a"})}, msg: "m",
			attrs: []slog.Attr{slog.String("k", "v")}},
		{name: "a group", group: "g", msg: "m", attrs: []slog.Attr{slog.String("k", "v")}},
		{name: "an empty attr is dropped", msg: "m", attrs: []slog.Attr{{}, slog.String("k", "v")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var want, got bytes.Buffer
			handlers := []slog.Handler{slog.NewJSONHandler(&want, nil), NewJSONHandler(&got, slog.LevelInfo)}
			for _, h := range handlers {
				if tc.with != nil {
					h = h.WithAttrs(tc.with)
				}
				if tc.group != "" {
					h = h.WithGroup(tc.group)
				}
				r := slog.NewRecord(at, tc.level, tc.msg, 0)
				r.AddAttrs(tc.attrs...)
				if err := h.Handle(context.Background(), r); err != nil {
					t.Fatal(err)
				}
			}
			if got.String() != want.String() {
				t.Fatalf("got  %s\nwant %s", got.String(), want.String())
			}
		})
	}
}

func TestJSONHandlerLevel(t *testing.T) {
	h := NewJSONHandler(&bytes.Buffer{}, slog.LevelWarn)
	if h.Enabled(context.Background(), slog.LevelInfo) || !h.Enabled(context.Background(), slog.LevelWarn) {
		t.Fatal("Enabled does not follow the level")
	}
}

// TestJSONHandlerIsAnSlogHandler runs the standard library's handler
// conformance test.
func TestJSONHandlerIsAnSlogHandler(t *testing.T) {
	var buf bytes.Buffer
	err := slogtest.TestHandler(NewJSONHandler(&buf, slog.LevelInfo), func() []map[string]any {
		var out []map[string]any
		for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
			m := map[string]any{}
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			out = append(out, m)
		}
		return out
	})
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkAccessLine is the access line of one request through slog's JSON
// handler and through NewJSONHandler.
func BenchmarkAccessLine(b *testing.B) {
	for _, bc := range []struct {
		name string
		h    slog.Handler
	}{
		{"slog", slog.NewJSONHandler(discard{}, nil)},
		{"flat", NewJSONHandler(discard{}, slog.LevelInfo)},
	} {
		b.Run(bc.name+"_handle", func(b *testing.B) {
			// As proxy's access line does: straight to the handler, no
			// runtime.Callers for a source nobody logs.
			b.ReportAllocs()
			for b.Loop() {
				if !bc.h.Enabled(context.Background(), slog.LevelInfo) {
					b.Fatal("disabled")
				}
				r := slog.NewRecord(time.Now(), slog.LevelInfo, "request", 0)
				r.AddAttrs(slog.String("log", "access"), slog.String("method", "GET"), slog.String("path", "/tasks"),
					slog.Int("status", 200), slog.String("decision", "authenticated"), slog.String("rule", "default"),
					slog.String("idp", "bench"), slog.String("user", "alice@example.com"),
					slog.Float64("duration_seconds", 0.001234567), slog.Int64("bytes", 512),
					slog.String("request_id", "0123456789abcdef0123456789abcdef"), slog.String("client", "127.0.0.1"))
				bc.h.Handle(context.Background(), r)
			}
		})
		b.Run(bc.name, func(b *testing.B) {
			log := slog.New(bc.h)
			b.ReportAllocs()
			for b.Loop() {
				log.LogAttrs(context.Background(), slog.LevelInfo, "request",
					slog.String("log", "access"), slog.String("method", "GET"), slog.String("path", "/tasks"),
					slog.Int("status", 200), slog.String("decision", "authenticated"), slog.String("rule", "default"),
					slog.String("idp", "bench"), slog.String("user", "alice@example.com"),
					slog.Float64("duration_seconds", 0.001234567), slog.Int64("bytes", 512),
					slog.String("request_id", "0123456789abcdef0123456789abcdef"), slog.String("client", "127.0.0.1"))
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
