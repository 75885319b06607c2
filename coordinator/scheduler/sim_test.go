package scheduler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// simulate plays the agents of the live nodes: each reports every
// container of its databag ready, and proxy p1 acknowledges every routing
// revision, until ctx ends.
func simulate(ctx context.Context, t *testing.T, cli *clientv3.Client) {
	k := state.NewKeys("/t")
	s := state.NewStore(cli, "/t")
	sent := map[string]string{}
	for ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		hb, err := cli.Get(ctx, k.Heartbeats(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			continue
		}
		alive := map[string]bool{}
		for _, kv := range hb.Kvs {
			alive[state.Base(string(kv.Key))] = true
		}
		rts, _, err := state.List[state.Runtime](ctx, cli, k.Runtimes())
		if err != nil {
			continue
		}
		for _, e := range rts {
			n := state.Base(e.Key)
			if !alive[n] {
				continue
			}
			st := state.NodeStatus{Node: n, Containers: []state.ContainerStatus{}}
			for _, c := range e.Value.Containers {
				st.Containers = append(st.Containers, state.ContainerStatus{Name: c.Name, Formation: c.Formation, Release: c.Release,
					Type: c.Type, State: state.StateReady, Addr: n + ":" + c.Name})
			}
			if b := state.Marshal(st); sent[n] != b {
				sent[n] = b
				_ = s.Put(ctx, k.NodeStatus(n), st)
			}
		}
		routes, _, err := state.List[state.Routing](ctx, cli, k.Routings())
		if err != nil {
			continue
		}
		for _, e := range routes {
			f := state.Base(e.Key)
			ack := state.ProxyAck{Node: "p1", Revision: e.ModRevision}
			if b := state.Marshal(ack); sent["ack/"+f] != b {
				sent["ack/"+f] = b
				_ = s.Put(ctx, k.ProxyAck(f, "p1"), ack)
			}
		}
	}
}

// Incremental passes end where full passes would, through rollouts,
// scaling, a drain, a lost node and a node's return: after each step every
// formation is routed to its current release with its full scale, and a
// full pass from a fresh read would write nothing.
func TestIncrementalMatchesFull(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := state.NewStore(cli, "/t")
	k := s.Keys
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	leases := map[string]clientv3.LeaseID{}
	join := func(n, role string) {
		l, err := cli.Grant(ctx, 120)
		must(err)
		leases[n] = l.ID
		must(s.Put(ctx, k.Node(n), state.Node{Name: n, Addr: n, Labels: map[string]string{"role": role}}))
		must(s.Put(ctx, k.Heartbeat(n), state.Heartbeat{Node: n}, clientv3.WithLease(l.ID)))
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		join(n, "runtime")
	}
	join("p1", "proxy")
	release := func(f string, cfg string) {
		_, err := s.AppendRelease(ctx, f, func(*state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
			return &state.Release{Config: map[string]string{"C": cfg}, Build: &state.Build{Image: "img", ProcessTypes: map[string]string{"web": "run", "worker": "work"}, Slug: &state.SlugRef{SHA256: "abc"}}}, nil, nil, nil
		})
		must(err)
	}
	scale := map[string]int{}
	var forms []string
	for i := range 6 {
		f := fmt.Sprintf("f%d", i)
		forms = append(forms, f)
		scale[f] = 2
		must(s.Create(ctx, k.Formation(f), state.Formation{Name: f, Scale: map[string]int{"web": 2, "worker": 1}},
			clientv3.OpPut(k.Layer(f, "runtime"), state.Marshal(state.Layer{Formation: f, Name: "runtime", Type: state.LayerRuntime, Selector: map[string]string{"role": "runtime"}})),
			clientv3.OpPut(k.Layer(f, "proxy"), state.Marshal(state.Layer{Formation: f, Name: "proxy", Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}}))))
		release(f, "1")
	}
	go simulate(ctx, t, cli)
	reg := prometheus.NewRegistry()
	c, err := New(Config{Etcd: cli, Prefix: "/t", SlugURL: "http://s", Resync: time.Hour, FullResync: time.Hour, Registerer: reg})
	must(err)
	go c.Run(ctx)

	// steady waits until every formation routes its newest release with its
	// scale of web containers, nothing is pending, and no pass is left to do.
	steady := func(step string) {
		t.Helper()
		waitFor(t, step, func() bool {
			for _, f := range forms {
				latest, err := s.LatestRelease(ctx, f)
				if err != nil {
					return false
				}
				var r state.Routing
				var fs state.FormationStatus
				if _, err := s.Get(ctx, k.Routing(f), &r); err != nil || r.Release != latest.Version || len(r.Upstreams) != scale[f] {
					return false
				}
				if _, err := s.Get(ctx, k.FormationStatus(f), &fs); err != nil || len(fs.Pending) > 0 || fs.Error != "" {
					return false
				}
			}
			return true
		})
		settled(t, reg)
		converged(t, cli)
	}
	count := func(n string) int { return containers(t, s, n) }

	steady("cold start")
	release("f1", "2") // config:set
	_, err = state.Update(ctx, s, k.Formation("f2"), func(f *state.Formation) (*state.Formation, error) {
		f.Scale = map[string]int{"web": 4, "worker": 1}
		return f, nil
	})
	must(err)
	scale["f2"] = 4
	steady("a rollout and a scale-up")

	must(s.Put(ctx, k.Drain("n1"), state.Drain{Node: "n1"}))
	steady("n1 drained")
	if n := count("n1"); n != 0 {
		t.Fatalf("n1 drained but holds %d containers", n)
	}
	_, err = cli.Revoke(ctx, leases["n2"])
	must(err)
	waitFor(t, "n2 emptied", func() bool { return count("n2") == 0 })
	steady("n2 lost")
	if n := count("n3"); n != 6*3+2 {
		t.Fatalf("n3 holds %d containers, want all %d", n, 6*3+2)
	}
	_, err = cli.Delete(ctx, k.Drain("n1"))
	must(err)
	waitFor(t, "n1 takes containers again", func() bool { return count("n1") > 0 })
	steady("n1 back")
}
