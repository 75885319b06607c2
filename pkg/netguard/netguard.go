package netguard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/network"
)

// Recommended network names. Each is also the name of its bridge interface
// (at most 15 characters), so the firewall rules can name it.
const (
	// Apps is the network of every app container (slug, Dockerfile and
	// one-off run containers) of every formation on a node.
	Apps = "deis-apps"
	// Builds is the network of the coordinator's build containers.
	Builds = "deis-builds"
)

// Label marks a network netguard created; its value is the network's name.
const Label = "deis.network"

// Docker options of a guarded network.
const (
	optBridgeName = "com.docker.network.bridge.name"
	optICC        = "com.docker.network.bridge.enable_icc"
	optMasquerade = "com.docker.network.bridge.enable_ip_masquerade"
)

// ErrMismatch is returned (wrapped) when a network of the requested name
// exists but is not the guarded bridge Ensure would have created.
var ErrMismatch = errors.New("netguard: network exists with other settings")

// Docker is the part of the Docker API netguard uses; *client.Client of
// github.com/docker/docker/client implements it.
type Docker interface {
	NetworkInspect(ctx context.Context, networkID string, options network.InspectOptions) (network.Inspect, error)
	NetworkCreate(ctx context.Context, name string, options network.CreateOptions) (network.CreateResponse, error)
	NetworkRemove(ctx context.Context, networkID string) error
}

// Options tune a guarded network. The zero value is the strict default: the
// bridge is named like the network, containers reach no port of the host
// and every address beyond it.
type Options struct {
	// Bridge is the Linux name of the network's bridge interface, at most
	// 15 characters of letters, digits, '.', '_' and '-'. Empty means the
	// network's name.
	Bridge string
	// AllowTCP and AllowUDP are host ports the containers may still open on
	// the host's own addresses (for example a DNS server the host runs
	// itself). Empty by default.
	AllowTCP, AllowUDP []int
	// Deny lists IPv4 addresses or prefixes ("10.0.0.0/8", "169.254.169.254")
	// beyond the host that the containers may not open connections to: the
	// other nodes of the cluster (their agents' APIs, etcd, coordinators)
	// and a cloud's metadata service. Replies to connections that arrive
	// from there (a proxy on another node reaching an app) still pass.
	Deny []string
	// Labels are extra labels of the network when Ensure creates it.
	Labels map[string]string
}

// Docker's own per-call timeout.
const dockerTimeout = 30 * time.Second

var (
	nameRE   = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	bridgeRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$`)
)

// guard is validated Options.
type guard struct {
	name, bridge       string
	allowTCP, allowUDP []int
	deny               []netip.Prefix
}

func newGuard(name string, o Options) (guard, error) {
	g := guard{name: name, bridge: o.Bridge}
	if !nameRE.MatchString(name) {
		return g, fmt.Errorf("netguard: network name %q: use letters, digits, '.', '_' and '-', starting with a letter or digit", name)
	}
	if g.bridge == "" {
		g.bridge = name
	}
	if !bridgeRE.MatchString(g.bridge) {
		return g, fmt.Errorf("netguard: bridge name %q: at most 15 letters, digits, '.', '_' or '-' (Linux interface names are limited to 15 characters); set Options.Bridge", g.bridge)
	}
	var err error
	if g.allowTCP, err = ports("AllowTCP", o.AllowTCP); err != nil {
		return g, err
	}
	if g.allowUDP, err = ports("AllowUDP", o.AllowUDP); err != nil {
		return g, err
	}
	seen := map[netip.Prefix]bool{}
	for _, s := range o.Deny {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return g, fmt.Errorf("netguard: deny %q: not an IPv4 address or prefix (like 10.0.0.0/8)", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if !p.Addr().Is4() {
			return g, fmt.Errorf("netguard: deny %q: only IPv4 is supported (containers on a guarded network have no IPv6)", s)
		}
		p = p.Masked()
		if !seen[p] {
			seen[p] = true
			g.deny = append(g.deny, p)
		}
	}
	sort.Slice(g.deny, func(i, j int) bool { return g.deny[i].String() < g.deny[j].String() })
	return g, nil
}

func ports(what string, in []int) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for _, p := range in {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("netguard: %s port %d: must be between 1 and 65535", what, p)
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Ints(out)
	return out, nil
}

// Ensure makes the network name a guarded bridge and installs its firewall
// rules; it is idempotent and meant to run at every start of the component
// that attaches containers to the network (the rules do not survive a
// reboot). Bad options, or an existing network of that name with other
// settings (ErrMismatch), change nothing.
func Ensure(ctx context.Context, d Docker, name string, o Options) error {
	g, err := newGuard(name, o)
	if err != nil {
		return err
	}
	exists, err := inspect(ctx, d, g)
	if err != nil {
		return err
	}
	fw, err := newFirewall()
	if err != nil {
		return err
	}
	if err := fw.ensure(ctx, g); err != nil {
		return err
	}
	if exists {
		return nil
	}
	labels := map[string]string{}
	for k, v := range o.Labels {
		labels[k] = v
	}
	labels[Label] = name
	cctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	_, err = d.NetworkCreate(cctx, name, network.CreateOptions{
		Driver: "bridge",
		Options: map[string]string{
			optBridgeName: g.bridge,
			optICC:        "false",
			optMasquerade: "true",
		},
		Labels: labels,
	})
	if err != nil {
		// Another process may have created it meanwhile: accept it if it
		// is what we would have made.
		if exists, ierr := inspect(ctx, d, g); ierr == nil && exists {
			return nil
		}
		return fmt.Errorf("netguard: create network %q: %w", name, err)
	}
	return nil
}

// inspect reports whether the network exists, and an ErrMismatch error if
// it exists but is not the guarded bridge g describes.
func inspect(ctx context.Context, d Docker, g guard) (bool, error) {
	ictx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	n, err := d.NetworkInspect(ictx, g.name, network.InspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("netguard: inspect network %q: %w", g.name, err)
	}
	if n.Name != g.name {
		// Docker also resolves ID prefixes; a network whose ID starts
		// with our name is not ours.
		return false, nil
	}
	if p := mismatch(n, g); len(p) > 0 {
		return true, fmt.Errorf("%w: %q %s; remove it (docker network rm %s, after stopping its containers) and it is created again", ErrMismatch, g.name, strings.Join(p, ", "), g.name)
	}
	return true, nil
}

// mismatch lists how n differs from the network Ensure creates for g.
func mismatch(n network.Inspect, g guard) []string {
	var p []string
	if n.Labels[Label] != g.name {
		p = append(p, "was not created by deis (label "+Label+"="+g.name+" missing)")
	}
	if n.Driver != "bridge" {
		p = append(p, "has driver "+strconv.Quote(n.Driver)+", not bridge")
	}
	if n.Options[optBridgeName] != g.bridge {
		p = append(p, fmt.Sprintf("has bridge interface %q, not %q", n.Options[optBridgeName], g.bridge))
	}
	if n.Options[optICC] != "false" {
		p = append(p, "lets its containers talk to each other ("+optICC+" is not false)")
	}
	if n.Options[optMasquerade] == "false" {
		p = append(p, "has no outbound masquerade")
	}
	if n.Internal {
		p = append(p, "is internal (no outbound network)")
	}
	if n.EnableIPv6 {
		p = append(p, "has IPv6 enabled")
	}
	return p
}

// Remove deletes the firewall rules of the network name and the network
// itself; what is already gone is skipped. The network must have no
// containers left. It is meant for tests and for uninstalling.
func Remove(ctx context.Context, d Docker, name string, o Options) error {
	g, err := newGuard(name, o)
	if err != nil {
		return err
	}
	var errs []error
	if fw, err := newFirewall(); err != nil {
		errs = append(errs, err)
	} else if err := fw.remove(ctx, g); err != nil {
		errs = append(errs, err)
	}
	ictx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	n, err := d.NetworkInspect(ictx, name, network.InspectOptions{})
	switch {
	case cerrdefs.IsNotFound(err):
	case err != nil:
		errs = append(errs, fmt.Errorf("netguard: inspect network %q: %w", name, err))
	case n.Name != name:
	case n.Labels[Label] != name:
		errs = append(errs, fmt.Errorf("netguard: network %q was not created by deis (label %s=%s missing): left alone", name, Label, name))
	default:
		if err := d.NetworkRemove(ictx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("netguard: remove network %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
