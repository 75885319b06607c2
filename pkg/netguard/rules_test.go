package netguard

import (
	"strings"
	"testing"

	"github.com/docker/docker/api/types/network"
)

func TestNewGuardRefusesBadOptions(t *testing.T) {
	for _, c := range []struct {
		name string
		o    Options
		want string
	}{
		// Linux limits interface names to 15 characters.
		{"a-very-long-network-name", Options{}, "at most 15"},
		{"apps", Options{Bridge: "br with space"}, "bridge name"},
		{"-apps", Options{}, "network name"},
		{"apps", Options{AllowTCP: []int{0}}, "AllowTCP port 0"},
		{"apps", Options{AllowUDP: []int{70000}}, "AllowUDP port 70000"},
		{"apps", Options{Deny: []string{"nonsense"}}, "not an IPv4 address"},
		{"apps", Options{Deny: []string{"fd00::/8"}}, "only IPv4"},
	} {
		_, err := newGuard(c.name, c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("newGuard(%q, %+v) = %v, want an error with %q", c.name, c.o, err, c.want)
		}
	}
}

func TestNewGuardDefaults(t *testing.T) {
	g, err := newGuard("deis-apps", Options{AllowTCP: []int{53, 53, 22}, Deny: []string{"10.1.2.3", "10.0.0.0/8", "10.1.2.3/32"}})
	if err != nil {
		t.Fatal(err)
	}
	// The bridge is named like the network; lists are sorted, without duplicates.
	if g.bridge != "deis-apps" {
		t.Errorf("bridge = %q", g.bridge)
	}
	if got := g.allowTCP; len(got) != 2 || got[0] != 22 || got[1] != 53 {
		t.Errorf("allowTCP = %v", got)
	}
	if len(g.deny) != 2 || g.deny[0].String() != "10.0.0.0/8" || g.deny[1].String() != "10.1.2.3/32" {
		t.Errorf("deny = %v", g.deny)
	}
}

func TestRestoreText(t *testing.T) {
	g, err := newGuard("deis-apps", Options{AllowUDP: []int{53}, Deny: []string{"169.254.169.254"}})
	if err != nil {
		t.Fatal(err)
	}
	want := `*filter
:DEIS-GUARD-deis-apps - [0:0]
:DEIS-FWD-deis-apps - [0:0]
-A DEIS-GUARD-deis-apps -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
-A DEIS-GUARD-deis-apps -p udp -m udp --dport 53 -j RETURN
-A DEIS-GUARD-deis-apps -p tcp -j REJECT --reject-with tcp-reset
-A DEIS-GUARD-deis-apps -j REJECT --reject-with icmp-port-unreachable
-A DEIS-FWD-deis-apps -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
-A DEIS-FWD-deis-apps -d 169.254.169.254/32 -p tcp -j REJECT --reject-with tcp-reset
-A DEIS-FWD-deis-apps -d 169.254.169.254/32 -j REJECT --reject-with icmp-port-unreachable
COMMIT
`
	rs := rules(g, false)
	if got := restoreText(rs); got != want {
		t.Errorf("restoreText =\n%s\nwant\n%s", got, want)
	}
	if len(rs.jumps) != 2 || rs.jumps[0] != (jump{"INPUT", "DEIS-GUARD-deis-apps"}) || rs.jumps[1] != (jump{"DOCKER-USER", "DEIS-FWD-deis-apps"}) {
		t.Errorf("jumps = %v", rs.jumps)
	}
	// IPv6 gets only the INPUT guard, with the ICMPv6 reject.
	rs6 := rules(g, true)
	text6 := restoreText(rs6)
	if strings.Contains(text6, "DEIS-FWD") || !strings.Contains(text6, "icmp6-port-unreachable") || len(rs6.jumps) != 1 {
		t.Errorf("IPv6 rules:\n%s", text6)
	}
	// Without Deny there is no forward chain, and a stale one is removed.
	g.deny = nil
	rs = rules(g, false)
	if len(rs.jumps) != 1 || len(rs.absent) != 1 || rs.absent[0] != "DEIS-FWD-deis-apps" {
		t.Errorf("without deny: %+v", rs)
	}
}

func TestMismatch(t *testing.T) {
	g, _ := newGuard("deis-apps", Options{})
	good := network.Inspect{Name: "deis-apps", Driver: "bridge",
		Labels:  map[string]string{Label: "deis-apps"},
		Options: map[string]string{optBridgeName: "deis-apps", optICC: "false", optMasquerade: "true"}}
	if p := mismatch(good, g); len(p) != 0 {
		t.Errorf("a network as Ensure creates it: %v", p)
	}
	bad := good
	bad.Labels = nil
	bad.Options = map[string]string{}
	bad.Internal = true
	// Each difference is named.
	if p := mismatch(bad, g); len(p) != 4 {
		t.Errorf("mismatch = %v, want 4 reasons", p)
	}
}
