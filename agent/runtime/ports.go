package runtime

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/go-connections/nat"
)

// labelHostPort is the host port the runtime chose for a container
// (choosePort). The container is created with that explicit port, so Docker
// binds the same one again whenever it restarts the container, including
// after a restart of dockerd itself (restart policy unless-stopped).
const labelHostPort = "deis.hostport"

// PortRange is the range of host ports, both ends included, that the
// runtime publishes containers' ports on.
type PortRange struct{ Min, Max int }

// DefaultPortRange lies below Linux's ephemeral range (32768-60999), so
// outgoing connections never hold a port the runtime wants.
var DefaultPortRange = PortRange{Min: 20000, Max: 29999}

func (p PortRange) String() string { return fmt.Sprintf("%d-%d", p.Min, p.Max) }

// size is the number of ports in the range.
func (p PortRange) size() int { return p.Max - p.Min + 1 }

// validate says what is wrong with a range.
func (p PortRange) validate() error {
	if p.Min < 1 || p.Max > 65535 || p.Min > p.Max {
		return fmt.Errorf("port range %s is not a range of TCP ports: use MIN-MAX with 1 <= MIN <= MAX <= 65535, like %s", p, DefaultPortRange)
	}
	return nil
}

// ParsePortRange parses "MIN-MAX" (the agent's --port-range).
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	a, errA := strconv.Atoi(strings.TrimSpace(lo))
	b, errB := strconv.Atoi(strings.TrimSpace(hi))
	if !ok || errA != nil || errB != nil {
		return PortRange{}, fmt.Errorf("runtime: port range %q: use MIN-MAX, like %s", s, DefaultPortRange)
	}
	r := PortRange{Min: a, Max: b}
	if err := r.validate(); err != nil {
		return PortRange{}, fmt.Errorf("runtime: %w", err)
	}
	return r, nil
}

// choosePort returns the first port of rng, counting from start and
// wrapping around, that taken does not reject; false when every port is
// taken.
func choosePort(rng PortRange, start int, taken func(int) bool) (int, bool) {
	n := rng.size()
	if start < rng.Min || start > rng.Max {
		start = rng.Min
	}
	for i := 0; i < n; i++ {
		p := rng.Min + (start-rng.Min+i)%n
		if !taken(p) {
			return p, true
		}
	}
	return 0, false
}

// reserveFor is how long a chosen port stays reserved without being seen
// on a container: longer than a create and a start take.
const reserveFor = createTimeout + dockerTimeout

// portAttempts is how many ports one start tries when Docker finds the
// chosen one taken (by a process or container the runtime does not know).
const portAttempts = 5

// ports chooses host ports for one node's containers.
type ports struct {
	rng  PortRange
	addr string

	mu       sync.Mutex
	next     int               // where the next search starts: freed ports are not reused at once
	reserved map[int]time.Time // chosen ports, until when
}

func newPorts(rng PortRange, addr string) *ports {
	return &ports{rng: rng, addr: addr, next: rng.Min + rand.IntN(rng.size()), reserved: map[int]time.Time{}}
}

// inUse lists the host ports of every container and network sandbox of
// the platform on this engine, of any node and in any state: their
// labelled ports, which Docker binds again when it restarts them, and the
// ports they publish now (containers from before labelHostPort have
// ephemeral ones).
func (r *Runtime) inUse(ctx context.Context) (map[int]bool, error) {
	dctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	cs, err := r.cfg.Docker.ContainerList(dctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", labelFormation))})
	if err != nil {
		return nil, fmt.Errorf("runtime: list containers for their host ports: %w: check that Docker is running", err)
	}
	sbs, err := r.cfg.Docker.ContainerList(dctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", labelSandbox))})
	if err != nil {
		return nil, fmt.Errorf("runtime: list network sandboxes for their host ports: %w: check that Docker is running", err)
	}
	used := map[int]bool{}
	for _, c := range append(cs, sbs...) {
		if p, err := strconv.Atoi(c.Labels[labelHostPort]); err == nil {
			used[p] = true
		}
		for _, p := range c.Ports {
			if p.PublicPort != 0 {
				used[int(p.PublicPort)] = true
			}
		}
	}
	return used, nil
}

// choose reserves a host port that no container of the platform has, that
// is not reserved and that can be bound on the node address right now.
func (p *ports) choose(used map[int]bool) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for port, until := range p.reserved {
		if now.After(until) {
			delete(p.reserved, port)
		}
	}
	port, ok := choosePort(p.rng, p.next, func(port int) bool {
		if used[port] {
			return true
		}
		if _, ok := p.reserved[port]; ok {
			return true
		}
		return !bindable(p.addr, port)
	})
	if !ok {
		return 0, fmt.Errorf("runtime: no free host port in --port-range %s on %s: every one is held by a container or bound by another process: widen --port-range or free ports", p.rng, p.addr)
	}
	p.reserved[port] = now.Add(reserveFor)
	p.next = port + 1
	return port, nil
}

// avoid keeps a port that turned out taken reserved for a while.
func (p *ports) avoid(port int) {
	p.mu.Lock()
	p.reserved[port] = time.Now().Add(reserveFor)
	p.mu.Unlock()
}

// bindable reports whether a TCP listener can be opened on addr:port now.
func bindable(addr string, port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// portTaken reports whether a Docker error says a host port is in use.
func portTaken(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "port is already allocated") || strings.Contains(msg, "address already in use")
}

// createAndStart creates the container of spec from cfg and hc, named
// name, and starts it. A spec with a port gets an explicit host port
// (createPublished).
func (r *Runtime) createAndStart(ctx context.Context, spec state.ContainerSpec, cfg *container.Config, hc *container.HostConfig, name string) (string, error) {
	cport := nat.Port("")
	if spec.Port > 0 {
		cport = containerPort(spec)
	}
	id, _, err := r.createPublished(ctx, cfg, hc, name, cport, func(err error) error { return dockerHint(err, spec) })
	return id, err
}

// createPublished creates the container named name from cfg and hc and
// starts it. With a container port cport, it publishes cport on the node
// address at an explicit host port (ports.choose), recorded in
// labelHostPort; when Docker finds that port taken the container is removed
// and another port is tried. hint adds what to do to Docker's errors. It
// returns the container's id and host port (0 without cport).
func (r *Runtime) createPublished(ctx context.Context, cfg *container.Config, hc *container.HostConfig, name string, cport nat.Port, hint func(error) error) (string, int, error) {
	attempts := 1
	var used map[int]bool
	if cport != "" {
		attempts = portAttempts
		var err error
		if used, err = r.inUse(ctx); err != nil {
			return "", 0, err
		}
	}
	for i := 0; ; i++ {
		port := 0
		if cport != "" {
			var err error
			if port, err = r.ports.choose(used); err != nil {
				return "", 0, err
			}
			hc.PortBindings = nat.PortMap{cport: []nat.PortBinding{{HostIP: r.cfg.Addr, HostPort: strconv.Itoa(port)}}}
			cfg.Labels[labelHostPort] = strconv.Itoa(port)
		}
		cctx, cancel := context.WithTimeout(ctx, createTimeout)
		created, err := r.cfg.Docker.ContainerCreate(cctx, cfg, hc, nil, nil, name)
		cancel()
		if err != nil {
			return "", 0, fmt.Errorf("runtime: create container %s: %w", name, hint(err))
		}
		sctx, cancel := context.WithTimeout(ctx, dockerTimeout)
		err = r.cfg.Docker.ContainerStart(sctx, created.ID, container.StartOptions{})
		cancel()
		if err == nil {
			return created.ID, port, nil
		}
		if port == 0 || !portTaken(err) || i+1 >= attempts || ctx.Err() != nil {
			// The container stays "created"; the next attempt replaces it.
			return "", 0, fmt.Errorf("runtime: start container %s: %w", name, hint(err))
		}
		r.log.Info("host port taken, trying another", "container", name, "port", port, "error", err)
		r.ports.avoid(port)
		used[port] = true
		rctx, cancel := context.WithTimeout(ctx, dockerTimeout)
		rerr := r.cfg.Docker.ContainerRemove(rctx, created.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		cancel()
		if rerr != nil && !isNotFound(rerr) {
			return "", 0, errors.Join(fmt.Errorf("runtime: start container %s: %w", name, hint(err)),
				fmt.Errorf("runtime: remove it to try another port: %w", rerr))
		}
	}
}
