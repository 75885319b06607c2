// Package node registers an agent in etcd and keeps it alive: it writes the
// node's registration (Keys.Node) and a heartbeat key bound to a lease
// (Keys.Heartbeat) that the agent keeps alive. When the agent dies the lease
// expires after its TTL, the heartbeat key disappears, and the coordinator
// marks the node lost. Heartbeats live apart from every key anybody watches
// for work, so keep-alives never wake a watcher.
//
// Join (deis-agent --join TOKEN) makes the node's key and certificate
// request, trades the one-time token for its certificate with the
// coordinator (pinned by the CA fingerprint deisctl nodes:add printed) and
// writes the credentials directory, <state-dir>/credentials, that the agent
// dials etcd with from then on. A node whose credentials are revoked
// (deisctl nodes:remove) can no longer renew its heartbeat: the scheduler
// then treats it as lost.
package node
