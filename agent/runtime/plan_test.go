package runtime

import (
	"reflect"
	"strconv"
	"testing"

	"github.com/deis/deis/pkg/state"
	"github.com/docker/docker/api/types/strslice"
)

func spec(name string, release int) state.ContainerSpec {
	return state.ContainerSpec{Name: name, Formation: "hello", Release: release, Type: "web", Index: 1,
		Image: "deis/stack:bookworm", Command: "python3 server.py", Port: 5000,
		Env: map[string]string{"PORT": "5000"}}
}

// testProfile is node n1 at 127.0.0.1 with the default limits.
var testProfile = profile{Node: "n1", Addr: "127.0.0.1", DefaultMemory: DefaultMemoryBytes, PidsLimit: DefaultPidsLimit}

// running is the container a spec gets on node n1 at 127.0.0.1.
func running(s state.ContainerSpec) actual { return runningUnder(testProfile, s) }

// runningUnder is the container a spec gets on a node with profile p.
func runningUnder(p profile, s state.ContainerSpec) actual {
	return actual{ID: "id-" + s.Name, Name: dockerName(p.Node, s.Name), Labels: labelsFor(p, s),
		State: "running", Status: "Up 3 minutes", Ports: map[int]int{5000: 32768}}
}

func with(a actual, fn func(*actual)) actual { fn(&a); return a }

func TestPlan(t *testing.T) {
	v3 := spec("hello.v3.web.1", 3)
	v2 := spec("hello.v2.web.1", 2)
	v3moved := v3
	v3moved.SlugURL = "http://other-coordinator:8090/slugs/x.tgz"
	v3changed := v3
	v3uid := v3
	v3uid.UID = state.FirstAppUID + 1
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
		// A container the agent confined otherwise (another network, other
		// default limits, another uid) is adopted: replacing it would
		// interrupt the app; the worker reports it instead.
		{"network changed", []state.ContainerSpec{v3},
			[]actual{runningUnder(profile{Node: "n1", Addr: "127.0.0.1", Network: "old", DefaultMemory: DefaultMemoryBytes, PidsLimit: DefaultPidsLimit}, v3)}, nil},
		{"default memory changed", []state.ContainerSpec{v3},
			[]actual{runningUnder(profile{Node: "n1", Addr: "127.0.0.1", DefaultMemory: 1 << 30, PidsLimit: DefaultPidsLimit}, v3)}, nil},
		{"uid changed", []state.ContainerSpec{v3uid}, []actual{running(v3)}, nil},
		// The node address changed: the port must be published anew.
		{"address changed", []state.ContainerSpec{v3},
			[]actual{runningUnder(profile{Node: "n1", Addr: "10.0.0.9", DefaultMemory: DefaultMemoryBytes, PidsLimit: DefaultPidsLimit}, v3)},
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
			for _, tk := range plan(testProfile, c.desired, c.actual) {
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
	p := testProfile
	p.Addr = "127.0.0.5"
	cfg, hc := containerConfig(p, s, "/var/lib/deis-agent/slugs/abc")
	env := map[string]bool{}
	for _, e := range cfg.Env {
		env[e] = true
	}
	for _, e := range []string{"GREETING=hi", "HOME=/app", "DYNO=web.1", "PORT=5000", "DEIS_COMMAND=python3 server.py"} {
		if !env[e] {
			t.Errorf("env lacks %s: %v", e, cfg.Env)
		}
	}
	if cfg.WorkingDir != "/app" || cfg.Labels[labelRelease] != "3" || cfg.Labels[labelName] != s.Name {
		t.Errorf("config: %+v", cfg)
	}
	if len(hc.Mounts) != 1 || hc.Mounts[0].Target != "/app" || !hc.Mounts[0].ReadOnly {
		t.Errorf("mounts: %+v", hc.Mounts)
	}
	b := hc.PortBindings["5000/tcp"]
	if len(b) != 1 || b[0].HostIP != "127.0.0.5" || b[0].HostPort != "" {
		t.Errorf("port bindings: %+v", hc.PortBindings)
	}
	if hc.NanoCPUs != 5e8 || hc.RestartPolicy.Name != "unless-stopped" {
		t.Errorf("host config: %+v", hc)
	}

	// An image-only release runs its image as it is.
	s.Slug, s.Command = nil, ""
	cfg, hc = containerConfig(p, s, "")
	if cfg.User != "" || len(cfg.Cmd) != 0 || len(hc.Mounts) != 0 {
		t.Errorf("image-only config: %+v %+v", cfg, hc)
	}
}

// Every app container is confined the same way, slug or image; a slug runs
// as its formation's uid.
func TestContainerConfigConfines(t *testing.T) {
	slugSpec := spec("hello.v3.web.1", 3)
	slugSpec.UID = state.FirstAppUID + 42
	legacy := slugSpec
	legacy.UID = 0
	imageSpec := slugSpec
	imageSpec.UID = 0
	limited := slugSpec
	limited.Limits.MemoryBytes = 2 << 30
	fallback := strconv.Itoa(state.AppUID("hello", 0))
	uid := strconv.Itoa(state.FirstAppUID + 42)
	for _, c := range []struct {
		name    string
		p       profile
		s       state.ContainerSpec
		slug    string
		user    string // "": the image's
		memory  int64
		pids    int64 // 0: none
		network string
	}{
		// a slug runs as its formation's uid and gets the default memory limit
		{"slug", testProfile, slugSpec, "/slugs/abc", uid + ":" + uid, DefaultMemoryBytes, DefaultPidsLimit, ""},
		// a formation from before uids were allocated: the uid derived from its name
		{"slug of an old formation", testProfile, legacy, "/slugs/abc", fallback + ":" + fallback, DefaultMemoryBytes, DefaultPidsLimit, ""},
		// limits:set overrides the default memory limit
		{"explicit memory", testProfile, limited, "/slugs/abc", uid + ":" + uid, 2 << 30, DefaultPidsLimit, ""},
		// an image runs as its own user, confined all the same
		{"image", testProfile, imageSpec, "", "", DefaultMemoryBytes, DefaultPidsLimit, ""},
		// the node's network; no default limits when the operator wants none
		{"network, no defaults", profile{Node: "n1", Addr: "10.0.0.1", Network: "deis-apps"}, slugSpec, "/slugs/abc", uid + ":" + uid, 0, 0, "deis-apps"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, hc := containerConfig(c.p, c.s, c.slug)
			if cfg.User != c.user {
				t.Errorf("user %q, want %q", cfg.User, c.user)
			}
			if !reflect.DeepEqual(hc.CapDrop, strslice.StrSlice{"ALL"}) || len(hc.CapAdd) != 0 {
				t.Errorf("capabilities: drop %v add %v", hc.CapDrop, hc.CapAdd)
			}
			if !reflect.DeepEqual(hc.SecurityOpt, []string{"no-new-privileges"}) || hc.Privileged {
				t.Errorf("security options %v, privileged %v", hc.SecurityOpt, hc.Privileged)
			}
			if hc.Memory != c.memory {
				t.Errorf("memory %d, want %d", hc.Memory, c.memory)
			}
			if got := hc.PidsLimit; (c.pids == 0) != (got == nil) || (got != nil && *got != c.pids) {
				t.Errorf("pids limit %v, want %d", got, c.pids)
			}
			if !hc.ReadonlyRootfs || hc.Tmpfs["/tmp"] != "rw,nosuid,nodev,size=256m,mode=1777" || len(hc.Tmpfs) != 1 {
				t.Errorf("read-only root %v, tmpfs %v", hc.ReadonlyRootfs, hc.Tmpfs)
			}
			if hc.LogConfig.Type != "json-file" || hc.LogConfig.Config["max-size"] != "10m" || hc.LogConfig.Config["max-file"] != "3" {
				t.Errorf("log config %+v", hc.LogConfig)
			}
			if string(hc.NetworkMode) != c.network {
				t.Errorf("network %q, want %q", hc.NetworkMode, c.network)
			}
			if b := hc.PortBindings["5000/tcp"]; len(b) != 1 || b[0].HostIP != c.p.Addr {
				t.Errorf("port published on %+v, want %s", b, c.p.Addr)
			}
			for _, u := range []string{"0", "root", "1000", "1000:1000"} {
				if cfg.User == u {
					t.Errorf("runs as %s", u)
				}
			}
		})
	}
}
