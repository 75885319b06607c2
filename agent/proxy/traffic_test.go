package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
)

// The Lua counters count each answer per formation, release and class; the
// agent reports the answers of the last window to etcd, per formation.
func TestAnswerCountsPerRelease(t *testing.T) {
	needNginxLua(t)
	_, cli := etcdtest.Start(t)
	fx := &fixture{t: t, cli: cli, store: state.NewStore(cli, "/test"), dir: stateDir(t), port: etcdtest.FreePort(t), traffic: 200 * time.Millisecond}
	k := fx.store.Keys
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			http.Error(w, "broken", http.StatusInternalServerError)
		case "/missing":
			http.NotFound(w, r)
		default:
			fmt.Fprint(w, "ok")
		}
	}))
	t.Cleanup(app.Close)
	addr := strings.TrimPrefix(app.URL, "http://")
	p, _ := startProxy(t, fx, "counted", "other")
	route := func(f string, release int) {
		r := routing(f, []string{f + ".localhost"}, addr)
		r.Release = release
		fx.waitAck(f, fx.put(k.Routing(f), r))
	}
	route("counted", 2)
	route("other", 7)
	time.Sleep(3 * fx.traffic) // the reporter's first read only primes it
	send := func(host, path string, n, want int) {
		t.Helper()
		for i := 0; i < n; i++ {
			code, _, err := fx.get(http.MethodGet, host, path, nil)
			if err != nil || code != want {
				t.Fatalf("GET %s%s: %d %v, want %d", host, path, code, err, want)
			}
		}
	}
	send("counted.localhost", "/", 3, 200)
	send("counted.localhost", "/fail", 4, 500)
	send("counted.localhost", "/missing", 1, 404)
	send("other.localhost", "/", 2, 200)
	send("nobody.localhost", "/", 1, 404) // no formation: not counted

	// nginx's counters, as the control socket answers them.
	cur, err := p.ngx.traffic(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[counterKey]int64{{"counted", 2, "2xx"}: 3, {"counted", 2, "5xx"}: 4, {"counted", 2, "4xx"}: 1, {"other", 7, "2xx"}: 2}
	for key, n := range want {
		if cur[key] != n {
			t.Errorf("counter %v = %d, want %d (all: %v)", key, cur[key], n, cur)
		}
	}
	if len(cur) != len(want) {
		t.Errorf("counters %v, want only %v", cur, want)
	}

	report := func(f string) state.TrafficReport {
		var r state.TrafficReport
		_, _ = fx.store.Get(context.Background(), k.TrafficOf(f, "n1"), &r)
		return r
	}
	eventually(t, "traffic report of counted", func() bool {
		r := report("counted")
		return r.Releases[2]["2xx"] == 3 && r.Releases[2]["5xx"] == 4 && r.Releases[2]["4xx"] == 1
	})
	eventually(t, "traffic report of other", func() bool {
		r := report("other")
		return r.Releases[7]["2xx"] == 2 && r.Node == "n1" && r.Window == DefaultTrafficWindow
	})

	// A new release is counted apart from the old one.
	route("counted", 3)
	send("counted.localhost", "/fail", 2, 500)
	eventually(t, "traffic of counted v3", func() bool {
		r := report("counted")
		return r.Releases[3]["5xx"] == 2 && r.Releases[2]["5xx"] == 4
	})
}

// The window forgets answers older than it; a counter that shrank (nginx
// started again) counts whole.
func TestTrafficWindow(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	tw := &trafficWindow{window: time.Minute}
	a := counterKey{"hello", 1, "5xx"}
	if c := tw.observe(t0, map[counterKey]int64{a: 100}); len(c) != 0 {
		t.Fatalf("first read counted %v: it only primes", c)
	}
	if c := tw.observe(t0.Add(5*time.Second), map[counterKey]int64{a: 110}); c["hello"][1]["5xx"] != 10 {
		t.Fatalf("counts %v, want 10", c)
	}
	if c := tw.observe(t0.Add(10*time.Second), map[counterKey]int64{a: 3}); c["hello"][1]["5xx"] != 13 {
		t.Fatalf("counts %v, want 13 after a restart of nginx", c)
	}
	if c := tw.observe(t0.Add(66*time.Second), map[counterKey]int64{a: 3}); c["hello"][1]["5xx"] != 3 {
		t.Fatalf("counts %v, want the 3 of the last minute", c)
	}
	if c := tw.observe(t0.Add(2*time.Minute), map[counterKey]int64{a: 3}); len(c) != 0 {
		t.Fatalf("counts %v, want none", c)
	}
}
