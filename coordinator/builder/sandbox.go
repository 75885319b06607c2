package builder

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/deis/deis/pkg/state"
)

// Paths inside a build container. The container's root file system is
// read-only and nothing of the host is mounted writable: everything a build
// writes is on one tmpfs at scratchDir of Config.BuildDisk bytes, which goes
// away with the container. The source is copied in, and the outputs and the
// cache copied out, by tar run inside the container (Docker.Exec) as the
// build user, so the coordinator never opens a path a build can write.
const (
	scratchDir = "/tmp"
	sourceDir  = "/tmp/build"
	cacheDir   = "/tmp/cache"
	outDir     = "/tmp/out"
	tarCommand = "/usr/bin/tar"
	// maxSmallOutput is the most read of /tmp/out/failure, release.yml and
	// buildpack.
	maxSmallOutput = 64 << 10
	// cacheFile is a formation's build cache, a tar of /tmp/cache that the
	// coordinator writes itself under DataDir/cache/<formation> and never
	// extracts on the host.
	cacheFile = "cache.tar"
)

// errTooLarge is the error of a capReader past its limit.
var errTooLarge = errors.New("over the size limit")

// errNoOutput means the build left no file at an output path.
var errNoOutput = errors.New("no such file")

// sandbox is a running build container: the build and every copy in or out
// run in it as the build user, user ("UID:GID", the formation's).
type sandbox struct {
	d    Docker
	cid  string
	user string
}

func (s *sandbox) exec(ctx context.Context, cmd []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return s.d.Exec(ctx, s.cid, ExecSpec{Cmd: cmd, User: s.user, WorkDir: scratchDir, Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

// copyIn extracts the tar stream into dir of the container.
func (s *sandbox) copyIn(ctx context.Context, dir string, tarStream io.Reader) error {
	errs := &capBuffer{max: 2 << 10}
	code, err := s.exec(ctx, []string{tarCommand, "-x", "--no-same-owner", "-C", dir}, tarStream, nil, errs)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("tar exited with status %d: %s", code, strings.TrimSpace(errs.String()))
	}
	return nil
}

// readOutput streams the build's output file outDir/name to sink. Only a
// regular file is accepted, and the reader sink gets fails with errTooLarge
// past limit bytes; errNoOutput means there is no such file.
func (s *sandbox) readOutput(ctx context.Context, name string, limit int64, sink func(io.Reader) error) error {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// tar stores a symlink, FIFO or device as what it is: it opens
		// only regular files.
		_, err := s.exec(ctx, []string{tarCommand, "-c", "-C", outDir, "--", name}, nil, pw, nil)
		pw.CloseWithError(err) // nil: the end of the stream
	}()
	err := readTarEntry(pr, name, limit, sink)
	pr.CloseWithError(errors.New("output read")) // stops the exec if it is still streaming
	<-done
	if err != nil && !errors.Is(err, errNoOutput) && !errors.Is(err, errTooLarge) && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// readTarEntry finds name in the tar stream r and passes its content to
// sink, refusing anything but a regular file.
func readTarEntry(r io.Reader, name string, limit int64, sink func(io.Reader) error) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return errNoOutput
		}
		if err != nil {
			return fmt.Errorf("builder: cannot read %s/%s from the build container (did the build stop it?): %w", outDir, name, err)
		}
		if path.Clean(h.Name) != name {
			continue
		}
		if h.Typeflag != tar.TypeReg && h.Typeflag != '\x00' {
			return fmt.Errorf("builder: the build left %s/%s as %s, not a regular file", outDir, name, fileKind(h.Typeflag))
		}
		return sink(&capReader{r: tr, left: limit})
	}
}

// fileKind names a tar entry's type for an error message.
func fileKind(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "a symlink"
	case tar.TypeLink:
		return "a hard link"
	case tar.TypeFifo:
		return "a FIFO"
	case tar.TypeChar, tar.TypeBlock:
		return "a device"
	case tar.TypeDir:
		return "a directory"
	}
	return "a special file"
}

// readSmall returns the content of a small output file: "" when it is
// absent, an error when it is not a regular file or larger than
// maxSmallOutput.
func (s *sandbox) readSmall(ctx context.Context, name string) (string, error) {
	var buf bytes.Buffer
	err := s.readOutput(ctx, name, maxSmallOutput, func(r io.Reader) error {
		_, err := io.Copy(&buf, r)
		return err
	})
	switch {
	case errors.Is(err, errNoOutput):
		return "", nil
	case errors.Is(err, errTooLarge):
		return "", fmt.Errorf("builder: the build left %s/%s larger than %s: it must be a few lines", outDir, name, state.HumanBytes(maxSmallOutput))
	case err != nil:
		return "", err
	}
	return buf.String(), nil
}

// diskFull reports whether the build's scratch space is (nearly) full.
func (s *sandbox) diskFull(ctx context.Context) bool {
	out := &capBuffer{max: 256}
	code, err := s.exec(ctx, []string{"/usr/bin/stat", "-f", "-c", "%a %b", scratchDir}, nil, out, nil)
	if err != nil || code != 0 {
		return false
	}
	f := strings.Fields(out.String())
	if len(f) != 2 {
		return false
	}
	avail, err1 := strconv.ParseInt(f[0], 10, 64)
	total, err2 := strconv.ParseInt(f[1], 10, 64)
	return err1 == nil && err2 == nil && total > 0 && avail*100 < total
}

// capReader reads r and fails with errTooLarge once more than left bytes
// come.
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n > 0 {
			return 0, errTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// capWriter writes to w and fails with errTooLarge past left bytes.
type capWriter struct {
	w    io.Writer
	left int64
}

func (c *capWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, errTooLarge
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}

// capBuffer keeps the first max bytes written to it and drops the rest.
type capBuffer struct {
	buf bytes.Buffer
	max int
}

func (c *capBuffer) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capBuffer) String() string { return c.buf.String() }

// spotter passes output on and notes whether it said the disk is full.
type spotter struct {
	w    io.Writer
	tail []byte
	full bool
}

const noSpace = "No space left on device"

func (s *spotter) Write(p []byte) (int, error) {
	if !s.full {
		s.tail = append(s.tail, p...)
		if bytes.Contains(s.tail, []byte(noSpace)) {
			s.full = true
		}
		if keep := len(noSpace) - 1; len(s.tail) > keep {
			s.tail = append(s.tail[:0], s.tail[len(s.tail)-keep:]...)
		}
	}
	return s.w.Write(p)
}

// openCache opens formation f's cache tarball: a regular file the
// coordinator wrote, opened without following a symlink or blocking on a
// FIFO (nil, nil when there is none).
func openCache(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return f, nil
}

// restoreCache copies formation f's build cache into the container. A
// cache that cannot be restored is dropped with a warning: the build runs
// without it.
func (b *Builder) restoreCache(ctx context.Context, s *sandbox, f string, con *console) {
	dir := filepath.Join(b.caches, f)
	entries, err := os.ReadDir(dir)
	if err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".incoming-") && e.Type().IsRegular() {
				os.Remove(filepath.Join(dir, e.Name())) // a copy a crash cut short
				continue
			}
			if e.Name() != cacheFile || !e.Type().IsRegular() {
				// An older coordinator mounted this directory into builds:
				// what is in it was written by them. Drop it.
				if err := os.RemoveAll(dir); err != nil {
					b.cfg.Logger.Warn("cannot remove an old build cache", "formation", f, "error", err)
				}
				return
			}
		}
	}
	cache, err := openCache(filepath.Join(dir, cacheFile))
	if err != nil || cache == nil {
		if err != nil {
			b.cfg.Logger.Warn("cannot open the build cache", "formation", f, "error", err)
		}
		return
	}
	defer cache.Close()
	if err := s.copyIn(ctx, scratchDir, cache); err != nil {
		if ctx.Err() != nil {
			return
		}
		con.Printf(" !     The build cache could not be restored (%v): building without it", err)
		_, _ = s.exec(ctx, []string{"/usr/bin/rm", "-rf", "--", cacheDir}, nil, nil, nil)
	}
}

// saveCache copies the container's /tmp/cache out into formation f's cache
// tarball, replacing it atomically. A cache larger than BuildDisk, or one
// that cannot be copied, is dropped with a warning.
func (b *Builder) saveCache(ctx context.Context, s *sandbox, f string, con *console) {
	dir := filepath.Join(b.caches, f)
	final := filepath.Join(dir, cacheFile)
	drop := func(why string) {
		if ctx.Err() == nil {
			con.Printf(" !     The build cache was dropped (%s): the next build starts without it", why)
		}
		if err := os.Remove(final); err != nil && !errors.Is(err, fs.ErrNotExist) {
			b.cfg.Logger.Warn("cannot remove the build cache", "formation", f, "error", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		drop(err.Error())
		return
	}
	tmp, err := os.CreateTemp(dir, ".incoming-*.tar")
	if err != nil {
		drop(err.Error())
		return
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	errs := &capBuffer{max: 2 << 10}
	code, err := s.exec(ctx, []string{tarCommand, "-c", "-C", scratchDir, "--", path.Base(cacheDir)}, nil, &capWriter{w: tmp, left: b.cfg.BuildDisk}, errs)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	switch {
	case errors.Is(err, errTooLarge):
		drop(fmt.Sprintf("it is larger than the %s of --build-disk", state.HumanBytes(b.cfg.BuildDisk)))
	case err != nil:
		drop(err.Error())
	case code != 0:
		drop(fmt.Sprintf("tar exited with status %d: %s", code, strings.TrimSpace(errs.String())))
	default:
		if err := os.Rename(tmp.Name(), final); err != nil {
			drop(err.Error())
		}
	}
}
