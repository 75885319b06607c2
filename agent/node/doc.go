// Package node registers an agent in etcd and keeps it alive: it writes the
// node's registration (Keys.Node) and a heartbeat key bound to a lease
// (Keys.Heartbeat) that the agent keeps alive. When the agent dies the lease
// expires after its TTL, the heartbeat key disappears, and the coordinator
// marks the node lost. Heartbeats live apart from every key anybody watches
// for work, so keep-alives never wake a watcher.
package node
