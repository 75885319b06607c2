package state

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TrafficReport is what one proxy node counted for a formation over the
// last Window: its answers per release and status class ("2xx", "3xx",
// "4xx", "5xx"). Written by that proxy's agent, only when the counts
// change (or, while they are not zero, every half minute), so a formation
// without traffic causes no writes.
type TrafficReport struct {
	Node string `json:"node"`
	// At is when the counts were taken.
	At time.Time `json:"at"`
	// Window is how far back the counts reach.
	Window time.Duration `json:"window"`
	// Releases maps release version -> status class -> answers.
	Releases map[int]map[string]int64 `json:"releases,omitempty"`
}

// Rollback describes a release that copies an earlier one's build and
// config (deisctl rollback, and the coordinator's automatic rollback).
type Rollback struct {
	// Target is the version to copy; 0 means the one before the newest.
	Target int
	// Description of the new release; "" means "Rollback to vN".
	Description string
	// Check, if set, inspects the newest release before anything is
	// written; an error from it aborts the rollback and is returned.
	Check func(prev *Release) error
	// AutoRollbackFrom is set on the new release (Release.AutoRollbackFrom).
	AutoRollbackFrom int
	// Extra ops are written in the same transaction as the release.
	Extra []clientv3.Op
	// Guards are further comparisons that transaction requires (the
	// scheduler's leadership fence).
	Guards []clientv3.Cmp
}

// Rollback appends a release with the build and config of release
// rb.Target and makes that config the formation's config, in one
// transaction of the release log (AppendRelease). It returns the new
// release and the version it copied. Errors say what to do: a formation
// without releases, one with only v1, a target that is the newest release
// or does not exist (wrapping ErrNotFound).
func (s *Store) Rollback(ctx context.Context, f string, rb Rollback) (*Release, int, error) {
	target := 0
	rel, err := s.AppendRelease(ctx, f, func(prev *Release) (*Release, []clientv3.Cmp, []clientv3.Op, error) {
		if prev == nil {
			return nil, nil, nil, fmt.Errorf("%s has no releases yet, so nothing to roll back to: deploy with git push deis main", f)
		}
		if rb.Check != nil {
			if err := rb.Check(prev); err != nil {
				return nil, nil, nil, err
			}
		}
		target = rb.Target
		if target == 0 {
			target = prev.Version - 1
			if target < 1 {
				return nil, nil, nil, fmt.Errorf("%s has only release v1, so nothing to roll back to", f)
			}
		}
		if target == prev.Version {
			return nil, nil, nil, fmt.Errorf("v%d is already the current release of %s: pick an earlier one from deisctl releases -f %s", target, f, f)
		}
		var old Release
		if _, err := s.Get(ctx, s.Keys.Release(f, target), &old); err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, nil, nil, fmt.Errorf("release v%d does not exist in formation %s: list releases with deisctl releases -f %s: %w", target, f, f, ErrNotFound)
			}
			return nil, nil, nil, err
		}
		cfg := maps.Clone(old.Config)
		if cfg == nil {
			cfg = map[string]string{}
		}
		desc := rb.Description
		if desc == "" {
			desc = fmt.Sprintf("Rollback to v%d", target)
		}
		ops := append([]clientv3.Op{clientv3.OpPut(s.Keys.Config(f), Marshal(Config{Vars: cfg}))}, rb.Extra...)
		return &Release{Build: old.Build, Config: cfg, Description: desc, AutoRollbackFrom: rb.AutoRollbackFrom}, slices.Clip(rb.Guards), ops, nil
	})
	if err != nil {
		return nil, 0, err
	}
	return rel, target, nil
}
