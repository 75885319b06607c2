package scheduler

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/view"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// countingEtcd counts the reads the controller (and its view) make.
type countingEtcd struct {
	*clientv3.Client
	gets atomic.Int64
}

func (c *countingEtcd) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	c.gets.Add(1)
	return c.Client.Get(ctx, key, opts...)
}

// settled waits until the controller's passes stop planning anything.
func settled(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	last := -1.0
	waitFor(t, "the controller to settle", func() bool {
		n := counter(t, reg, "deis_coordinator_formations_planned_total")
		if n == last {
			return true
		}
		last = n
		time.Sleep(300 * time.Millisecond)
		return false
	})
	return last
}

// converged checks that what incremental passes wrote is what a full pass
// from a fresh read would write: it would write nothing.
func converged(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	st, err := view.Load(context.Background(), cli, "/t")
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Etcd: cli, Prefix: "/t", SlugURL: "http://s"})
	if err != nil {
		t.Fatal(err)
	}
	c.primed = true
	if p := c.plan(st, view.Touched{All: true}, true, time.Now()); len(p.writes) != 0 {
		var keys []string
		for _, w := range p.writes {
			if w.op.IsTxn() {
				_, ops, _ := w.op.Txn()
				w.op = ops[0]
			}
			keys = append(keys, string(w.op.KeyBytes())+" "+string(w.op.ValueBytes()))
		}
		t.Fatalf("a full pass would still write %d keys after the incremental ones: %s", len(p.writes), strings.Join(keys, "\n"))
	}
}

// A running controller plans only what changed, from its view, without
// reading etcd again: scaling one formation plans that formation, and a
// lost node re-places the containers it held.
func TestIncrementalPasses(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var forms []string
	for i := range 20 {
		forms = append(forms, fmt.Sprintf("f%02d", i))
	}
	s := setup(t, ctx, cli, forms, []string{"n1"})
	k := s.Keys
	lease2, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, k.Node("n2"), state.Node{Name: "n2", Addr: "127.0.0.2", Labels: map[string]string{"role": "runtime"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, k.Heartbeat("n2"), state.Heartbeat{Node: "n2"}, clientv3.WithLease(lease2.ID)); err != nil {
		t.Fatal(err)
	}
	etcd := &countingEtcd{Client: cli}
	reg := prometheus.NewRegistry()
	c, err := New(Config{Etcd: etcd, Prefix: "/t", SlugURL: "http://s", Resync: time.Hour, FullResync: time.Hour, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	total := func() int { return containers(t, s, "n1") + containers(t, s, "n2") }
	waitFor(t, "every formation placed", func() bool { return total() == 20 })
	planned := settled(t, reg)
	gets := etcd.gets.Load()

	if _, err := state.Update(ctx, s, k.Formation("f07"), func(f *state.Formation) (*state.Formation, error) {
		f.Scale = map[string]int{"web": 2}
		return f, nil
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "f07 scaled to 2", func() bool { return total() == 21 })
	if d := settled(t, reg) - planned; d < 1 || d > 3 {
		t.Fatalf("scaling one formation planned %v formations, want it alone (and again after its own writes)", d)
	}
	if d := etcd.gets.Load() - gets; d != 0 {
		t.Fatalf("passes read etcd %d times, want none: they plan from the view", d)
	}
	if full := counter(t, reg, "deis_coordinator_full_passes_total"); full != 1 {
		t.Fatalf("%v full passes, want only the first", full)
	}
	converged(t, cli)

	// n2 is lost: what it held moves to n1, and its databag is emptied.
	if _, err := cli.Revoke(ctx, lease2.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n2's containers on n1", func() bool { return containers(t, s, "n1") == 21 && containers(t, s, "n2") == 0 })
	settled(t, reg)
	converged(t, cli)

	// A destroyed formation's containers leave.
	if err := s.DestroyFormation(ctx, "f07"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "f07's containers gone", func() bool { return containers(t, s, "n1") == 19 })
	if _, err := s.Get(ctx, k.Routing("f07"), &state.Routing{}); err == nil {
		t.Fatal("the destroyed formation's routing was written again")
	}
	settled(t, reg)
	converged(t, cli)
}

// A formation destroyed and created again runs its new v1 while the
// controller runs, even though the old formation's v1 failed and a late
// write left the old formation's routing behind: the new v1 is placed,
// routed once ready, and marked live, not failed.
func TestRecreatedFormationRunsItsV1(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := setup(t, ctx, cli, []string{"again"}, []string{"n1"})
	k := s.Keys
	c, err := New(Config{Etcd: cli, Prefix: "/t", SlugURL: "http://s", Resync: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	spec := func() *state.ContainerSpec {
		var rt state.Runtime
		if _, err := s.Get(ctx, k.Runtime("n1"), &rt); err != nil || len(rt.Containers) != 1 {
			return nil
		}
		return &rt.Containers[0]
	}
	waitFor(t, "the old v1 placed", func() bool { return spec() != nil })
	if err := s.Put(ctx, k.ReleaseStatus("again", 1), state.ReleaseStatus{Version: 1, Failed: true, Reason: "old"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the old v1 stopped", func() bool { return spec() == nil })

	if err := s.DestroyFormation(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	// A late write of the old formation's routing, routing v5.
	if err := s.Put(ctx, k.Routing("again"), state.Routing{Formation: "again", Release: 5, Upstreams: []state.Upstream{{Container: "again.v5.web.1", Addr: "127.0.0.1:9", Release: 5}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, k.Formation("again"), state.Formation{Name: "again"},
		clientv3.OpPut(k.Layer("again", "runtime"), state.Marshal(state.Layer{Formation: "again", Name: "runtime", Type: state.LayerRuntime, Selector: map[string]string{"role": "runtime"}}))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendRelease(ctx, "again", func(*state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
		return &state.Release{Build: &state.Build{Image: "img", ProcessTypes: map[string]string{"web": "run"}, Slug: &state.SlugRef{SHA256: "def"}}}, nil, nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new v1 placed", func() bool { sp := spec(); return sp != nil && sp.Slug.SHA256 == "def" })
	var r state.Routing
	if err := s.Put(ctx, k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Containers: []state.ContainerStatus{
		{Name: "again.v1.web.1", Formation: "again", Release: 1, Type: "web", State: state.StateReady, Addr: "127.0.0.1:3000"}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new v1's container routed", func() bool {
		_, err := s.Get(ctx, k.Routing("again"), &r)
		return err == nil && r.Release == 1 && len(r.Upstreams) == 1 && r.Upstreams[0].Addr == "127.0.0.1:3000"
	})
	var st state.ReleaseStatus
	waitFor(t, "the new v1 marked live", func() bool {
		_, err := s.Get(ctx, k.ReleaseStatus("again", 1), &st)
		return err == nil && !st.LiveAt.IsZero()
	})
	if st.Failed {
		t.Fatalf("the new v1 is marked failed: %+v", st)
	}
	var fs state.FormationStatus
	if _, err := s.Get(ctx, k.FormationStatus("again"), &fs); err != nil || fs.Release != 1 || strings.Contains(strings.Join(fs.Pending, ";"), "waiting") {
		t.Fatalf("formation status %+v, %v", fs, err)
	}
	waitFor(t, "nothing left to do", func() bool {
		_, err := s.Get(ctx, k.FormationStatus("again"), &fs)
		return err == nil && len(fs.Pending) == 0
	})
	converged(t, cli)
}
