package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/deis/deis/agent/runtime"
	"github.com/deis/deis/pkg/access"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
)

// Docker is the part of the Docker API the server uses; the Docker client
// (runtime.NewDocker) implements it.
type Docker interface {
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerLogs(ctx context.Context, id string, options container.LogsOptions) (io.ReadCloser, error)
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, name string) (container.CreateResponse, error)
	ContainerAttach(ctx context.Context, id string, options container.AttachOptions) (types.HijackedResponse, error)
	ContainerStart(ctx context.Context, id string, options container.StartOptions) error
	ContainerWait(ctx context.Context, id string, condition container.WaitCondition) (<-chan container.WaitResponse, <-chan error)
	ContainerKill(ctx context.Context, id, signal string) error
	ContainerRemove(ctx context.Context, id string, options container.RemoveOptions) error
}

// OneOffs prepares one-off containers; *runtime.Runtime implements it,
// with the slug cache it shares with the reconcile loop.
type OneOffs interface {
	OneOffConfig(ctx context.Context, spec state.ContainerSpec) (*container.Config, *container.HostConfig, error)
}

// Retired gives the last lines of the containers the runtime removed;
// *runtime.Runtime implements it.
type Retired interface {
	RetiredLines(formation string) []runtime.RetiredLine
}

// Config is what a Server needs.
type Config struct {
	// Node is this node's name; only containers labelled for it are served.
	Node string
	// TLS serves the API: pki.ServerTLS with the node's certificate, which
	// requires a client certificate of the platform CA on every connection.
	// The caller (its Common Name) must be allowed the formation
	// (access.Formation): administrators, coordinators and users granted it.
	TLS *tls.Config
	// Store reads the node's runtime databag (a one-off's spec), formation
	// records (a slug's uid), and the users and grants that decide who may call.
	Store *state.Store
	// Docker reads logs and runs one-off containers.
	Docker Docker
	// Runtime configures one-off containers (the node's *runtime.Runtime).
	Runtime OneOffs
	// Retired, when set, adds the last lines of removed containers to
	// GET /logs (the node's *runtime.Runtime).
	Retired Retired
	// Logger gets the server's logs (default: none).
	Logger *slog.Logger
	// Registerer gets the server's metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Timeouts of single calls.
const (
	dockerTimeout = 30 * time.Second
	createTimeout = 2 * time.Minute
	etcdTimeout   = 10 * time.Second
)

// Server is the agent's HTTP API.
type Server struct {
	cfg Config
	log *slog.Logger
	m   *metrics
	mux *http.ServeMux
	// life ends when Serve's context does; one-off sessions end with it.
	life context.Context

	runs sync.WaitGroup // one-off sessions, which outlive their hijacked requests' tracking
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if err := state.ValidateName("node", cfg.Node); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	switch {
	case cfg.TLS == nil || len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil:
		return nil, errors.New("api: no TLS config with the node's certificate: use pki.ServerTLS (plain HTTP is refused)")
	case cfg.Store == nil:
		return nil, errors.New("api: no etcd store in the config")
	case cfg.Docker == nil:
		return nil, errors.New("api: no Docker client in the config: use runtime.NewDocker")
	case cfg.Runtime == nil:
		return nil, errors.New("api: no runtime in the config")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("node", cfg.Node), m: m, mux: http.NewServeMux(), life: context.Background()}
	s.mux.Handle("GET /logs", s.auth("logs", s.logs))
	s.mux.Handle("POST /run", s.auth("run", s.run))
	return s, nil
}

// Handler serves the API; behind a TLS listener of Config.TLS, every
// endpoint requires a caller allowed the formation.
func (s *Server) Handler() http.Handler { return s.mux }

// Serve serves the API on l until ctx ends, then ends the streams and
// one-off sessions in progress (killing their containers) and returns nil.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	base, cancel := context.WithCancel(ctx)
	defer cancel()
	s.life = base
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		cancel() // ends follows and one-off sessions first, so Shutdown need not wait for them
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(tls.NewListener(l, s.cfg.TLS))
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	cancel()
	<-done
	s.runs.Wait()
	if err != nil {
		return fmt.Errorf("api: serve on %s: %w", l.Addr(), err)
	}
	return nil
}

// URL is the address to advertise for a listener: its host, or host when
// it listens on every address.
func URL(addr net.Addr, host string) string {
	h, p, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "https://" + addr.String()
	}
	if ip := net.ParseIP(h); ip == nil || ip.IsUnspecified() {
		h = host
	}
	return "https://" + net.JoinHostPort(h, p)
}

// statusWriter records the status code for the metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// auth lets through the callers allowed the request's formation
// (access.Formation) and counts the requests. The TLS handshake has already
// refused a missing, foreign, expired or revoked certificate.
func (s *Server) auth(endpoint string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			code := sw.code
			if code == 0 {
				code = http.StatusSwitchingProtocols // hijacked
			}
			s.m.requests.WithLabelValues(endpoint, strconv.Itoa(code)).Inc()
		}()
		f := r.URL.Query().Get("formation")
		if err := state.ValidateName("formation", f); err != nil {
			httpError(sw, http.StatusBadRequest, "api: %v", err)
			return
		}
		id := access.Parse(s.cfg.Store.Keys.Prefix, pki.PeerIdentity(r))
		ctx, cancel := context.WithTimeout(r.Context(), etcdTimeout)
		err := access.Formation(ctx, s.cfg.Store, id, f)
		cancel()
		switch {
		case access.IsDenied(err):
			s.log.Info("refused", "endpoint", endpoint, "caller", id.CN, "formation", f)
			httpError(sw, http.StatusForbidden, "%v", err)
			return
		case err != nil:
			httpError(sw, http.StatusServiceUnavailable, "api: %v: check that etcd is reachable from node %s", err, s.cfg.Node)
			return
		}
		h(sw, r)
	})
}

// httpError answers with a plain-text error.
func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	http.Error(w, strings.TrimSpace(fmt.Sprintf(format, args...)), code)
}
