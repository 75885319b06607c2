package builder

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/deis/deis/pkg/launcher"
	"github.com/deis/deis/pkg/slugtar"
	"github.com/deis/deis/pkg/state"
)

// releaseType is the Procfile process type that runs once per release,
// before the release is written (Heroku's release phase). The scheduler
// never runs it as a process.
const releaseType = "release"

// releasePhase runs the build's release command once in a container of the
// new build, with the formation's config, and fails unless it exits 0. A
// slug is extracted and mounted read-only at /app and run by the launcher as
// the formation's uid, as the agent does; an image runs the command with its
// /bin/sh as its own user, as the agent does too.
func (b *Builder) releasePhase(bctx, ctx context.Context, id string, uid int, build *state.Build, cmd, work string, con *console) error {
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
		// as hardened as a build: the command is the pusher's code
		Tmpfs:          b.scratchTmpfs(),
		ReadonlyRootfs: true,
		Init:           true,
		Network:        b.cfg.Network,
		Limits:         b.limits(),
	}
	if build.Slug != nil {
		app := filepath.Join(work, "app")
		slugPath, err := b.cfg.Slugs.Path(build.Slug.SHA256)
		if err != nil {
			return fmt.Errorf("builder: %w", err)
		}
		if err := slugtar.ExtractLimited(bctx, slugPath, app, b.slugLimits()); err != nil {
			return fmt.Errorf("builder: extract the slug for the release command: %w", err)
		}
		for _, kv := range userEnv(uid, "/app") {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		env["DEIS_COMMAND"] = cmd
		spec.User = userSpec(uid)
		spec.WorkDir = "/app"
		spec.Entrypoint = []string{"/bin/bash", "-c"}
		spec.Cmd = []string{launcher.Slug}
		spec.Binds = []string{app + ":/app:ro"}
	} else if argv := launcher.Split(cmd); build.NoShell && argv != nil {
		// No /bin/sh in the image: the command's words, run directly.
		spec.Entrypoint, spec.Cmd = argv[:1], argv[1:]
	} else {
		env["DEIS_COMMAND"] = cmd
		spec.Entrypoint = []string{"/bin/sh", "-c", launcher.Image}
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		spec.Env = append(spec.Env, k+"="+env[k])
	}

	b.removeLeftovers(ctx, f)
	out := &indenter{w: con}
	code, err := b.runStreaming(bctx, ctx, spec, out)
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
