package scheduler

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/deis/deis/pkg/state"
)

// World is everything the scheduler reads, decoded.
type World struct {
	Formations map[string]*state.Formation
	Layers     map[string][]*state.Layer // by formation
	// Releases holds each formation's current release: the newest one that
	// is not marked failed.
	Releases map[string]*state.Release
	// Live holds the formations whose current release went live once
	// (ReleaseStatus.LiveAt): its readiness no longer decides its fate.
	Live  map[string]bool
	Nodes map[string]*state.Node
	Alive map[string]bool // heartbeat present
	// Drained nodes take no containers; their work moves away.
	Drained  map[string]bool
	Runtimes map[string]*state.Runtime
	Status   map[string]*state.NodeStatus
	Routing  map[string]RoutingAt
	// Acks maps formation -> proxy node -> applied routing revision.
	Acks map[string]map[string]int64
	// SlugURL is the slug server's base URL ("http://host:port").
	SlugURL    string
	BaseDomain string
	// Now is the time of the pass; BootTimeout is how long a new release's
	// web containers have to become ready before the release is marked
	// failed (default 60s, as on Heroku).
	Now         time.Time
	BootTimeout time.Duration
}

// RoutingAt is a routing databag and the revision it was written at.
type RoutingAt struct {
	Doc *state.Routing
	Rev int64
}

// Decision is what the scheduler writes.
type Decision struct {
	// Runtimes holds the databag of every registered node.
	Runtimes map[string]*state.Runtime
	// Routing holds the routing databag of every formation.
	Routing map[string]*state.Routing
	// Reasons explains what is in progress, per formation.
	Reasons map[string][]string
	// Errors says what cannot be done, per formation (no nodes, no capacity).
	Errors map[string]string
	// Failed holds releases to mark failed: their web containers did not
	// become ready within the boot timeout.
	Failed map[string]*state.ReleaseStatus
	// Placed counts the containers this pass placed on a node.
	Placed int
}

// ContainerName is the platform-wide name of one container. restart is the
// process type's restart count (0: never restarted).
func ContainerName(f string, release int, typ string, index, restart int) string {
	if restart > 0 {
		return fmt.Sprintf("%s.v%d.%s.%d.r%d", f, release, typ, index, restart)
	}
	return fmt.Sprintf("%s.v%d.%s.%d", f, release, typ, index)
}

// HealthPathKey is the config key that turns on HTTP health checks.
const HealthPathKey = "HEALTHCHECK_PATH"

// placed is a container currently in some node's databag.
type placed struct {
	node string
	spec state.ContainerSpec
}

// sortPlaced orders placements by container name, then node.
func sortPlaced(ps []placed) {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].spec.Name != ps[j].spec.Name {
			return ps[i].spec.Name < ps[j].spec.Name
		}
		return ps[i].node < ps[j].node
	})
}

// Plan computes every databag from the world. It is pure.
func Plan(w *World) *Decision {
	d := &Decision{
		Runtimes: map[string]*state.Runtime{},
		Routing:  map[string]*state.Routing{},
		Reasons:  map[string][]string{},
		Errors:   map[string]string{},
		Failed:   map[string]*state.ReleaseStatus{},
	}
	for n := range w.Nodes {
		d.Runtimes[n] = &state.Runtime{Node: n, Containers: []state.ContainerSpec{}}
	}
	// Everything currently placed, by formation. Containers on nodes that are
	// lost or gone are dropped here: that is what re-places them.
	byFormation := map[string][]placed{}
	ns := newNodeSet(w.Nodes, w.Alive, w.Drained)
	for n, rt := range w.Runtimes {
		if _, ok := w.Nodes[n]; !ok || !w.Alive[n] {
			continue
		}
		for _, c := range rt.Containers {
			byFormation[c.Formation] = append(byFormation[c.Formation], placed{node: n, spec: c})
			ns.grow(n, 1, c.Limits.MemoryBytes)
		}
	}
	for _, ps := range byFormation {
		sortPlaced(ps)
	}
	// Ready containers as the live agents report them, by formation, keyed
	// node/name: after a drain or a move one name can be on two nodes.
	readyBy := map[string]readiness{}
	for n, st := range w.Status {
		if !w.Alive[n] {
			continue
		}
		for _, c := range st.Containers {
			if c.State == state.StateReady && c.Addr != "" {
				if readyBy[c.Formation] == nil {
					readyBy[c.Formation] = readiness{}
				}
				readyBy[c.Formation][n+"/"+c.Name] = c.Addr
			}
		}
	}
	env := planEnv{slugURL: w.SlugURL, baseDomain: w.BaseDomain, now: w.Now, boot: w.BootTimeout}
	for _, f := range sortedKeys(w.Formations) {
		p := planFormation(env, ns, formationInput{
			name: f, form: w.Formations[f], rel: w.Releases[f], live: w.Live[f], layers: w.Layers[f],
			current: byFormation[f], ready: readyBy[f], routing: w.Routing[f], acks: w.Acks[f],
			status: func() map[string]state.ContainerStatus { return reportedBy(w, f) },
		})
		d.merge(f, p)
	}
	for _, rt := range d.Runtimes {
		rt.Sort()
	}
	return d
}

// merge adds one formation's plan to the decision.
func (d *Decision) merge(f string, p *formationPlan) {
	for _, c := range p.containers {
		add(d, c.node, c.spec)
	}
	d.Routing[f] = p.routing
	if len(p.reasons) > 0 {
		d.Reasons[f] = p.reasons
	}
	if p.err != "" {
		d.Errors[f] = p.err
	}
	if p.failed != nil {
		d.Failed[f] = p.failed
	}
	d.Placed += p.placed
}

// reportedBy is the status of formation f's containers as the live agents
// of w report them, by name.
func reportedBy(w *World, f string) map[string]state.ContainerStatus {
	st := map[string]state.ContainerStatus{}
	for n, s := range w.Status {
		if !w.Alive[n] {
			continue
		}
		for _, c := range s.Containers {
			if c.Formation == f {
				st[c.Name] = c
			}
		}
	}
	return st
}

// nodeSet is the node side of a pass, shared by every formation it plans:
// registrations, liveness, drains, and each live node's load, which grows
// as the pass places containers.
type nodeSet struct {
	nodes   map[string]*state.Node
	alive   map[string]bool
	drained map[string]bool
	// base is a node's load as stored, read the first time the pass needs
	// it (nil: load and memUsed are filled up front).
	base    func(n string) (int, int64)
	load    map[string]int   // containers in the node's databag, and placed by this pass
	memUsed map[string]int64 // memory limits of those
	lc      map[string]layerSet
}

// layerSet is the live nodes of some layers, sorted and as a set.
type layerSet struct {
	nodes []string
	set   map[string]bool
}

func newNodeSet(nodes map[string]*state.Node, alive, drained map[string]bool) *nodeSet {
	return &nodeSet{nodes: nodes, alive: alive, drained: drained,
		load: map[string]int{}, memUsed: map[string]int64{}, lc: map[string]layerSet{}}
}

// count is node n's load in containers; mem in memory limits.
func (ns *nodeSet) count(n string) int {
	ns.fetch(n)
	return ns.load[n]
}

func (ns *nodeSet) mem(n string) int64 {
	ns.fetch(n)
	return ns.memUsed[n]
}

// grow adds containers and memory to node n's load.
func (ns *nodeSet) grow(n string, containers int, mem int64) {
	ns.fetch(n)
	ns.load[n] += containers
	ns.memUsed[n] += mem
}

func (ns *nodeSet) fetch(n string) {
	if ns.base == nil {
		return
	}
	if _, ok := ns.load[n]; !ok {
		ns.load[n], ns.memUsed[n] = ns.base(n)
	}
}

// layerNodes returns the live nodes of the layers of type t, sorted
// (runtime: not drained). It is memoized within a pass: formations mostly
// share the default selectors.
func (ns *nodeSet) layerNodes(layers []*state.Layer, t state.LayerType) []string {
	return ns.layer(layers, t).nodes
}

func (ns *nodeSet) layer(layers []*state.Layer, t state.LayerType) layerSet {
	key := layerKey(layers, t)
	if ls, ok := ns.lc[key]; ok {
		return ls
	}
	set := map[string]bool{}
	for _, l := range layers {
		if l.Type != t {
			continue
		}
		for n, node := range ns.nodes {
			if t == state.LayerRuntime && ns.drained[n] {
				continue
			}
			if ns.alive[n] && l.Matches(node) {
				set[n] = true
			}
		}
	}
	ls := layerSet{nodes: sortedKeys(set), set: set}
	ns.lc[key] = ls
	return ls
}

// layerKey names the selectors of the layers of type t.
func layerKey(layers []*state.Layer, t state.LayerType) string {
	var key strings.Builder
	key.WriteString(string(t))
	for _, l := range layers {
		if l.Type != t {
			continue
		}
		key.WriteString("|")
		for _, k := range sortedKeys(l.Selector) {
			key.WriteString(k + "=" + l.Selector[k] + ",")
		}
	}
	return key.String()
}

// planEnv is what every formation's plan shares besides the nodes.
type planEnv struct {
	slugURL, baseDomain string
	now                 time.Time
	boot                time.Duration
}

// formationInput is what planning one formation reads.
type formationInput struct {
	name   string
	form   *state.Formation // nil: the formation is gone
	rel    *state.Release   // current release (nil: none)
	live   bool             // rel went live once
	layers []*state.Layer
	// current is every container of the formation in the databags of live
	// nodes, sorted by name then node.
	current []placed
	ready   readiness
	// status returns what the live agents report about the formation's
	// containers, by name; read only to explain a failure.
	status  func() map[string]state.ContainerStatus
	routing RoutingAt
	acks    map[string]int64 // proxy node -> applied routing revision
}

// readiness maps node/name to the address of a container its live agent
// reports ready.
type readiness map[string]string

// at is the address of container name on node, if it is ready there.
func (r readiness) at(name, node string) (string, bool) {
	if node == "" {
		return "", false
	}
	a, ok := r[node+"/"+name]
	return a, ok
}

// formationPlan is what one formation's pass decided.
type formationPlan struct {
	containers []placed // what its nodes run after the pass
	routing    *state.Routing
	reasons    []string
	err        string
	failed     *state.ReleaseStatus
	placed     int
	// moved: the pass placed, moved or stopped containers, or changed the
	// routing; what it says it does ("placing …") is done by the next.
	moved bool
}

// planFormation plans one formation in five pure steps: the containers its
// release wants (desired), which placed ones stay where they are (keep, and
// one rebalancing move), where the missing ones go (place), what the
// proxies route (route), and which placed containers not wanted any more
// may stop (retire). It updates ns's load with what it places.
func planFormation(env planEnv, ns *nodeSet, in formationInput) *formationPlan {
	p := &formationPlan{}
	if in.form == nil {
		return p // gone: nothing runs, nothing is routed
	}
	runtime := ns.layer(in.layers, state.LayerRuntime)
	runtimeNodes := runtime.nodes
	proxyNodes := ns.layerNodes(in.layers, state.LayerProxy)

	desired, order := desiredStep(env.slugURL, in.form, in.rel, in.current, runtime.set)
	k := keepStep(in.current, desired, runtime.set)
	if moved, from, why := rebalance(ns, order, desired, k, in.ready, runtimeNodes); moved != "" {
		p.reasons = append(p.reasons, why)
		for _, c := range in.current {
			if c.spec.Name == moved && c.node == from {
				k.retiring = append(k.retiring, c)
			}
		}
	}
	got, err := placeStep(ns, order, desired, k, runtimeNodes)
	p.err = err
	for _, c := range got {
		p.reasons = append(p.reasons, fmt.Sprintf("placing %s on %s", c.spec.Name, c.node))
	}
	p.placed = len(got)
	r := routeStep(env, in, order, desired, k)
	p.routing, p.failed = r.routing, r.failed
	p.reasons = append(p.reasons, r.reasons...)
	stay, why := retireStep(in, r.routing, k.retiring, proxyNodes)
	p.reasons = append(p.reasons, why...)
	p.moved = len(got) > 0 || len(stay) < len(k.retiring) ||
		in.routing.Doc == nil || !sameRouting(in.routing.Doc, r.routing)
	p.containers = append(p.containers, stay...)
	for _, name := range sortedKeys(k.kept) {
		p.containers = append(p.containers, placed{node: k.kept[name], spec: desired[name]})
	}
	return p
}

// desiredStep returns the containers release rel of formation form wants,
// by name, and their names in placement order: the process types
// interleaved, so placement spreads every type evenly. On scale-down the
// indexes that stop are the ones on the nodes holding the most of the type.
func desiredStep(slugURL string, form *state.Formation, rel *state.Release, current []placed, isRuntime map[string]bool) (map[string]state.ContainerSpec, []string) {
	desired := map[string]state.ContainerSpec{}
	var order []string
	if rel == nil || rel.Build == nil {
		return desired, order
	}
	scale := form.EffectiveScale(rel.Build.ProcessTypes)
	types := sortedKeys(scale)
	indexes := map[string][]int{}
	maxN := 0
	for _, t := range types {
		indexes[t] = chooseIndexes(form.Name, rel.Version, t, form.Restarts[t], scale[t], current, isRuntime)
		maxN = max(maxN, len(indexes[t]))
	}
	for i := 0; i < maxN; i++ {
		for _, t := range types {
			if i < len(indexes[t]) {
				idx := indexes[t][i]
				name := ContainerName(form.Name, rel.Version, t, idx, form.Restarts[t])
				desired[name] = specFor(slugURL, form, rel, t, idx)
				order = append(order, name)
			}
		}
	}
	return desired, order
}

// kept is the outcome of keepStep.
type kept struct {
	kept map[string]string // desired name -> node it stays on
	// byType counts, per runtime node and process type, the formation's
	// containers kept there (a node without any may be missing).
	byType   map[string]map[string]int
	retiring []placed // placed but not kept
}

// keep records that name, of process type typ, stays on node.
func (k *kept) keep(name, typ, node string) {
	k.kept[name] = node
	m := k.byType[node]
	if m == nil {
		m = map[string]int{}
		k.byType[node] = m
	}
	m[typ]++
}

// keepStep keeps desired containers where they are when their node still
// belongs to the runtime layer; everything else placed is retiring. A name
// placed on two runtime nodes is being moved (rebalance): the copy on the
// node holding fewer of its type stays, so the move sticks.
func keepStep(current []placed, desired map[string]state.ContainerSpec, isRuntime map[string]bool) *kept {
	k := &kept{kept: map[string]string{}, byType: map[string]map[string]int{}}
	copies := map[string]int{}
	for _, p := range current {
		if _, ok := desired[p.spec.Name]; ok && isRuntime[p.node] {
			copies[p.spec.Name]++
		}
	}
	for _, p := range current {
		if _, ok := desired[p.spec.Name]; ok && isRuntime[p.node] && copies[p.spec.Name] == 1 {
			k.keep(p.spec.Name, p.spec.Type, p.node)
		}
	}
	for _, p := range current {
		if _, ok := desired[p.spec.Name]; ok && isRuntime[p.node] && copies[p.spec.Name] > 1 {
			best := ""
			for _, q := range current {
				if q.spec.Name == p.spec.Name && isRuntime[q.node] &&
					(best == "" || k.byType[q.node][q.spec.Type] < k.byType[best][q.spec.Type]) {
					best = q.node
				}
			}
			if _, done := k.kept[p.spec.Name]; !done {
				k.keep(p.spec.Name, p.spec.Type, best)
			}
		}
	}
	for _, p := range current {
		if k.kept[p.spec.Name] != p.node {
			k.retiring = append(k.retiring, p)
		}
	}
	return k
}

// placeStep places the desired containers that are not kept anywhere on the
// runtime nodes (Place), records them in k and in ns's load, and returns
// them, with an error message when some did not fit or no node is there.
func placeStep(ns *nodeSet, order []string, desired map[string]state.ContainerSpec, k *kept, runtimeNodes []string) ([]placed, string) {
	var slots []Slot
	for _, name := range order {
		if _, ok := k.kept[name]; !ok {
			s := desired[name]
			slots = append(slots, Slot{Name: name, Type: s.Type, Memory: s.Limits.MemoryBytes})
		}
	}
	if len(slots) == 0 {
		return nil, ""
	}
	if len(runtimeNodes) == 0 {
		return nil, "no live node matches the formation's runtime layer: start an agent with --labels role=runtime"
	}
	bins := make([]Bin, 0, len(runtimeNodes))
	for _, n := range runtimeNodes {
		node := ns.nodes[n]
		bins = append(bins, Bin{Node: n, Capacity: node.Capacity, Memory: node.MemoryBytes,
			Count: ns.count(n), ByType: k.byType[n], MemoryUsed: ns.mem(n)})
	}
	got, err := Place(slots, bins)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	var out []placed
	for _, s := range slots {
		if n, ok := got[s.Name]; ok {
			k.kept[s.Name] = n
			ns.grow(n, 1, s.Memory)
			out = append(out, placed{node: n, spec: desired[s.Name]})
		}
	}
	return out, msg
}

// routed is the outcome of routeStep.
type routed struct {
	routing *state.Routing
	failed  *state.ReleaseStatus
	reasons []string
}

// routeStep writes the formation's routing. Traffic goes to the current
// release's ready web containers when the release is already routed, when
// nothing was routed before, or once all of them are ready; until then it
// stays on the old release's containers that are still ready. Replacing
// containers of the routed release, the ready old copies serve until as
// many new ones are ready as the scale asks for. A release whose web
// containers are not all ready within the boot timeout is failed, unless
// it went live (or served) already: a later release while an older one
// serves, and the first release too, while the formation is routed with no
// upstreams.
func routeStep(env planEnv, in formationInput, order []string, desired map[string]state.ContainerSpec, k *kept) routed {
	form, rel, prev := in.form, in.rel, in.routing
	out := routed{}
	route := &state.Routing{Formation: in.name, Domains: domains(env.baseDomain, form), Upstreams: []state.Upstream{}}
	if state.ValidateMaxBody(form.MaxBodyBytes) == nil {
		route.MaxBodyBytes = form.MaxBodyBytes // else the proxies' default
	}
	if h := form.HTTPS; h != nil && (h.Redirect || h.HSTSMaxAge > 0) {
		route.HTTPS = &state.HTTPS{Redirect: h.Redirect, HSTSMaxAge: h.HSTSMaxAge}
	}
	var webDesired []string
	readyCount := 0
	for _, name := range order {
		if desired[name].Type == "web" {
			webDesired = append(webDesired, name)
			if _, ok := in.ready.at(name, k.kept[name]); ok {
				readyCount++
			}
		}
	}
	allReady := readyCount == len(webDesired)
	servedBefore := in.live
	switch {
	case rel == nil:
	case prev.Doc == nil || prev.Doc.Release == rel.Version || allReady:
		servedBefore = servedBefore || (prev.Doc != nil && prev.Doc.Release == rel.Version && len(prev.Doc.Upstreams) > 0)
		route.Release = rel.Version
		for _, name := range webDesired {
			if addr, ok := in.ready.at(name, k.kept[name]); ok {
				route.Upstreams = append(route.Upstreams, state.Upstream{Container: name, Addr: addr, Release: rel.Version})
			}
		}
		if deficit := len(webDesired) - readyCount; deficit > 0 && prev.Doc != nil && prev.Doc.Release == rel.Version {
			for _, p := range k.retiring {
				if deficit == 0 {
					break
				}
				if p.spec.Type != "web" || p.spec.Release != rel.Version {
					continue
				}
				if addr, ok := in.ready.at(p.spec.Name, p.node); ok {
					route.Upstreams = append(route.Upstreams, state.Upstream{Container: p.spec.Name, Addr: addr, Release: rel.Version})
					out.reasons = append(out.reasons, fmt.Sprintf("%s on %s serves until its replacement is ready", p.spec.Name, p.node))
					deficit--
				}
			}
		}
		if prev.Doc != nil && prev.Doc.Release != rel.Version {
			out.reasons = append(out.reasons, fmt.Sprintf("switching traffic from v%d to v%d", prev.Doc.Release, rel.Version))
		}
		if !allReady && !servedBefore {
			out.reasons = append(out.reasons, fmt.Sprintf("waiting for v%d: %d of %d web containers ready", rel.Version, readyCount, len(webDesired)))
		}
	default:
		route.Release = prev.Doc.Release
		for _, u := range prev.Doc.Upstreams {
			for _, p := range k.retiring {
				if addr, ok := in.ready.at(p.spec.Name, p.node); ok && p.spec.Name == u.Container && addr == u.Addr {
					route.Upstreams = append(route.Upstreams, u)
				}
			}
		}
		out.reasons = append(out.reasons, fmt.Sprintf("waiting for v%d: %d of %d web containers ready", rel.Version, readyCount, len(webDesired)))
	}
	if rel != nil && !allReady && !servedBefore {
		boot := env.boot
		if boot <= 0 {
			boot = 60 * time.Second
		}
		if !env.now.IsZero() && env.now.Sub(rel.Created) > boot {
			var st map[string]state.ContainerStatus
			if in.status != nil {
				st = in.status()
			}
			out.failed = &state.ReleaseStatus{Version: rel.Version, Failed: true, At: env.now,
				Reason: fmt.Sprintf("web containers not ready within %s: %s", boot, notReadyReason(webDesired, k.kept, in.ready, st))}
		}
	}
	sort.Slice(route.Upstreams, func(i, j int) bool {
		a, b := route.Upstreams[i], route.Upstreams[j]
		if a.Container != b.Container {
			return a.Container < b.Container
		}
		return a.Addr < b.Addr
	})
	out.routing = route
	return out
}

// retireStep decides which retiring containers stay in their databags: a
// container stays while the new routing still sends it traffic, a web
// container while some live proxy has not applied a routing revision that
// no longer names it, and other process types of the old release until
// traffic has switched to the current one. It returns those that stay and
// the reasons.
func retireStep(in formationInput, route *state.Routing, retiring []placed, proxyNodes []string) ([]placed, []string) {
	prev, rel := in.routing, in.rel
	addrs := map[string]bool{}
	for _, u := range route.Upstreams {
		addrs[u.Addr] = true
	}
	changed := prev.Doc == nil || !sameRouting(prev.Doc, route)
	allAcked := !changed
	for _, n := range proxyNodes {
		if in.acks[n] < prev.Rev {
			allAcked = false
		}
	}
	var stay []placed
	var reasons []string
	for _, p := range retiring {
		keep := false
		addr, ready := in.ready.at(p.spec.Name, p.node)
		switch {
		case ready && addrs[addr]:
			keep = true
		case p.spec.Type == "web" && !allAcked:
			keep = true
			reasons = append(reasons, fmt.Sprintf("keeping %s until every proxy stops routing to it", p.spec.Name))
		case p.spec.Type != "web" && rel != nil && route.Release != rel.Version && p.spec.Release != rel.Version:
			keep = true // other process types of the old release run until the switch
		}
		if keep {
			stay = append(stay, p)
		} else {
			reasons = append(reasons, fmt.Sprintf("stopping %s on %s", p.spec.Name, p.node))
		}
	}
	return stay, reasons
}

// notReadyReason says why the containers named are not ready, from what the
// agents report (st, by name).
func notReadyReason(names []string, kept map[string]string, ready readiness, st map[string]state.ContainerStatus) string {
	var parts []string
	for _, name := range names {
		if _, ok := ready.at(name, kept[name]); ok {
			continue
		}
		c, ok := st[name]
		switch {
		case !ok:
			parts = append(parts, name+" not started")
		case c.Reason != "":
			parts = append(parts, fmt.Sprintf("%s %s (%s)", name, c.State, c.Reason))
		default:
			parts = append(parts, fmt.Sprintf("%s %s", name, c.State))
		}
	}
	return strings.Join(parts, "; ")
}

// chooseIndexes picks the n indexes of process type t that run. Indexes
// already placed on live runtime nodes stay; when there are more than n, the
// ones to stop come off the node holding the most of t (highest index
// first); the rest are filled with the lowest free indexes.
func chooseIndexes(f string, release int, t string, restart, n int, current []placed, isRuntime map[string]bool) []int {
	perNode := map[string][]int{}
	total := 0
	seen := map[int]bool{}
	for _, p := range current {
		s := p.spec
		if s.Release != release || s.Type != t || !isRuntime[p.node] || seen[s.Index] ||
			s.Name != ContainerName(f, release, t, s.Index, restart) {
			continue
		}
		seen[s.Index] = true
		perNode[p.node] = append(perNode[p.node], s.Index)
		total++
	}
	for total > n {
		most := ""
		for node, idx := range perNode {
			if most == "" || len(idx) > len(perNode[most]) || (len(idx) == len(perNode[most]) && node > most) {
				most = node
			}
		}
		idx := perNode[most]
		sort.Ints(idx)
		delete(seen, idx[len(idx)-1])
		perNode[most] = idx[:len(idx)-1]
		total--
	}
	out := make([]int, 0, n)
	for i := range seen {
		out = append(out, i)
	}
	for i := 1; len(out) < n; i++ {
		if !seen[i] {
			out = append(out, i)
			seen[i] = true
		}
	}
	sort.Ints(out)
	return out
}

// rebalance moves one container per pass from the node holding the most of
// a process type to the one holding the fewest, when they differ by two or
// more (a node joined, or came back). It waits while anything else is in
// flight: a rollout, a move, or a container that is not ready. The moved
// container is dropped from k (it is placed again like a missing one; its
// old copy retires with the usual handoff); rebalance returns it, the node
// it leaves and the reason.
func rebalance(ns *nodeSet, order []string, desired map[string]state.ContainerSpec, k *kept, ready readiness, nodes []string) (moved, from, why string) {
	if len(k.retiring) > 0 || len(nodes) < 2 {
		return "", "", ""
	}
	for _, name := range order {
		n, ok := k.kept[name]
		if !ok {
			return "", "", ""
		}
		if _, ok := ready.at(name, n); !ok && desired[name].Type == "web" {
			return "", "", ""
		}
	}
	types := map[string]bool{}
	for _, name := range order {
		types[desired[name].Type] = true
	}
	byType := k.byType
	for _, t := range sortedKeys(types) {
		// No node holds two of t: no two nodes can differ by two.
		top := 0
		for _, m := range byType {
			top = max(top, m[t])
		}
		if top < 2 {
			continue
		}
		most, fewest := "", ""
		for _, n := range nodes {
			if node := ns.nodes[n]; node.Capacity > 0 && ns.count(n) >= node.Capacity && byType[n][t] < byType[most][t] {
				continue // full: cannot take one more
			}
			if most == "" || byType[n][t] > byType[most][t] {
				most = n
			}
			if fewest == "" || byType[n][t] < byType[fewest][t] {
				fewest = n
			}
		}
		if most == "" || fewest == "" || byType[most][t]-byType[fewest][t] < 2 {
			continue
		}
		if node := ns.nodes[fewest]; node.Capacity > 0 && ns.count(fewest) >= node.Capacity {
			continue
		}
		// the highest index of type t on the most loaded node moves
		for i := len(order) - 1; i >= 0; i-- {
			name := order[i]
			if desired[name].Type == t && k.kept[name] == most {
				delete(k.kept, name)
				byType[most][t]--
				ns.grow(most, -1, 0)
				return name, most, fmt.Sprintf("rebalancing: moving %s off %s", name, most)
			}
		}
	}
	return "", "", ""
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func setOf(names []string) map[string]bool {
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out
}

func add(d *Decision, node string, c state.ContainerSpec) {
	rt := d.Runtimes[node]
	if rt == nil {
		rt = &state.Runtime{Node: node}
		d.Runtimes[node] = rt
	}
	rt.Containers = append(rt.Containers, c)
}

func domains(base string, f *state.Formation) []string {
	if base == "" {
		base = "localhost"
	}
	out := []string{f.Name + "." + base}
	for _, d := range f.Domains {
		if state.ValidateDomain(d) == nil {
			out = append(out, d)
		}
	}
	sort.Strings(out[1:])
	return out
}

func specFor(slugURL string, f *state.Formation, r *state.Release, typ string, i int) state.ContainerSpec {
	s := state.SpecFromRelease(r, slugURL)
	s.Name = ContainerName(f.Name, r.Version, typ, i, f.Restarts[typ])
	s.SetFormation(f)
	s.Type = typ
	s.Index = i
	s.Command = r.Build.ProcessTypes[typ]
	s.Exec = state.ExecMode(r.Build, typ)
	s.Limits = f.Limits[typ]
	s.HealthPath = r.Config[HealthPathKey]
	return s
}

func sameRouting(a, b *state.Routing) bool {
	return state.Marshal(a) == state.Marshal(b)
}
