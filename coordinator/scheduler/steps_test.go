package scheduler

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
)

// The table tests of planFormation's steps: desired → keep → place → route
// → retire.

func rel(v int, types ...string) *state.Release {
	pt := map[string]string{}
	for _, t := range types {
		pt[t] = "./" + t
	}
	return &state.Release{Formation: "hello", Version: v, Build: &state.Build{Image: "stack", ProcessTypes: pt, Slug: &state.SlugRef{SHA256: "abc"}}}
}

// at is container name (hello.v<r>.<type>.<i>[.r<restart>]) placed on node.
func at(node, name string) placed {
	var v, i, r int
	parts := strings.Split(name, ".")
	fmt.Sscanf(parts[1], "v%d", &v)
	fmt.Sscanf(parts[3], "%d", &i)
	if len(parts) > 4 {
		fmt.Sscanf(parts[4], "r%d", &r)
	}
	return placed{node: node, spec: state.ContainerSpec{Name: name, Formation: "hello", Release: v, Type: parts[2], Index: i}}
}

func placedNames(ps []placed) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.node+":"+p.spec.Name)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestDesiredStep(t *testing.T) {
	for _, tc := range []struct {
		name     string
		scale    map[string]int
		restarts map[string]int
		rel      *state.Release
		current  []placed
		want     string
	}{
		// No release: nothing runs.
		{name: "no release", want: ""},
		// A release without a build (config only before any push): nothing runs.
		{name: "no build", rel: &state.Release{Version: 1}, want: ""},
		// Never scaled: web=1.
		{name: "default scale", rel: rel(1, "web", "worker"), want: "hello.v1.web.1"},
		// Types are interleaved so placement spreads each evenly.
		{name: "interleaved", scale: map[string]int{"web": 2, "worker": 1}, rel: rel(1, "web", "worker"),
			want: "hello.v1.web.1 hello.v1.worker.1 hello.v1.web.2"},
		// A restart renames the type's containers.
		{name: "restart", scale: map[string]int{"web": 1}, restarts: map[string]int{"web": 2}, rel: rel(3, "web"), want: "hello.v3.web.1.r2"},
		// Scale-down stops the highest index on the node holding the most.
		{name: "scale down", scale: map[string]int{"web": 2}, rel: rel(1, "web"),
			current: []placed{at("n1", "hello.v1.web.1"), at("n1", "hello.v1.web.2"), at("n2", "hello.v1.web.3")},
			want:    "hello.v1.web.1 hello.v1.web.3"},
		// A container on a node outside the runtime layer does not hold its index.
		{name: "off-layer index", scale: map[string]int{"web": 1}, rel: rel(1, "web"),
			current: []placed{at("n9", "hello.v1.web.5")}, want: "hello.v1.web.1"},
		// A type the build lacks is not run even when scaled.
		{name: "unknown type", scale: map[string]int{"web": 1, "clock": 1}, rel: rel(1, "web"), want: "hello.v1.web.1"},
	} {
		form := &state.Formation{Name: "hello", Scale: tc.scale, Restarts: tc.restarts}
		desired, order := desiredStep("http://s", form, tc.rel, tc.current, setOf([]string{"n1", "n2"}))
		if got := strings.Join(order, " "); got != tc.want {
			t.Errorf("%s: order %q, want %q", tc.name, got, tc.want)
		}
		for _, name := range order {
			if s := desired[name]; s.Name != name || s.Formation != "hello" || s.SlugURL != "http://s/slugs/abc.tgz" {
				t.Errorf("%s: spec %+v", tc.name, s)
			}
		}
	}
}

func TestKeepStep(t *testing.T) {
	for _, tc := range []struct {
		name     string
		current  []placed
		desired  []string
		kept     string // node:name of kept containers
		retiring string
	}{
		// A desired container on a runtime node stays.
		{name: "kept", current: []placed{at("n1", "hello.v1.web.1")}, desired: []string{"hello.v1.web.1"}, kept: "n1:hello.v1.web.1"},
		// One on a node that left the layer (drained, relabelled) retires.
		{name: "off layer", current: []placed{at("n9", "hello.v1.web.1")}, desired: []string{"hello.v1.web.1"}, retiring: "n9:hello.v1.web.1"},
		// One that is not desired (old release) retires.
		{name: "old release", current: []placed{at("n1", "hello.v1.web.1"), at("n1", "hello.v2.web.1")}, desired: []string{"hello.v2.web.1"},
			kept: "n1:hello.v2.web.1", retiring: "n1:hello.v1.web.1"},
		// A name on two runtime nodes (a move): the copy on the node with fewer of its type stays.
		{name: "move", current: []placed{at("n1", "hello.v1.web.1"), at("n1", "hello.v1.web.2"), at("n1", "hello.v1.web.3"), at("n2", "hello.v1.web.3")},
			desired: []string{"hello.v1.web.1", "hello.v1.web.2", "hello.v1.web.3"},
			kept:    "n1:hello.v1.web.1 n1:hello.v1.web.2 n2:hello.v1.web.3", retiring: "n1:hello.v1.web.3"},
	} {
		desired := map[string]state.ContainerSpec{}
		for _, n := range tc.desired {
			desired[n] = at("", n).spec
		}
		k := keepStep(tc.current, desired, setOf([]string{"n1", "n2"}))
		var kept []placed
		for name, n := range k.kept {
			kept = append(kept, placed{node: n, spec: state.ContainerSpec{Name: name}})
		}
		if got := placedNames(kept); got != tc.kept {
			t.Errorf("%s: kept %q, want %q", tc.name, got, tc.kept)
		}
		if got := placedNames(k.retiring); got != tc.retiring {
			t.Errorf("%s: retiring %q, want %q", tc.name, got, tc.retiring)
		}
	}
}

func TestPlaceStep(t *testing.T) {
	for _, tc := range []struct {
		name    string
		load    map[string]int
		nodes   []string
		cap     int
		kept    []placed
		desired []string
		want    string
		err     string
	}{
		// Everything is kept: nothing is placed.
		{name: "all kept", nodes: []string{"n1"}, kept: []placed{at("n1", "hello.v1.web.1")}, desired: []string{"hello.v1.web.1"}},
		// The least loaded node takes the missing container.
		{name: "least loaded", nodes: []string{"n1", "n2"}, load: map[string]int{"n1": 3}, desired: []string{"hello.v1.web.1"}, want: "n2:hello.v1.web.1"},
		// Containers of a type spread over the nodes.
		{name: "spread", nodes: []string{"n1", "n2"}, desired: []string{"hello.v1.web.1", "hello.v1.web.2"}, want: "n1:hello.v1.web.1 n2:hello.v1.web.2"},
		// No runtime node: an error saying how to get one.
		{name: "no nodes", desired: []string{"hello.v1.web.1"}, err: "no live node matches"},
		// Full nodes: what fits is placed and the error says how many.
		{name: "capacity", nodes: []string{"n1"}, cap: 1, desired: []string{"hello.v1.web.1", "hello.v1.web.2"}, want: "n1:hello.v1.web.1", err: "2 containers wanted but only 1 fit"},
	} {
		nodes := map[string]*state.Node{}
		for _, n := range tc.nodes {
			nodes[n] = &state.Node{Name: n, Capacity: tc.cap}
		}
		ns := newNodeSet(nodes, nil, nil)
		for n, l := range tc.load {
			ns.load[n] = l
		}
		desired := map[string]state.ContainerSpec{}
		for _, n := range tc.desired {
			desired[n] = at("", n).spec
		}
		k := keepStep(tc.kept, desired, setOf(tc.nodes))
		got, err := placeStep(ns, tc.desired, desired, k, tc.nodes)
		if g := placedNames(got); g != tc.want {
			t.Errorf("%s: placed %q, want %q", tc.name, g, tc.want)
		}
		if (tc.err == "") != (err == "") || !strings.Contains(err, tc.err) {
			t.Errorf("%s: error %q, want %q", tc.name, err, tc.err)
		}
		for _, p := range got {
			if k.kept[p.spec.Name] != p.node {
				t.Errorf("%s: %s placed but not recorded as kept", tc.name, p.spec.Name)
			}
		}
	}
}

func TestRouteStep(t *testing.T) {
	created := time.Unix(1000, 0)
	routing := func(v int, ups ...string) RoutingAt {
		r := &state.Routing{Formation: "hello", Release: v, Upstreams: []state.Upstream{}}
		for _, u := range ups {
			r.Upstreams = append(r.Upstreams, state.Upstream{Container: u, Addr: "n1:" + u, Release: v})
		}
		return RoutingAt{Doc: r, Rev: 5}
	}
	for _, tc := range []struct {
		name     string
		rel      *state.Release
		live     bool
		current  []placed
		ready    []string // names ready on n1
		prev     RoutingAt
		now      time.Duration // since the release's creation
		release  int
		ups      string
		failed   string // part of the failure reason; "" for none
		reason   string // part of some reason
		notFaild bool
	}{
		// No release: the formation is routed, to nothing.
		{name: "no release", release: 0},
		// First release, not ready yet: routed to it with no upstreams.
		{name: "first, starting", rel: rel(1, "web"), current: []placed{at("n1", "hello.v1.web.1")}, now: 10 * time.Second, release: 1, reason: "waiting for v1: 0 of 1"},
		// First release ready: its container is the upstream.
		{name: "first, ready", rel: rel(1, "web"), current: []placed{at("n1", "hello.v1.web.1")}, ready: []string{"hello.v1.web.1"}, release: 1, ups: "hello.v1.web.1"},
		// First release never ready within the boot timeout: failed, still routed with no upstreams.
		{name: "first, failed", rel: rel(1, "web"), current: []placed{at("n1", "hello.v1.web.1")}, prev: routing(1), now: 61 * time.Second,
			release: 1, failed: "hello.v1.web.1 not started"},
		// First release that served once and lost its container: not failed.
		{name: "first, served", rel: rel(1, "web"), current: []placed{at("n1", "hello.v1.web.1")}, prev: routing(1, "hello.v1.web.1"), now: time.Hour, release: 1},
		// A live release whose containers are all gone (node loss): not failed.
		{name: "live, lost", rel: rel(1, "web"), live: true, current: []placed{at("n1", "hello.v1.web.1")}, prev: routing(1), now: time.Hour, release: 1},
		// New release not ready: traffic stays on the old release's ready containers.
		{name: "rolling out", rel: rel(2, "web"), current: []placed{at("n1", "hello.v1.web.1"), at("n1", "hello.v2.web.1")}, ready: []string{"hello.v1.web.1"},
			prev: routing(1, "hello.v1.web.1"), now: 10 * time.Second, release: 1, ups: "hello.v1.web.1", reason: "waiting for v2: 0 of 1"},
		// New release not ready within the boot timeout: failed, the old one serves.
		{name: "rollout failed", rel: rel(2, "web"), current: []placed{at("n1", "hello.v1.web.1"), at("n1", "hello.v2.web.1")}, ready: []string{"hello.v1.web.1"},
			prev: routing(1, "hello.v1.web.1"), now: 61 * time.Second, release: 1, ups: "hello.v1.web.1", failed: "not ready within 1m0s"},
		// New release ready: traffic switches.
		{name: "switch", rel: rel(2, "web"), current: []placed{at("n1", "hello.v1.web.1"), at("n1", "hello.v2.web.1")}, ready: []string{"hello.v1.web.1", "hello.v2.web.1"},
			prev: routing(1, "hello.v1.web.1"), release: 2, ups: "hello.v2.web.1", reason: "switching traffic from v1 to v2"},
		// Replacing a routed release's container: the ready old copy serves meanwhile.
		{name: "replacement", rel: rel(1, "web"), current: []placed{at("n1", "hello.v1.web.1.r1"), at("n1", "hello.v1.web.1")}, ready: []string{"hello.v1.web.1"},
			prev: routing(1, "hello.v1.web.1"), release: 1, ups: "hello.v1.web.1", reason: "serves until its replacement is ready"},
	} {
		form := &state.Formation{Name: "hello"}
		if tc.name == "replacement" {
			form.Restarts = map[string]int{"web": 1}
		}
		if tc.rel != nil {
			tc.rel.Created = created
		}
		in := formationInput{name: "hello", form: form, rel: tc.rel, live: tc.live, current: tc.current, ready: readiness{}, routing: tc.prev}
		for _, n := range tc.ready {
			in.ready["n1/"+n] = "n1:" + n
		}
		desired, order := desiredStep("", form, tc.rel, tc.current, setOf([]string{"n1"}))
		k := keepStep(tc.current, desired, setOf([]string{"n1"}))
		r := routeStep(planEnv{now: created.Add(tc.now)}, in, order, desired, k)
		var ups []string
		for _, u := range r.routing.Upstreams {
			ups = append(ups, u.Container)
		}
		if r.routing.Release != tc.release || strings.Join(ups, " ") != tc.ups {
			t.Errorf("%s: routes v%d %v, want v%d %q", tc.name, r.routing.Release, ups, tc.release, tc.ups)
		}
		switch {
		case tc.failed == "" && r.failed != nil:
			t.Errorf("%s: failed %+v", tc.name, r.failed)
		case tc.failed != "" && (r.failed == nil || !r.failed.Failed || r.failed.Version != tc.rel.Version || !strings.Contains(r.failed.Reason, tc.failed)):
			t.Errorf("%s: failure %+v, want one with %q", tc.name, r.failed, tc.failed)
		}
		if tc.reason != "" && !strings.Contains(strings.Join(r.reasons, "\n"), tc.reason) {
			t.Errorf("%s: reasons %q, want %q", tc.name, r.reasons, tc.reason)
		}
	}
}

func TestRetireStep(t *testing.T) {
	route := func(v int, ups ...string) *state.Routing {
		r := &state.Routing{Formation: "hello", Release: v, Upstreams: []state.Upstream{}}
		for _, u := range ups {
			r.Upstreams = append(r.Upstreams, state.Upstream{Container: u, Addr: "n1:" + u, Release: v})
		}
		return r
	}
	for _, tc := range []struct {
		name     string
		rel      int
		retiring []placed
		ready    []string
		prev     *state.Routing
		next     *state.Routing
		acked    int64
		stay     string
	}{
		// A retiring container the new routing still names stays.
		{name: "still routed", rel: 1, retiring: []placed{at("n1", "hello.v1.web.1")}, ready: []string{"hello.v1.web.1"},
			prev: route(1, "hello.v1.web.1"), next: route(1, "hello.v1.web.1"), acked: 5, stay: "n1:hello.v1.web.1"},
		// Routing changed: a web container stays until the proxies apply it.
		{name: "routing changed", rel: 2, retiring: []placed{at("n1", "hello.v1.web.1")},
			prev: route(1, "hello.v1.web.1"), next: route(2, "hello.v2.web.1"), acked: 5, stay: "n1:hello.v1.web.1"},
		// Routing unchanged but a proxy is behind: it stays.
		{name: "proxy behind", rel: 2, retiring: []placed{at("n1", "hello.v1.web.1")},
			prev: route(2, "hello.v2.web.1"), next: route(2, "hello.v2.web.1"), acked: 4, stay: "n1:hello.v1.web.1"},
		// Every proxy applied routing without it: it stops.
		{name: "acked", rel: 2, retiring: []placed{at("n1", "hello.v1.web.1")},
			prev: route(2, "hello.v2.web.1"), next: route(2, "hello.v2.web.1"), acked: 5},
		// Another type of the old release runs until traffic switched.
		{name: "worker before switch", rel: 2, retiring: []placed{at("n1", "hello.v1.worker.1")},
			prev: route(1, "hello.v1.web.1"), next: route(1, "hello.v1.web.1"), acked: 5, stay: "n1:hello.v1.worker.1"},
		// And stops once it has.
		{name: "worker after switch", rel: 2, retiring: []placed{at("n1", "hello.v1.worker.1")},
			prev: route(2, "hello.v2.web.1"), next: route(2, "hello.v2.web.1"), acked: 5},
		// A scaled-down worker of the current release stops at once.
		{name: "scaled-down worker", rel: 2, retiring: []placed{at("n1", "hello.v2.worker.2")},
			prev: route(1, "hello.v1.web.1"), next: route(1, "hello.v1.web.1"), acked: 5},
	} {
		in := formationInput{name: "hello", rel: rel(tc.rel, "web", "worker"), ready: readiness{}, routing: RoutingAt{Doc: tc.prev, Rev: 5},
			acks: map[string]int64{"p1": tc.acked}}
		for _, n := range tc.ready {
			in.ready["n1/"+n] = "n1:" + n
		}
		stay, _ := retireStep(in, tc.next, tc.retiring, []string{"p1"})
		if got := placedNames(stay); got != tc.stay {
			t.Errorf("%s: stay %q, want %q", tc.name, got, tc.stay)
		}
	}
}

// A first release that never becomes ready is marked failed after the boot
// timeout, like later ones, and the formation stays routed to nothing;
// the next pass, without a current release, stops its containers.
func TestPlanFirstReleaseFails(t *testing.T) {
	w := world("n1")
	w.Releases["hello"] = release(1)
	w.Releases["hello"].Created = time.Unix(1000, 0)
	w.Now = time.Unix(1010, 0)
	d := Plan(w)
	apply(w, d, 5)
	w.Acks["hello"] = map[string]int64{"n1": 5}
	if len(d.Failed) != 0 || d.Routing["hello"].Release != 1 {
		t.Fatalf("within the boot timeout: failed=%v routing=%+v", d.Failed, d.Routing["hello"])
	}
	w.Status["n1"] = &state.NodeStatus{Node: "n1", Containers: []state.ContainerStatus{{Name: "hello.v1.web.1", Formation: "hello", Release: 1, Type: "web", State: state.StateExited, Reason: "exit status 2"}}}
	w.Now = time.Unix(1061, 0)
	d = Plan(w)
	if st := d.Failed["hello"]; st == nil || st.Version != 1 || !strings.Contains(st.Reason, "exit status 2") {
		t.Fatalf("want v1 failed with the agent's reason, got %+v", st)
	}
	if r := d.Routing["hello"]; len(r.Upstreams) != 0 {
		t.Fatalf("routing %+v", r)
	}
	delete(w.Releases, "hello") // marked failed: no current release
	d = Plan(w)
	apply(w, d, 6)
	w.Acks["hello"]["n1"] = 6
	d = Plan(w)
	if got := names(d); len(got) != 0 || d.Routing["hello"].Release != 0 || len(d.Failed) != 0 {
		t.Fatalf("after the failure: containers %v routing %+v failed %v", got, d.Routing["hello"], d.Failed)
	}
}

func TestRoutedByAll(t *testing.T) {
	doc := func(v int, ups ...string) *state.Routing {
		r := &state.Routing{Formation: "hello", Release: v, Upstreams: []state.Upstream{}}
		for _, u := range ups {
			r.Upstreams = append(r.Upstreams, state.Upstream{Container: u, Addr: "n1:" + u, Release: v})
		}
		return r
	}
	for _, tc := range []struct {
		name  string
		v     int
		prev  *state.Routing
		next  *state.Routing
		acked int64
		want  bool
	}{
		// Routed, unchanged, applied by every proxy: live.
		{name: "live", v: 2, prev: doc(2, "a"), next: doc(2, "a"), acked: 5, want: true},
		// The routing still names the old release: not live.
		{name: "old release routed", v: 2, prev: doc(1, "a"), next: doc(1, "a"), acked: 5},
		// Routed to nothing: not live.
		{name: "no upstreams", v: 2, prev: doc(2), next: doc(2), acked: 5},
		// This pass changes the routing: not yet.
		{name: "changing", v: 2, prev: doc(2, "a"), next: doc(2, "b"), acked: 5},
		// A proxy has not applied it: not yet.
		{name: "not acked", v: 2, prev: doc(2, "a"), next: doc(2, "a"), acked: 4},
		// No routing at all.
		{name: "no routing", v: 2, next: doc(2, "a"), acked: 5},
	} {
		if got := routedByAll(tc.v, RoutingAt{Doc: tc.prev, Rev: 5}, tc.next, []string{"p1"}, map[string]int64{"p1": tc.acked}); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
