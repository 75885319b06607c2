package builder

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
)

// Where a rollout stands, from what the agents, the scheduler and the
// proxies wrote.
func TestAssess(t *testing.T) {
	routed := func(v, n int) *state.Routing {
		r := &state.Routing{Release: v}
		for i := 0; i < n; i++ {
			r.Upstreams = append(r.Upstreams, state.Upstream{Release: v})
		}
		return r
	}
	for _, c := range []struct {
		name     string
		view     rolloutView
		live     bool
		switched int
	}{
		// nothing up yet
		{"starting", rolloutView{expected: map[string]int{"web": 1}, routing: routed(1, 0), routingRev: 5, proxies: []string{"p"}}, false, 0},
		// up, routed, the proxy has not applied the routing yet
		{"routed", rolloutView{expected: map[string]int{"web": 1}, up: map[string]string{"web.1": "n"}, routing: routed(2, 1), routingRev: 5,
			proxies: []string{"p", "q"}, acks: map[string]int64{"p": 5, "q": 4}}, false, 1},
		// every proxy applied it
		{"live", rolloutView{expected: map[string]int{"web": 1}, up: map[string]string{"web.1": "n"}, routing: routed(2, 1), routingRev: 5,
			proxies: []string{"p", "q"}, acks: map[string]int64{"p": 5, "q": 6}}, true, 2},
		// the routing still names the old release
		{"old routing", rolloutView{expected: map[string]int{"web": 1}, up: map[string]string{"web.1": "n"}, routing: routed(1, 1), routingRev: 5,
			proxies: []string{"p"}, acks: map[string]int64{"p": 5}}, false, 0},
		// a worker still down
		{"worker down", rolloutView{expected: map[string]int{"web": 1, "worker": 1}, up: map[string]string{"web.1": "n"}, routing: routed(2, 1), routingRev: 5,
			proxies: []string{"p"}, acks: map[string]int64{"p": 5}}, false, 1},
		// no web: live once the others are up, whatever the routing
		{"worker only", rolloutView{expected: map[string]int{"worker": 1}, up: map[string]string{"worker.1": "n"}}, true, 0},
		// nothing scaled: nothing to wait for
		{"scaled to zero", rolloutView{expected: map[string]int{}}, true, 0},
		// no proxy node: the routing is enough
		{"no proxies", rolloutView{expected: map[string]int{"web": 1}, up: map[string]string{"web.1": "n"}, routing: routed(2, 1), routingRev: 5}, true, 0},
	} {
		r := assess(2, &c.view)
		if c.name == "starting" {
			r = assess(1, &c.view)
		}
		if r.live != c.live || r.switched != c.switched {
			t.Errorf("%s: live %v switched %d, want %v %d", c.name, r.live, r.switched, c.live, c.switched)
		}
	}
}

// String is what was written so far.
func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// awaitRollout against real etcd: it follows what agents, proxies and the
// scheduler write, through watches.
func TestAwaitRollout(t *testing.T) {
	t.Parallel()
	_, cli := etcdtest.Start(t)
	store := state.NewStore(cli, "/test")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := store.Keys
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(store.CreateFormation(ctx, &state.Formation{Name: "roll"}))
	must(store.Put(ctx, k.Layer("roll", "proxy"), state.Layer{Formation: "roll", Name: "proxy", Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}}))
	for _, n := range []string{"n1", "n2"} {
		must(store.Put(ctx, k.Node(n), state.Node{Name: n, Labels: map[string]string{"role": "runtime,proxy"}}))
		must(store.Put(ctx, k.Heartbeat(n), state.Heartbeat{Node: n}))
	}
	b := &Builder{cfg: Config{Store: store, Watcher: cli, BootTimeout: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)}, margin: time.Second}
	release := func(v int, config map[string]string) *state.Release {
		rel := &state.Release{Formation: "roll", Version: v, Config: config, Created: time.Now(),
			Build: &state.Build{ID: "b" + string(rune('0'+v)), ProcessTypes: map[string]string{"web": "server"}}}
		must(store.Put(ctx, k.Release("roll", v), rel))
		return rel
	}
	wait := func(rel *state.Release) (<-chan error, *syncBuffer) {
		out := &syncBuffer{}
		done := make(chan error, 1)
		go func() { done <- b.awaitRollout(ctx, rel, newConsole(out, nil)) }()
		return done, out
	}
	waitFor := func(out *syncBuffer, line string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), line); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("output lacks %q:\n%s", line, out.String())
			}
		}
	}

	// v1 goes live: its container is ready, the routing names it, both
	// proxies apply it
	done, out := wait(release(1, nil))
	waitFor(out, "-----> Waiting for v1 to roll out")
	must(store.Put(ctx, k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Containers: []state.ContainerStatus{
		{Name: "roll.v1.web.1", Formation: "roll", Release: 1, Type: "web", State: state.StateReady, Addr: "10.0.0.1:1"}}}))
	waitFor(out, "       web.1 ready on n1")
	must(store.Put(ctx, k.Routing("roll"), state.Routing{Formation: "roll", Release: 1,
		Upstreams: []state.Upstream{{Container: "roll.v1.web.1", Addr: "10.0.0.1:1", Release: 1}}}))
	rev, err := store.Get(ctx, k.Routing("roll"), &state.Routing{})
	must(err)
	must(store.Put(ctx, k.ProxyAck("roll", "n1"), state.ProxyAck{Node: "n1", Revision: rev}))
	waitFor(out, "       proxies switched: 1/2")
	must(store.Put(ctx, k.ProxyAck("roll", "n2"), state.ProxyAck{Node: "n2", Revision: rev}))
	if err := <-done; err != nil {
		t.Fatalf("v1: %v\n%s", err, out.String())
	}
	waitFor(out, "-----> v1 is live (")
	t.Logf("v1:\n%s", out.String())

	// v2 is marked failed by the scheduler: the reason, and an error
	done, out = wait(release(2, nil))
	waitFor(out, "-----> Waiting for v2 to roll out")
	must(store.Put(ctx, k.ReleaseStatus("roll", 2), state.ReleaseStatus{Version: 2, Failed: true,
		Reason: "web containers not ready within 1m0s: roll.v2.web.1 running (health check: connection refused)"}))
	err = <-done
	var re *RolloutError
	if !errors.As(err, &re) || re.Version != 2 || !strings.Contains(err.Error(), "v2 failed: web containers not ready within 1m0s") ||
		!strings.Contains(err.Error(), "the branch not updated") {
		t.Fatalf("v2: err = %v", err)
	}

	// v3 never comes up and is not marked failed (a first release, or no
	// leader): the wait ends at its limit with what the containers do
	done, out = wait(release(3, nil))
	must(store.Put(ctx, k.NodeStatus("n2"), state.NodeStatus{Node: "n2", Containers: []state.ContainerStatus{
		{Name: "roll.v3.web.1", Formation: "roll", Release: 3, Type: "web", State: state.StateExited, Reason: "exit 127"}}}))
	err = <-done
	if err == nil || !strings.Contains(err.Error(), "v3 did not go live within 3s: web.1 exited on n2 (exit 127)") {
		t.Fatalf("v3: err = %v\n%s", err, out.String())
	}

	// DEPLOY_WAIT=false: no wait
	done, out = wait(release(4, map[string]string{DeployWaitKey: "false"}))
	if err := <-done; err != nil || !strings.Contains(out.String(), "Not waiting for v4 to roll out (DEPLOY_WAIT=false)") {
		t.Fatalf("v4: %v\n%s", err, out.String())
	}
}
