package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/deis/deis/testing/need"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// backend is a fake app: it answers its name, echoes what the proxy sent,
// and serves a large body.
func backend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%s body=%d host=%s xfp=%s xfport=%s start=%v", name, n, r.Host,
				r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-Port"), strings.HasPrefix(r.Header.Get("X-Request-Start"), "t="))
		case "/big":
			w.Write([]byte(strings.Repeat("x", 4<<20)))
		default:
			fmt.Fprint(w, name)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

type fixture struct {
	t     *testing.T
	cli   *clientv3.Client
	store *state.Store
	dir   string
	port  int
}

func (fx *fixture) put(key string, v any) int64 {
	fx.t.Helper()
	resp, err := fx.cli.Put(context.Background(), key, state.Marshal(v))
	if err != nil {
		fx.t.Fatal(err)
	}
	return resp.Header.Revision
}

func (fx *fixture) routing(f string, domains []string, addrs ...string) int64 {
	fx.t.Helper()
	return fx.put(fx.store.Keys.Routing(f), routing(f, domains, addrs...))
}

// run starts a Proxy on the fixture's state dir and returns it with a
// function that stops its Run.
func (fx *fixture) run() (*Proxy, *prometheus.Registry, func()) {
	fx.t.Helper()
	reg := prometheus.NewRegistry()
	p, err := New(Config{
		Node: "n1", StateDir: fx.dir, Listen: []string{"127.0.0.1:" + strconv.Itoa(fx.port)}, BaseDomain: "localhost",
		Store: fx.store, Watcher: fx.cli, Registerer: reg, Resync: time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		fx.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			fx.t.Errorf("Run: %v", err)
		}
	}
	fx.t.Cleanup(stop)
	return p, reg, stop
}

// get sends one request on a new connection and returns status and body.
func (fx *fixture) get(method, host, path string, body io.Reader) (int, string, error) {
	req, err := http.NewRequest(method, "http://127.0.0.1:"+strconv.Itoa(fx.port)+path, body)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (fx *fixture) mustGet(host string) (int, string) {
	fx.t.Helper()
	code, body, err := fx.get(http.MethodGet, host, "/", nil)
	if err != nil {
		fx.t.Fatalf("GET %s: %v", host, err)
	}
	return code, body
}

// ack reads n1's ack of formation f.
func (fx *fixture) ack(f string) state.ProxyAck {
	var a state.ProxyAck
	_, _ = fx.store.Get(context.Background(), fx.store.Keys.ProxyAck(f, "n1"), &a)
	return a
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (fx *fixture) waitAck(f string, rev int64) state.ProxyAck {
	fx.t.Helper()
	var a state.ProxyAck
	eventually(fx.t, fmt.Sprintf("ack of %s at revision %d", f, rev), func() bool { a = fx.ack(f); return a.Revision == rev })
	return a
}

func (fx *fixture) masterPID() int {
	b, _ := os.ReadFile(fx.dir + "/nginx/nginx.pid")
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestProxyServesAcksAndSurvives(t *testing.T) {
	need.Nginx(t)
	_, cli := etcdtest.Start(t)
	fx := &fixture{t: t, cli: cli, store: state.NewStore(cli, "/test"), dir: t.TempDir(), port: etcdtest.FreePort(t)}
	k := fx.store.Keys
	one, two := backend(t, "backend-one"), backend(t, "backend-two")
	addr := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

	fx.put(k.Node("n1"), state.Node{Name: "n1", Addr: "127.0.0.1", Labels: map[string]string{"role": "runtime,proxy"}})
	fx.put(k.Layer("hello", "proxy"), state.Layer{Formation: "hello", Name: "proxy", Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}})
	fx.put(k.Layer("idle", "proxy"), state.Layer{Formation: "idle", Name: "proxy", Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}})
	// A formation whose proxy layer selects other nodes is not routed here.
	fx.put(k.Layer("elsewhere", "proxy"), state.Layer{Formation: "elsewhere", Name: "proxy", Type: state.LayerProxy, Selector: map[string]string{"role": "edge"}})
	rev1 := fx.routing("hello", []string{"hello.localhost"}, addr(one))
	idleRev := fx.routing("idle", []string{"idle.localhost"})
	fx.routing("elsewhere", []string{"elsewhere.localhost"}, addr(one))

	p, reg, stop := fx.run()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.StopNginx(ctx); err != nil {
			t.Errorf("StopNginx: %v", err)
		}
	})

	// The ack means the routing is live: the very next request reaches it.
	a := fx.waitAck("hello", rev1)
	if a.Node != "n1" || a.Error != "" || a.Applied.IsZero() {
		t.Errorf("ack = %+v", a)
	}
	if code, body := fx.mustGet("hello.localhost"); code != 200 || body != "backend-one" {
		t.Fatalf("hello: %d %q, want 200 backend-one", code, body)
	}
	fx.waitAck("idle", idleRev)
	if code, body := fx.mustGet("idle.localhost"); code != 503 || !strings.Contains(body, "no container of app idle is ready") {
		t.Errorf("idle: %d %q, want 503 explaining no container is ready", code, body)
	}
	if code, body := fx.mustGet("elsewhere.localhost"); code != 404 || !strings.Contains(body, "no app is configured for this host") {
		t.Errorf("elsewhere: %d %q, want the default 404", code, body)
	}
	if a := fx.ack("elsewhere"); a.Revision != 0 {
		t.Errorf("formation not proxied here was acked: %+v", a)
	}
	// Headers reach the app, and large bodies both ways pass through nginx's
	// temp files under the state dir.
	code, body, err := fx.get(http.MethodPost, "hello.localhost", "/echo", strings.NewReader(strings.Repeat("y", 1<<20)))
	if err != nil || code != 200 || body != "backend-one body=1048576 host=hello.localhost xfp=http xfport="+strconv.Itoa(fx.port)+" start=true" {
		t.Errorf("echo: %d %q %v", code, body, err)
	}
	if code, body, err := fx.get(http.MethodGet, "hello.localhost", "/big", nil); err != nil || code != 200 || len(body) != 4<<20 {
		t.Errorf("big: %d %d bytes %v", code, len(body), err)
	}
	if n := metric(t, reg, "deis_proxy_reload_duration_seconds"); n < 1 {
		t.Errorf("no reload duration observed")
	}
	if n := metric(t, reg, "deis_proxy_formations"); n != 2 {
		t.Errorf("deis_proxy_formations = %v, want 2", n)
	}

	// A new routing switches traffic, and is acked only once live.
	rev2 := fx.routing("hello", []string{"hello.localhost"}, addr(two))
	fx.waitAck("hello", rev2)
	if code, body := fx.mustGet("hello.localhost"); code != 200 || body != "backend-two" {
		t.Fatalf("after switch: %d %q, want backend-two", code, body)
	}
	reloads := metric(t, reg, "deis_proxy_reloads_total")

	// The same content at a new revision is acked without a reload.
	rev3 := fx.routing("hello", []string{"hello.localhost"}, addr(two))
	fx.waitAck("hello", rev3)
	if n := metric(t, reg, "deis_proxy_reloads_total"); n != reloads {
		t.Errorf("a routing with the same content reloaded nginx (%v -> %v reloads)", reloads, n)
	}

	// An injected domain is refused: the last good routing keeps serving and
	// the ack says why, at the revision still served.
	bad := fx.put(k.Routing("hello"), state.Routing{Formation: "hello", Domains: []string{"hello.localhost; include /etc/passwd"},
		Upstreams: []state.Upstream{{Container: "x", Addr: addr(one)}}})
	eventually(t, "ack error for the injected domain", func() bool { return strings.Contains(fx.ack("hello").Error, "invalid domain") })
	if a := fx.ack("hello"); a.Revision != rev3 {
		t.Errorf("ack after refused revision %d = %+v, want revision %d", bad, a, rev3)
	}
	if code, body := fx.mustGet("hello.localhost"); code != 200 || body != "backend-two" {
		t.Errorf("after injected domain: %d %q, want backend-two", code, body)
	}

	// A config nginx -t rejects (an upstream host that does not resolve) is
	// never installed.
	fx.routing("hello", []string{"hello.localhost"}, "no-such-host.invalid:80")
	eventually(t, "ack error for the rejected config", func() bool { return strings.Contains(fx.ack("hello").Error, "nginx rejected") })
	if a := fx.ack("hello"); a.Revision != rev3 {
		t.Errorf("ack after rejected config = %+v, want revision %d", a, rev3)
	}
	if n := metric(t, reg, "deis_proxy_config_check_failures_total"); n < 1 {
		t.Errorf("deis_proxy_config_check_failures_total = %v", n)
	}
	if code, body := fx.mustGet("hello.localhost"); code != 200 || body != "backend-two" {
		t.Errorf("after rejected config: %d %q, want backend-two", code, body)
	}
	// Fixing the databag heals it.
	rev4 := fx.routing("hello", []string{"hello.localhost"}, addr(one))
	if a := fx.waitAck("hello", rev4); a.Error != "" {
		t.Errorf("ack after fix = %+v", a)
	}
	if code, body := fx.mustGet("hello.localhost"); code != 200 || body != "backend-one" {
		t.Errorf("after fix: %d %q, want backend-one", code, body)
	}

	// Run returning leaves nginx serving.
	pid := fx.masterPID()
	stop()
	if code, body := fx.mustGet("hello.localhost"); code != 200 || body != "backend-one" {
		t.Fatalf("after Run returned: %d %q, want backend-one", code, body)
	}

	// A new Proxy on the same state dir adopts the running master.
	_, _, stop2 := fx.run()
	defer stop2()
	rev5 := fx.routing("hello", []string{"hello.localhost", "hi.localhost"}, addr(two))
	fx.waitAck("hello", rev5)
	if got := fx.masterPID(); got != pid {
		t.Errorf("master pid %d after restart, want the adopted %d", got, pid)
	}
	if code, body := fx.mustGet("hi.localhost"); code != 200 || body != "backend-two" {
		t.Errorf("after adoption: %d %q, want backend-two", code, body)
	}

	// A formation whose layer stops selecting the node is dropped and its
	// ack removed.
	if _, err := cli.Delete(context.Background(), k.Layer("idle", "proxy")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "idle ack removed", func() bool { return fx.ack("idle").Revision == 0 })
	if code, _ := fx.mustGet("idle.localhost"); code != 404 {
		t.Errorf("idle after its layer was deleted: %d, want 404", code)
	}
}

// TestStartsAfterKill: a master killed hard leaves its pid file, its control
// socket and a worker holding the port; the next Proxy retires the worker
// and starts a new master.
func TestStartsAfterKill(t *testing.T) {
	need.Nginx(t)
	_, cli := etcdtest.Start(t)
	fx := &fixture{t: t, cli: cli, store: state.NewStore(cli, "/test"), dir: t.TempDir(), port: etcdtest.FreePort(t)}
	k := fx.store.Keys
	one := backend(t, "backend-one")
	fx.put(k.Node("n1"), state.Node{Name: "n1", Labels: map[string]string{"role": "proxy"}})
	fx.put(k.Layer("hello", "proxy"), state.Layer{Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}})
	rev := fx.routing("hello", []string{"hello.localhost"}, strings.TrimPrefix(one.URL, "http://"))

	p, _, stop := fx.run()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = p.StopNginx(ctx)
	})
	fx.waitAck("hello", rev)
	stop()
	old := fx.masterPID()
	proc, _ := os.FindProcess(old)
	if err := proc.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "killed master gone", func() bool { return p.ngx.master() == 0 })
	// Its worker is orphaned and still holds the port.
	if len(p.ngx.orphans()) == 0 {
		t.Error("no orphaned worker found after killing the master")
	}
	p2, _, stop2 := fx.run()
	defer stop2()
	eventually(t, "a new master", func() bool { pid := p2.ngx.master(); return pid != 0 && pid != old })
	eventually(t, "traffic after restart", func() bool {
		code, body, err := fx.get(http.MethodGet, "hello.localhost", "/", nil)
		return err == nil && code == 200 && body == "backend-one"
	})
}
