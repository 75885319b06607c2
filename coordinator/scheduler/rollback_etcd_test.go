package scheduler

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestAutoRollbackAgainstEtcd runs the controller on a real etcd: v1 and
// v2 go live and are marked so; v2 then crash-loops and is rolled back to
// v1 as v3, once.
func TestAutoRollbackAgainstEtcd(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := state.NewStore(cli, "/t")
	k := s.Keys
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Create(ctx, k.Formation("hello"), state.Formation{Name: "hello"},
		clientv3.OpPut(k.Layer("hello", "runtime"), state.Marshal(state.Layer{Formation: "hello", Name: "runtime", Type: state.LayerRuntime, Selector: map[string]string{"role": "runtime"}}))))
	must(s.Put(ctx, k.Node("n1"), state.Node{Name: "n1", Addr: "127.0.0.1", Labels: map[string]string{"role": "runtime"}}))
	lease, err := cli.Grant(ctx, 30)
	must(err)
	must(s.Put(ctx, k.Heartbeat("n1"), state.Heartbeat{Node: "n1"}, clientv3.WithLease(lease.ID)))
	release := func(cfg map[string]string) {
		_, err := s.AppendRelease(ctx, "hello", func(prev *state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
			return &state.Release{Config: cfg, Build: &state.Build{ID: "b1", Image: "img", ProcessTypes: map[string]string{"web": "run"}, Slug: &state.SlugRef{SHA256: "abc"}}}, nil, nil, nil
		})
		must(err)
	}
	report := func(cs ...state.ContainerStatus) {
		must(s.Put(ctx, k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Containers: cs}))
	}
	web := func(v int, st string, restarts int) state.ContainerStatus {
		return state.ContainerStatus{Name: ContainerName("hello", v, "web", 1, 0), Formation: "hello", Release: v, Type: "web",
			State: st, Addr: "127.0.0.1:300" + string(rune('0'+v)), Restarts: restarts}
	}
	liveAt := func(v int) bool {
		var st state.ReleaseStatus
		_, err := s.Get(ctx, k.ReleaseStatus("hello", v), &st)
		return err == nil && !st.LiveAt.IsZero() && !st.Failed
	}

	release(map[string]string{"A": "1"})
	reg := prometheus.NewRegistry()
	c, err := New(Config{Etcd: cli, Prefix: "/t", SlugURL: "http://s", Resync: 200 * time.Millisecond, Registerer: reg,
		Rollback: RollbackPolicy{Window: time.Minute, Restarts: 3, UnhealthyShare: 0.5, ErrorShare: 0.5, MinRequests: 20}})
	must(err)
	go c.Run(ctx)

	report(web(1, state.StateReady, 0))
	waitFor(t, "v1 marked live", func() bool { return liveAt(1) })
	release(map[string]string{"A": "2"})
	report(web(1, state.StateReady, 0), web(2, state.StateReady, 0))
	waitFor(t, "v2 marked live", func() bool { return liveAt(2) })

	report(web(2, state.StateExited, 4))
	var r3 state.Release
	waitFor(t, "v3, the rollback", func() bool {
		_, err := s.Get(ctx, k.Release("hello", 3), &r3)
		return err == nil
	})
	if r3.AutoRollbackFrom != 2 || r3.Config["A"] != "1" || !strings.HasPrefix(r3.Description, "Auto-rollback to v1: crash loop: hello.v2.web.1 restarted 4 times") {
		t.Fatalf("v3 = %+v", r3)
	}
	var st2 state.ReleaseStatus
	_, err = s.Get(ctx, k.ReleaseStatus("hello", 2), &st2)
	must(err)
	if !st2.Failed || !st2.RolledBack || !strings.Contains(st2.Reason, "rolled back automatically to v1") {
		t.Fatalf("status of v2 = %+v", st2)
	}
	var cfg state.Config
	_, err = s.Get(ctx, k.Config("hello"), &cfg)
	must(err)
	if cfg.Vars["A"] != "1" {
		t.Fatalf("config after the rollback = %v, want v1's", cfg.Vars)
	}
	if n := rollbacks(t, reg, ReasonCrashLoop); n != 1 {
		t.Fatalf("deis_coordinator_auto_rollbacks_total{reason=crash_loop} = %v", n)
	}
	// v3 crash-loops too: an automatic rollback is not rolled back again.
	report(state.ContainerStatus{Name: ContainerName("hello", 3, "web", 1, 0), Formation: "hello", Release: 3, Type: "web", State: state.StateReady, Addr: "127.0.0.1:3003"})
	waitFor(t, "v3 marked live", func() bool { return liveAt(3) })
	report(state.ContainerStatus{Name: ContainerName("hello", 3, "web", 1, 0), Formation: "hello", Release: 3, Type: "web", State: state.StateExited, Restarts: 9})
	time.Sleep(time.Second) // several passes
	if latest, err := s.LatestRelease(ctx, "hello"); err != nil || latest.Version != 3 {
		t.Fatalf("latest = %+v, %v; want v3 to stay", latest, err)
	}
}

// rollbacks reads deis_coordinator_auto_rollbacks_total{reason} from reg.
func rollbacks(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "deis_coordinator_auto_rollbacks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no deis_coordinator_auto_rollbacks_total{reason=%q}", reason)
	return 0
}
