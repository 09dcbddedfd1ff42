package proxy

import (
	"net/http"
	"testing"
)

// A path_regex bypass is matched on the normalized path alone, the one the
// upstream gets: never on the query (oauth2-proxy's skip_auth_routes matched
// path and query, GHSA-7rh7-c77v-6434), never on a path a header names
// (X-Forwarded-Uri from any peer, GHSA-7x63-xv5r-3p2x), and a # in the
// request line, which the rule reads as part of the path, reaches the
// upstream escaped, never as a fragment that would cut the path short
// (GHSA-pxq7-h93f-9jrg).
func TestRegexBypassSeesOnlyThePathTheUpstreamGets(t *testing.T) {
	f := newFixtureWith(t, `  - name: widened
    path_regex: /foo/.*/bar
    action: bypass
`)
	for _, tc := range []struct {
		name, target string
		peer         string   // RemoteAddr; 10.0.0.0/8 is a trusted proxy
		headers      []string // name, value, ...
		status       int
		upstream     string // the request-target the upstream gets; "" for none
	}{
		{name: "the rule's own path is bypassed", target: "/foo/a/bar", status: http.StatusOK, upstream: "/foo/a/bar"},
		{name: "the rule's end in the query does not bypass", target: "/foo/secret?x=/bar", status: http.StatusUnauthorized},
		{name: "the rule's end as the whole query does not bypass", target: "/foo/secret?/bar", status: http.StatusUnauthorized},
		{name: "a raw # is part of the path and reaches the upstream escaped", target: "/foo/secret#/bar", status: http.StatusOK, upstream: "/foo/secret%23/bar"},
		{name: "an encoded # is the same path", target: "/foo/secret%23/bar", status: http.StatusOK, upstream: "/foo/secret%23/bar"},
		{name: "X-Forwarded-Uri naming a bypassed path does not bypass", target: "/foo/secret",
			headers: []string{"X-Forwarded-Uri", "/foo/a/bar"}, status: http.StatusUnauthorized},
		{name: "X-Forwarded-Uri from a trusted proxy does not bypass either", target: "/foo/secret", peer: "10.1.2.3:5555",
			headers: []string{"X-Forwarded-Uri", "/foo/a/bar"}, status: http.StatusUnauthorized},
		{name: "X-Original-URL and X-Rewrite-URL do not bypass", target: "/foo/secret", peer: "10.1.2.3:5555",
			headers: []string{"X-Original-URL", "/foo/a/bar", "X-Rewrite-URL", "/foo/a/bar", "X-Forwarded-Path", "/foo/a/bar"}, status: http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := request("GET", tc.target, nil, append([]string{"Accept", "application/json"}, tc.headers...)...)
			r.RemoteAddr = tc.peer
			resp, got, reached := f.do(t, r)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.upstream == "" {
				if reached {
					t.Fatalf("the upstream got %q; want nothing", got.RequestURI)
				}
				return
			}
			if !reached || got.RequestURI != tc.upstream {
				t.Fatalf("the upstream got %q (reached %v), want %q", got.RequestURI, reached, tc.upstream)
			}
		})
	}
}
