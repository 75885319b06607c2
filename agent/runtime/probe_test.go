package runtime

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// listenAndClosed returns the address of a local listener that accepts and holds
// connections, and a closed port's address.
func listenAndClosed(t *testing.T) (open, closed string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	c, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed = c.Addr().String()
	c.Close()
	return l.Addr().String(), closed
}

func TestProbeUsesTheContainerAddress(t *testing.T) {
	r := &Runtime{}
	open, closed := listenAndClosed(t)
	ctx := context.Background()

	// A listener at the container's own address is ready at once, without
	// the hold on the published port.
	start := time.Now()
	if _, err := r.probeOnce(ctx, closed, open, ""); err != nil {
		t.Errorf("probe with a listener at the container address: %v", err)
	}
	if d := time.Since(start); d >= probeHold {
		t.Errorf("probe took %s: the direct connection should need no hold", d)
	}
	// Refused at the container's address: nothing listens, whatever the
	// published port does (Docker's proxy accepts every connection).
	_, err := r.probeOnce(ctx, open, closed, "")
	if err == nil || !strings.Contains(err.Error(), "nothing listens in the container yet") {
		t.Errorf("probe with nothing at the container address: %v, want nothing listens", err)
	}
	// No container address known: the published port decides, with the hold.
	if _, err := r.probeOnce(ctx, open, "", ""); err != nil {
		t.Errorf("probe of a held published port: %v", err)
	}
	if _, err := r.probeOnce(ctx, closed, "", ""); err == nil {
		t.Error("probe of a closed published port passed")
	}
}

func TestProbeFallsBackWhenTheContainerIsUnreachable(t *testing.T) {
	r := &Runtime{}
	open, closed := listenAndClosed(t)
	// 2001:db8::/32 is for documentation, never routed: the direct dial
	// times out or is unreachable, and the published port decides.
	via, err := r.probeOnce(context.Background(), open, "[2001:db8::1]:5000", "")
	if err != nil {
		t.Errorf("unreachable container address, held published port: %v", err)
	}
	if !strings.HasPrefix(via, "connect and hold ") {
		t.Errorf("probe went %q, want through the published port", via)
	}
	if _, err := r.probeOnce(context.Background(), closed, "[2001:db8::1]:5000", ""); err == nil {
		t.Error("unreachable container address, closed published port: passed")
	}
}
