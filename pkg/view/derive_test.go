package view

import (
	"reflect"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
)

// built applies puts (key -> value, in order, each at the next revision)
// to a fresh State, as the initial read would.
type kvp struct {
	key string
	val any
}

func built(t *testing.T, puts ...kvp) *State {
	t.Helper()
	var es []Entry
	for _, e := range puts {
		es = append(es, Entry{Key: e.key, Value: e.val})
	}
	s, err := Build(prefix, es...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var k = state.NewKeys(prefix)

func rel(f string, v int) kvp {
	return kvp{k.Release(f, v), state.Release{Formation: f, Version: v}}
}

func failed(f string, v int) kvp {
	return kvp{k.ReleaseStatus(f, v), state.ReleaseStatus{Version: v, Failed: true}}
}

func TestCurrentRelease(t *testing.T) {
	form := kvp{k.Formation("a"), state.Formation{Name: "a"}}
	for _, tc := range []struct {
		name string
		puts []kvp
		want int // 0: none
	}{
		{"no release", []kvp{form}, 0},
		{"newest", []kvp{form, rel("a", 1), rel("a", 2)}, 2},
		{"newest failed", []kvp{form, rel("a", 1), rel("a", 2), failed("a", 2)}, 1},
		{"all failed", []kvp{form, rel("a", 1), failed("a", 1)}, 0},
		{"live status is no failure", []kvp{form, rel("a", 1), {k.ReleaseStatus("a", 1), state.ReleaseStatus{Version: 1}}}, 1},
		{"ten sorts after nine", []kvp{form, rel("a", 9), rel("a", 10)}, 10},
		{"other formation's failure", []kvp{form, rel("a", 1), failed("b", 1)}, 1},
		// Keys of an earlier formation of the same name, written before the
		// formation key (a purge still to run), do not count.
		{"stale status of an earlier incarnation", []kvp{failed("a", 1), form, rel("a", 1)}, 1},
		{"stale release of an earlier incarnation", []kvp{rel("a", 2), form, rel("a", 1)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := built(t, tc.puts...)
			got := 0
			if r := s.CurrentRelease("a"); r != nil {
				got = r.Version
			}
			if got != tc.want {
				t.Fatalf("current = v%d, want v%d", got, tc.want)
			}
		})
	}
}

func node(n string, labels map[string]string, capacity int, mem int64) kvp {
	return kvp{k.Node(n), state.Node{Name: n, Labels: labels, Capacity: capacity, MemoryBytes: mem}}
}

func hb(n string) kvp { return kvp{k.Heartbeat(n), state.Heartbeat{Node: n}} }

func layer(f, name string, t state.LayerType, sel map[string]string) kvp {
	return kvp{k.Layer(f, name), state.Layer{Formation: f, Name: name, Type: t, Selector: sel}}
}

func TestLayerNodes(t *testing.T) {
	rt := map[string]string{"role": "runtime"}
	px := map[string]string{"role": "proxy"}
	for _, tc := range []struct {
		name string
		puts []kvp
		typ  state.LayerType
		want []string
	}{
		{"no layer", []kvp{node("n1", rt, 0, 0), hb("n1")}, state.LayerRuntime, nil},
		{"live matching", []kvp{layer("a", "r", state.LayerRuntime, rt), node("n2", rt, 0, 0), hb("n2"), node("n1", rt, 0, 0), hb("n1")},
			state.LayerRuntime, []string{"n1", "n2"}},
		{"lost node", []kvp{layer("a", "r", state.LayerRuntime, rt), node("n1", rt, 0, 0)}, state.LayerRuntime, nil},
		{"drained runtime", []kvp{layer("a", "r", state.LayerRuntime, rt), node("n1", rt, 0, 0), hb("n1"), {k.Drain("n1"), state.Drain{Node: "n1"}}},
			state.LayerRuntime, nil},
		{"drained proxy still proxies", []kvp{layer("a", "p", state.LayerProxy, px), node("n1", px, 0, 0), hb("n1"), {k.Drain("n1"), state.Drain{Node: "n1"}}},
			state.LayerProxy, []string{"n1"}},
		{"multi-valued label", []kvp{layer("a", "p", state.LayerProxy, px), node("n1", map[string]string{"role": "runtime,proxy"}, 0, 0), hb("n1")},
			state.LayerProxy, []string{"n1"}},
		{"two layers, union", []kvp{layer("a", "p1", state.LayerProxy, px), layer("a", "p2", state.LayerProxy, map[string]string{"zone": "b"}),
			node("n2", px, 0, 0), hb("n2"), node("n1", map[string]string{"zone": "b"}, 0, 0), hb("n1")}, state.LayerProxy, []string{"n1", "n2"}},
		{"other type", []kvp{layer("a", "r", state.LayerRuntime, rt), node("n1", rt, 0, 0), hb("n1")}, state.LayerProxy, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := built(t, tc.puts...).LayerNodes("a", tc.typ)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func spec(f, name string, mem int64) state.ContainerSpec {
	return state.ContainerSpec{Name: name, Formation: f, Limits: state.ResourceLimits{MemoryBytes: mem}}
}

func TestPlacedContainersLoadFree(t *testing.T) {
	s := built(t,
		node("n1", nil, 3, 1000), hb("n1"),
		node("n2", nil, 0, 0), // lost
		kvp{k.Runtime("n1"), state.Runtime{Node: "n1", Containers: []state.ContainerSpec{spec("a", "a.2", 400), spec("a", "a.1", 400), spec("b", "b.1", 0)}}},
		kvp{k.Runtime("n2"), state.Runtime{Node: "n2", Containers: []state.ContainerSpec{spec("a", "a.3", 0)}}},
		kvp{k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Containers: []state.ContainerStatus{
			{Name: "a.1", Formation: "a", State: state.StateReady}, {Name: "a.0", Formation: "a", State: state.StateStopping}}}},
	)
	var placed []string
	for _, p := range s.Placed("a") {
		placed = append(placed, p.Node+"/"+p.Spec.Name)
	}
	if want := []string{"n1/a.1", "n1/a.2"}; !reflect.DeepEqual(placed, want) {
		t.Fatalf("placed %v, want %v", placed, want)
	}
	var joined []string
	for _, c := range s.Containers("a") {
		st := "-"
		if c.Status != nil {
			st = c.Status.State
		}
		joined = append(joined, c.Node+"/"+c.Name+"/"+st+"/"+map[bool]string{true: "spec", false: "nospec"}[c.Spec != nil]+map[bool]string{true: "/lost", false: ""}[c.Lost])
	}
	want := []string{"n1/a.0/stopping/nospec", "n1/a.1/ready/spec", "n1/a.2/-/spec", "n2/a.3/-/spec/lost"}
	if !reflect.DeepEqual(joined, want) {
		t.Fatalf("containers %v, want %v", joined, want)
	}
	for _, tc := range []struct {
		node             string
		load, free       int
		loadMem, freeMem int64
	}{
		{"n1", 3, 0, 800, 200},
		{"n2", 1, -1, 0, -1},
		{"n9", 0, 0, 0, 0},
	} {
		if n, m := s.Load(tc.node); n != tc.load || m != tc.loadMem {
			t.Errorf("load(%s) = %d, %d", tc.node, n, m)
		}
		if n, m := s.Free(tc.node); n != tc.free || m != tc.freeMem {
			t.Errorf("free(%s) = %d, %d", tc.node, n, m)
		}
	}
	if got := s.NodesOf("a"); !reflect.DeepEqual(got, []string{"n1", "n2"}) {
		t.Errorf("nodes of a = %v", got)
	}

	// Moving a container updates the indexes, not a recomputation.
	var touched Touched
	p := parser{keys: k, fams: AllFamilies}
	key := k.Runtime("n1")
	ref, _ := p.parse(key)
	if err := s.apply(change{key: key, ref: ref, val: []byte(state.Marshal(state.Runtime{Node: "n1", Containers: []state.ContainerSpec{spec("b", "b.1", 0)}})), modRev: 99}, &touched); err != nil {
		t.Fatal(err)
	}
	if len(s.Placed("a")) != 0 || len(s.Placed("b")) != 1 || !touched.Nodes["n1"] {
		t.Fatalf("after the move: a %v, b %v, touched %+v", s.Placed("a"), s.Placed("b"), touched)
	}
	if n, m := s.Free("n1"); n != 2 || m != 1000 {
		t.Fatalf("free after the move = %d, %d", n, m)
	}
}

func TestParseKeys(t *testing.T) {
	p := parser{keys: k, fams: AllFamilies}
	for _, tc := range []struct {
		key  string
		ok   bool
		want keyRef
	}{
		{k.Formation("a"), true, keyRef{fam: Formations, formation: "a"}},
		{k.Layer("a", "r"), true, keyRef{fam: Layers, formation: "a", name: "r"}},
		{k.Release("a", 12), true, keyRef{fam: Releases, formation: "a", version: 12}},
		{k.ReleaseStatus("a", 3), true, keyRef{fam: ReleaseStatuses, formation: "a", version: 3}},
		{k.ProxyAck("a", "n1"), true, keyRef{fam: ProxyAcks, formation: "a", node: "n1"}},
		{k.TrafficOf("a", "n1"), true, keyRef{fam: Traffic, formation: "a", node: "n1"}},
		{k.NodeStatus("n1"), true, keyRef{fam: NodeStatuses, node: "n1"}},
		{k.FormationStatus("a"), true, keyRef{fam: FormationStatus, formation: "a"}},
		{k.Coordinator(), true, keyRef{fam: Coordinator}},
		{k.Cert("a", "c"), true, keyRef{fam: Certs, formation: "a", name: "c"}},
		{k.Build("a", "x"), false, keyRef{}},
		{k.Releases("a") + "bad", false, keyRef{}},
		{k.Formation("a") + "/extra", false, keyRef{}},
		{k.Election() + "/x", false, keyRef{}},
	} {
		got, ok := p.parse(tc.key)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("parse(%s) = %+v, %v; want %+v, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

// TestTouchRules: what each event touches, applied to a state that holds
// the base entries.
func TestTouchRules(t *testing.T) {
	ready := state.ContainerStatus{Name: "a.1", Formation: "a", State: state.StateReady}
	other := state.ContainerStatus{Name: "b.1", Formation: "b", State: state.StateReady}
	base := []kvp{
		{k.Formation("a"), state.Formation{Name: "a"}},
		{k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Containers: []state.ContainerStatus{ready, other}}},
		{k.TrafficOf("a", "p1"), state.TrafficReport{Node: "p1", Releases: map[int]map[string]int64{1: {"2xx": 3}}}},
		{k.Routing("a"), state.Routing{Formation: "a", Release: 1}},
		{k.Drain("n2"), state.Drain{Node: "n2"}},
	}
	exited := ready
	exited.State = state.StateExited
	for _, tc := range []struct {
		name       string
		key        string
		val        any // nil: delete
		formations []string
		nodes      []string
	}{
		{"report time only", k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Updated: time.Now(), Containers: []state.ContainerStatus{ready, other}}, nil, nil},
		{"one container changed", k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Containers: []state.ContainerStatus{exited, other}}, []string{"a"}, []string{"n1"}},
		{"one container gone", k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Containers: []state.ContainerStatus{ready}}, []string{"b"}, []string{"n1"}},
		{"report deleted", k.NodeStatus("n1"), nil, []string{"a", "b"}, []string{"n1"}},
		{"traffic time only", k.TrafficOf("a", "p1"), state.TrafficReport{Node: "p1", At: time.Now(), Releases: map[int]map[string]int64{1: {"2xx": 3}}}, nil, nil},
		{"traffic counts", k.TrafficOf("a", "p1"), state.TrafficReport{Node: "p1", Releases: map[int]map[string]int64{1: {"5xx": 3}}}, []string{"a"}, nil},
		{"routing rewritten alike", k.Routing("a"), state.Routing{Formation: "a", Release: 1}, []string{"a"}, nil},
		{"formation status", k.FormationStatus("a"), state.FormationStatus{Formation: "a", Pending: []string{"x"}}, nil, nil},
		{"coordinator", k.Coordinator(), state.CoordinatorInfo{SlugURL: "http://x"}, nil, nil},
		{"drain alike", k.Drain("n2"), state.Drain{Node: "n2"}, nil, nil},
		{"undrain", k.Drain("n2"), nil, nil, []string{"n2"}},
		{"delete of a key never seen", k.Heartbeat("n9"), nil, nil, nil},
		{"ack", k.ProxyAck("a", "p1"), state.ProxyAck{Node: "p1", Revision: 4}, []string{"a"}, nil},
		{"config", k.Config("a"), state.Config{Vars: map[string]string{"A": "1"}}, []string{"a"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := built(t, base...)
			p := parser{keys: k, fams: AllFamilies}
			ref, ok := p.parse(tc.key)
			if !ok {
				t.Fatalf("key %s not parsed", tc.key)
			}
			c := change{key: tc.key, ref: ref, modRev: 100, createRev: 100}
			if tc.val != nil {
				c.val = []byte(state.Marshal(tc.val))
			}
			var got Touched
			if err := s.apply(c, &got); err != nil {
				t.Fatal(err)
			}
			if f := sortedSet(got.Formations); !reflect.DeepEqual(f, orEmpty(tc.formations)) {
				t.Errorf("formations %v, want %v", f, tc.formations)
			}
			if n := sortedSet(got.Nodes); !reflect.DeepEqual(n, orEmpty(tc.nodes)) {
				t.Errorf("nodes %v, want %v", n, tc.nodes)
			}
		})
	}
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
