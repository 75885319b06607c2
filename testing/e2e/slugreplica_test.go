package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/harness"
)

// TestLoseBuildingCoordinatorForGood: with two coordinators, a push to the
// first stores its slug on both before the release is written. The first
// coordinator is then stopped and its data directory deleted for good; the
// formation still scales onto a node that joins afterwards (its agent
// downloads the slug from the surviving coordinator, not from the URL the
// build recorded) and that node serves it. A Dockerfile app's image archive
// is stored on both coordinators the same way (the test's nodes share one
// Docker engine, which has the image, so none downloads it).
func TestLoseBuildingCoordinatorForGood(t *testing.T) {
	p := harness.NewPlatformWith(t, harness.PlatformOptions{ExternalEtcd: true})
	p.AddCoordinator()
	ttl := []string{"--heartbeat-ttl", "3s"}
	removeAppImages(t, "keepimg")
	proxy := p.StartAgent("lose-p1", harness.AgentOptions{Addr: "127.0.0.31", Labels: "role=proxy", ExtraArgs: ttl})
	r1 := p.StartAgent("lose-r1", harness.AgentOptions{Addr: "127.0.0.32", Labels: "role=runtime", ExtraArgs: ttl})

	const f = "keep"
	key := p.NewKey("user-" + f)
	p.MustCtl("", "keys:add", key+".pub")
	p.MustCtl("", "formations:create", f)
	repo := p.AppRepo("hello", f)
	out, err := p.Git(repo, key, "push", p.RemoteVia(0, f), "main")
	if err != nil {
		t.Fatalf("git push: %v\n%s", err, out)
	}
	t.Logf("push:\n%s", out)
	if !strings.Contains(out, "Stored on 2 coordinators") {
		t.Errorf("the push does not say its slug is on two coordinators:\n%s", out)
	}
	host := f + ".localhost"
	p.WaitApp(proxy, host, "hello from keep (v1)", 3*time.Minute)

	// Both coordinators hold the slug: a file each, and a holder key each.
	st := state.NewStore(p.Client(), "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rel, err := st.LatestRelease(ctx, f)
	if err != nil || rel.Build == nil || rel.Build.Slug == nil {
		t.Fatalf("release: %+v, %v", rel, err)
	}
	sha := rel.Build.Slug.SHA256
	holders, err := st.Holders(ctx, sha)
	if err != nil {
		t.Fatal(err)
	}
	members, _, err := st.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(holders) != 2 || len(members) != 2 {
		t.Fatalf("slug %s held by %v; members %v", sha, holders, members)
	}
	for id := range holders {
		if _, ok := members[id]; !ok {
			t.Errorf("holder %s is no registered coordinator (%v)", id, members)
		}
	}
	dirA := filepath.Join(p.Dir, "coordinator0")
	for i := 0; i < 2; i++ {
		if _, err := os.Stat(filepath.Join(p.Dir, fmt.Sprintf("coordinator%d", i), "slugs", sha+".tgz")); err != nil {
			t.Errorf("coordinator %d has no file of the slug: %v", i, err)
		}
	}
	idA, err := os.ReadFile(filepath.Join(dirA, "member-id"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := holders[strings.TrimSpace(string(idA))]; !ok {
		t.Fatalf("the building coordinator %s is not a holder: %v", idA, holders)
	}

	// A Dockerfile app's image archive is kept on both too.
	p.MustCtl("", "formations:create", "keepimg")
	imgRepo := p.AppRepo("dockerfile-app", "keepimg")
	if out, err := p.Git(imgRepo, key, "push", p.RemoteVia(0, "keepimg"), "main"); err != nil || !strings.Contains(out, "Stored on 2 coordinators") {
		t.Fatalf("push of the Dockerfile app: %v\n%s", err, out)
	}
	p.WaitApp(proxy, "keepimg.localhost", "from dockerfile-app", 3*time.Minute)
	imgRel, err := st.LatestRelease(ctx, "keepimg")
	if err != nil || imgRel.Build == nil || imgRel.Build.ImageArchive == nil {
		t.Fatalf("release of the Dockerfile app: %+v, %v", imgRel, err)
	}
	archive := imgRel.Build.ImageArchive.SHA256
	if h, err := st.Holders(ctx, archive); err != nil || len(h) != 2 {
		t.Fatalf("image archive %s held by %v, %v", archive, h, err)
	}
	for i := 0; i < 2; i++ {
		if _, err := os.Stat(filepath.Join(p.Dir, fmt.Sprintf("coordinator%d", i), "slugs", archive+".tgz")); err != nil {
			t.Errorf("coordinator %d has no file of the image archive: %v", i, err)
		}
	}

	// Lose the building coordinator for good.
	p.Coordinators[0].Stop()
	if err := os.RemoveAll(dirA); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "the lost coordinator unregistered", func() (bool, string) {
		m, _, err := st.Members(ctx)
		return err == nil && len(m) == 1, fmt.Sprint(m, err)
	})

	// A new node joins; the formation scales onto it, then the old node
	// dies with its containers and the new node serves alone.
	r2 := p.StartAgent("lose-r2", harness.AgentOptions{Addr: "127.0.0.33", Labels: "role=runtime", ExtraArgs: ttl})
	p.MustCtl("", "scale", "web=2", "-f", f)
	harness.Eventually(t, 3*time.Minute, "a ready container on each runtime node", func() (bool, string) {
		c, out := readyCount(p, f)
		return c[r1.Name] == 1 && c[r2.Name] == 1, out
	})
	r1.Kill()
	harness.RemoveContainers(r1.Name)
	harness.Eventually(t, 3*time.Minute, "both containers on the new node", func() (bool, string) {
		c, out := readyCount(p, f)
		return c[r2.Name] == 2 && c[r1.Name] == 0, out
	})
	p.WaitApp(proxy, host, "hello from keep (v1)", time.Minute)
	p.WaitApp(proxy, "keepimg.localhost", "from dockerfile-app", 2*time.Minute)
	for _, line := range strings.Split(r2.Log(), "\n") {
		if strings.Contains(line, "downloaded from another coordinator") {
			t.Log("new node:", line)
		}
	}
	if !strings.Contains(r2.Log(), "downloaded from another coordinator") {
		t.Errorf("the new node did not say where its slug came from:\n%s", r2.Log())
	}

	// The survivor still builds and releases alone (no second coordinator
	// is running, so it does not wait for one).
	p.Git(repo, key, "commit", "-q", "--allow-empty", "-m", "after the loss")
	if out, err := p.Git(repo, key, "push", p.RemoteVia(1, f), "main"); err != nil {
		t.Fatalf("push to the survivor: %v\n%s", err, out)
	}
	p.WaitApp(proxy, host, "hello from keep (v2)", 3*time.Minute)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rel, err = st.LatestRelease(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	holders, _ = st.Holders(ctx, rel.Build.Slug.SHA256)
	ids := make([]string, 0, len(holders))
	for id := range holders {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) != 1 {
		t.Errorf("v2's slug held by %v, want the survivor only", ids)
	}
}
