package etcdauth

import (
	"strings"

	"github.com/deis/deis/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Perm is one permission of a role: read, write or both on one key or on
// every key under a prefix ending in "/".
type Perm struct {
	Key    string
	Prefix bool
	Type   clientv3.PermissionType
	// Why says which code needs it; the permission table in doc.go and
	// docs/security.md lists the same.
	Why string
}

// RangeEnd is the etcd range end of the permission ("" for one key).
func (p Perm) RangeEnd() string {
	if p.Prefix {
		return clientv3.GetPrefixRangeEnd(p.Key)
	}
	return ""
}

var (
	read      = clientv3.PermissionType(clientv3.PermRead)
	readWrite = clientv3.PermissionType(clientv3.PermReadWrite)
)

func r(key string, why string) Perm     { return Perm{Key: key, Type: read, Why: why} }
func rp(prefix string, why string) Perm { return Perm{Key: prefix, Prefix: true, Type: read, Why: why} }
func rw(key string, why string) Perm    { return Perm{Key: key, Type: readWrite, Why: why} }
func rwp(prefix string, why string) Perm {
	return Perm{Key: prefix, Prefix: true, Type: readWrite, Why: why}
}
func root(k state.Keys) string { return k.Prefix + "/" }
func sub(k state.Keys, parts ...string) string {
	return k.Prefix + "/" + strings.Join(parts, "/") + "/"
}

// HealthKey is the key etcdconn.Dial reads (count only) to check a
// connection; every role may read it, or Dial would fail for all but
// administrators.
func HealthKey(prefix string) string { return "health-check-" + state.NewKeys(prefix).Prefix }

// JoinTokens is the prefix of the hashed join tokens (pkg/jointoken):
// administrators write them (deisctl nodes:add), the coordinator redeems them.
func JoinTokens(k state.Keys) string { return sub(k, "join") }

// AdminPerms is the role of administrators: everything under the prefix.
func AdminPerms(k state.Keys) []Perm {
	return []Perm{
		r(HealthKey(k.Prefix), "etcdconn.Dial's check"),
		rwp(root(k), "administrators may do everything deisctl does"),
	}
}

// CoordinatorPerms is the role of the coordinators: they read everything
// under the prefix and write the families they own today (scheduler,
// builder, release log, ACME, advertisement, election, installation id,
// join tokens) plus, for PurgeFormationKeys, every family keyed by formation.
func CoordinatorPerms(k state.Keys) []Perm {
	return []Perm{
		r(HealthKey(k.Prefix), "etcdconn.Dial's check"),
		rp(root(k), "the scheduler, git server and purge read every family"),
		rwp(k.Runtimes(), "scheduler: runtime databags"),
		rwp(k.Routings(), "scheduler: routing databags"),
		rwp(k.FormationStatuses(), "scheduler: formation status"),
		rwp(sub(k, "status", "releases"), "scheduler: release status, automatic rollback"),
		rwp(sub(k, "status", "acme"), "ACME client: order status"),
		rwp(sub(k, "acme"), "ACME client: account and HTTP-01 challenges"),
		rwp(sub(k, "builds"), "builder: builds"),
		rwp(k.AllReleases(), "builder: releases (Store.AppendRelease); automatic rollback"),
		rwp(k.AllCerts(), "ACME client: certs:auto certificates"),
		rwp(sub(k, "coordinator"), "advertisement (coordinator/info) and leader election"),
		rw(k.Installation(), "purge: which installation a data directory serves"),
		rwp(JoinTokens(k), "join: redeem tokens"),
		rwp(k.AllSlugHolders(), "builder and replicator: slug holders; GC deletes them"),
		// PurgeFormationKeys deletes every family of a destroyed formation
		// in one transaction, including those deisctl writes; drop these
		// when the purge leaves them to DestroyFormation.
		rwp(k.Formations(), "purge of destroyed formations"),
		rwp(k.AllLayers(), "purge of destroyed formations"),
		rwp(sub(k, "configs"), "purge of destroyed formations"),
		rwp(k.AllPerms(), "purge of destroyed formations"),
	}
}

// NodesPerms is the role every node shares: what any agent reads.
func NodesPerms(k state.Keys) []Perm {
	return []Perm{
		r(HealthKey(k.Prefix), "etcdconn.Dial's check"),
		rp(k.Nodes(), "proxies route to nodes' addresses; agents list peers"),
		rp(k.AllLayers(), "proxy agents: which formations they serve"),
		rp(k.Formations(), "runtime: retired containers' formations, limits"),
		r(k.Coordinator(), "agents: slug server and coordinator address"),
		rp(k.CoordinatorMembers(), "runtime: other coordinators holding a slug whose download failed"),
		rp(k.AllSlugHolders(), "runtime: which coordinators hold a slug"),
		rp(k.Users(), "agent API: which callers are administrators"),
		rp(k.AllPerms(), "agent API: which users are granted a formation's logs and run"),
	}
}

// ProxyReadPerms lets a proxy node read what it routes formation f by: f's
// routing databag (exact key), TLS certificates and ACME HTTP-01 answers
// (prefixes). The access loop grants them for each formation whose proxy
// layer selects the node (NodeOptions.Serves) and takes them away when that
// stops being true, so a proxy never reads another formation's keys.
func ProxyReadPerms(k state.Keys, f string) []Perm {
	return []Perm{
		r(k.Routing(f), "proxy: routing databag of a formation it serves"),
		rp(k.Certs(f), "proxy: TLS certificates of a formation it serves"),
		rp(k.ACMEChallenges(f), "proxy: HTTP-01 answers of a formation it serves"),
	}
}

// NodePerms is the role of one node: it reads its own runtime databag and
// writes only its own keys (registration, heartbeat, status).
func NodePerms(k state.Keys, node string) []Perm {
	return []Perm{
		r(k.Runtime(node), "runtime: the node's own databag"),
		rw(k.Node(node), "node: registration"),
		rw(k.Heartbeat(node), "node: lease-bound heartbeat"),
		rw(k.NodeStatus(node), "runtime: container status"),
	}
}

// ProxyNodePerms lets a proxy node write its acks and traffic reports: keyed
// by node first (/status/acks/<n>/<f>, /status/traffic-reports/<n>/<f>),
// they are one prefix each.
func ProxyNodePerms(k state.Keys, node string) []Perm {
	return []Perm{
		rwp(k.NodeProxyAcks(node), "proxy: routing revisions applied, per formation"),
		rwp(k.NodeTraffic(node), "proxy: traffic reports, per formation"),
	}
}

// ProxyFormationPerms lets node write its proxy acknowledgement and traffic
// report of formation f alone: exact keys, for an operator who wants a
// proxy's writes narrower than ProxyNodePerms (NodeOptions.ProxyFormations).
func ProxyFormationPerms(k state.Keys, node, f string) []Perm {
	return []Perm{
		rw(k.ProxyAck(f, node), "proxy: routing revision applied"),
		rw(k.TrafficOf(f, node), "proxy: traffic report"),
	}
}

// UserPerms is the role of one non-admin user: reads deisctl needs whatever
// the formation, and the user's own record.
func UserPerms(k state.Keys, user string) []Perm {
	return []Perm{
		r(HealthKey(k.Prefix), "etcdconn.Dial's check"),
		r(k.Coordinator(), "deisctl: git remote, slug server"),
		rp(k.Nodes(), "deisctl logs and run: agents' addresses"),
		rp(k.Heartbeats(), "deisctl: which nodes are alive"),
		r(k.User(user), "deisctl: the user's own record"),
		rp(k.NodeStatuses(), "deisctl ps and status: the agents' reports (container names, states, addresses of every formation; no env)"),
		rp(k.Drains(), "deisctl status: which nodes are being drained (node names only)"),
		rp(k.AllProxyAcks(), "deisctl status: which proxies applied a formation's routing (keyed by node: revision numbers only)"),
		rp(k.AllTraffic(), "deisctl releases (view.LoadFormation): answers per release and status class (keyed by node: counts only)"),
	}
}

// FormationPerms is the role granted per formation: the formation's
// document (domains, scale, limits), config, layers, releases (config:set,
// rollback) and certificates; its builds, routing, status and permissions
// may be read.
func FormationPerms(k state.Keys, f string) []Perm {
	return []Perm{
		rw(k.Formation(f), "scale, domains, limits"),
		rw(k.Config(f), "config:set, config:unset"),
		rwp(k.Layers(f), "layers"),
		rwp(k.Releases(f), "config:set and rollback append releases"),
		rwp(k.Certs(f), "certs:add, certs:remove"),
		rp(k.Builds(f), "builds, slugs"),
		r(k.Routing(f), "status: what is routed"),
		r(k.FormationStatus(f), "status"),
		rp(k.ReleaseStatuses(f), "releases: failed, rolled back"),
		r(k.ACMEStatus(f), "certs: ACME order status"),
		rp(k.Perms(f), "perms: who may push"),
	}
}
