package scheduler

import (
	"context"
	"github.com/deis/deis/testing/poll"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestControllerAgainstEtcd runs the controller loop on a real etcd: a
// formation with a release and a live node gets a runtime databag, and a
// ready report produces a routing databag with the container's address.
func TestControllerAgainstEtcd(t *testing.T) {
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
	_, err = s.AppendRelease(ctx, "hello", func(prev *state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
		return &state.Release{Build: &state.Build{Image: "img", ProcessTypes: map[string]string{"web": "run"}, Slug: &state.SlugRef{SHA256: "abc"}}}, nil, nil, nil
	})
	must(err)

	c, err := New(Config{Etcd: cli, Prefix: "/t", SlugURL: "http://s", Resync: time.Second})
	must(err)
	go c.Run(ctx)

	var rt state.Runtime
	waitFor(t, "runtime databag", func() bool {
		_, err := s.Get(ctx, k.Runtime("n1"), &rt)
		return err == nil && len(rt.Containers) == 1
	})
	if got := rt.Containers[0]; got.Name != "hello.v1.web.1" || got.SlugURL != "http://s/slugs/abc.tgz" || got.Env["PORT"] != "5000" {
		t.Fatalf("unexpected container spec %+v", got)
	}
	must(s.Put(ctx, k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Containers: []state.ContainerStatus{
		{Name: "hello.v1.web.1", Formation: "hello", Release: 1, Type: "web", State: state.StateReady, Addr: "127.0.0.1:3000"}}}))
	var r state.Routing
	waitFor(t, "routing databag", func() bool {
		_, err := s.Get(ctx, k.Routing("hello"), &r)
		return err == nil && len(r.Upstreams) == 1
	})
	if r.Upstreams[0].Addr != "127.0.0.1:3000" || r.Domains[0] != "hello.localhost" {
		t.Fatalf("unexpected routing %+v", r)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.True(t, 30*time.Second, what, cond)
}
