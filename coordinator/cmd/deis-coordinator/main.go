package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/deis/deis/coordinator/access"
	"github.com/deis/deis/coordinator/acme"
	"github.com/deis/deis/coordinator/builder"
	"github.com/deis/deis/coordinator/gitserver"
	"github.com/deis/deis/coordinator/scheduler"
	"github.com/deis/deis/coordinator/slugstore"
	"github.com/deis/deis/pkg/etcdconn"
	"github.com/deis/deis/pkg/logging"
	"github.com/deis/deis/pkg/netguard"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/slugtar"
	"github.com/deis/deis/pkg/state"
	"github.com/docker/docker/client"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

var version = "dev"

func main() {
	app := &cli.App{
		Name:    "deis-coordinator",
		Usage:   "schedule containers, build slugs and serve them for the deis platform",
		Version: version,
		Flags: append(etcdconn.Flags(),
			logging.Flag(),
			&cli.StringFlag{Name: "data-dir", EnvVars: []string{"DEIS_DATA_DIR"}, Value: "/var/lib/deis", Usage: "repositories, slugs, build logs, SSH host key and embedded etcd"},
			&cli.StringFlag{Name: "etcd-listen-client", EnvVars: []string{"DEIS_ETCD_LISTEN_CLIENT"}, Value: etcdconn.DefaultEndpoint, Usage: "embedded etcd: client URL (loopback)"},
			&cli.StringFlag{Name: "etcd-listen-peer", EnvVars: []string{"DEIS_ETCD_LISTEN_PEER"}, Value: "https://127.0.0.1:2380", Usage: "embedded etcd: peer URL (loopback)"},
			&cli.StringFlag{Name: "ca-cert", EnvVars: []string{"DEIS_CA_CERT"}, Usage: "the platform CA's certificate (an operator's CA, or the first coordinator's DATA_DIR/pki/ca.crt); default: DATA_DIR/pki, created there by a coordinator with an embedded etcd"},
			&cli.StringFlag{Name: "ca-key", EnvVars: []string{"DEIS_CA_KEY"}, Usage: "the platform CA's key (0600), with --ca-cert"},
			&cli.StringFlag{Name: "admin-credentials", EnvVars: []string{"DEIS_ADMIN_CREDENTIALS"}, Value: etcdconn.UserCredentialsDir(), Usage: "where the administrator's credential is written (deisctl reads it without flags) when there is none yet or this coordinator creates the CA (embedded etcd, or when given)"},
			&cli.StringFlag{Name: "join-addr", EnvVars: []string{"DEIS_JOIN_ADDR"}, Value: ":8091", Usage: "where nodes join (HTTPS; deis-agent --join)"},
			&cli.StringFlag{Name: "join-url", EnvVars: []string{"DEIS_JOIN_URL"}, Value: "https://127.0.0.1:8091", Usage: "the join URL nodes dial, printed by deisctl nodes:add (its host goes into the join certificate)"},
			&cli.StringFlag{Name: "ssh-addr", EnvVars: []string{"DEIS_SSH_ADDR"}, Value: ":2222", Usage: "SSH git endpoint listen address"},
			&cli.DurationFlag{Name: "ssh-auth-timeout", EnvVars: []string{"DEIS_SSH_AUTH_TIMEOUT"}, Value: gitserver.DefaultAuthTimeout, Usage: "SSH connections not authenticated within this are closed"},
			&cli.IntFlag{Name: "ssh-max-conns", EnvVars: []string{"DEIS_SSH_MAX_CONNS"}, Value: gitserver.DefaultMaxConns, Usage: "SSH connections held at once; more are closed at once"},
			&cli.IntFlag{Name: "ssh-max-conns-per-ip", EnvVars: []string{"DEIS_SSH_MAX_CONNS_PER_IP"}, Value: gitserver.DefaultMaxConnsPerIP, Usage: "SSH connections held at once per source address"},
			&cli.Int64Flag{Name: "max-push-bytes", EnvVars: []string{"DEIS_MAX_PUSH_BYTES"}, Value: gitserver.DefaultMaxPushBytes, Usage: "git push size limit (refused while it is received)"},
			&cli.StringFlag{Name: "ssh-host", EnvVars: []string{"DEIS_SSH_HOST"}, Value: "localhost", Usage: "host name users put in their git remote"},
			&cli.StringFlag{Name: "http-addr", EnvVars: []string{"DEIS_HTTP_ADDR"}, Value: ":8090", Usage: "slug server and /metrics listen address"},
			&cli.StringFlag{Name: "slug-url", EnvVars: []string{"DEIS_SLUG_URL"}, Value: "https://127.0.0.1:8090", Usage: "base URL agents download slugs from (https: the slug server requires client certificates of the platform CA)"},
			&cli.StringFlag{Name: "base-domain", EnvVars: []string{"DEIS_BASE_DOMAIN"}, Value: "localhost", Usage: "apps answer on NAME.BASE-DOMAIN"},
			&cli.IntFlag{Name: "app-port", EnvVars: []string{"DEIS_APP_PORT"}, Value: 8080, Usage: "port the proxies serve apps on (shown in app URLs)"},
			&cli.IntFlag{Name: "app-https-port", EnvVars: []string{"DEIS_APP_HTTPS_PORT"}, Value: 8443, Usage: "port the proxies serve apps on over HTTPS (the agents' --https-listen; shown in app URLs; 0: none shown)"},
			&cli.StringFlag{Name: "stack-image", EnvVars: []string{"DEIS_STACK_IMAGE"}, Value: "deis/stack:bookworm", Usage: "image that builds and runs slugs"},
			&cli.DurationFlag{Name: "build-timeout", EnvVars: []string{"DEIS_BUILD_TIMEOUT"}, Value: 15 * time.Minute, Usage: "build time limit"},
			&cli.StringFlag{Name: "network", EnvVars: []string{"DEIS_NETWORK"}, Value: netguard.Builds, Usage: "the guarded Docker network builds join: they reach the outside world but not apps, this host's ports or each other (empty: the engine's default bridge, unguarded)"},
			&cli.StringSliceFlag{Name: "deny-cidr", EnvVars: []string{"DEIS_DENY_CIDR"}, Usage: "IPv4 addresses or prefixes builds may not reach, such as the nodes' network and 169.254.169.254"},
			&cli.Int64Flag{Name: "max-slug-bytes", EnvVars: []string{"DEIS_MAX_SLUG_BYTES"}, Value: 1 << 30, Usage: "slug size limit (a slug may expand to 8 times it; give the agents the same)"},
			&cli.IntFlag{Name: "max-slug-entries", EnvVars: []string{"DEIS_MAX_SLUG_ENTRIES"}, Value: slugtar.DefaultMaxEntries, Usage: "most files, directories and links in a slug (give the agents the same)"},
			&cli.DurationFlag{Name: "boot-timeout", EnvVars: []string{"DEIS_BOOT_TIMEOUT"}, Value: 60 * time.Second, Usage: "how long a new release's web containers have to pass their health checks before it is marked failed"},
			&cli.DurationFlag{Name: "rollback-window", EnvVars: []string{"DEIS_ROLLBACK_WINDOW"}, Value: scheduler.DefaultRollbackPolicy.Window, Usage: "how long after a release went live it is rolled back automatically if it crash-loops, fails its health checks or answers mostly 5xx (0: never; deisctl autorollback off turns it off per formation)"},
			&cli.IntFlag{Name: "rollback-restarts", EnvVars: []string{"DEIS_ROLLBACK_RESTARTS"}, Value: scheduler.DefaultRollbackPolicy.Restarts, Usage: "a release crash-loops once one of its containers was restarted this often"},
			&cli.Float64Flag{Name: "rollback-unhealthy-share", EnvVars: []string{"DEIS_ROLLBACK_UNHEALTHY_SHARE"}, Value: scheduler.DefaultRollbackPolicy.UnhealthyShare, Usage: "a release is rolled back when more than this share of its web containers fail their health checks"},
			&cli.Float64Flag{Name: "rollback-error-share", EnvVars: []string{"DEIS_ROLLBACK_ERROR_SHARE"}, Value: scheduler.DefaultRollbackPolicy.ErrorShare, Usage: "a release is rolled back when at least this share of its answers at the proxies in the last minute are 5xx"},
			&cli.Int64Flag{Name: "rollback-min-requests", EnvVars: []string{"DEIS_ROLLBACK_MIN_REQUESTS"}, Value: scheduler.DefaultRollbackPolicy.MinRequests, Usage: "the 5xx share counts only over at least this many requests in the last minute"},
			&cli.BoolFlag{Name: "push-wait", EnvVars: []string{"DEIS_PUSH_WAIT"}, Value: true, Usage: "a git push waits for its release to go live, prints the rollout, and is refused with the reason (the branch not updated) when the release fails; a formation turns it off with DEPLOY_WAIT=false"},
			&cli.Int64Flag{Name: "build-disk", EnvVars: []string{"DEIS_BUILD_DISK"}, Value: builder.DefaultBuildDisk, Usage: "bytes of scratch space (a tmpfs: source, cache, outputs) per build; a build that fills it fails"},
			&cli.Int64Flag{Name: "build-memory", EnvVars: []string{"DEIS_BUILD_MEMORY"}, Value: builder.DefaultBuildMemory, Usage: "memory limit of a build (and its release command), in bytes, on top of --build-disk"},
			&cli.Float64Flag{Name: "build-cpus", EnvVars: []string{"DEIS_BUILD_CPUS"}, Value: builder.DefaultBuildCPUs, Usage: "CPUs a build may use"},
			&cli.Int64Flag{Name: "build-pids", EnvVars: []string{"DEIS_BUILD_PIDS"}, Value: builder.DefaultBuildPids, Usage: "processes and threads a build may run"},
			&cli.StringSliceFlag{Name: "buildpack-dir", EnvVars: []string{"DEIS_BUILDPACK_DIRS"}, Usage: "directory under which BUILDPACK_URL may name a local buildpack (repeatable; none by default)"},
			&cli.IntFlag{Name: "max-builds", EnvVars: []string{"DEIS_MAX_BUILDS"}, Value: 2, Usage: "builds of different formations run in parallel up to this many"},
			&cli.StringFlag{Name: "go-root", EnvVars: []string{"DEIS_GO_ROOT"}, Value: "auto", Usage: "Go installation mounted read-only into builds for the go buildpack (\"auto\": this host's go env GOROOT; \"\": none)"},
			&cli.IntFlag{Name: "keep-releases", EnvVars: []string{"DEIS_KEEP_RELEASES"}, Value: builder.DefaultKeepReleases, Usage: "garbage collection keeps the slugs and images of each formation's newest N releases"},
			&cli.DurationFlag{Name: "gc-interval", EnvVars: []string{"DEIS_GC_INTERVAL"}, Value: time.Hour, Usage: "how often unreferenced slugs and app images are removed (0: never)"},
			&cli.StringFlag{Name: "acme-directory", EnvVars: []string{"DEIS_ACME_DIRECTORY"}, Usage: "ACME directory URL for automatic certificates (deisctl certs:auto), such as https://acme-v02.api.letsencrypt.org/directory (empty: off)"},
			&cli.StringFlag{Name: "acme-email", EnvVars: []string{"DEIS_ACME_EMAIL"}, Usage: "contact address of the ACME account"},
			&cli.StringFlag{Name: "acme-ca", EnvVars: []string{"DEIS_ACME_CA"}, Usage: "PEM file of CA certificates to trust for the ACME directory, instead of the system's (a test or private ACME server)"},
			&cli.DurationFlag{Name: "replica-timeout", EnvVars: []string{"DEIS_REPLICA_TIMEOUT"}, Value: builder.DefaultReplicaTimeout, Usage: "with other coordinators running, a push waits this long for a second one to store its slug, and fails (nothing released) when none does"},
		),
		Action: serve,
		Commands: []*cli.Command{bootstrapCommand(), {
			Name:   "hook",
			Usage:  "git pre-receive hook: build the pushed commit (run by git, not by hand)",
			Hidden: true,
			Flags:  []cli.Flag{&cli.StringFlag{Name: "socket", Required: true}},
			Action: func(c *cli.Context) error {
				if err := gitserver.RunHook(c.Context, c.String("socket"), os.Stdin, os.Stdout); err != nil {
					return cli.Exit(err.Error(), 1)
				}
				return nil
			},
		}},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "deis-coordinator:", err)
		os.Exit(1)
	}
}

func serve(c *cli.Context) error {
	rollback := scheduler.RollbackPolicy{Window: c.Duration("rollback-window"), Restarts: c.Int("rollback-restarts"),
		UnhealthyShare: c.Float64("rollback-unhealthy-share"), ErrorShare: c.Float64("rollback-error-share"), MinRequests: c.Int64("rollback-min-requests")}
	if err := rollback.Validate(); err != nil {
		return err
	}
	log := logging.New(c, "coordinator")
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	dataDir, err := filepath.Abs(c.String("data-dir"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}

	ec, err := etcdconn.FromContext(c).Resolve()
	if err != nil {
		return err
	}
	boot, err := bootstrap(ctx, c, log, dataDir, ec)
	if err != nil {
		return err
	}
	defer boot.Close()
	ec, cli, root := boot.ec, boot.cli, boot.root
	store := state.NewStore(cli, ec.Prefix)
	// The slug server and build logs serve over TLS with client
	// certificates of the platform CA; the replicator presents the
	// coordinator's.
	revoked := pki.NewRevoked()
	go access.WatchRevoked(ctx, cli, ec.Prefix, revoked, log.With("part", "revoked"))
	certs, err := newSlugCerts(boot.ca, revoked, c.String("slug-url"), ec.Prefix)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	slugs, err := slugstore.New(filepath.Join(dataDir, "slugs"))
	if err != nil {
		return err
	}
	// Slugs are kept on every coordinator: this one registers (lease-bound,
	// with its slug server's URL) and fetches what the others hold.
	member, err := slugstore.MemberID(dataDir)
	if err != nil {
		return err
	}
	replicas, err := slugstore.NewReplicator(slugstore.ReplicatorConfig{
		Slugs: slugs, State: store, Watcher: cli, Member: member, TLS: certs.client,
		MaxBytes: 4 * c.Int64("max-slug-bytes"), Logger: log.With("part", "replicator", "member", member),
	})
	if err != nil {
		return err
	}
	docker, err := builder.NewDocker(ctx)
	if err != nil {
		return err
	}
	if nw := c.String("network"); nw != "" {
		dc, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return fmt.Errorf("docker client: %w", err)
		}
		defer dc.Close()
		if err := netguard.Keep(ctx, dc, nw, netguard.Options{Deny: c.StringSlice("deny-cidr")}, time.Minute, log); err != nil {
			return fmt.Errorf("guard the build network: %w", err)
		}
	}
	appURL := func(f string) string { return appURL(f, c.String("base-domain"), c.Int("app-port")) }
	goRoot := c.String("go-root")
	if goRoot == "auto" {
		goRoot = builder.FindGoRoot(ctx)
	}
	if goRoot == "" {
		log.Warn("no Go toolchain for the go buildpack: Go apps will not build (set --go-root)")
	}
	b, err := builder.New(builder.Config{
		DataDir: dataDir, Store: store, Slugs: slugs, Docker: docker, StackImage: c.String("stack-image"),
		Timeout: c.Duration("build-timeout"), MaxSlugBytes: c.Int64("max-slug-bytes"), MaxSlugEntries: c.Int("max-slug-entries"), MaxParallel: c.Int("max-builds"),
		GoRoot: goRoot, KeepReleases: c.Int("keep-releases"), Network: c.String("network"),
		BuildDisk: c.Int64("build-disk"), BuildMemory: c.Int64("build-memory"), BuildCPUs: c.Float64("build-cpus"),
		BuildPids: c.Int64("build-pids"), BuildpackDirs: c.StringSlice("buildpack-dir"),
		SlugServer: c.String("slug-url"), AppURL: appURL, Logger: log.With("part", "builder"), Registerer: reg,
		Watcher: cli, NoPushWait: !c.Bool("push-wait"), BootTimeout: c.Duration("boot-timeout"),
		Replicas: replicas, ReplicaTimeout: c.Duration("replica-timeout"),
	})
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	sock := filepath.Join(dataDir, "builder.sock")
	git, err := gitserver.New(gitserver.Config{
		Addr: c.String("ssh-addr"), DataDir: dataDir, Store: store,
		HookCommand: []string{self, "hook", "--socket", sock}, Claimer: b, Logger: log.With("part", "git"),
		AuthTimeout: c.Duration("ssh-auth-timeout"), MaxConns: c.Int("ssh-max-conns"), MaxConnsPerIP: c.Int("ssh-max-conns-per-ip"),
		// a push's session covers its upload, a wait for the build ahead of it and its own build
		MaxPushBytes: c.Int64("max-push-bytes"), SessionTimeout: 2*c.Duration("build-timeout") + 30*time.Minute, Registerer: reg,
	})
	if err != nil {
		return err
	}

	errc := make(chan error, 10)
	running := 0
	start := func(name string, fn func() error) {
		running++
		go func() {
			err := fn()
			if err != nil && ctx.Err() == nil {
				err = fmt.Errorf("%s: %w", name, err)
			} else {
				err = nil
			}
			errc <- err
		}()
	}

	// Internal build API for the git hook, on a unix socket only root reaches.
	bl, err := builder.ListenUnix(sock)
	if err != nil {
		return err
	}
	buildSrv := &http.Server{Handler: b.Handler(), ReadHeaderTimeout: 10 * time.Second}
	start("build api", func() error { return serveUntil(ctx, buildSrv, bl) })

	if iv := c.Duration("gc-interval"); iv > 0 {
		start("gc", func() error { return b.RunGC(ctx, iv) })
	}
	// What destroyed formations left here: repositories, build logs and
	// caches, keys written after the destroy, then their slugs and images.
	start("purge", func() error {
		return b.RunPurge(ctx, cli, time.Minute, gitserver.ReposFormationDir(dataDir))
	})

	// One port: TLS with client certificates for slugs (nodes and
	// coordinators) and build logs (callers allowed the formation); plain
	// HTTP for /metrics and /healthz only.
	open := http.NewServeMux()
	open.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	open.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux := http.NewServeMux()
	mux.Handle("/slugs/", slugstore.RequirePlatform(ec.Prefix, slugs.Handler()))
	mux.Handle("GET /builds/{formation}/{file}", buildLogHandler(dataDir, ec.Prefix, store))
	mux.Handle("/metrics", open)
	mux.Handle("/healthz", open)
	hl, err := net.Listen("tcp", c.String("http-addr"))
	if err != nil {
		return fmt.Errorf("slug server: %w", err)
	}
	tlsL, plainL := slugstore.SplitTLS(hl)
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	plainSrv := &http.Server{Handler: plainHandler(open), ReadHeaderTimeout: 10 * time.Second}
	start("slug server", func() error { return serveUntil(ctx, httpSrv, tls.NewListener(tlsL, certs.server)) })
	start("metrics", func() error { return serveUntil(ctx, plainSrv, plainL) })
	start("git server", func() error { return git.ListenAndServe(ctx) })
	host, _ := os.Hostname()
	start("registration", func() error {
		return slugstore.Register(ctx, cli, store, state.CoordinatorMember{ID: member, SlugURL: c.String("slug-url"), Host: host, Started: time.Now().UTC()}, 10, log)
	})
	start("replicator", func() error { return replicas.Run(ctx) })
	if err := boot.serveJoins(ctx, c, start); err != nil {
		return err
	}
	start("access", func() error {
		return (&access.Syncer{Root: root, Prefix: ec.Prefix, Log: log.With("part", "access"), Lock: &boot.lock}).Run(ctx)
	})

	info := state.CoordinatorInfo{SSHHost: c.String("ssh-host"), SSHPort: portOf(c.String("ssh-addr")),
		SlugURL: c.String("slug-url"), BaseDomain: c.String("base-domain"), HTTPPort: c.Int("app-port"),
		HTTPSPort: c.Int("app-https-port")}
	acmeMgr, err := newACME(c, cli, store, info.BaseDomain, log, reg)
	if err != nil {
		return err
	}
	start("scheduler", func() error {
		return lead(ctx, cli, store, info, reg, log, acmeMgr, scheduler.Config{
			Etcd: cli, Prefix: ec.Prefix, SlugURL: info.SlugURL, BaseDomain: info.BaseDomain, BootTimeout: c.Duration("boot-timeout"),
			Rollback: rollback, Logger: log.With("part", "scheduler"), Registerer: reg,
		})
	})
	log.Info("coordinator started", "ssh", c.String("ssh-addr"), "http", c.String("http-addr"), "data", dataDir)

	var first error
	for i := 0; i < running; i++ {
		if err := <-errc; err != nil && first == nil {
			first = err
			log.Error("component failed, stopping", "error", err)
			stop()
		}
	}
	log.Info("coordinator stopped")
	return first
}

// lead campaigns for leadership and runs the scheduler while leading.
// Every scheduler write is fenced by the election key this term won
// (scheduler.LeaderFence): once it is gone, nothing the scheduler still
// has in flight lands, and the scheduler stops with ErrDeposed; lead then
// campaigns again.
func lead(ctx context.Context, cli *clientv3.Client, store *state.Store, info state.CoordinatorInfo, reg prometheus.Registerer, log *slog.Logger, acmeMgr *acme.Manager, cfg scheduler.Config) error {
	var term atomic.Pointer[[]clientv3.Cmp]
	cfg.Fence = func() []clientv3.Cmp {
		if f := term.Load(); f != nil {
			return *f
		}
		// Not leading: a comparison that never holds.
		return scheduler.LeaderFence(store.Keys.Election()+"/none", -1)
	}
	ctl, err := scheduler.New(cfg)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(10), concurrency.WithContext(ctx))
		if err != nil {
			return fmt.Errorf("election session: %w", err)
		}
		el := concurrency.NewElection(sess, store.Keys.Election())
		log.Info("campaigning for leadership")
		if err := el.Campaign(ctx, fmt.Sprintf("%s/%d", host, os.Getpid())); err != nil {
			sess.Close()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("campaign: %w", err)
		}
		fence := scheduler.LeaderFence(el.Key(), el.Rev())
		term.Store(&fence)
		log.Info("leading: scheduler running", "election_key", el.Key(), "election_rev", el.Rev())
		if err := store.Put(ctx, store.Keys.Coordinator(), info); err != nil {
			log.Warn("advertise failed", "error", err)
		}
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-sess.Done():
				log.Warn("leadership lost")
			case <-lctx.Done():
			}
			cancel()
		}()
		acmeDone := make(chan struct{})
		go func() {
			defer close(acmeDone)
			if acmeMgr != nil {
				_ = acmeMgr.Run(lctx)
			}
		}()
		err = ctl.Run(lctx)
		cancel()
		<-acmeDone
		term.Store(nil)
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = el.Resign(rctx)
		rcancel()
		sess.Close()
		if errors.Is(err, scheduler.ErrDeposed) {
			log.Warn("leadership lost: the election key changed", "error", err)
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func serveUntil(ctx context.Context, srv *http.Server, l net.Listener) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	var n int
	fmt.Sscanf(p, "%d", &n)
	return n
}

func appURL(f, base string, port int) string {
	if port == 80 || port == 0 {
		return fmt.Sprintf("http://%s.%s/", f, base)
	}
	return fmt.Sprintf("http://%s.%s:%d/", f, base, port)
}

// newACME returns the ACME manager the leader runs, or nil without
// --acme-directory.
func newACME(c *cli.Context, cli *clientv3.Client, store *state.Store, base string, log *slog.Logger, reg prometheus.Registerer) (*acme.Manager, error) {
	// The metrics exist without a manager too: the alert rules name them.
	metrics, err := acme.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	dir := c.String("acme-directory")
	if dir == "" {
		return nil, nil
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if ca := c.String("acme-ca"); ca != "" {
		b, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--acme-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--acme-ca %s holds no PEM certificate", ca)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	return acme.New(acme.Config{Store: store, Watcher: cli, Directory: dir, Email: c.String("acme-email"), HTTPClient: hc,
		BaseDomain: base, Logger: log.With("part", "acme"), Metrics: metrics})
}
