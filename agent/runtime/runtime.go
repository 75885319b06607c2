package runtime

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/slugtar"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/watch"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Config is what a Runtime needs.
type Config struct {
	// Node is this node's name.
	Node string
	// Addr is the address containers' ports are published on; their
	// upstream addresses are Addr:hostport.
	Addr string
	// StateDir is the agent's state directory; slugs go under
	// StateDir/slugs.
	StateDir string
	// Store reads the runtime databag and writes the node status.
	Store *state.Store
	// Watcher watches the runtime databag (the etcd client).
	Watcher clientv3.Watcher
	// Docker runs the containers (NewDocker).
	Docker Docker
	// HTTPClient downloads slugs (default: one with a 10 minute timeout
	// over SlugTLS).
	HTTPClient *http.Client
	// SlugTLS is the TLS config of slug downloads when HTTPClient is not
	// set: pki.ClientTLS with the node's certificate, which the slug
	// servers require, trusting only the platform CA.
	SlugTLS *tls.Config
	// StopGrace is the time between SIGTERM and SIGKILL when a container
	// is stopped (default 30s).
	StopGrace time.Duration
	// DrainDelay is how long a retired container keeps running before its
	// SIGTERM, so requests the proxies sent it before they switched away
	// finish even when the app exits at once on SIGTERM (0: none).
	DrainDelay time.Duration
	// Network is the Docker network app containers (and one-off
	// containers) join; "" means the engine's default bridge. Their ports
	// are published on Addr either way.
	Network string
	// DefaultMemory is the memory limit in bytes of a container whose
	// process type has none (deisctl limits:set overrides it); 0 means
	// DefaultMemoryBytes, < 0 none.
	DefaultMemory int64
	// PidsLimit is the most processes and threads of each container; 0
	// means DefaultPidsLimit, < 0 none.
	PidsLimit int64
	// MaxSlugBytes is the platform's slug size limit (the coordinator's
	// --max-slug-bytes; 0: slugtar.DefaultMaxSlugBytes): a slug that
	// expands past slugtar.ExpandFactor times it is refused.
	MaxSlugBytes int64
	// MaxSlugEntries is the most entries of a slug (0:
	// slugtar.DefaultMaxEntries).
	MaxSlugEntries int
	// PortRange is where containers' host ports are chosen (zero:
	// DefaultPortRange). Each container gets an explicit port, so it keeps
	// it when Docker restarts it.
	PortRange PortRange
	// SpareSandboxes is how many spare network sandboxes the runtime keeps
	// started (0: none): an app container with a port joins a spare's
	// network namespace, which already has its address, embedded DNS and
	// published port, so Docker starts it about three times as fast.
	// SandboxImage (default DefaultSandboxImage) runs their `sleep`.
	SpareSandboxes int
	SandboxImage   string
	// RetiredLines and RetiredBytes bound the last lines kept per
	// formation of the containers the runtime removed (0:
	// DefaultRetiredLines, DefaultRetiredBytes; < 0: none kept).
	RetiredLines, RetiredBytes int
	// Resync is how often a full pass runs without a wake-up (0:
	// resyncEvery, 10s). Docker events and the databag watch wake it
	// sooner; the resync is the safety net for a lost event.
	Resync time.Duration
	// Logger gets the role's logs (default: none).
	Logger *slog.Logger
	// Registerer gets the role's metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Timing of the loops.
const (
	resyncEvery   = 10 * time.Second // full pass even without a wake-up
	statusEvery   = 25 * time.Second // status refresh even without a change
	probeReady    = 5 * time.Second  // re-probe of ready containers
	probeTimeout  = 2 * time.Second
	probeHold     = 300 * time.Millisecond // how long a probed connection to the published port must stay open
	probeDirect   = 250 * time.Millisecond // connecting to the container's own address
	probeFirst    = 25 * time.Millisecond  // first retry of a started container not answering yet
	probeStarting = 50 * time.Millisecond  // longest wait between probes until it is first ready
	probeFailures = 3                      // failed probes before ready turns running
	etcdTimeout   = 10 * time.Second
)

// Runtime runs the containers of one node's runtime databag.
type Runtime struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	slugs *slugs
	probe *http.Client
	ports *ports
	// retired keeps the last lines of removed containers (RetiredLines).
	retired *retiredLogs
	// sandboxes keeps the spare network sandboxes (nil: none).
	sandboxes *sandboxes

	wakePass   watch.Waker
	wakeStatus watch.Waker
	wg         sync.WaitGroup

	mu       sync.Mutex
	workers  map[string]*worker  // assigned containers by spec name
	retiring map[string]*worker  // workers cancelled but not yet done, by spec name
	stopping map[string]*stopJob // containers being stopped, by Docker id
	passErr  string
	desired  int
	// prev is the status the node reported before this Run, from which
	// adopted containers keep their readiness; it stands in for the
	// containers until the first pass has listed them.
	prev       map[string]state.ContainerStatus
	prevList   []state.ContainerStatus
	tried      bool // a pass has run (the status may be written)
	dispatched bool // a pass has listed the containers

	reasons map[string]bool // reasons of the last pass, to log only new ones
}

// New checks cfg and returns a Runtime; Run starts it.
func New(cfg Config) (*Runtime, error) {
	if err := state.ValidateName("node", cfg.Node); err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	if net.ParseIP(cfg.Addr) == nil {
		return nil, fmt.Errorf("runtime: node address %q is not an IP address: set --addr to the IP other nodes reach this node on", cfg.Addr)
	}
	switch {
	case cfg.StateDir == "":
		return nil, errors.New("runtime: no state directory: set --state-dir")
	case cfg.Store == nil || cfg.Watcher == nil:
		return nil, errors.New("runtime: no etcd store or watcher in the config")
	case cfg.Docker == nil:
		return nil, errors.New("runtime: no Docker client in the config: use runtime.NewDocker")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Minute,
			Transport: &http.Transport{TLSClientConfig: cfg.SlugTLS, Proxy: http.ProxyFromEnvironment}}
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 30 * time.Second
	}
	if cfg.DefaultMemory == 0 {
		cfg.DefaultMemory = DefaultMemoryBytes
	}
	if cfg.PidsLimit == 0 {
		cfg.PidsLimit = DefaultPidsLimit
	}
	if cfg.MaxSlugBytes < 0 || cfg.MaxSlugEntries < 0 {
		return nil, errors.New("runtime: negative slug limits: set --max-slug-bytes and --max-slug-entries to positive numbers (0: the defaults)")
	}
	if cfg.Resync <= 0 {
		cfg.Resync = resyncEvery
	}
	if cfg.PortRange == (PortRange{}) {
		cfg.PortRange = DefaultPortRange
	}
	if err := cfg.PortRange.validate(); err != nil {
		return nil, fmt.Errorf("runtime: --port-range: %w", err)
	}
	if cfg.SpareSandboxes < 0 {
		return nil, errors.New("runtime: negative --spare-sandboxes: use 0 for none")
	}
	if cfg.SandboxImage == "" {
		cfg.SandboxImage = DefaultSandboxImage
	}
	if cfg.RetiredLines == 0 {
		cfg.RetiredLines = DefaultRetiredLines
	}
	if cfg.RetiredBytes == 0 {
		cfg.RetiredBytes = DefaultRetiredBytes
	}
	lim := slugtar.LimitsFor(cfg.MaxSlugBytes, cfg.MaxSlugEntries)
	lim.EntriesHint = "--max-slug-entries"
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With("node", cfg.Node)
	slugs := newSlugs(filepath.Join(cfg.StateDir, "slugs"), cfg.HTTPClient, lim, m, log)
	slugs.holders = cfg.Store.SlugURLs // the other coordinators that hold a slug
	var sbs *sandboxes
	if cfg.SpareSandboxes > 0 {
		sbs = newSandboxes(cfg.SpareSandboxes)
	}
	return &Runtime{
		sandboxes: sbs,
		cfg:       cfg,
		log:       log,
		m:         m,
		slugs:     slugs,
		ports:     newPorts(cfg.PortRange, cfg.Addr),
		retired:   newRetiredLogs(cfg.RetiredLines, cfg.RetiredBytes),
		probe: &http.Client{
			Timeout:       probeTimeout,
			Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// Run reconciles the node's containers with its runtime databag until ctx
// ends, then returns nil. Containers keep running after it returns; a new
// Runtime adopts them.
func (r *Runtime) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	r.mu.Lock()
	r.workers = map[string]*worker{}
	r.retiring = map[string]*worker{}
	r.stopping = map[string]*stopJob{}
	r.reasons = map[string]bool{}
	r.passErr = ""
	r.tried, r.dispatched = false, false
	r.prev, r.prevList = nil, nil
	r.mu.Unlock()
	r.wakePass = watch.NewWaker()
	r.wakeStatus = make(watch.Waker, 1)
	defer func() {
		cancel()
		r.wg.Wait()
	}()

	key := r.cfg.Store.Keys.Runtime(r.cfg.Node)
	var rev int64
	gctx, gcancel := context.WithTimeout(ctx, etcdTimeout)
	if resp, err := r.cfg.Store.KV.Get(gctx, key); err == nil {
		rev = resp.Header.Revision
	}
	var prev state.NodeStatus
	if _, err := r.cfg.Store.Get(gctx, r.cfg.Store.Keys.NodeStatus(r.cfg.Node), &prev); err == nil {
		r.mu.Lock()
		r.prevList = prev.Containers
		r.prev = map[string]state.ContainerStatus{}
		for _, c := range prev.Containers {
			if c.State != state.StateStopping {
				r.prev[c.Name] = c
			}
		}
		r.mu.Unlock()
	}
	gcancel()
	watch.Prefixes(ctx, r.cfg.Watcher, rev, r.wakePass, key)
	r.wg.Add(2)
	go r.watchDocker(ctx)
	go r.reportLoop(ctx)
	if r.sandboxes != nil {
		r.wg.Add(1)
		go r.sandboxLoop(ctx)
	}
	r.log.Info("runtime started", "addr", r.cfg.Addr, "state_dir", r.cfg.StateDir)

	bo := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	watch.Loop(ctx, r.wakePass, r.cfg.Resync, bo, r.pass, func(err error) {
		r.log.Warn("reconcile failed", "error", err)
	})
	r.log.Info("runtime stopped; containers keep running")
	return nil
}

// pass reads the databag and the node's containers, plans and dispatches
// the tasks. Starts and stops run in their own goroutines.
func (r *Runtime) pass(ctx context.Context) (err error) {
	start := time.Now()
	r.m.reconciles.Inc()
	defer func() {
		r.m.reconcileTime.Observe(time.Since(start).Seconds())
		msg := ""
		if err != nil {
			r.m.reconcileErrors.Inc()
			msg = err.Error()
		}
		r.mu.Lock()
		changed := r.passErr != msg || !r.tried
		r.passErr = msg
		r.tried = true
		r.mu.Unlock()
		if changed {
			r.wakeStatus.Wake()
		}
	}()

	var rt state.Runtime
	gctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	_, err = r.cfg.Store.Get(gctx, r.cfg.Store.Keys.Runtime(r.cfg.Node), &rt)
	cancel()
	if errors.Is(err, state.ErrNotFound) {
		rt, err = state.Runtime{}, nil // nothing assigned (yet)
	}
	if err != nil {
		return fmt.Errorf("runtime: read the runtime databag: %w: check that etcd is reachable", err)
	}

	if err := r.resolveUIDs(ctx, rt.Containers); err != nil {
		return err
	}
	r.pruneRetired(ctx, rt.Containers)

	// Which containers are being stopped is read before listing, so a stop
	// that ends in between leaves a container that is gone or still marked.
	r.mu.Lock()
	stopping := map[string]bool{}
	for id := range r.stopping {
		stopping[id] = true
	}
	r.mu.Unlock()
	containers, err := r.list(ctx)
	if err != nil {
		return err
	}
	for i := range containers {
		containers[i].Stopping = stopping[containers[i].ID]
	}
	tasks := plan(r.profile(), rt.Containers, containers)
	r.dispatch(ctx, rt.Containers, containers, tasks)
	return nil
}

// resolveUIDs sets the uid of every slug spec to its formation's
// (state.AppUID), reading the formation records of the specs that lack
// one. A formation without a record (being destroyed) gets the uid derived
// from its name.
func (r *Runtime) resolveUIDs(ctx context.Context, specs []state.ContainerSpec) error {
	uids := map[string]int{}
	for i := range specs {
		s := &specs[i]
		if s.Slug == nil {
			continue
		}
		if s.UID == 0 {
			uid, ok := uids[s.Formation]
			if !ok {
				var f state.Formation
				gctx, cancel := context.WithTimeout(ctx, etcdTimeout)
				_, err := r.cfg.Store.Get(gctx, r.cfg.Store.Keys.Formation(s.Formation), &f)
				cancel()
				if err != nil && !errors.Is(err, state.ErrNotFound) {
					return fmt.Errorf("runtime: read formation %s for its uid: %w: check that etcd is reachable", s.Formation, err)
				}
				uid = f.UID
				uids[s.Formation] = uid
			}
			s.UID = uid
		}
		s.UID = state.AppUID(s.Formation, s.UID)
	}
	return nil
}

// list returns the Docker containers labelled for this node.
func (r *Runtime) list(ctx context.Context) ([]actual, error) {
	dctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	cs, err := r.cfg.Docker.ContainerList(dctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", labelNode+"="+r.cfg.Node))})
	if err != nil {
		return nil, fmt.Errorf("runtime: list containers: %w: check that Docker is running", err)
	}
	out := make([]actual, 0, len(cs))
	for _, c := range cs {
		if isOneOff(c.Labels) || isSandbox(c.Labels) {
			continue // deisctl run's (the agent API owns them), or a network sandbox
		}
		out = append(out, fromSummary(c))
	}
	return out, nil
}

// dispatch hands every assigned spec to its worker, with its task if any,
// retires the workers of specs no longer assigned and starts the stops.
func (r *Runtime) dispatch(ctx context.Context, desired []state.ContainerSpec, containers []actual, tasks []task) {
	byDocker := map[string]*actual{}
	for i := range containers {
		byDocker[containers[i].Name] = &containers[i]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	specTask := map[string]*task{}
	reasons := map[string]bool{}
	for i := range tasks {
		t := &tasks[i]
		if t.Spec != nil {
			specTask[t.Spec.Name] = t
			if w := r.workers[t.Spec.Name]; w != nil {
				if _, busy := w.status(); busy != "" {
					continue // the worker is on it; the pass saw it half-way
				}
			}
		}
		reasons[t.Reason] = true
		if !r.reasons[t.Reason] {
			r.log.Info("reconcile", "task", string(t.Kind), "reason", t.Reason)
		}
	}
	r.reasons = reasons
	assigned := map[string]bool{}
	for _, s := range desired {
		if assigned[s.Name] {
			continue
		}
		assigned[s.Name] = true
		u := update{spec: s, cur: byDocker[dockerName(r.cfg.Node, s.Name)]}
		if t := specTask[s.Name]; t != nil {
			tc := *t
			u.task = &tc
		}
		w := r.workers[s.Name]
		if w == nil {
			w = r.newWorker(ctx, u)
		}
		w.send(u)
	}
	for name, w := range r.workers {
		if !assigned[name] {
			w.cancel()
			delete(r.workers, name)
			r.retiring[name] = w
		}
	}
	for i := range tasks {
		t := tasks[i]
		if t.Kind != taskStop {
			continue
		}
		if _, ok := r.stopping[t.Container.ID]; ok {
			continue
		}
		j := &stopJob{c: *t.Container, reason: t.Reason}
		r.stopping[t.Container.ID] = j
		r.wg.Add(1)
		go r.stop(ctx, j)
	}
	r.desired = len(assigned)
	r.dispatched = true
	r.prev = nil // only the first workers take their readiness from it
	r.wakeStatus.Wake()
}

// watchDocker wakes the loop on every event of the node's containers.
func (r *Runtime) watchDocker(ctx context.Context) {
	defer r.wg.Done()
	bo := backoff.Backoff{Min: time.Second, Max: 30 * time.Second}
	args := filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("label", labelNode+"="+r.cfg.Node))
	for ctx.Err() == nil {
		ectx, cancel := context.WithCancel(ctx)
		msgs, errs := r.cfg.Docker.Events(ectx, events.ListOptions{Filters: args})
		r.wakePass.Wake() // catch up on what happened while not subscribed
	recv:
		for {
			select {
			case <-ctx.Done():
				break recv
			case m, ok := <-msgs:
				if !ok {
					break recv
				}
				bo.Reset()
				if isSandbox(m.Actor.Attributes) && r.sandboxes != nil {
					r.sandboxes.wake.Wake() // one gone: its container may need replacing
				}
				if !isOneOff(m.Actor.Attributes) && !isSandbox(m.Actor.Attributes) {
					r.pokeWorker(m)
					r.wakePass.Wake()
				}
			case err := <-errs:
				if ctx.Err() == nil {
					r.log.Warn("docker events stream ended, subscribing again", "error", err)
				}
				break recv
			}
		}
		cancel()
		if bo.Wait(ctx) != nil {
			return
		}
	}
}

// pokeWorker hands an event that changes how a container is (it died,
// started, ran out of memory, changed health) to the worker of its spec,
// which inspects it at once: a crash loop shows in the status within a
// moment, even when listing it would show the same state as before.
func (r *Runtime) pokeWorker(m events.Message) {
	switch a := string(m.Action); {
	case a == string(events.ActionDie), a == string(events.ActionStart), a == string(events.ActionRestart),
		a == string(events.ActionOOM), a == string(events.ActionPause), a == string(events.ActionUnPause),
		strings.HasPrefix(a, string(events.ActionHealthStatus)):
	default:
		return
	}
	r.mu.Lock()
	w := r.workers[m.Actor.Attributes[labelName]]
	r.mu.Unlock()
	if w != nil {
		at := time.Now()
		if m.TimeNano > 0 {
			at = time.Unix(0, m.TimeNano)
		}
		w.poke(at)
	}
}

// stopJob is a container being stopped and removed.
type stopJob struct {
	c      actual
	reason string
	err    string // the last failure, guarded by Runtime.mu
}

// stop stops and removes one container, retrying until it is gone.
func (r *Runtime) stop(ctx context.Context, j *stopJob) {
	defer r.wg.Done()
	log := r.log.With("container", j.c.specName(), "id", shortID(j.c.ID))
	log.Info("stopping container", "reason", j.reason, "grace", r.cfg.StopGrace, "drain", r.cfg.DrainDelay)
	if d := r.cfg.DrainDelay; d > 0 && j.c.State == "running" {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return // Run is ending; a later Runtime stops it
		case <-t.C:
		}
	}
	bo := backoff.Backoff{Min: time.Second, Max: 30 * time.Second}
	for {
		err := r.stopAndRemove(ctx, j.c)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return // Run is ending; a later Runtime stops it
		}
		log.Warn("stop failed, will retry", "error", err)
		r.mu.Lock()
		j.err = err.Error()
		r.mu.Unlock()
		r.wakeStatus.Wake()
		if bo.Wait(ctx) != nil {
			return
		}
	}
	log.Info("container stopped and removed")
	r.mu.Lock()
	delete(r.stopping, j.c.ID)
	r.mu.Unlock()
	r.wakeStatus.Wake()
	r.wakePass.Wake()
}

func (r *Runtime) stopAndRemove(ctx context.Context, c actual) error {
	id := c.ID
	secs := int((r.cfg.StopGrace + time.Second - 1) / time.Second)
	sctx, cancel := context.WithTimeout(ctx, r.cfg.StopGrace+dockerTimeout)
	err := r.cfg.Docker.ContainerStop(sctx, id, container.StopOptions{Timeout: &secs})
	cancel()
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("runtime: stop container %s: %w", shortID(id), err)
	}
	r.keepRetired(ctx, c)
	rctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	err = r.cfg.Docker.ContainerRemove(rctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("runtime: remove container %s: %w", shortID(id), err)
	}
	r.removeSandboxOf(ctx, c.Labels)
	return nil
}

// snapshot is the node status as of now, without its Updated time.
func (r *Runtime) snapshot() state.NodeStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := state.NodeStatus{Node: r.cfg.Node, Containers: []state.ContainerStatus{}, Error: r.passErr}
	if !r.dispatched {
		// Nothing listed yet: what was reported before is the best guess.
		st.Containers = append(st.Containers, r.prevList...)
	}
	for _, w := range r.workers {
		cs, pending := w.status()
		st.Containers = append(st.Containers, cs)
		if pending != "" {
			st.Pending = append(st.Pending, pending)
		}
	}
	for _, j := range r.stopping {
		rel, _ := strconv.Atoi(j.c.Labels[labelRelease])
		cs := state.ContainerStatus{Name: j.c.specName(), ID: j.c.ID, Formation: j.c.Labels[labelFormation],
			Release: rel, Type: j.c.Labels[labelType], State: state.StateStopping, Reason: j.reason}
		for _, hp := range j.c.Ports {
			cs.Addr = net.JoinHostPort(r.cfg.Addr, strconv.Itoa(hp))
			break
		}
		if j.err != "" {
			cs.Reason += ": " + j.err
		}
		st.Containers = append(st.Containers, cs)
		st.Pending = append(st.Pending, j.reason)
	}
	sort.Slice(st.Containers, func(i, k int) bool {
		a, b := st.Containers[i], st.Containers[k]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.ID < b.ID
	})
	sort.Strings(st.Pending)
	st.RetiredLogs = r.retired.formations()
	sort.Strings(st.RetiredLogs)
	counts := map[string]int{"desired": r.desired}
	for _, c := range st.Containers {
		counts[c.State]++
	}
	for _, s := range containerStates {
		r.m.containers.WithLabelValues(s).Set(float64(counts[s]))
	}
	return st
}

// reportLoop writes the node status when it changes, and at least every
// statusEvery.
func (r *Runtime) reportLoop(ctx context.Context) {
	defer r.wg.Done()
	key := r.cfg.Store.Keys.NodeStatus(r.cfg.Node)
	var (
		last      string
		lastWrite time.Time
		retryAt   time.Time
		bo        = backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	)
	timer := time.NewTimer(statusEvery)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wakeStatus:
			if time.Now().Before(retryAt) {
				continue // the timer retries the failed write
			}
		case <-timer.C:
		}
		r.mu.Lock()
		tried := r.tried
		r.mu.Unlock()
		if !tried {
			timer.Reset(time.Second) // no pass has run yet; the first one wakes us
			continue
		}
		st := r.snapshot()
		content := state.Marshal(st)
		if content == last && time.Since(lastWrite) < statusEvery {
			timer.Reset(statusEvery - time.Since(lastWrite))
			continue
		}
		st.Updated = time.Now().UTC()
		pctx, cancel := context.WithTimeout(ctx, etcdTimeout)
		err := r.cfg.Store.Put(pctx, key, st)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d := bo.Next()
			r.log.Warn("status write failed, will retry", "error", err, "retry_in", d)
			retryAt = time.Now().Add(d)
			timer.Reset(d)
			continue
		}
		bo.Reset()
		retryAt = time.Time{}
		last, lastWrite = content, time.Now()
		r.log.Debug("status written", "containers", len(st.Containers))
		timer.Reset(statusEvery)
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
