package ctl

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/agent/api"
	"github.com/deis/deis/agent/runtime"
	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// testAgent is one node of a cluster: a real runtime on the real Docker
// engine and the agent API in front of it, registered with a heartbeat.
type testAgent struct {
	name string
	c    *cluster
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startAgent runs an agent named prefix-<random> with labels until the test
// ends, and removes its containers then.
func (c *cluster) startAgent(prefix string, labels map[string]string) *testAgent {
	t := c.t
	t.Helper()
	need.Stack(t)
	a := &testAgent{name: prefix + "-" + randomSuffix(), c: c}
	t.Cleanup(func() { // after the runtime stopped
		out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=deis.node="+a.name).Output()
		if ids := strings.Fields(string(out)); len(ids) > 0 {
			exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	docker, err := runtime.NewDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker.Close() })
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	rt, err := runtime.New(runtime.Config{Node: a.name, Addr: "127.0.0.1", StateDir: t.TempDir(), Store: c.store,
		Watcher: c.cli, Docker: docker, SlugTLS: c.ca.ClientTLS("deis:node-" + a.name), StopGrace: 2 * time.Second, Logger: log, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{Node: a.name, TLS: c.ca.NodeServerTLS("", a.name), Store: c.store, Docker: docker, Runtime: rt, Retired: rt, Logger: log, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.put(c.store.Keys.Node(a.name), state.Node{Name: a.name, Addr: "127.0.0.1", Labels: labels,
		APIURL: api.URL(l.Addr(), "127.0.0.1"), Started: time.Now().UTC()})
	c.put(c.store.Keys.Heartbeat(a.name), state.Heartbeat{Node: a.name, At: time.Now().UTC()})
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = rt.Run(runCtx) }()
	go func() { defer wg.Done(); _ = srv.Serve(runCtx, l) }()
	t.Cleanup(func() { stop(); wg.Wait() })
	return a
}

// assign puts specs in the agent's runtime databag.
func (a *testAgent) assign(specs ...state.ContainerSpec) {
	a.c.t.Helper()
	a.c.put(a.c.store.Keys.Runtime(a.name), state.Runtime{Node: a.name, Containers: specs})
}

// stackSpec is a container of an image-only release running cmd in the
// stack image.
func stackSpec(f string, v int, typ string, i int, cmd string) state.ContainerSpec {
	return state.ContainerSpec{Name: fmt.Sprintf("%s.v%d.%s.%d", f, v, typ, i), Formation: f, Release: v, Type: typ, Index: i,
		Image: need.StackImage, Command: cmd, Env: map[string]string{}}
}

// seedImageRelease creates formation f with an image-only build b1 (the
// stack image, as a Dockerfile build would be) released as v1 with cfg.
func (c *cluster) seedImageRelease(f string, cfg map[string]string) {
	c.t.Helper()
	c.ok("formations:create", f)
	build := &state.Build{ID: "b1", Formation: f, GitSHA: "0123456789abcdef0123", Image: need.StackImage,
		ProcessTypes: map[string]string{"web": "sleep infinity"}, Buildpack: "Dockerfile", Created: time.Now().UTC()}
	c.put(c.store.Keys.Build(f, "b1"), build)
	if cfg == nil {
		cfg = map[string]string{}
	}
	_, err := c.store.AppendRelease(c.ctx(), f, func(*state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
		return &state.Release{Build: build, Config: cfg, Description: "Deploy b1"}, nil,
			[]clientv3.Op{clientv3.OpPut(c.store.Keys.Config(f), state.Marshal(state.Config{Vars: cfg}))}, nil
	})
	if err != nil {
		c.t.Fatal(err)
	}
}

// eventually runs deisctl until its output contains every want.
func (c *cluster) eventually(wants []string, args ...string) string {
	c.t.Helper()
	return c.until(fmt.Sprintf("%q", wants), func(out string) bool {
		for _, w := range wants {
			if !strings.Contains(out, w) {
				return false
			}
		}
		return true
	}, args...)
}

// until runs deisctl until it succeeds with an output that satisfies cond.
func (c *cluster) until(what string, cond func(out string) bool, args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bo := backoff.Backoff{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond}
	var out, errOut string
	var err error
	for {
		out, errOut, err = c.run(args...)
		if err == nil && cond(out) {
			return out
		}
		if bo.Wait(ctx) != nil {
			c.t.Fatalf("deisctl %s never showed %s: err %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), what, err, out, errOut)
		}
	}
}

var logLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}([+-]\d\d:\d\d|Z) \S+\[\S+\]: `)

func TestLogs(t *testing.T) {
	c := newCluster(t)
	c.seedImageRelease("hello", nil)
	// The coordinator's build log endpoint (coordinator/cmd): TLS, deisctl's
	// certificate.
	coord := c.tlsServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/builds/hello/b1.log" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "-----> Building 0123456 of hello from its Dockerfile\n-----> Built image\n")
	}))
	defer coord.Close()
	c.put(c.store.Keys.Coordinator(), state.CoordinatorInfo{SlugURL: coord.URL})

	a := c.startAgent("logs", map[string]string{"role": "runtime"})
	web := func(i int) state.ContainerSpec {
		return stackSpec("hello", 1, "web", i, `echo "web says hi $DYNO"; echo "web complains" >&2; exec sleep infinity`)
	}
	worker := stackSpec("hello", 1, "worker", 1, `while :; do echo tick; sleep 0.2; done`)
	a.assign(web(1), worker)

	src := func(container string) string { return container + "[" + a.name + "]: " }
	out := c.eventually([]string{src("hello.v1.web.1") + "web says hi web.1", src("hello.v1.web.1") + "web complains", src("hello.v1.worker.1") + "tick"},
		"logs", "-f", "hello", "-n", "1000")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for _, l := range lines {
		if !logLine.MatchString(l) {
			t.Errorf("line %q is not TIME CONTAINER[NODE]: LINE", l)
		}
	}
	build := strings.Index(out, "deis[build]: -----> Building 0123456 of hello")
	release := strings.Index(out, "deis[release]: v1 Deploy b1")
	hi := strings.Index(out, src("hello.v1.web.1")+"web says hi")
	if build < 0 || release < build || hi < release {
		t.Errorf("want the build, then the release, then the app's lines:\n%s", out)
	}

	if got := strings.Count(c.ok("logs", "-f", "hello", "-n", "3"), "\n"); got != 3 {
		t.Errorf("-n 3 printed %d lines", got)
	}
	out = c.ok("logs", "-f", "hello", "-p", "web", "-n", "1000")
	contains(t, out, src("hello.v1.web.1")+"web says hi web.1")
	if strings.Contains(out, "worker") || strings.Contains(out, "deis[") {
		t.Errorf("-p web shows other lines:\n%s", out)
	}
	c.until("5 ticks", func(out string) bool { return strings.Count(out, src("hello.v1.worker.1")+"tick") == 5 },
		"logs", "-f", "hello", "--type", "worker", "-n", "5")

	c.ok("formations:create", "empty")
	c.fails("formation empty has no containers running: scale it with deisctl scale web=1 -f empty", "logs", "-f", "empty")
	c.fails("formation hello has no db containers running: scale it with deisctl scale db=1 -f hello", "logs", "-f", "hello", "-p", "db")
	c.fails(`formation "nope" not found`, "logs", "-f", "nope")
	c.fails("invalid --num", "logs", "-f", "hello", "-n", "-1")

	// The node removes every container of hello (as after a bad deploy moved
	// them elsewhere): it keeps their last lines, and deisctl still asks it
	// (NodeStatus.RetiredLogs), marking them retired.
	a.assign()
	retired := func(container string) string { return container + " (retired)[" + a.name + "]: " }
	out = c.eventually([]string{retired("hello.v1.web.1") + "web says hi web.1", retired("hello.v1.worker.1") + "tick"},
		"logs", "-f", "hello", "-n", "1000")
	out = c.ok("logs", "-f", "hello", "-p", "web", "-n", "1000")
	contains(t, out, retired("hello.v1.web.1")+"web complains")
	if strings.Contains(out, "worker") {
		t.Errorf("-p web shows the retired worker's lines:\n%s", out)
	}
}

// lineCollector is deisctl's stdout while following: it hands over every
// line and fails every write once closed, as a closed pipe would.
type lineCollector struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	lines  chan string
	closed bool
}

func (w *lineCollector) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, io.ErrClosedPipe
	}
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line)
			return len(p), nil
		}
		select {
		case w.lines <- strings.TrimSuffix(line, "\n"):
		default: // the test is not reading: drop it
		}
	}
}

func (w *lineCollector) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

func TestLogsFollow(t *testing.T) {
	c := newCluster(t)
	c.seedImageRelease("hello", nil)
	a := c.startAgent("follow", map[string]string{"role": "runtime"})
	web := func(i int) state.ContainerSpec {
		return stackSpec("hello", 1, "web", i, `echo "web says hi $DYNO"; exec sleep infinity`)
	}
	a.assign(web(1), stackSpec("hello", 1, "worker", 1, `while :; do echo tick; sleep 0.2; done`))
	c.eventually([]string{"web says hi web.1", "tick"}, "logs", "-f", "hello")

	out := &lineCollector{lines: make(chan string, 1000)}
	var errOut bytes.Buffer
	app := NewApp()
	app.Writer, app.ErrWriter = out, &errOut
	done := make(chan error, 1)
	go func() {
		done <- app.Run(append(c.base(), "logs", "-f", "hello", "--follow", "-n", "5"))
	}()
	await := func(what string, match func(string) bool) {
		t.Helper()
		timeout := time.After(90 * time.Second)
		for {
			select {
			case l := <-out.lines:
				if match(l) {
					return
				}
			case err := <-done:
				t.Fatalf("logs --follow ended waiting for %s: %v (stderr %s)", what, err, errOut.String())
			case <-timeout:
				t.Fatalf("timed out waiting for %s (stderr %s)", what, errOut.String())
			}
		}
	}
	await("a tick", func(l string) bool { return strings.HasSuffix(l, "]: tick") })

	// A new release is printed as it happens; a new container's lines too.
	c.ok("config:set", "GREETING=hi", "-f", "hello")
	await("release v2", func(l string) bool { return strings.HasSuffix(l, " deis[release]: v2 Set GREETING") })
	a.assign(web(1), web(2), stackSpec("hello", 1, "worker", 1, `while :; do echo tick; sleep 0.2; done`))
	await("web.2's first line", func(l string) bool {
		return strings.HasSuffix(l, " hello.v1.web.2["+a.name+"]: web says hi web.2")
	})

	// A reader that goes away (| head) ends deisctl quietly.
	out.close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("logs --follow after its output closed: %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("logs --follow did not end after its output closed")
	}
}

func TestMergeLast(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(1700000000+int64(s), 0) }
	in := []logEntry{
		{at(3), "a[n1]", "third"},
		{at(1), "deis[build]", "build 1"},
		{at(1), "deis[build]", "build 2"}, // same time: kept in order
		{at(2), "deis[release]", "v1 Deploy"},
		{at(4), "b[n2]", "fourth"},
	}
	got := mergeLast(append([]logEntry(nil), in...), 4)
	var lines []string
	for _, e := range got {
		lines = append(lines, e.line)
	}
	if want := "build 2,v1 Deploy,third,fourth"; strings.Join(lines, ",") != want {
		t.Errorf("mergeLast = %v, want %s", lines, want)
	}
	if e := (logEntry{at(0).UTC(), "web.1[n1]", "hi"}); !logLine.MatchString(e.String()) {
		t.Errorf("format: %q", e.String())
	}
}

// runApp runs deisctl in-process with stdin, keeping cli.Exit from ending
// the test binary.
func (c *cluster) runApp(stdin string, args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	app := NewApp()
	app.Reader, app.Writer, app.ErrWriter = strings.NewReader(stdin), &out, &errOut
	app.ExitErrHandler = func(*cli.Context, error) {}
	err := app.Run(append(c.base(), args...))
	return out.String(), errOut.String(), err
}
