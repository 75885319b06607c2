package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/testing/harness"
)

// TestGitPushToRoutedApp drives the first path end to end on one node with
// both roles: keys, formation, git push over SSH, build, release, container,
// nginx routing, config, releases, rollback, ps, adoption after an agent
// restart, serving while the platform is down, and the bad inputs.
func TestGitPushToRoutedApp(t *testing.T) {
	p := harness.NewPlatform(t)
	node := "e2e-" + strings.ToLower(strings.ReplaceAll(t.Name(), "Test", ""))[:10]
	a := p.StartAgent(node, harness.AgentOptions{})
	node = a.Name
	host := "hello.localhost"

	// 1. keys and formation
	key := p.NewKey("user")
	out := p.MustCtl("", "keys:add", key+".pub")
	t.Logf("keys:add:\n%s", out)
	out = p.MustCtl("", "formations:create", "hello")
	if !strings.Contains(out, "hello.git") || !strings.Contains(out, "hello.localhost") {
		t.Fatalf("formations:create should print the git remote and URL:\n%s", out)
	}

	// 2-5. push, build, release, run, route
	repo := p.AppRepo("hello", "hello")
	out, err := p.Git(repo, key, "push", "deis", "main")
	if err != nil {
		t.Fatalf("git push: %v\n%s", err, out)
	}
	t.Logf("git push:\n%s", out)
	for _, want := range []string{"-----> ", "v1"} {
		if !strings.Contains(out, want) {
			t.Errorf("push output lacks %q", want)
		}
	}
	body := p.WaitApp(a, host, "hello from hello (v1)", 3*time.Minute)
	t.Logf("app answered: %s", body)

	// 6. config, releases, rollback, ps
	out = p.MustCtl(repo, "config:set", "GREETING=hi") // -f from the deis remote
	if !strings.Contains(out, "v2") {
		t.Errorf("config:set should report v2:\n%s", out)
	}
	p.WaitApp(a, host, "hi from hello (v2)", 2*time.Minute)
	out = p.MustCtl("", "releases", "-f", "hello")
	for _, want := range []string{"v1", "v2", "GREETING"} {
		if !strings.Contains(out, want) {
			t.Errorf("releases lacks %q:\n%s", want, out)
		}
	}
	out = p.MustCtl("", "rollback", "v1", "-f", "hello")
	if !strings.Contains(out, "v3") {
		t.Errorf("rollback should report v3:\n%s", out)
	}
	p.WaitApp(a, host, "hello from hello (v3)", 2*time.Minute)
	harness.Eventually(t, time.Minute, "ps to show one v3 web container", func() (bool, string) {
		out, _ := p.Ctl("", "ps", "-f", "hello")
		return strings.Contains(out, "hello.v3.web.1") && strings.Contains(out, node) &&
			!strings.Contains(out, "hello.v2.web.1"), out
	})

	// Bad input: each is refused and changes nothing.
	before := p.MustCtl("", "releases", "-f", "hello")
	for _, args := range [][]string{
		{"formations:create", "Hello"},
		{"formations:create", "../x"},
		{"formations:create", strings.Repeat("a", 70)},
		{"config:set", "1BAD=x", "-f", "hello"},
		{"rollback", "v99", "-f", "hello"},
	} {
		if out, err := p.Ctl("", args...); err == nil {
			t.Errorf("deisctl %v should fail:\n%s", args, out)
		}
	}
	if after := p.MustCtl("", "releases", "-f", "hello"); after != before {
		t.Errorf("bad input changed the releases:\n%s\n---\n%s", before, after)
	}
	// a push to a formation that does not exist
	if _, err := p.Git(repo, key, "push", p.Remote("nope"), "main"); err == nil {
		t.Error("push to a missing formation should fail")
	}
	// a push with an unregistered key
	stranger := p.NewKey("stranger")
	if out, err := p.Git(repo, stranger, "push", "deis", "main"); err == nil {
		t.Errorf("push with an unregistered key should fail:\n%s", out)
	}
	// a broken Procfile fails the build and leaves v3 serving
	if err := os.WriteFile(filepath.Join(repo, "Procfile"), []byte("this is not a procfile\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.Git(repo, key, "commit", "-qam", "break the Procfile")
	out, err = p.Git(repo, key, "push", "deis", "main")
	if err == nil {
		t.Fatalf("push of a broken Procfile should be rejected:\n%s", out)
	}
	if !strings.Contains(strings.ToLower(out), "procfile") {
		t.Errorf("rejection should name the Procfile:\n%s", out)
	}
	if after := p.MustCtl("", "releases", "-f", "hello"); after != before {
		t.Errorf("failed build changed the releases:\n%s", after)
	}
	p.WaitApp(a, host, "hello from hello (v3)", 10*time.Second)

	// 7. an agent restart adopts the running container instead of restarting it
	id := containerID(t, node)
	a.Stop()
	p.WaitApp(a, host, "(v3)", 10*time.Second) // still serving with the agent down
	a.Restart()
	harness.Eventually(t, time.Minute, "agent to report again", func() (bool, string) {
		out, _ := p.Ctl("", "ps", "-f", "hello")
		return strings.Contains(out, "ready"), out
	})
	if got := containerID(t, node); got != id {
		t.Errorf("agent restart replaced container %s with %s", id, got)
	}
	// the coordinator stopping does not stop the app
	p.Coordinator.Stop()
	p.WaitApp(a, host, "(v3)", 10*time.Second)
	a.Stop()
	p.WaitApp(a, host, "(v3)", 10*time.Second)
}

func containerID(t *testing.T, node string) string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-q", "--no-trunc", "--filter", "label=deis.node="+node, "--filter", "label=deis.type=web").Output()
	if err != nil {
		t.Fatal(err)
	}
	ids := strings.Fields(string(out))
	if len(ids) != 1 {
		t.Fatalf("want one web container on %s, got %v", node, ids)
	}
	return ids[0]
}
