package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/view"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Etcd is what the controller needs of the etcd client: reads and
// transactions, and watches for its view.
type Etcd interface {
	clientv3.KV
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
	// Resync is the longest the loop sleeps without a change; such a pass
	// also plans again the formations with work in progress, whose boot
	// timeouts pass without any event (default 10s).
	Resync time.Duration
	// FullResync is how often a pass plans every formation and node, the
	// safety net of incremental passes (default 1m).
	FullResync time.Duration
	// View, when set, is a view of Prefix the caller runs; otherwise Run
	// runs its own.
	View *view.View
	// Fence, when set, returns the comparisons that hold only while this
	// coordinator leads (LeaderFence of its election key): every write of
	// the scheduler is a transaction that requires them, so a deposed
	// leader writes nothing. nil: unfenced (tests, benchmarks).
	Fence      func() []clientv3.Cmp
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

	// What incremental passes remember between passes.
	inc incremental
}

// New returns a controller.
func New(cfg Config) (*Controller, error) {
	if cfg.Etcd == nil {
		return nil, errors.New("scheduler: no etcd client")
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Second
	}
	if cfg.FullResync <= 0 {
		cfg.FullResync = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Controller{cfg: cfg, store: state.NewStore(cfg.Etcd, cfg.Prefix), m: m, log: cfg.Logger,
		rolled: map[string]int{}, lastErr: map[string]string{}, noTarget: map[string]int{}, inc: newIncremental()}, nil
}

// Run reconciles until ctx ends, incrementally: each pass plans what the
// view's changes touched. It returns ErrDeposed when the fence refused a
// write (the caller campaigns again), nil when ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	v := c.cfg.View
	if v == nil {
		v = view.New(c.cfg.Etcd, c.cfg.Prefix, view.Options{Logger: c.log})
		vctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { _ = v.Run(vctx) }()
	}
	sub := v.Subscribe()
	defer sub.Close()
	if err := v.WaitReady(ctx); err != nil {
		return nil
	}
	c.inc.needFull = true
	var bo backoff.Backoff
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sub.C:
		case <-timer.C:
		}
		next := backoff.Jitter(c.cfg.Resync)
		err := c.passView(ctx, v, sub)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrDeposed):
			c.log.Warn("scheduler stopped: no longer the leader")
			return err
		case err != nil:
			c.log.Warn("reconcile failed", "error", err)
			next = bo.Next()
		default:
			bo.Reset()
		}
		timer.Reset(next)
	}
}

// passView runs one pass on the running view: it waits until the view
// holds this controller's own last writes, takes what changed, plans it
// under the view's read lock and writes the result.
func (c *Controller) passView(ctx context.Context, v *view.View, sub *view.Sub) error {
	if err := c.catchUp(ctx, v); err != nil {
		return err
	}
	t := sub.Take()
	now := time.Now()
	full := t.All || c.inc.needFull || now.Sub(c.inc.lastFull) >= c.cfg.FullResync
	var p *passPlan
	v.Read(func(s *view.State) { p = c.plan(s, t, full, now) })
	return c.run(ctx, p)
}

// catchUp waits (a bounded time) until the view has applied the revision
// of this controller's last write: a pass that planned from a view
// without it would write databags over it.
func (c *Controller) catchUp(ctx context.Context, v *view.View) error {
	want := c.inc.wrote
	if want == 0 || v.Rev() >= want {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := v.WaitRev(wctx, want); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.log.Warn("view behind the scheduler's own writes; planning everything", "view_rev", v.Rev(), "written_rev", want)
		c.inc.needFull = true
	}
	return nil
}

// Reconcile runs one full pass on a state read at one revision (a one-shot
// view.Load): plan every formation and node, write what changed.
func (c *Controller) Reconcile(ctx context.Context) error {
	s, err := view.Load(ctx, c.cfg.Etcd, c.cfg.Prefix)
	if err != nil {
		return err
	}
	p := c.plan(s, view.Touched{All: true}, true, time.Now())
	return c.run(ctx, p)
}

// run writes what a pass planned, then carries out its automatic
// rollbacks, and accounts for the pass.
func (c *Controller) run(ctx context.Context, p *passPlan) (err error) {
	defer func() {
		c.m.passes.Inc()
		c.m.duration.Observe(time.Since(p.start).Seconds())
		if err != nil {
			c.m.errors.Inc()
			c.inc.needFull = true // the touched sets were spent
		}
	}()
	rev, err := c.commit(ctx, p.writes)
	if err != nil {
		return err
	}
	if rev > c.inc.wrote {
		c.inc.wrote = rev
	}
	if p.full {
		c.inc.lastFull = p.start
		c.inc.needFull = false
		c.m.full.Inc()
	}
	c.m.planned.Add(float64(p.planned))
	c.m.placed.Add(float64(p.placed))
	for _, l := range p.logs {
		l()
	}
	for _, rb := range p.rollbacks {
		if err := c.rollBack(ctx, rb.formation, rb.incarnation, rb.dec, rb.status); err != nil {
			return err
		}
	}
	return nil
}
