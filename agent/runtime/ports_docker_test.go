package runtime_test

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/agent/runtime"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
)

// A container is created with an explicit host port from the port range,
// recorded in its labels, so Docker binds the same port whenever it starts
// the container again: after `docker restart`, and after a restart of
// dockerd (restart policy unless-stopped), which starts the container from
// the same HostConfig. The test never restarts the shared dockerd.
func TestHostPortKeptAcrossDockerRestart(t *testing.T) {
	need.Stack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	docker, err := runtime.NewDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer docker.Close()
	e := newEnv(t, docker)
	t.Cleanup(func() { // runs after the runtime stopped
		if ids := nodeContainers(t, e.node); len(ids) > 0 {
			dockerCLI(t, append([]string{"rm", "-f"}, ids...)...)
		}
	})
	spec := state.ContainerSpec{Name: "ports.v1.web.1", Formation: "ports", Release: 1, Type: "web", Index: 1,
		Image: need.StackImage, Command: "exec python3 -m http.server $PORT", Port: 5000,
		Env: map[string]string{"PORT": "5000"}}
	e.assign(spec)
	e.start()
	st := e.waitStatus("the container ready", readyIn(spec.Name))
	c, _ := find(st, spec.Name)

	got := dockerCLI(t, "inspect", "-f", `{{range $p, $b := .HostConfig.PortBindings}}{{$p}} {{(index $b 0).HostIP}} {{(index $b 0).HostPort}}{{end}} {{index .Config.Labels "deis.hostport"}}`, c.ID)
	f := strings.Fields(got)
	if len(f) != 4 || f[0] != "5000/tcp" || f[1] != "127.0.0.1" || f[2] != f[3] {
		t.Fatalf("port bindings and label: %q, want 5000/tcp 127.0.0.1 PORT PORT", got)
	}
	port, err := strconv.Atoi(f[2])
	if r := runtime.DefaultPortRange; err != nil || port < r.Min || port > r.Max {
		t.Fatalf("host port %q is not in the default range %s", f[2], r)
	}
	want := net.JoinHostPort("127.0.0.1", f[2])
	if c.Addr != want {
		t.Errorf("reported address %s, want %s", c.Addr, want)
	}

	dockerCLI(t, "restart", "-t", "1", c.ID)
	if got := dockerCLI(t, "port", c.ID, "5000/tcp"); got != want {
		t.Errorf("after docker restart the port is published on %q, want %s", got, want)
	}
	waitFor(t, "the restarted container answering on its old address", func() bool {
		resp, err := http.Get("http://" + want + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, func() string { return "" })
	st = e.waitStatus("the restarted container ready again", readyIn(spec.Name))
	if c2, _ := find(st, spec.Name); c2.ID != c.ID || c2.Addr != want {
		t.Errorf("after docker restart: %+v, want the same container at %s", c2, want)
	}
}
