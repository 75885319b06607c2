// Package netguard isolates untrusted containers on the network: it makes
// a Docker bridge network on which apps (or builds) keep outbound access to
// the outside world but cannot open a connection to each other, to the
// host's own ports (coordinator, agent API, metrics, etcd), to containers
// of any other network, or to addresses an operator denies (other nodes).
//
// Use it at every start of the component that attaches containers to the
// network, before it starts any, and set the containers' NetworkMode to the
// network's name:
//
//	err := netguard.Ensure(ctx, dockerClient, netguard.Apps, netguard.Options{
//		Deny: []string{"10.0.0.0/24", "169.254.169.254"}, // the cluster, cloud metadata
//	})
//
// Ensure is idempotent. The firewall rules live in the kernel and are gone
// after a reboot or a firewall reload, so Ensure must run again then.
//
// # The network
//
// A bridge network labelled deis.network=<name>, with the Docker options
//
//	com.docker.network.bridge.name=<bridge>            (Options.Bridge, default the name)
//	com.docker.network.bridge.enable_icc=false          (no container-to-container traffic)
//	com.docker.network.bridge.enable_ip_masquerade=true (outbound access)
//
// and no IPv6. Docker's DOCKER-ISOLATION-STAGE-1/2 chains drop whatever is
// forwarded from one bridge network to another, so apps cannot reach builds
// or any other network's containers by their addresses; with icc off,
// Docker also drops what is forwarded from the bridge to itself
// (FORWARD -i <bridge> -o <bridge> -j DROP), so apps of one network cannot
// reach each other.
//
// Published ports: with Docker's default userland proxy, the nat rule
// "-A DOCKER -i <bridge> -j RETURN" exempts every packet from a bridge from
// the port DNAT, so a container connecting to a port published on the
// host's address (its own network's, the hairpin, or another network's)
// reaches docker-proxy on the host, which would carry it to the target
// container: the INPUT guard below refuses that connection. With
// userland-proxy=false Docker DNATs it instead, and the FORWARD drops
// above (icc off, isolation) stop it.
//
// Build containers and the RUN steps of Dockerfile builds (set
// ImageBuildOptions.NetworkMode to the network's name) are guarded the same
// way on their own network.
//
// # The firewall
//
// Two chains of our own, filled atomically with iptables-restore --noflush
// and jumped to from the top of Docker's and the kernel's chains:
//
//	-I INPUT 1 -i <bridge> -j DEIS-GUARD-<bridge>
//	-A DEIS-GUARD-<bridge> -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
//	-A DEIS-GUARD-<bridge> -p tcp -m tcp --dport <AllowTCP> -j RETURN   (each, none by default)
//	-A DEIS-GUARD-<bridge> -p udp -m udp --dport <AllowUDP> -j RETURN   (each, none by default)
//	-A DEIS-GUARD-<bridge> -p tcp -j REJECT --reject-with tcp-reset
//	-A DEIS-GUARD-<bridge> -j REJECT --reject-with icmp-port-unreachable
//
//	-I DOCKER-USER 1 -i <bridge> -j DEIS-FWD-<bridge>                  (only with Options.Deny)
//	-A DEIS-FWD-<bridge> -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
//	-A DEIS-FWD-<bridge> -d <Deny> -p tcp -j REJECT --reject-with tcp-reset
//	-A DEIS-FWD-<bridge> -d <Deny> -j REJECT --reject-with icmp-port-unreachable
//
// Every packet a container sends to any address of the host (the bridge's
// gateway, the node's address, anything local) enters INPUT from the
// bridge; only replies to connections the host opened pass (health checks,
// the proxies reaching published ports, docker-proxy), and they continue
// through INPUT as before (RETURN, not ACCEPT, so the host's own firewall
// still applies). Everything else is refused at once rather than dropped,
// so a probe fails fast and visibly. The same guard is installed with
// ip6tables when the host has IPv6 (defence in depth: Docker disables IPv6
// inside containers of a network without it). Packets to the rest of the
// world are forwarded and masqueraded as usual; DNS works through Docker's
// embedded resolver, which forwards queries from the container's namespace
// to the host's upstream servers (a resolver on the host itself needs
// AllowUDP/AllowTCP 53).
//
// Ensure checks that Docker manages iptables (the DOCKER-USER and
// DOCKER-ISOLATION-STAGE-1 chains exist); Docker and netguard must use the
// same iptables backend (the iptables on PATH).
//
// # Errors
//
// Ensure returns an error, and changes nothing, for a bad name or bad
// options, and (wrapping ErrMismatch) when a network of that name exists
// with other settings; the message says what differs and that removing it
// (docker network rm) lets Ensure create it again. It also returns the
// output of a failing iptables command, and errors of the Docker API.
// Remove deletes the rules and the network, for tests and uninstalling.
package netguard
