package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A formation destroyed and created again starts over: its v1 is planned
// even though the old formation's v1 failed, and a failure the scheduler
// found for the old formation is not recorded against the new one.
func TestRecreatedFormationRunsItsFirstRelease(t *testing.T) {
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
	create := func() {
		t.Helper()
		must(s.Create(ctx, k.Formation("again"), state.Formation{Name: "again"},
			clientv3.OpPut(k.Layer("again", "runtime"), state.Marshal(state.Layer{Formation: "again", Name: "runtime", Type: state.LayerRuntime, Selector: map[string]string{"role": "runtime"}}))))
		_, err := s.AppendRelease(ctx, "again", func(*state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
			return &state.Release{Build: &state.Build{Image: "img", ProcessTypes: map[string]string{"web": "run"}, Slug: &state.SlugRef{SHA256: "abc"}}}, nil, nil, nil
		})
		must(err)
	}
	must(s.Put(ctx, k.Node("n1"), state.Node{Name: "n1", Addr: "127.0.0.1", Labels: map[string]string{"role": "runtime"}}))
	lease, err := cli.Grant(ctx, 60)
	must(err)
	must(s.Put(ctx, k.Heartbeat("n1"), state.Heartbeat{Node: "n1"}, clientv3.WithLease(lease.ID)))
	c, err := New(Config{Etcd: cli, Prefix: "/t", SlugURL: "http://s", Resync: time.Hour})
	must(err)

	// The old formation's v1 failed.
	create()
	must(s.Put(ctx, k.ReleaseStatus("again", 1), state.ReleaseStatus{Version: 1, Failed: true, Reason: "old"}))
	must(c.Reconcile(ctx))
	if n := containers(t, s, "n1"); n != 0 {
		t.Fatalf("a failed release got %d containers", n)
	}
	// A pass read the formation; meanwhile it is destroyed and created again.
	inc, err := s.Incarnation(ctx, "again")
	must(err)
	must(s.DestroyFormation(ctx, "again"))
	create()
	_, err = c.commit(ctx, []write{failWrite(k, "again", &state.ReleaseStatus{Version: 1, Failed: true, Reason: "stale"}, inc)})
	must(err)
	resp, err := cli.Get(ctx, k.ReleaseStatuses("again"), clientv3.WithPrefix(), clientv3.WithCountOnly())
	must(err)
	if resp.Count != 0 {
		t.Fatal("a failure found for the destroyed formation was recorded against the new one")
	}

	must(c.Reconcile(ctx))
	if n := containers(t, s, "n1"); n != 1 {
		t.Fatalf("v1 of the re-created formation got %d containers, want 1", n)
	}
}

func containers(t *testing.T, s *state.Store, node string) int {
	t.Helper()
	var rt state.Runtime
	if _, err := s.Get(context.Background(), s.Keys.Runtime(node), &rt); err != nil {
		return 0
	}
	return len(rt.Containers)
}
