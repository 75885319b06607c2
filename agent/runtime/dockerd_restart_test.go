package runtime_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deis/deis/agent/runtime"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
	"github.com/docker/docker/client"
)

// privateEngine is a dockerd of the test's own (own data and exec roots,
// socket and pid file; no default bridge, no iptables rules, no
// masquerading), so that the test can restart it: the shared engine is
// never restarted.
type privateEngine struct {
	t    *testing.T
	dir  string
	host string // DOCKER_HOST
	cmd  *exec.Cmd
}

func (e *privateEngine) start() {
	e.t.Helper()
	logf, err := os.OpenFile(filepath.Join(e.dir, "dockerd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	defer logf.Close()
	e.cmd = exec.Command("dockerd", "--data-root", filepath.Join(e.dir, "data"), "--exec-root", filepath.Join(e.dir, "exec"),
		"--pidfile", filepath.Join(e.dir, "dockerd.pid"), "-H", e.host,
		"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false")
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := e.cmd.Start(); err != nil {
		e.t.Fatalf("start a private dockerd: %v", err)
	}
	waitFor(e.t, "the private dockerd answering", func() bool {
		return exec.Command("docker", "-H", e.host, "version").Run() == nil
	}, e.log)
}

// stop ends dockerd as a restart does: it stops the containers, whose
// restart policy (unless-stopped) brings them back when it starts again.
func (e *privateEngine) stop() {
	e.t.Helper()
	if e.cmd == nil {
		return
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- e.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = e.cmd.Process.Kill()
		<-done
		e.t.Errorf("the private dockerd ignored SIGTERM for a minute:\n%s", e.log())
	}
	e.cmd = nil
}

func (e *privateEngine) docker(args ...string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", append([]string{"-H", e.host}, args...)...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func (e *privateEngine) log() string {
	b, _ := os.ReadFile(filepath.Join(e.dir, "dockerd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// serverGo answers every request with "hi": a static binary for an image
// made from nothing, since the private engine has no images.
const serverGo = `package main

import (
	"io"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi\n") })
	panic(http.ListenAndServe(":"+os.Getenv("PORT"), nil))
}
`

// After dockerd restarts, with the agent stopped, the app answers again on
// the address the proxies route to: its container comes back on the same
// host port.
func TestAppServesAgainAfterDockerdRestart(t *testing.T) {
	need.Docker(t)
	need.Binary(t, "dockerd")
	goBin := need.Binary(t, "go")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("a private dockerd needs root")
		}
		t.Skip("a private dockerd needs root")
	}
	dir, err := os.MkdirTemp("", "deis-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	eng := &privateEngine{t: t, dir: dir, host: "unix://" + filepath.Join(dir, "docker.sock")}
	t.Cleanup(func() {
		if eng.cmd != nil {
			if ids := strings.Fields(eng.docker("ps", "-aq")); len(ids) > 0 {
				eng.docker(append([]string{"rm", "-f"}, ids...)...)
			}
			eng.docker("network", "prune", "-f")
		}
		eng.stop()
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("remove the private engine's directory: %v", err)
		}
	})

	// The image: one static binary, imported into the private engine.
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(filepath.Join(src, "root"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module srv\n\ngo 1.22\n"), 0o644)
	os.WriteFile(filepath.Join(src, "main.go"), []byte(serverGo), 0o644)
	build := exec.Command(goBin, "build", "-o", filepath.Join(src, "root", "srv"), ".")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the server: %v: %s", err, out)
	}
	tar := filepath.Join(src, "img.tar")
	if out, err := exec.Command("tar", "-C", filepath.Join(src, "root"), "-cf", tar, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	eng.start()
	eng.docker("import", "-c", `CMD ["/srv"]`, tar, "deis-test/srv:1")
	eng.docker("network", "create", "apps")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cli, err := client.NewClientWithOpts(client.WithHost(eng.host), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, cli)
	e.cfg.Network = "apps"
	spec := state.ContainerSpec{Name: "back.v1.web.1", Formation: "back", Release: 1, Type: "web", Index: 1,
		Image: "deis-test/srv:1", Port: 5000, Env: map[string]string{"PORT": "5000"}}
	e.assign(spec)
	e.start()
	st := e.waitStatus("the container ready", readyIn(spec.Name))
	c, _ := find(st, spec.Name)
	answers := func() bool {
		resp, err := http.Get("http://" + c.Addr + "/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b) == "hi\n"
	}
	if !answers() {
		t.Fatalf("the app does not answer on %s", c.Addr)
	}

	// The agent stops; dockerd restarts.
	e.stop()
	eng.stop()
	if answers() {
		t.Fatal("the app still answers with its engine stopped")
	}
	began := time.Now()
	eng.start()
	waitFor(t, "the app answering on "+c.Addr+" again", answers, func() string {
		return eng.docker("ps", "-a", "--format", "{{.Names}} {{.Status}} {{.Ports}}") + "\n" + eng.log()
	})
	t.Logf("the app answered on %s again %s after dockerd started", c.Addr, time.Since(began).Round(time.Millisecond))

	// A new agent adopts the container as it is.
	restarted := time.Now()
	e.start()
	st = e.waitStatus("a new agent to report the container ready", func(st state.NodeStatus) bool {
		return st.Updated.After(restarted) && readyIn(spec.Name)(st)
	})
	if c2, _ := find(st, spec.Name); c2.ID != c.ID || c2.Addr != c.Addr {
		t.Errorf("after the restart: %+v, want container %s at %s", c2, c.ID, c.Addr)
	}
	if ids := eng.docker("ps", "-aq", "--no-trunc"); ids != c.ID {
		t.Errorf("containers after the restarts: %q, want only %s", ids, c.ID)
	}
	var _ runtime.Docker = cli
}
