package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/testing/harness"
)

// TestOperateRunningApp drives status, logs, run, domains and limits against
// a running app, with the real binaries.
func TestOperateRunningApp(t *testing.T) {
	p := harness.NewPlatform(t)
	a := p.StartAgent("ops", harness.AgentOptions{})
	repo, _ := deploy(t, p, "ops")
	host := "ops.localhost"
	p.WaitApp(a, host, "hello from ops (v1)", 3*time.Minute)

	harness.Eventually(t, time.Minute, "status to report converged", func() (bool, string) {
		out, _ := p.Ctl(repo, "status")
		return strings.Contains(out, "ops: converged"), out
	})

	// logs: the app's own output and the release log, from the agent's API
	harness.Get(a.Addr, a.HTTPPort, host)
	harness.Eventually(t, time.Minute, "logs to show the app's output", func() (bool, string) {
		out, _ := p.Ctl(repo, "logs", "-n", "50")
		return strings.Contains(out, "ops.v1.web.1["+a.Name+"]") && strings.Contains(out, "GET /") &&
			strings.Contains(out, "deis[release]: v1"), out
	})
	if out, err := p.Ctl("", "logs", "-f", "nobody-here"); err == nil {
		t.Errorf("logs of a missing formation should fail:\n%s", out)
	}

	// run: a one-off container with the release's config; its exit status is deisctl's
	out, err := p.Ctl(repo, "run", "--", "sh", "-c", "echo one-off $DEIS_FORMATION; exit 3")
	if !strings.Contains(out, "one-off ops") {
		t.Errorf("run output:\n%s", out)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Errorf("run should exit 3, got %v", err)
	}
	if out, err := p.Ctl(repo, "run"); err == nil {
		t.Errorf("run with no command should fail:\n%s", out)
	}

	// domains: an added domain is served; one that would inject into nginx is refused
	p.MustCtl(repo, "domains:add", "www.ops.test")
	p.WaitApp(a, "www.ops.test", "hello from ops", time.Minute)
	for _, bad := range []string{"evil.test; include /etc/passwd", "a b.test", "x{}.test", `"q".test`} {
		if out, err := p.Ctl(repo, "domains:add", bad); err == nil {
			t.Errorf("domain %q should be refused:\n%s", bad, out)
		}
	}

	// limits: applied with Docker's limits, by replacing the container without downtime
	p.MustCtl(repo, "limits:set", "web=256M")
	if out, err := p.Ctl(repo, "limits:set", "web=lots"); err == nil {
		t.Errorf("web=lots should be refused:\n%s", out)
	}
	harness.Eventually(t, 2*time.Minute, "the web container to run with 256M", func() (bool, string) {
		ids := harness.Containers(t, a.Name, "deis.type=web")
		if len(ids) != 1 {
			return false, strings.Join(ids, " ")
		}
		mem, _ := exec.Command("docker", "inspect", "-f", "{{.HostConfig.Memory}}", ids[0]).Output()
		return strings.TrimSpace(string(mem)) == "268435456", string(mem)
	})
	p.WaitApp(a, host, "hello from ops (v1)", 30*time.Second)

	// logs: the replaced container's last lines stay, marked retired
	harness.Eventually(t, time.Minute, "logs to keep the replaced container's lines", func() (bool, string) {
		out, _ := p.Ctl(repo, "logs", "-n", "200")
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, " (retired)["+a.Name+"]: ") && strings.Contains(l, "GET /") {
				return true, out
			}
		}
		return false, out
	})

	// run needs a node that runs the formation (its spec comes from that
	// node's databag): scaled to zero, deisctl says what to do in one line.
	p.MustCtl(repo, "scale", "web=0")
	harness.Eventually(t, 2*time.Minute, "run to say no node runs ops", func() (bool, string) {
		out, err := p.Ctl(repo, "run", "--", "true")
		return err != nil && strings.Contains(out, "no node runs ops: scale a process type up first (deisctl scale web=1)"), out
	})
}
