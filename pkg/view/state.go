package view

import (
	"encoding/json"
	"hash/maphash"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/deis/deis/pkg/state"
)

// RoutingAt is a routing databag and the revision it was written at (the
// routing revision proxies acknowledge). Err is set, and Doc nil, when the
// stored value cannot be decoded.
type RoutingAt struct {
	Doc *state.Routing
	Rev int64
	Err error
}

// Touched says what changed since a subscriber's previous Take.
type Touched struct {
	// All is set by the first read and by every rebuild: everything may
	// have changed.
	All bool
	// Formations touched by an event of their formation, layers, config,
	// releases, release statuses, routing, proxy acks, traffic, certs or
	// ACME challenges, and by a node status change of their containers.
	Formations map[string]bool
	// Nodes touched by an event of their registration, heartbeat, drain,
	// runtime databag or status.
	Nodes map[string]bool
}

// Empty reports whether nothing was touched.
func (t Touched) Empty() bool { return !t.All && len(t.Formations) == 0 && len(t.Nodes) == 0 }

func (t *Touched) formation(f string) {
	if t.Formations == nil {
		t.Formations = map[string]bool{}
	}
	t.Formations[f] = true
}

func (t *Touched) node(n string) {
	if t.Nodes == nil {
		t.Nodes = map[string]bool{}
	}
	t.Nodes[n] = true
}

// merge adds o to t.
func (t *Touched) merge(o Touched) {
	t.All = t.All || o.All
	for f := range o.Formations {
		t.formation(f)
	}
	for n := range o.Nodes {
		t.node(n)
	}
}

// State is the decoded installation at revision Rev. Read it only inside
// View.Read (or own it, from Load); never modify it.
type State struct {
	// Rev is the revision of the read plus the newest event applied.
	Rev        int64
	Formations map[string]*state.Formation
	// FormationRev is the CreateRevision of each formation key: the
	// incarnation of the name.
	FormationRev map[string]int64
	// Layers holds each formation's layers, sorted by name.
	Layers map[string][]*state.Layer
	// Configs is kept only with the Configs family.
	Configs       map[string]*state.Config
	Releases      map[string]map[int]*state.Release
	ReleaseStatus map[string]map[int]*state.ReleaseStatus
	Nodes         map[string]*state.Node
	Alive         map[string]bool // heartbeat key present
	Drained       map[string]bool
	DrainDocs     map[string]*state.Drain      // the drains themselves (when)
	Runtimes      map[string]*state.Runtime    // the scheduler's databags as stored
	Status        map[string]*state.NodeStatus // the agents' reports
	Routing       map[string]RoutingAt
	// Acks maps formation -> proxy node -> applied routing revision;
	// AckDocs holds the acknowledgements themselves (errors, times).
	Acks            map[string]map[string]int64
	AckDocs         map[string]map[string]*state.ProxyAck
	Traffic         map[string]map[string]*state.TrafficReport
	FormationStatus map[string]*state.FormationStatus
	Coordinator     *state.CoordinatorInfo
	// Certs and Challenges (formation -> name) are kept only with the
	// Certs and ACMEChallenges families.
	Certs      map[string]map[string]*state.Cert
	Challenges map[string]map[string]*state.ACMEChallenge

	layerBy   map[string]map[string]*state.Layer
	versions  map[string][]int                               // release versions per formation, ascending
	relRev    map[string]map[int]int64                       // CreateRevision of each release key
	statusRev map[string]map[int]int64                       // CreateRevision of each release status key
	placedBy  map[string]map[string][]*state.ContainerSpec   // formation -> node -> specs
	reportBy  map[string]map[string][]*state.ContainerStatus // formation -> node -> statuses
	load      map[string]nodeLoad
	sums      map[string]uint64 // key -> fingerprint of its value as kept
	seed      maphash.Seed
	// selMu guards sel, the live nodes per layer type and selector
	// (LayerNodes), filled by readers and emptied by node events.
	selMu sync.Mutex
	sel   map[string][]string
}

type nodeLoad struct {
	containers int
	memory     int64
}

func newState() *State {
	return &State{
		Formations: map[string]*state.Formation{}, FormationRev: map[string]int64{},
		Layers: map[string][]*state.Layer{}, Configs: map[string]*state.Config{},
		Releases: map[string]map[int]*state.Release{}, ReleaseStatus: map[string]map[int]*state.ReleaseStatus{},
		Nodes: map[string]*state.Node{}, Alive: map[string]bool{}, Drained: map[string]bool{}, DrainDocs: map[string]*state.Drain{},
		Runtimes: map[string]*state.Runtime{}, Status: map[string]*state.NodeStatus{},
		Routing: map[string]RoutingAt{}, Acks: map[string]map[string]int64{},
		AckDocs: map[string]map[string]*state.ProxyAck{}, Traffic: map[string]map[string]*state.TrafficReport{},
		FormationStatus: map[string]*state.FormationStatus{},
		Certs:           map[string]map[string]*state.Cert{}, Challenges: map[string]map[string]*state.ACMEChallenge{},
		layerBy: map[string]map[string]*state.Layer{}, versions: map[string][]int{},
		relRev: map[string]map[int]int64{}, statusRev: map[string]map[int]int64{},
		placedBy: map[string]map[string][]*state.ContainerSpec{}, reportBy: map[string]map[string][]*state.ContainerStatus{},
		load: map[string]nodeLoad{}, sums: map[string]uint64{}, seed: maphash.MakeSeed(),
	}
}

var zeroTime time.Time

// change is one put (val non-nil) or delete of a key.
type change struct {
	key       string
	ref       keyRef
	val       []byte // nil: deleted
	createRev int64
	modRev    int64
}

// decode unmarshals val into a new T.
func decode[T any](val []byte) (*T, error) {
	v := new(T)
	if err := json.Unmarshal(val, v); err != nil {
		return nil, err
	}
	return v, nil
}

// fingerprint is what decides whether a put changed anything: the
// value's bytes. Node statuses and traffic reports are compared decoded
// instead, without the time they carry (sameStatus, sameTraffic).
func (s *State) fingerprint(c change) uint64 { return maphash.Bytes(s.seed, c.val) }

// apply applies c and records in t what it touched. It reports an error
// only for a value that cannot be decoded; the key then counts as absent
// (a routing databag keeps the error in Routing).
func (s *State) apply(c change, t *Touched) error {
	if c.modRev > s.Rev {
		s.Rev = c.modRev
	}
	reported := c.ref.fam == NodeStatuses || c.ref.fam == Traffic
	if c.val != nil {
		sum := uint64(0)
		if !reported {
			sum = s.fingerprint(c)
		}
		// A routing databag written again has a new revision that the
		// proxies must acknowledge: it always counts.
		if old, ok := s.sums[c.key]; ok && old == sum && !reported && c.ref.fam != Routings {
			return nil
		}
		s.sums[c.key] = sum
	} else {
		if _, ok := s.sums[c.key]; !ok {
			return nil
		}
		delete(s.sums, c.key)
	}
	r := c.ref
	var err error
	switch r.fam {
	case Nodes, Heartbeats, Drains:
		s.selMu.Lock()
		s.sel = nil
		s.selMu.Unlock()
	}
	switch r.fam {
	case Formations:
		t.formation(r.formation)
		var v *state.Formation
		if c.val != nil {
			if v, err = decode[state.Formation](c.val); err == nil {
				if v.Name == "" {
					v.Name = r.formation
				}
				s.Formations[r.formation] = v
				s.FormationRev[r.formation] = c.createRev
				break
			}
		}
		delete(s.Formations, r.formation)
		delete(s.FormationRev, r.formation)
	case Layers:
		t.formation(r.formation)
		m := s.layerBy[r.formation]
		if m == nil {
			m = map[string]*state.Layer{}
			s.layerBy[r.formation] = m
		}
		delete(m, r.name)
		if c.val != nil {
			var v *state.Layer
			if v, err = decode[state.Layer](c.val); err == nil {
				if v.Formation == "" {
					v.Formation = r.formation
				}
				if v.Name == "" {
					v.Name = r.name
				}
				m[r.name] = v
			}
		}
		s.sortLayers(r.formation)
	case Configs:
		t.formation(r.formation)
		delete(s.Configs, r.formation)
		if c.val != nil {
			var v *state.Config
			if v, err = decode[state.Config](c.val); err == nil {
				s.Configs[r.formation] = v
			}
		}
	case Releases:
		t.formation(r.formation)
		err = s.applyRelease(c)
	case ReleaseStatuses:
		t.formation(r.formation)
		err = s.applyReleaseStatus(c)
	case Nodes:
		t.node(r.node)
		delete(s.Nodes, r.node)
		if c.val != nil {
			var v *state.Node
			if v, err = decode[state.Node](c.val); err == nil {
				if v.Name == "" {
					v.Name = r.node
				}
				s.Nodes[r.node] = v
			}
		}
	case Heartbeats:
		t.node(r.node)
		if c.val != nil {
			s.Alive[r.node] = true
		} else {
			delete(s.Alive, r.node)
		}
	case Drains:
		t.node(r.node)
		delete(s.DrainDocs, r.node)
		if c.val != nil {
			s.Drained[r.node] = true
			d, derr := decode[state.Drain](c.val)
			if derr != nil {
				d = &state.Drain{} // drained all the same: the key is the signal
			}
			d.Node = r.node
			s.DrainDocs[r.node] = d
		} else {
			delete(s.Drained, r.node)
		}
	case Runtimes:
		t.node(r.node)
		var v *state.Runtime
		if c.val != nil {
			if v, err = decode[state.Runtime](c.val); err == nil && v.Node == "" {
				v.Node = r.node
			}
		}
		s.setRuntime(r.node, v)
	case NodeStatuses:
		var v *state.NodeStatus
		if c.val != nil {
			if v, err = decode[state.NodeStatus](c.val); err == nil && v.Node == "" {
				v.Node = r.node
			}
			if old := s.Status[r.node]; old != nil && v != nil && sameStatus(old, v) {
				old.Updated = v.Updated // only the time is new
				break
			}
		}
		t.node(r.node)
		s.setStatus(r.node, v, t)
	case Routings:
		t.formation(r.formation)
		delete(s.Routing, r.formation)
		if c.val != nil {
			var v *state.Routing
			v, err = decode[state.Routing](c.val)
			s.Routing[r.formation] = RoutingAt{Doc: v, Rev: c.modRev, Err: err}
		}
	case ProxyAcks:
		t.formation(r.formation)
		deleteIn(s.Acks, r.formation, r.node)
		deleteIn(s.AckDocs, r.formation, r.node)
		if c.val != nil {
			var v *state.ProxyAck
			if v, err = decode[state.ProxyAck](c.val); err == nil {
				if v.Node == "" {
					v.Node = r.node
				}
				putIn(s.Acks, r.formation, r.node, v.Revision)
				putIn(s.AckDocs, r.formation, r.node, v)
			}
		}
	case Traffic:
		var v *state.TrafficReport
		if c.val != nil {
			v, err = decode[state.TrafficReport](c.val)
			if old := s.Traffic[r.formation][r.node]; old != nil && v != nil && sameTraffic(old, v) {
				old.At = v.At // only the time is new
				break
			}
		}
		t.formation(r.formation)
		deleteIn(s.Traffic, r.formation, r.node)
		if v != nil {
			putIn(s.Traffic, r.formation, r.node, v)
		}
	case FormationStatus:
		// Written by the scheduler about itself: kept, touches nothing.
		delete(s.FormationStatus, r.formation)
		if c.val != nil {
			var v *state.FormationStatus
			if v, err = decode[state.FormationStatus](c.val); err == nil {
				s.FormationStatus[r.formation] = v
			}
		}
	case Coordinator:
		s.Coordinator = nil
		if c.val != nil {
			s.Coordinator, err = decode[state.CoordinatorInfo](c.val)
		}
	case Certs:
		t.formation(r.formation)
		deleteIn(s.Certs, r.formation, r.name)
		if c.val != nil {
			var v *state.Cert
			if v, err = decode[state.Cert](c.val); err == nil {
				putIn(s.Certs, r.formation, r.name, v)
			}
		}
	case ACMEChallenges:
		t.formation(r.formation)
		deleteIn(s.Challenges, r.formation, r.name)
		if c.val != nil {
			var v *state.ACMEChallenge
			if v, err = decode[state.ACMEChallenge](c.val); err == nil {
				putIn(s.Challenges, r.formation, r.name, v)
			}
		}
	}
	return err
}

// sameStatus reports whether two reports of a node say the same but for
// their time.
func sameStatus(a, b *state.NodeStatus) bool {
	if a.Node != b.Node || a.Error != b.Error || !slices.Equal(a.Pending, b.Pending) ||
		!slices.Equal(a.RetiredLogs, b.RetiredLogs) || len(a.Containers) != len(b.Containers) {
		return false
	}
	for i := range a.Containers {
		if !sameContainer(&a.Containers[i], &b.Containers[i]) {
			return false
		}
	}
	return true
}

// sameContainer compares two reports of a container.
func sameContainer(a, b *state.ContainerStatus) bool {
	x, y := *a, *b
	x.Started, y.Started = zeroTime, zeroTime
	return x == y && a.Started.Equal(b.Started)
}

// sameTraffic reports whether two traffic reports count the same.
func sameTraffic(a, b *state.TrafficReport) bool {
	return a.Node == b.Node && a.Window == b.Window && maps.EqualFunc(a.Releases, b.Releases, func(x, y map[string]int64) bool {
		return maps.Equal(x, y)
	})
}

func putIn[V any](m map[string]map[string]V, a, b string, v V) {
	in := m[a]
	if in == nil {
		in = map[string]V{}
		m[a] = in
	}
	in[b] = v
}

func deleteIn[V any](m map[string]map[string]V, a, b string) {
	if in, ok := m[a]; ok {
		delete(in, b)
		if len(in) == 0 {
			delete(m, a)
		}
	}
}

func (s *State) sortLayers(f string) {
	m := s.layerBy[f]
	if len(m) == 0 {
		delete(s.layerBy, f)
		delete(s.Layers, f)
		return
	}
	out := make([]*state.Layer, 0, len(m))
	for _, l := range m {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	s.Layers[f] = out
}

func (s *State) applyRelease(c change) error {
	f, v := c.ref.formation, c.ref.version
	if m := s.Releases[f]; m != nil {
		delete(m, v)
		delete(s.relRev[f], v)
		vs := s.versions[f]
		if i := sort.SearchInts(vs, v); i < len(vs) && vs[i] == v {
			s.versions[f] = append(vs[:i], vs[i+1:]...)
		}
		if len(m) == 0 {
			delete(s.Releases, f)
			delete(s.relRev, f)
			delete(s.versions, f)
		}
	}
	if c.val == nil {
		return nil
	}
	rel, err := decode[state.Release](c.val)
	if err != nil {
		return err
	}
	rel.Version = v // the key is the truth
	if s.Releases[f] == nil {
		s.Releases[f] = map[int]*state.Release{}
		s.relRev[f] = map[int]int64{}
	}
	s.Releases[f][v] = rel
	s.relRev[f][v] = c.createRev
	vs := s.versions[f]
	i := sort.SearchInts(vs, v)
	vs = append(vs, 0)
	copy(vs[i+1:], vs[i:])
	vs[i] = v
	s.versions[f] = vs
	return nil
}

func (s *State) applyReleaseStatus(c change) error {
	f, v := c.ref.formation, c.ref.version
	if m := s.ReleaseStatus[f]; m != nil {
		delete(m, v)
		delete(s.statusRev[f], v)
		if len(m) == 0 {
			delete(s.ReleaseStatus, f)
			delete(s.statusRev, f)
		}
	}
	if c.val == nil {
		return nil
	}
	st, err := decode[state.ReleaseStatus](c.val)
	if err != nil {
		return err
	}
	st.Version = v
	if s.ReleaseStatus[f] == nil {
		s.ReleaseStatus[f] = map[int]*state.ReleaseStatus{}
		s.statusRev[f] = map[int]int64{}
	}
	s.ReleaseStatus[f][v] = st
	s.statusRev[f][v] = c.createRev
	return nil
}

// setRuntime replaces node n's databag (nil: none) and its entries in the
// placement index and load.
func (s *State) setRuntime(n string, rt *state.Runtime) {
	if old := s.Runtimes[n]; old != nil {
		for f := range formationsOfSpecs(old.Containers) {
			deleteIn(s.placedBy, f, n)
		}
	}
	delete(s.Runtimes, n)
	delete(s.load, n)
	if rt == nil {
		return
	}
	s.Runtimes[n] = rt
	var l nodeLoad
	for i := range rt.Containers {
		c := &rt.Containers[i]
		m := s.placedBy[c.Formation]
		if m == nil {
			m = map[string][]*state.ContainerSpec{}
			s.placedBy[c.Formation] = m
		}
		m[n] = append(m[n], c)
		l.containers++
		l.memory += c.Limits.MemoryBytes
	}
	s.load[n] = l
}

func formationsOfSpecs(cs []state.ContainerSpec) map[string]bool {
	out := map[string]bool{}
	for i := range cs {
		out[cs[i].Formation] = true
	}
	return out
}

// setStatus replaces node n's report (nil: none) and its entries in the
// report index, and touches the formations whose containers' reported
// state changed.
func (s *State) setStatus(n string, st *state.NodeStatus, t *Touched) {
	before := map[string]*state.ContainerStatus{}
	if old := s.Status[n]; old != nil {
		for i := range old.Containers {
			c := &old.Containers[i]
			before[c.Name] = c
			deleteIn(s.reportBy, c.Formation, n)
		}
	}
	delete(s.Status, n)
	if st != nil {
		s.Status[n] = st
		for i := range st.Containers {
			c := &st.Containers[i]
			m := s.reportBy[c.Formation]
			if m == nil {
				m = map[string][]*state.ContainerStatus{}
				s.reportBy[c.Formation] = m
			}
			m[n] = append(m[n], c)
			if b, ok := before[c.Name]; !ok || !sameContainer(b, c) {
				t.formation(c.Formation)
				if ok {
					t.formation(b.Formation)
				}
			}
			delete(before, c.Name)
		}
	}
	for _, c := range before {
		t.formation(c.Formation)
	}
}
