package scheduler

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// setup creates formations (each with a runtime layer and a release) and
// live runtime nodes under /t.
func setup(t *testing.T, ctx context.Context, cli *clientv3.Client, forms []string, nodes []string) *state.Store {
	t.Helper()
	s := state.NewStore(cli, "/t")
	k := s.Keys
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	lease, err := cli.Grant(ctx, 60)
	must(err)
	for _, n := range nodes {
		must(s.Put(ctx, k.Node(n), state.Node{Name: n, Addr: "127.0.0.1", Labels: map[string]string{"role": "runtime"}}))
		must(s.Put(ctx, k.Heartbeat(n), state.Heartbeat{Node: n}, clientv3.WithLease(lease.ID)))
	}
	for _, f := range forms {
		must(s.Create(ctx, k.Formation(f), state.Formation{Name: f},
			clientv3.OpPut(k.Layer(f, "runtime"), state.Marshal(state.Layer{Formation: f, Name: "runtime", Type: state.LayerRuntime, Selector: map[string]string{"role": "runtime"}}))))
		_, err := s.AppendRelease(ctx, f, func(*state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
			return &state.Release{Build: &state.Build{Image: "img", ProcessTypes: map[string]string{"web": "run"}, Slug: &state.SlugRef{SHA256: "abc"}}}, nil, nil, nil
		})
		must(err)
	}
	return s
}

// A deposed leader writes nothing: once its election key is gone, a pass
// returns ErrDeposed and the store's revision does not move, and a running
// controller stops with ErrDeposed.
func TestFencedWrites(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := setup(t, ctx, cli, []string{"hello"}, []string{"n1"})
	k := s.Keys

	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(30))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, k.Election())
	if err := el.Campaign(ctx, "me"); err != nil {
		t.Fatal(err)
	}
	fence := func() []clientv3.Cmp { return LeaderFence(el.Key(), el.Rev()) }
	c, err := New(Config{Etcd: cli, Prefix: "/t", SlugURL: "http://s", Fence: fence})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Reconcile(ctx); err != nil {
		t.Fatalf("leader's pass: %v", err)
	}
	if n := containers(t, s, "n1"); n != 1 {
		t.Fatalf("leader's pass placed %d containers, want 1", n)
	}

	// Another coordinator takes over: the election key is deleted (its
	// lease lost), and the formation scales meanwhile.
	if _, err := cli.Delete(ctx, el.Key()); err != nil {
		t.Fatal(err)
	}
	if _, err := state.Update(ctx, s, k.Formation("hello"), func(f *state.Formation) (*state.Formation, error) {
		f.Scale = map[string]int{"web": 3}
		return f, nil
	}); err != nil {
		t.Fatal(err)
	}
	before, err := cli.Get(ctx, "/t/")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Reconcile(ctx); !errors.Is(err, ErrDeposed) {
		t.Fatalf("deposed pass: %v, want ErrDeposed", err)
	}
	after, err := cli.Get(ctx, "/t/")
	if err != nil {
		t.Fatal(err)
	}
	if after.Header.Revision != before.Header.Revision {
		t.Fatalf("a deposed pass wrote: revision %d -> %d", before.Header.Revision, after.Header.Revision)
	}
	if n := containers(t, s, "n1"); n != 1 {
		t.Fatalf("the deposed pass changed the databag: %d containers", n)
	}

	// Nor does it roll a release back.
	if _, err := s.AppendRelease(ctx, "hello", func(prev *state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
		return &state.Release{Build: prev.Build, Config: map[string]string{"A": "2"}}, nil, nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	inc, err := s.Incarnation(ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.rollBack(ctx, "hello", inc, &RollbackDecision{Bad: 2, Target: 1, Reason: ReasonCrashLoop, Why: "test"}, state.ReleaseStatus{}); !errors.Is(err, ErrDeposed) {
		t.Fatalf("deposed rollback: %v, want ErrDeposed", err)
	}
	if latest, err := s.LatestRelease(ctx, "hello"); err != nil || latest.Version != 2 {
		t.Fatalf("latest release %+v, %v: a deposed leader rolled back", latest, err)
	}

	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrDeposed) {
			t.Fatalf("Run returned %v, want ErrDeposed", err)
		}
	case <-ctx.Done():
		t.Fatal("a deposed controller kept running")
	}
	if n := containers(t, s, "n1"); n != 1 {
		t.Fatalf("the deposed controller changed the databag: %d containers", n)
	}
}

// Writes go out batched: a pass that writes more keys than one
// transaction may hold writes them all, in a few transactions rather than
// one each.
func TestBatchedWrites(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var forms, nodes []string
	for i := range 120 {
		forms = append(forms, fmt.Sprintf("f%03d", i))
		nodes = append(nodes, fmt.Sprintf("n%03d", i))
	}
	s := setup(t, ctx, cli, forms, nodes)
	reg := prometheus.NewRegistry()
	c, err := New(Config{Etcd: cli, Prefix: "/t", SlugURL: "http://s", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range nodes {
		total += containers(t, s, n)
	}
	if total != len(forms) {
		t.Fatalf("%d containers placed, want %d", total, len(forms))
	}
	// 120 databags, 120 routing databags, 120 formation statuses.
	if n := counter(t, reg, "deis_coordinator_write_txns_total"); n < 4 || n > 10 {
		t.Fatalf("%v transactions for 360 writes", n)
	}
	// A pass that changes nothing writes nothing (the second one still
	// drops the "placing" reasons from the formations' status).
	if err := c.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	before, _ := cli.Get(ctx, "/t/")
	if err := c.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := cli.Get(ctx, "/t/")
	if after.Header.Revision != before.Header.Revision {
		t.Fatalf("a pass with nothing to do wrote (revision %d -> %d)", before.Header.Revision, after.Header.Revision)
	}
}

// counter reads a counter's value from reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}
