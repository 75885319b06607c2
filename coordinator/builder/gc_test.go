package builder

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
)

// GC keeps what the newest releases and the nodes need, and removes the rest.
func TestGCKeepsLastReleases(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.KeepReleases = 2 })
	ctx := context.Background()

	// four releases of a slug app, each with its own slug
	e.createFormation("gc")
	bare, sha, commit := gitRepo(t, helloApp)
	var slugs []string
	for i := 1; i <= 4; i++ {
		if i > 1 {
			sha = commit(map[string]string{"server.py": strings.Repeat("print('v')\n", i)})
		}
		rel, _ := mustBuild(t, e, "gc", bare, sha)
		slugs = append(slugs, rel.Build.Slug.SHA256)
	}
	// a node still runs v1
	err := e.store.Put(ctx, e.store.Keys.Runtime("n1"), state.Runtime{Node: "n1", Containers: []state.ContainerSpec{{
		Name: "gc.v1.web.1", Formation: "gc", Release: 1, Type: "web", Image: need.StackImage, Slug: &state.SlugRef{SHA256: slugs[0]},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	// three releases of a Dockerfile app, each with its own image
	e.createFormation("gcd")
	bareD, shaD, commitD := gitRepo(t, loadApp(t, "dockerfile-app"))
	var images, archives []string
	for i := 1; i <= 3; i++ {
		if i > 1 {
			shaD = commitD(map[string]string{"server.py": loadApp(t, "dockerfile-app")["server.py"] + strings.Repeat("#\n", i)})
		}
		rel, _ := mustBuild(t, e, "gcd", bareD, shaD)
		images = append(images, rel.Build.Image)
		archives = append(archives, rel.Build.ImageArchive.SHA256)
	}
	// a failed build has neither slug nor image: GC ignores it
	_, err = e.b.Build(ctx, "gcd", bareD, commitD(map[string]string{"Dockerfile": "FROM deis/no-such-image:never\n"}), io.Discard)
	if err == nil {
		t.Fatal("a build from a missing base image succeeded")
	}
	// a slug nothing refers to, and the build cache of a deleted formation
	stray, err := e.slugs.Put(bytes.NewReader([]byte("stray slug")))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(e.dataDir, "cache", "ghost"), 0o755); err != nil {
		t.Fatal(err)
	}

	// while a build is between its slug and its release, GC waits
	e.b.artifacts.RLock()
	_, err = e.b.GC(ctx)
	e.b.artifacts.RUnlock()
	if !errors.Is(err, ErrBuildsRunning) {
		t.Fatalf("GC during a build: %v, want ErrBuildsRunning", err)
	}

	res, err := e.b.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc: %+v", res)
	slugExists := func(sha string) bool {
		p, _ := e.slugs.Path(sha)
		_, err := os.Stat(p)
		return err == nil
	}
	for i, want := range []bool{true, false, true, true} { // v1 by the databag, v3 and v4 by the release log
		if got := slugExists(slugs[i]); got != want {
			t.Errorf("slug of v%d exists = %v, want %v", i+1, got, want)
		}
	}
	if slugExists(stray.SHA256) {
		t.Error("unreferenced slug kept")
	}
	imageExists := func(ref string) bool {
		_, err := e.docker.InspectImage(ctx, ref)
		return err == nil
	}
	for i, want := range []bool{false, true, true} {
		if got := imageExists(images[i]); got != want {
			t.Errorf("image of v%d (%s) exists = %v, want %v", i+1, images[i], got, want)
		}
	}
	for i, want := range []bool{false, true, true} { // like the images
		if got := slugExists(archives[i]); got != want {
			t.Errorf("image archive of v%d exists = %v, want %v", i+1, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(e.dataDir, "cache", "ghost")); err == nil {
		t.Error("the build cache of a deleted formation was kept")
	}
	if _, err := os.Stat(filepath.Join(e.dataDir, "cache", "gc")); err != nil {
		t.Errorf("the build cache of a live formation was removed: %v", err)
	}
	// slugs: v2 of gc and the stray one, and the archive of v1 of gcd
	if res.RemovedSlugs != 3 || res.RemovedImages != 1 || res.RemovedCache != 1 || res.KeptSlugs != 5 || res.KeptImages != 2 {
		t.Errorf("result = %+v", res)
	}
	if n := counterValue(t, e.b.m.gcRemoved.WithLabelValues("slug")); n != 3 {
		t.Errorf("gc removed slugs metric = %v", n)
	}

	// the kept releases still build on (and a second run removes nothing)
	if res, err := e.b.GC(ctx); err != nil || res.RemovedSlugs+res.RemovedImages+res.RemovedCache != 0 {
		t.Errorf("second GC = %+v, %v; want nothing removed", res, err)
	}
}
