package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deis/deis/testing/harness"
)

// loadStats counts what the load generator saw.
type loadStats struct {
	sent, failed atomic.Int64
	mu           sync.Mutex
	errors       []string
}

func (s *loadStats) fail(msg string) {
	s.failed.Add(1)
	s.mu.Lock()
	if len(s.errors) < 20 {
		s.errors = append(s.errors, msg)
	}
	s.mu.Unlock()
}

// nonReplayable hides the body's type so net/http cannot rewind it: a POST
// that fails on a reused connection is then reported, never retried.
type nonReplayable struct{ io.Reader }

// runLoad sends requests to every proxy on keep-alive connections at about
// rate requests a second until ctx ends. No request is retried.
func runLoad(ctx context.Context, proxies []*harness.Agent, host string, rate int, s *loadStats) *sync.WaitGroup {
	var wg sync.WaitGroup
	workers := 8
	interval := time.Duration(workers) * time.Second / time.Duration(rate)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}}
			defer client.CloseIdleConnections()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				px := proxies[(w+i)%len(proxies)]
				url := fmt.Sprintf("http://%s:%d/", px.Addr, px.HTTPPort)
				var req *http.Request
				if i%2 == 0 {
					req, _ = http.NewRequest("GET", url, nil)
				} else {
					req, _ = http.NewRequest("POST", url, nonReplayable{bytes.NewReader([]byte("ping"))})
				}
				req.Host = host
				s.sent.Add(1)
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						s.fail(err.Error())
					} else {
						s.sent.Add(-1)
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					s.fail(fmt.Sprintf("%s %s via %s: %d", req.Method, url, px.Name, resp.StatusCode))
				}
			}
		}(w)
	}
	return &wg
}

// TestZeroDowntimeUnderLoad holds a keep-alive load through two proxy nodes
// during 10 config changes, 3 rollbacks, a scale-up, a scale-down, a rolling
// restart, and a node drained and taken back (rebalance), and requires that no request fails. It also measures the
// time from config:set until both proxies serve the new release.
func TestZeroDowntimeUnderLoad(t *testing.T) {
	p := harness.NewPlatform(t)
	var runtimes []*harness.Agent
	for i := 1; i <= 2; i++ {
		runtimes = append(runtimes, p.StartAgent(fmt.Sprintf("load-r%d", i), harness.AgentOptions{Addr: fmt.Sprintf("127.0.0.%d", 30+i), Labels: "role=runtime"}))
	}
	var proxies []*harness.Agent
	for i := 1; i <= 2; i++ {
		proxies = append(proxies, p.StartAgent(fmt.Sprintf("load-p%d", i), harness.AgentOptions{Addr: fmt.Sprintf("127.0.0.%d", 40+i), Labels: "role=proxy"}))
	}
	deploy(t, p, "load")
	host := "load.localhost"
	for _, px := range proxies {
		p.WaitApp(px, host, "hello from load (v1)", 3*time.Minute)
	}
	p.MustCtl("", "scale", "web=2", "-f", "load")
	waitReady(t, p, "load", 2, "")

	ctx, cancel := context.WithCancel(context.Background())
	var stats loadStats
	wg := runLoad(ctx, proxies, host, 150, &stats)
	start := time.Now()

	// everywhere waits until both proxies answer with want.
	everywhere := func(want string) time.Duration {
		t0 := time.Now()
		for _, px := range proxies {
			p.WaitApp(px, host, want, 3*time.Minute)
		}
		return time.Since(t0)
	}
	var switches []time.Duration
	release := 1
	for i := 1; i <= 10; i++ {
		release++
		t0 := time.Now()
		p.MustCtl("", "config:set", fmt.Sprintf("GREETING=greeting%d", i), "-f", "load")
		// Polled every 10ms: everywhere's backoff would add up to 300ms.
		served := servedEverywhere(t, proxies, host, fmt.Sprintf("greeting%d from load (v%d)", i, release), 3*time.Minute)
		switches = append(switches, served.Sub(t0))
	}
	for i := 1; i <= 3; i++ {
		release++
		p.MustCtl("", "rollback", "-f", "load")
		everywhere(fmt.Sprintf("(v%d)", release))
	}
	p.MustCtl("", "scale", "web=3", "-f", "load")
	waitReady(t, p, "load", 3, "")
	p.MustCtl("", "scale", "web=2", "-f", "load")
	waitReady(t, p, "load", 2, "")
	p.MustCtl("", "ps:restart", "-f", "load")
	waitReady(t, p, "load", 2, ".r1")
	everywhere(fmt.Sprintf("(v%d)", release))
	// drain a runtime node: its containers move with the same handoff
	p.MustCtl("", "nodes:drain", runtimes[0].Name)
	harness.Eventually(t, 3*time.Minute, "the drained node to be empty", func() (bool, string) {
		c, out := readyCount(p, "load")
		return c[runtimes[0].Name] == 0 && c[runtimes[1].Name] == 2, out
	})
	p.MustCtl("", "nodes:undrain", runtimes[0].Name)
	harness.Eventually(t, 3*time.Minute, "the undrained node to take a container back", func() (bool, string) {
		c, out := readyCount(p, "load")
		return c[runtimes[0].Name] == 1 && c[runtimes[1].Name] == 1, out
	})

	cancel()
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(switches, func(i, j int) bool { return switches[i] < switches[j] })
	median, worst := switches[len(switches)/2], switches[len(switches)-1]
	report := fmt.Sprintf("requests sent: %d in %s (%.0f/s), failed: %d; config:set until both proxies serve the new release: median %s, worst %s",
		stats.sent.Load(), elapsed.Round(time.Second), float64(stats.sent.Load())/elapsed.Seconds(), stats.failed.Load(),
		median.Round(10*time.Millisecond), worst.Round(10*time.Millisecond))
	t.Log(report)
	if out := os.Getenv("DEIS_BENCH_OUT"); out != "" {
		os.WriteFile(out, []byte(report+"\n"), 0o644)
	}
	if stats.failed.Load() != 0 {
		t.Errorf("%d of %d requests failed; first errors:\n%s", stats.failed.Load(), stats.sent.Load(), strings.Join(stats.errors, "\n"))
	}
	if float64(stats.sent.Load())/elapsed.Seconds() < 100 {
		t.Errorf("load was below 100 requests a second")
	}
}

// waitReady waits until ps shows exactly n ready containers of the formation
// (whose names contain suffix) and nothing else.
func waitReady(t *testing.T, p *harness.Platform, f string, n int, suffix string) {
	t.Helper()
	harness.Eventually(t, 3*time.Minute, fmt.Sprintf("%d ready containers of %s", n, f), func() (bool, string) {
		out, _ := p.Ctl("", "ps", "-f", f)
		ready, other := 0, 0
		for _, line := range strings.Split(out, "\n") {
			if !strings.HasPrefix(line, f+".") {
				continue
			}
			if strings.Contains(line, " ready") && strings.Contains(strings.Fields(line)[0], suffix) {
				ready++
			} else {
				other++
			}
		}
		return ready == n && other == 0, out
	})
}
