// Package proxy is the agent's proxy role: it runs this node's own Nginx and
// routes every formation whose proxy layer selects the node.
//
// The Nginx is independent of any system Nginx. All its files live under
// StateDir/nginx (the prefix): nginx.conf, nginx.pid, logs/, temp/, the
// control socket control.sock and routes.json (the routing last applied per
// formation). It runs with "daemon on", so it outlives the agent: stopping
// the agent (Run returning) leaves apps served. A new Proxy on the same
// StateDir adopts the running master (pid file plus /proc/PID/cmdline) and
// reloads it; it starts a new master only when none is alive. StopNginx quits
// it on purpose.
//
// Run is a level-triggered loop. Watches on the routing, layer and node key
// families, and a periodic resync, only wake it; each pass reads this node's
// registration, every layer and every routing databag, and renders the whole
// nginx.conf (sorted, so the same input gives the same bytes). When nginx
// does not already serve those bytes, the file is staged next to nginx.conf,
// checked with `nginx -t`, renamed into place and nginx is reloaded with
// SIGHUP (or started). A reload counts only once nginx's control server on
// control.sock answers GET /config with the hash of the new config and every
// worker of the previous config has stopped accepting connections, so a
// request sent after an ack never meets the old routing. A master killed
// hard leaves workers holding the ports; they are found by their open error
// log and told to quit before a new master starts.
//
// Pass runs one pass by hand (tests, debugging); Run calls it.
//
// Safety rules:
//   - A routing databag with a value that cannot be placed safely in the
//     config (a domain failing state.ValidateDomain, an upstream that is not
//     host:port) is refused as a whole; the formation keeps the routing last
//     applied and its ack carries the error.
//   - A config that `nginx -t` rejects is never installed; the last good one
//     keeps serving, deis_proxy_config_check_failures_total counts it, and
//     the acks of the formations that could not move carry nginx's message.
//
// Acknowledgements: for each proxied formation the proxy writes
// state.ProxyAck at Keys.ProxyAck(formation, node) whose Revision is the
// etcd ModRevision of the routing databag nginx serves now. It never acks a
// revision nginx does not serve; a refused routing is reported in Error while
// Revision stays at the revision still served (0 if none).
//
// Linux only: the master is recognised through /proc.
package proxy
