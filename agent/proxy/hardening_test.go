package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/prometheus/client_golang/prometheus"
)

// Tests of the proxy's boundaries against untrusted clients and apps: the
// workers' user, request body limits, no replay of non-idempotent requests.

// startProxy runs a proxy node n1 routing formations; it stops nginx at
// the end of the test.
func startProxy(t *testing.T, fx *fixture, formations ...string) (*Proxy, *prometheus.Registry) {
	t.Helper()
	k := fx.store.Keys
	fx.put(k.Node("n1"), state.Node{Name: "n1", Labels: map[string]string{"role": "proxy"}})
	for _, f := range formations {
		fx.put(k.Layer(f, "proxy"), state.Layer{Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}})
	}
	p, reg, _ := fx.run()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = p.StopNginx(ctx)
	})
	return p, reg
}

// procIDs reads the real, effective, saved and filesystem uids (or gids)
// of a process from /proc/PID/status.
func procIDs(t *testing.T, pid int, field string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.Fields(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return nil
}

// TestWorkersRunUnprivileged: as root, the master is root and every worker
// runs as www-data; the files the workers may write are theirs alone and
// live outside the private prefix, which holds the control socket.
func TestWorkersRunUnprivileged(t *testing.T) {
	needNginxLua(t)
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the nginx user directive needs the agent to run as root, and CI runs as root")
		}
		t.Skip("the nginx user directive needs the agent to run as root")
	}
	www, err := user.Lookup("www-data")
	if err != nil {
		t.Fatalf("www-data: %v", err)
	}
	_, cli := etcdtest.Start(t)
	fx := &fixture{t: t, cli: cli, store: state.NewStore(cli, "/test"), dir: stateDir(t), port: etcdtest.FreePort(t)}
	one := backend(t, "backend-one")
	rev := fx.routing("hello", []string{"hello.localhost"}, strings.TrimPrefix(one.URL, "http://"))
	p, _ := startProxy(t, fx, "hello")
	fx.waitAck("hello", rev)

	master := p.ngx.master()
	if got := procIDs(t, master, "Uid"); strings.Join(got, " ") != "0 0 0 0" {
		t.Errorf("master uids %v, want root", got)
	}
	ws := workers(master)
	if len(ws) == 0 {
		t.Fatal("no nginx worker found")
	}
	for _, w := range ws {
		for _, f := range []string{"Uid", "Gid"} {
			want := www.Uid
			if f == "Gid" {
				want = www.Gid
			}
			for _, id := range procIDs(t, w, f) {
				if id != want {
					t.Errorf("worker %d: %s %v, want all %s (www-data)", w, f, procIDs(t, w, f), want)
					break
				}
			}
		}
	}
	// A body larger than the in-memory buffer goes through a temp file the
	// worker writes.
	code, body, err := fx.get(http.MethodPost, "hello.localhost", "/echo", strings.NewReader(strings.Repeat("y", 1<<20)))
	if err != nil || code != 200 || !strings.Contains(body, "body=1048576 ") {
		t.Errorf("POST 1M: %d %q %v", code, body, err)
	}
	// The prefix (config, routes, control socket) is root's alone; the
	// temp directories belong to www-data in a directory it cannot write.
	mode := func(path string) (os.FileMode, *syscall.Stat_t) {
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode(), fi.Sys().(*syscall.Stat_t)
	}
	if m, st := mode(p.paths.Prefix); m.Perm() != 0o700 || st.Uid != 0 {
		t.Errorf("prefix %s: mode %v uid %d, want 0700 root", p.paths.Prefix, m, st.Uid)
	}
	if m, st := mode(p.paths.tempRoot()); m.Perm() != 0o755 || st.Uid != 0 || !m.IsDir() {
		t.Errorf("temp root: mode %v uid %d, want a 0755 directory of root", m, st.Uid)
	}
	for _, d := range tempDirs {
		if m, st := mode(p.paths.temp(d)); !m.IsDir() || strconv.Itoa(int(st.Uid)) != www.Uid || m.Perm()&0o077 != 0 {
			t.Errorf("temp dir %s: mode %v uid %d, want a private directory of www-data", d, m, st.Uid)
		}
	}
}

// swallower accepts connections, reads one whole request from each, notes
// it and closes the connection without answering: an app that took the
// request and crashed.
type swallower struct {
	l    net.Listener
	mu   sync.Mutex
	seen []string // method id
}

func newSwallower(t *testing.T) *swallower {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &swallower{l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				s.mu.Lock()
				s.seen = append(s.seen, req.Method+" "+req.Header.Get("X-Id"))
				s.mu.Unlock()
			}()
		}
	}()
	return s
}

func (s *swallower) saw(what string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.seen {
		if x == what {
			return true
		}
	}
	return false
}

// TestNoReplayOfNonIdempotentRequests: of two containers, the first takes
// each request and closes the connection without an answer. A POST, PATCH
// or other non-idempotent request that reached it gets 502 and never
// reaches the second; a GET or PUT is retried there.
func TestNoReplayOfNonIdempotentRequests(t *testing.T) {
	needNginxLua(t)
	_, cli := etcdtest.Start(t)
	fx := &fixture{t: t, cli: cli, store: state.NewStore(cli, "/test"), dir: stateDir(t), port: etcdtest.FreePort(t)}
	bad := newSwallower(t)
	var mu sync.Mutex
	good := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		mu.Lock()
		good[r.Method+" "+r.Header.Get("X-Id")] = true
		mu.Unlock()
		fmt.Fprintf(w, "good body=%d", n)
	}))
	t.Cleanup(srv.Close)
	rev := fx.routing("once", []string{"once.localhost"}, bad.l.Addr().String(), strings.TrimPrefix(srv.URL, "http://"))
	startProxy(t, fx, "once")
	fx.waitAck("once", rev)

	send := func(method, id string) int {
		t.Helper()
		var body io.Reader
		if method != http.MethodGet {
			body = strings.NewReader("payload " + id)
		}
		req, err := http.NewRequest(method, "http://127.0.0.1:"+strconv.Itoa(fx.port)+"/", body)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "once.localhost"
		req.Header.Set("X-Id", id)
		// Keep-alive to the proxy, and a body the client cannot replay.
		req.GetBody = nil
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, id, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, method := range []string{http.MethodPost, http.MethodPatch, "PROPPATCH", "LOCK"} {
		swallowed := 0
		for i := 0; i < 6; i++ {
			id := method + "-" + strconv.Itoa(i)
			code := send(method, id)
			key := method + " " + id
			mu.Lock()
			atGood := good[key]
			mu.Unlock()
			atBad := bad.saw(key)
			switch {
			case atBad && atGood:
				swallowed++
				t.Errorf("%s was sent to both containers: replayed after the first took it", key)
			case atBad:
				swallowed++
				if code != http.StatusBadGateway {
					t.Errorf("%s was swallowed by the first container: got %d, want 502", key, code)
				}
			case atGood:
				if code != http.StatusOK {
					t.Errorf("%s reached the good container: got %d, want 200", key, code)
				}
			default:
				t.Errorf("%s reached no container (%d)", key, code)
			}
		}
		if swallowed == 0 {
			t.Errorf("no %s reached the failing container: round-robin should send it some", method)
		}
	}
	// Idempotent requests are retried on the next container.
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		retried := 0
		for i := 0; i < 6; i++ {
			id := method + "-" + strconv.Itoa(i)
			if code := send(method, id); code != http.StatusOK {
				t.Errorf("%s %s: %d, want 200 after a retry on the good container", method, id, code)
			}
			if bad.saw(method + " " + id) {
				retried++
			}
		}
		if retried == 0 {
			t.Errorf("no %s reached the failing container first: the retry was not tested", method)
		}
	}
	// A container that refuses connections is skipped for a POST too:
	// nothing of it was sent.
	dead := backend(t, "dead")
	dead.Close()
	rev = fx.routing("once", []string{"once.localhost"}, strings.TrimPrefix(dead.URL, "http://"), strings.TrimPrefix(srv.URL, "http://"))
	fx.waitAck("once", rev)
	for i := 0; i < 4; i++ {
		if code := send(http.MethodPost, "refused-"+strconv.Itoa(i)); code != http.StatusOK {
			t.Errorf("POST with a refusing container: %d, want 200 from the other", code)
		}
	}
}

// chunked hides a body's length, so the client sends it chunked.
type chunked struct{ io.Reader }

// TestBodyLimits: a request body over the formation's limit, or the
// default one, gets 413 whether it has a Content-Length or is chunked, and
// never reaches the app; the limit changes with the routing, without a
// reload.
func TestBodyLimits(t *testing.T) {
	needNginxLua(t)
	_, cli := etcdtest.Start(t)
	fx := &fixture{t: t, cli: cli, store: state.NewStore(cli, "/test"), dir: stateDir(t), port: etcdtest.FreePort(t), body: 256 << 10}
	k := fx.store.Keys
	var mu sync.Mutex
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		mu.Lock()
		hits++
		mu.Unlock()
		fmt.Fprintf(w, "body=%d", n)
	}))
	t.Cleanup(srv.Close)
	up := strings.TrimPrefix(srv.URL, "http://")
	small := routing("small", []string{"small.localhost"}, up)
	small.MaxBodyBytes = 64 << 10
	rev := fx.put(k.Routing("small"), small)
	revDefault := fx.routing("dflt", []string{"dflt.localhost"}, up)
	_, reg := startProxy(t, fx, "small", "dflt")
	fx.waitAck("small", rev)
	fx.waitAck("dflt", revDefault)
	reloads := metric(t, reg, "deis_proxy_reloads_total")

	post := func(host string, n int, chunk bool) (int, string) {
		t.Helper()
		var body io.Reader = strings.NewReader(strings.Repeat("z", n))
		if chunk {
			body = chunked{body}
		}
		mu.Lock()
		before := hits
		mu.Unlock()
		code, text, err := fx.get(http.MethodPost, host, "/", body)
		if err != nil {
			t.Fatalf("POST %d bytes (chunked %v) to %s: %v", n, chunk, host, err)
		}
		mu.Lock()
		reached := hits > before
		mu.Unlock()
		if code == http.StatusRequestEntityTooLarge && reached {
			t.Errorf("POST %d bytes to %s: refused with 413 but the app got it", n, host)
		}
		return code, text
	}
	for _, tc := range []struct {
		host  string
		n     int
		chunk bool
		code  int
		limit string
	}{
		{"small.localhost", 64 << 10, false, 200, ""},
		{"small.localhost", 64<<10 + 1, false, 413, "64K"},
		{"small.localhost", 64 << 10, true, 200, ""},
		{"small.localhost", 64<<10 + 1, true, 413, "64K"},
		{"small.localhost", 3 << 20, true, 413, "64K"}, // beyond the 1M tier: nginx stops reading
		{"dflt.localhost", 256 << 10, false, 200, ""},
		{"dflt.localhost", 256<<10 + 1, false, 413, "256K"},
		{"dflt.localhost", 256<<10 + 1, true, 413, "256K"},
		{"dflt.localhost", 0, false, 200, ""},
	} {
		code, text := post(tc.host, tc.n, tc.chunk)
		if code != tc.code {
			t.Errorf("POST %d bytes (chunked %v) to %s: %d %q, want %d", tc.n, tc.chunk, tc.host, code, text, tc.code)
			continue
		}
		if code == 200 && text != "body="+strconv.Itoa(tc.n) {
			t.Errorf("POST %d bytes to %s: the app got %q", tc.n, tc.host, text)
		}
		if want := "request body too large: this app accepts request bodies of at most " + tc.limit + "\n"; code == 413 && text != want {
			t.Errorf("POST %d bytes to %s: 413 %q, want %q", tc.n, tc.host, text, want)
		}
	}

	// A new limit applies with the routing, without a reload.
	small.MaxBodyBytes = 1 << 20
	rev = fx.put(k.Routing("small"), small)
	fx.waitAck("small", rev)
	if code, text := post("small.localhost", 1<<20, true); code != 200 {
		t.Errorf("1M chunked after raising the limit to 1M: %d %q", code, text)
	}
	if code, text := post("small.localhost", 1<<20+1, false); code != 413 || !strings.Contains(text, "at most 1M") {
		t.Errorf("1M+1 after raising the limit to 1M: %d %q", code, text)
	}
	if n := metric(t, reg, "deis_proxy_reloads_total"); n != reloads {
		t.Errorf("a body limit change reloaded nginx (%v -> %v)", reloads, n)
	}
	// A limit above the ceiling is refused with the routing as a whole.
	small.MaxBodyBytes = 2 << 30
	fx.put(k.Routing("small"), small)
	eventually(t, "ack error for a body limit over 1G", func() bool { return strings.Contains(fx.ack("small").Error, "more than the most the proxies accept") })
	if a := fx.ack("small"); a.Revision != rev {
		t.Errorf("ack after a refused limit = %+v, want revision %d", a, rev)
	}
}
