package proxy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/need"
)

func testInput() renderInput {
	return renderInput{Paths: layout{Prefix: "/var/lib/deis-agent/nginx"}, Listen: []string{"8080", "[::]:8080"}, BaseDomain: "example.com", Modules: "/usr/lib/nginx/modules",
		User: "www-data", Group: "www-data", MaxBody: 10 << 20}
}

func TestRenderRoutesDeterministic(t *testing.T) {
	a := []*state.Routing{
		{Formation: "web", Domains: []string{"web.example.com", "www.web.com", "web.example.com"}, Upstreams: []state.Upstream{
			{Container: "web.v2.web.2", Addr: "10.0.0.2:49001"}, {Container: "web.v2.web.1", Addr: "10.0.0.1:49000"}}},
		{Formation: "api", Domains: []string{"api.example.com"}, Upstreams: []state.Upstream{{Container: "api.v1.web.1", Addr: "10.0.0.3:49002"}}, MaxBodyBytes: 50 << 20},
		{Formation: "idle", Domains: []string{"*.idle.example.com"}, Upstreams: []state.Upstream{}},
	}
	// Same content in another order.
	b := []*state.Routing{
		{Formation: "idle", Domains: []string{"*.idle.example.com"}},
		{Formation: "api", Domains: []string{"api.example.com"}, Upstreams: []state.Upstream{{Container: "api.v1.web.1", Addr: "10.0.0.3:49002"}}, MaxBodyBytes: 50 << 20},
		{Formation: "web", Domains: []string{"www.web.com", "web.example.com"}, Upstreams: []state.Upstream{
			{Container: "web.v2.web.1", Addr: "10.0.0.1:49000"}, {Container: "web.v2.web.2", Addr: "10.0.0.2:49001"}}},
	}
	routes := func(rs []*state.Routing) ([]byte, string) {
		w := &world{Proxied: map[string]bool{}, Routings: map[string]routingAt{}}
		for i, r := range rs {
			w.Proxied[r.Formation] = true
			w.Routings[r.Formation] = routingAt{Revision: int64(10 + i), Doc: r}
		}
		return renderRoutes(choose(w, nil).Sites)
	}
	t1, v1 := routes(a)
	t2, v2 := routes(b)
	if !bytes.Equal(t1, t2) || v1 != v2 {
		t.Fatalf("same routing rendered differently:\n%s\n---\n%s", t1, t2)
	}
	want := "version " + v1 + "\n" +
		"formation api 10.0.0.3:49002\n" +
		"formation idle\n" +
		"formation web 10.0.0.1:49000 10.0.0.2:49001\n" +
		"body api 52428800\n" +
		"domain api.example.com api\n" +
		"domain *.idle.example.com idle\n" +
		"domain web.example.com web\n" +
		"domain www.web.com web\n"
	if _, body, _ := strings.Cut(string(t1), "\n"); body != want {
		t.Errorf("routes =\n%s\nwant\n%s", body, want)
	}
	// A different upstream changes the version.
	b[2].Upstreams[1].Addr = "10.0.0.9:49001"
	if _, v3 := routes(b); v3 == v1 {
		t.Error("changed routing kept the version")
	}
}

func TestRenderConfig(t *testing.T) {
	c1, h1 := render(testInput())
	c2, h2 := render(testInput())
	if !bytes.Equal(c1, c2) || h1 != h2 {
		t.Fatal("same input rendered differently")
	}
	for _, want := range []string{
		`load_module "/usr/lib/nginx/modules/ndk_http_module.so";`,
		`load_module "/usr/lib/nginx/modules/ngx_http_lua_module.so";`,
		"listen [::]:8080 default_server;",
		`return 200 "` + h1 + `";`,
		"keepalive_requests 100000;",
		"worker_shutdown_timeout 60s;",
		"lua_shared_dict deis_routes",
		`require("deis").init("/var/lib/deis-agent/nginx/routes.txt", 10485760, 1073741824)`,
		"user www-data www-data;",
		"client_max_body_size 1073741824;",
		"location @body_1048576 {\n            client_max_body_size 1048576;",
		"location @body_1073741824 {",
		"error_page 413 @toolarge;",
		"location @drain {\n            keepalive_timeout 0;",
		`return 404 "no app is configured for this host; apps are served at APP.example.com\n";`,
		`client_body_temp_path "/var/lib/deis-agent/nginx-temp/client_body";`,
		"proxy_next_upstream error timeout http_502 http_503;",
	} {
		if !strings.Contains(string(c1), want) {
			t.Errorf("config lacks %q:\n%s", want, c1)
		}
	}
	// main, @drain and the 11 chunked-body tiers from 1M to 1G
	if n := strings.Count(string(c1), "proxy_pass http://$deis_pool;"); n != 13 {
		t.Errorf("%d app locations proxy to $deis_pool, want 13", n)
	}
	// A POST is never sent to a second container once the first got it.
	if regexp.MustCompile(`proxy_next_upstream[^;]*non_idempotent`).Match(c1) {
		t.Error("the config lets nginx resend non-idempotent requests")
	}
	in := testInput()
	in.Listen = []string{"8081"}
	if _, h3 := render(in); h3 == h1 {
		t.Error("changed listen kept the hash")
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
		{"upstream host name", state.Routing{Domains: []string{"ok.com"}, Upstreams: []state.Upstream{{Addr: "node-1.internal:5001"}}}},
		{"zoned upstream", state.Routing{Domains: []string{"ok.com"}, Upstreams: []state.Upstream{{Addr: "[fe80::1%eth0]:5001"}}}},
		{"routing names another formation", state.Routing{Formation: "other", Domains: []string{"ok.com"}}},
		{"body limit over the ceiling", state.Routing{Domains: []string{"ok.com"}, MaxBodyBytes: state.MaxMaxBodyBytes + 1}},
		{"negative body limit", state.Routing{Domains: []string{"ok.com"}, MaxBodyBytes: -1}},
	} {
		if s, err := siteFor("app", &tc.r); err == nil {
			t.Errorf("%s: accepted as %+v", tc.name, s)
		}
	}
	if _, err := siteFor("bad;name", &state.Routing{Domains: []string{"ok.com"}}); err == nil {
		t.Error("bad formation name accepted")
	}
	s, err := siteFor("app", &state.Routing{Domains: []string{"*.app.com", "app.com"}, Upstreams: []state.Upstream{{Addr: "[::1]:5000"}, {Addr: "10.0.0.1:5001"}, {Addr: "[::ffff:10.0.0.2]:5002"}}})
	if err != nil {
		t.Fatalf("valid routing refused: %v", err)
	}
	if strings.Join(s.Upstreams, " ") != "10.0.0.1:5001 10.0.0.2:5002 [::1]:5000" {
		t.Errorf("upstreams = %v", s.Upstreams)
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

// TestRenderPassesNginxCheck runs the real nginx -t over a rendered config,
// which also runs deis.lua's top level.
func TestRenderPassesNginxCheck(t *testing.T) {
	bin, mods := needNginxLua(t)
	prefix := filepath.Join(t.TempDir(), "nginx")
	l := layout{Prefix: prefix}
	for _, d := range append([]string{l.logs()}, l.temp("client_body"), l.temp("proxy"), l.temp("fastcgi"), l.temp("uwsgi"), l.temp("scgi")) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	in := renderInput{Paths: layout{Prefix: prefix}, Listen: []string{"127.0.0.1:1", "[::1]:1"}, BaseDomain: "example.com", Modules: mods, MaxBody: 10 << 20}
	if os.Geteuid() == 0 {
		w, err := lookupWorker("")
		if err != nil {
			t.Fatal(err)
		}
		in.User, in.Group = w.User, w.Group
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

// needNginxLua requires nginx and its lua module (Debian:
// libnginx-mod-http-lua) and returns the binary and the modules directory.
// Like testing/need, it skips on a laptop and fails when CI is set.
func needNginxLua(t testing.TB) (bin, dir string) {
	t.Helper()
	bin = need.Nginx(t)
	dir = "/usr/lib/nginx/modules"
	for _, m := range modules {
		if _, err := os.Stat(filepath.Join(dir, m)); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("nginx module %s is required when CI is set: apt-get install libnginx-mod-http-lua", m)
			}
			t.Skipf("nginx module %s not available (apt-get install libnginx-mod-http-lua; set CI=1 to make this a failure)", m)
		}
	}
	return bin, dir
}
