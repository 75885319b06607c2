package runtime

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"
)

// TestStartCost measures what Docker's create and start of four
// containers at once cost with each part of the confinement left out in
// turn (DEIS_BENCH_START=1, DEIS_BENCH_ROUNDS=N rounds, 5 by default;
// DEIS_BENCH_NETWORK the guarded network, deis-apps by default; the
// figures are in docs/benchmarks.md). It asserts nothing; it only measures,
// and runs nothing the runtime would run without the confinement.
func TestStartCost(t *testing.T) {
	if os.Getenv("DEIS_BENCH_START") == "" {
		t.Skip("set DEIS_BENCH_START=1 to measure")
	}
	need.Stack(t)
	ctx := context.Background()
	d, err := NewDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slug := t.TempDir()
	nw := os.Getenv("DEIS_BENCH_NETWORK")
	if nw == "" {
		nw = "deis-apps"
	}
	if _, err := d.NetworkInspect(ctx, nw, network.InspectOptions{}); err != nil {
		t.Fatalf("the guarded network: %v (start an agent once, or set DEIS_BENCH_NETWORK)", err)
	}
	p := profile{Node: "startcost", Addr: "127.0.0.1", Network: nw, DefaultMemory: DefaultMemoryBytes, PidsLimit: DefaultPidsLimit}
	// In the variant joined, the containers join network sandboxes
	// started before the clock starts, as the runtime's spares are.
	const joined = "joined a started network sandbox"
	variants := []struct {
		name string
		fn   func(*container.Config, *container.HostConfig)
	}{
		{joined, func(*container.Config, *container.HostConfig) {}},
		{"as the runtime creates them", func(*container.Config, *container.HostConfig) {}},
		{"default bridge network", func(_ *container.Config, hc *container.HostConfig) { hc.NetworkMode = "" }},
		{"no published port", func(cfg *container.Config, hc *container.HostConfig) { hc.PortBindings, cfg.ExposedPorts = nil, nil }},
		{"no tmpfs", func(_ *container.Config, hc *container.HostConfig) { hc.Tmpfs = nil }},
		{"writable root", func(_ *container.Config, hc *container.HostConfig) { hc.ReadonlyRootfs = false }},
		{"default log options", func(_ *container.Config, hc *container.HostConfig) { hc.LogConfig = container.LogConfig{} }},
		{"no pids limit", func(_ *container.Config, hc *container.HostConfig) { hc.PidsLimit = nil }},
		{"no memory limit", func(_ *container.Config, hc *container.HostConfig) { hc.Memory = 0 }},
		{"capabilities and no-new-privileges kept", func(_ *container.Config, hc *container.HostConfig) { hc.CapDrop, hc.SecurityOpt = nil, nil }},
		{"no slug mount", func(_ *container.Config, hc *container.HostConfig) { hc.Mounts = nil }},
		{"none of these", func(cfg *container.Config, hc *container.HostConfig) {
			*hc = container.HostConfig{}
			cfg.ExposedPorts = nil
		}},
	}
	rounds := 5
	if n, err := strconv.Atoi(os.Getenv("DEIS_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	create := make([][]time.Duration, len(variants))
	start := make([][]time.Duration, len(variants))
	// Rounds interleave the variants, so that each sees the same load.
	for round := 0; round < rounds; round++ {
		for vi, v := range variants {
			var wg sync.WaitGroup
			var mu sync.Mutex
			ids := make([]string, 4)
			sbs := make([]string, 4)
			if v.name == joined {
				sr := &Runtime{cfg: Config{Node: "startcost", Network: nw, SandboxImage: need.StackImage}}
				for i := range sbs {
					cfg, hc := sr.sandboxConfig()
					hc.PortBindings = nat.PortMap{nat.Port("5000/tcp"): []nat.PortBinding{{HostIP: "127.0.0.1"}}}
					c, err := d.ContainerCreate(ctx, cfg, hc, nil, nil, fmt.Sprintf("deis-startcost-sb-%d-%d", os.Getpid(), i))
					if err != nil {
						t.Fatal(err)
					}
					sbs[i] = c.ID
					if err := d.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
						t.Fatal(err)
					}
				}
			}
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					s := state.ContainerSpec{Name: fmt.Sprintf("cost.v1.web.%d", i+1), Formation: "cost", Release: 1, Type: "web", Index: i + 1,
						Image: need.StackImage, Command: "sleep 60", Port: 5000, Slug: &state.SlugRef{SHA256: "x"}}
					cfg, hc := containerConfig(p, s, slug)
					if hc.PortBindings != nil { // a port Docker chooses
						hc.PortBindings = nat.PortMap{containerPort(s): []nat.PortBinding{{HostIP: "127.0.0.1"}}}
					}
					v.fn(cfg, hc)
					if v.name == joined {
						joinSandbox(cfg, hc, sandbox{ID: sbs[i], Port: 1})
					}
					t0 := time.Now()
					c, err := d.ContainerCreate(ctx, cfg, hc, nil, nil, fmt.Sprintf("deis-startcost-%d-%d", os.Getpid(), i))
					if err != nil {
						t.Error(err)
						return
					}
					t1 := time.Now()
					ids[i] = c.ID
					if err := d.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
						t.Error(err)
					}
					t2 := time.Now()
					mu.Lock()
					create[vi], start[vi] = append(create[vi], t1.Sub(t0)), append(start[vi], t2.Sub(t1))
					mu.Unlock()
				}(i)
			}
			wg.Wait()
			for _, id := range append(ids, sbs...) {
				if id != "" {
					_ = d.ContainerRemove(ctx, id, container.RemoveOptions{Force: true})
				}
			}
		}
	}
	for vi, v := range variants {
		t.Logf("%-42s create p50 %4d ms   start p50 %4d ms  p90 %4d ms", v.name, p50(create[vi]), p50(start[vi]), p90(start[vi]))
	}
}

func p50(ds []time.Duration) int64 { return pct(ds, 50) }
func p90(ds []time.Duration) int64 { return pct(ds, 90) }

func pct(ds []time.Duration, p int) int64 {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[(len(ds)-1)*p/100].Milliseconds()
}
