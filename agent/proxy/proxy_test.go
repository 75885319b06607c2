package proxy

import (
	"bytes"
	"context"
	"fmt"
	"github.com/deis/deis/testing/poll"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
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

// stateDir is a state dir the nginx workers, which run as www-data when
// the test runs as root, can walk through (t.TempDir is private).
func stateDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type fixture struct {
	t     *testing.T
	cli   *clientv3.Client
	store *state.Store
	dir   string
	port  int
	node  string // "" means n1
	base  string // BaseDomain; "" means localhost
	drain time.Duration
	mods  string // NginxModules; "" means the default
	body  int64  // MaxBodyBytes; 0 means the default
	// traffic is TrafficInterval; 0 means the default.
	traffic time.Duration
	https   int // HTTPS port; 0: no HTTPS
}

func (fx *fixture) nodeName() string {
	if fx.node == "" {
		return "n1"
	}
	return fx.node
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
	base := fx.base
	if base == "" {
		base = "localhost"
	}
	var httpsListen []string
	if fx.https != 0 {
		httpsListen = []string{"127.0.0.1:" + strconv.Itoa(fx.https)}
	}
	p, err := New(Config{
		HTTPSListen: httpsListen,
		Node:        fx.nodeName(), StateDir: fx.dir, Listen: []string{"127.0.0.1:" + strconv.Itoa(fx.port)}, BaseDomain: base,
		Store: fx.store, Watcher: fx.cli, Registerer: reg, Resync: time.Second, ReloadDrain: fx.drain, NginxModules: fx.mods, MaxBodyBytes: fx.body,
		TrafficInterval: fx.traffic,
		Logger:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})),
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

// ack reads the fixture node's ack of formation f.
func (fx *fixture) ack(f string) state.ProxyAck {
	var a state.ProxyAck
	_, _ = fx.store.Get(context.Background(), fx.store.Keys.ProxyAck(f, fx.nodeName()), &a)
	return a
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.True(t, 30*time.Second, what, cond)
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
	needNginxLua(t)
	_, cli := etcdtest.Start(t)
	fx := &fixture{t: t, cli: cli, store: state.NewStore(cli, "/test"), dir: stateDir(t), port: etcdtest.FreePort(t)}
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
	reloads := metric(t, reg, "deis_proxy_reloads_total")

	// A new routing switches traffic, and is acked only once live.
	rev2 := fx.routing("hello", []string{"hello.localhost"}, addr(two))
	fx.waitAck("hello", rev2)
	if code, body := fx.mustGet("hello.localhost"); code != 200 || body != "backend-two" {
		t.Fatalf("after switch: %d %q, want backend-two", code, body)
	}
	updates := metric(t, reg, "deis_proxy_route_updates_total")

	// The same content at a new revision is acked without touching nginx.
	rev3 := fx.routing("hello", []string{"hello.localhost"}, addr(two))
	fx.waitAck("hello", rev3)
	if n := metric(t, reg, "deis_proxy_route_updates_total"); n != updates {
		t.Errorf("a routing with the same content was pushed to nginx (%v -> %v updates)", updates, n)
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

	// An upstream that is not an IP address is refused as well.
	fx.routing("hello", []string{"hello.localhost"}, "no-such-host.invalid:80")
	eventually(t, "ack error for the host name upstream", func() bool { return strings.Contains(fx.ack("hello").Error, "must be an IP address") })
	if a := fx.ack("hello"); a.Revision != rev3 {
		t.Errorf("ack after refused upstream = %+v, want revision %d", a, rev3)
	}
	if code, body := fx.mustGet("hello.localhost"); code != 200 || body != "backend-two" {
		t.Errorf("after refused upstream: %d %q, want backend-two", code, body)
	}
	// Fixing the databag heals it.
	rev4 := fx.routing("hello", []string{"hello.localhost"}, addr(one))
	if a := fx.waitAck("hello", rev4); a.Error != "" {
		t.Errorf("ack after fix = %+v", a)
	}
	if code, body := fx.mustGet("hello.localhost"); code != 200 || body != "backend-one" {
		t.Errorf("after fix: %d %q, want backend-one", code, body)
	}
	// No routing change reloaded nginx.
	if n := metric(t, reg, "deis_proxy_reloads_total"); n != reloads {
		t.Errorf("routing changes reloaded nginx (%v -> %v reloads)", reloads, n)
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
	needNginxLua(t)
	_, cli := etcdtest.Start(t)
	fx := &fixture{t: t, cli: cli, store: state.NewStore(cli, "/test"), dir: stateDir(t), port: etcdtest.FreePort(t)}
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
	p2, reg2, stop2 := fx.run()
	defer stop2()
	eventually(t, "a new master", func() bool { pid := p2.ngx.master(); return pid != 0 && pid != old })
	eventually(t, "traffic after restart", func() bool {
		code, body, err := fx.get(http.MethodGet, "hello.localhost", "/", nil)
		return err == nil && code == 200 && body == "backend-one"
	})
	// The new nginx loaded the routes from the file the agent wrote; it
	// needed no push.
	if n := metric(t, reg2, "deis_proxy_route_updates_total"); n != 0 {
		t.Errorf("deis_proxy_route_updates_total = %v after a start, want 0: nginx should route by routes.txt from its first request", n)
	}
}

// TestRoutingWithoutReload checks what deis.lua does in nginx: host
// lookup (exact before wildcard, as server_name), round-robin over the
// upstreams with a dead one skipped for GET and POST, IPv6 upstreams, and
// the drain before a reload.
func TestRoutingWithoutReload(t *testing.T) {
	needNginxLua(t)
	_, cli := etcdtest.Start(t)
	fx := &fixture{t: t, cli: cli, store: state.NewStore(cli, "/test"), dir: stateDir(t), port: etcdtest.FreePort(t)}
	k := fx.store.Keys
	addr := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }
	live, exact := backend(t, "live"), backend(t, "exact")
	dead := backend(t, "dead")
	dead.Close() // its port refuses connections
	ups := []string{addr(dead), addr(live)}
	want := map[string]bool{"live": true}
	if l, err := net.Listen("tcp", "[::1]:0"); err == nil {
		v6 := httptest.NewUnstartedServer(backend(t, "v6").Config.Handler)
		v6.Listener.Close()
		v6.Listener = l
		v6.Start()
		t.Cleanup(v6.Close)
		ups = append(ups, addr(v6))
		want["v6"] = true
	} else {
		t.Logf("no IPv6 loopback, not testing an IPv6 upstream: %v", err)
	}
	fx.put(k.Node("n1"), state.Node{Name: "n1", Labels: map[string]string{"role": "proxy"}})
	for _, f := range []string{"wild", "exact"} {
		fx.put(k.Layer(f, "proxy"), state.Layer{Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}})
	}
	rev := fx.routing("wild", []string{"wild.localhost", "*.wild.localhost"}, ups...)
	revExact := fx.routing("exact", []string{"api.wild.localhost"}, addr(exact))
	p, reg, _ := fx.run()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = p.StopNginx(ctx)
	})
	fx.waitAck("wild", rev)
	fx.waitAck("exact", revExact)

	seen := map[string]bool{}
	for i := 0; i < 12; i++ {
		host := []string{"wild.localhost", "a.wild.localhost", "a.b.wild.localhost"}[i%3]
		code, body := fx.mustGet(host)
		if code != 200 || !want[body] {
			t.Errorf("GET %s: %d %q, want 200 from one of %v", host, code, body, want)
		}
		seen[body] = true
		code, body, err := fx.get(http.MethodPost, host, "/echo", strings.NewReader("hello"))
		if err != nil || code != 200 || !strings.Contains(body, " body=5 ") {
			t.Errorf("POST %s: %d %q %v", host, code, body, err)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("requests reached %v, want all of %v", seen, want)
	}
	if code, body := fx.mustGet("api.wild.localhost"); code != 200 || body != "exact" {
		t.Errorf("exact domain: %d %q, want the exact formation", code, body)
	}
	for _, host := range []string{"xwild.localhost", "wild.localhost.other"} {
		if code, _ := fx.mustGet(host); code != 404 {
			t.Errorf("%s: %d, want 404", host, code)
		}
	}

	// nginx refuses a routes text it cannot read and keeps routing.
	if err := p.ngx.putRoutes(context.Background(), []byte("version x\ndomain a.localhost nowhere\n"), "x"); err == nil || !strings.Contains(err.Error(), "no formation line") {
		t.Errorf("broken routes: %v, want a refusal", err)
	}
	if code, body := fx.mustGet("api.wild.localhost"); code != 200 || body != "exact" {
		t.Errorf("after broken routes: %d %q, want exact", code, body)
	}

	// A drain closes keep-alive connections after their response; undrain
	// ends it.
	c := &http.Client{Timeout: 10 * time.Second}
	keepAlive := func() bool {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(fx.port)+"/", nil)
		req.Host = "wild.localhost"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return !resp.Close
	}
	ctx := context.Background()
	if !keepAlive() {
		t.Error("nginx closes connections before any drain")
	}
	if err := p.ngx.drain(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if keepAlive() {
		t.Error("nginx keeps connections alive while draining")
	}
	if err := p.ngx.undrain(ctx); err != nil {
		t.Fatal(err)
	}
	if !keepAlive() {
		t.Error("nginx still closes connections after the drain ended")
	}
	if n := metric(t, reg, "deis_proxy_reloads_total"); n != 1 {
		t.Errorf("deis_proxy_reloads_total = %v, want 1 (the start)", n)
	}
}

// TestRejectedConfigKeepsServing: a config nginx -t rejects (here: a lua
// module that does not load) is never installed; the running nginx keeps
// its config and still takes routing changes.
func TestRejectedConfigKeepsServing(t *testing.T) {
	_, mods := needNginxLua(t)
	_, cli := etcdtest.Start(t)
	fx := &fixture{t: t, cli: cli, store: state.NewStore(cli, "/test"), dir: stateDir(t), port: etcdtest.FreePort(t)}
	k := fx.store.Keys
	addr := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }
	one, two := backend(t, "backend-one"), backend(t, "backend-two")
	fx.put(k.Node("n1"), state.Node{Name: "n1", Labels: map[string]string{"role": "proxy"}})
	fx.put(k.Layer("hello", "proxy"), state.Layer{Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}})
	rev := fx.routing("hello", []string{"hello.localhost"}, addr(one))
	p, _, stop := fx.run()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = p.StopNginx(ctx)
	})
	fx.waitAck("hello", rev)
	stop()
	good, err := os.ReadFile(fx.dir + "/nginx/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}

	broken := t.TempDir()
	if err := os.Symlink(filepath.Join(mods, "ndk_http_module.so"), filepath.Join(broken, "ndk_http_module.so")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(broken, "ngx_http_lua_module.so"), []byte("not a module"), 0o644); err != nil {
		t.Fatal(err)
	}
	fx.mods = broken
	_, reg, stop2 := fx.run()
	defer stop2()
	rev2 := fx.routing("hello", []string{"hello.localhost"}, addr(two))
	if a := fx.waitAck("hello", rev2); a.Error != "" {
		t.Errorf("ack = %+v, want no error: the routing moved", a)
	}
	if code, body := fx.mustGet("hello.localhost"); code != 200 || body != "backend-two" {
		t.Errorf("after the rejected config: %d %q, want backend-two", code, body)
	}
	eventually(t, "a counted config check failure", func() bool { return metric(t, reg, "deis_proxy_config_check_failures_total") >= 1 })
	if now, _ := os.ReadFile(fx.dir + "/nginx/nginx.conf"); !bytes.Equal(now, good) {
		t.Error("the rejected config was installed")
	}
}
