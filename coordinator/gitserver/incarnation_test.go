package gitserver

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/poll"
)

// A formation destroyed and created again with the same name is cloned
// empty at once, before any purge pass of the coordinator: the session
// removes what the old incarnation left. The new formation's first push
// releases v1.
func TestIncarnationRecreatedFormationClonesEmpty(t *testing.T) {
	p := start(t) // no purge loop runs here
	ctx := context.Background()
	key, pub := p.newKey("dev")
	p.register(state.BootstrapAdmin, pub)
	p.createFormation("reborn")
	repo := p.appRepo(key, map[string]string{"Procfile": "web: python3 server.py\n", "server.py": "print('old owner')\n"})
	if out, err := p.git(repo, key, "push", p.remote("reborn"), "main"); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	oldHead := p.mustGit(repo, key, "rev-parse", "HEAD")
	bare := filepath.Join(p.dataDir, "repos", "reborn.git")
	if err := exec.Command("git", "--git-dir", bare, "cat-file", "-e", oldHead).Run(); err != nil {
		t.Fatalf("the pushed commit is not in the repository: %v", err)
	}
	buildLogs := filepath.Join(p.dataDir, "builds", "reborn")
	if _, err := os.Stat(buildLogs); err != nil {
		t.Fatalf("the build left no log: %v", err)
	}

	if err := p.store.DestroyFormation(ctx, "reborn"); err != nil {
		t.Fatal(err)
	}
	p.createFormation("reborn")
	inc, err := p.store.Incarnation(ctx, "reborn")
	if err != nil {
		t.Fatal(err)
	}

	// cloned immediately: empty
	clone := filepath.Join(t.TempDir(), "clone")
	out := p.mustGit(t.TempDir(), key, "clone", p.remote("reborn"), clone)
	if !strings.Contains(out, "empty repository") {
		t.Errorf("clone of the re-created formation is not empty:\n%s", out)
	}
	if refs := p.mustGit(clone, key, "ls-remote", p.remote("reborn")); strings.Contains(refs, "refs/") {
		t.Errorf("the re-created formation has refs:\n%s", refs)
	}
	if log, _ := p.git(clone, key, "log", "--all", "--oneline"); strings.TrimSpace(log) != "" && !strings.Contains(log, "does not have any commits") {
		t.Errorf("the clone has history:\n%s", log)
	}
	// and the old objects are gone from disk, with the old build logs
	if err := exec.Command("git", "--git-dir", bare, "cat-file", "-e", oldHead).Run(); err == nil {
		t.Error("the old owner's commit is still in the repository")
	}
	if _, err := os.Stat(buildLogs); err == nil {
		t.Error("the old owner's build logs survived the re-creation")
	}
	if b, err := os.ReadFile(filepath.Join(p.dataDir, "incarnations", "reborn")); err != nil || strings.TrimSpace(string(b)) != strconv.FormatInt(inc, 10) {
		t.Errorf("recorded incarnation %q (%v), want %d", b, err, inc)
	}

	// the new owner's first push runs and releases v1
	fresh := p.appRepo(key, map[string]string{"Procfile": "web: python3 server.py\n", "server.py": "print('new owner')\n"})
	out2, err := p.git(fresh, key, "push", p.remote("reborn"), "main")
	if err != nil || !strings.Contains(out2, "done, v1") {
		t.Fatalf("first push to the re-created formation: %v\n%s", err, out2)
	}
}

// A push accepted for one incarnation of a formation that is destroyed and
// created again while the push is on its way (here: while its hook waits)
// releases nothing into the new formation, and says so.
func TestIncarnationPushIntoRecreatedFormationRefused(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "hook")
	p := start(t, func(c *Config) {
		// the hook signals that it runs, then waits for the test
		script := `touch "$0.started"; while [ ! -e "$0.go" ]; do sleep 0.1; done; exec "$@"`
		c.HookCommand = append([]string{"/bin/sh", "-c", script, gate}, c.HookCommand...)
	})
	ctx := context.Background()
	key, pub := p.newKey("dev")
	p.register(state.BootstrapAdmin, pub)
	p.createFormation("race")
	repo := p.appRepo(key, map[string]string{"Procfile": "web: python3 server.py\n", "server.py": "print('old owner')\n"})

	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := p.git(repo, key, "push", p.remote("race"), "main")
		done <- result{out, err}
	}()
	poll.True(t, time.Minute, "the push's hook to start", func() bool {
		_, err := os.Stat(gate + ".started")
		return err == nil
	})
	if err := p.store.DestroyFormation(ctx, "race"); err != nil {
		t.Fatal(err)
	}
	p.createFormation("race")
	if err := os.WriteFile(gate+".go", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the push did not end")
	}
	t.Logf("push:\n%s", r.out)
	want := `formation "race" was destroyed and created again meanwhile: nothing released into the new formation`
	if r.err == nil || !strings.Contains(r.out, want) {
		t.Fatalf("push into a re-created formation: %v, want the refusal %q", r.err, want)
	}
	if v := p.latest("race"); v != 0 {
		t.Errorf("the re-created formation has release v%d", v)
	}
	builds, _, err := state.List[state.Build](ctx, p.store.KV, p.store.Keys.Builds("race"))
	if err != nil || len(builds) != 0 {
		t.Errorf("builds recorded in the re-created formation: %v, %v", builds, err)
	}
	clone := filepath.Join(t.TempDir(), "clone")
	if out := p.mustGit(t.TempDir(), key, "clone", p.remote("race"), clone); !strings.Contains(out, "empty repository") {
		t.Errorf("clone of the re-created formation is not empty:\n%s", out)
	}
}
