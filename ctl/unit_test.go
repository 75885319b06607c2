package ctl

import (
	"reflect"
	"strings"
	"testing"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/pkg/view"
)

func TestParsePairs(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		order   []string
		vals    map[string]string
		wantErr string
	}{
		// One pair.
		{"one", []string{"GREETING=hi"}, []string{"GREETING"}, map[string]string{"GREETING": "hi"}, ""},
		// Values may hold '=' and be empty; a repeated key keeps the last value.
		{"equals in value", []string{"A=x=y", "B=", "A=z"}, []string{"A", "B"}, map[string]string{"A": "z", "B": ""}, ""},
		// A key may not start with a digit.
		{"bad key", []string{"OK=1", "1BAD=x"}, nil, nil, `invalid config key "1BAD"`},
		// A pair needs '='.
		{"no equals", []string{"GREETING"}, nil, nil, `malformed config pair "GREETING"`},
		// An empty key is invalid.
		{"empty key", []string{"=x"}, nil, nil, `invalid config key ""`},
		// Nothing given.
		{"none", nil, nil, nil, "no config vars given"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			order, vals, err := parsePairs(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(order, tc.order) || !reflect.DeepEqual(vals, tc.vals) {
				t.Fatalf("got %v %v, want %v %v", order, vals, tc.order, tc.vals)
			}
		})
	}
}

func TestParseScale(t *testing.T) {
	cases := []struct {
		args    []string
		want    map[string]int
		wantErr string
	}{
		// Several types, zero allowed.
		{[]string{"web=2", "worker=0"}, map[string]int{"web": 2, "worker": 0}, ""},
		// Negative counts are rejected.
		{[]string{"web=-1"}, nil, `invalid count "-1" for web`},
		// Counts must be numbers.
		{[]string{"web=lots"}, nil, `invalid count "lots" for web`},
		// Absurd counts are rejected.
		{[]string{"web=100000"}, nil, "more than 1000"},
		// TYPE=N form is required.
		{[]string{"web"}, nil, `malformed scale "web"`},
		// Process type names are validated.
		{[]string{"Web=1"}, nil, `invalid process type "Web"`},
	}
	for _, tc := range cases {
		got, err := parseScale(tc.args)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err = %v, want %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v: got %v, %v; want %v", tc.args, got, err, tc.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	names := []string{"formations:create", "formations:list", "formations", "config", "config:set", "ps", "scale", "status"}
	cases := []struct {
		typed string
		want  []string
	}{
		{"formations:craete", []string{"formations:create"}}, // transposed letters
		{"config:sett", []string{"config:set"}},              // one extra letter
		{"formation", []string{"formations"}},                // one missing letter
		{"statsu", []string{"status"}},                       // transposition in a short word
		{"xyzzy", nil},                                       // nothing close
	}
	for _, tc := range cases {
		got := suggest(names, tc.typed)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("suggest(%q) = %v, want %v", tc.typed, got, tc.want)
		}
	}
	// A topic lists its commands.
	if got := suggest([]string{"keys:add", "keys:remove", "ps"}, "keys"); !reflect.DeepEqual(got, []string{"keys:add", "keys:remove"}) {
		t.Errorf("topic suggestion = %v", got)
	}
}

func TestLevenshtein(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"abc", "", 3}, {"kitten", "sitting", 3}, {"ps", "ps", 0}, {"scael", "scale", 2}} {
		if d := levenshtein(tc.a, tc.b); d != tc.d {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", tc.a, tc.b, d, tc.d)
		}
	}
}

func TestFormationFromRemote(t *testing.T) {
	for _, tc := range []struct {
		url, want string
		ok        bool
	}{
		{"ssh://git@localhost:2222/hello.git\n", "hello", true},
		{"git@deis.example.com:my-app.git", "my-app", true},
		{"ssh://git@host/hello", "hello", true},
		{"ssh://git@host/hello.git/", "hello", true},
		{"ssh://git@host/Hello.git", "", false},
		{"", "", false},
	} {
		got, ok := formationFromRemote(tc.url)
		if got != tc.want || ok != tc.ok {
			t.Errorf("formationFromRemote(%q) = %q, %v; want %q, %v", tc.url, got, ok, tc.want, tc.ok)
		}
	}
}

func TestCoordinatorEndpoints(t *testing.T) {
	ce := coordinatorEndpoints{info: state.CoordinatorInfo{SSHHost: "deis.example.com", SSHPort: 22, BaseDomain: "apps.example.com", HTTPPort: 80}}
	if got := ce.gitRemote("web"); got != "ssh://git@deis.example.com:22/web.git" {
		t.Errorf("remote = %s", got)
	}
	if got := ce.url("web", ""); got != "http://web.apps.example.com/" {
		t.Errorf("url with port 80 = %s", got)
	}
	ce.info.HTTPPort = 8080
	if got := ce.url("web", "other.test"); got != "http://web.other.test:8080/" {
		t.Errorf("url with base domain override = %s", got)
	}
	if got := ce.httpsURL("web", ""); got != "" {
		t.Errorf("https url without an HTTPS port = %q, want none", got)
	}
	ce.info.HTTPSPort = 443
	if got := ce.httpsURL("web", ""); got != "https://web.apps.example.com/" {
		t.Errorf("https url with port 443 = %s", got)
	}
	ce.info.HTTPSPort = 8443
	if got := ce.httpsURL("web", "other.test"); got != "https://web.other.test:8443/" {
		t.Errorf("https url with base domain override = %s", got)
	}
}

func TestPsRows(t *testing.T) {
	rts := []state.Runtime{
		{Node: "n1", Containers: []state.ContainerSpec{
			{Name: "hello-v2-web-1", Formation: "hello", Release: 2, Type: "web"},
			{Name: "hello-v2-worker-1", Formation: "hello", Release: 2, Type: "worker"},
			{Name: "other-v1-web-1", Formation: "other", Release: 1, Type: "web"},
		}},
		{Node: "n2", Containers: []state.ContainerSpec{{Name: "hello-v2-web-2", Formation: "hello", Release: 2, Type: "web"}}},
	}
	sts := []state.NodeStatus{
		{Node: "n1", Containers: []state.ContainerStatus{
			{Name: "hello-v2-web-1", Formation: "hello", Release: 2, Type: "web", State: "ready", Addr: "10.0.0.1:5000", Restarts: 2},
			{Name: "hello-v1-web-1", Formation: "hello", Release: 1, Type: "web", State: "stopping"},
			{Name: "other-v1-web-1", Formation: "other", Release: 1, Type: "web", State: "ready"},
		}},
	}
	k := state.NewKeys("")
	var es []view.Entry
	for _, rt := range rts {
		es = append(es, view.Entry{Key: k.Runtime(rt.Node), Value: rt}, view.Entry{Key: k.Heartbeat(rt.Node), Value: state.Heartbeat{Node: rt.Node}})
	}
	for _, ns := range sts {
		es = append(es, view.Entry{Key: k.NodeStatus(ns.Node), Value: ns})
	}
	st, err := view.Build("", es...)
	if err != nil {
		t.Fatal(err)
	}
	got := psRows(st.Containers("hello"))
	want := []psRow{
		// Reported by an agent but no longer desired: still shown.
		{Name: "hello-v1-web-1", Type: "web", Release: 1, Node: "n1", State: "stopping"},
		// Desired and reported.
		{Name: "hello-v2-web-1", Type: "web", Release: 2, Node: "n1", State: "ready", Addr: "10.0.0.1:5000", Restarts: 2, Desired: true},
		// Desired, not reported yet.
		{Name: "hello-v2-web-2", Type: "web", Release: 2, Node: "n2", State: "pending", Desired: true},
		{Name: "hello-v2-worker-1", Type: "worker", Release: 2, Node: "n1", State: "pending", Desired: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("psRows:\n got %+v\nwant %+v", got, want)
	}
}

// TestPsRowsLostNode: what a node without a heartbeat reported shows as
// unknown; what its databag asks for and it never reported stays pending.
func TestPsRowsLostNode(t *testing.T) {
	k := state.NewKeys("")
	st, err := view.Build("",
		view.Entry{Key: k.Runtime("n1"), Value: state.Runtime{Node: "n1", Containers: []state.ContainerSpec{
			{Name: "a.1", Formation: "a", Release: 1, Type: "web"}, {Name: "a.2", Formation: "a", Release: 1, Type: "web"}}}},
		view.Entry{Key: k.NodeStatus("n1"), Value: state.NodeStatus{Node: "n1", Containers: []state.ContainerStatus{
			{Name: "a.1", Formation: "a", Release: 1, Type: "web", State: "ready", Addr: "10.0.0.1:1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	want := []psRow{
		{Name: "a.1", Type: "web", Release: 1, Node: "n1", State: "unknown", Reason: "node lost", Addr: "10.0.0.1:1", Desired: true},
		{Name: "a.2", Type: "web", Release: 1, Node: "n1", State: "pending", Desired: true},
	}
	if got := psRows(st.Containers("a")); !reflect.DeepEqual(got, want) {
		t.Fatalf("psRows:\n got %+v\nwant %+v", got, want)
	}
}

func TestSummarize(t *testing.T) {
	v2 := &state.Release{Version: 2, Description: "Set GREETING"}
	ready := []psRow{{Name: "a", Type: "web", Release: 2, Node: "n1", State: "ready", Desired: true}}
	alive := map[string]bool{"n1": true, "p1": true}
	cases := []struct {
		name      string
		in        statusInput
		converged bool
		waiting   string // substring of one reason
	}{
		// Containers ready, routing at v2, proxy acked the routing revision.
		{"converged", statusInput{Latest: v2, Rows: ready, Routing: &state.Routing{Release: 2}, RoutingRev: 10,
			Acks: []state.ProxyAck{{Node: "p1", Revision: 10}}, Alive: alive}, true, ""},
		// No release at all.
		{"no release", statusInput{Alive: alive}, false, "no release yet"},
		// A desired container that no agent reported.
		{"pending", statusInput{Latest: v2, Rows: []psRow{{Name: "a", Type: "web", Release: 2, Node: "n1", State: "pending", Desired: true}},
			Routing: &state.Routing{Release: 2}, RoutingRev: 10, Acks: []state.ProxyAck{{Node: "p1", Revision: 10}}, Alive: alive},
			false, "1 container(s) of v2 not ready"},
		// A non-web container only needs to run.
		{"worker running", statusInput{Latest: v2, Rows: append([]psRow{{Name: "w", Type: "worker", Release: 2, Node: "n1", State: "running", Desired: true}}, ready...),
			Routing: &state.Routing{Release: 2}, RoutingRev: 10, Acks: []state.ProxyAck{{Node: "p1", Revision: 10}}, Alive: alive}, true, ""},
		// Routing still on the previous release.
		{"routing behind", statusInput{Latest: v2, Rows: ready, Routing: &state.Routing{Release: 1}, RoutingRev: 10,
			Acks: []state.ProxyAck{{Node: "p1", Revision: 10}}, Alive: alive}, false, "routing still points at v1"},
		// Proxy has not applied the latest routing revision.
		{"proxy behind", statusInput{Latest: v2, Rows: ready, Routing: &state.Routing{Release: 2}, RoutingRev: 12,
			Acks: []state.ProxyAck{{Node: "p1", Revision: 10}}, Alive: alive}, false, "proxy p1 applied routing revision 10 of 12"},
		// Node hosting containers lost its heartbeat.
		{"node lost", statusInput{Latest: v2, Rows: ready, Routing: &state.Routing{Release: 2}, RoutingRev: 10,
			Acks: []state.ProxyAck{{Node: "p1", Revision: 10}}, Alive: map[string]bool{"p1": true}}, false, "node n1 has containers but no heartbeat"},
		// The coordinator marked the desired release failed.
		{"failed", statusInput{Latest: v2, Rows: ready, Failed: map[int]state.ReleaseStatus{2: {Version: 2, Failed: true, Reason: "no node fits"}},
			Routing: &state.Routing{Release: 2}, RoutingRev: 10, Acks: []state.ProxyAck{{Node: "p1", Revision: 10}}, Alive: alive}, false, "release v2 failed: no node fits"},
		// Old containers still around.
		{"old containers", statusInput{Latest: v2, Rows: append([]psRow{{Name: "o", Type: "web", Release: 1, Node: "n1", State: "stopping"}}, ready...),
			Routing: &state.Routing{Release: 2}, RoutingRev: 10, Acks: []state.ProxyAck{{Node: "p1", Revision: 10}}, Alive: alive}, false, "older releases still present"},
		// Layers that match no live node keep the formation from converging.
		{"placement", statusInput{Latest: v2, Rows: ready, Routing: &state.Routing{Release: 2}, RoutingRev: 10,
			Acks: []state.ProxyAck{{Node: "p1", Revision: 10}}, Alive: alive,
			Placement: []string{"no live node matches runtime layer runtime (role=runtime)"}}, false, "no live node matches runtime layer"},
		// No proxy has acked.
		{"no acks", statusInput{Latest: v2, Rows: ready, Routing: &state.Routing{Release: 2}, RoutingRev: 10, Alive: alive}, false, "no proxy has applied"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := summarize(tc.in)
			if st.Converged != tc.converged {
				t.Fatalf("converged = %v, want %v (waiting %q)", st.Converged, tc.converged, st.Waiting)
			}
			if tc.waiting != "" && !strings.Contains(strings.Join(st.Waiting, "\n"), tc.waiting) {
				t.Fatalf("waiting = %q, want a reason containing %q", st.Waiting, tc.waiting)
			}
		})
	}
}

func TestReleaseStatus(t *testing.T) {
	failed := map[int]state.ReleaseStatus{3: {Version: 3, Failed: true, Reason: "boom"}}
	for _, tc := range []struct {
		v    int
		want string
	}{{3, "failed"}, {2, "live"}, {4, "rolling out"}, {1, ""}} {
		if got, _ := releaseStatus(tc.v, 4, 2, failed); got != tc.want {
			t.Errorf("releaseStatus(v%d) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

func TestParseMemory(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"512M", 512 << 20, ""},      // mebibytes
		{"1G", 1 << 30, ""},          // gibibytes
		{"1.5g", 1536 << 20, ""},     // lowercase unit, fraction
		{"8192K", 8 << 20, ""},       // kibibytes
		{"512MB", 512 << 20, ""},     // "MB" read as M
		{"104857600", 100 << 20, ""}, // plain bytes
		{"lots", 0, `invalid memory limit "lots"`},
		{"", 0, "invalid memory limit"},
		{"1.2.3M", 0, "invalid memory limit"},
		{"5T", 0, `unknown unit "T"`},
		{"5Mi", 0, `unknown unit "Mi"`},
		{"1e9", 0, "unknown unit"},
		{"0", 0, "more than zero"},
		{"-512M", 0, "more than zero"},
		{"100.5", 0, "whole number of bytes"},
		{"1K", 0, "below Docker's minimum"},
		{"2000000G", 0, "too large"},
	} {
		got, err := parseMemory("web", tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseMemory(%q): err = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseMemory(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseCPUs(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    float64
		wantErr string
	}{
		{"0.5", 0.5, ""},
		{"2", 2, ""},
		{"lots", 0, `invalid CPU limit "lots"`},
		{"500m", 0, "invalid CPU limit"},
		{"NaN", 0, "invalid CPU limit"},
		{"Inf", 0, "invalid CPU limit"},
		{"0", 0, "more than zero"},
		{"-1", 0, "more than zero"},
		{"0.001", 0, "below Docker's minimum"},
		{"5000", 0, "more than 1024 CPUs"},
	} {
		got, err := parseCPUs("web", tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseCPUs(%q): err = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseCPUs(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseLimits(t *testing.T) {
	got, err := parseLimits([]string{"web=512M", "worker=1G", "web=256M"}, false)
	want := map[string]state.ResourceLimits{"web": {MemoryBytes: 256 << 20}, "worker": {MemoryBytes: 1 << 30}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("memory: got %v, %v; the last value of a type wins", got, err)
	}
	got, err = parseLimits([]string{"web=0.25"}, true)
	if err != nil || !reflect.DeepEqual(got, map[string]state.ResourceLimits{"web": {CPUs: 0.25}}) {
		t.Fatalf("cpu: got %v, %v", got, err)
	}
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{nil, "no limits given"},
		{[]string{"web"}, `malformed limit "web"`},
		{[]string{"Web=1G"}, `invalid process type "Web"`},
		{[]string{"web=1G", "worker=lots"}, "invalid memory limit"},
	} {
		if _, err := parseLimits(tc.args, false); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("parseLimits(%v): err = %v, want %q", tc.args, err, tc.wantErr)
		}
	}
}

func TestFmtBytes(t *testing.T) {
	for in, want := range map[int64]string{0: "-", 512 << 20: "512M", 1 << 30: "1G", 1536 << 20: "1536M", 6 << 10: "6K", 1000: "1000"} {
		if got := fmtBytes(in); got != want {
			t.Errorf("fmtBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestParseSelector(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    map[string]string
		wantErr string
	}{
		{"role=runtime", map[string]string{"role": "runtime"}, ""},                          // one label
		{"role=runtime, disk=ssd", map[string]string{"role": "runtime", "disk": "ssd"}, ""}, // spaces trimmed
		{"example.com/zone=eu-1", map[string]string{"example.com/zone": "eu-1"}, ""},        // prefixed key
		{"", nil, "no selector given"},                                                      // required
		{"role", nil, `malformed selector "role"`},                                          // needs '='
		{"role=", nil, "invalid selector value"},                                            // empty value
		{"=x", nil, "invalid selector key"},                                                 // empty key
		{"role=a,role=b", nil, `selector key "role" given twice`},                           // one value per key
		{"role=a b", nil, "invalid selector value"},                                         // no spaces
		{"role=a;b", nil, "invalid selector value"},                                         // no punctuation
		{"role=runtime,", nil, "malformed selector"},                                        // trailing comma
		{"ro{le=x", nil, "invalid selector key"},                                            // braces
		{"k=" + strings.Repeat("v", 64), nil, "invalid selector value"},                     // too long
		{strings.Repeat("k", 64) + "=v", nil, "invalid selector key"},                       // too long
	} {
		got, err := parseSelector(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseSelector(%q): err = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseSelector(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestDomainOwner(t *testing.T) {
	fs := []state.Formation{{Name: "hello", Domains: []string{"www.example.com"}}, {Name: "other"}}
	for _, tc := range []struct{ self, d, want string }{
		{"other", "www.example.com", "hello"}, // an added domain of another formation
		{"other", "hello.apps.test", "hello"}, // another formation's default domain
		{"hello", "www.example.com", ""},      // its own domain is not a conflict
		{"hello", "api.example.com", ""},      // free
	} {
		if got := domainOwner(fs, "apps.test", tc.self, tc.d); got != tc.want {
			t.Errorf("domainOwner(%s, %s) = %q, want %q", tc.self, tc.d, got, tc.want)
		}
	}
}

func TestNodeContainers(t *testing.T) {
	rt := &state.Runtime{Node: "n1", Containers: []state.ContainerSpec{
		{Name: "b.v1.web.1", Formation: "b", Release: 1, Type: "web"},
		{Name: "a.v2.web.1", Formation: "a", Release: 2, Type: "web"},
	}}
	ns := &state.NodeStatus{Node: "n1", Containers: []state.ContainerStatus{
		{Name: "a.v2.web.1", Formation: "a", Release: 2, Type: "web", State: "ready", Addr: "10.0.0.1:5000"},
		{Name: "a.v1.web.1", Formation: "a", Release: 1, Type: "web", State: "stopping"},
	}}
	want := []nodeContainer{
		// Reported only: retiring.
		{Name: "a.v1.web.1", Formation: "a", Type: "web", Release: 1, State: "stopping"},
		// Desired and reported.
		{Name: "a.v2.web.1", Formation: "a", Type: "web", Release: 2, State: "ready", Addr: "10.0.0.1:5000", Desired: true},
		// Desired, not reported yet.
		{Name: "b.v1.web.1", Formation: "b", Type: "web", Release: 1, State: "pending", Desired: true},
	}
	if got := nodeContainers(rt, ns); !reflect.DeepEqual(got, want) {
		t.Fatalf("nodeContainers:\n got %+v\nwant %+v", got, want)
	}
	if got := nodeContainers(nil, nil); got == nil || len(got) != 0 {
		t.Fatalf("nodeContainers(nil, nil) = %#v, want an empty slice", got)
	}
}

func TestPlacementProblems(t *testing.T) {
	layer := func(f, name string, typ state.LayerType, sel string) state.Layer {
		k, v, _ := strings.Cut(sel, "=")
		return state.Layer{Formation: f, Name: name, Type: typ, Selector: map[string]string{k: v}}
	}
	std := []state.Layer{layer("hello", "runtime", state.LayerRuntime, "role=runtime"), layer("hello", "proxy", state.LayerProxy, "role=proxy")}
	both := []state.Node{{Name: "n1", Labels: map[string]string{"role": "runtime,proxy"}}}
	up := map[string]bool{"n1": true}
	cases := []struct {
		name   string
		layers []state.Layer
		nodes  []state.Node
		alive  map[string]bool
		drains map[string]state.Drain
		want   []string // substrings, one per problem, in order
	}{
		// A live node matches both layers.
		{"fine", std, both, up, nil, nil},
		// No node at all.
		{"no nodes", std, nil, nil, nil, []string{
			"no live node matches runtime layer runtime (role=runtime): start an agent with --labels role=runtime",
			"no live node matches proxy layer proxy (role=proxy): start an agent with --labels role=proxy"}},
		// The matching node lost its heartbeat.
		{"lost", std, both, nil, nil, []string{"(matching nodes without a heartbeat: n1)", "proxy layer proxy"}},
		// Another formation's layers do not count.
		{"other formation", []state.Layer{layer("other", "runtime", state.LayerRuntime, "role=runtime")}, both, up, nil, []string{
			"no runtime layer: create one with deisctl layers:create runtime --type runtime --selector role=runtime -f hello",
			"no proxy layer"}},
		// Every live runtime node is draining; proxying is unaffected by drains.
		{"draining", std, both, up, map[string]state.Drain{"n1": {Node: "n1"}}, []string{"every live node of its runtime layer is draining (n1)"}},
		// One of two runtime layers matching is enough.
		{"two runtime layers", append([]state.Layer{layer("hello", "gpu", state.LayerRuntime, "gpu=yes")}, std...), both, up, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := placementProblems("hello", tc.layers, tc.nodes, tc.alive, tc.drains)
			if len(got) != len(tc.want) {
				t.Fatalf("problems = %q, want %d", got, len(tc.want))
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("problem %d = %q, want one containing %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}
