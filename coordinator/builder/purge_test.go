package builder

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/poll"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A destroyed formation leaves nothing on the coordinator: Purge removes its
// repository, build logs and cache (and follows no symlink), deletes what
// was written about it after the destroy, and GC then removes its slugs.
// A formation created again with the same name gets none of the old
// incarnation's files.
func TestPurgeDestroyedFormations(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := e.store
	repos := FormationDir{Root: filepath.Join(e.dataDir, "repos"), Suffix: ".git", Kind: "repository"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// files a push and a build leave for formation f
	leave := func(f string) []string {
		t.Helper()
		paths := []string{
			filepath.Join(repos.Root, f+".git", "HEAD"),
			filepath.Join(e.dataDir, "builds", f, "b1.log"),
			filepath.Join(e.dataDir, "cache", f, "pip", "wheel"),
		}
		for _, p := range paths {
			must(os.MkdirAll(filepath.Dir(p), 0o755))
			must(os.WriteFile(p, []byte(f), 0o644))
		}
		return paths
	}
	exists := func(p string) bool {
		_, err := os.Lstat(p)
		return err == nil
	}
	purge := func() PurgeResult {
		t.Helper()
		res, err := e.b.Purge(ctx, repos)
		must(err)
		return res
	}
	release := func(f string, slug state.SlugRef) {
		t.Helper()
		_, err := s.AppendRelease(ctx, f, func(*state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
			return &state.Release{Build: &state.Build{ID: "b1", Formation: f, Slug: &slug}}, nil, nil, nil
		})
		must(err)
	}

	e.createFormation("gone")
	e.createFormation("stay")
	gone, stay := leave("gone"), leave("stay")
	own, err := e.slugs.Put(bytes.NewReader([]byte("gone's own slug")))
	must(err)
	shared, err := e.slugs.Put(bytes.NewReader([]byte("a slug both use")))
	must(err)
	release("gone", own)
	release("gone", shared)
	release("stay", shared)
	// Not formations: an entry that is no formation name, and a symlink
	// named like a formation that points outside.
	outside := t.TempDir()
	must(os.WriteFile(filepath.Join(outside, "precious"), []byte("x"), 0o644))
	must(os.Symlink(outside, filepath.Join(e.dataDir, "builds", "evil")))
	must(os.MkdirAll(filepath.Join(e.dataDir, "builds", "Not_A_Name"), 0o755))

	if res := purge(); len(res.Removed) != 1 || res.Removed[0] != filepath.Join(e.dataDir, "builds", "evil") {
		t.Fatalf("purge with every formation alive removed %v, want only the symlink named evil", res.Removed)
	}
	if !exists(filepath.Join(outside, "precious")) {
		t.Fatal("purge followed a symlink")
	}
	if !exists(filepath.Join(e.dataDir, "builds", "Not_A_Name")) {
		t.Fatal("purge removed an entry that is no formation's")
	}

	must(s.DestroyFormation(ctx, "gone"))
	// a scheduler pass that read the formation just before wrote this
	must(s.Put(ctx, s.Keys.ReleaseStatus("gone", 1), state.ReleaseStatus{Version: 1, Failed: true}))
	// a node still runs gone's v1
	must(s.Put(ctx, s.Keys.Runtime("n1"), state.Runtime{Node: "n1", Containers: []state.ContainerSpec{{
		Name: "gone.v1.web.1", Formation: "gone", Release: 1, Type: "web", Slug: &own}}}))

	// While a build of gone holds its lock, purge waits for the next pass.
	unlock, ok := e.b.tryLock("gone")
	if !ok {
		t.Fatal("cannot take the build lock")
	}
	res := purge()
	unlock()
	if !slices.Equal(res.Busy, []string{"gone"}) || !exists(gone[0]) {
		t.Fatalf("purge during a build = %+v; want gone busy and kept", res)
	}
	// The keys need no lock.
	if !slices.Equal(res.Keys, []string{"gone"}) {
		t.Errorf("purged keys of %v, want [gone]", res.Keys)
	}
	res = purge()
	for _, p := range gone {
		if exists(p) {
			t.Errorf("%s survived the purge", p)
		}
	}
	for _, p := range stay {
		if !exists(p) {
			t.Errorf("%s of a live formation was removed", p)
		}
	}
	if orphans, err := s.OrphanFormations(ctx); err != nil || len(orphans) != 0 {
		t.Errorf("keys of destroyed formations left: %v, %v", orphans, err)
	}
	if n := counterValue(t, e.b.m.gcRemoved.WithLabelValues("repository")); n != 1 {
		t.Errorf("repositories removed metric = %v", n)
	}

	slugExists := func(sha string) bool {
		p, _ := e.slugs.Path(sha)
		return exists(p)
	}
	// GC keeps what a node still runs, and says so.
	gres, err := e.b.GC(ctx)
	must(err)
	if gres.Lingering != 1 || !slugExists(own.SHA256) {
		t.Fatalf("GC while a node runs gone: %+v, own slug kept %v", gres, slugExists(own.SHA256))
	}
	must(s.Put(ctx, s.Keys.Runtime("n1"), state.Runtime{Node: "n1"}))
	gres, err = e.b.GC(ctx)
	must(err)
	if gres.Lingering != 0 || slugExists(own.SHA256) {
		t.Errorf("the destroyed formation's slug survived GC (%+v)", gres)
	}
	if !slugExists(shared.SHA256) {
		t.Error("GC removed a slug a live formation's release uses")
	}

	// Destroyed and created again between two passes: the new incarnation
	// gets none of the old one's files.
	e.createFormation("again")
	old := leave("again")
	purge() // records the incarnation
	must(s.DestroyFormation(ctx, "again"))
	e.createFormation("again")
	purge()
	for _, p := range old {
		if exists(p) {
			t.Errorf("%s of the destroyed incarnation survived its re-creation", p)
		}
	}
	fresh := leave("again")
	if res := purge(); len(res.Removed) != 0 {
		t.Errorf("purge removed %v of the new incarnation", res.Removed)
	}
	for _, p := range fresh {
		if !exists(p) {
			t.Errorf("%s of the new incarnation was removed", p)
		}
	}

	// Pointed at another installation (another etcd or prefix: another
	// installation id), where none of these formations exist, purge removes
	// nothing.
	must(s.Put(ctx, s.Keys.Installation(), state.InstallationID{ID: "another installation"}))
	must(s.DestroyFormation(ctx, "stay"))
	if _, err := e.b.Purge(ctx, repos); !errors.Is(err, ErrOtherInstallation) {
		t.Fatalf("purge against another installation: %v, want ErrOtherInstallation", err)
	}
	for _, p := range stay {
		if !exists(p) {
			t.Errorf("%s was removed by a purge against another installation", p)
		}
	}
}

// RunPurge reacts to a destroy without waiting for its interval.
func TestPurgeLoopWakesOnDestroy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cli, ok := e.store.KV.(clientv3.Watcher)
	if !ok {
		t.Fatal("the test's store has no watcher")
	}
	repos := FormationDir{Root: filepath.Join(e.dataDir, "repos"), Suffix: ".git", Kind: "repository"}
	e.createFormation("loop")
	head := filepath.Join(repos.Root, "loop.git", "HEAD")
	if err := os.MkdirAll(filepath.Dir(head), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(head, []byte("ref: refs/heads/main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.b.RunPurge(ctx, cli, time.Hour, repos)
	}()
	defer func() { cancel(); <-done }()
	// The first pass records the formation's incarnation.
	poll.True(t, 20*time.Second, "first purge pass", func() bool {
		_, err := os.Stat(filepath.Join(e.dataDir, "incarnations", "loop"))
		return err == nil
	})
	if err := e.store.DestroyFormation(ctx, "loop"); err != nil {
		t.Fatal(err)
	}
	// The interval is an hour: only the watch can wake the loop in time.
	poll.True(t, 20*time.Second, "repository of the destroyed formation removed", func() bool {
		_, err := os.Lstat(filepath.Join(repos.Root, "loop.git"))
		return os.IsNotExist(err)
	})
}

// A build request pins the formation's incarnation: the release of a build
// whose formation was destroyed and created again meanwhile fails.
func TestBuildRequestPinsIncarnation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	e.createFormation("pin")
	pinned, err := e.b.pinIncarnation(ctx, Request{Formation: "pin"})
	if err != nil {
		t.Fatal(err)
	}
	absent, err := e.b.pinIncarnation(ctx, Request{Formation: "later"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.DestroyFormation(ctx, "pin"); err != nil {
		t.Fatal(err)
	}
	e.createFormation("pin")
	e.createFormation("later")
	for f, c := range map[string]context.Context{"pin": pinned, "later": absent} {
		_, err := e.b.release(c, state.Build{ID: "b1", Formation: f}, "Deploy")
		if err == nil || !strings.Contains(err.Error(), "destroyed and created again meanwhile") {
			t.Errorf("release of %s into another incarnation: %v", f, err)
		}
	}
}

// Claim removes, at once and without a purge pass, what an older
// incarnation of a name left, and records the new one; a stale incarnation
// claims nothing, and a running build of the old one is waited for.
func TestClaimIncarnation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := e.store
	repos := FormationDir{Root: filepath.Join(e.dataDir, "repos"), Suffix: ".git", Kind: "repository"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	exists := func(p string) bool {
		_, err := os.Lstat(p)
		return err == nil
	}
	paths := []string{
		filepath.Join(repos.Root, "re.git", "HEAD"),
		filepath.Join(e.dataDir, "builds", "re", "b1.log"),
		filepath.Join(e.dataDir, "cache", "re", "pip", "wheel"),
	}
	leave := func() {
		t.Helper()
		for _, p := range paths {
			must(os.MkdirAll(filepath.Dir(p), 0o755))
			must(os.WriteFile(p, []byte("x"), 0o644))
		}
	}

	e.createFormation("re")
	first, err := s.Incarnation(ctx, "re")
	must(err)
	must(e.b.Claim(ctx, "re", first, repos)) // nothing there yet: recorded
	leave()
	must(e.b.Claim(ctx, "re", first, repos)) // its own: kept
	for _, p := range paths {
		if !exists(p) {
			t.Fatalf("claim by the incarnation that made it removed %s", p)
		}
	}

	must(s.DestroyFormation(ctx, "re"))
	e.createFormation("re")
	second, err := s.Incarnation(ctx, "re")
	must(err)
	// an incarnation that is not the current one claims nothing
	if err := e.b.Claim(ctx, "re", second+1, repos); !errors.Is(err, ErrIncarnationChanged) {
		t.Fatalf("claim by an incarnation that does not exist: %v, want ErrIncarnationChanged", err)
	}
	if !exists(paths[0]) || e.b.readIncarnation("re") != first {
		t.Fatal("a claim by another incarnation changed something")
	}
	// while a build of the old incarnation holds the lock, a claim waits
	unlock, ok := e.b.tryLock("re")
	if !ok {
		t.Fatal("cannot take the build lock")
	}
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	err = e.b.Claim(short, "re", second, repos)
	cancelShort()
	unlock()
	if !errors.Is(err, context.DeadlineExceeded) || !exists(paths[0]) {
		t.Fatalf("claim during a build: %v (files kept: %v), want it to wait", err, exists(paths[0]))
	}
	must(e.b.Claim(ctx, "re", second, repos))
	for _, p := range paths {
		if exists(p) {
			t.Errorf("%s of the destroyed incarnation survived the new one's claim", p)
		}
	}
	if got := e.b.readIncarnation("re"); got != second {
		t.Errorf("recorded incarnation %d, want %d", got, second)
	}
	// a purge pass agrees: nothing more to remove
	if res, err := e.b.Purge(ctx, repos); err != nil || len(res.Removed) != 0 {
		t.Errorf("purge after the claim: %+v, %v", res, err)
	}
}

// A build for an incarnation that was destroyed and created again before
// the build got its lock builds nothing and records nothing in the new one.
func TestBuildOfStaleIncarnationRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	e.createFormation("stale")
	pinned, err := e.b.pinIncarnation(ctx, Request{Formation: "stale"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.DestroyFormation(ctx, "stale"); err != nil {
		t.Fatal(err)
	}
	e.createFormation("stale")
	repo := filepath.Join(e.dataDir, "repos", "stale.git")
	if err := os.MkdirAll(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, err = e.b.build(pinned, Request{Formation: "stale", Repo: repo, SHA: strings.Repeat("a", 40)}, &out)
	want := `formation "stale" was destroyed and created again meanwhile: nothing released into the new formation`
	if err == nil || err.Error() != want {
		t.Fatalf("build of a stale incarnation: %v, want %q", err, want)
	}
	if builds, _, err := state.List[state.Build](ctx, e.store.KV, e.store.Keys.Builds("stale")); err != nil || len(builds) != 0 {
		t.Errorf("builds recorded in the new formation: %v, %v", builds, err)
	}
	if _, err := os.Stat(filepath.Join(e.dataDir, "builds", "stale")); err == nil {
		t.Error("a build log was written for the stale incarnation")
	}
}
