// Package api is the agent's HTTP API: the output of the node's containers
// (deisctl logs) and one-off containers (deisctl run). Log lines go from
// Docker straight to the client; they never pass through etcd.
//
// Serve it on a listener and advertise its URL in the node's registration
// (state.Node.APIURL):
//
//	l, err := net.Listen("tcp", "127.0.0.1:9103")
//	node.APIURL = api.URL(l.Addr(), nodeAddr) // https://…
//	srv, err := api.New(api.Config{Node: "n1", TLS: pki.ServerTLS(v, nodeCert),
//		Store: store, Docker: docker, Runtime: rt})
//	err = srv.Serve(ctx, l) // until ctx ends
//
// The API is served only over TLS with the node's certificate, and every
// connection must present a client certificate of the platform CA (a
// missing, foreign, expired or revoked one fails the handshake; plain HTTP
// is refused). The certificate's Common Name is the caller
// (pkg/access): administrators, the coordinator and users granted the
// request's formation (/perms/<f>/<u>) may call; anyone else gets 403 with
// the one line deisctl prints ("alice may not change shop: ask an
// administrator for deisctl perms:grant alice -f shop"). There is no shared
// token.
//
// # GET /logs?formation=F[&type=T][&tail=N][&follow=1][&since=RFC3339]
//
// The output (stdout and stderr, as Docker kept it) of this node's
// containers of formation F, one JSON LogLine per line, oldest first: the
// last N lines (default 100) of all of them together. With follow=1 the
// backlog ends with {"mark":"live"} and new lines follow as they are
// written, of the containers running and of those that start later, until
// the client goes away. since keeps only the lines after that time (for a
// client that reconnects). The backlog includes the last lines the runtime
// kept of the containers it removed (Config.Retired), with "retired": true
// and their release. The endpoint talks to Docker (and that buffer) only
// and takes no lock of the runtime's reconcile loop.
//
// # POST /run?formation=F
//
// The body is a JSON RunRequest ({"command": "...", "env": {...}}) and the
// request must ask to switch protocols (Connection: Upgrade, Upgrade:
// deis-run). The server starts a one-off container of F's current release
// as this node runs it: a container of F in the node's own runtime databag,
// of its highest release (during a rollout, the newest), gives the image or
// slug (through the runtime's slug cache), config, uid and limits
// (state.OneOffFromSpec; a node reads no release), the request its env and
// the command, which is
// run like a Procfile command. The container is named
// deis-run-<formation>-<n>, has DYNO=run.<n>, carries the labels
// deis.oneoff=1, deis.formation and deis.node (the reconcile loop leaves
// such containers alone) and is removed by Docker when it exits.
//
// Errors before the container runs are ordinary HTTP answers with a
// plain-text message (400 bad request, 409 the node runs no container of
// F, or F has no build, 426 no upgrade asked, 502 Docker or the slug failed).
// Once it runs the answer is 101 and the connection carries:
//
//   - server to client, frames: 1 type byte (1 stdout, 2 stderr, 3 exit),
//     a 4-byte big-endian length, the payload; the exit frame, last, holds
//     the container's exit status in decimal.
//   - client to server, the raw bytes of stdin, then a half-close (EOF).
//
// While the command is silent the server sends an empty stdout frame every
// few seconds: clients ignore it, and a client that went away makes the
// write fail. A client that goes away (a broken connection, or output that
// cannot be delivered) gets its container killed; so does a server that
// stops.
//
// Client implements both endpoints for deisctl, dialling with its TLS
// config (pki.ClientTLS with the user's certificate).
package api
