package ctl

import (
	"strings"
	"testing"

	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestPsRestart(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)
	c.fails(`unknown process type "db"`, "ps:restart", "db", "-f", "hello")
	contains(t, c.ok("ps:restart", "-f", "hello"), "Restarting web, worker of hello")
	c.ok("ps:restart", "web", "-f", "hello")
	var f state.Formation
	c.get(c.store.Keys.Formation("hello"), &f)
	if f.Restarts["web"] != 2 {
		t.Fatalf("restarts = %v", f.Restarts)
	}
}

func TestScaleCapacity(t *testing.T) {
	// Two live runtime nodes holding 2 containers each: web=5 is refused with
	// how many fit, and nothing is written.
	c := newCluster(t)
	c.seedRelease("hello", nil)
	lease, err := c.cli.Grant(c.ctx(), 60)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2"} {
		c.put(c.store.Keys.Node(n), state.Node{Name: n, Labels: map[string]string{"role": "runtime"}, Capacity: 2})
		if _, err := c.cli.Put(c.ctx(), c.store.Keys.Heartbeat(n), "{}", clientv3.WithLease(lease.ID)); err != nil {
			t.Fatal(err)
		}
	}
	c.fails("can hold only 4 more", "scale", "web=5", "-f", "hello")
	c.ok("scale", "web=4", "-f", "hello")
}

func TestStatusShowsSchedulerAndWatchEnds(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)
	c.put(c.store.Keys.FormationStatus("hello"), state.FormationStatus{Formation: "hello", Release: 1,
		Error: "no live node matches the formation's runtime layer"})
	contains(t, c.ok("status", "-f", "hello"), "Stuck:", "no live node matches")
	// --watch gives up with the timeout while the formation cannot converge
	c.fails("still converging", "--timeout", "2s", "status", "--watch", "-f", "hello")
}

func TestHealthcheckPathValidated(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)
	for _, bad := range []string{"healthz", "http://x/", "/a b", "//evil"} {
		c.fails("invalid HEALTHCHECK_PATH", "config:set", "HEALTHCHECK_PATH="+bad, "-f", "hello")
	}
	c.ok("config:set", "HEALTHCHECK_PATH=/healthz", "-f", "hello")
}

func TestUnknownFlagSuggests(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)
	c.fails("did you mean --formation", "config:set", "--formaton", "hello", "A=1")
	c.fails("did you mean --formation", "config:set", "A=1", "--formaton", "hello")
	if _, stderr, err := c.run("--etcd-endpont", "x", "formations"); err == nil || !strings.Contains(err.Error()+stderr, "did you mean --etcd-endpoints") {
		t.Fatalf("global flag typo: err=%v stderr=%s", err, stderr)
	}
}
