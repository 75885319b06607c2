package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/state"
	"github.com/docker/docker/api/types/container"
)

// update is the latest word of the reconcile loop to one worker.
type update struct {
	spec state.ContainerSpec
	cur  *actual // the container with the spec's Docker name, as listed; nil if none
	task *task   // what plan says to do; nil: adopt cur as it is
}

// worker owns the container of one spec: it runs the plan's tasks for it
// (keeping only the latest) and probes it. One worker per assigned spec, so
// a slow start never holds up another container.
type worker struct {
	r       *Runtime
	name    string // spec name
	dname   string // Docker name
	prev    *worker
	updates chan update
	// pokes says Docker reported an event of the container (it died,
	// started, restarted, ran out of memory, changed health): look again.
	pokes chan struct{}
	// pokedAt is the Docker time (UnixNano) of the latest poke's event.
	pokedAt atomic.Int64
	cancel  context.CancelFunc
	done    chan struct{}
	log     *slog.Logger

	// Loop state, owned by the worker goroutine.
	u     update
	cur   *actual // the container as last seen
	stale bool    // a poke came: inspect the container, whatever the listing says
	// inspectedAt is when the worker last inspected its container: a poke
	// for an event before it tells nothing new.
	inspectedAt time.Time
	ready       bool
	fails       int
	errBo       backoff.Backoff
	probeBo     backoff.Backoff
	// After a failed task, the same task waits until retryAt even when the
	// reconcile loop sends it again meanwhile.
	retryAt  time.Time
	failedAs string
	// startedAt is when this worker started its container, until the
	// container is first ready (for deis_agent_health_ready_seconds).
	startedAt time.Time
	probedVia string // how the last probe reached the container

	mu      sync.Mutex
	st      state.ContainerStatus
	pending string // reason of the task in progress
}

// newWorker starts the worker of a spec, given its first update. Called
// with r.mu held.
func (r *Runtime) newWorker(ctx context.Context, u update) *worker {
	name := u.spec.Name
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{
		r: r, name: name, dname: dockerName(r.cfg.Node, name),
		prev:    r.retiring[name],
		updates: make(chan update, 1),
		pokes:   make(chan struct{}, 1),
		cancel:  cancel,
		done:    make(chan struct{}),
		log:     r.log.With("container", name),
		errBo:   backoff.Backoff{Min: time.Second, Max: time.Minute},
		probeBo: backoff.Backoff{Min: probeFirst, Max: probeStarting},
	}
	w.describe(&w.st, u.spec)
	switch c := u.cur; {
	case u.task != nil:
		w.st.State, w.st.Reason, w.pending = state.StateStarting, u.task.Reason, u.task.Reason
	case c != nil && c.State == "running":
		// Adopted. If the last Run reported this very container ready,
		// it stays ready until probes say otherwise.
		w.log.Info("adopting running container", "formation", u.spec.Formation, "release", u.spec.Release, "id", shortID(c.ID))
		w.st.ID, w.st.State = c.ID, state.StateRunning
		if hp := c.Ports[u.spec.Port]; hp > 0 {
			w.st.Addr = net.JoinHostPort(r.cfg.Addr, strconv.Itoa(hp))
		}
		if p, ok := r.prev[name]; ok && p.ID == c.ID && p.State == state.StateReady && p.Addr == w.st.Addr {
			w.st.State, w.st.Started, w.ready = state.StateReady, p.Started, true
			cp := *c
			cp.Started = p.Started
			w.cur = &cp
		}
	default:
		w.st.State = state.StateStarting
	}
	r.workers[name] = w
	r.wg.Add(1)
	go w.run(wctx)
	return w
}

// send replaces any update the worker has not taken yet. Only the reconcile
// loop sends, so this never blocks.
func (w *worker) send(u update) {
	select {
	case <-w.updates:
	default:
	}
	w.updates <- u
}

// poke asks the worker to inspect its container again at once, for an
// event at the Docker time at. It never blocks: pokes not taken yet count
// as one.
func (w *worker) poke(at time.Time) {
	for {
		prev := w.pokedAt.Load()
		if at.UnixNano() <= prev || w.pokedAt.CompareAndSwap(prev, at.UnixNano()) {
			break
		}
	}
	select {
	case w.pokes <- struct{}{}:
	default:
	}
}

// status is the worker's container status and the reason of the task in
// progress ("" if none).
func (w *worker) status() (state.ContainerStatus, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st, w.pending
}

func (w *worker) setStatus(fn func(st *state.ContainerStatus, pending *string)) {
	w.mu.Lock()
	before, pb := w.st, w.pending
	fn(&w.st, &w.pending)
	changed := before != w.st || pb != w.pending
	w.mu.Unlock()
	if changed {
		w.r.wakeStatus.Wake()
	}
}

func (w *worker) run(ctx context.Context) {
	defer w.r.wg.Done()
	defer func() {
		w.r.mu.Lock()
		if w.r.retiring[w.name] == w {
			delete(w.r.retiring, w.name)
		}
		w.r.mu.Unlock()
		close(w.done)
	}()
	if w.prev != nil { // the last worker of this name must let go first
		select {
		case <-w.prev.done:
		case <-ctx.Done():
			return
		}
		w.prev = nil
	}
	select {
	case w.u = <-w.updates:
	case <-ctx.Done():
		return
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		delay := w.step(ctx)
		if ctx.Err() != nil {
			return
		}
		timer.Reset(delay)
		select {
		case <-ctx.Done():
			return
		case w.u = <-w.updates:
		case <-w.pokes:
			// Only an event after the last inspect tells something new
			// (the start of a container the worker just started does not).
			w.stale = w.pokedAt.Load() >= w.inspectedAt.UnixNano()
		case <-timer.C:
		}
	}
}

// step runs the pending task, if any, then looks at the container, probes
// it and returns when to look again.
func (w *worker) step(ctx context.Context) time.Duration {
	spec := w.u.spec
	inspected := false // w.u.cur was inspected just now
	if t := w.u.task; t != nil {
		attempt := t.Reason + "\n" + specHash(w.r.profile(), spec)
		if attempt == w.failedAs && time.Now().Before(w.retryAt) {
			return time.Until(w.retryAt)
		}
		c, err := w.attempt(ctx, spec)
		if ctx.Err() != nil {
			return 0
		}
		if err != nil {
			d := w.errBo.Next()
			w.failedAs, w.retryAt = attempt, time.Now().Add(d)
			w.log.Warn("container start failed, will retry", "formation", spec.Formation, "release", spec.Release,
				"reason", t.Reason, "error", err, "retry_in", d.Round(time.Millisecond))
			w.setStatus(func(st *state.ContainerStatus, _ *string) {
				w.describe(st, spec)
				st.State, st.Addr, st.ID = state.StateStarting, "", ""
				st.Reason = t.Reason + ": " + err.Error()
			})
			return d
		}
		w.errBo.Reset()
		w.failedAs, w.retryAt = "", time.Time{}
		w.u.task, w.u.cur = nil, c
		inspected = c != nil
		w.setStatus(func(_ *state.ContainerStatus, pending *string) { *pending = "" })
	}
	c := w.u.cur
	if c == nil { // only with a task; nothing to look at until the next update
		return time.Hour
	}
	changed := w.differs(c, spec.Port)
	if changed || w.stale {
		// A container new to this worker, one Docker restarted, or one
		// Docker told of (a poke): look closer. A change earns readiness
		// again.
		if inspected {
			// attempt's own inspect: no second round trip to Docker
		} else if fresh, err := w.inspect(ctx, c.ID); err == nil && fresh != nil {
			c = fresh
			changed = w.differs(c, spec.Port) || (w.cur.Restarts != c.Restarts || !w.cur.Started.Equal(c.Started))
		}
	}
	w.stale = false
	if changed {
		w.ready, w.fails = false, 0
		w.probeBo.Reset()
	} else {
		// A listed container lacks what only an inspect tells.
		if c.Started.IsZero() {
			c.Started, c.Restarts = w.cur.Started, w.cur.Restarts
		}
		if c.IP == "" {
			c.IP = w.cur.IP
		}
	}
	w.cur, w.u.cur = c, c

	addr := ""
	if hp := c.Ports[spec.Port]; hp > 0 {
		addr = net.JoinHostPort(w.r.cfg.Addr, strconv.Itoa(hp))
	}
	st, reason, delay := state.StateRunning, "", probeReady
	switch {
	case c.State == "running" && spec.Port == 0:
		w.ready = true // nothing to probe
	case c.State == "running" && addr == "":
		reason = fmt.Sprintf("port %d is not published", spec.Port)
	case c.State == "running":
		direct := ""
		if c.IP != "" {
			direct = net.JoinHostPort(c.IP, strconv.Itoa(spec.Port))
		}
		via, err := w.r.probeOnce(ctx, addr, direct, spec.HealthPath)
		if via != w.probedVia {
			w.log.Debug("probing", "via", via)
			w.probedVia = via
		}
		switch {
		case err == nil:
			if !w.ready {
				w.log.Info("container ready", "formation", spec.Formation, "release", spec.Release, "addr", addr)
				if !w.startedAt.IsZero() {
					w.r.m.readyTime.Observe(time.Since(w.startedAt).Seconds())
					w.startedAt = time.Time{}
				}
			}
			w.ready, w.fails = true, 0
			w.probeBo.Reset()
			delay = backoff.Jitter(probeReady)
		case w.ready:
			w.fails++
			if w.fails >= probeFailures {
				w.ready = false
				w.log.Warn("container no longer ready", "formation", spec.Formation, "release", spec.Release, "error", err)
			}
			delay = time.Second
			reason = "probe failed: " + err.Error()
		default:
			delay = w.probeBo.Next()
			reason = "not answering yet: " + err.Error()
		}
		if w.ready {
			st = state.StateReady
			if w.fails == 0 {
				reason = ""
			}
		}
		if reason == "" && c.Labels[labelConfinement] != confinementHash(w.r.profile(), spec) {
			reason = outdatedConfinement(spec.Formation)
		}
	case c.State == "paused":
		w.ready = false
		reason = "paused"
	default: // restarting, exited, dead: Docker or the next pass acts
		w.ready = false
		st, reason = state.StateExited, c.Status
	}
	w.setStatus(func(cs *state.ContainerStatus, _ *string) {
		w.describe(cs, spec)
		cs.ID, cs.State, cs.Addr, cs.Reason, cs.Started, cs.Restarts = c.ID, st, addr, reason, c.Started, c.Restarts
	})
	return delay
}

// differs reports whether c is another container than the one last seen,
// or in another state, or published on another port.
func (w *worker) differs(c *actual, port int) bool {
	return w.cur == nil || w.cur.ID != c.ID || w.cur.State != c.State || w.cur.Ports[port] != c.Ports[port]
}

// describe fills the spec's part of a status.
func (w *worker) describe(st *state.ContainerStatus, spec state.ContainerSpec) {
	st.Name, st.Formation, st.Release, st.Type = spec.Name, spec.Formation, spec.Release, spec.Type
}

// attempt brings the spec's container about. It looks again at what holds
// the name, since the plan may be stale (a pass that listed the containers
// while this worker was starting one), and adopts it if it fits; only
// otherwise does it report the container starting and execute the task.
func (w *worker) attempt(ctx context.Context, spec state.ContainerSpec) (*actual, error) {
	r := w.r
	fresh, err := w.inspect(ctx, w.dname)
	if err != nil {
		return nil, err
	}
	if fresh != nil {
		r.mu.Lock()
		_, fresh.Stopping = r.stopping[fresh.ID]
		r.mu.Unlock()
	}
	t := planOne(r.profile(), &spec, fresh)
	if t == nil {
		if w.cur == nil || w.cur.ID != fresh.ID {
			w.log.Info("adopting container", "id", shortID(fresh.ID))
		}
		return fresh, nil
	}
	w.setStatus(func(st *state.ContainerStatus, pending *string) {
		w.describe(st, spec)
		st.State, st.Reason, st.Addr, st.ID = state.StateStarting, t.Reason, "", ""
		*pending = t.Reason
	})
	return w.execute(ctx, spec, fresh, t)
}

// execute gets the slug (or loads the image from its archive), removes
// the container in the way (fresh, if any), and creates and starts the
// spec's container.
func (w *worker) execute(ctx context.Context, spec state.ContainerSpec, fresh *actual, t *task) (*actual, error) {
	r := w.r
	var err error
	slug := ""
	if spec.Slug != nil {
		if slug, err = r.slugs.ensure(ctx, spec.SlugURL, *spec.Slug); err != nil {
			return nil, err
		}
	}
	if err := r.ensureImage(ctx, spec); err != nil {
		return nil, err
	}
	if fresh != nil {
		w.log.Info("removing container", "id", shortID(fresh.ID), "reason", t.Reason)
		r.keepRetired(ctx, *fresh)
		rctx, cancel := context.WithTimeout(ctx, dockerTimeout)
		err := r.cfg.Docker.ContainerRemove(rctx, fresh.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		cancel()
		if err != nil && !isNotFound(err) {
			return nil, fmt.Errorf("runtime: remove container %s in the way: %w", shortID(fresh.ID), err)
		}
		r.removeSandboxOf(ctx, fresh.Labels)
	}
	if slug != "" {
		if _, err := os.Stat(slug); err != nil { // removed by hand meanwhile?
			return nil, fmt.Errorf("runtime: slug directory: %w", err)
		}
	}
	cfg, hc := containerConfig(r.profile(), spec, slug)
	start := time.Now()
	w.log.Debug("creating container", "formation", spec.Formation, "release", spec.Release)
	var id string
	if sb, ok := r.takeSandbox(spec); ok {
		// The spare's network is ready: only the container starts.
		joinSandbox(cfg, hc, sb)
		id, _, err = r.createPublished(ctx, cfg, hc, w.dname, "", func(err error) error { return dockerHint(err, spec) })
		r.sandboxes.done(sb.ID)
		if err == nil {
			r.m.starts.WithLabelValues("sandbox").Inc()
		}
	} else {
		id, err = r.createAndStart(ctx, spec, cfg, hc, w.dname)
		if err == nil {
			r.m.starts.WithLabelValues("own").Inc()
		}
	}
	if err != nil {
		return nil, err
	}
	r.m.startTime.Observe(time.Since(start).Seconds())
	w.startedAt = time.Now()
	w.log.Debug("container start returned", "formation", spec.Formation, "release", spec.Release, "id", shortID(id))
	c, err := w.inspect(ctx, id)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, fmt.Errorf("runtime: container %s vanished right after it started", w.dname)
	}
	w.log.Info("container started", "formation", spec.Formation, "release", spec.Release, "id", shortID(c.ID))
	return c, nil
}

// inspect looks up a container by id or name; nil if there is none.
func (w *worker) inspect(ctx context.Context, ref string) (*actual, error) {
	ictx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	asked := time.Now()
	c, err := w.r.cfg.Docker.ContainerInspect(ictx, ref)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("runtime: inspect container %s: %w", ref, err)
	}
	w.inspectedAt = asked // an event after it may be missing from the answer
	a := fromInspect(c)
	a.IP = containerIP(c, w.r.cfg.Network)
	if sb := a.Labels[labelSandboxID]; sb != "" && a.IP == "" {
		// It joined a sandbox: the address is the sandbox's.
		if s, err := w.r.cfg.Docker.ContainerInspect(ictx, sb); err == nil {
			a.IP = containerIP(s, w.r.cfg.Network)
		}
	}
	return &a, nil
}

// containerIP is the container's IPv4 address on network ("": the
// engine's default bridge), or on its only network; "" if unknown.
func containerIP(c container.InspectResponse, network string) string {
	if c.NetworkSettings == nil {
		return ""
	}
	if network == "" {
		network = "bridge"
	}
	if n := c.NetworkSettings.Networks[network]; n != nil && n.IPAddress != "" {
		return n.IPAddress
	}
	if len(c.NetworkSettings.Networks) == 1 {
		for _, n := range c.NetworkSettings.Networks {
			if n != nil {
				return n.IPAddress
			}
		}
	}
	return ""
}

// probeOnce checks that a container answers on addr, its published port.
// With healthPath, GET must answer 2xx or 3xx. Without, when direct (the
// container's own address and port) is given and reachable, a connection
// to it must be accepted: that proves a listener at once, since the host
// reaches its containers (the guard refuses only connections from them).
// Otherwise a TCP connection to addr must be accepted and kept open for
// a moment: Docker's port proxy accepts every connection and closes it at
// once when nothing listens in the container.
func (r *Runtime) probeOnce(ctx context.Context, addr, direct, healthPath string) (via string, err error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if healthPath != "" {
		if !strings.HasPrefix(healthPath, "/") {
			healthPath = "/" + healthPath
		}
		via = "GET " + addr + healthPath
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+healthPath, nil)
		if err != nil {
			return via, fmt.Errorf("health check path %q: %w", healthPath, err)
		}
		resp, err := r.probe.Do(req)
		if err != nil {
			return via, fmt.Errorf("GET %s: %s", healthPath, probeError(err))
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return via, fmt.Errorf("GET %s answered %s", healthPath, resp.Status)
		}
		return via, nil
	}
	var d net.Dialer
	if direct != "" {
		dctx, dcancel := context.WithTimeout(ctx, probeDirect)
		conn, err := d.DialContext(dctx, "tcp", direct)
		dcancel()
		if err == nil {
			conn.Close()
			return "connect " + direct, nil
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return "connect " + direct, fmt.Errorf("connect to %s: nothing listens in the container yet", addr)
		}
		// Not reachable from here (another network namespace, a rule):
		// the published port decides.
	}
	via = "connect and hold " + addr
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return via, fmt.Errorf("connect to %s: %s", addr, probeError(err))
	}
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(probeHold)); err != nil {
		return via, err
	}
	var b [1]byte
	_, err = conn.Read(b[:])
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		return via, nil // it spoke first, or it waits for a request: someone listens
	}
	return via, fmt.Errorf("connection to %s closed at once: nothing listens in the container yet", addr)
}

// probeError says what went wrong in words that do not change from one
// probe to the next (no ephemeral ports), so a failing probe does not
// change the node status each time.
func probeError(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	}
	return err.Error()
}
