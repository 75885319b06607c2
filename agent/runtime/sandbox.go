package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/watch"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/go-connections/nat"
)

// Labels of network sandboxes and of the containers that joined one.
const (
	// labelSandbox marks a network sandbox (value "1"); it also carries
	// deis.node and deis.hostport.
	labelSandbox = "deis.sandbox"
	// labelSandboxID, on an app container, is the Docker id of the
	// sandbox whose network namespace it joined.
	labelSandboxID = "deis.sandbox.id"
)

// DefaultSandboxImage runs the spare network sandboxes' `sleep`: the stack
// image, which every runtime node has for its slugs.
const DefaultSandboxImage = "deis/stack:bookworm"

// Network sandboxes.
const (
	// sandboxPort is the container port a spare sandbox publishes: every
	// process with a port listens on it (state.DefaultContainerPort).
	sandboxPort = state.DefaultContainerPort
	// sandboxQuiet is how long refilling the spares waits after the last
	// one was taken, so that creating sandboxes never competes with the
	// starts of a rollout.
	sandboxQuiet = 1500 * time.Millisecond
	// sandboxMemory and sandboxPids confine a sandbox's own process,
	// which only sleeps.
	sandboxMemory = 16 << 20
	sandboxPids   = 8
)

// isSandbox reports whether a container's labels mark a network sandbox.
func isSandbox(labels map[string]string) bool { return labels[labelSandbox] != "" }

// sandbox is a spare network sandbox: a started container that holds a
// network namespace on the node's network, with sandboxPort published on
// the node address at Port.
type sandbox struct {
	ID   string
	Port int
}

// sandboxes keeps Config.SpareSandboxes spare network sandboxes started,
// so that starting an app container costs Docker only the container
// itself: its network (namespace, interface, embedded DNS, port mapping)
// is ready before the deploy.
type sandboxes struct {
	want int
	wake watch.Waker

	mu       sync.Mutex
	spare    []sandbox
	claimed  map[string]bool // taken, until the app container that joins it exists
	lastTake time.Time
	missing  string // why the last refill failed, logged once
}

func newSandboxes(want int) *sandboxes {
	return &sandboxes{want: want, wake: watch.NewWaker(), claimed: map[string]bool{}}
}

// take hands out a spare sandbox; false when there is none. The caller
// creates the app container that joins it, then calls done.
func (s *sandboxes) take() (sandbox, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastTake = time.Now()
	if len(s.spare) == 0 {
		return sandbox{}, false
	}
	sb := s.spare[len(s.spare)-1]
	s.spare = s.spare[:len(s.spare)-1]
	s.claimed[sb.ID] = true
	s.wake.Wake()
	return sb, true
}

// done ends the claim on a taken sandbox: from now on the app container
// that joined it keeps it, or, when there is none (its create failed),
// the next reconcile removes it.
func (s *sandboxes) done(id string) {
	s.mu.Lock()
	delete(s.claimed, id)
	s.mu.Unlock()
	s.wake.Wake()
}

// joinSandbox makes cfg and hc, an app container's configuration, join the
// network namespace of sb instead of a network of its own: the sandbox
// holds its address and published port.
func joinSandbox(cfg *container.Config, hc *container.HostConfig, sb sandbox) {
	hc.NetworkMode = container.NetworkMode("container:" + sb.ID)
	hc.PortBindings = nil
	cfg.ExposedPorts = nil
	cfg.Labels[labelSandboxID] = sb.ID
	cfg.Labels[labelHostPort] = strconv.Itoa(sb.Port)
}

// sandboxPorts is what an app container that joined a sandbox publishes:
// the sandbox's port, recorded in its labels.
func sandboxPorts(labels map[string]string, ports map[int]int) {
	if labels[labelSandboxID] == "" {
		return
	}
	if hp, err := strconv.Atoi(labels[labelHostPort]); err == nil && hp > 0 {
		ports[sandboxPort] = hp
	}
}

// sandboxConfig is the Docker configuration of a spare sandbox: a process
// that only sleeps, confined more tightly than any app (nobody's uid, no
// capabilities, a read-only root, a few pids and 16MiB), on the node's
// network, with sandboxPort published on the node address at the port
// createPublished chooses.
func (r *Runtime) sandboxConfig() (*container.Config, *container.HostConfig) {
	port := nat.Port(strconv.Itoa(sandboxPort) + "/tcp")
	pids := int64(sandboxPids)
	cfg := &container.Config{
		Image:        r.cfg.SandboxImage,
		Entrypoint:   []string{"sleep"},
		Cmd:          []string{"infinity"},
		User:         "65534:65534",
		Labels:       map[string]string{labelNode: r.cfg.Node, labelSandbox: "1"},
		ExposedPorts: nat.PortSet{port: struct{}{}},
	}
	hc := &container.HostConfig{
		RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyUnlessStopped},
		Resources:      container.Resources{Memory: sandboxMemory, PidsLimit: &pids},
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: true,
		LogConfig:      logConfig,
		NetworkMode:    container.NetworkMode(r.cfg.Network),
	}
	return cfg, hc
}

// sandboxLoop keeps the spares: after a sandbox was taken (and the node
// was quiet for sandboxQuiet since), when a claim ends, and at every
// resync, it removes the sandboxes nothing uses and starts new spares.
func (r *Runtime) sandboxLoop(ctx context.Context) {
	defer r.wg.Done()
	s := r.sandboxes
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-t.C:
		}
		next := r.cfg.Resync
		if wait, err := r.reconcileSandboxes(ctx); err != nil && ctx.Err() == nil {
			s.mu.Lock()
			if s.missing != err.Error() {
				r.log.Warn("spare network sandboxes", "error", err)
				s.missing = err.Error()
			}
			s.mu.Unlock()
		} else if wait > 0 && wait < next {
			next = wait
		}
		t.Reset(next) // since Go 1.23 a Reset timer delivers no stale tick
	}
}

// reconcileSandboxes removes every sandbox of the node that no app
// container joined, that is not spare and not being taken, including a
// spare that stopped (an earlier agent's spares are removed too: whether
// an app used them is not known), and every app container whose sandbox
// is gone (removed by hand: the container lost its port). Then, when the
// node has been quiet for sandboxQuiet, it starts spares until there are
// Config.SpareSandboxes; otherwise it returns how long to wait.
func (r *Runtime) reconcileSandboxes(ctx context.Context) (time.Duration, error) {
	s := r.sandboxes
	// The claims are read before listing: a claim that ends in between
	// belongs to an app container the listing shows.
	s.mu.Lock()
	keep := map[string]bool{}
	for id := range s.claimed {
		keep[id] = true
	}
	spare := map[string]bool{}
	for _, sb := range s.spare {
		spare[sb.ID] = true
	}
	s.mu.Unlock()

	lctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	cs, err := r.cfg.Docker.ContainerList(lctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", labelNode+"="+r.cfg.Node))})
	cancel()
	if err != nil {
		return 0, fmt.Errorf("list containers: %w", err)
	}
	present := map[string]bool{}
	for _, c := range cs {
		if isSandbox(c.Labels) {
			present[c.ID] = true
		}
	}
	for _, c := range cs {
		id := c.Labels[labelSandboxID]
		if id == "" || isSandbox(c.Labels) {
			continue
		}
		keep[id] = true
		if !present[id] {
			// Its sandbox was removed behind the agent's back: the
			// container has no published port any more. It goes, and
			// the next pass starts it again.
			a := fromSummary(c)
			r.log.Warn("the container's network sandbox is gone; replacing the container", "container", a.specName(), "id", shortID(c.ID), "sandbox", shortID(id))
			r.keepRetired(ctx, a)
			r.forceRemove(ctx, c.ID, "container without its network sandbox")
		}
	}
	for _, c := range cs {
		if !isSandbox(c.Labels) || keep[c.ID] || (spare[c.ID] && c.State == "running") {
			continue
		}
		delete(present, c.ID)
		r.forceRemove(ctx, c.ID, "unused network sandbox")
	}
	// The spares left are those listed and not removed just now.
	s.mu.Lock()
	kept := s.spare[:0]
	for _, sb := range s.spare {
		if present[sb.ID] {
			kept = append(kept, sb)
		}
	}
	s.spare = kept
	s.mu.Unlock()
	r.m.spares.Set(float64(s.count()))

	for {
		s.mu.Lock()
		n, quiet := len(s.spare), time.Since(s.lastTake)
		s.mu.Unlock()
		if n >= s.want {
			return 0, nil
		}
		if quiet < sandboxQuiet {
			return sandboxQuiet - quiet, nil
		}
		sb, err := r.startSandbox(ctx)
		if err != nil {
			return 0, err
		}
		s.mu.Lock()
		s.spare = append(s.spare, sb)
		s.missing = ""
		s.mu.Unlock()
		r.m.spares.Set(float64(s.count()))
	}
}

// startSandbox creates and starts one spare sandbox.
func (r *Runtime) startSandbox(ctx context.Context) (sandbox, error) {
	ictx, cancel := context.WithTimeout(ctx, dockerTimeout)
	_, err := r.cfg.Docker.ImageInspect(ictx, r.cfg.SandboxImage)
	cancel()
	if isNotFound(err) {
		return sandbox{}, fmt.Errorf("image %s is not on this node: build the stack image (coordinator/stack/mkimage.sh) or set --sandbox-image; containers start without spare sandboxes meanwhile", r.cfg.SandboxImage)
	}
	if err != nil {
		return sandbox{}, fmt.Errorf("inspect image %s: %w", r.cfg.SandboxImage, err)
	}
	cfg, hc := r.sandboxConfig()
	var b [6]byte
	rand.Read(b[:])
	name := dockerName(r.cfg.Node, "sandbox-"+hex.EncodeToString(b[:]))
	id, port, err := r.createPublished(ctx, cfg, hc, name, nat.Port(strconv.Itoa(sandboxPort)+"/tcp"), func(err error) error { return err })
	if err != nil {
		return sandbox{}, err
	}
	r.log.Debug("spare network sandbox started", "id", shortID(id), "port", port)
	return sandbox{ID: id, Port: port}, nil
}

// removeSandboxOf removes the sandbox an app container joined, once the
// app container is gone.
func (r *Runtime) removeSandboxOf(ctx context.Context, labels map[string]string) {
	if id := labels[labelSandboxID]; id != "" {
		r.forceRemove(ctx, id, "network sandbox")
	}
}

// forceRemove removes a container whatever its state; a failure (other than
// its being gone already) is logged, and the next reconcile tries again.
func (r *Runtime) forceRemove(ctx context.Context, id, what string) {
	rctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	if err := r.cfg.Docker.ContainerRemove(rctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !isNotFound(err) {
		r.log.Warn("remove "+what, "id", shortID(id), "error", err)
	}
}

// takeSandbox hands out a spare sandbox for spec's container: only for a
// spec whose port is the one spares publish.
func (r *Runtime) takeSandbox(spec state.ContainerSpec) (sandbox, bool) {
	if r.sandboxes == nil || spec.Port != sandboxPort {
		return sandbox{}, false
	}
	sb, ok := r.sandboxes.take()
	r.m.spares.Set(float64(r.sandboxes.count()))
	return sb, ok
}

// count is the number of spares.
func (s *sandboxes) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.spare)
}
