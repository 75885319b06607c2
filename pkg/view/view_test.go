package view

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const prefix = "/vt"

func put(t *testing.T, s *state.Store, key string, v any) {
	t.Helper()
	if err := s.Put(context.Background(), key, v); err != nil {
		t.Fatal(err)
	}
}

func del(t *testing.T, cli *clientv3.Client, key string) {
	t.Helper()
	if _, err := cli.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
}

// seed writes a small installation: formation web with layers, two
// releases (v2 failed), two live nodes and one lost, databags and reports.
func seed(t *testing.T, s *state.Store) {
	k := s.Keys
	ctx := context.Background()
	if err := s.CreateFormation(ctx, &state.Formation{Name: "web", Scale: map[string]int{"web": 2}}); err != nil {
		t.Fatal(err)
	}
	put(t, s, k.Layer("web", "runtime"), state.Layer{Formation: "web", Name: "runtime", Type: state.LayerRuntime, Selector: map[string]string{"role": "runtime"}})
	put(t, s, k.Layer("web", "proxy"), state.Layer{Formation: "web", Name: "proxy", Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}})
	put(t, s, k.Release("web", 1), state.Release{Formation: "web", Version: 1})
	put(t, s, k.Release("web", 2), state.Release{Formation: "web", Version: 2})
	put(t, s, k.ReleaseStatus("web", 2), state.ReleaseStatus{Version: 2, Failed: true, Reason: "boot timeout"})
	for _, n := range []string{"n1", "n2", "n3"} {
		put(t, s, k.Node(n), state.Node{Name: n, Labels: map[string]string{"role": "runtime,proxy"}, Capacity: 10})
	}
	put(t, s, k.Heartbeat("n1"), state.Heartbeat{Node: "n1"})
	put(t, s, k.Heartbeat("n2"), state.Heartbeat{Node: "n2"})
	put(t, s, k.Runtime("n1"), state.Runtime{Node: "n1", Containers: []state.ContainerSpec{
		{Name: "web.v1.web.1", Formation: "web", Release: 1, Type: "web", Index: 1, Limits: state.ResourceLimits{MemoryBytes: 100}}}})
	put(t, s, k.Runtime("n3"), state.Runtime{Node: "n3", Containers: []state.ContainerSpec{
		{Name: "web.v1.web.2", Formation: "web", Release: 1, Type: "web", Index: 2}}})
	put(t, s, k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Updated: time.Now(), Containers: []state.ContainerStatus{
		{Name: "web.v1.web.1", Formation: "web", Release: 1, Type: "web", State: state.StateReady, Addr: "10.0.0.1:1"}}})
}

func start(t *testing.T, cli Etcd) (*View, context.CancelFunc, chan error) {
	t.Helper()
	v := New(cli, prefix, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := v.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	return v, cancel, done
}

// next waits for a wake-up of sub and returns what it took.
func next(t *testing.T, sub *Sub) Touched {
	t.Helper()
	select {
	case <-sub.C:
		return sub.Take()
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up")
	}
	return Touched{}
}

// until waits for cond to hold of the view.
func until(t *testing.T, v *View, cond func(s *State) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ok := false
		v.Read(func(s *State) { ok = cond(s) })
		if ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("view never reached the expected state")
}

func TestInitialReadAndEvents(t *testing.T) {
	_, cli := etcdtest.Start(t)
	s := state.NewStore(cli, prefix)
	k := s.Keys
	seed(t, s)
	v, _, _ := start(t, cli)
	v.Read(func(st *State) {
		if st.Formations["web"] == nil || st.FormationRev["web"] == 0 || len(st.Layers["web"]) != 2 {
			t.Fatalf("formation or layers missing: %+v %+v", st.Formations, st.Layers)
		}
		if r := st.CurrentRelease("web"); r == nil || r.Version != 1 {
			t.Fatalf("current release = %+v, want v1 (v2 failed)", r)
		}
		if got := st.LayerNodes("web", state.LayerRuntime); len(got) != 2 || got[0] != "n1" || got[1] != "n2" {
			t.Fatalf("runtime nodes = %v", got)
		}
		if p := st.Placed("web"); len(p) != 1 || p[0].Node != "n1" {
			t.Fatalf("placed = %+v (n3 is lost)", p)
		}
		cs := st.Containers("web")
		if len(cs) != 2 || cs[0].Status == nil || cs[0].Status.State != state.StateReady || !cs[1].Lost {
			t.Fatalf("containers = %+v", cs)
		}
	})
	sub := v.Subscribe()
	if got := next(t, sub); !got.All {
		t.Fatalf("first take = %+v, want All", got)
	}

	put(t, s, k.Release("web", 3), state.Release{Formation: "web", Version: 3})
	got := next(t, sub)
	if !got.Formations["web"] || len(got.Nodes) != 0 || got.All {
		t.Fatalf("release event touched %+v", got)
	}
	v.Read(func(st *State) {
		if r := st.CurrentRelease("web"); r == nil || r.Version != 3 {
			t.Fatalf("current release = %+v, want v3", r)
		}
	})

	// A heartbeat lost touches its node.
	del(t, cli, k.Heartbeat("n2"))
	if got := next(t, sub); !got.Nodes["n2"] || len(got.Formations) != 0 {
		t.Fatalf("heartbeat delete touched %+v", got)
	}
	v.Read(func(st *State) {
		if got := st.LayerNodes("web", state.LayerRuntime); len(got) != 1 || got[0] != "n1" {
			t.Fatalf("runtime nodes after n2's heartbeat went = %v", got)
		}
	})

	// A report whose only change is its time touches nothing; the drain
	// written after it is all the next Take holds.
	put(t, s, k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Updated: time.Now().Add(time.Hour), Containers: []state.ContainerStatus{
		{Name: "web.v1.web.1", Formation: "web", Release: 1, Type: "web", State: state.StateReady, Addr: "10.0.0.1:1"}}})
	put(t, s, k.Drain("n3"), state.Drain{Node: "n3"})
	if got := next(t, sub); len(got.Nodes) != 1 || !got.Nodes["n3"] || len(got.Formations) != 0 {
		t.Fatalf("same report then drain touched %+v", got)
	}
	// The same bytes again wake no one.
	put(t, s, k.Drain("n3"), state.Drain{Node: "n3"})
	put(t, s, k.Node("n9"), state.Node{Name: "n9"})
	if got := next(t, sub); len(got.Nodes) != 1 || !got.Nodes["n9"] {
		t.Fatalf("same drain then new node touched %+v", got)
	}

	// A report that changes a container's state touches its node and
	// formation.
	put(t, s, k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Containers: []state.ContainerStatus{
		{Name: "web.v1.web.1", Formation: "web", Release: 1, Type: "web", State: state.StateExited}}})
	if got := next(t, sub); !got.Nodes["n1"] || !got.Formations["web"] {
		t.Fatalf("status change touched %+v", got)
	}
	// Databag changes keep the load index current.
	put(t, s, k.Runtime("n1"), state.Runtime{Node: "n1", Containers: []state.ContainerSpec{
		{Name: "a", Formation: "web", Limits: state.ResourceLimits{MemoryBytes: 5}},
		{Name: "b", Formation: "other", Limits: state.ResourceLimits{MemoryBytes: 7}}}})
	if got := next(t, sub); !got.Nodes["n1"] {
		t.Fatalf("databag touched %+v", got)
	}
	v.Read(func(st *State) {
		if n, m := st.Load("n1"); n != 2 || m != 12 {
			t.Fatalf("load = %d, %d", n, m)
		}
		if n, m := st.Free("n1"); n != 8 || m != -1 {
			t.Fatalf("free = %d, %d", n, m)
		}
		if p := st.Placed("other"); len(p) != 1 || p[0].Spec.Name != "b" {
			t.Fatalf("placed other = %+v", p)
		}
		if p := st.Placed("web"); len(p) != 1 || p[0].Spec.Name != "a" {
			t.Fatalf("placed web = %+v", p)
		}
		if got := st.FormationsOn("n1"); len(got) != 2 {
			t.Fatalf("formations on n1 = %v", got)
		}
	})
}

func TestWaitRev(t *testing.T) {
	_, cli := etcdtest.Start(t)
	s := state.NewStore(cli, prefix)
	seed(t, s)
	v, _, _ := start(t, cli)
	// A write the view keeps.
	resp, err := cli.Put(context.Background(), s.Keys.Drain("n1"), "{}")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitRev(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	v.Read(func(st *State) {
		if !st.Drained["n1"] {
			t.Fatal("WaitRev returned before the write was applied")
		}
	})
	// A write outside the prefix: only a progress notification carries
	// the view to its revision.
	resp, err = cli.Put(context.Background(), "/elsewhere", "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WaitRev(ctx, resp.Header.Revision); err != nil {
		t.Fatalf("WaitRev past a write outside the prefix: %v (view at %d, want %d)", err, v.Rev(), resp.Header.Revision)
	}
}

func TestDestroyAndRecreateForgetsReleaseStatuses(t *testing.T) {
	_, cli := etcdtest.Start(t)
	s := state.NewStore(cli, prefix)
	k := s.Keys
	ctx := context.Background()
	seed(t, s)
	put(t, s, k.ReleaseStatus("web", 1), state.ReleaseStatus{Version: 1, Failed: true})
	v, _, _ := start(t, cli)
	v.Read(func(st *State) {
		if r := st.CurrentRelease("web"); r != nil {
			t.Fatalf("current = v%d, want none (all failed)", r.Version)
		}
	})
	if err := s.DestroyFormation(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	until(t, v, func(st *State) bool {
		return st.Formations["web"] == nil && len(st.Releases["web"]) == 0 && len(st.ReleaseStatus["web"]) == 0 &&
			len(st.Layers["web"]) == 0 && st.CurrentRelease("web") == nil
	})
	if err := s.CreateFormation(ctx, &state.Formation{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	put(t, s, k.Release("web", 1), state.Release{Formation: "web", Version: 1, Description: "new"})
	until(t, v, func(st *State) bool {
		r := st.CurrentRelease("web")
		return r != nil && r.Version == 1 && r.Description == "new"
	})
}

// gated delays the Watch calls after the first read until the test opens
// the gate, and lets the test cut the watches.
type gated struct {
	*clientv3.Client
	mu     sync.Mutex
	gate   chan struct{}
	cancel []context.CancelFunc
}

func (g *gated) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	ctx, cancel := context.WithCancel(ctx)
	g.mu.Lock()
	g.cancel = append(g.cancel, cancel)
	g.mu.Unlock()
	return g.Client.Watch(ctx, key, opts...)
}

func (g *gated) cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.cancel {
		c()
	}
	g.cancel = nil
}

func TestCompactionRebuilds(t *testing.T) {
	_, cli := etcdtest.Start(t)
	s := state.NewStore(cli, prefix)
	k := s.Keys
	ctx := context.Background()
	seed(t, s)
	g := &gated{Client: cli, gate: make(chan struct{})}
	v, _, _ := start(t, g)
	sub := v.Subscribe()
	sub.Take()

	// While the view's watch has not started, the history it needs is
	// compacted away.
	put(t, s, k.Release("web", 3), state.Release{Formation: "web", Version: 3})
	del(t, cli, k.Runtime("n1"))
	resp, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	close(g.gate)
	g.gate = nil
	g.mu.Unlock()
	until(t, v, func(st *State) bool {
		r := st.CurrentRelease("web")
		return r != nil && r.Version == 3 && st.Runtimes["n1"] == nil && len(st.Placed("web")) == 0
	})
	if got := sub.Take(); !got.All {
		t.Fatalf("rebuild touched %+v, want All", got)
	}
	if v.rebuilds < 1 {
		t.Fatal("no rebuild counted")
	}

	// A watch cut off is read again too.
	before := v.rebuilds
	g.cut()
	put(t, s, k.Heartbeat("n3"), state.Heartbeat{Node: "n3"})
	until(t, v, func(st *State) bool { return st.Alive["n3"] })
	if got := next(t, sub); !got.All && !got.Nodes["n3"] {
		t.Fatalf("after a lost watch: %+v", got)
	}
	until(t, v, func(*State) bool { return v.rebuilds > before })
}

func TestLoad(t *testing.T) {
	_, cli := etcdtest.Start(t)
	s := state.NewStore(cli, prefix)
	seed(t, s)
	// Many keys, read in pages.
	for i := 0; i < 30; i++ {
		n := "m" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		put(t, s, s.Keys.Node(n), state.Node{Name: n})
	}
	p := parser{keys: s.Keys, fams: DefaultFamilies}
	st, err := read(context.Background(), cli, p, p.ranges(), 7, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 33 {
		t.Fatalf("nodes = %d, want 33", len(st.Nodes))
	}
	st, err = Load(context.Background(), cli, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.CurrentRelease("web"); r == nil || r.Version != 1 || st.Rev == 0 || len(st.Containers("web")) != 2 {
		t.Fatalf("load: current %+v rev %d", r, st.Rev)
	}
	only, err := LoadFamilies(context.Background(), cli, prefix, Releases)
	if err != nil {
		t.Fatal(err)
	}
	if len(only.Nodes) != 0 || len(only.Releases["web"]) != 2 {
		t.Fatalf("families not respected: %d nodes, %d releases", len(only.Nodes), len(only.Releases["web"]))
	}
	if err := s.CreateFormation(context.Background(), &state.Formation{Name: "web2"}); err != nil {
		t.Fatal(err)
	}
	put(t, s, s.Keys.Release("web2", 1), state.Release{Formation: "web2", Version: 1})
	put(t, s, s.Keys.Coordinator(), state.CoordinatorInfo{SlugURL: "http://c"})
	one, err := LoadFormation(context.Background(), cli, prefix, "web")
	if err != nil {
		t.Fatal(err)
	}
	if one.Formations["web"] == nil || len(one.Formations) != 1 || len(one.Releases) != 1 || len(one.Layers["web"]) != 2 ||
		one.CurrentRelease("web").Version != 1 || one.Coordinator == nil || len(one.Nodes) != 0 {
		t.Fatalf("LoadFormation kept %d formations, %d release logs, coordinator %v", len(one.Formations), len(one.Releases), one.Coordinator)
	}
	if _, err := LoadFormation(context.Background(), cli, prefix, "../x"); err == nil {
		t.Fatal("LoadFormation took a bad name")
	}
}

func TestFamiliesRestrictTheWatch(t *testing.T) {
	_, cli := etcdtest.Start(t)
	s := state.NewStore(cli, prefix)
	k := s.Keys
	seed(t, s)
	v := New(cli, prefix, Options{Families: []Family{Routings, Nodes}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	sub := v.Subscribe()
	sub.Take()
	put(t, s, k.Release("web", 5), state.Release{Formation: "web", Version: 5})
	put(t, s, k.Routing("web"), state.Routing{Formation: "web", Release: 1})
	got := next(t, sub)
	if !got.Formations["web"] {
		t.Fatalf("routing touched %+v", got)
	}
	v.Read(func(st *State) {
		if len(st.Releases) != 0 || st.Routing["web"].Doc == nil || st.Routing["web"].Rev == 0 || len(st.Nodes) != 3 {
			t.Fatalf("kept %d releases, routing %+v, %d nodes", len(st.Releases), st.Routing["web"], len(st.Nodes))
		}
	})
}

// LoadFormationFamilies reads one formation's keys of the families given,
// nothing of a formation whose name starts the same.
func TestLoadFormationFamilies(t *testing.T) {
	_, cli := etcdtest.Start(t)
	s := state.NewStore(cli, prefix)
	k := s.Keys
	seed(t, s)
	put(t, s, k.Routing("web"), state.Routing{Formation: "web", Release: 1})
	put(t, s, k.Routing("webshop"), state.Routing{Formation: "webshop", Release: 1})
	put(t, s, k.Cert("web", "www"), state.Cert{Formation: "web", Name: "www"})
	put(t, s, k.Cert("webshop", "www"), state.Cert{Formation: "webshop", Name: "www"})
	put(t, s, k.ACMEChallenge("web", "tok"), state.ACMEChallenge{Domain: "web.example", Token: "tok"})
	st, err := LoadFormationFamilies(context.Background(), cli, prefix, "web", Routings, Certs, ACMEChallenges)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rev == 0 || len(st.Routing) != 1 || st.Routing["web"].Doc == nil || len(st.CertsOf("web")) != 1 || len(st.Certs) != 1 ||
		len(st.ChallengesOf("web")) != 1 || len(st.Layers) != 0 {
		t.Fatalf("rev %d, routing %+v, certs %+v, challenges %+v", st.Rev, st.Routing, st.Certs, st.Challenges)
	}
	if _, err := LoadFormationFamilies(context.Background(), cli, prefix, "web", Nodes); err == nil {
		t.Fatal("a family keyed by node accepted")
	}
	if _, err := LoadFormationFamilies(context.Background(), cli, prefix, "../x", Routings); err == nil {
		t.Fatal("a bad formation name accepted")
	}
}
