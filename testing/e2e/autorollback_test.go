package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/testing/harness"
)

// TestAutoRollback deploys a good v1, then a config that makes the app
// answer 500: with automatic rollback off for the formation nothing
// happens; once it is on, the coordinator rolls v2 back to v1 as v3.
func TestAutoRollback(t *testing.T) {
	p := harness.NewPlatformWith(t, harness.PlatformOptions{CoordinatorArgs: []string{
		"--rollback-window", "2m", "--rollback-min-requests", "5", "--rollback-error-share", "0.5"}})
	a := p.StartAgent("arb", harness.AgentOptions{})
	repo, _ := deploy(t, p, "arb")
	host := "arb.localhost"
	p.WaitApp(a, host, "hello from arb (v1)", 3*time.Minute)
	// v1 goes live (every proxy routes it): only a release that went live
	// is a target of a rollback.
	harness.Eventually(t, time.Minute, "status to report converged", func() (bool, string) {
		out, _ := p.Ctl(repo, "status")
		return strings.Contains(out, "arb: converged"), out
	})

	p.MustCtl(repo, "autorollback", "off")
	p.MustCtl(repo, "config:set", "FAIL_STATUS=500")
	failing := func() (bool, string) {
		code, body, err := harness.Get(a.Addr, a.HTTPPort, host)
		return code == 500, fmt.Sprintf("code=%d body=%q err=%v", code, body, err)
	}
	harness.Eventually(t, 2*time.Minute, "v2 to answer 500", failing)
	// Three report intervals of answers, all 500: nothing is rolled back.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		harness.Get(a.Addr, a.HTTPPort, host)
		time.Sleep(200 * time.Millisecond)
	}
	if out := p.MustCtl(repo, "releases"); strings.Contains(out, "v3") || strings.Contains(out, "Auto-rollback") {
		t.Fatalf("rolled back with automatic rollback off:\n%s", out)
	}
	if out := p.MustCtl(repo, "status"); !strings.Contains(out, "Auto-rollback:   off") {
		t.Errorf("status does not say automatic rollback is off:\n%s", out)
	}

	p.MustCtl(repo, "autorollback", "on")
	harness.Eventually(t, 2*time.Minute, "v2 to be rolled back to v1 as v3", func() (bool, string) {
		harness.Get(a.Addr, a.HTTPPort, host)
		harness.Get(a.Addr, a.HTTPPort, host)
		code, body, err := harness.Get(a.Addr, a.HTTPPort, host)
		return code == 200 && strings.Contains(body, "hello from arb (v3)"), fmt.Sprintf("code=%d body=%q err=%v", code, body, err)
	})
	out := p.MustCtl(repo, "releases")
	if !strings.Contains(out, "Auto-rollback to v1: ") || !strings.Contains(out, "requests answered 5xx") ||
		!strings.Contains(out, "failed: rolled back automatically to v1") {
		t.Errorf("releases:\n%s", out)
	}
	if out := p.MustCtl(repo, "status"); !strings.Contains(out, "v2 was rolled back automatically") {
		t.Errorf("status:\n%s", out)
	}
	harness.Eventually(t, time.Minute, "logs to show the rollback", func() (bool, string) {
		out, _ := p.Ctl(repo, "logs", "-n", "50")
		return strings.Contains(out, "Auto-rollback to v1"), out
	})
	if cfg := p.MustCtl(repo, "config"); strings.Contains(cfg, "FAIL_STATUS") {
		t.Errorf("config after the rollback still holds v2's FAIL_STATUS:\n%s", cfg)
	}
	if log := p.Coordinator.Log(); !strings.Contains(log, "release rolled back automatically") {
		t.Errorf("coordinator log does not tell of the rollback")
	}
}

// TestAutoRollbackCrashLoop deploys a good v1, then a config that makes
// the app exit a few seconds after it started: v2 passes its health
// checks, goes live, then crashes and is restarted by Docker's restart
// policy, again and again. The agent reports the exit and each restart
// from Docker's events, and the coordinator rolls v2 back to v1 as v3
// (its one web container down: health checks failing on most containers,
// or, if it came back each time before a pass saw it, a crash loop).
func TestAutoRollbackCrashLoop(t *testing.T) {
	p := harness.NewPlatformWith(t, harness.PlatformOptions{CoordinatorArgs: []string{"--rollback-window", "2m"}})
	a := p.StartAgent("arc", harness.AgentOptions{})
	repo, _ := deploy(t, p, "arc")
	host := "arc.localhost"
	p.WaitApp(a, host, "hello from arc (v1)", 3*time.Minute)
	harness.Eventually(t, time.Minute, "status to report converged", func() (bool, string) {
		out, _ := p.Ctl(repo, "status")
		return strings.Contains(out, "arc: converged"), out
	})

	start := time.Now()
	p.MustCtl(repo, "config:set", "CRASH_AFTER=6")
	// When the test first saw each restart count of v2's container in
	// Docker (polling about every 200 ms).
	restarts := map[int]time.Time{}
	var releases string
	harness.Eventually(t, 3*time.Minute, "v2 to be rolled back to v1 as v3", func() (bool, string) {
		ids, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=deis.formation=arc",
			"--filter", "label=deis.release=2").Output()
		for _, id := range strings.Fields(string(ids)) {
			out, err := exec.Command("docker", "inspect", "-f", "{{.RestartCount}}", id).Output()
			if n, err2 := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && err2 == nil {
				if _, ok := restarts[n]; !ok {
					restarts[n] = time.Now()
				}
			}
		}
		releases, _ = p.Ctl(repo, "releases")
		return strings.Contains(releases, "Auto-rollback to v1: "), releases
	})
	rolled := time.Now()
	if !strings.Contains(releases, "crash loop") && !strings.Contains(releases, "health checks failing") {
		t.Errorf("rolled back for another reason than the crashes:\n%s", releases)
	}
	reason := "?"
	for _, l := range strings.Split(releases, "\n") {
		if i := strings.Index(l, "Auto-rollback to v1: "); i >= 0 {
			reason, _, _ = strings.Cut(strings.TrimSpace(l[i+len("Auto-rollback to v1: "):]), "  ")
		}
	}
	msg := fmt.Sprintf("crash-loop rollback (%s): %.1f s after config:set", reason, rolled.Sub(start).Seconds())
	if first, ok := restarts[1]; ok {
		msg += fmt.Sprintf(", %.1f s after the first restart", rolled.Sub(first).Seconds())
	}
	if third, ok := restarts[3]; ok {
		msg += fmt.Sprintf(", %.1f s after the third", rolled.Sub(third).Seconds())
	}
	t.Log(msg)
	if out := os.Getenv("DEIS_BENCH_OUT"); out != "" {
		if f, err := os.OpenFile(out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintln(f, msg)
			f.Close()
		}
	}
	harness.Eventually(t, time.Minute, "v3 to serve", func() (bool, string) {
		code, body, err := harness.Get(a.Addr, a.HTTPPort, host)
		return code == 200 && strings.Contains(body, "hello from arc (v3)"), fmt.Sprintf("code=%d body=%q err=%v", code, body, err)
	})
	if cfg := p.MustCtl(repo, "config"); strings.Contains(cfg, "CRASH_AFTER") {
		t.Errorf("config after the rollback still holds v2's CRASH_AFTER:\n%s", cfg)
	}
}
