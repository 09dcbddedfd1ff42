package jsonlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

// bothWrite logs the same thing through slog's JSON handler and through
// this package's, and returns the two outputs.
func bothWrite(t testing.TB, opts *slog.HandlerOptions, log func(slog.Handler)) (slogs, ours string) {
	t.Helper()
	var a, b bytes.Buffer
	log(slog.NewJSONHandler(&a, opts))
	log(New(&b, opts))
	return a.String(), b.String()
}

var when = time.Date(2026, 11, 23, 19, 4, 43, 123456789, time.FixedZone("CET", 3600))

func record(msg string, attrs ...slog.Attr) slog.Record {
	r := slog.NewRecord(when, slog.LevelInfo, msg, 0)
	r.AddAttrs(attrs...)
	return r
}

type valuer struct{}

func (valuer) LogValue() slog.Value { return slog.StringValue("resolved") }

func TestSameLinesAsSlog(t *testing.T) {
	accessLine := []slog.Attr{
		slog.String("method", "GET"), slog.String("path", "/api/tasks"), slog.Int("status", 200),
		slog.Int64("duration_us", 431), slog.Int64("bytes", 512),
		slog.String("request_id", "8c1f2a3b4d5e6f70"), slog.String("client", "127.0.0.1"),
		slog.String("idp", "oidc"), slog.String("user", "alice@example.com"),
	}
	cases := []struct {
		name string
		log  func(slog.Handler) error
	}{
		{"the access line", func(h slog.Handler) error {
			h = h.WithAttrs([]slog.Attr{slog.String("log", "access")}).
				WithAttrs([]slog.Attr{slog.String("decision", "bypass"), slog.String("rule", "api")})
			return h.Handle(context.Background(), record("request", accessLine...))
		}},
		{"a record without a time has no time key", func(h slog.Handler) error {
			return h.Handle(context.Background(), slog.NewRecord(time.Time{}, slog.LevelWarn, "m", 0))
		}},
		{"levels between the named ones", func(h slog.Handler) error {
			return h.Handle(context.Background(), slog.NewRecord(when, slog.LevelInfo+2, "m", 0))
		}},
		{"every kind this handler formats", func(h slog.Handler) error {
			return h.Handle(context.Background(), record("m",
				slog.Int64("i", math.MinInt64), slog.Uint64("u", math.MaxUint64), slog.Bool("b", true),
				slog.Duration("d", -3*time.Second), slog.Time("t", when), slog.String("", "empty key")))
		}},
		{"quotes, backslashes and control characters are escaped", func(h slog.Handler) error {
			return h.Handle(context.Background(), record("a \"quoted\"\n\r\t\b\f\x00\x1f\\ line",
				slog.String("k\"\x01", "<html> & 'x'\x7f")))
		}},
		{"invalid UTF-8 is written as U+FFFD, line and paragraph separators escaped", func(h slog.Handler) error {
			return h.Handle(context.Background(), record("ok é \xff \xe2\x80 \u2028\u2029 𝄞",
				slog.String("path", "/\xc3\x28/\u2029")))
		}},
		{"a float is slog's to write", func(h slog.Handler) error {
			return h.Handle(context.Background(), record("m", slog.String("a", "b"), slog.Float64("f", 1e21)))
		}},
		{"an error, a group and a LogValuer are slog's to write", func(h slog.Handler) error {
			return h.Handle(context.Background(), record("m", slog.Any("err", errors.New("boom")),
				slog.Group("g", slog.Int("n", 1)), slog.Any("v", valuer{}), slog.Attr{}))
		}},
		{"a year slog calls out of range is slog's to write", func(h slog.Handler) error {
			return h.Handle(context.Background(), record("m", slog.Time("t", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC))))
		}},
		{"a record time slog calls out of range is slog's to write", func(h slog.Handler) error {
			r := slog.NewRecord(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), slog.LevelInfo, "m", 0)
			r.AddAttrs(slog.String("a", "b"))
			return h.Handle(context.Background(), r)
		}},
		{"attributes only slog formats, bound with WithAttrs", func(h slog.Handler) error {
			h = h.WithAttrs([]slog.Attr{slog.String("a", "b"), slog.Float64("f", 0.5)}).WithAttrs([]slog.Attr{slog.Int("n", 2)})
			return h.Handle(context.Background(), record("m", slog.String("c", "d")))
		}},
		{"a group opened with WithGroup", func(h slog.Handler) error {
			h = h.WithAttrs([]slog.Attr{slog.String("a", "b")}).WithGroup("g").WithAttrs([]slog.Attr{slog.Int("n", 2)})
			return h.Handle(context.Background(), record("m", slog.String("c", "d")))
		}},
		{"handlers derived from one parent keep their own attributes", func(h slog.Handler) error {
			// The access log's handler is the parent of one per decision:
			// what one child bound must not show on another's lines,
			// whatever room the parent's formatted attributes left.
			var errs []error
			for n := range 64 {
				parent := h.WithAttrs([]slog.Attr{slog.String("log", strings.Repeat("p", n))})
				bypass := parent.WithAttrs([]slog.Attr{slog.String("decision", "bypass")})
				denied := parent.WithAttrs([]slog.Attr{slog.String("decision", "denied")})
				errs = append(errs, bypass.Handle(context.Background(), record("m")), denied.Handle(context.Background(), record("m")))
			}
			return errors.Join(errs...)
		}},
		{"WithAttrs of nothing and of an empty Attr", func(h slog.Handler) error {
			h = h.WithAttrs(nil).WithAttrs([]slog.Attr{{}})
			return h.Handle(context.Background(), record("m"))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			slogs, ours := bothWrite(t, nil, func(h slog.Handler) {
				if err := c.log(h); err != nil {
					t.Fatal(err)
				}
			})
			if ours != slogs {
				t.Errorf("lines differ\nslog: %s\nours: %s", slogs, ours)
			}
		})
	}
}

func TestHandleAttrsWritesWhatHandleWrites(t *testing.T) {
	cases := []struct {
		name  string
		time  time.Time
		attrs []slog.Attr
	}{
		{"the access line", when, []slog.Attr{
			slog.String("method", "GET"), slog.String("path", "/api/tasks"), slog.Int("status", 200),
			slog.Int64("duration_us", 431), slog.Int64("bytes", 512),
			slog.String("request_id", "8c1f2a3b4d5e6f70"), slog.String("client", "127.0.0.1"),
			slog.String("idp", "oidc"), slog.String("user", "al\"ice\n\xff"),
		}},
		{"no attributes", when, nil},
		{"no time", time.Time{}, []slog.Attr{slog.Int("n", 1)}},
		{"a time slog calls out of range", time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), []slog.Attr{slog.Int("n", 1)}},
		{"a float after what this handler formats", when, []slog.Attr{slog.String("a", "b"), slog.Float64("f", 0.1)}},
		{"an empty Attr and an empty group, which a Record drops", when, []slog.Attr{{}, slog.Group("g"), slog.Int("n", 1)}},
		{"a LogValuer and a group", when, []slog.Attr{slog.Any("v", valuer{}), slog.Group("g", slog.Int("n", 1))}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			slogs, ours := bothWrite(t, nil, func(h slog.Handler) {
				h = h.WithAttrs([]slog.Attr{slog.String("log", "access")})
				if fast, ok := h.(*Handler); ok { // as the proxy's access line does
					if err := fast.HandleAttrs(context.Background(), c.time, slog.LevelWarn, "request", c.attrs...); err != nil {
						t.Fatal(err)
					}
					return
				}
				r := slog.NewRecord(c.time, slog.LevelWarn, "request", 0)
				r.AddAttrs(c.attrs...)
				if err := h.Handle(context.Background(), r); err != nil {
					t.Fatal(err)
				}
			})
			if ours != slogs {
				t.Errorf("lines differ\nslog: %s\nours: %s", slogs, ours)
			}
		})
	}
	if _, ok := New(io.Discard, nil).WithAttrs([]slog.Attr{slog.String("log", "access")}).(*Handler); !ok {
		t.Error("the access line's handler has no HandleAttrs")
	}
}

func TestOptions(t *testing.T) {
	t.Run("records below the level are not enabled", func(t *testing.T) {
		h := New(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn})
		if h.Enabled(context.Background(), slog.LevelInfo) || !h.Enabled(context.Background(), slog.LevelWarn) {
			t.Error("Enabled does not follow the level")
		}
		if !New(io.Discard, nil).Enabled(context.Background(), slog.LevelInfo) {
			t.Error("no options: info is not enabled")
		}
	})
	t.Run("AddSource and ReplaceAttr get slog's handler", func(t *testing.T) {
		for _, opts := range []*slog.HandlerOptions{
			{AddSource: true},
			{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr { return a }},
		} {
			if _, ok := New(io.Discard, opts).(*slog.JSONHandler); !ok {
				t.Errorf("%+v: not slog's JSON handler", opts)
			}
		}
	})
}

// lineCounter fails the test if two Writes overlap, and counts the lines.
type lineCounter struct {
	t       *testing.T
	mu      sync.Mutex
	writing bool
	lines   int
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.writing {
		c.t.Error("two writes at once")
	}
	c.writing = true
	c.mu.Unlock()
	if !json.Valid(bytes.TrimSuffix(p, []byte("\n"))) || bytes.Count(p, []byte("\n")) != 1 {
		c.t.Errorf("not one JSON line: %q", p)
	}
	c.mu.Lock()
	c.writing, c.lines = false, c.lines+1
	c.mu.Unlock()
	return len(p), nil
}

// Lines this handler formats and lines it leaves to slog go to one writer
// one at a time, as all lines of one slog handler do.
func TestOneWriteAtATime(t *testing.T) {
	c := &lineCounter{t: t}
	h := New(c, nil).WithAttrs([]slog.Attr{slog.String("log", "access")})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 200 {
				attr := slog.Int("n", g)
				if g%2 == 0 {
					attr = slog.Float64("f", float64(g)) // slog's
				}
				if err := h.Handle(context.Background(), record("m", attr)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if c.lines != 8*200 {
		t.Errorf("%d lines, want %d", c.lines, 8*200)
	}
}

// A line longer than the buffers kept for reuse is written whole.
func TestLongLine(t *testing.T) {
	long := strings.Repeat("é\"", maxKeptBuffer)
	slogs, ours := bothWrite(t, nil, func(h slog.Handler) {
		for range 2 {
			_ = h.Handle(context.Background(), record(long, slog.String("k", long)))
		}
	})
	if ours != slogs {
		t.Errorf("a %d-byte line differs from slog's", len(slogs)/2)
	}
}

// FuzzSameLinesAsSlog holds the handler to slog's bytes for any text, number,
// time and level, with attributes bound by WithAttrs and in the record.
func FuzzSameLinesAsSlog(f *testing.F) {
	f.Add("request", "path", "/api/tasks", "user", "alice@example.com", int64(431), uint64(512), int64(time.Second), int64(1795460683123456789), 0, byte(0))
	f.Add("a \"b\"\n", "k\x00", "\xff\u2028\u2029", "", "\xe2\x80", int64(-1), uint64(0), int64(0), int64(0), 4, byte(0xff))
	f.Fuzz(func(t *testing.T, msg, k1, v1, k2, v2 string, i int64, u uint64, d, unixNano int64, level int, shape byte) {
		tm := time.Unix(0, unixNano).In(time.FixedZone("z", int(u%(26*3600))-13*3600))
		attrs := []slog.Attr{
			slog.String(k1, v1), slog.Int64(k2, i), slog.Uint64(k1, u), slog.Bool(k2, i%2 == 0),
			slog.Duration(k1, time.Duration(d)), slog.Time(k2, tm), slog.String(k2, v2),
		}
		if shape&1 != 0 {
			attrs = append(attrs, slog.Float64(k1, float64(i)/3)) // slog's
		}
		bound, inRecord := attrs[:int(shape>>1)%len(attrs)], attrs[int(shape>>1)%len(attrs):]
		slogs, ours := bothWrite(t, nil, func(h slog.Handler) {
			h = h.WithAttrs(bound)
			if shape&0x80 != 0 {
				h = h.WithGroup(k2)
			}
			r := slog.NewRecord(tm, slog.Level(level), msg, 0)
			if shape&0x40 != 0 {
				r.Time = time.Time{}
			}
			r.AddAttrs(inRecord...)
			_ = h.Handle(context.Background(), r)
		})
		if ours != slogs {
			t.Errorf("lines differ\nslog: %q\nours: %q", slogs, ours)
		}
		// The same line through HandleAttrs, where the handler has it.
		var b bytes.Buffer
		h := New(&b, nil).WithAttrs(bound)
		if shape&0x80 != 0 {
			h = h.WithGroup(k2)
		}
		if fast, ok := h.(*Handler); ok {
			t0 := tm
			if shape&0x40 != 0 {
				t0 = time.Time{}
			}
			_ = fast.HandleAttrs(context.Background(), t0, slog.Level(level), msg, inRecord...)
			if b.String() != slogs {
				t.Errorf("HandleAttrs: lines differ\nslog: %q\nours: %q", slogs, b.String())
			}
		}
	})
}

// BenchmarkAccessLine formats the proxy's access line, through slog's JSON
// handler and through this package's, to io.Discard.
func BenchmarkAccessLine(b *testing.B) {
	for _, c := range []struct {
		name string
		h    slog.Handler
	}{
		{"slog", slog.NewJSONHandler(io.Discard, nil)},
		{"jsonlog", New(io.Discard, nil)},
	} {
		b.Run(c.name, func(b *testing.B) {
			h := c.h.WithAttrs([]slog.Attr{slog.String("log", "access")}).
				WithAttrs([]slog.Attr{slog.String("decision", "bypass"), slog.String("rule", "api-credentials")})
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				r := slog.NewRecord(when, slog.LevelInfo, "request", 0)
				r.AddAttrs(slog.String("method", "GET"), slog.String("path", "/api/tasks"), slog.Int("status", 200),
					slog.Int64("duration_us", 431), slog.Int64("bytes", 512),
					slog.String("request_id", "8c1f2a3b4d5e6f708192a3b4c5d6e7f8"), slog.String("client", "127.0.0.1"))
				_ = h.Handle(ctx, r)
			}
		})
	}
	b.Run("jsonlog_HandleAttrs", func(b *testing.B) {
		h := New(io.Discard, nil).WithAttrs([]slog.Attr{slog.String("log", "access")}).
			WithAttrs([]slog.Attr{slog.String("decision", "bypass"), slog.String("rule", "api-credentials")}).(*Handler)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			attrs := [...]slog.Attr{slog.String("method", "GET"), slog.String("path", "/api/tasks"), slog.Int("status", 200),
				slog.Int64("duration_us", 431), slog.Int64("bytes", 512),
				slog.String("request_id", "8c1f2a3b4d5e6f708192a3b4c5d6e7f8"), slog.String("client", "127.0.0.1")}
			_ = h.HandleAttrs(ctx, when, slog.LevelInfo, "request", attrs[:]...)
		}
	})
}
