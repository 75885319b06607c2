package ctl

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
)

// Integration tests of domains, limits, layers and nodes against real etcd.

func (c *cluster) formation(f string) state.Formation {
	c.t.Helper()
	var form state.Formation
	c.get(c.store.Keys.Formation(f), &form)
	return form
}

// unchanged runs deisctl, wants success with out containing want, and
// checks that nothing was written (a no-op).
func (c *cluster) unchanged(want string, args ...string) {
	c.t.Helper()
	before := c.revision()
	contains(c.t, c.ok(args...), want)
	if after := c.revision(); after != before {
		c.t.Fatalf("deisctl %s was a no-op but wrote to etcd (revision %d -> %d)", strings.Join(args, " "), before, after)
	}
}

func TestDomains(t *testing.T) {
	c := newCluster(t)
	c.ok("formations:create", "hello")
	c.ok("formations:create", "other")

	contains(t, c.ok("domains:add", "www.example.com", "-f", "hello"), "Adding www.example.com to hello... done")
	c.ok("domains:add", "-f", "hello", "api.example.com")
	c.ok("domains:add", "*.apps.example.com", "-f", "hello")
	want := []string{"*.apps.example.com", "api.example.com", "www.example.com"}
	if got := c.formation("hello").Domains; !reflect.DeepEqual(got, want) {
		t.Fatalf("domains = %v, want %v (sorted)", got, want)
	}
	c.unchanged("already there, no change", "domains:add", "www.example.com", "-f", "hello")

	// Nothing unsafe for a server_name directive gets in.
	for _, bad := range []string{"bad domain.com", "evil.com;", "x{y}.com", `"quoted.com"`, "it's.com", "Upper.example.com", "a..b", ""} {
		c.fails("invalid domain", "domains:add", bad, "-f", "hello")
	}
	// The default domain is always served; another formation's domains are refused.
	c.fails("default domain of hello and is always served", "domains:add", "hello.localhost", "-f", "hello")
	c.fails("already used by formation hello", "domains:add", "www.example.com", "-f", "other")
	c.fails("already used by formation hello", "domains:add", "hello.localhost", "-f", "other")
	c.fails(`formation "nope" not found`, "domains:add", "x.example.com", "-f", "nope")
	c.fails("usage: deisctl domains:add DOMAIN", "domains:add", "-f", "hello")

	out := c.ok("domains", "-f", "hello")
	contains(t, out, "=== hello Domains", "hello.localhost (default, always served)", "api.example.com", "www.example.com")
	var dj domainsJSON
	if err := json.Unmarshal([]byte(c.ok("domains:list", "-f", "hello", "--json")), &dj); err != nil {
		t.Fatal(err)
	}
	if dj.Default != "hello.localhost" || !reflect.DeepEqual(dj.Domains, want) {
		t.Fatalf("domains --json = %+v", dj)
	}
	contains(t, c.ok("domains", "-f", "other"), "other.localhost (default", "No other domains")

	c.fails("cannot be removed", "domains:remove", "hello.localhost", "-f", "hello")
	c.fails("nope.example.com is not a domain of hello", "domains:remove", "nope.example.com", "-f", "hello")
	c.fails("invalid domain", "domains:remove", "evil.com;", "-f", "hello")
	contains(t, c.ok("domains:remove", "api.example.com", "-f", "hello"), "Removing api.example.com from hello... done")
	if got := c.formation("hello").Domains; !reflect.DeepEqual(got, []string{"*.apps.example.com", "www.example.com"}) {
		t.Fatalf("domains after remove = %v", got)
	}

	// The default follows the coordinator's base domain.
	c.put(c.store.Keys.Coordinator(), state.CoordinatorInfo{BaseDomain: "apps.test"})
	contains(t, c.ok("domains", "-f", "hello"), "hello.apps.test (default")
	c.fails("already used by formation other", "domains:add", "other.apps.test", "-f", "hello")
}

func TestLimits(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)

	contains(t, c.ok("limits:set", "web=512M", "-f", "hello"), "Setting memory limit of hello: web=512M... done")
	contains(t, c.ok("limits:set", "--cpu", "web=0.5", "-f", "hello"), "Setting CPU limit of hello: web=0.5... done", "web=512M/0.5 CPU")
	c.ok("limits:set", "worker=1G", "--memory", "-f", "hello")
	want := map[string]state.ResourceLimits{"web": {MemoryBytes: 512 << 20, CPUs: 0.5}, "worker": {MemoryBytes: 1 << 30}}
	if got := c.formation("hello").Limits; !reflect.DeepEqual(got, want) {
		t.Fatalf("limits = %+v, want %+v", got, want)
	}
	c.unchanged("already set, no change", "limits:set", "web=512M", "-f", "hello")

	for _, tc := range []struct{ want, arg string }{
		{`invalid memory limit "lots" for web`, "web=lots"},
		{"must be more than zero", "web=0"},
		{"must be more than zero", "web=-1M"},
		{`unknown unit "T"`, "web=5T"},
		{"below Docker's minimum of 6M", "web=1K"},
		{"malformed limit", "web"},
		{`unknown process type "db"`, "db=512M"},
		{`invalid process type "Web"`, "Web=512M"},
	} {
		c.fails(tc.want, "limits:set", tc.arg, "-f", "hello")
	}
	c.fails(`invalid CPU limit "lots"`, "limits:set", "--cpu", "web=lots", "-f", "hello")
	c.fails("must be more than zero", "limits:set", "--cpu", "web=0", "-f", "hello")
	c.fails("must be more than zero", "limits:set", "--cpu", "web=-1", "-f", "hello")
	c.fails("not both", "limits:set", "--cpu", "--memory", "web=1", "-f", "hello")
	c.fails("invalid memory limit", "limits:set", "web=512M", "worker=lots", "-f", "hello") // one bad pair: nothing written
	c.fails(`formation "nope" not found`, "limits:set", "web=512M", "-f", "nope")

	out := c.ok("limits", "-f", "hello")
	contains(t, out, "=== hello Limits", "TYPE", "MEMORY", "CPUS", "512M", "0.5", "1G")
	var lj limitsJSON
	if err := json.Unmarshal([]byte(c.ok("limits:list", "--json", "-f", "hello")), &lj); err != nil || !reflect.DeepEqual(lj.ProcessTypes, want) || lj.MaxBodyBytes != 0 {
		t.Fatalf("limits --json = %+v, %v", lj, err)
	}

	contains(t, c.ok("limits:unset", "web", "--cpu", "-f", "hello"), "Removing CPU limit of web from hello... done")
	if got := c.formation("hello").Limits["web"]; got != (state.ResourceLimits{MemoryBytes: 512 << 20}) {
		t.Fatalf("web limits after unset --cpu = %+v", got)
	}
	c.ok("limits:unset", "web", "-f", "hello")
	if _, ok := c.formation("hello").Limits["web"]; ok {
		t.Fatal("web limits survived limits:unset")
	}
	c.unchanged("none set, no change", "limits:unset", "web", "-f", "hello")
	c.fails("invalid process type", "limits:unset", "Bad!", "-f", "hello")
	c.fails("usage: deisctl limits:unset TYPE", "limits:unset", "-f", "hello")
	c.ok("limits:unset", "worker", "--memory", "-f", "hello")
	if got := c.formation("hello").Limits; got != nil {
		t.Fatalf("limits after removing all = %v, want none", got)
	}
	contains(t, c.ok("limits", "-f", "hello"), "none: containers may use all")

	// Before the first release any process type may be limited.
	c.ok("formations:create", "fresh")
	c.ok("limits:set", "web=256M", "-f", "fresh")
	if got := c.formation("fresh").Limits["web"].MemoryBytes; got != 256<<20 {
		t.Fatalf("fresh web memory = %d", got)
	}
}

// TestBodyLimit: limits:set --body sets the formation's request body limit
// (the proxies answer 413 above it) without restarting anything;
// limits:unset --body goes back to the proxies' default.
func TestBodyLimit(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)
	contains(t, c.ok("limits", "-f", "hello"), "none: containers may use all", "Request body: at most the proxies' default (10M unless the operator set deis-agent --max-body)")

	restarts := c.formation("hello").Restarts
	contains(t, c.ok("limits:set", "--body", "50M", "-f", "hello"), "Setting request body limit of hello: 50M... done", "without restarting any container", "413")
	if got := c.formation("hello"); got.MaxBodyBytes != 50<<20 || !reflect.DeepEqual(got.Restarts, restarts) {
		t.Fatalf("after limits:set --body 50M: body %d, restarts %v (were %v)", got.MaxBodyBytes, got.Restarts, restarts)
	}
	c.unchanged("already set, no change", "limits:set", "-f", "hello", "--body", "50m")
	c.ok("limits:set", "web=512M", "-f", "hello")
	contains(t, c.ok("limits", "-f", "hello"), "512M", "Request body: at most 50M (deisctl limits:unset --body goes back to the proxies' default)")
	var lj limitsJSON
	if err := json.Unmarshal([]byte(c.ok("limits", "--json", "-f", "hello")), &lj); err != nil || lj.MaxBodyBytes != 50<<20 || lj.ProcessTypes["web"].MemoryBytes != 512<<20 {
		t.Fatalf("limits --json = %+v, %v", lj, err)
	}

	for _, tc := range []struct{ want, arg string }{
		{`invalid request body limit "lots": use a size with the unit K, M or G, like --body 50M`, "lots"},
		{`invalid request body limit "5T"`, "5T"},
		{`invalid request body limit "-1M"`, "-1M"},
		{`invalid request body limit "1.5"`, "1.5"},
		{`invalid request body limit ""`, ""},
		{`request body limit "0" must be more than zero: to go back to the proxies' default use deisctl limits:unset --body`, "0"},
		{`request body limit "2G" is more than 1G, the most the proxies accept`, "2G"},
		{`request body limit "1025M" is more than 1G`, "1025M"},
	} {
		c.fails(tc.want, "limits:set", "--body", tc.arg, "-f", "hello")
	}
	c.fails("pass --body alone: set the request body limit and the memory or CPU limits in two commands", "limits:set", "--body", "1M", "web=512M", "-f", "hello")
	c.fails("pass --body alone", "limits:set", "--body", "1M", "--cpu", "-f", "hello")
	c.fails("-body", "limits:set", "-f", "hello", "--body") // urfave/cli: flag needs an argument
	c.fails(`formation "nope" not found`, "limits:set", "--body", "1M", "-f", "nope")
	if got := c.formation("hello").MaxBodyBytes; got != 50<<20 {
		t.Fatalf("a refused limits:set --body changed the limit to %d", got)
	}
	// The bounds are inclusive.
	c.ok("limits:set", "--body", "1G", "-f", "hello")
	contains(t, c.ok("limits:set", "--body", "1", "-f", "hello"), "Setting request body limit of hello: 1... done")

	c.fails("pass --body alone: remove the request body limit", "limits:unset", "--body", "web", "-f", "hello")
	contains(t, c.ok("limits:unset", "--body", "-f", "hello"), "Removing the request body limit of hello... done", "Request body: at most the proxies' default")
	if got := c.formation("hello"); got.MaxBodyBytes != 0 || got.Limits["web"].MemoryBytes != 512<<20 {
		t.Fatalf("after limits:unset --body: %+v", got)
	}
	c.unchanged("none set, no change", "limits:unset", "--body", "-f", "hello")
	c.fails("usage: deisctl limits:unset TYPE [TYPE...] [--memory|--cpu] [-f NAME], or --body", "limits:unset", "-f", "hello")
}

// seedNodes registers n1 (up, runtime+proxy, ssd), n2 (lost, runtime, ssd)
// and n3 (up, proxy).
func (c *cluster) seedNodes() {
	c.t.Helper()
	k := c.store.Keys
	c.put(k.Node("n1"), state.Node{Name: "n1", Addr: "10.0.0.1", Labels: map[string]string{"role": "runtime,proxy", "disk": "ssd"},
		HTTPPort: 8080, Capacity: 10, MemoryBytes: 2 << 30, Version: "test"})
	c.put(k.Node("n2"), state.Node{Name: "n2", Addr: "10.0.0.2", Labels: map[string]string{"role": "runtime", "disk": "ssd"}})
	c.put(k.Node("n3"), state.Node{Name: "n3", Addr: "10.0.0.3", Labels: map[string]string{"role": "proxy"}})
	c.put(k.Heartbeat("n1"), state.Heartbeat{Node: "n1", At: time.Now().UTC()})
	c.put(k.Heartbeat("n3"), state.Heartbeat{Node: "n3", At: time.Now().UTC()})
}

func TestLayers(t *testing.T) {
	c := newCluster(t)
	k := c.store.Keys
	c.ok("formations:create", "hello")
	c.seedNodes()

	out := c.ok("layers:create", "ssd", "--type", "runtime", "--selector", "role=runtime,disk=ssd", "-f", "hello")
	contains(t, out, "Creating runtime layer ssd of hello (disk=ssd,role=runtime)... done", "Live nodes it matches: n1")
	var l state.Layer
	c.get(k.Layer("hello", "ssd"), &l)
	if l.Formation != "hello" || l.Name != "ssd" || l.Type != state.LayerRuntime ||
		!reflect.DeepEqual(l.Selector, map[string]string{"role": "runtime", "disk": "ssd"}) || l.Created.IsZero() {
		t.Fatalf("layer = %+v", l)
	}
	contains(t, c.ok("layers:create", "gpu", "--type", "runtime", "--selector", "gpu=yes", "-f", "hello"),
		"No live node matches it yet: start an agent with --labels gpu=yes")

	for _, tc := range []struct {
		want string
		args []string
	}{
		{"invalid layer name", []string{"Bad_Name", "--type", "runtime", "--selector", "role=runtime"}},
		{`invalid layer type "web"`, []string{"x", "--type", "web", "--selector", "role=runtime"}},
		{"no layer type given", []string{"x", "--selector", "role=runtime"}},
		{"no selector given", []string{"x", "--type", "proxy"}},
		{`malformed selector "role"`, []string{"x", "--type", "proxy", "--selector", "role"}},
		{`selector key "role" given twice`, []string{"x", "--type", "proxy", "--selector", "role=a,role=b"}},
		{"invalid selector key", []string{"x", "--type", "proxy", "--selector", "ro le=a"}},
		{"invalid selector value", []string{"x", "--type", "proxy", "--selector", "role=a;b"}},
		{`layer "ssd" already exists in hello`, []string{"ssd", "--type", "proxy", "--selector", "role=proxy"}},
		{"usage: deisctl layers:create NAME", []string{"--type", "proxy", "--selector", "role=proxy"}},
	} {
		c.fails(tc.want, append([]string{"layers:create", "-f", "hello"}, tc.args...)...)
	}
	c.fails(`formation "nope" not found`, "layers:create", "x", "--type", "proxy", "--selector", "role=proxy", "-f", "nope")

	out = c.ok("layers", "-f", "hello")
	contains(t, out, "NAME", "SELECTOR", "ssd", "disk=ssd,role=runtime", "n1, n2 (lost)", "gpu", "none", "proxy", "role=proxy")
	var list []layerJSON
	if err := json.Unmarshal([]byte(c.ok("layers:list", "--json", "-f", "hello")), &list); err != nil || len(list) != 4 {
		t.Fatalf("layers --json = %+v, %v", list, err)
	}

	out = c.ok("layers:info", "ssd", "-f", "hello")
	contains(t, out, "=== hello Layer ssd", "Type:", "runtime", "NODE", "n1", "10.0.0.1", "up", "n2", "lost")
	if strings.Contains(out, "n3") {
		t.Fatalf("layers:info lists a node the selector does not match:\n%s", out)
	}
	var info layerJSON
	if err := json.Unmarshal([]byte(c.ok("layers:info", "ssd", "-f", "hello", "--json")), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Nodes) != 2 || info.Nodes[0].Name != "n1" || !info.Nodes[0].Up || info.Nodes[1].Name != "n2" || info.Nodes[1].Up {
		t.Fatalf("layers:info --json nodes = %+v", info.Nodes)
	}
	contains(t, c.ok("layers:info", "gpu", "-f", "hello"), "No registered node matches gpu=yes: start an agent with --labels gpu=yes")
	c.fails(`layer "nope" not found in hello`, "layers:info", "nope", "-f", "hello")

	contains(t, c.ok("layers:destroy", "gpu", "-f", "hello"), "Destroying layer gpu of hello... done")
	if c.exists(k.Layer("hello", "gpu")) {
		t.Fatal("layer gpu survived layers:destroy")
	}
	out = c.ok("layers:destroy", "proxy", "-f", "hello")
	contains(t, out, "no proxy layer left")
	c.fails(`layer "gpu" not found in hello`, "layers:destroy", "gpu", "-f", "hello")
	c.fails("invalid layer name", "layers:destroy", "../runtime", "-f", "hello")
}

func TestNodesInfoAndDrain(t *testing.T) {
	c := newCluster(t)
	k := c.store.Keys
	c.seedRelease("hello", nil)
	c.ok("formations:create", "other")
	c.seedNodes()
	c.put(k.Runtime("n1"), state.Runtime{Node: "n1", Containers: []state.ContainerSpec{
		{Name: "hello.v1.web.1", Formation: "hello", Release: 1, Type: "web"},
		{Name: "other.v1.web.1", Formation: "other", Release: 1, Type: "web"}}})
	c.put(k.NodeStatus("n1"), state.NodeStatus{Node: "n1", Pending: []string{"starting other.v1.web.1"}, Containers: []state.ContainerStatus{
		{Name: "hello.v1.web.1", Formation: "hello", Release: 1, Type: "web", State: state.StateReady, Addr: "10.0.0.1:30001"},
		{Name: "hello.v0.web.1", Formation: "hello", Release: 0, Type: "web", State: state.StateStopping}}})

	out := c.ok("nodes:info", "n1")
	contains(t, out, "=== n1", "10.0.0.1", "disk=ssd,role=runtime,proxy", "Proxy HTTP port:", "8080", "10 containers", "2G",
		"up, lease held since", "hello/runtime (runtime)", "hello/proxy (proxy)", "other/runtime (runtime)",
		"hello.v1.web.1", "ready", "10.0.0.1:30001", "other.v1.web.1", "pending", "hello.v0.web.1", "stopping (retiring)",
		"Pending: starting other.v1.web.1")
	var info nodeInfoJSON
	if err := json.Unmarshal([]byte(c.ok("nodes:info", "n1", "--json")), &info); err != nil {
		t.Fatal(err)
	}
	if info.State != "up" || info.Heartbeat == nil || info.Heartbeat.At.IsZero() || info.Draining != nil ||
		len(info.Layers) != 4 || len(info.Containers) != 3 || info.Node.HTTPPort != 8080 {
		t.Fatalf("nodes:info --json = %+v", info)
	}
	out = c.ok("nodes:info", "n2")
	contains(t, out, "lost: no heartbeat", "No containers.")
	c.fails(`node "nope" is not registered`, "nodes:info", "nope")
	c.fails("invalid node name", "nodes:info", "Bad!")

	// Drain n1: it is the only live runtime node, so the move has nowhere to go.
	out = c.ok("nodes:drain", "n1")
	contains(t, out, "Draining n1... done", "zero-downtime handoff", "watch with deisctl status", "nodes:undrain n1",
		"Warning: no other live node is in the runtime layer of hello", "n1 stays in proxy layer hello/proxy")
	var d state.Drain
	c.get(k.Drain("n1"), &d)
	if d.Node != "n1" || d.Created.IsZero() {
		t.Fatalf("drain = %+v", d)
	}
	c.unchanged("n1 is already draining", "nodes:drain", "n1")
	c.fails(`node "nope" is not registered`, "nodes:drain", "nope")
	c.fails("invalid node name", "nodes:drain", "a/b")
	c.fails("usage: deisctl nodes:drain NODE", "nodes:drain")

	contains(t, c.ok("nodes:info", "n1"), "yes, since")
	contains(t, c.ok("nodes:list"), "up, draining")
	out = c.ok("status", "-f", "hello")
	contains(t, out, "every live node of its runtime layer is draining (n1)", "Draining: n1 (since")
	var st statusJSON
	if err := json.Unmarshal([]byte(c.ok("status", "--json")), &st); err != nil || len(st.DrainingNodes) != 1 || st.DrainingNodes[0].Node != "n1" {
		t.Fatalf("status --json = %+v, %v", st, err)
	}

	contains(t, c.ok("nodes:drain", "--undo", "n1"), "Undraining n1... done")
	if c.exists(k.Drain("n1")) {
		t.Fatal("drain survived nodes:drain --undo")
	}
	c.unchanged("n1 is not draining", "nodes:undrain", "n1")
	c.fails(`node "nope" is not registered`, "nodes:undrain", "nope")

	// With a second live runtime node the drain has somewhere to go.
	c.put(k.Heartbeat("n2"), state.Heartbeat{Node: "n2", At: time.Now().UTC()})
	out = c.ok("nodes:drain", "n1")
	if strings.Contains(out, "nowhere to go") {
		t.Fatalf("warns although n2 can take the containers:\n%s", out)
	}
	contains(t, c.ok("nodes:undrain", "n1"), "Undraining n1... done")
}

func TestStatusNoLiveNode(t *testing.T) {
	c := newCluster(t)
	k := c.store.Keys
	c.ok("formations:create", "hello")

	out := c.ok("status")
	contains(t, out, "=== hello: converging",
		"no live node matches runtime layer runtime (role=runtime): start an agent with --labels role=runtime",
		"no live node matches proxy layer proxy (role=proxy): start an agent with --labels role=proxy")

	c.put(k.Node("n1"), state.Node{Name: "n1", Labels: map[string]string{"role": "runtime"}})
	contains(t, c.ok("status", "-f", "hello"), "(matching nodes without a heartbeat: n1)")

	c.put(k.Heartbeat("n1"), state.Heartbeat{Node: "n1", At: time.Now().UTC()})
	out = c.ok("status", "-f", "hello")
	if strings.Contains(out, "runtime layer runtime") {
		t.Fatalf("still reports the runtime layer although n1 is up:\n%s", out)
	}
	contains(t, out, "no live node matches proxy layer proxy")

	c.ok("layers:destroy", "runtime", "-f", "hello")
	contains(t, c.ok("status", "-f", "hello"), "no runtime layer: create one with deisctl layers:create runtime --type runtime --selector role=runtime -f hello")
}
