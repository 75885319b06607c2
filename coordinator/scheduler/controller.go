package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/watch"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Etcd is what the controller needs of the etcd client.
type Etcd interface {
	state.KV
	clientv3.Watcher
}

// Config configures a Controller.
type Config struct {
	Etcd       Etcd
	Prefix     string
	SlugURL    string
	BaseDomain string
	// BootTimeout is how long a new release has to become ready (default 60s).
	BootTimeout time.Duration
	// Rollback is the automatic rollback policy (rollback.go); a zero
	// Window turns it off.
	Rollback RollbackPolicy
	// Resync is the longest the loop sleeps without a watch event.
	Resync     time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Controller is the scheduler's reconcile loop.
type Controller struct {
	cfg     Config
	store   *state.Store
	m       *metrics
	log     *slog.Logger
	rolled  map[string]int // formation -> release whose rollout was observed
	lastErr map[string]string
	primed  bool
	// noTarget remembers, per formation, the bad release already logged
	// as having nothing to roll back to.
	noTarget map[string]int
}

// New returns a controller.
func New(cfg Config) (*Controller, error) {
	if cfg.Etcd == nil {
		return nil, errors.New("scheduler: no etcd client")
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Controller{cfg: cfg, store: state.NewStore(cfg.Etcd, cfg.Prefix), m: m, log: cfg.Logger,
		rolled: map[string]int{}, lastErr: map[string]string{}, noTarget: map[string]int{}}, nil
}

// Run reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	wake := watch.NewWaker()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch.Prefixes(wctx, c.cfg.Etcd, 0, wake, c.store.Keys.Prefix+"/")
	watch.Loop(ctx, wake, c.cfg.Resync, backoff.Backoff{}, c.Reconcile, func(err error) {
		c.log.Warn("reconcile failed", "error", err)
	})
	return nil
}

// Reconcile runs one pass: read the world, plan, write what changed.
func (c *Controller) Reconcile(ctx context.Context) (err error) {
	start := time.Now()
	defer func() {
		c.m.passes.Inc()
		c.m.duration.Observe(time.Since(start).Seconds())
		if err != nil {
			c.m.errors.Inc()
		}
	}()
	w, cur, err := c.read(ctx)
	if err != nil {
		return err
	}
	d := Plan(w)
	c.m.placed.Add(float64(d.Placed))
	for f, st := range d.Failed {
		// Written once; the next pass no longer picks the failed release.
		if err := c.markFailed(ctx, f, st, cur.rev); err != nil {
			return err
		}
		c.log.Warn("release failed", "formation", f, "release", st.Version, "reason", st.Reason)
		c.m.failed.Inc()
		return nil
	}
	for n, rt := range d.Runtimes {
		if old, ok := cur.runtimes[n]; ok && state.Marshal(old) == state.Marshal(rt) {
			continue
		}
		if err := c.store.Put(ctx, c.store.Keys.Runtime(n), rt); err != nil {
			return err
		}
		c.log.Info("runtime databag written", "node", n, "containers", len(rt.Containers))
	}
	for f, r := range d.Routing {
		if old := w.Routing[f].Doc; old != nil && sameRouting(old, r) {
			continue
		}
		if err := c.store.Put(ctx, c.store.Keys.Routing(f), r); err != nil {
			return err
		}
		c.log.Info("routing databag written", "formation", f, "release", r.Release, "upstreams", len(r.Upstreams))
	}
	// Databags of formations and nodes that are gone.
	for f := range w.Routing {
		if _, ok := w.Formations[f]; !ok {
			if _, err := c.cfg.Etcd.Txn(ctx).Then(clientv3.OpDelete(c.store.Keys.Routing(f))).Commit(); err != nil {
				return err
			}
		}
	}
	for f := range w.Formations {
		st := state.FormationStatus{Formation: f, Pending: d.Reasons[f], Error: d.Errors[f]}
		if r := w.Releases[f]; r != nil {
			st.Release = r.Version
		}
		if state.Marshal(st) == cur.formationStatus[f] {
			continue
		}
		if err := c.store.Put(ctx, c.store.Keys.FormationStatus(f), st); err != nil {
			return err
		}
		for _, r := range st.Pending {
			c.log.Debug("in progress", "formation", f, "reason", r)
		}
	}
	for f, e := range d.Errors {
		if c.lastErr[f] != e {
			c.log.Warn("cannot converge", "formation", f, "error", e)
		}
	}
	c.lastErr = d.Errors
	c.observe(w, d)
	return c.autoRollback(ctx, w, d)
}

// observe records rollout durations: from a release's creation until every
// live proxy of its formation has applied a routing revision for it.
func (c *Controller) observe(w *World, d *Decision) {
	states := map[string]float64{"up": 0, "lost": 0}
	for n := range w.Nodes {
		if w.Alive[n] {
			states["up"]++
		} else {
			states["lost"]++
		}
	}
	for s, v := range states {
		c.m.nodes.WithLabelValues(s).Set(v)
	}
	for f, rel := range w.Releases {
		r := w.Routing[f]
		if rel == nil || r.Doc == nil || r.Doc.Release != rel.Version || c.rolled[f] == rel.Version {
			continue
		}
		if !sameRouting(r.Doc, d.Routing[f]) {
			continue
		}
		acked := true
		for _, n := range layerNodes(w, f, state.LayerProxy) {
			if w.Acks[f][n] < r.Rev {
				acked = false
			}
		}
		if !acked {
			continue
		}
		if c.primed {
			c.m.rollout.Observe(time.Since(rel.Created).Seconds())
			c.log.Info("rollout complete", "formation", f, "release", rel.Version, "seconds", time.Since(rel.Created).Seconds())
		}
		c.rolled[f] = rel.Version
	}
	// Rollouts found complete on the first pass finished before this
	// coordinator led; they are not timed.
	c.primed = true
}

type current struct {
	runtimes        map[string]*state.Runtime
	formationStatus map[string]string // formation -> JSON as stored
	rev             int64             // revision of the formations read
}

// markFailed records that release st.Version of f failed, once, and only
// while f is still the formation the pass read (created at or before
// revision rev): a formation destroyed and created again since must not
// inherit the failure of the old one's release with the same number.
func (c *Controller) markFailed(ctx context.Context, f string, st *state.ReleaseStatus, rev int64) error {
	k := c.store.Keys
	key := k.ReleaseStatus(f, st.Version)
	_, err := c.store.Commit(ctx, []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(k.Formation(f)), ">", 0),
		clientv3.Compare(clientv3.CreateRevision(k.Formation(f)), "<", rev+1),
	}, clientv3.OpPut(key, state.Marshal(st)))
	return err
}

func (c *Controller) read(ctx context.Context) (*World, *current, error) {
	k := c.store.Keys
	kv := c.cfg.Etcd
	w := &World{
		Formations:  map[string]*state.Formation{},
		Layers:      map[string][]*state.Layer{},
		Releases:    map[string]*state.Release{},
		Live:        map[string]bool{},
		Nodes:       map[string]*state.Node{},
		Alive:       map[string]bool{},
		Runtimes:    map[string]*state.Runtime{},
		Status:      map[string]*state.NodeStatus{},
		Routing:     map[string]RoutingAt{},
		Acks:        map[string]map[string]int64{},
		SlugURL:     c.cfg.SlugURL,
		BaseDomain:  c.cfg.BaseDomain,
		Now:         time.Now(),
		BootTimeout: c.cfg.BootTimeout,
	}
	cur := &current{runtimes: map[string]*state.Runtime{}, formationStatus: map[string]string{}}
	fst, err := kv.Get(ctx, k.FormationStatuses(), clientv3.WithPrefix())
	if err != nil {
		return nil, nil, err
	}
	for _, kvp := range fst.Kvs {
		cur.formationStatus[state.Base(string(kvp.Key))] = string(kvp.Value)
	}
	forms, rev, err := state.List[state.Formation](ctx, kv, k.Formations())
	if err != nil {
		return nil, nil, err
	}
	cur.rev = rev
	for _, e := range forms {
		f := e.Value
		w.Formations[f.Name] = &f
	}
	layers, _, err := state.List[state.Layer](ctx, kv, k.AllLayers())
	if err != nil {
		return nil, nil, err
	}
	for _, e := range layers {
		l := e.Value
		w.Layers[l.Formation] = append(w.Layers[l.Formation], &l)
	}
	for f := range w.Formations {
		rel, live, err := c.currentRelease(ctx, f)
		if err != nil {
			return nil, nil, err
		}
		if rel != nil {
			w.Releases[f] = rel
			w.Live[f] = live
		}
	}
	nodes, _, err := state.List[state.Node](ctx, kv, k.Nodes())
	if err != nil {
		return nil, nil, err
	}
	for _, e := range nodes {
		n := e.Value
		w.Nodes[n.Name] = &n
	}
	hb, err := kv.Get(ctx, k.Heartbeats(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, nil, err
	}
	for _, kvp := range hb.Kvs {
		w.Alive[state.Base(string(kvp.Key))] = true
	}
	drains, err := kv.Get(ctx, k.Drains(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, nil, err
	}
	w.Drained = map[string]bool{}
	for _, kvp := range drains.Kvs {
		w.Drained[state.Base(string(kvp.Key))] = true
	}
	rts, _, err := state.List[state.Runtime](ctx, kv, k.Runtimes())
	if err != nil {
		return nil, nil, err
	}
	for _, e := range rts {
		rt := e.Value
		cur.runtimes[state.Base(e.Key)] = &rt
		w.Runtimes[state.Base(e.Key)] = &rt
	}
	sts, _, err := state.List[state.NodeStatus](ctx, kv, k.NodeStatuses())
	if err != nil {
		return nil, nil, err
	}
	for _, e := range sts {
		s := e.Value
		w.Status[state.Base(e.Key)] = &s
	}
	routes, _, err := state.List[state.Routing](ctx, kv, k.Routings())
	if err != nil {
		return nil, nil, err
	}
	for _, e := range routes {
		r := e.Value
		w.Routing[state.Base(e.Key)] = RoutingAt{Doc: &r, Rev: e.ModRevision}
	}
	acks, _, err := state.List[state.ProxyAck](ctx, kv, k.AllProxyAcks())
	if err != nil {
		return nil, nil, err
	}
	for _, e := range acks {
		// key: prefix/status/proxies/<f>/<node>
		rest := e.Key[len(k.AllProxyAcks()):]
		var f string
		for i := 0; i < len(rest); i++ {
			if rest[i] == '/' {
				f = rest[:i]
				break
			}
		}
		if w.Acks[f] == nil {
			w.Acks[f] = map[string]int64{}
		}
		w.Acks[f][e.Value.Node] = e.Value.Revision
	}
	return w, cur, nil
}

// currentRelease is the newest release of f that is not marked failed, and
// whether it went live.
func (c *Controller) currentRelease(ctx context.Context, f string) (*state.Release, bool, error) {
	k := c.store.Keys
	failed := map[int]bool{}
	live := map[int]bool{}
	st, _, err := state.List[state.ReleaseStatus](ctx, c.cfg.Etcd, k.ReleaseStatuses(f))
	if err != nil {
		return nil, false, err
	}
	for _, e := range st {
		if e.Value.Failed {
			failed[e.Value.Version] = true
		}
		if !e.Value.LiveAt.IsZero() {
			live[e.Value.Version] = true
		}
	}
	resp, err := c.cfg.Etcd.Get(ctx, k.Releases(f), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(len(failed)+1)))
	if err != nil {
		return nil, false, err
	}
	rels := make([]state.Release, 0, len(resp.Kvs))
	for _, kvp := range resp.Kvs {
		var r state.Release
		if err := jsonUnmarshal(kvp.Value, &r); err != nil {
			return nil, false, err
		}
		rels = append(rels, r)
	}
	sort.Slice(rels, func(i, j int) bool { return rels[i].Version > rels[j].Version })
	for i := range rels {
		if !failed[rels[i].Version] {
			return &rels[i], live[rels[i].Version], nil
		}
	}
	return nil, false, nil
}
