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

// buildStatic builds testing/apps/scratch-app with the host's Go toolchain
// as a static binary at dir/app.
func buildStatic(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, "app"), ".")
	cmd.Dir = harness.AppDir("scratch-app")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build the scratch app: %v\n%s", err, out)
	}
}

// TestPushTellsTheTruth: a push waits for its release to go live and says
// so; a FROM scratch image with a static binary (no /bin/sh) runs and
// serves; a release that fails its health check fails the push with the
// reason, leaves the branch where it was and the old release serving; a
// Procfile that needs a shell the image lacks is refused at build time.
func TestPushTellsTheTruth(t *testing.T) {
	p := harness.NewPlatformWith(t, harness.PlatformOptions{CoordinatorArgs: []string{"--boot-timeout", "8s"}})
	removeAppImages(t, "bare")
	a := p.StartAgent("truth", harness.AgentOptions{})
	key := p.NewKey("truth")
	p.MustCtl("", "keys:add", key+".pub")
	p.MustCtl("", "formations:create", "bare")
	host := "bare.localhost"

	repo := p.AppRepo("scratch-app", "bare")
	buildStatic(t, repo)
	git := func(args ...string) (string, error) {
		t.Helper()
		return p.Git(repo, key, args...)
	}
	for _, args := range [][]string{{"add", "app"}, {"commit", "-qm", "the static binary"}} {
		if out, err := git(args...); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	head := func() string {
		out, err := git("rev-parse", "HEAD")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	remoteMain := func() string {
		out, err := git("ls-remote", "deis", "refs/heads/main")
		if err != nil {
			t.Fatalf("git ls-remote: %v\n%s", err, out)
		}
		return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(out), "refs/heads/main"))
	}

	// 1. the scratch image runs its exec-form CMD, no shell; the push ends
	// once v1 is live, and it serves at once
	out, err := git("push", "deis", "main")
	t.Logf("git push:\n%s", out)
	if err != nil {
		t.Fatalf("git push: %v", err)
	}
	for _, want := range []string{"The image has no /bin/sh", "-----> Waiting for v1 to roll out",
		"web.1 ready on " + a.Name, "proxies switched: 1/1", "-----> v1 is live ("} {
		if !strings.Contains(out, want) {
			t.Errorf("push output lacks %q", want)
		}
	}
	p.WaitApp(a, host, "hello from scratch (v1)", 5*time.Second)
	good := head()

	// 2. a release that never passes its health check: the push fails with
	// the reason, the branch stays, v1 keeps serving
	if err := os.WriteFile(filepath.Join(repo, "Procfile"), []byte("web: /app -sleep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("add", "Procfile")
	git("commit", "-qm", "never listens")
	start := time.Now()
	out, err = git("push", "deis", "main")
	t.Logf("git push (after %s):\n%s", time.Since(start).Round(time.Second), out)
	if err == nil {
		t.Fatal("the push of a release that fails its health check should fail")
	}
	for _, want := range []string{"-----> Waiting for v2 to roll out", "v2 failed: web containers not ready within 8s",
		"the branch not updated", "pre-receive hook declined"} {
		if !strings.Contains(out, want) {
			t.Errorf("push output lacks %q", want)
		}
	}
	if got := remoteMain(); got != good {
		t.Errorf("deis main is %q after the failed push, want the last good commit %s", got, good)
	}
	p.WaitApp(a, host, "hello from scratch (v1)", 5*time.Second)
	if out := p.MustCtl("", "releases", "-f", "bare"); !strings.Contains(out, "failed") {
		t.Errorf("releases should show v2 failed:\n%s", out)
	}

	// 3. shell syntax the image cannot run is refused at build time
	if err := os.WriteFile(filepath.Join(repo, "Procfile"), []byte("web: /app && echo done\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("commit", "-qam", "needs a shell")
	out, err = git("push", "deis", "main")
	if err == nil || !strings.Contains(out, "the image has no /bin/sh, so the Procfile's web command cannot use shell syntax (&&)") {
		t.Errorf("push of shell syntax on a shell-less image: err = %v\n%s", err, out)
	}
	if got := remoteMain(); got != good {
		t.Errorf("deis main is %q after the refused push, want %s", got, good)
	}
	p.WaitApp(a, host, "hello from scratch (v1)", 5*time.Second)
}
