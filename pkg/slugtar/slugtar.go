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

// Extract unpacks the gzipped tarball at tgzPath into dir, within
// DefaultLimits. See ExtractLimited.
func Extract(ctx context.Context, tgzPath, dir string) error {
	return ExtractLimited(ctx, tgzPath, dir, DefaultLimits)
}

// ExtractLimited unpacks the gzipped tarball at tgzPath into dir, which
// must not exist yet; its parent is created when missing. It unpacks into a
// temporary directory next to dir first, renamed into place when complete.
// Everything it writes is owned by the caller and readable by everyone, and
// executable by everyone where the tarball gave any execute bit, but
// writable by the owner only: dir ends up 0755, directories 0755, files 0644
// or 0755, whatever the tarball says, so that an app running as any uid can
// read its slug and none can change it. When dir appears meanwhile (another
// process extracted the same slug), ExtractLimited leaves it and returns
// nil. A slug beyond lim is refused with an error matching ErrTooLarge, and
// nothing of it is left.
func ExtractLimited(ctx context.Context, tgzPath, dir string, lim Limits) error {
	if err := extract(ctx, tgzPath, dir, lim); err != nil {
		return fmt.Errorf("slugtar: %w", err)
	}
	return nil
}

func extract(ctx context.Context, tgzPath, dir string, lim Limits) error {
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
	if err := untar(ctx, tgzPath, tmp, lim); err != nil {
		return err
	}
	if err := openDirs(tmp); err != nil {
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

// untar unpacks tgzPath into the existing directory dir, within lim.
func untar(ctx context.Context, tgzPath, dir string, lim Limits) error {
	f, err := os.Open(tgzPath)
	if err != nil {
		return err
	}
	defer f.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return walk(ctx, f, lim, func(hdr *tar.Header, r io.Reader) error {
		return entry(root, hdr, r)
	})
}

// Check reads the gzipped tarball r to its end and returns the error
// ExtractLimited would return for it, writing nothing: a slug beyond lim
// (matching ErrTooLarge), an entry that leaves the slug, a device, fifo or
// other special file, or a stream that is not a gzipped tarball. It reads
// headers and skips contents, in one pass, so a slug can be checked while
// it streams elsewhere. A cancelled ctx returns ctx.Err().
func Check(ctx context.Context, r io.Reader, lim Limits) error {
	if err := walk(ctx, r, lim, func(hdr *tar.Header, _ io.Reader) error {
		_, err := checkEntry(hdr)
		return err
	}); err != nil {
		return fmt.Errorf("slugtar: %w", err)
	}
	return nil
}

// walk reads the gzipped tarball r and calls fn with each entry, counting
// entries and file sizes against lim before fn sees the entry.
func walk(ctx context.Context, r io.Reader, lim Limits, fn func(*tar.Header, io.Reader) error) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("not a gzipped tarball: %w", err)
	}
	tr := tar.NewReader(zr)
	var entries int
	var bytes int64
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
		entries++
		if lim.MaxEntries > 0 && entries > lim.MaxEntries {
			return tooManyEntries(lim)
		}
		if isRegular(hdr.Typeflag) {
			if hdr.Size < 0 || (lim.MaxBytes > 0 && hdr.Size > lim.MaxBytes-bytes) {
				return tooManyBytes(lim)
			}
			bytes += hdr.Size
		}
		if err := fn(hdr, tr); err != nil {
			return err
		}
	}
}

// checkEntry returns the clean name of a tarball entry (see entryName), or
// the reason the slug may not hold it.
func checkEntry(hdr *tar.Header) (string, error) {
	name, err := entryName(hdr.Name)
	if err != nil {
		return "", err
	}
	if name == "." && hdr.Typeflag != tar.TypeDir {
		return "", fmt.Errorf("tarball entry %q is not a directory: rebuild the slug", hdr.Name)
	}
	switch {
	case hdr.Typeflag == tar.TypeDir, isRegular(hdr.Typeflag), hdr.Typeflag == tar.TypeSymlink, hdr.Typeflag == tar.TypeXGlobalHeader:
	case hdr.Typeflag == tar.TypeLink:
		if _, err := entryName(hdr.Linkname); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("tarball entry %q is %s: a slug holds only files, directories and links; remove it from the app and push again", hdr.Name, kind(hdr.Typeflag))
	}
	return name, nil
}

// entry writes one tarball entry under root.
func entry(root *os.Root, hdr *tar.Header, r io.Reader) error {
	name, err := checkEntry(hdr)
	if err != nil {
		return err
	}
	if name == "." {
		return nil
	}
	fail := func(err error) error { return fmt.Errorf("tarball entry %q: %w", hdr.Name, err) }
	if d := path.Dir(name); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return fail(err)
		}
	}
	switch {
	case hdr.Typeflag == tar.TypeDir:
		if err := root.MkdirAll(name, 0o755); err != nil {
			return fail(err)
		}
		if err := root.Chmod(name, 0o755); err != nil {
			return fail(err)
		}
	case isRegular(hdr.Typeflag):
		// Readable by every uid, executable by every uid when the
		// tarball made it executable at all, writable by none of them.
		mode := fs.FileMode(0o644)
		if hdr.Mode&0o111 != 0 {
			mode = 0o755
		}
		if err := removeExisting(root, name); err != nil {
			return fail(err)
		}
		out, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
		if err != nil {
			return fail(err)
		}
		_, err = io.Copy(out, io.LimitReader(r, hdr.Size))
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = root.Chmod(name, mode) // not subject to the umask
		}
		if err != nil {
			return fail(err)
		}
	case hdr.Typeflag == tar.TypeSymlink:
		// The target is resolved inside the container, where the slug is
		// /app; extraction never writes through a link (os.Root).
		if err := removeExisting(root, name); err != nil {
			return fail(err)
		}
		if err := root.Symlink(hdr.Linkname, name); err != nil {
			return fail(err)
		}
	case hdr.Typeflag == tar.TypeLink:
		// GNU tar records files with several links as hard links (uv and
		// pip caches make them). os.Root keeps both names inside the slug,
		// and a link adds no bytes.
		target, _ := entryName(hdr.Linkname) // checked by checkEntry
		if err := removeExisting(root, name); err != nil {
			return fail(err)
		}
		if err := root.Link(target, name); err != nil {
			return fail(err)
		}
	case hdr.Typeflag == tar.TypeXGlobalHeader:
		// pax metadata for the entries that follow, not a file.
	}
	return nil
}

// isRegular reports whether a tar type flag is a regular file (with
// content).
func isRegular(t byte) bool {
	return t == tar.TypeReg || t == tar.TypeGNUSparse || t == '\x00' // '\x00' is the old TypeRegA
}

// kind names a special file's type flag.
func kind(t byte) string {
	switch t {
	case tar.TypeChar:
		return "a character device"
	case tar.TypeBlock:
		return "a block device"
	case tar.TypeFifo:
		return "a fifo"
	}
	return fmt.Sprintf("of tar type %q", t)
}

// openDirs makes every directory under dir 0755, including those made
// implicitly for an entry (whose mode the umask decided).
func openDirs(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return root.Chmod(p, 0o755)
		}
		return nil
	})
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
