package systemd

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deis/deis/testing/harness"
	"github.com/deis/deis/testing/need"
)

// Image is the image the test boots; mkimage.sh builds it.
const Image = "deis/systemd-test:bookworm"

// moduleRoot is the repository's top directory, seen from this package.
const moduleRoot = "../.."

// needImage builds the image unless it exists (mkimage.sh returns at once
// then). Without it the test skips, or fails when CI is set.
func needImage(t *testing.T) {
	t.Helper()
	need.Docker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(moduleRoot, "testing", "systemd", "mkimage.sh"), Image).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("the image %s (testing/systemd/mkimage.sh): %v\n%s", Image, err, out)
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is required when CI is set", msg)
		}
		t.Skipf("%s not available (set CI=1 to make this a failure)", msg)
	}
}

// machine is a container running systemd as PID 1.
type machine struct {
	t    *testing.T
	name string
}

// boot starts the container and waits until systemd finished booting. The
// container is removed when the test ends.
func boot(t *testing.T, name string, mounts ...string) *machine {
	t.Helper()
	args := []string{"run", "-d", "--name", name, "--label", "deis.test=systemd", "--hostname", name,
		"--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--security-opt", "seccomp=unconfined",
		"--tmpfs", "/run", "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
		"--network", "host"}
	for _, m := range mounts {
		args = append(args, "-v", m)
	}
	args = append(args, Image, "/sbin/init")
	m := &machine{t: t, name: name}
	// Before the run: a container that was created but failed to start
	// is removed too.
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("docker", "exec", name, "journalctl", "--no-pager", "-n", "300").CombinedOutput()
			t.Logf("---- journal of %s ----\n%s", name, out)
		}
		exec.Command("docker", "rm", "-f", name).Run()
	})
	if out, err := exec.Command("docker", args...).CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	// systemctl fails until systemd has made its bus socket.
	var state string
	harness.Eventually(t, time.Minute, "systemd to finish booting", func() (bool, string) {
		out, _ := m.exec("systemctl", "is-system-running", "--wait")
		state = strings.TrimSpace(out)
		return !strings.Contains(state, "Failed to connect to bus"), state
	})
	switch {
	case state == "running":
	case state == "degraded":
		// Units unrelated to the platform may fail in a container; the
		// platform's are checked one by one below.
		failed, _ := m.exec("systemctl", "--failed", "--no-legend", "--plain")
		t.Logf("systemd booted degraded; failed units:\n%s", failed)
	default:
		t.Fatalf("systemd did not boot: is-system-running says %q", state)
	}
	return m
}

// exec runs a command in the container and returns its combined output.
func (m *machine) exec(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", append([]string{"exec", m.name}, args...)...).CombinedOutput()
	return string(out), err
}

// must is exec that fails the test on error.
func (m *machine) must(args ...string) string {
	m.t.Helper()
	out, err := m.exec(args...)
	if err != nil {
		m.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// write puts a file into the container.
func (m *machine) write(path, content string, mode os.FileMode) {
	m.t.Helper()
	tmp := filepath.Join(m.t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(content), mode); err != nil {
		m.t.Fatal(err)
	}
	m.copy(tmp, path)
}

// copy copies a host file into the container.
func (m *machine) copy(src, dst string) {
	m.t.Helper()
	m.must("mkdir", "-p", filepath.Dir(dst))
	if out, err := exec.Command("docker", "cp", src, m.name+":"+dst).CombinedOutput(); err != nil {
		m.t.Fatalf("docker cp %s: %v\n%s", src, err, out)
	}
}

// show returns one property of a unit (systemctl show -p NAME --value).
func (m *machine) show(unit, prop string) string {
	out, _ := m.exec("systemctl", "show", "-p", prop, "--value", unit)
	return strings.TrimSpace(out)
}

// journal returns a unit's journal.
func (m *machine) journal(unit string) string {
	out, _ := m.exec("journalctl", "-u", unit, "--no-pager", "-o", "cat")
	return out
}

// dockerStub stands in for the Debian package's docker.service: the engine
// is the host's, reached through its socket mounted at /run/docker.sock.
const dockerStub = `[Unit]
Description=The host's Docker engine, reached through /run/docker.sock (test stand-in)

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/test -S /run/docker.sock
`

// inspect returns fields of a container (docker inspect --format).
func inspect(t *testing.T, id, format string) string {
	t.Helper()
	out, err := exec.Command("docker", "inspect", "--format", format, id).Output()
	if err != nil {
		t.Fatalf("docker inspect %s: %v", id, err)
	}
	return strings.TrimSpace(string(out))
}

func TestUnitsUnderSystemd(t *testing.T) {
	needImage(t)
	p := harness.NewPlatform(t)
	bin := harness.Binaries(t)
	suffix := filepath.Base(p.Dir)
	suffix = suffix[len(suffix)-6:]
	node := "systemd-" + suffix

	// The agent bind-mounts extracted slugs into app containers, which the
	// host's engine resolves on the host: the state directory has the same
	// path inside and outside.
	stateDir := filepath.Join(p.Dir, "agent-state")
	if err := os.Mkdir(stateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The agent is gone with the container; its nginx master (a
		// process of the container) too. What it made on the engine stays.
		harness.RemoveContainers(node)
	})
	m := boot(t, "deis-systemd-"+suffix, "/var/run/docker.sock:/run/docker.sock", stateDir+":"+stateDir)

	m.copy(filepath.Join(bin, "deis-agent"), "/usr/local/bin/deis-agent")
	m.copy(filepath.Join(bin, "deis-coordinator"), "/usr/local/bin/deis-coordinator")
	for _, u := range []string{"deis-agent.service", "deis-coordinator.service"} {
		m.copy(filepath.Join(moduleRoot, "systemd", u), "/etc/systemd/system/"+u)
	}
	m.write("/etc/systemd/system/docker.service", dockerStub, 0o644)
	metrics := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t, "127.0.0.1"))
	join := p.JoinToken(node, "role=runtime,role=proxy") // --join T --coordinator U --ca-fingerprint F
	m.write("/etc/deis/agent.env", strings.Join([]string{
		"DEIS_JOIN_TOKEN=" + join[1],
		"DEIS_COORDINATOR_URL=" + join[3],
		"DEIS_CA_FINGERPRINT=" + join[5],
		"DEIS_NODE_NAME=" + node,
		"DEIS_NODE_ADDR=127.0.0.1",
		"DEIS_NODE_LABELS=role=runtime,role=proxy",
		"DEIS_STATE_DIR=" + stateDir,
		fmt.Sprintf("DEIS_HTTP_LISTEN=127.0.0.1:%d", p.AppPort),
		"DEIS_METRICS_ADDR=" + metrics,
		"DEIS_API_ADDR=127.0.0.1:0",
		"DEIS_STOP_GRACE=5s",
		"DEIS_LOG_LEVEL=debug",
	}, "\n")+"\n", 0o600)
	m.must("systemctl", "daemon-reload")
	m.must("systemctl", "enable", "--now", "deis-agent")
	if !strings.Contains(m.must("systemctl", "is-enabled", "deis-agent"), "enabled") {
		t.Fatal("deis-agent is not enabled")
	}
	harness.Eventually(t, time.Minute, "the agent under systemd to register its node", func() (bool, string) {
		if s := m.show("deis-agent", "ActiveState"); s != "active" {
			return false, "deis-agent is " + s + "\n" + m.journal("deis-agent")
		}
		out, _ := p.Ctl("", "nodes:list")
		return strings.Contains(out, node), out
	})
	if resp, err := http.Get("http://" + metrics + "/metrics"); err != nil {
		t.Errorf("the agent's /metrics: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("the agent's /metrics answers %s", resp.Status)
		}
	}

	// A real push: built by the harness's coordinator, run by the agent
	// under systemd, served by its proxy.
	key := p.NewKey("user-sd")
	p.MustCtl("", "keys:add", key+".pub")
	p.MustCtl("", "formations:create", "sd")
	repo := p.AppRepo("hello", "sd")
	if out, err := p.Git(repo, key, "push", "deis", "main"); err != nil {
		t.Fatalf("git push: %v\n%s", err, out)
	}
	proxy := &harness.Agent{Name: node, Addr: "127.0.0.1", HTTPPort: p.AppPort}
	p.WaitApp(proxy, "sd.localhost", "hello from sd (v1)", 2*time.Minute)
	ids := harness.Containers(t, node, "deis.formation=sd")
	if len(ids) != 1 {
		t.Fatalf("the agent runs %d containers of sd, want 1", len(ids))
	}
	app := ids[0]
	// The unit's LimitNOFILE reaches the process, unless systemd itself
	// may not raise it (a container without CAP_SYS_RESOURCE, whose hard
	// limit is lower: then the agent gets that).
	want := 65536
	if hard := openFiles(t, m.must("cat", "/proc/1/limits")); hard < want {
		t.Logf("systemd's own open files limit is %d here: LimitNOFILE=%d is checked as %d", hard, want, hard)
		want = hard
	}
	if got := openFiles(t, m.must("cat", "/proc/"+m.show("deis-agent", "MainPID")+"/limits")); got != want {
		t.Errorf("the agent may open %d files, want %d (LimitNOFILE)", got, want)
	}
	started := inspect(t, app, "{{.State.StartedAt}}")
	nginxPID := readPID(t, filepath.Join(stateDir, "nginx", "nginx.pid"))
	oldPID := m.show("deis-agent", "MainPID")

	// kill -9 of the agent, while a client keeps asking the app.
	var asked, failed atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { stop(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			code, body, err := harness.Get("127.0.0.1", p.AppPort, "sd.localhost")
			asked.Add(1)
			if err != nil || code != http.StatusOK || !strings.Contains(body, "hello from sd (v1)") {
				failed.Add(1)
			}
		}
	}()
	m.must("kill", "-9", oldPID)
	harness.Eventually(t, time.Minute, "systemd to restart the killed agent", func() (bool, string) {
		pid, st := m.show("deis-agent", "MainPID"), m.show("deis-agent", "ActiveState")
		return pid != "0" && pid != oldPID && st == "active", "MainPID " + pid + ", " + st
	})
	if n := m.show("deis-agent", "NRestarts"); n != "1" {
		t.Errorf("NRestarts of deis-agent is %s, want 1", n)
	}
	// The new agent found the app container and adopted it.
	harness.Eventually(t, time.Minute, "the restarted agent to adopt the app container", func() (bool, string) {
		j := m.journal("deis-agent")
		return strings.Count(j, "agent started") == 2 && strings.Contains(j, "adopting running container"), j
	})
	untouched := func(after string) {
		t.Helper()
		if now := harness.Containers(t, node, "deis.formation=sd"); len(now) != 1 || now[0] != app {
			t.Errorf("app containers after %s: %v, want only %s", after, now, app)
		} else if s := inspect(t, app, "{{.State.StartedAt}} {{.RestartCount}}"); s != started+" 0" {
			t.Errorf("the app container restarted with %s: started/restarts %q, was %q", after, s, started+" 0")
		}
		// The pid file holds a pid of the container's namespace.
		if pid := readPID(t, filepath.Join(stateDir, "nginx", "nginx.pid")); pid != nginxPID {
			t.Errorf("the proxy's nginx master changed from %d to %d with %s: KillMode=process should keep it", nginxPID, pid, after)
		} else if out, err := m.exec("kill", "-0", strconv.Itoa(pid)); err != nil {
			t.Errorf("the proxy's nginx master %d is gone after %s: %v %s", pid, after, err, out)
		}
	}
	p.WaitApp(proxy, "sd.localhost", "hello from sd (v1)", 30*time.Second)
	untouched("the kill -9")

	// systemctl restart, as an upgrade does (docs/operations.md): a clean
	// stop on SIGTERM, and again nothing of the app's is touched.
	killedPID := m.show("deis-agent", "MainPID")
	m.must("systemctl", "restart", "deis-agent")
	harness.Eventually(t, time.Minute, "the agent to start again after systemctl restart", func() (bool, string) {
		pid, st := m.show("deis-agent", "MainPID"), m.show("deis-agent", "ActiveState")
		j := m.journal("deis-agent")
		return pid != "0" && pid != killedPID && st == "active" && strings.Count(j, "agent started") == 3,
			"MainPID " + pid + ", " + st
	})
	if j := m.journal("deis-agent"); !strings.Contains(j, "deis-agent.service: Deactivated successfully") {
		t.Errorf("the agent did not exit cleanly on systemctl restart's SIGTERM:\n%s", j)
	}
	p.WaitApp(proxy, "sd.localhost", "hello from sd (v1)", 30*time.Second)
	stop()
	<-done
	if failed.Load() > 0 {
		t.Errorf("%d of %d requests failed while the agent was killed and restarted", failed.Load(), asked.Load())
	}
	untouched("systemctl restart")
	j := m.journal("deis-agent")
	for _, want := range []string{"agent started", "runtime started", "container ready", "agent stopped; containers and nginx keep serving"} {
		if !strings.Contains(j, want) {
			t.Errorf("journalctl -u deis-agent lacks %q:\n%s", want, j)
		}
	}

	// The coordinator unit: a second coordinator that joins the election.
	web := harness.FreePort(t, "127.0.0.1")
	for src, dst := range map[string]string{p.CACert: "/etc/deis/pki/ca.crt", p.CAKey: "/etc/deis/pki/ca.key"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		m.write(dst, string(b), 0o600)
	}
	joinAddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t, "127.0.0.1"))
	m.write("/etc/deis/coordinator.env", strings.Join([]string{
		"DEIS_ETCD_ENDPOINTS=" + p.EtcdURL,
		"DEIS_CA_CERT=/etc/deis/pki/ca.crt",
		"DEIS_CA_KEY=/etc/deis/pki/ca.key",
		"DEIS_JOIN_ADDR=" + joinAddr,
		"DEIS_JOIN_URL=https://" + joinAddr,
		"DEIS_DATA_DIR=/var/lib/deis",
		fmt.Sprintf("DEIS_SSH_ADDR=127.0.0.1:%d", harness.FreePort(t, "127.0.0.1")),
		fmt.Sprintf("DEIS_HTTP_ADDR=127.0.0.1:%d", web),
		fmt.Sprintf("DEIS_SLUG_URL=https://127.0.0.1:%d", web),
		fmt.Sprintf("DEIS_APP_PORT=%d", p.AppPort),
		"DEIS_GO_ROOT=",
	}, "\n")+"\n", 0o600)
	m.must("systemctl", "start", "deis-coordinator")
	harness.Eventually(t, time.Minute, "the coordinator under systemd to serve /healthz", func() (bool, string) {
		if s := m.show("deis-coordinator", "ActiveState"); s != "active" {
			return false, "deis-coordinator is " + s + "\n" + m.journal("deis-coordinator")
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", web))
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	if j := m.journal("deis-coordinator"); !strings.Contains(j, "coordinator started") {
		t.Errorf("journalctl -u deis-coordinator lacks \"coordinator started\":\n%s", j)
	}
	m.must("systemctl", "stop", "deis-coordinator")
	if s := m.show("deis-coordinator", "ActiveState"); s != "inactive" {
		t.Errorf("deis-coordinator is %s after systemctl stop, want inactive (a clean exit on SIGTERM)", s)
	}
}

// readPID reads a pid file.
func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pid
}

// openFiles reads the hard limit of open files from a /proc/PID/limits.
func openFiles(t *testing.T, limits string) int {
	t.Helper()
	m := regexp.MustCompile(`Max open files\s+\S+\s+(\d+)`).FindStringSubmatch(limits)
	if m == nil {
		t.Fatalf("no open files limit in:\n%s", limits)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
