package state

import (
	"strconv"
	"strings"
)

// SpecFromRelease is the part of a container's spec that comes from its
// release: image, slug or image archive with their URLs under the slug
// server that stored the build (Build.SlugServer), or else slugBase, and the environment: the release's
// config plus PORT, DEIS_FORMATION and DEIS_RELEASE. The scheduler adds the
// name, process type, command, limits and health check; a one-off run adds
// its own command. UID, the formation's, is for whoever holds the Formation
// (SetFormation); an agent that gets a slug spec without one reads the
// formation record itself.
func SpecFromRelease(r *Release, slugBase string) ContainerSpec {
	env := make(map[string]string, len(r.Config)+3)
	for k, v := range r.Config {
		env[k] = v
	}
	env["PORT"] = strconv.Itoa(DefaultContainerPort)
	env["DEIS_FORMATION"] = r.Formation
	env["DEIS_RELEASE"] = "v" + strconv.Itoa(r.Version)
	s := ContainerSpec{Formation: r.Formation, Release: r.Version, Env: env, Port: DefaultContainerPort}
	if r.Build == nil {
		return s
	}
	if r.Build.SlugServer != "" {
		slugBase = r.Build.SlugServer
	}
	base := strings.TrimRight(slugBase, "/")
	s.Image = r.Build.Image
	s.Slug = r.Build.Slug
	if s.Slug != nil && base != "" {
		s.SlugURL = base + "/slugs/" + s.Slug.SHA256 + ".tgz"
	}
	if a := r.Build.ImageArchive; a != nil && s.Slug == nil {
		s.ImageArchive = a
		if base != "" {
			s.ImageArchiveURL = base + "/slugs/" + a.SHA256 + ".tgz"
		}
	}
	return s
}

// SetFormation sets what a spec takes from its formation record: the uid
// its slug runs as (Formation.AppUID).
func (s *ContainerSpec) SetFormation(f *Formation) {
	s.Formation = f.Name
	s.UID = f.AppUID()
}

// How a process of an image built from a Dockerfile runs (ContainerSpec.Exec).
const (
	// ExecImage runs the image's own ENTRYPOINT and CMD, unwrapped.
	ExecImage = "image"
	// ExecDirect runs the command split into words, without a shell: the
	// image has no /bin/sh (Build.NoShell).
	ExecDirect = "direct"
)

// ExecMode is how a process of type typ of build b runs (ContainerSpec.Exec):
// a Dockerfile build without a Procfile runs web as the image's own
// ENTRYPOINT and CMD; an image without /bin/sh runs every other command
// directly; everything else runs through the launcher's shell ("").
func ExecMode(b *Build, typ string) string {
	switch {
	case b == nil || b.Slug != nil:
		return ""
	case b.ImageCommand && typ == "web":
		return ExecImage
	case b.NoShell:
		return ExecDirect
	}
	return ""
}

// OneOffFromSpec is the spec of a one-off container running command, made
// from a spec s of one of the formation's processes (a node's runtime
// databag holds those): the same image or slug, environment (the release's
// config, PORT, DEIS_FORMATION, DEIS_RELEASE), uid and limits, with type
// "run", the one-off's command, no port, no health check and no name
// (the agent names it). A Dockerfile build's command runs through the
// image's /bin/sh unless the process ran without one (ExecDirect); a web
// process that ran as the image's own ENTRYPOINT and CMD says nothing of
// the shell, so its one-off goes through the shell.
func OneOffFromSpec(s ContainerSpec, command string) ContainerSpec {
	o := s
	o.Name, o.Index, o.HealthPath = "", 0, ""
	o.Type, o.Command, o.Port = "run", command, 0
	o.Env = make(map[string]string, len(s.Env))
	for k, v := range s.Env {
		o.Env[k] = v
	}
	if o.Slug != nil || o.Exec != ExecDirect {
		o.Exec = ""
	}
	return o
}
