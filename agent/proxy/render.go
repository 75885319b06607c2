package proxy

import (
	"crypto/sha256"
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
func (l layout) logs() string         { return filepath.Join(l.Prefix, "logs") }
func (l layout) errorLog() string     { return filepath.Join(l.Prefix, "logs", "error.log") }
func (l layout) accessLog() string    { return filepath.Join(l.Prefix, "logs", "access.log") }
func (l layout) temp(n string) string { return filepath.Join(l.Prefix, "temp", n) }

var tempDirs = []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"}

// site is one formation as nginx serves it.
type site struct {
	Formation string
	Domains   []string // sorted, unique, valid
	Upstreams []string // host:port, sorted, unique
}

// renderInput is everything the config depends on.
type renderInput struct {
	Paths      layout
	Listen     []string
	User       string // worker user; "" leaves the directive out
	BaseDomain string
	Sites      []site // sorted by formation
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

// validateUpstream checks and normalises an upstream address: an IP or a
// DNS name, and a port.
func validateUpstream(a string) (string, error) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", fmt.Errorf("invalid upstream address %q: use host:port", a)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return "", fmt.Errorf("invalid upstream address %q: the port must be a number from 1 to 65535", a)
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.To4() == nil && strings.Contains(host, "%") {
			return "", fmt.Errorf("invalid upstream address %q: zoned IPv6 addresses are not supported", a)
		}
		return net.JoinHostPort(ip.String(), port), nil
	}
	if strings.HasPrefix(host, "*") || state.ValidateDomain(host) != nil {
		return "", fmt.Errorf("invalid upstream address %q: the host must be an IP address or a DNS name", a)
	}
	return net.JoinHostPort(host, port), nil
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
	s := site{Formation: f}
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
	sort.Strings(s.Domains)
	sort.Strings(s.Upstreams)
	return s, nil
}

func upstreamName(f string) string { return "deis_" + f }

// render writes the whole nginx.conf for in and returns it with its hash.
// The same input always gives the same bytes. The hash is of the config with
// hashToken in place of the hash; the control server answers it.
func render(in renderInput) ([]byte, string) {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p := in.Paths
	w("# Written by deis-agent (proxy role). Do not edit: every routing change rewrites it.")
	w("daemon on;")
	w("master_process on;")
	if in.User != "" {
		w("user %s;", in.User)
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
	w("    log_format deis '$remote_addr [$time_local] \"$host\" \"$request\" $status $body_bytes_sent $request_time \"$upstream_addr\" $upstream_response_time';")
	w("    access_log %q deis;", p.accessLog())
	w("    client_body_temp_path %q;", p.temp("client_body"))
	w("    proxy_temp_path %q;", p.temp("proxy"))
	w("    fastcgi_temp_path %q;", p.temp("fastcgi"))
	w("    uwsgi_temp_path %q;", p.temp("uwsgi"))
	w("    scgi_temp_path %q;", p.temp("scgi"))
	w("    client_max_body_size 0;")
	w("    keepalive_timeout 65;")
	w("    keepalive_requests 100000;")
	w("    server_names_hash_max_size 4096;")
	w("    server_names_hash_bucket_size 256;")
	w("    # Upgrade (WebSocket) requests pass Connection: upgrade; every other")
	w("    # request sends an empty Connection header so upstream keepalive works.")
	w("    map $http_upgrade $connection_upgrade {")
	w("        default upgrade;")
	w("        \"\" \"\";")
	w("    }")
	w("")
	w("    # Control server: answers the hash of the config nginx serves.")
	w("    server {")
	w("        listen unix:%s;", p.control())
	w("        access_log off;")
	w("        location = /config {")
	w("            return 200 \"%s\";", hashToken)
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
	w("        server_name _;")
	w("        location / {")
	msg := "no app is configured for this host"
	if in.BaseDomain != "" {
		msg += "; apps are served at APP." + in.BaseDomain
	}
	w("            return 404 \"%s\\n\";", msg)
	w("        }")
	w("    }")
	for _, s := range in.Sites {
		w("")
		w("    # formation %s", s.Formation)
		if len(s.Upstreams) > 0 {
			w("    upstream %s {", upstreamName(s.Formation))
			for _, u := range s.Upstreams {
				w("        server %s max_fails=0;", u)
			}
			w("        keepalive 32;")
			w("    }")
		}
		w("    server {")
		for _, l := range in.Listen {
			w("        listen %s;", l)
		}
		w("        server_name %s;", strings.Join(s.Domains, " "))
		w("        location / {")
		if len(s.Upstreams) == 0 {
			w("            add_header Retry-After 5 always;")
			w("            return 503 \"no container of app %s is ready yet; try again shortly\\n\";", s.Formation)
		} else {
			w("            proxy_pass http://%s;", upstreamName(s.Formation))
			w("            proxy_http_version 1.1;")
			w("            proxy_set_header Upgrade $http_upgrade;")
			w("            proxy_set_header Connection $connection_upgrade;")
			w("            proxy_set_header Host $host;")
			w("            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
			w("            proxy_set_header X-Forwarded-Proto $scheme;")
			w("            proxy_set_header X-Forwarded-Port $server_port;")
			w("            proxy_set_header X-Request-Start \"t=${msec}\";")
			w("            proxy_next_upstream error timeout http_502 http_503 non_idempotent;")
			w("            proxy_connect_timeout 5s;")
			w("            proxy_read_timeout 60s;")
		}
		w("        }")
		w("    }")
	}
	w("}")
	conf := b.String()
	sum := sha256.Sum256([]byte(conf))
	hash := hex.EncodeToString(sum[:])
	return []byte(strings.Replace(conf, hashToken, hash, 1)), hash
}
