package gitserver

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/deis/deis/testing/need"
	"github.com/deis/deis/testing/poll"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	gossh "golang.org/x/crypto/ssh"
)

// startSSH runs a git server without a builder: enough for connections and
// for what is refused before a build. Its formations are never destroyed,
// so nothing needs claiming (claimNothing).
func startSSH(t *testing.T, opts ...func(*Config)) *platform {
	t.Helper()
	need.Git(t)
	_, cli := etcdtest.Start(t)
	cfg := Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Store: state.NewStore(cli, "/test"),
		HookCommand: []string{"/bin/false"}, Claimer: claimNothing{}, Registerer: prometheus.NewRegistry()}
	for _, o := range opts {
		o(&cfg)
	}
	return serveGit(t, cfg)
}

// dialFrom connects to the server from local (an address of the loopback
// network), sends send and reads until the server closes the connection or
// a minute passes. It returns what the server sent, whether it closed the
// connection, and how long that took.
func (p *platform) dialFrom(local, send string) (got string, closed bool, took time.Duration) {
	p.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", p.srv.Addr())
	if err != nil {
		p.t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if send != "" {
		if _, err := io.WriteString(c, send); err != nil {
			p.t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(time.Minute))
	b, err := io.ReadAll(c)
	closed = err == nil || errors.Is(err, syscall.ECONNRESET)
	return string(b), closed, time.Since(start)
}

// hold opens a connection from local and waits for the server's SSH
// version, proving the connection was admitted; it stays open until the
// test ends or the caller closes it.
func (p *platform) hold(local string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", p.srv.Addr())
	if err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SSH-2.0-deis") { // refused
		c.Close()
		return nil, errors.New("not admitted: the server sent " + strings.TrimSpace(line) + " and closed")
	}
	c.SetReadDeadline(time.Time{})
	p.t.Cleanup(func() { c.Close() })
	return c, nil
}

func (p *platform) mustHold(local string) net.Conn {
	p.t.Helper()
	c, err := p.hold(local)
	if err != nil {
		p.t.Fatalf("connection from %s: %v", local, err)
	}
	return c
}

// A connection that does not authenticate within the deadline is closed,
// wherever it stalls; one that authenticated is not.
func TestUnauthenticatedConnectionsAreClosed(t *testing.T) {
	p := startSSH(t, func(c *Config) { c.AuthTimeout = 500 * time.Millisecond })
	for _, tc := range []struct{ name, send string }{
		{"silent", ""},
		{"version only", "SSH-2.0-OpenSSH_9.2\r\n"},
	} {
		got, closed, took := p.dialFrom("127.0.0.1", tc.send)
		if !closed {
			t.Errorf("%s: the server kept the connection open for %s", tc.name, took)
		}
		if !strings.HasPrefix(got, "SSH-2.0-deis") {
			t.Errorf("%s: the server did not say hello before closing: %q", tc.name, got)
		}
		t.Logf("%s: closed after %s", tc.name, took.Round(time.Millisecond))
	}

	// a client that completes the key exchange, then stalls in
	// authentication (its key callback returns only when the test says so)
	stall := make(chan struct{})
	dialed := make(chan error, 1)
	go func() {
		_, err := gossh.Dial("tcp", p.srv.Addr(), &gossh.ClientConfig{
			User: "git", HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: time.Minute,
			Auth: []gossh.AuthMethod{gossh.PublicKeysCallback(func() ([]gossh.Signer, error) {
				<-stall
				return nil, errors.New("gave up")
			})},
		})
		dialed <- err
	}()
	poll.Until(t, 30*time.Second, "the stalled client's connection to be closed", func() (bool, string) {
		n, open := value(p.srv.m.closed.WithLabelValues(closedAuthTimeout)), value(p.srv.m.conns)
		return n == 3 && open == 0, fmt.Sprintf("%v closed for %s, %v open", n, closedAuthTimeout, open)
	})
	close(stall)
	if err := <-dialed; err == nil {
		t.Fatal("a client that never authenticated got a connection")
	}

	// an authenticated connection outlives the deadline: it still runs a
	// command after several deadlines have passed
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := gossh.NewSignerFromKey(priv)
	p.register("dev", signer.PublicKey())
	client, err := gossh.Dial("tcp", p.srv.Addr(), &gossh.ClientConfig{
		User: "git", HostKeyCallback: gossh.InsecureIgnoreHostKey(), Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	time.Sleep(4 * 500 * time.Millisecond) // a negative: wait past the deadline
	sess, err := client.NewSession()
	if err != nil {
		t.Fatalf("authenticated connection was closed: %v", err)
	}
	out, err := sess.CombinedOutput("ls")
	var exit *gossh.ExitError
	if !errors.As(err, &exit) || exit.ExitStatus() != 1 || !strings.Contains(string(out), `command "ls" is not allowed`) {
		t.Errorf("command on the authenticated connection: %v\n%s", err, out)
	}
	if n := value(p.srv.m.closed.WithLabelValues(closedAuthTimeout)); n != 3 {
		t.Errorf("%s closures counted: %v, want still 3", closedAuthTimeout, n)
	}
}

// Connections over the caps are closed at once, with a line that says why
// instead of the SSH version; closing one admits another.
func TestConnectionCaps(t *testing.T) {
	need.Binary(t, "ssh")
	p := startSSH(t, func(c *Config) { c.MaxConns, c.MaxConnsPerIP, c.AuthTimeout = 3, 2, time.Minute })
	a1 := p.mustHold("127.0.0.1")
	p.mustHold("127.0.0.1")

	// a third from the same address
	got, closed, took := p.dialFrom("127.0.0.1", "")
	if want := "deis: too many connections from 127.0.0.1; close some or try again later\r\n"; !closed || got != want {
		t.Errorf("third connection from one address: closed %v after %s, server sent %q, want %q", closed, took, got, want)
	}
	if took > 10*time.Second {
		t.Errorf("third connection from one address was closed after %s, not at once", took)
	}
	// what OpenSSH's user sees
	key, _ := p.newKey("dev")
	out, code := p.ssh(key, "-v", "git@127.0.0.1", "git-upload-pack", "'hello.git'")
	t.Logf("ssh over the per-address cap: status %d\n%s", code, out)
	if code != 255 {
		t.Errorf("ssh over the per-address cap: status %d, want 255", code)
	}

	// another address is admitted up to the total cap
	p.mustHold("127.0.0.2")
	got, closed, took = p.dialFrom("127.0.0.3", "")
	if !closed || got != "deis: too many connections; try again later\r\n" || took > 10*time.Second {
		t.Errorf("connection over the total cap: closed %v after %s, server sent %q", closed, took, got)
	}
	for reason, want := range map[string]float64{closedMaxConnsPerIP: 2, closedMaxConns: 1} {
		if n := value(p.srv.m.closed.WithLabelValues(reason)); n != want {
			t.Errorf("%s refusals counted: %v, want %v", reason, n, want)
		}
	}
	if n := value(p.srv.m.conns); n != 3 {
		t.Errorf("connections gauge %v, want 3", n)
	}

	// a closed connection frees its place
	a1.Close()
	poll.Until(t, 30*time.Second, "a place freed by a closed connection", func() (bool, string) {
		_, err := p.hold("127.0.0.1")
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// Pushes: only main and master, only up to the size limit; a refused push
// changes nothing in the repository.
func TestPushRules(t *testing.T) {
	p := start(t, func(c *Config) { c.MaxPushBytes = 256 << 10; c.Registerer = prometheus.NewRegistry() })
	key, pub := p.newKey("dev")
	p.register(state.BootstrapAdmin, pub)
	p.createFormation("hello")
	repo := p.appRepo(key, map[string]string{"Procfile": "web: python3 server.py\n", "server.py": "print('hi')\n"})
	bare := filepath.Join(p.dataDir, "repos", "hello.git")

	// main and master deploy
	if out, err := p.git(repo, key, "push", p.remote("hello"), "main"); err != nil {
		t.Fatalf("push of main: %v\n%s", err, out)
	}
	p.commit(repo, key, map[string]string{"server.py": "print('v2')\n"})
	out, err := p.git(repo, key, "push", p.remote("hello"), "main:master")
	if err != nil || !strings.Contains(out, "Launching... done, v2") {
		t.Fatalf("push of master: %v\n%s", err, out)
	}
	refsBefore := p.mustGit(repo, key, "ls-remote", p.remote("hello"))
	head := p.mustGit(repo, key, "rev-parse", "HEAD")

	// a push over the size limit is refused while it is received, and
	// nothing of it is kept: one large file (git unpacks a push of a few
	// objects) and many small ones (git indexes the pack)
	random := func(n int) string {
		b := make([]byte, n)
		rand.Read(b)
		return string(b)
	}
	many := map[string]string{}
	for i := range 200 {
		many[fmt.Sprintf("f%03d.bin", i)] = random(2 << 10)
	}
	for i, files := range []map[string]string{{"big.bin": random(1 << 20)}, many} {
		p.commit(repo, key, files)
		refused := p.mustGit(repo, key, "rev-parse", "HEAD")
		out, err := p.git(repo, key, "push", p.remote("hello"), "main")
		t.Logf("push over the size limit:\n%s", out)
		if err == nil {
			t.Fatal("a push over the size limit was accepted")
		}
		if want := "deis: push is larger than the 256.0KB limit (--max-push-bytes)"; !strings.Contains(out, want) {
			t.Errorf("refusal lacks %q", want)
		}
		if n := value(p.srv.m.pushRefused.WithLabelValues("too_large")); n != float64(i+1) {
			t.Errorf("too large pushes counted: %v, want %d", n, i+1)
		}
		if refs := p.mustGit(repo, key, "ls-remote", p.remote("hello")); refs != refsBefore {
			t.Errorf("refs changed by a refused push:\n%s\nwant\n%s", refs, refsBefore)
		}
		if out, err := p.git(bare, key, "cat-file", "-e", refused); err == nil {
			t.Errorf("the refused commit is in the repository\n%s", out)
		}
		if left, _ := filepath.Glob(filepath.Join(bare, "objects", "*incoming-*")); len(left) != 0 {
			t.Errorf("quarantine left behind: %v", left)
		}
		p.mustGit(repo, key, "reset", "-q", "--hard", head)
	}
	if v := p.latest("hello"); v != 2 {
		t.Errorf("latest release is v%d after refused pushes, want v2", v)
	}

	// other branches, tags and the deletion of main are refused, each with
	// what to do instead; so is a push of main together with another branch
	p.mustGit(repo, key, "tag", "-a", "-m", "release", "v1")
	p.commit(repo, key, map[string]string{"server.py": "print('v3')\n"})
	for _, tc := range []struct {
		refspecs []string
		want     string
	}{
		{[]string{"main:feature"}, "pushed branch feature: only main or master deploys: git push deis feature:main"},
		{[]string{"main", "main:feature"}, "pushed branch feature: only main or master deploys"},
		{[]string{"v1"}, "pushed tag v1: only main or master deploys, and tags are not kept"},
		{[]string{":main"}, "deleting branch main is refused"},
		{[]string{"main:refs/notes/x"}, "pushed ref refs/notes/x: only main or master deploys: git push deis HEAD:main"},
	} {
		out, err := p.git(repo, key, append([]string{"push", p.remote("hello")}, tc.refspecs...)...)
		if err == nil {
			t.Errorf("push %v was accepted:\n%s", tc.refspecs, out)
			continue
		}
		if !strings.Contains(out, tc.want) || !strings.Contains(out, "pre-receive hook declined") {
			t.Errorf("push %v: output lacks %q:\n%s", tc.refspecs, tc.want, out)
		}
	}
	if refs := p.mustGit(repo, key, "ls-remote", p.remote("hello")); refs != refsBefore {
		t.Errorf("refs changed by refused pushes:\n%s\nwant\n%s", refs, refsBefore)
	}
	if v := p.latest("hello"); v != 2 {
		t.Errorf("latest release is v%d after refused pushes, want v2", v)
	}
	// what the refusal suggests works
	if out, err := p.git(repo, key, "push", p.remote("hello"), "v1^{commit}:main"); err != nil {
		t.Errorf("push of the tagged commit to main: %v\n%s", err, out)
	}
}

func TestCheckRef(t *testing.T) {
	for _, tc := range []struct {
		ref     string
		deleted bool
		err     string // "" accepted
	}{
		{"refs/heads/main", false, ""},
		{"refs/heads/master", false, ""},
		// a branch left from before the rule may be deleted
		{"refs/heads/feature", true, ""},
		{"refs/heads/main", true, "deleting branch main is refused"},
		{"refs/heads/master", true, "deleting branch master is refused"},
		{"refs/heads/feature", false, "pushed branch feature: only main or master deploys: git push deis feature:main"},
		{"refs/heads/a/b", false, "pushed branch a/b"},
		{"refs/tags/v1", false, "pushed tag v1: only main or master deploys"},
		{"refs/tags/v1", true, "pushed tag v1"},
		{"refs/notes/commits", false, "pushed ref refs/notes/commits"},
		{"refs/heads/mainx", false, "pushed branch mainx"},
	} {
		err := checkRef(tc.ref, tc.deleted)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("checkRef(%s, deleted=%v) = %v, want accepted", tc.ref, tc.deleted, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("checkRef(%s, deleted=%v) = %v, want %q", tc.ref, tc.deleted, err, tc.err)
		}
	}
}

// The hook refuses before any build when one ref of a push is refused.
func TestHookRefusesBeforeBuilding(t *testing.T) {
	var out strings.Builder
	lines := "0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/main\n" +
		"0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/feature\n"
	// the socket does not exist: a build request would fail differently
	err := runHook(context.Background(), filepath.Join(t.TempDir(), "none.sock"), filepath.Join(t.TempDir(), "hello.git"), "", 0, strings.NewReader(lines), &out)
	if err == nil || !strings.Contains(out.String(), "pushed branch feature") || strings.Contains(out.String(), "build") {
		t.Fatalf("hook: %v\n%s", err, out.String())
	}
}

func TestCopyLimited(t *testing.T) {
	data := strings.Repeat("x", 100<<10)
	for _, tc := range []struct {
		limit int64
		over  bool
		n     int
	}{
		{0, false, len(data)},
		{int64(len(data)), false, len(data)},
		{int64(len(data)) - 1, true, -1},
		{10, true, 0},
	} {
		var dst strings.Builder
		over := copyLimited(&dst, strings.NewReader(data), tc.limit)
		if over != tc.over || (tc.n >= 0 && dst.Len() != tc.n) || int64(dst.Len()) > tc.limit && tc.limit > 0 {
			t.Errorf("limit %d: over %v, copied %d", tc.limit, over, dst.Len())
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{512: "512B", 256 << 10: "256.0KB", DefaultMaxPushBytes: "512.0MB", 3 << 29: "1.5GB"} {
		if got := state.HumanBytes(n); got != want {
			t.Errorf("state.HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// value reads a counter's or a gauge's value.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// A git session ends at the session time limit, and the hook it runs ends
// with it: a push that is gone builds nothing.
func TestSessionTimeLimit(t *testing.T) {
	need.Binary(t, "ssh")
	pidFile := filepath.Join(t.TempDir(), "hook.pid")
	p := startSSH(t, func(c *Config) {
		c.SessionTimeout = 2 * time.Second
		c.HookCommand = []string{"/bin/sh", "-c", "echo $$ > " + pidFile + "; exec sleep 60"}
	})
	key, pub := p.newKey("dev")
	p.register(state.BootstrapAdmin, pub)
	p.createFormation("hello")
	repo := p.appRepo(key, map[string]string{"Procfile": "web: python3 server.py\n"})
	out, err := p.git(repo, key, "push", p.remote("hello"), "main")
	t.Logf("push:\n%s", out)
	if err == nil || !strings.Contains(out, "deis: the session exceeded its 2s time limit and was ended") {
		t.Fatalf("push past the session time limit: %v", err)
	}
	if refs := p.mustGit(repo, key, "ls-remote", p.remote("hello")); strings.Contains(refs, "refs/") {
		t.Errorf("refs after the push was ended:\n%s", refs)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the hook did not run: %v", err)
	}
	pid := strings.TrimSpace(string(b))
	poll.Until(t, 30*time.Second, "the hook of the ended push to exit", func() (bool, string) {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil { // gone
			return true, ""
		}
		// a zombie waits only for its reaper
		f := strings.Fields(string(st))
		return len(f) > 2 && f[2] == "Z", "hook process " + pid + " is " + f[2]
	})
}

// What killed pushes leave in a repository is removed once no session can
// still own it.
func TestStaleQuarantinesAreRemoved(t *testing.T) {
	need.Binary(t, "ssh")
	p := startSSH(t, func(c *Config) { c.SessionTimeout = time.Minute })
	key, pub := p.newKey("dev")
	p.register(state.BootstrapAdmin, pub)
	p.createFormation("hello")
	// the first session creates the repository
	clone := filepath.Join(t.TempDir(), "c")
	p.mustGit(t.TempDir(), key, "clone", "-q", p.remote("hello"), clone)
	objects := filepath.Join(p.dataDir, "repos", "hello.git", "objects")
	old, fresh := filepath.Join(objects, "tmp_objdir-incoming-old"), filepath.Join(objects, "tmp_objdir-incoming-new")
	for _, d := range []string{old, fresh} {
		if err := os.MkdirAll(filepath.Join(d, "pack"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-time.Hour)
	if err := os.Chtimes(old, long, long); err != nil {
		t.Fatal(err)
	}
	p.mustGit(clone, key, "fetch", "-q", "origin")
	if _, err := os.Stat(old); err == nil {
		t.Error("an abandoned quarantine older than any session was kept")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a quarantine a running push may own was removed: %v", err)
	}
}
