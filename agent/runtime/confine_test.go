package runtime_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/agent/runtime"
	"github.com/deis/deis/agent/runtime/runtimetest"
	"github.com/deis/deis/pkg/slugtar/slugtartest"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
)

// probePy answers with what the app's own process may do: its
// capabilities, no-new-privileges flag, uid, and where it can write.
const probePy = `import http.server, os, signal, sys

def can_write(p):
    try:
        with open(p, "w") as f:
            f.write("x")
        return "yes"
    except OSError:
        return "no"

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open("/proc/self/status") as f:
            lines = [l for l in f.read().splitlines() if l.split(":")[0] in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs")]
        lines.append("uid=%d gid=%d" % (os.getuid(), os.getgid()))
        for p in ("/x", "/app/x", "/etc/x", "/tmp/x"):
            lines.append("write %s=%s" % (p, can_write(p)))
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
http.server.HTTPServer(("", int(os.environ["PORT"])), Handler).serve_forever()
`

// slugServer serves one slug tarball and returns its ref and URL.
func serveSlug(t *testing.T, tgz []byte) (state.SlugRef, string) {
	sum := sha256.Sum256(tgz)
	ref := state.SlugRef{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(tgz))}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(tgz) }))
	t.Cleanup(srv.Close)
	return ref, srv.URL + "/slugs/" + ref.SHA256 + ".tgz"
}

// A slug app's process has no capability, cannot gain privileges, runs as
// its formation's own uid, cannot write its root file system or its slug,
// and can write /tmp; Docker holds it to the pids, memory and log limits.
// It runs on a user-defined network and answers on the published port.
func TestSlugContainerConfinedDocker(t *testing.T) {
	need.Stack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	docker, err := runtime.NewDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, docker)
	// A user-defined network, as pkg/netguard makes: the port is still
	// published on the node address.
	e.cfg.Network = "deis-test-" + e.node
	dockerCLI(t, "network", "create", "--label", "deis.test=runtime", e.cfg.Network)
	t.Cleanup(func() { dockerCLI(t, "network", "rm", e.cfg.Network) })
	t.Cleanup(func() {
		if ids := nodeContainers(t, e.node); len(ids) > 0 {
			dockerCLI(t, append([]string{"rm", "-f"}, ids...)...)
		}
	})
	f := &state.Formation{Name: "confined"}
	if err := e.store.CreateFormation(ctx, f); err != nil {
		t.Fatal(err)
	}
	ref, url := serveSlug(t, slugtartest.Tarball(t,
		slugtartest.Entry{Name: "./server.py", Body: probePy, Mode: 0o600}, // private in the tarball: readable all the same
	))
	e.assign(state.ContainerSpec{
		Name: "confined.v1.web.1", Formation: "confined", Release: 1, Type: "web", Index: 1,
		Image: need.StackImage, Command: "python3 server.py", HealthPath: "/",
		Env: map[string]string{"PORT": "5000"}, Slug: &ref, SlugURL: url, Port: 5000,
	})
	e.start()
	st := e.waitStatus("the confined container ready", readyIn("confined.v1.web.1"))
	c, _ := find(st, "confined.v1.web.1")
	resp, err := http.Get("http://" + c.Addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := string(body)
	uid := strconv.Itoa(f.UID)
	for _, want := range []string{
		"CapEff:\t0000000000000000", "CapPrm:\t0000000000000000", "CapBnd:\t0000000000000000",
		"NoNewPrivs:\t1", "uid=" + uid + " gid=" + uid,
		"write /x=no", "write /app/x=no", "write /etc/x=no", "write /tmp/x=yes",
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("the app reports\n%s\nwant a line %q", got, want)
		}
	}
	if nm := dockerCLI(t, "inspect", "-f", "{{.HostConfig.NetworkMode}}", c.ID); nm != e.cfg.Network {
		t.Errorf("network %q, want %q", nm, e.cfg.Network)
	}
	hc := dockerCLI(t, "inspect", "-f", "{{.HostConfig.PidsLimit}} {{.HostConfig.Memory}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}} {{index .HostConfig.LogConfig.Config \"max-file\"}} {{.Config.User}}", c.ID)
	if want := "256 536870912 true json-file 10m 3 " + uid + ":" + uid; hc != want {
		t.Errorf("host config %q, want %q", hc, want)
	}
}

// A tar bomb slug is refused on the node, and the container's status says
// why.
func TestSlugBombReportedFake(t *testing.T) {
	d := runtimetest.New()
	defer d.Close()
	e := newEnv(t, d)
	e.cfg.MaxSlugBytes = 64 << 10
	ref, url := serveSlug(t, slugtartest.Tarball(t, slugtartest.Entry{Name: "./zeros", Body: strings.Repeat("\x00", 4<<20)}))
	e.assign(state.ContainerSpec{
		Name: "bomb.v1.web.1", Formation: "bomb", Release: 1, Type: "web", Index: 1,
		Image: "deis/stack:bookworm", Command: "true", Env: map[string]string{"PORT": "5000"}, Slug: &ref, SlugURL: url, Port: 5000,
	})
	e.start()
	want := "slugtar: the slug expands past 512.0KB (8x --max-slug-bytes): refusing it"
	st := e.waitStatus("the refusal reported", func(st state.NodeStatus) bool {
		c, ok := find(st, "bomb.v1.web.1")
		return ok && strings.Contains(c.Reason, want)
	})
	if c, _ := find(st, "bomb.v1.web.1"); c.State != state.StateStarting || c.ID != "" {
		t.Errorf("status %+v", c)
	}
	if n := len(d.Containers()); n != 0 {
		t.Errorf("%d containers created for a refused slug", n)
	}
}

// An agent restarted with other confinement settings (an upgrade, a new
// network) adopts the running containers rather than interrupt the apps,
// and says in their status how to replace them without downtime.
func TestOutdatedConfinementReportedFake(t *testing.T) {
	d := runtimetest.New()
	defer d.Close()
	e := newEnv(t, d)
	e.assign(imageSpec("hello.v1.web.1", 1))
	e.start()
	st := e.waitStatus("hello.v1.web.1 ready", readyIn("hello.v1.web.1"))
	first, _ := find(st, "hello.v1.web.1")
	if first.Reason != "" {
		t.Errorf("reason of a current container: %q", first.Reason)
	}
	e.stop()

	e.cfg.Network = "deis-apps"
	e.start()
	st = e.waitStatus("the outdated container reported", func(st state.NodeStatus) bool {
		c, ok := find(st, "hello.v1.web.1")
		return ok && strings.Contains(c.Reason, "deisctl ps:restart -f hello replaces it without downtime")
	})
	if c, _ := find(st, "hello.v1.web.1"); c.ID != first.ID || c.State != state.StateReady {
		t.Errorf("the container was not adopted as it was: %+v (first %s)", c, first.ID)
	}
	if n := d.CallCount("ContainerCreate"); n != 1 {
		t.Errorf("%d containers created, want 1", n)
	}
}
