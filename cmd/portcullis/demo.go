package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	demostack "github.com/portcullis-proxy/portcullis/cmd/portcullis/demo"
)

// demo runs `portcullis demo` until Ctrl-C: the embedded identity provider,
// the echo upstream and the proxy, with nothing to configure.
func demo(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo", stderr)
	listen := fs.String("listen", demostack.DefaultListen, "the proxy's address (port 0 picks a free one)")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	printConfig := fs.Bool("print-config", false, "also print the configuration the demo runs with")
	if fs.Parse(args) != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "portcullis demo: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	log, err := newLogger(stderr, "text", *level)
	if err != nil {
		fmt.Fprintln(stderr, "portcullis demo:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first Ctrl-C, a second one ends the process at once.
		<-ctx.Done()
		stop()
	}()
	opts := demostack.Options{Listen: *listen, Logger: log}
	if *printConfig {
		opts.Ready = func(info *demostack.Info) { fmt.Fprintf(stdout, "\n%s", info.Config) }
	}
	if err := demostack.Run(ctx, opts, stdout); err != nil {
		fmt.Fprintln(stderr, "portcullis:", err)
		return 1
	}
	return 0
}
