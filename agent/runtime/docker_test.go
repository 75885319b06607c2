package runtime_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deis/deis/agent/runtime"
	"github.com/deis/deis/pkg/slugtar/slugtartest"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
)

// serverPy greets with $GREETING and tells what the launcher set up.
const serverPy = `import http.server, os, signal, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = "{} dyno={} home={} uid={} profile={} cwd={}\n".format(
            os.environ.get("GREETING"), os.environ.get("DYNO"), os.environ.get("HOME"),
            os.getuid(), os.environ.get("FROM_PROFILE"), os.getcwd()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("listening on", os.environ["PORT"], flush=True)
http.server.HTTPServer(("", int(os.environ["PORT"])), Handler).serve_forever()
`

func dockerCLI(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// nodeContainers lists the ids of every container labelled for node.
func nodeContainers(t *testing.T, node string) []string {
	return strings.Fields(dockerCLI(t, "ps", "-aq", "--no-trunc", "--filter", "label=deis.node="+node))
}

func TestRuntimeDocker(t *testing.T) {
	need.Stack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	docker, err := runtime.NewDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, docker)
	t.Cleanup(func() { // runs after the runtime stopped
		if ids := nodeContainers(t, e.node); len(ids) > 0 {
			dockerCLI(t, append([]string{"rm", "-f"}, ids...)...)
		}
	})

	tgz := slugtartest.Tarball(t,
		slugtartest.Entry{Name: "./Procfile", Body: "web: python3 server.py\n", Mode: 0o644},
		slugtartest.Entry{Name: "./server.py", Body: serverPy, Mode: 0o644},
		slugtartest.Entry{Name: "./.profile.d/greet.sh", Body: "export FROM_PROFILE=yes\n", Mode: 0o644},
	)
	sum := sha256.Sum256(tgz)
	ref := state.SlugRef{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(tgz))}
	var downloads atomic.Int32
	slugs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		downloads.Add(1)
		if r.URL.Path != "/slugs/"+ref.SHA256+".tgz" {
			http.NotFound(w, r)
			return
		}
		w.Write(tgz)
	}))
	defer slugs.Close()

	// web.1 is probed over TCP and listens only after a second: it must
	// not count as ready while Docker's port proxy alone accepts
	// connections. web.2 is probed over HTTP.
	web := func(i int, cmd, health string) state.ContainerSpec {
		return state.ContainerSpec{
			Name: fmt.Sprintf("hello.v1.web.%d", i), Formation: "hello", Release: 1, Type: "web", Index: i,
			Image: need.StackImage, Command: cmd, HealthPath: health,
			Env:  map[string]string{"PORT": "5000", "GREETING": "howdy", "DEIS_FORMATION": "hello"},
			Slug: &ref, SlugURL: slugs.URL + "/slugs/" + ref.SHA256 + ".tgz", Port: 5000,
		}
	}
	e.assign(web(1, "sleep 1 && exec python3 server.py", ""), web(2, "python3 server.py", "/healthz"))
	e.start()
	st := e.waitStatus("both containers ready", func(st state.NodeStatus) bool {
		return readyIn("hello.v1.web.1")(st) && readyIn("hello.v1.web.2")(st)
	})
	if n := downloads.Load(); n != 1 {
		t.Errorf("slug downloaded %d times for two containers, want 1", n)
	}
	ids := map[string]string{}
	for i := 1; i <= 2; i++ {
		c, _ := find(st, fmt.Sprintf("hello.v1.web.%d", i))
		ids[c.Name] = c.ID
		resp, err := http.Get("http://" + c.Addr + "/")
		if err != nil {
			t.Fatalf("%s reported ready but: %v", c.Name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("howdy dyno=web.%d home=/app uid=%d profile=yes cwd=/app\n", i, state.AppUID("hello", 0)); string(body) != want {
			t.Errorf("%s answered %q, want %q", c.Name, body, want)
		}
	}
	c, _ := find(st, "hello.v1.web.2")
	if logs := dockerCLI(t, "logs", c.ID); !strings.Contains(logs, "listening on 5000") {
		t.Errorf("docker logs: %q", logs)
	}
	labels := dockerCLI(t, "inspect", "-f", "{{index .Config.Labels \"deis.formation\"}} {{index .Config.Labels \"deis.release\"}} {{index .Config.Labels \"deis.name\"}} {{.HostConfig.RestartPolicy.Name}}", c.ID)
	if labels != "hello 1 hello.v1.web.2 unless-stopped" {
		t.Errorf("labels and restart policy: %q", labels)
	}

	// The agent stops: the containers keep serving. A new runtime adopts them.
	e.stop()
	for _, id := range ids {
		if state := dockerCLI(t, "inspect", "-f", "{{.State.Status}}", id); state != "running" {
			t.Fatalf("container %s after the runtime stopped", state)
		}
	}
	restarted := time.Now()
	e.start()
	st = e.waitStatus("both ready under the new runtime", func(st state.NodeStatus) bool {
		return st.Updated.After(restarted) && readyIn("hello.v1.web.1")(st) && readyIn("hello.v1.web.2")(st)
	})
	for name, id := range ids {
		if again, _ := find(st, name); again.ID != id {
			t.Errorf("%s replaced on restart: %s -> %s", name, id, again.ID)
		}
	}

	// Unassigned: stopped and removed.
	e.assign()
	e.waitStatus("no containers", func(st state.NodeStatus) bool { return len(st.Containers) == 0 && len(st.Pending) == 0 })
	if ids := nodeContainers(t, e.node); len(ids) != 0 {
		t.Errorf("containers left: %v", ids)
	}
}

// buildImage builds an image from a Dockerfile and files with the docker
// CLI (the legacy builder, which never pulls an image the engine has) and
// removes it when the test ends.
func buildImage(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tag := "deis-test/app-" + uniqueNode(t) + ":1"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "build", "-q", "-t", tag, dir)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", tag).Run() })
	return tag
}

// An image built from a Dockerfile runs without a slug, as the image's
// user and in its working directory: with its own CMD when the spec has no
// command, and with the command through /bin/sh (the image has no bash)
// after /app/.profile.d otherwise.
func TestRuntimeDockerImage(t *testing.T) {
	need.Stack(t)
	image := buildImage(t, map[string]string{
		"Dockerfile": "FROM " + need.StackImage + "\n" +
			"RUN rm -f /bin/bash /usr/bin/bash\n" +
			"COPY server.py /srv/server.py\n" +
			"COPY greet.sh /app/.profile.d/greet.sh\n" +
			"WORKDIR /srv\n" +
			"USER nobody\n" +
			`CMD ["python3", "server.py"]` + "\n",
		"server.py": serverPy,
		"greet.sh":  "export FROM_PROFILE=yes\n",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	docker, err := runtime.NewDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, docker)
	t.Cleanup(func() {
		if ids := nodeContainers(t, e.node); len(ids) > 0 {
			dockerCLI(t, append([]string{"rm", "-f"}, ids...)...)
		}
	})
	web := func(i int, cmd string) state.ContainerSpec {
		return state.ContainerSpec{
			Name: fmt.Sprintf("img.v1.web.%d", i), Formation: "img", Release: 1, Type: "web", Index: i,
			Image: image, Command: cmd, HealthPath: "/",
			Env:  map[string]string{"PORT": "5000", "GREETING": "hi"},
			Port: 5000,
		}
	}
	e.assign(web(1, ""), web(2, "exec python3 server.py"))
	e.start()
	st := e.waitStatus("both image containers ready", func(st state.NodeStatus) bool {
		return readyIn("img.v1.web.1")(st) && readyIn("img.v1.web.2")(st)
	})
	for i, profile := range map[int]string{1: "None", 2: "yes"} {
		c, _ := find(st, fmt.Sprintf("img.v1.web.%d", i))
		resp, err := http.Get("http://" + c.Addr + "/")
		if err != nil {
			t.Fatalf("%s reported ready but: %v", c.Name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got := string(body)
		for _, want := range []string{fmt.Sprintf("hi dyno=web.%d ", i), "uid=65534", "profile=" + profile, "cwd=/srv"} {
			if !strings.Contains(got, want) {
				t.Errorf("%s answered %q, want it to contain %q", c.Name, got, want)
			}
		}
		mounts := dockerCLI(t, "inspect", "-f", "{{len .Mounts}} {{.Config.User}}", c.ID)
		if mounts != "0 nobody" {
			t.Errorf("%s: mounts and user %q, want no mount and the image's user", c.Name, mounts)
		}
	}
}

// A container that keeps exiting is restarted by Docker, and the runtime
// reports each restart as it happens, from Docker's events: the
// coordinator's crash-loop rollback reads the count. The periodic resync
// is turned off, so only the events can tell; and the listed state alone
// would not, since the container is "running" again between its crashes.
func TestRuntimeDockerReportsRestarts(t *testing.T) {
	need.Stack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	docker, err := runtime.NewDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, docker)
	e.cfg.Resync = time.Hour
	t.Cleanup(func() {
		if ids := nodeContainers(t, e.node); len(ids) > 0 {
			dockerCLI(t, append([]string{"rm", "-f"}, ids...)...)
		}
	})
	// It answers on its port (and is probed ready) for a second, then
	// exits.
	e.assign(state.ContainerSpec{
		Name: "crash.v1.web.1", Formation: "crash", Release: 1, Type: "web", Index: 1, Port: 5000,
		Image: need.StackImage, Command: "python3 -m http.server 5000 & sleep 1; exit 3",
		Env: map[string]string{"DEIS_FORMATION": "crash"},
	})
	e.start()
	// Each restart count Docker reaches is reported; the test notes when
	// it first saw each, in Docker and in the status.
	inDocker, reported := map[int]time.Time{}, map[int]time.Time{}
	exited := false
	waitFor(t, "three restarts and an exit between two reported", func() bool {
		if ids := nodeContainers(t, e.node); len(ids) == 1 {
			if n, err := strconv.Atoi(dockerCLI(t, "inspect", "-f", "{{.RestartCount}}", ids[0])); err == nil {
				if _, ok := inDocker[n]; !ok {
					inDocker[n] = time.Now()
				}
			}
		}
		c, _ := find(e.status(), "crash.v1.web.1")
		if _, ok := reported[c.Restarts]; !ok {
			reported[c.Restarts] = time.Now()
		}
		// Docker waits longer before each restart (100 ms, 200, 400...),
		// so the poll catches one of those waits sooner or later.
		exited = exited || (c.State == state.StateExited && strings.HasPrefix(c.Reason, "Restarting (3)"))
		return c.Restarts >= 3 && exited
	}, func() string { return fmt.Sprintf("exited seen: %v, %s", exited, state.Marshal(e.status())) })
	for n := 1; n <= 3; n++ {
		if d, r := inDocker[n], reported[n]; !d.IsZero() && !r.IsZero() {
			t.Logf("restart %d reported %v after the test saw it in Docker", n, r.Sub(d).Round(time.Millisecond))
		}
	}
}
