// Package proxy is the agent's proxy role: it runs this node's own Nginx and
// routes every formation whose proxy layer selects the node.
//
// The Nginx is independent of any system Nginx. Its files live under
// StateDir/nginx (the prefix, private to the agent's user): nginx.conf,
// nginx.pid, logs/, the control socket control.sock, routes.txt (the
// routes nginx loads when it starts) and routes.json (the routing last
// applied per formation). Its temp directories live in StateDir/nginx-temp. It runs with "daemon on", so it outlives the
// agent: stopping the agent (Run returning) leaves apps served. A new Proxy
// on the same StateDir adopts the running master (pid file plus
// /proc/PID/cmdline) and reloads it only if its config changed; it starts a
// new master only when none is alive. StopNginx quits it on purpose.
//
// Routing without reloads. An nginx reload retires the old workers, which
// close their idle keep-alive client connections; a client that sends a
// request on one at that moment gets an error (Go's http.Transport hides it
// for requests it can replay, not for a POST with a body). So routing never
// reloads nginx. nginx.conf holds no formation: it loads the lua module
// (Debian: libnginx-mod-http-lua, explicitly with load_module, as this
// nginx does not read /etc/nginx), and one server takes every host. deis.lua
// (embedded into nginx.conf) looks the Host up in the routes (exact domain,
// then the longest *.wildcard, as server_name does) and its balancer picks
// one of the formation's upstreams round-robin, the next on a retry. The
// routes are a text the agent renders from every routing databag (sorted,
// with a version that hashes it) and PUTs on the control socket into the
// shared dict deis_routes, which every worker reads and which survives
// reloads; routes.txt seeds it when nginx starts. Formations, domains and
// upstreams all change this way.
//
// HTTPS (tls.go) works the same way. With Config.HTTPSListen the server
// also listens with ssl; its ssl_certificate is a self-signed default the
// proxy makes once (default.crt and default.key in the prefix), and
// ssl_certificate_by_lua (ngx.ssl from lua-resty-core) serves the
// certificate of the SNI name instead, from the shared dict deis_certs:
// the agent picks, for each routed domain, the valid certificate of its
// formation (Keys.Certs) that covers it and expires last, and PUTs the
// certs text (chains and keys, base64) on /certs of the control socket;
// certs.txt (0600) seeds it when nginx starts. The routing databag's
// redirect and HSTS and the formation's ACME HTTP-01 challenges
// (Keys.ACMEChallenges) travel in the routes text; deis.lua answers
// /.well-known/acme-challenge/<token> before it redirects plain HTTP with
// 308. Certificates never reload nginx.
//
// Run is a level-triggered loop. It keeps a pkg/view View of the node and
// layer key families, and for each formation whose proxy layer selects the
// node a read and a watch of that formation's routing databag, ACME
// challenges and (with HTTPS) certificates (scope.go): a node's etcd role
// allows it those formations' keys only (issue 10), so it cannot watch the
// whole families. A formation newly selecting the node may be refused
// until the coordinator's access loop grants it: its follower retries with
// backoff and the pass leaves it out meanwhile. The view's changes that
// concern this node or a formation, the followers' reads, and a periodic
// resync, only wake it. Each pass takes this node's registration, every
// layer and its formations' keys from memory (a formation not followed yet
// is read once; its own acks it keeps as it writes them), and renders nginx.conf
// (from the Config alone) and the routes. When nginx does not already serve
// those config bytes, the file is staged next to nginx.conf, checked with
// `nginx -t`, renamed into place and nginx is reloaded with SIGHUP (or
// started). That happens only when the config itself changes (listen
// addresses, base domain, an agent upgrade), and the reload is made safe for
// keep-alive clients first: for ReloadDrain nginx answers every request
// with Connection: close and closes the connection after it, so clients
// hold no idle connection to the old workers when the reload retires them.
// A reload counts only once nginx's control server answers GET /config with
// the hash of the new config and every worker of the previous config has
// stopped accepting connections. Then, when GET /routes answers another
// version than the one rendered, the routes are PUT; nginx answers once
// they are in the shared dict, so every request it reads from then on is
// routed by them. A master killed hard leaves workers
// holding the ports; they are found by their open error log and told to
// quit before a new master starts.
//
// Beside the loop, Run reads nginx's answer counters (deis.lua counts each
// answer per formation, release and status class in the shared dict
// deis_traffic; GET /traffic on the control socket lists them) every
// TrafficInterval and writes each formation's answers of the last
// TrafficWindow to Keys.TrafficOf, only when they change, for the
// coordinator's automatic rollback.
//
// Pass runs one pass by hand (tests, debugging); Run calls it.
//
// Safety rules:
//   - When the agent is root, the master is root but the workers, which
//     parse every request, run as Config.NginxUser (www-data, else nobody;
//     never uid or gid 0). The master opens the ports, the logs and the
//     control socket and reads routes.txt (in init_by_lua); the workers
//     write only their temp directories, StateDir/nginx-temp/*, which they
//     own inside a directory they cannot write, so they cannot swap them
//     for a symlink that the master's chown at a reload would follow. New
//     refuses a user that does not exist, and each pass a state dir the
//     workers cannot walk through.
//   - A request body larger than its formation's limit (state.Routing
//     MaxBodyBytes, else Config.MaxBodyBytes, 10M) gets 413 and never
//     reaches the app: at once when its Content-Length says so; a chunked
//     body is read in a location whose client_max_body_size is the limit
//     rounded up to a power of two (nginx stops reading there) and then
//     measured. Limits change with the routes, without a reload.
//   - A request is never sent to a second container after any of it was
//     sent to the first, unless its method is idempotent (GET, HEAD,
//     OPTIONS, TRACE, PUT, DELETE). proxy_next_upstream has no
//     non_idempotent, so nginx itself never resends POST, PATCH or LOCK;
//     those and unknown methods use an upstream without keep-alive (so a
//     connection the app closed while idle is never mistaken for a
//     failure after sending), and unknown methods, which nginx would
//     resend, get a single try. A container that refuses the connection is
//     skipped for every method: nothing was sent.
//   - A routing databag with a value that cannot be placed safely in the
//     routes (a domain failing state.ValidateDomain, an upstream that is not
//     ip:port) is refused as a whole; the formation keeps the routing last
//     applied and its ack carries the error.
//   - A config that `nginx -t` rejects is never installed; the last good one
//     keeps serving (and still takes routing changes),
//     deis_proxy_config_check_failures_total counts it, and when the routing
//     cannot move either, the acks of the formations that could not move
//     carry nginx's message.
//   - Whoever can connect to the control socket can change the routing, so
//     the prefix is made mode 0700.
//   - Private keys are on disk only in certs.txt and default.key, mode
//     0600 in the private prefix, read by the root master at start; the
//     workers take them from shared memory and never open a key file.
//
// Acknowledgements: for each proxied formation the proxy writes
// state.ProxyAck at Keys.ProxyAck(formation, node) whose Revision is the
// etcd ModRevision of the routing databag nginx serves now: it is written
// only after nginx answered that it routes by it, so a request sent after
// an ack never meets the old routing. It never acks a revision nginx does
// not serve; a refused routing is reported in Error while Revision stays at
// the revision still served (0 if none).
//
// Requirements: nginx with the dynamic modules ndk_http_module.so and
// ngx_http_lua_module.so in Config.NginxModules (Debian bookworm:
// apt-get install libnginx-mod-http-lua, which brings libnginx-mod-http-ndk
// and lua-resty-core). Linux only: the master is recognised through /proc.
package proxy
