package builder

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
)

// attackEnv is a builder whose operator allows one local buildpack,
// "attack", whose bin/compile runs the app's attack.sh: the pushed code
// does what it likes in the build container, as any buildpack lets it.
func attackEnv(t *testing.T, mod func(*Config)) (*env, string) {
	t.Helper()
	dir := t.TempDir()
	bp := filepath.Join(dir, "attack")
	if err := os.MkdirAll(filepath.Join(bp, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"detect":  "#!/bin/bash\necho Attack\n",
		"compile": "#!/bin/bash\nexec bash \"$1/attack.sh\" \"$@\"\n",
	} {
		if err := os.WriteFile(filepath.Join(bp, "bin", name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t, func(c *Config) {
		c.BuildpackDirs = []string{dir}
		if mod != nil {
			mod(c)
		}
	})
	return e, bp
}

// attack builds an app whose build runs script, in a new formation f, and
// returns the release (if any), the output and the error.
func attack(t *testing.T, e *env, bp, f, script string) (*state.Release, string, error) {
	t.Helper()
	ctx := context.Background()
	e.createFormation(f)
	if err := e.store.Put(ctx, e.store.Keys.Config(f), state.Config{Vars: map[string]string{"BUILDPACK_URL": bp}}); err != nil {
		t.Fatal(err)
	}
	bare, sha, _ := gitRepo(t, map[string]string{"Procfile": "web: true\n", "attack.sh": "set -x\n" + script})
	var out bytes.Buffer
	rel, err := e.b.Build(ctx, f, bare, sha, &out)
	t.Logf("build output:\n%s", out.String())
	return rel, out.String(), err
}

// wantRefused checks that a build failed with want and released nothing.
func wantRefused(t *testing.T, e *env, f string, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
	if _, err := e.store.LatestRelease(context.Background(), f); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("the attack released: %v", err)
	}
	assertNoBuildContainers(t, e, f)
}

// Build outputs never make the coordinator open a host path, block, or
// store more than the limits.
func TestHostileBuildOutputs(t *testing.T) {
	t.Parallel()
	e, bp := attackEnv(t, func(c *Config) { c.Timeout = 3 * time.Minute })

	t.Run("failure is a symlink to a host file", func(t *testing.T) {
		secret := filepath.Join(t.TempDir(), "secret")
		const word = "TOPSECRET-5d1f0e"
		if err := os.WriteFile(secret, []byte(word+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		// build.sh would overwrite /tmp/out/failure: kill it first
		_, out, err := attack(t, e, bp, "symfail", "ln -s "+secret+" /tmp/out/failure\nkill -KILL $PPID\n")
		wantRefused(t, e, "symfail", err, "the build left /tmp/out/failure as a symlink, not a regular file")
		if strings.Contains(err.Error(), word) || strings.Contains(out, word) {
			t.Fatalf("the host file leaked: %v\n%s", err, out)
		}
		for _, b := range failedBuilds(t, e, "symfail") {
			if strings.Contains(b.Error, word) {
				t.Fatalf("the host file leaked into the build record: %+v", b)
			}
		}
	})

	t.Run("failure is a symlink to /etc/shadow", func(t *testing.T) {
		_, _, err := attack(t, e, bp, "shadow", "ln -s /etc/shadow /tmp/out/failure\nkill -KILL $PPID\n")
		wantRefused(t, e, "shadow", err, "the build left /tmp/out/failure as a symlink, not a regular file")
		if strings.Contains(err.Error(), "root:") {
			t.Fatalf("a shadow file leaked: %v", err)
		}
	})

	t.Run("slug is a FIFO", func(t *testing.T) {
		start := time.Now()
		// a reader lets build.sh's tar write into the FIFO and finish
		_, _, err := attack(t, e, bp, "fifo", "mkfifo /tmp/out/slug.tgz\n(cat /tmp/out/slug.tgz >/dev/null 2>&1 &)\n")
		wantRefused(t, e, "fifo", err, "the build left /tmp/out/slug.tgz as a FIFO, not a regular file")
		if d := time.Since(start); d > time.Minute {
			t.Errorf("the FIFO held the build for %s", d)
		}
	})

	t.Run("slug is a symlink to /dev/zero", func(t *testing.T) {
		_, _, err := attack(t, e, bp, "zero", "ln -s /dev/zero /tmp/out/slug.tgz\n")
		wantRefused(t, e, "zero", err, "the build left /tmp/out/slug.tgz as a symlink, not a regular file")
	})

	t.Run("buildpack is a directory", func(t *testing.T) {
		// build.sh cannot write its buildpack names into it, and goes on
		_, _, err := attack(t, e, bp, "dir", "mkdir /tmp/out/buildpack\n")
		wantRefused(t, e, "dir", err, "the build left /tmp/out/buildpack as a directory, not a regular file")
	})

	t.Run("the build stops its own container", func(t *testing.T) {
		start := time.Now()
		_, _, err := attack(t, e, bp, "stop", `for p in /proc/[0-9]*; do [ "$(cat $p/comm)" = sleep ] && kill -KILL ${p#/proc/}; done; sleep 5`+"\n")
		wantRefused(t, e, "stop", err, "from the build container (did the build stop it?)")
		if d := time.Since(start); d > time.Minute {
			t.Errorf("the stopped container held the build for %s", d)
		}
	})

	t.Run("a background process outlives the build", func(t *testing.T) {
		start := time.Now()
		rel, _, err := attack(t, e, bp, "linger", "sleep 600 &\n")
		if err != nil || rel == nil {
			t.Fatalf("err = %v", err)
		}
		if d := time.Since(start); d > time.Minute {
			t.Errorf("a lingering process held the build for %s", d)
		}
		assertNoBuildContainers(t, e, "linger")
	})
}

// A slug past --max-slug-bytes is cut while it streams, and nothing of it
// is stored.
func TestHostileSlugSize(t *testing.T) {
	t.Parallel()
	e, bp := attackEnv(t, func(c *Config) { c.MaxSlugBytes = 1 << 20 })
	_, _, err := attack(t, e, bp, "huge", "head -c 3000000 /dev/urandom >\"$1/blob\"\n")
	wantRefused(t, e, "huge", err, "the slug is more than the 1.0MB limit: remove large files from the repository or the build (or raise --max-slug-bytes)")
	entries, _ := os.ReadDir(e.slugs.Dir)
	if len(entries) != 0 {
		t.Errorf("the slug store holds %v after a refused slug", entries)
	}
}

// A slug the nodes would refuse to extract (a tar bomb, too many entries)
// fails the push while it streams into the store: nothing is stored and
// nothing released.
func TestHostileSlugBomb(t *testing.T) {
	t.Parallel()
	e, bp := attackEnv(t, func(c *Config) {
		c.MaxSlugBytes = 16 << 20 // expands to at most 128MB
		c.MaxSlugEntries = 2000
	})
	t.Run("expands past 8x --max-slug-bytes", func(t *testing.T) {
		// 300MB of zeros gzip to a few hundred KB: under --max-slug-bytes
		_, out, err := attack(t, e, bp, "bomb", "head -c 300000000 /dev/zero >\"$1/zeros\"\n")
		wantRefused(t, e, "bomb", err, "builder: the slug expands past 128.0MB (8x --max-slug-bytes): refusing it")
		if strings.Contains(out, "Launching") {
			t.Errorf("the bomb was released:\n%s", out)
		}
	})
	t.Run("more than --max-slug-entries", func(t *testing.T) {
		_, _, err := attack(t, e, bp, "entries", "mkdir \"$1/many\" && cd \"$1/many\" && seq 3000 | xargs touch\n")
		wantRefused(t, e, "entries", err, "builder: the slug has more than 2000 entries (--max-slug-entries): refusing it")
	})
	entries, _ := os.ReadDir(e.slugs.Dir)
	if len(entries) != 0 {
		t.Errorf("the slug store holds %v after refused slugs", entries)
	}
	// a slug within the limits still builds
	if rel, _, err := attack(t, e, bp, "fine", "head -c 1000000 /dev/zero >\"$1/zeros\"\n"); err != nil || rel == nil {
		t.Fatalf("a slug within the limits: %v", err)
	}
}

// A build that fills its scratch space fails with that reason.
func TestHostileBuildDisk(t *testing.T) {
	t.Parallel()
	e, bp := attackEnv(t, func(c *Config) { c.BuildDisk = 32 << 20 })
	_, _, err := attack(t, e, bp, "fill", "dd if=/dev/zero of=\"$1/fill\" bs=1M count=64 || exit 1\n")
	wantRefused(t, e, "fill", err, "the build ran out of its 32.0MB of disk (--build-disk)")
}

// A build runs unprivileged, limited and on a read-only root file system,
// and its cache persists without a writable host mount.
func TestBuildPrivilegesAndCache(t *testing.T) {
	t.Parallel()
	e, bp := attackEnv(t, func(c *Config) { c.BuildPids = 300 })
	probe := `grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status >"$1/status.txt"
cat /sys/fs/cgroup/pids/pids.max >"$1/pids.txt" || cat /sys/fs/cgroup/pids.max >"$1/pids.txt"
cat /sys/fs/cgroup/memory/memory.limit_in_bytes >"$1/memory.txt" || cat /sys/fs/cgroup/memory.max >"$1/memory.txt"
echo $(id -u) $(id -g) >"$1/uid.txt"
echo HOME=$HOME USER=$USER LOGNAME=$LOGNAME >"$1/env.txt"
awk '$2 == "/" {print $4}' /proc/mounts >"$1/rootfs.txt"
n=$(cat "$2/count" 2>/dev/null || echo 0)
echo $((n + 1)) >"$2/count"
cp "$2/count" "$1/count.txt"
`
	rel, _, err := attack(t, e, bp, "probe", probe)
	if err != nil {
		t.Fatal(err)
	}
	file := func(name string) string {
		t.Helper()
		s, ok := slugFile(t, e, rel, name)
		if !ok {
			t.Fatalf("slug lacks %s", name)
		}
		return strings.TrimSpace(s)
	}
	status := file("status.txt")
	for _, want := range []string{"CapEff:\t0000000000000000", "CapPrm:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1"} {
		if !strings.Contains(status, want) {
			t.Errorf("/proc/self/status of the build lacks %q:\n%s", want, status)
		}
	}
	if got := file("pids.txt"); got != "300" {
		t.Errorf("pids limit = %s, want 300", got)
	}
	if got, want := file("memory.txt"), strconv.FormatInt(DefaultBuildMemory+DefaultBuildDisk, 10); got != want {
		t.Errorf("memory limit = %s, want %s (--build-memory plus --build-disk)", got, want)
	}
	uid := e.appUID("probe")
	if uid < state.FirstAppUID {
		t.Fatalf("formation uid %d", uid)
	}
	if got, want := file("uid.txt"), fmt.Sprintf("%d %d", uid, uid); got != want {
		t.Errorf("the build ran as uid and gid %s, want the formation's %s", got, want)
	}
	if got, want := file("env.txt"), fmt.Sprintf("HOME=/tmp USER=u%d LOGNAME=u%d", uid, uid); got != want {
		t.Errorf("the build's environment: %s, want %s", got, want)
	}
	if got := file("rootfs.txt"); !strings.HasPrefix(got, "ro,") {
		t.Errorf("the root file system is mounted %q, want read-only", got)
	}
	if got := file("count.txt"); got != "1" {
		t.Errorf("first build's cache count = %s", got)
	}
	cache := filepath.Join(e.dataDir, "cache", "probe", cacheFile)
	if st, err := os.Lstat(cache); err != nil || !st.Mode().IsRegular() {
		t.Fatalf("the build cache %s: %v, %v", cache, st, err)
	}

	// the cache comes back in the next build
	bare, _, commit := gitRepo(t, map[string]string{"Procfile": "web: true\n", "attack.sh": probe})
	sha := commit(map[string]string{"README": "again\n"})
	rel, _ = mustBuild(t, e, "probe", bare, sha)
	if got := file("count.txt"); got != "2" {
		t.Errorf("second build's cache count = %s, want 2", got)
	}

	// another formation builds as another uid
	rel, _, err = attack(t, e, bp, "probe2", probe)
	if err != nil {
		t.Fatal(err)
	}
	uid2 := e.appUID("probe2")
	if uid2 == uid {
		t.Fatalf("two formations have uid %d", uid)
	}
	if got, want := file("uid.txt"), fmt.Sprintf("%d %d", uid2, uid2); got != want {
		t.Errorf("the second formation's build ran as %s, want %s", got, want)
	}
}

// A cache larger than --build-disk (tar headers of many empty files) is
// dropped with a warning; the build itself succeeds.
func TestOversizedCacheIsDropped(t *testing.T) {
	t.Parallel()
	e, bp := attackEnv(t, func(c *Config) { c.BuildDisk = 32 << 20 })
	rel, out, err := attack(t, e, bp, "bigcache", "seq 80000 | sed \"s|^|$2/f|\" | xargs touch\n")
	if err != nil || rel == nil {
		t.Fatalf("err = %v", err)
	}
	wantLines(t, out, " !     The build cache was dropped (it is larger than the 32.0MB of --build-disk): the next build starts without it")
	if _, err := os.Lstat(filepath.Join(e.dataDir, "cache", "bigcache", cacheFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an oversized cache was kept: %v", err)
	}
}

func TestReadTarEntry(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	add(&tar.Header{Name: "other", Typeflag: tar.TypeReg, Mode: 0o644}, "skipped")
	add(&tar.Header{Name: "ok", Typeflag: tar.TypeReg, Mode: 0o644}, "hello")
	add(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644}, "0123456789")
	add(&tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}, "")
	add(&tar.Header{Name: "fifo", Typeflag: tar.TypeFifo}, "")
	add(&tar.Header{Name: "dev", Typeflag: tar.TypeChar}, "")
	add(&tar.Header{Name: "dir/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	tw.Close()

	for _, tc := range []struct {
		name  string
		limit int64
		want  string // content, or the error's text
	}{
		{"ok", 5, "hello"},          // exactly at the limit
		{"big", 9, "over the size"}, // one byte past it
		{"link", 100, "left /tmp/out/link as a symlink, not a regular file"},
		{"fifo", 100, "as a FIFO, not a regular file"},
		{"dev", 100, "as a device, not a regular file"},
		{"dir", 100, "as a directory, not a regular file"},
		{"missing", 100, errNoOutput.Error()},
	} {
		var got bytes.Buffer
		err := readTarEntry(bytes.NewReader(buf.Bytes()), tc.name, tc.limit, func(r io.Reader) error {
			_, err := io.Copy(&got, r)
			return err
		})
		if err != nil {
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
			}
			continue
		}
		if got.String() != tc.want {
			t.Errorf("%s: read %q, want %q", tc.name, got.String(), tc.want)
		}
	}
}
