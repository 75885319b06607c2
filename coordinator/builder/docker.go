package builder

import (
	"context"
	"fmt"
	"io"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
)

// Docker is the part of the Docker engine the builder uses. Each call is
// bounded by the context it gets; the builder gives each one its own timeout.
type Docker interface {
	// Create makes (but does not start) a container and returns its id.
	Create(ctx context.Context, spec ContainerSpec) (string, error)
	// CopyTo extracts the tar stream into dir inside the container, keeping
	// the owners the tar names.
	CopyTo(ctx context.Context, id, dir string, tar io.Reader) error
	Start(ctx context.Context, id string) error
	// Logs follows the container's stdout and stderr, merged, from its start
	// until it exits.
	Logs(ctx context.Context, id string) (io.ReadCloser, error)
	// Wait returns the exit status once the container is not running.
	Wait(ctx context.Context, id string) (int, error)
	// Remove kills and removes the container.
	Remove(ctx context.Context, id string) error
	// List returns the ids of containers carrying every given label.
	List(ctx context.Context, labels map[string]string) ([]string, error)
}

// ContainerSpec is one build container.
type ContainerSpec struct {
	Name    string
	Image   string
	Cmd     []string
	User    string
	WorkDir string
	Env     []string
	Binds   []string // host:container[:ro]
	Labels  map[string]string
}

// NewDocker connects to the local Docker engine from the environment
// (DOCKER_HOST and friends) and negotiates the API version.
func NewDocker(ctx context.Context) (Docker, error) {
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("builder: docker client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, dockerCallTimeout)
	defer cancel()
	if _, err := c.Ping(pctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("builder: docker engine unreachable (is dockerd running?): %w", err)
	}
	c.NegotiateAPIVersion(pctx)
	return &engine{c: c}, nil
}

type engine struct{ c *client.Client }

func (e *engine) Create(ctx context.Context, s ContainerSpec) (string, error) {
	resp, err := e.c.ContainerCreate(ctx, &container.Config{
		Image: s.Image, Cmd: s.Cmd, User: s.User, WorkingDir: s.WorkDir, Env: s.Env, Labels: s.Labels,
	}, &container.HostConfig{Binds: s.Binds}, nil, nil, s.Name)
	if err != nil {
		return "", err
	}
	return resp.ID, nil
}

func (e *engine) CopyTo(ctx context.Context, id, dir string, tar io.Reader) error {
	return e.c.CopyToContainer(ctx, id, dir, tar, container.CopyToContainerOptions{})
}

func (e *engine) Start(ctx context.Context, id string) error {
	return e.c.ContainerStart(ctx, id, container.StartOptions{})
}

func (e *engine) Logs(ctx context.Context, id string) (io.ReadCloser, error) {
	rc, err := e.c.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: true})
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := stdcopy.StdCopy(pw, pw, rc)
		rc.Close()
		pw.CloseWithError(err)
	}()
	return pr, nil
}

func (e *engine) Wait(ctx context.Context, id string) (int, error) {
	okc, errc := e.c.ContainerWait(ctx, id, container.WaitConditionNotRunning)
	select {
	case r := <-okc:
		if r.Error != nil && r.Error.Message != "" {
			return int(r.StatusCode), fmt.Errorf("%s", r.Error.Message)
		}
		return int(r.StatusCode), nil
	case err := <-errc:
		return 0, err
	}
}

func (e *engine) Remove(ctx context.Context, id string) error {
	return e.c.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
}

func (e *engine) List(ctx context.Context, labels map[string]string) ([]string, error) {
	f := filters.NewArgs()
	for k, v := range labels {
		f.Add("label", k+"="+v)
	}
	cs, err := e.c.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids, nil
}
