package runtime_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/agent/runtime"
	"github.com/deis/deis/agent/runtime/runtimetest"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
	"github.com/prometheus/client_golang/prometheus"
)

// sandboxes lists the ids of node's network sandboxes (running only, or
// all).
func sandboxes(t *testing.T, node string, all bool) []string {
	args := []string{"ps", "-q", "--no-trunc", "--filter", "label=deis.node=" + node, "--filter", "label=deis.sandbox=1"}
	if all {
		args = append(args, "-a")
	}
	return strings.Fields(dockerCLI(t, args...))
}

// With spare network sandboxes, an app container joins a started one: it
// is reached at the sandbox's published port and address, keeps it when
// the agent restarts, and goes with it when the container is removed (a
// rollout, an unassignment, or a docker rm behind the agent's back); the
// spares are started again, and an earlier agent's spares are replaced.
func TestRuntimeDockerSandbox(t *testing.T) {
	need.Stack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	docker, err := runtime.NewDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, docker)
	e.cfg.SpareSandboxes = 2
	e.cfg.SandboxImage = need.StackImage
	e.cfg.Resync = time.Hour // only events and the refill timer wake the loops
	t.Cleanup(func() {
		if ids := nodeContainers(t, e.node); len(ids) > 0 {
			dockerCLI(t, append([]string{"rm", "-f"}, ids...)...)
		}
	})
	spares := func(n int) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%d network sandboxes", n), func() bool { return len(sandboxes(t, e.node, true)) == n },
			func() string { return strings.Join(sandboxes(t, e.node, true), " ") })
	}
	web := func(release int) state.ContainerSpec {
		return state.ContainerSpec{
			Name: fmt.Sprintf("sb.v%d.web.1", release), Formation: "sb", Release: release, Type: "web", Index: 1, Port: 5000,
			Image: need.StackImage, Command: fmt.Sprintf("exec python3 -c 'import http.server as h; h.HTTPServer((\"\", 5000), type(\"H\", (h.BaseHTTPRequestHandler,), {\"do_GET\": lambda s: (s.send_response(200), s.end_headers(), s.wfile.write(b\"v%d\"))})).serve_forever()'", release),
			Env: map[string]string{"DEIS_FORMATION": "sb"},
		}
	}
	e.start()
	spares(2)
	before := sandboxes(t, e.node, false)

	// A container joins a spare: its address and port are the sandbox's.
	e.assign(web(1))
	st := e.waitStatus("v1 ready", readyIn("sb.v1.web.1"))
	c, _ := find(st, "sb.v1.web.1")
	joined, ok := strings.CutPrefix(dockerCLI(t, "inspect", "-f", "{{.HostConfig.NetworkMode}}", c.ID), "container:")
	if !ok || !slices.Contains(before, joined) {
		t.Fatalf("v1 joined %q, want one of the spares %v", joined, before)
	}
	if _, port, _ := net.SplitHostPort(c.Addr); dockerCLI(t, "port", joined, "5000/tcp") != "127.0.0.1:"+port {
		t.Errorf("v1 reported at %s, its sandbox publishes %s", c.Addr, dockerCLI(t, "port", joined, "5000/tcp"))
	}
	if got := get(t, c.Addr); got != "v1" {
		t.Errorf("v1 at %s answered %q", c.Addr, got)
	}
	if cfg := dockerCLI(t, "inspect", "-f", "{{.Config.User}} {{.HostConfig.CapDrop}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.PidsLimit}}", joined); cfg != "65534:65534 [ALL] true 8" {
		t.Errorf("sandbox confined as %q", cfg)
	}
	spares(3) // the taken one is replaced

	// A new runtime adopts v1 with its sandbox and replaces the spares it
	// did not start.
	old := sandboxes(t, e.node, true)
	e.stop()
	e.start()
	waitFor(t, "the earlier agent's spares replaced", func() bool {
		now := sandboxes(t, e.node, true)
		for _, id := range old {
			if id != joined && slices.Contains(now, id) {
				return false
			}
		}
		return len(now) == 3 && slices.Contains(now, joined)
	}, func() string { return strings.Join(sandboxes(t, e.node, true), " ") })
	if again, _ := find(e.status(), "sb.v1.web.1"); again.ID != c.ID {
		t.Errorf("v1 replaced on restart: %s -> %s", c.ID, again.ID)
	}

	// A rollout: v2 joins another sandbox; v1 goes with its own.
	e.assign(web(2))
	st = e.waitStatus("v2 ready, v1 gone", func(st state.NodeStatus) bool {
		_, old := find(st, "sb.v1.web.1")
		return readyIn("sb.v2.web.1")(st) && !old
	})
	c2, _ := find(st, "sb.v2.web.1")
	if nm := dockerCLI(t, "inspect", "-f", "{{.HostConfig.NetworkMode}}", c2.ID); !strings.HasPrefix(nm, "container:") {
		t.Errorf("v2 has network %q, want a spare sandbox's", nm)
	}
	if got := get(t, c2.Addr); got != "v2" {
		t.Errorf("v2 at %s answered %q", c2.Addr, got)
	}
	spares(3)
	if slices.Contains(sandboxes(t, e.node, true), joined) {
		t.Errorf("v1's sandbox %s outlived it", joined)
	}

	// Removed behind the agent's back: the sandbox goes too, and the
	// runtime starts the container again in a spare.
	joined2 := strings.TrimPrefix(dockerCLI(t, "inspect", "-f", "{{.HostConfig.NetworkMode}}", c2.ID), "container:")
	dockerCLI(t, "rm", "-f", c2.ID)
	waitFor(t, "v2's old sandbox removed", func() bool { return !slices.Contains(sandboxes(t, e.node, true), joined2) },
		func() string { return strings.Join(sandboxes(t, e.node, true), " ") })
	e.waitStatus("v2 ready again", func(st state.NodeStatus) bool {
		c, _ := find(st, "sb.v2.web.1")
		return c.State == state.StateReady && c.ID != c2.ID
	})

	// Its sandbox removed behind the agent's back: the container lost its
	// port, so it is replaced, in a spare.
	st = e.status()
	c3, _ := find(st, "sb.v2.web.1")
	joined3 := strings.TrimPrefix(dockerCLI(t, "inspect", "-f", "{{.HostConfig.NetworkMode}}", c3.ID), "container:")
	dockerCLI(t, "rm", "-f", joined3)
	st = e.waitStatus("v2 replaced after its sandbox went", func(st state.NodeStatus) bool {
		c, _ := find(st, "sb.v2.web.1")
		return c.State == state.StateReady && c.ID != c3.ID
	})
	c4, _ := find(st, "sb.v2.web.1")
	if got := get(t, c4.Addr); got != "v2" {
		t.Errorf("v2 at %s answered %q", c4.Addr, got)
	}

	// Unassigned: the container and its sandbox go, the spares stay.
	e.assign()
	e.waitStatus("no containers", func(st state.NodeStatus) bool { return len(st.Containers) == 0 && len(st.Pending) == 0 })
	spares(2)
	if left := nodeContainers(t, e.node); len(left) != 2 {
		t.Errorf("containers left: %v, want only the two spares", left)
	}
	if got := metricValue(t, e, "deis_agent_spare_sandboxes"); got != 2 {
		t.Errorf("deis_agent_spare_sandboxes %v, want 2", got)
	}
	if got := metricValue(t, e, "deis_agent_container_starts_total"); got < 1 {
		t.Errorf("deis_agent_container_starts_total{network=\"sandbox\"} %v, want starts into spares counted", got)
	}
}

// metricValue is the value of a gauge, or of a counter's network="sandbox"
// series, in the env's registry.
func metricValue(t *testing.T, e *env, name string) float64 {
	t.Helper()
	mfs, err := e.cfg.Registerer.(*prometheus.Registry).Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "network" && l.GetValue() == "sandbox" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

func get(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Without the sandbox image on the node, containers start on a network of
// their own as without spares, and no sandbox is created.
func TestSandboxImageMissingFake(t *testing.T) {
	d := runtimetest.New()
	defer d.Close()
	e := newEnv(t, d)
	e.cfg.SpareSandboxes = 2
	e.cfg.SandboxImage = "missing/stack:1"
	d.Images = map[string]bool{"img:1": true}
	spec := imageSpec("hello.v1.web.1", 1)
	spec.Image = "img:1"
	e.assign(spec)
	e.start()
	e.waitStatus("hello.v1.web.1 ready", readyIn("hello.v1.web.1"))
	for _, c := range d.Containers() {
		if c.Config.Labels["deis.sandbox"] != "" || strings.HasPrefix(string(c.HostConfig.NetworkMode), "container:") {
			t.Errorf("container %s: labels %v, network %q", c.Name, c.Config.Labels, c.HostConfig.NetworkMode)
		}
	}
	if n := len(d.Containers()); n != 1 {
		t.Errorf("%d containers, want 1", n)
	}
	if d.CallCount("ImageInspect") == 0 {
		t.Error("the sandbox image was never looked for")
	}
}
