package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/deis/deis/pkg/backoff"
	"github.com/deis/deis/pkg/etcdauth"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/view"
	"github.com/deis/deis/pkg/watch"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Config configures a Proxy.
type Config struct {
	// Node is this node's name; its registration (Keys.Node) carries the
	// labels that proxy layers select on.
	Node string
	// StateDir holds the proxy's nginx files, under StateDir/nginx.
	StateDir string
	// Listen are nginx listen specs for app traffic: "8080", "[::]:8080",
	// "127.0.0.1:8080". Default ["8080"].
	Listen []string
	// HTTPSListen are nginx listen specs served over TLS, with each
	// formation's certificates chosen by SNI and a self-signed default
	// certificate for other names; none: no HTTPS.
	HTTPSListen []string
	// NginxBinary is the nginx executable (default "nginx").
	NginxBinary string
	// NginxModules is the directory of nginx's dynamic modules, which must
	// hold ndk_http_module.so and ngx_http_lua_module.so (default
	// "/usr/lib/nginx/modules", where Debian's libnginx-mod-http-lua puts
	// them).
	NginxModules string
	// NginxUser is the user nginx's workers run as when the agent runs as
	// root (default "www-data", or "nobody" where there is no www-data);
	// its primary group is theirs. Not root: the workers parse every
	// request. An agent that is not root runs them as itself.
	NginxUser string
	// MaxBodyBytes is the request body limit of formations that set none
	// (deisctl limits:set --body); default state.DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// BaseDomain is named on the page of the default server (optional).
	BaseDomain string
	Store      *state.Store
	Watcher    clientv3.Watcher
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Resync is the longest the loop sleeps without a watch event
	// (default 30s).
	Resync time.Duration
	// ReloadTimeout is how long nginx has to serve a new config after a
	// reload or start (default 30s).
	ReloadTimeout time.Duration
	// ReloadDrain is how long nginx closes each client connection after
	// its response before a reload, so keep-alive clients move to new
	// connections before the reload closes the idle ones (default 2s;
	// negative: no drain). Routing changes never reload; only a change of
	// the config itself (listen addresses, base domain, an agent upgrade)
	// does.
	ReloadDrain time.Duration
	// TrafficInterval is how often the agent reads nginx's answer counts
	// per formation and release (default 5s); TrafficWindow is how far
	// back the counts it reports reach (default 1m). See traffic.go.
	TrafficInterval time.Duration
	TrafficWindow   time.Duration
}

// Proxy runs this node's nginx and keeps it routing the formations whose
// proxy layer selects the node.
type Proxy struct {
	cfg   Config
	paths layout
	work  *workerID // nil: workers run as the agent's user
	ngx   *nginx
	m     *metrics
	log   *slog.Logger

	mu         sync.Mutex         // one pass or StopNginx at a time
	live       map[string]applied // what nginx serves, per formation
	loaded     bool               // live was read from routes.json
	lastFailed string             // hash of the last config nginx -t rejected
	lastErrs   map[string]string  // per formation, to log refusals once
	// lastSkipped is why certificates were last not served, to log it once.
	lastSkipped string
	// view is the watch-fed state Run keeps (nil: each Pass reads once):
	// nodes and layers; scope follows each served formation's own keys.
	view     *view.View
	scope    *scope
	scopeCtx context.Context // the followers' context while Run runs
	// acks are this node's acks by formation as written (this agent is
	// their only writer); nil until read.
	acks map[string]state.ProxyAck
}

// New checks cfg and returns a proxy. It does not touch nginx.
func New(cfg Config) (*Proxy, error) {
	if cfg.Node == "" {
		return nil, errors.New("proxy: no node name")
	}
	if cfg.Store == nil || cfg.Watcher == nil {
		return nil, errors.New("proxy: no etcd store or watcher")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("proxy: no state dir: pass --state-dir")
	}
	dir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("proxy: state dir: %w", err)
	}
	paths := layout{Prefix: filepath.Join(dir, "nginx")}
	if !safePath.MatchString(paths.Prefix) {
		return nil, fmt.Errorf("proxy: state dir %q has characters nginx paths cannot hold: use letters, digits and _./@+,:=-", dir)
	}
	if len(paths.control()) > 100 {
		return nil, fmt.Errorf("proxy: state dir %q is too long for the control socket %s: use a shorter --state-dir", dir, paths.control())
	}
	if len(cfg.Listen) == 0 {
		cfg.Listen = []string{"8080"}
	}
	for _, l := range append(append([]string{}, cfg.Listen...), cfg.HTTPSListen...) {
		if err := validateListen(l); err != nil {
			return nil, err
		}
	}
	if cfg.BaseDomain != "" {
		if err := state.ValidateDomain(cfg.BaseDomain); err != nil {
			return nil, fmt.Errorf("proxy: base domain: %w", err)
		}
	}
	if cfg.NginxBinary == "" {
		cfg.NginxBinary = "nginx"
	}
	bin, err := exec.LookPath(cfg.NginxBinary)
	if err != nil {
		return nil, fmt.Errorf("proxy: nginx binary %q not found: install nginx or pass --nginx: %w", cfg.NginxBinary, err)
	}
	if cfg.NginxModules == "" {
		cfg.NginxModules = "/usr/lib/nginx/modules"
	}
	mods, err := filepath.Abs(cfg.NginxModules)
	if err != nil || !safePath.MatchString(mods) {
		return nil, fmt.Errorf("proxy: nginx modules directory %q: use a path of letters, digits and _./@+,:=-", cfg.NginxModules)
	}
	cfg.NginxModules = mods
	for _, m := range modules {
		if _, err := os.Stat(filepath.Join(cfg.NginxModules, m)); err != nil {
			return nil, fmt.Errorf("proxy: nginx module %s not found: install libnginx-mod-http-lua (apt-get install libnginx-mod-http-lua) or point NginxModules at its directory: %w", m, err)
		}
	}
	if cfg.ReloadDrain == 0 {
		cfg.ReloadDrain = 2 * time.Second
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.ReloadTimeout <= 0 {
		cfg.ReloadTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = state.DefaultMaxBodyBytes
	}
	if err := state.ValidateMaxBody(cfg.MaxBodyBytes); err != nil {
		return nil, fmt.Errorf("proxy: --max-body: %w", err)
	}
	var work *workerID
	if os.Geteuid() == 0 {
		if work, err = lookupWorker(cfg.NginxUser); err != nil {
			return nil, err
		}
	}
	return &Proxy{cfg: cfg, paths: paths, work: work, ngx: newNginx(bin, paths), m: m, log: cfg.Logger,
		live: map[string]applied{}, lastErrs: map[string]string{}}, nil
}

// workerID is the user and group nginx's workers run as.
type workerID struct {
	User, Group string
	UID, GID    int
}

// sysName is a user or group name that is safe in the user directive.
var sysName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// lookupWorker resolves the worker user: name, or by default www-data
// (Debian's nginx user) and else nobody.
func lookupWorker(name string) (*workerID, error) {
	tries := []string{name}
	if name == "" || name == "www-data" {
		tries = []string{"www-data", "nobody"}
	}
	var u *user.User
	var err error
	for _, n := range tries {
		if u, err = user.Lookup(n); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("proxy: nginx worker user %s not found: create it (useradd --system --no-create-home %s) or pass --nginx-user: %w",
			strings.Join(tries, " or "), tries[0], err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("proxy: nginx worker user %s has no numeric uid and gid", u.Username)
	}
	if uid == 0 || gid == 0 {
		return nil, fmt.Errorf("proxy: nginx worker user %s has uid or gid 0: nginx workers parse every request from the internet; pass an unprivileged --nginx-user such as www-data", u.Username)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("proxy: group %s of nginx worker user %s: %w", u.Gid, u.Username, err)
	}
	if !sysName.MatchString(u.Username) || !sysName.MatchString(g.Name) {
		return nil, fmt.Errorf("proxy: nginx worker user %q or group %q has characters nginx.conf cannot hold: pass another --nginx-user", u.Username, g.Name)
	}
	return &workerID{User: u.Username, Group: g.Name, UID: uid, GID: gid}, nil
}

// Run keeps nginx routing until ctx ends. It leaves nginx running when it
// returns, so apps stay served while the agent is down.
func (p *Proxy) Run(ctx context.Context) error {
	if err := p.prepare(); err != nil {
		return err
	}
	k := p.cfg.Store.Keys
	v := view.New(viewEtcd{p.cfg.Store.KV, p.cfg.Watcher}, k.Prefix, view.Options{Families: p.families(), Logger: p.log})
	vctx, vcancel := context.WithCancel(ctx)
	viewDone := make(chan struct{})
	go func() { defer close(viewDone); v.Run(vctx) }()
	sub := v.Subscribe()
	defer func() {
		sub.Close()
		vcancel()
		<-viewDone
		p.mu.Lock()
		p.view = nil
		p.mu.Unlock()
	}()
	if v.WaitReady(ctx) != nil {
		return nil
	}
	wake := watch.NewWaker()
	sc := newScope(viewEtcd{p.cfg.Store.KV, p.cfg.Watcher}, k.Prefix, p.formationFamilies(), wake.Wake, p.log)
	defer func() {
		vcancel()
		sc.stop()
		p.mu.Lock()
		p.scope = nil
		p.mu.Unlock()
	}()
	p.mu.Lock()
	p.view = v
	p.scope, p.scopeCtx = sc, vctx
	p.mu.Unlock()
	go func() {
		for {
			select {
			case <-vctx.Done():
				return
			case <-sub.C:
			}
			// Other nodes' registrations do not concern this proxy.
			if t := sub.Take(); t.All || len(t.Formations) > 0 || t.Nodes[p.cfg.Node] {
				wake.Wake()
			}
		}
	}()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	counted := make(chan struct{})
	go func() { defer close(counted); p.reportTraffic(wctx) }()
	defer func() { cancel(); <-counted }()
	watch.Loop(ctx, wake, p.cfg.Resync, backoff.Backoff{}, p.Pass, func(err error) {
		p.log.Warn("proxy pass failed", "node", p.cfg.Node, "error", err)
	})
	return nil
}

// viewEtcd is the etcd client a view needs, from the proxy's store and
// watcher.
type viewEtcd struct {
	state.KV
	clientv3.Watcher
}

// families are the key families a proxy's view keeps: the nodes'
// registrations (its own labels, peers' addresses) and the layers that
// select it. Not the acks: each proxy would wake on every other proxy's.
func (p *Proxy) families() []view.Family {
	return []view.Family{view.Nodes, view.Layers}
}

// formationFamilies are what a proxy reads of each formation it serves,
// and may read of no other (issue 10): the routing databag, ACME
// challenges and, with HTTPS, certificates.
func (p *Proxy) formationFamilies() []view.Family {
	fams := []view.Family{view.Routings, view.ACMEChallenges}
	if len(p.cfg.HTTPSListen) > 0 {
		fams = append(fams, view.Certs)
	}
	return fams
}

// prepare creates the prefix and reads what was applied before. The prefix
// is private to the agent's user: whoever may connect to the control socket
// in it can change the routing.
func (p *Proxy) prepare() error {
	if err := os.MkdirAll(p.paths.Prefix, 0o700); err != nil {
		return fmt.Errorf("proxy: create %s: %w", p.paths.Prefix, err)
	}
	if err := os.Chmod(p.paths.Prefix, 0o700); err != nil {
		return fmt.Errorf("proxy: make %s private: %w", p.paths.Prefix, err)
	}
	if err := os.MkdirAll(p.paths.logs(), 0o755); err != nil {
		return fmt.Errorf("proxy: create %s: %w", p.paths.logs(), err)
	}
	if err := p.prepareTemp(); err != nil {
		return err
	}
	if err := ensureDefaultCert(p.paths); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.loaded {
		return nil
	}
	p.loaded = true
	b, err := os.ReadFile(p.paths.routes())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = json.Unmarshal(b, &p.live)
	}
	if err != nil {
		p.live = map[string]applied{}
		p.log.Warn("ignoring the routes last applied", "node", p.cfg.Node, "error", err)
	}
	return nil
}

// prepareTemp creates the temp directories, the only paths the workers
// write. They live outside the private prefix, in StateDir/nginx-temp,
// which the agent's user owns and nobody else may write: the workers own
// each temp directory but cannot replace it (with a symlink, say) for the
// master, which chowns it to them at every start and reload.
func (p *Proxy) prepareTemp() error {
	root := p.paths.tempRoot()
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("proxy: create %s: %w", root, err)
	}
	if err := ownDir(root); err != nil {
		return err
	}
	if err := os.Chmod(root, 0o755); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	if p.work != nil {
		if err := reachable(root, p.work); err != nil {
			return err
		}
	}
	for _, d := range tempDirs {
		path := p.paths.temp(d)
		if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("proxy: create %s: %w", path, err)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("proxy: %s is not a directory; remove it and restart the agent", path)
		}
		if p.work != nil {
			if err := os.Lchown(path, p.work.UID, p.work.GID); err != nil {
				return fmt.Errorf("proxy: give %s to the nginx workers: %w", path, err)
			}
		}
	}
	return nil
}

// ownDir checks that dir is a directory (not a symlink) of the agent's
// user that no one else may write.
func ownDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("proxy: %s must be a directory owned by the agent's user (uid %d); remove it and restart the agent", dir, os.Geteuid())
	}
	return nil
}

// reachable checks that the workers may walk down to dir: every directory
// above it must be searchable by their user.
func reachable(dir string, w *workerID) error {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode().Perm()
		ok = ok && (mode&0o001 != 0 || (int(st.Gid) == w.GID && mode&0o010 != 0) || (int(st.Uid) == w.UID && mode&0o100 != 0))
		if !ok {
			return fmt.Errorf("proxy: nginx workers run as %s and cannot reach %s: %s is mode %o; make it searchable (chmod o+x %s) or use another --state-dir",
				w.User, dir, d, mode, d)
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

// Pass runs one reconcile pass: read the state, render, bring nginx to the
// config and the routes, write acks. A config nginx -t rejects is not an
// error of the pass (it is reported in the acks of the formations that
// could not move and retried on the next pass); an nginx that cannot be
// reloaded, started or given the routes is.
func (p *Proxy) Pass(ctx context.Context) error {
	if err := p.prepare(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	w, err := p.read(ctx)
	if err != nil {
		return err
	}
	c := choose(w, p.live)
	for f, e := range c.Errors {
		if p.lastErrs[f] != e {
			p.log.Warn("routing not served as written", "formation", f, "node", p.cfg.Node, "error", e)
		}
	}
	p.lastErrs = c.Errors
	for i := range c.Sites {
		c.Sites[i].Challenges = challengesFor(w.Challenges[c.Sites[i].Formation])
	}
	in := renderInput{Paths: p.paths, Listen: p.cfg.Listen, BaseDomain: p.cfg.BaseDomain, Modules: p.cfg.NginxModules, MaxBody: p.cfg.MaxBodyBytes,
		HTTPSListen: p.cfg.HTTPSListen}
	if p.work != nil {
		in.User, in.Group = p.work.User, p.work.Group
	}
	conf, hash := render(in)
	table, version := renderRoutes(c.Sites)
	routed, applyErr := p.apply(ctx, conf, hash, table, version)
	var certErr error
	if routed && len(p.cfg.HTTPSListen) > 0 {
		used, sni, skipped := pickCerts(c.Sites, w.Certs, time.Now())
		if s := strings.Join(skipped, "; "); s != p.lastSkipped {
			if s != "" {
				p.log.Warn("certificates not served", "node", p.cfg.Node, "error", s)
			}
			p.lastSkipped = s
		}
		text, version := renderCerts(used, sni)
		// Routing is served either way; the pass retries the certificates.
		certErr = p.applyCerts(ctx, text, version)
	} else if len(p.cfg.HTTPSListen) == 0 {
		// HTTPS is off: keep no keys on disk.
		if err := os.Remove(p.paths.certsTable()); err != nil && !errors.Is(err, os.ErrNotExist) {
			p.log.Warn("cannot remove the certificates file", "node", p.cfg.Node, "error", err)
		}
	}
	if routed {
		p.m.formations.Set(float64(len(c.Sites)))
		if err := p.setLive(c.Want); err != nil {
			p.log.Warn("cannot record the routes applied", "node", p.cfg.Node, "error", err)
		}
	}
	var checkErr *checkError
	if applyErr != nil && !errors.As(applyErr, &checkErr) {
		// nginx could not be reloaded, started or given the routes: acks
		// are left alone (they describe what the running nginx serves) and
		// the pass retries.
		return applyErr
	}
	if err := p.writeAcks(ctx, w, c, applyErr); err != nil {
		return err
	}
	return certErr
}

// checkError is a config that nginx -t rejected.
type checkError struct{ err error }

func (e *checkError) Error() string { return e.err.Error() }
func (e *checkError) Unwrap() error { return e.err }

// apply brings nginx to conf and makes it route by table. routed tells
// whether nginx routes by table when it returns: it may, with a checkError,
// when nginx -t rejected conf but the running nginx took the routes.
func (p *Proxy) apply(ctx context.Context, conf []byte, hash string, table []byte, version string) (routed bool, err error) {
	// The routes file first: an nginx that starts from here on (now, or
	// after a crash) routes by it from its first request.
	if err := p.writeTable(table); err != nil {
		return false, err
	}
	cfgErr := p.applyConfig(ctx, conf, hash)
	var checkErr *checkError
	if cfgErr != nil && (!errors.As(cfgErr, &checkErr) || p.ngx.master() == 0) {
		return false, cfgErr
	}
	if err := p.applyRoutes(ctx, table, version); err != nil {
		if cfgErr != nil {
			return false, cfgErr // the config nginx still runs may not take routes
		}
		return false, err
	}
	return true, cfgErr
}

// applyRoutes makes the running nginx route by table, without a reload.
func (p *Proxy) applyRoutes(ctx context.Context, table []byte, version string) error {
	live, err := p.ngx.routesVersion(ctx)
	if err != nil {
		return err
	}
	if live == version {
		return nil
	}
	p.m.routeUpdates.Inc()
	start := time.Now()
	if err := p.ngx.putRoutes(ctx, table, version); err != nil {
		if ctx.Err() == nil {
			p.m.routeFailures.Inc()
		}
		return err
	}
	p.m.routeApply.Observe(time.Since(start).Seconds())
	p.log.Info("nginx routes by the new routing", "node", p.cfg.Node, "version", version[:12])
	return nil
}

// writeTable writes the routes file nginx loads when it starts.
func (p *Proxy) writeTable(table []byte) error {
	if old, err := os.ReadFile(p.paths.table()); err == nil && bytes.Equal(old, table) {
		return nil
	}
	tmp := p.paths.table() + ".tmp"
	if err := os.WriteFile(tmp, table, 0o644); err != nil {
		return fmt.Errorf("proxy: write routes: %w", err)
	}
	if err := os.Rename(tmp, p.paths.table()); err != nil {
		return fmt.Errorf("proxy: write routes: %w", err)
	}
	return nil
}

// applyConfig brings nginx to conf: nothing when it serves it, else a
// checked install and a start, or a reload preceded by a drain.
func (p *Proxy) applyConfig(ctx context.Context, conf []byte, hash string) error {
	pid := p.ngx.master()
	var live string
	if pid != 0 {
		live, _ = p.ngx.liveHash(ctx)
	}
	onDisk, _ := os.ReadFile(p.paths.conf())
	st := planNginx(conf, hash, onDisk, pid != 0, live)
	if st.Action == actNone {
		return nil
	}
	if st.Write {
		if err := p.install(ctx, conf, hash); err != nil {
			return err
		}
	}
	p.m.reloads.Inc()
	start := time.Now()
	var err error
	var old []int
	drained := false
	if st.Action == actStart {
		err = p.ngx.start(ctx)
	} else {
		old = workers(pid)
		drained = p.drain(ctx)
		if err = ctx.Err(); err == nil {
			err = p.ngx.reload(pid)
		}
	}
	if err == nil {
		err = p.ngx.waitHash(ctx, hash, p.cfg.ReloadTimeout)
	}
	if err == nil && st.Action == actReload {
		err = p.ngx.waitRetired(ctx, old, p.cfg.ReloadTimeout)
	}
	if drained {
		// Also when the reload failed or ctx ended: clients should not
		// lose keep-alive for longer than the reload took.
		if uerr := p.ngx.undrain(context.WithoutCancel(ctx)); uerr != nil {
			// The drain ends by itself after ReloadDrain+ReloadTimeout.
			p.log.Warn("cannot end the drain; it ends by itself", "node", p.cfg.Node, "error", uerr)
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			p.m.reloadFailures.Inc()
		}
		return err
	}
	d := time.Since(start)
	p.m.reloadDuration.Observe(d.Seconds())
	p.log.Info("nginx serves the new config", "node", p.cfg.Node, "action", st.Action.String(), "reason", st.Reason,
		"pid", p.ngx.master(), "seconds", d.Seconds())
	return nil
}

// drain makes nginx close client connections after their response for
// ReloadDrain before a reload. A client that sends on a keep-alive
// connection during the drain gets Connection: close and moves to a new
// one, so when the reload retires the old workers, which close their idle
// connections, only connections idle for the whole drain are left to meet
// that close. It reports whether nginx drains (a config from before
// draining existed cannot).
func (p *Proxy) drain(ctx context.Context) bool {
	if p.cfg.ReloadDrain <= 0 {
		return false
	}
	if err := p.ngx.drain(ctx, p.cfg.ReloadDrain+p.cfg.ReloadTimeout); err != nil {
		p.log.Info("reloading without a drain: nginx cannot drain", "node", p.cfg.Node, "error", err)
		return false
	}
	t := time.NewTimer(p.cfg.ReloadDrain)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return true
}

// install stages conf next to nginx.conf, checks it with nginx -t and
// renames it into place.
func (p *Proxy) install(ctx context.Context, conf []byte, hash string) error {
	staged := p.paths.staged()
	if err := os.WriteFile(staged, conf, 0o644); err != nil {
		return fmt.Errorf("proxy: stage config: %w", err)
	}
	if err := p.ngx.test(ctx, staged); err != nil {
		if ctx.Err() != nil {
			return err
		}
		p.m.checkFailures.Inc()
		if p.lastFailed != hash {
			p.log.Warn("nginx rejected the new config; keeping the last good one", "node", p.cfg.Node, "error", err)
		}
		p.lastFailed = hash
		return &checkError{err}
	}
	p.lastFailed = ""
	if err := os.Rename(staged, p.paths.conf()); err != nil {
		return fmt.Errorf("proxy: install config: %w", err)
	}
	return nil
}

// setLive records what nginx serves, in memory and in routes.json.
func (p *Proxy) setLive(want map[string]applied) error {
	if state.Marshal(want) == state.Marshal(p.live) {
		return nil
	}
	p.live = want
	tmp := p.paths.routes() + ".tmp"
	if err := os.WriteFile(tmp, []byte(state.Marshal(want)), 0o644); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	if err := os.Rename(tmp, p.paths.routes()); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return nil
}

// StopNginx quits this proxy's nginx gracefully and waits for it to exit;
// when ctx ends first it sends SIGTERM. Run does not call it; call it after
// Run has returned, or the next pass starts nginx again.
func (p *Proxy) StopNginx(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ngx.stop(ctx)
}

// read loads this node's registration and the formations it proxies from
// the view, and the routing databags, certificates and challenges of those
// formations from the scope (one read of each when Run keeps none), and
// this node's acks. A formation not readable yet (the access loop has not
// granted it) is left out.
func (p *Proxy) read(ctx context.Context) (*world, error) {
	var w *world
	var err error
	if p.view != nil {
		p.view.Read(func(s *view.State) { w, err = p.worldOf(s) })
	} else {
		s, lerr := view.LoadFamilies(ctx, p.cfg.Store.KV, p.cfg.Store.Keys.Prefix, p.families()...)
		if lerr != nil {
			return nil, fmt.Errorf("proxy: read: %w", lerr)
		}
		w, err = p.worldOf(s)
	}
	if err != nil {
		return nil, err
	}
	if p.scope != nil {
		p.scope.set(p.scopeCtx, w.Proxied)
	}
	for f := range w.Proxied {
		if p.scope != nil {
			if d, ok := p.scope.get(f); ok {
				w.add(f, d)
				continue
			}
		}
		// Not followed yet (a start, or a formation newly served): read
		// it now, so a pass never drops a formation it can read.
		d, _, err := readServed(ctx, p.cfg.Store.KV, p.cfg.Store.Keys.Prefix, f, p.formationFamilies())
		if etcdauth.IsPermissionDenied(err) {
			p.log.Info("proxy: formation not readable yet (the access loop grants it)", "formation", f)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("proxy: read %s: %w", f, err)
		}
		w.add(f, d)
	}
	if p.acks == nil {
		if err := p.readAcks(ctx); err != nil {
			return nil, err
		}
	}
	for f, a := range p.acks {
		w.Acks[f] = a
	}
	return w, nil
}

// worldOf is what a pass needs of the view.
func (p *Proxy) worldOf(s *view.State) (*world, error) {
	n := s.Nodes[p.cfg.Node]
	if n == nil {
		return nil, fmt.Errorf("proxy: node %q is not registered yet; nginx is left as it is: %w", p.cfg.Node, state.ErrNotFound)
	}
	node := *n
	w := &world{Node: &node, Routings: map[string]routingAt{}, Acks: map[string]state.ProxyAck{},
		Certs: map[string][]state.Cert{}, Challenges: map[string][]state.ACMEChallenge{}}
	layers := map[string][]state.Layer{}
	for f, ls := range s.Layers {
		for _, l := range ls {
			layers[f] = append(layers[f], *l)
		}
	}
	w.Proxied = proxiedBy(&node, layers)
	return w, nil
}

// add puts what was read of formation f into the world.
func (w *world) add(f string, d served) {
	if d.Routing != nil {
		w.Routings[f] = *d.Routing
	}
	if len(d.Certs) > 0 {
		w.Certs[f] = append([]state.Cert(nil), d.Certs...)
	}
	if len(d.Challenges) > 0 {
		w.Challenges[f] = append([]state.ACMEChallenge(nil), d.Challenges...)
	}
}

// readAcks reads this node's acks.
func (p *Proxy) readAcks(ctx context.Context) error {
	k := p.cfg.Store.Keys
	acks := map[string]state.ProxyAck{}
	err := each(ctx, p.cfg.Store.KV, k.NodeProxyAcks(p.cfg.Node), func(key string, _ int64, val []byte) {
		f := strings.TrimPrefix(key, k.NodeProxyAcks(p.cfg.Node))
		var a state.ProxyAck
		if f == "" || strings.Contains(f, "/") || json.Unmarshal(val, &a) != nil {
			return
		}
		acks[f] = a
	})
	if err != nil {
		return err
	}
	p.acks = acks
	return nil
}

// each calls fn for every key under prefix, in key order.
func each(ctx context.Context, kv state.KV, prefix string, fn func(key string, rev int64, val []byte)) error {
	resp, err := kv.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return fmt.Errorf("proxy: list %s: %w", prefix, err)
	}
	for _, e := range resp.Kvs {
		fn(string(e.Key), e.ModRevision, e.Value)
	}
	return nil
}

// writeAcks writes each changed ack and deletes this node's acks of
// formations it no longer proxies.
func (p *Proxy) writeAcks(ctx context.Context, w *world, c choice, applyErr error) error {
	s := p.cfg.Store
	keep := map[string]bool{}
	for _, f := range c.Acked {
		keep[f] = true
		ack := ackFor(p.cfg.Node, f, c, p.live, applyErr)
		old, had := w.Acks[f]
		if had && old.Node == ack.Node && old.Revision == ack.Revision && old.Error == ack.Error {
			continue
		}
		ack.Applied = time.Now().UTC()
		if had && old.Revision == ack.Revision && !old.Applied.IsZero() {
			ack.Applied = old.Applied
		}
		if err := s.Put(ctx, s.Keys.ProxyAck(f, p.cfg.Node), ack); err != nil {
			p.acks = nil // read them again: the write may have landed
			return fmt.Errorf("proxy: ack %s: %w", f, err)
		}
		p.acks[f] = ack
		p.log.Info("routing acknowledged", "formation", f, "node", p.cfg.Node, "revision", ack.Revision, "error", ack.Error)
	}
	for f := range w.Acks {
		if keep[f] {
			continue
		}
		if _, err := s.KV.Txn(ctx).Then(clientv3.OpDelete(s.Keys.ProxyAck(f, p.cfg.Node))).Commit(); err != nil {
			p.acks = nil
			return fmt.Errorf("proxy: delete ack of %s: %w", f, err)
		}
		delete(p.acks, f)
		p.log.Info("ack removed: formation no longer proxied here", "formation", f, "node", p.cfg.Node)
	}
	return nil
}
