package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/harness"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The hostile suite plays an attacker who may push to some formations and
// nothing else (docs/security.md). Every attack runs for real through the
// whole platform: a build that runs the pusher's code (testing/apps/
// hostile-build: pip runs a local package's build backend), apps that probe
// their container from inside (testing/apps/hostile-probe), and raw TCP
// against the SSH server. Each attack must fail, with a clear message in the
// push output where there is one, while a victim formation keeps serving and
// a normal push still builds.
//
// The coordinator, etcd and the agent listen on the host's own address (not
// loopback), as on a real node, so that a container could route to them
// and only the platform's rules keep it out.

// The suite's limits: small, so that each attack crosses them quickly. The
// flags that set them are passed only when the binaries have them.
const (
	hostileBuildTimeout = 60 * time.Second
	// maxSlugBytes is the coordinator's and the agent's --max-slug-bytes
	// (the apps here are tiny).
	maxSlugBytes = 32 << 20
	// slugExpandLimit is the agents' extraction limit (8 times the slug
	// limit); the tar bomb expands to bombMB, beyond it.
	slugExpandLimit = 8 * maxSlugBytes
	bombMB          = 400
	// maxSlugEntries is the agent's --max-slug-entries; the entries bomb
	// has twice as many.
	maxSlugEntries = 5000
	// maxPushBytes is the coordinator's --max-push-bytes.
	maxPushBytes = 2 << 20
	// sshAuthTimeout is the unauthenticated-connection deadline asked of
	// the SSH server, when it has the flag.
	sshAuthTimeout = 5 * time.Second
	// diskGuard stops the coordinator if its data directory grows past
	// this during the build-output attacks (a /dev/zero slug that is
	// read would otherwise fill the disk of the machine running the test).
	diskGuard = 1 << 30
	// dockerProbe is the formation that runs the probe app built from a
	// Dockerfile.
	dockerProbe = "net-docker"
)

func TestHostile(t *testing.T) {
	addr := hostAddr(t)
	// A short boot timeout: the tar bombs' releases fail (and say why in
	// deisctl status) sooner.
	coordArgs := []string{"--build-timeout", hostileBuildTimeout.String(), "--max-slug-bytes", strconv.Itoa(maxSlugBytes), "--boot-timeout", "30s"}
	coordArgs = append(coordArgs, ifFlag(t, "deis-coordinator", "--max-push-bytes", strconv.Itoa(maxPushBytes))...)
	coordArgs = append(coordArgs, ifFlag(t, "deis-coordinator", "--ssh-auth-timeout", sshAuthTimeout.String())...)
	agentArgs := ifFlag(t, "deis-agent", "--max-slug-bytes", strconv.Itoa(maxSlugBytes))
	agentArgs = append(agentArgs, ifFlag(t, "deis-agent", "--max-slug-entries", strconv.Itoa(maxSlugEntries))...)
	p := harness.NewPlatformWith(t, harness.PlatformOptions{Addr: addr, CoordinatorArgs: coordArgs})
	// Registered before the agent, so it runs after the agent's cleanup
	// has removed the containers: the Dockerfile app's images.
	removeAppImages(t, dockerProbe)
	a := p.StartAgent("hostile", harness.AgentOptions{Addr: addr, ExtraArgs: agentArgs})
	key := p.NewKey("admin")
	p.MustCtl("", "keys:add", key+".pub")

	// The victim: another formation that must keep serving throughout.
	p.MustCtl("", "formations:create", "victim")
	victimRepo := p.AppRepo("hello", "victim")
	if out, err := p.Git(victimRepo, key, "push", "deis", "main"); err != nil {
		t.Fatalf("push of the victim: %v\n%s", err, out)
	}
	p.WaitApp(a, "victim.localhost", "hello from victim (v1)", 3*time.Minute)
	watch := watchVictim(a, "victim.localhost")
	t.Cleanup(func() { watch.stop() })

	h := &hostile{p: p, a: a, key: key, addr: addr}
	t.Run("build outputs", h.buildOutputs)
	t.Run("tar bomb slug", h.tarBomb)
	t.Run("app containers", h.appContainers)
	t.Run("build network", h.buildNetwork)
	t.Run("destroy then re-create then clone", h.destroyRecreate)
	t.Run("silent SSH connections", h.silentSSH)
	t.Run("push and buildpack policy", h.policy)

	// Throughout: the victim kept serving. At the end: it still answers,
	// and a normal push still builds and goes live.
	if outages := watch.stop(); len(outages) > 0 {
		t.Errorf("the victim stopped answering during the attacks:\n%s", strings.Join(outages, "\n"))
	}
	p.WaitApp(a, "victim.localhost", "hello from victim", 10*time.Second)
	os.WriteFile(filepath.Join(victimRepo, "after.txt"), []byte("after the attacks\n"), 0o644)
	p.Git(victimRepo, key, "add", ".")
	p.Git(victimRepo, key, "commit", "-qm", "after the attacks")
	out, err := gitWithin(3*time.Minute, victimRepo, key, "push", "deis", "main")
	if err != nil {
		t.Fatalf("a normal push after the attacks failed: %v\n%s", err, out)
	}
	p.WaitApp(a, "victim.localhost", "hello from victim (v2)", 3*time.Minute)
}

type hostile struct {
	p    *harness.Platform
	a    *harness.Agent
	key  string
	addr string
}

// push creates formation f, sets its config, and pushes app to it; the
// push may take at most limit.
func (h *hostile) push(t *testing.T, app, f string, limit time.Duration, config ...string) (string, error) {
	t.Helper()
	return h.pushWith(t, app, f, limit, nil, config...)
}

// pushWith is push with files added to the app in a second commit.
func (h *hostile) pushWith(t *testing.T, app, f string, limit time.Duration, files map[string]string, config ...string) (string, error) {
	t.Helper()
	h.p.MustCtl("", "formations:create", f)
	if len(config) > 0 {
		h.p.MustCtl("", append([]string{"config:set", "-f", f}, config...)...)
	}
	repo := h.p.AppRepo(app, f)
	if len(files) > 0 {
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(repo, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		h.p.Git(repo, h.key, "add", ".")
		if out, err := h.p.Git(repo, h.key, "commit", "-qm", "more files"); err != nil {
			t.Fatalf("git commit: %v\n%s", err, out)
		}
	}
	start := time.Now()
	out, err := gitWithin(limit, repo, h.key, "push", "deis", "main")
	t.Logf("push of %s to %s took %s: err=%v\n%s", app, f, time.Since(start).Round(time.Second), err, redact(out))
	return out, err
}

// shadowLine matches a line of /etc/shadow.
var shadowLine = regexp.MustCompile(`(?m)\broot:[^:\s]*:\d*:`)

// privateKey matches a PEM private key block, or what is left of one.
var privateKey = regexp.MustCompile(`(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)`)

// redact hides the secrets an attack may have brought back, so that the
// test's own log does not spread them.
func redact(text string) string {
	text = privateKey.ReplaceAllString(text, "[REDACTED PRIVATE KEY]")
	return regexp.MustCompile(`(?m)\b(\w[\w.-]*):[^:\s]*:(\d*):[^\n]*$`).ReplaceAllString(text, "$1:[REDACTED SHADOW LINE]")
}

// noSecrets fails the test if text carries a secret the build aimed at.
func noSecrets(t *testing.T, where, text string) {
	t.Helper()
	if strings.Contains(text, "PRIVATE KEY") {
		t.Errorf("%s leaks the coordinator's SSH host key:\n%s", where, redact(text))
	}
	if shadowLine.MatchString(text) {
		t.Errorf("%s leaks /etc/shadow:\n%s", where, redact(text))
	}
}

// buildOutputs: a build leaves a symlink, a FIFO or a device at its output
// paths. The coordinator must never follow them on the host.
func (h *hostile) buildOutputs(t *testing.T) {
	p := h.p
	guard := guardDisk(t, p, diskGuard)
	defer func() { guard.stop() }()
	hostKey := filepath.Join(p.Dir, "coordinator0", "ssh_host_ed25519_key")
	if _, err := os.Stat(hostKey); err != nil {
		t.Fatalf("the coordinator's host key should be at %s: %v", hostKey, err)
	}
	for _, tc := range []struct {
		name, formation, attack, target string
		mustFail                        bool
	}{
		{"failure is a symlink to the SSH host key", "evil-hostkey", "link-failure", hostKey, true},
		{"failure is a symlink to /etc/shadow", "evil-shadow", "link-failure", "/etc/shadow", true},
		{"buildpack name is a symlink to /etc/shadow", "evil-bpname", "link-buildpack", "/etc/shadow", false},
		{"slug is a symlink to /dev/zero", "evil-zero", "link-slug", "/dev/zero", true},
		{"slug is a FIFO", "evil-fifo", "fifo-slug", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The build's own time limit, plus time to start and clean up.
			limit := hostileBuildTimeout + 45*time.Second
			start := time.Now()
			out, err := h.push(t, "hostile-build", tc.formation, limit, "ATTACK="+tc.attack, "TARGET="+tc.target)
			took := time.Since(start)
			if took >= limit {
				t.Fatalf("the push hung for %s (the build limit is %s): the coordinator is blocked on the build's output", took.Round(time.Second), hostileBuildTimeout)
			}
			noSecrets(t, "the push output", out)
			builds, _ := p.Ctl("", "builds", "-f", tc.formation, "--json")
			noSecrets(t, "deisctl builds", builds)
			noSecrets(t, "etcd", etcdDump(t, p, tc.formation))
			if guard.tripped() {
				recoverFromDiskGuard(t, p)
				guard = guardDisk(t, p, diskGuard)
				t.Fatalf("the coordinator's data directory grew past %d MiB: it read the build's output without a limit (killed and restarted it)", diskGuard>>20)
			}
			if tc.mustFail && err == nil {
				t.Fatalf("the push should be rejected:\n%s", redact(out))
			}
			if err != nil && !strings.Contains(strings.ToLower(out), "not a regular file") {
				t.Errorf("the rejection should say the build's output is not a regular file:\n%s", redact(out))
			}
		})
	}
}

// tarBomb: builds make slugs of a few hundred KiB that expand to hundreds
// of MiB, or hold more entries than the limit. The agent must refuse to
// extract them, with the reason visible, and the node's disk must not fill.
func (h *hostile) tarBomb(t *testing.T) {
	p, a := h.p, h.a
	bombs := []struct{ formation, reason string }{
		{"evil-bomb", "expands past"},
		{"evil-entries", "entries"},
	}
	pushed := map[string]bool{}
	for i, config := range [][]string{
		{"ATTACK=bomb", fmt.Sprintf("BOMB_MB=%d", bombMB)},
		{"ATTACK=entries", fmt.Sprintf("ENTRIES=%d", 2*maxSlugEntries)},
	} {
		f, reason := bombs[i].formation, bombs[i].reason
		out, err := h.push(t, "hostile-build", f, 3*time.Minute, config...)
		if err != nil {
			if !strings.Contains(out, reason) {
				t.Errorf("the push to %s was refused, but not because the slug %s the limit:\n%s", f, reason, out)
			}
			continue
		}
		pushed[f] = true
	}
	// Both releases fail together: wait for their reasons at once.
	start := time.Now()
	harness.Eventually(t, 2*time.Minute, "deisctl status to give each slug's extraction limit as the reason", func() (bool, string) {
		var missing []string
		for _, b := range bombs {
			if !pushed[b.formation] {
				continue
			}
			st, _ := p.Ctl("", "status", "-f", b.formation)
			if !strings.Contains(st, b.reason) || !strings.Contains(st, "refusing it") {
				missing = append(missing, st)
			} else if pushed[b.formation] {
				t.Logf("deisctl status after %s:\n%s", time.Since(start).Round(time.Second), st)
				pushed[b.formation] = false
			}
		}
		return len(missing) == 0, strings.Join(missing, "\n")
	})
	if n := dirSize(a.StateDir); n > slugExpandLimit+32<<20 {
		t.Errorf("the agent's state directory holds %d MiB: the slug was extracted past the %d MiB limit", n>>20, slugExpandLimit>>20)
	}
	for _, b := range bombs {
		if code, body, _ := get(a.Addr, a.HTTPPort, b.formation+".localhost", "/"); code == 200 && strings.Contains(body, "built") {
			t.Errorf("the release of %s runs and serves", b.formation)
		}
	}
}

// appContainers: two formations of the probe app look around from inside
// their containers.
func (h *hostile) appContainers(t *testing.T) {
	p, a := h.p, h.a
	for _, f := range []string{"net-a", "net-b"} {
		if out, err := h.push(t, "hostile-probe", f, 3*time.Minute); err != nil {
			t.Fatalf("push of the probe app to %s: %v\n%s", f, err, out)
		}
	}
	// The same app built from a Dockerfile: an image container, not a slug.
	if out, err := h.pushWith(t, "hostile-probe", dockerProbe, 3*time.Minute, map[string]string{
		"Dockerfile": "FROM deis/stack:bookworm\nCOPY . /app\nWORKDIR /app\nCMD [\"python3\", \"server.py\"]\n",
	}); err != nil {
		t.Fatalf("push of the probe app with a Dockerfile: %v\n%s", err, out)
	}
	for _, f := range []string{"net-a", "net-b", dockerProbe} {
		p.WaitApp(a, f+".localhost", "probe "+f, 3*time.Minute)
	}

	t.Run("network", func(t *testing.T) {
		targets := h.platformTargets(t)
		// The container's gateway is the host too: the same ports there.
		for _, gw := range gateways(t, a.Name, "net-a") {
			for _, port := range []int{p.SSHPort, p.HTTPPort} {
				targets[net.JoinHostPort(gw, strconv.Itoa(port))] = "the host's platform port on the container's gateway"
			}
		}
		const outside = "deb.debian.org:80"
		probes := append([]string{outside}, keys(targets)...)
		res := probe(t, a, "net-a.localhost", probes)
		for target, what := range targets {
			if res[target] == "connected" {
				t.Errorf("net-a's container connected to %s (%s)", target, what)
			} else {
				t.Logf("net-a -> %s (%s): %s", target, what, res[target])
			}
		}
		if res[outside] != "connected" {
			if c, err := net.DialTimeout("tcp", outside, 3*time.Second); err != nil {
				t.Logf("no outbound check: this machine cannot reach %s either (%v)", outside, err)
			} else {
				c.Close()
				t.Errorf("net-a's container cannot reach %s, which the host reaches: %s", outside, res[outside])
			}
		}
	})

	t.Run("privileges", func(t *testing.T) {
		privs := map[string]map[string]any{}
		for _, f := range []string{"net-a", "net-b", dockerProbe} {
			var pr map[string]any
			_, body, err := get(a.Addr, a.HTTPPort, f+".localhost", "/priv")
			if err != nil || json.Unmarshal([]byte(body), &pr) != nil {
				t.Fatalf("/priv of %s: %v %q", f, err, body)
			}
			t.Logf("%s: %s", f, body)
			privs[f] = pr
			if pr["CapEff"] != "0000000000000000" || pr["CapBnd"] != "0000000000000000" {
				t.Errorf("%s keeps capabilities: CapEff %v, CapBnd %v", f, pr["CapEff"], pr["CapBnd"])
			}
			if pr["NoNewPrivs"] != "1" {
				t.Errorf("%s may gain privileges (NoNewPrivs %v)", f, pr["NoNewPrivs"])
			}
			// A Dockerfile app runs as its image's USER (root here), confined.
			if uid, _ := pr["uid"].(float64); f != dockerProbe && (uid == 0 || uid == 1000) {
				t.Errorf("%s runs as uid %v: root, or the uid a host account has", f, uid)
			}
			if pr["root_writable"] != false || pr["root_readonly"] != true {
				t.Errorf("%s: the root filesystem should be mounted read-only (read-only %v, writable %v)", f, pr["root_readonly"], pr["root_writable"])
			}
			if pr["tmp_writable"] != true {
				t.Errorf("%s may not write to /tmp", f)
			}
			if n, err := strconv.ParseInt(fmt.Sprint(pr["pids.max"]), 10, 64); err != nil || n <= 0 || n > 1<<20 {
				t.Errorf("%s has no pids limit: pids.max %v", f, pr["pids.max"])
			}
			if n, err := strconv.ParseInt(fmt.Sprint(pr["memory.max"]), 10, 64); err != nil || n <= 0 || n >= 1<<50 {
				t.Errorf("%s has no memory limit: %v", f, pr["memory.max"])
			}
		}
		if privs["net-a"]["uid"] == privs["net-b"]["uid"] {
			t.Errorf("net-a and net-b run as the same uid %v", privs["net-a"]["uid"])
		}

		// A one-off container gets the same treatment.
		out, err := p.Ctl("", "run", "-f", "net-a", "--", "sh", "-c",
			"grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; echo uid=$(id -u); awk '$2==\"/\"{print \"rootfs:\" $4}' /proc/self/mounts; touch /tmp/x && echo tmp-ok")
		t.Logf("deisctl run: %v\n%s", err, out)
		for _, want := range []string{"CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1", "rootfs:ro", "tmp-ok"} {
			if !strings.Contains(out, want) {
				t.Errorf("deisctl run: the one-off container lacks %q", want)
			}
		}
		if strings.Contains(out, "uid=0\n") || strings.Contains(out, "uid=1000\n") {
			t.Errorf("deisctl run: the one-off container runs as uid 0 or 1000")
		}
	})

	t.Run("fork bomb", func(t *testing.T) {
		const most = 4096
		_, body, err := getWithin(2*time.Minute, a.Addr, a.HTTPPort, "net-a.localhost", fmt.Sprintf("/forkbomb?max=%d", most))
		t.Logf("fork bomb: %v %s", err, body)
		var r struct {
			Started int    `json:"started"`
			Error   string `json:"error"`
		}
		switch {
		case err != nil || json.Unmarshal([]byte(body), &r) != nil:
			t.Errorf("the fork bomb got no answer (%v): a pids limit makes starting a process fail at once", err)
		case r.Started >= most:
			t.Errorf("net-a started %d processes unhindered: no pids limit", r.Started)
		case r.Error == "":
			t.Errorf("the fork bomb stopped without an error: %s", body)
		}
		p.WaitApp(a, "net-a.localhost", "probe net-a", 2*time.Minute)
		p.WaitApp(a, "net-b.localhost", "probe net-b", 10*time.Second)
	})
}

// platformTargets are the host's platform ports and the app containers
// that no untrusted container may connect to, with what each is.
func (h *hostile) platformTargets(t *testing.T) map[string]string {
	p, a := h.p, h.a
	targets := map[string]string{
		net.JoinHostPort(h.addr, strconv.Itoa(p.SSHPort)):  "the coordinator's SSH server",
		net.JoinHostPort(h.addr, strconv.Itoa(p.HTTPPort)): "the coordinator's slug server and metrics",
		a.MetricsAddr: "the agent's metrics",
	}
	if u, err := url.Parse(p.EtcdURL); err == nil {
		targets[u.Host] = "etcd's client port"
	}
	if api := agentAPI(t, p, a.Name); api != "" {
		targets[api] = "the agent API"
	}
	for _, f := range []string{"victim", "net-b"} {
		ips, port, published := containerAddrs(t, a.Name, f)
		for _, ip := range ips {
			targets[net.JoinHostPort(ip, port)] = f + "'s container"
		}
		if published != "" {
			targets[net.JoinHostPort(h.addr, published)] = f + "'s published port on the node address"
		}
	}
	return targets
}

// buildNetwork: build code tries the same connections as the apps did; it
// may reach the outside world (buildpacks download) and nothing else.
func (h *hostile) buildNetwork(t *testing.T) {
	targets := h.platformTargets(t)
	const outside = "deb.debian.org:80"
	probes := append([]string{outside}, keys(targets)...)
	out, err := h.push(t, "hostile-build", "evil-probe", 2*time.Minute, "ATTACK=probe", "TARGETS="+strings.Join(probes, ","))
	if err == nil {
		t.Fatalf("the probe build should fail (it fails on purpose to show its results):\n%s", out)
	}
	res := map[string]string{}
	for _, m := range regexp.MustCompile(`evil: probe (\S+) (\S+)`).FindAllStringSubmatch(out, -1) {
		res[m[1]] = m[2]
	}
	if len(res) == 0 {
		t.Fatalf("the build printed no probe results:\n%s", out)
	}
	for target, what := range targets {
		if res[target] == "connected" {
			t.Errorf("a build connected to %s (%s)", target, what)
		} else {
			t.Logf("build -> %s (%s): %s", target, what, res[target])
		}
	}
	if res[outside] != "connected" {
		if c, err := net.DialTimeout("tcp", outside, 3*time.Second); err != nil {
			t.Logf("no outbound check: this machine cannot reach %s either (%v)", outside, err)
		} else {
			c.Close()
			t.Errorf("a build cannot reach %s, which the host reaches: %s", outside, res[outside])
		}
	}
}

// destroyRecreate: a destroyed formation leaves nothing to whoever takes
// its name next, and the new formation's first push runs.
func (h *hostile) destroyRecreate(t *testing.T) {
	p, a := h.p, h.a
	if out, err := h.push(t, "hello", "reborn", 3*time.Minute); err != nil {
		t.Fatalf("first push: %v\n%s", err, out)
	}
	p.WaitApp(a, "reborn.localhost", "hello from reborn (v1)", 3*time.Minute)
	p.MustCtl("", "formations:destroy", "reborn", "--confirm", "reborn")
	p.MustCtl("", "formations:create", "reborn")

	clone := filepath.Join(p.Dir, "reborn-clone")
	out, err := gitWithin(time.Minute, p.Dir, h.key, "clone", p.Remote("reborn"), clone)
	t.Logf("clone after re-create: err=%v\n%s", err, out)
	if err == nil {
		if log, lerr := gitWithin(time.Minute, clone, h.key, "rev-list", "--all"); lerr == nil && strings.TrimSpace(log) != "" {
			t.Errorf("the re-created formation's repository holds the old owner's history:\n%s", log)
		}
	} else if !strings.Contains(out, "empty") {
		t.Errorf("clone of the re-created formation failed, and not because it is empty:\n%s", out)
	}
	if builds, _ := p.Ctl("", "builds", "-f", "reborn"); strings.Count(builds, "\n") > 1 {
		t.Errorf("the re-created formation lists the old builds:\n%s", builds)
	}

	// The first push of the new formation runs: v1 is not counted failed.
	repo := filepath.Join(p.Dir, "reborn-second")
	if err := os.CopyFS(repo, os.DirFS(harness.AppDir("hello"))); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "."}, {"commit", "-qm", "second owner"}} {
		if out, err := p.Git(repo, h.key, args...); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	out, err = gitWithin(3*time.Minute, repo, h.key, "push", p.Remote("reborn"), "main")
	if err != nil {
		t.Fatalf("first push of the re-created formation: %v\n%s", err, out)
	}
	if !strings.Contains(out, "v1") {
		t.Errorf("the re-created formation's first release should be v1:\n%s", out)
	}
	p.WaitApp(a, "reborn.localhost", "hello from reborn (v1)", 2*time.Minute)
}

// silentSSH: connections that never authenticate are closed by the server
// within its deadline, while a real push goes through.
func (h *hostile) silentSSH(t *testing.T) {
	p := h.p
	const n = 8
	addr := net.JoinHostPort(h.addr, strconv.Itoa(p.SSHPort))
	closed := make(chan time.Duration, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		defer c.Close()
		go func() {
			// Read the server's banner and whatever follows, send nothing,
			// and wait for the server to hang up.
			c.SetReadDeadline(time.Now().Add(3 * time.Minute))
			io.Copy(io.Discard, c)
			closed <- time.Since(start)
		}()
	}
	// Meanwhile a real push works.
	out, err := h.push(t, "hello", "busy", 3*time.Minute)
	if err != nil {
		t.Errorf("a push while silent connections are open failed: %v\n%s", err, out)
	}
	deadline := 2 * time.Minute
	if len(ifFlag(t, "deis-coordinator", "--ssh-auth-timeout", "")) > 0 {
		deadline = sshAuthTimeout + 30*time.Second
	}
	for i := 0; i < n; i++ {
		select {
		case d := <-closed:
			if d > deadline {
				t.Errorf("a silent connection was held for %s", d.Round(time.Second))
				return
			}
		case <-time.After(deadline - time.Since(start)):
			t.Errorf("%d of %d silent connections are still open after %s: the SSH server should close unauthenticated connections", n-i, n, deadline)
			return
		}
	}
}

// policy: only main or master deploys; a local BUILDPACK_URL or
// .buildpacks path is refused unless an operator allowed its directory.
func (h *hostile) policy(t *testing.T) {
	p := h.p
	t.Run("a branch other than main or master", func(t *testing.T) {
		p.MustCtl("", "formations:create", "branchy")
		repo := p.AppRepo("hello", "branchy")
		out, err := gitWithin(2*time.Minute, repo, h.key, "push", "deis", "main:feature")
		if err == nil {
			t.Fatalf("a push of branch feature should be refused:\n%s", out)
		}
		if !strings.Contains(out, "main") || !strings.Contains(out, "master") {
			t.Errorf("the refusal should say that main or master deploys:\n%s", out)
		}
		if rel, _ := p.Ctl("", "releases", "-f", "branchy"); strings.Contains(rel, "v1") {
			t.Errorf("the refused push released:\n%s", rel)
		}
	})
	t.Run("a push larger than --max-push-bytes", func(t *testing.T) {
		p.MustCtl("", "formations:create", "bulky")
		repo := p.AppRepo("hello", "bulky")
		junk := make([]byte, 2*maxPushBytes) // random: git cannot compress it
		if _, err := rand.Read(junk); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(repo, "junk.bin"), junk, 0o644)
		p.Git(repo, h.key, "add", ".")
		p.Git(repo, h.key, "commit", "-qm", "junk")
		out, err := gitWithin(2*time.Minute, repo, h.key, "push", "deis", "main")
		if err == nil {
			t.Fatalf("a push of %d MiB should be refused (limit %d MiB):\n%s", len(junk)>>20, maxPushBytes>>20, out)
		}
		if !strings.Contains(strings.ToLower(out), "limit") && !strings.Contains(out, "--max-push-bytes") {
			t.Errorf("the refusal should give the size limit:\n%s", out)
		}
	})
	t.Run("a local BUILDPACK_URL", func(t *testing.T) {
		bp := filepath.Join(p.Dir, "coordinator0") // any directory on the coordinator
		p.MustCtl("", "formations:create", "localbp")
		cout, cerr := p.Ctl("", "config:set", "-f", "localbp", "BUILDPACK_URL="+bp)
		repo := p.AppRepo("hello", "localbp")
		out, err := gitWithin(2*time.Minute, repo, h.key, "push", "deis", "main")
		if cerr == nil && err == nil {
			t.Fatalf("BUILDPACK_URL=%s should be refused by config:set or by the push:\n%s\n%s", bp, cout, out)
		}
		if all := cout + out; !strings.Contains(all, "--buildpack-dir") {
			t.Errorf("the refusal should say an operator must allow the directory (--buildpack-dir):\n%s\n%s", cout, out)
		}
	})
	t.Run("a local path in .buildpacks", func(t *testing.T) {
		p.MustCtl("", "formations:create", "localbps")
		repo := p.AppRepo("hello", "localbps")
		os.WriteFile(filepath.Join(repo, ".buildpacks"), []byte(filepath.Join(p.Dir, "coordinator0")+"\n"), 0o644)
		p.Git(repo, h.key, "add", ".")
		p.Git(repo, h.key, "commit", "-qm", "a local buildpack")
		out, err := gitWithin(2*time.Minute, repo, h.key, "push", "deis", "main")
		if err == nil {
			t.Fatalf("a .buildpacks line naming a local directory should be refused:\n%s", out)
		}
		if !strings.Contains(out, ".buildpacks") {
			t.Errorf("the refusal should name .buildpacks:\n%s", out)
		}
	})
}

// ---- helpers ----

// hostAddr is this machine's own address on its default route: containers
// can route to it, unlike loopback.
func hostAddr(t *testing.T) string {
	t.Helper()
	if c, err := net.Dial("udp", "198.51.100.1:9"); err == nil { // sends nothing
		ip := c.LocalAddr().(*net.UDPAddr).IP
		c.Close()
		if !ip.IsLoopback() {
			return ip.String()
		}
	}
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 || strings.HasPrefix(i.Name, "docker") || strings.HasPrefix(i.Name, "br-") || strings.HasPrefix(i.Name, "veth") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	t.Fatal("no non-loopback IPv4 address on this machine: the hostile suite needs one that containers can route to")
	return ""
}

var (
	helpMu sync.Mutex
	help   = map[string]string{}
)

// ifFlag returns flag and value when binary has that flag, else nothing,
// so the suite runs against a tree where a defence has not landed yet (and
// then fails on the attack, not on an unknown flag).
func ifFlag(t *testing.T, binary, flag, value string) []string {
	t.Helper()
	helpMu.Lock()
	defer helpMu.Unlock()
	if _, ok := help[binary]; !ok {
		out, _ := exec.Command(filepath.Join(harness.Binaries(t), binary), "--help").CombinedOutput()
		help[binary] = string(out)
	}
	if !strings.Contains(help[binary], flag+" ") && !strings.Contains(help[binary], flag+"=") {
		t.Logf("%s has no %s flag: the attack it bounds runs against the default", binary, flag)
		return nil
	}
	return []string{flag, value}
}

// gitWithin runs git with a time limit, so a push that hangs fails the test
// instead of holding it.
func gitWithin(limit time.Duration, dir, key string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_SSH_COMMAND=ssh -i "+key+" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
		"GIT_AUTHOR_NAME=e2e", "GIT_AUTHOR_EMAIL=e2e@example.com", "GIT_COMMITTER_NAME=e2e", "GIT_COMMITTER_EMAIL=e2e@example.com")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("git %s: still running after %s: %w", args[0], limit, ctx.Err())
	}
	return string(out), err
}

func get(addr string, port int, host, path string) (int, string, error) {
	return getWithin(10*time.Second, addr, port, host, path)
}

// getWithin sends GET path for host to the proxy at addr:port.
func getWithin(limit time.Duration, addr string, port int, host, path string) (int, string, error) {
	req, err := http.NewRequest("GET", fmt.Sprintf("http://%s:%d%s", addr, port, path), nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	resp, err := (&http.Client{Timeout: limit}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// probe asks the probe app of host to connect to each target.
func probe(t *testing.T, a *harness.Agent, host string, targets []string) map[string]string {
	t.Helper()
	q := url.Values{"t": targets}
	code, body, err := getWithin(time.Minute, a.Addr, a.HTTPPort, host, "/probe?"+q.Encode())
	res := map[string]string{}
	if err != nil || code != 200 || json.Unmarshal([]byte(body), &res) != nil {
		t.Fatalf("probe from %s: %d %v %q", host, code, err, body)
	}
	return res
}

type inspected struct {
	Config struct {
		Env []string
	}
	HostConfig struct {
		NetworkMode string
	}
	NetworkSettings struct {
		Ports    map[string][]struct{ HostIp, HostPort string }
		Networks map[string]struct{ IPAddress, Gateway string }
	}
}

// inspectWeb inspects formation f's web container on node; when it joined
// a network sandbox, its network settings are the sandbox's.
func inspectWeb(t *testing.T, node, f string) inspected {
	t.Helper()
	ids := harness.Containers(t, node, "deis.formation="+f, "deis.type=web")
	if len(ids) == 0 {
		t.Fatalf("no web container of %s on %s", f, node)
	}
	c := dockerInspect(t, ids[0])
	if sb, ok := strings.CutPrefix(c.HostConfig.NetworkMode, "container:"); ok {
		t.Logf("%s's web container on %s joined the network sandbox %.12s", f, node, sb)
		c.NetworkSettings = dockerInspect(t, sb).NetworkSettings
	}
	return c
}

func dockerInspect(t *testing.T, id string) inspected {
	t.Helper()
	out, err := exec.Command("docker", "inspect", id).Output()
	if err != nil {
		t.Fatalf("docker inspect: %v", err)
	}
	var c []inspected
	if err := json.Unmarshal(out, &c); err != nil || len(c) != 1 {
		t.Fatalf("docker inspect: %v", err)
	}
	return c[0]
}

// containerAddrs returns the IP addresses of formation f's web container,
// the port it listens on inside, and its published port on the node.
func containerAddrs(t *testing.T, node, f string) (ips []string, port, published string) {
	t.Helper()
	c := inspectWeb(t, node, f)
	for _, n := range c.NetworkSettings.Networks {
		if n.IPAddress != "" {
			ips = append(ips, n.IPAddress)
		}
	}
	for _, e := range c.Config.Env {
		if v, ok := strings.CutPrefix(e, "PORT="); ok {
			port = v
		}
	}
	for _, bs := range c.NetworkSettings.Ports {
		for _, b := range bs {
			published = b.HostPort
		}
	}
	return ips, port, published
}

// gateways returns the gateways of formation f's web container's networks.
func gateways(t *testing.T, node, f string) []string {
	t.Helper()
	var gws []string
	for _, n := range inspectWeb(t, node, f).NetworkSettings.Networks {
		if n.Gateway != "" {
			gws = append(gws, n.Gateway)
		}
	}
	return gws
}

// agentAPI returns the host:port of the agent API node advertises.
func agentAPI(t *testing.T, p *harness.Platform, node string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := p.Client().Get(ctx, state.NewKeys("").Node(node))
	if err != nil || len(resp.Kvs) == 0 {
		t.Logf("no node record of %s: %v", node, err)
		return ""
	}
	var n state.Node
	if err := json.Unmarshal(resp.Kvs[0].Value, &n); err != nil || n.APIURL == "" {
		return ""
	}
	u, err := url.Parse(n.APIURL)
	if err != nil {
		return ""
	}
	return u.Host
}

// etcdDump returns every key and value under the platform's prefix that
// names formation f.
func etcdDump(t *testing.T, p *harness.Platform, f string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := p.Client().Get(ctx, state.NewKeys("").Prefix+"/", clientv3.WithPrefix())
	if err != nil {
		t.Logf("etcd: %v", err)
		return ""
	}
	var b strings.Builder
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Key), "/"+f) {
			fmt.Fprintf(&b, "%s %s\n", kv.Key, kv.Value)
		}
	}
	return b.String()
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// dirSize is the bytes the files under dir hold on disk.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// diskGuardian kills the coordinator if the platform's directory grows past
// a limit: an attack that succeeds must not fill the test machine's disk.
type diskGuardian struct {
	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	hit  bool
}

func guardDisk(t *testing.T, p *harness.Platform, limit int64) *diskGuardian {
	g := &diskGuardian{done: make(chan struct{})}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-g.done:
				return
			case <-tick.C:
			}
			if n := dirSize(p.Dir); n > limit {
				g.mu.Lock()
				g.hit = true
				g.mu.Unlock()
				t.Logf("disk guard: %s holds %d MiB; killing the coordinator", p.Dir, n>>20)
				p.Coordinator.Kill()
				return
			}
		}
	}()
	return g
}

// recoverFromDiskGuard removes the huge files an attack left and starts the
// killed coordinator again, so the rest of the suite can run.
func recoverFromDiskGuard(t *testing.T, p *harness.Platform) {
	filepath.WalkDir(p.Dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil && info.Size() > 100<<20 {
				t.Logf("disk guard: removing %s (%d MiB)", path, info.Size()>>20)
				os.Remove(path)
			}
		}
		return nil
	})
	p.Coordinator.Restart()
	p.WaitHTTP(fmt.Sprintf("http://%s/healthz", net.JoinHostPort(hostAddrOf(p), strconv.Itoa(p.HTTPPort))), "", 90*time.Second)
}

// hostAddrOf is the address the platform listens on, from its etcd URL.
func hostAddrOf(p *harness.Platform) string {
	u, _ := url.Parse(p.EtcdURL)
	return u.Hostname()
}

func (g *diskGuardian) tripped() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.hit
}

func (g *diskGuardian) stop() {
	close(g.done)
	g.wg.Wait()
}

// victimWatch polls a formation every second and records every run of
// three or more failed requests.
type victimWatch struct {
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	outages []string
}

func watchVictim(a *harness.Agent, host string) *victimWatch {
	w := &victimWatch{done: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		var failed []string
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-tick.C:
			}
			code, _, err := get(a.Addr, a.HTTPPort, host, "/")
			if err == nil && code == 200 {
				if len(failed) >= 3 {
					w.outages = append(w.outages, strings.Join(failed, "; "))
				}
				failed = nil
				continue
			}
			failed = append(failed, fmt.Sprintf("%s: %d %v", time.Now().Format("15:04:05"), code, err))
		}
	}()
	return w
}

// stop ends the watch (once) and returns the outages it saw.
func (w *victimWatch) stop() []string {
	w.once.Do(func() { close(w.done) })
	w.wg.Wait()
	return w.outages
}
