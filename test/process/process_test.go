package process

import (
	"net"
	"strconv"
	"testing"
)

// A port from FreePort is below the ephemeral range, where no outgoing
// connection takes it as its source port, and free to listen on.
func TestFreePortIsBelowTheEphemeralRange(t *testing.T) {
	for range 20 {
		port := FreePort(t)
		if port < freePortBase || port >= ephemeralLow() {
			t.Fatalf("FreePort = %d, want in [%d, %d)", port, freePortBase, ephemeralLow())
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatalf("listen on FreePort's %d: %v", port, err)
		}
		l.Close()
	}
}
