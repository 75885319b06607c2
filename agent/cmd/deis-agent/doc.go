// Command deis-agent runs on every node. It registers the node and keeps its
// heartbeat, runs the containers of the node's runtime databag (runtime
// role), and, on nodes labelled role=proxy, runs the node's own Nginx and
// routes each formation's traffic (proxy role).
package main
