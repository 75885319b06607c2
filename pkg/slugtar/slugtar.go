package slugtar

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Extract unpacks the gzipped tarball at tgzPath into dir, which must not
// exist yet; its parent is created when missing. It unpacks into a
// temporary directory next to dir first, renamed into place when complete.
// dir ends up 0755 (the app user must read it). When dir appears meanwhile
// (another process extracted the same slug), Extract leaves it and returns
// nil.
func Extract(ctx context.Context, tgzPath, dir string) error {
	if err := extract(ctx, tgzPath, dir); err != nil {
		return fmt.Errorf("slugtar: %w", err)
	}
	return nil
}

func extract(ctx context.Context, tgzPath, dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".extract-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // after the rename, a no-op
	// MkdirTemp makes it 0700; the app user must read /app.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := untar(ctx, tgzPath, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		if fi, serr := os.Stat(dir); serr == nil && fi.IsDir() {
			return nil // another process got there first
		}
		return err
	}
	return nil
}

// untar unpacks tgzPath into the existing directory dir.
func untar(ctx context.Context, tgzPath, dir string) error {
	f, err := os.Open(tgzPath)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("not a gzipped tarball: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(zr)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tarball: %w", err)
		}
		if err := entry(root, hdr, tr); err != nil {
			return err
		}
	}
}

// entry writes one tarball entry under root.
func entry(root *os.Root, hdr *tar.Header, r io.Reader) error {
	name, err := entryName(hdr.Name)
	if err != nil {
		return err
	}
	if name == "." {
		if hdr.Typeflag == tar.TypeDir {
			return nil
		}
		return fmt.Errorf("tarball entry %q is not a directory: rebuild the slug", hdr.Name)
	}
	fail := func(err error) error { return fmt.Errorf("tarball entry %q: %w", hdr.Name, err) }
	mode := fs.FileMode(hdr.Mode) & fs.ModePerm
	if d := path.Dir(name); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return fail(err)
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := root.MkdirAll(name, 0o755); err != nil {
			return fail(err)
		}
		if err := root.Chmod(name, mode|0o700); err != nil {
			return fail(err)
		}
	case tar.TypeReg:
		if err := removeExisting(root, name); err != nil {
			return fail(err)
		}
		out, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
		if err != nil {
			return fail(err)
		}
		_, err = io.Copy(out, r)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = root.Chmod(name, mode) // not subject to the umask
		}
		if err != nil {
			return fail(err)
		}
	case tar.TypeSymlink:
		// The target is resolved inside the container, where the slug is
		// /app; extraction never writes through a link (os.Root).
		if err := removeExisting(root, name); err != nil {
			return fail(err)
		}
		if err := root.Symlink(hdr.Linkname, name); err != nil {
			return fail(err)
		}
	case tar.TypeLink:
		target, err := entryName(hdr.Linkname)
		if err != nil {
			return err
		}
		if err := removeExisting(root, name); err != nil {
			return fail(err)
		}
		if err := root.Link(target, name); err != nil {
			return fail(err)
		}
	default:
		// Devices, fifos and the like have no place in a slug.
	}
	return nil
}

// entryName turns a tar entry name into a clean path relative to the slug
// root ("." for the root itself), refusing names that leave it.
func entryName(n string) (string, error) {
	clean := path.Clean(strings.TrimPrefix(n, "./"))
	if clean == "/" || clean == "." {
		return ".", nil
	}
	if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("tarball entry %q points outside the slug: rebuild the slug", n)
	}
	return clean, nil
}

// removeExisting removes what a previous entry of the same name left.
func removeExisting(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return root.RemoveAll(name)
	}
	return root.Remove(name)
}
