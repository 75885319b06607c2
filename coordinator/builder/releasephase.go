package builder

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/deis/deis/pkg/state"
)

// releaseType is the Procfile process type that runs once per release,
// before the release is written (Heroku's release phase). The scheduler
// never runs it as a process.
const releaseType = "release"

// launcher is the agent's way of running a slug's process (see
// agent/runtime): source the buildpacks' .profile.d scripts, then replace
// itself by the command, passed in DEIS_COMMAND so that no quoting is
// involved. The release phase uses the same, so that it runs exactly as the
// release's processes will.
const launcher = `cd /app || exit 1
for f in /app/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done
unset f
exec bash -c "$DEIS_COMMAND"`

// imageLauncher is the agent's way of running a process of an image built
// from a Dockerfile: the image's /bin/sh (images may lack bash), its user
// and working directory, /app/.profile.d sourced only if the image has it.
const imageLauncher = `if [ -d /app/.profile.d ]; then
  for f in /app/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done
  unset f
fi
exec /bin/sh -c "$DEIS_COMMAND"`

// releasePhase runs the build's release command once in a container of the
// new build, with the formation's config, and fails unless it exits 0. A
// slug is extracted and mounted read-only at /app and run by the launcher as
// the app user, as the agent does; an image runs the command with its
// /bin/sh as its own user, as the agent does too.
func (b *Builder) releasePhase(bctx, ctx context.Context, id string, build *state.Build, cmd, work string, con *console) error {
	f := build.Formation
	con.Printf("-----> Running release command...")
	vars, _, err := b.readConfig(bctx, f)
	if err != nil {
		return err
	}
	env := map[string]string{}
	for k, v := range vars {
		if state.ValidateEnvKey(k) == nil {
			env[k] = v
		}
	}
	env["PORT"] = strconv.Itoa(state.DefaultContainerPort)
	env["DYNO"] = releaseType + ".1"
	env["DEIS_FORMATION"] = f
	if latest, err := b.cfg.Store.LatestRelease(bctx, f); err == nil {
		env["DEIS_RELEASE"] = "v" + strconv.Itoa(latest.Version+1)
	} else if errors.Is(err, state.ErrNotFound) {
		env["DEIS_RELEASE"] = "v1"
	}

	spec := ContainerSpec{
		Name:   "deis-release-" + f + "-" + id,
		Image:  build.Image,
		Labels: map[string]string{labelRole: roleRelease, labelFormation: f, labelBuild: id, labelBuilder: b.instance},
	}
	if build.Slug != nil {
		app := filepath.Join(work, "app")
		slugPath, err := b.cfg.Slugs.Path(build.Slug.SHA256)
		if err != nil {
			return fmt.Errorf("builder: %w", err)
		}
		if err := extractSlug(bctx, slugPath, app); err != nil {
			return fmt.Errorf("builder: extract the slug for the release command: %w", err)
		}
		env["HOME"] = "/app"
		env["DEIS_COMMAND"] = cmd
		spec.User = buildUser
		spec.WorkDir = "/app"
		spec.Entrypoint = []string{"/bin/bash", "-c"}
		spec.Cmd = []string{launcher}
		spec.Binds = []string{app + ":/app:ro"}
	} else {
		env["DEIS_COMMAND"] = cmd
		spec.Entrypoint = []string{"/bin/sh", "-c", imageLauncher}
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		spec.Env = append(spec.Env, k+"="+env[k])
	}

	b.removeLeftovers(ctx, f)
	out := &indenter{w: con}
	code, err := b.runStreaming(bctx, ctx, spec, nil, out)
	out.Flush()
	if err != nil {
		return fmt.Errorf("builder: the release command's container: %w", err)
	}
	if code != 0 {
		b.m.releasePhases.WithLabelValues("failed").Inc()
		return fmt.Errorf("builder: release command failed (exit %d): no release was created; fix %q (the Procfile's release type) and push again", code, cmd)
	}
	b.m.releasePhases.WithLabelValues("succeeded").Inc()
	con.Printf("-----> Release command done")
	return nil
}

// indenter indents each line written to it, Heroku style, and passes it on.
type indenter struct {
	w       *console
	partial []byte
}

func (i *indenter) Write(p []byte) (int, error) {
	for _, c := range p {
		if c == '\n' {
			i.w.Printf("       %s", strings.TrimRight(string(i.partial), "\r"))
			i.partial = i.partial[:0]
			continue
		}
		i.partial = append(i.partial, c)
		if len(i.partial) >= maxLine {
			i.Flush()
		}
	}
	return len(p), nil
}

func (i *indenter) Flush() {
	if len(i.partial) > 0 {
		i.w.Printf("       %s", i.partial)
		i.partial = i.partial[:0]
	}
}

// extractSlug unpacks the gzipped tarball tgz into dir (created, 0755), the
// way the agent does: entries that would land outside dir (absolute paths,
// "..", writing through symlinks) are refused, devices are skipped.
func extractSlug(ctx context.Context, tgz, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Open(tgz)
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
		name, err := slugEntryName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "." {
			continue
		}
		mode := fs.FileMode(hdr.Mode) & fs.ModePerm
		if d := path.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("tarball entry %q: %w", hdr.Name, err)
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return fmt.Errorf("tarball entry %q: %w", hdr.Name, err)
			}
			if err := root.Chmod(name, mode|0o700); err != nil {
				return fmt.Errorf("tarball entry %q: %w", hdr.Name, err)
			}
		case tar.TypeReg:
			out, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
			if err != nil {
				return fmt.Errorf("tarball entry %q: %w", hdr.Name, err)
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = root.Chmod(name, mode) // not subject to the umask
			}
			if err != nil {
				return fmt.Errorf("tarball entry %q: %w", hdr.Name, err)
			}
		case tar.TypeSymlink:
			// Resolved inside the container, where the slug is /app.
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return fmt.Errorf("tarball entry %q: %w", hdr.Name, err)
			}
		case tar.TypeLink:
			target, err := slugEntryName(hdr.Linkname)
			if err != nil {
				return err
			}
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("tarball entry %q: %w", hdr.Name, err)
			}
		}
	}
}

// slugEntryName turns a tar entry name into a clean path relative to the
// slug root, refusing names that leave it.
func slugEntryName(n string) (string, error) {
	clean := path.Clean(strings.TrimPrefix(n, "./"))
	if clean == "/" || clean == "" || clean == "." {
		return ".", nil
	}
	if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("tarball entry %q points outside the slug", n)
	}
	return clean, nil
}
