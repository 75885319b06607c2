package proxy

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/deis/deis/pkg/state"
)

// layout is where the proxy's nginx keeps its files.
type layout struct{ Prefix string }

func (l layout) conf() string         { return filepath.Join(l.Prefix, "nginx.conf") }
func (l layout) staged() string       { return filepath.Join(l.Prefix, "nginx.conf.staged") }
func (l layout) pid() string          { return filepath.Join(l.Prefix, "nginx.pid") }
func (l layout) control() string      { return filepath.Join(l.Prefix, "control.sock") }
func (l layout) routes() string       { return filepath.Join(l.Prefix, "routes.json") }
func (l layout) table() string        { return filepath.Join(l.Prefix, "routes.txt") }
func (l layout) logs() string         { return filepath.Join(l.Prefix, "logs") }
func (l layout) errorLog() string     { return filepath.Join(l.Prefix, "logs", "error.log") }
func (l layout) accessLog() string    { return filepath.Join(l.Prefix, "logs", "access.log") }
func (l layout) tempRoot() string     { return filepath.Join(filepath.Dir(l.Prefix), "nginx-temp") }
func (l layout) temp(n string) string { return filepath.Join(l.tempRoot(), n) }

var tempDirs = []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"}

// site is one formation as nginx serves it.
type site struct {
	Formation string
	Domains   []string // sorted, unique, valid
	Upstreams []string // ip:port, sorted, unique
	MaxBody   int64    // largest request body; 0: the proxy's default
	Release   int      // the release its upstreams run (answer counts)
	// HTTPS (tls.go): redirect HTTP to HTTPS, HSTS max-age (0: none), and
	// the ACME HTTP-01 answers (token, key authorization), sorted.
	Redirect   bool
	HSTS       int64
	Challenges [][2]string
}

// renderInput is everything the nginx.conf depends on. Routing is not part
// of it: it lives in the routes text (renderRoutes), which nginx takes
// without a reload.
type renderInput struct {
	Paths      layout
	Listen     []string
	User       string // worker user; "" leaves the directive out
	Group      string // worker group, with User
	BaseDomain string
	Modules    string // directory of nginx's dynamic modules
	MaxBody    int64  // request body limit of formations without their own
	// HTTPSListen are the listen specs served over TLS; none: no HTTPS.
	HTTPSListen []string
}

// hashToken stands in for the config hash while the hash is computed; no
// validated input can contain it.
const hashToken = "@@DEIS_CONFIG_HASH@@"

var (
	// safePath is what a path may hold to be written inside double quotes.
	safePath = regexp.MustCompile(`^/[A-Za-z0-9_./@+,:=-]*$`)
	// listenSpec is a port, or an address and a port.
	listenSpec = regexp.MustCompile(`^((\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?[0-9]{1,5}$`)
)

// validateListen checks an nginx listen spec ("8080", "[::]:8080",
// "127.0.0.1:8080") before it is written into the config.
func validateListen(s string) error {
	if !listenSpec.MatchString(s) {
		return fmt.Errorf("proxy: invalid listen address %q: use a port (8080) or address:port (127.0.0.1:8080, [::]:8080)", s)
	}
	return nil
}

// validateUpstream checks and normalises an upstream address: an IP
// address and a port. Host names are refused: nginx's balancer takes
// addresses, and the runtime agent publishes containers on its node's IP.
func validateUpstream(a string) (string, error) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", fmt.Errorf("invalid upstream address %q: use ip:port", a)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return "", fmt.Errorf("invalid upstream address %q: the port must be a number from 1 to 65535", a)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return "", fmt.Errorf("invalid upstream address %q: the host must be an IP address (the runtime agent publishes containers on its node's IP)", a)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// siteFor turns a routing databag into a site, refusing it as a whole when
// any value is unsafe to place in the config.
func siteFor(f string, r *state.Routing) (site, error) {
	if err := state.ValidateName("formation", f); err != nil {
		return site{}, err
	}
	if r.Formation != "" && r.Formation != f {
		return site{}, fmt.Errorf("routing databag of %q names formation %q", f, r.Formation)
	}
	s := site{Formation: f, Release: r.Release}
	seen := map[string]bool{}
	for _, d := range r.Domains {
		if err := state.ValidateDomain(d); err != nil {
			return site{}, err
		}
		if !seen[d] {
			seen[d] = true
			s.Domains = append(s.Domains, d)
		}
	}
	if len(s.Domains) == 0 {
		return site{}, fmt.Errorf("routing databag of %q has no domain", f)
	}
	seen = map[string]bool{}
	for _, u := range r.Upstreams {
		a, err := validateUpstream(u.Addr)
		if err != nil {
			return site{}, fmt.Errorf("container %q: %w", u.Container, err)
		}
		if !seen[a] {
			seen[a] = true
			s.Upstreams = append(s.Upstreams, a)
		}
	}
	if r.MaxBodyBytes != 0 {
		if err := state.ValidateMaxBody(r.MaxBodyBytes); err != nil {
			return site{}, err
		}
		s.MaxBody = r.MaxBodyBytes
	}
	if err := httpsFor(&s, r); err != nil {
		return site{}, err
	}
	sort.Strings(s.Domains)
	sort.Strings(s.Upstreams)
	return s, nil
}

// renderRoutes writes the routes text for sites (sorted by formation) and
// returns it with its version, a hash of everything after the version line.
// deis.lua reads it; every value in it was validated by siteFor.
func renderRoutes(sites []site) ([]byte, string) {
	var b strings.Builder
	for _, s := range sites {
		b.WriteString("formation " + s.Formation)
		for _, u := range s.Upstreams {
			b.WriteString(" " + u)
		}
		b.WriteString("\n")
	}
	for _, s := range sites {
		if s.MaxBody > 0 {
			b.WriteString("body " + s.Formation + " " + strconv.FormatInt(s.MaxBody, 10) + "\n")
		}
	}
	for _, s := range sites {
		if s.Release > 0 {
			b.WriteString("release " + s.Formation + " " + strconv.Itoa(s.Release) + "\n")
		}
	}
	for _, s := range sites {
		for _, d := range s.Domains {
			b.WriteString("domain " + d + " " + s.Formation + "\n")
		}
	}
	renderHTTPS(&b, sites)
	sum := sha256.Sum256([]byte(b.String()))
	version := hex.EncodeToString(sum[:])
	return []byte("# Written by deis-agent (proxy role); nginx loads it at start, the agent pushes it on the control socket.\n" +
		"version " + version + "\n" + b.String()), version
}

//go:embed deis.lua
var deisLua string

// Paths of the dynamic modules the config loads, relative to
// renderInput.Modules. Debian: libnginx-mod-http-ndk, libnginx-mod-http-lua.
var modules = []string{"ndk_http_module.so", "ngx_http_lua_module.so"}

// render writes the whole nginx.conf for in and returns it with its hash.
// The same input always gives the same bytes. The hash is of the config with
// hashToken in place of the hash; the control server answers it.
//
// The config holds no formation: one server takes every host, and deis.lua
// routes it by the routes text in the shared dict deis_routes.
func render(in renderInput) ([]byte, string) {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p := in.Paths
	w("# Written by deis-agent (proxy role). Do not edit. Routing changes do not")
	w("# rewrite it: they reach nginx through the control socket (see routes.txt).")
	for _, m := range modules {
		w("load_module %q;", filepath.Join(in.Modules, m))
	}
	w("daemon on;")
	w("master_process on;")
	if in.User != "" {
		// Workers parse every request from the internet: they run
		// unprivileged. The master (root) opens the ports, the logs and
		// the control socket, and reads routes.txt.
		w("user %s %s;", in.User, in.Group)
		w("worker_rlimit_nofile 16384;")
	}
	w("worker_processes 1;")
	w("worker_shutdown_timeout 60s;")
	w("pid %q;", p.pid())
	w("error_log %q warn;", p.errorLog())
	w("")
	w("events {")
	w("    worker_connections 4096;")
	w("}")
	w("")
	w("http {")
	w("    default_type text/plain;")
	w("    server_tokens off;")
	w("    log_format deis '$remote_addr [$time_local] \"$host\" \"$request\" $status $body_bytes_sent $request_time \"$deis_formation\" \"$upstream_addr\" $upstream_response_time';")
	w("    access_log %q deis;", p.accessLog())
	w("    client_body_temp_path %q;", p.temp("client_body"))
	w("    proxy_temp_path %q;", p.temp("proxy"))
	w("    fastcgi_temp_path %q;", p.temp("fastcgi"))
	w("    uwsgi_temp_path %q;", p.temp("uwsgi"))
	w("    scgi_temp_path %q;", p.temp("scgi"))
	w("    # deis.lua enforces each formation's body limit; this is the ceiling.")
	w("    client_max_body_size %d;", state.MaxMaxBodyBytes)
	w("    # Longer than the idle timeout of common clients (Go's is 90s), so the")
	w("    # client, not nginx, closes an idle connection: no request races a close.")
	w("    keepalive_timeout 120s;")
	w("    keepalive_requests 100000;")
	w("    # Upgrade (WebSocket) requests pass Connection: upgrade; every other")
	w("    # request sends an empty Connection header so upstream keepalive works.")
	w("    map $http_upgrade $connection_upgrade {")
	w("        default upgrade;")
	w("        \"\" \"\";")
	w("    }")
	w("")
	w("    # Routing lives here, not in this file; it survives reloads.")
	w("    lua_shared_dict deis_routes 32m;")
	w("    # Answer counts per formation, release and class (automatic rollback).")
	w("    lua_shared_dict deis_traffic 4m;")
	w("    # Certificates and keys by SNI, pushed like the routes; memory only.")
	w("    lua_shared_dict deis_certs 32m;")
	w("    init_by_lua_block {")
	w("        package.loaded.deis = (function()")
	b.WriteString(deisLua)
	w("        end)()")
	w("        require(\"deis\").init(%q, %d, %d)", p.table(), in.MaxBody, state.MaxMaxBodyBytes)
	w("        require(\"deis\").init_https(%q, %d)", p.certsTable(), httpsPort(in.HTTPSListen))
	w("    }")
	w("    # Idempotent requests (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) reuse")
	w("    # upstream connections and may be retried on another container.")
	w("    upstream deis_apps {")
	w("        server 0.0.0.1; # never used: deis.lua picks each peer")
	w("        balancer_by_lua_block {")
	w("            require(\"deis\").balance()")
	w("        }")
	w("        keepalive 320;")
	w("    }")
	w("    # Every other request gets a new connection, and is tried on another")
	w("    # container only when no byte of it was sent (see deis.lua).")
	w("    upstream deis_apps_once {")
	w("        server 0.0.0.1;")
	w("        balancer_by_lua_block {")
	w("            require(\"deis\").balance()")
	w("        }")
	w("    }")
	w("")
	w("    # Control server: the hash of this config, the routes, draining.")
	w("    server {")
	w("        listen unix:%s;", p.control())
	w("        access_log off;")
	w("        client_max_body_size 32m;")
	w("        client_body_buffer_size 32m;")
	w("        location = /config {")
	w("            return 200 \"%s\";", hashToken)
	w("        }")
	w("        location = /routes {")
	w("            content_by_lua_block {")
	w("                require(\"deis\").control_routes()")
	w("            }")
	w("        }")
	w("        location = /traffic {")
	w("            content_by_lua_block {")
	w("                require(\"deis\").control_traffic()")
	w("            }")
	w("        }")
	w("        location = /drain {")
	w("            content_by_lua_block {")
	w("                require(\"deis\").control_drain()")
	w("            }")
	w("        }")
	w("        location = /certs {")
	w("            content_by_lua_block {")
	w("                require(\"deis\").control_certs()")
	w("            }")
	w("        }")
	w("        location / {")
	w("            return 404;")
	w("        }")
	w("    }")
	w("")
	w("    server {")
	for _, l := range in.Listen {
		w("        listen %s default_server;", l)
	}
	renderTLS(w, in)
	w("        server_name _;")
	w("        set $deis_formation \"\";")
	w("        set $deis_pool deis_apps;")
	w("        set $deis_max_body %s;", fmtSize(state.MaxMaxBodyBytes))
	w("        log_by_lua_block {")
	w("            require(\"deis\").count()")
	w("        }")
	w("        error_page 413 @toolarge;")
	w("        location / {")
	w("            rewrite_by_lua_block {")
	w("                require(\"deis\").route(\"main\")")
	w("            }")
	proxyTo(w)
	w("        }")
	w("        # Before a reload: the same, but the connection closes after the")
	w("        # response (Connection: close), so the client does not reuse it.")
	w("        location @drain {")
	w("            keepalive_timeout 0;")
	w("            rewrite_by_lua_block {")
	w("                require(\"deis\").route(\"drain\")")
	w("            }")
	proxyTo(w)
	w("        }")
	w("        # Chunked request bodies (no Content-Length) of a formation whose")
	w("        # limit is at most the tier: nginx stops reading at the tier, and")
	w("        # deis.lua checks the exact limit once the body is read.")
	for _, t := range bodyTiers() {
		w("        location @body_%d {", t)
		w("            client_max_body_size %d;", t)
		w("            keepalive_timeout 0;")
		w("            rewrite_by_lua_block {")
		w("                require(\"deis\").route(\"chunked\")")
		w("            }")
		proxyTo(w)
		w("        }")
	}
	w("        location @toolarge {")
	w("            keepalive_timeout 0;")
	w("            return 413 \"request body too large: this app accepts request bodies of at most $deis_max_body\\n\";")
	w("        }")
	w("        location @notfound {")
	msg := "no app is configured for this host"
	if in.BaseDomain != "" {
		msg += "; apps are served at APP." + in.BaseDomain
	}
	w("            return 404 \"%s\\n\";", msg)
	w("        }")
	w("        location @unready {")
	w("            add_header Retry-After 5 always;")
	w("            return 503 \"no container of app $deis_formation is ready yet; try again shortly\\n\";")
	w("        }")
	w("    }")
	w("}")
	conf := b.String()
	sum := sha256.Sum256([]byte(conf))
	hash := hex.EncodeToString(sum[:])
	return []byte(strings.Replace(conf, hashToken, hash, 1)), hash
}

// proxyTo writes the directives that pass a request to the formation's
// upstreams.
func proxyTo(w func(string, ...any)) {
	w("            proxy_pass http://$deis_pool;")
	w("            proxy_http_version 1.1;")
	w("            proxy_set_header Upgrade $http_upgrade;")
	w("            proxy_set_header Connection $connection_upgrade;")
	w("            proxy_set_header Host $host;")
	w("            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
	w("            proxy_set_header X-Forwarded-Proto $scheme;")
	w("            proxy_set_header X-Forwarded-Port $server_port;")
	w("            proxy_set_header X-Request-Start \"t=${msec}\";")
	// No non_idempotent: nginx never sends a POST, PATCH or LOCK to a
	// second container once it sent the first one any of it.
	w("            proxy_next_upstream error timeout http_502 http_503;")
	w("            proxy_connect_timeout 5s;")
	w("            proxy_read_timeout 60s;")
}

// bodyTiers are the client_max_body_size values of the @body_N locations
// for chunked request bodies: 1M, doubling up to state.MaxMaxBodyBytes.
func bodyTiers() []int64 {
	var out []int64
	for t := int64(1 << 20); ; t *= 2 {
		if t >= state.MaxMaxBodyBytes {
			return append(out, state.MaxMaxBodyBytes)
		}
		out = append(out, t)
	}
}

// fmtSize renders a byte count with the largest unit that divides it, as
// deisctl and deis.lua do: 10M, 1G, 1536K, 1000.
func fmtSize(n int64) string {
	switch {
	case n > 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "G"
	case n > 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "M"
	case n > 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "K"
	}
	return strconv.FormatInt(n, 10)
}
