package ctl

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/view"
)

// psRow is one container of a formation: desired by the coordinator (in a
// runtime databag), reported by an agent, or both.
type psRow struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Release int    `json:"release"`
	Node    string `json:"node"`
	State   string `json:"state"`
	Addr    string `json:"addr,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Restarts is how often Docker restarted the container.
	Restarts int `json:"restarts,omitempty"`
	// Desired is false for containers an agent still reports but no runtime
	// databag asks for any more (being stopped).
	Desired bool `json:"desired"`
}

// statePending is shown for a desired container no agent has reported yet.
const statePending = "pending"

// psRows turns the containers of a formation (the view's join of the
// runtime databags and the node statuses) into rows ordered by type, then
// name. What a node without a heartbeat last reported may no longer be
// true: it shows as unknown.
func psRows(cs []view.Container) []psRow {
	rows := []psRow{}
	for _, c := range cs {
		var r psRow
		switch {
		case c.Spec != nil:
			r = psRow{Name: c.Name, Type: c.Spec.Type, Release: c.Spec.Release, Node: c.Node, State: statePending, Desired: true}
			if st := c.Status; st != nil {
				r.State, r.Addr, r.Reason, r.Restarts = st.State, st.Addr, st.Reason, st.Restarts
			}
		default:
			st := c.Status
			r = psRow{Name: c.Name, Type: st.Type, Release: st.Release, Node: c.Node,
				State: st.State, Addr: st.Addr, Reason: st.Reason, Restarts: st.Restarts}
		}
		if c.Status != nil && c.Lost {
			r.State, r.Reason = "unknown", "node lost"
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Type != rows[j].Type {
			return rows[i].Type < rows[j].Type
		}
		if rows[i].Name != rows[j].Name {
			return rows[i].Name < rows[j].Name
		}
		return rows[i].Node < rows[j].Node
	})
	return rows
}

// world is what status, ps, nodes, layers and run read: one view.Load,
// with the lists their pure functions take, sorted by name.
type world struct {
	st         *view.State
	formations []state.Formation
	nodes      []state.Node
	// reports, when set, is the narrow world of a non-admin user
	// (formationWorld): containers come from the agents' reports alone.
	reports *view.State
	alive   map[string]bool        // nodes with a heartbeat
	drains  map[string]state.Drain // nodes being drained
	layers  []state.Layer          // of every formation, by formation and name
}

// readWorld reads the installation once, at one revision.
func readWorld(ctx context.Context, s *state.Store) (*world, error) {
	st, err := view.Load(ctx, s.KV, s.Keys.Prefix)
	if err != nil {
		return nil, err
	}
	w := &world{st: st, alive: st.Alive, drains: map[string]state.Drain{}}
	for _, f := range sortedKeys(st.Formations) {
		w.formations = append(w.formations, *st.Formations[f])
		for _, l := range st.Layers[f] {
			w.layers = append(w.layers, *l)
		}
	}
	// Layers of a formation being destroyed, if any, still show.
	for _, f := range sortedKeys(st.Layers) {
		if st.Formations[f] == nil {
			for _, l := range st.Layers[f] {
				w.layers = append(w.layers, *l)
			}
		}
	}
	for _, n := range sortedKeys(st.Nodes) {
		w.nodes = append(w.nodes, *st.Nodes[n])
	}
	for n, d := range st.DrainDocs {
		w.drains[n] = *d
	}
	return w, nil
}

// rows are formation f's containers as ps shows them.
func (w *world) rows(f string) []psRow {
	if w.reports == nil {
		return psRows(w.st.Containers(f))
	}
	rows := psRows(w.reports.Containers(f))
	for i := range rows {
		// Without the runtime databags, which are being retired is
		// unknown: every reported container counts as desired.
		rows[i].Desired = true
	}
	return rows
}

// formationStatus is the convergence view of one formation.
type formationStatus struct {
	Formation          string        `json:"formation"`
	DesiredRelease     int           `json:"desiredRelease"`
	DesiredDescription string        `json:"desiredDescription,omitempty"`
	RoutingRelease     int           `json:"routingRelease"`
	RoutingRevision    int64         `json:"routingRevision"`
	Proxies            []proxyStatus `json:"proxies"`
	Nodes              []nodeCount   `json:"nodes"`
	Converged          bool          `json:"converged"`
	// Waiting lists why the formation has not converged, one reason each.
	Waiting []string `json:"waiting,omitempty"`
	// Scheduler is what the scheduler reports in progress; SchedulerError
	// what it cannot do (no node matches a layer, no capacity).
	Scheduler      []string `json:"scheduler,omitempty"`
	SchedulerError string   `json:"schedulerError,omitempty"`
	// AutoRollback says that the desired release is an automatic rollback
	// and why, or that automatic rollback is off for the formation.
	AutoRollback string `json:"autoRollback,omitempty"`
}

type proxyStatus struct {
	Node     string `json:"node"`
	Revision int64  `json:"revision"`
	UpToDate bool   `json:"upToDate"`
	Lost     bool   `json:"lost,omitempty"`
	Error    string `json:"error,omitempty"`
}

// nodeCount counts one node's containers of a formation by state.
type nodeCount struct {
	Node   string         `json:"node"`
	Lost   bool           `json:"lost,omitempty"`
	States map[string]int `json:"states"`
}

// statusInput is what summarize needs about one formation.
type statusInput struct {
	Formation  string
	Latest     *state.Release // nil: no release yet
	Failed     map[int]state.ReleaseStatus
	Routing    *state.Routing // nil: not written yet
	RoutingRev int64
	Acks       []state.ProxyAck
	Rows       []psRow
	Alive      map[string]bool
	// Placement lists why the formation's layers cannot work: no layer of
	// a type, or no live node matching it (placementProblems).
	Placement []string
}

// summarize is the pure convergence check behind deisctl status: desired
// release vs containers, routing and proxy acknowledgements.
func summarize(in statusInput) formationStatus {
	st := formationStatus{Formation: in.Formation, RoutingRevision: in.RoutingRev, Proxies: []proxyStatus{}, Nodes: []nodeCount{}}
	wait := func(format string, a ...any) { st.Waiting = append(st.Waiting, fmt.Sprintf(format, a...)) }
	if in.Latest == nil {
		wait("no release yet: deploy with git push deis main")
	} else {
		st.DesiredRelease, st.DesiredDescription = in.Latest.Version, in.Latest.Description
		if fs, ok := in.Failed[in.Latest.Version]; ok && fs.Failed {
			wait("release v%d failed: %s", in.Latest.Version, fs.Reason)
		}
	}
	st.Waiting = append(st.Waiting, in.Placement...)
	if in.Routing != nil {
		st.RoutingRelease = in.Routing.Release
	}

	byNode := map[string]*nodeCount{}
	notReady, old := 0, 0
	for _, r := range in.Rows {
		nc := byNode[r.Node]
		if nc == nil {
			nc = &nodeCount{Node: r.Node, Lost: !in.Alive[r.Node], States: map[string]int{}}
			byNode[r.Node] = nc
		}
		nc.States[r.State]++
		switch {
		case r.Release != st.DesiredRelease:
			old++
		case !r.Desired:
		case r.State == state.StateReady:
		case r.State == state.StateRunning && r.Type != "web":
			// Only web containers have a health check to pass.
		default:
			notReady++
		}
	}
	for _, n := range sortedKeys(byNode) {
		st.Nodes = append(st.Nodes, *byNode[n])
		if byNode[n].Lost {
			wait("node %s has containers but no heartbeat (lost)", n)
		}
	}
	if notReady > 0 {
		wait("%d container(s) of v%d not ready yet", notReady, st.DesiredRelease)
	}
	if old > 0 {
		wait("%d container(s) of older releases still present", old)
	}

	switch {
	case in.Latest == nil:
	case in.Routing == nil:
		wait("no routing yet: the coordinator routes once containers of v%d are ready", st.DesiredRelease)
	case in.Routing.Release != st.DesiredRelease:
		wait("routing still points at v%d", in.Routing.Release)
	}
	acks := append([]state.ProxyAck(nil), in.Acks...)
	sort.Slice(acks, func(i, j int) bool { return acks[i].Node < acks[j].Node })
	for _, a := range acks {
		p := proxyStatus{Node: a.Node, Revision: a.Revision, UpToDate: a.Revision >= in.RoutingRev && a.Error == "",
			Lost: !in.Alive[a.Node], Error: a.Error}
		st.Proxies = append(st.Proxies, p)
		switch {
		case p.Lost:
			wait("proxy %s has no heartbeat (lost)", a.Node)
		case a.Error != "":
			wait("proxy %s failed to apply routing: %s", a.Node, a.Error)
		case !p.UpToDate:
			wait("proxy %s applied routing revision %d of %d", a.Node, a.Revision, in.RoutingRev)
		}
	}
	if in.Routing != nil && len(acks) == 0 {
		wait("no proxy has applied the routing yet")
	}
	st.Converged = len(st.Waiting) == 0
	return st
}

// placementProblems says, for formation f, which layer type has no layer,
// which layers match no live node, and whether every live runtime node is
// draining (the scheduler places nothing on a draining node). It is pure.
func placementProblems(f string, layers []state.Layer, nodes []state.Node, alive map[string]bool, drains map[string]state.Drain) []string {
	var out []string
	for _, typ := range []state.LayerType{state.LayerRuntime, state.LayerProxy} {
		var mine []*state.Layer
		for i := range layers {
			if layers[i].Formation == f && layers[i].Type == typ {
				mine = append(mine, &layers[i])
			}
		}
		if len(mine) == 0 {
			out = append(out, fmt.Sprintf("no %s layer: create one with deisctl layers:create %s --type %s --selector role=%s -f %s", typ, typ, typ, typ, f))
			continue
		}
		live, draining := map[string]bool{}, map[string]bool{}
		for _, l := range mine {
			for _, n := range matchingNodes(l, nodes, alive, drains) {
				if n.Up {
					live[n.Name] = true
					if n.Draining {
						draining[n.Name] = true
					}
				}
			}
		}
		switch {
		case len(live) == 0:
			for _, l := range mine {
				msg := fmt.Sprintf("no live node matches %s layer %s (%s): %s", typ, l.Name, kvList(l.Selector, ","), agentHint(l.Selector))
				var lost []string
				for _, n := range matchingNodes(l, nodes, alive, drains) {
					lost = append(lost, n.Name)
				}
				if len(lost) > 0 {
					msg += " (matching nodes without a heartbeat: " + strings.Join(lost, ", ") + ")"
				}
				out = append(out, msg)
			}
		case typ == state.LayerRuntime && len(draining) == len(live):
			names := sortedKeys(draining)
			out = append(out, fmt.Sprintf("every live node of its runtime layer is draining (%s), so its containers have nowhere to run: undrain one with deisctl nodes:undrain %s, or %s",
				strings.Join(names, ", "), names[0], agentHint(mine[0].Selector)))
		}
	}
	return out
}

// statusOf summarizes one formation.
func statusOf(w *world, f string) formationStatus {
	st := w.st
	in := statusInput{Formation: f, Alive: w.alive, Rows: w.rows(f),
		Placement: placementProblems(f, w.layers, w.nodes, w.alive, w.drains), Failed: releaseStatuses(st, f),
		Latest: st.LatestRelease(f)}
	if r, ok := st.Routing[f]; ok && r.Doc != nil {
		in.Routing, in.RoutingRev = r.Doc, r.Rev
	}
	for _, n := range sortedKeys(st.AckDocs[f]) {
		in.Acks = append(in.Acks, *st.AckDocs[f][n])
	}
	out := summarize(in)
	out.AutoRollback = autoRollbackStatus(w, f, in.Latest, in.Failed)
	// What the scheduler itself says it is doing, or cannot do.
	if fs := st.FormationStatus[f]; fs != nil {
		out.SchedulerError = fs.Error
		if !out.Converged {
			out.Scheduler = fs.Pending
		}
		if fs.Error != "" {
			out.Converged = false
		}
	}
	return out
}

// releaseStatuses is what the coordinator recorded about f's releases
// (went live, failed), by version, as the view counts them: none left
// over from an earlier formation of the same name.
func releaseStatuses(st *view.State, f string) map[int]state.ReleaseStatus {
	out := map[int]state.ReleaseStatus{}
	for v, rs := range st.ReleaseStatus[f] {
		r := *rs
		r.Failed = st.ReleaseFailed(f, v)
		out[v] = r
	}
	return out
}

// autoRollbackStatus says whether the latest release is an automatic
// rollback (from which release, when and why) or automatic rollback is off.
func autoRollbackStatus(w *world, f string, latest *state.Release, statuses map[int]state.ReleaseStatus) string {
	for _, form := range w.formations {
		if form.Name == f && form.AutoRollbackOff {
			return "off (turn it on with deisctl autorollback on -f " + f + ")"
		}
	}
	if latest == nil || latest.AutoRollbackFrom == 0 {
		return ""
	}
	bad := statuses[latest.AutoRollbackFrom]
	return fmt.Sprintf("v%d was rolled back automatically at %s: %s", latest.AutoRollbackFrom, fmtTime(latest.Created), bad.Reason)
}

// renderStatus writes one formation's status for people.
func renderStatus(b *strings.Builder, st formationStatus) {
	fmt.Fprintf(b, "=== %s: ", st.Formation)
	if st.Converged {
		b.WriteString("converged\n")
	} else {
		b.WriteString("converging\n")
	}
	if st.SchedulerError != "" {
		fmt.Fprintf(b, "Stuck:           %s\n", st.SchedulerError)
	}
	for _, r := range st.Scheduler {
		fmt.Fprintf(b, "Scheduler:       %s\n", r)
	}
	if st.DesiredRelease > 0 {
		fmt.Fprintf(b, "Desired release: v%d (%s)\n", st.DesiredRelease, st.DesiredDescription)
	} else {
		b.WriteString("Desired release: none\n")
	}
	if st.AutoRollback != "" {
		fmt.Fprintf(b, "Auto-rollback:   %s\n", st.AutoRollback)
	}
	if st.RoutingRelease > 0 {
		fmt.Fprintf(b, "Routing:         v%d (revision %d)\n", st.RoutingRelease, st.RoutingRevision)
	} else {
		b.WriteString("Routing:         none yet\n")
	}
	for _, p := range st.Proxies {
		state := "up to date"
		switch {
		case p.Lost:
			state = "lost (no heartbeat)"
		case p.Error != "":
			state = "error: " + p.Error
		case !p.UpToDate:
			state = fmt.Sprintf("behind (routing is at %d)", st.RoutingRevision)
		}
		fmt.Fprintf(b, "Proxy %s: applied revision %d, %s\n", p.Node, p.Revision, state)
	}
	if len(st.Nodes) == 0 {
		b.WriteString("Containers:      none\n")
	} else {
		b.WriteString("Containers:\n")
	}
	for _, n := range st.Nodes {
		lost := ""
		if n.Lost {
			lost = " (node lost: no heartbeat)"
		}
		fmt.Fprintf(b, "  %s: %s%s\n", n.Node, kvList(n.States, ", "), lost)
	}
	for _, w := range st.Waiting {
		fmt.Fprintf(b, "Waiting: %s\n", w)
	}
}
