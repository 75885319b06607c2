package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/testing/harness"
)

// deploy registers a key, creates the formation and pushes the hello app.
func deploy(t *testing.T, p *harness.Platform, formation string) (repo, key string) {
	t.Helper()
	key = p.NewKey("user-" + formation)
	p.MustCtl("", "keys:add", key+".pub")
	p.MustCtl("", "formations:create", formation)
	repo = p.AppRepo("hello", formation)
	if out, err := p.Git(repo, key, "push", "deis", "main"); err != nil {
		t.Fatalf("git push: %v\n%s", err, out)
	}
	return repo, key
}

// readyCount counts the ready containers `deisctl ps` shows per node.
func readyCount(p *harness.Platform, formation string) (map[string]int, string) {
	out, _ := p.Ctl("", "ps", "-f", formation)
	counts := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(line, " ready") {
			for _, a := range p.Agents {
				for _, w := range f {
					if w == a.Name {
						counts[a.Name]++
					}
				}
			}
		}
	}
	return counts, out
}

// TestScaleAcrossNodesAndNodeLoss: web=6 on three runtime nodes is spread
// 2/2/2; when one node dies with its containers, they are re-placed on the
// others and serve again.
func TestScaleAcrossNodesAndNodeLoss(t *testing.T) {
	p := harness.NewPlatform(t)
	ttl := []string{"--heartbeat-ttl", "3s"}
	var runtimes []*harness.Agent
	for i := 1; i <= 3; i++ {
		runtimes = append(runtimes, p.StartAgent(fmt.Sprintf("spread-r%d", i), harness.AgentOptions{
			Addr: fmt.Sprintf("127.0.0.%d", 10+i), Labels: "role=runtime", ExtraArgs: ttl}))
	}
	proxy := p.StartAgent("spread-p1", harness.AgentOptions{Addr: "127.0.0.14", Labels: "role=proxy", ExtraArgs: ttl})
	deploy(t, p, "spread")
	host := "spread.localhost"
	p.WaitApp(proxy, host, "hello from spread (v1)", 3*time.Minute)

	p.MustCtl("", "scale", "web=6", "-f", "spread")
	harness.Eventually(t, 3*time.Minute, "six ready containers spread 2/2/2", func() (bool, string) {
		c, out := readyCount(p, "spread")
		return c[runtimes[0].Name] == 2 && c[runtimes[1].Name] == 2 && c[runtimes[2].Name] == 2, out
	})
	for _, r := range runtimes {
		if n := len(harness.Containers(t, r.Name, "deis.formation=spread")); n != 2 {
			t.Errorf("%s runs %d containers, want 2", r.Name, n)
		}
	}

	// kill -9 of an agent together with its containers
	dead := runtimes[2]
	dead.Kill()
	harness.RemoveContainers(dead.Name)
	harness.Eventually(t, 3*time.Minute, "containers re-placed on the two live nodes", func() (bool, string) {
		c, out := readyCount(p, "spread")
		return c[runtimes[0].Name] == 3 && c[runtimes[1].Name] == 3 && c[runtimes[2].Name] == 0, out
	})
	p.WaitApp(proxy, host, "hello from spread (v1)", 30*time.Second)
	if out := p.MustCtl("", "nodes:list"); !strings.Contains(out, "lost") {
		t.Errorf("nodes:list should show the lost node:\n%s", out)
	}

	// kill -9 of an agent alone: its containers keep running while it is
	// lost, are placed elsewhere, and are stopped when it comes back, which
	// then takes work again by rebalancing.
	back := runtimes[1]
	old := harness.Containers(t, back.Name)
	back.Kill()
	harness.Eventually(t, 3*time.Minute, "all six on the last live node", func() (bool, string) {
		c, out := readyCount(p, "spread")
		return c[runtimes[0].Name] == 6, out
	})
	back.KillRestart()
	harness.Eventually(t, 3*time.Minute, "the returning node to stop what it no longer holds and rebalance", func() (bool, string) {
		c, out := readyCount(p, "spread")
		now := strings.Join(harness.Containers(t, back.Name), " ")
		for _, id := range old {
			if strings.Contains(now, id) {
				return false, "old container still running: " + id
			}
		}
		return c[runtimes[0].Name] == 3 && c[back.Name] == 3, out
	})
	p.WaitApp(proxy, host, "hello from spread (v1)", 30*time.Second)
}

// TestAgentKill9DoesNotRestartContainers: killing an agent with SIGKILL and
// starting it again, ten times in a row, never restarts a container.
func TestAgentKill9DoesNotRestartContainers(t *testing.T) {
	p := harness.NewPlatform(t)
	a := p.StartAgent("kill9", harness.AgentOptions{})
	deploy(t, p, "steady")
	host := "steady.localhost"
	p.WaitApp(a, host, "hello from steady (v1)", 3*time.Minute)
	before := harness.Containers(t, a.Name)
	if len(before) != 1 {
		t.Fatalf("want one container, got %v", before)
	}
	for i := 0; i < 10; i++ {
		a.KillRestart()
		p.WaitApp(a, host, "hello from steady (v1)", 30*time.Second)
	}
	// let the last agent finish a reconcile pass and report
	harness.Eventually(t, time.Minute, "agent to report ready", func() (bool, string) {
		c, out := readyCount(p, "steady")
		return c[a.Name] == 1, out
	})
	if after := harness.Containers(t, a.Name); len(after) != 1 || after[0] != before[0] {
		t.Fatalf("containers changed across agent kills: %v -> %v", before, after)
	}
}

// TestCoordinatorFailoverDuringRollout: the leading coordinator is killed
// right after a config change; another coordinator takes the lead and the
// rollout completes.
func TestCoordinatorFailoverDuringRollout(t *testing.T) {
	p := harness.NewPlatformWith(t, harness.PlatformOptions{ExternalEtcd: true})
	p.AddCoordinator()
	a := p.StartAgent("failover", harness.AgentOptions{})
	repo, key := deploy(t, p, "ha")
	host := "ha.localhost"
	p.WaitApp(a, host, "hello from ha (v1)", 3*time.Minute)

	leader := p.Leader()
	if leader == nil {
		t.Fatal("no coordinator leads")
	}
	p.MustCtl("", "config:set", "GREETING=failover", "-f", "ha")
	leader.Kill()
	p.WaitApp(a, host, "failover from ha (v2)", 3*time.Minute)
	harness.Eventually(t, 30*time.Second, "a new leader", func() (bool, string) {
		l := p.Leader()
		return l != nil && l != leader, "no new leader"
	})

	// the surviving coordinator builds and serves a new push on its own
	survivor := 0
	for i, c := range p.Coordinators {
		if c != leader {
			survivor = i
		}
	}
	p.Git(repo, key, "commit", "-q", "--allow-empty", "-m", "after fail-over")
	if out, err := p.Git(repo, key, "push", p.RemoteVia(survivor, "ha"), "main"); err != nil {
		t.Fatalf("push to the surviving coordinator: %v\n%s", err, out)
	}
	p.WaitApp(a, host, "failover from ha (v3)", 3*time.Minute)
}

// TestFailedReleaseKeepsServing: a release whose health checks never pass
// is marked failed with the reason after the boot timeout, its containers
// are removed, and the previous release keeps serving throughout.
func TestFailedReleaseKeepsServing(t *testing.T) {
	p := harness.NewPlatformWith(t, harness.PlatformOptions{CoordinatorArgs: []string{"--boot-timeout", "8s"}})
	a := p.StartAgent("failrel", harness.AgentOptions{})
	deploy(t, p, "sturdy")
	host := "sturdy.localhost"
	p.WaitApp(a, host, "hello from sturdy (v1)", 3*time.Minute)

	p.MustCtl("", "config:set", "HEALTHCHECK_PATH=/status/503", "-f", "sturdy")
	harness.Eventually(t, 2*time.Minute, "v2 marked failed", func() (bool, string) {
		out, _ := p.Ctl("", "releases", "-f", "sturdy")
		return strings.Contains(out, "failed"), out
	})
	p.WaitApp(a, host, "hello from sturdy (v1)", 10*time.Second)
	waitReady(t, p, "sturdy", 1, "v1")
	out := p.MustCtl("", "releases", "-f", "sturdy")
	if !strings.Contains(out, "not ready within") {
		t.Errorf("releases should say why v2 failed:\n%s", out)
	}
}
