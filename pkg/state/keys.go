package state

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultPrefix is the key prefix used when none is configured.
const DefaultPrefix = "/deis"

// Keys builds every key the platform uses under one prefix.
type Keys struct{ Prefix string }

// NewKeys returns the key layout under prefix ("" means DefaultPrefix).
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Keys{Prefix: strings.TrimRight(prefix, "/")}
}

func (k Keys) join(parts ...string) string { return k.Prefix + "/" + strings.Join(parts, "/") }

// Formations is the family of formation documents (writer: deisctl).
func (k Keys) Formations() string        { return k.join("formations") + "/" }
func (k Keys) Formation(f string) string { return k.join("formations", f) }

// Layers holds the layers of each formation (writer: deisctl).
func (k Keys) AllLayers() string           { return k.join("layers") + "/" }
func (k Keys) Layers(f string) string      { return k.join("layers", f) + "/" }
func (k Keys) Layer(f, name string) string { return k.join("layers", f, name) }

// Configs holds one config document per formation (writer: deisctl).
func (k Keys) Configs() string        { return k.join("configs") + "/" }
func (k Keys) Config(f string) string { return k.join("configs", f) }

// Builds holds the builds of each formation (writer: the coordinator's builder).
func (k Keys) Builds(f string) string    { return k.join("builds", f) + "/" }
func (k Keys) Build(f, id string) string { return k.join("builds", f, id) }

// Releases is each formation's append-only release log (writer: the release
// log, AppendRelease).
func (k Keys) AllReleases() string      { return k.join("releases") + "/" }
func (k Keys) Releases(f string) string { return k.join("releases", f) + "/" }
func (k Keys) Release(f string, v int) string {
	return k.join("releases", f, fmt.Sprintf("%010d", v))
}

// ReleaseVersionFromKey parses the version out of a release key.
func (k Keys) ReleaseVersionFromKey(key string) (int, bool) {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return 0, false
	}
	v, err := strconv.Atoi(key[i+1:])
	return v, err == nil
}

// Nodes holds one registration per agent (writer: that agent).
func (k Keys) Nodes() string        { return k.join("nodes") + "/" }
func (k Keys) Node(n string) string { return k.join("nodes", n) }

// Drains marks nodes an operator is draining before maintenance (writer:
// deisctl; read by the scheduler, which moves their work away).
func (k Keys) Drains() string        { return k.join("drains") + "/" }
func (k Keys) Drain(n string) string { return k.join("drains", n) }

// Heartbeats holds one lease-bound key per live agent (writer: that agent;
// watched only by the coordinator).
func (k Keys) Heartbeats() string        { return k.join("heartbeats") + "/" }
func (k Keys) Heartbeat(n string) string { return k.join("heartbeats", n) }

// Runtime holds one databag per node: the containers it must run (writer:
// the coordinator's scheduler; watched by that node's agent).
func (k Keys) Runtimes() string        { return k.join("runtime") + "/" }
func (k Keys) Runtime(n string) string { return k.join("runtime", n) }

// Routing holds one databag per formation (writer: the coordinator; watched by
// proxy agents).
func (k Keys) Routings() string        { return k.join("routing") + "/" }
func (k Keys) Routing(f string) string { return k.join("routing", f) }

// NodeStatus is what each agent reports about its containers (writer: that
// agent; watched by the coordinator).
func (k Keys) NodeStatuses() string       { return k.join("status", "nodes") + "/" }
func (k Keys) NodeStatus(n string) string { return k.join("status", "nodes", n) }

// ProxyAcks records the routing revision each proxy has applied (writer: that
// proxy agent; watched by the coordinator). Keyed by node first, so a
// node's etcd role holds one prefix of its own (NodeProxyAcks); the family
// is not a formation family: a proxy deletes its acks of formations it no
// longer routes, and an ack older than a formation's routing counts for
// nothing.
func (k Keys) AllProxyAcks() string           { return k.join("status", "acks") + "/" }
func (k Keys) NodeProxyAcks(n string) string  { return k.join("status", "acks", n) + "/" }
func (k Keys) ProxyAck(f, node string) string { return k.join("status", "acks", node, f) }

// Traffic holds each proxy's recent answer counts per release of a
// formation (writer: that proxy agent; watched by the coordinator, which
// rolls back a release answering mostly 5xx). Keyed by node first, like
// the acks; a proxy deletes its report once it has no answers to count.
func (k Keys) AllTraffic() string              { return k.join("status", "traffic-reports") + "/" }
func (k Keys) NodeTraffic(n string) string     { return k.join("status", "traffic-reports", n) + "/" }
func (k Keys) TrafficOf(f, node string) string { return k.join("status", "traffic-reports", node, f) }

// FormationStatus is the scheduler's account of each formation: what is in
// progress and why, and what it cannot do (writer: coordinator).
func (k Keys) FormationStatuses() string       { return k.join("status", "formations") + "/" }
func (k Keys) FormationStatus(f string) string { return k.join("status", "formations", f) }

// ReleaseStatus marks releases that failed to roll out (writer: coordinator).
func (k Keys) AllReleaseStatuses() string      { return k.join("status", "releases") + "/" }
func (k Keys) ReleaseStatuses(f string) string { return k.join("status", "releases", f) + "/" }
func (k Keys) ReleaseStatus(f string, v int) string {
	return k.join("status", "releases", f, fmt.Sprintf("%010d", v))
}

// Keys holds registered SSH public keys by fingerprint (writer: deisctl).
func (k Keys) SSHKeys() string         { return k.join("keys") + "/" }
func (k Keys) SSHKey(fp string) string { return k.join("keys", fp) }

// Coordinator is the leading coordinator's advertisement: where its SSH and
// slug servers listen (writer: the leading coordinator).
func (k Keys) Coordinator() string { return k.join("coordinator", "info") }

// NextUID is the counter of formation uids: the next formation created gets
// FirstAppUID plus its value (writer: Store.CreateFormation). It outlives
// formations, so a uid is never given twice.
func (k Keys) NextUID() string { return k.join("uids", "next") }

// Election is the prefix of the coordinators' leader election.
func (k Keys) Election() string { return k.join("coordinator", "election") }

// Under returns the path elements of key below family, a prefix ending in
// "/" as the Keys methods return it (Nodes(), AllLayers(), ...): for
// family AllLayers() and key ".../layers/web/runtime", ["web", "runtime"].
// It reports false when key is not under family or an element is empty.
func Under(key, family string) ([]string, bool) {
	rest, ok := strings.CutPrefix(key, family)
	if !ok || rest == "" {
		return nil, false
	}
	parts := strings.Split(rest, "/")
	for _, p := range parts {
		if p == "" {
			return nil, false
		}
	}
	return parts, true
}

// Base returns the last path element of key.
func Base(key string) string {
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		return key[i+1:]
	}
	return key
}

// SSHKeyID turns an SSH SHA256 fingerprint ("SHA256:base64...") into the
// name of its key under SSHKeys: the base64 made URL-safe, with no slashes.
func SSHKeyID(fingerprint string) string {
	fp := strings.TrimPrefix(fingerprint, "SHA256:")
	return strings.NewReplacer("/", "_", "+", "-", "=", "").Replace(fp)
}
