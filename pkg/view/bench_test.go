package view

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// big writes nodes nodes and formations formations with perNode containers
// on each node (databag and report) in batched transactions.
func big(b *testing.B, cli *clientv3.Client, nodes, formations, perNode int) {
	k := state.NewKeys(prefix)
	ctx := context.Background()
	var ops []clientv3.Op
	flush := func() {
		if len(ops) == 0 {
			return
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
		ops = nil
	}
	add := func(key string, v any) {
		ops = append(ops, clientv3.OpPut(key, state.Marshal(v)))
		if len(ops) == 100 {
			flush()
		}
	}
	for i := 0; i < formations; i++ {
		f := fmt.Sprintf("f%04d", i)
		add(k.Formation(f), state.Formation{Name: f, Scale: map[string]int{"web": 10}})
		add(k.Layer(f, "runtime"), state.Layer{Formation: f, Name: "runtime", Type: state.LayerRuntime, Selector: map[string]string{"role": "runtime"}})
		add(k.Release(f, 1), state.Release{Formation: f, Version: 1, Config: map[string]string{"A": "1"}})
	}
	c := 0
	for i := 0; i < nodes; i++ {
		n := fmt.Sprintf("n%04d", i)
		add(k.Node(n), state.Node{Name: n, Labels: map[string]string{"role": "runtime"}, Capacity: 100})
		add(k.Heartbeat(n), state.Heartbeat{Node: n})
		rt := state.Runtime{Node: n}
		ns := state.NodeStatus{Node: n}
		for j := 0; j < perNode; j++ {
			f := fmt.Sprintf("f%04d", c%formations)
			name := fmt.Sprintf("%s.v1.web.%d", f, c)
			rt.Containers = append(rt.Containers, state.ContainerSpec{Name: name, Formation: f, Release: 1, Type: "web",
				Image: "deis/stack", Command: "web", Env: map[string]string{"PORT": "5000", "A": "1"}})
			ns.Containers = append(ns.Containers, state.ContainerStatus{Name: name, Formation: f, Release: 1, Type: "web",
				State: state.StateReady, Addr: "10.0.0.1:40000", Started: time.Now()})
			c++
		}
		add(k.Runtime(n), rt)
		add(k.NodeStatus(n), ns)
	}
	flush()
}

// BenchmarkLoad is one view.Load of 1,000 nodes, 2,000 formations and
// 20,000 containers from a real etcd.
func BenchmarkLoad(b *testing.B) {
	_, cli := etcdtest.Start(b)
	big(b, cli, 1000, 2000, 20)
	cg := &countingGetter{Getter: cli}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st, err := Load(context.Background(), cg, prefix)
		if err != nil {
			b.Fatal(err)
		}
		if len(st.Placed("f0001")) != 10 {
			b.Fatalf("placed %d", len(st.Placed("f0001")))
		}
	}
	b.ReportMetric(float64(cg.n)/float64(b.N), "gets/op")
}

type countingGetter struct {
	Getter
	n int
}

func (c *countingGetter) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	c.n++
	return c.Getter.Get(ctx, key, opts...)
}

// BenchmarkStatusEvent applies one node report in which one container of
// twenty changed state, as the watch does.
func BenchmarkStatusEvent(b *testing.B) {
	k := state.NewKeys(prefix)
	p := parser{keys: k, fams: DefaultFamilies}
	s := newState()
	ns := state.NodeStatus{Node: "n1"}
	for j := 0; j < 20; j++ {
		ns.Containers = append(ns.Containers, state.ContainerStatus{Name: fmt.Sprintf("f.v1.web.%d", j), Formation: fmt.Sprintf("f%d", j),
			Release: 1, Type: "web", State: state.StateReady, Addr: "10.0.0.1:40000"})
	}
	vals := make([][]byte, 2)
	vals[0] = []byte(state.Marshal(ns))
	ns.Containers[3].State = state.StateExited
	vals[1] = []byte(state.Marshal(ns))
	key := k.NodeStatus("n1")
	ref, _ := p.parse(key)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var t Touched
		if err := s.apply(change{key: key, ref: ref, val: vals[i%2], modRev: int64(i + 1)}, &t); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDerived asks every formation's derived questions once, as a
// full scheduler pass would, on 1,000 nodes and 20,000 containers.
func BenchmarkDerived(b *testing.B) {
	k := state.NewKeys(prefix)
	var es []Entry
	for i := 0; i < 2000; i++ {
		f := fmt.Sprintf("f%04d", i)
		es = append(es, Entry{k.Formation(f), state.Formation{Name: f}},
			Entry{k.Layer(f, "runtime"), state.Layer{Type: state.LayerRuntime, Selector: map[string]string{"role": "runtime"}}},
			Entry{k.Layer(f, "proxy"), state.Layer{Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}}},
			Entry{k.Release(f, 1), state.Release{Version: 1}}, Entry{k.Release(f, 2), state.Release{Version: 2}})
	}
	c := 0
	for i := 0; i < 1000; i++ {
		n := fmt.Sprintf("n%04d", i)
		es = append(es, Entry{k.Node(n), state.Node{Labels: map[string]string{"role": "runtime,proxy"}, Capacity: 100}}, Entry{k.Heartbeat(n), "{}"})
		rt := state.Runtime{}
		for j := 0; j < 20; j++ {
			rt.Containers = append(rt.Containers, state.ContainerSpec{Name: fmt.Sprint(c), Formation: fmt.Sprintf("f%04d", c%2000)})
			c++
		}
		es = append(es, Entry{k.Runtime(n), rt})
	}
	s, err := Build(prefix, es...)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for f := range s.Formations {
			_ = s.CurrentRelease(f)
			_ = s.LayerNodes(f, state.LayerRuntime)
			_ = s.LayerNodes(f, state.LayerProxy)
			_ = s.Containers(f)
		}
		for n := range s.Nodes {
			_, _ = s.Free(n)
		}
	}
}
