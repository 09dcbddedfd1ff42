package proxy

import (
	"context"
	"net"
	"time"
)

// ServeOn runs the proxy and admin servers on listeners the caller already
// opened, until ctx ends, then shuts them down as Serve does. `portcullis
// demo` uses it: it must know the proxy's address (public_url, the SAML ACS)
// before it can write the configuration, so it listens first.
func (h *Handler) ServeOn(ctx context.Context, proxyLn, adminLn net.Listener, grace time.Duration) error {
	return h.serveOn(ctx, proxyLn, adminLn, grace)
}
