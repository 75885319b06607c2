// Package scheduler is the coordinator's control loop. It reads the whole
// desired state (formations, layers, releases) and the whole reported state
// (nodes, heartbeats, container status, proxy acknowledgements) from etcd and
// writes one runtime databag per node and one routing databag per formation.
//
// The decision is a pure function, Plan(World) Decision, so every rule is
// table-tested without etcd:
//
//   - Placement (Place) is least-loaded with anti-affinity per process type
//     and per-node capacity; existing placements are kept.
//   - Rollouts: a new release's containers are placed beside the old ones;
//     the routing databag moves to the new release only when every new web
//     container is reported ready; old containers leave a node's databag only
//     after every live proxy of the formation has acknowledged a routing
//     revision that no longer sends them traffic.
//   - A node whose heartbeat expired is lost: its containers are dropped from
//     its databag and placed again on the live nodes of the layer.
//   - Automatic rollback (rollback.go): DecideRollback, another pure
//     function, rolls back a release that crash-loops, fails its health
//     checks or answers mostly 5xx at the proxies within the
//     RollbackPolicy's window after it went live.
//
// Controller runs Plan in a level-triggered loop: any change under the key
// prefix wakes it, and it also resyncs on a timer. Only the leading
// coordinator runs it.
package scheduler
