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
	Nodes    map[string]*state.Node
	Alive    map[string]bool // heartbeat present
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
	// become ready within the boot timeout while an older release served.
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
	for n, rt := range w.Runtimes {
		if _, ok := w.Nodes[n]; !ok || !w.Alive[n] {
			continue
		}
		for _, c := range rt.Containers {
			byFormation[c.Formation] = append(byFormation[c.Formation], placed{node: n, spec: c})
		}
	}
	for _, ps := range byFormation {
		sort.Slice(ps, func(i, j int) bool {
			if ps[i].spec.Name != ps[j].spec.Name {
				return ps[i].spec.Name < ps[j].spec.Name
			}
			return ps[i].node < ps[j].node
		})
	}
	// Node load across all formations, for placement.
	load := map[string]int{}
	memUsed := map[string]int64{}
	for _, ps := range byFormation {
		for _, p := range ps {
			load[p.node]++
			memUsed[p.node] += p.spec.Limits.MemoryBytes
		}
	}
	// Ready containers as the live agents report them, by formation, keyed
	// node/name: after a drain or a move one name can be on two nodes.
	readyBy := map[string]map[string]string{}
	for n, st := range w.Status {
		if !w.Alive[n] {
			continue
		}
		for _, c := range st.Containers {
			if c.State == state.StateReady && c.Addr != "" {
				if readyBy[c.Formation] == nil {
					readyBy[c.Formation] = map[string]string{}
				}
				readyBy[c.Formation][n+"/"+c.Name] = c.Addr
			}
		}
	}
	lc := layerCache{}
	names := make([]string, 0, len(w.Formations))
	for f := range w.Formations {
		names = append(names, f)
	}
	sort.Strings(names)
	for _, f := range names {
		planFormation(w, d, f, byFormation[f], load, memUsed, readyBy[f], lc)
	}
	for _, rt := range d.Runtimes {
		rt.Sort()
	}
	return d
}

func (d *Decision) reason(f, format string, args ...any) {
	d.Reasons[f] = append(d.Reasons[f], fmt.Sprintf(format, args...))
}

// layerCache memoizes layerNodes within one pass: formations mostly share
// the default selectors.
type layerCache map[string][]string

func (c layerCache) nodes(w *World, f string, t state.LayerType) []string {
	var key strings.Builder
	key.WriteString(string(t))
	for _, l := range w.Layers[f] {
		if l.Type != t {
			continue
		}
		key.WriteString("|")
		for _, k := range sortedKeys(l.Selector) {
			key.WriteString(k + "=" + l.Selector[k] + ",")
		}
	}
	if n, ok := c[key.String()]; ok {
		return n
	}
	n := layerNodes(w, f, t)
	c[key.String()] = n
	return n
}

// layerNodes returns the live nodes of formation f's layers of type t.
func layerNodes(w *World, f string, t state.LayerType) []string {
	set := map[string]bool{}
	for _, l := range w.Layers[f] {
		if l.Type != t {
			continue
		}
		for n, node := range w.Nodes {
			if t == state.LayerRuntime && w.Drained[n] {
				continue
			}
			if w.Alive[n] && l.Matches(node) {
				set[n] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func planFormation(w *World, d *Decision, f string, current []placed, load map[string]int, memUsed map[string]int64, ready map[string]string, lc layerCache) {
	form := w.Formations[f]
	rel := w.Releases[f]
	runtimeNodes := lc.nodes(w, f, state.LayerRuntime)
	proxyNodes := lc.nodes(w, f, state.LayerProxy)
	isRuntime := map[string]bool{}
	for _, n := range runtimeNodes {
		isRuntime[n] = true
	}

	// The containers the current release wants.
	desired := map[string]state.ContainerSpec{}
	var order []string
	if rel != nil && rel.Build != nil {
		scale := form.EffectiveScale(rel.Build.ProcessTypes)
		types := make([]string, 0, len(scale))
		for t := range scale {
			types = append(types, t)
		}
		sort.Strings(types)
		// Which indexes of each type run: on scale-down the containers to
		// stop come off the nodes holding the most of the type.
		indexes := map[string][]int{}
		maxN := 0
		for _, t := range types {
			indexes[t] = chooseIndexes(f, rel.Version, t, form.Restarts[t], scale[t], current, isRuntime)
			maxN = max(maxN, len(indexes[t]))
		}
		// Interleave the types so placement spreads every type evenly.
		for i := 0; i < maxN; i++ {
			for _, t := range types {
				if i < len(indexes[t]) {
					idx := indexes[t][i]
					name := ContainerName(f, rel.Version, t, idx, form.Restarts[t])
					desired[name] = specFor(w, form, rel, t, idx)
					order = append(order, name)
				}
			}
		}
	}

	// Keep desired containers where they are when their node still belongs to
	// the runtime layer; everything else placed is retiring.
	kept := map[string]string{} // name -> node
	var retiring []placed
	byType := map[string]map[string]int{} // node -> type -> count of this formation
	for _, n := range runtimeNodes {
		byType[n] = map[string]int{}
	}
	// A name placed on two runtime nodes is being moved (rebalance): keep
	// the copy on the node holding fewer of its type, so the move sticks.
	copies := map[string]int{}
	for _, p := range current {
		if _, ok := desired[p.spec.Name]; ok && isRuntime[p.node] {
			copies[p.spec.Name]++
		}
	}
	for _, p := range current {
		if _, ok := desired[p.spec.Name]; ok && isRuntime[p.node] && copies[p.spec.Name] == 1 {
			kept[p.spec.Name] = p.node
			byType[p.node][p.spec.Type]++
		}
	}
	for _, p := range current {
		if _, ok := desired[p.spec.Name]; ok && isRuntime[p.node] && copies[p.spec.Name] > 1 {
			best := ""
			for _, q := range current {
				if q.spec.Name == p.spec.Name && isRuntime[q.node] &&
					(best == "" || byType[q.node][q.spec.Type] < byType[best][q.spec.Type]) {
					best = q.node
				}
			}
			if _, done := kept[p.spec.Name]; !done {
				kept[p.spec.Name] = best
				byType[best][p.spec.Type]++
			}
		}
	}
	for _, p := range current {
		if kept[p.spec.Name] != p.node {
			retiring = append(retiring, p)
		}
	}

	// Readiness as the agents report it, per node: after a drain or a move
	// one name can briefly exist on two nodes.
	readyAt := func(name, node string) (string, bool) {
		if node == "" {
			return "", false
		}
		a, ok := ready[node+"/"+name]
		return a, ok
	}

	if moved, from := rebalance(w, d, f, order, desired, kept, byType, retiring, readyAt, runtimeNodes, load); moved != "" {
		for _, p := range current {
			if p.spec.Name == moved && p.node == from {
				retiring = append(retiring, p)
			}
		}
	}

	// Place what is missing.
	var slots []Slot
	for _, name := range order {
		if _, ok := kept[name]; !ok {
			s := desired[name]
			slots = append(slots, Slot{Name: name, Type: s.Type, Memory: s.Limits.MemoryBytes})
		}
	}
	if len(slots) > 0 {
		if len(runtimeNodes) == 0 {
			d.Errors[f] = "no live node matches the formation's runtime layer: start an agent with --labels role=runtime"
		} else {
			bins := make([]Bin, 0, len(runtimeNodes))
			for _, n := range runtimeNodes {
				node := w.Nodes[n]
				bins = append(bins, Bin{Node: n, Capacity: node.Capacity, Memory: node.MemoryBytes,
					Count: load[n], ByType: byType[n], MemoryUsed: memUsed[n]})
			}
			got, err := Place(slots, bins)
			if err != nil {
				d.Errors[f] = err.Error()
			}
			for _, s := range slots {
				if n, ok := got[s.Name]; ok {
					kept[s.Name] = n
					load[n]++
					memUsed[n] += s.Memory
					d.reason(f, "placing %s on %s", s.Name, n)
					d.Placed++
				}
			}
		}
	}

	// Routing.
	prev := w.Routing[f]
	route := &state.Routing{Formation: f, Domains: domains(w, form), Upstreams: []state.Upstream{}}
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
			if _, ok := readyAt(name, kept[name]); ok {
				readyCount++
			}
		}
	}
	allReady := readyCount == len(webDesired)
	switch {
	case rel == nil:
	case prev.Doc == nil || prev.Doc.Release == rel.Version || allReady:
		route.Release = rel.Version
		for _, name := range webDesired {
			if addr, ok := readyAt(name, kept[name]); ok {
				route.Upstreams = append(route.Upstreams, state.Upstream{Container: name, Addr: addr, Release: rel.Version})
			}
		}
		// Replacing containers of this release (drain, restart, a lost
		// node's return): ready old copies keep serving until as many new
		// ones are ready as the scale asks for.
		if deficit := len(webDesired) - readyCount; deficit > 0 && prev.Doc != nil && prev.Doc.Release == rel.Version {
			for _, p := range retiring {
				if deficit == 0 {
					break
				}
				if p.spec.Type != "web" || p.spec.Release != rel.Version {
					continue
				}
				if addr, ok := readyAt(p.spec.Name, p.node); ok {
					route.Upstreams = append(route.Upstreams, state.Upstream{Container: p.spec.Name, Addr: addr, Release: rel.Version})
					d.reason(f, "%s on %s serves until its replacement is ready", p.spec.Name, p.node)
					deficit--
				}
			}
		}
		if prev.Doc != nil && prev.Doc.Release != rel.Version {
			d.reason(f, "switching traffic from v%d to v%d", prev.Doc.Release, rel.Version)
		}
	default:
		// Rolling out: keep routing to the old release's containers that are
		// still placed and ready, until the new release is ready.
		route.Release = prev.Doc.Release
		for _, u := range prev.Doc.Upstreams {
			for _, p := range retiring {
				if addr, ok := readyAt(p.spec.Name, p.node); ok && p.spec.Name == u.Container && addr == u.Addr {
					route.Upstreams = append(route.Upstreams, u)
				}
			}
		}
		d.reason(f, "waiting for v%d: %d of %d web containers ready", rel.Version, readyCount, len(webDesired))
		boot := w.BootTimeout
		if boot <= 0 {
			boot = 60 * time.Second
		}
		if !w.Now.IsZero() && w.Now.Sub(rel.Created) > boot {
			why := notReadyReason(w, f, webDesired, kept, ready)
			d.Failed[f] = &state.ReleaseStatus{Version: rel.Version, Failed: true, At: w.Now,
				Reason: fmt.Sprintf("web containers not ready within %s: %s", boot, why)}
		}
	}
	sort.Slice(route.Upstreams, func(i, j int) bool {
		a, b := route.Upstreams[i], route.Upstreams[j]
		if a.Container != b.Container {
			return a.Container < b.Container
		}
		return a.Addr < b.Addr
	})
	d.Routing[f] = route

	// Retiring containers leave only once no proxy can send them traffic.
	routed := map[string]bool{} // addr
	for _, u := range route.Upstreams {
		routed[u.Addr] = true
	}
	changed := prev.Doc == nil || !sameRouting(prev.Doc, route)
	allAcked := !changed
	for _, n := range proxyNodes {
		if w.Acks[f][n] < prev.Rev {
			allAcked = false
		}
	}
	for _, p := range retiring {
		keep := false
		switch {
		case isRouted(routed, readyAt, p):
			keep = true
		case p.spec.Type == "web" && !allAcked:
			keep = true
			d.reason(f, "keeping %s until every proxy stops routing to it", p.spec.Name)
		case p.spec.Type != "web" && rel != nil && route.Release != rel.Version && p.spec.Release != rel.Version:
			keep = true // other process types of the old release run until the switch
		}
		if keep {
			add(d, p.node, p.spec)
		} else {
			d.reason(f, "stopping %s on %s", p.spec.Name, p.node)
		}
	}
	for name, n := range kept {
		add(d, n, desired[name])
	}
}

// notReadyReason says why the containers named are not ready, from what the
// agents report.
func notReadyReason(w *World, f string, names []string, kept, ready map[string]string) string {
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
	var parts []string
	for _, name := range names {
		if _, ok := ready[kept[name]+"/"+name]; ok {
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

func isRouted(routed map[string]bool, readyAt func(name, node string) (string, bool), p placed) bool {
	addr, ok := readyAt(p.spec.Name, p.node)
	return ok && routed[addr]
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
// container is placed again like a missing one; its old copy retires with
// the usual handoff.
func rebalance(w *World, d *Decision, f string, order []string, desired map[string]state.ContainerSpec, kept map[string]string,
	byType map[string]map[string]int, retiring []placed, readyAt func(name, node string) (string, bool), nodes []string, load map[string]int) (moved, from string) {
	if len(retiring) > 0 || len(nodes) < 2 {
		return "", ""
	}
	for _, name := range order {
		n, ok := kept[name]
		if !ok {
			return "", ""
		}
		if _, ok := readyAt(name, n); !ok && desired[name].Type == "web" {
			return "", ""
		}
	}
	types := map[string]bool{}
	for _, name := range order {
		types[desired[name].Type] = true
	}
	for _, t := range sortedKeys(types) {
		most, fewest := "", ""
		for _, n := range nodes {
			if node := w.Nodes[n]; node.Capacity > 0 && load[n] >= node.Capacity && byType[n][t] < byType[most][t] {
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
		if node := w.Nodes[fewest]; node.Capacity > 0 && load[fewest] >= node.Capacity {
			continue
		}
		// the highest index of type t on the most loaded node moves
		for i := len(order) - 1; i >= 0; i-- {
			name := order[i]
			if desired[name].Type == t && kept[name] == most {
				delete(kept, name)
				byType[most][t]--
				load[most]--
				d.reason(f, "rebalancing: moving %s off %s", name, most)
				return name, most
			}
		}
	}
	return "", ""
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
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

func domains(w *World, f *state.Formation) []string {
	base := w.BaseDomain
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

func specFor(w *World, f *state.Formation, r *state.Release, typ string, i int) state.ContainerSpec {
	s := state.SpecFromRelease(r, w.SlugURL)
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
