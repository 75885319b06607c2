package runtime_test

import (
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/deis/deis/agent/runtime"
	"github.com/deis/deis/agent/runtime/runtimetest"
	"github.com/deis/deis/pkg/state"
)

// freeRange finds n consecutive host ports that can be bound now, above
// Linux's ephemeral range and below nothing else the platform uses.
func freeRange(t *testing.T, n int) runtime.PortRange {
	t.Helper()
	for try := 0; try < 50; try++ {
		base := 61000 + rand.IntN(4000)
		ok := true
		for p := base; p < base+n && ok; p++ {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok {
			return runtime.PortRange{Min: base, Max: base + n - 1}
		}
	}
	t.Skip("no free range of host ports")
	return runtime.PortRange{}
}

// A port Docker refuses as taken is given up for another one of the range;
// when none is left, the container's status says so and what to do.
func TestHostPortCollisions(t *testing.T) {
	d := runtimetest.New()
	defer d.Close()
	e := newEnv(t, d)
	rng := freeRange(t, 3)
	e.cfg.PortRange = rng
	d.TakenPorts = map[int]bool{rng.Min: true, rng.Min + 1: true}
	e.assign(imageSpec("a.v1.web.1", 1))
	e.start()
	st := e.waitStatus("a.v1.web.1 ready", readyIn("a.v1.web.1"))
	c, _ := find(st, "a.v1.web.1")
	if want := net.JoinHostPort("127.0.0.1", strconv.Itoa(rng.Max)); c.Addr != want {
		t.Errorf("address %s, want the one port Docker does not refuse, %s", c.Addr, want)
	}

	// Every other port of the range is taken.
	e.assign(imageSpec("a.v1.web.1", 1), imageSpec("b.v1.web.1", 1))
	want := "no free host port in --port-range " + rng.String() + " on 127.0.0.1"
	st = e.waitStatus("b.v1.web.1 without a port", func(st state.NodeStatus) bool {
		b, ok := find(st, "b.v1.web.1")
		return ok && strings.Contains(b.Reason, want)
	})
	if b, _ := find(st, "b.v1.web.1"); b.State != state.StateStarting || !strings.Contains(b.Reason, "widen --port-range or free ports") {
		t.Errorf("b.v1.web.1: %+v", b)
	}
}
