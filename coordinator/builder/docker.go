package builder

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

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
	// Every container it makes drops all capabilities and sets
	// no-new-privileges, whatever the spec says.
	Create(ctx context.Context, spec ContainerSpec) (string, error)
	Start(ctx context.Context, id string) error
	// Exec runs a command in the running container and returns its exit
	// status once it has exited and its output has been copied (or ctx
	// ended: then the stream is cut and ctx's error returned). It works
	// inside the container's own mounts (tmpfs included), which the
	// engine's archive API does not see.
	Exec(ctx context.Context, id string, e ExecSpec) (int, error)
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
	BuildImage(ctx context.Context, context io.Reader, opts ImageBuildSpec) (io.ReadCloser, error)
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
	// StatPath describes path in container id's file system (which may
	// be created and not started), as lstat does; for a symlink, Link is
	// the absolute path it resolves to. Errors satisfy errdefs.IsNotFound
	// when the path does not exist.
	StatPath(ctx context.Context, id, path string) (PathInfo, error)
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

// PathInfo is what StatPath tells of a path in a container.
type PathInfo struct {
	Mode os.FileMode
	Link string
}

// ContainerSpec is one build (or release phase) container.
type ContainerSpec struct {
	Name  string
	Image string
	// Entrypoint, when set, replaces the image's.
	Entrypoint []string
	Cmd        []string
	User       string
	WorkDir    string
	Env        []string
	Binds      []string // host:container:ro (the builder mounts nothing writable)
	Labels     map[string]string
	// Tmpfs maps a container path to its tmpfs mount options
	// ("rw,exec,size=N,mode=1777").
	Tmpfs map[string]string
	// ReadonlyRootfs makes the image's file system read-only.
	ReadonlyRootfs bool
	// Init runs docker-init as PID 1, so orphans are reaped and do not
	// count against the pids limit forever.
	Init bool
	// Network is the Docker network to join ("" = the engine's default).
	Network string
	Limits  Limits
}

// Limits are a container's resource limits; zero means none.
type Limits struct {
	Memory    int64 // bytes, swap included
	NanoCPUs  int64 // 1e9 = one CPU
	PidsLimit int64
}

// ExecSpec is one command run by Exec.
type ExecSpec struct {
	Cmd     []string
	User    string
	WorkDir string
	Env     []string
	// Stdin, when set, is copied to the command's standard input, which
	// is then closed.
	Stdin io.Reader
	// Stdout and Stderr receive the command's output (nil discards it). An
	// error writing to them ends the command's stream and is returned.
	Stdout, Stderr io.Writer
}

// ImageBuildSpec is how a Dockerfile build runs: with these labels on the
// image, on this network and within these limits (the engine's build API
// has no pids limit).
type ImageBuildSpec struct {
	Labels  map[string]string
	Network string
	Limits  Limits
}

// logMaxSize and logMaxFiles bound what the engine keeps of a builder
// container's output (the builder copies it out as it comes).
const (
	logMaxSize  = "10m"
	logMaxFiles = "2"
)

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
	hc := &container.HostConfig{
		Binds:          s.Binds,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: s.ReadonlyRootfs,
		Tmpfs:          s.Tmpfs,
		Init:           &s.Init,
		NetworkMode:    container.NetworkMode(s.Network),
		LogConfig:      container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": logMaxSize, "max-file": logMaxFiles}},
		Resources:      container.Resources{Memory: s.Limits.Memory, NanoCPUs: s.Limits.NanoCPUs},
	}
	if s.Limits.Memory > 0 {
		hc.MemorySwap = s.Limits.Memory // no swap on top
	}
	if s.Limits.PidsLimit > 0 {
		hc.PidsLimit = &s.Limits.PidsLimit
	}
	resp, err := e.c.ContainerCreate(ctx, &container.Config{
		Image: s.Image, Entrypoint: s.Entrypoint, Cmd: s.Cmd, User: s.User, WorkingDir: s.WorkDir, Env: s.Env, Labels: s.Labels,
	}, hc, nil, nil, s.Name)
	if err != nil {
		return "", err
	}
	return resp.ID, nil
}

// execExitGrace is how long Exec keeps copying output after the command
// exited: a process it left in the background may hold the stream open.
const execExitGrace = 2 * time.Second

func (e *engine) Exec(ctx context.Context, id string, x ExecSpec) (int, error) {
	created, err := e.c.ContainerExecCreate(ctx, id, container.ExecOptions{
		User: x.User, WorkingDir: x.WorkDir, Env: x.Env, Cmd: x.Cmd,
		AttachStdin: x.Stdin != nil, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return 0, fmt.Errorf("create exec: %w", err)
	}
	hj, err := e.c.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return 0, fmt.Errorf("attach exec: %w", err)
	}
	// The hijacked connection ignores ctx: close it when ctx ends, or when
	// the command exited and its output did not end soon after.
	var once sync.Once
	cut := func() { once.Do(hj.Close) }
	defer cut()
	copied := make(chan error, 1)
	if x.Stdin != nil {
		go func() {
			if _, err := io.Copy(hj.Conn, x.Stdin); err != nil {
				cut()
				return
			}
			_ = hj.CloseWrite()
		}()
	}
	go func() {
		stdout, stderr := x.Stdout, x.Stderr
		if stdout == nil {
			stdout = io.Discard
		}
		if stderr == nil {
			stderr = io.Discard
		}
		_, err := stdcopy.StdCopy(stdout, stderr, hj.Reader)
		copied <- err
	}()

	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var copyErr error
	var exited <-chan time.Time
wait:
	for {
		select {
		case copyErr = <-copied:
			break wait
		case <-ctx.Done():
			cut()
			<-copied
			return 0, ctx.Err()
		case <-exited:
			cut() // the command is gone; something it left holds the stream
			copyErr = <-copied
			break wait
		case <-tick.C:
			if exited != nil {
				continue
			}
			if st, err := e.c.ContainerExecInspect(ctx, created.ID); err == nil && !st.Running && st.Pid != 0 {
				exited = time.After(execExitGrace)
			}
		}
	}
	if copyErr != nil && ctx.Err() == nil && !isClosedConn(copyErr) {
		return 0, copyErr
	}
	// The stream ended: wait (briefly, within ctx) for the engine to
	// record the exit status.
	for {
		st, err := e.c.ContainerExecInspect(ctx, created.ID)
		if err != nil {
			return 0, fmt.Errorf("inspect exec: %w", err)
		}
		if !st.Running {
			if copyErr != nil && !isClosedConn(copyErr) {
				return st.ExitCode, copyErr
			}
			return st.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
		}
	}
}

// isClosedConn reports whether err comes from reading a connection Exec
// closed itself.
func isClosedConn(err error) bool {
	return errors.Is(err, net.ErrClosed)
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

func (e *engine) BuildImage(ctx context.Context, tarCtx io.Reader, spec ImageBuildSpec) (io.ReadCloser, error) {
	opts := build.ImageBuildOptions{
		Dockerfile: "Dockerfile", Labels: spec.Labels, Remove: true, ForceRemove: true,
		PullParent: false, Version: build.BuilderV1, NetworkMode: spec.Network,
		Memory: spec.Limits.Memory,
	}
	if spec.Limits.Memory > 0 {
		opts.MemorySwap = spec.Limits.Memory
	}
	if spec.Limits.NanoCPUs > 0 {
		opts.CPUPeriod = 100000
		opts.CPUQuota = spec.Limits.NanoCPUs * opts.CPUPeriod / 1e9
	}
	resp, err := e.c.ImageBuild(ctx, tarCtx, opts)
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

func (e *engine) StatPath(ctx context.Context, id, path string) (PathInfo, error) {
	st, err := e.c.ContainerStatPath(ctx, id, path)
	if err != nil {
		return PathInfo{}, err
	}
	return PathInfo{Mode: st.Mode, Link: st.LinkTarget}, nil
}

func (e *engine) SaveImage(ctx context.Context, ref string) (io.ReadCloser, error) {
	return e.c.ImageSave(ctx, []string{ref})
}

func (e *engine) RemoveImage(ctx context.Context, ref string) error {
	_, err := e.c.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: true})
	return err
}
