package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/deis/deis/pkg/launcher"
	"github.com/deis/deis/pkg/state"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker is the part of the Docker API the runtime uses. The Docker
// client (*client.Client) implements it; runtimetest.Docker fakes it.
type Docker interface {
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error)
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, name string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, id string, options container.StartOptions) error
	ContainerStop(ctx context.Context, id string, options container.StopOptions) error
	ContainerRemove(ctx context.Context, id string, options container.RemoveOptions) error
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	// ImageInspect and ImageLoad load the image archive of a spec whose
	// image the engine lacks.
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImageLoad(ctx context.Context, input io.Reader, opts ...client.ImageLoadOption) (image.LoadResponse, error)
}

// NewDocker connects to the Docker engine named by the environment
// (DOCKER_HOST, ...) and checks that it answers. The client implements
// Docker, and the interfaces of the agent's other parts (agent/api).
func NewDocker(ctx context.Context) (*client.Client, error) {
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("runtime: docker client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ping, err := c.Ping(pctx)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("runtime: docker engine at %s does not answer: start docker or set DOCKER_HOST: %w", c.DaemonHost(), err)
	}
	// Negotiate now: the client's lazy negotiation on the first request
	// races with concurrent requests.
	c.NegotiateAPIVersionPing(ping)
	return c, nil
}

// Labels the runtime puts on every container it creates.
const (
	labelFormation = "deis.formation"
	labelRelease   = "deis.release"
	labelType      = "deis.type"
	labelIndex     = "deis.index"
	labelNode      = "deis.node"
	labelName      = "deis.name"
	labelSpec      = "deis.spec"
	// labelConfinement is a hash of how the container is confined
	// (confinementHash).
	labelConfinement = "deis.confinement"
	// labelOneOff marks one-off containers (deisctl run): the reconcile loop
	// neither adopts nor stops them.
	labelOneOff = "deis.oneoff"
)

// Timeouts of single Docker calls. Stop gets StopGrace on top.
const (
	dockerTimeout = 30 * time.Second
	createTimeout = 2 * time.Minute
)

// How every app container is confined (see profile and containerConfig).
const (
	// DefaultMemoryBytes is the memory limit of a container whose process
	// type has none (Config.DefaultMemory).
	DefaultMemoryBytes = 512 << 20
	// DefaultPidsLimit is the most processes and threads a container may
	// have (Config.PidsLimit).
	DefaultPidsLimit = 256
	// tmpfsOptions make the container's writable /tmp: the root file
	// system is read-only. Its pages count against the memory limit.
	tmpfsOptions = "rw,nosuid,nodev,size=256m,mode=1777"
	// hardening changes whenever containerConfig confines containers
	// differently; it is part of the confinement hash, so that an agent
	// that confines them more reports the containers it adopts.
	hardening = "2"
)

// logConfig rotates a container's log: at most 3 files of 10MB.
var logConfig = container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "3"}}

// profile is how this node runs every app container, beyond what the spec
// says: where ports are published, which network containers join and the
// limits of a spec that sets none.
type profile struct {
	Node string
	// Addr is the address ports are published on.
	Addr string
	// Network is the Docker network containers join ("": the engine's
	// default bridge).
	Network string
	// DefaultMemory is the memory limit in bytes of a spec without one (<=
	// 0: none).
	DefaultMemory int64
	// PidsLimit bounds the processes of every container (<= 0: none).
	PidsLimit int64
}

// profile is the Runtime's container profile.
func (r *Runtime) profile() profile {
	return profile{Node: r.cfg.Node, Addr: r.cfg.Addr, Network: r.cfg.Network,
		DefaultMemory: r.cfg.DefaultMemory, PidsLimit: r.cfg.PidsLimit}
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_.-]`)

// dockerName is the Docker name of a spec's container on node.
func dockerName(node, spec string) string {
	return unsafeName.ReplaceAllString("deis-"+node+"-"+spec, "_")
}

// specHash identifies what a container was created from: the spec without
// its slug and image archive URLs (which change with the coordinator's
// address, not with the container) and its uid (see confinementHash), and
// the address its port is published on. A container whose hash differs is
// replaced.
func specHash(p profile, s state.ContainerSpec) string {
	s.SlugURL, s.ImageArchiveURL, s.UID = "", "", 0
	sum := sha256.Sum256([]byte(p.Addr + "\n" + state.Marshal(s)))
	return hex.EncodeToString(sum[:8])
}

// confinementHash identifies how a container is confined: the node's
// network, default limits and hardening, and the uid a slug runs as. A
// container whose hash differs is not replaced, which would interrupt the
// app (restarting an upgraded agent must not), but reported: deisctl
// ps:restart replaces it with a handoff.
func confinementHash(p profile, s state.ContainerSpec) string {
	uid := 0
	if s.Slug != nil {
		uid = state.AppUID(s.Formation, s.UID)
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\n%d %d %d %s", p.Network, p.DefaultMemory, p.PidsLimit, uid, hardening)))
	return hex.EncodeToString(sum[:8])
}

// outdatedConfinement is the status reason of a running container created
// under other confinement settings than the agent's.
func outdatedConfinement(formation string) string {
	return "created before the agent's current confinement settings (network, default limits, uid): deisctl ps:restart -f " + formation + " replaces it without downtime"
}

// labelsFor are the labels of a spec's container.
func labelsFor(p profile, s state.ContainerSpec) map[string]string {
	return map[string]string{
		labelFormation:   s.Formation,
		labelRelease:     strconv.Itoa(s.Release),
		labelType:        s.Type,
		labelIndex:       strconv.Itoa(s.Index),
		labelNode:        p.Node,
		labelName:        s.Name,
		labelSpec:        specHash(p, s),
		labelConfinement: confinementHash(p, s),
	}
}

// slugDir is where the slug of sha is extracted.
func slugDir(stateDir, sha string) string { return filepath.Join(stateDir, "slugs", sha) }

// containerPort is the Docker port of a spec.
func containerPort(s state.ContainerSpec) nat.Port {
	return nat.Port(strconv.Itoa(s.Port) + "/tcp")
}

// containerConfig builds the Docker configuration of a spec's container:
// the one function that confines every app container, scheduled or one-off
// (OneOffConfig), slug or image. slug is the extracted slug's directory, ""
// for a spec without slug.
//
// Every container drops every capability, may not gain privileges
// (no-new-privileges: setuid binaries do not work), has p.PidsLimit
// processes at most, the spec's memory limit or else p.DefaultMemory, a
// rotated json-file log, and a read-only root file system with a tmpfs at
// /tmp. A slug runs as the formation's own uid and gid (state.AppUID), never
// as root or as a host account; an image runs as its own user.
func containerConfig(p profile, s state.ContainerSpec, slug string) (*container.Config, *container.HostConfig) {
	env := map[string]string{}
	for k, v := range s.Env {
		env[k] = v
	}
	env["DYNO"] = s.Type + "." + strconv.Itoa(s.Index)
	if _, ok := env["PORT"]; !ok && s.Port > 0 {
		env["PORT"] = strconv.Itoa(s.Port)
	}
	cfg := &container.Config{
		Image:  s.Image,
		Labels: labelsFor(p, s),
	}
	mem := s.Limits.MemoryBytes
	if mem <= 0 && p.DefaultMemory > 0 {
		mem = p.DefaultMemory
	}
	hc := &container.HostConfig{
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyUnlessStopped},
		Resources: container.Resources{
			Memory:   mem,
			NanoCPUs: int64(s.Limits.CPUs * 1e9),
		},
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: true,
		Tmpfs:          map[string]string{"/tmp": tmpfsOptions},
		LogConfig:      logConfig,
		NetworkMode:    container.NetworkMode(p.Network),
	}
	if p.PidsLimit > 0 {
		pids := p.PidsLimit
		hc.PidsLimit = &pids
	}
	if slug != "" {
		uid := strconv.Itoa(state.AppUID(s.Formation, s.UID))
		env["HOME"] = "/app"
		env["DEIS_COMMAND"] = s.Command
		cfg.User = uid + ":" + uid
		cfg.WorkingDir = "/app"
		cfg.Entrypoint = []string{"/bin/bash", "-c"}
		cfg.Cmd = []string{launcher.Slug}
		hc.Mounts = []mount.Mount{{Type: mount.TypeBind, Source: slug, Target: "/app", ReadOnly: true}}
	} else if argv := launcher.Split(s.Command); s.Exec == state.ExecDirect && argv != nil {
		// An image without /bin/sh: the command's words, run directly
		// (the builder refused commands that need a shell).
		cfg.Entrypoint, cfg.Cmd = argv[:1], argv[1:]
	} else if s.Command != "" && s.Exec != state.ExecImage {
		// The command replaces the image's ENTRYPOINT and CMD.
		env["DEIS_COMMAND"] = s.Command
		cfg.Entrypoint = []string{"/bin/sh", "-c", launcher.Image}
	} // else: the image's own ENTRYPOINT and CMD, unwrapped
	if s.Port > 0 {
		port := containerPort(s)
		cfg.ExposedPorts = nat.PortSet{port: struct{}{}}
		hc.PortBindings = nat.PortMap{port: []nat.PortBinding{{HostIP: p.Addr, HostPort: ""}}}
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cfg.Env = append(cfg.Env, k+"="+env[k])
	}
	return cfg, hc
}

// fromSummary turns a listed container into what plan compares.
func fromSummary(c container.Summary) actual {
	a := actual{ID: c.ID, Labels: c.Labels, State: string(c.State), Status: c.Status, Ports: map[int]int{}}
	if len(c.Names) > 0 {
		a.Name = strings.TrimPrefix(c.Names[0], "/")
	}
	for _, p := range c.Ports {
		if p.Type == "tcp" && p.PublicPort != 0 {
			a.Ports[int(p.PrivatePort)] = int(p.PublicPort)
		}
	}
	sandboxPorts(a.Labels, a.Ports)
	return a
}

// fromInspect turns an inspected container into what plan compares.
func fromInspect(c container.InspectResponse) actual {
	a := actual{Ports: map[int]int{}}
	if c.ContainerJSONBase != nil {
		a.ID = c.ID
		a.Name = strings.TrimPrefix(c.Name, "/")
		a.Restarts = c.RestartCount
		if st := c.State; st != nil {
			a.State = string(st.Status)
			a.Status = describeState(st)
			a.Started, _ = time.Parse(time.RFC3339Nano, st.StartedAt)
		}
	}
	if c.Config != nil {
		a.Labels = c.Config.Labels
		sandboxPorts(a.Labels, a.Ports)
	}
	if c.NetworkSettings != nil {
		for p, bs := range c.NetworkSettings.Ports {
			if p.Proto() != "tcp" {
				continue
			}
			for _, b := range bs {
				if hp, err := strconv.Atoi(b.HostPort); err == nil && hp > 0 {
					a.Ports[p.Int()] = hp
					break
				}
			}
		}
	}
	return a
}

// describeState says in a few words how an inspected container is.
func describeState(st *container.State) string {
	switch {
	case st.Running && !st.Restarting:
		return "Up"
	case st.Restarting:
		return fmt.Sprintf("Restarting (%d)", st.ExitCode)
	case st.OOMKilled:
		return fmt.Sprintf("Exited (%d), out of memory", st.ExitCode)
	case st.Error != "":
		return fmt.Sprintf("Exited (%d): %s", st.ExitCode, st.Error)
	default:
		return fmt.Sprintf("Exited (%d)", st.ExitCode)
	}
}

// isNotFound reports whether a Docker error says the object does not exist.
func isNotFound(err error) bool { return err != nil && cerrdefs.IsNotFound(err) }

// dockerHint adds what to do to errors that have an obvious fix.
func dockerHint(err error, s state.ContainerSpec) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "No such image"):
		if s.ImageArchive != nil {
			return fmt.Errorf("image %s is not on this node even after loading its archive: %w", s.Image, err)
		}
		return fmt.Errorf("image %s is not on this node (the agent never pulls): build the stack image or load the image: %w", s.Image, err)
	case strings.Contains(msg, "port is already allocated") || strings.Contains(msg, "address already in use"):
		return fmt.Errorf("no free port on the node address: %w", err)
	}
	return err
}
