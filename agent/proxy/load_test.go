package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/prometheus/client_golang/prometheus"
)

// load drives steady keep-alive HTTP traffic through the proxies and counts
// every request that fails or answers non-2xx, per phase of the test.
type load struct {
	t       *testing.T
	host    string
	targets []int // proxy ports
	workers int   // per target
	every   time.Duration
	body    string

	phase atomic.Value // string
	done  atomic.Int64 // requests completed, all phases

	mu     sync.Mutex
	phases []string
	stats  map[string]*loadStats
}

type loadStats struct {
	sent, failed, getFailed, postFailed int
	errs                                []string
	start, end                          time.Time
}

func newLoad(t *testing.T, host string, targets ...int) *load {
	l := &load{t: t, host: host, targets: targets, workers: 4, every: 25 * time.Millisecond,
		body: strings.Repeat("b", 2048), stats: map[string]*loadStats{}}
	l.setPhase("warmup")
	return l
}

func (l *load) setPhase(p string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if cur, ok := l.phase.Load().(string); ok {
		l.stats[cur].end = now
	}
	if _, ok := l.stats[p]; !ok {
		l.stats[p] = &loadStats{start: now}
		l.phases = append(l.phases, p)
	}
	l.phase.Store(p)
}

func (l *load) record(post bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats[l.phase.Load().(string)]
	s.sent++
	if err != nil {
		s.failed++
		if post {
			s.postFailed++
		} else {
			s.getFailed++
		}
		if len(s.errs) < 8 {
			s.errs = append(s.errs, err.Error())
		}
	}
	l.done.Add(1)
}

// run sends requests until ctx ends or max requests were sent. Each target
// has its own Go http.Transport (keep-alive, an idle pool as large as its
// workers); each worker alternates GET and POST with a body the transport
// cannot replay (GetBody unset), at a fixed pace. Nothing is retried here.
func (l *load) run(ctx context.Context, max int64) *sync.WaitGroup {
	var wg sync.WaitGroup
	var issued atomic.Int64
	for _, port := range l.targets {
		tr := &http.Transport{MaxIdleConns: 100, MaxIdleConnsPerHost: l.workers, IdleConnTimeout: 30 * time.Second}
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		base := "http://127.0.0.1:" + strconv.Itoa(port)
		for w := 0; w < l.workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				defer tr.CloseIdleConnections()
				tick := time.NewTicker(l.every)
				defer tick.Stop()
				for i := w; ; i++ {
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
					}
					if issued.Add(1) > max {
						return
					}
					post := i%2 == 1
					l.record(post, l.one(ctx, c, base, post))
				}
			}(w)
		}
	}
	return &wg
}

// one sends one request and checks its answer.
func (l *load) one(ctx context.Context, c *http.Client, base string, post bool) error {
	var req *http.Request
	var err error
	if post {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, base+"/echo", strings.NewReader(l.body))
		req.GetBody = nil // not replayable: the transport may not silently resend it
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, base+"/", nil)
	}
	if err != nil {
		return err
	}
	req.Host = l.host
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil // the test is over; not a failure of the proxy
		}
		return err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s %q", req.Method, req.URL.Path, resp.Status, clip(b, nil))
	}
	if post && !strings.Contains(string(b), " body="+strconv.Itoa(len(l.body))+" ") {
		return fmt.Errorf("POST /echo: the app did not get the whole body: %q", clip(b, nil))
	}
	return nil
}

// waitRequests waits until n more requests have completed.
func (l *load) waitRequests(n int64) {
	l.t.Helper()
	target := l.done.Load() + n
	eventually(l.t, fmt.Sprintf("%d more requests", n), func() bool { return l.done.Load() >= target })
}

// report logs every phase and returns the failures per phase.
func (l *load) report() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, p := range l.phases {
		s := l.stats[p]
		end := s.end
		if end.IsZero() {
			end = time.Now()
		}
		d := end.Sub(s.start).Seconds()
		l.t.Logf("load phase %-10s sent %6d (%.0f req/s over %.1fs), failed %d (GET %d, POST %d)", p, s.sent, float64(s.sent)/d, d, s.failed, s.getFailed, s.postFailed)
		for _, e := range s.errs {
			l.t.Logf("  %s", e)
		}
		out[p] = s.failed
	}
	return out
}

// namedBackend is an app container: a Go httptest server answering its
// name, and echoing the size of the body it got.
func namedBackend(name string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/echo" {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%s body=%d ok", name, n)
			return
		}
		fmt.Fprint(w, name)
	}))
}

// TestNoDropsUnderLoad keeps a steady keep-alive load on two proxy nodes
// while the routing of the formation changes as rollouts change it (config
// changes, rollbacks, scaling, restarts), then while formations are added
// and removed, and counts every failed request. Old backends stay up until
// both proxies acked the routing that no longer names them, plus a moment,
// as the scheduler does.
func TestNoDropsUnderLoad(t *testing.T) {
	needNginxLua(t)
	_, cli := etcdtest.Start(t)
	store := state.NewStore(cli, "/test")
	k := store.Keys
	var fxs []*fixture
	for _, n := range []string{"n1", "n2"} {
		fx := &fixture{t: t, cli: cli, store: store, dir: stateDir(t), port: etcdtest.FreePort(t), node: n}
		fx.put(k.Node(n), state.Node{Name: n, Addr: "127.0.0.1", Labels: map[string]string{"role": "proxy"}})
		fxs = append(fxs, fx)
	}
	fx := fxs[0]
	layer := state.Layer{Name: "proxy", Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}}
	fx.put(k.Layer("hello", "proxy"), layer)

	var mu sync.Mutex
	live := map[string]*httptest.Server{}
	seq := 0
	start := func() string {
		mu.Lock()
		defer mu.Unlock()
		seq++
		s := namedBackend("backend-" + strconv.Itoa(seq))
		a := strings.TrimPrefix(s.URL, "http://")
		live[a] = s
		return a
	}
	t.Cleanup(func() {
		for _, s := range live {
			s.Close()
		}
	})
	waitAcks := func(f string, rev int64) {
		t.Helper()
		for _, fx := range fxs {
			fx.waitAck(f, rev)
		}
	}

	cur := []string{start()}
	rev := fx.routing("hello", []string{"hello.localhost"}, cur...)
	regs := make([]*prometheus.Registry, len(fxs))
	stops := make([]func(), len(fxs))
	for i, fx := range fxs {
		p, reg, stop := fx.run()
		regs[i], stops[i] = reg, stop
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = p.StopNginx(ctx)
		})
	}
	waitAcks("hello", rev)

	l := newLoad(t, "hello.localhost", fxs[0].port, fxs[1].port)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wg := l.run(ctx, 200000)
	defer func() { cancel(); wg.Wait() }()
	l.waitRequests(200)

	// Each step is one routing change as the scheduler writes it: new
	// containers are up before the routing names them; the ones it no
	// longer names stop after every proxy acked, plus a moment.
	replace := func(cur []string) []string {
		out := make([]string, len(cur))
		for i := range out {
			out[i] = start()
		}
		return out
	}
	steps := []struct {
		what string
		next func(cur []string) []string
	}{}
	add := func(what string, n int, next func([]string) []string) {
		for i := 0; i < n; i++ {
			steps = append(steps, struct {
				what string
				next func([]string) []string
			}{what, next})
		}
	}
	scaleUp := func(cur []string) []string { return append(append([]string{}, cur...), start()) }
	scaleDown := func(cur []string) []string { return append([]string{}, cur[1:]...) }
	add("config:set", 10, replace)
	add("rollback", 3, replace)
	add("scale-up", 1, scaleUp)
	add("scale-down", 1, scaleDown)
	add("ps:restart", 1, replace)
	add("scale-up", 2, scaleUp)
	add("config:set", 2, replace)
	add("scale-down", 1, scaleDown)
	add("ps:restart", 1, replace)

	l.setPhase("upstreams")
	for i, s := range steps {
		next := s.next(cur)
		rev := fx.routing("hello", []string{"hello.localhost"}, next...)
		waitAcks("hello", rev)
		l.waitRequests(30) // the moment before old containers stop, under load
		keep := map[string]bool{}
		for _, a := range next {
			keep[a] = true
		}
		for _, a := range cur {
			if !keep[a] {
				mu.Lock()
				s := live[a]
				delete(live, a)
				mu.Unlock()
				s.Close()
			}
		}
		t.Logf("step %d %s: %d upstreams at revision %d", i+1, s.what, len(next), rev)
		cur = next
	}

	// Formations come and go (apps:create, apps:destroy).
	l.setPhase("formations")
	other := start()
	for _, f := range []string{"second", "third"} {
		fx.put(k.Layer(f, "proxy"), layer)
		rev := fx.routing(f, []string{f + ".localhost"}, other)
		waitAcks(f, rev)
		l.waitRequests(100)
	}
	if _, err := cli.Delete(context.Background(), k.Layer("second", "proxy")); err != nil {
		t.Fatal(err)
	}
	for _, fx := range fxs {
		eventually(t, "ack of second removed", func() bool { return fx.ack("second").Revision == 0 })
	}
	l.waitRequests(100)
	for i, reg := range regs {
		if n := metric(t, reg, "deis_proxy_reloads_total"); n != 1 {
			t.Errorf("proxy %s: %v reloads and starts, want only the start: routing changes must not reload nginx", fxs[i].nodeName(), n)
		}
	}

	// The config itself changes (here the base domain; also listen
	// addresses, an agent upgrade): the agent restarts, adopts nginx and
	// reloads it, draining keep-alive connections first.
	l.setPhase("reloads")
	for round, base := range []string{"apps.localhost", "localhost", "apps.localhost"} {
		var wg sync.WaitGroup
		for i, fx := range fxs {
			stops[i]()
			fx.base = base
			var reg *prometheus.Registry
			_, reg, stops[i] = fx.run()
			wg.Add(1)
			go func() {
				defer wg.Done()
				eventually(t, "nginx serving base domain "+base, func() bool {
					_, body, err := fx.get(http.MethodGet, "unknown.localhost", "/", nil)
					return err == nil && strings.Contains(body, "APP."+base+"\n")
				})
				if n := metric(t, reg, "deis_proxy_reloads_total"); n != 1 {
					t.Errorf("round %d: proxy %s: %v reloads, want 1", round, fx.nodeName(), n)
				}
			}()
		}
		wg.Wait()
		l.waitRequests(100)
	}
	l.setPhase("end")
	cancel()
	wg.Wait()

	failed := l.report()
	for _, p := range []string{"warmup", "upstreams", "formations", "reloads"} {
		if failed[p] != 0 {
			t.Errorf("%d requests failed in phase %s", failed[p], p)
		}
	}
}
