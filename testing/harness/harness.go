package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deis/deis/pkg/embedetcd"
	"github.com/deis/deis/pkg/etcdconn"
	"github.com/deis/deis/pkg/pki"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
	"github.com/deis/deis/testing/poll"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries builds deis-coordinator, deis-agent and deisctl from the tree once
// per test process and returns the directory holding them.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "deis-bin-")
		if buildErr != nil {
			return
		}
		root := moduleRoot()
		for _, p := range []string{"coordinator/cmd/deis-coordinator", "agent/cmd/deis-agent", "ctl/cmd/deisctl"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, filepath.Base(p)), "./"+p)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", p, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func moduleRoot() string {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "."
		}
		dir = parent
	}
}

// AppDir returns the path of a sample app under testing/apps.
func AppDir(name string) string { return filepath.Join(moduleRoot(), "testing", "apps", name) }

var (
	portsMu sync.Mutex
	given   = map[int]bool{}
)

// FreePort returns a free TCP port on addr, never the same one twice in one
// test process.
func FreePort(t testing.TB, addr string) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !given[port] {
			given[port] = true
			return port
		}
	}
}

// Proc is a platform process started by the harness.
type Proc struct {
	Name string
	Args []string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	t    testing.TB
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs a binary from the harness's bin directory.
func Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, Args: args, log: &syncBuffer{}, t: t}
	p.start()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("---- %s log ----\n%s", name, p.log.String())
		}
	})
	return p
}

func (p *Proc) start() {
	p.cmd = exec.Command(filepath.Join(Binaries(p.t), p.Name), p.Args...)
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); close(p.done) }()
}

// Log returns what the process printed so far.
func (p *Proc) Log() string { return p.log.String() }

// Stop sends SIGTERM and waits for the process to exit.
func (p *Proc) Stop() { p.signal(syscall.SIGTERM) }

// Kill sends SIGKILL and waits.
func (p *Proc) Kill() { p.signal(syscall.SIGKILL) }

func (p *Proc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Restart starts the process again with the same arguments.
func (p *Proc) Restart() {
	p.Stop()
	p.start()
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Platform is one coordinator with its embedded etcd.
type Platform struct {
	t           testing.TB
	Dir         string
	EtcdURL     string
	SSHPort     int
	HTTPPort    int   // slug server
	AppPort     int   // the first agent's proxy port, used in app URLs
	Coordinator *Proc // the first coordinator
	// Coordinators are all coordinators started, in order.
	Coordinators []*Proc
	Agents       []*Agent
	coordPorts   [][2]int // ssh, http
	external     bool
	coordArgs    []string
	addr         string // where coordinators and the embedded etcd listen
	// id makes node names unique to this platform: agents label their
	// containers with their node name, and two test runs on one machine
	// must never see each other's containers.
	id      string
	KeyFile string
	// AdminDir is the administrator's credentials directory (deisctl's
	// DEIS_CREDENTIALS) the first coordinator writes.
	AdminDir string
	// CACert and CAKey are the platform CA's files (the first coordinator's
	// DATA_DIR/pki, or the harness's own with an external etcd), given to
	// every further coordinator.
	CACert, CAKey string
	// JoinURL is the first coordinator's join endpoint.
	JoinURL string
	etcdSrv *embedetcd.Server
}

// Agent is one deis-agent process.
type Agent struct {
	*Proc
	Name     string
	Addr     string
	StateDir string
	HTTPPort int
	// HTTPSPort is the proxy's HTTPS port (--https-listen).
	HTTPSPort int
	// MetricsAddr is where the agent serves /metrics.
	MetricsAddr string
}

// NewPlatform starts a coordinator with an embedded etcd on free loopback
// ports. It requires Docker with the stack image, nginx and git.
func NewPlatform(t testing.TB) *Platform { return NewPlatformWith(t, PlatformOptions{}) }

// PlatformOptions configure NewPlatformWith.
type PlatformOptions struct {
	// ExternalEtcd runs etcd in the test process instead of inside the
	// coordinator, so coordinators can be killed and added freely.
	ExternalEtcd bool
	// CoordinatorArgs are added to every coordinator's flags.
	CoordinatorArgs []string
	// Addr is the address the coordinators' SSH and HTTP servers and the
	// embedded etcd listen on (default 127.0.0.1). The hostile suite uses
	// the host's own address, which containers can route to, so that only
	// the platform's network rules keep them out.
	Addr string
}

// NewPlatformWith starts a platform as the options say.
func NewPlatformWith(t testing.TB, o PlatformOptions) *Platform {
	t.Helper()
	need.Stack(t)
	need.Nginx(t)
	need.Git(t)
	need.Binary(t, "ssh")
	Binaries(t)
	dir, err := os.MkdirTemp("", "deis-e2e-")
	if err == nil {
		// The proxies' nginx workers (www-data) walk through it to their
		// temp directories under each agent's state dir.
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if o.Addr == "" {
		o.Addr = "127.0.0.1"
	}
	p := &Platform{t: t, Dir: dir, external: o.ExternalEtcd, coordArgs: o.CoordinatorArgs, addr: o.Addr, id: filepath.Base(dir)[len("deis-e2e-"):]}
	if len(p.id) > 6 {
		p.id = p.id[len(p.id)-6:]
	}
	p.AppPort = FreePort(t, o.Addr)
	p.AdminDir = filepath.Join(dir, "admin-credentials")
	if o.ExternalEtcd {
		p.startSecureEtcd()
	} else {
		p.EtcdURL = fmt.Sprintf("https://%s:%d", o.Addr, FreePort(t, o.Addr))
		pki := filepath.Join(dir, "coordinator0", "pki")
		p.CACert, p.CAKey = filepath.Join(pki, "ca.crt"), filepath.Join(pki, "ca.key")
	}
	p.Coordinator = p.AddCoordinator()
	p.SSHPort, p.HTTPPort = p.coordPorts[0][0], p.coordPorts[0][1]
	return p
}

// startSecureEtcd runs the platform's external etcd in the test process as
// an operator would: a CA of the platform (given to every coordinator), TLS
// with client certificates on its client and peer URLs; the first
// coordinator turns its auth on.
func (p *Platform) startSecureEtcd() {
	t := p.t
	t.Helper()
	dir := filepath.Join(p.Dir, "ca")
	ca, err := pki.Create(dir, "deis e2e CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssuePeer("etcd", []string{"127.0.0.1", "localhost", p.addr}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := leaf.WriteFiles(dir, "etcd")
	if err != nil {
		t.Fatal(err)
	}
	p.CACert, p.CAKey = filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile)
	p.EtcdURL = fmt.Sprintf("https://%s:%d", p.addr, FreePort(t, p.addr))
	peer := fmt.Sprintf("https://127.0.0.1:%d", FreePort(t, "127.0.0.1"))
	srv, err := embedetcd.StartTLS(filepath.Join(p.Dir, "etcd"), p.EtcdURL, peer, &embedetcd.TLS{CertFile: cert, KeyFile: key, TrustedCAFile: p.CACert})
	if err != nil {
		t.Fatal(err)
	}
	p.etcdSrv = srv
	t.Cleanup(srv.Close)
}

// AddCoordinator starts one more coordinator (the first one embeds etcd
// unless the platform's etcd is external) and waits until it serves.
func (p *Platform) AddCoordinator() *Proc {
	t := p.t
	t.Helper()
	n := len(p.Coordinators)
	ssh, web, join := FreePort(t, p.addr), FreePort(t, p.addr), FreePort(t, p.addr)
	joinURL := fmt.Sprintf("https://%s:%d", p.addr, join)
	args := []string{
		"--admin-credentials", p.AdminDir,
		"--join-addr", fmt.Sprintf("%s:%d", p.addr, join), "--join-url", joinURL,
		"--data-dir", filepath.Join(p.Dir, fmt.Sprintf("coordinator%d", n)),
		"--ssh-addr", fmt.Sprintf("%s:%d", p.addr, ssh), "--ssh-host", p.addr,
		"--http-addr", fmt.Sprintf("%s:%d", p.addr, web),
		"--slug-url", fmt.Sprintf("https://%s:%d", p.addr, web),
		"--app-port", fmt.Sprint(p.AppPort), "--log-level", "debug",
	}
	if p.external || n > 0 {
		args = append(args, "--etcd-endpoints", p.EtcdURL, "--ca-cert", p.CACert, "--ca-key", p.CAKey)
	} else {
		peer := fmt.Sprintf("https://127.0.0.1:%d", FreePort(t, "127.0.0.1")) // peers stay on loopback
		args = append(args, "--etcd-listen-client", p.EtcdURL, "--etcd-listen-peer", peer)
	}
	c := Start(t, "deis-coordinator", append(args, p.coordArgs...)...)
	p.Coordinators = append(p.Coordinators, c)
	p.coordPorts = append(p.coordPorts, [2]int{ssh, web})
	p.waitJoin(joinURL, 90*time.Second)
	if p.JoinURL == "" {
		p.JoinURL = joinURL
	}
	return c
}

// waitJoin waits until the coordinator's join endpoint answers: it has
// secured etcd and written the administrator's credential by then.
func (p *Platform) waitJoin(joinURL string, timeout time.Duration) {
	p.t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	Eventually(p.t, timeout, joinURL+" to answer", func() (bool, string) {
		for _, c := range p.Coordinators {
			if c.Exited() {
				p.t.Fatalf("coordinator exited:\n%s", c.Log())
			}
		}
		resp, err := hc.Get(joinURL + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
}

// JoinToken makes a one-time join token for node with labels (deisctl
// nodes:add) and returns the deis-agent flags that join with it.
func (p *Platform) JoinToken(node, labels string) []string {
	p.t.Helper()
	out := p.MustCtl("", "nodes:add", node, "--labels", labels, "--json")
	var j struct {
		Token, Coordinator, CAFingerprint string
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		p.t.Fatalf("nodes:add %s: %v\n%s", node, err, out)
	}
	return []string{"--join", j.Token, "--coordinator", j.Coordinator, "--ca-fingerprint", j.CAFingerprint}
}

// AgentOptions configure StartAgent.
type AgentOptions struct {
	Addr      string // loopback address (default 127.0.0.1)
	Labels    string // default role=runtime,role=proxy
	HTTPPort  int    // proxy port (default: the platform's AppPort for the first agent)
	ExtraArgs []string
}

// StartAgent starts an agent process; its node name is name followed by
// the platform's id (Agent.Name).
func (p *Platform) StartAgent(name string, o AgentOptions) *Agent {
	t := p.t
	t.Helper()
	name = name + "-" + p.id
	if o.Addr == "" {
		o.Addr = "127.0.0.1"
	}
	if o.Labels == "" {
		o.Labels = "role=runtime,role=proxy"
	}
	if o.HTTPPort == 0 {
		if len(p.Agents) == 0 {
			o.HTTPPort = p.AppPort
		} else {
			o.HTTPPort = FreePort(t, o.Addr)
		}
	}
	stateDir := filepath.Join(p.Dir, "agent-"+name)
	httpsPort := FreePort(t, o.Addr)
	metrics := fmt.Sprintf("%s:%d", o.Addr, FreePort(t, o.Addr))
	args := append(append([]string{
		"--etcd-endpoints", p.EtcdURL, "--name", name, "--addr", o.Addr, "--labels", o.Labels,
		"--state-dir", stateDir, "--http-listen", fmt.Sprintf("%s:%d", o.Addr, o.HTTPPort),
		"--https-listen", fmt.Sprintf("%s:%d", o.Addr, httpsPort),
		"--metrics-addr", metrics,
		"--stop-grace", "5s", "--log-level", "debug", "--api-addr", o.Addr + ":0",
	}, p.JoinToken(name, o.Labels)...), o.ExtraArgs...)
	a := &Agent{Proc: Start(t, "deis-agent", args...), Name: name, Addr: o.Addr, StateDir: stateDir, HTTPPort: o.HTTPPort, HTTPSPort: httpsPort, MetricsAddr: metrics}
	p.Agents = append(p.Agents, a)
	t.Cleanup(func() { cleanupAgent(a) })
	return a
}

// cleanupAgent stops the agent's nginx and removes its containers.
func cleanupAgent(a *Agent) {
	a.Stop()
	prefix := filepath.Join(a.StateDir, "nginx")
	if _, err := os.Stat(filepath.Join(prefix, "nginx.pid")); err == nil {
		exec.Command("nginx", "-p", prefix, "-c", filepath.Join(prefix, "nginx.conf"), "-s", "stop").Run()
	}
	RemoveContainers(a.Name)
}

// Ctl runs the real deisctl binary against the platform's etcd, in dir (""
// for the platform's directory), and returns its combined output.
func (p *Platform) Ctl(dir string, args ...string) (string, error) {
	if dir == "" {
		dir = p.Dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(Binaries(p.t), "deisctl"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DEIS_CREDENTIALS="+p.AdminDir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// MustCtl is Ctl that fails the test on error.
func (p *Platform) MustCtl(dir string, args ...string) string {
	p.t.Helper()
	out, err := p.Ctl(dir, args...)
	if err != nil {
		p.t.Fatalf("deisctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// NewKey makes an ed25519 key pair and returns the private key's path.
func (p *Platform) NewKey(name string) string {
	p.t.Helper()
	path := filepath.Join(p.Dir, name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path).CombinedOutput(); err != nil {
		p.t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	return path
}

// Git runs git in dir with key as the SSH identity.
func (p *Platform) Git(dir, key string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_SSH_COMMAND=ssh -i "+key+" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
		"GIT_AUTHOR_NAME=e2e", "GIT_AUTHOR_EMAIL=e2e@example.com", "GIT_COMMITTER_NAME=e2e", "GIT_COMMITTER_EMAIL=e2e@example.com")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// AppRepo copies a sample app into a fresh git repository with one commit
// and a deis remote for formation, and returns its directory.
func (p *Platform) AppRepo(app, formation string) string {
	p.t.Helper()
	dir := filepath.Join(p.Dir, "repo-"+formation+"-"+app)
	if err := os.CopyFS(dir, os.DirFS(AppDir(app))); err != nil {
		p.t.Fatal(err)
	}
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"}, {"add", "."}, {"commit", "-qm", "initial"},
		{"remote", "add", "deis", p.Remote(formation)},
	} {
		if out, err := p.Git(dir, "/dev/null", args...); err != nil {
			p.t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return dir
}

// RemoteVia is the git remote of a formation on the i-th coordinator.
func (p *Platform) RemoteVia(i int, formation string) string {
	return fmt.Sprintf("ssh://git@%s:%d/%s.git", p.addr, p.coordPorts[i][0], formation)
}

// Remote is the git remote of a formation.
func (p *Platform) Remote(formation string) string {
	return fmt.Sprintf("ssh://git@%s:%d/%s.git", p.addr, p.SSHPort, formation)
}

// Get sends GET / for host to the proxy at addr:port and returns status and body.
func Get(addr string, port int, host string) (int, string, error) {
	req, err := http.NewRequest("GET", fmt.Sprintf("http://%s:%d/", addr, port), nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// WaitApp waits until the app at host answers 200 with a body containing want.
func (p *Platform) WaitApp(a *Agent, host, want string, timeout time.Duration) string {
	p.t.Helper()
	var body string
	Eventually(p.t, timeout, fmt.Sprintf("app %s to answer with %q", host, want), func() (bool, string) {
		code, b, err := Get(a.Addr, a.HTTPPort, host)
		body = b
		return err == nil && code == 200 && strings.Contains(b, want), fmt.Sprintf("last code=%d body=%q err=%v", code, b, err)
	})
	return body
}

// WaitHTTP waits until url answers 200 with a body containing want.
func (p *Platform) WaitHTTP(url, want string, timeout time.Duration) {
	p.t.Helper()
	Eventually(p.t, timeout, url+" to answer", func() (bool, string) {
		if p.Coordinator != nil && p.Coordinator.Exited() {
			p.t.Fatalf("coordinator exited:\n%s", p.Coordinator.Log())
		}
		resp, err := http.Get(url)
		if err != nil {
			return false, err.Error()
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200 && strings.Contains(string(b), want), fmt.Sprintf("%d %q", resp.StatusCode, b)
	})
}

// Eventually polls cond until it holds, failing the test with cond's last
// message when the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	poll.Until(t, timeout, what, cond)
}

// Client returns an etcd client of the platform's etcd with the
// administrator's credential, closed with the test.
func (p *Platform) Client() *clientv3.Client {
	p.t.Helper()
	return p.ClientAs(p.AdminDir)
}

// ClientAs returns an etcd client with the credentials in dir (a node's
// <state-dir>/credentials, say), closed with the test.
func (p *Platform) ClientAs(dir string) *clientv3.Client {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := etcdconn.Config{Credentials: dir, Prefix: state.DefaultPrefix}.Dial(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { c.Close() })
	return c
}

// Leader returns the coordinator that currently leads, or nil.
func (p *Platform) Leader() *Proc {
	p.t.Helper()
	c := p.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, state.NewKeys("").Election()+"/", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil || len(resp.Kvs) == 0 {
		return nil
	}
	v := string(resp.Kvs[0].Value)
	for _, co := range p.Coordinators {
		if !co.Exited() && strings.HasSuffix(v, fmt.Sprintf("/%d", co.cmd.Process.Pid)) {
			return co
		}
	}
	return nil
}

// KillRestart kills the process with SIGKILL and starts it again at once.
func (p *Proc) KillRestart() {
	p.Kill()
	p.start()
}

// Containers lists the IDs of the running app containers an agent made (not
// its network sandboxes), by the value of one of their labels (e.g.
// "deis.type").
func Containers(t testing.TB, node string, filters ...string) []string {
	t.Helper()
	args := []string{"ps", "-q", "--no-trunc", "--filter", "label=deis.node=" + node, "--filter", "label=deis.formation"}
	for _, f := range filters {
		args = append(args, "--filter", "label="+f)
	}
	out, err := exec.Command("docker", args...).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))
}

// RemoveContainers force-removes every container an agent made.
func RemoveContainers(node string) {
	out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=deis.node="+node).Output()
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
	}
}
