package bench

import (
	"context"
	"fmt"
	"testing"

	"github.com/deis/deis/coordinator/scheduler"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// world builds a converged synthetic installation: nodes runtime nodes,
// formations formations of web=perFormation containers each, all placed,
// ready and routed.
func world(nodes, formations, perFormation int) *scheduler.World {
	w := &scheduler.World{
		Formations: map[string]*state.Formation{}, Layers: map[string][]*state.Layer{},
		Releases: map[string]*state.Release{}, Nodes: map[string]*state.Node{}, Alive: map[string]bool{},
		Runtimes: map[string]*state.Runtime{}, Status: map[string]*state.NodeStatus{},
		Routing: map[string]scheduler.RoutingAt{}, Acks: map[string]map[string]int64{}, SlugURL: "http://slugs",
	}
	for i := 0; i < nodes; i++ {
		n := fmt.Sprintf("node%03d", i)
		w.Nodes[n] = &state.Node{Name: n, Labels: map[string]string{"role": "runtime,proxy"}}
		w.Alive[n] = true
	}
	for i := 0; i < formations; i++ {
		f := fmt.Sprintf("app%04d", i)
		w.Formations[f] = &state.Formation{Name: f, Scale: map[string]int{"web": perFormation}}
		w.Layers[f] = []*state.Layer{
			{Formation: f, Name: "runtime", Type: state.LayerRuntime, Selector: map[string]string{"role": "runtime"}},
			{Formation: f, Name: "proxy", Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}},
		}
		w.Releases[f] = &state.Release{Formation: f, Version: 1, Config: map[string]string{"A": "b"},
			Build: &state.Build{Image: "stack", ProcessTypes: map[string]string{"web": "./web"}, Slug: &state.SlugRef{SHA256: "abc"}}}
	}
	// converge: plan, mark ready, plan again
	d := scheduler.Plan(w)
	w.Runtimes = d.Runtimes
	for n, rt := range w.Runtimes {
		st := &state.NodeStatus{Node: n}
		for _, c := range rt.Containers {
			st.Containers = append(st.Containers, state.ContainerStatus{Name: c.Name, Formation: c.Formation, Release: c.Release,
				Type: c.Type, State: state.StateReady, Addr: n + ":" + c.Name})
		}
		w.Status[n] = st
	}
	d = scheduler.Plan(w)
	for f, r := range d.Routing {
		w.Routing[f] = scheduler.RoutingAt{Doc: r, Rev: 10}
		w.Acks[f] = map[string]int64{}
		for n := range w.Nodes {
			w.Acks[f][n] = 10
		}
	}
	return w
}

// BenchmarkPlan measures one scheduler pass over a converged installation.
func BenchmarkPlan(b *testing.B) {
	for _, size := range []struct{ nodes, formations, per int }{{3, 10, 2}, {20, 200, 3}, {100, 1000, 4}} {
		b.Run(fmt.Sprintf("nodes=%d/formations=%d/containers=%d", size.nodes, size.formations, size.formations*size.per), func(b *testing.B) {
			w := world(size.nodes, size.formations, size.per)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				scheduler.Plan(w)
			}
		})
	}
}

// BenchmarkAppendRelease measures the release log's guarded append against
// a real etcd.
func BenchmarkAppendRelease(b *testing.B) {
	_, cli := etcdtest.Start(b)
	s := state.NewStore(cli, "/bench")
	ctx := context.Background()
	if err := s.Create(ctx, s.Keys.Formation("hello"), state.Formation{Name: "hello"}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, err := s.AppendRelease(ctx, "hello", func(prev *state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
			return &state.Release{Description: "bench", Config: map[string]string{"I": fmt.Sprint(i)}}, nil, nil, nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
