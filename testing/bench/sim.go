package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Sim simulates the agents of an installation through the real key layout:
// runtime nodes that register, keep a lease-bound heartbeat and report every
// container of their runtime databag ready at once (with an address), and
// proxy nodes that acknowledge every routing revision at once. Everything it
// measures is therefore the control plane. It is cheap: one watch on the
// runtime databags and one on the routing databags dispatch to the simulated
// nodes, and a few workers write their reports.
type Sim struct {
	cli   *clientv3.Client
	store *state.Store
	keys  state.Keys
	// StatusEvery is how often a node rewrites an unchanged status, as
	// the real agent does (25 s); 0: never.
	StatusEvery time.Duration

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	err     error         // first write or watch error
	nodes   map[string]*simNode
	byAddr  map[string]*simNode // node address -> node
	proxies []string
	forms   map[string]*simForm
	// converged counts the formations routed at their newest release with
	// every container, none on a lost node, acknowledged by every proxy.
	converged int
	placedOn  map[string]string    // container -> node whose databag holds it
	readyAt   map[string]time.Time // container -> its first ready report written
	// lost holds the containers of lost nodes not yet placed on a live one.
	lost map[string]bool

	statusQ, ackQ *queue

	// target is the number of containers of a full installation; placedAll
	// and readyAll are when as many were first placed and reported ready.
	target              int
	placedAll, readyAll time.Time
}

type simNode struct {
	name, addr string
	lease      clientv3.LeaseID
	stopHB     context.CancelFunc
	dead       bool
	containers map[string]*simContainer
	nextPort   int
	written    string // last status written, without its time
	slot       int    // refresh period of the last forced write
	force      bool   // write even if unchanged
}

type simContainer struct {
	spec    state.ContainerSpec
	id      string
	addr    string
	started time.Time
}

type simForm struct {
	scale       int
	latest      int // newest release written
	routing     *state.Routing
	rev         int64
	acks        map[string]int64 // proxy -> acknowledged revision
	converged   bool
	convergedAt time.Time
}

// NewSim returns a simulator writing under prefix.
func NewSim(cli *clientv3.Client, prefix string) *Sim {
	s := &Sim{cli: cli, store: state.NewStore(cli, prefix), StatusEvery: 25 * time.Second,
		changed: make(chan struct{}), nodes: map[string]*simNode{}, byAddr: map[string]*simNode{},
		forms: map[string]*simForm{}, placedOn: map[string]string{}, readyAt: map[string]time.Time{},
		lost: map[string]bool{}, statusQ: newQueue(), ackQ: newQueue()}
	s.keys = s.store.Keys
	return s
}

// Err is the first error a simulated agent met.
func (s *Sim) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Sim) fail(err error) {
	if err == nil || s.err != nil {
		return
	}
	s.err = err
	s.broadcast()
}

func (s *Sim) broadcast() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Start runs the watches and the writers until ctx ends; the watches start
// at revision rev+1.
func (s *Sim) Start(ctx context.Context, rev int64, statusWorkers, ackWorkers int) {
	go s.watch(ctx, s.keys.Runtimes(), rev, s.onRuntime)
	go s.watch(ctx, s.keys.Routings(), rev, s.onRouting)
	for i := 0; i < statusWorkers; i++ {
		go s.statusWriter(ctx)
	}
	for i := 0; i < ackWorkers; i++ {
		go s.ackWriter(ctx)
	}
	if s.StatusEvery > 0 {
		go s.refresh(ctx)
	}
}

func (s *Sim) watch(ctx context.Context, prefix string, rev int64, fn func(ev *clientv3.Event)) {
	for resp := range s.cli.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			s.mu.Lock()
			s.fail(fmt.Errorf("sim: watch %s: %w", prefix, err))
			s.mu.Unlock()
			return
		}
		for _, ev := range resp.Events {
			fn(ev)
		}
	}
}

// AddNode registers a node with its lease-bound heartbeat (TTL 10 s, as
// the agents' default), like agent/node does, and for a runtime node writes
// its first, empty status.
func (s *Sim) AddNode(ctx context.Context, name, addr string, role string) error {
	n := state.Node{Name: name, Addr: addr, Labels: map[string]string{"role": role}, HTTPPort: 80, Started: time.Now().UTC(), Version: "bench"}
	if err := s.store.Put(ctx, s.keys.Node(name), n); err != nil {
		return err
	}
	lease, err := s.cli.Grant(ctx, 10)
	if err != nil {
		return err
	}
	if err := s.store.Put(ctx, s.keys.Heartbeat(name), state.Heartbeat{Node: name, At: time.Now().UTC()}, clientv3.WithLease(lease.ID)); err != nil {
		return err
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ch, err := s.cli.KeepAlive(hctx, lease.ID)
	if err != nil {
		cancel()
		return err
	}
	go func() {
		for range ch {
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	sn := &simNode{name: name, addr: addr, lease: lease.ID, stopHB: cancel, containers: map[string]*simContainer{}, nextPort: 20000}
	s.byAddr[addr] = sn
	if role == string(state.LayerProxy) {
		s.proxies = append(s.proxies, name)
		sort.Strings(s.proxies)
		return nil
	}
	s.nodes[name] = sn
	s.statusQ.push(name)
	return nil
}

// AddFormation tells the simulator a formation exists with scale web
// containers and release latest.
func (s *Sim) AddFormation(f string, scale, latest int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forms[f] = &simForm{scale: scale, latest: latest, acks: map[string]int64{}}
	s.check(f)
}

// Released records that f has a new newest release.
func (s *Sim) Released(f string, v int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forms[f].latest = v
	s.check(f)
}

// Target sets the number of containers the installation runs, for
// Milestones.
func (s *Sim) Target(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.target = n
}

// Milestones says when as many containers as the target were first in
// databags, and first reported ready (zero: not yet).
func (s *Sim) Milestones() (placed, ready time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.placedAll, s.readyAll
}

// KillNode loses a runtime node: its heartbeat stops and its lease is
// revoked, so its heartbeat key goes at once; it reports nothing more. It
// returns when the lease is revoked, with the node's containers of the
// newest releases (those that must be placed again).
func (s *Sim) KillNode(ctx context.Context, name string) ([]string, error) {
	s.mu.Lock()
	n := s.nodes[name]
	n.dead = true
	var names []string
	for c, sc := range n.containers {
		if fm := s.forms[sc.spec.Formation]; fm == nil || sc.spec.Release != fm.latest {
			continue // retiring: not placed again
		}
		names = append(names, c)
		if s.placedOn[c] == name {
			s.lost[c] = true
		}
	}
	for f := range s.forms {
		s.check(f)
	}
	s.mu.Unlock()
	n.stopHB()
	_, err := s.cli.Revoke(ctx, n.lease)
	return names, err
}

// WaitFor waits until cond, evaluated under the simulator's lock after
// every change, holds, and returns when it first did.
func (s *Sim) WaitFor(ctx context.Context, cond func() bool) (time.Time, error) {
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return time.Time{}, err
		}
		if cond() {
			s.mu.Unlock()
			return time.Now(), nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// AllConverged is a condition for WaitFor: every formation routed at its
// newest release and acknowledged.
func (s *Sim) AllConverged() bool { return s.converged == len(s.forms) }

// Converged is a condition for WaitFor: formation f is.
func (s *Sim) Converged(f string) func() bool { return func() bool { return s.forms[f].converged } }

// Replaced is a condition for WaitFor: every container of a lost node is in
// the databag of a live one.
func (s *Sim) Replaced() bool { return len(s.lost) == 0 }

// Counts says how many formations converged and how many containers are in
// databags and reported ready, for progress reports.
func (s *Sim) Counts() (converged, placed, ready int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.converged, len(s.placedOn), len(s.readyAt)
}

// ReadyAt is the latest time one of names was first reported ready (zero
// if one was not).
func (s *Sim) ReadyAt(names []string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last time.Time
	for _, n := range names {
		t, ok := s.readyAt[n]
		if !ok {
			return time.Time{}
		}
		if t.After(last) {
			last = t
		}
	}
	return last
}

// Placed returns the containers of formation f at release v in live databags.
func (s *Sim) Placed(f string, v int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.placed(f, v)
}

// placed is Placed with s.mu held (in a condition of WaitFor).
func (s *Sim) placed(f string, v int) []string {
	pre := fmt.Sprintf("%s.v%d.", f, v)
	var out []string
	for c := range s.placedOn {
		if strings.HasPrefix(c, pre) {
			out = append(out, c)
		}
	}
	return out
}

// ConvergedAt is when formation f last converged.
func (s *Sim) ConvergedAt(f string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.forms[f].convergedAt
}

// check recomputes whether f converged; s.mu is held.
func (s *Sim) check(f string) {
	fm := s.forms[f]
	if fm == nil {
		return
	}
	ok := fm.routing != nil && fm.routing.Release == fm.latest && len(fm.routing.Upstreams) == fm.scale
	if ok {
		for _, u := range fm.routing.Upstreams {
			host, _, _ := strings.Cut(u.Addr, ":")
			if n := s.byAddr[host]; n == nil || n.dead {
				ok = false
				break
			}
		}
	}
	if ok {
		for _, p := range s.proxies {
			if fm.acks[p] < fm.rev {
				ok = false
				break
			}
		}
	}
	if ok == fm.converged {
		return
	}
	fm.converged = ok
	if ok {
		s.converged++
		fm.convergedAt = time.Now()
	} else {
		s.converged--
	}
	s.broadcast()
}

// onRuntime is a runtime databag event: the node takes its containers and
// reports them.
func (s *Sim) onRuntime(ev *clientv3.Event) {
	name := state.Base(string(ev.Kv.Key))
	var rt state.Runtime
	if ev.Type == clientv3.EventTypePut {
		if err := json.Unmarshal(ev.Kv.Value, &rt); err != nil {
			s.mu.Lock()
			s.fail(fmt.Errorf("sim: runtime databag of %s: %w", name, err))
			s.mu.Unlock()
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[name]
	if n == nil || n.dead {
		return
	}
	want := map[string]bool{}
	for _, c := range rt.Containers {
		want[c.Name] = true
		if _, ok := n.containers[c.Name]; ok {
			continue
		}
		sum := sha256.Sum256([]byte(name + "/" + c.Name))
		n.containers[c.Name] = &simContainer{spec: c, id: hex.EncodeToString(sum[:]),
			addr: fmt.Sprintf("%s:%d", n.addr, n.nextPort), started: time.Now().UTC()}
		n.nextPort++
		s.placedOn[c.Name] = name
		delete(s.lost, c.Name)
	}
	for c := range n.containers {
		if !want[c] {
			delete(n.containers, c)
			if s.placedOn[c] == name {
				delete(s.placedOn, c)
			}
		}
	}
	if s.target > 0 && s.placedAll.IsZero() && len(s.placedOn) >= s.target {
		s.placedAll = time.Now()
	}
	s.statusQ.push(name)
	s.broadcast()
}

// status is what node n reports: every container of its databag, ready.
// s.mu is held.
func (n *simNode) status() state.NodeStatus {
	st := state.NodeStatus{Node: n.name, Containers: make([]state.ContainerStatus, 0, len(n.containers))}
	for _, c := range n.containers {
		st.Containers = append(st.Containers, state.ContainerStatus{Name: c.spec.Name, ID: c.id, Formation: c.spec.Formation,
			Release: c.spec.Release, Type: c.spec.Type, State: state.StateReady, Addr: c.addr, Started: c.started})
	}
	sort.Slice(st.Containers, func(i, j int) bool { return st.Containers[i].Name < st.Containers[j].Name })
	return st
}

// statusWriter writes the status of the nodes queued, skipping one that
// would not change (unless its refresh is due), as agent/runtime does. So
// that the simulator is not what the benchmark measures, it writes the
// reports of up to batchKeys nodes in one transaction.
func (s *Sim) statusWriter(ctx context.Context) {
	type write struct {
		n       *simNode
		st      state.NodeStatus
		content string
	}
	for {
		names, ok := s.statusQ.popBatch(ctx, batchKeys)
		if !ok {
			return
		}
		var ws []write
		var ops []clientv3.Op
		bytes := 0
		s.mu.Lock()
		for i, name := range names {
			n := s.nodes[name]
			if n.dead {
				continue
			}
			st := n.status()
			content := state.Marshal(st)
			if content == n.written && !n.force {
				continue
			}
			if bytes+len(content) > batchBytes && len(ops) > 0 {
				for _, rest := range names[i:] {
					s.statusQ.push(rest)
				}
				break
			}
			n.force = false
			st.Updated = time.Now().UTC()
			ws = append(ws, write{n, st, content})
			ops = append(ops, clientv3.OpPut(s.keys.NodeStatus(name), state.Marshal(st)))
			bytes += len(content)
		}
		s.mu.Unlock()
		if len(ops) == 0 {
			continue
		}
		_, err := s.cli.Txn(ctx).Then(ops...).Commit()
		s.mu.Lock()
		if err != nil {
			if ctx.Err() == nil {
				s.fail(fmt.Errorf("sim: status reports: %w", err))
			}
			s.mu.Unlock()
			return
		}
		now := time.Now()
		for _, w := range ws {
			w.n.written = w.content
			for _, c := range w.st.Containers {
				if _, ok := s.readyAt[c.Name]; !ok {
					s.readyAt[c.Name] = now
				}
			}
		}
		if s.target > 0 && s.readyAll.IsZero() && len(s.readyAt) >= s.target {
			s.readyAll = now
		}
		s.broadcast()
		s.mu.Unlock()
	}
}

// The simulator's batches stay within etcd's limits (128 operations,
// 1.5 MiB a request).
const (
	batchKeys  = 100
	batchBytes = 1 << 20
)

// refresh makes every node rewrite its status once every StatusEvery, as
// the agent does, with the nodes' turns spread evenly over the period (a
// steady state: a cold start would have them all in step at first).
func (s *Sim) refresh(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		names := make([]string, 0, len(s.nodes))
		for name := range s.nodes {
			names = append(names, name)
		}
		sort.Strings(names)
		for i, name := range names {
			n := s.nodes[name]
			phase := time.Duration(i) * s.StatusEvery / time.Duration(len(names))
			slot := int((time.Since(start) + phase) / s.StatusEvery)
			if slot > n.slot && !n.dead {
				n.slot, n.force = slot, true
				s.statusQ.push(name)
			}
		}
		s.mu.Unlock()
	}
}

// onRouting is a routing databag event: every proxy applies it.
func (s *Sim) onRouting(ev *clientv3.Event) {
	f := state.Base(string(ev.Kv.Key))
	var r *state.Routing
	if ev.Type == clientv3.EventTypePut {
		r = &state.Routing{}
		if err := json.Unmarshal(ev.Kv.Value, r); err != nil {
			s.mu.Lock()
			s.fail(fmt.Errorf("sim: routing databag of %s: %w", f, err))
			s.mu.Unlock()
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fm := s.forms[f]
	if fm == nil {
		return
	}
	fm.routing, fm.rev = r, ev.Kv.ModRevision
	s.check(f)
	if r != nil {
		s.ackQ.push(f)
	}
}

// ackWriter writes each proxy's ack of the newest routing revision of the
// formations queued, as agent/proxy does once nginx has the routes; up to
// batchKeys acks in one transaction.
func (s *Sim) ackWriter(ctx context.Context) {
	type ack struct {
		fm   *simForm
		f, p string
		rev  int64
	}
	for {
		forms, ok := s.ackQ.popBatch(ctx, batchKeys/2)
		if !ok {
			return
		}
		var acks []ack
		var ops []clientv3.Op
		now := time.Now().UTC()
		s.mu.Lock()
		for _, f := range forms {
			fm := s.forms[f]
			for _, p := range s.proxies {
				if fm.acks[p] >= fm.rev {
					continue
				}
				acks = append(acks, ack{fm, f, p, fm.rev})
				ops = append(ops, clientv3.OpPut(s.keys.ProxyAck(f, p), state.Marshal(state.ProxyAck{Node: p, Revision: fm.rev, Applied: now})))
			}
		}
		s.mu.Unlock()
		if len(ops) == 0 {
			continue
		}
		_, err := s.cli.Txn(ctx).Then(ops...).Commit()
		s.mu.Lock()
		if err != nil {
			if ctx.Err() == nil {
				s.fail(fmt.Errorf("sim: acks: %w", err))
			}
			s.mu.Unlock()
			return
		}
		for _, a := range acks {
			if a.rev > a.fm.acks[a.p] {
				a.fm.acks[a.p] = a.rev
			}
			s.check(a.f)
		}
		s.mu.Unlock()
	}
}

// queue is a set of names to work on, each at most once in it.
type queue struct {
	mu    sync.Mutex
	items []string
	in    map[string]bool
	wake  chan struct{}
}

func newQueue() *queue { return &queue{in: map[string]bool{}, wake: make(chan struct{}, 1)} }

func (q *queue) push(name string) {
	q.mu.Lock()
	if !q.in[name] {
		q.in[name] = true
		q.items = append(q.items, name)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// popBatch waits for names and takes up to max of them.
func (q *queue) popBatch(ctx context.Context, max int) ([]string, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			n := min(max, len(q.items))
			names := append([]string(nil), q.items[:n]...)
			q.items = q.items[n:]
			for _, name := range names {
				delete(q.in, name)
			}
			more := len(q.items) > 0
			q.mu.Unlock()
			if more {
				select {
				case q.wake <- struct{}{}:
				default:
				}
			}
			return names, true
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-ctx.Done():
			return nil, false
		}
	}
}
