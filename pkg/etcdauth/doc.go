// Package etcdauth provisions etcd users and roles so that etcd itself
// enforces who may change what (issue 10). Every identity is an etcd user;
// with etcd's --client-cert-auth, the Common Name of a client certificate
// issued by the platform CA (pkg/pki) is the user of each request, so a node
// or user authenticates by its certificate alone.
//
// Names carry the installation's prefix ("/deis" gives "deis:node-a"), so
// installations sharing an etcd cluster never share a user or role. The
// functions are idempotent and converge (EnsureRole revokes permissions no
// longer in the table), so a level-triggered reconciler may call them on
// every pass; Sync does the whole installation at once from its records
// (nodes, users, grants, formations), removing identities no longer there. They need etcd's root: managing users and roles is root's
// alone, and no platform role (not even admin) can.
//
// # Permission table (today's key layout, pkg/state/keys.go)
//
// Prefixes end in "/" and cover every key under them; other keys are exact.
// Every role may also read HealthKey (etcdconn.Dial's check).
//
//	role                   read                                          read and write
//	deis:admin             —                                             /deis/ (everything under the prefix)
//	deis:coordinator       /deis/ (everything)                           runtime/ routing/ status/formations/
//	                                                                     status/releases/ status/acme/ acme/ builds/
//	                                                                     releases/ certs/ coordinator/ (info, election)
//	                                                                     installation join/ slugs/; for PurgeFormationKeys also
//	                                                                     formations/ layers/ configs/ perms/
//	deis:nodes (every      nodes/ layers/ formations/ coordinator/info   —
//	node)                  coordinator/members/ slugs/ users/ perms/ (agent API: who may call)
//	deis:node-<n>          runtime/<n>; a proxy also, for each formation nodes/<n> heartbeats/<n> status/nodes/<n>;
//	                       f its proxy layer selects: routing/<f>        a proxy also status/acks/<n>/
//	                       certs/<f>/ acme/challenges/<f>/               status/traffic-reports/<n>/
//	deis:user-<u>          coordinator/info nodes/ heartbeats/ users/<u> —
//	                       status/acks/ status/traffic-reports/
//	deis:formation-<f>     builds/<f>/ routing/<f> status/formations/<f> formations/<f> configs/<f> layers/<f>/
//	                       status/releases/<f>/                          releases/<f>/ certs/<f>/
//	                       status/acme/<f> perms/<f>/
//
// A node's user holds deis:nodes and its own deis:node-<n>. A proxy's
// formations (NodeOptions.Serves) are those whose proxy layer's selector
// matches the labels of its join (jointoken.Member, not its registration,
// which it writes itself); the coordinator's access loop recomputes them when
// layers, formations or joins change and EnsureNode converges the grants.
// The former shared deis:proxies role (every formation's routing) and
// deis:legacy-nodes role (every formation's releases) are
// deleted by Sync. A user holds deis:user-<u>, deis:admin if an administrator,
// and deis:formation-<f> for each formation granted (GrantFormation).
//
// # What the table does not allow yet, and the layout change it needs
//
//   - Done: a node's proxy acks and traffic reports are keyed by node
//     first, under new family names (so old and new agents never mix the
//     two orders): /deis/status/acks/<n>/<f> and
//     /deis/status/traffic-reports/<n>/<f>. A proxy's own role holds one
//     read-write prefix for each (ProxyNodePerms); ProxyFormationPerms
//     (exact keys per formation) remains for narrower grants.
//     Keys.FormationFamilies no longer lists them: a proxy deletes its
//     acks of formations it no longer routes and its traffic report once
//     it has nothing to count, and an ack older than a formation's routing
//     counts for nothing.
//   - Done: proxies read only the routing, certificates (with private keys)
//     and challenges of the formations they serve (ProxyReadPerms); the
//     proxy role reads and watches each such formation's keys apart.
//   - Done: a node reads no release or release status (they hold every
//     formation's config): the agent API builds a one-off's spec from a
//     container of the formation in the node's own runtime databag. The
//     retired deis:legacy-nodes role is taken from each node by EnsureNode
//     and deleted by Sync. The platform token is gone: the agent API and
//     the slug server check client certificates (pkg/access).
//   - The coordinator may write deisctl's families only because
//     PurgeFormationKeys deletes every family of a destroyed formation;
//     DestroyFormation already deletes them, so the purge can leave them out
//     and the grants go.
//   - Non-admin users cannot list formations (a range over formations/);
//     deisctl lists the formations granted to the user instead.
//   - SSH keys (keys/) are keyed by fingerprint, not by user: only
//     administrators add them until they move under keys/<user>/.
//
// Revocation: RemoveNode and RemoveUser delete the etcd user; etcd refuses
// its next request even on a connection already open, whatever its
// certificate. That, not the certificate (pkg/pki's revoked serials are for
// the platform's own TLS servers), is what ends access to etcd.
package etcdauth
