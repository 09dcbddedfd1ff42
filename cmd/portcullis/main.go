// Command portcullis is an identity-aware reverse proxy: it logs browsers in
// at an identity provider and forwards their requests to an application with
// the identity headers it trusts.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy"
	"github.com/portcullis-proxy/portcullis/proxy/jsonlog"
)

const usage = `portcullis — an identity-aware reverse proxy

Usage:
  portcullis serve   [--config FILE] [--log-format json|text] [--log-level LEVEL]
                     [--grace 30s] [--watch-interval 1s]
  portcullis check   [--config FILE]
  portcullis explain [--config FILE] [--claims FILE.json] [--idp ID] [--source IP] METHOD URL [-H 'Name: value']...
  portcullis demo    [--listen ADDR] [--log-level LEVEL] [--print-config]
  portcullis sessions list|revoke --user EMAIL [--config FILE]   (session.store redis)
  portcullis health  [--config FILE | --url http://HOST:PORT] [--live] [--timeout 3s]
  portcullis keys
  portcullis version

FILE defaults to $PORTCULLIS_CONFIG, then ./portcullis.yaml.
health exits 0 when the admin listener (server.admin_listen, a wildcard address
dialled on 127.0.0.1) answers 200 on /readyz, or with --live on /healthz.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(rest, stderr)
	case "check":
		return check(rest, stdout, stderr)
	case "explain":
		return explain(rest, stdout, stderr)
	case "demo":
		return demo(rest, stdout, stderr)
	case "sessions":
		return sessions(rest, stdout, stderr)
	case "health":
		return health(rest, stdout, stderr)
	case "keys":
		fmt.Fprintln(stdout, newKey())
		return 0
	case "version", "--version":
		printVersion(stdout)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "portcullis: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// configFlag adds --config with the documented fallbacks: FILE, else
// $PORTCULLIS_CONFIG, else portcullis.yaml. Its help says so itself, with
// the variable's value when it has one: flag's own "(default …)" names only
// the value the default has, portcullis.yaml wherever the variable is unset.
func configFlag(fs *flag.FlagSet) *string {
	path := os.Getenv("PORTCULLIS_CONFIG")
	help := "configuration `FILE` (default $PORTCULLIS_CONFIG, else portcullis.yaml)"
	if path == "" {
		path = "portcullis.yaml"
	} else {
		help = strings.TrimSuffix(help, ")") + fmt.Sprintf("; $PORTCULLIS_CONFIG is %q)", path)
	}
	// A flag.Func's default prints as none, so only help names one.
	fs.Func("config", help, func(s string) error {
		path = s
		return nil
	})
	return &path
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func serve(args []string, stderr io.Writer) int {
	fs := newFlags("serve", stderr)
	path := configFlag(fs)
	format := fs.String("log-format", "json", "log format: json or text")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	grace := fs.Duration("grace", 30*time.Second, "how long to let requests in flight finish on shutdown")
	poll := fs.Duration("watch-interval", time.Second, "how often to check the config file for changes (0 or less: only reload on SIGHUP)")
	if fs.Parse(args) != nil {
		return 2
	}
	tuneGC(os.Getenv)
	// Access lines come one per request: batched, they cost one write(2)
	// per batch instead of one per request.
	out := NewLineWriter(stderr)
	defer out.Close()
	log, err := newLogger(out, *format, *level)
	if err != nil {
		fmt.Fprintln(stderr, "portcullis:", err)
		return 2
	}
	cfg, err := loadChecked(*path)
	if err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *poll <= 0 {
		*poll = -1 // proxy.ServeOptions reads 0 as the default
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	err = proxy.Run(ctx, cfg, proxy.ServeOptions{
		Log: log, Grace: *grace,
		ConfigPath: *path, Getenv: os.Getenv, Reload: hup, PollInterval: *poll,
	})
	if err != nil {
		log.Error("portcullis stopped", "err", err)
		return 1
	}
	return 0
}

// gcPercent is the garbage collector's target of `portcullis serve` when
// the operator has not set GOGC: heap growth of 200 % between collections
// instead of Go's 100 %. A proxy's garbage is the short-lived garbage of
// requests and its live heap is small (sessions travel in cookies or live in
// Redis), so collecting half as often costs a few MiB and saves a tenth of
// the CPU per request under load (issue 6; README, Performance). GOGC, and
// GOMEMLIMIT in a container with a memory limit, keep their usual meaning.
const gcPercent = 200

// tuneGC sets gcPercent unless GOGC is set.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(jsonlog.New(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: want json or text, got %q", format)
}

func loadChecked(path string) (*proxy.Config, error) {
	cfg, err := proxy.LoadConfig(path, os.Getenv)
	if err != nil {
		return nil, err
	}
	if err := proxy.Check(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// printProblems prints every configuration problem on a line of its own.
func printProblems(w io.Writer, path string, err error) {
	fmt.Fprintf(w, "%s: configuration has problems:\n", path)
	for _, e := range flatten(err) {
		fmt.Fprintln(w, "  "+e.Error())
	}
}

// flatten lists the problems joined in err, however deep the joins.
func flatten(err error) []error {
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		return []error{err}
	}
	var out []error
	for _, e := range joined.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

func check(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", stderr)
	path := configFlag(fs)
	if fs.Parse(args) != nil {
		return 2
	}
	cfg, err := proxy.LoadConfig(*path, os.Getenv)
	if err == nil {
		// What serve would refuse at start besides the configuration itself.
		err = errors.Join(proxy.Check(cfg), proxy.CheckCertificate(cfg))
	}
	if cfg != nil {
		printWarnings(stderr, *path, proxy.Warnings(cfg))
	}
	if err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	printRegistrations(stdout, proxy.Registrations(cfg))
	return 0
}

// printWarnings prints each warning on a line of its own, on stderr: they
// do not fail the check, and stdout stays what a script reads ("FILE: ok"
// first, then the URLs to register).
func printWarnings(w io.Writer, path string, warnings []proxy.Warning) {
	for _, warning := range warnings {
		fmt.Fprintf(w, "%s: warning: %s\n", path, warning)
	}
}

// printRegistrations lists what to enter at each IdP, each URL on a line of
// its own to copy.
func printRegistrations(w io.Writer, regs []proxy.Registration) {
	fmt.Fprintln(w, "\nRegister at each identity provider, exactly as written:")
	for _, r := range regs {
		if len(r.URLs) == 0 {
			fmt.Fprintf(w, "  %s (%s): nothing to register\n", r.IdP, r.Protocol)
			continue
		}
		fmt.Fprintf(w, "  %s (%s):\n", r.IdP, r.Protocol)
		for _, u := range r.URLs {
			fmt.Fprintf(w, "    %s:\n      %s\n", u.What, u.URL)
		}
	}
}

// headerFlags collects repeated -H 'Name: value' flags.
type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

func explain(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("explain", stderr)
	path := configFlag(fs)
	claimsFile := fs.String("claims", "", "JSON file with the user's claims as the IdP sends them (SAML, LDAP: attribute name -> string or list of strings; NameID, dn)")
	source := fs.String("source", "127.0.0.1", "the address the request comes from; when it is one of server.trusted_proxies, the client is the one its X-Forwarded-For names, as serve reads it")
	idpID := fs.String("idp", "", "the IdP whose claim mapping and admission rules apply to --claims (default: the first)")
	var headers headerFlags
	fs.Var(&headers, "H", "request header 'Name: value' (repeatable)")
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(rest) != 2 {
		fmt.Fprintln(stderr, "usage: portcullis explain [--config FILE] [--claims FILE.json] [--idp ID] [--source IP] METHOD URL [-H 'Name: value']...")
		return 2
	}
	// Checked here, as check does, so that what Explain refuses later is
	// the arguments' fault (--idp, --claims), not the file's.
	cfg, err := loadChecked(*path)
	if err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	// The method as given: the proxy refuses a lower-case one (400), and so
	// does the explanation.
	var lines []string
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			fmt.Fprintf(stderr, "portcullis explain: -H %q: want 'Name: value'\n", h)
			return 2
		}
		lines = append(lines, strings.TrimSpace(name)+":"+value)
	}
	req, err := proxy.ExplainRequest(cfg, rest[0], rest[1], lines)
	if err != nil {
		fmt.Fprintln(stderr, "portcullis explain:", err)
		return 2
	}
	src, err := netip.ParseAddr(*source)
	if err != nil {
		fmt.Fprintln(stderr, "portcullis explain: --source:", err)
		return 2
	}
	var claims map[string]any
	if *claimsFile != "" {
		raw, err := os.ReadFile(*claimsFile)
		if err == nil {
			err = json.Unmarshal(raw, &claims)
		}
		if err != nil {
			fmt.Fprintln(stderr, "portcullis explain: --claims:", err)
			return 2
		}
		if claims == nil {
			claims = map[string]any{}
		}
	}
	e, err := proxy.Explain(cfg, req, src, claims, *idpID)
	if err != nil {
		fmt.Fprintln(stderr, "portcullis explain:", err)
		return 1
	}
	target := rest[1]
	if strings.HasPrefix(target, "/") {
		target = strings.TrimSuffix(cfg.Server.PublicURL, "/") + target
	}
	printExplanation(stdout, rest[0], target, e)
	return 0
}

// parseInterspersed parses fs's flags wherever they stand among the
// positional arguments, as curl users expect (`explain GET URL -H ...`), and
// returns the positional ones in order. After "--" everything is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(positional, rest...), nil
		}
		if len(rest) == 0 {
			return positional, nil
		}
		positional, args = append(positional, rest[0]), rest[1:]
	}
}

// printExplanation prints e, the explanation of method and target (a URL).
func printExplanation(w io.Writer, method, target string, e *proxy.Explanation) {
	fmt.Fprintf(w, "request:   %s %s\n", method, target)
	if len(e.Stripped) > 0 {
		fmt.Fprintf(w, "stripped:  %s\n", strings.Join(e.Stripped, ", "))
	}
	if e.Path != "" {
		fmt.Fprintf(w, "path:      %s\n", e.Path)
	}
	if e.Rule != "" {
		fmt.Fprintf(w, "rule:      %s (%s)\n", e.Rule, e.Action)
	}
	fmt.Fprintf(w, "decision:  %s — %s\n", e.Decision, e.Reason)
	if e.Roles != nil {
		fmt.Fprintf(w, "roles:     %s\n", strings.Join(e.Roles, ", "))
	}
	if len(e.Missing) > 0 {
		var missing []string
		for _, field := range slices.Sorted(maps.Keys(e.Missing)) {
			missing = append(missing, field+" ("+e.MissingFrom+" "+e.Missing[field]+")")
		}
		fmt.Fprintf(w, "missing:   %s\n", strings.Join(missing, ", "))
		fmt.Fprintf(w, "hint:      %s\n", e.MissingHint)
	}
	if len(e.Headers) > 0 {
		fmt.Fprintln(w, "headers:")
		for _, name := range slices.Sorted(maps.Keys(e.Headers)) {
			fmt.Fprintf(w, "  %s: %s\n", name, e.Headers[name])
		}
	}
}

// newKey is a fresh random session key: 32 bytes, standard base64.
func newKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func printVersion(w io.Writer) {
	fmt.Fprintf(w, "portcullis %s (%s, %s/%s)\n", proxy.Version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" || s.Key == "vcs.time" || s.Key == "vcs.modified" {
				fmt.Fprintf(w, "  %s: %s\n", s.Key, s.Value)
			}
		}
	}
}
