package state

import (
	"sort"
	"strings"
	"time"
)

// LayerType says what a layer's nodes do for a formation.
type LayerType string

const (
	LayerRuntime LayerType = "runtime"
	LayerProxy   LayerType = "proxy"
)

// DefaultContainerPort is the port every container listens on inside its own
// network namespace; PORT is set to it.
const DefaultContainerPort = 5000

// Formation is one app: its name, its extra domains and its scale. Written by
// deisctl.
type Formation struct {
	Name    string   `json:"name"`
	Domains []string `json:"domains,omitempty"`
	// Scale maps process type to container count. A nil map means "never
	// scaled": the first release with a web type then runs web=1, as on Heroku.
	Scale  map[string]int            `json:"scale,omitempty"`
	Limits map[string]ResourceLimits `json:"limits,omitempty"`
	// MaxBodyBytes is the largest request body the proxies pass to the
	// formation (deisctl limits:set --body); 0 means the proxies' default
	// (deis-agent --max-body).
	MaxBodyBytes int64 `json:"maxBodyBytes,omitempty"`
	// Restarts counts `deisctl ps:restart` per process type; a new count
	// gives the type's containers new names, so they are replaced with the
	// same handoff as a release.
	Restarts map[string]int `json:"restarts,omitempty"`
	Created  time.Time      `json:"created"`
	// UID is the uid (and gid) the formation's slug apps run as, unique to
	// the formation, allocated by Store.CreateFormation; 0 for formations
	// created before uids were allocated (see AppUID).
	UID int `json:"uid,omitempty"`
	// AutoRollbackOff turns the coordinator's automatic rollback off for
	// the formation (deisctl autorollback off).
	AutoRollbackOff bool `json:"autoRollbackOff,omitempty"`
	// HTTPS holds the formation's HTTPS settings (deisctl certs:redirect,
	// certs:hsts, certs:auto); nil: none. See certs.go.
	HTTPS *HTTPS `json:"https,omitempty"`
}

// ResourceLimits are applied to each container of one process type.
type ResourceLimits struct {
	MemoryBytes int64   `json:"memoryBytes,omitempty"`
	CPUs        float64 `json:"cpus,omitempty"`
}

// ReleaseProcessType is the Procfile type that runs once before a release
// goes live (the release phase); it is never scaled.
const ReleaseProcessType = "release"

// EffectiveScale is the scale the scheduler applies for a release with the
// given process types.
func (f *Formation) EffectiveScale(types map[string]string) map[string]int {
	out := map[string]int{}
	if f.Scale == nil {
		if _, ok := types["web"]; ok {
			out["web"] = 1
		}
		return out
	}
	for t, n := range f.Scale {
		if t == ReleaseProcessType {
			continue // runs once per release, in the build stage
		}
		if _, ok := types[t]; ok && n > 0 {
			out[t] = n
		}
	}
	return out
}

// Layer is a group of nodes doing one kind of work for a formation, chosen by
// label selector. Written by deisctl.
type Layer struct {
	Formation string            `json:"formation"`
	Name      string            `json:"name"`
	Type      LayerType         `json:"type"`
	Selector  map[string]string `json:"selector"`
	Created   time.Time         `json:"created"`
}

// Matches reports whether a node's labels satisfy the layer's selector. A
// node label may hold several comma-separated values (role=runtime,proxy for
// a node with both roles); the selector matches if any of them is equal.
func (l *Layer) Matches(n *Node) bool {
	for k, v := range l.Selector {
		if !LabelHas(n.Labels, k, v) {
			return false
		}
	}
	return true
}

// LabelHas reports whether labels[k] holds value v among its comma-separated
// values.
func LabelHas(labels map[string]string, k, v string) bool {
	for _, have := range strings.Split(labels[k], ",") {
		if have == v {
			return true
		}
	}
	return false
}

// Node is an agent's registration. Written by that agent when it starts.
type Node struct {
	Name string `json:"name"`
	// Addr is the address other nodes use to reach this node's containers.
	Addr   string            `json:"addr"`
	Labels map[string]string `json:"labels"`
	// HTTPPort is the port the node's proxy (if any) serves apps on.
	HTTPPort int `json:"httpPort,omitempty"`
	// HTTPSPort is the port the node's proxy serves HTTPS on (0: none).
	HTTPSPort int `json:"httpsPort,omitempty"`
	// Capacity is the most containers the node accepts (0: no limit).
	Capacity int `json:"capacity,omitempty"`
	// MemoryBytes is the memory the node offers to limited containers (0: no limit).
	MemoryBytes int64     `json:"memoryBytes,omitempty"`
	APIURL      string    `json:"apiURL,omitempty"`
	Started     time.Time `json:"started"`
	Version     string    `json:"version,omitempty"`
}

// Drain asks the scheduler to move every container off a node.
type Drain struct {
	Node    string    `json:"node"`
	Created time.Time `json:"created"`
}

// Heartbeat is the value of a node's lease-bound heartbeat key.
type Heartbeat struct {
	Node string    `json:"node"`
	At   time.Time `json:"at"`
}

// Config is a formation's environment. Written by deisctl.
type Config struct {
	Vars map[string]string `json:"vars"`
}

// SlugRef names a slug by content.
type SlugRef struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Build is the output of one successful build. Written by the builder.
type Build struct {
	ID           string            `json:"id"`
	Formation    string            `json:"formation"`
	GitSHA       string            `json:"gitSHA,omitempty"`
	Slug         *SlugRef          `json:"slug,omitempty"`
	Image        string            `json:"image"`
	ProcessTypes map[string]string `json:"processTypes"`
	Buildpack    string            `json:"buildpack,omitempty"`
	// SlugServer is the base URL of the slug server of the coordinator that
	// stored this build's slug or image archive; agents download from it, so
	// a build stays reachable when another coordinator leads ("" means the
	// leader's).
	SlugServer string `json:"slugServer,omitempty"`
	// ImageArchive is `docker save` of Image, stored in the slug store, for
	// nodes whose engine lacks the image (Dockerfile builds).
	ImageArchive *SlugRef `json:"imageArchive,omitempty"`
	// NoShell marks a Dockerfile image without /bin/sh: its processes run
	// directly (ExecDirect), never through a shell.
	NoShell bool `json:"noShell,omitempty"`
	// ImageCommand marks a Dockerfile build without a Procfile: its web
	// process runs the image's own ENTRYPOINT and CMD unchanged
	// (ExecImage); ProcessTypes["web"] only shows them.
	ImageCommand bool `json:"imageCommand,omitempty"`
	// Failed marks a build that produced no release; Error says why. Its
	// log is kept like any other build's.
	Failed  bool      `json:"failed,omitempty"`
	Error   string    `json:"error,omitempty"`
	Created time.Time `json:"created"`
}

// Release is one immutable, numbered combination of a build and a config.
type Release struct {
	Formation   string            `json:"formation"`
	Version     int               `json:"version"`
	Build       *Build            `json:"build,omitempty"`
	Config      map[string]string `json:"config"`
	Description string            `json:"description"`
	Created     time.Time         `json:"created"`
	// AutoRollbackFrom is the release the coordinator rolled back from
	// when it wrote this one automatically (0: not an auto-rollback).
	AutoRollbackFrom int `json:"autoRollbackFrom,omitempty"`
}

// ReleaseStatus records what happened to a release's rollout: that it
// went live (LiveAt), or that it failed, with the reason. Written by the
// coordinator.
type ReleaseStatus struct {
	Version int       `json:"version"`
	Failed  bool      `json:"failed"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
	// LiveAt is when every proxy of the formation first routed the
	// release; only a release that went live and did not fail is a
	// target of an automatic rollback.
	LiveAt time.Time `json:"liveAt,omitempty"`
	// RolledBack marks a failed release the coordinator rolled back
	// automatically (Reason says why).
	RolledBack bool `json:"rolledBack,omitempty"`
}

// ContainerSpec is one container a node must run.
type ContainerSpec struct {
	// Name is unique across the platform: formation, release, type and index.
	Name      string `json:"name"`
	Formation string `json:"formation"`
	Release   int    `json:"release"`
	Type      string `json:"type"`
	Index     int    `json:"index"`
	Image     string `json:"image"`
	Command   string `json:"command"`
	// Exec says how Command runs in a container of an image built from a
	// Dockerfile (a slug's always runs through the launcher): "" through
	// the image's /bin/sh and launcher.Image, ExecImage as the image's own
	// ENTRYPOINT and CMD, ExecDirect as Command split into words
	// (launcher.Split) with no shell at all.
	Exec string            `json:"exec,omitempty"`
	Env  map[string]string `json:"env"`
	Slug *SlugRef          `json:"slug,omitempty"`
	// SlugURL is where the agent downloads the slug from.
	SlugURL string `json:"slugURL,omitempty"`
	// ImageArchive and ImageArchiveURL name a `docker save` of Image that an
	// agent loads when its engine lacks the image.
	ImageArchive    *SlugRef       `json:"imageArchive,omitempty"`
	ImageArchiveURL string         `json:"imageArchiveURL,omitempty"`
	Port            int            `json:"port"`
	Limits          ResourceLimits `json:"limits,omitempty"`
	// HealthPath, when set, is the HTTP path that must answer 2xx/3xx before
	// the container counts as ready; otherwise a TCP connect is enough.
	HealthPath string `json:"healthPath,omitempty"`
	// UID is the formation's uid (Formation.UID) a slug runs as; 0: the
	// agent looks it up (see AppUID).
	UID int `json:"uid,omitempty"`
}

// Runtime is a node's runtime databag. Written by the coordinator.
type Runtime struct {
	Node       string          `json:"node"`
	Containers []ContainerSpec `json:"containers"`
}

// Sort orders the containers by name so the databag renders the same bytes
// for the same content.
func (r *Runtime) Sort() {
	sort.Slice(r.Containers, func(i, j int) bool { return r.Containers[i].Name < r.Containers[j].Name })
}

// Upstream is one container a proxy sends requests to.
type Upstream struct {
	Container string `json:"container"`
	Addr      string `json:"addr"`
	Release   int    `json:"release"`
}

// Routing is a formation's routing databag. Written by the coordinator; its
// etcd ModRevision is the routing revision proxies acknowledge.
type Routing struct {
	Formation string     `json:"formation"`
	Release   int        `json:"release"`
	Domains   []string   `json:"domains"`
	Upstreams []Upstream `json:"upstreams"`
	// MaxBodyBytes is Formation.MaxBodyBytes: the largest request body the
	// proxies accept for the formation (413 above it); 0 means their default.
	MaxBodyBytes int64 `json:"maxBodyBytes,omitempty"`
	// HTTPS is Formation.HTTPS without Auto: redirect and HSTS, applied by
	// the proxies.
	HTTPS *HTTPS `json:"https,omitempty"`
}

// Container states reported by agents.
const (
	StateStarting = "starting"
	StateRunning  = "running" // up, not yet passing its health check
	StateReady    = "ready"   // up and passing its health check
	StateExited   = "exited"
	StateStopping = "stopping"
)

// ContainerStatus is an agent's view of one container.
type ContainerStatus struct {
	Name      string    `json:"name"`
	ID        string    `json:"id,omitempty"`
	Formation string    `json:"formation"`
	Release   int       `json:"release"`
	Type      string    `json:"type"`
	State     string    `json:"state"`
	Addr      string    `json:"addr,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Started   time.Time `json:"started,omitempty"`
	// Restarts is how often Docker restarted the container after it
	// exited (its restart policy): a crash loop shows here.
	Restarts int `json:"restarts,omitempty"`
}

// NodeStatus is what an agent reports. Written by that agent.
type NodeStatus struct {
	Node       string            `json:"node"`
	Updated    time.Time         `json:"updated"`
	Containers []ContainerStatus `json:"containers"`
	// Pending lists the reconcile tasks still in progress, with reasons.
	Pending []string `json:"pending,omitempty"`
	Error   string   `json:"error,omitempty"`
	// RetiredLogs lists, sorted, the formations of which the node keeps the
	// last lines of removed containers (deisctl logs asks it for them).
	RetiredLogs []string `json:"retired_logs,omitempty"`
}

// FormationStatus is the scheduler's view of a formation's convergence.
type FormationStatus struct {
	Formation string `json:"formation"`
	Release   int    `json:"release"`
	// Pending lists what is in progress, with reasons.
	Pending []string `json:"pending,omitempty"`
	// Error says what the scheduler cannot do (no node matches a layer, no
	// capacity), and what to do about it.
	Error string `json:"error,omitempty"`
}

// ProxyAck is the routing revision a proxy node has applied for a formation.
type ProxyAck struct {
	Node     string    `json:"node"`
	Revision int64     `json:"revision"`
	Applied  time.Time `json:"applied"`
	Error    string    `json:"error,omitempty"`
}

// SSHKey is a registered public key.
type SSHKey struct {
	Fingerprint string    `json:"fingerprint"`
	User        string    `json:"user"`
	PublicKey   string    `json:"publicKey"`
	Comment     string    `json:"comment,omitempty"`
	Created     time.Time `json:"created"`
}

// CoordinatorInfo is the leading coordinator's advertisement.
type CoordinatorInfo struct {
	SSHHost    string `json:"sshHost"`
	SSHPort    int    `json:"sshPort"`
	SlugURL    string `json:"slugURL"`
	BaseDomain string `json:"baseDomain"`
	HTTPPort   int    `json:"httpPort,omitempty"`
	// HTTPSPort is the port the proxies serve HTTPS on, shown in app URLs
	// (the coordinator's --app-https-port; 0: none shown).
	HTTPSPort int `json:"httpsPort,omitempty"`
}
