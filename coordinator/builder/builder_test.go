package builder

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/coordinator/slugstore"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/deis/deis/testing/need"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type env struct {
	t       *testing.T
	store   *state.Store
	slugs   *slugstore.Store
	b       *Builder
	dataDir string
	docker  Docker
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	need.Git(t)
	need.Stack(t)
	_, cli := etcdtest.Start(t)
	store := state.NewStore(cli, "/test")
	dataDir := t.TempDir()
	slugs, err := slugstore.New(filepath.Join(dataDir, "slugs"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := NewDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		DataDir: dataDir, Store: store, Slugs: slugs, Docker: d, StackImage: need.StackImage,
		GoRoot:     FindGoRoot(ctx),
		AppURL:     func(f string) string { return "http://" + f + ".example.test/" },
		Registerer: prometheus.NewRegistry(),
	}
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The images this builder made from Dockerfiles.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		imgs, err := d.ListImages(ctx, map[string]string{labelBuilder: b.instance})
		if err != nil {
			t.Errorf("list the test's images: %v", err)
			return
		}
		for _, img := range imgs {
			for _, tag := range img.Tags {
				d.RemoveImage(ctx, tag)
			}
			d.RemoveImage(ctx, img.ID)
		}
	})
	return &env{t: t, store: store, slugs: slugs, b: b, dataDir: dataDir, docker: d}
}

func (e *env) createFormation(name string) {
	e.t.Helper()
	err := e.store.CreateFormation(context.Background(), &state.Formation{Name: name, Created: time.Now().UTC()})
	if err != nil {
		e.t.Fatal(err)
	}
}

// appUID is formation f's uid, which its builds run as.
func (e *env) appUID(f string) int {
	e.t.Helper()
	form, _, err := e.store.GetFormation(context.Background(), f)
	if err != nil {
		e.t.Fatal(err)
	}
	return form.AppUID()
}

// gitRepo makes a work tree with files committed and a bare clone of it, and
// returns a function that commits more files and pushes them to the bare
// repository, returning the new sha.
func gitRepo(t *testing.T, files map[string]string) (bare string, sha string, commit func(map[string]string) string) {
	t.Helper()
	dir := t.TempDir()
	work, bare := filepath.Join(dir, "work"), filepath.Join(dir, "app.git")
	run := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.test",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.test")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	commit = func(files map[string]string) string {
		t.Helper()
		for name, body := range files {
			path := filepath.Join(work, filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			mode := os.FileMode(0o644)
			if strings.HasPrefix(body, "#!") {
				mode = 0o755
			}
			if body == deleteFile {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err := os.WriteFile(path, []byte(body), mode); err != nil {
				t.Fatal(err)
			}
		}
		run(work, "add", "-A")
		run(work, "commit", "-q", "-m", "change")
		run(work, "push", "-q", bare, "HEAD:main")
		return run(work, "rev-parse", "HEAD")
	}
	run(dir, "init", "-q", "-b", "main", work)
	run(dir, "init", "-q", "-b", "main", "--bare", bare)
	return bare, commit(files), commit
}

// deleteFile as a file's content makes commit remove the file.
const deleteFile = "\x00delete"

var helloApp = map[string]string{
	"Procfile":  "web: python3 server.py\n",
	"server.py": "print('hello')\n",
}

// slugFiles lists the slug's files and checks they belong to uid, the
// build's.
func slugFiles(t *testing.T, path string, uid int) map[string]bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("slug is not gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	names := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("slug is not a tar: %v", err)
		}
		names[strings.TrimPrefix(h.Name, "./")] = true
		if h.Uid != uid || h.Gid != uid {
			t.Errorf("slug entry %s belongs to %d:%d, want the formation's uid %d", h.Name, h.Uid, h.Gid, uid)
		}
	}
	return names
}

func TestBuildReleasesAndRejectsBrokenProcfile(t *testing.T) {
	e := newEnv(t, nil)
	e.createFormation("hello")
	ctx := context.Background()
	if err := e.store.Put(ctx, e.store.Keys.Config("hello"), state.Config{Vars: map[string]string{"GREETING": "hi"}}); err != nil {
		t.Fatal(err)
	}
	bare, sha, commit := gitRepo(t, helloApp)

	var out bytes.Buffer
	rel, err := e.b.Build(ctx, "hello", bare, sha, &out)
	t.Logf("build output:\n%s", out.String())
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	for _, want := range []string{
		"-----> Procfile app detected",
		"-----> Compressing... done, ",
		"-----> Launching... done, v1",
		"http://hello.example.test/",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}

	// the release, its build and the build key
	got, err := e.store.GetRelease(ctx, "hello", 1)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Version != 1 || got.Build == nil || got.Build.ProcessTypes["web"] != "python3 server.py" {
		t.Fatalf("release v1 = %+v, build %+v", got, got.Build)
	}
	if got.Config["GREETING"] != "hi" || got.Description != "Deploy "+sha[:7] || got.Build.GitSHA != sha ||
		got.Build.Image != need.StackImage || got.Build.Buildpack != "Procfile" {
		t.Errorf("release v1 = %+v, build %+v", got, got.Build)
	}
	var stored state.Build
	if _, err := e.store.Get(ctx, e.store.Keys.Build("hello", got.Build.ID), &stored); err != nil {
		t.Fatalf("build key: %v", err)
	}
	// the slug, stored under its hash, with the app in it
	path, _ := e.slugs.Path(got.Build.Slug.SHA256)
	files := slugFiles(t, path, e.appUID("hello"))
	if !files["server.py"] || !files["Procfile"] {
		t.Errorf("slug holds %v, want server.py and Procfile", files)
	}
	// the build log
	logs, _ := filepath.Glob(filepath.Join(e.dataDir, "builds", "hello", got.Build.ID+".log"))
	if len(logs) != 1 {
		t.Errorf("no build log for %s", got.Build.ID)
	}
	// no build container left
	assertNoBuildContainers(t, e, "hello")

	// a broken Procfile fails with its line and releases nothing
	sha2 := commit(map[string]string{"Procfile": "this is not a procfile\n"})
	out.Reset()
	_, err = e.b.Build(ctx, "hello", bare, sha2, &out)
	if err == nil || !strings.Contains(err.Error(), "Procfile") || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("broken Procfile: err = %v, want one naming the Procfile and line 1", err)
	}
	if latest, err := e.store.LatestRelease(ctx, "hello"); err != nil || latest.Version != 1 {
		t.Fatalf("after a failed build the latest release is %+v, %v; want v1", latest, err)
	}
	if n := counterValue(t, e.b.m.builds.WithLabelValues("failed")); n != 1 {
		t.Errorf("failed builds metric = %v, want 1", n)
	}
	// the failure is recorded with its reason, beside its log
	failed := failedBuilds(t, e, "hello")
	if len(failed) != 1 {
		t.Fatalf("failed builds recorded: %+v, want 1", failed)
	}
	fb := failed[0]
	if fb.GitSHA != sha2 || !strings.Contains(fb.Error, "line 1") || strings.HasPrefix(fb.Error, "builder:") ||
		fb.Slug != nil || fb.Image != "" || fb.ImageArchive != nil || len(fb.ProcessTypes) != 0 || fb.Created.IsZero() {
		t.Errorf("failed build = %+v", fb)
	}
	if log, err := os.ReadFile(filepath.Join(e.dataDir, "builds", "hello", fb.ID+".log")); err != nil || !strings.Contains(string(log), "build failed: ") {
		t.Errorf("log of the failed build: %q, %v", log, err)
	}
	// the successful build's record is unchanged
	var again state.Build
	if _, err := e.store.Get(ctx, e.store.Keys.Build("hello", got.Build.ID), &again); err != nil || again.Failed || again.Slug == nil {
		t.Errorf("successful build after a failure = %+v, %v", again, err)
	}
}

// builds lists the builds of formation f, and failedBuilds those that
// failed.
func builds(t *testing.T, e *env, f string) []state.Build {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, _, err := state.List[state.Build](ctx, e.store.KV, e.store.Keys.Builds(f))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]state.Build, 0, len(list))
	for _, b := range list {
		out = append(out, b.Value)
	}
	return out
}

func failedBuilds(t *testing.T, e *env, f string) []state.Build {
	t.Helper()
	var out []state.Build
	for _, b := range builds(t, e, f) {
		if b.Failed {
			out = append(out, b)
		}
	}
	return out
}

// wantFailure checks that formation f recorded exactly n failed builds and
// that the last of them names reason.
func wantFailure(t *testing.T, e *env, f string, n int, reason string) {
	t.Helper()
	failed := failedBuilds(t, e, f)
	if len(failed) != n {
		t.Fatalf("failed builds of %s: %+v, want %d", f, failed, n)
	}
	if last := failed[n-1]; last.ID == "" || last.Formation != f || !strings.Contains(last.Error, reason) || last.Slug != nil {
		t.Errorf("last failed build of %s = %+v, want its reason %q", f, last, reason)
	}
}

func TestBuildFailures(t *testing.T) {
	e := newEnv(t, nil)
	e.createFormation("app")
	ctx := context.Background()

	// no buildpack detects an app without a Procfile
	bare, sha, _ := gitRepo(t, map[string]string{"README": "nothing to run\n"})
	var out bytes.Buffer
	_, err := e.b.Build(ctx, "app", bare, sha, &out)
	if err == nil || !strings.Contains(err.Error(), "no buildpack") {
		t.Fatalf("no Procfile: err = %v\n%s", err, out.String())
	}
	// a formation that does not exist
	_, err = e.b.Build(ctx, "ghost", bare, sha, &out)
	if err == nil || !strings.Contains(err.Error(), "formations:create ghost") {
		t.Fatalf("missing formation: err = %v", err)
	}
	// a sha that is not in the repository
	_, err = e.b.Build(ctx, "app", bare, strings.Repeat("ab", 20), &out)
	if err == nil || !strings.Contains(err.Error(), "not in") {
		t.Fatalf("unknown commit: err = %v", err)
	}
	// nothing released, nothing left running; the failures are recorded,
	// except for the formation that does not exist
	if _, err := e.store.LatestRelease(ctx, "app"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("failed builds released something: %v", err)
	}
	assertNoBuildContainers(t, e, "app")
	wantFailure(t, e, "app", 2, "not in")
	if bs := builds(t, e, "ghost"); len(bs) != 0 {
		t.Errorf("builds recorded for a formation that does not exist: %+v", bs)
	}
}

func TestBuildLimits(t *testing.T) {
	ctx := context.Background()
	t.Run("slug size", func(t *testing.T) {
		e := newEnv(t, func(c *Config) { c.MaxSlugBytes = 64 })
		e.createFormation("big")
		bare, sha, _ := gitRepo(t, helloApp)
		var out bytes.Buffer
		_, err := e.b.Build(ctx, "big", bare, sha, &out)
		if err == nil || !strings.Contains(err.Error(), "more than the 64B limit") {
			t.Fatalf("err = %v, want the slug size limit\n%s", err, out.String())
		}
		if _, err := e.store.LatestRelease(ctx, "big"); !errors.Is(err, state.ErrNotFound) {
			t.Fatalf("oversized slug released: %v", err)
		}
		wantFailure(t, e, "big", 1, "more than the 64B limit")
	})
	t.Run("time", func(t *testing.T) {
		// a limit that has passed before the build can start anything
		e := newEnv(t, func(c *Config) { c.Timeout = time.Nanosecond })
		e.createFormation("slow")
		bare, sha, _ := gitRepo(t, helloApp)
		var out bytes.Buffer
		_, err := e.b.Build(ctx, "slow", bare, sha, &out)
		var tl *TimeLimitError
		if !errors.As(err, &tl) || !strings.Contains(err.Error(), "build exceeded the 1ns time limit") {
			t.Fatalf("err = %v, want the time limit", err)
		}
		wantFailure(t, e, "slow", 1, "build exceeded the 1ns time limit")
		assertNoBuildContainers(t, e, "slow")
	})
}

func TestBuildsOfOneFormationQueue(t *testing.T) {
	e := newEnv(t, nil)
	e.createFormation("q")
	ctx := context.Background()
	bare, sha, _ := gitRepo(t, helloApp)

	first := &syncBuffer{}
	started := make(chan struct{})
	first.onWrite = func(s string) {
		if strings.Contains(s, "Building") {
			select {
			case <-started:
			default:
				close(started)
			}
		}
	}
	var wg sync.WaitGroup
	var err1 error
	wg.Add(1)
	go func() { defer wg.Done(); _, err1 = e.b.Build(ctx, "q", bare, sha, first) }()
	select {
	case <-started:
	case <-time.After(time.Minute):
		t.Fatal("first build did not start")
	}
	var second bytes.Buffer
	rel, err2 := e.b.Build(ctx, "q", bare, sha, &second)
	wg.Wait()
	if err1 != nil || err2 != nil {
		t.Fatalf("builds failed: %v / %v", err1, err2)
	}
	if !strings.Contains(second.String(), "Another build of q is running; waiting...") {
		t.Errorf("second build did not say it waits:\n%s", second.String())
	}
	if rel.Version != 2 {
		t.Errorf("second build released v%d, want v2", rel.Version)
	}
}

type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	onWrite func(string)
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.onWrite != nil {
		b.onWrite(string(p))
	}
	return b.buf.Write(p)
}

func assertNoBuildContainers(t *testing.T, e *env, f string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids, err := e.docker.List(ctx, map[string]string{labelRole: roleBuild, labelFormation: f, labelBuilder: e.b.instance})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 0 {
		t.Errorf("build containers of %s left behind: %v", f, ids)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
