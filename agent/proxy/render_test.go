package proxy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
)

func testInput(sites ...site) renderInput {
	return renderInput{Paths: layout{Prefix: "/var/lib/deis-agent/nginx"}, Listen: []string{"8080", "[::]:8080"}, BaseDomain: "example.com", Sites: sites}
}

func TestRenderDeterministic(t *testing.T) {
	a := []*state.Routing{
		{Formation: "web", Domains: []string{"web.example.com", "www.web.com", "web.example.com"}, Upstreams: []state.Upstream{
			{Container: "web.v2.web.2", Addr: "10.0.0.2:49001"}, {Container: "web.v2.web.1", Addr: "10.0.0.1:49000"}}},
		{Formation: "api", Domains: []string{"api.example.com"}, Upstreams: []state.Upstream{{Container: "api.v1.web.1", Addr: "10.0.0.3:49002"}}},
	}
	// Same content in another order.
	b := []*state.Routing{
		{Formation: "api", Domains: []string{"api.example.com"}, Upstreams: []state.Upstream{{Container: "api.v1.web.1", Addr: "10.0.0.3:49002"}}},
		{Formation: "web", Domains: []string{"www.web.com", "web.example.com"}, Upstreams: []state.Upstream{
			{Container: "web.v2.web.1", Addr: "10.0.0.1:49000"}, {Container: "web.v2.web.2", Addr: "10.0.0.2:49001"}}},
	}
	conf := func(rs []*state.Routing) ([]byte, string) {
		w := &world{Proxied: map[string]bool{}, Routings: map[string]routingAt{}}
		for i, r := range rs {
			w.Proxied[r.Formation] = true
			w.Routings[r.Formation] = routingAt{Revision: int64(10 + i), Doc: r}
		}
		return render(testInput(choose(w, nil).Sites...))
	}
	c1, h1 := conf(a)
	c2, h2 := conf(b)
	if !bytes.Equal(c1, c2) || h1 != h2 {
		t.Fatalf("same routing rendered differently:\n%s\n---\n%s", c1, c2)
	}
	for _, want := range []string{
		"server_name web.example.com www.web.com;",
		"server 10.0.0.1:49000 max_fails=0;\n        server 10.0.0.2:49001 max_fails=0;\n        keepalive 32;",
		"proxy_pass http://deis_web;",
		"listen [::]:8080 default_server;",
		`return 200 "` + h1 + `";`,
		"keepalive_requests 100000;",
		"worker_shutdown_timeout 60s;",
		`client_body_temp_path "/var/lib/deis-agent/nginx/temp/client_body";`,
	} {
		if !strings.Contains(string(c1), want) {
			t.Errorf("config lacks %q:\n%s", want, c1)
		}
	}
	if strings.Index(string(c1), "formation api") > strings.Index(string(c1), "formation web") {
		t.Error("formations are not sorted")
	}
	// A different upstream changes the hash.
	b[1].Upstreams[1].Addr = "10.0.0.9:49001"
	if _, h3 := conf(b); h3 == h1 {
		t.Error("changed routing kept the hash")
	}
}

func TestSiteForRefusesInjection(t *testing.T) {
	good := state.Upstream{Container: "c", Addr: "127.0.0.1:5000"}
	for _, tc := range []struct {
		name string
		r    state.Routing
	}{
		{"directive injection in a domain", state.Routing{Domains: []string{"a.com; include /etc/passwd"}, Upstreams: []state.Upstream{good}}},
		{"brace in a domain", state.Routing{Domains: []string{"x{"}}},
		{"quote in a domain", state.Routing{Domains: []string{`"q"`}}},
		{"one bad domain among good ones", state.Routing{Domains: []string{"ok.com", "bad domain.com"}}},
		{"newline in a domain", state.Routing{Domains: []string{"a.com\nserver_name b.com"}}},
		{"no domain", state.Routing{Domains: nil}},
		{"injection in an upstream", state.Routing{Domains: []string{"ok.com"}, Upstreams: []state.Upstream{{Addr: "127.0.0.1:80; include /etc/passwd"}}}},
		{"upstream without port", state.Routing{Domains: []string{"ok.com"}, Upstreams: []state.Upstream{{Addr: "127.0.0.1"}}}},
		{"upstream port out of range", state.Routing{Domains: []string{"ok.com"}, Upstreams: []state.Upstream{{Addr: "127.0.0.1:70000"}}}},
		{"upstream host with brace", state.Routing{Domains: []string{"ok.com"}, Upstreams: []state.Upstream{{Addr: "a}b:80"}}}},
		{"routing names another formation", state.Routing{Formation: "other", Domains: []string{"ok.com"}}},
	} {
		if s, err := siteFor("app", &tc.r); err == nil {
			t.Errorf("%s: accepted as %+v", tc.name, s)
		}
	}
	if _, err := siteFor("bad;name", &state.Routing{Domains: []string{"ok.com"}}); err == nil {
		t.Error("bad formation name accepted")
	}
	s, err := siteFor("app", &state.Routing{Domains: []string{"*.app.com", "app.com"}, Upstreams: []state.Upstream{{Addr: "[::1]:5000"}, {Addr: "node-1.internal:5001"}}})
	if err != nil {
		t.Fatalf("valid routing refused: %v", err)
	}
	if strings.Join(s.Upstreams, " ") != "[::1]:5000 node-1.internal:5001" {
		t.Errorf("upstreams = %v", s.Upstreams)
	}
}

func TestRenderEmptyUpstreams(t *testing.T) {
	conf, _ := render(testInput(site{Formation: "idle", Domains: []string{"idle.example.com"}}))
	c := string(conf)
	if strings.Contains(c, "upstream deis_idle") || strings.Contains(c, "proxy_pass http://deis_idle") {
		t.Errorf("formation without upstreams got an upstream block:\n%s", c)
	}
	if !strings.Contains(c, "return 503 \"no container of app idle is ready yet") {
		t.Errorf("formation without upstreams does not answer 503:\n%s", c)
	}
	if !strings.Contains(c, "return 404 \"no app is configured for this host") {
		t.Errorf("no default server 404:\n%s", c)
	}
}

func TestValidateListen(t *testing.T) {
	for _, ok := range []string{"8080", "[::]:8080", "127.0.0.3:8081", "localhost:80"} {
		if err := validateListen(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "8080;", "8080 ssl", "unix:/x", "[::]:8080; include x", "a:b"} {
		if err := validateListen(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestRenderPassesNginxCheck runs the real nginx -t over a rendered config
// with every kind of server block.
func TestRenderPassesNginxCheck(t *testing.T) {
	bin := need.Nginx(t)
	prefix := filepath.Join(t.TempDir(), "nginx")
	l := layout{Prefix: prefix}
	for _, d := range append([]string{l.logs()}, l.temp("client_body"), l.temp("proxy"), l.temp("fastcgi"), l.temp("uwsgi"), l.temp("scgi")) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	in := renderInput{Paths: layout{Prefix: prefix}, Listen: []string{"127.0.0.1:1", "[::1]:1"}, BaseDomain: "example.com", Sites: []site{
		{Formation: "idle", Domains: []string{"idle.example.com"}},
		{Formation: "web", Domains: []string{"*.web.com", "web.example.com"}, Upstreams: []string{"127.0.0.1:5000", "[::1]:5001"}},
	}}
	if os.Geteuid() == 0 {
		in.User = "root"
	}
	conf, _ := render(in)
	path := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-p", prefix, "-c", path, "-e", filepath.Join(prefix, "logs", "error.log")).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s\n%s", err, out, conf)
	}
}
