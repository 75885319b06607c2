package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// RollbackPolicy says when the scheduler rolls a live release back on its
// own. A zero Window turns automatic rollback off.
type RollbackPolicy struct {
	// Window is how long after a release went live it is watched
	// (deis-coordinator --rollback-window, default 5m).
	Window time.Duration
	// Restarts is how often one container of the release may be restarted
	// by Docker before the release counts as crash-looping (default 3).
	Restarts int
	// UnhealthyShare is the share of the release's web containers that
	// must fail their health checks (or have exited) for a rollback: more
	// than it (default 0.5, "most").
	UnhealthyShare float64
	// ErrorShare is the share of 5xx answers at the proxies, of at least
	// MinRequests answers over the proxies' window, from which the release
	// is rolled back (defaults 0.5 and 20).
	ErrorShare  float64
	MinRequests int64
}

// DefaultRollbackPolicy is the policy of a coordinator started without
// rollback flags.
var DefaultRollbackPolicy = RollbackPolicy{Window: 5 * time.Minute, Restarts: 3, UnhealthyShare: 0.5, ErrorShare: 0.5, MinRequests: 20}

// Validate checks the policy's values, with errors that name the flag.
func (p RollbackPolicy) Validate() error {
	switch {
	case p.Window < 0:
		return fmt.Errorf("invalid --rollback-window %s: use a duration of 0 (off) or more, like 5m", p.Window)
	case p.Restarts < 1:
		return fmt.Errorf("invalid --rollback-restarts %d: use a count of 1 or more", p.Restarts)
	case p.UnhealthyShare <= 0 || p.UnhealthyShare >= 1:
		return fmt.Errorf("invalid --rollback-unhealthy-share %g: use a share between 0 and 1, like 0.5", p.UnhealthyShare)
	case p.ErrorShare <= 0 || p.ErrorShare > 1:
		return fmt.Errorf("invalid --rollback-error-share %g: use a share above 0 and at most 1, like 0.5", p.ErrorShare)
	case p.MinRequests < 1:
		return fmt.Errorf("invalid --rollback-min-requests %d: use a count of 1 or more", p.MinRequests)
	}
	return nil
}

// Rollback reasons: the only label values of
// deis_coordinator_auto_rollbacks_total.
const (
	ReasonCrashLoop = "crash_loop"
	ReasonHealth    = "health_checks"
	ReasonErrors    = "errors"
)

// RollbackInput is what the rollback decision reads for one formation.
type RollbackInput struct {
	Formation *state.Formation
	// Current is the formation's current release.
	Current *state.Release
	// Statuses holds the release statuses by version.
	Statuses map[int]state.ReleaseStatus
	// Containers are the statuses of the current release's containers, as
	// live agents report them.
	Containers []state.ContainerStatus
	// Traffic holds the reports of the formation's live proxies.
	Traffic []state.TrafficReport
	Now     time.Time
}

// RollbackDecision is a release to roll back: to Target, for Reason (one of
// the Reason constants), described by Why.
type RollbackDecision struct {
	Bad    int
	Target int
	Reason string
	Why    string
}

// DecideRollback is the pure rule of automatic rollback. It returns nil,
// and why not, unless the current release went live less than the policy's
// window ago, is not itself an automatic rollback, and crash-loops, fails
// its health checks on most web containers or answers 5xx to at least the
// policy's share of requests; and a good release (one that went live and
// did not fail) older than it exists to roll back to.
func DecideRollback(p RollbackPolicy, in RollbackInput) (*RollbackDecision, string) {
	rel := in.Current
	switch {
	case p.Window <= 0:
		return nil, "automatic rollback is off on this coordinator"
	case in.Formation == nil || rel == nil:
		return nil, "no release"
	case in.Formation.AutoRollbackOff:
		return nil, "automatic rollback is off for the formation"
	case rel.AutoRollbackFrom != 0:
		return nil, fmt.Sprintf("v%d is an automatic rollback itself", rel.Version)
	}
	st := in.Statuses[rel.Version]
	switch {
	case st.Failed:
		return nil, fmt.Sprintf("v%d failed already", rel.Version)
	case st.LiveAt.IsZero():
		return nil, fmt.Sprintf("v%d has not gone live", rel.Version)
	case in.Now.Sub(st.LiveAt) > p.Window:
		return nil, fmt.Sprintf("v%d went live more than %s ago", rel.Version, p.Window)
	}
	reason, why := badRelease(p, in)
	if reason == "" {
		return nil, fmt.Sprintf("v%d looks healthy", rel.Version)
	}
	target := 0
	for v, s := range in.Statuses {
		if v < rel.Version && v > target && !s.Failed && !s.LiveAt.IsZero() {
			target = v
		}
	}
	if target == 0 {
		return nil, fmt.Sprintf("v%d is bad (%s) but no earlier release went live without failing", rel.Version, why)
	}
	return &RollbackDecision{Bad: rel.Version, Target: target, Reason: reason, Why: why}, ""
}

// badRelease says whether and why the current release is bad.
func badRelease(p RollbackPolicy, in RollbackInput) (string, string) {
	v := in.Current.Version
	restarts := p.Restarts
	if restarts <= 0 {
		restarts = DefaultRollbackPolicy.Restarts
	}
	web, unhealthy := 0, 0
	cs := append([]state.ContainerStatus(nil), in.Containers...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
	for _, c := range cs {
		if c.Release != v || c.Formation != in.Formation.Name {
			continue
		}
		if c.Restarts >= restarts {
			return ReasonCrashLoop, fmt.Sprintf("crash loop: %s restarted %d times", c.Name, c.Restarts)
		}
		if c.Type != "web" {
			continue
		}
		web++
		if c.State == state.StateExited || (c.State == state.StateRunning && strings.HasPrefix(c.Reason, "probe failed")) {
			unhealthy++
		}
	}
	share := p.UnhealthyShare
	if share <= 0 {
		share = DefaultRollbackPolicy.UnhealthyShare
	}
	if web > 0 && unhealthy > 0 && float64(unhealthy) > share*float64(web) {
		return ReasonHealth, fmt.Sprintf("health checks failing on %d of %d web containers", unhealthy, web)
	}
	var total, errs int64
	var window time.Duration
	for _, t := range in.Traffic {
		if in.Now.Sub(t.At) > 2*max(t.Window, time.Minute) {
			continue // a proxy that stopped reporting
		}
		window = max(window, t.Window)
		for class, n := range t.Releases[v] {
			total += n
			if class == "5xx" {
				errs += n
			}
		}
	}
	min := p.MinRequests
	if min <= 0 {
		min = DefaultRollbackPolicy.MinRequests
	}
	es := p.ErrorShare
	if es <= 0 {
		es = DefaultRollbackPolicy.ErrorShare
	}
	if total >= min && float64(errs) >= es*float64(total) {
		return ReasonErrors, fmt.Sprintf("%d of %d requests answered 5xx in the last %s", errs, total, window)
	}
	return "", ""
}

// errNotNewest aborts a rollback whose release is no longer the newest.
var errNotNewest = errors.New("scheduler: release is no longer the newest")

// rollBack writes the release that copies dec.Target and marks dec.Bad
// failed and rolled back, in one transaction, only while dec.Bad is still
// the newest release of incarnation inc of f, and this coordinator leads.
func (c *Controller) rollBack(ctx context.Context, f string, inc int64, dec *RollbackDecision, st state.ReleaseStatus) error {
	k := c.store.Keys
	ctx = state.WithIncarnation(ctx, f, inc)
	st.Version, st.Failed, st.RolledBack = dec.Bad, true, true
	st.Reason = fmt.Sprintf("rolled back automatically to v%d: %s", dec.Target, dec.Why)
	st.At = time.Now().UTC()
	rel, _, err := c.store.Rollback(ctx, f, state.Rollback{
		Target:           dec.Target,
		Description:      fmt.Sprintf("Auto-rollback to v%d: %s", dec.Target, dec.Why),
		AutoRollbackFrom: dec.Bad,
		Check: func(prev *state.Release) error {
			if prev.Version != dec.Bad {
				return errNotNewest
			}
			return c.leading(ctx)
		},
		Extra:  []clientv3.Op{clientv3.OpPut(k.ReleaseStatus(f, dec.Bad), state.Marshal(st))},
		Guards: c.fence(),
	})
	if errors.Is(err, errNotNewest) {
		return nil // a newer release came meanwhile; the next pass judges it
	}
	if err != nil && !errors.Is(err, ErrDeposed) {
		if lerr := c.leading(ctx); lerr != nil {
			err = lerr
		}
	}
	if errors.Is(err, ErrDeposed) {
		return err
	}
	if err != nil {
		return fmt.Errorf("scheduler: roll back %s v%d: %w", f, dec.Bad, err)
	}
	c.m.rollbacks.WithLabelValues(dec.Reason).Inc()
	c.log.Warn("release rolled back automatically", "formation", f, "release", dec.Bad, "target", dec.Target,
		"new_release", rel.Version, "reason", dec.Why)
	return nil
}
