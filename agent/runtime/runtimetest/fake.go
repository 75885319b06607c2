package runtimetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Container is one fake container.
type Container struct {
	ID         string
	Name       string
	Config     container.Config
	HostConfig container.HostConfig
	State      container.ContainerState
	ExitCode   int
	Started    time.Time
	// Ports maps container ports to the host ports of their listeners.
	Ports map[nat.Port]int

	listeners []net.Listener
	conns     []net.Conn
}

// Docker is an in-memory Docker engine implementing runtime.Docker. A
// started container "runs" a TCP listener on each published port that
// accepts connections and holds them open, so readiness probes pass.
// It is safe for concurrent use.
type Docker struct {
	// Images lists the images that exist; nil means every image exists.
	Images map[string]bool
	// CreateErr, when set, fails every ContainerCreate.
	CreateErr error
	// StopDelay is how long ContainerStop takes, as a slow SIGTERM
	// handler would (set it before use).
	StopDelay time.Duration
	// Calls counts the calls by method name ("ContainerStop", ...).
	Calls map[string]int
	// TakenPorts are host ports ContainerStart refuses as Docker does
	// when another container holds them (set before use).
	TakenPorts map[int]bool

	mu         sync.Mutex
	containers map[string]*Container
	subs       map[chan events.Message]filters.Args
}

// New returns an empty fake engine.
func New() *Docker {
	return &Docker{Calls: map[string]int{}, containers: map[string]*Container{}, subs: map[chan events.Message]filters.Args{}}
}

// CallCount returns how often method was called.
func (d *Docker) CallCount(method string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.Calls[method]
}

// Containers returns copies of every container.
func (d *Docker) Containers() []Container {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Container, 0, len(d.containers))
	for _, c := range d.containers {
		cp := *c
		cp.listeners, cp.conns = nil, nil
		out = append(out, cp)
	}
	return out
}

// Kill makes a running container exit with code, as a crash would (the
// fake does not apply restart policies).
func (d *Docker) Kill(id string, code int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.find(id)
	if err != nil {
		return err
	}
	d.exit(c, code)
	d.emit(c, events.ActionDie)
	return nil
}

func (d *Docker) call(m string) {
	d.mu.Lock()
	d.Calls[m]++
	d.mu.Unlock()
}

func notFound(what string) error {
	return fmt.Errorf("No such container: %s: %w", what, cerrdefs.ErrNotFound)
}

// find looks a container up by id, id prefix or name. Called with d.mu held.
func (d *Docker) find(ref string) (*Container, error) {
	ref = strings.TrimPrefix(ref, "/")
	if c, ok := d.containers[ref]; ok {
		return c, nil
	}
	for _, c := range d.containers {
		if c.Name == ref || (len(ref) >= 12 && strings.HasPrefix(c.ID, ref)) {
			return c, nil
		}
	}
	return nil, notFound(ref)
}

func matches(args filters.Args, labels map[string]string) bool {
	return args.MatchKVList("label", labels)
}

// ContainerList implements runtime.Docker; it honours label filters only.
func (d *Docker) ContainerList(ctx context.Context, opts container.ListOptions) ([]container.Summary, error) {
	d.call("ContainerList")
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []container.Summary
	for _, c := range d.containers {
		if !opts.All && c.State != container.StateRunning {
			continue
		}
		if !matches(opts.Filters, c.Config.Labels) {
			continue
		}
		s := container.Summary{ID: c.ID, Names: []string{"/" + c.Name}, Image: c.Config.Image,
			Labels: c.Config.Labels, State: c.State, Status: status(c)}
		for p, hp := range c.Ports {
			s.Ports = append(s.Ports, container.Port{IP: bindIP(c, p), PrivatePort: uint16(p.Int()), PublicPort: uint16(hp), Type: p.Proto()})
		}
		out = append(out, s)
	}
	return out, ctx.Err()
}

func bindIP(c *Container, p nat.Port) string {
	if bs := c.HostConfig.PortBindings[p]; len(bs) > 0 {
		return bs[0].HostIP
	}
	return ""
}

func status(c *Container) string {
	switch c.State {
	case container.StateRunning:
		return "Up"
	case container.StateExited:
		return fmt.Sprintf("Exited (%d)", c.ExitCode)
	}
	return string(c.State)
}

// ContainerInspect implements runtime.Docker.
func (d *Docker) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	d.call("ContainerInspect")
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.find(id)
	if err != nil {
		return container.InspectResponse{}, err
	}
	cfg := c.Config
	resp := container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{ID: c.ID, Name: "/" + c.Name, State: &container.State{
			Status: c.State, Running: c.State == container.StateRunning, ExitCode: c.ExitCode,
			StartedAt: c.Started.Format(time.RFC3339Nano)}},
		Config:          &cfg,
		NetworkSettings: &container.NetworkSettings{NetworkSettingsBase: container.NetworkSettingsBase{Ports: nat.PortMap{}}},
	}
	for p, hp := range c.Ports {
		resp.NetworkSettings.Ports[p] = []nat.PortBinding{{HostIP: bindIP(c, p), HostPort: strconv.Itoa(hp)}}
	}
	return resp, ctx.Err()
}

// ContainerCreate implements runtime.Docker.
func (d *Docker) ContainerCreate(ctx context.Context, cfg *container.Config, hc *container.HostConfig, _ *network.NetworkingConfig, _ *ocispec.Platform, name string) (container.CreateResponse, error) {
	d.call("ContainerCreate")
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.CreateErr != nil {
		return container.CreateResponse{}, d.CreateErr
	}
	if d.Images != nil && !d.Images[cfg.Image] {
		return container.CreateResponse{}, fmt.Errorf("No such image: %s: %w", cfg.Image, cerrdefs.ErrNotFound)
	}
	if _, err := d.find(name); err == nil {
		return container.CreateResponse{}, fmt.Errorf("Conflict. The container name %q is already in use: %w", "/"+name, cerrdefs.ErrConflict)
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	c := &Container{ID: hex.EncodeToString(b), Name: name, Config: *cfg, State: container.StateCreated, Ports: map[nat.Port]int{}}
	if hc != nil {
		c.HostConfig = *hc
	}
	d.containers[c.ID] = c
	d.emit(c, events.ActionCreate)
	return container.CreateResponse{ID: c.ID}, ctx.Err()
}

// ContainerStart implements runtime.Docker: it opens a listener on every
// published port.
func (d *Docker) ContainerStart(ctx context.Context, id string, _ container.StartOptions) error {
	d.call("ContainerStart")
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.find(id)
	if err != nil {
		return err
	}
	if c.State == container.StateRunning {
		return nil
	}
	for p, bs := range c.HostConfig.PortBindings {
		ip := "127.0.0.1"
		if len(bs) > 0 && bs[0].HostIP != "" {
			ip = bs[0].HostIP
		}
		hp := "0"
		if len(bs) > 0 && bs[0].HostPort != "" {
			hp = bs[0].HostPort // an explicit port, like Docker binds it
			if n, _ := strconv.Atoi(hp); d.TakenPorts[n] {
				d.exit(c, 128)
				return fmt.Errorf("driver failed programming external connectivity on endpoint %s: Bind for %s:%s failed: port is already allocated", c.Name, ip, hp)
			}
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ip, hp))
		if err != nil {
			d.exit(c, 128)
			return fmt.Errorf("fake docker: publish %s: %w", p, err)
		}
		c.listeners = append(c.listeners, l)
		c.Ports[p] = l.Addr().(*net.TCPAddr).Port
		go d.accept(c, l)
	}
	c.State, c.ExitCode, c.Started = container.StateRunning, 0, time.Now().UTC()
	d.emit(c, events.ActionStart)
	return ctx.Err()
}

func (d *Docker) accept(c *Container, l net.Listener) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		d.mu.Lock()
		c.conns = append(c.conns, conn)
		d.mu.Unlock()
	}
}

// exit stops a container's listeners. Called with d.mu held.
func (d *Docker) exit(c *Container, code int) {
	for _, l := range c.listeners {
		l.Close()
	}
	for _, conn := range c.conns {
		conn.Close()
	}
	c.listeners, c.conns = nil, nil
	c.Ports = map[nat.Port]int{}
	c.State, c.ExitCode = container.StateExited, code
}

// ContainerStop implements runtime.Docker; the fake stops after StopDelay.
func (d *Docker) ContainerStop(ctx context.Context, id string, _ container.StopOptions) error {
	d.call("ContainerStop")
	if d.StopDelay > 0 {
		t := time.NewTimer(d.StopDelay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.find(id)
	if err != nil {
		return err
	}
	if c.State == container.StateRunning {
		d.exit(c, 143)
		d.emit(c, events.ActionDie)
		d.emit(c, events.ActionStop)
	}
	return ctx.Err()
}

// ContainerRemove implements runtime.Docker.
func (d *Docker) ContainerRemove(ctx context.Context, id string, opts container.RemoveOptions) error {
	d.call("ContainerRemove")
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.find(id)
	if err != nil {
		return err
	}
	if c.State == container.StateRunning {
		if !opts.Force {
			return fmt.Errorf("cannot remove a running container %s: %w", c.ID, cerrdefs.ErrConflict)
		}
		d.exit(c, 137)
	}
	delete(d.containers, c.ID)
	d.emit(c, events.ActionDestroy)
	return ctx.Err()
}

// Events implements runtime.Docker; it honours type and label filters.
func (d *Docker) Events(ctx context.Context, opts events.ListOptions) (<-chan events.Message, <-chan error) {
	d.call("Events")
	msgs := make(chan events.Message, 64)
	errs := make(chan error, 1)
	d.mu.Lock()
	d.subs[msgs] = opts.Filters
	d.mu.Unlock()
	go func() {
		<-ctx.Done()
		d.mu.Lock()
		delete(d.subs, msgs)
		d.mu.Unlock()
		errs <- ctx.Err()
	}()
	return msgs, errs
}

// emit sends an event to the matching subscribers, dropping it for slow
// ones. Called with d.mu held.
func (d *Docker) emit(c *Container, action events.Action) {
	m := events.Message{Type: events.ContainerEventType, Action: action,
		Actor: events.Actor{ID: c.ID, Attributes: c.Config.Labels}, TimeNano: time.Now().UnixNano()}
	for ch, args := range d.subs {
		if args.Len() > 0 && (!args.ExactMatch("type", string(m.Type)) || !matches(args, c.Config.Labels)) {
			continue
		}
		select {
		case ch <- m:
		default:
		}
	}
}

// Close stops every listener.
func (d *Docker) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.containers {
		if c.State == container.StateRunning {
			d.exit(c, 137)
		}
	}
}
