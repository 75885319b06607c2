package gitserver

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/coordinator/builder"
	"github.com/deis/deis/coordinator/slugstore"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/deis/deis/testing/need"
	gossh "golang.org/x/crypto/ssh"
)

// hookArg makes the test binary act as the pre-receive hook, the way
// `deis-coordinator hook` does.
const hookArg = "__deis_test_hook"

func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == hookArg {
		if err := RunHook(context.Background(), os.Args[2], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type platform struct {
	t       *testing.T
	store   *state.Store
	srv     *Server
	dataDir string
	port    string
}

// start runs etcd, the builder (real Docker) on its unix socket and the git
// server on a free port, as the coordinator wires them; opts change the git
// server's Config.
func start(t *testing.T, opts ...func(*Config)) *platform {
	t.Helper()
	need.Git(t)
	need.Binary(t, "ssh")
	need.Stack(t)
	_, cli := etcdtest.Start(t)
	store := state.NewStore(cli, "/test")
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	slugs, err := slugstore.New(filepath.Join(dataDir, "slugs"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := builder.NewDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := builder.New(builder.Config{DataDir: dataDir, Store: store, Slugs: slugs, Docker: d, StackImage: need.StackImage,
		AppURL: func(f string) string { return "http://" + f + ".example.test/" }})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dataDir, "builder.sock")
	l, err := builder.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: b.Handler()}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Addr: "127.0.0.1:0", DataDir: dataDir, Store: store, HookCommand: []string{self, hookArg, sock}, Claimer: b}
	for _, o := range opts {
		o(&cfg)
	}
	return serveGit(t, cfg)
}

// serveGit runs a git server with cfg until ctx ends (no builder: enough
// for what is refused before a build).
func serveGit(t *testing.T, cfg Config) *platform {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("ListenAndServe: %v", err)
		}
	})
	_, port, _ := strings.Cut(srv.Addr(), ":")
	return &platform{t: t, store: cfg.Store, srv: srv, dataDir: cfg.DataDir, port: port}
}

// newKey writes an ed25519 private key for ssh -i and returns its path and
// public key.
func (p *platform) newKey(name string) (string, gossh.PublicKey) {
	p.t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, name)
	if err != nil {
		p.t.Fatal(err)
	}
	path := filepath.Join(p.t.TempDir(), name)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		p.t.Fatal(err)
	}
	sshPub, err := gossh.NewPublicKey(pub)
	if err != nil {
		p.t.Fatal(err)
	}
	return path, sshPub
}

// register does what deisctl keys:add does.
func (p *platform) register(user string, key gossh.PublicKey) {
	p.t.Helper()
	fp := gossh.FingerprintSHA256(key)
	err := p.store.Create(context.Background(), p.store.Keys.SSHKey(state.SSHKeyID(fp)), state.SSHKey{
		Fingerprint: fp, User: user, PublicKey: strings.TrimSpace(string(gossh.MarshalAuthorizedKey(key))), Created: time.Now().UTC(),
	})
	if err != nil {
		p.t.Fatal(err)
	}
}

func (p *platform) createFormation(name string) {
	p.t.Helper()
	if err := p.store.Create(context.Background(), p.store.Keys.Formation(name), state.Formation{Name: name, Created: time.Now().UTC()}); err != nil {
		p.t.Fatal(err)
	}
}

func (p *platform) remote(name string) string {
	return fmt.Sprintf("ssh://git@127.0.0.1:%s/%s.git", p.port, name)
}

func sshOptions(key string) []string {
	return []string{"-i", key, "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"}
}

// git runs git in dir with key as the SSH identity and returns its output.
func (p *platform) git(dir, key string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_SSH_COMMAND=ssh "+strings.Join(sshOptions(key), " "),
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.test", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.test")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (p *platform) mustGit(dir, key string, args ...string) string {
	p.t.Helper()
	out, err := p.git(dir, key, args...)
	if err != nil {
		p.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(out)
}

// ssh runs a raw ssh command against the server and returns its combined
// output and exit status.
func (p *platform) ssh(key string, extra ...string) (string, int) {
	p.t.Helper()
	args := append(sshOptions(key), "-p", p.port)
	args = append(args, extra...)
	cmd := exec.Command("ssh", args...)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	default:
		p.t.Fatalf("ssh: %v", err)
		return "", 0
	}
}

func (p *platform) appRepo(key string, files map[string]string) string {
	p.t.Helper()
	dir := filepath.Join(p.t.TempDir(), "app")
	p.mustGit(p.t.TempDir(), key, "init", "-q", "-b", "main", dir)
	p.commit(dir, key, files)
	return dir
}

func (p *platform) commit(dir, key string, files map[string]string) {
	p.t.Helper()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			p.t.Fatal(err)
		}
	}
	p.mustGit(dir, key, "add", "-A")
	p.mustGit(dir, key, "commit", "-q", "-m", "change")
}

func (p *platform) latest(f string) int {
	p.t.Helper()
	rel, err := p.store.LatestRelease(context.Background(), f)
	if errors.Is(err, state.ErrNotFound) {
		return 0
	}
	if err != nil {
		p.t.Fatal(err)
	}
	return rel.Version
}

func TestPushBuildsAndReleases(t *testing.T) {
	p := start(t)
	key, pub := p.newKey("dev")
	p.register(state.BootstrapAdmin, pub) // keys:add's default user, an admin while it has no record
	p.createFormation("hello")
	repo := p.appRepo(key, map[string]string{"Procfile": "web: python3 server.py\n", "server.py": "print('hi')\n"})

	// a push to main builds, releases v1 and shows the build as it goes
	out, err := p.git(repo, key, "push", p.remote("hello"), "main")
	t.Logf("git push:\n%s", out)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	for _, want := range []string{
		"remote: -----> Procfile app detected",
		"remote: -----> Launching... done, v1",
		"remote:        http://hello.example.test/ deployed to Deis",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("push output lacks %q", want)
		}
	}
	rel, err := p.store.GetRelease(context.Background(), "hello", 1)
	if err != nil {
		t.Fatal(err)
	}
	head := p.mustGit(repo, key, "rev-parse", "HEAD")
	if rel.Build == nil || rel.Build.GitSHA != head || rel.Build.ProcessTypes["web"] != "python3 server.py" {
		t.Fatalf("release v1 = %+v", rel)
	}

	// the repository can be cloned back
	clone := filepath.Join(t.TempDir(), "clone")
	p.mustGit(t.TempDir(), key, "clone", "-q", p.remote("hello"), clone)
	if _, err := os.Stat(filepath.Join(clone, "server.py")); err != nil {
		t.Errorf("clone lacks server.py: %v", err)
	}

	// a broken Procfile rejects the push, names the line, releases nothing
	// and leaves main where it was
	p.commit(repo, key, map[string]string{"Procfile": "this is not a procfile\n"})
	out, err = p.git(repo, key, "push", p.remote("hello"), "main")
	t.Logf("git push of a broken Procfile:\n%s", out)
	if err == nil {
		t.Fatal("push of a broken Procfile was accepted")
	}
	if !strings.Contains(out, "Procfile") || !strings.Contains(out, "line 1") || !strings.Contains(out, "pre-receive hook declined") {
		t.Errorf("rejection does not explain itself:\n%s", out)
	}
	if v := p.latest("hello"); v != 1 {
		t.Errorf("latest release is v%d after a failed build, want v1", v)
	}
	if ls := p.mustGit(repo, key, "ls-remote", p.remote("hello"), "refs/heads/main"); !strings.Contains(ls, head+"\trefs/heads/main") {
		t.Errorf("remote main moved after a failed build, want %s:\n%s", head, ls)
	}
}

func TestRefusals(t *testing.T) {
	p := start(t)
	key, pub := p.newKey("dev")
	p.register(state.BootstrapAdmin, pub)
	p.createFormation("hello")
	repo := p.appRepo(key, map[string]string{"Procfile": "web: python3 server.py\n"})

	// an unregistered key is refused at authentication, with the reason
	stranger, strangerPub := p.newKey("stranger")
	out, err := p.git(repo, stranger, "push", p.remote("hello"), "main")
	if err == nil {
		t.Fatalf("push with an unregistered key succeeded:\n%s", out)
	}
	fp := gossh.FingerprintSHA256(strangerPub)
	if !strings.Contains(out, "key "+fp+" is not registered: add it with deisctl keys:add") {
		t.Errorf("refusal of an unknown key does not say why:\n%s", out)
	}
	// no key at all
	out, code := p.ssh(key, "-o", "PubkeyAuthentication=no", "-o", "PasswordAuthentication=no",
		"-o", "KbdInteractiveAuthentication=no", "git@127.0.0.1", "git-upload-pack", "'hello.git'")
	if code == 0 || !strings.Contains(out, "Permission denied") {
		t.Errorf("login without a key: status %d\n%s", code, out)
	}

	// a formation that does not exist
	out, err = p.git(repo, key, "push", p.remote("nope"), "main")
	if err == nil || !strings.Contains(out, `formation "nope" not found: create it with deisctl formations:create nope`) {
		t.Errorf("push to a missing formation: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(p.dataDir, "repos", "nope.git")); err == nil {
		t.Error("a repository was created for a missing formation")
	}

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"other command", []string{"git@127.0.0.1", "ls", "/"}, 1, `command "ls" is not allowed`},
		{"shell", []string{"-T", "git@127.0.0.1"}, 1, "this server has no shell"},
		// ssh -tt gives up when the PTY is refused (status 255 is ssh's own)
		{"shell with a pty", []string{"-tt", "git@127.0.0.1"}, 255, "PTY allocation request failed"},
		{"dot dot", []string{"git@127.0.0.1", "git-receive-pack '../x.git'"}, 1, `invalid repository name "../x"`},
		{"nested path", []string{"git@127.0.0.1", "git-upload-pack '/repos/hello.git'"}, 1, "invalid repository name"},
		// the server refuses to listen for the client
		{"remote forwarding", []string{"-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:" + p.port, "git@127.0.0.1"}, 255, "remote port forwarding failed"},
		// nor does it connect anywhere for the client (what -L and -W ask)
		{"local forwarding", []string{"-W", "127.0.0.1:" + p.port, "git@127.0.0.1"}, 255, "open failed"},
	} {
		out, code := p.ssh(key, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%s: status %d, want %d and %q:\n%s", tc.name, code, tc.code, tc.want, out)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(p.dataDir, "repos"))
	if len(entries) != 0 {
		t.Errorf("refused sessions created repositories: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(p.dataDir, "x.git")); err == nil {
		t.Error("a repository was created outside the repos directory")
	}
	if v := p.latest("hello"); v != 0 {
		t.Errorf("refused pushes released v%d", v)
	}
}

func TestHostKeyIsKept(t *testing.T) {
	need.Git(t)
	_, cli := etcdtest.Start(t)
	dir := t.TempDir()
	cfg := Config{DataDir: dir, Store: state.NewStore(cli, "/test"), HookCommand: []string{"/bin/true"}, Claimer: claimNothing{}}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a.HostKeyFingerprint() != b.HostKeyFingerprint() {
		t.Fatal("host key changed across restarts")
	}
	st, err := os.Stat(filepath.Join(dir, "ssh_host_ed25519_key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("host key file: %v, mode %v", err, st.Mode())
	}
}

func (p *platform) putUser(name string, admin bool) {
	p.t.Helper()
	if err := p.store.Put(context.Background(), p.store.Keys.User(name), state.User{Name: name, Admin: admin, Created: time.Now().UTC()}); err != nil {
		p.t.Fatal(err)
	}
}

func (p *platform) grant(f, user string) {
	p.t.Helper()
	if err := p.store.Put(context.Background(), p.store.Keys.Perm(f, user), state.Perm{Formation: f, User: user, Created: time.Now().UTC()}); err != nil {
		p.t.Fatal(err)
	}
}

// Who may push: admins everywhere, other users where they were granted a
// permission.
func TestPermissions(t *testing.T) {
	p := start(t)
	p.createFormation("shop")
	p.createFormation("blog")
	aliceKey, alicePub := p.newKey("alice")
	p.register("alice", alicePub)
	p.putUser("alice", false)
	carolKey, carolPub := p.newKey("carol")
	p.register("carol", carolPub)
	p.putUser("carol", true)
	adminKey, adminPub := p.newKey("admin")
	p.register(state.BootstrapAdmin, adminPub) // no user record: the bootstrap admin
	app := map[string]string{"Procfile": "web: python3 server.py\n", "server.py": "print('hi')\n"}
	repo := p.appRepo(aliceKey, app)

	// alice, with no permission, is refused, told why and what to do; nothing
	// is built and no repository is created
	out, err := p.git(repo, aliceKey, "push", p.remote("shop"), "main")
	if err == nil {
		t.Fatalf("push without permission succeeded:\n%s", out)
	}
	if want := "user alice may not push to formation shop: ask an admin to run deisctl perms:grant alice -f shop"; !strings.Contains(out, want) {
		t.Errorf("refusal does not say %q:\n%s", want, out)
	}
	if _, err := os.Stat(filepath.Join(p.dataDir, "repos", "shop.git")); err == nil {
		t.Error("a refused push created the repository")
	}
	// she cannot fetch either, nor learn whether a formation exists
	out, err = p.git(t.TempDir(), aliceKey, "clone", "-q", p.remote("ghost"), "x")
	if err == nil || !strings.Contains(out, "user alice may not fetch from formation ghost") {
		t.Errorf("clone of a formation alice may not access: %v\n%s", err, out)
	}

	// an admin with a user record may push
	if out, err := p.git(repo, carolKey, "push", p.remote("blog"), "main"); err != nil {
		t.Fatalf("admin push: %v\n%s", err, out)
	}
	// so may keys of "admin" without a record (deisctl keys:add's default)
	if out, err := p.git(repo, adminKey, "push", p.remote("shop"), "main"); err != nil {
		t.Fatalf("bootstrap admin push: %v\n%s", err, out)
	}

	// once granted shop, alice may push there (and only there)
	p.grant("shop", "alice")
	p.commit(repo, aliceKey, map[string]string{"server.py": "print('v2')\n"})
	if out, err := p.git(repo, aliceKey, "push", p.remote("shop"), "main"); err != nil {
		t.Fatalf("push after perms:grant: %v\n%s", err, out)
	}
	if v := p.latest("shop"); v != 2 {
		t.Errorf("shop is at v%d, want v2 (admin's push, then alice's)", v)
	}
	out, err = p.git(repo, aliceKey, "push", p.remote("blog"), "main")
	if err == nil || !strings.Contains(out, "user alice may not push to formation blog") {
		t.Errorf("alice pushed to blog without a permission there: %v\n%s", err, out)
	}

	// a user record for "admin" is authoritative: without Admin it is an
	// ordinary user
	p.putUser(state.BootstrapAdmin, false)
	out, err = p.git(repo, adminKey, "push", p.remote("blog"), "main")
	if err == nil || !strings.Contains(out, "user admin may not push to formation blog") {
		t.Errorf("admin with a non-admin record pushed: %v\n%s", err, out)
	}
}
