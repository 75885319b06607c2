package runtime

import (
	"reflect"
	"testing"

	"github.com/deis/deis/pkg/state"
)

func spec(name string, release int) state.ContainerSpec {
	return state.ContainerSpec{Name: name, Formation: "hello", Release: release, Type: "web", Index: 1,
		Image: "deis/stack:bookworm", Command: "python3 server.py", Port: 5000,
		Env: map[string]string{"PORT": "5000"}}
}

// running is the container a spec gets on node n1 at 127.0.0.1.
func running(s state.ContainerSpec) actual {
	return actual{ID: "id-" + s.Name, Name: dockerName("n1", s.Name), Labels: labelsFor("n1", "127.0.0.1", s),
		State: "running", Status: "Up 3 minutes", Ports: map[int]int{5000: 32768}}
}

func with(a actual, fn func(*actual)) actual { fn(&a); return a }

func TestPlan(t *testing.T) {
	v3 := spec("hello.v3.web.1", 3)
	v2 := spec("hello.v2.web.1", 2)
	v3moved := v3
	v3moved.SlugURL = "http://other-coordinator:8090/slugs/x.tgz"
	v3changed := v3
	v3changed.Env = map[string]string{"PORT": "5000", "GREETING": "hi"}

	type want struct {
		kind   taskKind
		reason string
	}
	cases := []struct {
		name    string
		desired []state.ContainerSpec
		actual  []actual
		want    []want
	}{
		// Nothing assigned, nothing running: nothing to do.
		{"empty", nil, nil, nil},
		// A new container is started.
		{"missing", []state.ContainerSpec{v3}, nil,
			[]want{{taskStart, "container hello.v3.web.1 missing"}}},
		// A one-off container (deisctl run) is neither stopped nor adopted.
		{"one-off left alone", nil, []actual{{ID: "run1", Name: "deis-run-hello-4242", State: "running",
			Labels: map[string]string{labelNode: "n1", labelFormation: "hello", labelOneOff: "1"}}}, nil},
		// A running container that matches its spec is adopted, not restarted.
		{"adopt running", []state.ContainerSpec{v3}, []actual{running(v3)}, nil},
		// A container Docker is restarting after a crash is left to Docker.
		{"restarting left alone", []state.ContainerSpec{v3},
			[]actual{with(running(v3), func(a *actual) { a.State = "restarting" })}, nil},
		// A new slug URL (another coordinator) does not restart anything.
		{"slug URL change ignored", []state.ContainerSpec{v3moved}, []actual{running(v3)}, nil},
		// A desired container that exited is replaced.
		{"exited recreated", []state.ContainerSpec{v3},
			[]actual{with(running(v3), func(a *actual) { a.State, a.Status = "exited", "Exited (1) 2 seconds ago" })},
			[]want{{taskRecreate, "container hello.v3.web.1 exited (Exited (1) 2 seconds ago)"}}},
		// A dead container is replaced.
		{"dead recreated", []state.ContainerSpec{v3},
			[]actual{with(running(v3), func(a *actual) { a.State = "dead" })},
			[]want{{taskRecreate, "container hello.v3.web.1 is dead"}}},
		// A container created but never started (agent died in between) is replaced.
		{"created recreated", []state.ContainerSpec{v3},
			[]actual{with(running(v3), func(a *actual) { a.State = "created" })},
			[]want{{taskRecreate, "container hello.v3.web.1 was created but never started"}}},
		// A container whose spec changed under the same name is replaced.
		{"spec changed", []state.ContainerSpec{v3changed}, []actual{running(v3)},
			[]want{{taskRecreate, "container hello.v3.web.1 was created from an outdated spec"}}},
		// A container with the right name but foreign labels is replaced.
		{"labels mismatch", []state.ContainerSpec{v3},
			[]actual{with(running(v3), func(a *actual) { a.Labels = map[string]string{labelNode: "n1"} })},
			[]want{{taskRecreate, "container hello.v3.web.1 was created from an outdated spec"}}},
		// A container that is no longer in the databag is stopped.
		{"unassigned stopped", []state.ContainerSpec{v3}, []actual{running(v3), running(v2)},
			[]want{{taskStop, "container hello.v2.web.1 no longer assigned"}}},
		// Rollout: the new release starts while the old one is stopped.
		{"rollout", []state.ContainerSpec{v3}, []actual{running(v2)},
			[]want{{taskStart, "container hello.v3.web.1 missing"}, {taskStop, "container hello.v2.web.1 no longer assigned"}}},
		// An unassigned container already being stopped is not stopped twice.
		{"no double stop", nil, []actual{with(running(v2), func(a *actual) { a.Stopping = true })}, nil},
		// An exited unassigned container is removed (stop is a no-op for it).
		{"exited unassigned removed", nil,
			[]actual{with(running(v2), func(a *actual) { a.State = "exited" })},
			[]want{{taskStop, "container hello.v2.web.1 no longer assigned"}}},
		// A container being stopped but assigned again is replaced.
		{"stopping but assigned again", []state.ContainerSpec{v3},
			[]actual{with(running(v3), func(a *actual) { a.Stopping = true })},
			[]want{{taskRecreate, "container hello.v3.web.1 is being stopped but is assigned again"}}},
		// A labelled container under an unexpected name is stopped, and the
		// spec gets its own container.
		{"wrong name", []state.ContainerSpec{v3},
			[]actual{with(running(v3), func(a *actual) { a.Name = "renamed" })},
			[]want{{taskStart, "container hello.v3.web.1 missing"}, {taskStop, "container hello.v3.web.1 no longer assigned"}}},
		// A spec listed twice is started once.
		{"duplicate spec", []state.ContainerSpec{v3, v3}, nil,
			[]want{{taskStart, "container hello.v3.web.1 missing"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []want
			for _, tk := range plan("n1", "127.0.0.1", c.desired, c.actual) {
				got = append(got, want{tk.Kind, tk.Reason})
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("plan:\n got %v\nwant %v", got, c.want)
			}
		})
	}
}

func TestDockerName(t *testing.T) {
	if got := dockerName("n1", "hello.v3.web.1"); got != "deis-n1-hello.v3.web.1" {
		t.Errorf("got %q", got)
	}
	if got := dockerName("n1", "a b/c:d"); got != "deis-n1-a_b_c_d" {
		t.Errorf("got %q", got)
	}
}

func TestContainerConfig(t *testing.T) {
	s := spec("hello.v3.web.1", 3)
	s.Env = map[string]string{"GREETING": "hi"}
	s.Limits = state.ResourceLimits{MemoryBytes: 256 << 20, CPUs: 0.5}
	cfg, hc := containerConfig("n1", "127.0.0.5", s, "/var/lib/deis-agent/slugs/abc")
	env := map[string]bool{}
	for _, e := range cfg.Env {
		env[e] = true
	}
	for _, e := range []string{"GREETING=hi", "HOME=/app", "DYNO=web.1", "PORT=5000", "DEIS_COMMAND=python3 server.py"} {
		if !env[e] {
			t.Errorf("env lacks %s: %v", e, cfg.Env)
		}
	}
	if cfg.User != "1000:1000" || cfg.WorkingDir != "/app" || cfg.Labels[labelRelease] != "3" || cfg.Labels[labelName] != s.Name {
		t.Errorf("config: %+v", cfg)
	}
	if len(hc.Mounts) != 1 || hc.Mounts[0].Target != "/app" || !hc.Mounts[0].ReadOnly {
		t.Errorf("mounts: %+v", hc.Mounts)
	}
	b := hc.PortBindings["5000/tcp"]
	if len(b) != 1 || b[0].HostIP != "127.0.0.5" || b[0].HostPort != "" {
		t.Errorf("port bindings: %+v", hc.PortBindings)
	}
	if hc.Memory != 256<<20 || hc.NanoCPUs != 5e8 || hc.RestartPolicy.Name != "unless-stopped" {
		t.Errorf("host config: %+v", hc)
	}

	// An image-only release runs its image as it is.
	s.Slug, s.Command = nil, ""
	cfg, hc = containerConfig("n1", "127.0.0.5", s, "")
	if cfg.User != "" || len(cfg.Cmd) != 0 || len(hc.Mounts) != 0 {
		t.Errorf("image-only config: %+v %+v", cfg, hc)
	}
}
