// Package systemd boots the units of systemd/ under a real systemd: PID 1 of
// a container of deis/systemd-test:bookworm, a Debian image that mkimage.sh
// makes with debootstrap (no registry), as the stack image is made.
//
// The container shares the host's network and Docker engine (its socket is
// mounted in), so the agent it runs under systemd starts app containers on
// the host's engine, guards the host's deis-apps network and serves the
// proxy on a host port, exactly as an agent installed on the host would.
// The rest of the platform (etcd, the coordinator) comes from the test
// harness. The container is started with
//
//	--cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined
//	--tmpfs /run --tmpfs /run/lock -v /sys/fs/cgroup:/sys/fs/cgroup:ro
//	--network host
//
// (no --privileged). The engine is the host's, so the image has no
// docker.service: the test installs a stand-in unit that checks the
// mounted socket, to satisfy the agent's Requires=docker.service.
//
// TestUnitsUnderSystemd shows that the agent unit starts the agent, which
// runs a pushed app; that a kill -9 of the agent is followed by systemd
// restarting it while the app container and the proxy's nginx master keep
// running and serving (KillMode=process); that journalctl -u deis-agent
// holds the agent's log; and that the coordinator unit starts a coordinator
// that serves.
package systemd
