package slugtar_test

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/deis/deis/pkg/slugtar"
	"github.com/deis/deis/pkg/slugtar/slugtartest"
)

type entry = slugtartest.Entry

// writeTgz writes a tarball of entries to a file and returns its path.
func writeTgz(t *testing.T, entries ...entry) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "slug.tgz")
	if err := os.WriteFile(p, slugtartest.Tarball(t, entries...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// leftovers lists what is in parent besides keep.
func leftovers(t *testing.T, parent string, keep ...string) []string {
	t.Helper()
	des, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if !contains(keep, de.Name()) {
			out = append(out, de.Name())
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestExtract(t *testing.T) {
	tgz := writeTgz(t,
		entry{Name: "./", Type: tar.TypeDir},
		entry{Name: "./Procfile", Body: "web: python3 server.py\n"},
		entry{Name: "./bin/", Type: tar.TypeDir},
		entry{Name: "./bin/run", Body: "#!/bin/sh\n", Mode: 0o755},
		entry{Name: ".profile.d/env.sh", Body: "export X=1\n"},
		entry{Name: "./private/", Type: tar.TypeDir, Mode: 0o500},
		entry{Name: "./private/key", Body: "secret", Mode: 0o600},
		entry{Name: "./setuid", Body: "#!/bin/sh\n", Mode: 0o4777},
		entry{Name: "./owner-exec", Body: "#!/bin/sh\n", Mode: 0o700},
		entry{Name: "./implicit/deep/file", Body: "x", Mode: 0o640},
		entry{Name: "./current", Type: tar.TypeSymlink, Link: "/app/bin"},
		entry{Name: "./run-again", Type: tar.TypeLink, Link: "./bin/run"},
	)
	defer syscall.Umask(syscall.Umask(0o077)) // a strict umask changes nothing
	parent := filepath.Join(t.TempDir(), "not", "yet")
	dir := filepath.Join(parent, "app")
	if err := slugtar.Extract(context.Background(), tgz, dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "Procfile")); string(b) != "web: python3 server.py\n" {
		t.Errorf("Procfile: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, ".profile.d/env.sh")); string(b) != "export X=1\n" {
		t.Errorf("entry without ./ prefix, in a directory the tarball does not list: %q", b)
	}
	if fi, err := os.Stat(filepath.Join(dir, "bin/run")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/run keeps its mode: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "Procfile")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("Procfile keeps its mode: %v %v", fi, err)
	}
	// Every uid reads and runs the slug; none but its owner (root) writes
	// it, and no setuid bit survives.
	for p, want := range map[string]os.FileMode{
		"private": fs.ModeDir | 0o755, "private/key": 0o644, "setuid": 0o755, "owner-exec": 0o755,
		"implicit": fs.ModeDir | 0o755, "implicit/deep": fs.ModeDir | 0o755, "implicit/deep/file": 0o644,
	} {
		if fi, err := os.Stat(filepath.Join(dir, p)); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v %v, want mode %v", p, fi.Mode(), err, want)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("slug dir must be readable by the app user: %v %v", fi, err)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "current")); l != "/app/bin" {
		t.Errorf("symlink target kept as is: %q", l)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "run-again")); string(b) != "#!/bin/sh\n" {
		t.Errorf("hard link: %q", b)
	}
	if left := leftovers(t, parent, "app"); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestExtractLaterEntryReplaces(t *testing.T) {
	tgz := writeTgz(t,
		entry{Name: "./a", Body: "first"},
		entry{Name: "./a", Body: "second"},
		entry{Name: "./l", Type: tar.TypeSymlink, Link: "a"},
		entry{Name: "./l", Body: "file now"},
		entry{Name: "./d/", Type: tar.TypeDir},
		entry{Name: "./d/x", Body: "x"},
		entry{Name: "./d", Type: tar.TypeSymlink, Link: "a"},
	)
	dir := filepath.Join(t.TempDir(), "app")
	if err := slugtar.Extract(context.Background(), tgz, dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a")); string(b) != "second" {
		t.Errorf("a: %q", b)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "l")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("l must be a file: %v %v", fi, err)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "d")); l != "a" {
		t.Errorf("d must be a symlink: %q", l)
	}
}

func TestExtractRefuses(t *testing.T) {
	cases := map[string][]entry{
		"dot-dot":  {{Name: "../evil", Body: "x"}},
		"absolute": {{Name: "/etc/evil", Body: "x"}},
		"through a symlink": {
			{Name: "./link", Type: tar.TypeSymlink, Link: "../.."},
			{Name: "./link/evil", Body: "x"},
		},
		"hard link out":           {{Name: "./h", Type: tar.TypeLink, Link: "../../etc/passwd"}},
		"root is not a directory": {{Name: ".", Body: "x"}},
		"fifo":                    {{Name: "./a", Body: "a"}, {Name: "./fifo", Type: tar.TypeFifo}},
		"character device":        {{Name: "./zero", Type: tar.TypeChar}},
		"block device":            {{Name: "./sda", Type: tar.TypeBlock}},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			tgz := writeTgz(t, entries...)
			parent := filepath.Join(t.TempDir(), "a", "b")
			dir := filepath.Join(parent, "slug")
			err := slugtar.Extract(context.Background(), tgz, dir)
			if err == nil || !strings.HasPrefix(err.Error(), "slugtar: ") {
				t.Fatalf("want a slugtar error, got %v", err)
			}
			for _, p := range []string{filepath.Join(parent, "evil"), filepath.Join(filepath.Dir(parent), "evil")} {
				if _, err := os.Stat(p); err == nil {
					t.Fatal("a file escaped the slug directory")
				}
			}
			if left := leftovers(t, parent); len(left) != 0 {
				t.Errorf("a refused slug must leave nothing behind: %v", left)
			}
		})
	}
}

func TestExtractNotATarball(t *testing.T) {
	p := filepath.Join(t.TempDir(), "slug.tgz")
	if err := os.WriteFile(p, []byte("not gzip"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := slugtar.Extract(context.Background(), p, filepath.Join(t.TempDir(), "app"))
	if err == nil || !strings.Contains(err.Error(), "not a gzipped tarball") {
		t.Fatalf("want a not-a-tarball error, got %v", err)
	}
}

func TestExtractCancelled(t *testing.T) {
	tgz := writeTgz(t, entry{Name: "./a", Body: "a"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := filepath.Join(t.TempDir(), "app")
	if err := slugtar.Extract(ctx, tgz, dir); !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a cancelled extraction must leave no directory: %v", err)
	}
}

func TestExtractKeepsExisting(t *testing.T) {
	// Another process extracted the slug first: its copy stays.
	dir := filepath.Join(t.TempDir(), "app")
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	tgz := writeTgz(t, entry{Name: "./a", Body: "a"})
	if err := slugtar.Extract(context.Background(), tgz, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bin")); err != nil {
		t.Errorf("the existing directory was replaced: %v", err)
	}
	if left := leftovers(t, filepath.Dir(dir), "app"); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// A tar bomb: a small slug that expands past the limits is refused with the
// reason, and leaves nothing behind.
func TestExtractLimits(t *testing.T) {
	many := func(n int) []entry {
		var es []entry
		for i := 0; i < n; i++ {
			es = append(es, entry{Name: fmt.Sprintf("./f%d", i), Body: "x"})
		}
		return es
	}
	zeros := strings.Repeat("\x00", 8<<20) // 8MiB that gzip makes ~8KiB
	for _, tc := range []struct {
		name    string
		entries []entry
		lim     slugtar.Limits
		want    string // "" means accepted
	}{
		// 8x a 64KiB slug limit is 512KiB; 8MiB of zeros is past it
		{"bomb", []entry{{Name: "./zeros", Body: zeros}}, slugtar.LimitsFor(64<<10, 0),
			"slugtar: the slug expands past 512.0KB (8x --max-slug-bytes): refusing it"},
		// the sum counts, not the largest file
		{"sum of files", []entry{{Name: "./a", Body: "123456"}, {Name: "./b", Body: "12345"}}, slugtar.Limits{MaxBytes: 10},
			"slugtar: the slug expands past 10B: refusing it"},
		// exactly at the limit is fine
		{"at the byte limit", []entry{{Name: "./a", Body: "12345"}, {Name: "./b", Body: "12345"}}, slugtar.Limits{MaxBytes: 10}, ""},
		// directories, links and files all count as entries
		{"entries", append(many(3), entry{Name: "./d/", Type: tar.TypeDir}), slugtar.Limits{MaxEntries: 3, EntriesHint: "--max-slug-entries"},
			"slugtar: the slug has more than 3 entries (--max-slug-entries): refusing it"},
		{"at the entry limit", many(3), slugtar.Limits{MaxEntries: 3}, ""},
		// the defaults take a real slug
		{"defaults", many(10), slugtar.DefaultLimits, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tgz := writeTgz(t, tc.entries...)
			parent := t.TempDir()
			dir := filepath.Join(parent, "slug")
			err := slugtar.ExtractLimited(context.Background(), tgz, dir, tc.lim)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Error() != tc.want || !errors.Is(err, slugtar.ErrTooLarge) {
				t.Fatalf("got %v, want %q matching ErrTooLarge", err, tc.want)
			}
			if left := leftovers(t, parent); len(left) != 0 {
				t.Errorf("a refused slug must leave nothing behind: %v", left)
			}
		})
	}
	if l := slugtar.LimitsFor(0, 0); l.MaxBytes != 8<<30 || l.MaxEntries != 200000 {
		t.Errorf("LimitsFor defaults: %+v", l)
	}
}
