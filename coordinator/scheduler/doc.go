// Package scheduler is the coordinator's control loop. From a watch-fed
// view of the installation (pkg/view) it writes one runtime databag per
// node and one routing databag per formation, and marks releases live or
// failed.
//
// The decision for one formation is pure, planFormation, in five steps,
// each table-tested without etcd:
//
//   - desired: the containers the current release wants at the formation's
//     scale (scale-down stops those on the nodes holding the most);
//   - keep: placed containers that stay where they are; one container per
//     pass moves to even out a process type (rebalance);
//   - place: the missing ones go to the least loaded node with the fewest
//     of their type, within per-node capacity (Place);
//   - route: the routing databag moves to a new release only when every new
//     web container is reported ready; a release (the first one too) whose
//     web containers are not ready within the boot timeout is marked failed;
//   - retire: old containers leave a node's databag only after every live
//     proxy of the formation has acknowledged a routing revision that no
//     longer sends them traffic.
//
// Plan runs these steps over a whole World (the tests' entry point). A node
// whose heartbeat expired is lost: its containers are dropped from its
// databag and placed again on the live nodes of the layer. Automatic
// rollback (rollback.go): DecideRollback, another pure function, rolls back
// a release that crash-loops, fails its health checks or answers mostly
// 5xx at the proxies within the RollbackPolicy's window after it went live.
//
// Controller runs passes incrementally: each plans only the formations the
// view's changes touched (a lost or drained node touches the formations it
// holds and those with work in progress; a node that joins touches those
// whose layers match it), plus, every Resync, those with work in progress;
// a full pass every
// FullResync is the safety net. A pass reads nothing from etcd. It writes
// only what changed, in batched transactions that each also require the
// leader's election key (Config.Fence): a deposed leader writes nothing.
// Only the leading coordinator runs it.
package scheduler
