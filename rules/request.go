package rules

import (
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/portcullis-proxy/portcullis/idp"
)

// Request is a client request as rules and expressions see it: the
// normalized path, the client address the proxy decided to believe, and the
// headers. Build it with NewRequest, once per request.
type Request struct {
	Method string `expr:"method"`
	// Path is the normalized, decoded path (see CleanPath): the same path
	// the upstream gets.
	Path string `expr:"path"`
	Host string `expr:"host"`
	// Source is the client IP as text; empty when it is unknown (a trusted
	// proxy forwarded one that does not parse).
	Source string `expr:"source"`
	// Headers maps each canonical header name to its values joined with
	// ", ". It is filled only before an expression that reads it runs, so
	// that matching stays free of allocations for sets that never look at it.
	Headers map[string]string `expr:"headers"`

	addr   netip.Addr
	header http.Header
}

// NewRequest describes r for matching. path is the result of CleanPath on
// r's escaped path and source the client address (already resolved
// through trusted proxies by the caller).
func NewRequest(r *http.Request, path string, source netip.Addr) *Request {
	req := new(Request)
	req.Init(r, path, source)
	return req
}

// Init is NewRequest into a Request the caller keeps, such as a field of its
// own per-request state: one allocation less on every request.
func (req *Request) Init(r *http.Request, path string, source netip.Addr) {
	// Rules compare plain addresses: an IPv4 client seen on a dual-stack
	// listener must match IPv4 CIDRs, and a zone never belongs to a CIDR.
	addr := source.Unmap().WithZone("")
	*req = Request{
		Method: r.Method,
		Path:   path,
		Host:   r.Host,
		addr:   addr,
		header: r.Header,
	}
	if addr.IsValid() {
		req.Source = addr.String()
	}
}

// Addr is the client address that source rules match against.
func (r *Request) Addr() netip.Addr { return r.addr }

// fillHeaders builds Headers from the raw header the first time an
// expression needs it.
func (r *Request) fillHeaders() {
	if r.Headers != nil || r.header == nil {
		return
	}
	r.Headers = make(map[string]string, len(r.header))
	for name, values := range r.header {
		// A key that net/http did not canonicalize was not parsed from the
		// wire the usual way; header rules ignore it, and so do expressions.
		if http.CanonicalHeaderKey(name) != name {
			continue
		}
		r.Headers[name] = strings.Join(values, ", ")
	}
}

// Env is what `when` and `allow_if` expressions see: every profile field by
// its own name (email, groups, roles, claims, ...), the request and the time.
// For `when`, which runs before any login, the profile is empty.
type Env struct {
	idp.Profile
	Request *Request  `expr:"request"`
	Now     time.Time `expr:"now"`
}
