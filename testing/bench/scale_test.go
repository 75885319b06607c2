package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(RoleEnv); role != "" {
		os.Exit(RunRole(role))
	}
	os.Exit(m.Run())
}

type size struct{ nodes, formations, containers int }

func (s size) String() string {
	return fmt.Sprintf("%s / %s / %s", thousands(s.nodes), thousands(s.formations), thousands(s.containers))
}

// DefaultScale is what DEIS_BENCH_SCALE=1 runs.
const DefaultScale = "10/50/200,100/500/2000,1000/2000/20000"

// scaleConfig reads the benchmark's settings from the environment.
//
//	DEIS_BENCH_SCALE    unset: one tiny size (3/4/8, 2 s idle), so that the
//	                    test runs in `go test ./...`; 1: DefaultScale; or a
//	                    list nodes/formations/containers,...
//	DEIS_BENCH_IDLE     how long the idle CPU is measured (default 20s)
//	DEIS_BENCH_CAP      the longest one phase may take (default 300s)
//	DEIS_BENCH_PROXIES  proxy nodes (default 2)
//	DEIS_BENCH_OUT      a file the table is appended to
//	DEIS_BENCH_LOGS     a directory that keeps etcd's and the controller's
//	                    logs (and etcd's data), one subdirectory per size
//
// The tiny size is a test: it fails when a phase does not finish. At scale a
// phase that does not finish within DEIS_BENCH_CAP is recorded as such.
func scaleConfig(t *testing.T) (sizes []size, idle, limit time.Duration, proxies int, strict bool) {
	spec := os.Getenv("DEIS_BENCH_SCALE")
	idle, limit, proxies = 20*time.Second, 300*time.Second, 2
	switch spec {
	case "":
		if testing.Short() {
			t.Skip("the scale benchmark starts etcd and the controller as processes; DEIS_BENCH_SCALE=1 runs it at scale")
		}
		spec, idle, limit, strict = "3/4/8", 2*time.Second, time.Minute, true
	case "1":
		spec = DefaultScale
	}
	for _, s := range strings.Split(spec, ",") {
		var sz size
		if _, err := fmt.Sscanf(strings.TrimSpace(s), "%d/%d/%d", &sz.nodes, &sz.formations, &sz.containers); err != nil ||
			sz.nodes < 2 || sz.formations < 1 || sz.containers < sz.formations {
			t.Fatalf("DEIS_BENCH_SCALE: %q is not nodes/formations/containers (at least 2 nodes, one container per formation)", s)
		}
		sizes = append(sizes, sz)
	}
	dur := func(env string, d *time.Duration) {
		if v := os.Getenv(env); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil || x <= 0 {
				t.Fatalf("%s: %q is not a duration", env, v)
			}
			*d = x
		}
	}
	dur("DEIS_BENCH_IDLE", &idle)
	dur("DEIS_BENCH_CAP", &limit)
	if v := os.Getenv("DEIS_BENCH_PROXIES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("DEIS_BENCH_PROXIES: %q is not a positive number", v)
		}
		proxies = n
	}
	return sizes, idle, limit, proxies, strict
}

// result is one size's figures; a zero duration means not measured.
type result struct {
	size
	proxies int
	// cold start: from the controller's start until every formation is
	// routed with all its containers ready and acknowledged.
	cold                  time.Duration
	coldDone              bool
	coldConverged         int // formations converged when it stopped
	coldPlaced, coldReady int
	coldCPU               time.Duration
	coldGets, coldBytes   int64
	// when every container was first placed, and reported ready (0: never)
	coldAllPlaced, coldAllReady time.Duration
	coldPasses                  float64
	// one config:set
	cfgTotal, cfgAfterReady time.Duration
	cfgDone                 bool
	cfgRetired              time.Duration // until the old release's containers left the databags
	// a node lost (lease revoked)
	lostContainers      int
	lostPlaced, lostRun time.Duration
	lostDone            bool
	// nothing changing
	idle                       time.Duration
	idleCPU                    time.Duration
	idlePasses                 float64
	idleGetsPerPass, idleBytes float64
	rss, peak                  int64
	etcdCPU, simCPU            time.Duration
}

// TestScale measures the real scheduler controller (a separate process) on
// a real etcd (another process) with simulated runtime agents and proxies:
// cold start, one config:set, a node lost, CPU with nothing changing and
// etcd reads per pass. At the tiny size of a plain `go test` it checks that
// every phase converges; the figures go to the log and DEIS_BENCH_OUT
// (docs/benchmarks.md) and are never asserted.
func TestScale(t *testing.T) {
	sizes, idle, limit, proxies, strict := scaleConfig(t)
	var results []result
	for _, sz := range sizes {
		t.Run(fmt.Sprintf("nodes=%d", sz.nodes), func(t *testing.T) {
			r := runScale(t, sz, proxies, idle, limit)
			if strict && !(r.coldDone && r.cfgDone && r.cfgRetired > 0 && r.lostDone) {
				t.Errorf("the installation did not converge in every phase within %s", limit)
			}
			results = append(results, r)
			t.Logf("\n%s", table([]result{r}))
		})
	}
	out := table(results)
	t.Logf("scale benchmark (%s):\n%s", time.Now().UTC().Format("2006-01-02 15:04 MST"), out)
	if path := os.Getenv("DEIS_BENCH_OUT"); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fmt.Fprintf(f, "%s, %d proxies, idle %s\n\n%s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), proxies, idle, out)
	}
}

const prefix = "/bench"

func runScale(t *testing.T, sz size, proxies int, idle, limit time.Duration) result {
	r := result{size: sz, proxies: proxies, idle: idle}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	if keep := os.Getenv("DEIS_BENCH_LOGS"); keep != "" {
		// The processes' logs (etcd.log, controller.log) stay there.
		dir = filepath.Join(keep, fmt.Sprintf("nodes=%d", sz.nodes))
		must(os.RemoveAll(dir))
		must(os.MkdirAll(dir, 0o755))
	}

	// etcd, in its own process.
	cu := fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t))
	pu := fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t))
	etcd, err := startRole("etcd", filepath.Join(dir, "etcd.log"), dirEnv+"="+filepath.Join(dir, "etcd"), clientEnv+"="+cu, peerEnv+"="+pu)
	must(err)
	defer etcd.stop()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cu}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	must(err)
	defer cli.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		gctx, gcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Get(gctx, "x")
		gcancel()
		if err == nil {
			break
		}
		if etcd.exited() || time.Now().After(deadline) {
			t.Fatalf("etcd did not start: %v (log %s)", err, filepath.Join(dir, "etcd.log"))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The agents: runtime nodes and proxies, registered with heartbeats.
	sim := NewSim(cli, prefix)
	store := state.NewStore(cli, prefix)
	start := time.Now()
	var names []string
	parallel(t, 16, sz.nodes+proxies, func(i int) error {
		if i < proxies {
			return sim.AddNode(ctx, fmt.Sprintf("proxy%d", i), fmt.Sprintf("10.255.0.%d", i+1), string(state.LayerProxy))
		}
		i -= proxies
		return sim.AddNode(ctx, nodeName(i), fmt.Sprintf("10.%d.%d.%d", 1+i/65536, i/256%256, i%256), string(state.LayerRuntime))
	})
	for i := 0; i < sz.nodes; i++ {
		names = append(names, nodeName(i))
	}
	// The formations, as deisctl formations:create, scale and a first
	// release (a slug build) leave them.
	now := time.Now().UTC()
	forms := make([]string, sz.formations)
	for i := range forms {
		f := fmt.Sprintf("app%04d", i)
		forms[i] = f
		scale := sz.containers / sz.formations
		if i < sz.containers%sz.formations {
			scale++
		}
		layer := func(typ state.LayerType) clientv3.Op {
			return clientv3.OpPut(store.Keys.Layer(f, string(typ)), state.Marshal(state.Layer{Formation: f, Name: string(typ), Type: typ,
				Selector: map[string]string{"role": string(typ)}, Created: now}))
		}
		must(store.CreateFormation(ctx, &state.Formation{Name: f, Scale: map[string]int{"web": scale}, Created: now},
			layer(state.LayerRuntime), layer(state.LayerProxy),
			clientv3.OpPut(store.Keys.Config(f), state.Marshal(state.Config{Vars: map[string]string{"GREETING": "hello"}}))))
		sim.AddFormation(f, scale, 1)
	}
	parallel(t, 8, len(forms), func(i int) error {
		f := forms[i]
		sum := fmt.Sprintf("%064x", i+1)
		_, err := store.AppendRelease(ctx, f, func(prev *state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
			return &state.Release{Description: "deploy", Config: map[string]string{"GREETING": "hello"},
				Build: &state.Build{ID: "b1", Formation: f, GitSHA: sum[:40], Image: "deis/stack:bookworm",
					ProcessTypes: map[string]string{"web": "bin/web --port $PORT"}, Buildpack: "go",
					Slug: &state.SlugRef{SHA256: sum, Size: 4 << 20}, Created: now}}, nil, nil, nil
		})
		return err
	})
	resp, err := cli.Get(ctx, "x")
	must(err)
	sim.Target(sz.containers)
	sim.Start(ctx, resp.Header.Revision, 8, 4)
	t.Logf("%s: %d nodes, %d proxies, %d formations registered in %s", sz, sz.nodes, proxies, sz.formations, time.Since(start).Round(time.Millisecond))

	// The controller, in its own process.
	stAddr := fmt.Sprintf("127.0.0.1:%d", etcdtest.FreePort(t))
	logPath := filepath.Join(dir, "controller.log")
	t0 := time.Now()
	ctl, err := startRole("controller", logPath, clientEnv+"="+cu, prefixEnv+"="+prefix, statsEnv+"="+stAddr)
	must(err)
	defer ctl.stop()
	readStats := func() Stats {
		t.Helper()
		for i := 0; ; i++ {
			sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
			st, err := stats(sctx, stAddr)
			scancel()
			if err == nil {
				return st
			}
			if i == 50 || ctl.exited() {
				t.Fatalf("controller stats: %v (log %s)", err, logPath)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	cpu := func(p *proc) time.Duration {
		t.Helper()
		d, err := p.cpu()
		must(err)
		return d
	}
	wait := func(what string, cond func() bool) (time.Time, bool) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, limit)
		defer wcancel()
		done := make(chan struct{})
		defer close(done)
		go func() {
			tick := time.NewTicker(10 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					c, p, rd := sim.Counts()
					t.Logf("  %s: waiting for %s: %d/%d formations converged, %d containers placed, %d reported ready",
						time.Since(t0).Round(time.Second), what, c, sz.formations, p, rd)
				}
			}
		}()
		at, err := sim.WaitFor(wctx, cond)
		if err != nil && wctx.Err() == nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err != nil {
			t.Logf("%s: not done after %s", what, limit)
			return time.Time{}, false
		}
		return at, true
	}

	// Cold start.
	at, ok := wait("cold start", sim.AllConverged)
	r.coldDone = ok
	if ok {
		r.cold = at.Sub(t0)
	} else {
		r.cold = time.Since(t0)
	}
	r.coldConverged, r.coldPlaced, r.coldReady = sim.Counts()
	r.coldCPU = cpu(ctl)
	st := readStats()
	r.coldPasses = st.Passes
	r.coldGets, r.coldBytes = st.Gets, st.GetBytes
	placedAll, readyAll := sim.Milestones()
	if !placedAll.IsZero() {
		r.coldAllPlaced = placedAll.Sub(t0)
	}
	if !readyAll.IsZero() {
		r.coldAllReady = readyAll.Sub(t0)
	}
	since := func(at time.Time) string {
		if at.IsZero() {
			return "never"
		}
		return at.Sub(t0).Round(time.Millisecond).String()
	}
	t.Logf("cold start: every container placed after %s, reported ready after %s, routed and acknowledged after %s; %d passes, controller CPU %s",
		since(placedAll), since(readyAll), r.cold.Round(time.Millisecond), int(st.Passes), r.coldCPU)
	if !ok {
		r.rss, r.peak, _ = ctl.mem()
		r.etcdCPU = cpu(etcd)
		r.simCPU, _ = procCPU(os.Getpid())
		return r
	}

	// Nothing changing.
	time.Sleep(3 * time.Second)
	c0, s0 := cpu(ctl), readStats()
	time.Sleep(idle)
	c1, s1 := cpu(ctl), readStats()
	r.idleCPU = c1 - c0
	r.idlePasses = s1.Passes - s0.Passes
	if r.idlePasses > 0 {
		r.idleGetsPerPass = float64(s1.Gets-s0.Gets) / r.idlePasses
		r.idleBytes = float64(s1.GetBytes-s0.GetBytes) / r.idlePasses
	}
	t.Logf("idle %s: controller CPU %s, %d passes, %d Gets, %d bytes", idle, r.idleCPU, int(r.idlePasses), s1.Gets-s0.Gets, s1.GetBytes-s0.GetBytes)

	// One config:set.
	f := forms[len(forms)/2]
	t0 = time.Now()
	rel, err := store.AppendRelease(ctx, f, func(prev *state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
		cfg := map[string]string{"BENCH": "1"}
		for k, v := range prev.Config {
			cfg[k] = v
		}
		return &state.Release{Build: prev.Build, Config: cfg, Description: "config:set BENCH=1"}, nil, nil, nil
	})
	must(err)
	sim.Released(f, rel.Version)
	if at, ok := wait("config:set of "+f, sim.Converged(f)); ok {
		r.cfgDone = true
		r.cfgTotal = at.Sub(t0)
		if ready := sim.ReadyAt(sim.Placed(f, rel.Version)); !ready.IsZero() {
			r.cfgAfterReady = at.Sub(ready)
		}
		t.Logf("config:set of %s: routed and acknowledged after %s, %s after its containers were ready", f, r.cfgTotal.Round(time.Millisecond), r.cfgAfterReady.Round(time.Millisecond))
		if at, ok := wait("retiring the old containers of "+f, func() bool { return len(sim.placed(f, rel.Version-1)) == 0 }); ok {
			r.cfgRetired = at.Sub(t0)
		}
	}

	// A node lost.
	lost := names[len(names)/2]
	lostNames, err := sim.KillNode(ctx, lost)
	must(err)
	t0 = time.Now()
	r.lostContainers = len(lostNames)
	if at, ok := wait("re-placing the containers of "+lost, sim.Replaced); ok {
		r.lostPlaced = at.Sub(t0)
		if at, ok := wait("routing after losing "+lost, sim.AllConverged); ok {
			r.lostDone = true
			r.lostRun = at.Sub(t0)
		}
	}
	t.Logf("node %s lost with %d containers: re-placed after %s, routed and acknowledged after %s", lost, r.lostContainers, r.lostPlaced.Round(time.Millisecond), r.lostRun.Round(time.Millisecond))

	r.rss, r.peak, err = ctl.mem()
	must(err)
	r.etcdCPU = cpu(etcd)
	r.simCPU, _ = procCPU(os.Getpid())
	if err := sim.Err(); err != nil {
		t.Fatal(err)
	}
	return r
}

func nodeName(i int) string { return fmt.Sprintf("node%04d", i) }

// parallel runs fn(0..n-1) on workers goroutines and fails the test on the
// first error.
func parallel(t *testing.T, workers, n int, fn func(i int) error) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  int
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}

// table renders results as the Markdown table of docs/benchmarks.md.
func table(rs []result) string {
	var b strings.Builder
	b.WriteString("| nodes / formations / containers | cold start: containers placed, ready and routed per second | one `config:set`: new release routed and acknowledged (after its containers were ready) | a node lost: its containers re-placed / routed again | scheduler CPU with nothing changing | etcd reads per pass (idle) | scheduler RSS now / peak |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		cold := fmt.Sprintf("≈ %s/s (%s)", thousands(int(float64(r.containers)/r.cold.Seconds()+0.5)), secs(r.cold))
		if !r.coldDone {
			cold = fmt.Sprintf("not done in %s: %s of %s formations routed, %s containers placed, %s reported ready",
				secs(r.cold), thousands(r.coldConverged), thousands(r.formations), thousands(r.coldPlaced), thousands(r.coldReady))
		}
		cfg, lost, idle := "not measured", "not measured", "not measured"
		if r.cfgDone {
			cfg = fmt.Sprintf("%s (%s)", secs(r.cfgTotal), secs(r.cfgAfterReady))
			if r.cfgRetired == 0 {
				cfg += ", old containers not retired in the time limit"
			}
		} else if r.coldDone {
			cfg = "not done in the time limit"
		}
		switch {
		case r.lostDone:
			lost = fmt.Sprintf("%d containers: %s / %s", r.lostContainers, secs(r.lostPlaced), secs(r.lostRun))
		case r.lostPlaced > 0:
			lost = fmt.Sprintf("%d containers: %s / not done in the time limit", r.lostContainers, secs(r.lostPlaced))
		case r.coldDone:
			lost = "not done in the time limit"
		}
		reads := ""
		if r.coldDone {
			idle = fmt.Sprintf("%.1f%% (%s in %s)", 100*r.idleCPU.Seconds()/r.idle.Seconds(), passes(r.idlePasses), secs(r.idle))
		}
		if r.idlePasses > 0 {
			reads += fmt.Sprintf("%s Gets, %s", thousands(int(r.idleGetsPerPass+0.5)), mb(int64(r.idleBytes)))
		} else {
			reads += "no pass"
			if !r.coldDone {
				reads = "not measured"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s / %s |\n", r.size, cold, cfg, lost, idle, reads, mb(r.rss), mb(r.peak))
	}
	b.WriteString("\n| nodes | cold start: every container placed / reported ready / routed and acknowledged | cold start: controller CPU, passes, Gets (MB) | CPU time of the whole run: etcd / simulator |\n|---|---|---|---|\n")
	for _, r := range rs {
		at := func(d time.Duration) string {
			if d == 0 {
				return "never"
			}
			return secs(d)
		}
		routed := secs(r.cold)
		if !r.coldDone {
			routed = "not in " + routed
		}
		fmt.Fprintf(&b, "| %s | %s / %s / %s | %s, %s, %s Gets (%s) | %s / %s |\n", thousands(r.nodes),
			at(r.coldAllPlaced), at(r.coldAllReady), routed, secs(r.coldCPU), passes(r.coldPasses),
			thousands(int(r.coldGets)), mb(r.coldBytes), secs(r.etcdCPU), secs(r.simCPU))
	}
	return b.String()
}

func passes(n float64) string {
	if n == 1 {
		return "1 pass"
	}
	return thousands(int(n)) + " passes"
}

func secs(d time.Duration) string {
	switch {
	case d < 10*time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
}

func mb(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d KB", n>>10)
	}
	return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
}

func thousands(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
