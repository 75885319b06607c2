package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/deis/deis/agent/api"
	"github.com/deis/deis/agent/node"
	"github.com/deis/deis/agent/proxy"
	"github.com/deis/deis/agent/runtime"
	"github.com/deis/deis/pkg/access"
	"github.com/deis/deis/pkg/etcdconn"
	"github.com/deis/deis/pkg/logging"
	"github.com/deis/deis/pkg/netguard"
	"github.com/deis/deis/pkg/slugtar"
	"github.com/deis/deis/pkg/state"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
)

var version = "dev"

func main() {
	host, _ := os.Hostname()
	app := &cli.App{
		Name:    "deis-agent",
		Usage:   "run a node's containers and proxy for the deis platform",
		Version: version,
		Flags: append(etcdconn.Flags(),
			logging.Flag(),
			&cli.StringFlag{Name: "name", EnvVars: []string{"DEIS_NODE_NAME"}, Value: strings.ToLower(host), Usage: "this node's name"},
			&cli.StringFlag{Name: "addr", EnvVars: []string{"DEIS_NODE_ADDR"}, Value: "127.0.0.1", Usage: "address other nodes reach this node's containers on"},
			&cli.StringFlag{Name: "labels", EnvVars: []string{"DEIS_NODE_LABELS"}, Value: "role=runtime,role=proxy", Usage: "node labels as k=v pairs, comma-separated; a key may repeat"},
			&cli.StringFlag{Name: "state-dir", EnvVars: []string{"DEIS_STATE_DIR"}, Value: "/var/lib/deis-agent", Usage: "where slugs and the proxy's nginx files live"},
			&cli.StringSliceFlag{Name: "http-listen", EnvVars: []string{"DEIS_HTTP_LISTEN"}, Value: cli.NewStringSlice("8080"), Usage: "nginx listen specs for app traffic (proxy role)"},
			&cli.StringSliceFlag{Name: "https-listen", EnvVars: []string{"DEIS_HTTPS_LISTEN"}, Value: cli.NewStringSlice("8443"), Usage: "nginx listen specs for HTTPS app traffic, certificates chosen by SNI (proxy role; empty: no HTTPS)"},
			&cli.IntFlag{Name: "capacity", EnvVars: []string{"DEIS_CAPACITY"}, Usage: "most containers this node accepts (0: no limit)"},
			&cli.Int64Flag{Name: "memory", EnvVars: []string{"DEIS_MEMORY_BYTES"}, Usage: "memory in bytes offered to containers with a memory limit (0: no limit)"},
			&cli.DurationFlag{Name: "heartbeat-ttl", EnvVars: []string{"DEIS_HEARTBEAT_TTL"}, Value: 10 * time.Second, Usage: "lease TTL after which a silent node is lost"},
			&cli.DurationFlag{Name: "stop-grace", EnvVars: []string{"DEIS_STOP_GRACE"}, Value: 30 * time.Second, Usage: "time between SIGTERM and SIGKILL when stopping a container"},
			&cli.DurationFlag{Name: "drain-delay", EnvVars: []string{"DEIS_DRAIN_DELAY"}, Value: 2 * time.Second, Usage: "time a retired container keeps running after the proxies stopped sending it requests, before its SIGTERM, so requests in flight finish"},
			&cli.IntFlag{Name: "spare-sandboxes", EnvVars: []string{"DEIS_SPARE_SANDBOXES"}, Value: 2, Usage: "network sandboxes kept started for the next containers (their address, DNS and published port ready), so a deploy's containers start about three times as fast (0: none)"},
			&cli.StringFlag{Name: "sandbox-image", EnvVars: []string{"DEIS_SANDBOX_IMAGE"}, Value: runtime.DefaultSandboxImage, Usage: "image whose sleep holds a spare network sandbox (the stack image)"},
			&cli.StringFlag{Name: "port-range", EnvVars: []string{"DEIS_PORT_RANGE"}, Value: runtime.DefaultPortRange.String(), Usage: "host ports app containers are published on (MIN-MAX); each container keeps its port when Docker restarts it"},
			&cli.StringFlag{Name: "metrics-addr", EnvVars: []string{"DEIS_METRICS_ADDR"}, Value: "127.0.0.1:9102", Usage: "where /metrics is served (empty: off)"},
			&cli.StringFlag{Name: "nginx", EnvVars: []string{"DEIS_NGINX"}, Value: "nginx", Usage: "nginx binary"},
			&cli.Int64Flag{Name: "default-memory", EnvVars: []string{"DEIS_DEFAULT_MEMORY_BYTES"}, Value: runtime.DefaultMemoryBytes, Usage: "memory limit in bytes of app containers whose process type has none (deisctl limits:set overrides it; 0: none)"},
			&cli.Int64Flag{Name: "container-pids", EnvVars: []string{"DEIS_CONTAINER_PIDS"}, Value: runtime.DefaultPidsLimit, Usage: "most processes and threads in each app container (0: no limit)"},
			&cli.Int64Flag{Name: "max-slug-bytes", EnvVars: []string{"DEIS_MAX_SLUG_BYTES"}, Value: slugtar.DefaultMaxSlugBytes, Usage: "the coordinator's slug size limit: slugs that expand past 8 times it are refused"},
			&cli.StringFlag{Name: "network", EnvVars: []string{"DEIS_NETWORK"}, Value: netguard.Apps, Usage: "the guarded Docker network app containers join: they reach the outside world but not each other, this host's ports or builds (empty: the engine's default bridge, unguarded)"},
			&cli.StringSliceFlag{Name: "deny-cidr", EnvVars: []string{"DEIS_DENY_CIDR"}, Usage: "IPv4 addresses or prefixes app containers may not reach, such as the other nodes' network and 169.254.169.254"},
			&cli.IntFlag{Name: "max-slug-entries", EnvVars: []string{"DEIS_MAX_SLUG_ENTRIES"}, Value: slugtar.DefaultMaxEntries, Usage: "most files, directories and links in a slug"},
			&cli.StringFlag{Name: "nginx-user", EnvVars: []string{"DEIS_NGINX_USER"}, Value: "www-data", Usage: "unprivileged user the proxy's nginx workers run as when the agent runs as root (www-data: nobody where there is no www-data)"},
			&cli.StringFlag{Name: "max-body", EnvVars: []string{"DEIS_MAX_BODY"}, Value: "10M", Usage: "request body limit (K, M, G; at most 1G) of formations that set none with deisctl limits:set --body; larger bodies get 413"},
			&cli.StringFlag{Name: "join", EnvVars: []string{"DEIS_JOIN_TOKEN"}, Usage: "one-time join token from deisctl nodes:add: traded for this node's credentials (<state-dir>/credentials) on the first start; ignored once joined"},
			&cli.StringFlag{Name: "coordinator", EnvVars: []string{"DEIS_COORDINATOR_URL"}, Usage: "the coordinator's join URL (https://HOST:PORT), with --join"},
			&cli.StringFlag{Name: "ca-fingerprint", EnvVars: []string{"DEIS_CA_FINGERPRINT"}, Usage: "the platform CA's fingerprint (sha256:...), with --join: the coordinator is trusted only if it presents that CA"},
			&cli.StringFlag{Name: "api-addr", EnvVars: []string{"DEIS_API_ADDR"}, Value: "127.0.0.1:9103", Usage: "where the agent API (deisctl logs and run) listens, advertised to deisctl; no host: the node address; port 0: any free port (empty: off)"},
		),
		Action: run,
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "deis-agent:", err)
		os.Exit(1)
	}
}

// orNone turns a flag's 0 ("none") into the runtime's -1 (0 there means
// the default).
func orNone(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// parseLabels reads "k=v,k=v"; a repeated key collects its values.
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("invalid label %q: use key=value", p)
		}
		if out[k] != "" {
			out[k] += "," + v
		} else {
			out[k] = v
		}
	}
	return out, nil
}

func run(c *cli.Context) error {
	log := logging.New(c, "agent")
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()

	name := c.String("name")
	if err := state.ValidateName("node", name); err != nil {
		return err
	}
	for _, f := range []string{"default-memory", "container-pids", "max-slug-bytes", "max-slug-entries"} {
		if c.Int64(f) < 0 || c.Int(f) < 0 {
			return fmt.Errorf("--%s is negative: give a positive number (0: the default or none, see --help)", f)
		}
	}
	if err := os.MkdirAll(c.String("state-dir"), 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	ec, labelSpec, err := credentials(ctx, c, name, log)
	if err != nil {
		return err
	}
	labels, err := parseLabels(labelSpec)
	if err != nil {
		return err
	}
	cli, err := ec.Dial(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	store := state.NewStore(cli, ec.Prefix)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	listen := c.StringSlice("http-listen")
	httpPort, httpsPort := listenPort(listen), listenPort(nonEmpty(c.StringSlice("https-listen")))
	me := &state.Node{Name: name, Addr: c.String("addr"), Labels: labels, Capacity: c.Int("capacity"),
		MemoryBytes: c.Int64("memory"), Started: time.Now().UTC(), Version: version}
	isProxy := state.LabelHas(labels, "role", "proxy")
	if isProxy {
		me.HTTPPort, me.HTTPSPort = httpPort, httpsPort
	}

	// The node's certificate (from its join: client and server usage)
	// fetches slugs and serves the agent API.
	creds, err := access.LoadCreds(ec.CAFile, ec.CertFile, ec.KeyFile)
	if err != nil {
		return fmt.Errorf("the node's certificate: %w", err)
	}
	docker, err := runtime.NewDocker(ctx)
	if err != nil {
		return err
	}
	if nw := c.String("network"); nw != "" {
		// Apps may still call other apps through this node's proxy, like
		// any client on the internet.
		o := netguard.Options{Deny: c.StringSlice("deny-cidr")}
		if isProxy && httpPort > 0 {
			o.AllowTCP = []int{httpPort}
		}
		if err := netguard.Keep(ctx, docker, nw, o, time.Minute, log); err != nil {
			return fmt.Errorf("guard the app network: %w", err)
		}
	}
	portRange, err := runtime.ParsePortRange(c.String("port-range"))
	if err != nil {
		return fmt.Errorf("--port-range: %w", err)
	}
	rt, err := runtime.New(runtime.Config{
		Node: name, Addr: c.String("addr"), StateDir: c.String("state-dir"),
		Store: store, Watcher: cli, Docker: docker, SlugTLS: creds.ClientTLS(),
		StopGrace: c.Duration("stop-grace"), DrainDelay: c.Duration("drain-delay"), Logger: log.With("role", "runtime"), Registerer: reg,
		DefaultMemory: orNone(c.Int64("default-memory")), PidsLimit: orNone(c.Int64("container-pids")),
		MaxSlugBytes: c.Int64("max-slug-bytes"), MaxSlugEntries: c.Int("max-slug-entries"),
		Network: c.String("network"), PortRange: portRange,
		SpareSandboxes: c.Int("spare-sandboxes"), SandboxImage: c.String("sandbox-image"),
	})
	if err != nil {
		return err
	}
	// The API listens before the node registers, so that the advertised
	// URL has the real port (--api-addr with port 0).
	var apiSrv *api.Server
	var apiListener net.Listener
	if addr := c.String("api-addr"); addr != "" {
		if host, port, err := net.SplitHostPort(addr); err == nil && host == "" {
			addr = net.JoinHostPort(me.Addr, port)
		}
		if apiListener, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("agent API: %w: pick another --api-addr", err)
		}
		defer apiListener.Close()
		me.APIURL = api.URL(apiListener.Addr(), me.Addr)
		apiSrv, err = api.New(api.Config{Node: name, TLS: creds.ServerTLS(), Store: store, Docker: docker, Runtime: rt, Retired: rt,
			Logger: log.With("role", "api"), Registerer: reg})
		if err != nil {
			return err
		}
	}

	errc := make(chan error, 5)
	go func() { errc <- node.Heartbeat(ctx, cli, store, me, c.Duration("heartbeat-ttl"), log) }()
	go func() { errc <- rt.Run(ctx) }()
	n := 2
	if apiSrv != nil {
		go func() { errc <- apiSrv.Serve(ctx, apiListener) }()
		n++
	}
	if isProxy {
		maxBody, err := state.ParseSize(c.String("max-body"))
		if err == nil {
			err = state.ValidateMaxBody(maxBody)
		}
		if err != nil {
			return fmt.Errorf("--max-body: %w", err)
		}
		px, err := proxy.New(proxy.Config{
			Node: name, StateDir: c.String("state-dir"), Listen: listen, HTTPSListen: nonEmpty(c.StringSlice("https-listen")), NginxBinary: c.String("nginx"),
			NginxUser: c.String("nginx-user"), MaxBodyBytes: maxBody,
			Store: store, Watcher: cli, Logger: log.With("role", "proxy"), Registerer: reg,
		})
		if err != nil {
			return err
		}
		go func() { errc <- px.Run(ctx) }()
		n++
	}
	if addr := c.String("metrics-addr"); addr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Warn("metrics server failed", "error", err)
			}
		}()
		go func() { <-ctx.Done(); srv.Close() }()
	}
	log.Info("agent started", "node", name, "addr", me.Addr, "labels", c.String("labels"), "proxy", isProxy, "api", me.APIURL)
	var first error
	for i := 0; i < n; i++ {
		if err := <-errc; err != nil && first == nil {
			first = err
			stop()
		}
	}
	log.Info("agent stopped; containers and nginx keep serving", "node", name)
	return first
}

// credentials returns the etcd settings the agent dials with: those given
// (--credentials, --etcd-cert, --etcd-user), or else its own credentials
// directory, <state-dir>/credentials, which --join fills on the first start.
// It also returns the node's labels: --labels when given, else those its
// join token carried, else the default.
func credentials(ctx context.Context, c *cli.Context, name string, log *slog.Logger) (etcdconn.Config, string, error) {
	ec := etcdconn.FromContext(c)
	labels := c.String("labels")
	if ec.Credentials != "" || ec.CertFile != "" || ec.Username != "" {
		if c.String("join") != "" {
			log.Warn("--join ignored: credentials were given", "node", name)
		}
		ec, err := ec.Resolve()
		return ec, labels, err
	}
	dir := filepath.Join(c.String("state-dir"), "credentials")
	if !etcdconn.HasCredentials(dir) {
		tok := c.String("join")
		if tok == "" {
			return ec, "", fmt.Errorf("no credentials: node %s has not joined (%s holds none): on an administrator's machine run deisctl nodes:add %s, then start this agent with the --join, --coordinator and --ca-fingerprint it prints", name, dir, name)
		}
		jctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		resp, err := node.Join(jctx, node.JoinConfig{Coordinator: c.String("coordinator"), Fingerprint: c.String("ca-fingerprint"),
			Token: tok, Node: name, Prefix: ec.Prefix, Dir: dir})
		cancel()
		if err != nil {
			return ec, "", err
		}
		log.Info("joined the platform", "node", name, "etcd user", resp.EtcdUser, "credentials", dir)
	} else if c.String("join") != "" {
		log.Info("already joined: --join ignored", "node", name, "credentials", dir)
	}
	if !c.IsSet("labels") {
		if l := node.JoinedLabels(dir); l != "" {
			labels = l
		}
	}
	ec.Credentials = dir
	ec, err := ec.Resolve()
	return ec, labels, err
}

// listenPort is the port of the first nginx listen spec ("8080",
// "0.0.0.0:8080 reuseport"); 0 if none.
func listenPort(specs []string) int {
	if len(specs) == 0 {
		return 0
	}
	l, _, _ := strings.Cut(strings.TrimSpace(specs[0]), " ")
	if i := strings.LastIndexByte(l, ':'); i >= 0 {
		l = l[i+1:]
	}
	port := 0
	fmt.Sscanf(l, "%d", &port)
	return port
}

// nonEmpty drops empty values, so --https-listen= turns HTTPS off.
func nonEmpty(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
