package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/deis/deis/pkg/launcher"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/deis/deis/agent/runtime"
	"github.com/deis/deis/pkg/state"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
)

// maxRunBody bounds the JSON body of POST /run.
const maxRunBody = 1 << 20

// probeEvery is how often a one-off session checks that its client is
// still there, when the command is silent.
var probeEvery = 5 * time.Second

// statusError is an error with the HTTP status that answers it.
type statusError struct {
	code int
	err  error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

func withStatus(code int, err error) error { return &statusError{code: code, err: err} }

func statusOf(err error) int {
	var se *statusError
	if errors.As(err, &se) {
		return se.code
	}
	return http.StatusBadGateway
}

// headerHas reports whether the comma-separated header k holds token v.
func headerHas(h http.Header, k, v string) bool {
	for _, line := range h.Values(k) {
		for _, t := range strings.Split(line, ",") {
			if strings.EqualFold(strings.TrimSpace(t), v) {
				return true
			}
		}
	}
	return false
}

// run answers POST /run: it starts a one-off container of the formation's
// current release, switches the connection to the deis-run protocol and
// relays the container's stdio until it exits (see the package doc).
func (s *Server) run(w http.ResponseWriter, r *http.Request) {
	f := r.URL.Query().Get("formation")
	if err := state.ValidateName("formation", f); err != nil {
		httpError(w, http.StatusBadRequest, "api: %v", err)
		return
	}
	if !headerHas(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), UpgradeProtocol) {
		w.Header().Set("Upgrade", UpgradeProtocol)
		httpError(w, http.StatusUpgradeRequired, "api: POST /run needs the headers Connection: Upgrade and Upgrade: %s", UpgradeProtocol)
		return
	}
	var req RunRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxRunBody)).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "api: the body must be JSON like {\"command\": \"ls -l\"}: %v", err)
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxRunBody))
	if strings.TrimSpace(req.Command) == "" {
		httpError(w, http.StatusBadRequest, "api: no command to run")
		return
	}
	for k := range req.Env {
		if err := state.ValidateEnvKey(k); err != nil {
			httpError(w, http.StatusBadRequest, "api: %v", err)
			return
		}
	}
	s.runs.Add(1)
	defer s.runs.Done()
	// The session outlives the request's context, which ends when the
	// connection is hijacked: it ends when the server stops, or, until
	// the hijack, when the client leaves.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	defer context.AfterFunc(s.life, cancel)()
	untilHijack := context.AfterFunc(r.Context(), cancel)
	defer untilHijack()
	log := s.log.With("formation", f)

	spec, err := s.oneOffSpec(ctx, f, req)
	if err != nil {
		httpError(w, statusOf(err), "%v", err)
		return
	}
	cfg, hc, err := s.cfg.Runtime.OneOffConfig(ctx, spec)
	if err != nil {
		httpError(w, http.StatusBadGateway, "%v", err)
		return
	}
	id, name, err := s.create(ctx, &spec, cfg, hc)
	if err != nil {
		httpError(w, http.StatusBadGateway, "%v", err)
		return
	}
	log = log.With("release", spec.Release, "container", name, "id", shortID(id))
	// From here on the container exists; whatever happens, it must end.
	var once sync.Once
	kill := func(why string) {
		once.Do(func() {
			log.Info("killing one-off container", "reason", why)
			kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dockerTimeout)
			defer cancel()
			if err := s.cfg.Docker.ContainerKill(kctx, id, "KILL"); err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
				log.Warn("kill one-off container", "error", err)
			}
			// AutoRemove removes a container that ran; one that never
			// started must go by hand.
			_ = s.cfg.Docker.ContainerRemove(kctx, id, container.RemoveOptions{Force: true})
		})
	}

	actx, acancel := context.WithTimeout(ctx, dockerTimeout)
	att, err := s.cfg.Docker.ContainerAttach(actx, id, container.AttachOptions{Stream: true, Stdin: true, Stdout: true, Stderr: true})
	acancel()
	if err != nil {
		kill("attach failed")
		httpError(w, http.StatusBadGateway, "api: attach to one-off container %s: %v", name, err)
		return
	}
	defer att.Close()
	// Waiting for removal (AutoRemove) is registered before the start, so
	// the exit status cannot be missed.
	waitc, waitErrc := s.cfg.Docker.ContainerWait(ctx, id, container.WaitConditionRemoved)
	sctx, scancel := context.WithTimeout(ctx, dockerTimeout)
	err = s.cfg.Docker.ContainerStart(sctx, id, container.StartOptions{})
	scancel()
	if err != nil {
		kill("start failed")
		httpError(w, http.StatusBadGateway, "api: start one-off container %s: %v", name, err)
		return
	}
	s.m.running.Inc()
	defer s.m.running.Dec()
	log.Info("one-off container started", "command", req.Command)

	untilHijack()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		kill("cannot switch protocols")
		httpError(w, http.StatusInternalServerError, "api: switch protocols: %v", err)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Time{})
	var disconnected atomic.Bool
	gone := func(why string) {
		if ctx.Err() == nil {
			disconnected.Store(true)
		}
		kill(why)
	}
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + UpgradeProtocol + "\r\n\r\n"); err == nil {
		if err = brw.Flush(); err != nil {
			gone("the client's connection broke: " + err.Error())
		}
	}

	fw := &frameWriter{w: conn}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(2)
	go func() { // the agent stopping, or the client leaving, ends the session
		defer wg.Done()
		probe := time.NewTicker(probeEvery)
		defer probe.Stop()
		for {
			select {
			case <-ctx.Done():
				gone("the agent API is stopping")
				conn.Close()
				return
			case <-probe.C:
				// An empty stdout frame: a client that closed its end
				// makes the write fail (a half-closed one does not).
				if err := fw.write(FrameStdout, nil); err != nil {
					gone("the client went away: " + err.Error())
					return
				}
			case <-done:
				return
			}
		}
	}()
	go func() { // stdin, until the client half-closes
		defer wg.Done()
		_, err := io.Copy(att.Conn, brw.Reader)
		_ = att.CloseWrite()
		if err != nil && !isClosed(err) {
			select {
			case <-done:
			default:
				gone("the client's connection broke: " + err.Error())
			}
		}
	}()

	if _, err := stdcopy.StdCopy(stream{fw, FrameStdout}, stream{fw, FrameStderr}, att.Reader); err != nil {
		gone("output could not be relayed: " + err.Error())
	}
	code, result := 255, "exited"
	select {
	case res := <-waitc:
		code = int(res.StatusCode)
		if res.Error != nil && res.Error.Message != "" {
			_ = fw.write(FrameStderr, []byte("deis: "+res.Error.Message+"\n"))
		}
	case err := <-waitErrc:
		if ctx.Err() == nil {
			_ = fw.write(FrameStderr, []byte(fmt.Sprintf("deis: lost track of the one-off container: %v\n", err)))
			result = "error"
		}
	}
	_ = fw.write(FrameExit, []byte(strconv.Itoa(code)))
	close(done)
	conn.Close() // ends the stdin copy
	wg.Wait()
	if disconnected.Load() {
		result = "disconnected"
	}
	s.m.runs.WithLabelValues(result).Inc()
	log.Info("one-off container ended", "exit_code", code, "result", result)
}

// isClosed reports the error of reading a connection this side closed.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || strings.Contains(err.Error(), "use of closed network connection")
}

// oneOffSpec describes the one-off container of formation f from this
// node's runtime databag, the only desired state a node may read: a
// container of f of its highest release (the current release's; during a
// rollout, the newest) gives the image or slug, config, uid and limits
// (state.OneOffFromSpec), and the request its command and env. A node that
// runs no container of f answers 409: deisctl run then tries another.
func (s *Server) oneOffSpec(ctx context.Context, f string, req RunRequest) (state.ContainerSpec, error) {
	ctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	st := s.cfg.Store
	var rt state.Runtime
	_, err := st.Get(ctx, st.Keys.Runtime(s.cfg.Node), &rt)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return state.ContainerSpec{}, fmt.Errorf("api: read the runtime databag of node %s: %w: check that etcd is reachable", s.cfg.Node, err)
	}
	from := newestSpec(rt, f)
	if from == nil {
		return state.ContainerSpec{}, withStatus(http.StatusConflict,
			fmt.Errorf("node %s runs no container of %s", s.cfg.Node, f))
	}
	if from.Image == "" {
		return state.ContainerSpec{}, withStatus(http.StatusConflict,
			fmt.Errorf("formation %s has no build yet (release v%d has none): deploy it with git push deis main", f, from.Release))
	}
	spec := state.OneOffFromSpec(*from, req.Command)
	if spec.Slug != nil && spec.UID == 0 {
		// A spec written without the formation's uid (see state.AppUID):
		// the formation record has it.
		var form state.Formation
		if _, err := st.Get(ctx, st.Keys.Formation(f), &form); err != nil && !errors.Is(err, state.ErrNotFound) {
			return state.ContainerSpec{}, fmt.Errorf("api: read formation %s for its uid: %w: check that etcd is reachable", f, err)
		}
		spec.UID = form.UID
	}
	if spec.Slug != nil {
		spec.UID = state.AppUID(f, spec.UID)
	}
	if construct, ok := launcher.NeedsShell(req.Command); ok && spec.Exec == state.ExecDirect {
		return state.ContainerSpec{}, withStatus(http.StatusBadRequest,
			fmt.Errorf("the image of %s v%d has no /bin/sh, so the command cannot use shell syntax (%s): give the program and its arguments as plain words", f, spec.Release, construct))
	}
	for k, v := range req.Env {
		spec.Env[k] = v
	}
	return spec, nil
}

// newestSpec is the spec a one-off of formation f starts from: a container
// of f in the runtime databag rt of the highest release (the current
// release's; during a rollout, the newest), not a release phase's (its
// release is not live yet); nil when rt has none.
func newestSpec(rt state.Runtime, f string) *state.ContainerSpec {
	var from *state.ContainerSpec
	for i := range rt.Containers {
		c := &rt.Containers[i]
		if c.Formation == f && c.Type != state.ReleaseProcessType && (from == nil || c.Release > from.Release) {
			from = c
		}
	}
	return from
}

// create creates the one-off container under a free name
// deis-run-<formation>-<n>; n is also the index in DYNO=run.<n>.
func (s *Server) create(ctx context.Context, spec *state.ContainerSpec, cfg *container.Config, hc *container.HostConfig) (string, string, error) {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		n := 10000 + rand.IntN(90000)
		spec.Index = n
		spec.Name = fmt.Sprintf("%s.v%d.run.%d", spec.Formation, spec.Release, n)
		cfg.Labels[runtime.LabelName] = spec.Name
		setEnv(cfg, "DYNO", "run."+strconv.Itoa(n))
		name := fmt.Sprintf("deis-run-%s-%d", spec.Formation, n)
		cctx, cancel := context.WithTimeout(ctx, createTimeout)
		var created container.CreateResponse
		created, err = s.cfg.Docker.ContainerCreate(cctx, cfg, hc, nil, nil, name)
		cancel()
		if err == nil {
			return created.ID, name, nil
		}
		if !cerrdefs.IsConflict(err) {
			break
		}
	}
	if strings.Contains(err.Error(), "No such image") {
		return "", "", fmt.Errorf("api: image %s is not on node %s (images are never pulled): %w", cfg.Image, s.cfg.Node, err)
	}
	return "", "", fmt.Errorf("api: create a one-off container: %w", err)
}

// setEnv sets k=v in a container config's environment.
func setEnv(cfg *container.Config, k, v string) {
	for i, e := range cfg.Env {
		if strings.HasPrefix(e, k+"=") {
			cfg.Env[i] = k + "=" + v
			return
		}
	}
	cfg.Env = append(cfg.Env, k+"="+v)
}
