package runtime_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/deis/deis/testing/poll"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/agent/runtime"
	"github.com/deis/deis/agent/runtime/runtimetest"
	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestMain fails the run when a goroutine of a Runtime outlives the tests:
// Run must wait for everything it started.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leak := leaked(); leak != "" {
			fmt.Fprintln(os.Stderr, "leaked runtime goroutines:\n"+leak)
			code = 1
		}
	}
	os.Exit(code)
}

func leaked() string {
	marks := []string{"runtime.(*Runtime)", "runtime.(*worker)", "runtime.(*slugs)"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bo := backoff.Backoff{Min: 10 * time.Millisecond, Max: 500 * time.Millisecond}
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:goruntime.Stack(buf, true)]
		var bad []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			for _, m := range marks {
				if strings.Contains(g, "agent/"+m) {
					bad = append(bad, g)
					break
				}
			}
		}
		if len(bad) == 0 {
			return ""
		}
		if bo.Wait(ctx) != nil {
			return strings.Join(bad, "\n\n")
		}
	}
}

// env is one node's runtime against a real etcd.
type env struct {
	t      *testing.T
	node   string
	store  *state.Store
	cli    *clientv3.Client
	cfg    runtime.Config
	cancel context.CancelFunc
	done   chan error
}

func uniqueNode(t *testing.T) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "rt-" + hex.EncodeToString(b)
}

func newEnv(t *testing.T, docker runtime.Docker) *env {
	_, cli := etcdtest.Start(t)
	node := uniqueNode(t)
	store := state.NewStore(cli, "/t")
	e := &env{t: t, node: node, store: store, cli: cli}
	e.cfg = runtime.Config{
		Node: node, Addr: "127.0.0.1", StateDir: t.TempDir(), Store: store, Watcher: cli,
		Docker: docker, StopGrace: 2 * time.Second,
		Logger:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: prometheus.NewRegistry(),
	}
	return e
}

// testWriter sends logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// start runs a new Runtime on the env's config.
func (e *env) start() {
	e.t.Helper()
	rt, err := runtime.New(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- rt.Run(ctx) }()
	e.t.Cleanup(e.stop)
}

// stop ends the running Runtime and checks that Run returned nil.
func (e *env) stop() {
	e.t.Helper()
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("Run returned %v", err)
		}
	case <-time.After(60 * time.Second):
		e.t.Fatal("Run did not return after its context ended")
	}
}

func (e *env) assign(specs ...state.ContainerSpec) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if specs == nil {
		specs = []state.ContainerSpec{}
	}
	if err := e.store.Put(ctx, e.store.Keys.Runtime(e.node), state.Runtime{Node: e.node, Containers: specs}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) status() state.NodeStatus {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st state.NodeStatus
	if _, err := e.store.Get(ctx, e.store.Keys.NodeStatus(e.node), &st); err != nil && !errors.Is(err, state.ErrNotFound) {
		e.t.Fatal(err)
	}
	return st
}

// waitStatus waits until the reported status satisfies cond and returns it.
func (e *env) waitStatus(what string, cond func(st state.NodeStatus) bool) state.NodeStatus {
	e.t.Helper()
	var st state.NodeStatus
	waitFor(e.t, what, func() bool {
		st = e.status()
		return cond(st)
	}, func() string { return state.Marshal(st) })
	return st
}

// find returns the status of container name.
func find(st state.NodeStatus, name string) (state.ContainerStatus, bool) {
	for _, c := range st.Containers {
		if c.Name == name {
			return c, true
		}
	}
	return state.ContainerStatus{}, false
}

func readyIn(name string) func(state.NodeStatus) bool {
	return func(st state.NodeStatus) bool {
		c, ok := find(st, name)
		return ok && c.State == state.StateReady && c.Addr != "" && c.ID != ""
	}
}

// waitFor polls cond until it holds; after the deadline it fails with
// what, and the state describe gives.
func waitFor(t testing.TB, what string, cond func() bool, describe func() string) {
	t.Helper()
	poll.Until(t, 90*time.Second, what, func() (bool, string) {
		if cond() {
			return true, ""
		}
		return false, "last seen: " + describe()
	})
}

func imageSpec(name string, release int) state.ContainerSpec {
	return state.ContainerSpec{Name: name, Formation: strings.SplitN(name, ".", 2)[0], Release: release, Type: "web", Index: 1,
		Image: "example/app:1", Command: "serve", Port: 5000, Env: map[string]string{"PORT": "5000"}}
}

func TestRuntimeLifecycleFake(t *testing.T) {
	d := runtimetest.New()
	defer d.Close()
	e := newEnv(t, d)
	e.assign(imageSpec("hello.v1.web.1", 1))
	e.start()

	st := e.waitStatus("hello.v1.web.1 ready", readyIn("hello.v1.web.1"))
	first, _ := find(st, "hello.v1.web.1")
	if first.Formation != "hello" || first.Release != 1 || first.Type != "web" || first.Started.IsZero() {
		t.Errorf("status: %+v", first)
	}
	cs := d.Containers()
	if len(cs) != 1 || cs[0].Name != "deis-"+e.node+"-hello.v1.web.1" || cs[0].Config.Labels["deis.node"] != e.node {
		t.Fatalf("containers: %+v", cs)
	}

	// A crashed container is replaced.
	if err := d.Kill(first.ID, 1); err != nil {
		t.Fatal(err)
	}
	st = e.waitStatus("a new hello.v1.web.1", func(st state.NodeStatus) bool {
		c, ok := find(st, "hello.v1.web.1")
		return ok && c.ID != first.ID && c.State == state.StateReady
	})

	// A rollout: v2 starts, v1 is stopped once and removed.
	e.assign(imageSpec("hello.v2.web.1", 2))
	e.waitStatus("v2 ready and v1 gone", func(st state.NodeStatus) bool {
		_, old := find(st, "hello.v1.web.1")
		return readyIn("hello.v2.web.1")(st) && !old && len(st.Pending) == 0
	})
	waitFor(t, "one container left", func() bool { return len(d.Containers()) == 1 }, func() string { return fmt.Sprint(d.Containers()) })
	if n := d.CallCount("ContainerStop"); n != 1 {
		t.Errorf("ContainerStop called %d times, want 1", n)
	}

	// Nothing assigned: everything stops.
	e.assign()
	e.waitStatus("no containers", func(st state.NodeStatus) bool { return len(st.Containers) == 0 })
	waitFor(t, "no container left", func() bool { return len(d.Containers()) == 0 }, func() string { return fmt.Sprint(d.Containers()) })

	mfs, err := e.cfg.Registerer.(*prometheus.Registry).Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
	}
	for _, n := range []string{"deis_agent_reconcile_total", "deis_agent_reconcile_duration_seconds", "deis_agent_containers"} {
		if !seen[n] {
			t.Errorf("metric %s not registered", n)
		}
	}
}

func TestRuntimeAdoptsFake(t *testing.T) {
	d := runtimetest.New()
	defer d.Close()
	e := newEnv(t, d)
	e.assign(imageSpec("hello.v1.web.1", 1))
	e.start()
	st := e.waitStatus("ready", readyIn("hello.v1.web.1"))
	before, _ := find(st, "hello.v1.web.1")
	e.stop()
	if cs := d.Containers(); len(cs) != 1 || cs[0].State != "running" {
		t.Fatalf("containers must keep running when Run returns: %+v", cs)
	}

	// A new Runtime with the same config (and registry) adopts it, and
	// keeps reporting it ready all along.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	writes := e.cli.Watch(wctx, e.store.Keys.NodeStatus(e.node))
	restarted := time.Now()
	e.start()
	st = e.waitStatus("ready again, reported by the new runtime", func(st state.NodeStatus) bool {
		return st.Updated.After(restarted) && readyIn("hello.v1.web.1")(st)
	})
	wcancel()
	for resp := range writes {
		for _, ev := range resp.Events {
			var w state.NodeStatus
			if err := json.Unmarshal(ev.Kv.Value, &w); err != nil {
				t.Fatal(err)
			}
			if c, ok := find(w, "hello.v1.web.1"); !ok || c.State != state.StateReady || c.ID != before.ID {
				t.Errorf("after the restart the status said %s", ev.Kv.Value)
			}
		}
	}
	after, _ := find(st, "hello.v1.web.1")
	if after.ID != before.ID {
		t.Errorf("container replaced: %s -> %s", before.ID, after.ID)
	}
	if n := d.CallCount("ContainerCreate"); n != 1 {
		t.Errorf("ContainerCreate called %d times, want 1", n)
	}
}

func TestSlowStartDoesNotBlockOthers(t *testing.T) {
	d := runtimetest.New()
	defer d.Close()
	e := newEnv(t, d)
	// The slug server never answers: slow's container stays starting.
	gate := make(chan struct{})
	srv := newHangingServer(t, gate)
	slow := imageSpec("slow.v1.web.1", 1)
	slow.Slug = &state.SlugRef{SHA256: strings.Repeat("a", 64)}
	slow.SlugURL = srv + "/slugs/a.tgz"
	e.assign(slow, imageSpec("fast.v1.web.1", 1))
	e.start()
	st := e.waitStatus("fast ready", readyIn("fast.v1.web.1"))
	c, _ := find(st, "slow.v1.web.1")
	if c.State != state.StateStarting || len(st.Pending) != 1 || !strings.Contains(st.Pending[0], "slow.v1.web.1 missing") {
		t.Errorf("slow container: %+v, pending %v", c, st.Pending)
	}
	e.stop() // must not wait for the download
	close(gate)
}

func TestSlowStopIsReportedAndDoesNotBlock(t *testing.T) {
	d := runtimetest.New()
	d.StopDelay = time.Hour // until the runtime gives up
	defer d.Close()
	e := newEnv(t, d)
	e.assign(imageSpec("hello.v1.web.1", 1))
	e.start()
	st := e.waitStatus("v1 ready", readyIn("hello.v1.web.1"))
	v1, _ := find(st, "hello.v1.web.1")

	e.assign(imageSpec("hello.v2.web.1", 2))
	st = e.waitStatus("v2 ready while v1 stops", func(st state.NodeStatus) bool {
		old, ok := find(st, "hello.v1.web.1")
		return readyIn("hello.v2.web.1")(st) && ok && old.State == state.StateStopping
	})
	old, _ := find(st, "hello.v1.web.1")
	if old.ID != v1.ID || old.Formation != "hello" || old.Release != 1 ||
		len(st.Pending) != 1 || st.Pending[0] != "container hello.v1.web.1 no longer assigned" {
		t.Errorf("stopping container %+v, pending %v", old, st.Pending)
	}
	// Passes go on (Docker events, resyncs) without a second stop.
	passes := d.CallCount("ContainerList")
	e.assign(imageSpec("hello.v2.web.1", 2), imageSpec("other.v1.web.1", 1))
	e.waitStatus("other ready", readyIn("other.v1.web.1"))
	waitFor(t, "another pass", func() bool { return d.CallCount("ContainerList") > passes }, func() string { return "" })
	if n := d.CallCount("ContainerStop"); n != 1 {
		t.Errorf("ContainerStop called %d times, want 1", n)
	}
}

func TestHealthPathIsUsed(t *testing.T) {
	d := runtimetest.New()
	defer d.Close()
	e := newEnv(t, d)
	s := imageSpec("hello.v1.web.1", 1)
	s.HealthPath = "/healthz" // the fake's listeners speak no HTTP
	e.assign(s)
	e.start()
	e.waitStatus("a failing health check in the status", func(st state.NodeStatus) bool {
		c, ok := find(st, "hello.v1.web.1")
		return ok && c.State == state.StateRunning && c.Addr != "" && strings.Contains(c.Reason, "not answering yet")
	})
}

func TestBrokenImageIsReported(t *testing.T) {
	d := runtimetest.New()
	d.Images = map[string]bool{}
	defer d.Close()
	e := newEnv(t, d)
	e.assign(imageSpec("hello.v1.web.1", 1))
	e.start()
	e.waitStatus("the missing image in the status", func(st state.NodeStatus) bool {
		c, _ := find(st, "hello.v1.web.1")
		return c.State == state.StateStarting && strings.Contains(c.Reason, "never pulls")
	})
}

func TestNewRejectsBadConfig(t *testing.T) {
	d := runtimetest.New()
	e := newEnv(t, d)
	bad := e.cfg
	bad.Addr = "localhost"
	if _, err := runtime.New(bad); err == nil {
		t.Error("want an error for an address that is not an IP")
	}
	bad = e.cfg
	bad.Node = "Bad_Name"
	if _, err := runtime.New(bad); err == nil {
		t.Error("want an error for an invalid node name")
	}
	bad = e.cfg
	bad.Docker = nil
	if _, err := runtime.New(bad); err == nil {
		t.Error("want an error without Docker")
	}
}

// newHangingServer answers nothing until gate closes or the client leaves.
func newHangingServer(t *testing.T, gate chan struct{}) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-gate:
		case <-r.Context().Done():
		}
		http.Error(w, "gone", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
