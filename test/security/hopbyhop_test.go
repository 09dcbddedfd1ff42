package security

import (
	"fmt"
	"strings"
	"testing"
)

// A client's Connection header names headers a proxy must drop on the way
// (hop-by-hop). It must never make the proxy drop what it set itself
// (identity, X-Forwarded-*) nor what a rule decided on.
func TestHopByHopAbuse(t *testing.T) {
	bob := sessionFor(t, "bob")
	bobWant := map[string]string{"X-Email": "bob@example.com", "X-Groups": "user", "X-Portcullis-Assertion": "jwt"}
	named := []string{
		"X-Email", "X-Groups", "X-Portcullis-Assertion", "x-email", "X_Email",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded",
		"X-Email, X-Groups, X-Portcullis-Assertion", "close, X-Email", "keep-alive, X-Groups",
		"Upgrade, X-Email", "Authorization", "Cookie", "Host", "Content-Length",
		// Header names are case-insensitive here as on the way upstream.
		"authorization", "cookie",
	}
	type context struct {
		name    string
		target  string
		headers []string
		want    map[string]string
	}
	contexts := []context{
		{"authenticated", "/app/page", []string{"Cookie: " + bob}, bobWant},
		{"bypass", "/public/page", nil, nil},
		{"credentials bypass", "/api/tasks", []string{"Authorization: Bearer api-token"}, nil},
	}
	for _, c := range contexts {
		for _, n := range named {
			for _, form := range []string{"one Connection header", "second Connection header"} {
				t.Run(fmt.Sprintf("%s/Connection naming %s in a %s", c.name, n, form), func(t *testing.T) {
					h := append([]string{}, c.headers...)
					if form == "one Connection header" {
						h = append(h, "Connection: "+n)
					} else {
						h = append(h, "Connection: keep-alive", "Connection: "+n)
					}
					h = append(h, "X-Email: "+spoofed, "X-Forwarded-For: 10.9.9.9", "X-Forwarded-Host: evil.example", "X-Forwarded-Proto: https", "Forwarded: for=10.9.9.9;host=evil.example")
					r := do(t, rq{target: c.target, headers: h})
					if (strings.EqualFold(n, "Authorization") || strings.EqualFold(n, "Cookie")) && len(r.Upstream) == 0 {
						// Refusing is right: the client made its credentials
						// hop-by-hop, so the proxy does not decide on them.
						refusedCleanly(t, r, "request whose credentials are hop-by-hop")
						return
					}
					checkIdentity(t, r, c.want)
					s := r.Upstream[0]
					for name, want := range map[string]string{
						"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": suite.proxy, "X-Forwarded-Proto": "http",
					} {
						if got := s.Values(name); len(got) != 1 || got[0] != want {
							t.Errorf("upstream got %s = %q, want exactly [%q]", name, got, want)
						}
					}
					if got := s.Values("Forwarded"); len(got) > 0 {
						t.Errorf("upstream got the client's Forwarded header %q", got)
					}
					// The credentials the bypass rule matched on are what the
					// upstream must check; dropping them would hand the
					// upstream an anonymous request the rule never allowed.
					if c.name == "credentials bypass" {
						if got := s.Values("Authorization"); len(got) != 1 || got[0] != "Bearer api-token" {
							t.Errorf("upstream got Authorization = %q, want the credentials the rule matched", got)
						}
					}
				})
			}
		}
	}
}
