package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/testing/harness"
)

// TestBuildStage pushes every bundled buildpack's sample app, a custom
// buildpack from a local git repository, a Dockerfile app and a failing
// release phase with the real git client, and checks who may push.
func TestBuildStage(t *testing.T) {
	// the operator allows local buildpacks (BUILDPACK_URL) under bpDir only
	bpDir := t.TempDir()
	p := harness.NewPlatformWith(t, harness.PlatformOptions{CoordinatorArgs: []string{"--buildpack-dir", bpDir}})
	// registered before the agent, so it runs after the agent's cleanup has
	// removed the containers
	removeAppImages(t, "docker")
	a := p.StartAgent("builds", harness.AgentOptions{})
	key := p.NewKey("admin")
	p.MustCtl("", "keys:add", key+".pub")

	push := func(app, formation string) (string, string, error) {
		t.Helper()
		p.MustCtl("", "formations:create", formation)
		repo := p.AppRepo(app, formation)
		out, err := p.Git(repo, key, "push", "deis", "main")
		return repo, out, err
	}
	for _, tc := range []struct{ app, formation, heading, want string }{
		{"python-app", "py", "Python app detected", "message"},
		{"go-app", "goapp", "Go app detected", "from go-app"},
		{"static-app", "site", "Static", "<html"},
		{"dockerfile-app", "docker", "Dockerfile", "from dockerfile-app"},
	} {
		t.Run(tc.app, func(t *testing.T) {
			_, out, err := push(tc.app, tc.formation)
			if err != nil {
				t.Fatalf("push: %v\n%s", err, out)
			}
			if !strings.Contains(strings.ToLower(out), strings.ToLower(tc.heading)) {
				t.Errorf("push output lacks %q:\n%s", tc.heading, out)
			}
			body := p.WaitApp(a, tc.formation+".localhost", "", 3*time.Minute)
			if !strings.Contains(strings.ToLower(body), tc.want) {
				t.Errorf("%s answered %q, want it to contain %q", tc.app, body, tc.want)
			}
		})
	}

	t.Run("custom buildpack from a local git repository", func(t *testing.T) {
		bp := filepath.Join(bpDir, "my-buildpack")
		for name, body := range map[string]string{
			"bin/detect":  "#!/bin/sh\necho Custom\n",
			"bin/compile": "#!/bin/sh\necho '-----> custom buildpack compiling'\necho 'custom build' > \"$1/built.txt\"\n",
			"bin/release": "#!/bin/sh\necho '---'\necho 'default_process_types:'\necho '  web: python3 -m http.server $PORT'\n",
		} {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(bp, name)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(bp, name), []byte(body), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "."}, {"commit", "-qm", "buildpack"}} {
			if out, err := p.Git(bp, key, args...); err != nil {
				t.Fatalf("git %v: %v\n%s", args, err, out)
			}
		}
		p.MustCtl("", "formations:create", "custom")
		p.MustCtl("", "config:set", "BUILDPACK_URL="+bp, "-f", "custom")
		repo := p.AppRepo("static-app", "custom")
		out, err := p.Git(repo, key, "push", "deis", "main")
		if err != nil || !strings.Contains(out, "custom buildpack compiling") {
			t.Fatalf("push with BUILDPACK_URL: %v\n%s", err, out)
		}
		p.WaitApp(a, "custom.localhost", "", 3*time.Minute)
	})

	t.Run("release phase that fails", func(t *testing.T) {
		_, out, err := push("release-fail", "relfail")
		if err == nil {
			t.Fatalf("push should be rejected when the release command fails:\n%s", out)
		}
		if !strings.Contains(out, "release command failed") {
			t.Errorf("rejection should say the release command failed:\n%s", out)
		}
		if rel, _ := p.Ctl("", "releases", "-f", "relfail"); strings.Contains(rel, "v1") {
			t.Errorf("no release should exist:\n%s", rel)
		}
	})

	t.Run("who may push", func(t *testing.T) {
		p.MustCtl("", "users:create", "bob")
		bob := p.NewKey("bob")
		p.MustCtl("", "keys:add", bob+".pub", "--user", "bob")
		p.MustCtl("", "formations:create", "guarded")
		repo := p.AppRepo("hello", "guarded")
		out, err := p.Git(repo, bob, "push", "deis", "main")
		if err == nil {
			t.Fatalf("bob has no permission; push should fail:\n%s", out)
		}
		if !strings.Contains(out, "bob") || !strings.Contains(out, "guarded") {
			t.Errorf("refusal should name the user and the formation:\n%s", out)
		}
		p.MustCtl("", "perms:grant", "bob", "-f", "guarded")
		if out, err := p.Git(repo, bob, "push", "deis", "main"); err != nil {
			t.Fatalf("bob was granted; push should work: %v\n%s", err, out)
		}
		// a repository name that climbs out of the repositories directory
		if out, err := p.Git(repo, key, "push", fmt.Sprintf("ssh://git@127.0.0.1:%d/../guarded.git", p.SSHPort), "main"); err == nil {
			t.Errorf("a name with .. must be refused:\n%s", out)
		}
	})

	t.Run("concurrent pushes to one formation serialize", func(t *testing.T) {
		p.MustCtl("", "formations:create", "twice")
		r1 := p.AppRepo("hello", "twice")
		r2 := filepath.Join(p.Dir, "twice-second")
		if err := os.CopyFS(r2, os.DirFS(r1)); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(r2, "extra.txt"), []byte("second"), 0o644)
		p.Git(r2, key, "add", ".")
		p.Git(r2, key, "commit", "-qm", "second")
		var wg sync.WaitGroup
		outs := make([]string, 2)
		errs := make([]error, 2)
		for i, r := range []string{r1, r2} {
			wg.Add(1)
			go func(i int, r string) {
				defer wg.Done()
				outs[i], errs[i] = p.Git(r, key, "push", "-f", "deis", "main")
			}(i, r)
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
			}
		}
		if ok == 0 {
			t.Fatalf("both pushes failed:\n%s\n---\n%s", outs[0], outs[1])
		}
		if !strings.Contains(outs[0]+outs[1], "waiting") {
			t.Errorf("the second push should say it waits for the first:\n%s\n---\n%s", outs[0], outs[1])
		}
	})
}

// removeAppImages removes, when the test ends, the images Dockerfile builds
// of formation f made (deis/app-<formation>:<image id>). Call it before
// starting the agent, so it runs after the agent's cleanup has removed the
// containers.
func removeAppImages(t *testing.T, f string) {
	t.Cleanup(func() {
		out, _ := exec.Command("docker", "images", "-q", "deis/app-"+f).Output()
		if ids := strings.Fields(string(out)); len(ids) > 0 {
			exec.Command("docker", append([]string{"rmi", "-f"}, ids...)...).Run()
		}
	})
}
