package slugtar_test

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
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
		entry{Name: "./current", Type: tar.TypeSymlink, Link: "/app/bin"},
		entry{Name: "./run-again", Type: tar.TypeLink, Link: "./bin/run"},
		entry{Name: "./fifo", Type: tar.TypeFifo},
	)
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
	if fi, err := os.Stat(filepath.Join(dir, "private")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directories stay writable by their owner: %v %v", fi, err)
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
	if _, err := os.Lstat(filepath.Join(dir, "fifo")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("special files are skipped: %v", err)
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
