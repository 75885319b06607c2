package ctl

import (
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
)

func TestRun(t *testing.T) {
	c := newCluster(t)
	c.seedImageRelease("hello", map[string]string{"GREETING": "howdy"})
	a := c.startAgent("run", map[string]string{"role": "runtime"})
	// The one-off's spec comes from the node's databag (a node reads no
	// release): the scheduler writes the release's config there.
	web := stackSpec("hello", 1, "web", 1, "exec sleep infinity")
	web.Env["GREETING"] = "howdy"
	a.assign(web)
	// An idle agent, tried first (it runs nothing): it answers 409 and
	// deisctl run moves on to the node that runs hello.
	c.startAgent("idle", map[string]string{"role": "runtime"})

	// Decoys, whose API does not answer: a busier live node, a lost one,
	// and an idle one no runtime layer matches.
	now := time.Now().UTC()
	busy := state.Node{Name: "busy-" + randomSuffix(), Addr: "127.0.0.1", Labels: map[string]string{"role": "runtime"}, APIURL: "http://127.0.0.1:1", Started: now}
	c.put(c.store.Keys.Node(busy.Name), busy)
	c.put(c.store.Keys.Heartbeat(busy.Name), state.Heartbeat{Node: busy.Name, At: now})
	c.put(c.store.Keys.Runtime(busy.Name), state.Runtime{Node: busy.Name, Containers: []state.ContainerSpec{
		stackSpec("other", 1, "web", 1, "x"), stackSpec("other", 1, "web", 2, "x"), stackSpec("other", 1, "web", 3, "x")}})
	lost := state.Node{Name: "lost-" + randomSuffix(), Addr: "127.0.0.1", Labels: map[string]string{"role": "runtime"}, APIURL: "http://127.0.0.1:1", Started: now}
	c.put(c.store.Keys.Node(lost.Name), lost)
	proxy := state.Node{Name: "proxy-" + randomSuffix(), Addr: "127.0.0.1", Labels: map[string]string{"role": "proxy"}, APIURL: "http://127.0.0.1:1", Started: now}
	c.put(c.store.Keys.Node(proxy.Name), proxy)
	c.put(c.store.Keys.Heartbeat(proxy.Name), state.Heartbeat{Node: proxy.Name, At: now})

	out, errOut, err := c.runApp("a line of input\n", "run", "-f", "hello", "--", "sh", "-c", `echo "$GREETING $DYNO $(id -u)"; cat; echo bad >&2; exit 7`)
	var ec cli.ExitCoder
	if !errors.As(err, &ec) || ec.ExitCode() != 7 {
		t.Fatalf("exit: %v, want status 7 (stdout %q, stderr %q)", err, out, errOut)
	}
	if !regexp.MustCompile(`^howdy run\.\d+ 0\na line of input\n$`).MatchString(out) || errOut != "bad\n" {
		t.Errorf("stdout %q, stderr %q", out, errOut)
	}

	// Success; several words are quoted one by one, one word is a command line.
	if out := c.ok("run", "-f", "hello", "echo", "it's", "$GREETING"); out != "it's $GREETING\n" {
		t.Errorf("run echo: %q", out)
	}
	if out := c.ok("run", "-f", "hello", "--", "echo $GREETING | tr a-z A-Z"); out != "HOWDY\n" {
		t.Errorf("run a command line: %q", out)
	}

	// One-offs are gone once they exited.
	if ids, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=deis.oneoff=1", "--filter", "label=deis.node="+a.name).Output(); len(strings.TrimSpace(string(ids))) > 0 {
		t.Errorf("one-off containers left: %s", ids)
	}

	// No node runs a container of quiet: one line says what to do.
	c.ok("formations:create", "quiet")
	if _, err := c.cli.Delete(c.ctx(), c.store.Keys.Heartbeat(busy.Name)); err != nil { // its API does not answer
		t.Fatal(err)
	}
	c.fails("no node runs quiet: scale a process type up first (deisctl scale web=1)", "run", "-f", "quiet", "--", "ls")

	c.fails("no command given, so nothing was run", "run", "-f", "hello")
	c.fails(`formation "nope" not found`, "run", "-f", "nope", "--", "ls")
	c.ok("formations:create", "bare")
	c.ok("layers:destroy", "runtime", "-f", "bare") // formations:create made it
	c.fails("formation bare has no runtime layer", "run", "-f", "bare", "--", "ls")
}

func TestPickRunNode(t *testing.T) {
	layers := []state.Layer{
		{Name: "runtime", Type: state.LayerRuntime, Selector: map[string]string{"role": "runtime"}},
		{Name: "edge", Type: state.LayerProxy, Selector: map[string]string{"role": "proxy"}},
	}
	node := func(name, role, api string) state.Node {
		return state.Node{Name: name, Labels: map[string]string{"role": role}, APIURL: api}
	}
	cases := []struct {
		name   string
		layers []state.Layer
		cands  []runCandidate
		want   string // node name, or a piece of the error
	}{
		// The least loaded live node of a runtime layer wins.
		{"least loaded", layers, []runCandidate{
			{node: node("a", "runtime", "http://a"), alive: true, load: 3},
			{node: node("b", "runtime", "http://b"), alive: true, load: 1},
		}, "b,a"},
		// Equal load: by name.
		{"by name", layers, []runCandidate{
			{node: node("b", "runtime", "http://b"), alive: true},
			{node: node("a", "runtime", "http://a"), alive: true},
		}, "a,b"},
		// A draining node only when there is no other.
		{"not draining", layers, []runCandidate{
			{node: node("a", "runtime", "http://a"), alive: true, draining: true},
			{node: node("b", "runtime", "http://b"), alive: true, load: 9},
		}, "b,a"},
		// Lost nodes and nodes of proxy layers only are never picked.
		{"lost and proxy skipped", layers, []runCandidate{
			{node: node("a", "runtime", "http://a")},
			{node: node("p", "proxy", "http://p"), alive: true},
			{node: node("c", "runtime,proxy", "http://c"), alive: true, load: 5},
		}, "c"},
		// No runtime layer: say how to create one.
		{"no runtime layer", layers[1:], []runCandidate{{node: node("a", "runtime", "http://a"), alive: true}},
			"has no runtime layer"},
		// Nothing alive: say which selectors.
		{"none alive", layers, []runCandidate{{node: node("a", "runtime", "http://a")}}, "no live node matches the runtime layers of hello: runtime (role=runtime)"},
		// Alive but without an API: say so.
		{"no api", layers, []runCandidate{{node: node("a", "runtime", ""), alive: true}}, "serve no agent API"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns, err := pickRunNodes("hello", tc.layers, tc.cands)
			var names []string
			for _, n := range ns {
				names = append(names, n.Name)
			}
			switch {
			case err != nil && !strings.Contains(err.Error(), tc.want):
				t.Errorf("error %v, want %q", err, tc.want)
			case err == nil && strings.Join(names, ",") != tc.want:
				t.Errorf("picked %v, want %s", names, tc.want)
			}
		})
	}
}

func TestShellJoin(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"echo $HOME | wc"}, "echo $HOME | wc"}, // one argument: a command line
		{[]string{"ls", "-la", "/app"}, "ls -la /app"},
		{[]string{"echo", "it's", "a b", ""}, `echo 'it'"'"'s' 'a b' ''`},
		{[]string{"python3", "-c", "print(1)"}, "python3 -c 'print(1)'"},
	} {
		if got := shellJoin(tc.args); got != tc.want {
			t.Errorf("shellJoin(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}
