package builder

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
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

	// BuildImage runs a Dockerfile build of the tar context (never pulling)
	// and returns its output as lines of text, ending with the built
	// image's id or the build's error (see ImageBuildResult).
	BuildImage(ctx context.Context, context io.Reader, labels map[string]string) (io.ReadCloser, error)
	// InspectImage describes an image; errors satisfy errdefs.IsNotFound
	// when it does not exist.
	InspectImage(ctx context.Context, ref string) (ImageInfo, error)
	// TagImage gives image id the name ref ("repo:tag").
	TagImage(ctx context.Context, id, ref string) error
	// ListImages returns the images carrying every given label.
	ListImages(ctx context.Context, labels map[string]string) ([]ImageInfo, error)
	// RemoveImage removes the name ref, and the image with its untagged
	// parents once no name is left.
	RemoveImage(ctx context.Context, ref string) error
	// SaveImage streams `docker save` of ref: a tar of the image with its
	// layers and its name, which `docker load` (ImageLoad) takes back.
	SaveImage(ctx context.Context, ref string) (io.ReadCloser, error)
}

// ImageInfo is what the builder needs to know about an image.
type ImageInfo struct {
	ID         string
	Tags       []string
	Cmd        []string
	Entrypoint []string
	Size       int64
	Labels     map[string]string
}

// ContainerSpec is one build container.
type ContainerSpec struct {
	Name  string
	Image string
	// Entrypoint, when set, replaces the image's.
	Entrypoint []string
	Cmd        []string
	User       string
	WorkDir    string
	Env        []string
	Binds      []string // host:container[:ro]
	Labels     map[string]string
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
		Image: s.Image, Entrypoint: s.Entrypoint, Cmd: s.Cmd, User: s.User, WorkingDir: s.WorkDir, Env: s.Env, Labels: s.Labels,
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
	cs, err := e.c.ContainerList(ctx, container.ListOptions{All: true, Filters: labelFilter(labels)})
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids, nil
}

func labelFilter(labels map[string]string) filters.Args {
	f := filters.NewArgs()
	for k, v := range labels {
		f.Add("label", k+"="+v)
	}
	return f
}

// Result lines of BuildImage's output.
const (
	imageBuiltPrefix  = "DEIS-IMAGE-BUILT "
	imageFailedPrefix = "DEIS-IMAGE-FAILED "
)

func (e *engine) BuildImage(ctx context.Context, tarCtx io.Reader, labels map[string]string) (io.ReadCloser, error) {
	resp, err := e.c.ImageBuild(ctx, tarCtx, build.ImageBuildOptions{
		Dockerfile: "Dockerfile", Labels: labels, Remove: true, ForceRemove: true,
		PullParent: false, Version: build.BuilderV1,
	})
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer resp.Body.Close()
		pw.CloseWithError(decodeBuildOutput(resp.Body, pw))
	}()
	return pr, nil
}

// decodeBuildOutput turns the engine's JSON build messages into plain
// lines, ending with an imageBuiltPrefix or imageFailedPrefix line.
func decodeBuildOutput(r io.Reader, w io.Writer) error {
	dec := json.NewDecoder(bufio.NewReader(r))
	id := ""
	for {
		var m struct {
			Stream string `json:"stream"`
			Status string `json:"status"`
			Error  string `json:"error"`
			Aux    *struct {
				ID string `json:"ID"`
			} `json:"aux"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("decode the build output: %w", err)
		}
		var text string
		switch {
		case m.Error != "":
			_, err := fmt.Fprintf(w, "%s%s\n", imageFailedPrefix, strings.Join(strings.Fields(m.Error), " "))
			return err
		case m.Aux != nil && m.Aux.ID != "":
			id = m.Aux.ID
			continue
		case m.Stream != "":
			text = m.Stream
		case m.Status != "":
			text = m.Status + "\n"
		}
		if _, err := io.WriteString(w, text); err != nil {
			return err
		}
	}
	if id == "" {
		_, err := fmt.Fprintf(w, "\n%sthe engine did not say which image it built\n", imageFailedPrefix)
		return err
	}
	_, err := fmt.Fprintf(w, "\n%s%s\n", imageBuiltPrefix, id)
	return err
}

func (e *engine) InspectImage(ctx context.Context, ref string) (ImageInfo, error) {
	img, err := e.c.ImageInspect(ctx, ref)
	if err != nil {
		return ImageInfo{}, err
	}
	info := ImageInfo{ID: img.ID, Tags: img.RepoTags, Size: img.Size}
	if img.Config != nil {
		info.Cmd, info.Entrypoint, info.Labels = img.Config.Cmd, img.Config.Entrypoint, img.Config.Labels
	}
	return info, nil
}

func (e *engine) TagImage(ctx context.Context, id, ref string) error {
	return e.c.ImageTag(ctx, id, ref)
}

func (e *engine) ListImages(ctx context.Context, labels map[string]string) ([]ImageInfo, error) {
	imgs, err := e.c.ImageList(ctx, image.ListOptions{Filters: labelFilter(labels)})
	if err != nil {
		return nil, err
	}
	out := make([]ImageInfo, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, ImageInfo{ID: img.ID, Tags: img.RepoTags, Size: img.Size, Labels: img.Labels})
	}
	return out, nil
}

func (e *engine) SaveImage(ctx context.Context, ref string) (io.ReadCloser, error) {
	return e.c.ImageSave(ctx, []string{ref})
}

func (e *engine) RemoveImage(ctx context.Context, ref string) error {
	_, err := e.c.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: true})
	return err
}
