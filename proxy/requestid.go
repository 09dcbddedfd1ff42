package proxy

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
)

// requestIDHeader carries a request's ID: taken from a trusted proxy in front,
// or made here, then passed upstream and returned to the client, so one ID
// ties the access line, the upstream's logs and a user's bug report together.
const requestIDHeader = "X-Request-Id"

// maxRequestIDLen bounds an ID a trusted peer sends; longer ones are replaced.
const maxRequestIDLen = 128

// requestID is the ID of r: the one a trusted peer (server.trusted_proxies)
// sent when it looks like an ID, else a fresh one. A client that is not a
// trusted proxy never picks the ID that appears in the logs.
func (h *Handler) requestID(r *http.Request) string {
	if h.trustedPeer(r) {
		if id := r.Header.Get(requestIDHeader); validRequestID(id) {
			return id
		}
	}
	return newRequestID()
}

// newRequestID is 16 random bytes in hex. An ID needs to be unique, not
// secret: math/rand/v2's generator (ChaCha8, seeded by the runtime from the
// system's randomness, one per thread) gives that at a fraction of
// crypto/rand's cost, which showed in profiles of every request.
func newRequestID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

// validRequestID accepts the characters request IDs are made of (UUIDs,
// hex, base64url, traceparent-like dotted or colon forms) and nothing that
// could forge a log line or a header.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '.', c == ':', c == '=', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}
