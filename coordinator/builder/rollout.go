package builder

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/watch"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DeployWaitKey is the config var that turns a formation's push wait off
// (DEPLOY_WAIT=false): the push then ends once the release is written.
const DeployWaitKey = "DEPLOY_WAIT"

// DefaultBootTimeout is the scheduler's default boot timeout, which bounds
// a push's wait for its rollout when Config.BootTimeout is zero.
const DefaultBootTimeout = 60 * time.Second

// rolloutMargin is how long a push waits beyond the boot timeout: the
// scheduler marks a release failed once the boot timeout has passed since
// it was written, and its next pass may come a little later.
const rolloutMargin = 20 * time.Second

// waitOff reports whether the push should not wait for rel's rollout, and
// why.
func (b *Builder) waitOff(rel *state.Release) (string, bool) {
	if b.cfg.NoPushWait {
		return "deis-coordinator --push-wait=false", true
	}
	if v, ok := rel.Config[DeployWaitKey]; ok {
		if on, err := strconv.ParseBool(strings.TrimSpace(v)); err == nil && !on {
			return DeployWaitKey + "=" + v, true
		}
	}
	return "", false
}

// rolloutView is what a push reads of its release's rollout.
type rolloutView struct {
	failed *state.ReleaseStatus // the release marked failed, if it is
	newest *state.Release       // the formation's newest release
	// expected is how many containers of each process type the scale asks for.
	expected map[string]int
	// up maps the containers of the release that are up (web: ready,
	// others: running or ready), by dyno name ("web.1"), to their node.
	up map[string]string
	// down says how each expected container that is not up is, by dyno name.
	down map[string]string
	// routing is the formation's routing databag and its revision.
	routing    *state.Routing
	routingRev int64
	// proxies are the live proxy nodes of the formation; acks the routing
	// revision each has applied.
	proxies []string
	acks    map[string]int64
}

// rolloutVerdict is where a rollout stands.
type rolloutVerdict struct {
	live             bool
	switched, total  int // proxies that route by the release, of all
	routed           bool
	upCount, wantAll int
}

// assess says where the rollout of release v stands: live once every
// container the scale asks for is up and, when it has web containers,
// the routing databag routes to all of them and every live proxy of the
// formation has applied it.
func assess(v int, view *rolloutView) rolloutVerdict {
	var r rolloutVerdict
	for t, n := range view.expected {
		r.wantAll += n
		have := 0
		for name := range view.up {
			if typ, _, _ := strings.Cut(name, "."); typ == t {
				have++
			}
		}
		r.upCount += min(have, n)
	}
	allUp := r.upCount == r.wantAll
	r.total = len(view.proxies)
	if view.expected["web"] == 0 {
		r.live, r.routed = allUp, true
		return r
	}
	if rt := view.routing; rt != nil && rt.Release == v {
		n := 0
		for _, u := range rt.Upstreams {
			if u.Release == v {
				n++
			}
		}
		r.routed = n >= view.expected["web"]
	}
	if r.routed {
		for _, p := range view.proxies {
			if view.acks[p] >= view.routingRev {
				r.switched++
			}
		}
	}
	r.live = allUp && r.routed && r.switched == r.total
	return r
}

// dynoName is the short name of a container ("web.1") from its platform
// name ("hello.v3.web.1" or "hello.v3.web.1.r2").
func dynoName(f string, v int, name string) string {
	return strings.TrimPrefix(name, fmt.Sprintf("%s.v%d.", f, v))
}

// readRollout reads the rollout of rel as it stands.
func (b *Builder) readRollout(ctx context.Context, rel *state.Release) (*rolloutView, error) {
	s, f, v := b.cfg.Store, rel.Formation, rel.Version
	k := s.Keys
	view := &rolloutView{up: map[string]string{}, down: map[string]string{}, acks: map[string]int64{}}
	var st state.ReleaseStatus
	if _, err := s.Get(ctx, k.ReleaseStatus(f, v), &st); err == nil && st.Failed {
		view.failed = &st
	} else if err != nil && !errors.Is(err, state.ErrNotFound) {
		return nil, err
	}
	newest, err := s.LatestRelease(ctx, f)
	if err != nil {
		return nil, err
	}
	view.newest = newest
	form, _, err := s.GetFormation(ctx, f)
	if err != nil {
		return nil, err
	}
	view.expected = form.EffectiveScale(rel.Build.ProcessTypes)

	hb, err := s.KV.Get(ctx, k.Heartbeats(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	alive := map[string]bool{}
	for _, kv := range hb.Kvs {
		alive[state.Base(string(kv.Key))] = true
	}
	statuses, _, err := state.List[state.NodeStatus](ctx, s.KV, k.NodeStatuses())
	if err != nil {
		return nil, err
	}
	for _, e := range statuses {
		node := state.Base(e.Key)
		if !alive[node] {
			continue
		}
		for _, c := range e.Value.Containers {
			if c.Formation != f || c.Release != v {
				continue
			}
			name := dynoName(f, v, c.Name)
			up := c.State == state.StateReady || (c.Type != "web" && c.State == state.StateRunning)
			if up {
				view.up[name] = node
				delete(view.down, name)
			} else if _, ok := view.up[name]; !ok {
				how := c.State + " on " + node
				if c.Reason != "" {
					how += " (" + c.Reason + ")"
				}
				view.down[name] = how
			}
		}
	}
	var routing state.Routing
	rev, err := s.Get(ctx, k.Routing(f), &routing)
	switch {
	case err == nil:
		view.routing, view.routingRev = &routing, rev
	case !errors.Is(err, state.ErrNotFound):
		return nil, err
	}
	layers, _, err := state.List[state.Layer](ctx, s.KV, k.Layers(f))
	if err != nil {
		return nil, err
	}
	nodes, _, err := state.List[state.Node](ctx, s.KV, k.Nodes())
	if err != nil {
		return nil, err
	}
	proxies := map[string]bool{}
	for _, l := range layers {
		if l.Value.Type != state.LayerProxy {
			continue
		}
		for _, n := range nodes {
			if alive[n.Value.Name] && l.Value.Matches(&n.Value) {
				proxies[n.Value.Name] = true
			}
		}
	}
	view.proxies = slices.Sorted(maps.Keys(proxies))
	for _, p := range view.proxies {
		var a state.ProxyAck
		if _, err := s.Get(ctx, k.ProxyAck(f, p), &a); err == nil {
			view.acks[p] = a.Revision
		} else if !errors.Is(err, state.ErrNotFound) {
			return nil, err
		}
	}
	return view, nil
}

// notLive says which containers of the release are not up, and how.
func notLive(view *rolloutView) string {
	var parts []string
	for _, t := range slices.Sorted(maps.Keys(view.expected)) {
		for i := 1; i <= view.expected[t]; i++ {
			name := t + "." + strconv.Itoa(i)
			if _, ok := view.up[name]; ok {
				continue
			}
			if how, ok := view.down[name]; ok {
				parts = append(parts, name+" "+how)
			} else {
				parts = append(parts, name+" not started")
			}
		}
	}
	if len(parts) == 0 {
		return "its containers are up, but not every proxy routes to them"
	}
	return strings.Join(parts, "; ")
}

// RolloutError is the error of a push whose release did not go live.
type RolloutError struct {
	Version int
	Reason  string
}

func (e *RolloutError) Error() string {
	return "builder: " + e.Reason + ": the push is refused and the branch not updated (the release before it, if any, keeps serving): fix the app and push again"
}

// awaitRollout waits until release rel is live, printing each container
// that comes up and the proxies that switch, and returns an error with the
// reason when the release fails (the scheduler marks it failed: health
// checks, boot timeout) or does not go live within the boot timeout and a
// margin. It wakes on etcd watches only.
func (b *Builder) awaitRollout(ctx context.Context, rel *state.Release, con *console) error {
	f, v := rel.Formation, rel.Version
	if why, off := b.waitOff(rel); off {
		con.Printf("-----> Not waiting for v%d to roll out (%s): deisctl status -f %s follows it", v, why, f)
		return nil
	}
	limit := b.cfg.BootTimeout + b.margin
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	// Read once for the revision to watch from, so that no change between
	// the first read and the watches is missed.
	resp, err := b.cfg.Store.KV.Get(wctx, b.cfg.Store.Keys.ReleaseStatus(f, v))
	if err != nil {
		return fmt.Errorf("builder: v%d is released, but its rollout cannot be followed: %w: deisctl status -f %s", v, err, f)
	}
	k := b.cfg.Store.Keys
	wake := watch.NewWaker()
	watch.Prefixes(wctx, b.cfg.Watcher, resp.Header.Revision, wake,
		k.ReleaseStatuses(f), k.Releases(f), k.Formation(f), k.NodeStatuses(), k.Heartbeats(),
		k.Routing(f), k.AllProxyAcks(), k.Layers(f), k.Nodes())

	con.Printf("-----> Waiting for v%d to roll out", v)
	con.Flush()
	start := rel.Created
	if start.IsZero() || time.Since(start) < 0 {
		start = time.Now()
	}
	printed := map[string]bool{}
	lastSwitched := -1
	var view *rolloutView
	var bo backoff.Backoff
	retry := make(chan struct{}, 1)
	for {
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return fmt.Errorf("builder: stopped waiting for v%d: %w", v, ctx.Err())
			}
			return b.timedOut(rel, view, limit, con)
		case <-wake:
		case <-retry:
		}
		var err error
		view, err = b.readRollout(wctx, rel)
		if err != nil {
			if wctx.Err() == nil {
				b.cfg.Logger.Warn("cannot read the rollout", "formation", f, "release", v, "error", err)
				go func() {
					if bo.Wait(wctx) == nil {
						select {
						case retry <- struct{}{}:
						default:
						}
					}
				}()
			}
			continue
		}
		bo.Reset()
		for _, name := range slices.Sorted(maps.Keys(view.up)) {
			if !printed[name] {
				printed[name] = true
				how := "up"
				if strings.HasPrefix(name, "web.") {
					how = "ready"
				}
				con.Printf("       %s %s on %s", name, how, view.up[name])
			}
		}
		if view.failed != nil {
			return &RolloutError{Version: v, Reason: fmt.Sprintf("v%d failed: %s", v, view.failed.Reason)}
		}
		if n := view.newest; n != nil && n.Version > v {
			if n.Build != nil && rel.Build != nil && n.Build.ID == rel.Build.ID {
				con.Printf("-----> v%d (%s) replaced v%d with the same build; waiting for v%d", n.Version, n.Description, v, n.Version)
				cancel()
				return b.awaitRollout(ctx, n, con)
			}
			return &RolloutError{Version: v, Reason: fmt.Sprintf("v%d (%s) replaced v%d before it went live, so the pushed build does not run", n.Version, n.Description, v)}
		}
		r := assess(v, view)
		if r.routed && r.switched > 0 && r.switched != lastSwitched {
			lastSwitched = r.switched
			con.Printf("       proxies switched: %d/%d", r.switched, r.total)
		}
		con.Flush()
		if r.live {
			con.Printf("-----> v%d is live (%.1fs)", v, time.Since(start).Seconds())
			return nil
		}
	}
}

// timedOut ends a wait that reached its limit: a release the proxies
// already route to is live (a proxy that has not applied it is named); any
// other is reported with what its containers are doing.
func (b *Builder) timedOut(rel *state.Release, view *rolloutView, limit time.Duration, con *console) error {
	f, v := rel.Formation, rel.Version
	if view == nil {
		return &RolloutError{Version: v, Reason: fmt.Sprintf("v%d did not roll out within %s, and its state could not be read: deisctl status -f %s", v, limit, f)}
	}
	r := assess(v, view)
	if r.routed && r.upCount == r.wantAll {
		var behind []string
		for _, p := range view.proxies {
			if view.acks[p] < view.routingRev {
				behind = append(behind, p)
			}
		}
		con.Printf(" !     v%d is routed, but proxies %s have not applied it within %s: deisctl status -f %s", v, strings.Join(behind, ", "), limit, f)
		con.Printf("-----> v%d is live", v)
		return nil
	}
	return &RolloutError{Version: v, Reason: fmt.Sprintf("v%d did not go live within %s: %s (is a coordinator leading? deisctl status -f %s)", v, limit, notLive(view), f)}
}
