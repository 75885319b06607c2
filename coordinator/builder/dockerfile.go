package builder

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/deis/deis/pkg/launcher"
	"github.com/deis/deis/pkg/state"
)

// appImageRepo is the repository of the images built from formation f's
// Dockerfile; each is tagged with its own image id, so equal content means
// an equal name.
func appImageRepo(f string) string { return "deis/app-" + f }

// isAppImage reports whether ref names an image the builder made.
func isAppImage(ref string) bool { return strings.HasPrefix(ref, "deis/app-") }

// shortImageID is the first 12 hex digits of an image id.
func shortImageID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

// buildImage builds the commit's Dockerfile with the Docker engine, with
// the commit as the build context, and tags the image
// deis/app-<formation>:<image id>. The process types come from the Procfile
// or else, as "web", from the image's ENTRYPOINT and CMD.
func (b *Builder) buildImage(bctx context.Context, id string, r repo, req Request, types map[string]string, hasProcfile bool, con *console) (*state.Build, error) {
	f, d := req.Formation, b.cfg.Docker
	con.Printf("-----> Dockerfile app detected")
	con.Printf("       Images are never pulled: FROM must name an image the engine has, such as %s", b.cfg.StackImage)
	labels := map[string]string{labelRole: roleImage, labelFormation: f, labelBuilder: b.instance}

	var imageID, failure, step string
	err := r.archive(bctx, req.SHA, "", func(tar io.Reader) error {
		out, err := d.BuildImage(bctx, tar, ImageBuildSpec{Labels: labels, Network: b.cfg.Network,
			Limits: Limits{Memory: b.cfg.BuildMemory, NanoCPUs: int64(b.cfg.BuildCPUs * 1e9)}})
		if err != nil {
			return err
		}
		defer out.Close()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 0, 64<<10), maxLine)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			switch {
			case strings.HasPrefix(line, imageBuiltPrefix):
				imageID = strings.TrimPrefix(line, imageBuiltPrefix)
			case strings.HasPrefix(line, imageFailedPrefix):
				failure = strings.TrimPrefix(line, imageFailedPrefix)
			case strings.TrimSpace(line) != "":
				if strings.HasPrefix(line, "Step ") {
					step = line
				}
				con.Printf("       %s", line)
			}
		}
		return sc.Err()
	})
	if bctx.Err() != nil {
		return nil, bctx.Err()
	}
	switch {
	case failure != "":
		hint := "fix the Dockerfile, commit and push again"
		if _, instr, _ := strings.Cut(step, " : "); strings.HasPrefix(strings.ToUpper(instr), "FROM ") || needsPull(failure) {
			hint = "images cannot be pulled here: FROM must name an image the Docker engine already has, such as " + b.cfg.StackImage
		}
		return nil, fmt.Errorf("builder: docker build failed: %s: %s", failure, hint)
	case err != nil:
		return nil, fmt.Errorf("builder: docker build: %w", err)
	case imageID == "":
		return nil, errors.New("builder: docker build ended without an image: see the output above")
	}

	tag := appImageRepo(f) + ":" + shortImageID(imageID)
	cctx, cancel := context.WithTimeout(bctx, dockerCallTimeout)
	defer cancel()
	if err := d.TagImage(cctx, imageID, tag); err != nil {
		return nil, fmt.Errorf("builder: tag the image %s: %w", tag, err)
	}
	info, err := d.InspectImage(cctx, tag)
	if err != nil {
		return nil, fmt.Errorf("builder: inspect the image %s: %w", tag, err)
	}
	con.Printf("-----> Built image %s (%s)", tag, state.HumanBytes(info.Size))

	hasShell, err := b.imageHasShell(bctx, tag, f, id)
	if err != nil {
		return nil, err
	}
	if !hasShell {
		con.Printf("       The image has no /bin/sh: its processes run directly, without a shell")
	}

	con.Printf("-----> Discovering process types")
	if hasProcfile {
		con.Printf("       Procfile declares types -> %s", strings.Join(slices.Sorted(maps.Keys(types)), ", "))
		if !hasShell {
			if err := checkNoShell(types); err != nil {
				return nil, err
			}
		}
	} else {
		cmd := imageCommand(info.Entrypoint, info.Cmd)
		if cmd == "" {
			return nil, errors.New(`builder: the image has no CMD or ENTRYPOINT and the app no Procfile: add CMD to the Dockerfile or a Procfile such as "web: python3 server.py", commit and push again`)
		}
		types = map[string]string{"web": cmd}
		con.Printf("       Dockerfile CMD -> web: %s", cmd)
	}
	if err := checkTypes(types); err != nil {
		return nil, err
	}
	archive, err := b.saveImage(bctx, tag)
	if err != nil {
		return nil, err
	}
	con.Printf("-----> Saving the image for other nodes... done, %s", state.HumanBytes(archive.Size))
	return &state.Build{
		ID: id, Formation: f, GitSHA: req.SHA, Image: tag, ImageArchive: archive, ProcessTypes: types,
		NoShell: !hasShell, ImageCommand: !hasProcfile, Buildpack: "Dockerfile", Created: time.Now().UTC(),
	}, nil
}

// checkNoShell refuses the Procfile commands of an image without /bin/sh
// that need a shell, naming the first construct that does.
func checkNoShell(types map[string]string) error {
	for _, t := range slices.Sorted(maps.Keys(types)) {
		if construct, ok := launcher.NeedsShell(types[t]); ok {
			return fmt.Errorf("builder: the image has no /bin/sh, so the Procfile's %s command cannot use shell syntax (%s): "+
				"use the exec form, the program and its arguments as plain words (%s: /app --flag value; the app reads PORT and config vars from its environment), "+
				"or add a shell to the image", t, construct, t)
		}
	}
	return nil
}

// maxShellLinks is how many symlinks imageHasShell follows from /bin/sh.
const maxShellLinks = 8

// imageHasShell reports whether the image ref has an executable /bin/sh.
// It creates a container of the image (with the confinement of every
// builder container; it is never started, so nothing of the image runs)
// and follows /bin/sh through its symlinks with the engine's stat of paths
// in the container's file system, which sees every layer and whiteout.
func (b *Builder) imageHasShell(bctx context.Context, ref, f, id string) (bool, error) {
	spec := ContainerSpec{
		Name:           "deis-build-" + f + "-" + id + "-shellcheck",
		Image:          ref,
		Entrypoint:     []string{"/bin/sh"}, // never run: an image may have no command at all
		Labels:         map[string]string{labelRole: roleBuild, labelFormation: f, labelBuild: id, labelBuilder: b.instance},
		ReadonlyRootfs: true,
		Network:        b.cfg.Network,
		Limits:         b.limits(),
	}
	cid, err := b.create(bctx, bctx, spec)
	if err != nil {
		return false, fmt.Errorf("builder: look for /bin/sh in the image: %w", err)
	}
	defer b.remove(bctx, cid, f)
	cctx, cancel := context.WithTimeout(bctx, dockerCallTimeout)
	defer cancel()
	p := "/bin/sh"
	for range maxShellLinks {
		st, err := b.cfg.Docker.StatPath(cctx, cid, p)
		switch {
		case cerrdefs.IsNotFound(err):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("builder: look for /bin/sh in the image: %w", err)
		case st.Mode&os.ModeSymlink != 0 && st.Link != "" && st.Link != p:
			p = st.Link
		default:
			return st.Mode.IsRegular() && st.Mode.Perm()&0o111 != 0, nil
		}
	}
	return false, nil // a loop of links is no shell
}

// saveTimeout bounds `docker save` of one app image into the slug store.
const saveTimeout = 10 * time.Minute

// saveImage stores `docker save` of the image ref, gzipped, in the slug
// store (named by content, like a slug), so that nodes whose engine lacks
// the image can download and load it.
func (b *Builder) saveImage(bctx context.Context, ref string) (*state.SlugRef, error) {
	sctx, cancel := context.WithTimeout(bctx, saveTimeout)
	defer cancel()
	rc, err := b.cfg.Docker.SaveImage(sctx, ref)
	if err != nil {
		if bctx.Err() != nil {
			return nil, bctx.Err()
		}
		return nil, fmt.Errorf("builder: save the image %s for the nodes: %w", ref, err)
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer rc.Close()
		zw, _ := gzip.NewWriterLevel(pw, gzip.BestSpeed) // the layers are mostly compressed already
		_, err := io.Copy(zw, rc)
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
		pw.CloseWithError(err)
	}()
	archive, err := b.cfg.Slugs.Put(pr)
	pr.CloseWithError(errors.New("save ended")) // stop the compressor if the store stopped reading
	cancel()
	<-done
	if err != nil {
		if bctx.Err() != nil {
			return nil, bctx.Err()
		}
		return nil, fmt.Errorf("builder: save the image %s for the nodes (is the coordinator's disk full?): %w", ref, err)
	}
	return &archive, nil
}

// imageCommand turns an image's ENTRYPOINT and CMD into the shell command
// line of a process type (run as /bin/sh -c COMMAND).
func imageCommand(entrypoint, cmd []string) string {
	argv := append(slices.Clone(entrypoint), cmd...)
	if len(argv) == 3 && (argv[0] == "/bin/sh" || argv[0] == "sh") && argv[1] == "-c" {
		return argv[2] // the shell form: CMD python3 server.py
	}
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = shellWord(a)
	}
	return strings.Join(quoted, " ")
}

// shellWord quotes s for a POSIX shell when it needs it.
func shellWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// needsPull reports whether a build error is the engine's failed attempt to
// pull a base image.
func needsPull(msg string) bool {
	for _, s := range []string{"pull access denied", "registry", "manifest", "No such image", "repository does not exist"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
