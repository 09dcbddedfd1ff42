// Command profproxy is portcullis serve with net/http/pprof on a separate
// loopback listener, for profiling the proxy under the load run's load
// (test/bench/run.sh with PROFILE=1). It logs as `portcullis serve` does by
// default (JSON at info, batched to stderr), so the profile counts the
// access log, and sets the same garbage-collector target.
// It is never shipped.
package main

import (
	"bufio"
	"context"
	"flag"
	"log"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy"
	"github.com/portcullis-proxy/portcullis/proxy/jsonlog"
)

func main() {
	path := flag.String("config", "portcullis.yaml", "configuration file")
	pprofAddr := flag.String("pprof", "127.0.0.1:19779", "address of the pprof endpoints")
	flag.Parse()
	cfg, err := proxy.LoadConfig(*path, os.Getenv)
	if err == nil {
		err = proxy.Check(cfg)
	}
	if err != nil {
		log.Fatalf("config: %v", err)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200) // as portcullis serve does (cmd/portcullis, gcPercent)
	}
	go func() { log.Println(http.ListenAndServe(*pprofAddr, nil)) }()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Buffered like `portcullis serve`'s batching line writer, so that the
	// profile is not of one write(2) per access line.
	out := bufio.NewWriterSize(os.Stderr, 64<<10)
	defer out.Flush()
	logger := slog.New(jsonlog.New(out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := proxy.Run(ctx, cfg, proxy.ServeOptions{Log: logger, Grace: time.Second, ConfigPath: *path}); err != nil {
		log.Fatal(err)
	}
}
