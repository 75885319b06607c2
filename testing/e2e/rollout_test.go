package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/testing/harness"
)

// TestRolloutLatency runs web=4 across three runtime nodes behind two proxy
// nodes, under a keep-alive load, and changes the config 10 times (3
// unless DEIS_BENCH_OUT is set). It
// requires that no request fails, and reports (never asserts) how long each
// config:set took until both proxies served the new release, p50 and p90,
// with the breakdown of one rollout into its phases, read from the debug
// logs of the coordinator and the agents (median over the rollouts).
// DEIS_BENCH_OUT names a file that gets the report.
func TestRolloutLatency(t *testing.T) {
	p := harness.NewPlatform(t)
	var runtimes, proxies []*harness.Agent
	for i := 1; i <= 3; i++ {
		runtimes = append(runtimes, p.StartAgent(fmt.Sprintf("roll-r%d", i), harness.AgentOptions{Addr: fmt.Sprintf("127.0.0.%d", 50+i), Labels: "role=runtime"}))
	}
	for i := 1; i <= 2; i++ {
		proxies = append(proxies, p.StartAgent(fmt.Sprintf("roll-p%d", i), harness.AgentOptions{Addr: fmt.Sprintf("127.0.0.%d", 60+i), Labels: "role=proxy"}))
	}
	const f = "roll"
	host := f + ".localhost"
	deploy(t, p, f)
	for _, px := range proxies {
		p.WaitApp(px, host, "hello from roll (v1)", 3*time.Minute)
	}
	p.MustCtl("", "scale", "web=4", "-f", f)
	waitReady(t, p, f, 4, "")
	harness.Eventually(t, 3*time.Minute, "web=4 spread over the three runtime nodes", func() (bool, string) {
		c, out := readyCount(p, f)
		return len(c) == 3, out
	})

	ctx, cancel := context.WithCancel(context.Background())
	var stats loadStats
	wg := runLoad(ctx, proxies, host, 100, &stats)
	defer func() { cancel(); wg.Wait() }()

	// 10 rollouts when measuring (DEIS_BENCH_OUT), 3 to check the
	// behaviour within CI's time.
	rollouts := 3
	if os.Getenv("DEIS_BENCH_OUT") != "" {
		rollouts = 10
	}
	var total []time.Duration
	var phases []map[string]time.Duration
	perContainer := map[string][]time.Duration{}
	release := 1
	for i := 1; i <= rollouts; i++ {
		release++
		t0 := time.Now()
		p.MustCtl("", "config:set", fmt.Sprintf("GREETING=g%d", i), "-f", f)
		ctlDone := time.Since(t0)
		serving := servedEverywhere(t, proxies, host, fmt.Sprintf("g%d from roll (v%d)", i, release), 3*time.Minute)
		total = append(total, serving.Sub(t0))
		// Let the retired containers go before the next change, so each
		// rollout starts from web=4 and nothing else.
		waitReady(t, p, f, 4, "")
		ph := rolloutPhases(p, runtimes, proxies, f, release, t0, perContainer)
		ph["deisctl config:set returned"] = ctlDone
		ph["both proxies serve it (test saw)"] = serving.Sub(t0)
		phases = append(phases, ph)
	}
	cancel()
	wg.Wait()

	var b strings.Builder
	sort.Slice(total, func(i, j int) bool { return total[i] < total[j] })
	fmt.Fprintf(&b, "web=4 on 3 runtime nodes, 2 proxies, %d config:set: until both proxies serve the new release p50 %s, p90 %s, worst %s; requests %d, failed %d\n",
		rollouts, pct(total, 50), pct(total, 90), total[len(total)-1].Round(10*time.Millisecond), stats.sent.Load(), stats.failed.Load())
	fmt.Fprintf(&b, "phase (time after config:set started; median of %d rollouts, the last container or proxy of each):\n", rollouts)
	for _, name := range phaseOrder {
		var ds []time.Duration
		for _, ph := range phases {
			if d, ok := ph[name]; ok {
				ds = append(ds, d)
			}
		}
		if len(ds) == 0 {
			fmt.Fprintf(&b, "  %-44s  (not in the logs)\n", name)
			continue
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		fmt.Fprintf(&b, "  %-44s %6d ms\n", name, pct(ds, 50).Milliseconds())
	}
	fmt.Fprintf(&b, "per container (p50 / p90 of %d containers):\n", len(perContainer[containerPhases[0]]))
	for _, name := range containerPhases {
		ds := perContainer[name]
		if len(ds) == 0 {
			continue
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		fmt.Fprintf(&b, "  %-44s %6d / %d ms\n", name, pct(ds, 50).Milliseconds(), pct(ds, 90).Milliseconds())
	}
	t.Log(b.String())
	if dir := os.Getenv("DEIS_ROLLOUT_LOGS"); dir != "" { // for a closer look at the phases
		os.WriteFile(filepath.Join(dir, "coordinator.log"), []byte(p.Coordinator.Log()), 0o644)
		for _, a := range append(runtimes, proxies...) {
			os.WriteFile(filepath.Join(dir, a.Name+".log"), []byte(a.Log()), 0o644)
		}
	}
	if out := os.Getenv("DEIS_BENCH_OUT"); out != "" {
		os.WriteFile(out, []byte(b.String()), 0o644)
	}
	if stats.failed.Load() != 0 {
		t.Errorf("%d of %d requests failed; first errors:\n%s", stats.failed.Load(), stats.sent.Load(), strings.Join(stats.errors, "\n"))
	}
}

// phaseOrder lists the milestones of a rollout in the order they happen.
var phaseOrder = []string{
	"deisctl config:set returned",
	"scheduler wrote the runtime databags",
	"agents saw the databag (start task)",
	"containers created (slug ready)",
	"containers started",
	"containers ready (probe passed)",
	"agents wrote their status",
	"scheduler wrote the routing databag",
	"proxies pushed the routes to nginx",
	"proxies acknowledged",
	"scheduler saw every ack",
	"both proxies serve it (test saw)",
}

// containerPhases are the durations measured per container.
var containerPhases = []string{"create and start (deis_agent_container_start_seconds)", "start to ready (deis_agent_health_ready_seconds)"}

// servedEverywhere polls every proxy every 10ms until each answers with
// want, and returns when the last one first did.
func servedEverywhere(t *testing.T, proxies []*harness.Agent, host, want string, timeout time.Duration) time.Time {
	t.Helper()
	var mu sync.Mutex
	var last time.Time
	var wg sync.WaitGroup
	failed := make(chan string, len(proxies))
	for _, px := range proxies {
		wg.Add(1)
		go func(px *harness.Agent) {
			defer wg.Done()
			deadline := time.Now().Add(timeout)
			for {
				code, body, err := harness.Get(px.Addr, px.HTTPPort, host)
				if err == nil && code == 200 && strings.Contains(body, want) {
					now := time.Now()
					mu.Lock()
					if now.After(last) {
						last = now
					}
					mu.Unlock()
					return
				}
				if time.Now().After(deadline) {
					failed <- fmt.Sprintf("%s did not serve %q: code %d body %q err %v", px.Name, want, code, body, err)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}(px)
	}
	wg.Wait()
	select {
	case msg := <-failed:
		t.Fatal(msg)
	default:
	}
	return last
}

// logLine is one line of a process's slog text log.
type logLine struct {
	at     time.Time
	fields map[string]string
}

// parseLog reads slog's text format (key=value, values quoted when needed).
func parseLog(s string) []logLine {
	var out []logLine
	for _, line := range strings.Split(s, "\n") {
		fields := map[string]string{}
		for line != "" {
			line = strings.TrimLeft(line, " ")
			k, rest, ok := strings.Cut(line, "=")
			if !ok || strings.Contains(k, " ") {
				break
			}
			var v string
			if strings.HasPrefix(rest, `"`) {
				q, err := strconv.QuotedPrefix(rest)
				if err != nil {
					break
				}
				v, _ = strconv.Unquote(q)
				rest = rest[len(q):]
			} else {
				v, rest, _ = strings.Cut(rest, " ")
			}
			fields[k] = v
			line = rest
		}
		at, err := time.Parse(time.RFC3339Nano, fields["time"])
		if err != nil {
			continue
		}
		out = append(out, logLine{at: at, fields: fields})
	}
	return out
}

// rolloutPhases reads from the logs when each phase of the rollout of
// release rel of formation f ended, as durations since t0.
// Per container, it adds the durations of containerPhases to perContainer.
func rolloutPhases(p *harness.Platform, runtimes, proxies []*harness.Agent, f string, rel int, t0 time.Time, perContainer map[string][]time.Duration) map[string]time.Duration {
	out := map[string]time.Duration{}
	v := strconv.Itoa(rel)
	since := func(at time.Time) time.Duration { return at.Sub(t0) }
	first := func(lines []logLine, after time.Time, match func(map[string]string) bool) (time.Time, bool) {
		for _, l := range lines {
			if !l.at.Before(after) && match(l.fields) {
				return l.at, true
			}
		}
		return time.Time{}, false
	}
	lastOf := func(lines []logLine, after time.Time, match func(map[string]string) bool) (time.Time, bool) {
		var at time.Time
		for _, l := range lines {
			if !l.at.Before(after) && match(l.fields) {
				at = l.at
			}
		}
		return at, !at.IsZero()
	}
	// setMax records the latest time seen for a phase.
	maxAt := map[string]time.Time{}
	setMax := func(name string, at time.Time) {
		if at.After(maxAt[name]) {
			maxAt[name] = at
		}
	}
	start := t0.Add(-5 * time.Millisecond) // log times are to the millisecond
	coord := parseLog(p.Coordinator.Log())
	if at, ok := first(coord, start, func(m map[string]string) bool { return m["msg"] == "runtime databag written" }); ok {
		out["scheduler wrote the runtime databags"] = since(at)
	}
	for _, a := range runtimes {
		lines := parseLog(a.Log())
		ours := func(msg string) func(map[string]string) bool {
			return func(m map[string]string) bool { return m["msg"] == msg && m["formation"] == f && m["release"] == v }
		}
		if at, ok := first(lines, start, func(m map[string]string) bool {
			return m["msg"] == "reconcile" && strings.Contains(m["reason"], f+".v"+v+".")
		}); ok {
			setMax("agents saw the databag (start task)", at)
		}
		for msg, name := range map[string]string{"creating container": "containers created (slug ready)",
			"container started": "containers started", "container ready": "containers ready (probe passed)"} {
			if at, ok := lastOf(lines, start, ours(msg)); ok {
				setMax(name, at)
			}
		}
		byName := map[string]map[string]time.Time{}
		for _, l := range lines {
			if !l.at.Before(start) && l.fields["formation"] == f && l.fields["release"] == v {
				if byName[l.fields["container"]] == nil {
					byName[l.fields["container"]] = map[string]time.Time{}
				}
				if _, seen := byName[l.fields["container"]][l.fields["msg"]]; !seen {
					byName[l.fields["container"]][l.fields["msg"]] = l.at
				}
			}
		}
		for _, m := range byName {
			c, s, r := m["creating container"], m["container started"], m["container ready"]
			if !c.IsZero() && !s.IsZero() {
				perContainer[containerPhases[0]] = append(perContainer[containerPhases[0]], s.Sub(c))
			}
			if !s.IsZero() && !r.IsZero() {
				perContainer[containerPhases[1]] = append(perContainer[containerPhases[1]], r.Sub(s))
			}
		}
		if ready, ok := lastOf(lines, start, ours("container ready")); ok {
			if at, ok := first(lines, ready, func(m map[string]string) bool { return m["msg"] == "status written" }); ok {
				setMax("agents wrote their status", at)
			}
		}
	}
	routed, ok := first(coord, start, func(m map[string]string) bool {
		return m["msg"] == "routing databag written" && m["formation"] == f && m["release"] == v
	})
	if ok {
		out["scheduler wrote the routing databag"] = since(routed)
		for _, a := range proxies {
			lines := parseLog(a.Log())
			applied, ok := first(lines, routed, func(m map[string]string) bool { return m["msg"] == "nginx routes by the new routing" })
			if !ok {
				continue
			}
			setMax("proxies pushed the routes to nginx", applied)
			if at, ok := first(lines, applied, func(m map[string]string) bool {
				return m["msg"] == "routing acknowledged" && m["formation"] == f
			}); ok {
				setMax("proxies acknowledged", at)
			}
		}
	}
	if at, ok := first(coord, start, func(m map[string]string) bool {
		return m["msg"] == "rollout complete" && m["formation"] == f && m["release"] == v
	}); ok {
		out["scheduler saw every ack"] = since(at)
	}
	for name, at := range maxAt {
		out[name] = since(at)
	}
	return out
}

// pct is the p-th percentile of sorted ds.
func pct(ds []time.Duration, p int) time.Duration {
	i := (len(ds)*p+99)/100 - 1
	if i < 0 {
		i = 0
	}
	return ds[i].Round(10 * time.Millisecond)
}
