package scheduler

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
)

func world(nodes ...string) *World {
	w := &World{
		Formations: map[string]*state.Formation{"hello": {Name: "hello"}},
		Layers: map[string][]*state.Layer{"hello": {
			{Formation: "hello", Name: "runtime", Type: state.LayerRuntime, Selector: map[string]string{"role": "runtime"}},
			{Formation: "hello", Name: "proxy", Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}},
		}},
		Releases: map[string]*state.Release{},
		Nodes:    map[string]*state.Node{},
		Alive:    map[string]bool{},
		Runtimes: map[string]*state.Runtime{},
		Status:   map[string]*state.NodeStatus{},
		Routing:  map[string]RoutingAt{},
		Acks:     map[string]map[string]int64{},
		SlugURL:  "http://slugs",
	}
	for _, n := range nodes {
		w.Nodes[n] = &state.Node{Name: n, Labels: map[string]string{"role": "runtime,proxy"}}
		w.Alive[n] = true
	}
	return w
}

func release(v int) *state.Release {
	return &state.Release{Formation: "hello", Version: v, Config: map[string]string{"V": "x"},
		Build: &state.Build{Image: "stack", ProcessTypes: map[string]string{"web": "./web"}, Slug: &state.SlugRef{SHA256: "abc"}}}
}

// apply makes the decision the current state, as if written.
func apply(w *World, d *Decision, rev int64) {
	w.Runtimes = d.Runtimes
	for f, r := range d.Routing {
		if old := w.Routing[f]; old.Doc == nil || !sameRouting(old.Doc, r) {
			w.Routing[f] = RoutingAt{Doc: r, Rev: rev}
		}
	}
}

// ready reports every placed container as ready.
func ready(w *World) {
	for n, rt := range w.Runtimes {
		st := &state.NodeStatus{Node: n}
		for _, c := range rt.Containers {
			st.Containers = append(st.Containers, state.ContainerStatus{Name: c.Name, Formation: c.Formation, Release: c.Release, Type: c.Type, State: state.StateReady, Addr: n + ":" + c.Name})
		}
		w.Status[n] = st
	}
}

func names(d *Decision) []string {
	var out []string
	for _, rt := range d.Runtimes {
		for _, c := range rt.Containers {
			out = append(out, c.Name)
		}
	}
	sort.Strings(out)
	return out
}

func upstreams(r *state.Routing) []string {
	var out []string
	for _, u := range r.Upstreams {
		out = append(out, u.Container)
	}
	return out
}

func TestPlanRollout(t *testing.T) {
	w := world("n1")
	w.Releases["hello"] = release(1)

	// first release: web=1 by default, nothing routed until it is ready
	d := Plan(w)
	if got := names(d); len(got) != 1 || got[0] != "hello.v1.web.1" {
		t.Fatalf("v1 containers %v", got)
	}
	if d.Routing["hello"].Release != 1 || len(d.Routing["hello"].Upstreams) != 0 {
		t.Fatalf("v1 routing before ready %+v", d.Routing["hello"])
	}
	apply(w, d, 10)
	ready(w)
	d = Plan(w)
	if got := upstreams(d.Routing["hello"]); len(got) != 1 {
		t.Fatalf("v1 routing after ready %v", got)
	}
	apply(w, d, 11)
	w.Acks["hello"] = map[string]int64{"n1": 11}

	// v2: placed beside v1, traffic stays on v1 until v2 is ready
	w.Releases["hello"] = release(2)
	d = Plan(w)
	if got := names(d); len(got) != 2 {
		t.Fatalf("v2 should start beside v1: %v", got)
	}
	if r := d.Routing["hello"]; r.Release != 1 || upstreams(r)[0] != "hello.v1.web.1" {
		t.Fatalf("traffic must stay on v1: %+v", r)
	}
	apply(w, d, 12)
	ready(w)
	// v2 ready: traffic switches, v1 is kept until the proxy acks
	d = Plan(w)
	if r := d.Routing["hello"]; r.Release != 2 || upstreams(r)[0] != "hello.v2.web.1" {
		t.Fatalf("traffic should switch to v2: %+v", r)
	}
	if got := names(d); len(got) != 2 {
		t.Fatalf("v1 must stay until acked: %v", got)
	}
	apply(w, d, 13)
	d = Plan(w) // proxy has not acked 13 yet
	if got := names(d); len(got) != 2 {
		t.Fatalf("v1 must stay until acked: %v", got)
	}
	w.Acks["hello"]["n1"] = 13
	d = Plan(w)
	if got := names(d); len(got) != 1 || got[0] != "hello.v2.web.1" {
		t.Fatalf("v1 should be stopped after the ack: %v", got)
	}
}

func TestPlanLostNode(t *testing.T) {
	w := world("n1", "n2")
	w.Formations["hello"].Scale = map[string]int{"web": 2}
	w.Releases["hello"] = release(1)
	d := Plan(w)
	apply(w, d, 5)
	if len(d.Runtimes["n1"].Containers) != 1 || len(d.Runtimes["n2"].Containers) != 1 {
		t.Fatalf("web=2 should spread: %v", names(d))
	}
	// n2 is lost: its container is re-placed on n1 and n2's databag is emptied
	w.Alive["n2"] = false
	d = Plan(w)
	if len(d.Runtimes["n1"].Containers) != 2 || len(d.Runtimes["n2"].Containers) != 0 {
		t.Fatalf("lost node's work should move: n1=%d n2=%d", len(d.Runtimes["n1"].Containers), len(d.Runtimes["n2"].Containers))
	}
}

func TestPlanNoRuntimeNodes(t *testing.T) {
	// a selector that matches no node is reported, and nothing is placed
	w := world()
	w.Releases["hello"] = release(1)
	d := Plan(w)
	if d.Errors["hello"] == "" || len(names(d)) != 0 {
		t.Fatalf("want an error and no containers, got %v %v", d.Errors, names(d))
	}
}

func TestPlanScaleDownWaitsForProxies(t *testing.T) {
	w := world("n1")
	w.Formations["hello"].Scale = map[string]int{"web": 2}
	w.Releases["hello"] = release(1)
	apply(w, Plan(w), 5)
	ready(w)
	apply(w, Plan(w), 6)
	w.Acks["hello"] = map[string]int64{"n1": 6}
	w.Formations["hello"].Scale = map[string]int{"web": 1}
	d := Plan(w)
	// routing drops web.2 first; the container stays until the proxy acks
	if got := upstreams(d.Routing["hello"]); len(got) != 1 || len(names(d)) != 2 {
		t.Fatalf("routing %v containers %v", got, names(d))
	}
	apply(w, d, 7)
	w.Acks["hello"]["n1"] = 7
	if got := names(Plan(w)); len(got) != 1 {
		t.Fatalf("web.2 should go after the ack: %v", got)
	}
}

func TestPlanFailedRelease(t *testing.T) {
	// v2 never becomes ready: after the boot timeout it is marked failed with
	// the agent's reason, and v1 keeps serving meanwhile.
	w := world("n1")
	w.Releases["hello"] = release(1)
	apply(w, Plan(w), 5)
	ready(w)
	apply(w, Plan(w), 6)
	w.Acks["hello"] = map[string]int64{"n1": 6}
	w.Releases["hello"] = release(2)
	w.Releases["hello"].Created = time.Unix(1000, 0)
	w.Now = time.Unix(1030, 0)
	d := Plan(w)
	apply(w, d, 7)
	w.Status["n1"].Containers = append(w.Status["n1"].Containers, state.ContainerStatus{Name: "hello.v2.web.1", Formation: "hello", Release: 2, Type: "web", State: state.StateExited, Reason: "exit status 1"})
	if d := Plan(w); len(d.Failed) != 0 || d.Routing["hello"].Release != 1 {
		t.Fatalf("within the boot timeout: failed=%v routing=%+v", d.Failed, d.Routing["hello"])
	}
	w.Now = time.Unix(1061, 0)
	d = Plan(w)
	st := d.Failed["hello"]
	if st == nil || st.Version != 2 || !strings.Contains(st.Reason, "exit status 1") {
		t.Fatalf("want v2 failed with the reason, got %+v", st)
	}
	if d.Routing["hello"].Release != 1 {
		t.Fatalf("v1 must keep serving: %+v", d.Routing["hello"])
	}
}

func TestPlanDrainHandsOff(t *testing.T) {
	// Draining n1 moves its web container to n2; the n1 copy keeps serving
	// until the n2 copy is ready and every proxy has stopped routing to n1.
	w := world("n1", "n2")
	w.Drained = map[string]bool{"n2": true}
	w.Releases["hello"] = release(1)
	apply(w, Plan(w), 5)
	ready(w)
	apply(w, Plan(w), 6)
	w.Acks["hello"] = map[string]int64{"n1": 6, "n2": 6}
	if len(w.Runtimes["n1"].Containers) != 1 {
		t.Fatalf("setup: want the container on n1")
	}
	w.Drained = map[string]bool{"n1": true}
	d := Plan(w)
	if len(d.Runtimes["n2"].Containers) != 1 || len(d.Runtimes["n1"].Containers) != 1 {
		t.Fatalf("the copy on n2 should start beside n1's: %v", names(d))
	}
	if u := d.Routing["hello"].Upstreams; len(u) != 1 || u[0].Addr != "n1:hello.v1.web.1" {
		t.Fatalf("n1 must serve until n2 is ready: %+v", u)
	}
	apply(w, d, 7)
	ready(w)
	d = Plan(w)
	if u := d.Routing["hello"].Upstreams; len(u) != 1 || u[0].Addr != "n2:hello.v1.web.1" {
		t.Fatalf("traffic should move to n2: %+v", u)
	}
	if len(d.Runtimes["n1"].Containers) != 1 {
		t.Fatalf("n1's copy must stay until the proxies ack")
	}
	apply(w, d, 8)
	w.Acks["hello"] = map[string]int64{"n1": 8, "n2": 8}
	d = Plan(w)
	if len(d.Runtimes["n1"].Containers) != 0 || len(d.Runtimes["n2"].Containers) != 1 {
		t.Fatalf("after the acks n1 is empty: %v", names(d))
	}
}

func TestPlanRestartHandsOff(t *testing.T) {
	// ps:restart renames the web containers; the old ones serve until the
	// new ones are ready and the proxies have moved.
	w := world("n1")
	w.Formations["hello"].Scale = map[string]int{"web": 2}
	w.Releases["hello"] = release(1)
	apply(w, Plan(w), 5)
	ready(w)
	apply(w, Plan(w), 6)
	w.Acks["hello"] = map[string]int64{"n1": 6}
	w.Formations["hello"].Restarts = map[string]int{"web": 1}
	d := Plan(w)
	if got := names(d); len(got) != 4 {
		t.Fatalf("new containers start beside the old: %v", got)
	}
	if got := upstreams(d.Routing["hello"]); len(got) != 2 || got[0] != "hello.v1.web.1" {
		t.Fatalf("old containers keep serving: %v", got)
	}
	apply(w, d, 7)
	ready(w)
	d = Plan(w)
	if got := upstreams(d.Routing["hello"]); len(got) != 2 || got[0] != "hello.v1.web.1.r1" {
		t.Fatalf("traffic moves to the new containers: %v", got)
	}
	apply(w, d, 8)
	w.Acks["hello"]["n1"] = 8
	if got := names(Plan(w)); len(got) != 2 || got[0] != "hello.v1.web.1.r1" {
		t.Fatalf("old containers stop after the ack: %v", got)
	}
}

func TestPlanRebalanceOnJoin(t *testing.T) {
	// web=4 all on n1; n2 joins: containers move one at a time until 2/2,
	// each old copy serving until its replacement is ready.
	w := world("n1")
	w.Formations["hello"].Scale = map[string]int{"web": 4}
	w.Releases["hello"] = release(1)
	apply(w, Plan(w), 5)
	ready(w)
	apply(w, Plan(w), 6)
	w.Acks["hello"] = map[string]int64{"n1": 6}
	w.Nodes["n2"] = &state.Node{Name: "n2", Labels: map[string]string{"role": "runtime"}}
	w.Alive["n2"] = true
	rev := int64(7)
	for i := 0; i < 20; i++ {
		d := Plan(w)
		if n1, n2 := len(d.Runtimes["n1"].Containers), len(d.Runtimes["n2"].Containers); n1 == 2 && n2 == 2 {
			if got := upstreams(d.Routing["hello"]); len(got) != 4 {
				t.Fatalf("all four should serve: %v", got)
			}
			return
		}
		if got := upstreams(d.Routing["hello"]); len(got) < 4 {
			t.Fatalf("pass %d: fewer than four upstreams during the move: %v", i, got)
		}
		apply(w, d, rev)
		ready(w)
		w.Acks["hello"]["n1"] = rev
		rev++
	}
	t.Fatalf("never balanced: n1=%d n2=%d", len(w.Runtimes["n1"].Containers), len(w.Runtimes["n2"].Containers))
}

func TestPlanScaleDownFromMostLoaded(t *testing.T) {
	// web.1 and web.2 on n1, web.3 on n2: scaling to 2 stops one on n1.
	w := world("n1", "n2")
	w.Formations["hello"].Scale = map[string]int{"web": 3}
	w.Releases["hello"] = release(1)
	spec := func(i int) state.ContainerSpec {
		return specFor(w.SlugURL, w.Formations["hello"], w.Releases["hello"], "web", i)
	}
	w.Runtimes["n1"] = &state.Runtime{Node: "n1", Containers: []state.ContainerSpec{spec(1), spec(2)}}
	w.Runtimes["n2"] = &state.Runtime{Node: "n2", Containers: []state.ContainerSpec{spec(3)}}
	ready(w)
	apply(w, Plan(w), 5)
	w.Acks["hello"] = map[string]int64{"n1": 5, "n2": 5}
	w.Formations["hello"].Scale = map[string]int{"web": 2}
	d := Plan(w)
	apply(w, d, 6)
	w.Acks["hello"] = map[string]int64{"n1": 6, "n2": 6}
	d = Plan(w)
	if got := names(d); len(got) != 2 || len(d.Runtimes["n1"].Containers) != 1 || len(d.Runtimes["n2"].Containers) != 1 {
		t.Fatalf("scale-down should leave one per node: %v", got)
	}
	if d.Runtimes["n2"].Containers[0].Name != "hello.v1.web.3" {
		t.Fatalf("web.3 on n2 should stay: %v", names(d))
	}
}

// TestPlanRoutingCarriesBodyLimit: the formation's request body limit
// reaches the routing databag (a change rewrites it, nothing restarts); a
// value the proxies would refuse is left out, so they apply their default.
func TestPlanRoutingCarriesBodyLimit(t *testing.T) {
	w := world("n1")
	w.Releases["hello"] = release(1)
	d := Plan(w)
	apply(w, d, 10)
	ready(w)
	d = Plan(w)
	apply(w, d, 11)
	if got := d.Routing["hello"].MaxBodyBytes; got != 0 {
		t.Fatalf("routing body limit %d without a formation limit, want 0 (the proxies' default)", got)
	}
	before := names(d)
	for _, tc := range []struct{ set, want int64 }{
		{50 << 20, 50 << 20},                           // limits:set --body 50M
		{state.MaxMaxBodyBytes, state.MaxMaxBodyBytes}, // the ceiling itself
		{state.MaxMaxBodyBytes + 1, 0},                 // over the ceiling: left out
		{-1, 0},                                        // nonsense: left out
		{0, 0},                                         // limits:unset --body
	} {
		w.Formations["hello"].MaxBodyBytes = tc.set
		d = Plan(w)
		if got := d.Routing["hello"].MaxBodyBytes; got != tc.want {
			t.Errorf("formation body limit %d: routing has %d, want %d", tc.set, got, tc.want)
		}
		if got := names(d); strings.Join(got, " ") != strings.Join(before, " ") {
			t.Errorf("a body limit change replaced containers: %v -> %v", before, got)
		}
		if len(d.Routing["hello"].Upstreams) != 1 {
			t.Errorf("routing lost its upstream: %+v", d.Routing["hello"])
		}
	}
}
