package runtime

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/deis/deis/pkg/state"
	"github.com/docker/docker/api/types/container"
)

// Labels of the containers the runtime creates, for the agent's other
// parts (agent/api lists them for logs and labels one-off containers).
const (
	LabelFormation = labelFormation
	LabelRelease   = labelRelease
	LabelType      = labelType
	LabelNode      = labelNode
	LabelName      = labelName
	// LabelOneOff ("1") marks one-off containers: the reconcile loop never
	// adopts, replaces or stops them.
	LabelOneOff = labelOneOff
)

// isOneOff reports whether a container's labels mark a one-off container.
func isOneOff(labels map[string]string) bool { return labels[labelOneOff] != "" }

// Slug returns the directory of the extracted slug ref, downloading it from
// url first when it is not on the node yet. It shares the reconcile loop's
// slug cache: concurrent callers for one slug share one download. It needs
// no running Run.
func (r *Runtime) Slug(ctx context.Context, url string, ref state.SlugRef) (string, error) {
	return r.slugs.ensure(ctx, url, ref)
}

// OneOffConfig returns the Docker configuration of a one-off container
// (deisctl run) for spec, once the spec's slug, if any, is on the node (or
// its image, loaded from its ImageArchive when the engine lacks it).
// spec is filled in like a scheduled container's (image, command, env,
// slug or image archive and its URL, type and index, which make DYNO); its Name becomes the
// deis.name label, and its Port, HealthPath and restart policy play no
// part: the container publishes no port, is never restarted, is removed
// by Docker when it exits and reads its stdin from an attached client
// (OpenStdin, StdinOnce). It is labelled for this node and formation, and
// deis.oneoff=1, so the reconcile loop leaves it alone.
//
// It is confined exactly like scheduled containers (containerConfig: no
// capabilities, no new privileges, pids and memory limits, rotated logs,
// read-only root with a tmpfs /tmp, the node's network), and like them a
// slug runs as the formation's uid (spec.UID, see state.AppUID) in /app
// after /app/.profile.d is sourced; an image runs as its own user, its
// command (if any) through /bin/sh.
func (r *Runtime) OneOffConfig(ctx context.Context, spec state.ContainerSpec) (*container.Config, *container.HostConfig, error) {
	if spec.Command == "" {
		return nil, nil, fmt.Errorf("runtime: a one-off container needs a command")
	}
	if spec.Image == "" {
		return nil, nil, fmt.Errorf("runtime: release v%d of %s names no image: deploy again with git push", spec.Release, spec.Formation)
	}
	slug := ""
	if spec.Slug != nil {
		var err error
		if slug, err = r.Slug(ctx, spec.SlugURL, *spec.Slug); err != nil {
			return nil, nil, err
		}
		if _, err := os.Stat(slug); err != nil {
			return nil, nil, fmt.Errorf("runtime: slug directory: %w", err)
		}
	}
	if err := r.ensureImage(ctx, spec); err != nil {
		return nil, nil, err
	}
	spec.Port = 0 // nothing is published
	cfg, hc := containerConfig(r.profile(), spec, slug)
	cfg.Labels = map[string]string{
		labelFormation: spec.Formation,
		labelRelease:   strconv.Itoa(spec.Release),
		labelType:      spec.Type,
		labelIndex:     strconv.Itoa(spec.Index),
		labelNode:      r.cfg.Node,
		labelName:      spec.Name,
		labelOneOff:    "1",
	}
	cfg.AttachStdin, cfg.AttachStdout, cfg.AttachStderr = true, true, true
	cfg.OpenStdin, cfg.StdinOnce, cfg.Tty = true, true, false
	hc.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyDisabled}
	hc.AutoRemove = true
	return cfg, hc, nil
}
