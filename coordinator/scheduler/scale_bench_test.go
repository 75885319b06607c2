package scheduler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/view"
	"github.com/deis/deis/testing/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fill writes nodes live runtime nodes and forms formations of web=scale
// with one release each, in batches.
func fill(b testing.TB, ctx context.Context, cli *clientv3.Client, nodes, forms, scale int) {
	k := state.NewKeys("/t")
	lease, err := cli.Grant(ctx, 600)
	if err != nil {
		b.Fatal(err)
	}
	var ops []clientv3.Op
	flush := func() {
		for len(ops) > 0 {
			n := min(len(ops), 100)
			if _, err := cli.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
				b.Fatal(err)
			}
			ops = ops[n:]
		}
	}
	for i := range nodes {
		n := fmt.Sprintf("n%04d", i)
		ops = append(ops, clientv3.OpPut(k.Node(n), state.Marshal(state.Node{Name: n, Addr: "10.0.0.1", Labels: map[string]string{"role": "runtime"}})),
			clientv3.OpPut(k.Heartbeat(n), state.Marshal(state.Heartbeat{Node: n}), clientv3.WithLease(lease.ID)))
	}
	for i := range forms {
		f := fmt.Sprintf("f%04d", i)
		ops = append(ops, clientv3.OpPut(k.Formation(f), state.Marshal(state.Formation{Name: f, Scale: map[string]int{"web": scale}})),
			clientv3.OpPut(k.Layer(f, "runtime"), state.Marshal(state.Layer{Formation: f, Name: "runtime", Type: state.LayerRuntime, Selector: map[string]string{"role": "runtime"}})),
			clientv3.OpPut(k.Release(f, 1), state.Marshal(state.Release{Formation: f, Version: 1, Created: time.Now(),
				Config: map[string]string{"A": "1"}, Build: &state.Build{Image: "img", ProcessTypes: map[string]string{"web": "run"}, Slug: &state.SlugRef{SHA256: "abc"}}})))
	}
	flush()
}

// BenchmarkPasses times, at 1,000 nodes and 2,000 formations of 10
// containers, the cold pass that places everything, a full pass that
// changes nothing, and an incremental pass of one touched formation (the
// sub-benchmarks full and one).
func BenchmarkPasses(b *testing.B) {
	_, cli := etcdtest.Start(b)
	ctx := context.Background()
	fill(b, ctx, cli, 1000, 2000, 10)
	c, err := New(Config{Etcd: cli, Prefix: "/t", SlugURL: "http://s"})
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if err := c.Reconcile(ctx); err != nil {
		b.Fatal(err)
	}
	b.Logf("cold pass: %s", time.Since(t0))
	s, err := view.Load(ctx, cli, "/t")
	if err != nil {
		b.Fatal(err)
	}
	t0 = time.Now()
	p := c.plan(s, view.Touched{All: true}, true, time.Now())
	b.Logf("full pass, nothing to do: %s, %d writes, %d placed", time.Since(t0), len(p.writes), p.placed)
	one := view.Touched{Formations: map[string]bool{"f0042": true}, Nodes: map[string]bool{"n0007": true}}
	t0 = time.Now()
	p = c.plan(s, one, false, time.Now())
	b.Logf("incremental pass of one formation: %s, %d writes", time.Since(t0), len(p.writes))
	all := view.Touched{All: true}
	b.Run("full", func(b *testing.B) {
		for range b.N {
			c.plan(s, all, true, time.Now())
		}
	})
	b.Run("one", func(b *testing.B) {
		for range b.N {
			c.plan(s, one, false, time.Now())
		}
	})
}
