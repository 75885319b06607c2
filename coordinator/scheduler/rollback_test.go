package scheduler

import (
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
)

func TestDecideRollback(t *testing.T) {
	now := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	policy := RollbackPolicy{Window: 5 * time.Minute, Restarts: 3, UnhealthyShare: 0.5, ErrorShare: 0.5, MinRequests: 20}
	live := func(ago time.Duration) state.ReleaseStatus { return state.ReleaseStatus{LiveAt: now.Add(-ago)} }
	good := map[int]state.ReleaseStatus{1: live(time.Hour), 2: live(time.Minute)}
	web := func(name, st, reason string, restarts int) state.ContainerStatus {
		return state.ContainerStatus{Name: name, Formation: "hello", Release: 2, Type: "web", State: st, Reason: reason, Restarts: restarts}
	}
	traffic := func(ok, bad int64, at time.Duration) []state.TrafficReport {
		return []state.TrafficReport{{Node: "p1", At: now.Add(-at), Window: time.Minute,
			Releases: map[int]map[string]int64{2: {"2xx": ok, "5xx": bad}, 1: {"5xx": 1000}}}}
	}
	healthy := []state.ContainerStatus{web("a", state.StateReady, "", 0), web("b", state.StateReady, "", 0)}
	cases := []struct {
		name       string
		form       state.Formation
		cur        state.Release
		statuses   map[int]state.ReleaseStatus
		containers []state.ContainerStatus
		traffic    []state.TrafficReport
		policy     *RollbackPolicy
		reason     string // "" : no rollback
		target     int
		whyNot     string
	}{
		// A healthy release stays.
		{name: "healthy", containers: healthy, traffic: traffic(100, 10, 0), whyNot: "looks healthy"},
		// One container restarted three times: a crash loop.
		{name: "crash loop", containers: []state.ContainerStatus{web("a", state.StateReady, "", 0), web("b", state.StateExited, "Restarting (1)", 3)},
			reason: ReasonCrashLoop, target: 1},
		// Two restarts are below the threshold.
		{name: "restarts below threshold", containers: []state.ContainerStatus{web("a", state.StateReady, "", 2), web("b", state.StateReady, "", 0)}, whyNot: "looks healthy"},
		// Two of three web containers fail their health checks: most.
		{name: "health failures", containers: []state.ContainerStatus{web("a", state.StateRunning, "probe failed: GET /health answered 500", 0),
			web("b", state.StateRunning, "probe failed: timeout", 0), web("c", state.StateReady, "", 0)}, reason: ReasonHealth, target: 1},
		// One of two is not most.
		{name: "health half", containers: []state.ContainerStatus{web("a", state.StateRunning, "probe failed: x", 0), web("b", state.StateReady, "", 0)}, whyNot: "looks healthy"},
		// 5xx share above the threshold over enough requests.
		{name: "5xx above threshold", containers: healthy, traffic: traffic(10, 30, 5*time.Second), reason: ReasonErrors, target: 1},
		// Exactly the share counts too.
		{name: "5xx at threshold", containers: healthy, traffic: traffic(10, 10, 0), reason: ReasonErrors, target: 1},
		// Below the share.
		{name: "5xx below threshold", containers: healthy, traffic: traffic(30, 10, 0), whyNot: "looks healthy"},
		// Too few requests to judge.
		{name: "5xx too few requests", containers: healthy, traffic: traffic(0, 19, 0), whyNot: "looks healthy"},
		// A report from a proxy that stopped reporting long ago is ignored.
		{name: "stale traffic", containers: healthy, traffic: traffic(0, 100, 10*time.Minute), whyNot: "looks healthy"},
		// Went live longer ago than the window.
		{name: "outside window", statuses: map[int]state.ReleaseStatus{1: live(time.Hour), 2: live(6 * time.Minute)},
			traffic: traffic(0, 100, 0), whyNot: "more than 5m0s ago"},
		// Not live yet: the boot timeout, not rollback, handles it.
		{name: "not live", statuses: map[int]state.ReleaseStatus{1: live(time.Hour)}, traffic: traffic(0, 100, 0), whyNot: "has not gone live"},
		// No earlier release went live.
		{name: "no good target", statuses: map[int]state.ReleaseStatus{2: live(time.Minute)}, traffic: traffic(0, 100, 0), whyNot: "no earlier release"},
		// A failed or rolled-back release is never a target: v2 goes back to v1.
		{name: "skips failed target", cur: state.Release{Version: 3}, statuses: map[int]state.ReleaseStatus{1: live(time.Hour),
			2: {LiveAt: now.Add(-30 * time.Minute), Failed: true, RolledBack: true}, 3: live(time.Minute)},
			traffic: []state.TrafficReport{{At: now, Window: time.Minute, Releases: map[int]map[string]int64{3: {"5xx": 50}}}}, reason: ReasonErrors, target: 1},
		// The current release was rolled back already.
		{name: "already rolled back", statuses: map[int]state.ReleaseStatus{1: live(time.Hour), 2: {LiveAt: now.Add(-time.Minute), Failed: true, RolledBack: true}},
			traffic: traffic(0, 100, 0), whyNot: "failed already"},
		// An automatic rollback is never rolled back in turn.
		{name: "rollback of a rollback", cur: state.Release{Version: 2, AutoRollbackFrom: 1}, traffic: traffic(0, 100, 0), whyNot: "automatic rollback itself"},
		// Off for the formation.
		{name: "formation off", form: state.Formation{Name: "hello", AutoRollbackOff: true}, traffic: traffic(0, 100, 0), whyNot: "off for the formation"},
		// Off on the coordinator.
		{name: "coordinator off", policy: &RollbackPolicy{}, traffic: traffic(0, 100, 0), whyNot: "off on this coordinator"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.form.Name == "" {
				tc.form = state.Formation{Name: "hello", AutoRollbackOff: tc.form.AutoRollbackOff}
			}
			if tc.cur.Version == 0 {
				tc.cur.Version = 2
			}
			if tc.statuses == nil {
				tc.statuses = good
			}
			p := policy
			if tc.policy != nil {
				p = *tc.policy
			}
			for i := range tc.containers {
				tc.containers[i].Release = tc.cur.Version
			}
			d, why := DecideRollback(p, RollbackInput{Formation: &tc.form, Current: &tc.cur, Statuses: tc.statuses,
				Containers: tc.containers, Traffic: tc.traffic, Now: now})
			if tc.reason == "" {
				if d != nil {
					t.Fatalf("rolled back (%+v), want none: %s", d, tc.whyNot)
				}
				if !strings.Contains(why, tc.whyNot) {
					t.Fatalf("why not = %q, want it to say %q", why, tc.whyNot)
				}
				return
			}
			if d == nil {
				t.Fatalf("no rollback (%s), want %s", why, tc.reason)
			}
			if d.Reason != tc.reason || d.Target != tc.target || d.Bad != tc.cur.Version || d.Why == "" {
				t.Fatalf("decision %+v, want reason %s to v%d", d, tc.reason, tc.target)
			}
		})
	}
}

func TestRollbackPolicyValidate(t *testing.T) {
	if err := DefaultRollbackPolicy.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := DefaultRollbackPolicy
	bad.ErrorShare = 1.5
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "--rollback-error-share") {
		t.Fatalf("error = %v", err)
	}
}
