package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/testing/pkitest"
	"github.com/deis/deis/testing/poll"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/agent/api"
	"github.com/deis/deis/agent/runtime"
	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/slugtar/slugtartest"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/deis/deis/testing/need"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestMain fails the run when a goroutine of a Server outlives the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leak := leaked(); leak != "" {
			fmt.Fprintln(os.Stderr, "leaked api goroutines:\n"+leak)
			code = 1
		}
	}
	os.Exit(code)
}

func leaked() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bo := backoff.Backoff{Min: 10 * time.Millisecond, Max: 500 * time.Millisecond}
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:goruntime.Stack(buf, true)]
		var bad []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "agent/api.(*Server)") {
				bad = append(bad, g)
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

// serverPy logs each request to stdout and a warning to stderr.
const serverPy = `import http.server, os, signal, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print("got " + self.path, flush=True)
        print("warning " + self.path, file=sys.stderr, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    def log_message(self, *args):
        pass

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("listening on", os.environ["PORT"], "dyno", os.environ["DYNO"], flush=True)
http.server.HTTPServer(("", int(os.environ["PORT"])), Handler).serve_forever()
`

// fixture is one node: real etcd, a real Runtime on the real Docker
// engine, and the API server in front of them.
type fixture struct {
	t      *testing.T
	node   string
	store  *state.Store
	cli    *clientv3.Client
	ca     *pkitest.CA
	url    string
	client *api.Client
	slug   state.SlugRef
	slugs  *httptest.Server
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// makeSlug builds a gzipped tarball of files the way the builder does.
func makeSlug(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var entries []slugtartest.Entry
	for name, body := range files {
		entries = append(entries, slugtartest.Entry{Name: "./" + name, Body: body})
	}
	return slugtartest.Tarball(t, entries...)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func dockerCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(ctxT(t, time.Minute), "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func newFixture(t *testing.T) *fixture {
	need.Stack(t)
	_, cli := etcdtest.Start(t)
	f := &fixture{t: t, node: randomName("api-"), store: state.NewStore(cli, "/t"), cli: cli}
	t.Cleanup(func() { // after the runtime and the server stopped
		if ids := strings.Fields(dockerCLI(t, "ps", "-aq", "--filter", "label=deis.node="+f.node)); len(ids) > 0 {
			dockerCLI(t, append([]string{"rm", "-f"}, ids...)...)
		}
	})
	ctx := ctxT(t, time.Minute)
	f.ca = pkitest.New(t)

	// The slug server wants a node's certificate, like the coordinator's.
	tgz := makeSlug(t, map[string]string{
		"Procfile":            "web: python3 server.py\n",
		"server.py":           serverPy,
		".profile.d/greet.sh": "export FROM_PROFILE=yes\n",
	})
	sum := sha256.Sum256(tgz)
	f.slug = state.SlugRef{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(tgz))}
	f.slugs = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pki.PeerIdentity(r) != "t:node-"+f.node {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		if r.URL.Path != "/slugs/"+f.slug.SHA256+".tgz" {
			http.NotFound(w, r)
			return
		}
		w.Write(tgz)
	}))
	f.slugs.TLS = f.ca.ServerTLS("t:coordinator")
	f.slugs.StartTLS()
	t.Cleanup(f.slugs.Close)
	f.put(f.store.Keys.Coordinator(), state.CoordinatorInfo{SlugURL: f.slugs.URL})

	docker, err := runtime.NewDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker.Close() })
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	rt, err := runtime.New(runtime.Config{Node: f.node, Addr: "127.0.0.1", StateDir: t.TempDir(), Store: f.store,
		Watcher: cli, Docker: docker, SlugTLS: f.ca.ClientTLS("t:node-" + f.node), StopGrace: 2 * time.Second, Logger: log.With("role", "runtime"), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{Node: f.node, TLS: f.ca.NodeServerTLS("/t", f.node), Store: f.store, Docker: docker, Runtime: rt, Retired: rt,
		Logger: log.With("role", "api"), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.url = api.URL(l.Addr(), "127.0.0.1")
	// The bootstrap administrator (no user record): every formation.
	f.client = f.as("t:user-admin")

	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := rt.Run(runCtx); err != nil {
			t.Errorf("runtime: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := srv.Serve(runCtx, l); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Cleanup(func() { stop(); wg.Wait() })
	return f
}

// as is a client of the fixture's agent presenting a certificate of
// identity.
func (f *fixture) as(identity string) *api.Client {
	return &api.Client{URL: f.url, TLS: f.ca.NodeClientTLS(identity, "/t", f.node)}
}

// testWriter sends logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func (f *fixture) put(key string, v any) {
	f.t.Helper()
	if err := f.store.Put(ctxT(f.t, 10*time.Second), key, v); err != nil {
		f.t.Fatal(err)
	}
}

// release creates formation name (if needed) and appends a release of the
// fixture's slug with config cfg.
func (f *fixture) release(name string, cfg map[string]string) int {
	f.t.Helper()
	ctx := ctxT(f.t, 10*time.Second)
	_ = f.store.CreateFormation(ctx, &state.Formation{Name: name, Created: time.Now().UTC()})
	b := &state.Build{ID: "b1", Formation: name, Image: need.StackImage, Slug: &f.slug,
		ProcessTypes: map[string]string{"web": "python3 server.py"}}
	rel, err := f.store.AppendRelease(ctx, name, func(*state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
		return &state.Release{Build: b, Config: cfg, Description: "Deploy b1"}, nil, nil, nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return rel.Version
}

// web is the spec of container i of release v.
func (f *fixture) web(name string, v, i int) state.ContainerSpec {
	return state.ContainerSpec{Name: fmt.Sprintf("%s.v%d.web.%d", name, v, i), Formation: name, Release: v, Type: "web", Index: i,
		Image: need.StackImage, Command: "python3 server.py", Env: map[string]string{"PORT": "5000"},
		Slug: &f.slug, SlugURL: f.slugs.URL + "/slugs/" + f.slug.SHA256 + ".tgz", Port: 5000}
}

func (f *fixture) assign(specs ...state.ContainerSpec) {
	f.t.Helper()
	f.put(f.store.Keys.Runtime(f.node), state.Runtime{Node: f.node, Containers: specs})
}

// ready waits until the node reports container name ready and returns its address.
func (f *fixture) ready(name string) string {
	f.t.Helper()
	var addr string
	waitFor(f.t, name+" ready", func() bool {
		var st state.NodeStatus
		if _, err := f.store.Get(ctxT(f.t, 10*time.Second), f.store.Keys.NodeStatus(f.node), &st); err != nil {
			return false
		}
		for _, c := range st.Containers {
			if c.Name == name && c.State == state.StateReady {
				addr = c.Addr
				return true
			}
		}
		return false
	})
	return addr
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.True(t, 90*time.Second, what, cond)
}

// logs fetches the logs of q without following.
func (f *fixture) logs(q api.LogsQuery) []api.LogLine {
	f.t.Helper()
	var out []api.LogLine
	if err := f.client.Logs(ctxT(f.t, time.Minute), q, func(l api.LogLine) error { out = append(out, l); return nil }); err != nil {
		f.t.Fatal(err)
	}
	return out
}

func hasLine(lines []api.LogLine, container, stream, text string) bool {
	for _, l := range lines {
		if l.Container == container && l.Stream == stream && l.Line == text {
			return true
		}
	}
	return false
}

func get(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestLogs(t *testing.T) {
	f := newFixture(t)
	f.release("hello", nil)
	f.assign(f.web("hello", 1, 1))
	addr := f.ready("hello.v1.web.1")
	get(t, "http://"+addr+"/first")

	var lines []api.LogLine
	waitFor(t, "the request in the logs", func() bool {
		lines = f.logs(api.LogsQuery{Formation: "hello", Tail: 100})
		return hasLine(lines, "hello.v1.web.1", "stderr", "warning /first")
	})
	if !hasLine(lines, "hello.v1.web.1", "stdout", "listening on 5000 dyno web.1") || !hasLine(lines, "hello.v1.web.1", "stdout", "got /first") {
		t.Errorf("logs: %+v", lines)
	}
	for i, l := range lines {
		if l.Node != f.node || l.Time.IsZero() || (i > 0 && l.Time.Before(lines[i-1].Time)) {
			t.Errorf("line %d: %+v (node, time and order)", i, l)
		}
	}
	if got := f.logs(api.LogsQuery{Formation: "hello", Tail: 1}); len(got) != 1 || got[0] != lines[len(lines)-1] {
		t.Errorf("tail=1: %+v, want the last line %+v", got, lines[len(lines)-1])
	}
	if got := f.logs(api.LogsQuery{Formation: "hello", Type: "worker", Tail: 100}); len(got) != 0 {
		t.Errorf("type=worker: %+v", got)
	}
	if got := f.logs(api.LogsQuery{Formation: "other", Tail: 100}); len(got) != 0 {
		t.Errorf("another formation: %+v", got)
	}
	if got := f.logs(api.LogsQuery{Formation: "hello", Tail: 100, Since: lines[len(lines)-2].Time}); len(got) != 1 || got[0] != lines[len(lines)-1] {
		t.Errorf("since the line before the last: %+v", got)
	}

	// Following: the backlog, the mark, then new lines, of new containers too.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan api.LogLine, 100)
	done := make(chan error, 1)
	go func() {
		done <- f.client.Logs(ctx, api.LogsQuery{Formation: "hello", Tail: 2, Follow: true}, func(l api.LogLine) error {
			got <- l
			return nil
		})
	}()
	next := func(what string, match func(api.LogLine) bool) api.LogLine {
		t.Helper()
		timeout := time.After(90 * time.Second)
		for {
			select {
			case l := <-got:
				if match(l) {
					return l
				}
			case err := <-done:
				t.Fatalf("follow ended waiting for %s: %v", what, err)
			case <-timeout:
				t.Fatalf("timed out following for %s", what)
			}
		}
	}
	var backlog []api.LogLine
	next("the live mark", func(l api.LogLine) bool {
		if l.Mark != api.MarkLive {
			backlog = append(backlog, l)
		}
		return l.Mark == api.MarkLive
	})
	if len(backlog) != 2 || backlog[1] != lines[len(lines)-1] {
		t.Errorf("backlog of a follow with tail 2: %+v", backlog)
	}
	get(t, "http://"+addr+"/second")
	next("a new line", func(l api.LogLine) bool { return l.Line == "got /second" && l.Stream == "stdout" })
	f.assign(f.web("hello", 1, 1), f.web("hello", 1, 2))
	next("the new container's first line", func(l api.LogLine) bool {
		return l.Container == "hello.v1.web.2" && l.Line == "listening on 5000 dyno web.2"
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("follow after cancel: %v", err)
	}
}

// A container the runtime retired (a rollout to v2 removed v1's) keeps its
// last lines in the node's logs, marked with its release; a destroyed
// formation's are dropped.
func TestLogsKeepRetiredContainers(t *testing.T) {
	f := newFixture(t)
	f.release("hello", nil)
	f.assign(f.web("hello", 1, 1))
	addr := f.ready("hello.v1.web.1")
	get(t, "http://"+addr+"/before-the-rollout")
	waitFor(t, "the request in v1's logs", func() bool {
		return hasLine(f.logs(api.LogsQuery{Formation: "hello", Tail: 100}), "hello.v1.web.1", "stdout", "got /before-the-rollout")
	})
	f.release("hello", nil)
	f.assign(f.web("hello", 2, 1))
	f.ready("hello.v2.web.1")
	waitFor(t, "v1's container removed", func() bool {
		return dockerCLI(t, "ps", "-aq", "--filter", "label=deis.node="+f.node, "--filter", "label=deis.release=1") == ""
	})

	lines := f.logs(api.LogsQuery{Formation: "hello", Tail: 100})
	var retired []api.LogLine
	for _, l := range lines {
		if l.Retired {
			retired = append(retired, l)
		}
	}
	for _, want := range []struct{ stream, line string }{
		{"stdout", "listening on 5000 dyno web.1"}, {"stdout", "got /before-the-rollout"}, {"stderr", "warning /before-the-rollout"},
	} {
		if !hasLine(retired, "hello.v1.web.1", want.stream, want.line) {
			t.Errorf("retired line %q on %s missing: %+v", want.line, want.stream, lines)
		}
	}
	for _, l := range retired {
		if l.Container != "hello.v1.web.1" || l.Release != 1 || l.Node != f.node || l.Time.IsZero() {
			t.Errorf("retired line %+v: want container hello.v1.web.1 of release 1 on %s", l, f.node)
		}
	}
	if !hasLine(lines, "hello.v2.web.1", "stdout", "listening on 5000 dyno web.1") {
		t.Errorf("the live container's lines missing beside the retired ones: %+v", lines)
	}
	for i := 1; i < len(lines); i++ {
		if lines[i].Time.Before(lines[i-1].Time) {
			t.Errorf("lines out of order at %d: %+v", i, lines)
		}
	}
	if got := f.logs(api.LogsQuery{Formation: "hello", Type: "worker", Tail: 100}); len(got) != 0 {
		t.Errorf("type=worker shows retired web lines: %+v", got)
	}
	if got := f.logs(api.LogsQuery{Formation: "hello", Tail: 1}); len(got) != 1 {
		t.Errorf("tail=1 with retired lines: %+v", got)
	}

	// The formation is destroyed: its containers go, and so do its kept lines.
	ctx := ctxT(t, 10*time.Second)
	if err := f.store.DestroyFormation(ctx, "hello"); err != nil {
		t.Fatal(err)
	}
	f.assign()
	waitFor(t, "the destroyed formation's lines dropped", func() bool {
		return len(f.logs(api.LogsQuery{Formation: "hello", Tail: 100})) == 0
	})
}

func TestLogsRefusals(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		tls   *tls.Config
		query string
		code  int
	}{
		{f.ca.NodeClientTLS("t:user-admin", "/t", f.node), "formation=Bad_Name", http.StatusBadRequest},
		{f.ca.NodeClientTLS("t:user-admin", "/t", f.node), "formation=hello&tail=-1", http.StatusBadRequest},
		{f.ca.NodeClientTLS("t:user-admin", "/t", f.node), "formation=hello&type=a/b", http.StatusBadRequest},
		{f.ca.NodeClientTLS("t:user-admin", "/t", f.node), "formation=hello", http.StatusOK},
		{f.ca.NodeClientTLS("t:coordinator", "/t", f.node), "formation=hello", http.StatusOK},
		{f.ca.NodeClientTLS("t:node-other", "/t", f.node), "formation=hello", http.StatusForbidden},
		{f.ca.NodeClientTLS("t:user-alice", "/t", f.node), "formation=hello", http.StatusForbidden},
	} {
		resp, err := pkitest.HTTPClient(tc.tls).Get(f.url + "/logs?" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s: %s, want %d", tc.tls.Certificates[0].Leaf.Subject.CommonName, tc.query, resp.Status, tc.code)
		}
	}
}

// The agent API refuses a missing or foreign certificate at the handshake
// and plain HTTP; a user may read logs and run only in the formations
// granted to her, and an administrator everywhere.
func TestAccess(t *testing.T) {
	f := newFixture(t)
	ctx := ctxT(t, 2*time.Minute)
	v := f.release("shop", nil)
	f.assign(f.web("shop", v, 1))
	f.ready(fmt.Sprintf("shop.v%d.web.1", v))
	logs := func(c *api.Client) error {
		return c.Logs(ctx, api.LogsQuery{Formation: "shop", Tail: 10}, func(api.LogLine) error { return nil })
	}
	run := func(c *api.Client) error {
		_, err := c.Run(ctx, "shop", api.RunRequest{Command: "true"}, nil, io.Discard, io.Discard)
		return err
	}
	for name, tls := range map[string]*tls.Config{"no certificate": f.ca.NodeClientTLS("", "/t", f.node), "a foreign CA's admin certificate": f.ca.ForeignNodeClientTLS("t:user-admin", "/t", f.node)} {
		c := &api.Client{URL: f.url, TLS: tls}
		if err := logs(c); err == nil {
			t.Errorf("logs with %s: allowed", name)
		}
		if err := run(c); err == nil || !strings.Contains(err.Error(), "refused this client certificate") {
			t.Errorf("run with %s: %v, want the handshake refused with the fix", name, err)
		}
	}
	// deisctl accepts only the node it asked for: another node's
	// certificate (here: this agent, taken for node "other") is refused.
	if err := logs(&api.Client{URL: f.url, TLS: f.ca.NodeClientTLS("t:user-admin", "/t", "other")}); err == nil || !strings.Contains(err.Error(), `not of "t:node-other"`) {
		t.Errorf("an agent posing as another node: %v", err)
	}
	if resp, err := http.Get(strings.Replace(f.url, "https://", "http://", 1) + "/logs?formation=shop"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP got the logs")
		}
	}

	f.put(f.store.Keys.User("alice"), state.User{Name: "alice"})
	alice := f.as("t:user-alice")
	const refusal = "alice may not change shop: ask an administrator for deisctl perms:grant alice -f shop"
	for what, err := range map[string]error{"logs": logs(alice), "run": run(alice)} {
		var he *api.HTTPError
		if !errors.As(err, &he) || he.Code != http.StatusForbidden || !strings.HasPrefix(err.Error(), refusal) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s without the grant: %v, want 403 %q", what, err, refusal)
		}
	}
	if err := logs(f.as("t:node-" + f.node)); err == nil {
		t.Error("a node read a formation's logs")
	}
	f.put(f.store.Keys.Perm("shop", "alice"), state.Perm{Formation: "shop", User: "alice"})
	if err := logs(alice); err != nil {
		t.Errorf("logs after the grant: %v", err)
	}
	if err := run(alice); err != nil {
		t.Errorf("run after the grant: %v", err)
	}
	// Revoked: refused again.
	if _, err := f.cli.Delete(ctx, f.store.Keys.Perm("shop", "alice")); err != nil {
		t.Fatal(err)
	}
	if err := logs(alice); err == nil {
		t.Error("logs after the grant was revoked: allowed")
	}
	// An administrator by record.
	f.put(f.store.Keys.User("bob"), state.User{Name: "bob", Admin: true})
	if err := run(f.as("t:user-bob")); err != nil {
		t.Errorf("run as an administrator: %v", err)
	}
}

// oneOffs lists the one-off containers of the node.
func (f *fixture) oneOffs() []string {
	return strings.Fields(dockerCLI(f.t, "ps", "-aq", "--filter", "label=deis.node="+f.node, "--filter", "label=deis.oneoff=1"))
}

func TestRun(t *testing.T) {
	f := newFixture(t)
	v1 := f.release("hello", map[string]string{"GREETING": "howdy"})
	// v2 failed to roll out, so the node runs v1's web.1 (its reconcile
	// loop must not touch one-offs): the one-off's spec comes from that
	// databag entry, not from the releases.
	v2 := f.release("hello", map[string]string{"GREETING": "broken"})
	f.put(f.store.Keys.ReleaseStatus("hello", v2), state.ReleaseStatus{Version: v2, Failed: true, Reason: "crashed"})
	web := f.web("hello", v1, 1)
	web.Env = map[string]string{"PORT": "5000", "GREETING": "howdy", "DEIS_FORMATION": "hello", "DEIS_RELEASE": fmt.Sprintf("v%d", v1)}
	f.assign(web)
	f.ready(fmt.Sprintf("hello.v%d.web.1", v1))

	var stdout, stderr bytes.Buffer
	cmd := `echo "$GREETING $DEIS_RELEASE $DYNO uid=$(id -u) profile=$FROM_PROFILE $(pwd)"; cat; echo oops >&2; sleep 2; echo survived; exit 3`
	code, err := f.client.Run(ctxT(t, 2*time.Minute), "hello", api.RunRequest{Command: cmd, Env: map[string]string{"EXTRA": "1"}},
		strings.NewReader("from stdin\n"), &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 {
		t.Errorf("exit status %d, want 3", code)
	}
	form, _, err := f.store.GetFormation(ctxT(t, 10*time.Second), "hello")
	if err != nil || form.UID == 0 {
		t.Fatalf("formation: %+v, %v", form, err)
	}
	out := strings.Split(stdout.String(), "\n")
	if len(out) != 4 || !strings.HasPrefix(out[0], "howdy v1 run.") || !strings.HasSuffix(out[0], fmt.Sprintf(" uid=%d profile=yes /app", form.UID)) ||
		out[1] != "from stdin" || out[2] != "survived" {
		t.Errorf("stdout %q", stdout.String())
	}
	if stderr.String() != "oops\n" {
		t.Errorf("stderr %q", stderr.String())
	}
	waitFor(t, "the one-off container removed", func() bool { return len(f.oneOffs()) == 0 })

	// A one-off container is confined like the app's: no capability, no
	// new privileges, a read-only root and a writable /tmp.
	stdout.Reset()
	probe := `grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; touch /x 2>/dev/null && echo root writable; touch /tmp/x && echo tmp writable`
	if code, err := f.client.Run(ctxT(t, time.Minute), "hello", api.RunRequest{Command: probe}, nil, &stdout, io.Discard); err != nil || code != 0 {
		t.Errorf("probe: %d, %v", code, err)
	}
	if want := "CapEff:\t0000000000000000\nNoNewPrivs:\t1\ntmp writable\n"; stdout.String() != want {
		t.Errorf("one-off confinement %q, want %q", stdout.String(), want)
	}

	// No stdin at all; the app's own processes answer.
	stdout.Reset()
	code, err = f.client.Run(ctxT(t, time.Minute), "hello", api.RunRequest{Command: "cat; python3 --version"}, nil, &stdout, io.Discard)
	if err != nil || code != 0 || !strings.HasPrefix(stdout.String(), "Python 3") {
		t.Errorf("run without stdin: %d, %v, %q", code, err, stdout.String())
	}

	// A client that goes away gets its container killed.
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	runDone := make(chan error, 1)
	go func() {
		_, err := f.client.Run(ctx, "hello", api.RunRequest{Command: "echo started; exec sleep 600"}, nil,
			writerFunc(func(p []byte) (int, error) {
				if strings.Contains(string(p), "started") {
					close(started)
				}
				return len(p), nil
			}), io.Discard)
		runDone <- err
	}()
	select {
	case <-started:
	case err := <-runDone:
		t.Fatalf("run ended: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the one-off never started")
	}
	if n := len(f.oneOffs()); n != 1 {
		t.Errorf("%d one-off containers while one runs", n)
	}
	cancel()
	if err := <-runDone; !errors.Is(err, context.Canceled) {
		t.Errorf("run after cancel: %v", err)
	}
	waitFor(t, "the abandoned one-off killed and removed", func() bool { return len(f.oneOffs()) == 0 })

	// The web container was never touched.
	if got := f.ready(fmt.Sprintf("hello.v%d.web.1", v1)); got == "" {
		t.Error("web.1 lost")
	}
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }

func TestRunRefusals(t *testing.T) {
	f := newFixture(t)
	ctx := ctxT(t, time.Minute)
	_ = f.store.Create(ctx, f.store.Keys.Formation("empty"), state.Formation{Name: "empty"})
	f.release("shop", nil) // released, but the node runs none of it
	run := func(form, cmd string) error {
		_, err := f.client.Run(ctx, form, api.RunRequest{Command: cmd}, nil, io.Discard, io.Discard)
		return err
	}
	for _, tc := range []struct {
		form, cmd, want string
		code            int
	}{
		// The node runs no container of the formation: deisctl run tries
		// another node.
		{"nope", "ls", "node " + f.node + " runs no container of nope", http.StatusConflict},
		{"empty", "ls", "node " + f.node + " runs no container of empty", http.StatusConflict},
		{"shop", "ls", "node " + f.node + " runs no container of shop", http.StatusConflict},
		{"empty", "  ", "no command", http.StatusBadRequest},
		{"Bad", "ls", "invalid formation name", http.StatusBadRequest},
	} {
		err := run(tc.form, tc.cmd)
		var he *api.HTTPError
		if !errors.As(err, &he) || he.Code != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %q in %s: %v, want %d %q", tc.cmd, tc.form, err, tc.code, tc.want)
		}
	}
	// Without the upgrade headers: 426.
	resp, err := pkitest.HTTPClient(f.ca.NodeClientTLS("t:user-admin", "/t", f.node)).Post(f.url+"/run?formation=hello", "application/json", strings.NewReader(`{"command":"ls"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("POST /run without the upgrade: %s, want 426", resp.Status)
	}
}
