package view

import (
	"sort"

	"github.com/deis/deis/pkg/state"
)

// Placement is one container placed in a node's runtime databag.
type Placement struct {
	Node string
	Spec *state.ContainerSpec
}

// Container is one container of a formation: placed in a node's databag,
// reported by the node's agent, or both.
type Container struct {
	Node string
	Name string
	// Spec is nil for a container the agent reports but its databag no
	// longer holds (retiring, or left over).
	Spec *state.ContainerSpec
	// Status is nil for a container the agent has not reported yet.
	Status *state.ContainerStatus
	// Lost: the node has no heartbeat, so its report may be stale.
	Lost bool
}

// CurrentRelease is the release of f that should run: the newest one not
// marked failed (ReleaseStatus.Failed). Keys left over from an earlier
// formation of the same name (created before the formation key) are not
// counted. nil when there is none.
func (s *State) CurrentRelease(f string) *state.Release {
	vs := s.versions[f]
	for i := len(vs) - 1; i >= 0; i-- {
		v := vs[i]
		if s.stale(f, s.relRev[f][v]) {
			continue
		}
		if !s.ReleaseFailed(f, v) {
			return s.Releases[f][v]
		}
	}
	return nil
}

// LatestRelease is the newest release of f, failed or not (nil: none).
func (s *State) LatestRelease(f string) *state.Release {
	vs := s.versions[f]
	for i := len(vs) - 1; i >= 0; i-- {
		if !s.stale(f, s.relRev[f][vs[i]]) {
			return s.Releases[f][vs[i]]
		}
	}
	return nil
}

// ReleaseFailed reports whether release v of f is marked failed.
func (s *State) ReleaseFailed(f string, v int) bool {
	st := s.ReleaseStatus[f][v]
	return st != nil && st.Failed && !s.stale(f, s.statusRev[f][v])
}

// Versions lists the release versions of f, ascending; the caller must
// not modify it.
func (s *State) Versions(f string) []int { return s.versions[f] }

// stale reports whether a key of f created at revision rev belongs to an
// earlier formation of the same name.
func (s *State) stale(f string, rev int64) bool {
	inc, ok := s.FormationRev[f]
	return ok && rev != 0 && rev < inc
}

// LayerNodes lists the live nodes of f's layers of type t, sorted: nodes
// with a heartbeat that match a layer's selector and, for the runtime
// layers, are not drained. The caller must not modify the slice.
func (s *State) LayerNodes(f string, t state.LayerType) []string {
	var mine []*state.Layer
	for _, l := range s.Layers[f] {
		if l.Type == t {
			mine = append(mine, l)
		}
	}
	switch len(mine) {
	case 0:
		return nil
	case 1:
		return s.selectorNodes(mine[0].Selector, t)
	}
	set := map[string]bool{}
	var out []string
	for _, l := range mine {
		for _, name := range s.selectorNodes(l.Selector, t) {
			if !set[name] {
				set[name] = true
				out = append(out, name)
			}
		}
	}
	sort.Strings(out)
	return out
}

// selectorNodes is LayerNodes for one selector, remembered until a node,
// heartbeat or drain changes.
func (s *State) selectorNodes(sel map[string]string, t state.LayerType) []string {
	key := string(t) + "\x00" + state.Marshal(sel) // Marshal sorts map keys
	s.selMu.Lock()
	defer s.selMu.Unlock()
	if out, ok := s.sel[key]; ok {
		return out
	}
	l := state.Layer{Selector: sel}
	var out []string
	for name, node := range s.Nodes {
		if !s.Alive[name] || (t == state.LayerRuntime && s.Drained[name]) {
			continue
		}
		if l.Matches(node) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	if s.sel == nil {
		s.sel = map[string][]string{}
	}
	s.sel[key] = out
	return out
}

// Placed lists the containers of f in the databags of live nodes, by node
// and name.
func (s *State) Placed(f string) []Placement {
	var out []Placement
	for n, specs := range s.placedBy[f] {
		if !s.Alive[n] {
			continue
		}
		for _, c := range specs {
			out = append(out, Placement{Node: n, Spec: c})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].Spec.Name < out[j].Spec.Name
	})
	return out
}

// Containers lists every container of f, live node or not, placed or only
// reported, joined by node and name, sorted by node and name.
func (s *State) Containers(f string) []Container {
	type key struct{ node, name string }
	at := map[key]int{}
	var out []Container
	for n, specs := range s.placedBy[f] {
		for _, c := range specs {
			at[key{n, c.Name}] = len(out)
			out = append(out, Container{Node: n, Name: c.Name, Spec: c, Lost: !s.Alive[n]})
		}
	}
	for n, sts := range s.reportBy[f] {
		for _, c := range sts {
			if i, ok := at[key{n, c.Name}]; ok {
				out[i].Status = c
				continue
			}
			out = append(out, Container{Node: n, Name: c.Name, Status: c, Lost: !s.Alive[n]})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// NodesOf lists, sorted, the nodes whose databag or report holds a
// container of f (a formation's change touches them).
func (s *State) NodesOf(f string) []string {
	set := map[string]bool{}
	for n := range s.placedBy[f] {
		set[n] = true
	}
	for n := range s.reportBy[f] {
		set[n] = true
	}
	return sortedSet(set)
}

// FormationsOn lists, sorted, the formations with a container in node n's
// databag or report (a node's loss touches them).
func (s *State) FormationsOn(n string) []string {
	set := map[string]bool{}
	if rt := s.Runtimes[n]; rt != nil {
		for i := range rt.Containers {
			set[rt.Containers[i].Formation] = true
		}
	}
	if st := s.Status[n]; st != nil {
		for i := range st.Containers {
			set[st.Containers[i].Formation] = true
		}
	}
	return sortedSet(set)
}

// Load is what node n's databag holds: its containers and the memory
// limits they add up to.
func (s *State) Load(n string) (containers int, memory int64) {
	l := s.load[n]
	return l.containers, l.memory
}

// Free is the capacity node n has left: containers and memory, each -1
// when the node sets no limit, never below 0. An unregistered node has
// none.
func (s *State) Free(n string) (containers int, memory int64) {
	node := s.Nodes[n]
	if node == nil {
		return 0, 0
	}
	l := s.load[n]
	containers, memory = -1, -1
	if node.Capacity > 0 {
		containers = max(node.Capacity-l.containers, 0)
	}
	if node.MemoryBytes > 0 {
		memory = max(node.MemoryBytes-l.memory, 0)
	}
	return containers, memory
}

// Routed reports whether every live proxy node of f has acknowledged the
// current routing revision of f (false when there is no routing databag).
func (s *State) Routed(f string) bool {
	r, ok := s.Routing[f]
	if !ok || r.Doc == nil {
		return false
	}
	for _, n := range s.LayerNodes(f, state.LayerProxy) {
		if s.Acks[f][n] < r.Rev {
			return false
		}
	}
	return true
}

// CertsOf lists f's certificates by name.
func (s *State) CertsOf(f string) []*state.Cert {
	m := s.Certs[f]
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*state.Cert, len(names))
	for i, n := range names {
		out[i] = m[n]
	}
	return out
}

// ChallengesOf lists f's ACME challenges by token.
func (s *State) ChallengesOf(f string) []*state.ACMEChallenge {
	m := s.Challenges[f]
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*state.ACMEChallenge, len(names))
	for i, n := range names {
		out[i] = m[n]
	}
	return out
}

func sortedSet(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
