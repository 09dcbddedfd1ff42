package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/portcullis-proxy/portcullis/proxy"
)

// healthBodyLimit is how much of a failing answer's body `portcullis health`
// quotes: /readyz lists what is missing there, which is what an operator
// reading `docker inspect` wants to see.
const healthBodyLimit = 512

// health asks the admin listener of a running portcullis whether it is ready
// for traffic (/readyz) or, with --live, alive (/healthz), and exits 0 on
// 200, 1 otherwise: the image's HEALTHCHECK, since distroless has no HTTP
// client to run one with.
//
// The address is the config's server.admin_listen, read by
// proxy.LoadAdminListen without the rest of the file, so that a secret
// missing from the checker's environment does not fail the check; or --url,
// and then the config is not read at all.
func health(args []string, stdout, stderr io.Writer) int {
	const usageLine = "usage: portcullis health [--config FILE] [--url http://HOST:PORT] [--live] [--timeout 3s]"
	fs := newFlags("health", stderr)
	path := configFlag(fs)
	base := fs.String("url", "", "the admin listener as http://HOST:PORT, instead of the config's server.admin_listen")
	live := fs.Bool("live", false, "check /healthz (the process answers) instead of /readyz (ready for traffic)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if fs.Parse(args) != nil {
		return 2
	}
	if fs.NArg() > 0 || *timeout <= 0 {
		fmt.Fprintln(stderr, usageLine)
		return 2
	}
	endpoint := "/readyz"
	if *live {
		endpoint = "/healthz"
	}

	var target string
	if *base != "" {
		u, err := url.Parse(*base)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			fmt.Fprintf(stderr, "portcullis health: --url %q: want the admin listener as http://HOST:PORT (--live picks /healthz)\n", *base)
			return 2
		}
		target = u.Scheme + "://" + u.Host + endpoint
	} else {
		listen, err := proxy.LoadAdminListen(*path, os.Getenv)
		if err != nil {
			fmt.Fprintf(stderr, "portcullis health: %s: %v\n", *path, err)
			return 1
		}
		addr, err := adminDialAddress(listen)
		if err != nil {
			fmt.Fprintf(stderr, "portcullis health: %s: server.admin_listen: %v\n", *path, err)
			return 1
		}
		target = "http://" + addr + endpoint
	}

	client := &http.Client{
		Timeout: *timeout,
		// Never through $HTTP_PROXY, and a redirect is an answer, not a
		// place to go: the admin listener redirects nowhere.
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Get(target)
	if err != nil {
		fmt.Fprintln(stderr, "portcullis health:", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		fmt.Fprintf(stdout, "GET %s: %s\n", target, resp.Status)
		return 0
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, healthBodyLimit+1))
	fmt.Fprintf(stderr, "portcullis health: GET %s: %s%s\n", target, resp.Status, oneLine(body))
	return 1
}

// adminDialAddress is where to reach an admin listener that listens on addr
// (server.admin_listen) from the same host: a wildcard address (":9773",
// "0.0.0.0:9773", "[::]:9773") is dialled on 127.0.0.1. That reaches "[::]"
// too, which Go listens on dual-stack, whereas ::1 need not exist (Docker
// turns IPv6 off in containers on networks without it).
func adminDialAddress(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("not a host:port address: %q", addr)
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// oneLine is an answer's body for the end of a one-line message: ": " and
// the body with its whitespace collapsed, cut at healthBodyLimit bytes.
func oneLine(body []byte) string {
	cut := len(body) > healthBodyLimit
	if cut {
		body = body[:healthBodyLimit]
	}
	printable := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, string(bytes.ToValidUTF8(body, nil)))
	s := strings.Join(strings.Fields(printable), " ")
	if s == "" {
		return ""
	}
	if cut {
		s += "…"
	}
	return ": " + s
}
