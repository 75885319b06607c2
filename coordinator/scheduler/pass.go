package scheduler

import (
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/view"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// incremental is what the controller remembers between passes.
type incremental struct {
	needFull    bool
	lastFull    time.Time
	lastPending time.Time
	// pending holds the formations whose last plan had work in progress or
	// an error: a timed pass plans them again (boot timeouts).
	pending map[string]bool
	// nodes is each node as the last pass that looked at it saw it.
	nodes map[string]nodeSeen
	// known is each node's databag as this controller last composed it
	// (written, or found already stored).
	known map[string]string
	// stored caches the bytes of the view's databags by their decoded
	// value, which the view replaces on every change.
	stored map[string]storedRuntime
	// wrote is the revision of the controller's newest write.
	wrote int64
	// again holds the formations whose last plan changed something: the
	// next pass plans them again, to see it done.
	again map[string]bool
	// layers memoizes the live nodes of layer selectors from pass to pass,
	// until a node's registration, liveness or drain changes.
	layers map[string]layerSet
}

func newIncremental() incremental {
	return incremental{needFull: true, pending: map[string]bool{}, nodes: map[string]nodeSeen{},
		known: map[string]string{}, stored: map[string]storedRuntime{}}
}

// nodeSeen is a node's registration (as the view decoded it), liveness and
// drain.
type nodeSeen struct {
	node           *state.Node
	alive, drained bool
}

type storedRuntime struct {
	rt *state.Runtime
	b  string
}

// passPlan is what one pass decided: computed under the view's read lock,
// carried out after it.
type passPlan struct {
	start     time.Time
	full      bool
	planned   int // formations
	placed    int // containers
	writes    []write
	rollbacks []rollbackJob
	logs      []func()
}

// rollbackJob is an automatic rollback to carry out.
type rollbackJob struct {
	formation   string
	incarnation int64
	dec         *RollbackDecision
	status      state.ReleaseStatus
}

func seenOf(s *view.State, n string) nodeSeen {
	return nodeSeen{node: s.Nodes[n], alive: s.Alive[n], drained: s.Drained[n]}
}

// storedBytes is node n's databag as stored, rendered.
func (c *Controller) storedBytes(s *view.State, n string) string {
	rt := s.Runtimes[n]
	if rt == nil {
		delete(c.inc.stored, n)
		return ""
	}
	if st, ok := c.inc.stored[n]; ok && st.rt == rt {
		return st.b
	}
	b := state.Marshal(rt)
	c.inc.stored[n] = storedRuntime{rt: rt, b: b}
	return b
}

// plan decides one pass from the view's state s. A full pass plans every
// formation and composes every node's databag; an incremental one plans the
// formations t touched, those the touched nodes concern (touchNodes), those
// whose last plan changed something, and, every Resync, those with work in
// progress; it composes only the databags whose containers it changed.
func (c *Controller) plan(s *view.State, t view.Touched, full bool, now time.Time) *passPlan {
	p := &passPlan{start: now, full: full}
	forms := map[string]bool{}
	nodes := map[string]bool{} // whose databags are composed again
	if full {
		for f := range s.Formations {
			forms[f] = true
		}
		for f := range s.Routing {
			forms[f] = true // gone formations' routing is deleted
		}
		for n := range s.Nodes {
			nodes[n] = true
		}
		c.inc.nodes = map[string]nodeSeen{}
		for n := range s.Nodes {
			c.inc.nodes[n] = seenOf(s, n)
		}
		c.inc.lastPending = now
		c.inc.layers = nil
	} else {
		for f := range t.Formations {
			forms[f] = true
		}
		for f := range c.inc.again {
			forms[f] = true
		}
		if c.touchNodes(s, t.Nodes, forms, nodes) {
			c.inc.layers = nil
		}
		if now.Sub(c.inc.lastPending) >= c.cfg.Resync {
			for f := range c.inc.pending {
				forms[f] = true
			}
			c.inc.lastPending = now
		}
	}
	p.planned = len(forms)

	ns := newNodeSet(s.Nodes, s.Alive, s.Drained)
	ns.base = s.Load
	if c.inc.layers == nil {
		c.inc.layers = map[string]layerSet{}
	}
	ns.lc = c.inc.layers
	up, lost := 0, 0
	for n := range s.Nodes {
		if s.Alive[n] {
			up++
		} else {
			lost++
		}
	}
	c.m.nodes.WithLabelValues("up").Set(float64(up))
	c.m.nodes.WithLabelValues("lost").Set(float64(lost))
	env := planEnv{slugURL: c.cfg.SlugURL, baseDomain: c.cfg.BaseDomain, now: now, boot: c.cfg.BootTimeout}
	k := c.store.Keys

	c.inc.again = map[string]bool{}
	planned := map[string]bool{} // formations whose containers this pass composes
	failed := map[string]bool{}
	newOn := map[string][]state.ContainerSpec{}
	for _, f := range sortedKeys(forms) {
		in, cs := c.input(s, f)
		fp := planFormation(env, ns, in)
		if in.form == nil {
			planned[f] = true
			for _, n := range s.NodesOf(f) {
				nodes[n] = true // its containers leave
			}
			delete(c.inc.pending, f)
			delete(c.lastErr, f)
			if _, ok := s.Routing[f]; ok {
				p.writes = append(p.writes, guarded(del(k.Routing(f)), clientv3.Compare(clientv3.CreateRevision(k.Formation(f)), "=", 0)))
			}
			continue
		}
		same := clientv3.Compare(clientv3.CreateRevision(k.Formation(f)), "=", s.FormationRev[f])
		if st := fp.failed; st != nil {
			// Written once, alone: the next pass no longer picks the
			// failed release and plans the formation again.
			failed[f] = true
			c.inc.pending[f] = true
			p.writes = append(p.writes, failWrite(k, f, st, s.FormationRev[f]))
			p.logs = append(p.logs, func() {
				c.log.Warn("marking release failed", "formation", f, "release", st.Version, "reason", st.Reason)
				c.m.failed.Inc()
			})
			continue
		}
		planned[f] = true
		p.placed += fp.placed
		if fp.moved {
			c.inc.again[f] = true
		}
		for _, pc := range fp.containers {
			newOn[pc.node] = append(newOn[pc.node], pc.spec)
		}
		if !full { // a full pass composes every node
			for _, n := range changedNodes(in.current, fp.containers) {
				nodes[n] = true
			}
		}
		if prev := in.routing.Doc; prev == nil || !sameRouting(prev, fp.routing) {
			r := fp.routing
			p.writes = append(p.writes, guarded(put(k.Routing(f), state.Marshal(r)), same))
			p.logs = append(p.logs, func() {
				c.log.Info("routing databag written", "formation", f, "release", r.Release, "upstreams", len(r.Upstreams))
			})
		}
		st := state.FormationStatus{Formation: f, Pending: fp.reasons, Error: fp.err}
		if in.rel != nil {
			st.Release = in.rel.Version
		}
		if old := s.FormationStatus[f]; old == nil || state.Marshal(old) != state.Marshal(st) {
			p.writes = append(p.writes, guarded(put(k.FormationStatus(f), state.Marshal(st)), same))
		}
		if len(fp.reasons) > 0 || fp.err != "" {
			c.inc.pending[f] = true
		} else {
			delete(c.inc.pending, f)
		}
		if e := fp.err; e != "" && c.lastErr[f] != e {
			p.logs = append(p.logs, func() { c.log.Warn("cannot converge", "formation", f, "error", e) })
		}
		if fp.err == "" {
			delete(c.lastErr, f)
		} else {
			c.lastErr[f] = fp.err
		}
		proxies := ns.layerNodes(in.layers, state.LayerProxy)
		c.observe(in, fp.routing, proxies)
		if rel := in.rel; rel != nil && s.ReleaseStatus[f][rel.Version] == nil && routedByAll(rel.Version, in.routing, fp.routing, proxies, in.acks) {
			key := k.ReleaseStatus(f, rel.Version)
			live := state.ReleaseStatus{Version: rel.Version, LiveAt: now.UTC()}
			p.writes = append(p.writes, guarded(put(key, state.Marshal(live)),
				clientv3.Compare(clientv3.CreateRevision(key), "=", 0), same,
				clientv3.Compare(clientv3.CreateRevision(k.Release(f, rel.Version)), ">", 0)))
		}
		if job := c.judge(s, in, cs, now); job != nil {
			job.incarnation = s.FormationRev[f]
			p.rollbacks = append(p.rollbacks, *job)
		}
	}
	c.primed = true

	// Compose the databags: what the pass planned, beside what other
	// formations hold on the node (a full pass keeps only what it planned,
	// and the formations whose failure it marks).
	for _, n := range sortedKeys(nodes) {
		if s.Nodes[n] == nil {
			continue // a databag only for registered nodes
		}
		rt := &state.Runtime{Node: n, Containers: []state.ContainerSpec{}}
		if s.Alive[n] {
			if old := s.Runtimes[n]; old != nil {
				for _, sc := range old.Containers {
					if !planned[sc.Formation] && (!full || failed[sc.Formation]) {
						rt.Containers = append(rt.Containers, sc)
					}
				}
			}
			rt.Containers = append(rt.Containers, newOn[n]...)
		}
		rt.Sort()
		b := state.Marshal(rt)
		c.inc.known[n] = b // if the write fails, the next pass is a full one
		if b == c.storedBytes(s, n) {
			continue
		}
		p.writes = append(p.writes, put(k.Runtime(n), b))
		count := len(rt.Containers)
		p.logs = append(p.logs, func() { c.log.Info("runtime databag written", "node", n, "containers", count) })
	}
	// Runtime databags first: they go out in the first batches.
	sort.SliceStable(p.writes, func(i, j int) bool { return !p.writes[i].op.IsTxn() && p.writes[j].op.IsTxn() })
	return p
}

// changedNodes lists the nodes where a formation's containers differ
// between before and after a plan: only their databags need composing.
func changedNodes(before, after []placed) []string {
	group := func(ps []placed) map[string][]*state.ContainerSpec {
		by := map[string][]*state.ContainerSpec{}
		for i := range ps {
			by[ps[i].node] = append(by[ps[i].node], &ps[i].spec)
		}
		for _, cs := range by {
			sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
		}
		return by
	}
	b, a := group(before), group(after)
	var out []string
	for n, x := range b {
		if !sameSpecs(x, a[n]) {
			out = append(out, n)
		}
	}
	for n := range a {
		if _, ok := b[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// sameSpecs reports whether two sorted lists hold equal specs. Specs equal
// here always render the same bytes; the composed databag is compared as
// bytes anyway.
func sameSpecs(a, b []*state.ContainerSpec) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || !reflect.DeepEqual(a[i], b[i]) {
			return false
		}
	}
	return true
}

// failWrite marks release st.Version of f failed, once, and only while f
// is still incarnation inc: a formation destroyed and created again since
// must not inherit the failure of the old one's release with the same
// number.
func failWrite(k state.Keys, f string, st *state.ReleaseStatus, inc int64) write {
	key := k.ReleaseStatus(f, st.Version)
	return guarded(put(key, state.Marshal(st)), clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(k.Formation(f)), "=", inc))
}

// touchNodes adds to forms the formations that the touched nodes' changes
// concern, and to nodes those whose databags must be composed again: the
// ones whose registration, liveness or drain changed, or whose databag
// someone else changed. (A node touched only by its agent's report keeps
// its databag unless a formation planned on it changes it.)
//
// A node lost, drained or gone concerns the formations it holds, and those
// with work in progress (one may wait for its acknowledgement as a proxy).
// A node that joins or comes back, or whose registration changed, concerns
// every formation whose layers match it: they may place or rebalance onto
// it. touchNodes reports whether a registration, liveness or drain changed.
func (c *Controller) touchNodes(s *view.State, touched map[string]bool, forms, nodes map[string]bool) (changed bool) {
	var regs []*state.Node // registrations to match the formations' layers against
	waiting := false
	for n := range touched {
		cur := seenOf(s, n)
		old, had := c.inc.nodes[n]
		if had && old == cur {
			if c.storedBytes(s, n) != c.inc.known[n] {
				// Someone else changed the databag.
				nodes[n] = true
				for _, f := range s.FormationsOn(n) {
					forms[f] = true
				}
				c.inc.known[n] = c.storedBytes(s, n)
			}
			continue
		}
		changed = true
		nodes[n] = true
		for _, f := range s.FormationsOn(n) {
			forms[f] = true
		}
		up := func(x nodeSeen) bool { return x.node != nil && x.alive && !x.drained }
		switch {
		case had && old.node != nil && cur.node != nil && old.node != cur.node:
			regs = append(regs, old.node, cur.node) // relabelled, or its capacity changed
		case up(cur) && !(had && up(old)):
			regs = append(regs, cur.node) // joined or back
		default:
			waiting = true // lost, drained or gone
		}
		if cur.node != nil {
			c.inc.nodes[n] = cur
		} else {
			delete(c.inc.nodes, n)
		}
	}
	if waiting {
		for f := range c.inc.pending {
			forms[f] = true
		}
	}
	if len(regs) == 0 {
		return changed
	}
	// The formations whose layers match a changed node: their runtime
	// nodes (placement) or proxy nodes (acknowledgements) changed.
	type group struct {
		layer *state.Layer
		forms []string
	}
	groups := map[string]*group{}
	for f, ls := range s.Layers {
		for _, l := range ls {
			key := layerKey([]*state.Layer{l}, l.Type)
			g := groups[key]
			if g == nil {
				g = &group{layer: l}
				groups[key] = g
			}
			g.forms = append(g.forms, f)
		}
	}
	for _, g := range groups {
		for _, node := range regs {
			if g.layer.Matches(node) {
				for _, f := range g.forms {
					forms[f] = true
				}
				break
			}
		}
	}
	return true
}

// input gathers what planning formation f reads from the view, and its
// containers as the view joins them.
func (c *Controller) input(s *view.State, f string) (formationInput, []view.Container) {
	in := formationInput{name: f, form: s.Formations[f], layers: s.Layers[f], acks: s.Acks[f]}
	if r, ok := s.Routing[f]; ok {
		in.routing = RoutingAt{Doc: r.Doc, Rev: r.Rev}
	}
	if in.form == nil {
		return in, nil
	}
	if in.routing.Rev < s.FormationRev[f] {
		// Left by an earlier formation of the same name (a late write):
		// this one has routed nothing yet.
		in.routing.Doc = nil
	}
	in.rel = s.CurrentRelease(f)
	if in.rel != nil {
		st := s.ReleaseStatus[f][in.rel.Version]
		in.live = st != nil && !st.LiveAt.IsZero()
	}
	for _, pl := range s.Placed(f) {
		if s.Nodes[pl.Node] != nil {
			in.current = append(in.current, placed{node: pl.Node, spec: *pl.Spec})
		}
	}
	sortPlaced(in.current)
	cs := s.Containers(f)
	in.ready = readiness{}
	for _, ct := range cs {
		if st := ct.Status; st != nil && !ct.Lost && st.State == state.StateReady && st.Addr != "" {
			in.ready[ct.Node+"/"+ct.Name] = st.Addr
		}
	}
	in.status = func() map[string]state.ContainerStatus {
		out := map[string]state.ContainerStatus{}
		for _, ct := range cs {
			if ct.Status != nil && !ct.Lost {
				out[ct.Name] = *ct.Status
			}
		}
		return out
	}
	return in, cs
}

// observe records rollout durations: from a release's creation until every
// live proxy of its formation has applied a routing revision for it.
// Rollouts found complete on the first pass finished before this
// coordinator led; they are not timed.
func (c *Controller) observe(in formationInput, next *state.Routing, proxies []string) {
	rel, r := in.rel, in.routing
	if rel == nil || r.Doc == nil || r.Doc.Release != rel.Version || c.rolled[in.name] == rel.Version || !sameRouting(r.Doc, next) {
		return
	}
	for _, n := range proxies {
		if in.acks[n] < r.Rev {
			return
		}
	}
	if c.primed {
		c.m.rollout.Observe(time.Since(rel.Created).Seconds())
		c.log.Info("rollout complete", "formation", in.name, "release", rel.Version, "seconds", time.Since(rel.Created).Seconds())
	}
	c.rolled[in.name] = rel.Version
}

// routedByAll reports whether the routing databag (prev, unchanged by this
// pass: next) routes release v to at least one container and every live
// proxy applied it.
func routedByAll(v int, prev RoutingAt, next *state.Routing, proxies []string, acks map[string]int64) bool {
	if prev.Doc == nil || prev.Doc.Release != v || len(prev.Doc.Upstreams) == 0 || !sameRouting(prev.Doc, next) {
		return false
	}
	for _, n := range proxies {
		if acks[n] < prev.Rev {
			return false
		}
	}
	return true
}

// judge applies the automatic rollback policy to formation f's current
// release, while it is in its window after going live.
func (c *Controller) judge(s *view.State, in formationInput, cs []view.Container, now time.Time) *rollbackJob {
	f, rel := in.name, in.rel
	if c.cfg.Rollback.Window <= 0 || rel == nil {
		return nil
	}
	cur := s.ReleaseStatus[f][rel.Version]
	if cur == nil || cur.Failed || now.Sub(cur.LiveAt) > c.cfg.Rollback.Window {
		return nil // nothing to watch
	}
	statuses := map[int]state.ReleaseStatus{}
	for v, st := range s.ReleaseStatus[f] {
		statuses[v] = *st
	}
	rin := RollbackInput{Formation: in.form, Current: rel, Statuses: statuses, Now: now}
	for _, ct := range cs {
		if st := ct.Status; st != nil && !ct.Lost && st.Formation == f && st.Release == rel.Version {
			rin.Containers = append(rin.Containers, *st)
		}
	}
	for _, n := range sortedKeys(s.Traffic[f]) {
		if s.Alive[n] {
			rin.Traffic = append(rin.Traffic, *s.Traffic[f][n])
		}
	}
	dec, why := DecideRollback(c.cfg.Rollback, rin)
	if dec == nil {
		if c.noTarget[f] != rel.Version && strings.Contains(why, "no earlier release") {
			c.noTarget[f] = rel.Version
			c.log.Warn("cannot roll back automatically", "formation", f, "release", rel.Version, "reason", why)
		}
		return nil
	}
	return &rollbackJob{formation: f, dec: dec, status: statuses[dec.Bad]}
}
