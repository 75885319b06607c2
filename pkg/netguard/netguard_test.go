package netguard_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/deis/deis/pkg/netguard"
	"github.com/deis/deis/testing/need"
	"github.com/deis/deis/testing/poll"
)

// testLabel marks every container and network these tests create.
const testLabel = "deis.test=netguard"

// lab is one test's Docker client and unique name prefix; everything it
// creates is removed, by name, when the test ends.
type lab struct {
	t  *testing.T
	d  *client.Client
	id string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	need.Stack(t)
	need.Binary(t, "iptables")
	need.Binary(t, "iptables-restore")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("netguard tests change iptables and must run as root when CI is set")
		}
		t.Skip("netguard tests change iptables: run them as root")
	}
	d, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	// Short enough that "ngt" + id + a letter is a bridge name (≤15).
	id := fmt.Sprintf("%06x", (time.Now().UnixNano()/1000+int64(os.Getpid()))&0xffffff)
	return &lab{t: t, d: d, id: id}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// network ensures a guarded network "ngt<id><suffix>" and returns its name
// and gateway address.
func (l *lab) network(suffix string, o netguard.Options) (string, string) {
	l.t.Helper()
	name := "ngt" + l.id + suffix
	o.Labels = map[string]string{"deis.test": "netguard"}
	l.t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := netguard.Remove(c, l.d, name, o); err != nil {
			l.t.Errorf("cleanup: %v", err)
		}
	})
	if err := netguard.Ensure(ctx(l.t), l.d, name, o); err != nil {
		l.t.Fatal(err)
	}
	n, err := l.d.NetworkInspect(ctx(l.t), name, network.InspectOptions{})
	if err != nil {
		l.t.Fatal(err)
	}
	if len(n.IPAM.Config) == 0 || n.IPAM.Config[0].Gateway == "" {
		l.t.Fatalf("network %s has no gateway: %+v", name, n.IPAM)
	}
	return name, n.IPAM.Config[0].Gateway
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// run starts a container "ngt<id>-<suffix>" of the stack image on the
// network (empty: Docker's default bridge) and returns its name.
func (l *lab) run(suffix, netName string, publish []string, cmd ...string) string {
	l.t.Helper()
	name := "ngt" + l.id + "-" + suffix
	l.t.Cleanup(func() { exec.Command("docker", "rm", "-f", "-v", name).Run() })
	args := []string{"run", "-d", "--name", name, "--label", testLabel}
	if netName != "" {
		args = append(args, "--network", netName)
	}
	for _, p := range publish {
		args = append(args, "-p", p)
	}
	args = append(args, need.StackImage)
	docker(l.t, append(args, cmd...)...)
	return name
}

// server runs python's HTTP server on port 5000 and waits until the host
// reaches it at its address on the network.
func (l *lab) server(suffix, netName string, publish ...string) (name, ip string) {
	l.t.Helper()
	name = l.run(suffix, netName, publish, "python3", "-m", "http.server", "5000")
	ip = l.ip(name, netName)
	poll.Until(l.t, 30*time.Second, name+" serving", func() (bool, string) {
		ok, msg := hostConnect(net.JoinHostPort(ip, "5000"))
		return ok, msg
	})
	return name, ip
}

// client runs a container that only sleeps, to probe from.
func (l *lab) client(suffix, netName string) string {
	l.t.Helper()
	return l.run(suffix, netName, nil, "sleep", "infinity")
}

func (l *lab) ip(container, netName string) string {
	l.t.Helper()
	if netName == "" {
		netName = "bridge"
	}
	ip := docker(l.t, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+netName+`").IPAddress}}`, container)
	if net.ParseIP(ip) == nil {
		l.t.Fatalf("container %s has no address on %s: %q", container, netName, ip)
	}
	return ip
}

// published is the host port the container's port 5000 is published on at hostIP.
func (l *lab) published(container, hostIP string) string {
	l.t.Helper()
	for _, line := range strings.Split(docker(l.t, "port", container, "5000/tcp"), "\n") {
		if h, p, err := net.SplitHostPort(strings.TrimSpace(line)); err == nil && h == hostIP {
			return p
		}
	}
	l.t.Fatalf("container %s: port 5000 not published on %s", container, hostIP)
	return ""
}

// probe opens a TCP connection from inside container to host:port with
// bash's /dev/tcp and reports whether it connected, and what bash said.
func probe(t *testing.T, container, host, port string) (bool, string) {
	t.Helper()
	script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%s && echo CONNECTED", host, port)
	out, _ := exec.Command("docker", "exec", container, "timeout", "4", "bash", "-c", script).CombinedOutput()
	s := strings.TrimSpace(string(out))
	if s == "" {
		s = "no answer within 4s (dropped)"
	}
	return strings.Contains(s, "CONNECTED"), s
}

// mustNotConnect fails the test if container connects to host:port; with
// refused it also wants the connection refused at once (our REJECT rule)
// rather than silently dropped.
func mustNotConnect(t *testing.T, what, container, host, port string, refused bool) {
	t.Helper()
	ok, msg := probe(t, container, host, port)
	if ok {
		t.Errorf("%s: %s connected to %s:%s", what, container, host, port)
		return
	}
	if refused && !strings.Contains(msg, "refused") {
		t.Errorf("%s: %s to %s:%s: %q, want connection refused", what, container, host, port, msg)
	}
	t.Logf("%s: %s", what, msg)
}

func mustConnect(t *testing.T, what, container, host, port string) {
	t.Helper()
	if ok, msg := probe(t, container, host, port); !ok {
		t.Errorf("%s: %s could not connect to %s:%s: %s", what, container, host, port, msg)
	}
}

func hostConnect(addr string) (bool, string) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false, err.Error()
	}
	c.Close()
	return true, ""
}

// hostIP is the host's primary non-loopback IPv4 address: the source of its
// default route.
func hostIP(t *testing.T) string {
	t.Helper()
	c, err := net.Dial("udp4", "192.0.2.254:9") // no packet is sent
	if err != nil {
		t.Fatalf("no default route to find the host's address: %v", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String()
}

// listen opens a TCP listener on every address of the host and records
// the source address of every connection it accepts.
func listen(t *testing.T) (string, func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var peers []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			peers = append(peers, c.RemoteAddr().(*net.TCPAddr).IP.String())
			mu.Unlock()
			c.Close()
		}
	}()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), peers...)
	}
}

// Containers on one guarded network cannot connect to each other, and have
// no IPv6 at all (so the IPv4 rules are the whole story).
func TestContainersOfOneNetworkCannotConnect(t *testing.T) {
	l := newLab(t)
	apps, _ := l.network("a", netguard.Options{})
	_, bIP := l.server("b", apps)
	a := l.client("a", apps)
	mustNotConnect(t, "container to container on one network", a, bIP, "5000", false)
	if out := docker(t, "exec", a, "cat", "/proc/net/if_inet6"); out != "" {
		t.Errorf("container on a guarded network has IPv6 addresses:\n%s", out)
	}
}

// A container cannot open a connection to any port of the host, on the
// bridge's gateway or on the host's own address; Options.AllowTCP opens a
// port and a later Ensure without it closes it again.
func TestContainerCannotReachHost(t *testing.T) {
	l := newLab(t)
	port, peers := listen(t)
	apps, gw := l.network("a", netguard.Options{})
	a := l.client("a", apps)
	aIP := l.ip(a, apps)
	host := hostIP(t)
	if ok, msg := hostConnect(net.JoinHostPort(host, port)); !ok {
		t.Fatalf("the host cannot reach its own listener: %s", msg)
	}
	mustNotConnect(t, "to the gateway", a, gw, port, true)
	mustNotConnect(t, "to the host's address", a, host, port, true)
	for _, p := range peers() {
		if p == aIP {
			t.Errorf("the host's listener accepted a connection from the container (%s)", p)
		}
	}

	// The refusals are our REJECT rules; an Ensure with the same options
	// leaves the chain, and so its counters, alone.
	rejected := rejects(t, apps)
	if rejected == 0 {
		t.Errorf("no packet counted by the REJECT rules of DEIS-GUARD-%s", apps)
	}
	if err := netguard.Ensure(ctx(t), l.d, apps, netguard.Options{}); err != nil {
		t.Fatal(err)
	}
	if n := rejects(t, apps); n != rejected {
		t.Errorf("after a second Ensure the REJECT rules counted %d packets, before %d", n, rejected)
	}

	p, _ := strconv.Atoi(port)
	if err := netguard.Ensure(ctx(t), l.d, apps, netguard.Options{AllowTCP: []int{p}}); err != nil {
		t.Fatal(err)
	}
	mustConnect(t, "with AllowTCP", a, gw, port)
	if err := netguard.Ensure(ctx(t), l.d, apps, netguard.Options{}); err != nil {
		t.Fatal(err)
	}
	mustNotConnect(t, "AllowTCP withdrawn", a, gw, port, true)
}

// The host (the proxies, the health checks) still reaches an app's port
// published on loopback and on the node's address.
func TestHostReachesPublishedPorts(t *testing.T) {
	l := newLab(t)
	apps, _ := l.network("a", netguard.Options{})
	host := hostIP(t)
	b, _ := l.server("b", apps, "127.0.0.1::5000", host+"::5000")
	for _, addr := range []string{"127.0.0.1", host} {
		url := "http://" + net.JoinHostPort(addr, l.published(b, addr)) + "/"
		poll.Until(t, 20*time.Second, "GET "+url, func() (bool, string) {
			resp, err := http.Get(url)
			if err != nil {
				return false, err.Error()
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, resp.Status
		})
	}
}

// Guarded networks are isolated from each other and from Docker's other
// networks, directly and through published ports; an app cannot reach
// another app of its own network through its port published on the host
// (the hairpin).
func TestNetworksAreIsolated(t *testing.T) {
	l := newLab(t)
	host := hostIP(t)
	apps, _ := l.network("a", netguard.Options{})
	builds, _ := l.network("b", netguard.Options{})
	b, bIP := l.server("web", apps, host+"::5000")
	bPort := l.published(b, host)
	_, dIP := l.server("other", "") // Docker's default bridge
	a := l.client("app", apps)
	c := l.client("build", builds)

	if ok, msg := hostConnect(net.JoinHostPort(host, bPort)); !ok {
		t.Fatalf("the host cannot reach the published port: %s", msg)
	}
	mustNotConnect(t, "build to app container", c, bIP, "5000", false)
	mustNotConnect(t, "build to app's published port", c, host, bPort, false)
	mustNotConnect(t, "app to app's published port (hairpin)", a, host, bPort, false)
	mustNotConnect(t, "build to default-bridge container", c, dIP, "5000", false)
	mustNotConnect(t, "app to default-bridge container", a, dIP, "5000", false)
}

// Outbound connections to the outside world work, name resolution
// included; Options.Deny refuses chosen destinations beyond the host.
func TestOutboundAndDeny(t *testing.T) {
	l := newLab(t)
	apps, _ := l.network("a", netguard.Options{})
	a := l.client("a", apps)
	mustConnect(t, "outbound by name", a, "deb.debian.org", "80")

	addrs, err := net.DefaultResolver.LookupIP(ctx(t), "ip4", "deb.debian.org")
	if err != nil || len(addrs) == 0 {
		t.Fatalf("resolve deb.debian.org on the host: %v", err)
	}
	var deny []string
	for _, ip := range addrs {
		deny = append(deny, ip.String())
	}
	target := addrs[0].String()
	mustConnect(t, "outbound by address", a, target, "80")
	denied, _ := l.network("d", netguard.Options{Deny: deny})
	d := l.client("d", denied)
	mustNotConnect(t, "to a denied address", d, target, "80", true)
}

// Ensure twice leaves one jump per chain at the top; a network of the name
// with other settings is refused with how to fix it, and nothing changes.
func TestEnsureIsIdempotentAndChecksExisting(t *testing.T) {
	l := newLab(t)
	o := netguard.Options{Deny: []string{"169.254.169.254"}}
	apps, _ := l.network("a", o)
	o.Labels = map[string]string{"deis.test": "netguard"}
	if err := netguard.Ensure(ctx(t), l.d, apps, o); err != nil {
		t.Fatal(err)
	}
	for chain, target := range map[string]string{"INPUT": "DEIS-GUARD-" + apps, "DOCKER-USER": "DEIS-FWD-" + apps} {
		rules := strings.Split(iptables(t, "-S", chain), "\n")
		n := 0
		for i, r := range rules {
			if strings.HasSuffix(r, "-j "+target) {
				n++
				// Only other guards' jumps may come before ours.
				for _, above := range rules[1:i] {
					if !strings.Contains(above, "-j DEIS-") {
						t.Errorf("%s: %q precedes our jump %q", chain, above, r)
					}
				}
			}
		}
		if n != 1 {
			t.Errorf("%s has %d jumps to %s, want 1:\n%s", chain, n, target, strings.Join(rules, "\n"))
		}
	}

	// Without Deny, the forward chain and its jump go away.
	if err := netguard.Ensure(ctx(t), l.d, apps, netguard.Options{Labels: o.Labels}); err != nil {
		t.Fatal(err)
	}
	if out := iptables(t, "-S"); strings.Contains(out, "DEIS-FWD-"+apps) {
		t.Errorf("DEIS-FWD-%s left after Deny was emptied:\n%s", apps, out)
	}

	// A network of that name made by hand, with containers talking freely.
	other := "ngt" + l.id + "x"
	t.Cleanup(func() { exec.Command("docker", "network", "rm", other).Run() })
	docker(t, "network", "create", "--label", testLabel, other)
	err := netguard.Ensure(ctx(t), l.d, other, netguard.Options{})
	if !errors.Is(err, netguard.ErrMismatch) || !strings.Contains(err.Error(), "docker network rm "+other) {
		t.Fatalf("Ensure over a foreign network = %v, want ErrMismatch with the fix", err)
	}
	t.Log(err)
	if exec.Command("iptables", "-w", "-S", "DEIS-GUARD-"+other).Run() == nil {
		t.Errorf("a refused Ensure created chain DEIS-GUARD-%s", other)
	}
	if err := netguard.Remove(ctx(t), l.d, other, netguard.Options{}); err == nil {
		t.Errorf("Remove deleted a network deis did not create")
	}

	// Bad options change nothing either.
	bad := "ngt" + l.id + "y"
	if err := netguard.Ensure(ctx(t), l.d, bad, netguard.Options{Deny: []string{"nonsense"}}); err == nil {
		t.Fatal("Ensure accepted Deny nonsense")
	}
	if exec.Command("docker", "network", "inspect", bad).Run() == nil {
		exec.Command("docker", "network", "rm", bad).Run()
		t.Errorf("Ensure with bad options created network %s", bad)
	}
}

func iptables(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("iptables", append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
	}
	// Without iptables-nft's "# Warning: iptables-legacy tables present".
	return netguard.WithoutWarnings(string(out))
}

// The RUN steps of a Dockerfile build (the classic builder the coordinator
// uses) run on the guarded network when the build's NetworkMode names it:
// outbound works, the host's ports do not.
func TestDockerfileBuildOnGuardedNetwork(t *testing.T) {
	l := newLab(t)
	port, _ := listen(t)
	builds, gw := l.network("b", netguard.Options{})
	dockerfile := "FROM " + need.StackImage + "\n" +
		"RUN bash -c 'exec 3<>/dev/tcp/deb.debian.org/80' && echo OUTBOUND-OK || echo OUTBOUND-FAILED; " +
		"bash -c 'exec 3<>/dev/tcp/" + gw + "/" + port + "' && echo HOST-REACHED || echo HOST-BLOCKED; " +
		"exit 1\n" // fail, so the build leaves no image behind
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile))})
	tw.Write([]byte(dockerfile))
	tw.Close()
	resp, err := l.d.ImageBuild(ctx(t), &tarball, build.ImageBuildOptions{
		Dockerfile: "Dockerfile", Remove: true, ForceRemove: true, Version: build.BuilderV1,
		NetworkMode: builds, Labels: map[string]string{"deis.test": "netguard"},
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte("OUTBOUND-OK")) || !bytes.Contains(out, []byte("HOST-BLOCKED")) {
		t.Errorf("build output, want OUTBOUND-OK and HOST-BLOCKED:\n%s", out)
	}
}

// rejects sums the packet counters of the REJECT rules of the network's
// INPUT guard.
func rejects(t *testing.T, bridge string) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(iptables(t, "-L", "DEIS-GUARD-"+bridge, "-v", "-n", "-x"), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[2] == "REJECT" {
			c, err := strconv.Atoi(f[0])
			if err != nil {
				t.Fatalf("iptables counter %q: %v", line, err)
			}
			n += c
		}
	}
	return n
}

// UDP to the host is refused as well, unless Options.AllowUDP opens the port
// (a DNS server on the host, say).
func TestContainerCannotSendUDPToHost(t *testing.T) {
	l := newLab(t)
	pc, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	got := make(chan string, 16)
	go func() {
		buf := make([]byte, 64)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	apps, gw := l.network("a", netguard.Options{})
	a := l.client("a", apps)
	send := func(msg string) {
		script := fmt.Sprintf("import socket\nfor _ in range(3): socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b%q, (%q, %d))", msg, gw, port)
		docker(t, "exec", a, "python3", "-c", script)
	}
	send("blocked")
	select {
	case m := <-got:
		t.Fatalf("the host received %q over UDP from the container", m)
	case <-time.After(2 * time.Second):
	}
	if err := netguard.Ensure(ctx(t), l.d, apps, netguard.Options{AllowUDP: []int{port}}); err != nil {
		t.Fatal(err)
	}
	send("allowed")
	select {
	case m := <-got:
		if m != "allowed" {
			t.Errorf("received %q, want allowed", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("with AllowUDP the host received nothing from the container")
	}
}
