package netguard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Chain names. iptables allows 28 characters; a bridge name has at most 15.
const (
	guardPrefix = "DEIS-GUARD-" // filter chain jumped to from INPUT
	fwdPrefix   = "DEIS-FWD-"   // filter chain jumped to from DOCKER-USER
)

// Docker's chains that isolation relies on.
var dockerChains = []string{"DOCKER-USER", "DOCKER-ISOLATION-STAGE-1"}

// iptablesTimeout bounds one iptables command (it waits for the xtables lock).
const iptablesTimeout = 30 * time.Second

// jump is a rule in a built-in or Docker chain that sends the bridge's
// packets to one of our chains.
type jump struct{ from, to string }

// ruleset is what one address family needs for a guard: our chains with
// their rules (in order) and the jumps into them. Absent lists chains of
// ours that must not exist (a Deny list that became empty).
type ruleset struct {
	chains map[string][][]string
	order  []string // chain names in a stable order
	jumps  []jump
	absent []string
}

func guardChain(bridge string) string { return guardPrefix + bridge }
func fwdChain(bridge string) string   { return fwdPrefix + bridge }

// rules renders the rule set of g; v6 selects ip6tables, which gets only
// the INPUT guard (the network has no IPv6, so nothing is forwarded).
func rules(g guard, v6 bool) ruleset {
	unreach := "icmp-port-unreachable"
	if v6 {
		unreach = "icmp6-port-unreachable"
	}
	established := []string{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"}
	in := [][]string{established}
	for _, p := range g.allowTCP {
		in = append(in, []string{"-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(p), "-j", "RETURN"})
	}
	for _, p := range g.allowUDP {
		in = append(in, []string{"-p", "udp", "-m", "udp", "--dport", strconv.Itoa(p), "-j", "RETURN"})
	}
	in = append(in,
		[]string{"-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"},
		[]string{"-j", "REJECT", "--reject-with", unreach})
	gc, fc := guardChain(g.bridge), fwdChain(g.bridge)
	rs := ruleset{
		chains: map[string][][]string{gc: in},
		order:  []string{gc},
		jumps:  []jump{{"INPUT", gc}},
	}
	if v6 || len(g.deny) == 0 {
		rs.absent = []string{fc}
		return rs
	}
	fwd := [][]string{established}
	for _, p := range g.deny {
		fwd = append(fwd,
			[]string{"-d", p.String(), "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"},
			[]string{"-d", p.String(), "-j", "REJECT", "--reject-with", unreach})
	}
	rs.chains[fc] = fwd
	rs.order = append(rs.order, fc)
	rs.jumps = append(rs.jumps, jump{"DOCKER-USER", fc})
	return rs
}

// restoreText renders rs's chains for iptables-restore --noflush, which
// creates each chain or empties it and fills it in one atomic commit.
func restoreText(rs ruleset) string {
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, c := range rs.order {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, c := range rs.order {
		for _, r := range rs.chains[c] {
			fmt.Fprintf(&b, "-A %s %s\n", c, strings.Join(r, " "))
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// jumpArgs is the rule of a jump, after the chain name.
func jumpArgs(g guard, j jump) []string { return []string{"-i", g.bridge, "-j", j.to} }

// tables is one address family's iptables and iptables-restore.
type tables struct {
	bin, restore string
	v6           bool
}

// firewall is the host's iptables, and ip6tables when the host has IPv6.
type firewall struct{ families []tables }

func newFirewall() (firewall, error) {
	var fw firewall
	bin, err1 := exec.LookPath("iptables")
	res, err2 := exec.LookPath("iptables-restore")
	if err := errors.Join(err1, err2); err != nil {
		return fw, fmt.Errorf("netguard: iptables and iptables-restore are needed to isolate containers (install the iptables package): %w", err)
	}
	fw.families = append(fw.families, tables{bin: bin, restore: res})
	// IPv6 is defence in depth: Docker disables IPv6 inside containers of a
	// network without IPv6, so these rules should never match.
	if _, err := os.Stat("/proc/net/if_inet6"); err == nil {
		bin6, err1 := exec.LookPath("ip6tables")
		res6, err2 := exec.LookPath("ip6tables-restore")
		if err1 == nil && err2 == nil {
			fw.families = append(fw.families, tables{bin: bin6, restore: res6, v6: true})
		}
	}
	return fw, nil
}

func (t tables) run(ctx context.Context, stdin string, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, iptablesTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("netguard: %s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func (t tables) ipt(ctx context.Context, args ...string) error {
	_, err := t.run(ctx, "", t.bin, append([]string{"-w"}, args...)...)
	return err
}

func (t tables) hasChain(ctx context.Context, chain string) bool {
	return t.ipt(ctx, "-S", chain) == nil
}

// ensure installs g's rules in every family.
func (fw firewall) ensure(ctx context.Context, g guard) error {
	for _, t := range fw.families {
		if err := t.ensure(ctx, g); err != nil {
			return err
		}
	}
	return nil
}

func (t tables) ensure(ctx context.Context, g guard) error {
	rs := rules(g, t.v6)
	if !t.v6 {
		for _, c := range dockerChains {
			if !t.hasChain(ctx, c) {
				return fmt.Errorf("netguard: iptables chain %s is missing: dockerd must manage iptables (do not run it with --iptables=false) and use the same iptables backend as %s", c, t.bin)
			}
		}
	}
	if !t.current(ctx, rs) {
		if _, err := t.run(ctx, restoreText(rs), t.restore, "-w", "--noflush"); err != nil {
			return err
		}
	}
	for _, j := range rs.jumps {
		args := jumpArgs(g, j)
		if t.ipt(ctx, append([]string{"-C", j.from}, args...)...) == nil {
			continue
		}
		// At the top, so the guard precedes any ACCEPT rule.
		if err := t.ipt(ctx, append([]string{"-I", j.from, "1"}, args...)...); err != nil {
			return err
		}
	}
	for _, c := range rs.absent {
		if err := t.drop(ctx, g, c); err != nil {
			return err
		}
	}
	return nil
}

// current reports whether our chains already hold exactly rs's rules, as
// iptables -S prints them; then Ensure leaves them (and their counters)
// alone.
func (t tables) current(ctx context.Context, rs ruleset) bool {
	for _, c := range rs.order {
		out, err := t.run(ctx, "", t.bin, "-w", "-S", c)
		if err != nil || withoutWarnings(out) != chainText(c, rs.chains[c]) {
			return false
		}
	}
	return true
}

// withoutWarnings is iptables output without its "# Warning: ..." lines
// (iptables-nft prints one on every call once legacy tables exist, such
// as "iptables-legacy tables present"), trimmed.
func withoutWarnings(out string) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// chainText is how iptables -S prints chain c holding rules.
func chainText(c string, rules [][]string) string {
	lines := []string{"-N " + c}
	for _, r := range rules {
		lines = append(lines, "-A "+c+" "+strings.Join(r, " "))
	}
	return strings.Join(lines, "\n")
}

// remove deletes g's jumps and chains in every family.
func (fw firewall) remove(ctx context.Context, g guard) error {
	var errs []error
	for _, t := range fw.families {
		for _, c := range []string{guardChain(g.bridge), fwdChain(g.bridge)} {
			errs = append(errs, t.drop(ctx, g, c))
		}
	}
	return errors.Join(errs...)
}

// drop deletes every jump from INPUT and DOCKER-USER to our chain c, then c.
func (t tables) drop(ctx context.Context, g guard, c string) error {
	if !t.hasChain(ctx, c) {
		return nil
	}
	for _, from := range []string{"INPUT", "DOCKER-USER"} {
		args := jumpArgs(g, jump{from, c})
		for i := 0; i < 100 && t.ipt(ctx, append([]string{"-C", from}, args...)...) == nil; i++ {
			if err := t.ipt(ctx, append([]string{"-D", from}, args...)...); err != nil {
				return err
			}
		}
	}
	if err := t.ipt(ctx, "-F", c); err != nil {
		return err
	}
	return t.ipt(ctx, "-X", c)
}
