package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/deis/deis/coordinator/scheduler"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/deis/deis/testing/harness"
	"github.com/deis/deis/testing/need"
	"github.com/deis/deis/testing/poll"
)

// TestAgentRSS measures the memory of the real deis-agent (runtime role)
// running DEIS_BENCH_AGENT_CONTAINERS (default 50) real containers of the
// scratch app (a static Go server in a FROM scratch image) on the shared
// Docker engine. The test writes the node's runtime databag itself, as the
// scheduler would. It runs with the scale benchmark (DEIS_BENCH_SCALE set,
// `make bench-scale`), never in a plain `go test ./...`.
func TestAgentRSS(t *testing.T) {
	if os.Getenv("DEIS_BENCH_SCALE") == "" {
		t.Skip("a benchmark: DEIS_BENCH_SCALE=1 (make bench-scale) runs it")
	}
	need.Docker(t)
	n := 50
	if v := os.Getenv("DEIS_BENCH_AGENT_CONTAINERS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("DEIS_BENCH_AGENT_CONTAINERS: %q is not a positive number", v)
		}
	}
	ctx := context.Background()
	dir := t.TempDir()
	must := func(err error, out ...[]byte) {
		t.Helper()
		if err != nil {
			if len(out) > 0 {
				t.Fatalf("%v\n%s", err, out[0])
			}
			t.Fatal(err)
		}
	}

	// The scratch app's image, under a name of this test's own.
	id := strconv.Itoa(os.Getpid())
	image := "deis-bench-rss/scratch-app:" + id
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "app"), ".")
	build.Dir = harness.AppDir("scratch-app")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	must(err, out)
	df, err := os.ReadFile(filepath.Join(harness.AppDir("scratch-app"), "Dockerfile"))
	must(err)
	must(os.WriteFile(filepath.Join(dir, "Dockerfile"), df, 0o644))
	out, err = exec.Command("docker", "build", "-q", "-t", image, dir).CombinedOutput()
	must(err, out)
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", image).Run() })

	// A real etcd and the real agent, runtime role only.
	cu, cli := etcdtest.Start(t)
	const pfx = "/benchrss"
	store := state.NewStore(cli, pfx)
	node := "benchrss-" + id
	f := &state.Formation{Name: "rss" + id, Scale: map[string]int{"web": n}, Created: time.Now().UTC()}
	must(store.CreateFormation(ctx, f))
	bin := harness.Binaries(t)
	metrics := fmt.Sprintf("127.0.0.1:%d", etcdtest.FreePort(t))
	agent, err := startProc(filepath.Join(bin, "deis-agent"), []string{
		"--etcd-endpoints", cu, "--prefix", pfx, "--name", node, "--addr", "127.0.0.1", "--labels", "role=runtime",
		"--state-dir", filepath.Join(dir, "state"), "--metrics-addr", metrics, "--api-addr", "127.0.0.1:0",
		"--port-range", "46000-46999", "--stop-grace", "5s",
	}, nil, filepath.Join(dir, "agent.log"))
	must(err)
	t.Cleanup(func() {
		agent.stop()
		harness.RemoveContainers(node)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "agent.log"))
			t.Logf("---- agent log ----\n%s", b)
		}
	})
	status := func() (ready int) {
		var st state.NodeStatus
		if _, err := store.Get(ctx, store.Keys.NodeStatus(node), &st); err != nil {
			return -1
		}
		for _, c := range st.Containers {
			if c.State == state.StateReady {
				ready++
			}
		}
		return ready
	}
	poll.True(t, time.Minute, "the agent's first status", func() bool { return status() == 0 })
	idle := sampleMem(t, agent, 5*time.Second)
	t.Logf("agent with no container: RSS %s", mb(idle))

	// n containers of one release, as the scheduler would write them.
	rel := &state.Release{Formation: f.Name, Version: 1, Config: map[string]string{},
		Build: &state.Build{Image: image, ImageCommand: true, ProcessTypes: map[string]string{"web": "/app"}}}
	rt := state.Runtime{Node: node}
	for i := 1; i <= n; i++ {
		s := state.SpecFromRelease(rel, "")
		s.Name = scheduler.ContainerName(f.Name, 1, "web", i, 0)
		s.SetFormation(f)
		s.Type, s.Index, s.Command, s.Exec = "web", i, "/app", state.ExecMode(rel.Build, "web")
		rt.Containers = append(rt.Containers, s)
	}
	rt.Sort()
	start := time.Now()
	must(store.Put(ctx, store.Keys.Runtime(node), rt))
	poll.True(t, 10*time.Minute, fmt.Sprintf("%d containers ready", n), func() bool { return status() == n })
	t.Logf("%d containers ready after %s", n, time.Since(start).Round(time.Millisecond))
	time.Sleep(5 * time.Second)
	busy := sampleMem(t, agent, 10*time.Second)
	_, peak, err := agent.mem()
	must(err)
	cpu, err := agent.cpu()
	must(err)
	t.Logf("agent RSS: %s with no container, %s with %d containers ready (peak %s); CPU time %s in all",
		mb(idle), mb(busy), n, mb(peak), cpu)
	if path := os.Getenv("DEIS_BENCH_OUT"); path != "" {
		fo, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		must(err)
		defer fo.Close()
		fmt.Fprintf(fo, "%s, deis-agent (runtime role): RSS %s with no container, %s with %d containers ready (peak %s)\n\n",
			time.Now().UTC().Format("2006-01-02 15:04 MST"), mb(idle), mb(busy), n, mb(peak))
	}

	// Stop them through the agent, as a scale to zero would.
	must(store.Put(ctx, store.Keys.Runtime(node), state.Runtime{Node: node, Containers: []state.ContainerSpec{}}))
	poll.True(t, 5*time.Minute, "containers stopped", func() bool {
		var st state.NodeStatus
		_, err := store.Get(ctx, store.Keys.NodeStatus(node), &st)
		return err == nil && len(st.Containers) == 0
	})
}

// sampleMem returns the largest RSS of p seen over d, sampled every second.
func sampleMem(t *testing.T, p *proc, d time.Duration) int64 {
	t.Helper()
	var most int64
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(time.Second) {
		rss, _, err := p.mem()
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, rss)
	}
	return most
}
